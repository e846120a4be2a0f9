// explainseg_example: segment one image with a ViT classifier through the C API.
//
//   explainseg_example <weights.safetensors> <image> <mask_out.png> [variant] [ig_steps] [nt_samples]
//
// variant: a, b, c, xncut (default), tokencut, maskcut. ig_steps (default 50) and
// nt_samples (default 5) trade quality for time: the IG variants run
// ig_steps × nt_samples forward+backward passes. Prints the class, its score and the time.

#include "explainseg.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace {

// Prints what failed, with the library's message; true on success.
bool ok(EsStatus status, const char *what) {
  if (status == ES_STATUS_OK) return true;
  std::fprintf(stderr, "explainseg_example: %s failed: %s: %s\n", what,
               explainseg_status_str(status), explainseg_last_error());
  return false;
}

struct ModelFree { void operator()(EsModel *m) const { explainseg_model_free(m); } };
struct ImageFree { void operator()(EsImage *i) const { explainseg_image_free(i); } };
struct ResultFree { void operator()(EsResult *r) const { explainseg_result_free(r); } };

bool parse_variant(const char *name, EsVariant *out) {
  const struct { const char *name; EsVariant v; } table[] = {
      {"a", ES_VARIANT_A},     {"b", ES_VARIANT_B},
      {"c", ES_VARIANT_C},     {"xncut", ES_VARIANT_XNCUT},
      {"tokencut", ES_VARIANT_TOKENCUT}, {"maskcut", ES_VARIANT_MASKCUT}};
  for (const auto &row : table) {
    if (std::strcmp(name, row.name) == 0) { *out = row.v; return true; }
  }
  return false;
}

bool parse_count(const char *text, uint32_t *out) {
  char *end = nullptr;
  unsigned long v = std::strtoul(text, &end, 10);
  if (end == text || *end != '\0' || v == 0 || v > 100000) return false;
  *out = static_cast<uint32_t>(v);
  return true;
}

void on_progress(uint32_t done, uint32_t total, void *) {
  std::fprintf(stderr, "\rIG passes %u/%u", done, total);
  if (done == total) std::fprintf(stderr, "\n");
}

}  // namespace

int main(int argc, char **argv) {
  if (argc < 4 || argc > 7) {
    std::fprintf(stderr,
                 "usage: %s <weights.safetensors> <image> <mask_out.png> [variant] [ig_steps] [nt_samples]\n"
                 "  variant: a, b, c, xncut (default), tokencut, maskcut\n",
                 argv[0]);
    return 2;
  }
  EsSegmentParams params = explainseg_segment_default_params();
  if (argc > 4 && !parse_variant(argv[4], &params.variant)) {
    std::fprintf(stderr, "explainseg_example: unknown variant `%s`\n", argv[4]);
    return 2;
  }
  if ((argc > 5 && !parse_count(argv[5], &params.ig_steps)) ||
      (argc > 6 && !parse_count(argv[6], &params.nt_samples))) {
    std::fprintf(stderr, "explainseg_example: ig_steps and nt_samples must be positive integers\n");
    return 2;
  }
  std::printf("explainseg %s\n", explainseg_version());

  EsModel *raw_model = nullptr;
  if (!ok(explainseg_model_load(argv[1], nullptr, nullptr, &raw_model), "loading the model")) return 1;
  std::unique_ptr<EsModel, ModelFree> model(raw_model);

  EsImage *raw_image = nullptr;
  if (!ok(explainseg_image_load(argv[2], &raw_image), "loading the image")) return 1;
  std::unique_ptr<EsImage, ImageFree> image(raw_image);

  EsCallbacks callbacks = {on_progress, nullptr, nullptr};
  auto start = std::chrono::steady_clock::now();
  EsResult *raw_result = nullptr;
  if (!ok(explainseg_segment(model.get(), image.get(), &params, &callbacks, &raw_result), "segmenting")) return 1;
  std::unique_ptr<EsResult, ResultFree> result(raw_result);
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  uint32_t width = 0, height = 0, cls = 0;
  if (!ok(explainseg_result_size(result.get(), &width, &height), "reading the size") ||
      !ok(explainseg_result_class(result.get(), &cls), "reading the class")) return 1;
  size_t n_classes = 0;
  // A NULL buffer of length 0 asks for the needed length.
  EsStatus s = explainseg_result_scores(result.get(), nullptr, 0, &n_classes);
  if (s != ES_STATUS_BUFFER_TOO_SMALL && !ok(s, "sizing the scores")) return 1;
  std::vector<float> scores(n_classes);
  if (!ok(explainseg_result_scores(result.get(), scores.data(), scores.size(), nullptr), "reading the scores")) return 1;
  std::vector<uint8_t> mask(static_cast<size_t>(width) * height);
  if (!ok(explainseg_result_mask(result.get(), mask.data(), mask.size(), nullptr), "reading the mask")) return 1;
  size_t foreground = 0;
  for (uint8_t m : mask) foreground += m;
  if (!ok(explainseg_result_save_mask_png(result.get(), argv[3]), "writing the mask PNG")) return 1;

  std::printf("image %ux%u\nclass %u\nscore %.4f\nforeground %.1f%%\ntime %.3f s\nmask %s\n", width, height,
              cls, scores.at(cls), 100.0 * foreground / mask.size(), seconds, argv[3]);
  return 0;
}
