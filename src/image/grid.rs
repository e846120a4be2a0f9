//! Resampling between a ViT's patch grid and pixels: maps up (nearest or
//! bilinear, as torch's `F.interpolate`), boolean masks up, and maps pooled down
//! to the grid.

use ndarray::{Array2, ArrayView2};

use crate::error::{Error, Result};

/// How a patch-grid map is brought to pixel resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Upsample {
    /// Each patch's value over its pixels (DINO and TokenCut upsample this way).
    #[default]
    Nearest,
    /// torch `F.interpolate(mode="bilinear", align_corners=False)`.
    Bilinear,
}

impl std::str::FromStr for Upsample {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "nearest" => Ok(Upsample::Nearest),
            "bilinear" => Ok(Upsample::Bilinear),
            other => Err(Error::param(
                "upsample",
                format!("`{other}` is not one of nearest, bilinear"),
            )),
        }
    }
}

/// Resizes a (rows, cols) map to (height, width).
pub fn upsample(map: ArrayView2<f32>, height: usize, width: usize, mode: Upsample) -> Array2<f32> {
    let (r, c) = map.dim();
    match mode {
        // torch nearest: src = floor(dst · in/out).
        Upsample::Nearest => Array2::from_shape_fn((height, width), |(i, j)| {
            map[[((i * r) / height).min(r - 1), ((j * c) / width).min(c - 1)]]
        }),
        Upsample::Bilinear => {
            let coord = |dst: usize, out: usize, inn: usize| {
                let src = ((dst as f32 + 0.5) * (inn as f32 / out as f32) - 0.5).max(0.0);
                let i0 = (src.floor() as usize).min(inn - 1);
                let i1 = (i0 + 1).min(inn - 1);
                (i0, i1, src - i0 as f32)
            };
            Array2::from_shape_fn((height, width), |(i, j)| {
                let (y0, y1, fy) = coord(i, height, r);
                let (x0, x1, fx) = coord(j, width, c);
                let top = map[[y0, x0]] * (1.0 - fx) + map[[y0, x1]] * fx;
                let bottom = map[[y1, x0]] * (1.0 - fx) + map[[y1, x1]] * fx;
                top * (1.0 - fy) + bottom * fy
            })
        }
    }
}

/// Nearest upsampling of a boolean mask (e.g. a patch-grid cut) to (height, width).
pub fn upsample_mask(mask: ArrayView2<bool>, height: usize, width: usize) -> Array2<bool> {
    let (r, c) = mask.dim();
    Array2::from_shape_fn((height, width), |(i, j)| {
        mask[[((i * r) / height).min(r - 1), ((j * c) / width).min(c - 1)]]
    })
}

/// Average of the map over each patch (the relevance at the feature map's grid).
///
/// # Errors
/// [`Error::InvalidParam`] when the map is not a whole number of patches.
pub fn pool_to_grid(map: ArrayView2<f32>, grid: (usize, usize)) -> Result<Array2<f32>> {
    let (h, w) = map.dim();
    if grid.0 == 0 || grid.1 == 0 || h % grid.0 != 0 || w % grid.1 != 0 {
        return Err(Error::param(
            "grid",
            format!(
                "a {h}×{w} map does not split into a {}×{} grid",
                grid.0, grid.1
            ),
        ));
    }
    let (ph, pw) = (h / grid.0, w / grid.1);
    Ok(Array2::from_shape_fn(grid, |(i, j)| {
        map.slice(ndarray::s![i * ph..(i + 1) * ph, j * pw..(j + 1) * pw])
            .mean()
            .unwrap_or(0.0)
    }))
}
