//! DINO's initialisation of a ViT trained from scratch (its
//! `VisionTransformer._init_weights` and `trunc_normal_` calls): linear weights,
//! the CLS token and the positional table N(0, 0.02²) (the truncation at ±2
//! never bites at that scale), linear biases 0, LayerNorms γ = 1, β = 0, and the
//! patch convolution as PyTorch's `Conv2d` default, U(±1/√fan_in) for weight
//! and bias. The small CLS token and positions matter: with larger ones the CLS
//! output of an untrained network hardly depends on the image, and the DINO
//! targets start (and stay) uniform.

use crate::model::Vit;
use crate::rng::{standard_normal, Rng};
use crate::train::params::named_tensors_mut;
use crate::train::stream_key;

/// Re-initialises every backbone tensor of `vit` as DINO does, seeded.
pub fn dino_init(vit: &mut Vit, seed: u64) {
    let fan_in = 3 * vit.config.patch * vit.config.patch;
    let bound = 1.0 / (fan_in as f32).sqrt();
    let mut r = Rng::stream(seed, &[stream_key::INIT, 2]);
    for (name, t) in named_tensors_mut(vit) {
        if name.starts_with("head.") {
            continue;
        }
        let key = r.next_u64();
        let is_norm = name.ends_with("norm.weight")
            || name.ends_with("norm1.weight")
            || name.ends_with("norm2.weight");
        if name.starts_with("patch_embed.") {
            t.iter_mut().for_each(|v| *v = r.range(-bound, bound));
        } else if is_norm {
            t.fill(1.0);
        } else if name.ends_with(".bias") {
            t.fill(0.0);
        } else {
            t.iter_mut()
                .enumerate()
                .for_each(|(i, v)| *v = (0.02 * standard_normal(key, i as u64)) as f32);
        }
    }
    vit.clear_pos_cache();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::arch_config;

    #[test]
    fn scales_follow_dino() {
        let mut vit = Vit::random(arch_config("custom:1,32,2,8", 16).unwrap(), 2, 0);
        dino_init(&mut vit, 3);
        let w = &vit.weights;
        let std = |v: &[f32]| (v.iter().map(|x| x * x).sum::<f32>() / v.len() as f32).sqrt();
        assert!((std(&w.blocks[0].qkv_w) - 0.02).abs() < 0.002);
        assert!(std(&w.cls_token) < 0.04 && std(&w.pos_embed) < 0.03);
        assert!(w.blocks[0].qkv_b.iter().all(|&b| b == 0.0));
        assert!(w.norm_w.iter().all(|&g| g == 1.0));
        let bound = 1.0 / (3.0f32 * 64.0).sqrt();
        assert!(
            w.patch_w.iter().all(|v| v.abs() <= bound)
                && std(&w.patch_w) > 0.5 * bound / 3f32.sqrt()
        );
    }
}
