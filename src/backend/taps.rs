//! What feature maps, TokenCut and MaskCut read from one image's forward pass at
//! one block, in the same layout on every backend.

use ndarray::{Array2, Array3};

use crate::error::{Error, Result};

/// One of the block's attention projections (the thirds of the fused qkv).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Facet {
    Query,
    Key,
    Value,
}

/// The activations of one block of one image's forward pass.
#[derive(Debug, Clone)]
pub struct BlockTaps {
    /// Patch grid (rows, cols); tokens = rows·cols + 1 (CLS first).
    pub grid: (usize, usize),
    pub heads: usize,
    /// Width D of the tokens.
    pub dim: usize,
    /// The block's q, k, v from LN1 of its input: (tokens, 3·D), heads inside each
    /// third (h·head_dim + d), as timm's fused qkv projection lays them out.
    pub qkv: Vec<f32>,
    /// The block's softmax: (heads, tokens, tokens); `None` where the caller did not
    /// ask for it (the device path of a key-based feature map leaves it there).
    pub probs: Option<Vec<f32>>,
    /// The block's output tokens before the final norm: (tokens, D); `None` where
    /// the backend does not keep them.
    pub output: Option<Vec<f32>>,
}

impl BlockTaps {
    fn tokens(&self) -> usize {
        self.grid.0 * self.grid.1 + 1
    }

    /// Query, key or value: (heads, tokens, head_dim), CLS first.
    pub fn facet(&self, facet: Facet) -> Array3<f32> {
        let (t, d, h) = (self.tokens(), self.dim, self.heads);
        let hd = d / h;
        let which = facet as usize;
        Array3::from_shape_fn((h, t, hd), |(hi, ti, k)| {
            self.qkv[ti * 3 * d + which * d + hi * hd + k]
        })
    }

    /// The softmax: (heads, tokens, tokens); row 0 is the CLS query's attention over
    /// [CLS, patches…].
    ///
    /// # Errors
    /// [`Error::InvalidParam`] where the taps were taken without it.
    pub fn attention(&self) -> Result<Array3<f32>> {
        let t = self.tokens();
        Ok(
            Array3::from_shape_vec((self.heads, t, t), self.kept_probs()?.to_vec())
                .expect("sized by the forward"),
        )
    }

    /// CLS→patch attention: (heads, rows, cols) on the patch grid.
    ///
    /// # Errors
    /// As [`BlockTaps::attention`].
    pub fn cls_attention(&self) -> Result<Array3<f32>> {
        let t = self.tokens();
        let (gr, gc) = self.grid;
        let probs = self.kept_probs()?;
        Ok(Array3::from_shape_fn((self.heads, gr, gc), |(h, i, j)| {
            probs[h * t * t + 1 + i * gc + j]
        }))
    }

    fn kept_probs(&self) -> Result<&[f32]> {
        self.probs.as_deref().ok_or_else(|| {
            Error::Internal(
                "these block taps were taken without the attention probabilities".into(),
            )
        })
    }

    /// The block's output tokens (tokens, D).
    ///
    /// # Errors
    /// [`Error::InvalidParam`] where the backend did not keep them.
    pub fn output_tokens(&self) -> Result<Array2<f32>> {
        let out = self.output.as_ref().ok_or_else(|| {
            Error::param(
                "feature",
                "this backend keeps no block output tokens; use a facet (query, key, value) or CLS attention",
            )
        })?;
        Ok(
            Array2::from_shape_vec((self.tokens(), self.dim), out.clone())
                .expect("sized by the forward"),
        )
    }
}
