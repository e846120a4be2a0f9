//! Positional-embedding interpolation for inputs whose patch grid differs from the
//! stored one, in the three conventions of docs/method.md §2.4 (they give different numbers).
//!
//! All three resample the (rows, cols, D) table of patch positions separably with a
//! cubic kernel; the CLS position is kept as it is.
//! - DINO: PyTorch non-antialiased bicubic, A = −0.75, called with
//!   `scale_factor = (g + 0.1)/g0`; PyTorch then maps coordinates with
//!   `src = (dst + 0.5)·f32(1/scale) − 0.5` (not the size ratio).
//! - HF: the same kernel called with `size = g`, so `src = (dst + 0.5)·(g0/g) − 0.5`.
//! - timm: PyTorch antialiased bicubic (PIL-style, a = −0.5, support widened by the
//!   downscale factor, weights renormalised over the clipped window).

use super::config::{PosEmbedMode, VitConfig};
use crate::error::{Error, Result};

/// One output sample of a 1-D resampling: the source indices and their weights.
#[derive(Debug, Clone)]
struct Taps {
    index: Vec<usize>,
    weight: Vec<f32>,
}

/// Keys' cubic convolution kernel for |x| ≤ 1 (PyTorch `cubic_convolution1`).
fn cubic1(x: f32, a: f32) -> f32 {
    ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
}

/// Keys' kernel for 1 < |x| < 2 (PyTorch `cubic_convolution2`).
fn cubic2(x: f32, a: f32) -> f32 {
    ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
}

/// PyTorch's non-antialiased bicubic taps (align_corners = false), A = −0.75.
/// `scale` is the source step per output pixel, already rounded to f32.
fn bicubic_taps(in_len: usize, out_len: usize, scale: f32) -> Vec<Taps> {
    const A: f32 = -0.75;
    (0..out_len)
        .map(|dst| {
            let src = scale * (dst as f32 + 0.5) - 0.5;
            let i0 = (src.floor() as i64).min(in_len as i64 - 1);
            let t = (src - i0 as f32).clamp(0.0, 1.0);
            let weight = vec![
                cubic2(t + 1.0, A),
                cubic1(t, A),
                cubic1(1.0 - t, A),
                cubic2(2.0 - t, A),
            ];
            let index = (-1..=2)
                .map(|o| (i0 + o).clamp(0, in_len as i64 - 1) as usize)
                .collect();
            Taps { index, weight }
        })
        .collect()
}

/// PyTorch's antialiased bicubic taps (PIL-style), a = −0.5.
fn antialiased_bicubic_taps(in_len: usize, out_len: usize) -> Vec<Taps> {
    const A: f32 = -0.5;
    let filter = |x: f32| {
        let x = x.abs();
        if x < 1.0 {
            cubic1(x, A)
        } else if x < 2.0 {
            cubic2(x, A)
        } else {
            0.0
        }
    };
    let scale = in_len as f32 / out_len as f32;
    let support = if scale >= 1.0 { 2.0 * scale } else { 2.0 };
    let inv_scale = if scale >= 1.0 { 1.0 / scale } else { 1.0 };
    (0..out_len)
        .map(|i| {
            let center = scale * (i as f32 + 0.5);
            let lo = ((center - support + 0.5) as i64).max(0) as usize;
            let hi = ((center + support + 0.5) as i64)
                .min(in_len as i64)
                .max(lo as i64) as usize;
            let mut weight: Vec<f32> = (lo..hi)
                .map(|j| filter((j as f32 - center + 0.5) * inv_scale))
                .collect();
            let total: f32 = weight.iter().sum();
            if total != 0.0 {
                weight.iter_mut().for_each(|w| *w /= total);
            }
            Taps {
                index: (lo..hi).collect(),
                weight,
            }
        })
        .collect()
}

fn taps_for(mode: PosEmbedMode, in_len: usize, out_len: usize) -> Vec<Taps> {
    match mode {
        // scale_factor = (g + 0.1)/g0 as a Python float; PyTorch uses 1/scale_factor.
        PosEmbedMode::Dino => {
            let scale_factor = (out_len as f64 + 0.1) / in_len as f64;
            bicubic_taps(in_len, out_len, (1.0 / scale_factor) as f32)
        }
        PosEmbedMode::Hf => bicubic_taps(in_len, out_len, in_len as f32 / out_len as f32),
        PosEmbedMode::Timm => antialiased_bicubic_taps(in_len, out_len),
    }
}

