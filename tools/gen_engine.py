#!/usr/bin/env python3
"""Generate the PyTorch/timm/Captum reference fixtures for the explainseg engine tests.

What it produces
----------------
tests/fixtures/engine/ (committed, kept < 4 MB):

* ``s16_tiny/``  patch 16, 4x4 grid, 3 heads, timm CLS head; weights in timm / DINO / HF naming plus
  f16 and bf16 copies of the timm file.
* ``p8_dino4/``  patch 8, 4 blocks, 1 head, DINO linear-eval head on the concatenated final-normed
  CLS tokens of the last 4 blocks (eval_linear ``n_last_blocks=4``).
* ``hf_eps/``    patch 16, non-square 32x48 input, LayerNorm eps 1e-12 (HF ViTConfig default).
* ``posembed/``  patch 8 model built for 32x32 evaluated on 48x40 under the three positional-embedding
  interpolation modes (DINO ``+0.1`` scale factor, HF size-based, timm antialiased resample).
* ``quadrature/`` Captum's alphas / step sizes (float64) for every method at n_steps = 50.
* ``README.md``  list of every file, shape, seed, the pinned versions and the test tolerances.

Each case folder holds the weights (safetensors), ``config.json``, the input, logits, CLS feature,
last-block taps (q/k/v/attention/tokens), input gradients, IntegratedGradients results for every
quadrature rule and option the engine supports, and NoiseTunnel results computed with an injected
(dumped) noise tensor so that the Rust side can reproduce them exactly.

With ``--full`` it also writes a full-size random ViT-S/16 (224x224, 2 classes) reference into
``--full-out`` (default /tmp/explainseg_full, NOT committed: ~87 MB of weights).

Pinned versions (the ones the committed fixtures were made with; printed into each README too):
    python 3.11, torch 2.15.0 (CPU only), timm 1.0.31, captum 0.9.0, numpy 2.4.6, safetensors 0.8.0

How to run (from the repository root):
    TIMM_FUSED_ATTN=0 python tools/gen_engine.py [--full] [--full-out DIR] [--out DIR]

The script sets TIMM_FUSED_ATTN=0 itself before importing timm (explicit softmax attention instead of
SDPA, see docs/parity.md §2.1), disables TF32, uses float32 everywhere, runs the models in eval mode on the CPU
and seeds torch per case, so reruns reproduce the files (up to CPU-kernel rounding if the thread count
or the CPU differs; the tolerances below are far looser than that).

Tolerances the Rust tests use (relative error, rel-L2 = ||a-b||_2 / ||b||_2):
    logits <= 1e-5, input gradients and IG <= 1e-4, NoiseTunnel <= 1e-4, pos-embed <= 1e-5.
"""

import os

os.environ["TIMM_FUSED_ATTN"] = "0"  # must precede the timm import

import argparse
import contextlib
import json
import shutil
import sys
from functools import partial
from pathlib import Path

import numpy as np
import safetensors
import safetensors.torch
import torch
import torch.nn as nn
import torch.nn.functional as F

import captum
import timm
from captum.attr import IntegratedGradients, NoiseTunnel
from captum.attr._utils.approximation_methods import approximation_parameters
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer

torch.backends.cudnn.allow_tf32 = False
torch.backends.cuda.matmul.allow_tf32 = False
torch.set_default_dtype(torch.float32)
torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

VERSIONS = {
    "python": sys.version.split()[0],
    "torch": torch.__version__,
    "timm": timm.__version__,
    "captum": captum.__version__,
    "numpy": np.__version__,
    "safetensors": safetensors.__version__,
}

IG_METHODS = ["gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid"]
NT_TYPES = ["smoothgrad", "smoothgrad_sq", "vargrad"]

# Committed cases. Dims are smaller than a real ViT-S so that the whole folder (three namings of each
# weight set) stays < 4 MB; every structural feature (head count > 1, odd head count, depth, patch 8 vs
# 16, eps, non-square input, DINO 4-block head) is still exercised.
CASES = {
    "s16_tiny": dict(patch=16, dim=24, depth=2, heads=3, eps=1e-6, classes=3, head="cls",
                     img_hw=(64, 64), input_hw=(64, 64), seed=1001, f16=True),
    "p8_dino4": dict(patch=8, dim=24, depth=4, heads=1, eps=1e-6, classes=4, head="dino4",
                     img_hw=(32, 32), input_hw=(32, 32), seed=1012, f16=False),
    "hf_eps": dict(patch=16, dim=16, depth=2, heads=2, eps=1e-12, classes=2, head="cls",
                   img_hw=(32, 48), input_hw=(32, 48), seed=1003, f16=False),
}
POSEMBED_CASE = dict(patch=8, dim=32, depth=2, heads=2, eps=1e-6, classes=3, head="cls",
                     img_hw=(32, 32), input_hw=(48, 40), seed=1004)
FULL_CASE = dict(patch=16, dim=384, depth=12, heads=6, eps=1e-6, classes=2, head="cls",
                 img_hw=(224, 224), input_hw=(224, 224), seed=2001)

IG_STEPS = 16
NT_STEPS = 8
NT_SAMPLES = 3
NT_STDEV = 1.0
IBS = 5


# ----------------------------------------------------------------------------------------------
# model construction
# ----------------------------------------------------------------------------------------------

