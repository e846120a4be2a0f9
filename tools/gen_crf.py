#!/usr/bin/env python3
"""Generate the fixtures for `tests/crf.rs` (module `explainseg::post::crf`).
Timings against pydensecrf: `python3 tools/bench_post.py`.

Reference: pydensecrf (Krähenbühl's densecrf wrapped by Lucas Beyer), here the PyPI sdist
`pydensecrf2==1.1` (a repackaging of lucasb-eyer/pydensecrf that bundles densecrf and
Eigen 3.3.9), built from source on x86-64 with gcc -O3 (SSE2, no FMA).

What worked to install it (Python 3.11, numpy 2.4.6, torch 2.15.0, Pillow 13.0.0):
    python3 -m venv --system-site-packages /tmp/crf_venv && . /tmp/crf_venv/bin/activate
    pip install "cython==0.29.36" setuptools wheel         # Cython 3 cannot build it
    pip install --no-build-isolation pydensecrf2==1.1      # sdist, builds in ~2.5 min
(`pip install pydensecrf2` with build isolation also pins Cython 0.29.36 itself; the
`pydensecrf` sdist on PyPI is an older snapshot and was not used.)

How to run (from the repository root):
    python3 tools/gen_crf.py            # rewrites tests/fixtures/crf/* except README.md

The wrapper under test is the DenseCRF step of TokenCut/MaskCut (CutLER maskcut/crf.py,
the same as TokenCut_video crf.py): mask -> logits [1-m, m] (float64) -> torch bilinear
resize to the image size (align_corners=False) -> softmax over the 2 channels ->
unary_from_softmax (clip 1e-5, -log, float32) -> DenseCRF2D(W, H, 2) ->
addPairwiseGaussian(sxy=3, compat=7) -> addPairwiseBilateral(sxy=50, srgb=5, compat=10)
-> inference(10) -> argmax. It is re-written below from that description.

All inputs are synthetic and seeded, so re-running with the versions above reproduces
the files byte for byte. Total size is about 1 MB.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "crf"

MAX_ITER, POS_W, POS_XY_STD, BI_W, BI_XY_STD, BI_RGB_STD = 10, 7, 3, 10, 50, 5


def dcrf_modules():
    import pydensecrf.densecrf as dcrf
    import pydensecrf.utils as utils
    return dcrf, utils


def mask_probs(mask: np.ndarray, h: int, w: int) -> np.ndarray:
    """crf.py steps 1-3: logits [bg, fg] = [1-m, m] (float64), bilinear resize, softmax."""
    import torch
    import torch.nn.functional as F
    fg = mask.astype(np.float64)[None]
    logits = torch.from_numpy(np.concatenate((1.0 - fg, fg), axis=0))
    logits = F.interpolate(logits.unsqueeze(0), size=(h, w), mode="bilinear").squeeze(0)
    return F.softmax(logits, dim=0).cpu().numpy()


def run_crf(image: np.ndarray, unary: np.ndarray, features=None):
    """pydensecrf with the wrapper's kernels. `features`, when given, replaces the
    bilateral term by addPairwiseEnergy(features, compat=10) (for C != 3 images)."""
    dcrf, _ = dcrf_modules()
    m = unary.shape[0]
    h, w = image.shape[:2]
    d = dcrf.DenseCRF2D(w, h, m)
    d.setUnaryEnergy(np.ascontiguousarray(unary.reshape(m, -1)))
    d.addPairwiseGaussian(sxy=POS_XY_STD, compat=POS_W)
    if features is None:
        d.addPairwiseBilateral(sxy=BI_XY_STD, srgb=BI_RGB_STD, rgbim=np.ascontiguousarray(image), compat=BI_W)
    else:
        d.addPairwiseEnergy(np.ascontiguousarray(features), compat=BI_W)
    q = np.array(d.inference(MAX_ITER), dtype=np.float32).reshape(m, h, w)
    return q, np.argmax(q, axis=0).astype(np.uint8)


def bilateral_features(image: np.ndarray) -> np.ndarray:
    """(x/sxy, y/sxy, c_0/srgb, ...) in float32, (2+C, H*W): what densecrf's
    addPairwiseBilateral computes for RGB, extended to any channel count."""
    h, w, c = image.shape
    ys, xs = np.mgrid[0:h, 0:w]
    f = [xs.astype(np.float32) / np.float32(BI_XY_STD), ys.astype(np.float32) / np.float32(BI_XY_STD)]
    f += [image[:, :, k].astype(np.float32) / np.float32(BI_RGB_STD) for k in range(c)]
    return np.stack([a.reshape(-1) for a in f]).astype(np.float32)


def mask_unary(mask: np.ndarray, h: int, w: int) -> np.ndarray:
    _, utils = dcrf_modules()
    return utils.unary_from_softmax(mask_probs(mask, h, w)).reshape(2, h, w)


def synthetic_image(h: int, w: int, seed: int) -> np.ndarray:
    """Smooth colour gradients, a few flat shapes with sharp edges, Gaussian noise."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.stack([60 + 80 * xs / w, 90 + 60 * np.sin(ys / h * 3.0), 140 - 70 * ys / h], axis=-1)
    # an ellipse (the object), a rectangle and a disc (distractors), a dark corner
    obj = ((ys - 0.52 * h) / (0.27 * h)) ** 2 + ((xs - 0.47 * w) / (0.2 * w)) ** 2 < 1
    img[obj] = (200, 70, 50)
    rect = (ys > 0.1 * h) & (ys < 0.3 * h) & (xs > 0.7 * w) & (xs < 0.92 * w)
    img[rect] = (40, 160, 90)
    disc = (ys - 0.8 * h) ** 2 + (xs - 0.2 * w) ** 2 < (0.09 * h) ** 2
    img[disc] = (190, 180, 60)
    img += rng.normal(0, 6, img.shape)
    img = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    # A flat, almost black corner: its lattice simplices neighbour those of the all-zero
    # feature vector, so densecrf's zero-padding relay vertices change the result when
    # H*W % 4 != 0 (removing them from the Rust port makes the small/resize cases differ).
    img[(ys < 0.08 * h) & (xs < 0.1 * w)] = (2, 1, 1)
    return img


