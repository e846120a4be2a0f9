#!/usr/bin/env python3
"""Where a backbone's CLS token looks, on Kvasir-SEG val images (issue 16's figure).

For each backbone given and each of the first N val images that hold a polyp, runs
`explainseg segment --variant b --feature cls-attn` (the last block's CLS attention,
mean over heads, on the 20 x 20 token grid at 160 px) and measures it against the
ground-truth mask:

- attention share in mask: the fraction of the CLS attention on tokens inside the
  polyp (token = mean of its mask pixels), beside the polyp's share of the tokens
  (what attention spread evenly would give);
- pointing: how often the most-attended token lies inside the polyp.

Prints a Markdown table and writes OUT/cls_attention.png: per image the frame, its
mask and each backbone's map. The figure holds data-set images, so it stays in OUT
and is never committed (no data-set licence allows copying the images).

    python3 tools/cls_attention.py DATA/kvasir_seg OUT NAME=WEIGHTS[:HEAD] ... [--n 8]
"""
import argparse
import os
import subprocess

import numpy as np
from PIL import Image

SIZE = 160


def val_ids(root):
    with open(os.path.join(root, "splits", "val.txt")) as f:
        return [line.strip() for line in f if line.strip()]


def token_mask(mask_path, grid):
    m = np.asarray(Image.open(mask_path).convert("L").resize((SIZE, SIZE), Image.BILINEAR))
    m = (m >= 128).astype(np.float64)
    p = SIZE // grid
    return m.reshape(grid, p, grid, p).mean(axis=(1, 3)), m


def cls_attention(binary, weights, head, image, out):
    cmd = [binary, "--quiet", "--threads", "2", "segment", "--weights", weights,
           *(["--head", head] if head else []),
           "--image", image, "--size", str(SIZE), "--variant", "b", "--feature", "cls-attn",
           "--steps", "1", "--nt-samples", "1", "--no-delta", "--no-crf", "--out", out]
    subprocess.run(cmd, check=True)
    return np.load(os.path.join(out, "feature.npy")).astype(np.float64)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("root")
    ap.add_argument("out")
    ap.add_argument("backbones", nargs="+", help="NAME=WEIGHTS[:HEAD]")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--bin", default=os.environ.get("EXPLAINSEG", "target/release/explainseg"))
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    named = []
    for b in a.backbones:
        name, files = b.split("=", 1)
        weights, _, head = files.partition(":")
        named.append((name, weights, head or None))

    ids, shares, base, hits, rows = [], {n: [] for n, _, _ in named}, [], {n: 0 for n, _, _ in named}, []
    for id_ in val_ids(a.root):
        if len(ids) == a.n:
            break
        image = os.path.join(a.root, "images", id_ + ".jpg")
        tokens, full = token_mask(os.path.join(a.root, "masks", id_ + ".png"), 20)
        if tokens.sum() == 0:
            continue
        ids.append(id_)
        base.append(tokens.mean())
        maps = []
        for name, weights, head in named:
            att = cls_attention(a.bin, weights, head, image, os.path.join(a.out, "seg", name, id_))
            att = att / att.sum()
            shares[name].append(float((att * tokens).sum()))
            hits[name] += tokens.flat[int(att.argmax())] >= 0.5
            maps.append(att)
        frame = np.asarray(Image.open(image).convert("RGB").resize((SIZE, SIZE), Image.BILINEAR))
        tiles = [frame, np.repeat((full * 255).astype(np.uint8)[..., None], 3, axis=2)]
        for att in maps:
            up = np.kron(att / att.max(), np.ones((SIZE // 20, SIZE // 20)))
            tiles.append(np.repeat((up * 255).astype(np.uint8)[..., None], 3, axis=2))
        rows.append(np.concatenate(tiles, axis=1))
    Image.fromarray(np.concatenate(rows, axis=0)).save(os.path.join(a.out, "cls_attention.png"))

    n = len(ids)
    print(f"CLS attention of the last block on {n} Kvasir-SEG val frames at {SIZE} px "
          f"(polyp share of the tokens: {100 * np.mean(base):.1f} %)\n")
    print("| backbone | attention share in the polyp % | most-attended token in the polyp |")
    print("|---|---:|---:|")
    for name, _, _ in named:
        print(f"| {name} | {100 * np.mean(shares[name]):.1f} | {hits[name]} / {n} |")
    print(f"\nfigure: {os.path.join(a.out, 'cls_attention.png')} "
          f"(columns: frame, mask, {', '.join(n for n, _, _ in named)})")


if __name__ == "__main__":
    main()
