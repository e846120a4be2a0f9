#!/usr/bin/env python3
"""Generate the fixtures for `tests/preprocess.rs` (module `explainseg::image`).

Reference versions (the fixtures were produced with exactly these):
    Python 3.11, Pillow 13.0.0 (libjpeg-turbo 3.2.0, libtiff 4.7.2, zlib 1.2.13),
    numpy 2.4.6, torch 2.15.0, torchvision 0.29.2, tifffile 2026.3.3.

How to run (from the repository root):
    python3 tools/gen_preprocess.py
It rewrites everything in tests/fixtures/preprocess/ except README.md (about
0.65 MB) and prints the versions it used. The output is deterministic (seeded numpy generators), so
re-running it with the versions above reproduces the files byte for byte.

What it writes:
  * small test images made here (JPEG 4:2:0 / 4:2:2 / 4:4:4 / gray /
    progressive, PNG RGBA / palette / gray+alpha / 16-bit gray / 16-bit RGB,
    TIFF 8-bit RGB (LZW) / 16-bit RGB), and next to each the pixels that the
    reference decoder gives, as RGB HWC .npy (u8, or u16 for 16-bit files);
  * Pillow `Image.resize` results (BICUBIC, LANCZOS, BILINEAR) at many sizes, up,
    down, odd factors and both pass orders, as u8 .npy; and Pillow mode "F"
    (float) resizes as f32 .npy for the float path;
  * torchvision DINO-eval outputs: Resize(256, BICUBIC) -> CenterCrop(224) ->
    ToTensor -> Normalize(ImageNet), plus smaller Resize/CenterCrop and fixed-size
    variants; big outputs are stored as sampled rows plus per-channel sums;
  * ToTensor + Normalize applied to every u8 value (bit-exactness check);
  * if ../shared/data/kvasir_seg exists: checksums and sampled rows of three real
    Kvasir JPEGs as decoded by Pillow.
  * manifest.json, which the Rust test reads to find all of the above.

Two optional wide checks write outside the repository (see sweep() and
decode_sweep() below, and the ignored tests of the same names):
    python3 tools/gen_preprocess.py --sweep /tmp/pillow_sweep 600
    python3 tools/gen_preprocess.py --decode-sweep /tmp/decode_sweep.json

Tolerances are listed in tests/fixtures/preprocess/README.md.
"""
from __future__ import annotations

import json
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import PIL
import tifffile
import torch
import torchvision
from PIL import Image, features
from torchvision import transforms as T

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "preprocess"
KVASIR = ROOT.parent / "shared" / "data" / "kvasir_seg" / "images"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def save_npy(name: str, arr: np.ndarray) -> str:
    arr = np.ascontiguousarray(arr)
    np.save(OUT / name, arr, allow_pickle=False)
    return name


