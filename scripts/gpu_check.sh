#!/usr/bin/env bash
# Every GPU check and benchmark of the CUDA backend in one call on a lent GPU machine
# (driver, PyTorch and timm; no Rust, no Captum, no network). Build the bundle first,
# here: `bash tools/gpu_bundle.sh`; then, in the repository root on the GPU machine:
#
#   bash scripts/gpu_check.sh target/gpu_bundle          # results under $OUT (default gpu_out)
#
# Each step runs under its own time-out and leaves $OUT/<step>.json (rc, seconds, and the
# step's own JSON when it prints one) plus its log; $OUT/summary.json gathers them with
# each time beside its floor and beside PyTorch + Captum fp32 measured in the same run.
# About 4 minutes on one H100; a step that fails or times out does not stop the others.
set -uo pipefail
bundle="$(cd "${1:?usage: scripts/gpu_check.sh BUNDLE_DIR}" && pwd)"
cd "$(dirname "$0")/.."
out="${OUT:-gpu_out}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

# ---- the CUDA libraries cudarc loads by name (libcuda, libnvrtc, libcublas, libcublasLt)
lib_dirs=()
while IFS= read -r d; do lib_dirs+=("$d"); done < <(
    python3 - <<'PY'
import glob, os, site, subprocess
want = ("libcuda.so", "libnvrtc.so", "libcublas.so", "libcublasLt.so")
roots = ["/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/local/cuda/lib64",
         *glob.glob("/usr/local/cuda*/targets/x86_64-linux/lib"), *glob.glob("/usr/local/cuda*/lib64")]
for sp in site.getsitepackages():
    roots += glob.glob(os.path.join(sp, "nvidia", "*", "lib"))  # PyTorch's CUDA wheels
seen = []
for r in roots:
    if os.path.isdir(r) and any(glob.glob(os.path.join(r, w + "*")) for w in want):
        r = os.path.realpath(r)
        if r not in seen:
            seen.append(r)
print("\n".join(seen))
PY
)
LD_LIBRARY_PATH="$(IFS=:; echo "${lib_dirs[*]}")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export LD_LIBRARY_PATH
{
    echo "GPU: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1)"
    for lib in libcuda.so libnvrtc.so libcublas.so libcublasLt.so; do
        found=$(for d in "${lib_dirs[@]}"; do ls "$d"/$lib* 2>/dev/null; done | grep -v '\.alt\.' | head -3 | tr '\n' ' ')
        echo "$lib: ${found:-NOT FOUND}"
    done
    echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
    echo "compute-sanitizer: $(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)"
} | tee "$out/env.txt"

# Test binaries read tests/fixtures under the directory they were built in.
build_root="$(cat "$bundle/build_root")"
if [ ! -d "$build_root/tests/fixtures" ]; then
    mkdir -p "$(dirname "$build_root")" && ln -sfn "$PWD" "$build_root"
fi

# Captum from the carried wheel, without touching the machine's PyTorch.
pydeps="$out/.pydeps"
python3 -m pip install --quiet --no-index --no-deps --target "$pydeps" "$bundle"/wheels/captum-*.whl \
    > "$out/captum_install.log" 2>&1
export PYTHONPATH="$pydeps${PYTHONPATH:+:$PYTHONPATH}"

# step NAME SECONDS CMD...: run under a time-out; stdout to NAME.out, stderr to NAME.log;
# NAME.json records rc, seconds and the last JSON line of stdout, if any.
step() {
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit}s): $*"
    local t0=$SECONDS
    timeout --kill-after=5 "$limit" "$@" > "$out/$name.out" 2> "$out/$name.log"
    local rc=$? secs=$((SECONDS - t0))
    tail -5 "$out/$name.log"
    python3 - "$name" "$rc" "$secs" "$out" <<'PY'
import json, sys
name, rc, secs, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
result = None
for line in reversed(open(f"{out}/{name}.out", errors="replace").read().splitlines()):
    try:
        result = json.loads(line)
        break
    except ValueError:
        continue
rec = {"step": name, "rc": rc, "timed_out": rc in (124, 137), "seconds": secs, "result": result}
json.dump(rec, open(f"{out}/{name}.json", "w"), indent=1)
print(json.dumps({k: rec[k] for k in ("step", "rc", "timed_out", "seconds")}))
PY
}

es="$bundle/explainseg"
# 1. Parity with the CPU engine, tiny fixture and ViT-S/16 224² (a skip is a failure).
EXPLAINSEG_REQUIRE_GPU=1 step parity 150 "$bundle/cuda_engine" --test-threads 1 --nocapture
# 2. compute-sanitizer on one small case (out-of-bounds / uninitialised, then shared-memory races).
cs=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
if [ -n "$cs" ]; then
    for tool in memcheck racecheck; do
        EXPLAINSEG_REQUIRE_GPU=1 step "sanitizer_$tool" 90 "$cs" --tool "$tool" --error-exitcode 3 \
            "$bundle/cuda_engine" --exact gpu_logits_and_input_gradients_match_the_cpu_engine --test-threads 1
    done
