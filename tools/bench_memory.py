#!/usr/bin/env python3
"""Peak memory and wall time of one image's IG + NoiseTunnel: `explainseg attribute` against PyTorch +
Captum at several internal batch sizes.

Each run is its own process under `/usr/bin/time -v`, which reports the process's maximum resident set
size (peak RSS, everything the process touched: libraries, weights, activations). Both sides use the
same ViT-S/16 (random timm weights, 2 classes, written once as safetensors) and the same synthetic
224x224 PNG. explainseg runs its paper preset (IG 50 steps x NoiseTunnel 5 = 250 forward + input-gradient
passes, batches of --batch passes); PyTorch + Captum runs NoiseTunnel(IntegratedGradients(model))
.attribute with the same steps and samples (gausslegendre, smoothgrad, stdevs 1.0), explicit-softmax
attention (TIMM_FUSED_ATTN=0), weights frozen, once per --torch-batches entry (internal_batch_size:
Captum runs internal_batch_size // samples steps of all samples per forward + backward).

Prints one JSON line per run to stderr as it finishes and a summary JSON line on stdout, with the
fastest PyTorch run ("best internal batch") beside explainseg's.

Needs: a release build, torch, timm, captum, safetensors, numpy, Pillow (see tools/bench_torch.py).
Usage:
    python tools/bench_memory.py [--threads 2] [--steps 50] [--samples 5] [--batch 10]
                                 [--torch-batches 10,25,50,125] [--binary target/release/explainseg]
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 224


def vit_s16():
    os.environ["TIMM_FUSED_ATTN"] = "0"  # must precede the timm import
    from functools import partial

    import torch.nn as nn
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(img_size=SIZE, patch_size=16, embed_dim=384, depth=12, num_heads=6, mlp_ratio=4,
                             qkv_bias=True, num_classes=2, global_pool="token", class_token=True,
                             norm_layer=partial(nn.LayerNorm, eps=1e-6)).float().eval()


def write_inputs(work):
    """The model file and the image both sides read."""
    import numpy as np
    import torch
    from PIL import Image
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = vit_s16()
    weights = os.path.join(work, "vit_s16.safetensors")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, weights)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    img = np.stack([(xx * 255 // SIZE), (yy * 255 // SIZE), ((xx + yy) * 127 // SIZE)], axis=-1).astype(np.uint8)
    image = os.path.join(work, "image.png")
    Image.fromarray(img).save(image)
    return weights, image


def timed(cmd, env=None):
    """Runs cmd under /usr/bin/time -v; returns (peak RSS in MiB, wall seconds, stdout)."""
    proc = subprocess.run(["/usr/bin/time", "-v"] + cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:(\d+):)?(\d+):([\d.]+)", proc.stderr)
    seconds = int(wall.group(1) or 0) * 3600 + int(wall.group(2)) * 60 + float(wall.group(3))
    return rss_kb / 1024.0, seconds, proc.stdout


def torch_child(args):
    """One PyTorch + Captum attribution (run in its own process so its peak RSS is its own)."""
    import numpy as np
    import torch
    from PIL import Image
    from safetensors.torch import load_file

    from bench_torch import shim_matplotlib_if_missing

    torch.set_num_threads(args.threads)
    model = vit_s16()
    model.load_state_dict(load_file(args.weights))
    for p in model.parameters():
        p.requires_grad_(False)
    shim_matplotlib_if_missing()
    from captum.attr import IntegratedGradients, NoiseTunnel

    u8 = np.asarray(Image.open(args.image).convert("RGB"), dtype=np.float32) / 255.0
    mean, std = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)
    x = torch.from_numpy(((u8 - mean) / std).transpose(2, 0, 1).copy())[None]
    target = int(model(x).argmax())
    t0 = time.perf_counter()
    attr = NoiseTunnel(IntegratedGradients(model)).attribute(
        x, nt_type="smoothgrad", nt_samples=args.samples, stdevs=1.0, target=target, n_steps=args.steps,
        method="gausslegendre", internal_batch_size=args.torch_child)
    seconds = time.perf_counter() - t0
    assert attr.shape == x.shape and bool(torch.isfinite(attr).all())
    print(json.dumps({"attribute_seconds": seconds}))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--samples", type=int, default=5)
    ap.add_argument("--batch", type=int, default=10, help="explainseg's passes per batch (attribute --batch)")
    ap.add_argument("--torch-batches", default="10,25,50,125", help="Captum internal_batch_size values")
    ap.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "explainseg"))
    ap.add_argument("--torch-child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--weights", help=argparse.SUPPRESS)
    ap.add_argument("--image", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.torch_child:
        return torch_child(args)

    rows = []
    with tempfile.TemporaryDirectory() as work:
        weights, image = write_inputs(work)
        rss, wall, _ = timed([args.binary, "attribute", "--weights", weights, "--image", image, "--size", str(SIZE),
                              "--threads", str(args.threads), "--steps", str(args.steps), "--nt-samples",
                              str(args.samples), "--batch", str(args.batch), "--quiet", "--out",
                              os.path.join(work, "out")])
        rows.append({"who": "explainseg", "batch": args.batch, "peak_rss_mib": round(rss, 1),
                     "process_seconds": round(wall, 2)})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "tools"))
        for ibs in (int(b) for b in args.torch_batches.split(",")):
            rss, wall, out = timed([sys.executable, os.path.abspath(__file__), "--torch-child", str(ibs),
                                    "--weights", weights, "--image", image, "--threads", str(args.threads),
                                    "--steps", str(args.steps), "--samples", str(args.samples)], env=env)
            rows.append({"who": "pytorch+captum", "batch": ibs, "peak_rss_mib": round(rss, 1),
                         "process_seconds": round(wall, 2),
                         "attribute_seconds": round(json.loads(out.strip().splitlines()[-1])["attribute_seconds"], 2)})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    best = min(rows[1:], key=lambda r: r["attribute_seconds"])
    print(json.dumps({"threads": args.threads, "passes": args.steps * args.samples, "explainseg": rows[0],
                      "pytorch_best": best, "pytorch_runs": rows[1:],
                      "rss_ratio_pytorch_best_over_explainseg": round(best["peak_rss_mib"] / rows[0]["peak_rss_mib"], 2)}))


if __name__ == "__main__":
    main()