def build_vit(cfg, dynamic_img_size=False):
    num_classes = cfg["classes"] if cfg["head"] == "cls" else 0
    m = VisionTransformer(
        img_size=tuple(cfg["img_hw"]),
        patch_size=cfg["patch"],
        embed_dim=cfg["dim"],
        depth=cfg["depth"],
        num_heads=cfg["heads"],
        mlp_ratio=4,
        qkv_bias=True,
        num_classes=num_classes,
        global_pool="token",
        class_token=True,
        norm_layer=partial(nn.LayerNorm, eps=cfg["eps"]),
        dynamic_img_size=dynamic_img_size,
    )
    for blk in m.blocks:
        assert blk.attn.fused_attn is False, "TIMM_FUSED_ATTN=0 did not take effect"
    return m.float().eval()


@torch.no_grad()
def reinit_(model, head):
    """Re-initialise every parameter with non-trivial random values (seeded by the caller)."""
    touched = set()

    def lin(mod, gain):
        fan_in = mod.weight[0].numel()  # Linear: in_features; Conv2d: in_ch * kh * kw
        mod.weight.normal_(0.0, gain / fan_in ** 0.5)
        touched.add(id(mod.weight))
        if mod.bias is not None:
            mod.bias.normal_(0.0, 0.1)
            touched.add(id(mod.bias))

    def ln(mod):
        mod.weight.copy_(1.0 + 0.2 * torch.randn_like(mod.weight))
        mod.bias.normal_(0.0, 0.1)
        touched.update({id(mod.weight), id(mod.bias)})

    lin(model.patch_embed.proj, 0.5)
    model.cls_token.normal_(0.0, 0.5)
    model.pos_embed.normal_(0.0, 0.5)
    touched.update({id(model.cls_token), id(model.pos_embed)})
    for blk in model.blocks:
        ln(blk.norm1)
        lin(blk.attn.qkv, 1.5)  # larger so attention is visibly non-uniform
        lin(blk.attn.proj, 0.5)
        ln(blk.norm2)
        lin(blk.mlp.fc1, 1.0)  # larger so GELU is exercised off its linear part
        lin(blk.mlp.fc2, 0.5)
    ln(model.norm)
    if isinstance(model.head, nn.Linear):
        lin(model.head, 1.0)
    if head is not None:
        lin(head, 1.0)
    missed = [n for n, p in model.named_parameters() if id(p) not in touched]
    assert not missed, f"parameters not re-initialised: {missed}"


def tokens_in(model, x):
    """Patch embed -> [CLS] concat -> + pos_embed (timm modules, no size assertion)."""
    y = model.patch_embed.proj(x).flatten(2).transpose(1, 2)
    y = torch.cat([model.cls_token.expand(y.shape[0], -1, -1), y], dim=1)
    return y


class CaseModel(nn.Module):
    """Wraps a timm ViT and the chosen head; forward returns logits (what Captum attributes)."""

    def __init__(self, vit, head_kind, dino_head=None):
        super().__init__()
        self.vit = vit
        self.head_kind = head_kind
        self.dino_head = dino_head

    def features(self, x):
        if self.head_kind == "cls":
            return self.vit.forward_head(self.vit.forward_features(x), pre_logits=True)
        # DINO get_intermediate_layers(x, 4) with the shared final norm, CLS of each, block order
        v = self.vit
        h = v.patch_embed(x)
        h = v._pos_embed(h)
        h = v.patch_drop(h)
        h = v.norm_pre(h)
        outs = []
        for i, blk in enumerate(v.blocks):
            h = blk(h)
            if i >= len(v.blocks) - 4:
                outs.append(v.norm(h))
        return torch.cat([o[:, 0] for o in outs], dim=-1)

    def forward(self, x):
        if self.head_kind == "cls":
            return self.vit(x)
        return self.dino_head(self.features(x))


# ----------------------------------------------------------------------------------------------
# weight namings
# ----------------------------------------------------------------------------------------------

def backbone_sd(vit):
    return {k: v.detach().clone().contiguous() for k, v in vit.state_dict().items() if not k.startswith("head.")}


def to_hf(sd_backbone, depth, dim, head_w=None, head_b=None, gen=None):
    """timm/DINO backbone names -> HF ViTForImageClassification names (``vit.`` prefix)."""
    out = {
        "embeddings.cls_token": sd_backbone["cls_token"],
        "embeddings.position_embeddings": sd_backbone["pos_embed"],
        "embeddings.patch_embeddings.projection.weight": sd_backbone["patch_embed.proj.weight"],
        "embeddings.patch_embeddings.projection.bias": sd_backbone["patch_embed.proj.bias"],
        "layernorm.weight": sd_backbone["norm.weight"],
        "layernorm.bias": sd_backbone["norm.bias"],
    }
    for i in range(depth):
        b, e = f"blocks.{i}.", f"encoder.layer.{i}."
        qw, qb = sd_backbone[b + "attn.qkv.weight"], sd_backbone[b + "attn.qkv.bias"]
        for j, name in enumerate(["query", "key", "value"]):
            out[e + f"attention.attention.{name}.weight"] = qw[j * dim:(j + 1) * dim].clone().contiguous()
            out[e + f"attention.attention.{name}.bias"] = qb[j * dim:(j + 1) * dim].clone().contiguous()
        pairs = [("norm1", "layernorm_before"), ("attn.proj", "attention.output.dense"),
                 ("norm2", "layernorm_after"), ("mlp.fc1", "intermediate.dense"), ("mlp.fc2", "output.dense")]
        for src, dst in pairs:
            out[e + dst + ".weight"] = sd_backbone[b + src + ".weight"]
            out[e + dst + ".bias"] = sd_backbone[b + src + ".bias"]
    assert len(out) == len(sd_backbone) + 4 * depth  # qkv (2 tensors) -> q,k,v (6)
    out = {"vit." + k: v for k, v in out.items()}
    # a pooler (dense + tanh on CLS) that is not part of DINO: random, must be ignored by loaders
    out["vit.pooler.dense.weight"] = torch.randn(dim, dim, generator=gen) * 0.1
    out["vit.pooler.dense.bias"] = torch.randn(dim, generator=gen) * 0.1
    if head_w is not None:
        out["classifier.weight"] = head_w
        out["classifier.bias"] = head_b
    return out


