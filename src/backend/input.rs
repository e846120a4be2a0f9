//! Checks of an input batch and its targets, shared by every engine and by
//! training, and of a lattice filter's input, shared by the CPU and device
//! DenseCRF, so that a bad input gets the same error whichever device runs it.

use ndarray::ArrayView4;

use crate::error::{Error, Result};
use crate::model::Vit;

/// The shape of a checked input batch (batch, 3, height, width) and its patch grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputGeometry {
    pub batch: usize,
    pub height: usize,
    pub width: usize,
    /// (rows, cols) of patches.
    pub grid: (usize, usize),
}

/// Checks the dimensions (batch, channels, H, W) of an input for `vit`: a
/// non-empty batch of 3-channel images whose sides are multiples of the patch.
///
/// # Errors
/// [`Error::Shape`] for a channel count other than 3, [`Error::InvalidParam`] for
/// an empty batch or a size that is not a positive multiple of the patch.
pub fn check_batch(vit: &Vit, dims: (usize, usize, usize, usize)) -> Result<InputGeometry> {
    let (batch, ch, height, width) = dims;
    if ch != 3 {
        return Err(Error::shape(
            "input (batch, 3, H, W)",
            &[batch, 3, height, width],
            &[batch, ch, height, width],
        ));
    }
    if batch == 0 {
        return Err(Error::param("batch", "the input batch is empty"));
    }
    let grid = vit.config.grid_for(height, width)?;
    Ok(InputGeometry {
        batch,
        height,
        width,
        grid,
    })
}

/// Rejects NaN and infinite values (they would spread through every attention row).
///
/// # Errors
/// [`Error::InvalidParam`] naming the input.
pub fn check_finite(x: ArrayView4<f32>) -> Result<()> {
    if x.iter().any(|v| !v.is_finite()) {
        return Err(Error::param("input", "contains NaN or infinite values"));
    }
    Ok(())
}

/// [`check_batch`] and [`check_finite`]: everything a forward pass needs of `x`.
///
/// # Errors
/// As those two.
pub fn check_input(vit: &Vit, x: ArrayView4<f32>) -> Result<InputGeometry> {
    let geo = check_batch(vit, x.dim())?;
    check_finite(x)?;
    Ok(geo)
}

/// Checks one target class per input, each below the head's class count.
///
/// # Errors
/// [`Error::InvalidParam`] for a model without head or a class out of range;
/// [`Error::Shape`] for a count other than `batch`.
pub fn check_targets(vit: &Vit, batch: usize, targets: &[usize]) -> Result<()> {
    let classes = vit.require_head()?.classes;
    check_classes("targets (one per input)", "target", classes, batch, targets)
}

/// Checks `ids.len() == batch` and every id `< classes`; `what` names the list in a
/// shape error, `one` an entry in a range error (targets for attribution, labels
/// for training).
///
/// # Errors
/// [`Error::Shape`] for a wrong count, [`Error::InvalidParam`] for a class out of range.
pub fn check_classes(
    what: &str,
    one: &'static str,
    classes: usize,
    batch: usize,
    ids: &[usize],
) -> Result<()> {
    if ids.len() != batch {
        return Err(Error::shape(what, &[batch], &[ids.len()]));
    }
    check_class_range(one, classes, ids)
}

/// Every id `< classes`.
///
/// # Errors
/// [`Error::InvalidParam`] named `one` for the first id out of range.
pub fn check_class_range(one: &'static str, classes: usize, ids: &[usize]) -> Result<()> {
    if let Some(&bad) = ids.iter().find(|&&t| t >= classes) {
        return Err(Error::param(
            one,
            format!("class {bad} is out of range (the head has {classes} classes)"),
        ));
    }
    Ok(())
}

/// Checks a permutohedral-lattice filter's input — `features` point-major `(n, d)`,
/// `input` `(n, vs)`, `scale` `(n)` — and returns the point count `n`.
///
/// # Errors
/// [`Error::InvalidParam`] for inconsistent sizes.
pub fn check_lattice_input(
    features: &[f32],
    d: usize,
    input: &[f32],
    scale: &[f32],
    vs: usize,
) -> Result<usize> {
    if d == 0 || vs == 0 || !features.len().is_multiple_of(d) {
        return Err(Error::param("features", "not a whole number of d-vectors"));
    }
    let n = features.len() / d;
    if n == 0 || input.len() != n * vs || scale.len() != n {
        return Err(Error::param(
            "input",
            format!(
                "{} values and {} scales for {n} points × {vs}",
                input.len(),
                scale.len()
            ),
        ));
    }
    Ok(n)
}
