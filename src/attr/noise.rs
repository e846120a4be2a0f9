//! Seeded Gaussian noise for NoiseTunnel, counter-based so that any element can be
//! generated independently (the CUDA backend produces the same values on device).
//!
//! Element `e` of sample `j` (flat index i = j·len + e) takes the 64-bit SplitMix64
//! finaliser of `seed + (i + 1)·φ64`, splits it into two 32-bit uniforms u₁ ∈ (0, 1],
//! u₂ ∈ [0, 1) and applies Box–Muller (cosine branch) in f64. PyTorch's generator
//! cannot be reproduced from Rust; for parity, inject the noise tensor instead.

const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

fn splitmix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// N(0, 1) sample number `index` of the stream `seed`.
pub fn standard_normal(seed: u64, index: u64) -> f64 {
    let bits = splitmix64(seed.wrapping_add(index.wrapping_add(1).wrapping_mul(GOLDEN_GAMMA)));
    let u1 = ((bits >> 32) as f64 + 1.0) / 4_294_967_296.0;
    let u2 = (bits & 0xFFFF_FFFF) as f64 / 4_294_967_296.0;
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// `len` values of N(0, stdev²) for NoiseTunnel sample `sample`.
pub fn gaussian_noise(seed: u64, sample: usize, len: usize, stdev: f32) -> Vec<f32> {
    let base = sample as u64 * len as u64;
    (0..len as u64)
        .map(|e| (standard_normal(seed, base + e) * stdev as f64) as f32)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moments_are_those_of_a_standard_normal() {
        let v = gaussian_noise(7, 3, 200_000, 1.0);
        let n = v.len() as f64;
        let mean = v.iter().map(|x| *x as f64).sum::<f64>() / n;
        let var = v.iter().map(|x| (*x as f64 - mean).powi(2)).sum::<f64>() / n;
        let kurt = v.iter().map(|x| (*x as f64 - mean).powi(4)).sum::<f64>() / n / (var * var);
        assert!(
            mean.abs() < 0.01 && (var - 1.0).abs() < 0.01 && (kurt - 3.0).abs() < 0.05,
            "{mean} {var} {kurt}"
        );
    }

    #[test]
    fn streams_are_reproducible_and_distinct() {
        assert_eq!(gaussian_noise(1, 0, 16, 2.0), gaussian_noise(1, 0, 16, 2.0));
        assert_ne!(gaussian_noise(1, 0, 16, 1.0), gaussian_noise(2, 0, 16, 1.0));
        assert_ne!(gaussian_noise(1, 0, 16, 1.0), gaussian_noise(1, 1, 16, 1.0));
    }
}
