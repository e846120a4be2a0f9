//! Captum's NoiseTunnel settings, noise and aggregation (docs/method.md §6): IG runs on
//! `x + ε_j` for each of `s` noise samples (the multiply uses the noisy input), then
//! the per-sample attributions are aggregated in f32:
//! smoothgrad = mean, smoothgrad_sq = mean of squares, vargrad = E[a²] − E[a]².

use ndarray::{Array3, Array4, ArrayView3, ArrayView4, Axis};

use super::noise_design::{designed_noise, NoiseDesign};
use crate::error::{Error, Result};
use crate::rng::gaussian_noise;

/// NoiseTunnel aggregation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NtType {
    #[default]
    SmoothGrad,
    SmoothGradSq,
    VarGrad,
}

impl NtType {
    pub fn name(self) -> &'static str {
        match self {
            NtType::SmoothGrad => "smoothgrad",
            NtType::SmoothGradSq => "smoothgrad_sq",
            NtType::VarGrad => "vargrad",
        }
    }
}

impl std::str::FromStr for NtType {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "smoothgrad" => Ok(NtType::SmoothGrad),
            "smoothgrad_sq" => Ok(NtType::SmoothGradSq),
            "vargrad" => Ok(NtType::VarGrad),
            other => Err(Error::param(
                "nt_type",
                format!("`{other}` is not one of smoothgrad, smoothgrad_sq, vargrad"),
            )),
        }
    }
}

/// Where the noise comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Noise {
    /// `samples` draws of N(0, stdev²) (absolute, in normalised units) from the
    /// counter-based generator of [`crate::rng::standard_normal`].
    Seeded {
        samples: usize,
        stdev: f32,
        seed: u64,
    },
    /// `samples` draws of N(0, stdev²) drawn together by a variance-reduction
    /// `design` ([`super::noise_design`]; the stable preset's noise).
    Designed {
        samples: usize,
        stdev: f32,
        seed: u64,
        design: NoiseDesign,
    },
    /// Given noise (samples, 3, H, W) added to the normalised input — for parity
    /// with a PyTorch run whose noise was dumped.
    Injected(Array4<f32>),
}

impl Noise {
    /// `samples` seeded draws by `design`: [`Noise::Seeded`] for independent
    /// draws (the paper's noise, bit for bit), [`Noise::Designed`] otherwise.
    pub fn drawn(samples: usize, stdev: f32, seed: u64, design: NoiseDesign) -> Noise {
        match design {
            NoiseDesign::Independent => Noise::Seeded {
                samples,
                stdev,
                seed,
            },
            design => Noise::Designed {
                samples,
                stdev,
                seed,
                design,
            },
        }
    }

    /// σ and seed of drawn noise; `None` for injected noise.
    pub fn stdev_and_seed(&self) -> Option<(f32, u64)> {
        match self {
            Noise::Seeded { stdev, seed, .. } | Noise::Designed { stdev, seed, .. } => {
                Some((*stdev, *seed))
            }
            Noise::Injected(_) => None,
        }
    }

    /// The seed of drawn noise, 0 for injected noise: it also seeds the stratified
    /// path points ([`crate::ig::path_points`]), one rule for every engine.
    pub fn seed(&self) -> u64 {
        self.stdev_and_seed().map_or(0, |(_, seed)| seed)
    }

    /// Number of noise samples this source yields.
    pub fn samples(&self) -> usize {
        match self {
            Noise::Seeded { samples, .. } | Noise::Designed { samples, .. } => *samples,
            Noise::Injected(n) => n.dim().0,
        }
    }
}

/// NoiseTunnel settings; the paper uses smoothgrad, 5 samples, stdev 1.0.
#[derive(Debug, Clone, PartialEq)]
pub struct NoiseTunnelConfig {
    pub nt_type: NtType,
    pub noise: Noise,
}

impl Default for NoiseTunnelConfig {
    fn default() -> Self {
        NoiseTunnelConfig {
            nt_type: NtType::SmoothGrad,
            noise: Noise::Seeded {
                samples: 5,
                stdev: 1.0,
                seed: 0,
            },
        }
    }
}

/// The aggregated attribution and the per-sample convergence deltas.
#[derive(Debug, Clone)]
pub struct NtOutput {
    /// (1, 3, H, W)
    pub attribution: Array4<f32>,
    /// One per noise sample (Captum concatenates them); empty unless requested.
    pub deltas: Vec<f32>,
}

