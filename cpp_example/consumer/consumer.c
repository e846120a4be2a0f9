/* A minimal C consumer of an installed explainseg: built through pkg-config and
 * through find_package(explainseg) by .ci/cpp_example.sh. Exits 0 when the
 * library it loaded matches the header and answers as documented. */
#include <explainseg.h>
#include <stdio.h>
#include <string.h>

int main(void) {
  if (explainseg_version_major() != EXPLAINSEG_VERSION_MAJOR ||
      explainseg_version_minor() != EXPLAINSEG_VERSION_MINOR ||
      strcmp(explainseg_version(), EXPLAINSEG_VERSION_STRING) != 0) {
    fprintf(stderr, "header %s but library %s\n", EXPLAINSEG_VERSION_STRING, explainseg_version());
    return 1;
  }
  EsModel *model = NULL;
  EsStatus s = explainseg_model_load(NULL, NULL, NULL, &model);
  if (s != ES_STATUS_NULL_ARGUMENT || model != NULL || strlen(explainseg_last_error()) == 0) {
    fprintf(stderr, "expected ES_STATUS_NULL_ARGUMENT, got %d\n", (int)s);
    return 1;
  }
  const uint8_t pred[4] = {1, 1, 1, 0}, truth[4] = {0, 1, 0, 1};
  EsScores scores;
  if (explainseg_mask_scores(pred, truth, 4, &scores) != ES_STATUS_OK || scores.iou != 0.25) {
    fprintf(stderr, "mask scores: %s\n", explainseg_last_error());
    return 1;
  }
  printf("explainseg %s consumer OK (IoU %.2f, Dice %.2f)\n", explainseg_version(), scores.iou, scores.dice);
  return 0;
}
