//! Linear classifier heads on ViT features (docs/method.md §2.5).

use std::path::Path;

use super::config::VitConfig;
use super::tensor_file::HostTensor;
use crate::error::{Error, Result};

/// Which feature the linear head reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadKind {
    /// timm `head.*`: the final-normed CLS token (in = D).
    Cls,
    /// DINO linear eval: CLS tokens of the last `n` blocks, each passed through the
    /// final norm, concatenated in block order (in = n·D; n = 4 for ViT-S).
    LastBlocksCls { n: usize },
    /// DINO linear eval with `avgpool_patchtokens` (n = 1): [CLS, mean of normed
    /// patch tokens] interleaved element-wise (in = 2·D).
    ClsAvgPoolInterleaved,
}

impl HeadKind {
    /// The kind named in checkpoint metadata `head_kind` (written by training):
    /// `cls`, `last_blocks_cls:N` or `cls_avgpool`. Resolves the width ambiguity
    /// of 2·D (two last CLS tokens vs CLS + average pool).
    pub fn from_metadata(s: &str) -> Option<HeadKind> {
        match s.trim() {
            "cls" => Some(HeadKind::Cls),
            "cls_avgpool" => Some(HeadKind::ClsAvgPoolInterleaved),
            other => other
                .strip_prefix("last_blocks_cls:")?
                .parse()
                .ok()
                .map(|n| HeadKind::LastBlocksCls { n }),
        }
    }

    /// Width of the feature this head reads for backbone width `dim`.
    pub fn in_dim(&self, dim: usize) -> usize {
        match self {
            HeadKind::Cls => dim,
            HeadKind::LastBlocksCls { n } => n * dim,
            HeadKind::ClsAvgPoolInterleaved => 2 * dim,
        }
    }
}

/// `logits = W · feature + b` with W of shape (classes, in_dim).
#[derive(Debug, Clone)]
pub struct LinearHead {
    pub kind: HeadKind,
    pub classes: usize,
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

impl LinearHead {
    /// Builds a head from its tensors, inferring the kind from the width unless given.
    ///
    /// # Errors
    /// [`Error::Shape`] when weight and bias disagree or the width fits no layout.
    pub fn from_tensors(
        w: HostTensor,
        b: HostTensor,
        cfg: &VitConfig,
        kind: Option<HeadKind>,
        path: &Path,
    ) -> Result<Self> {
        let [classes, in_dim] = w.shape[..] else {
            return Err(Error::shape(
                format!("{}: head weight", path.display()),
                &[0, cfg.dim],
                &w.shape,
            ));
        };
        if b.shape != [classes] {
            return Err(Error::shape(
                format!("{}: head bias", path.display()),
                &[classes],
                &b.shape,
            ));
        }
        let kind = match kind {
            Some(k) => k,
            None if in_dim == cfg.dim => HeadKind::Cls,
            None if in_dim == 2 * cfg.dim => HeadKind::ClsAvgPoolInterleaved,
            None if in_dim % cfg.dim == 0 && in_dim / cfg.dim <= cfg.depth => {
                HeadKind::LastBlocksCls {
                    n: in_dim / cfg.dim,
                }
            }
            None => {
                return Err(Error::shape(
                    format!(
                        "{}: head weight (width must be D, 2·D or n·D)",
                        path.display()
                    ),
                    &[classes, cfg.dim],
                    &w.shape,
                ))
            }
        };
        if kind.in_dim(cfg.dim) != in_dim {
            return Err(Error::shape(
                format!("{}: head weight for {kind:?}", path.display()),
                &[classes, kind.in_dim(cfg.dim)],
                &w.shape,
            ));
        }
        if let HeadKind::LastBlocksCls { n } = kind {
            if n == 0 || n > cfg.depth {
                return Err(Error::param(
                    "head_kind",
                    format!("{n} last blocks requested, the model has {}", cfg.depth),
                ));
            }
        }
        if classes == 0 {
            return Err(Error::shape(
                format!("{}: head weight", path.display()),
                &[1, in_dim],
                &w.shape,
            ));
        }
        Ok(LinearHead {
            kind,
            classes,
            weight: w.data,
            bias: b.data,
        })
    }
}
