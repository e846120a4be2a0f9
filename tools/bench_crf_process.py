#!/usr/bin/env python3
"""DenseCRF against pydensecrf, whole process and in process, in the same run.

1. Whole process, 2 and 5 labels. 2 labels: `explainseg --threads 1 crf --image I.png
   --mask M.png --out O.png` against `python3 <this file> --reference I.png M.png O.png`,
   a Python process that does the same with pydensecrf (import, read image and mask with
   Pillow, the unary of `explainseg crf` (CutLER crf.py: logits [1-m, m], softmax, clip,
   -log), DenseCRF2D + Gaussian(3, 7) + bilateral(50, 5, 10), 10 iterations, argmax,
   write the PNG). 5 labels: `explainseg --threads 1 crf --image I.png --label-image
   L.png --labels 5 --gt-prob 0.7 --out O.png` against `python3 <this file>
   --reference-labels I.png L.png 5 0.7 O.png` (the unary of pydensecrf's
   `unary_from_labels(L, 5, 0.7, zero_unsure=False)`, labels written as a grey PNG).
   Both single-threaded (OPENBLAS/OMP threads 1).
2. In process, 2 and 5 labels: `benches/post.rs --crf-only` (DenseCRF alone, unary
   given) against pydensecrf's setUnaryEnergy + kernels + inference in this process.

Sizes 224², 320², 480² (synthetic images of tools/gen_crf.py). Rounds alternate ours
and the reference; each case reports the median over rounds of each round's time
(whole process: one run per round, wall time and CPU time user + system, the latter
being the steadier number on a shared machine; in process: median of --reps runs after
a warm-up) and the ratio reference / ours.

    python3 tools/bench_crf_process.py [--rounds 5] [--reps 3] [--json out.json]

Needs numpy, Pillow and pydensecrf2 (see tools/gen_crf.py); builds `explainseg` and the
bench with cargo (CARGO_TARGET_DIR is honoured).
"""
import os

for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import sys


def reference_process(image: str, mask: str, out: str) -> None:
    """What `explainseg crf` does, with pydensecrf (the timed reference process)."""
    import numpy as np
    import pydensecrf.densecrf as dcrf
    from PIL import Image
    img = np.ascontiguousarray(np.array(Image.open(image).convert("RGB")))
    m = (np.array(Image.open(mask).convert("L")) > 127).astype(np.float64)
    h, w = m.shape
    logits = np.stack((1.0 - m, m))  # the bilinear resize is the identity at the image's size
    e = np.exp(logits - logits.max(axis=0, keepdims=True))
    p = e / e.sum(axis=0, keepdims=True)
    u = (-np.log(np.clip(p, 1e-5, 1.0))).astype(np.float32).reshape(2, -1)
    c = dcrf.DenseCRF2D(w, h, 2)
    c.setUnaryEnergy(np.ascontiguousarray(u))
    c.addPairwiseGaussian(sxy=3, compat=7)
    c.addPairwiseBilateral(sxy=50, srgb=5, rgbim=img, compat=10)
    q = np.array(c.inference(10)).reshape(2, h, w)
    Image.fromarray((np.argmax(q, axis=0) == 1).astype(np.uint8) * 255).save(out)


def reference_labels_process(image: str, labels: str, n_labels: str, gt_prob: str, out: str) -> None:
    """What `explainseg crf --label-image` does, with pydensecrf (the timed reference process)."""
    import numpy as np
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_labels
    from PIL import Image
    img = np.ascontiguousarray(np.array(Image.open(image).convert("RGB")))
    lab = np.array(Image.open(labels))
    h, w = lab.shape
    m = int(n_labels)
    u = unary_from_labels(lab, m, float(gt_prob), zero_unsure=False)
    c = dcrf.DenseCRF2D(w, h, m)
    c.setUnaryEnergy(np.ascontiguousarray(u))
    c.addPairwiseGaussian(sxy=3, compat=7)
    c.addPairwiseBilateral(sxy=50, srgb=5, rgbim=img, compat=10)
    q = np.array(c.inference(10)).reshape(m, h, w)
    Image.fromarray(np.argmax(q, axis=0).astype(np.uint8)).save(out)


