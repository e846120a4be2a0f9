#!/usr/bin/env python3
"""Baseline: PyTorch + Captum speed on a ViT-S/16 at 224x224 (random weights, timm), on the CPU or
(--device cuda, TF32 off) on a GPU.

Prints ONE JSON line on stdout:
  {"threads", "fwd_bwd_passes_per_s", "gflops_per_s" (= passes/s * 19.11 GFLOP per forward + input-gradient
   backward pass of ViT-S/16 at 224^2, see docs/method.md §10), "ig_seconds", "ig_steps", "nt_samples",
   "batch", "fused_attn", "torch"}
Progress goes to stderr.

(a) throughput: a batch of --batch images, forward, then torch.autograd.grad of sum(logits[:, 0]) w.r.t. the
    input (weights frozen, so no weight gradients); warm-up, then repeat for about --seconds seconds;
    passes/s = batch * iterations / time.
(b) wall time of NoiseTunnel(IntegratedGradients(model)).attribute on one image with nt_samples=--samples,
    n_steps=--steps (gausslegendre), stdevs=1.0, internal_batch_size=--batch.

Explicit-softmax attention (TIMM_FUSED_ATTN=0) by default, like the reference fixtures; --fused lets timm
use F.scaled_dot_product_attention.

Versions used when written: python 3.11, torch 2.15.0, timm 1.0.31, captum 0.9.0.
Usage:
    python tools/bench_torch.py [--device cpu|cuda] [--threads N] [--batch 10] [--seconds 10] [--steps 10]
                                [--samples 1] [--fused]
"""

import argparse
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
import time
import types


def shim_matplotlib_if_missing():
    """Captum imports matplotlib at package import (for its plotting helpers) even when only
    attributions are computed. The lent GPU machine has PyTorch but not necessarily matplotlib
    and no network, so when it is missing, stand-in modules satisfy those imports; nothing here
    plots, and any use of a stand-in raises."""
    if importlib.util.find_spec("matplotlib") is not None:
        return False

    class Stub(types.ModuleType):
        __path__ = []  # a package, so any submodule import comes back to StubFinder

        def __getattr__(self, name):
            if name.startswith("__"):
                raise AttributeError(name)
            return Stub(f"{self.__name__}.{name}")

        def __call__(self, *a, **k):
            raise RuntimeError(f"{self.__name__}: matplotlib is not installed (benchmark stand-in)")

    class StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("matplotlib", "mpl_toolkits"):
                return importlib.machinery.ModuleSpec(name, self, is_package=True)
            return None

        def create_module(self, spec):
            return Stub(spec.name)

        def exec_module(self, module):
            pass

    sys.meta_path.insert(0, StubFinder())
    return True


def main():
    ap = argparse.ArgumentParser(description="PyTorch/Captum CPU baseline for ViT-S/16 IG + NoiseTunnel")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--samples", type=int, default=1)
    ap.add_argument("--fused", action="store_true", help="allow timm's fused SDPA attention")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--repeats", type=int, default=1, help="time IG this many times, report the fastest")
    args = ap.parse_args()

    os.environ["TIMM_FUSED_ATTN"] = "1" if args.fused else "0"  # must precede the timm import
    from functools import partial

    import torch
    import torch.nn as nn
    matplotlib_stubbed = shim_matplotlib_if_missing()
    from captum.attr import IntegratedGradients, NoiseTunnel
    from timm.models.vision_transformer import VisionTransformer

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False  # f32 GEMMs, as explainseg's cuBLAS calls
    dev = torch.device(args.device)

    def sync():
        """Timings must wait for queued GPU work."""
        if dev.type == "cuda":
            torch.cuda.synchronize()

    model = VisionTransformer(img_size=224, patch_size=16, embed_dim=384, depth=12, num_heads=6, mlp_ratio=4,
                              qkv_bias=True, num_classes=2, global_pool="token", class_token=True,
                              norm_layer=partial(nn.LayerNorm, eps=1e-6)).float().eval().to(dev)
    assert all(b.attn.fused_attn == args.fused for b in model.blocks)
    for p in model.parameters():
        p.requires_grad_(False)

    log = partial(print, file=sys.stderr, flush=True)

    # (a) forward + input-gradient throughput
    B = args.batch
    x = torch.randn(B, 3, 224, 224, device=dev)

    def pass_once():
        xi = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(model(xi)[:, 0].sum(), xi)
        return g

    for _ in range(2):
        pass_once()
    sync()
    iters = 0
    t0 = time.perf_counter()
    while True:
        pass_once()
        iters += 1
        sync()
        dt = time.perf_counter() - t0
        if dt >= args.seconds:
            break
    passes = B * iters / dt
    log(f"fwd+bwd: {iters} x batch {B} in {dt:.2f} s -> {passes:.2f} passes/s")

    # (b) IG + NoiseTunnel wall time on one image
    img = torch.randn(1, 3, 224, 224, device=dev)
    nt = NoiseTunnel(IntegratedGradients(model))
    ig_times = []
    for _ in range(max(1, args.repeats)):
        sync()
        t0 = time.perf_counter()
        attr = nt.attribute(img, nt_type="smoothgrad", nt_samples=args.samples, stdevs=1.0, target=0,
                            n_steps=args.steps, method="gausslegendre", internal_batch_size=B)
        sync()
        ig_times.append(time.perf_counter() - t0)
        assert attr.shape == img.shape and bool(torch.isfinite(attr).all())
    ig_s = min(ig_times)
    log(f"IG+NT: {args.steps} steps x {args.samples} samples in {ig_s:.2f} s")

    # The machine's SGEMM rate as PyTorch's BLAS sees it (best of repeated products).
    sgemm_peak = 0.0
    for (m, k, n) in [(1536, 1536, 1536), (2048, 2048, 2048), (B * 197, 384, 1536)]:
        a, b = torch.randn(m, k, device=dev), torch.randn(k, n, device=dev)
        for _ in range(2):
            a @ b
        for _ in range(8):
            sync()
            t = time.perf_counter()
            a @ b
            sync()
            sgemm_peak = max(sgemm_peak, 2 * m * n * k / (time.perf_counter() - t) / 1e9)

    print(json.dumps({
        "sgemm_peak_gflops": round(sgemm_peak, 2),
        "threads": torch.get_num_threads(),
        "fwd_bwd_passes_per_s": round(passes, 4),
        "gflops_per_s": round(passes * 19.11, 3),
        "ig_seconds": round(ig_s, 4),
        "ig_seconds_each": [round(t, 4) for t in ig_times],
        "matplotlib_stubbed": matplotlib_stubbed,
        "captum": __import__("captum").__version__,
        "ig_steps": args.steps,
        "nt_samples": args.samples,
        "batch": B,
        "fused_attn": args.fused,
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu",
    }))


if __name__ == "__main__":
    main()
