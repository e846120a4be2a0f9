//! The model's tensors under their timm names, with shapes: what checkpoints
//! store and what the optimizer updates.

use super::param_grad::{block_tensors, block_tensors_mut};
use crate::model::{LinearHead, Vit};

/// Shape of a timm tensor of `vit` by name (backbone and head).
fn shape_of(vit: &Vit, name: &str, len: usize) -> Vec<usize> {
    let c = &vit.config;
    let (d, hidden, p) = (c.dim, c.mlp_hidden, c.patch);
    match name {
        "patch_embed.proj.weight" => vec![d, 3, p, p],
        "cls_token" => vec![1, 1, d],
        "pos_embed" => vec![1, c.pos_patches + 1, d],
        n if n.ends_with("qkv.weight") => vec![3 * d, d],
        n if n.ends_with("proj.weight") => vec![d, d],
        n if n.ends_with("fc1.weight") => vec![hidden, d],
        n if n.ends_with("fc2.weight") => vec![d, hidden],
        _ => vec![len],
    }
}

/// Every tensor (backbone, then head if any) as (timm name, shape, data).
pub fn named_tensors(vit: &Vit) -> Vec<(String, Vec<usize>, &[f32])> {
    let w = &vit.weights;
    let mut out: Vec<(String, &Vec<f32>)> = vec![
        ("patch_embed.proj.weight".into(), &w.patch_w),
        ("patch_embed.proj.bias".into(), &w.patch_b),
        ("cls_token".into(), &w.cls_token),
        ("pos_embed".into(), &w.pos_embed),
    ];
    for (i, b) in w.blocks.iter().enumerate() {
        for (name, t) in block_tensors(b) {
            out.push((format!("blocks.{i}.{name}"), t));
        }
    }
    out.push(("norm.weight".into(), &w.norm_w));
    out.push(("norm.bias".into(), &w.norm_b));
    if let Some(h) = &vit.head {
        out.push(("head.weight".into(), &h.weight));
        out.push(("head.bias".into(), &h.bias));
    }
    out.into_iter()
        .map(|(n, t)| {
            let mut shape = shape_of(vit, &n, t.len());
            if n == "head.weight" {
                let classes = vit.head.as_ref().map_or(1, |h: &LinearHead| h.classes);
                shape = vec![classes, t.len() / classes];
            }
            (n, shape, t.as_slice())
        })
        .collect()
}

/// Mutable access to every tensor by timm name (backbone, then head).
pub fn named_tensors_mut(vit: &mut Vit) -> Vec<(String, &mut Vec<f32>)> {
    let w = &mut vit.weights;
    let mut out: Vec<(String, &mut Vec<f32>)> = vec![
        ("patch_embed.proj.weight".into(), &mut w.patch_w),
        ("patch_embed.proj.bias".into(), &mut w.patch_b),
        ("cls_token".into(), &mut w.cls_token),
        ("pos_embed".into(), &mut w.pos_embed),
    ];
    for (i, b) in w.blocks.iter_mut().enumerate() {
        for (name, t) in block_tensors_mut(b) {
            out.push((format!("blocks.{i}.{name}"), t));
        }
    }
    out.push(("norm.weight".into(), &mut w.norm_w));
    out.push(("norm.bias".into(), &mut w.norm_b));
    if let Some(h) = &mut vit.head {
        out.push(("head.weight".into(), &mut h.weight));
        out.push(("head.bias".into(), &mut h.bias));
    }
    out
}