/// The noise tensor (samples, 3, H, W) for input `x` (1, 3, H, W).
///
/// # Errors
/// [`Error::InvalidParam`] for zero samples or a bad stdev; [`Error::Shape`] for
/// injected noise of the wrong size.
pub fn make_noise(noise: &Noise, x: ArrayView4<f32>) -> Result<Array4<f32>> {
    let (_, c, h, w) = x.dim();
    match noise {
        Noise::Seeded {
            samples,
            stdev,
            seed,
        } => {
            check_seeded(*samples, *stdev)?;
            let len = c * h * w;
            let data: Vec<f32> = (0..*samples)
                .flat_map(|j| gaussian_noise(*seed, j, len, *stdev))
                .collect();
            Ok(Array4::from_shape_vec((*samples, c, h, w), data).expect("sized above"))
        }
        Noise::Designed {
            samples,
            stdev,
            seed,
            design,
        } => {
            check_seeded(*samples, *stdev)?;
            let data = designed_noise(*design, *seed, *samples, c * h * w, *stdev);
            Ok(Array4::from_shape_vec((*samples, c, h, w), data).expect("sized above"))
        }
        Noise::Injected(n) => {
            let (s, nc, nh, nw) = n.dim();
            if s == 0 || (nc, nh, nw) != (c, h, w) {
                return Err(Error::shape(
                    "noise (samples, 3, H, W)",
                    &[s.max(1), c, h, w],
                    &[s, nc, nh, nw],
                ));
            }
            if n.iter().any(|v| !v.is_finite()) {
                return Err(Error::param("noise", "contains NaN or infinite values"));
            }
            Ok(n.clone())
        }
    }
}

/// Checks the sample count and stdev of drawn noise.
fn check_seeded(samples: usize, stdev: f32) -> Result<()> {
    if samples == 0 {
        return Err(Error::param(
            "nt_samples",
            "must be at least 1 (use plain IG for none)",
        ));
    }
    if !(stdev >= 0.0 && stdev.is_finite()) {
        return Err(Error::param(
            "nt_stdev",
            format!("{stdev} is not a non-negative number"),
        ));
    }
    Ok(())
}

/// Captum's aggregation over the sample axis, in f32, dividing by s.
pub fn aggregate(per_sample: &Array4<f32>, nt_type: NtType) -> Array4<f32> {
    let mut agg = Aggregator::default();
    for a in per_sample.outer_iter() {
        agg.add(a);
    }
    agg.finish(nt_type)
}

/// [`aggregate`] one sample at a time, in sample order (the same sums, the same
/// bits), so that the per-sample attributions need not all be held at once.
#[derive(Debug, Default)]
pub struct Aggregator {
    /// Σ a_j and Σ a_j², once a sample was added.
    sums: Option<(Array3<f32>, Array3<f32>)>,
    samples: usize,
}

impl Aggregator {
    /// Adds the next sample's attribution (3, H, W).
    pub fn add(&mut self, a: ArrayView3<f32>) {
        match &mut self.sums {
            None => self.sums = Some((a.to_owned(), a.mapv(|v| v * v))),
            Some((sum, sum_sq)) => {
                *sum += &a;
                sum_sq.zip_mut_with(&a, |q, &v| *q += v * v);
            }
        }
        self.samples += 1;
    }

    /// The aggregate (1, 3, H, W) of the samples added.
    ///
    /// # Panics
    /// When no sample was added (NoiseTunnel has at least one).
    pub fn finish(self, nt_type: NtType) -> Array4<f32> {
        let s = self.samples as f32;
        let (sum, sum_sq) = self.sums.expect("at least one sample");
        let mean = sum.mapv(|v| v / s);
        let mean_sq = sum_sq.mapv(|v| v / s);
        let out = match nt_type {
            NtType::SmoothGrad => mean,
            NtType::SmoothGradSq => mean_sq,
            NtType::VarGrad => &mean_sq - &(&mean * &mean),
        };
        out.insert_axis(Axis(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregation_by_hand() {
        // Two samples, one value each: a = 1 and 3 → mean 2, mean of squares 5, var 1.
        let a = Array4::from_shape_vec((2, 1, 1, 1), vec![1.0f32, 3.0]).unwrap();
        assert_eq!(aggregate(&a, NtType::SmoothGrad)[[0, 0, 0, 0]], 2.0);
        assert_eq!(aggregate(&a, NtType::SmoothGradSq)[[0, 0, 0, 0]], 5.0);
        assert_eq!(aggregate(&a, NtType::VarGrad)[[0, 0, 0, 0]], 1.0);
    }
}
