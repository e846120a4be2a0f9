#!/usr/bin/env python3
"""Generate the fixtures for `tests/post_morphology.rs` (modules `explainseg::post::{otsu, morphology}`).

Reference versions (the fixtures were produced with exactly these):
    Python 3.11.7, scikit-image 0.26.0, SciPy 1.17.1, NumPy 2.4.6.
The script refuses other scikit-image versions unless --any-version is given, because
`remove_small_objects` and the binary morphology functions changed meaning across releases
(see tests/fixtures/morphology/README.md).

How to run (from the repository root):
    python3 tools/gen_morphology.py              # rewrites tests/fixtures/morphology/ except README.md
    (timings against scikit-image: python3 tools/bench_post.py, which uses bench_map below)
The output is deterministic (seeded numpy generators, seeds 0-4); re-running with the versions
above reproduces the files byte for byte. About 0.5 MB.

What it writes (all .npy; masks as uint8 0/1, labels as uint16, maps as float32):
  * five relevance-like maps `rel_<case>.npy`: Gaussian blobs + smooth and white noise, some
    blobs cut by the border, a ring (a hole), isolated specks, squared for a heavy tail like
    |IG| maps (64x80 and 120x97); a positive-part map with exact zeros on 60% of it (64x72);
    a constant map; a map with five distinct values.
    For each: skimage.exposure.histogram (nbins 256) counts/centres, equalize_hist (256),
    threshold_otsu on the map (nbins 256 and 16) and on the equalised map, the Otsu masks, and
    the whole chain for three parameter sets (the Rust defaults and two others).
  * four binary masks `bin_<case>.npy` (the equalised-Otsu masks of blobs_64x80 and sparse_64x72, a random
    37x41 mask, a hand-drawn 24x30 mask with holes and diagonal exits). For each: measure.label
    (connectivity 1 and 2), segmentation.clear_border (buffer 0 and 2, bool input; and on the
    connectivity-1 label image), remove_small_objects, binary_dilation / binary_erosion with
    disk(1), disk(3) and a 2x2 square (even size: the centre convention matters), and
    scipy.ndimage.binary_fill_holes.
  * manifest.json: versions, parameter sets, thresholds (exact float32 values) and file names.
    The Rust test is driven by it.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import scipy
import skimage
from scipy import ndimage as ndi
from skimage import exposure, filters, measure, morphology, segmentation

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "morphology"
PINNED = "0.26.0"

# The chain's parameter sets. "default" must equal `MorphologyParams::default()` in
# src/post/morphology.rs.
PARAM_SETS = {
    "default": dict(nbins=256, equalize=True, connectivity=2, clear_border=True, dilation_radius=3,
                    erosion_radius=3, footprint="disk", fill_holes=True, min_object_size=64),
    "alt_raw_square": dict(nbins=64, equalize=False, connectivity=1, clear_border=True, dilation_radius=2,
                           erosion_radius=1, footprint="square", fill_holes=False, min_object_size=20),
    "alt_no_border": dict(nbins=256, equalize=True, connectivity=2, clear_border=False, dilation_radius=0,
                          erosion_radius=2, footprint="disk", fill_holes=True, min_object_size=1),
}

# Footprints for the primitive fixtures: name -> array.
FOOTPRINTS = {
    "disk1": morphology.disk(1).astype(bool),
    "disk3": morphology.disk(3).astype(bool),
    "square2": np.ones((2, 2), bool),
}

# remove_small_objects cases: (min_size with the classical "< min_size is removed" meaning, connectivity)
RSO_CASES = [(5, 1), (20, 2)]


def footprint(shape: str, radius: int) -> np.ndarray:
    if shape == "disk":
        return morphology.disk(radius).astype(bool)
    return np.ones((2 * radius + 1, 2 * radius + 1), bool)


def rso(mask: np.ndarray, min_size: int, connectivity: int) -> np.ndarray:
    """Removes components with fewer than min_size pixels (skimage 0.26: max_size = min_size - 1)."""
    if min_size <= 1:
        return mask.copy()
    return morphology.remove_small_objects(mask, max_size=min_size - 1, connectivity=connectivity)


def chain(rel: np.ndarray, p: dict) -> tuple[np.ndarray, np.float32]:
    """The paper's morphology chain with scikit-image 0.26 / SciPy, as morphology_mask in Rust."""
    x = exposure.equalize_hist(rel, nbins=p["nbins"]) if p["equalize"] else rel
    t = filters.threshold_otsu(x, nbins=p["nbins"])
    lab = measure.label(x > t, connectivity=p["connectivity"])
    if p["clear_border"]:
        lab = segmentation.clear_border(lab)
    m = lab > 0
    if p["dilation_radius"] > 0:
        m = morphology.binary_dilation(m, footprint(p["footprint"], p["dilation_radius"]))
    if p["erosion_radius"] > 0:
        m = morphology.binary_erosion(m, footprint(p["footprint"], p["erosion_radius"]))
    if p["fill_holes"]:
        m = ndi.binary_fill_holes(m)
    m = rso(m, p["min_object_size"], p["connectivity"])
    return m, np.float32(t)