if len(sys.argv) == 5 and sys.argv[1] == "--reference":
    reference_process(*sys.argv[2:])
    sys.exit(0)
if len(sys.argv) == 7 and sys.argv[1] == "--reference-labels":
    reference_labels_process(*sys.argv[2:])
    sys.exit(0)

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

TOOLS = Path(__file__).resolve().parent
ROOT = TOOLS.parent
sys.path.insert(0, str(TOOLS))
import gen_crf  # noqa: E402

SIZES = [224, 320, 480]
LABELS = [2, 5]
GT_PROB = 0.7


def target_dir() -> Path:
    return Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))


def multi_label_unary(mask: np.ndarray, m: int, seed: int) -> np.ndarray:
    """(m, H, W) f32 unary: label 1 on the mask, the rest split into m-1 vertical bands,
    probability 0.6 for the pixel's label, noise on the others."""
    h, w = mask.shape
    rng = np.random.default_rng(seed)
    bands = (np.arange(w) * (m - 1) // w)[None, :].repeat(h, 0)
    lab = np.where(mask, 1, np.where(bands == 0, 0, bands + 1))
    p = rng.uniform(0.05, 0.15, (m, h, w))
    np.put_along_axis(p, lab[None], 0.6, axis=0)
    p /= p.sum(axis=0, keepdims=True)
    return (-np.log(np.clip(p, 1e-5, 1.0))).astype(np.float32)


def write_inputs(d: Path) -> list:
    cases = []
    for s in SIZES:
        img = gen_crf.synthetic_image(s, s, seed=s)
        mask = gen_crf.coarse_mask(s, s, s // 16, seed=s + 1)
        Image.fromarray(img).save(d / f"img{s}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(d / f"mask{s}.png")
        Image.fromarray(gen_crf.label_image(s, s, 5, s // 16, seed=s + 2)).save(d / f"labels{s}_5.png")
        np.save(d / f"img{s}.npy", img)
        for m in LABELS:
            if m == 2:
                fg = mask.astype(np.float64)
                lg = np.stack((1.0 - fg, fg))
                e = np.exp(lg - lg.max(0, keepdims=True))
                u = (-np.log(np.clip(e / e.sum(0, keepdims=True), 1e-5, 1.0))).astype(np.float32)
            else:
                u = multi_label_unary(mask, m, seed=s)
            np.save(d / f"unary{s}_{m}.npy", u)
            cases.append({"name": f"densecrf_{s}x{s}_{m}labels", "image": f"img{s}.npy",
                          "unary": f"unary{s}_{m}.npy"})
    (d / "manifest.json").write_text(json.dumps({"crf": cases, "tokencut": [], "shimalik_grids": []}))
    return cases


def run_wall(cmd: list, env: dict) -> tuple:
    """(wall seconds, CPU seconds user + system) of one process."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


def ref_in_process(img: np.ndarray, u: np.ndarray):
    import pydensecrf.densecrf as dcrf
    m, h, w = u.shape

    def f():
        c = dcrf.DenseCRF2D(w, h, m)
        c.setUnaryEnergy(np.ascontiguousarray(u.reshape(m, -1)))
        c.addPairwiseGaussian(sxy=3, compat=7)
        c.addPairwiseBilateral(sxy=50, srgb=5, rgbim=img, compat=10)
        return np.argmax(np.array(c.inference(10)), axis=0)
    return f


def timed_ms(f, reps: int) -> float:
    f()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        f()
        ts.append((time.perf_counter() - t) * 1e3)
    return statistics.median(ts)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--no-build", action="store_true", help="use the existing binaries")
    ap.add_argument("--skip-in-process", action="store_true")
    ap.add_argument("--json", type=Path, help="also write the summary here")
    a = ap.parse_args()
    if not a.no_build:
        subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "explainseg"], cwd=ROOT, check=True)
        subprocess.run(["cargo", "bench", "--bench", "post", "--no-run", "--quiet"], cwd=ROOT, check=True)
    exe = target_dir() / "release" / "explainseg"
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", RAYON_NUM_THREADS="1")
    proc = {(s, m): {"ours": [], "ref": []} for s in SIZES for m in LABELS}
    inproc_ours, inproc_ref = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        cases = write_inputs(d)
        refs = {c["name"]: ref_in_process(np.load(d / c["image"]), np.load(d / c["unary"])) for c in cases}
        for r in range(a.rounds):
            for s, m in proc:
                i, o, ro = d / f"img{s}.png", d / f"out{s}_{m}.png", d / f"ref{s}_{m}.png"
                if m == 2:
                    ours = ["--mask", str(d / f"mask{s}.png")]
                    ref = ["--reference", str(i), str(d / f"mask{s}.png"), str(ro)]
                else:
                    lab = str(d / f"labels{s}_{m}.png")
                    ours = ["--label-image", lab, "--labels", str(m), "--gt-prob", str(GT_PROB)]
                    ref = ["--reference-labels", str(i), lab, str(m), str(GT_PROB), str(ro)]
                proc[s, m]["ours"].append(run_wall([str(exe), "--threads", "1", "crf", "--image", str(i),
                                                    *ours, "--out", str(o)], env))
                proc[s, m]["ref"].append(run_wall([sys.executable, __file__, *ref], env))
                if r == 0:
                    a_, b_ = np.array(Image.open(o)), np.array(Image.open(ro))
                    if m == 2:
                        a_, b_ = a_ > 127, b_ > 127
                    print(f"{s}x{s}, {m} labels: labels {'identical' if (a_ == b_).all() else f'differ on {(a_ != b_).sum()} px'}",
                          file=sys.stderr)
            if not a.skip_in_process:
                out = subprocess.run(["cargo", "bench", "--bench", "post", "--quiet", "--", "--dir", str(d),
                                      "--reps", str(a.reps), "--crf-only", "--threads", "1"],
                                     cwd=ROOT, check=True, capture_output=True, text=True)
                for case, per in json.loads(out.stdout.strip().splitlines()[-1]).items():
                    inproc_ours.setdefault(case, []).append(per["threads_1"]["median_ms"])
                for case, f in refs.items():
                    inproc_ref.setdefault(case, []).append(timed_ms(f, a.reps))
            print(f"round {r + 1}/{a.rounds} done", file=sys.stderr)
    summary = {"whole_process": {}, "in_process": {}}
    print(f"{'whole process':<24} {'ref wall s':>10} {'ours':>7} {'x':>6}   {'ref CPU s':>9} {'ours':>7} {'x':>6}")
    for s, m in proc:
        row = {}
        for k, col in (("wall", 0), ("cpu", 1)):
            ref = statistics.median(t[col] for t in proc[s, m]["ref"])
            ours = statistics.median(t[col] for t in proc[s, m]["ours"])
            row[f"reference_{k}_s"], row[f"ours_{k}_s"], row[f"ratio_{k}"] = ref, ours, ref / ours
        name = f"{s}x{s}_{m}labels"
        summary["whole_process"][name] = row
        print(f"{name:<24} {row['reference_wall_s']:10.3f} {row['ours_wall_s']:7.3f} {row['ratio_wall']:5.2f}x"
              f"   {row['reference_cpu_s']:9.3f} {row['ours_cpu_s']:7.3f} {row['ratio_cpu']:5.2f}x")
    if inproc_ours:
        print(f"{'in process (1 thread)':<28} {'pydensecrf ms':>12} {'ours ms':>8} {'x':>6}")
        for case in inproc_ref:
            ref, ours = statistics.median(inproc_ref[case]), statistics.median(inproc_ours[case])
            summary["in_process"][case] = {"reference_ms": ref, "ours_ms": ours, "ratio": ref / ours}
            print(f"{case:<28} {ref:12.1f} {ours:8.1f} {ref / ours:5.2f}x")
    if a.json:
        a.json.write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