def from_hf(sd_hf, depth):
    """Inverse of to_hf (used only for the self-check)."""
    sd = {k[len("vit."):]: v for k, v in sd_hf.items() if k.startswith("vit.") and ".pooler." not in k and not k.startswith("vit.pooler.")}
    out = {
        "cls_token": sd["embeddings.cls_token"],
        "pos_embed": sd["embeddings.position_embeddings"],
        "patch_embed.proj.weight": sd["embeddings.patch_embeddings.projection.weight"],
        "patch_embed.proj.bias": sd["embeddings.patch_embeddings.projection.bias"],
        "norm.weight": sd["layernorm.weight"],
        "norm.bias": sd["layernorm.bias"],
    }
    for i in range(depth):
        b, e = f"blocks.{i}.", f"encoder.layer.{i}."
        for t in ["weight", "bias"]:
            out[b + "attn.qkv." + t] = torch.cat([sd[e + f"attention.attention.{n}.{t}"] for n in ["query", "key", "value"]], 0)
            out[b + "norm1." + t] = sd[e + "layernorm_before." + t]
            out[b + "attn.proj." + t] = sd[e + "attention.output.dense." + t]
            out[b + "norm2." + t] = sd[e + "layernorm_after." + t]
            out[b + "mlp.fc1." + t] = sd[e + "intermediate.dense." + t]
            out[b + "mlp.fc2." + t] = sd[e + "output.dense." + t]
    if "classifier.weight" in sd_hf:
        out["head.weight"] = sd_hf["classifier.weight"]
        out["head.bias"] = sd_hf["classifier.bias"]
    return out


def save_st(tensors, path, metadata=None):
    safetensors.torch.save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
    os.chmod(path, 0o644)
    if metadata:
        # safetensors writes __metadata__ in hash-map order; sort it so reruns give identical bytes
        raw = Path(path).read_bytes()
        n = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8:8 + n])
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
        hb = json.dumps(header, separators=(",", ":")).encode()
        hb += b" " * (-len(hb) % 8)
        Path(path).write_bytes(len(hb).to_bytes(8, "little") + hb + raw[8 + n:])
        back = safetensors.torch.load_file(str(path))
        assert all(torch.equal(back[k], v) for k, v in tensors.items())


# ----------------------------------------------------------------------------------------------
# inputs, helpers
# ----------------------------------------------------------------------------------------------

