#!/usr/bin/env python3
"""PyTorch reference for the training throughput reported by
`cargo test --release --test train -- --ignored` (training_speed_vit_ti_64):
timm ViT-Ti (12 blocks, D 192, 3 heads) at 64x64, batch 32, cross-entropy, SGD momentum step,
every parameter training (or the head only, on features computed under no_grad), on N threads.

    python tools/bench_train_torch.py --threads 2
"""

import argparse
import os
import time

os.environ.setdefault("TIMM_FUSED_ATTN", "0")

import torch
import torch.nn as nn
from timm.models.vision_transformer import VisionTransformer


def bench(patch, head_only, threads, batch=32, seconds=10.0):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    m = VisionTransformer(img_size=64, patch_size=patch, embed_dim=192, depth=12, num_heads=3, num_classes=2)
    params = m.head.parameters() if head_only else m.parameters()
    opt = torch.optim.SGD(params, lr=0.005, momentum=0.9)
    x = torch.randn(batch, 3, 64, 64)
    y = torch.randint(0, 2, (batch,))
    loss_fn = nn.CrossEntropyLoss()

    def step():
        opt.zero_grad()
        if head_only:
            with torch.no_grad():
                f = m.forward_head(m.forward_features(x), pre_logits=True)
            loss = loss_fn(m.head(f), y)
        else:
            loss = loss_fn(m(x), y)
        loss.backward()
        opt.step()

    for _ in range(3):  # warm-up: allocator, kernel selection
        step()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step()
        n += batch
    return n / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=10.0)
    a = ap.parse_args()
    for patch in (16, 8):
        for head_only in (False, True):
            r = bench(patch, head_only, a.threads, seconds=a.seconds)
            print(f"torch {torch.__version__} ViT-Ti/{patch} 64² {'head' if head_only else 'all'}, "
                  f"{a.threads} threads: {r:.1f} images/s")


if __name__ == "__main__":
    main()
