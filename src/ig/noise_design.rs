//! Variance-reduced NoiseTunnel noise (docs/method.md §6.1): the same N(0, σ²)
//! marginal per sample and element as [`crate::rng::gaussian_noise`], but the
//! samples are drawn together so that their mean is closer to the expectation
//! NoiseTunnel estimates.
//!
//! * **Antithetic**: samples come in pairs (ε, −ε). A smoothgrad mean over a pair
//!   cancels every term of the attribution that is odd in ε — the first-order
//!   response of the model to the noise, which dominates its spread.
//! * **Stratified** (Latin hypercube per element): for each input element the
//!   `s` samples take one uniform from each of the `s` equal strata of (0, 1), in
//!   a seeded random order, mapped through Φ⁻¹; so every element sees an evenly
//!   spread set of noise values instead of `s` independent draws.
//! * **Stratified antithetic**: the first ⌈s/2⌉ samples are stratified over
//!   ⌈s/2⌉ strata, the rest are their negatives.
//!
//! Every value is a pure function of `(seed, element, sample)`, so the noise does
//! not depend on threads or on the engine (the CUDA engine draws the same bits on
//! the device, `nt_designed_f32` in kernels/ig.cu).

use crate::error::{Error, Result};
use crate::rng::{gaussian_noise, ln_portable, Rng};

/// How the noise samples are drawn together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NoiseDesign {
    /// Independent draws ([`crate::rng::gaussian_noise`], the paper's).
    #[default]
    Independent,
    Antithetic,
    Stratified,
    StratifiedAntithetic,
}

impl NoiseDesign {
    pub const ALL: [NoiseDesign; 4] = [
        NoiseDesign::Independent,
        NoiseDesign::Antithetic,
        NoiseDesign::Stratified,
        NoiseDesign::StratifiedAntithetic,
    ];

    pub fn name(self) -> &'static str {
        match self {
            NoiseDesign::Independent => "independent",
            NoiseDesign::Antithetic => "antithetic",
            NoiseDesign::Stratified => "stratified",
            NoiseDesign::StratifiedAntithetic => "stratified-antithetic",
        }
    }
}

impl std::str::FromStr for NoiseDesign {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        NoiseDesign::ALL
            .into_iter()
            .find(|d| d.name() == s)
            .ok_or_else(|| {
                Error::param(
                    "noise_design",
                    format!("`{s}` is not one of independent, antithetic, stratified, stratified-antithetic"),
                )
            })
    }
}

/// Key of the stratified streams, apart from the independent noise of the same seed.
const STRATA_KEY: u64 = 0x5354_5241_5441; // "STRATA"

/// `samples` noise images of `len` values each, sample-major, drawn by `design`.
pub fn designed_noise(
    design: NoiseDesign,
    seed: u64,
    samples: usize,
    len: usize,
    stdev: f32,
) -> Vec<f32> {
    let half = samples.div_ceil(2);
    match design {
        NoiseDesign::Independent => (0..samples)
            .flat_map(|j| gaussian_noise(seed, j, len, stdev))
            .collect(),
        NoiseDesign::Antithetic => {
            let first: Vec<f32> = (0..half)
                .flat_map(|j| gaussian_noise(seed, j, len, stdev))
                .collect();
            mirrored(first, samples, len)
        }
        NoiseDesign::Stratified => stratified(seed, samples, len, stdev),
        NoiseDesign::StratifiedAntithetic => {
            mirrored(stratified(seed, half, len, stdev), samples, len)
        }
    }
}

/// `first` (⌈s/2⌉ samples) followed by the negatives of its first ⌊s/2⌋ samples.
fn mirrored(mut first: Vec<f32>, samples: usize, len: usize) -> Vec<f32> {
    let negatives: Vec<f32> = first[..(samples / 2) * len].iter().map(|v| -v).collect();
    first.extend(negatives);
    first
}

