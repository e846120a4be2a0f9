//! From an attribution (3, H, W) to a relevance map (H, W): channel reduction and
//! display normalisation (docs/method.md §7).

use ndarray::{Array2, ArrayView3, Axis};

use crate::error::{Error, Result};
pub use crate::ig::Reduction;

/// How a reduced map is scaled for display and thresholding.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Normalizer {
    /// Leave the values as they are.
    None,
    /// Captum's heat-map scaling: divide by the value at which the ascending
    /// cumulative sum of |v| reaches (100 − outlier_perc)% of the total, clip to
    /// [−1, 1]. Default outlier_perc = 2 (keeps 98% of the attribution mass).
    CumulativeMass { outlier_perc: f32 },
    /// PAIR saliency: (v − min)/(P_upper(v) − min) clipped to [0, 1], with numpy's
    /// linear-interpolated percentile. Default upper = 99.
    Percentile { upper: f32 },
    /// Plain (v − min)/(max − min).
    MinMax,
}

impl Default for Normalizer {
    fn default() -> Self {
        Normalizer::captum()
    }
}

impl Normalizer {
    /// Captum's default, `CumulativeMass { outlier_perc: 2 }`.
    pub fn captum() -> Self {
        Normalizer::CumulativeMass { outlier_perc: 2.0 }
    }
}

impl std::str::FromStr for Normalizer {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "none" => Ok(Normalizer::None),
            "cummass" | "captum" => Ok(Normalizer::captum()),
            "percentile" => Ok(Normalizer::Percentile { upper: 99.0 }),
            "minmax" => Ok(Normalizer::MinMax),
            other => Err(Error::param(
                "normalize",
                format!("`{other}` is not one of none, cummass, percentile, minmax"),
            )),
        }
    }
}

/// How an attribution becomes the relevance map the mask stage reads: channel
/// reduction, Gaussian blur (σ in pixels, 0 = none), then scaling.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RelevanceConfig {
    pub reduction: Reduction,
    pub smooth_sigma: f32,
    pub normalizer: Normalizer,
}

impl RelevanceConfig {
    /// The map of an attribution (3, H, W), computed on the host.
    ///
    /// # Errors
    /// As [`super::smooth::gaussian_smooth`] and [`normalize`].
    pub fn apply(&self, attribution: ArrayView3<f32>) -> Result<Array2<f32>> {
        let reduced = reduce_channels(attribution, self.reduction);
        let smoothed = super::smooth::gaussian_smooth(reduced.view(), self.smooth_sigma)?;
        normalize(&smoothed, self.normalizer)
    }
}

/// Reduces an attribution (3, H, W) over channels.
pub fn reduce_channels(attr: ArrayView3<f32>, reduction: Reduction) -> Array2<f32> {
    match reduction {
        Reduction::SumAbs => attr.mapv(f32::abs).sum_axis(Axis(0)),
        _ => {
            let s = attr.sum_axis(Axis(0));
            match reduction {
                Reduction::AbsSum => s.mapv(f32::abs),
                Reduction::Positive => s.mapv(|v| v.max(0.0)),
                _ => s,
            }
        }
    }
}

/// Captum `_cumulative_sum_threshold`: the first sorted value whose f32 running sum
/// reaches `total · 0.01 · percentile`.
fn cumulative_mass_threshold(values: &[f32], percentile: f32) -> f32 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f32::total_cmp);
    let mut cum = Vec::with_capacity(sorted.len());
    let mut acc = 0f32;
    for v in &sorted {
        acc += v;
        cum.push(acc);
    }
    let target = acc * 0.01 * percentile;
    let idx = cum
        .iter()
        .position(|&c| c >= target)
        .unwrap_or(sorted.len() - 1);
    sorted[idx]
}

/// numpy `percentile` with linear interpolation.
fn percentile_linear(values: &[f32], q: f32) -> f32 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f32::total_cmp);
    let pos = (q as f64 / 100.0) * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    let frac = pos - lo as f64;
    (sorted[lo] as f64 + frac * (sorted[hi] as f64 - sorted[lo] as f64)) as f32
}

