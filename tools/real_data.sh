#!/usr/bin/env bash
# Real-data runs behind docs/results.md (issue 5): train from scratch on Kvasir-SEG
# patches and on BUSI by class, choose post-processing settings on the images the
# training held out (<ckpt>.val_ids.txt), then evaluate every method on the test
# images. CPU only; about an hour and a half on 2 cores.
#
#   bash tools/real_data.sh [DATA=../shared/data] [OUT=runs]
#
# Stages can be rerun: eval resumes, explanations are reused (--explanations).
set -euo pipefail
data=${1:-../shared/data}
out=${2:-runs}
bin=${EXPLAINSEG:-target/release/explainseg}
mkdir -p "$out"
[ -x "$bin" ] || cargo build --release
# shellcheck source=tools/classifier_runs.sh
source "$(dirname "$0")/classifier_runs.sh"

# The backbone is trained from scratch (no pretrained weights on these machines):
# a ViT with 4 blocks, width 96, 3 heads, 8-px patches, AdamW + cosine.
vit=(--init random --arch "$classifier_arch" "${classifier_recipe[@]}")

# Kvasir-SEG: the paper's set-up. 224-px patches of the official train split,
# positive at >= 5% polyp pixels, balanced, trained at 64 px; whole images are then
# segmented at 160 px, about the scale the patches were seen at (224 -> 64 is 0.29,
# a typical 622-px image -> 160 is 0.26).
[ -f "$out/kvasir_vit.safetensors" ] || "$bin" --threads 2 train --dataset kvasir \
  --data "$data/kvasir_seg" --split train --patches "${vit[@]}" "${kvasir_patch_training[@]}" \
  --out "$out/kvasir_vit.safetensors"

# BUSI by class (benign / malignant / normal), whole images at 96 px, on the fixed
# 80/20 split's train part; loss weights balance the 40 normals.
[ -f "$out/busi_vit.safetensors" ] || "$bin" --threads 2 train --dataset busi \
  --data "$data/busi" --split train "${vit[@]}" --img-size 96 --epochs 100 \
  --batch-size 32 --augment hflip,jitter,rotate,crop --balance loss \
  --out "$out/busi_vit.safetensors"

# BUSI as Kvasir: lesion / background patches (224 px, trained at 64 px); whole
# images are segmented at 144 px (a typical 500-px image at the patches' scale).
[ -f "$out/busip_vit.safetensors" ] || "$bin" --threads 2 train --dataset busi \
  --data "$data/busi" --split train --patches "${vit[@]}" "${busip_patch_training[@]}" \
  --out "$out/busip_vit.safetensors"

# Post-processing sweep on the held-out training images (never trained on), one
# setting changed at a time from the defaults; explanations (IG 50 steps x
# NoiseTunnel 5, the paper's) are computed once per image and reused.
sweep() { # name dataset root split size ids
  local name=$1 kind=$2 root=$3 split=$4 size=$5 ids=$6
  # Every row spells out the relevance scaling and border rule, so "defaults" is
  # the setting the sweep started from (Captum's cumulative mass, border cleared).
  local base="--normalize cummass --clear-border"
  local settings=(
    "defaults|$base"
    "normalize-minmax|--normalize minmax --clear-border"
    "normalize-percentile|--normalize percentile --clear-border"
    "feature-token-pc1|$base --feature token-pc1"
    "feature-cls-attn|$base --feature cls-attn"
    "feature-key-norm|$base --feature key-norm"
    "no-equalize|$base --no-equalize"
    "keep-border|--normalize cummass"
    "minmax-keep-border|--normalize minmax"
    "smooth-2px|$base --smooth 2"
    "ncut-sigma-r-0.05|$base --ncut-sigma-r 0.05"
    "ncut-sigma-r-0.2|$base --ncut-sigma-r 0.2"
    "ncut-grid-28|$base --ncut-grid 28"
    "ncut-sigma-r-fixed|$base --ncut-sigma-r-std 0"
    "ncut-dilation-0|$base --ncut-dilation 0"
    "no-crf|$base --no-crf"
  )
  for s in "${settings[@]}"; do
    local tag=${s%%|*} flags=${s#*|}
    # shellcheck disable=SC2086
    "$bin" --quiet --threads 2 eval --dataset "$kind" --root "$root" --split "$split" \
      --weights "$out/${name}_vit.safetensors" --size "$size" --variants a,b,c,xncut \
      --ids "$ids" --skip-empty --explanations "$out/$name.explanations" $flags \
      --out "${SWEEP_DIR:-$out/sweep}/$name/$tag"
  done
  python3 tools/sweep_table.py "${SWEEP_DIR:-$out/sweep}/$name" > "${SWEEP_DIR:-$out/sweep}/$name.md"
  cat "${SWEEP_DIR:-$out/sweep}/$name.md"
}
[ "${STAGE:-all}" = train ] && exit 0
sweep kvasir kvasir "$data/kvasir_seg" train 160 "$out/kvasir_vit.val_ids.txt"
sweep busip busi "$data/busi" train 144 "$out/busip_vit.val_ids.txt"
[ "${STAGE:-all}" = sweep ] && exit 0

# Test images, every method, chosen settings ($KVASIR_FLAGS / $BUSI_FLAGS; empty = the
# defaults). Kvasir: the official val split (120). BUSI: the fixed test part's lesion
# images (its normals have empty masks).
test_of() { # name dataset root split size [eval flags...]
  test_eval "$out/$1_vit.safetensors" "$out/$1.explanations" "$out/test/$1" "${@:2}"
}
# shellcheck disable=SC2086
test_of kvasir kvasir "$data/kvasir_seg" val 160 ${KVASIR_FLAGS:-}
# shellcheck disable=SC2086
test_of busip busi "$data/busi" test 144 ${BUSI_FLAGS:-}
# shellcheck disable=SC2086
test_of busi busi "$data/busi" test 96 ${BUSI_FLAGS:-}