/// Latin-hypercube normals: element `e` of sample `j` is
/// `σ·Φ⁻¹((π_e(j) + u_{e,j})/s)`, `π_e` a seeded permutation of the strata.
/// Elements are drawn in parallel chunks (each value is a pure function of
/// `(seed, e, j)`, so the result does not depend on the threads).
fn stratified(seed: u64, samples: usize, len: usize, stdev: f32) -> Vec<f32> {
    use rayon::prelude::*;
    const CHUNK: usize = 256;
    // Each chunk's values, sample-major within the chunk.
    let chunks: Vec<Vec<f32>> = (0..len.div_ceil(CHUNK))
        .into_par_iter()
        .map(|c| {
            let (e0, e1) = (c * CHUNK, ((c + 1) * CHUNK).min(len));
            let width = e1 - e0;
            let mut block = vec![0f32; samples * width];
            let mut strata: Vec<usize> = (0..samples).collect();
            let s = samples as f64;
            for e in e0..e1 {
                let mut rng = Rng::stream(seed, &[STRATA_KEY, e as u64]);
                strata.iter_mut().enumerate().for_each(|(j, k)| *k = j);
                rng.shuffle(&mut strata);
                for (j, &k) in strata.iter().enumerate() {
                    let u = rng.uniform_open_f64();
                    block[j * width + e - e0] =
                        (inverse_normal_cdf((k as f64 + u) / s) * stdev as f64) as f32;
                }
            }
            block
        })
        .collect();
    let mut out = vec![0f32; samples * len];
    out.par_chunks_mut(len).enumerate().for_each(|(j, row)| {
        for (c, block) in chunks.iter().enumerate() {
            let e0 = c * CHUNK;
            let width = block.len() / samples;
            row[e0..e0 + width].copy_from_slice(&block[j * width..(j + 1) * width]);
        }
    });
    out
}

/// Φ⁻¹(p) for p ∈ (0, 1) by Acklam's rational approximation (relative error
/// < 1.2e-9, far below the f32 the noise is stored in); the CUDA kernel
/// `nt_designed_f32` (kernels/ig.cu) is its twin.
pub fn inverse_normal_cdf(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    const P_LOW: f64 = 0.02425;
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    // The portable ln (crate::rng), so that the device draws the same bits.
    if p < P_LOW {
        tail((-2.0 * ln_portable(p)).sqrt())
    } else if p <= 1.0 - P_LOW {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        -tail((-2.0 * ln_portable(1.0 - p)).sqrt())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inverse_normal_cdf_matches_tabulated_quantiles() {
        // Standard normal quantiles (e.g. scipy.stats.norm.ppf).
        for (p, z) in [
            (0.5, 0.0),
            (0.975, 1.959_963_984_540_054),
            (0.025, -1.959_963_984_540_054),
            (0.841_344_746_068_542_9, 1.0),
            (0.001, -3.090_232_306_167_813_5),
            (0.999_999, 4.753_424_308_822_899),
        ] {
            let got = inverse_normal_cdf(p);
            assert!(
                (got - z).abs() < 1e-8 * z.abs().max(1.0),
                "Φ⁻¹({p}) = {got}, not {z}"
            );
        }
    }

    #[test]
    fn antithetic_samples_cancel_in_pairs() {
        for design in [NoiseDesign::Antithetic, NoiseDesign::StratifiedAntithetic] {
            let (s, len) = (5, 7);
            let n = designed_noise(design, 3, s, len, 1.5);
            assert_eq!(n.len(), s * len);
            for j in 0..s / 2 {
                for e in 0..len {
                    assert_eq!(n[(3 + j) * len + e], -n[j * len + e], "{design:?}");
                }
            }
        }
    }

    #[test]
    fn stratified_samples_take_one_value_per_stratum() {
        let (s, len) = (8, 50);
        let n = designed_noise(NoiseDesign::Stratified, 9, s, len, 1.0);
        for e in 0..len {
            let mut strata: Vec<usize> = (0..s)
                .map(|j| {
                    // Φ(z) by bisection on Φ⁻¹ (monotone), enough to find the stratum.
                    let z = n[j * len + e] as f64;
                    let (mut lo, mut hi) = (0.0f64, 1.0f64);
                    for _ in 0..60 {
                        let mid = 0.5 * (lo + hi);
                        if inverse_normal_cdf(mid) < z {
                            lo = mid;
                        } else {
                            hi = mid;
                        }
                    }
                    (lo * s as f64) as usize
                })
                .collect();
            strata.sort_unstable();
            assert_eq!(strata, (0..s).collect::<Vec<_>>(), "element {e}");
        }
    }

    #[test]
    fn independent_design_is_the_plain_stream() {
        let n = designed_noise(NoiseDesign::Independent, 4, 3, 10, 0.5);
        let plain: Vec<f32> = (0..3).flat_map(|j| gaussian_noise(4, j, 10, 0.5)).collect();
        assert_eq!(n, plain);
    }

    #[test]
    fn designs_are_deterministic_and_seeded() {
        for d in NoiseDesign::ALL {
            let a = designed_noise(d, 1, 4, 16, 1.0);
            assert_eq!(a, designed_noise(d, 1, 4, 16, 1.0));
            assert_ne!(a, designed_noise(d, 2, 4, 16, 1.0));
            assert!(a.iter().all(|v| v.is_finite()));
        }
    }
}
