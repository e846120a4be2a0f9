#!/usr/bin/env python3
"""Per-stage pipeline time per image: explainseg beside the reference stack, same run.

Alternates rounds of `explainseg bench --pipeline --json` (ViT-S/16 at 224², random
weights, a preset (default the paper's) with --steps x --samples IG passes) and the reference
stack doing the same stages on the same kind of input:

  explain   PyTorch + Captum: NoiseTunnel(IntegratedGradients(timm ViT-S/16)), smoothgrad,
            gausslegendre, --steps x --samples, internal batch --batch (one explanation
            per image, shared by variants a, b, c, xncut, as in explainseg)
  feature   a forward pass with a hook on the last block's qkv (keys), plus for a, b the
            keys' first principal component (numpy SVD) upsampled and multiplied in
  mask      a, c: the scikit-image/SciPy morphology chain (tools/gen_morphology.py) on a
            224² map; b, xncut: the Shi-Malik cut of the map on the 56x56 grid with
            scipy.linalg.eigh (tools/gen_ncut.py); tokencut: TokenCut on the 14x14 keys
            (tools/gen_ncut.py); maskcut: MaskCut's loop (tools/gen_maskcut.py) plus
            pydensecrf on each of its 3 masks (explainseg's MaskCut stage holds its CRF)
  crf       pydensecrf, 224², 2 labels, 10 iterations, TokenCut/MaskCut kernels

Prints, per variant and stage, the medians over rounds (seconds per image) and the ratio
reference / explainseg (> 1: explainseg is faster). --preset stable times explainseg's stable
preset (its noise design, smoothing and 28x28 NCut grid; pass its own 10 x 24 passes with
--steps 10 --samples 24); the reference stack always runs the paper's stages, which have no
stable counterpart there.

    python3 tools/bench_pipeline.py [--rounds 3] [--images 2] [--steps 10] [--samples 1]
                                    [--threads 1] [--batch 10] [--preset paper] [--json out.json]

Needs a release build (CARGO_TARGET_DIR honoured) and torch, timm, captum, numpy, scipy,
scikit-image, pydensecrf2 (see tools/bench_torch.py and tools/gen_crf.py).
"""
import os
import sys

ap_threads = "1"
for i, a in enumerate(sys.argv):
    if a == "--threads" and i + 1 < len(sys.argv):
        ap_threads = sys.argv[i + 1]
for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = ap_threads
os.environ.setdefault("TIMM_FUSED_ATTN", "0")  # explicit softmax, as tools/bench_torch.py

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from functools import partial  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

TOOLS = Path(__file__).resolve().parent
ROOT = TOOLS.parent
sys.path.insert(0, str(TOOLS))
import gen_crf  # noqa: E402
import gen_maskcut  # noqa: E402
import gen_morphology  # noqa: E402
import gen_ncut  # noqa: E402

VARIANTS = ["a", "b", "c", "xncut", "tokencut", "maskcut"]
STAGES = ["explain", "feature", "mask", "crf"]


