#!/usr/bin/env python3
"""Post-processing benchmark against the references, in the same run.

Writes the inputs once, then alternates rounds: explainseg's `benches/post.rs`
(1 thread and all threads) and the references (pydensecrf, SciPy, scikit-image;
single-threaded, OPENBLAS/OMP threads 1) on the same inputs. Prints each case's
median over rounds of each round's median, and the speed-up of explainseg.

    python3 tools/bench_post.py --rounds 3 [--reps 5] [--json out.json]

Cases: DenseCRF 480x480 RGB (MaskCut's unary from a mask, 10 iterations, the
default kernels); TokenCut on 14x14 and 28x28 feature grids (D=384); Shi-Malik
on a 100x90 relevance map at 28x28 and 56x56 (reference: sparse eigsh on the
symmetric Laplacian — the partial solver the issue names; dense eigh at 28x28);
the morphology chain on a 512x512 map (default parameters).

Needs: numpy, scipy, scikit-image 0.26, torch (for the CRF unary), pydensecrf2
(`pip install "cython==0.29.36" setuptools wheel && pip install --no-build-isolation pydensecrf2==1.1`).
"""
import os

for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import argparse
import warnings
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.linalg
import scipy.sparse
import scipy.sparse.linalg
from PIL import Image

TOOLS = Path(__file__).resolve().parent
ROOT = TOOLS.parent
sys.path.insert(0, str(TOOLS))
import gen_crf  # noqa: E402
import gen_morphology  # noqa: E402
import gen_ncut  # noqa: E402

TOKENCUT_GRIDS = [(14, 14), (28, 28)]
SHIMALIK_GRIDS = [28, 56]


def write_inputs(d: Path) -> dict:
    img = np.array(Image.open(gen_crf.OUT / "big_image.png").convert("RGB"))
    mask = (np.array(Image.open(gen_crf.OUT / "big_mask.png")) > 127).astype(np.uint8)
    np.save(d / "crf_image.npy", img)
    np.save(d / "crf_mask.npy", mask)
    tokencut = []
    for rows, cols in TOKENCUT_GRIDS:
        rng = np.random.default_rng(5)
        blob = gen_ncut.ellipse(rows, cols, rows / 2, cols / 2, rows / 4, cols / 3)
        feats = gen_ncut.synthetic_features(rng, rows, cols, 384, [(1, blob)]).astype(np.float32)
        name = f"tokencut_{rows}x{cols}.npy"
        np.save(d / name, feats)
        tokencut.append({"rows": rows, "cols": cols, "file": name})
    np.save(d / "shimalik_map.npy", gen_ncut.relevance_map(np.random.default_rng(77)))
    np.save(d / "morph_map.npy", gen_morphology.bench_map(512))
    manifest = {"tokencut": tokencut, "shimalik_grids": SHIMALIK_GRIDS}
    (d / "manifest.json").write_text(json.dumps(manifest))
    return manifest


def timed(f, reps: int) -> float:
    """Median wall ms of `reps` runs after one warm-up."""
    f()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        f()
        ts.append((time.perf_counter() - t) * 1e3)
    return statistics.median(ts)


def reference_cases(d: Path) -> dict:
    """name -> zero-argument callable running the reference on the same input."""
    dcrf, _ = gen_crf.dcrf_modules()
    img = np.load(d / "crf_image.npy")
    mask = np.load(d / "crf_mask.npy") > 0
    h, w = mask.shape

    def crf():
        u = gen_crf.mask_unary(mask, h, w)
        c = dcrf.DenseCRF2D(w, h, 2)
        c.setUnaryEnergy(np.ascontiguousarray(u.reshape(2, -1)))
        c.addPairwiseGaussian(sxy=gen_crf.POS_XY_STD, compat=gen_crf.POS_W)
        c.addPairwiseBilateral(sxy=gen_crf.BI_XY_STD, srgb=gen_crf.BI_RGB_STD, rgbim=img, compat=gen_crf.BI_W)
        return np.array(c.inference(gen_crf.MAX_ITER))

    cases = {f"densecrf_{h}x{w}": crf}
    for rows, cols in TOKENCUT_GRIDS:
        feats = np.load(d / f"tokencut_{rows}x{cols}.npy")
        cases[f"tokencut_{rows}x{cols}"] = lambda f=feats, g=(rows, cols): gen_ncut.tokencut_reference(f, g)
    m = np.load(d / "shimalik_map.npy")
    for n in SHIMALIK_GRIDS:
        def sparse(n=n):
            g = gen_ncut.area_weights(m.shape[0], n) @ m.astype(np.float64) @ gen_ncut.area_weights(m.shape[1], n).T
            r = (g - g.min()) / (g.max() - g.min())
            w = scipy.sparse.csr_matrix(gen_ncut.shi_malik_graph(r, 0.1, 4.0, 5.0))
            dg = np.asarray(w.sum(1)).ravel()
            inv = scipy.sparse.diags(1.0 / np.sqrt(dg))
            lsym = scipy.sparse.identity(len(dg)) - inv @ w @ inv
            return scipy.sparse.linalg.eigsh(lsym, k=2, which="SA", tol=1e-10)
        cases[f"shimalik_{n}x{n}"] = sparse
    cases["shimalik_28x28 (dense eigh)"] = lambda: gen_ncut.shi_malik_reference(m, (28, 28))
    rel = np.load(d / "morph_map.npy")
    cases[f"morphology_{rel.shape[0]}x{rel.shape[1]}"] = lambda: gen_morphology.chain(rel, gen_morphology.PARAM_SETS["default"])
    return cases


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--json", type=Path, help="also write the summary here")
    a = ap.parse_args()
    warnings.simplefilter("ignore", FutureWarning)  # scikit-image 0.26 deprecations in the reference chain
    subprocess.run(["cargo", "bench", "--bench", "post", "--no-run", "--quiet"], cwd=ROOT, check=True)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        write_inputs(d)
        refs = reference_cases(d)
        ours, theirs = {}, {}
        for r in range(a.rounds):
            out = subprocess.run(["cargo", "bench", "--bench", "post", "--quiet", "--", "--dir", str(d),
                                  "--reps", str(a.reps)], cwd=ROOT, check=True, capture_output=True, text=True)
            for case, per in json.loads(out.stdout.strip().splitlines()[-1]).items():
                for threads, t in per.items():
                    ours.setdefault(case, {}).setdefault(threads, []).append(t["median_ms"])
            for case, f in refs.items():
                theirs.setdefault(case, []).append(timed(f, a.reps))
            print(f"round {r + 1}/{a.rounds} done", file=sys.stderr)
    summary = {}
    print(f"{'case':<30} {'reference ms':>13} {'ours 1 thr':>11} {'x':>6} {'ours all':>9} {'x':>6}")
    for case, ts in theirs.items():
        ref = statistics.median(ts)
        mine = {k: statistics.median(v) for k, v in ours.get(case.split(" ")[0], {}).items()}
        one = mine.get("threads_1")
        many = max(((int(k.split("_")[1]), v) for k, v in mine.items()), default=(1, None))[1]
        summary[case] = {"reference_ms": ref, **{f"ours_{k}_ms": v for k, v in mine.items()}}
        fmt = lambda v: f"{v:11.1f} {ref / v:5.2f}x" if v else f"{'-':>11} {'-':>6}"
        print(f"{case:<30} {ref:13.1f} {fmt(one)} {fmt(many)}")
    if a.json:
        a.json.write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
