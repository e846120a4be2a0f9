#!/usr/bin/env bash
# Compiles every CUDA kernel with NVRTC from NVIDIA's PyPI wheels (no GPU, no CUDA
# toolkit) for sm_80 and sm_90, and prints registers/spills per kernel from ptxas.
# Fails on any compile error. The kernels' *behaviour* is tested on the CPU by
# `cargo test --release --test cuda_emulated` (g++ + the emulator in kernels/emu/).
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${CUDA_WHEELS_VENV:-${TMPDIR:-/tmp}/explainseg-cuda-wheels}"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    nvidia-cuda-nvrtc-cu12==12.8.93 \
    nvidia-cuda-runtime-cu12==12.8.90 \
    nvidia-cuda-nvcc-cu12==12.8.93
"$venv/bin/python" tools/compile_kernels.py --arch 80 --arch 90