/// Resamples a (rows, cols, dim) grid to (out_rows, out_cols, dim): rows first.
fn resample_grid(
    grid: &[f32],
    (rows, cols): (usize, usize),
    (out_rows, out_cols): (usize, usize),
    dim: usize,
    mode: PosEmbedMode,
) -> Vec<f32> {
    let row_taps = taps_for(mode, rows, out_rows);
    let col_taps = taps_for(mode, cols, out_cols);
    let mut tmp = vec![0f32; out_rows * cols * dim];
    for (r, taps) in row_taps.iter().enumerate() {
        for c in 0..cols {
            let out = &mut tmp[(r * cols + c) * dim..][..dim];
            for (&i, &w) in taps.index.iter().zip(&taps.weight) {
                let src = &grid[(i * cols + c) * dim..][..dim];
                out.iter_mut().zip(src).for_each(|(o, s)| *o += w * s);
            }
        }
    }
    let mut out = vec![0f32; out_rows * out_cols * dim];
    for r in 0..out_rows {
        for (c, taps) in col_taps.iter().enumerate() {
            let dst = &mut out[(r * out_cols + c) * dim..][..dim];
            for (&i, &w) in taps.index.iter().zip(&taps.weight) {
                let src = &tmp[(r * cols + i) * dim..][..dim];
                dst.iter_mut().zip(src).for_each(|(o, s)| *o += w * s);
            }
        }
    }
    out
}

/// The adjoint of [`resample_grid`]: gradients w.r.t. the (out_rows, out_cols, dim)
/// output, mapped back to the (rows, cols, dim) source (the transposed taps, so
/// training through an interpolated table reaches the stored one).
fn resample_grid_adjoint(
    dout: &[f32],
    (rows, cols): (usize, usize),
    (out_rows, out_cols): (usize, usize),
    dim: usize,
    mode: PosEmbedMode,
) -> Vec<f32> {
    let row_taps = taps_for(mode, rows, out_rows);
    let col_taps = taps_for(mode, cols, out_cols);
    let mut dtmp = vec![0f32; out_rows * cols * dim];
    for r in 0..out_rows {
        for (c, taps) in col_taps.iter().enumerate() {
            let src = &dout[(r * out_cols + c) * dim..][..dim];
            for (&i, &w) in taps.index.iter().zip(&taps.weight) {
                let dst = &mut dtmp[(r * cols + i) * dim..][..dim];
                dst.iter_mut().zip(src).for_each(|(o, s)| *o += w * s);
            }
        }
    }
    let mut dgrid = vec![0f32; rows * cols * dim];
    for (r, taps) in row_taps.iter().enumerate() {
        for c in 0..cols {
            let src = &dtmp[(r * cols + c) * dim..][..dim];
            for (&i, &w) in taps.index.iter().zip(&taps.weight) {
                let dst = &mut dgrid[(i * cols + c) * dim..][..dim];
                dst.iter_mut().zip(src).for_each(|(o, s)| *o += w * s);
            }
        }
    }
    dgrid
}

/// Gradient w.r.t. the stored table (1 + pos_patches, D) from a gradient `dtable`
/// w.r.t. the table [`pos_embed_for_grid`] made for `grid`: the CLS row passes
/// through, the patch rows go through the interpolation's adjoint.
///
/// # Errors
/// As [`pos_embed_for_grid`]; [`Error::Shape`] when `dtable` does not fit `grid`.
pub fn pos_embed_grad_to_stored(
    cfg: &VitConfig,
    dtable: &[f32],
    grid: (usize, usize),
    mode: PosEmbedMode,
) -> Result<Vec<f32>> {
    let d = cfg.dim;
    if dtable.len() != (1 + grid.0 * grid.1) * d {
        return Err(Error::shape(
            "positional-table gradient",
            &[1 + grid.0 * grid.1, d],
            &[dtable.len() / d.max(1), d],
        ));
    }
    let same_count = grid.0 * grid.1 == cfg.pos_patches;
    let Some(stored_grid) = cfg.pos_grid.or(same_count.then_some(grid)) else {
        return Err(Error::param(
            "pos_grid",
            "the stored positional table's grid is unknown",
        ));
    };
    if stored_grid == grid {
        return Ok(dtable.to_vec());
    }
    let mut out = Vec::with_capacity((1 + cfg.pos_patches) * d);
    out.extend_from_slice(&dtable[..d]);
    out.extend(resample_grid_adjoint(
        &dtable[d..],
        stored_grid,
        grid,
        d,
        mode,
    ));
    Ok(out)
}

