#!/usr/bin/env bash
# The C ABI under sanitizers (not part of CI: each step rebuilds the crate).
#
#  1. cpp_example built by g++ with AddressSanitizer + UBSan (LeakSanitizer on)
#     against the release library, run on the tiny fixture model for every
#     variant: the C++ side and every allocation of the library are checked for
#     leaks, and the C++ side for memory errors and undefined behaviour.
#  2. tests/capi.rs (every C-ABI test, the 8 threads × 100 calls one included)
#     built with the nightly toolchain's -Zsanitizer=address.
#  3. the 8 threads × 100 calls test under -Zsanitizer=thread, with the standard
#     library rebuilt and instrumented too (-Zbuild-std), so ThreadSanitizer sees
#     every lock and atomic of std and rayon: any report is a real finding.
#
# Needs the nightly toolchain with rust-src (`rustup component add rust-src
# --toolchain nightly`). The TSan build compiles std and every dependency
# (about 16 minutes on 2 busy cores) into its own target folder.
#
#   tools/sanitize.sh            # all three
#   tools/sanitize.sh asan-cpp   # one of: asan-cpp, asan-capi, tsan
set -uo pipefail
cd "$(dirname "$0")/.."
steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(asan-cpp asan-capi tsan)
host="$(rustc -vV | sed -n 's/^host: //p')"
base="${SANITIZE_TARGET_DIR:-$PWD/target/sanitize}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
status=0
model=tests/fixtures/engine/s16_tiny/model_timm.safetensors
image=tests/fixtures/preprocess/jpeg420_q85.jpg

for step in "${steps[@]}"; do
  case "$step" in
  asan-cpp)
    echo "== cpp_example with g++ -fsanitize=address,undefined"
    cargo build --release --lib || exit 1
    lib="${CARGO_TARGET_DIR:-target}/release"
    g++ -std=c++17 -g -O1 -fsanitize=address,undefined -fno-omit-frame-pointer \
        -fno-sanitize-recover=undefined -Iinclude cpp_example/main.cpp \
        -L"$lib" -lexplainseg -Wl,-rpath,"$(cd "$lib" && pwd)" -o "$work/example" || exit 1
    for v in a b c xncut tokencut maskcut; do
      if ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
          "$work/example" "$model" "$image" "$work/mask_$v.png" "$v" 4 2 > "$work/$v.log" 2>&1; then
        echo "   $v: clean ($(grep -c . "$work/$v.log") lines of output)"
      else
        echo "!! $v: sanitizer report or failure"; cat "$work/$v.log"; status=1
      fi
    done
    ;;
  asan-capi)
    echo "== tests/capi.rs with -Zsanitizer=address (nightly)"
    if RUSTFLAGS="-Zsanitizer=address" RUSTDOCFLAGS="-Zsanitizer=address" \
        ASAN_OPTIONS=detect_leaks=1 CARGO_TARGET_DIR="$base/asan" \
        cargo +nightly test --release --target "$host" --test capi > "$work/asan.log" 2>&1; then
      grep "test result" "$work/asan.log"; echo "   clean"
    else
      tail -n 60 "$work/asan.log"; status=1
    fi
    ;;
  tsan)
    echo "== 8 threads x 100 calls with -Zsanitizer=thread and an instrumented std (nightly, -Zbuild-std)"
    RUSTFLAGS="-Zsanitizer=thread" CARGO_TARGET_DIR="$base/tsan" \
      cargo +nightly test -Zbuild-std --release --target "$host" --no-default-features \
      --test capi one_model_eight_threads_hundred_calls -- --exact > "$work/tsan.log" 2>&1
    rc=$?
    grep "test result" "$work/tsan.log"
    n=$(grep -c "WARNING: ThreadSanitizer" "$work/tsan.log")
    echo "   exit $rc, $n ThreadSanitizer reports"
    if [ "$n" -gt 0 ]; then
      # The frames of each report that are in explainseg's own code.
      grep -A30 "WARNING: ThreadSanitizer" "$work/tsan.log" | grep -o "explainseg::[A-Za-z0-9_:]*" | sort | uniq -c | sort -rn | head -20
      cp "$work/tsan.log" "${TSAN_LOG:-/tmp/explainseg-tsan.log}"
      echo "   full log: ${TSAN_LOG:-/tmp/explainseg-tsan.log}"
    fi
    [ "$rc" -eq 0 ] || status=1
    ;;
  *) echo "unknown step $step"; exit 2 ;;
  esac
done
exit $status
