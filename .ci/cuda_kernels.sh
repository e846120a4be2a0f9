#!/usr/bin/env bash
# Compiles every CUDA kernel with NVRTC from NVIDIA's PyPI wheels (no GPU, no CUDA
# toolkit) for sm_80 and sm_90, with CUDA 12.8 and with CUDA 13.0 (the lent GPU machine's
# driver, R580). Fails on a compile error, a register spill, or PTX newer than ISA 9.0
# (what the R580 driver can JIT). The kernels' *behaviour* is tested on the CPU by the
# cuda-emu tests (g++ + the emulator in kernels/emu/).
set -euo pipefail
cd "$(dirname "$0")/.."

toolkit() { # name pip-requirements...
    local venv="${CUDA_WHEELS_VENV:-${TMPDIR:-/tmp}/explainseg-cuda-wheels}-$1"
    shift
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$@"
    "$venv/bin/python" tools/compile_kernels.py --arch 80 --arch 90 --max-ptx-isa 9.0
}

echo "-- CUDA 12.8"
toolkit 12.8 nvidia-cuda-nvrtc-cu12==12.8.93 nvidia-cuda-runtime-cu12==12.8.90 \
    nvidia-cuda-nvcc-cu12==12.8.93
echo "-- CUDA 13.0"
toolkit 13.0 nvidia-cuda-nvrtc==13.0.88 nvidia-cuda-runtime==13.0.96 \
    nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88

echo "-- the PTX ISA check can fail: CUDA 13.0's PTX must be refused for a CUDA 12.8 driver (ISA 8.7)"
venv13="${CUDA_WHEELS_VENV:-${TMPDIR:-/tmp}/explainseg-cuda-wheels}-13.0"
if "$venv13/bin/python" tools/compile_kernels.py --arch 90 --max-ptx-isa 8.7 > /dev/null 2>&1; then
    echo "compile_kernels.py accepted PTX ISA 9.0 under --max-ptx-isa 8.7" >&2
    exit 1
fi
echo "refused, as it must be"
