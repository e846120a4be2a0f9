//! The ViT hyper-parameters, inferred from tensor shapes and file metadata.

use crate::error::{Error, Result};

/// How the learned positional embedding is resized for an input whose patch grid
/// differs from the one it was trained at (docs/method.md §2.4; the three libraries differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PosEmbedMode {
    /// DINO `interpolate_pos_encoding`: bicubic (A = −0.75) with scale factor
    /// (g + 0.1)/g0 used for the coordinates. The paper's backbone is DINO.
    #[default]
    Dino,
    /// timm `resample_abs_pos_embed`: antialiased bicubic (a = −0.5), PIL-style.
    Timm,
    /// Hugging Face ViT: bicubic (A = −0.75) to the target size, scale = in/out.
    Hf,
}

impl std::str::FromStr for PosEmbedMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "dino" => Ok(PosEmbedMode::Dino),
            "timm" => Ok(PosEmbedMode::Timm),
            "hf" | "huggingface" => Ok(PosEmbedMode::Hf),
            other => Err(Error::param(
                "pos_embed_mode",
                format!("`{other}` is not one of dino, timm, hf"),
            )),
        }
    }
}

/// Architecture of a plain pre-norm ViT with a class token (DINO, timm, HF).
#[derive(Debug, Clone, PartialEq)]
pub struct VitConfig {
    /// Patch side in pixels (8 or 16 for the DINO models).
    pub patch: usize,
    /// Embedding width D.
    pub dim: usize,
    /// Number of transformer blocks.
    pub depth: usize,
    /// Attention heads; D must be divisible by it.
    pub heads: usize,
    /// Hidden width of the MLP (4·D for all standard configs).
    pub mlp_hidden: usize,
    /// LayerNorm epsilon (1e-6 for DINO/timm; HF configs often say 1e-12).
    pub eps: f32,
    /// Patch grid (rows, cols) the stored positional embedding was trained at, if
    /// known. Square tables are inferred; non-square ones need metadata or a flag.
    pub pos_grid: Option<(usize, usize)>,
    /// Number of patch positions in the stored positional embedding.
    pub pos_patches: usize,
}

impl VitConfig {
    /// Per-head width D / heads.
    pub fn head_dim(&self) -> usize {
        self.dim / self.heads
    }

    /// Attention logit scale head_dim^−½ (0.125 exactly for 64-wide heads).
    pub fn attn_scale(&self) -> f32 {
        (self.head_dim() as f32).powf(-0.5)
    }

    /// The conventional name (ViT-Ti/S/B/L) if the width matches one, e.g. "ViT-S/16".
    pub fn name(&self) -> String {
        let size = match (self.dim, self.depth) {
            (192, 12) => "Ti",
            (384, 12) => "S",
            (768, 12) => "B",
            (1024, 24) => "L",
            _ => {
                return format!(
                    "ViT(dim {}, depth {}, heads {})/{}",
                    self.dim, self.depth, self.heads, self.patch
                )
            }
        };
        format!("ViT-{size}/{}", self.patch)
    }

    /// Checks that an input of `height`×`width` pixels fits this model and returns
    /// its patch grid (rows, cols).
    ///
    /// # Errors
    /// [`Error::InvalidParam`] when a side is not a positive multiple of the patch.
    pub fn grid_for(&self, height: usize, width: usize) -> Result<(usize, usize)> {
        let p = self.patch;
        if height == 0 || width == 0 || !height.is_multiple_of(p) || !width.is_multiple_of(p) {
            return Err(Error::param(
                "input size",
                format!("{height}×{width} is not a positive multiple of the patch size {p}"),
            ));
        }
        let grid = (height / p, width / p);
        // Tokens (patches + CLS) bound the attention buffers (batch·heads·T²).
        crate::limits::check_product("tokens", &[grid.0 as u64, grid.1 as u64])
            .and_then(|n| crate::limits::check("tokens", n.saturating_add(1)))?;
        Ok(grid)
    }

    pub(crate) fn validate(&self) -> Result<()> {
        for (name, v) in [
            ("embedding width", self.dim),
            ("patch size", self.patch),
            ("mlp hidden width", self.mlp_hidden),
            ("positional patches", self.pos_patches),
        ] {
            if v == 0 {
                return Err(Error::param("model", format!("{name} is 0")));
            }
        }
        if self.heads == 0 || !self.dim.is_multiple_of(self.heads) {
            return Err(Error::param(
                "num_heads",
                format!("{} heads do not divide the width {}", self.heads, self.dim),
            ));
        }
        if !(self.eps > 0.0 && self.eps.is_finite()) {
            return Err(Error::param(
                "layer_norm_eps",
                format!("{} is not a positive number", self.eps),
            ));
        }
        if self.depth == 0 {
            return Err(Error::param(
                "depth",
                "the file holds no transformer blocks",
            ));
        }
        if let Some((r, c)) = self.pos_grid {
            if r.checked_mul(c) != Some(self.pos_patches) {
                return Err(Error::param(
                    "pos_grid",
                    format!(
                        "{r}×{c} does not match the {} stored patch positions",
                        self.pos_patches
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Multiply-accumulates of one forward pass at `tokens` tokens (docs/method.md §10).
    pub fn forward_macs(&self, tokens: usize) -> u64 {
        let (n, d, h) = (tokens as u64, self.dim as u64, self.mlp_hidden as u64);
        let patch = (n - 1) * d * 3 * (self.patch as u64).pow(2);
        let block = n * d * 3 * d + 2 * n * n * d + n * d * d + 2 * n * d * h;
        patch + self.depth as u64 * block
    }

    /// Multiply-accumulates of one input-gradient backward pass (no weight grads).
    pub fn backward_macs(&self, tokens: usize) -> u64 {
        let (n, d) = (tokens as u64, self.dim as u64);
        // Attention matmuls need both operand gradients: twice their forward cost.
        self.forward_macs(tokens) + self.depth as u64 * 2 * n * n * d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vit_s16() -> VitConfig {
        VitConfig {
            patch: 16,
            dim: 384,
            depth: 12,
            heads: 6,
            mlp_hidden: 1536,
            eps: 1e-6,
            pos_grid: Some((14, 14)),
            pos_patches: 196,
        }
    }

    #[test]
    fn flop_counts_match_the_published_table() {
        // docs/method.md §10: forward 4,598,498,304 MAC; backward 4,956,162,048 MAC at 197 tokens.
        let c = vit_s16();
        assert_eq!(c.forward_macs(197), 4_598_498_304);
        assert_eq!(c.backward_macs(197), 4_956_162_048);
        assert_eq!(c.attn_scale(), 0.125);
        assert_eq!(c.name(), "ViT-S/16");
    }

    #[test]
    fn grid_rejects_non_multiples() {
        let c = vit_s16();
        assert_eq!(c.grid_for(224, 160).unwrap(), (14, 10));
        assert!(c.grid_for(225, 224).is_err());
        assert!(c.grid_for(0, 224).is_err());
    }
}
