#!/usr/bin/env python3
"""PyTorch autograd reference for DINO pretraining's student gradients.

The student is the committed engine fixture tests/fixtures/engine/p8_dino4 (timm ViT, patch 8, D 24,
4 blocks, 1 head, positional grid 4x4 at 32 px; TIMM_FUSED_ATTN=0) followed by DINO's projection head
(``DINOHead`` of the public DINO repository: Linear-GELU-Linear-GELU-Linear to a bottleneck,
``F.normalize``, then ``nn.utils.weight_norm(nn.Linear(bottleneck, K, bias=False))`` with ``weight_g``
filled with 1 and frozen). The head's weights are seeded at a larger scale than DINO's init so every term
of the backward matters.

Multi-crop: 2 global views at 32x32 (the native grid) and 2 local views at 16x16, whose positional table is
interpolated as DINO's ``interpolate_pos_encoding`` does (bicubic, ``scale_factor = (g + 0.1)/g0``). The
loss is DINO's ``DINOLoss`` for given teacher outputs and centre (student temperature 0.1, teacher
temperature 0.04): the teacher is a constant here, as in DINO. Every student parameter's gradient is written
under its timm / DINO name, with the loss, the loss's inputs and the centre after one update
(momentum 0.9).

Files (tests/fixtures/dino_grads/): ``view{0..3}.npy`` (B,3,S,S) f32, ``teacher.npy`` (2B,K), ``center.npy``
(K), ``center_next.npy`` (K), ``head.safetensors``, ``grads.safetensors``, ``case.json``.

Run from the repository root:  python tools/gen_dino_grads.py
Pinned: python 3.11, torch 2.15.0 (CPU), timm 1.0.31, safetensors 0.8.0, numpy 2.4.
Tolerances used by tests/dino_grads.rs: loss 1e-5 relative, rel-L2 <= 1e-4 per gradient tensor.
"""

import os

os.environ["TIMM_FUSED_ATTN"] = "0"  # must precede the timm import

import json
import math
from functools import partial
from pathlib import Path

import numpy as np
import safetensors.torch
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer

torch.set_default_dtype(torch.float32)
torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parent.parent
ENGINE = ROOT / "tests/fixtures/engine/p8_dino4"
OUT = ROOT / "tests/fixtures/dino_grads"
BATCH, LOCAL_SIZE, LOCALS = 2, 16, 2
HIDDEN, BOTTLENECK, K = 32, 16, 40
STUDENT_TEMP, TEACHER_TEMP, CENTER_MOMENTUM = 0.1, 0.04, 0.9


def load_vit():
    cfg = json.loads((ENGINE / "config.json").read_text())
    m = VisionTransformer(
        img_size=tuple(cfg["img_hw"]), patch_size=cfg["patch"], embed_dim=cfg["dim"], depth=cfg["depth"],
        num_heads=cfg["heads"], mlp_ratio=4, qkv_bias=True, num_classes=0, global_pool="token",
        class_token=True, norm_layer=partial(nn.LayerNorm, eps=cfg["eps"]),
    ).float()
    sd = safetensors.torch.load_file(str(ENGINE / "model_timm.safetensors"))
    m.load_state_dict({k: v for k, v in sd.items() if not k.startswith("head.")}, strict=True)
    for blk in m.blocks:
        assert blk.attn.fused_attn is False
    return cfg, m


def interpolate_pos_encoding(pos_embed, grid):
    """DINO's ViT.interpolate_pos_encoding for a square grid."""
    n = pos_embed.shape[1] - 1
    if grid * grid == n:
        return pos_embed
    dim = pos_embed.shape[-1]
    g0 = int(math.sqrt(n))
    w0 = h0 = grid + 0.1
    patch = F.interpolate(
        pos_embed[:, 1:].reshape(1, g0, g0, dim).permute(0, 3, 1, 2),
        scale_factor=(w0 / math.sqrt(n), h0 / math.sqrt(n)), mode="bicubic",
    )
    assert patch.shape[-2:] == (grid, grid)
    patch = patch.permute(0, 2, 3, 1).reshape(1, -1, dim)
    return torch.cat((pos_embed[:, :1], patch), dim=1)


