#!/usr/bin/env python3
"""A labelled k-NN probe for `explainseg pretrain --knn-data`, cut from Kvasir-SEG.

For each of the last N images of the official train split (default 150): the image
squashed to 160² (as `pretrain --source-size 160` loads it), then random 64² windows
(seeded) until one is > 70 % polyp and one < 5 % polyp by the mask; each found window
is saved. The background class is trimmed to the polyp count (file-name order), so
chance is 50 %. Writes OUT/images/*.png and OUT/labels.csv (`file,label`). The masks
only label the probe; the pretraining never reads them.

    python3 tools/kvasir_knn_probe.py DATA/kvasir_seg OUT [N]
"""
import os
import sys

import numpy as np
from PIL import Image


def windows(image, mask, rng):
    got = {}
    for _ in range(400):
        y, x = rng.integers(0, 160 - 64 + 1, 2)
        frac = mask[y:y + 64, x:x + 64].mean()
        label = "polyp" if frac > 0.7 else ("background" if frac < 0.05 else None)
        if label and label not in got:
            got[label] = image.crop((x, y, x + 64, y + 64))
        if len(got) == 2:
            break
    return got


def main():
    root, out = sys.argv[1], sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 150
    ids = open(os.path.join(root, "splits/train.txt")).read().split()[-n:]
    rng = np.random.default_rng(0)
    found = {"polyp": {}, "background": {}}
    for i in ids:
        image = Image.open(os.path.join(root, "images", i + ".jpg")).convert("RGB")
        image = image.resize((160, 160), Image.BILINEAR)
        mask = Image.open(os.path.join(root, "masks", i + ".png")).convert("L")
        mask = np.array(mask.resize((160, 160), Image.NEAREST)) > 127
        for label, patch in windows(image, mask, rng).items():
            found[label][i] = patch
    keep = len(found["polyp"])
    os.makedirs(os.path.join(out, "images"), exist_ok=True)
    rows = ["file,label"]
    for label in ("polyp", "background"):
        for i in sorted(found[label])[:keep]:
            name = f"{label}_{i}.png"
            found[label][i].save(os.path.join(out, "images", name))
            rows.append(f"{name},{label}")
    with open(os.path.join(out, "labels.csv"), "w") as f:
        f.write("\n".join(rows) + "\n")
    print({label: min(len(v), keep) for label, v in found.items()})


if __name__ == "__main__":
    main()
