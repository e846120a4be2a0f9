#!/usr/bin/env bash
# Every GPU check and benchmark of the CUDA backend in one call, on a machine with an
# NVIDIA driver, PyTorch, timm and Captum but no Rust toolchain. Build here first:
#
#   cargo build --release --features cuda
#   cargo test --release --features cuda --test cuda_engine --no-run   # prints the test binary
#   mkdir -p gpu_bin && cp target/release/explainseg target/release/deps/cuda_engine-<hash> gpu_bin/
#
# then, in the repository root on the GPU machine (gpu_bin carried along):
#
#   bash scripts/gpu_check.sh gpu_bin [BUILD_ROOT]
#
# BUILD_ROOT is the repository path the binaries were built in (default /work/main): test
# binaries find tests/fixtures there, so it is linked to this checkout when absent.
# Steps: (1) the engine tests with EXPLAINSEG_REQUIRE_GPU=1 (logits rel <= 1e-5 and input
# gradients / NoiseTunnel IG rel-L2 <= 1e-4 against the CPU engine; a skip is a failure);
# (2) explainseg bench on the GPU and on the CPU; (3) PyTorch + Captum on the same GPU, TF32
# off, ViT-S/16 224^2, IG 50 steps x 5 NoiseTunnel samples.
set -euo pipefail
bin="${1:?usage: scripts/gpu_check.sh DIR_WITH_BINARIES [BUILD_ROOT]}"
root="${2:-/work/main}"
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader

if [ ! -d "$root/tests/fixtures" ]; then
    mkdir -p "$(dirname "$root")"
    ln -sfn "$PWD" "$root"
fi

echo "== 1. CUDA engine vs CPU engine (EXPLAINSEG_REQUIRE_GPU=1)"
tests=("$bin"/cuda_engine-*)
[ -x "${tests[0]}" ] || { echo "no cuda_engine-* test binary in $bin" >&2; exit 1; }
EXPLAINSEG_REQUIRE_GPU=1 "${tests[0]}" --nocapture --test-threads 1

echo "== 2. explainseg bench: ViT-S/16 224², batch 10, IG 50 x 5 (GPU, then CPU)"
"$bin/explainseg" bench --device cuda --model s --size 224 --batch 10 --seconds 10 \
    --steps 50 --samples 5 --json | tee gpu_bench_explainseg.json
"$bin/explainseg" bench --device cpu --model s --size 224 --batch 10 --seconds 5 \
    --steps 5 --samples 1 --json | tee cpu_bench_explainseg.json

echo "== 3. PyTorch + Captum on the same GPU (TF32 off)"
python3 tools/bench_torch.py --device cuda --batch 10 --seconds 10 --steps 50 --samples 5 \
    | tee gpu_bench_torch.json
python3 - <<'PY'
import json
ours = json.load(open("gpu_bench_explainseg.json"))
ref = json.load(open("gpu_bench_torch.json"))
print(json.dumps({"explainseg": ours, "torch": ref}, indent=1))
PY
