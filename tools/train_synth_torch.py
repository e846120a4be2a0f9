#!/usr/bin/env python3
"""Train a small timm ViT from scratch on `explainseg synth` images with image labels only.

The reference recipe for the demo model (`assets/synth_vit.safetensors`) until `explainseg train`
replaces it. Reads the generic folder layout (`images/<id>.png`, `labels.csv` with `file,label`,
label `lesion` or anything else = normal), trains a `VisionTransformer` (class token, timm defaults
otherwise), and writes timm-named safetensors with the metadata `Vit::load` reads
(`num_heads`, `layer_norm_eps`, `format`).

Pre-processing matches `explainseg segment --size S` with default normalisation: the image as is
(the set is generated at S), `ToTensor`, ImageNet mean/std.

Example (the committed model; see assets/README.md):
    explainseg synth --out /tmp/synth_train --count 2000 --size 64 --seed 1
    python tools/train_synth_torch.py --data /tmp/synth_train --out assets/synth_vit.safetensors
"""

import argparse
import csv
import json
import math
import os
import time
from functools import partial
from pathlib import Path

os.environ.setdefault("TIMM_FUSED_ATTN", "0")

import numpy as np
import safetensors.torch
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from timm.models.vision_transformer import VisionTransformer

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def load_set(root):
    root = Path(root)
    with open(root / "labels.csv") as f:
        rows = list(csv.DictReader(f))
    x = np.stack([np.asarray(Image.open(root / "images" / r["file"]).convert("RGB")) for r in rows])
    y = np.array([1 if r["label"] == "lesion" else 0 for r in rows])
    x = torch.from_numpy(x).permute(0, 3, 1, 2).float().div(255.0)
    return (x - MEAN) / STD, torch.from_numpy(y), [r["file"] for r in rows]


def augment(x, gen):
    """Per-sample horizontal/vertical flips and transposition (the 8 symmetries of the square)."""
    n = x.shape[0]
    for flip in (lambda t: t.flip(3), lambda t: t.flip(2), lambda t: t.transpose(2, 3)):
        m = (torch.rand(n, generator=gen) < 0.5).view(n, 1, 1, 1)
        x = torch.where(m, flip(x), x)
    return x


def build(args):
    return VisionTransformer(
        img_size=args.size, patch_size=args.patch, embed_dim=args.dim, depth=args.depth,
        num_heads=args.heads, mlp_ratio=args.mlp_ratio, qkv_bias=True, num_classes=2,
        global_pool="token", class_token=True, norm_layer=partial(nn.LayerNorm, eps=1e-6),
    )


@torch.no_grad()
def accuracy(model, x, y):
    model.eval()
    pred = torch.cat([model(x[i:i + 256]).argmax(1) for i in range(0, len(x), 256)])
    return float((pred == y).float().mean())


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--val", help="validation folder (default: the last --val-fraction of --data)")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--out", required=True)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--patch", type=int, default=8)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--mlp-ratio", type=float, default=4.0)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--warmup", type=int, default=1, help="warm-up epochs")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    x, y, _ = load_set(args.data)
    if args.val:
        xv, yv, _ = load_set(args.val)
    else:
        n_val = int(len(x) * args.val_fraction)
        x, xv, y, yv = x[:-n_val], x[-n_val:], y[:-n_val], y[-n_val:]
    assert x.shape[-1] == args.size, f"images are {x.shape[-1]} px, --size is {args.size}"
    model = build(args)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    steps_per_epoch = math.ceil(len(x) / args.batch)
    total, warm = args.epochs * steps_per_epoch, args.warmup * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / max(1, warm) if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, total - warm))))
    t0 = time.time()
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(len(x), generator=gen)
        loss_sum = 0.0
        for i in range(0, len(x), args.batch):
            idx = perm[i:i + args.batch]
            loss = F.cross_entropy(model(augment(x[idx], gen)), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += float(loss) * len(idx)
        print(f"epoch {epoch + 1:3d} loss {loss_sum / len(x):.4f} val acc {accuracy(model, xv, yv):.3f} "
              f"({time.time() - t0:.0f} s)", flush=True)
    seconds = time.time() - t0
    acc = accuracy(model, xv, yv)
    sd = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    meta = {"num_heads": str(args.heads), "layer_norm_eps": "1e-06", "format": "timm",
            "recipe": json.dumps({k: v for k, v in vars(args).items() if k not in ("data", "val", "out")}, sort_keys=True),
            "val_accuracy": f"{acc:.4f}"}
    safetensors.torch.save_file(sd, args.out, metadata=meta)
    print(json.dumps({"val_accuracy": acc, "train_seconds": round(seconds, 1), "params": sum(v.numel() for v in sd.values()),
                      "out": args.out}))


if __name__ == "__main__":
    main()
