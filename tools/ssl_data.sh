#!/usr/bin/env bash
# Self-supervised pretraining on Kvasir-SEG (issue 16): DINO on the official train
# split's images (their masks are never read), then the patch classifier fine-tuned
# from the pretrained backbone exactly as tools/real_data.sh trains it from scratch,
# then every method on the official val split (120 images) as real_data.sh's test_eval.
# CPU only. Every stage resumes: pretraining and fine-tuning continue from their
# checkpoints (a finished run is a no-op), eval resumes itself.
#
#   bash tools/ssl_data.sh [DATA=../shared/data] [OUT=runs]
#
# Writes OUT/kvasir_dino.safetensors (the DINO teacher), OUT/kvasir_ssl_vit.safetensors
# (the fine-tuned classifier, input 64 px like kvasir_vit), OUT/test/kvasir_ssl/ (tables),
# OUT/test/kvasir_ssl_backbone/ (TokenCut and MaskCut on the pretrained backbone itself).
# The pretraining recipe can be changed through the environment (SSL_* below); the
# defaults take about half an hour of 2 cores (2.1-2.3 s per step of 64 images when the
# machine is not shared); docs/pretraining.md has what short runs showed. They are not a
# tuned recipe: on Kvasir-SEG this recipe drifted towards uniform collapse (see there).
# The colour augmentations drive that drift: without them (--no-color-aug, the default
# here; SSL_COLOR=on restores them) the targets held up in 6-epoch runs, K 256 and
# DINO's own rate (--lr 0.0005 at batch 256); no setting tried yet made k-NN features
# better than the random backbone's, and 60 epochs of this recipe are not measured.
set -euo pipefail
data=${1:-../shared/data}
out=${2:-runs}
bin=${EXPLAINSEG:-target/release/explainseg}
mkdir -p "$out"
[ -x "$bin" ] || cargo build --release

# The backbone of tools/real_data.sh (4 blocks, width 96, 3 heads, 8-px patches), so the
# two Kvasir classifiers differ only in where their backbone came from.
arch=custom:4,96,3,8
ssl=(--arch "$arch" --global-size 64 --local-size 32 --source-size 160
     --local-crops "${SSL_LOCAL_CROPS:-6}" --epochs "${SSL_EPOCHS:-60}"
     --batch-size "${SSL_BATCH:-64}" --lr "${SSL_LR:-0.0005}" --warmup-epochs "${SSL_WARMUP:-5}"
     --momentum-teacher "${SSL_MOMENTUM:-0.996}" --teacher-temp "${SSL_TEACHER_TEMP:-0.04}"
     --out-dim "${SSL_OUT_DIM:-256}" --seed 0)
[ "${SSL_COLOR:-off}" = on ] || ssl+=(--no-color-aug)
dino=$out/kvasir_dino.safetensors
resume_dino=()
[ -f "$dino" ] && resume_dino=(--resume "$dino")
"$bin" --threads 2 pretrain --method dino --dataset kvasir --data "$data/kvasir_seg" \
  --split train "${ssl[@]}" "${resume_dino[@]}" --out "$dino"
[ "${STAGE:-all}" = pretrain ] && exit 0

# Fine-tuning: tools/real_data.sh's Kvasir command with --weights instead of --init random.
ft=(--finetune all --optimizer adamw --lr 1e-3 --schedule cosine --seed 0)
tuned=$out/kvasir_ssl_vit.safetensors
start=(--weights "$dino")
[ -f "$tuned" ] && start=(--resume "$tuned")
"$bin" --threads 2 train --dataset kvasir --data "$data/kvasir_seg" --split train --patches \
  "${start[@]}" "${ft[@]}" --img-size 64 --epochs 60 --batch-size 64 \
  --augment hflip,vflip,jitter,rotate --out "$tuned"
[ "${STAGE:-all}" = train ] && exit 0

# Test images, every method, as tools/real_data.sh's test_eval (same size, same flags).
# shellcheck disable=SC2086
"$bin" --quiet --threads 2 eval --dataset kvasir --root "$data/kvasir_seg" --split val \
  --weights "$tuned" --size 160 --variants all --skip-empty \
  --explanations "$out/kvasir_ssl.explanations" ${KVASIR_FLAGS:-} --out "$out/test/kvasir_ssl"
# TokenCut and MaskCut read only the backbone's keys: the pretrained teacher as it is
# (the fine-tuned head only names the predicted class).
# shellcheck disable=SC2086
"$bin" --quiet --threads 2 eval --dataset kvasir --root "$data/kvasir_seg" --split val \
  --weights "$dino" --head "$tuned" --size 160 --variants tokencut,maskcut --skip-empty \
  ${KVASIR_FLAGS:-} --out "$out/test/kvasir_ssl_backbone"
