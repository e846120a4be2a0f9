//! Fusion of the relevance map with a feature map (paper §3.5, "Fusion of Feature
//! and Relevance Map"): both normalised to [0, 1], the feature map upsampled from
//! the patch grid to pixels, then multiplied — the feature map acts as a weight that
//! suppresses outlier relevance.

use ndarray::{Array2, ArrayView2};

use super::features::min_max;
use crate::error::{Error, Result};
// Resampling between the patch grid and pixels lives in `image`, below `post`,
// which needs it too; re-exported here where fusion's callers look for it.
pub use crate::image::grid::{pool_to_grid, upsample, upsample_mask, Upsample};

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