/// Scales a reduced map.
///
/// # Errors
/// [`Error::InvalidParam`] for an empty or non-finite map, or percentages outside
/// (0, 100). An all-zero map is returned as zeros (Captum would assert).
pub fn normalize(map: &Array2<f32>, normalizer: Normalizer) -> Result<Array2<f32>> {
    if map.is_empty() {
        return Err(Error::param("relevance map", "is empty"));
    }
    if map.iter().any(|v| !v.is_finite()) {
        return Err(Error::param(
            "relevance map",
            "contains NaN or infinite values",
        ));
    }
    let values = map.as_standard_layout().iter().copied().collect::<Vec<_>>();
    match normalizer {
        Normalizer::None => Ok(map.clone()),
        Normalizer::CumulativeMass { outlier_perc } => {
            if !(0.0..100.0).contains(&outlier_perc) {
                return Err(Error::param(
                    "outlier_perc",
                    format!("{outlier_perc} is not in [0, 100)"),
                ));
            }
            let abs: Vec<f32> = values.iter().map(|v| v.abs()).collect();
            let threshold = cumulative_mass_threshold(&abs, 100.0 - outlier_perc);
            if threshold == 0.0 {
                return Ok(Array2::zeros(map.dim()));
            }
            Ok(map.mapv(|v| (v / threshold).clamp(-1.0, 1.0)))
        }
        Normalizer::Percentile { upper } => {
            if !(upper > 0.0 && upper <= 100.0) {
                return Err(Error::param(
                    "percentile",
                    format!("{upper} is not in (0, 100]"),
                ));
            }
            let vmin = values.iter().copied().fold(f32::INFINITY, f32::min);
            let vmax = percentile_linear(&values, upper);
            if vmax <= vmin {
                return Ok(Array2::zeros(map.dim()));
            }
            Ok(map.mapv(|v| ((v - vmin) / (vmax - vmin)).clamp(0.0, 1.0)))
        }
        Normalizer::MinMax => Ok(super::features::min_max(map.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{arr2, Array3};

    #[test]
    fn cumulative_mass_by_hand() {
        // |v| sorted = 1,1,2,6 (total 10); 98% of 10 = 9.8 is first reached at 6.
        let m = arr2(&[[1.0f32, -1.0], [2.0, 6.0]]);
        let n = normalize(&m, Normalizer::captum()).unwrap();
        assert_eq!(n, arr2(&[[1.0 / 6.0, -1.0 / 6.0], [2.0 / 6.0, 1.0]]));
        // 50% of 10 = 5 is first reached at the cumulative sum 10, i.e. value 6 too;
        // 30% = 3 is reached at cumsum 4 → value 2.
        let n = normalize(&m, Normalizer::CumulativeMass { outlier_perc: 70.0 }).unwrap();
        assert_eq!(n[[1, 0]], 1.0);
        assert_eq!(n[[0, 0]], 0.5);
    }

    #[test]
    fn reductions_by_hand() {
        let a = Array3::from_shape_vec((3, 1, 2), vec![1.0f32, -4.0, 2.0, 1.0, -1.0, 1.0]).unwrap();
        assert_eq!(
            reduce_channels(a.view(), Reduction::Sum),
            arr2(&[[2.0, -2.0]])
        );
        assert_eq!(
            reduce_channels(a.view(), Reduction::AbsSum),
            arr2(&[[2.0, 2.0]])
        );
        assert_eq!(
            reduce_channels(a.view(), Reduction::Positive),
            arr2(&[[2.0, 0.0]])
        );
        assert_eq!(
            reduce_channels(a.view(), Reduction::SumAbs),
            arr2(&[[4.0, 6.0]])
        );
    }

    #[test]
    fn percentile_matches_numpy_linear() {
        // np.percentile([0,1,2,3,4], 99) = 3.96
        assert!((percentile_linear(&[4.0, 0.0, 2.0, 1.0, 3.0], 99.0) - 3.96).abs() < 1e-6);
    }
}