def synthetic_rgb(h: int, w: int, seed: int) -> np.ndarray:
    """Smooth gradients + sinusoidal texture + hard edges + a little noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 128 + 100 * np.sin(x / w * 3.0) * np.cos(y / h * 2.0)
    g = 40 + 180 * (x + y) / (w + h) + 25 * np.sin(x * 1.3) * np.sin(y * 0.9)
    b = 200 - 150 * y / h + 30 * np.cos((x - y) * 0.7)
    img = np.stack([r, g, b], axis=-1)
    # hard-edged blocks (saturated colours make the chroma upsampling matter)
    img[h // 4 : h // 2, w // 5 : w // 2] = (250, 10, 20)
    img[h // 2 :, 2 * w // 3 :] = (5, 240, 30)
    img[(x.astype(int) // 3 + y.astype(int) // 3) % 7 == 0] = (255, 255, 255)
    img += rng.normal(0, 6, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def png16(path: Path, arr: np.ndarray) -> None:
    """Minimal 16-bit PNG writer (Pillow cannot write 16-bit RGB PNG)."""
    h, w = arr.shape[:2]
    color_type = 0 if arr.ndim == 2 else {3: 2, 4: 6}[arr.shape[2]]
    raw = b"".join(b"\x00" + arr[i].astype(">u2").tobytes() for i in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    )


def pil_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).copy()


def checksums(rgb: np.ndarray, stem: str) -> dict:
    """Per-channel sums, a position-weighted sum and four full rows of an RGB u8 image."""
    h, w = rgb.shape[:2]
    flat = rgb.reshape(-1).astype(np.uint64)
    idx = np.arange(flat.size, dtype=np.uint64)
    weights = (idx * np.uint64(2654435761)) & np.uint64(0xFFFFFFFF)
    wsum = int(np.sum(flat * weights, dtype=np.uint64))  # < 2^63 for images below 2^21 pixels
    rows = [0, h // 3, h // 2, h - 1]
    return {
        "width": w,
        "height": h,
        "channel_sums": [int(rgb[..., c].astype(np.uint64).sum()) for c in range(3)],
        "weighted_sum": str(wsum),
        "rows": rows,
        "row_values": save_npy(f"{stem}.rows.npy", rgb[rows]),
    }


def rows_to_sample(n: int, step: int) -> list[int]:
    rows = list(range(0, n, step))
    if rows[-1] != n - 1:
        rows.append(n - 1)
    return rows


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.iterdir():
        if old.name != "README.md":
            old.unlink()
    versions = {
        "python": sys.version.split()[0],
        "pillow": PIL.__version__,
        "libjpeg_turbo": features.version("libjpeg_turbo"),
        "libtiff": features.version("libtiff"),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "tifffile": tifffile.__version__,
    }
    manifest: dict = {"versions": versions, "decode": [], "resize_u8": [], "resize_f32": [], "pipeline": []}

    # ---------------------------------------------------------------- images
    small = synthetic_rgb(47, 61, seed=0)  # H=47, W=61
    big = synthetic_rgb(257, 299, seed=1)  # 299x257: Resize(256) -> 297x256, left = round(36.5) = 36
    decode_cases = []

    def add_decode(file: str, ref: np.ndarray, reference: str) -> None:
        assert ref.ndim == 3 and ref.shape[2] == 3
        npy = save_npy(file.rsplit(".", 1)[0] + ".rgb.npy", ref)
        decode_cases.append({"file": file, "pixels": npy, "dtype": str(ref.dtype), "reference": reference})

    Image.fromarray(small).save(OUT / "jpeg420_q85.jpg", quality=85, subsampling=2)
    add_decode("jpeg420_q85.jpg", pil_rgb(OUT / "jpeg420_q85.jpg"), "PIL convert('RGB')")
    Image.fromarray(synthetic_rgb(38, 53, seed=2)).save(OUT / "jpeg444_q90.jpg", quality=90, subsampling=0)
    add_decode("jpeg444_q90.jpg", pil_rgb(OUT / "jpeg444_q90.jpg"), "PIL convert('RGB')")
    Image.fromarray(synthetic_rgb(29, 43, seed=3)).save(OUT / "jpeg422_q80.jpg", quality=80, subsampling=1)
    add_decode("jpeg422_q80.jpg", pil_rgb(OUT / "jpeg422_q80.jpg"), "PIL convert('RGB')")
    gray = synthetic_rgb(33, 45, seed=4)[..., 1]
    Image.fromarray(gray, mode="L").save(OUT / "gray_q88.jpg", quality=88)
    add_decode("gray_q88.jpg", pil_rgb(OUT / "gray_q88.jpg"), "PIL convert('RGB')")
    Image.fromarray(synthetic_rgb(41, 35, seed=5)).save(
        OUT / "progressive_q75.jpg", quality=75, subsampling=2, progressive=True
    )
    add_decode("progressive_q75.jpg", pil_rgb(OUT / "progressive_q75.jpg"), "PIL convert('RGB')")
    Image.fromarray(big).save(OUT / "big_299x257_q90.jpg", quality=90, subsampling=2)
    manifest["decode_checksum"] = [
        {"file": "big_299x257_q90.jpg", **checksums(pil_rgb(OUT / "big_299x257_q90.jpg"), "big_299x257_q90")}
    ]

    rng = np.random.default_rng(10)
    rgba = np.concatenate([synthetic_rgb(30, 40, seed=6), rng.integers(0, 256, (30, 40, 1), dtype=np.uint8)], -1)
    Image.fromarray(rgba, mode="RGBA").save(OUT / "rgba.png")
    add_decode("rgba.png", pil_rgb(OUT / "rgba.png"), "PIL convert('RGB') (alpha dropped)")
    la = np.stack([gray[:20, :25], rng.integers(0, 256, (20, 25), dtype=np.uint8)], -1)
    Image.fromarray(la, mode="LA").save(OUT / "gray_alpha.png")
    add_decode("gray_alpha.png", pil_rgb(OUT / "gray_alpha.png"), "PIL convert('RGB') (alpha dropped)")
    Image.fromarray(synthetic_rgb(19, 23, seed=7)).convert("P", palette=Image.Palette.ADAPTIVE, colors=37).save(
        OUT / "palette.png"
    )
    add_decode("palette.png", pil_rgb(OUT / "palette.png"), "PIL convert('RGB')")

    g16 = (synthetic_rgb(29, 37, seed=8)[..., 0].astype(np.uint32) * 257 + rng.integers(0, 257, (29, 37))).astype(
        np.uint16
    )
    Image.fromarray(g16).save(OUT / "gray16.png")  # mode I;16 -> 16-bit grayscale PNG
    with Image.open(OUT / "gray16.png") as im:
        assert im.mode.startswith("I"), im.mode
        dec = np.asarray(im).astype(np.uint16)
    assert np.array_equal(dec, g16)
    add_decode("gray16.png", np.repeat(dec[..., None], 3, axis=2), "PIL raw I;16 values, replicated")

    rgb16 = rng.integers(0, 65536, (21, 27, 3), dtype=np.uint16)
    rgb16[:10, :10] = np.arange(100, dtype=np.uint16).reshape(10, 10, 1) * 655
    png16(OUT / "rgb16.png", rgb16)
    add_decode("rgb16.png", rgb16, "the array written (PIL reduces 16-bit RGB PNG to 8 bits)")

    Image.fromarray(synthetic_rgb(23, 31, seed=9)).save(OUT / "rgb8_lzw.tif", compression="tiff_lzw")
    add_decode("rgb8_lzw.tif", pil_rgb(OUT / "rgb8_lzw.tif"), "PIL convert('RGB')")
    t16 = rng.integers(0, 65536, (17, 22, 3), dtype=np.uint16)
    tifffile.imwrite(OUT / "rgb16_tiff.tif", t16, photometric="rgb")
    assert np.array_equal(tifffile.imread(OUT / "rgb16_tiff.tif"), t16)
    add_decode("rgb16_tiff.tif", t16, "tifffile.imread")
    manifest["decode"] = decode_cases

    # ---------------------------------------------------------------- resize (u8, Pillow)
    jpeg_small = pil_rgb(OUT / "jpeg420_q85.jpg")  # 61x47
    noise = np.random.default_rng(11).integers(0, 256, (37, 40, 3), dtype=np.uint8)
    save_npy("noise_40x37.rgb.npy", noise)
    resize_cases = []
    filters = {"bicubic": Image.BICUBIC, "lanczos3": Image.LANCZOS, "bilinear": Image.BILINEAR}

    def add_resize(src_name: str, src: np.ndarray, w: int, h: int, flt: str) -> None:
        out = np.asarray(Image.fromarray(src).resize((w, h), filters[flt]))
        name = f"resize_{src_name}_{flt}_{w}x{h}.npy"
        save_npy(name, out)
        resize_cases.append({"source": src_name, "filter": flt, "width": w, "height": h, "expected": name})

    sizes_jpeg = [(32, 24), (17, 61), (61, 23), (100, 47), (7, 5), (150, 13), (96, 80), (45, 33), (1, 1), (3, 90)]
    for w, h in sizes_jpeg:
        add_resize("jpeg420_q85", jpeg_small, w, h, "bicubic")
    # Pillow >= 13 runs the vertical pass first when the height shrinks by more
    # than twice as many pixels as the width; these cover both sides of that rule.
    # 40x37 -> WxH is vertical-first iff H < 37 and 37 - H > 2 * (40 - W), i.e. 2W - H > 43.
    sizes_noise = [
        (21, 2), (22, 2), (23, 2), (22, 1), (23, 3), (24, 3), (23, 4), (30, 10), (39, 36),
        (41, 12), (64, 50), (13, 29), (40, 20), (38, 3), (5, 36),
    ]
    for w, h in sizes_noise:
        add_resize("noise_40x37", noise, w, h, "bicubic")
    for w, h in [(32, 24), (100, 47), (22, 9)]:
        add_resize("jpeg420_q85", jpeg_small, w, h, "lanczos3")
    for w, h in [(32, 24), (90, 70)]:
        add_resize("jpeg420_q85", jpeg_small, w, h, "bilinear")
    manifest["resize_u8"] = resize_cases

    # ---------------------------------------------------------------- resize (f32, Pillow mode "F")
    noise_f = noise.astype(np.float32) * np.float32(257.0) + np.float32(0.25)
    save_npy("noise_40x37.f32.npy", noise_f)
    f_cases = []
    for flt in ("bicubic", "lanczos3"):
        for w, h in [(23, 4), (64, 50), (13, 29), (41, 12)]:
            chans = [
                np.asarray(Image.fromarray(np.ascontiguousarray(noise_f[..., c]), mode="F").resize((w, h), filters[flt]))
                for c in range(3)
            ]
            out = np.stack(chans, -1).astype(np.float32)
            name = f"resizef_noise_40x37_{flt}_{w}x{h}.npy"
            save_npy(name, out)
            f_cases.append({"source": "noise_40x37", "filter": flt, "width": w, "height": h, "expected": name})
    manifest["resize_f32"] = f_cases

    # ---------------------------------------------------------------- torchvision pipelines
    norm = T.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    pipe_cases = []

    def add_pipeline(file: str, kind: str, params: dict, tf: T.Compose, full: bool) -> None:
        with Image.open(OUT / file) as im:
            x = tf(im.convert("RGB"))
        assert x.dtype == torch.float32 and x.ndim == 3
        x = x.numpy()
        stem = f"pipe_{file.rsplit('.', 1)[0]}_{kind}"
        case = {"file": file, "mode": kind, **params, "shape": [1, *x.shape]}
        case["channel_sums"] = [float(x[c].astype(np.float64).sum()) for c in range(3)]
        if full:
            case["full"] = save_npy(stem + ".npy", x)
        else:
            rows = rows_to_sample(x.shape[1], 16)
            case["rows"] = rows
            case["row_values"] = save_npy(stem + ".rows.npy", x[:, rows, :])
        pipe_cases.append(case)

    def dino(short: int, crop: int) -> T.Compose:
        return T.Compose(
            [T.Resize(short, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(crop), T.ToTensor(), norm]
        )

    add_pipeline("jpeg420_q85.jpg", "dino_eval", {"short_side": 256, "crop": 224}, dino(256, 224), full=False)
    add_pipeline("big_299x257_q90.jpg", "dino_eval", {"short_side": 256, "crop": 224}, dino(256, 224), full=False)
    add_pipeline("gray_q88.jpg", "dino_eval", {"short_side": 256, "crop": 224}, dino(256, 224), full=False)
    add_pipeline("big_299x257_q90.jpg", "dino_eval", {"short_side": 64, "crop": 57}, dino(64, 57), full=True)
    add_pipeline("jpeg420_q85.jpg", "dino_eval", {"short_side": 40, "crop": 33}, dino(40, 33), full=True)
    fixed = T.Compose([T.Resize((50, 70), interpolation=T.InterpolationMode.BICUBIC), T.ToTensor(), norm])
    add_pipeline("jpeg420_q85.jpg", "fixed", {"height": 50, "width": 70}, fixed, full=True)
    add_pipeline("rgba.png", "none", {}, T.Compose([T.ToTensor(), norm]), full=True)
    manifest["pipeline"] = pipe_cases

    # ---------------------------------------------------------------- ToTensor + Normalize on every u8 value
    ramp = np.zeros((16, 16, 3), np.uint8)
    v = np.arange(256).reshape(16, 16)
    for c in range(3):
        ramp[..., c] = (v + 85 * c) % 256
    save_npy("norm_ramp.rgb.npy", ramp)
    save_npy("norm_ramp.expected.npy", T.Compose([T.ToTensor(), norm])(Image.fromarray(ramp)).numpy())
    manifest["normalize"] = {"input": "norm_ramp.rgb.npy", "expected": "norm_ramp.expected.npy"}

    # ---------------------------------------------------------------- real Kvasir JPEGs (optional)
    kv = []
    if KVASIR.is_dir():
        for p in sorted(KVASIR.glob("*.jpg"))[:3]:
            kv.append({"file": p.name, **checksums(pil_rgb(p), f"kvasir_{p.stem}")})
    manifest["kvasir"] = kv

    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    total = sum(f.stat().st_size for f in OUT.iterdir())
    print(json.dumps(versions))
    print(f"wrote {len(list(OUT.iterdir()))} files, {total / 1024:.0f} KiB, to {OUT}")


def sweep(out_dir: Path, n_cases: int) -> None:
    """Optional wide check (not committed): random sources and sizes, every filter.

    python3 tools/gen_preprocess.py --sweep /tmp/pillow_sweep 400
    EXPLAINSEG_PILLOW_SWEEP_DIR=/tmp/pillow_sweep cargo test --test preprocess -- --ignored pillow_sweep
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1234)
    names = {"bicubic": Image.BICUBIC, "lanczos3": Image.LANCZOS, "bilinear": Image.BILINEAR}
    cases = []
    for i in range(n_cases):
        big = i % 10 == 0
        h, w = (int(v) for v in rng.integers(200, 700, 2)) if big else (int(v) for v in rng.integers(1, 90, 2))
        oh, ow = (int(v) for v in rng.integers(1, 300 if big else 130, 2))
        flt = ["bicubic", "bicubic", "lanczos3", "bilinear"][i % 4]
        src = synthetic_rgb(h, w, seed=100 + i) if i % 2 else rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        np.save(out_dir / f"src_{i}.npy", src)
        np.save(out_dir / f"out_{i}.npy", np.asarray(Image.fromarray(src).resize((ow, oh), names[flt])))
        case = {"src": f"src_{i}.npy", "out": f"out_{i}.npy", "filter": flt, "width": ow, "height": oh}
        if i % 5 == 0:
            srcf = src.astype(np.float32) * np.float32(1.5) - np.float32(7.0)
            outf = np.stack(
                [np.asarray(Image.fromarray(np.ascontiguousarray(srcf[..., c]), mode="F").resize((ow, oh), names[flt]))
                 for c in range(3)], -1).astype(np.float32)
            np.save(out_dir / f"srcf_{i}.npy", srcf)
            np.save(out_dir / f"outf_{i}.npy", outf)
            case.update(srcf=f"srcf_{i}.npy", outf=f"outf_{i}.npy")
        cases.append(case)
    (out_dir / "sweep.json").write_text(json.dumps(cases))
    print(f"wrote {len(cases)} sweep cases to {out_dir}")


