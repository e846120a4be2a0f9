//! Randomly initialised ViTs (seeded), for benchmarks and tests that need a model
//! of a real size without weight files.

use super::config::{PosEmbedMode, VitConfig};
use super::head::{HeadKind, LinearHead};
use super::vit::Vit;
use super::weights::{BlockWeights, VitWeights};
use crate::rng::gaussian_noise;

impl VitConfig {
    /// ViT-Ti/S/B at the given patch, trained at `img`×`img` (e.g. 224).
    pub fn standard(size: &str, patch: usize, img: usize) -> Option<VitConfig> {
        let (dim, heads) = match size {
            "ti" | "tiny" => (192, 3),
            "s" | "small" => (384, 6),
            "b" | "base" => (768, 12),
            _ => return None,
        };
        let g = img / patch;
        Some(VitConfig {
            patch,
            dim,
            depth: 12,
            heads,
            mlp_hidden: 4 * dim,
            eps: 1e-6,
            pos_grid: Some((g, g)),
            pos_patches: g * g,
        })
    }
}

impl Vit {
    /// A model with N(0, σ²) weights (σ = 0.5/√fan_in; LayerNorm γ = 1, β = 0) and a
    /// linear CLS head of `classes` outputs.
    pub fn random(config: VitConfig, classes: usize, seed: u64) -> Vit {
        let mut stream = 0usize;
        let mut draw = |len: usize, fan_in: usize| {
            stream += 1;
            gaussian_noise(seed, stream, len, 0.5 / (fan_in as f32).sqrt())
        };
        let (d, h, p) = (config.dim, config.mlp_hidden, config.patch);
        let blocks = (0..config.depth)
            .map(|_| BlockWeights {
                norm1_w: vec![1.0; d],
                norm1_b: vec![0.0; d],
                qkv_w: draw(3 * d * d, d),
                qkv_b: draw(3 * d, d),
                proj_w: draw(d * d, d),
                proj_b: draw(d, d),
                norm2_w: vec![1.0; d],
                norm2_b: vec![0.0; d],
                fc1_w: draw(h * d, d),
                fc1_b: draw(h, d),
                fc2_w: draw(d * h, h),
                fc2_b: draw(d, h),
            })
            .collect();
        let weights = VitWeights {
            patch_w: draw(d * 3 * p * p, 3 * p * p),
            patch_b: draw(d, 1),
            cls_token: draw(d, 1),
            pos_embed: draw((config.pos_patches + 1) * d, 1),
            blocks,
            norm_w: vec![1.0; d],
            norm_b: vec![0.0; d],
        };
        let head = LinearHead {
            kind: HeadKind::Cls,
            classes,
            weight: draw(classes * d, d),
            bias: vec![0.0; classes],
        };
        Vit::from_parts(config, weights, Some(head), PosEmbedMode::default())
    }
}