class Reference:
    def __init__(self, a):
        import torch
        import torch.nn as nn
        from captum.attr import IntegratedGradients, NoiseTunnel
        from timm.models.vision_transformer import VisionTransformer
        torch.set_num_threads(a.threads)
        torch.manual_seed(0)
        self.torch, self.a = torch, a
        self.model = VisionTransformer(img_size=224, patch_size=16, embed_dim=384, depth=12, num_heads=6,
                                       mlp_ratio=4, qkv_bias=True, num_classes=2, global_pool="token",
                                       class_token=True, norm_layer=partial(nn.LayerNorm, eps=1e-6)).float().eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.ig = IntegratedGradients(self.model)
        self.nt = NoiseTunnel(self.ig)
        self.keys = None
        self.model.blocks[-1].attn.qkv.register_forward_hook(lambda m, i, o: setattr(self, "keys", o))
        self.dcrf, _ = gen_crf.dcrf_modules()
        self.morph = gen_morphology.PARAM_SETS["default"]

    def crf(self, img, mask):
        h, w = mask.shape
        fg = mask.astype(np.float64)
        lg = np.stack((1.0 - fg, fg))
        e = np.exp(lg - lg.max(0, keepdims=True))
        u = (-np.log(np.clip(e / e.sum(0, keepdims=True), 1e-5, 1.0))).astype(np.float32).reshape(2, -1)
        c = self.dcrf.DenseCRF2D(w, h, 2)
        c.setUnaryEnergy(np.ascontiguousarray(u))
        c.addPairwiseGaussian(sxy=3, compat=7)
        c.addPairwiseBilateral(sxy=50, srgb=5, rgbim=img, compat=10)
        return np.argmax(np.array(c.inference(10)), axis=0).reshape(h, w) == 1

    def image(self, seed):
        """Seconds per stage for each variant on one synthetic 224² image."""
        torch, a = self.torch, self.a
        img = gen_crf.synthetic_image(224, 224, seed=seed)
        x = torch.from_numpy(((img / 255.0 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225])
                             .transpose(2, 0, 1)[None].astype(np.float32))
        out = {v: dict.fromkeys(STAGES, 0.0) for v in VARIANTS}
        t = time.perf_counter()
        if a.samples > 0:
            attr = self.nt.attribute(x, nt_type="smoothgrad", nt_samples=a.samples, stdevs=1.0, target=0,
                                     n_steps=a.steps, method="gausslegendre", internal_batch_size=a.batch)
        else:
            attr = self.ig.attribute(x, target=0, n_steps=a.steps, method="gausslegendre",
                                     internal_batch_size=a.batch)
        rel = attr[0].abs().sum(0).numpy()
        rel = (rel - rel.min()) / max(rel.max() - rel.min(), 1e-12)
        explain = time.perf_counter() - t
        for v in ("a", "b", "c", "xncut"):
            out[v]["explain"] = explain

        def forward_keys():
            with torch.no_grad():
                self.model(x)
            return self.keys[0, 1:, 384:768].numpy()  # k of (q, k, v), CLS dropped

        for v in VARIANTS:
            t = time.perf_counter()
            maps = rel
            if v in ("a", "b"):
                k = forward_keys()
                kc = k - k.mean(0)
                pc1 = np.linalg.svd(kc, full_matrices=False)[2][0]
                fmap = (kc @ pc1).reshape(14, 14)
                fmap = (fmap - fmap.min()) / max(fmap.max() - fmap.min(), 1e-12)
                maps = rel * np.kron(fmap, np.ones((16, 16)))
            elif v in ("tokencut", "maskcut"):
                k = forward_keys()
            out[v]["feature"] = time.perf_counter() - t
            t = time.perf_counter()
            if v in ("a", "c"):
                mask = gen_morphology.chain(maps.astype(np.float32), self.morph)[0]
            elif v in ("b", "xncut"):
                m = gen_ncut.shi_malik_reference(maps, (56, 56))["mask"]
                mask = np.kron(m, np.ones((4, 4), bool))
            elif v == "tokencut":
                mask = np.kron(gen_ncut.tokencut_reference(k, (14, 14))["mask"], np.ones((16, 16), bool))
            else:
                masks, _ = gen_maskcut.maskcut_reference(k, (14, 14))
                mask = np.zeros((224, 224), bool)
                for m in masks:
                    mask |= self.crf(img, np.kron(m, np.ones((16, 16), np.uint8)) > 0)
            out[v]["mask"] = time.perf_counter() - t
            if v != "maskcut":
                t = time.perf_counter()
                self.crf(img, np.asarray(mask, bool))
                out[v]["crf"] = time.perf_counter() - t
        return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--images", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--samples", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--preset", default="paper", choices=["paper", "stable"])
    ap.add_argument("--binary", type=Path,
                    default=Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release" / "explainseg")
    ap.add_argument("--json", type=Path, help="also write the summary here")
    a = ap.parse_args()
    warnings.simplefilter("ignore")
    ref = Reference(a)
    ours = {v: {s: [] for s in STAGES} for v in VARIANTS}
    theirs = {v: {s: [] for s in STAGES} for v in VARIANTS}
    for r in range(a.rounds):
        res = subprocess.run([str(a.binary), "--threads", str(a.threads), "--json", "bench", "--pipeline",
                              "--images", str(a.images), "--steps", str(a.steps), "--samples", str(a.samples),
                              "--batch", str(a.batch), "--preset", a.preset],
                             check=True, capture_output=True, text=True)
        got = json.loads(res.stdout.strip().splitlines()[-1])
        for row in got["variants"]:
            for s in STAGES:
                ours[row["variant"]][s].append(row["seconds"][s])
        per = [ref.image(i) for i in range(a.images)]
        for v in VARIANTS:
            for s in STAGES:
                theirs[v][s].append(sum(p[v][s] for p in per) / a.images)
        print(f"round {r + 1}/{a.rounds} done", file=sys.stderr)
    med = statistics.median
    print(f"ViT-S/16 224², {a.threads} thread(s), {a.images} images/round, {a.rounds} rounds, "
          f"{a.steps} IG steps x {max(a.samples, 1)} samples; preset: {a.preset}")
    print("seconds per image, explainseg / reference (ratio reference/explainseg)")
    print(f"{'variant':<9}" + "".join(f"{s:>24}" for s in STAGES + ['total']))
    summary = {}
    for v in VARIANTS:
        cells, row = [], {}
        for s in STAGES:
            o, t = med(ours[v][s]), med(theirs[v][s])
            row[s] = {"explainseg_s": o, "reference_s": t}
            cells.append(f"{o:7.3f} / {t:7.3f} ({t / o:5.2f}x)" if o > 0 else f"{'-':>7} / {t:7.3f}        ")
        o, t = sum(row[s]["explainseg_s"] for s in STAGES), sum(row[s]["reference_s"] for s in STAGES)
        row["total"] = {"explainseg_s": o, "reference_s": t}
        cells.append(f"{o:7.3f} / {t:7.3f} ({t / o:5.2f}x)")
        summary[v] = row
        print(f"{v:<9}" + "".join(f"{c:>24}" for c in cells))
    if a.json:
        a.json.write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