def make_image(h, w, gen):
    """Image-like u8 picture: low-res random colours, bilinear upsampled, plus mild pixel noise."""
    lo = torch.randint(0, 256, (1, 3, max(2, h // 8), max(2, w // 8)), generator=gen).float()
    up = F.interpolate(lo, size=(h, w), mode="bilinear", align_corners=False)
    up = up + torch.randint(-20, 21, (1, 3, h, w), generator=gen).float()
    u8 = up.round().clamp(0, 255).to(torch.uint8)
    x = u8.float() / 255.0
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    x = (x - mean) / std
    return u8[0].permute(1, 2, 0).contiguous().numpy(), x.contiguous()


def black_baseline(h, w):
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return ((torch.zeros(1, 3, 1, 1) - mean) / std).expand(1, 3, h, w).contiguous()


def rel_l2(a, b):
    a = torch.as_tensor(a, dtype=torch.float64)
    b = torch.as_tensor(b, dtype=torch.float64)
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


class Writer:
    def __init__(self, root):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.files = {}

    def npy(self, name, arr, dtype=np.float32, note=""):
        if isinstance(arr, torch.Tensor):
            arr = arr.detach().cpu().numpy()
        arr = np.ascontiguousarray(np.asarray(arr, dtype=dtype))
        np.save(self.root / name, arr)
        self.files[name] = (f"{arr.dtype} {list(arr.shape)}", note)

    def st(self, name, tensors, metadata=None, note=""):
        save_st(tensors, self.root / name, metadata)
        dts = sorted({str(v.dtype).replace("torch.", "") for v in tensors.values()})
        self.files[name] = (f"safetensors {len(tensors)} tensors {'/'.join(dts)}", note)

    def json(self, name, obj, note=""):
        (self.root / name).write_text(json.dumps(obj, indent=2) + "\n")
        self.files[name] = ("json", note)


@contextlib.contextmanager
def injected_normal(noise, stdev):
    """Make Captum's NoiseTunnel add exactly ``noise`` (it calls torch.normal(0, stdev_tensor) once)."""
    orig = torch.normal
    calls = []

    def fake(mean, std, *args, **kwargs):
        assert not args and not kwargs and float(mean) == 0.0
        assert isinstance(std, torch.Tensor) and tuple(std.shape) == tuple(noise.shape), (std.shape, noise.shape)
        assert bool((std == stdev).all())
        calls.append(1)
        return noise.clone() * std  # std is all `stdev` (1.0 here: exact)

    torch.normal = fake
    try:
        yield calls
    finally:
        torch.normal = orig


def run_nt(f, x, target, noise, nt_type, n_steps, with_delta=False):
    nt = NoiseTunnel(IntegratedGradients(f))
    with injected_normal(noise, NT_STDEV) as calls:
        res = nt.attribute(x, nt_type=nt_type, nt_samples=noise.shape[0], stdevs=NT_STDEV, target=target,
                           n_steps=n_steps, method="gausslegendre", return_convergence_delta=with_delta)
    assert len(calls) == 1, f"NoiseTunnel drew noise {len(calls)} times"
    return res


def check_nt_manual(f, x, target, noise, nt_results, n_steps):
    """Recompute NT by hand: IG on each x + eps_j, then Captum's aggregation."""
    ig = IntegratedGradients(f)
    attrs = [ig.attribute(x + noise[j:j + 1], target=target, n_steps=n_steps, method="gausslegendre")
             for j in range(noise.shape[0])]
    s = noise.shape[0]
    e = sum(attrs) / s
    e2 = sum(a * a for a in attrs) / s
    manual = {"smoothgrad": e, "smoothgrad_sq": e2, "vargrad": e2 - e * e}
    errs = {k: rel_l2(nt_results[k], manual[k]) for k in nt_results}
    for k, v in errs.items():
        assert v < 1e-5, f"NT {k} vs manual loop rel-L2 {v}"
    return errs


# ----------------------------------------------------------------------------------------------
# one attribution case
# ----------------------------------------------------------------------------------------------

def gen_case(name, cfg, out_root, full=False):
    print(f"== {name}")
    w = Writer(Path(out_root) / name)
    torch.manual_seed(cfg["seed"])
    gen = torch.Generator().manual_seed(cfg["seed"] + 7)
    vit = build_vit(cfg)
    dim, depth, heads, C = cfg["dim"], cfg["depth"], cfg["heads"], cfg["classes"]
    dino_head = nn.Linear(4 * dim, C).eval() if cfg["head"] == "dino4" else None
    reinit_(vit, dino_head)
    model = CaseModel(vit, cfg["head"], dino_head).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    f = model  # forward_func for Captum: returns logits (B, C)

    H, W = cfg["input_hw"]
    u8, x = make_image(H, W, gen)
    with torch.no_grad():
        logits = f(x)[0]
        feat = model.features(x)[0]
    target = int(logits.argmax())
    srt = logits.sort(descending=True).values
    spread = float(logits.max() - logits.min())
    margin = float(srt[0] - srt[1])
    print(f"   logits {logits.numpy().round(4)} target {target} spread {spread:.3f} margin {margin:.3f}")
    assert spread > 0.3 and margin > 0.2, "logits lack spread / clear winner; change the seed"

    # ---- weights in three namings
    meta = {"num_heads": str(heads), "layer_norm_eps": str(cfg["eps"]), "format": "timm"}
    sd_bb = backbone_sd(vit)
    if cfg["head"] == "cls":
        hw, hb = vit.head.weight.detach().clone(), vit.head.bias.detach().clone()
    else:
        hw, hb = dino_head.weight.detach().clone(), dino_head.bias.detach().clone()
    timm_sd = dict(sd_bb)
    if cfg["head"] == "cls":
        timm_sd["head.weight"], timm_sd["head.bias"] = hw, hb
    w.st("model_timm.safetensors", timm_sd, meta, "timm state_dict" + (" incl. head" if cfg["head"] == "cls" else ", no head"))
    if full:
        hf_sd = None
    else:
        w.st("model_dino.safetensors", sd_bb, None, "DINO naming (== timm backbone), no head, no metadata")
        w.st("head_dino.safetensors", {"module.linear.weight": hw, "module.linear.bias": hb}, None,
             f"head as DINO eval_linear saves it: [{C},{hw.shape[1]}], [{C}]")
        hf_sd = to_hf(sd_bb, depth, dim, hw if cfg["head"] == "cls" else None, hb if cfg["head"] == "cls" else None, gen)
        w.st("model_hf.safetensors", hf_sd, None,
             "HF ViTForImageClassification naming, vit. prefix, q/k/v split, random vit.pooler.dense.* (ignore)"
             + (", classifier.*" if cfg["head"] == "cls" else ", no classifier"))

    # ---- self-check: every naming loads back and gives bit-identical logits
    def logits_from(sd_timm, head_sd=None):
        v2 = build_vit(cfg)
        v2.load_state_dict(sd_timm, strict=True)
        h2 = None
        if cfg["head"] == "dino4":
            h2 = nn.Linear(4 * dim, C).eval()
            h2.load_state_dict(head_sd, strict=True)
        with torch.no_grad():
            return CaseModel(v2, cfg["head"], h2).eval()(x)[0]

    d = w.root
    loaded = safetensors.torch.load_file(str(d / "model_timm.safetensors"))
    dh = None
    if cfg["head"] == "dino4":
        dh = {"weight": hw, "bias": hb}
    if not full:
        hd = safetensors.torch.load_file(str(d / "head_dino.safetensors"))
        hd = {"weight": hd["module.linear.weight"], "bias": hd["module.linear.bias"]}
        if cfg["head"] == "dino4":
            dh = hd
        assert torch.equal(logits_from(loaded, dh), logits)
        dino = safetensors.torch.load_file(str(d / "model_dino.safetensors"))
        if cfg["head"] == "cls":
            dino["head.weight"], dino["head.bias"] = hd["weight"], hd["bias"]
        assert torch.equal(logits_from(dino, dh), logits)
        hf = safetensors.torch.load_file(str(d / "model_hf.safetensors"))
        assert torch.equal(logits_from(from_hf(hf, depth), dh), logits)
        with safetensors.safe_open(str(d / "model_timm.safetensors"), "pt") as fh:
            assert fh.metadata() == meta
        print("   namings timm/dino/hf: identical logits")
    else:
        assert torch.equal(logits_from(loaded, dh), logits)

    if cfg.get("f16"):
        for tag, dt in [("f16", torch.float16), ("bf16", torch.bfloat16)]:
            low = {k: v.to(dt) for k, v in timm_sd.items()}
            w.st(f"model_timm_{tag}.safetensors", low, meta, f"timm file with every tensor cast to {dt}")
            lg = logits_from({k: v.float() for k, v in low.items()})
            w.npy(f"logits_{tag}.npy", lg, note=f"logits of the {tag}-rounded weights, computed in f32")
            print(f"   logits_{tag} {lg.numpy().round(4)}")

    w.npy("input_u8.npy", u8, np.uint8, "the u8 HWC picture that input.npy normalises (/255, ImageNet mean/std)")
    w.npy("input.npy", x, note="(1,3,H,W) normalised input")
    w.npy("logits.npy", logits, note="(C,) logits")
    w.npy("cls_feature.npy", feat, note="final-normed CLS (dim,), for dino4 the (4*dim,) concat")

    # ---- last-block taps
    with torch.no_grad():
        h = tokens_in(vit, x) + vit.pos_embed
        for blk in vit.blocks[:-1]:
            h = blk(h)
        last = vit.blocks[-1]
        T = h.shape[1]
        hd_ = dim // heads
        qkv = last.attn.qkv(last.norm1(h)).reshape(1, T, 3, heads, hd_).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0, 0], qkv[1, 0], qkv[2, 0]
        attn = torch.softmax((q * last.attn.scale) @ k.transpose(-2, -1), dim=-1)
        o = (attn @ v).transpose(0, 1).reshape(1, T, dim)
        h_mid = h + last.attn.proj(o)
        h_out = h_mid + last.mlp(last.norm2(h_mid))
        ref_out = last(h)
        assert rel_l2(h_out, ref_out) < 1e-6, "manual last-block recomputation differs"
        if cfg["head"] == "cls":
            assert rel_l2(vit.norm(ref_out)[0, 0], feat) < 1e-6
        ent = float(-(attn * attn.clamp_min(1e-30).log()).sum(-1).mean())
        print(f"   last attn mean entropy {ent:.3f} (uniform {np.log(T):.3f}); token std {float(ref_out.std()):.3f}")
    w.npy("last_q.npy", q, note="(heads,T,head_dim) q of the last block (from LN1 of its input)")
    w.npy("last_k.npy", k, note="(heads,T,head_dim)")
    w.npy("last_v.npy", v, note="(heads,T,head_dim)")
    w.npy("last_attn.npy", attn, note="(heads,T,T) softmax(q k^T * head_dim^-0.5)")
    w.npy("last_tokens.npy", ref_out[0], note="(T,dim) last block output before the final norm")

    # ---- input gradients
    gin = torch.cat([x * 0.3, x * 0.7, x * 1.0], 0).requires_grad_(True)
    (g,) = torch.autograd.grad(f(gin)[:, target].sum(), gin)
    w.npy("grad_inputs.npy", gin, note="(3,3,H,W) = input*0.3, input*0.7, input*1.0")
    w.npy("grad.npy", g, note="(3,3,H,W) d(sum_b logits[b,target])/d(input)")

    cfg_json = {k: cfg[k] for k in ["patch", "dim", "depth", "heads", "eps", "classes", "head"]}
    cfg_json.update({
        "img_hw": list(cfg["img_hw"]), "input_hw": [H, W], "target": target, "seed": cfg["seed"],
        "mlp_ratio": 4, "qkv_bias": True, "normalize": {"mean": IMAGENET_MEAN, "std": IMAGENET_STD},
    })

    ig = IntegratedGradients(f)
    if full:
        steps = 4
        a, dlt = ig.attribute(x, target=target, n_steps=steps, method="gausslegendre", return_convergence_delta=True)
        w.npy("ig_gausslegendre.npy", a, note=f"IG gausslegendre n_steps={steps}")
        w.npy("ig_gausslegendre_delta.npy", dlt, note="(1,) convergence delta")
        S, nt_steps = 2, 4
        torch.manual_seed(cfg["seed"] + 100)
        noise = torch.randn(S, 3, H, W) * NT_STDEV
        w.npy("noise.npy", noise, note=f"(S={S},3,H,W) NoiseTunnel noise, stdev {NT_STDEV}")
        res, nd = run_nt(f, x, target, noise, "smoothgrad", nt_steps, with_delta=True)
        w.npy("nt_smoothgrad.npy", res, note=f"NT smoothgrad, {S} samples, IG gausslegendre n_steps={nt_steps}")
        w.npy("nt_smoothgrad_delta.npy", nd, note="(S,) per-sample deltas")
        cfg_json.update({"ig_steps": {"ig": steps, "nt": nt_steps}, "nt_samples": S, "nt_steps": nt_steps,
                         "nt_stdev": NT_STDEV, "versions": VERSIONS})
        w.json("config.json", cfg_json)
        print(f"   IG delta {float(dlt[0]):.3e}")
        return w, cfg_json

    # ---- IG, all methods
    with torch.no_grad():
        f0 = float(f(torch.zeros_like(x))[0, target])
    gap = float(logits[target]) - f0
    deltas = {}
    for m in IG_METHODS:
        a, dlt = ig.attribute(x, target=target, n_steps=IG_STEPS, method=m, return_convergence_delta=True)
        w.npy(f"ig_{m}.npy", a, note=f"IG {m}, n_steps={IG_STEPS}, baseline 0")
        w.npy(f"ig_{m}_delta.npy", dlt, note="(1,) sum(attr) - (f(x)-f(0))")
        deltas[m] = float(dlt[0])
        # completeness, checked independently of captum's delta
        comp = float(a.double().sum()) - gap
        assert abs(comp - deltas[m]) < 1e-4 * max(1.0, abs(gap)), (comp, deltas[m])
    print(f"   f(x)-f(0) = {gap:.4f}; IG deltas " + ", ".join(f"{k}={v:.2e}" for k, v in deltas.items()))
    assert abs(deltas["gausslegendre"]) < 0.05 * max(1.0, abs(gap)), "gausslegendre IG far from complete"

    a = ig.attribute(x, target=target, n_steps=IG_STEPS, method="gausslegendre", internal_batch_size=IBS)
    w.npy("ig_gausslegendre_ibs5.npy", a, note=f"IG gausslegendre n_steps={IG_STEPS}, internal_batch_size={IBS}")
    assert rel_l2(a, np.load(d / "ig_gausslegendre.npy")) < 1e-5

    a = IntegratedGradients(f, multiply_by_inputs=False).attribute(x, target=target, n_steps=IG_STEPS, method="gausslegendre")
    w.npy("ig_gausslegendre_nomul.npy", a, note="IG gausslegendre, multiply_by_inputs=False")
    assert rel_l2(a * x, np.load(d / "ig_gausslegendre.npy")) < 1e-5

    blk = black_baseline(H, W)
    a, dlt = ig.attribute(x, baselines=blk, target=target, n_steps=IG_STEPS, method="gausslegendre", return_convergence_delta=True)
    w.npy("ig_black.npy", a, note="IG gausslegendre, baseline = black image in normalised space ((0-mean)/std)")
    w.npy("ig_black_delta.npy", dlt, note="(1,)")

    bc = torch.randn(1, 3, H, W, generator=gen) * 0.5
    w.npy("baseline_custom.npy", bc, note="(1,3,H,W) N(0,0.5) baseline")
    a = ig.attribute(x, baselines=bc, target=target, n_steps=IG_STEPS, method="gausslegendre")
    w.npy("ig_custom.npy", a, note="IG gausslegendre, baseline = baseline_custom.npy")

    # ---- NoiseTunnel with injected noise
    torch.manual_seed(cfg["seed"] + 100)
    noise = torch.randn(NT_SAMPLES, 3, H, W) * NT_STDEV
    w.npy("noise.npy", noise, note=f"(S={NT_SAMPLES},3,H,W) noise NT adds (example-major), stdev {NT_STDEV}")
    nt_res = {}
    for t in NT_TYPES:
        if t == "smoothgrad":
            r, nd = run_nt(f, x, target, noise, t, NT_STEPS, with_delta=True)
            w.npy("nt_smoothgrad_delta.npy", nd, note="(S,) per-sample IG deltas (concatenated, not averaged)")
        else:
            r = run_nt(f, x, target, noise, t, NT_STEPS)
        nt_res[t] = r
        w.npy(f"nt_{t}.npy", r, note=f"NT {t}, {NT_SAMPLES} samples, stdev {NT_STDEV}, IG gausslegendre n_steps={NT_STEPS}")
    errs = check_nt_manual(f, x, target, noise, nt_res, NT_STEPS)
    # the same noise is what Captum draws natively after torch.manual_seed(seed+100) (CPU generator)
    torch.manual_seed(cfg["seed"] + 100)
    native = NoiseTunnel(IntegratedGradients(f)).attribute(
        x, nt_type="smoothgrad", nt_samples=NT_SAMPLES, stdevs=NT_STDEV, target=target, n_steps=NT_STEPS, method="gausslegendre")
    assert torch.equal(native, nt_res["smoothgrad"]), "native NT draw differs from injected noise"
    print("   NT vs manual loop rel-L2: " + ", ".join(f"{k}={v:.1e}" for k, v in errs.items())
          + "; native seeded NT == injected: True")

    cfg_json.update({
        "ig_steps": {"ig": IG_STEPS, "ig_internal_batch_size": IBS, "nt": NT_STEPS},
        "nt_samples": NT_SAMPLES, "nt_steps": NT_STEPS, "nt_stdev": NT_STDEV,
        "ig_deltas": deltas, "versions": VERSIONS,
    })
    w.json("config.json", cfg_json)
    return w, cfg_json


# ----------------------------------------------------------------------------------------------
# positional-embedding interpolation case
# ----------------------------------------------------------------------------------------------

def gen_posembed(out_root):
    cfg = POSEMBED_CASE
    print("== posembed")
    w = Writer(Path(out_root) / "posembed")
    torch.manual_seed(cfg["seed"])
    gen = torch.Generator().manual_seed(cfg["seed"] + 7)
    vit = build_vit(cfg)
    reinit_(vit, None)
    D, p = cfg["dim"], cfg["patch"]
    gh0, gw0 = cfg["img_hw"][0] // p, cfg["img_hw"][1] // p
    H, W = cfg["input_hw"]
    gh, gw = H // p, W // p
    u8, x = make_image(H, W, gen)
    pe = vit.pos_embed.detach()
    cls_pos, patch_pos = pe[:, :1], pe[:, 1:]
    grid = patch_pos.reshape(1, gh0, gw0, D).permute(0, 3, 1, 2)

    def back(g):
        assert tuple(g.shape[-2:]) == (gh, gw), g.shape
        return torch.cat([cls_pos, g.permute(0, 2, 3, 1).reshape(1, gh * gw, D)], dim=1)

    modes = {
        # DINO interpolate_pos_encoding: +0.1, scale_factor, recompute_scale_factor left at default
        "dino": back(F.interpolate(grid, scale_factor=((gh + 0.1) / gh0, (gw + 0.1) / gw0), mode="bicubic",
                                   align_corners=False)),
        "hf": back(F.interpolate(grid, size=(gh, gw), mode="bicubic", align_corners=False)),
        "timm": resample_abs_pos_embed(pe, new_size=(gh, gw), num_prefix_tokens=1),
    }

    def fwd(pos):
        with torch.no_grad():
            h = tokens_in(vit, x) + pos
            for blk in vit.blocks:
                h = blk(h)
            return vit.head(vit.norm(h)[:, 0])[0]

    meta = {"num_heads": str(cfg["heads"]), "layer_norm_eps": str(cfg["eps"]), "format": "timm"}
    w.st("model_timm.safetensors", {k: v.detach().clone() for k, v in vit.state_dict().items()}, meta,
         f"timm state_dict incl. head, built for {cfg['img_hw']} (pos_embed (1,{1 + gh0 * gw0},{D}))")
    w.npy("input_u8.npy", u8, np.uint8, "u8 HWC picture behind input.npy")
    w.npy("input.npy", x, note=f"(1,3,{H},{W}) normalised input ({gh}x{gw} grid)")
    res = {}
    for m, pos in modes.items():
        assert pos.shape == (1, 1 + gh * gw, D)
        lg = fwd(pos)
        res[m] = lg
        w.npy(f"posembed_{m}.npy", pos, note=f"(1,{1 + gh * gw},{D}) pos_embed interpolated the {m} way")
        w.npy(f"logits_{m}.npy", lg, note="(C,) logits with that pos_embed")
    # timm's own run-time path must agree with the manual timm-mode forward
    dyn = build_vit(cfg, dynamic_img_size=True)
    dyn.load_state_dict(vit.state_dict())
    with torch.no_grad():
        assert rel_l2(dyn(x)[0], res["timm"]) < 1e-6
    diffs = {f"{a}-{b}": float((modes[a] - modes[b]).abs().max()) for a, b in [("dino", "hf"), ("dino", "timm"), ("hf", "timm")]}
    print("   logits " + "; ".join(f"{m}={v.numpy().round(4)}" for m, v in res.items()))
    print("   pos max-abs differences " + ", ".join(f"{k}={v:.3f}" for k, v in diffs.items()))
    assert min(diffs.values()) > 1e-3, "interpolation modes are not distinguishable"
    cfg_json = {k: cfg[k] for k in ["patch", "dim", "depth", "heads", "eps", "classes", "head"]}
    cfg_json.update({"img_hw": list(cfg["img_hw"]), "input_hw": [H, W], "grid_model": [gh0, gw0],
                     "grid_input": [gh, gw], "modes": list(modes), "seed": cfg["seed"], "mlp_ratio": 4,
                     "target": int(res["timm"].argmax()), "versions": VERSIONS})
    w.json("config.json", cfg_json)
    return w, cfg_json


def gen_quadrature(out_root):
    w = Writer(Path(out_root) / "quadrature")
    n = 50
    for m in IG_METHODS:
        step_fn, alpha_fn = approximation_parameters(m)
        w.npy(f"alphas_{m}_50.npy", np.array(alpha_fn(n), dtype=np.float64), np.float64, f"captum alphas, {m}, n=50")
        w.npy(f"steps_{m}_50.npy", np.array(step_fn(n), dtype=np.float64), np.float64, f"captum step sizes, {m}, n=50")
    al = np.load(w.root / "alphas_gausslegendre_50.npy")
    assert abs(al[0] - 0.0005667977899644905) < 1e-15
    return w


# ----------------------------------------------------------------------------------------------
# README
# ----------------------------------------------------------------------------------------------

def write_readme(root, writers, configs, cmd):
    L = []
    L.append("# Engine reference fixtures (PyTorch / timm / Captum)\n")
    L.append("Generated by `tools/gen_engine.py`; do not edit by hand. Regenerate with\n")
    L.append("```\n" + cmd + "\n```\n")
    L.append("Versions: " + ", ".join(f"{k} {v}" for k, v in VERSIONS.items())
             + f"; torch threads {torch.get_num_threads()}; CPU; TIMM_FUSED_ATTN=0 (explicit softmax attention); "
               "cudnn/cuda TF32 off; float32 everywhere; model.eval().\n")
    L.append("## Tolerances used by the Rust tests\n")
    L.append("rel = |a-b|/|b| elementwise-max for logits, rel-L2 = ||a-b||_2/||b||_2 for arrays.\n")
    L.append("| quantity | tolerance |\n|---|---|\n| logits (incl. f16/bf16, pos-embed modes) | rel err <= 1e-5 |\n"
             "| input gradients (`grad.npy`) | rel-L2 <= 1e-4 |\n| IG (`ig_*.npy`) | rel-L2 <= 1e-4 |\n"
             "| NoiseTunnel (`nt_*.npy`) | rel-L2 <= 1e-4 |\n| interpolated pos-embed (`posembed_*.npy`) | rel-L2 <= 1e-5 |\n"
             "| taps (`last_*.npy`), `cls_feature.npy` | rel-L2 <= 1e-5 |\n"
             "| convergence deltas | abs <= 1e-4 * max(1, |f(x)-f(0)|) (they are differences of large numbers) |\n")
    L.append("## Conventions\n")
    L.append(
        "* Every model is a timm `VisionTransformer(img_size, patch_size, embed_dim, depth, num_heads, mlp_ratio=4, "
        "qkv_bias=True, num_classes, global_pool='token', class_token=True, norm_layer=partial(nn.LayerNorm, eps))` "
        "with all parameters re-drawn at random (seed per case): linear/conv weights N(0, g/sqrt(fan_in)) with g = 1.5 for qkv, g = 1 for "
        "fc1 and heads, g = 0.5 for patch-embed, proj and fc2; biases N(0, 0.1); LayerNorm gamma 1+N(0,0.2), beta "
        "N(0,0.1); cls_token and pos_embed N(0, 0.5). Exact-erf GELU, no LayerScale, no register tokens.\n"
        "* Dims are smaller than ViT-S (to keep the folder < 4 MB); the real size is covered by `--full` (not committed).\n"
        "* `input.npy` = (u8/255 - ImageNet mean)/ImageNet std of `input_u8.npy` (H,W,3 uint8).\n"
        "* `target` in config.json is the argmax of `logits.npy`; every attribution uses it.\n"
        "* IG: `captum.attr.IntegratedGradients(forward_func)`, baseline default (integer 0) unless noted, "
        "`return_convergence_delta=True` where a `_delta` file exists.\n"
        "* NoiseTunnel: `NoiseTunnel(IntegratedGradients(f)).attribute(x, nt_type, nt_samples=S, stdevs=1.0, "
        "target, n_steps=nt_steps, method='gausslegendre')`, one partition (nt_samples_batch_size=None). "
        "The noise Captum added is `noise.npy` (S,3,H,W), example-major: it was injected by replacing `torch.normal` "
        "during the call (asserted to be called exactly once with the expected shape and stdev). It also equals "
        "what Captum draws natively after `torch.manual_seed(seed+100)` on the CPU (checked: bit-identical result). "
        "The NT results were re-derived by a manual loop IG(x+noise_j) + Captum's aggregation (rel-L2 < 1e-5).\n"
        "* Weight files: `model_timm.safetensors` has metadata {num_heads, layer_norm_eps, format: timm}; the DINO and "
        "HF files have no metadata. The HF file prefixes every backbone key with `vit.`, splits qkv rows [Q|K|V] into "
        "query/key/value and adds a random `vit.pooler.dense.{weight,bias}` that loaders must ignore; CLS-head cases "
        "store the head as `classifier.{weight,bias}`. `head_dino.safetensors` holds `module.linear.{weight,bias}`. "
        "All namings were loaded back into timm by the generator and give bit-identical logits.\n"
        "* `dino4` head: Linear(4*dim, C) on concat(norm(out_b)[:,0] for the last 4 blocks b, block order) "
        "(DINO eval_linear, n_last_blocks=4, shared final norm); the timm file has no head for it.\n"
        "* Taps: q/k/v = qkv(norm1(h)) of the last block split per head (heads,T,head_dim); attn = "
        "softmax(q*head_dim^-0.5 @ k^T); last_tokens = last block output before the final norm.\n")
    L.append("## Files\n")
    for w, cj in zip(writers, configs):
        rel = w.root.name
        L.append(f"### `{rel}/`\n")
        if cj is not None:
            summ = {k: cj[k] for k in cj if k not in ("versions", "normalize", "ig_deltas")}
            L.append("config: `" + json.dumps(summ) + "`\n")
        L.append("| file | type / shape | content |\n|---|---|---|")
        for fn, (shape, note) in w.files.items():
            L.append(f"| `{fn}` | {shape} | {note} |")
        L.append("")
    L.append("## Seeds\n")
    L.append("Per case: `torch.manual_seed(seed)` before building/initialising the model, a `torch.Generator` "
             "seeded seed+7 for the image, the custom baseline and the HF pooler, `torch.manual_seed(seed+100)` "
             "right before drawing the NT noise with `torch.randn`. Seeds: "
             + ", ".join(f"{k} {v['seed']}" for k, v in CASES.items()) + f", posembed {POSEMBED_CASE['seed']}, "
             f"full {FULL_CASE['seed']}.\n")
    (Path(root) / "README.md").write_text("\n".join(L) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "engine"))
    ap.add_argument("--full", action="store_true", help="also write the full ViT-S/16 reference (not committed)")
    ap.add_argument("--full-out", default="/tmp/explainseg_full")
    args = ap.parse_args()
    print("versions:", VERSIONS, "threads:", torch.get_num_threads())

    out = Path(args.out)
    for sub in list(CASES) + ["posembed", "quadrature"]:
        if (out / sub).exists():
            shutil.rmtree(out / sub)
    writers, configs = [], []
    for name, cfg in CASES.items():
        w, cj = gen_case(name, cfg, out)
        writers.append(w)
        configs.append(cj)
    w, cj = gen_posembed(out)
    writers.append(w)
    configs.append(cj)
    writers.append(gen_quadrature(out))
    configs.append(None)
    write_readme(out, writers, configs, "TIMM_FUSED_ATTN=0 python tools/gen_engine.py")

    if args.full:
        fo = Path(args.full_out)
        if (fo / "vits16").exists():
            shutil.rmtree(fo / "vits16")
        w, cj = gen_case("vits16", FULL_CASE, fo, full=True)
        write_readme(fo, [w], [cj], "TIMM_FUSED_ATTN=0 python tools/gen_engine.py --full --full-out " + str(fo))
        print("full fixture written to", fo / "vits16")
    print("done:", out)


if __name__ == "__main__":
    main()
