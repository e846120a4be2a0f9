#!/usr/bin/env python3
"""PyTorch autograd reference for the parameter gradients of the training backward.

For each case, a timm VisionTransformer (TIMM_FUSED_ATTN=0: explicit softmax attention) is loaded with
the committed engine fixture weights, run on a seeded batch, and the mean cross-entropy
``nn.CrossEntropyLoss(weight=class_weights)`` is differentiated with ``loss.backward()``. The gradient of
every parameter is written under its timm name (head as ``head.weight`` / ``head.bias``).

Cases (tests/fixtures/param_grads/<case>/):
* ``s16_cls``     engine/s16_tiny (patch 16, D 24, 2 blocks, 3 heads), timm CLS head, 4 images 64x64,
                  class weights (0.5, 2.0, 1.0).
* ``p8_dino4``    engine/p8_dino4 (patch 8, D 24, 4 blocks, 1 head) with the DINO linear-eval head on the
                  final-normed CLS of the last 4 blocks, 4 images 32x32, no class weights.
* ``s16_avgpool`` engine/s16_tiny backbone with a seeded DINO ``avgpool_patchtokens`` head
                  ([CLS, mean patch] interleaved, in = 2D), 2 images 64x64, class weights (1, 3).

Files per case: ``input.npy`` (B,3,H,W) f32, ``case.json`` (labels, class weights, loss, weight files),
``grads.safetensors`` (every parameter's gradient), and for s16_avgpool its ``head.safetensors``.

Run from the repository root:  python tools/gen_param_grads.py
Pinned: python 3.11, torch 2.15.0 (CPU), timm 1.0.31, safetensors 0.8.0, numpy 2.4.
Tolerance used by tests/param_grads.rs: rel-L2 <= 1e-4 per tensor.
"""

import os

os.environ["TIMM_FUSED_ATTN"] = "0"  # must precede the timm import

import json
from functools import partial
from pathlib import Path

import numpy as np
import safetensors.torch
import torch
import torch.nn as nn
from timm.models.vision_transformer import VisionTransformer

torch.set_default_dtype(torch.float32)
torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parent.parent
ENGINE = ROOT / "tests/fixtures/engine"
OUT = ROOT / "tests/fixtures/param_grads"


def build(cfg):
    m = VisionTransformer(
        img_size=tuple(cfg["img_hw"]), patch_size=cfg["patch"], embed_dim=cfg["dim"], depth=cfg["depth"],
        num_heads=cfg["heads"], mlp_ratio=4, qkv_bias=True, num_classes=0, global_pool="token",
        class_token=True, norm_layer=partial(nn.LayerNorm, eps=cfg["eps"]),
    )
    for blk in m.blocks:
        assert blk.attn.fused_attn is False
    return m.float()


def load_backbone(case_dir):
    cfg = json.loads((ENGINE / case_dir / "config.json").read_text())
    sd = safetensors.torch.load_file(str(ENGINE / case_dir / "model_timm.safetensors"))
    head = {k: v for k, v in sd.items() if k.startswith("head.")}
    vit = build(cfg)
    vit.load_state_dict({k: v for k, v in sd.items() if not k.startswith("head.")}, strict=True)
    return cfg, vit, head


def features(vit, x, kind):
    h = vit.patch_embed(x)
    h = vit._pos_embed(h)
    outs = []
    for i, blk in enumerate(vit.blocks):
        h = blk(h)
        outs.append(h)
    if kind == "cls":
        return vit.norm(outs[-1])[:, 0]
    if kind == "dino4":
        return torch.cat([vit.norm(o)[:, 0] for o in outs[-4:]], dim=-1)
    if kind == "avgpool":
        n = vit.norm(outs[-1])
        # DINO eval_linear: stack [CLS, mean patch] on a last axis, then flatten (interleaved).
        return torch.cat([n[:, 0].unsqueeze(-1), n[:, 1:].mean(dim=1).unsqueeze(-1)], dim=-1).reshape(n.shape[0], -1)
    raise ValueError(kind)


def run_case(name, engine_case, kind, batch, class_weights, seed):
    torch.manual_seed(seed)
    cfg, vit, head_sd = load_backbone(engine_case)
    d = cfg["dim"]
    files = {"backbone": f"engine/{engine_case}/model_timm.safetensors"}
    if kind == "cls":
        w, b = head_sd["head.weight"], head_sd["head.bias"]
        files["head"] = None
    elif kind == "dino4":
        hd = safetensors.torch.load_file(str(ENGINE / engine_case / "head_dino.safetensors"))
        w, b = hd["module.linear.weight"], hd["module.linear.bias"]
        files["head"] = f"engine/{engine_case}/head_dino.safetensors"
    else:
        classes = len(class_weights)
        w = torch.randn(classes, 2 * d) / (2 * d) ** 0.5
        b = torch.randn(classes) * 0.1
        files["head"] = f"param_grads/{name}/head.safetensors"
    classes = w.shape[0]
    lin = nn.Linear(w.shape[1], classes)
    with torch.no_grad():
        lin.weight.copy_(w)
        lin.bias.copy_(b)
    h, wd = cfg["img_hw"]
    x = torch.randn(batch, 3, h, wd) * 1.5
    labels = torch.randint(0, classes, (batch,))
    labels[0], labels[-1] = 0, classes - 1  # every weight class is present
    cw = None if class_weights is None else torch.tensor(class_weights, dtype=torch.float32)
    logits = lin(features(vit, x, kind))
    loss = nn.CrossEntropyLoss(weight=cw)(logits, labels)
    loss.backward()
    grads = {k: p.grad.detach().clone().contiguous() for k, p in vit.named_parameters()}
    grads["head.weight"] = lin.weight.grad.detach().clone()
    grads["head.bias"] = lin.bias.grad.detach().clone()
    missing = [k for k, v in grads.items() if v is None]
    assert not missing, missing
    out = OUT / name
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "input.npy", x.numpy().astype(np.float32))
    safetensors.torch.save_file(grads, str(out / "grads.safetensors"))
    if kind == "avgpool":
        safetensors.torch.save_file({"head.weight": w.contiguous(), "head.bias": b.contiguous()},
                                    str(out / "head.safetensors"))
    meta = {
        "engine_case": engine_case,
        "head": kind,
        "files": files,
        "labels": labels.tolist(),
        "class_weights": class_weights,
        "loss": loss.item(),
        "logits": logits.detach().numpy().tolist(),
        "seed": seed,
        "torch": torch.__version__,
    }
    (out / "case.json").write_text(json.dumps(meta, indent=2))
    print(name, "loss", loss.item(), "tensors", len(grads))


def main():
    run_case("s16_cls", "s16_tiny", "cls", 4, [0.5, 2.0, 1.0], 3001)
    run_case("p8_dino4", "p8_dino4", "dino4", 4, None, 3002)
    run_case("s16_avgpool", "s16_tiny", "avgpool", 2, [1.0, 3.0], 3003)


if __name__ == "__main__":
    main()
