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

# The backbone is trained from scratch (no pretrained weights on these machines):
# a ViT with 4 blocks, width 96, 3 heads, 8-px patches, AdamW + cosine.
vit=(--init random --arch custom:4,96,3,8 --finetune all --optimizer adamw --lr 1e-3
     --schedule cosine --seed 0)

# Kvasir-SEG: the paper's set-up. 224-px patches of the official train split,
# positive at >= 5% polyp pixels, balanced, trained at 64 px; whole images are then
# segmented at 160 px, about the scale the patches were seen at (224 -> 64 is 0.29,
# a typical 622-px image -> 160 is 0.26).
[ -f "$out/kvasir_vit.safetensors" ] || "$bin" --threads 2 train --dataset kvasir \
  --data "$data/kvasir_seg" --split train --patches "${vit[@]}" --img-size 64 \
  --epochs 60 --batch-size 64 --augment hflip,vflip,jitter,rotate \
  --out "$out/kvasir_vit.safetensors"

# BUSI by class (benign / malignant / normal), whole images at 96 px, on the fixed
# 80/20 split's train part; loss weights balance the 40 normals.
[ -f "$out/busi_vit.safetensors" ] || "$bin" --threads 2 train --dataset busi \
  --data "$data/busi" --split train "${vit[@]}" --img-size 96 --epochs 100 \
  --batch-size 32 --augment hflip,jitter,rotate,crop --balance loss \
  --out "$out/busi_vit.safetensors"
