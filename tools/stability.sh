#!/usr/bin/env bash
# Seed stability of the masks, paper vs stable preset (issue 14; docs/results.md
# "Stable masks"). For each setting and variant A, C, XNCut: passes, explanation
# seconds per image, mean (and min) mask IoU between two noise seeds, mean mask IoU
# against a high-sample reference (IG 25 steps x NoiseTunnel 64 samples, another
# seed, post-processed by the same rule) and Dice against the ground truth.
#
#   bash tools/stability.sh synth [COUNT]
#   bash tools/stability.sh kvasir MODEL [COUNT] [DATA=../shared/data]   # official val, 160 px
#   bash tools/stability.sh busi MODEL [COUNT] [DATA=../shared/data] [SIZE=144]  # test lesions
#
# SETTINGS (comma list, see examples/stability.rs) and REFERENCE (STEPSxSAMPLES)
# override the defaults (the current stable preset spelled out with knobs is
# 1x200:stratified:mean:s8:n16:g28:e0:z0.25:q1 for 8-px patches; compare it with a
# reference at its σ, REFERENCE=1x1600:stratified:mean:z0.25:q1); SKIP=N starts after
# the first N images; CACHE=DIR keeps every explanation there, so that a rerun
# with other post-processing settings on the same images only recomputes the masks.
# CPU only; a real-data image costs about 3,200 passes.
set -euo pipefail
what=${1:?synth, kvasir or busi}
settings=${SETTINGS:-paper,stable,10x24,4x16:stratified:mean:n4:g28}
reference=${REFERENCE:-25x64}
run=(cargo run --quiet --release --example stability -- ${CACHE:+--cache "$CACHE"} ${SKIP:+--skip "$SKIP"})
case "$what" in
  synth)
    "${run[@]}" --synth 7 --count "${2:-20}" --settings "$settings" --reference "$reference" ;;
  kvasir)
    model=${2:?model .safetensors}
    "${run[@]}" --weights "$model" --dataset kvasir --root "${4:-../shared/data}/kvasir_seg" \
      --split val --size 160 --count "${3:-10}" --settings "$settings" --reference "$reference" ;;
  busi)
    model=${2:?model .safetensors}
    "${run[@]}" --weights "$model" --dataset busi --root "${4:-../shared/data}/busi" \
      --split test --size "${5:-144}" --count "${3:-10}" --settings "$settings" \
      --reference "$reference" ;;
  *) echo "unknown set $what (synth, kvasir, busi)" >&2; exit 2 ;;
esac
