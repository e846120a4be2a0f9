# shellcheck shell=bash
# Sourced by tools/real_data.sh and tools/ssl_data.sh: what their patch classifiers and
# test-image evaluations share, so that the two differ only in where the backbone comes
# from. Needs $bin (the explainseg binary).

# The backbone (4 blocks, width 96, 3 heads, 8-px patches) and how every classifier is
# trained on top of it, whether from scratch (--init random) or from pretrained weights.
classifier_arch=custom:4,96,3,8
classifier_recipe=(--finetune all --optimizer adamw --lr 1e-3 --schedule cosine --seed 0)

# Per data set, the patch classifier's input size, epochs, batch and augmentations.
kvasir_patch_training=(--img-size 64 --epochs 60 --batch-size 64 --augment hflip,vflip,jitter,rotate)
busip_patch_training=(--img-size 64 --epochs 40 --batch-size 64 --augment hflip,jitter,rotate)

# Every method on the test images of one set; explanations are kept and reused, eval resumes.
test_eval() { # weights explanations dest dataset root split size [eval flags...]
  local weights=$1 explanations=$2 dest=$3 kind=$4 root=$5 split=$6 size=$7
  shift 7
  "$bin" --quiet --threads 2 eval --dataset "$kind" --root "$root" --split "$split" \
    --weights "$weights" --size "$size" --variants all --skip-empty \
    --explanations "$explanations" "$@" --out "$dest"
}