else
    echo '{"step":"sanitizer","rc":null,"skipped":"compute-sanitizer not found"}' > "$out/sanitizer.json"
fi
# 3. IG 50 steps × 5 NoiseTunnel samples on ViT-S/16 224², one image, best of 3, with the
#    engine's GEMMs in each precision mode (f32; TF32 and bf16 tensor cores, docs/gpu.md).
step ig_explainseg_f32 60 "$es" --quiet bench --device cuda --model s --size 224 --batch 50 \
    --seconds 3 --steps 50 --samples 5 --repeats 3 --json
# 3b. The same with the IG batches launched eagerly instead of replayed as CUDA graphs.
EXPLAINSEG_CUDA_GRAPHS=0 step ig_explainseg_f32_no_graphs 60 "$es" --quiet bench --device cuda \
    --model s --size 224 --batch 50 --seconds 3 --steps 50 --samples 5 --repeats 3 --json
for precision in tf32 bf16; do
    step "ig_explainseg_$precision" 45 "$es" --quiet bench --device cuda --precision "$precision" \
        --model s --size 224 --batch 50 --seconds 3 --steps 50 --samples 5 --repeats 3 --json
done
# 4. The whole pipeline per image on the GPU (explain, feature, mask, CRF), every variant.
step pipeline_explainseg 90 "$es" --quiet bench --pipeline --device cuda --model s --size 224 \
    --batch 50 --steps 50 --samples 5 --images 4 --json
# 5. DenseCRF 224², 2 labels, 10 mean-field iterations on the GPU, best of 20.
step crf_explainseg 60 "$es" --quiet bench --crf --device cuda --size 224 --repeats 20 --json
# 6. PyTorch + Captum fp32 eager on the same GPU, same shapes, best of 3.
step ig_torch_f32 120 python3 tools/bench_torch.py --device cuda --batch 50 --seconds 3 \
    --steps 50 --samples 5 --repeats 3

# ---- summary: each time beside its floor and beside the reference from this run
python3 - "$out" <<'PY' | tee "$out/summary.txt"
import json, os, sys
out = sys.argv[1]
def load(name):
    p = os.path.join(out, name + ".json")
    return json.load(open(p)) if os.path.exists(p) else None
# ViT-S/16 224²: 19.11 GFLOP per forward + input-gradient pass; IG 50 × 5 = 250 passes.
TFLOP = 19.11e9 * 250 / 1e12
# H100 SXM dense peaks (NVIDIA H100 datasheet): bf16 989, TF32 494.7, fp32 66.9 TFLOP/s.
floors_ms = {"bf16": TFLOP / 989 * 1e3, "tf32": TFLOP / 494.7 * 1e3, "f32": TFLOP / 66.9 * 1e3}
steps = {n: load(n) for n in ["parity", "sanitizer_memcheck", "sanitizer_racecheck", "ig_explainseg_f32",
                               "ig_explainseg_f32_no_graphs", "ig_explainseg_tf32", "ig_explainseg_bf16",
                               "pipeline_explainseg", "crf_explainseg", "ig_torch_f32"]}
modes = {p: (steps["ig_explainseg_" + p] or {}).get("result") or {} for p in ["f32", "tf32", "bf16"]}
ours = modes["f32"]
eager = (steps["ig_explainseg_f32_no_graphs"] or {}).get("result") or {}
ref = (steps["ig_torch_f32"] or {}).get("result") or {}
pipe = (steps["pipeline_explainseg"] or {}).get("result") or {}
crf = (steps["crf_explainseg"] or {}).get("result") or {}
summary = {
    "steps": {n: (s and {k: s[k] for k in ("rc", "timed_out", "seconds")}) for n, s in steps.items()},
    "tflop_per_image": round(TFLOP, 3),
    "ig_ms_per_image": {
        **{"explainseg_" + p: r.get("ig_seconds") and 1e3 * r["ig_seconds"] for p, r in modes.items()},
        "explainseg_f32_no_graphs": eager.get("ig_seconds") and 1e3 * eager["ig_seconds"],
        "torch_captum_f32": ref.get("ig_seconds") and 1e3 * ref["ig_seconds"],
        "floor": floors_ms,
    },
    # Each mode's time as a fraction of its own dense-peak floor.
    "ig_fraction_of_floor": {p: floors_ms[p] / (1e3 * r["ig_seconds"])
                             for p, r in modes.items() if r.get("ig_seconds")},
    # Target on one H100: 1 ms.
    "crf_224_ms": crf.get("crf_seconds") and 1e3 * crf["crf_seconds"],
    "pipeline_seconds_per_image": {r["variant"]: r for r in pipe.get("variants", [])},
}
if ours.get("ig_seconds") and ref.get("ig_seconds"):
    summary["ig_speedup_vs_torch_captum_f32"] = ref["ig_seconds"] / ours["ig_seconds"]
    summary["ig_fraction_of_f32_floor"] = floors_ms["f32"] / (1e3 * ours["ig_seconds"])
json.dump(summary, open(os.path.join(out, "summary.json"), "w"), indent=1)
print(json.dumps(summary, indent=1))
PY
