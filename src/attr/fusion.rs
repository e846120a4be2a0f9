//! Fusion of the relevance map with a feature map (paper §3.5, "Fusion of Feature
//! and Relevance Map"): both normalised to [0, 1], the feature map upsampled from
//! the patch grid to pixels, then multiplied — the feature map acts as a weight that
//! suppresses outlier relevance.

use ndarray::{Array2, ArrayView2};

use super::features::min_max;
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

/// `min_max(relevance) × min_max(upsample(feature))` at the relevance map's size.
///
/// # Errors
/// [`Error::InvalidParam`] for an empty or non-finite map.
pub fn fuse(
    relevance: ArrayView2<f32>,
    feature: ArrayView2<f32>,
    mode: Upsample,
) -> Result<Array2<f32>> {
    for (name, m) in [("relevance", &relevance), ("feature", &feature)] {
        if m.is_empty() {
            return Err(Error::param("fusion", format!("the {name} map is empty")));
        }
        if m.iter().any(|v| !v.is_finite()) {
            return Err(Error::param(
                "fusion",
                format!("the {name} map has NaN or infinite values"),
            ));
        }
    }
    let (h, w) = relevance.dim();
    let f = min_max(upsample(feature, h, w, mode));
    Ok(min_max(relevance.to_owned()) * f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn nearest_and_bilinear_by_hand() {
        let m = array![[0.0f32, 1.0], [2.0, 3.0]];
        let n = upsample(m.view(), 4, 4, Upsample::Nearest);
        assert_eq!(n.row(0).to_vec(), vec![0.0, 0.0, 1.0, 1.0]);
        assert_eq!(n.row(3).to_vec(), vec![2.0, 2.0, 3.0, 3.0]);
        // torch bilinear 2→4, align_corners=False: x positions −0.25→0, 0.25, 0.75, 1.25→1.
        let b = upsample(m.view(), 1, 4, Upsample::Bilinear);
        let want = [1.0f32, 1.25, 1.75, 2.0]; // rows blend 0.5/0.5: top (0,1) and bottom (2,3)
        for (g, w) in b.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{b:?}");
        }
    }

    #[test]
    fn fusion_weights_relevance_by_features() {
        let rel = array![[0.0f32, 1.0], [1.0, 1.0]];
        let feat = array![[1.0f32, 0.0]];
        let f = fuse(rel.view(), feat.view(), Upsample::Nearest).unwrap();
        assert_eq!(f, array![[0.0, 0.0], [1.0, 0.0]]);
        assert_eq!(pool_to_grid(rel.view(), (1, 1)).unwrap()[[0, 0]], 0.75);
    }
}
