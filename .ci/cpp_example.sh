#!/usr/bin/env bash
# The C/C++ surface from a fresh checkout: CMake builds the library (through cargo)
# and cpp_example/, the example segments the tiny fixture image, and an installed
# copy is consumed through pkg-config and through find_package(explainseg).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cmake >/dev/null; then
    python3 -m pip install --quiet cmake
    # The wheel's binaries may not be on PATH (user site, pyenv without a rehash).
    PATH="$(python3 -c 'import cmake; print(cmake.CMAKE_BIN_DIR)'):$PATH"
fi
if ! command -v pkg-config >/dev/null; then
    apt-get update -qq && apt-get install -y -qq pkg-config > /dev/null
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "== configure and build cpp_example (CMake runs cargo build --release --lib)"
cmake -S cpp_example -B "$work/build" -DCMAKE_BUILD_TYPE=Release > "$work/configure.log" \
    || { cat "$work/configure.log"; exit 1; }
cmake --build "$work/build"

echo "== run the example (tiny model, the paper's 50 steps × 5 samples)"
image=tests/fixtures/preprocess/jpeg420_q85.jpg
"$work/build/explainseg_example" tests/fixtures/engine/s16_tiny/model_timm.safetensors \
    "$image" "$work/mask.png" xncut | tee "$work/example.out"
grep -q '^class [0-9]' "$work/example.out"
grep -q '^score [0-9.]' "$work/example.out"

echo "== the mask PNG has the image's size"
python3 - "$image" "$work/mask.png" <<'PY'
import struct, sys

def jpeg_size(path):
    data = open(path, "rb").read()
    i = 2
    while i < len(data):
        marker, length = data[i + 1], struct.unpack(">H", data[i + 2:i + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            h, w = struct.unpack(">HH", data[i + 5:i + 9])
            return w, h
        i += 2 + length
    raise SystemExit(f"{path}: no SOF marker")

def png_size(path):
    data = open(path, "rb").read(24)
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise SystemExit(f"{path}: not a PNG")
    return struct.unpack(">II", data[16:24])

image, mask = jpeg_size(sys.argv[1]), png_size(sys.argv[2])
print(f"image {image[0]}x{image[1]}, mask {mask[0]}x{mask[1]}")
if image != mask:
    raise SystemExit("mask size differs from the image size")
PY

echo "== the same mask as the CLI's \`explainseg segment\` (same defaults, 224² fixed resize)"
cargo run --release --quiet -- segment --weights tests/fixtures/engine/s16_tiny/model_timm.safetensors \
    --image "$image" --size 224 --variant xncut --out "$work/cli" > /dev/null
cmp "$work/cli/mask.png" "$work/mask.png"

echo "== install to a temporary prefix"
cmake --install "$work/build" --prefix "$work/prefix" > /dev/null
for f in include/explainseg.h lib/libexplainseg.so lib/pkgconfig/explainseg.pc \
         lib/cmake/explainseg/explainsegConfig.cmake bin/explainseg_example; do
    test -e "$work/prefix/$f" || { echo "not installed: $f" >&2; exit 1; }
done
# Without arguments it prints its usage and exits 2; 127 would mean it cannot find the library.
rc=0; "$work/prefix/bin/explainseg_example" > /dev/null 2>&1 || rc=$?
test "$rc" = 2 || { echo "the installed example does not start (exit $rc)" >&2; exit 1; }

echo "== the shipped library holds no fuzz entry points (feature \`fuzzing\` is for fuzz/ and tests only)"
# The static library keeps every public Rust item; the cdylib keeps only what
# its C symbols reach, so its strings are checked too.
if nm -C target/release/libexplainseg.a | grep -q 'explainseg::fuzzing' \
    || strings -a "$work/prefix/lib/libexplainseg.so" | grep -q 'unknown fuzz target'; then
    echo "the release library contains explainseg::fuzzing" >&2
    exit 1
fi

echo "== consumer through pkg-config"
export PKG_CONFIG_PATH="$work/prefix/lib/pkgconfig"
test "$(pkg-config --modversion explainseg)" = "$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
# shellcheck disable=SC2046
cc -std=c99 -Wall -Wextra -Werror cpp_example/consumer/consumer.c $(pkg-config --cflags --libs explainseg) \
    -o "$work/consumer_pc"
LD_LIBRARY_PATH="$work/prefix/lib" "$work/consumer_pc"

echo "== consumer through find_package(explainseg)"
cmake -S cpp_example/consumer -B "$work/consumer" -DCMAKE_PREFIX_PATH="$work/prefix" > /dev/null
cmake --build "$work/consumer" > /dev/null
"$work/consumer/consumer"

echo "cpp_example OK"