def coarse_mask(h: int, w: int, grid: int, seed: int) -> np.ndarray:
    """A blob on a grid×grid patch grid (a shifted, slightly wrong ellipse plus noise),
    upsampled with nearest to h×w like MaskCut's patch masks."""
    rng = np.random.default_rng(seed)
    gy, gx = np.mgrid[0:grid, 0:grid].astype(np.float64) + 0.5
    blob = ((gy - 0.55 * grid) / (0.3 * grid)) ** 2 + ((gx - 0.45 * grid) / (0.22 * grid)) ** 2 < 1
    blob ^= rng.random((grid, grid)) < 0.04
    iy = (np.arange(h) * grid) // h
    ix = (np.arange(w) * grid) // w
    return blob[iy][:, ix]


def label_image(h: int, w: int, m: int, grid: int, seed: int) -> np.ndarray:
    """(H, W) uint8 labels 0..m-1: label 1 on a coarse blob, the others in vertical
    bands, and 5 % of the pixels set to a random label (for the CRF to clean up)."""
    rng = np.random.default_rng(seed)
    blob = coarse_mask(h, w, grid, seed=seed + 1)
    bands = (np.arange(w) * (m - 1) // w)[None, :].repeat(h, 0)
    lab = np.where(blob, 1, np.where(bands == 0, 0, bands + 1))
    flip = rng.random((h, w)) < 0.05
    lab[flip] = rng.integers(0, m, int(flip.sum()))
    return lab.astype(np.uint8)


def save_png(path: Path, a: np.ndarray):
    Image.fromarray(a).save(path, optimize=True)


def generate():
    import torch
    import pydensecrf
    OUT.mkdir(parents=True, exist_ok=True)
    manifest: dict = {"cases": {}}

    # 1. The MaskCut setting: 480x480 RGB, mask from a 30x30 grid.
    img = synthetic_image(480, 480, seed=1)
    mask = coarse_mask(480, 480, 30, seed=2)
    q, lab = run_crf(img, mask_unary(mask, 480, 480))
    save_png(OUT / "big_image.png", img)
    save_png(OUT / "big_mask.png", (mask * 255).astype(np.uint8))
    save_png(OUT / "big_labels.png", lab * 255)
    np.save(OUT / "big_q1_sub4.npy", np.ascontiguousarray(q[1, ::4, ::4]))
    manifest["cases"]["big"] = {"h": 480, "w": 480, "fg_pixels": int(lab.sum()), "mask_pixels": int(mask.sum())}

    # 2. Small RGB case with full marginals; N % 4 == 3 (relay vertices), dark corner.
    img_s = synthetic_image(117, 121, seed=3)
    mask_s = coarse_mask(117, 121, 15, seed=4)
    u_s = mask_unary(mask_s, 117, 121)
    q, lab = run_crf(img_s, u_s)
    save_png(OUT / "small_image.png", img_s)
    save_png(OUT / "small_mask.png", (mask_s * 255).astype(np.uint8))
    np.save(OUT / "small_q.npy", q)
    manifest["cases"]["small"] = {"h": 117, "w": 121, "n_mod_4": (117 * 121) % 4, "fg_pixels": int(lab.sum())}
    manifest["unary_mask"] = [float(u_s[1][mask_s][0]), float(u_s[0][mask_s][0])]

    # 3. A mask that is not image-sized (15x15 patch mask for a 117x121 image): torch's
    #    bilinear resize of the logits matters. The unary and the marginals are stored.
    grid = coarse_mask(15, 15, 15, seed=4)
    save_png(OUT / "resize_mask15.png", (grid * 255).astype(np.uint8))
    u_r = mask_unary(grid, 117, 121)
    q, lab = run_crf(img_s, u_r)
    np.save(OUT / "resize_unary.npy", u_r.astype(np.float32))
    np.save(OUT / "resize_q.npy", q)
    manifest["cases"]["resize"] = {"h": 117, "w": 121, "mask": [15, 15]}

    # 4. Three and five labels on small images, unaries from random softmaxes.
    _, utils = dcrf_modules()
    for m, (h, w), seed in [(3, (45, 37), 5), (5, (29, 38), 6)]:
        rng = np.random.default_rng(seed)
        im = synthetic_image(h, w, seed=seed)
        logits = rng.normal(0, 1.5, (m, h, w))
        logits[0, : h // 2] += 1.0
        logits[m - 1, :, w // 2 :] += 1.0
        p = np.exp(logits) / np.exp(logits).sum(0, keepdims=True)
        u = utils.unary_from_softmax(p).reshape(m, h, w)
        q, lab = run_crf(im, u)
        np.save(OUT / f"labels{m}_image.npy", im)
        np.save(OUT / f"labels{m}_unary.npy", u.astype(np.float32))
        np.save(OUT / f"labels{m}_q.npy", q)
        manifest["cases"][f"labels{m}"] = {"h": h, "w": w, "labels": m, "n_mod_4": (h * w) % 4}

    # 5. Grayscale (C=1) and 4-channel images: the bilateral term through
    #    addPairwiseEnergy with features (x, y, c...) scaled like addPairwiseBilateral.
    for name, c, (h, w), seed in [("gray", 1, (40, 50), 7), ("rgba", 4, (33, 47), 8)]:
        rgb = synthetic_image(h, w, seed=seed)
        if c == 1:
            im = rgb[:, :, 1:2].copy()
        else:
            alpha = np.clip(np.rint(255 * np.mgrid[0:h, 0:w][1] / w), 0, 255).astype(np.uint8)[..., None]
            im = np.concatenate([rgb, alpha], axis=-1)
        mk = coarse_mask(h, w, 10, seed=seed + 10)
        q, lab = run_crf(im, mask_unary(mk, h, w), features=bilateral_features(im))
        np.save(OUT / f"{name}_image.npy", im)
        np.save(OUT / f"{name}_mask.npy", mk.astype(np.uint8))
        np.save(OUT / f"{name}_q.npy", q)
        manifest["cases"][name] = {"h": h, "w": w, "channels": c}

    # 6. `explainseg crf --label-image L.png --labels 5 --gt-prob 0.7`: the unary of
    #    pydensecrf's unary_from_labels(labels, 5, 0.7, zero_unsure=False); N % 4 == 3.
    m, (h, w), gt = 5, (97, 103), 0.7
    im = synthetic_image(h, w, seed=9)
    lab_in = label_image(h, w, m, 12, seed=10)
    u = utils.unary_from_labels(lab_in, m, gt, zero_unsure=False).reshape(m, h, w)
    q, lab = run_crf(im, u)
    save_png(OUT / "cli5_image.png", im)
    save_png(OUT / "cli5_labels_in.png", lab_in)
    save_png(OUT / "cli5_labels_out.png", lab)
    np.save(OUT / "cli5_q.npy", q)
    manifest["cases"]["cli5"] = {"h": h, "w": w, "labels": m, "gt_prob": gt, "n_mod_4": (h * w) % 4,
                                 "changed_pixels": int((lab != lab_in).sum())}

    manifest["versions"] = {
        "python": sys.version.split()[0], "numpy": np.__version__, "torch": torch.__version__,
        "pillow": Image.__version__, "pydensecrf": getattr(pydensecrf, "__version__", "pydensecrf2 1.1"),
    }
    manifest["params"] = {"n_iterations": MAX_ITER, "pos_sxy": POS_XY_STD, "pos_w": POS_W,
                          "bi_sxy": BI_XY_STD, "bi_srgb": BI_RGB_STD, "bi_w": BI_W}
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    total = sum(p.stat().st_size for p in OUT.iterdir())
    print(json.dumps(manifest["versions"]), f"total {total / 1e6:.2f} MB")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.parse_args()
    generate()
