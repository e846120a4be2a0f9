#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets/) with libFuzzer on the stable
# toolchain: the coverage instrumentation is passed to rustc directly, so
# neither cargo-fuzz nor nightly is needed. Not part of CI (it takes long);
# CI replays the corpora in tests/fuzz_corpus.rs.
#
#   tools/fuzz.sh                 # every target, 600 s each
#   FUZZ_SECONDS=30 tools/fuzz.sh npy image
#
# Each run: under `nice`, a 3 GiB address-space cap, -rss_limit_mb=2048, a 20 s
# per-input timeout; the seeds in fuzz/corpus/<target>/ are read, new entries go
# to fuzz/corpus-work/<target>/ (not committed), crashes
# to fuzz/artifacts/<target>/ (copy a crash to fuzz/regressions/<target>/ to make
# it a regression test). Exits non-zero if any target found a crash.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${FUZZ_SECONDS:-600}"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(safetensors image npy dicom csv capi_params)
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$PWD/target}"
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table -Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks"
# An explicit --target keeps the instrumentation off build scripts and proc macros.
host="$(rustc -vV | sed -n 's/^host: //p')"
nice -n 19 cargo build --release --bins --target "$host"
status=0
for t in "${targets[@]}"; do
    mkdir -p "corpus-work/$t" "artifacts/$t"
    echo "== fuzz $t for ${seconds}s"
    if ! nice -n 19 prlimit --as=3221225472 "$CARGO_TARGET_DIR/$host/release/$t" \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=20 -max_len=65536 \
        -artifact_prefix="artifacts/$t/" -print_final_stats=1 "corpus-work/$t" "corpus/$t" 2>&1 | tail -n 25; then
        echo "!! $t: crash or limit breach, see fuzz/artifacts/$t/"
        status=1
    fi
done
exit $status
