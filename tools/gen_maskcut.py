#!/usr/bin/env python3
"""Fixtures for tests/maskcut.rs: MaskCut's patch-level loop (CutLER maskcut_forward),
re-created from docs/postprocessing.md §3.2 with numpy/scipy (no CutLER code).

Reference versions: Python 3.11.7, numpy 2.4.6, scipy 1.17.1 (LAPACK dsygvx via
scipy.linalg.eigh(D-W, D, subset_by_index=[1, 2])).

Run from the repository root:  python3 tools/gen_maskcut.py
Writes tests/fixtures/maskcut/<case>_features.npy (N, D) f32 and <case>_masks.npy
(n_masks, rows, cols) u8, plus manifest.json. Deterministic (seeded).

Per iteration i (tau 0.15, eps 1e-5, N = 3 masks):
  i > 0: painting |= previous mask; features of painted patches zeroed; from here on
         float64 (the reference's dtype promotion); iteration 0 is float32.
  W = 1 where cos > tau else eps (strict), D = diag(row sums), v = Fiedler vector
  (LAPACK sign); bip = v > mean; seed0 = argmax |v|; reverse if >= 3 corners are in
  bip or bip[seed0] is false; then seed = argmax v (signed); keep the 4-connected
  component of bip holding the seed; for i >= 1 drop it (all zeros) when
  IoU(previous, candidate) > 0.5 or its area ratio <= 0.01.
Cases are drawn so that every cosine is far from tau (margin > 1e-3) and the
eigengap is clear, so float rounding cannot change a mask. Masks must match exactly.
Caveat (in the reference itself): painted patches all have identical all-eps rows,
so their Fiedler entries tie and `argmax v` among them is decided by rounding. When
two separate painted regions both sit on the seed side, the kept component is
arbitrary; the two-object case therefore stops at 2 masks.
"""
import json
from pathlib import Path

import numpy as np
import scipy
import scipy.linalg
import scipy.ndimage

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "maskcut"
TAU, EPS, N_MASKS = 0.15, 1e-5, 3


def iou(a, b):
    a, b = a > 0.5, b > 0.5
    union = np.logical_or(a, b).sum()
    return np.float32(np.logical_and(a, b).sum()) / np.float32(union) if union else np.float32(np.nan)


def maskcut_reference(feats, grid, n_masks=N_MASKS):
    rows, cols = grid
    n = rows * cols
    f = feats.astype(np.float32)
    painting = np.zeros(grid)
    current = np.zeros(grid)
    masks, margins = [], []
    for i in range(n_masks):
        if i > 0:
            painting = ((painting + current) > 0).astype(np.float64)
            f = f * (1 - painting.reshape(n, 1))  # float64 from here on
        norm = np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12).astype(f.dtype)
        fn = f / norm
        s = fn @ fn.T
        margins.append(float(np.min(np.abs(s - TAU))))
        w = np.where(s > TAU, 1.0, EPS).astype(np.float64)
        d = np.diag(w.sum(1))
        vals, vecs = scipy.linalg.eigh(d - w, d, subset_by_index=[1, 2])
        v = vecs[:, 0].copy()
        bip = v > v.mean()
        seed0 = int(np.argmax(np.abs(v)))
        bip2 = bip.reshape(grid)
        corners = int(bip2[0, 0]) + int(bip2[0, -1]) + int(bip2[-1, 0]) + int(bip2[-1, -1])
        if corners >= 3 or not bip[seed0]:
            v, bip = -v, ~bip
        seed = int(np.argmax(v))
        labels, _ = scipy.ndimage.label(bip.reshape(grid))
        pseudo = (labels == labels[seed // cols, seed % cols]).astype(np.float64)
        if i >= 1:
            ratio = pseudo.sum() / n
            if iou(current, pseudo) > 0.5 or ratio <= 0.01:
                pseudo = np.zeros(grid)
        current = pseudo
        masks.append(pseudo.astype(np.uint8))
    return np.stack(masks), margins


def make_case(rng, grid, objects, dim):
    """Background plus objects (rectangles), each with its own random direction."""
    rows, cols = grid
    # Orthonormal class directions: cosines across classes stay near 0, far from tau.
    dirs = np.linalg.qr(rng.standard_normal((dim, len(objects) + 1)))[0].T
    label = np.zeros(grid, dtype=int)
    for k, (r0, r1, c0, c1) in enumerate(objects, start=1):
        label[r0:r1, c0:c1] = k
    feats = dirs[label.reshape(-1)] + 0.15 * rng.standard_normal((rows * cols, dim)) / np.sqrt(dim)
    return feats.astype(np.float32)


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    cases = {
        "three_objects": ((12, 12), [(1, 4, 1, 5), (6, 10, 7, 11), (8, 11, 1, 3)], 64, 3),
        "two_objects_wide": ((9, 16), [(2, 6, 2, 6), (3, 6, 10, 13)], 48, 2),  # unequal sizes: no near-tie
        "one_big_object": ((10, 10), [(0, 10, 0, 6)], 32, 3),  # touches the corners: corner rule
    }
    manifest = {"tau": TAU, "eps": EPS, "n_masks": N_MASKS, "numpy": np.__version__, "scipy": scipy.__version__, "cases": {}}
    for seed, (name, (grid, objects, dim, n_masks)) in enumerate(cases.items()):
        rng = np.random.default_rng(1000 + seed)
        feats = make_case(rng, grid, objects, dim)
        masks, margins = maskcut_reference(feats, grid, n_masks)
        assert min(margins) > 1e-3, (name, margins)
        np.save(OUT / f"{name}_features.npy", feats)
        np.save(OUT / f"{name}_masks.npy", masks)
        manifest["cases"][name] = {"grid": list(grid), "dim": dim, "n_masks": n_masks, "areas": [int(m.sum()) for m in masks], "min_cos_margin": min(margins)}
        print(name, manifest["cases"][name])
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


if __name__ == "__main__":
    main()
