//! Getting a model ready to train: an architecture from scratch, the positional
//! table resampled to the training grid, a fresh head when the class count or
//! layout changes.

use super::stream_key as rng;
use crate::error::{Error, Result};
use crate::model::{HeadKind, LinearHead, Vit, VitConfig};
use crate::rng::standard_normal;
use crate::rng::Rng;

/// `ti`, `s`, `b` (12 blocks, patch 16) or `custom:DEPTH,DIM,HEADS,PATCH`, at
/// `side`×`side` pixels.
///
/// # Errors
/// [`Error::InvalidParam`] for an unknown name, bad numbers, or a side that is
/// not a multiple of the patch.
pub fn arch_config(spec: &str, side: usize) -> Result<VitConfig> {
    let bad = || {
        Error::param(
            "arch",
            format!("`{spec}` is not ti, s, b or custom:DEPTH,DIM,HEADS,PATCH"),
        )
    };
    let config = match spec.strip_prefix("custom:") {
        Some(list) => {
            let v: Vec<usize> = list
                .split(',')
                .map(|s| s.trim().parse())
                .collect::<std::result::Result<_, _>>()
                .map_err(|_| bad())?;
            let [depth, dim, heads, patch] = v[..] else {
                return Err(bad());
            };
            if depth == 0 || dim == 0 || patch == 0 {
                return Err(bad());
            }
            VitConfig {
                patch,
                dim,
                depth,
                heads,
                mlp_hidden: 4 * dim,
                eps: 1e-6,
                pos_grid: None,
                pos_patches: 0,
            }
        }
        None => VitConfig::standard(spec, 16, side).ok_or_else(bad)?,
    };
    let g = config.grid_for(side, side)?;
    let config = VitConfig {
        pos_grid: Some(g),
        pos_patches: g.0 * g.1,
        ..config
    };
    config.validate()?;
    Ok(config)
}

/// A seeded linear head, weights N(0, 0.01²) and zero bias (DINO `eval_linear`).
pub fn new_head(kind: HeadKind, dim: usize, classes: usize, seed: u64) -> LinearHead {
    let in_dim = kind.in_dim(dim);
    let mut r = Rng::stream(seed, &[rng::INIT]);
    let key = r.next_u64();
    LinearHead {
        kind,
        classes,
        weight: (0..classes * in_dim)
            .map(|i| (0.01 * standard_normal(key, i as u64)) as f32)
            .collect(),
        bias: vec![0.0; classes],
    }
}

/// Resamples the positional table to the `side`×`side` grid if it differs (as timm
/// does when a model is built at a new size), and gives the model a new head
/// unless it already has one of `kind` with `classes` outputs. Returns whether
/// the head was replaced.
///
/// # Errors
/// [`Error::InvalidParam`] for a side the patch does not divide, a head layout
/// the depth cannot give, or zero classes.
pub fn prepare_model(
    vit: &mut Vit,
    classes: usize,
    side: usize,
    kind: HeadKind,
    seed: u64,
) -> Result<bool> {
    if classes < 2 {
        return Err(Error::param(
            "classes",
            format!("training needs at least 2 classes, the data has {classes}"),
        ));
    }
    if let HeadKind::LastBlocksCls { n } = kind {
        if n == 0 || n > vit.config.depth {
            return Err(Error::param(
                "head_kind",
                format!(
                    "{n} last blocks requested, the model has {}",
                    vit.config.depth
                ),
            ));
        }
    }
    let grid = vit.config.grid_for(side, side)?;
    if vit.config.pos_grid != Some(grid) {
        let table = vit.pos_embed(grid)?;
        vit.weights.pos_embed = table.to_vec();
        vit.config.pos_grid = Some(grid);
        vit.config.pos_patches = grid.0 * grid.1;
        vit.clear_pos_cache();
    }
    let keep = vit
        .head
        .as_ref()
        .is_some_and(|h| h.kind == kind && h.classes == classes);
    if !keep {
        vit.head = Some(new_head(kind, vit.config.dim, classes, seed));
    }
    Ok(!keep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn architectures_parse() {
        let c = arch_config("ti", 64).unwrap();
        assert_eq!(
            (c.dim, c.depth, c.heads, c.patch, c.pos_patches),
            (192, 12, 3, 16, 16)
        );
        let c = arch_config("custom:2,32,4,8", 32).unwrap();
        assert_eq!(
            (c.dim, c.depth, c.heads, c.patch, c.pos_patches),
            (32, 2, 4, 8, 16)
        );
        assert!(arch_config("custom:2,30,4,8", 32).is_err());
        assert!(arch_config("xl", 224).is_err());
        assert!(arch_config("s", 100).is_err());
    }
}