# ---------------------------------------------------------------------------------------------
# Synthetic inputs
# ---------------------------------------------------------------------------------------------

def blobs(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    m = np.zeros((h, w))
    # Interior blobs, and two centred on the border (border artefacts).
    centres = [(rng.uniform(0.25, 0.75) * h, rng.uniform(0.25, 0.75) * w) for _ in range(3)]
    centres += [(0.0, rng.uniform(0.2, 0.8) * w), (rng.uniform(0.2, 0.8) * h, w - 1.0)]
    for cy, cx in centres:
        s = rng.uniform(0.06, 0.14) * min(h, w)
        m += rng.uniform(0.5, 1.0) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
    # A ring: its middle is a hole once thresholded.
    cy, cx, r0 = 0.6 * h, 0.3 * w, 0.12 * min(h, w)
    r = np.hypot(yy - cy, xx - cx)
    m += 0.9 * np.exp(-((r - r0) ** 2) / (2 * 1.5 ** 2))
    # Specks: single pixels and 2x2 dots.
    for _ in range(6):
        y, x = rng.integers(2, h - 3), rng.integers(2, w - 3)
        k = rng.integers(1, 3)
        m[y:y + k, x:x + k] += 1.0
    # Background: spatially correlated noise (like NoiseTunnel-smoothed attributions) plus
    # a little white noise.
    m += 0.25 * ndi.gaussian_filter(rng.random((h, w)), 2.0) + 0.03 * rng.random((h, w))
    return (m ** 2).astype(np.float32)


def sparse(h: int, w: int, seed: int) -> np.ndarray:
    """Positive-part relevance: exact zeros on ~60% of the map, blobs apart from the border."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    m = np.zeros((h, w))
    for cy, cx, s in [(0.35 * h, 0.3 * w, 0.09), (0.6 * h, 0.65 * w, 0.12), (0.0, 0.8 * w, 0.07)]:
        s *= min(h, w)
        m += rng.uniform(0.7, 1.0) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
    m += 0.2 * ndi.gaussian_filter(rng.random((h, w)), 1.5)
    m[rng.random((h, w)) < 0.01] += 0.5
    return np.maximum(m - np.quantile(m, 0.6), 0.0).astype(np.float32)


def levels(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vals = np.array([0.0, 0.1, 0.35, 0.6, 1.0], np.float32)
    # Blocky: 5x5 cells with random levels, biased to the low ones.
    cells = rng.choice(len(vals), size=(h // 5 + 1, w // 5 + 1), p=[0.45, 0.25, 0.1, 0.1, 0.1])
    idx = np.kron(cells, np.ones((5, 5), int))[:h, :w]
    return vals[idx]


def holes_mask() -> np.ndarray:
    art = [
        "..............................",
        ".######.......................",
        ".#....#.......#########.......",
        ".#.##.#.......#.......#.......",
        ".#....#.......#.#####.#.......",
        ".######.......#.#...#.#....##.",
        "..............#.#.#.#.#....##.",
        "..###.........#.#...#.#.......",
        ".#...#........#.#####.#.......",
        ".#...#........#.......#.......",
        "..###.........#########.......",
        "...............................",
        "#####..........#..............",
        "#...#.........#.#.............",
        "#.#.#........#...#............",
        "#...#.........#.#.............",
        "#####..........#..............",
        "..............................",
        "......####.......#.#.#........",
        "......#..#........#.#.........",
        ".......#.#.......#.#.#........",
        "......####....................",
        "..........................####",
        "..........................#..#",
    ]
    art = [row[:30].ljust(30, ".") for row in art]
    return np.array([[c == "#" for c in row] for row in art], bool)


# ---------------------------------------------------------------------------------------------
# The 512x512 benchmark map of tools/bench_post.py
# ---------------------------------------------------------------------------------------------

BENCH_BLOBS = [  # (cy, cx, scale, amplitude)
    (256.0, 256.0, 60.0, 1.0), (120.0, 380.0, 35.0, 0.8), (400.0, 130.0, 45.0, 0.7),
    (0.0, 200.0, 30.0, 0.6), (300.0, 511.0, 25.0, 0.5), (450.0, 420.0, 12.0, 0.9),
]


def bench_map(n: int = 512) -> np.ndarray:
    i, j = np.mgrid[0:n, 0:n]
    fi, fj = i.astype(np.float64), j.astype(np.float64)
    v = np.zeros((n, n))
    for cy, cx, s, a in BENCH_BLOBS:
        d = ((fi - cy) * (fi - cy) + (fj - cx) * (fj - cx)) / (s * s)
        v = v + a / (1.0 + d)
    h = ((i.astype(np.uint64) * np.uint64(73856093)) ^ (j.astype(np.uint64) * np.uint64(19349663))) & np.uint64(0xFFFFFFFF)
    h = (h * np.uint64(2654435761)) & np.uint64(0xFFFFFFFF)
    h = h ^ (h >> np.uint64(15))
    v = v + 0.35 * (h.astype(np.float64) / 4294967296.0)
    return v.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------

def u8(m: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(m, dtype=np.uint8)


def u16(lab: np.ndarray) -> np.ndarray:
    assert lab.max() < 65536
    return np.ascontiguousarray(lab, dtype=np.uint16)


def check_quirks() -> dict:
    """Records the scikit-image 0.26.0 remove_small_objects quirk (deprecated min_size acts as max_size)."""
    a = np.zeros((4, 9), bool)
    a[0, 0] = True          # size 1
    a[0, 3:5] = True        # size 2
    a[2, 0:3] = True        # size 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        old = {m: int(morphology.remove_small_objects(a, min_size=m).sum()) for m in (1, 2, 3)}
        new = {m: int(morphology.remove_small_objects(a, max_size=m).sum()) for m in (0, 1, 2, 3)}
    return {
        "objects": "sizes 1, 2, 3 (6 pixels)",
        "kept_pixels_with_deprecated_min_size": old,
        "kept_pixels_with_max_size": new,
        "note": "scikit-image 0.26.0: min_size=m keeps the same pixels as max_size=m (removes <= m), "
                "not the documented < m (scikit-image issue #8001, fixed after 0.26.0 by PR #8003). "
                "The fixtures use max_size = min_size - 1, i.e. the classical < min_size rule.",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--any-version", action="store_true")
    args = ap.parse_args()
    if skimage.__version__ != PINNED and not args.any_version:
        sys.exit(f"scikit-image {skimage.__version__} found, fixtures pin {PINNED} (use --any-version to override)")
    warnings.simplefilter("ignore", FutureWarning)

    readme = (OUT / "README.md").read_text() if (OUT / "README.md").exists() else None
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    if readme is not None:
        (OUT / "README.md").write_text(readme)

    manifest = {
        "versions": {"python": sys.version.split()[0], "skimage": skimage.__version__,
                     "scipy": scipy.__version__, "numpy": np.__version__},
        "param_sets": PARAM_SETS,
        "footprints": {k: v.astype(int).tolist() for k, v in FOOTPRINTS.items()},
        "rso_cases": RSO_CASES,
        "quirks": {"remove_small_objects": check_quirks()},
        "maps": [],
        "masks": [],
    }

    maps = {
        "blobs_64x80": blobs(64, 80, 0),
        "blobs_120x97": blobs(120, 97, 1),
        "sparse_64x72": sparse(64, 72, 4),
        "constant_16x20": np.full((16, 20), 0.42, np.float32),
        "levels_40x50": levels(40, 50, 2),
    }
    bin_inputs = {}
    for name, rel in maps.items():
        np.save(OUT / f"rel_{name}.npy", rel)
        entry = {"name": name, "file": f"rel_{name}.npy", "shape": list(rel.shape)}
        counts, centers = exposure.histogram(rel, nbins=256, source_range="image")
        np.save(OUT / f"hist_counts_{name}.npy", counts.astype(np.int64))
        np.save(OUT / f"hist_centers_{name}.npy", centers.astype(np.float32))
        eq = exposure.equalize_hist(rel, nbins=256)
        assert eq.dtype == np.float32
        np.save(OUT / f"eq_{name}.npy", eq)
        t256 = filters.threshold_otsu(rel, nbins=256)
        t16 = filters.threshold_otsu(rel, nbins=16)
        teq = filters.threshold_otsu(eq, nbins=256)
        assert t256.dtype == np.float32 and teq.dtype == np.float32
        entry["otsu"] = {"nbins256": float(t256), "nbins16": float(t16), "equalized_nbins256": float(teq)}
        np.save(OUT / f"otsu_mask_{name}.npy", u8(rel > t256))
        entry["chain"] = {}
        for pname, p in PARAM_SETS.items():
            m, t = chain(rel, p)
            np.save(OUT / f"chain_{pname}_{name}.npy", u8(m))
            entry["chain"][pname] = {"threshold": float(t), "pixels": int(m.sum())}
        manifest["maps"].append(entry)
        if name in ("blobs_64x80", "sparse_64x72"):
            bin_inputs[f"otsu_eq_{name}"] = eq > teq

    rng = np.random.default_rng(3)
    bin_inputs["random_37x41"] = rng.random((37, 41)) < 0.45
    bin_inputs["holes_24x30"] = holes_mask()

    for name, m in bin_inputs.items():
        np.save(OUT / f"bin_{name}.npy", u8(m))
        entry = {"name": name, "file": f"bin_{name}.npy", "shape": list(m.shape)}
        for c in (1, 2):
            lab = measure.label(m, connectivity=c)
            np.save(OUT / f"label_c{c}_{name}.npy", u16(lab))
            entry[f"label_c{c}_count"] = int(lab.max())
        for b in (0, 2):
            np.save(OUT / f"clear_border_b{b}_{name}.npy", u8(segmentation.clear_border(m, buffer_size=b)))
        lab1 = measure.label(m, connectivity=1)
        np.save(OUT / f"clear_border_labels_c1_{name}.npy", u16(segmentation.clear_border(lab1)))
        for ms, c in RSO_CASES:
            np.save(OUT / f"rso_min{ms}_c{c}_{name}.npy", u8(rso(m, ms, c)))
        for fname, fp in FOOTPRINTS.items():
            np.save(OUT / f"dilation_{fname}_{name}.npy", u8(morphology.binary_dilation(m, fp)))
            np.save(OUT / f"erosion_{fname}_{name}.npy", u8(morphology.binary_erosion(m, fp)))
        np.save(OUT / f"fill_holes_{name}.npy", u8(ndi.binary_fill_holes(m)))
        manifest["masks"].append(entry)

    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    total = sum(f.stat().st_size for f in OUT.iterdir())
    print(f"scikit-image {skimage.__version__}, SciPy {scipy.__version__}, NumPy {np.__version__}")
    print(f"wrote {len(list(OUT.iterdir()))} files, {total / 1024:.0f} KiB to {OUT}")
    for e in manifest["maps"]:
        print(f"  {e['name']}: otsu {e['otsu']}, chain pixels "
              f"{ {k: v['pixels'] for k, v in e['chain'].items()} }")
    for e in manifest["masks"]:
        print(f"  {e['name']}: {e['label_c1_count']} / {e['label_c2_count']} components (4 / 8-conn)")


if __name__ == "__main__":
    main()
