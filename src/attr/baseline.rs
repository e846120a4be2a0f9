//! IG baselines in the model's (normalised) input space.

use ndarray::{Array4, ArrayView4};

use crate::error::{Error, Result};

/// The reference point IG integrates from.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Baseline {
    /// All zeros in normalised space — Captum's default (the dataset-mean grey image).
    #[default]
    Zero,
    /// A black image (pixel value 0), i.e. (0 − mean)/std per channel.
    Black,
    /// The input blurred by a Gaussian of `sigma_px` pixels (reflecting borders).
    Blur { sigma_px: f32 },
    /// A given tensor (1, 3, H, W) in normalised space.
    Tensor(Array4<f32>),
}

/// Default blur for [`Baseline::Blur`]: strong enough to remove lesion-scale
/// structure at 224², as in the "blurred baseline" of Sturmfels et al. (Distill 2020).
pub const DEFAULT_BLUR_SIGMA_PX: f32 = 10.0;

impl std::str::FromStr for Baseline {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "zero" => Ok(Baseline::Zero),
            "black" => Ok(Baseline::Black),
            "blur" => Ok(Baseline::Blur {
                sigma_px: DEFAULT_BLUR_SIGMA_PX,
            }),
            other => Err(Error::param(
                "baseline",
                format!("`{other}` is not one of zero, black, blur"),
            )),
        }
    }
}

impl Baseline {
    /// The baseline tensor for input `x` (1, 3, H, W); `mean`/`std` are the
    /// normalisation the input went through (needed for `Black`).
    ///
    /// # Errors
    /// [`Error::Shape`] when a given tensor does not match the input;
    /// [`Error::InvalidParam`] for a non-positive blur sigma or std.
    pub fn resolve(
        &self,
        x: ArrayView4<f32>,
        mean: [f32; 3],
        std: [f32; 3],
    ) -> Result<Array4<f32>> {
        let dim = x.dim();
        match self {
            Baseline::Zero => Ok(Array4::zeros(dim)),
            Baseline::Black => {
                if std
                    .iter()
                    .any(|s| s.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater))
                {
                    return Err(Error::param("std", "must be positive"));
                }
                Ok(Array4::from_shape_fn(dim, |(_, c, _, _)| {
                    (0.0 - mean[c]) / std[c]
                }))
            }
            Baseline::Blur { sigma_px } => {
                if !(*sigma_px > 0.0 && sigma_px.is_finite()) {
                    return Err(Error::param(
                        "blur sigma",
                        format!("{sigma_px} is not a positive number"),
                    ));
                }
                Ok(gaussian_blur(x, *sigma_px))
            }
            Baseline::Tensor(t) => {
                if t.dim() != dim {
                    let (a, b, c, d) = dim;
                    let (e, f, g, h) = t.dim();
                    return Err(Error::shape(
                        "baseline tensor",
                        &[a, b, c, d],
                        &[e, f, g, h],
                    ));
                }
                if t.iter().any(|v| !v.is_finite()) {
                    return Err(Error::param("baseline", "contains NaN or infinite values"));
                }
                Ok(t.clone())
            }
        }
    }
}

/// Separable Gaussian blur (radius ⌈3σ⌉, reflect-101 borders) of every plane.
fn gaussian_blur(x: ArrayView4<f32>, sigma: f32) -> Array4<f32> {
    let radius = (3.0 * sigma).ceil() as isize;
    let kernel: Vec<f32> = (-radius..=radius)
        .map(|i| (-(i * i) as f32 / (2.0 * sigma * sigma)).exp())
        .collect();
    let total: f32 = kernel.iter().sum();
    let kernel: Vec<f32> = kernel.iter().map(|k| k / total).collect();
    let (b, c, h, w) = x.dim();
    let reflect = |i: isize, n: usize| -> usize {
        let n = n as isize;
        if n == 1 {
            return 0;
        }
        let period = 2 * (n - 1);
        let m = i.rem_euclid(period);
        (if m < n { m } else { period - m }) as usize
    };
    let mut tmp = Array4::<f32>::zeros((b, c, h, w));
    let mut out = Array4::<f32>::zeros((b, c, h, w));
    for bi in 0..b {
        for ci in 0..c {
            for yi in 0..h {
                for xi in 0..w {
                    tmp[[bi, ci, yi, xi]] = kernel
                        .iter()
                        .enumerate()
                        .map(|(k, kv)| {
                            kv * x[[bi, ci, yi, reflect(xi as isize + k as isize - radius, w)]]
                        })
                        .sum();
                }
            }
            for yi in 0..h {
                for xi in 0..w {
                    out[[bi, ci, yi, xi]] = kernel
                        .iter()
                        .enumerate()
                        .map(|(k, kv)| {
                            kv * tmp[[bi, ci, reflect(yi as isize + k as isize - radius, h), xi]]
                        })
                        .sum();
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn black_is_minus_mean_over_std() {
        let x = Array4::<f32>::zeros((1, 3, 2, 2));
        let b = Baseline::Black
            .resolve(x.view(), [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
            .unwrap();
        assert_eq!(b[[0, 0, 1, 1]], -0.485 / 0.229);
        assert_eq!(b[[0, 2, 0, 0]], -0.406 / 0.225);
    }

    #[test]
    fn blur_keeps_constants_and_smooths_steps() {
        let x = Array4::from_shape_fn(
            (1, 3, 8, 9),
            |(_, c, _, j)| if j < 4 { c as f32 } else { 5.0 },
        );
        let b = Baseline::Blur { sigma_px: 1.5 }
            .resolve(x.view(), [0.0; 3], [1.0; 3])
            .unwrap();
        let row: Vec<f32> = (0..9).map(|j| b[[0, 1, 3, j]]).collect();
        assert!(row.windows(2).all(|p| p[0] <= p[1] + 1e-6), "{row:?}");
        assert!(
            row[0] > 1.0 && row[0] < 1.5 && row[8] > 4.5 && row[8] <= 5.0,
            "{row:?}"
        );
        let c = Array4::from_elem((1, 3, 5, 5), 2.5f32);
        let bc = Baseline::Blur { sigma_px: 2.0 }
            .resolve(c.view(), [0.0; 3], [1.0; 3])
            .unwrap();
        assert!(bc.iter().all(|v| (v - 2.5).abs() < 1e-5));
    }
}