def decode_sweep(out_json: Path) -> None:
    """Optional wide check (not committed): Pillow checksums of every image under
    ../shared/data/*/images and */masks.

    python3 tools/gen_preprocess.py --decode-sweep /tmp/decode_sweep.json
    EXPLAINSEG_DECODE_SWEEP_JSON=/tmp/decode_sweep.json cargo test --test preprocess -- --ignored decode_sweep
    """
    data = ROOT.parent / "shared" / "data"
    cases = []
    for p in sorted(data.glob("*/images/*")) + sorted(data.glob("*/masks/*")):
        if p.suffix.lower() not in (".jpg", ".jpeg", ".png", ".tif", ".tiff"):
            continue
        with Image.open(p) as im:
            if im.mode not in ("L", "LA", "RGB", "RGBA", "P", "1"):
                continue  # 16-bit etc.: Pillow's convert("RGB") is not the reference there
            rgb = np.asarray(im.convert("RGB"))
        flat = rgb.reshape(-1).astype(np.uint64)
        idx = np.arange(flat.size, dtype=np.uint64)
        weights = (idx * np.uint64(2654435761)) & np.uint64(0xFFFFFFFF)
        cases.append({
            "path": str(p), "width": rgb.shape[1], "height": rgb.shape[0],
            "channel_sums": [int(rgb[..., c].astype(np.uint64).sum()) for c in range(3)],
            "weighted_sum": str(int(np.sum(flat * weights, dtype=np.uint64))),
        })
    out_json.write_text(json.dumps(cases))
    print(f"wrote {len(cases)} decode checksums to {out_json}")


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "--decode-sweep":
        decode_sweep(Path(sys.argv[2]))
    elif len(sys.argv) >= 2 and sys.argv[1] == "--sweep":
        sweep(Path(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 400)
    else:
        main()