/// The positional table for an input with patch grid `grid` (rows, cols):
/// (1 + rows·cols, D), CLS position first. Unchanged when the grid is the stored one.
///
/// # Errors
/// [`Error::InvalidParam`] when the stored grid is unknown (non-square table without
/// `pos_grid` metadata) and the input grid needs interpolation.
pub fn pos_embed_for_grid(
    cfg: &VitConfig,
    stored: &[f32],
    grid: (usize, usize),
    mode: PosEmbedMode,
) -> Result<Vec<f32>> {
    let d = cfg.dim;
    let same_count = grid.0 * grid.1 == cfg.pos_patches;
    let Some(stored_grid) = cfg.pos_grid.or(same_count.then_some(grid)) else {
        return Err(Error::param(
            "pos_grid",
            format!(
                "the stored positional table has {} positions, not a square grid; give its grid (metadata `pos_grid` or --pos-grid) to use a {}×{} input",
                cfg.pos_patches, grid.0, grid.1
            ),
        ));
    };
    if stored_grid == grid {
        return Ok(stored.to_vec());
    }
    let mut out = Vec::with_capacity((1 + grid.0 * grid.1) * d);
    out.extend_from_slice(&stored[..d]);
    out.extend(resample_grid(&stored[d..], stored_grid, grid, d, mode));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bicubic_weights_sum_to_one_and_identity_at_scale_one() {
        // With scale 1, src = dst exactly: t = 0 gives weights (0, 1, 0, 0).
        for taps in bicubic_taps(5, 5, 1.0) {
            assert_eq!(taps.weight, vec![0.0, 1.0, 0.0, 0.0]);
        }
        for taps in bicubic_taps(4, 7, 4.0 / 7.0)
            .iter()
            .chain(&antialiased_bicubic_taps(9, 4))
        {
            let s: f32 = taps.weight.iter().sum();
            assert!((s - 1.0).abs() < 1e-6, "{s}");
        }
    }

    #[test]
    fn the_gradient_map_is_the_adjoint_of_the_interpolation() {
        // <A·x, y> = <x, Aᵀ·y> for every mode, up- and down-sampling.
        let cfg = VitConfig {
            patch: 8,
            dim: 3,
            depth: 1,
            heads: 1,
            mlp_hidden: 8,
            eps: 1e-6,
            pos_grid: Some((4, 4)),
            pos_patches: 16,
        };
        let x: Vec<f32> = (0..17 * 3)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0)
            .collect();
        for mode in [PosEmbedMode::Dino, PosEmbedMode::Hf, PosEmbedMode::Timm] {
            for grid in [(2, 2), (3, 5), (7, 6)] {
                let ax = pos_embed_for_grid(&cfg, &x, grid, mode).unwrap();
                let y: Vec<f32> = (0..ax.len())
                    .map(|i| ((i * 53 % 19) as f32 - 9.0) / 5.0)
                    .collect();
                let aty = pos_embed_grad_to_stored(&cfg, &y, grid, mode).unwrap();
                let lhs: f64 = ax
                    .iter()
                    .zip(&y)
                    .map(|(a, b)| (*a as f64) * (*b as f64))
                    .sum();
                let rhs: f64 = x
                    .iter()
                    .zip(&aty)
                    .map(|(a, b)| (*a as f64) * (*b as f64))
                    .sum();
                assert!(
                    (lhs - rhs).abs() <= 1e-4 * lhs.abs().max(1.0),
                    "{mode:?} {grid:?}: {lhs} vs {rhs}"
                );
            }
        }
    }

    #[test]
    fn constant_table_stays_constant() {
        let cfg = VitConfig {
            patch: 8,
            dim: 2,
            depth: 1,
            heads: 1,
            mlp_hidden: 8,
            eps: 1e-6,
            pos_grid: Some((3, 3)),
            pos_patches: 9,
        };
        let stored: Vec<f32> = (0..10).flat_map(|_| [0.5, -2.0]).collect();
        for mode in [PosEmbedMode::Dino, PosEmbedMode::Hf, PosEmbedMode::Timm] {
            let out = pos_embed_for_grid(&cfg, &stored, (5, 2), mode).unwrap();
            assert_eq!(out.len(), 11 * 2);
            for pair in out.chunks(2) {
                // f32 cubic weights sum to 1 within a few ulp, as in PyTorch.
                assert!(
                    (pair[0] - 0.5).abs() < 1e-5 && (pair[1] + 2.0).abs() < 1e-5,
                    "{mode:?} {pair:?}"
                );
            }
        }
    }
}