def student_cls(vit, x, patch):
    proj = vit.patch_embed.proj
    h = F.conv2d(x, proj.weight, proj.bias, stride=patch).flatten(2).transpose(1, 2)
    h = torch.cat((vit.cls_token.expand(x.shape[0], -1, -1), h), dim=1)
    h = h + interpolate_pos_encoding(vit.pos_embed, x.shape[-1] // patch)
    for blk in vit.blocks:
        h = blk(h)
    return vit.norm(h)[:, 0]


class DINOHead(nn.Module):
    def __init__(self, in_dim):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_dim, HIDDEN), nn.GELU(), nn.Linear(HIDDEN, HIDDEN), nn.GELU(),
                                 nn.Linear(HIDDEN, BOTTLENECK))
        self.last_layer = nn.utils.weight_norm(nn.Linear(BOTTLENECK, K, bias=False))
        self.last_layer.weight_g.data.fill_(1)
        self.last_layer.weight_g.requires_grad = False

    def forward(self, x):
        x = self.mlp(x)
        x = F.normalize(x, dim=-1, p=2)
        return self.last_layer(x)


def dino_loss(student_output, teacher_output, center, ncrops):
    student_out = (student_output / STUDENT_TEMP).chunk(ncrops)
    teacher_out = F.softmax((teacher_output - center) / TEACHER_TEMP, dim=-1).detach().chunk(2)
    total, n = 0, 0
    for iq, q in enumerate(teacher_out):
        for v in range(len(student_out)):
            if v == iq:
                continue
            total += torch.sum(-q * F.log_softmax(student_out[v], dim=-1), dim=-1).mean()
            n += 1
    return total / n


def main():
    torch.manual_seed(4001)
    cfg, vit = load_vit()
    patch, size = cfg["patch"], cfg["img_hw"][0]
    head = DINOHead(cfg["dim"])
    with torch.no_grad():
        for m in head.mlp:
            if isinstance(m, nn.Linear):
                m.weight.normal_(0, 0.3)
                m.bias.normal_(0, 0.1)
        head.last_layer.weight_v.normal_(0, 1.0)
    views = [torch.randn(BATCH, 3, size, size) * 1.5 for _ in range(2)]
    views += [torch.randn(BATCH, 3, LOCAL_SIZE, LOCAL_SIZE) * 1.5 for _ in range(LOCALS)]
    teacher = torch.randn(2 * BATCH, K) * 2.0
    center = torch.randn(K) * 0.5
    feats = torch.cat([student_cls(vit, x, patch) for x in views])
    loss = dino_loss(head(feats), teacher, center, len(views))
    loss.backward()
    grads = {k: p.grad.detach().clone().contiguous() for k, p in vit.named_parameters()}
    grads.update({f"head.{k}": p.grad.detach().clone().contiguous()
                  for k, p in head.named_parameters() if p.requires_grad})
    assert all(v is not None for v in grads.values())
    center_next = center * CENTER_MOMENTUM + teacher.mean(dim=0) * (1 - CENTER_MOMENTUM)

    OUT.mkdir(parents=True, exist_ok=True)
    for i, x in enumerate(views):
        np.save(OUT / f"view{i}.npy", x.numpy().astype(np.float32))
    np.save(OUT / "teacher.npy", teacher.numpy().astype(np.float32))
    np.save(OUT / "center.npy", center.numpy().astype(np.float32))
    np.save(OUT / "center_next.npy", center_next.numpy().astype(np.float32))
    head_sd = {f"head.{k}": v.detach().clone().contiguous() for k, v in head.state_dict().items()}
    safetensors.torch.save_file(head_sd, str(OUT / "head.safetensors"))
    safetensors.torch.save_file(grads, str(OUT / "grads.safetensors"))
    meta = {
        "backbone": "engine/p8_dino4/model_timm.safetensors",
        "batch": BATCH, "views": len(views), "head": {"hidden": HIDDEN, "bottleneck": BOTTLENECK, "out_dim": K},
        "student_temp": STUDENT_TEMP, "teacher_temp": TEACHER_TEMP, "center_momentum": CENTER_MOMENTUM,
        "loss": loss.item(), "torch": torch.__version__,
    }
    (OUT / "case.json").write_text(json.dumps(meta, indent=2))
    print("loss", loss.item(), "tensors", len(grads), sorted(head_sd))


if __name__ == "__main__":
    main()
