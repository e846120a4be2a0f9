#!/usr/bin/env bash
# Builds, on this machine, everything scripts/gpu_check.sh needs on a lent GPU machine
# that has a driver, PyTorch and timm but no Rust, no Captum and no network:
#
#   target/gpu_bundle/explainseg          release CLI with the CUDA backend, stripped
#   target/gpu_bundle/cuda_engine         the GPU parity tests (tests/cuda_engine.rs), stripped
#   target/gpu_bundle/wheels/captum-*.whl Captum for the PyTorch reference
#   target/gpu_bundle/build_root          where the tests were built (they read tests/fixtures there)
#
#   bash tools/gpu_bundle.sh && du -sh target/gpu_bundle      # must stay well under 64 MiB
#
# Then carry target/gpu_bundle and run `bash scripts/gpu_check.sh target/gpu_bundle` there.
set -euo pipefail
cd "$(dirname "$0")/.."
bundle=target/gpu_bundle
rm -rf "$bundle"
mkdir -p "$bundle/wheels"

cargo build --release --features cuda --bin explainseg
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
cp "$target_dir/release/explainseg" "$bundle/explainseg"
test_bin=$(cargo test --release --features cuda --test cuda_engine --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "cuda_engine" and m.get("executable"):
        print(m["executable"])')
[ -n "$test_bin" ] || { echo "no cuda_engine test binary" >&2; exit 1; }
cp "$test_bin" "$bundle/cuda_engine"
strip "$bundle/explainseg" "$bundle/cuda_engine"
pwd > "$bundle/build_root"

python3 -m pip download --quiet --disable-pip-version-check --no-deps --dest "$bundle/wheels" captum==0.9.0
du -sh "$bundle"
