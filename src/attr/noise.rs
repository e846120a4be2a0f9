//! Seeded Gaussian noise for NoiseTunnel, counter-based so that any element can be
//! generated independently (the CUDA backend produces the same values on device).
//!
//! Element `e` of sample `j` (flat index i = j·len + e) takes the 64-bit SplitMix64
//! finaliser of `seed + (i + 1)·φ64`, splits it into two 32-bit uniforms u₁ ∈ (0, 1],
//! u₂ ∈ [0, 1) and applies Box–Muller (cosine branch) in f64. PyTorch's generator
//! cannot be reproduced from Rust; for parity, inject the noise tensor instead.
//!
//! ln and cos are evaluated here with IEEE basic operations only (+ − × ÷ √, no
//! fused multiply-add), in a fixed order: the library `ln`/`cos` of the host and of
//! CUDA may differ in the last bit, these do not. `kernels/ig.cu` repeats them with
//! the round-to-nearest intrinsics, so the GPU's noise is bit-identical to this.

const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

fn splitmix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// ln(u) for normal u > 0: u = 2^e·m with m ∈ [√½, √2), ln m = 2·atanh(s),
/// s = (m − 1)/(m + 1), |s| ≤ 0.172, by 14 terms of its odd series (error < 1e-16).
pub(crate) fn ln_portable(u: f64) -> f64 {
    let bits = u.to_bits();
    let mut e = ((bits >> 52) & 0x7FF) as i64 - 1023;
    let mut m = f64::from_bits((bits & 0x000F_FFFF_FFFF_FFFF) | (1023u64 << 52));
    if m > std::f64::consts::SQRT_2 {
        m /= 2.0;
        e += 1;
    }
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let mut acc = 1.0 / 29.0;
    for k in (0..14).rev() {
        acc = 1.0 / (2 * k + 1) as f64 + s2 * acc;
    }
    e as f64 * std::f64::consts::LN_2 + 2.0 * s * acc
}

/// cos(2π·v) for v ∈ [0, 1): the quadrant q = round(4v) and the remainder
/// r = 4v − q ∈ [−½, ½] are exact, θ = r·π/2 ∈ [−π/4, π/4], and cos θ or sin θ come
/// from 11 nested Taylor factors (error < 1e-16).
pub(crate) fn cos_2pi_portable(v: f64) -> f64 {
    let v4 = 4.0 * v;
    let q = (v4 + 0.5).floor();
    let theta = (v4 - q) * std::f64::consts::FRAC_PI_2;
    let t2 = theta * theta;
    let (mut c, mut s) = (1.0, 1.0);
    for k in (1..=11).rev() {
        let k = k as f64;
        c = 1.0 - t2 * c / ((2.0 * k - 1.0) * (2.0 * k));
        s = 1.0 - t2 * s / ((2.0 * k) * (2.0 * k + 1.0));
    }
    let s = theta * s;
    match (q as i64) & 3 {
        0 => c,
        1 => -s,
        2 => -c,
        _ => s,
    }
}

/// N(0, 1) sample number `index` of the stream `seed`.
pub fn standard_normal(seed: u64, index: u64) -> f64 {
    let bits = splitmix64(seed.wrapping_add(index.wrapping_add(1).wrapping_mul(GOLDEN_GAMMA)));
    let u1 = ((bits >> 32) as f64 + 1.0) / 4_294_967_296.0;
    let u2 = (bits & 0xFFFF_FFFF) as f64 / 4_294_967_296.0;
    (-2.0 * ln_portable(u1)).sqrt() * cos_2pi_portable(u2)
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
    fn portable_ln_and_cos_agree_with_the_library() {
        for i in 1..=20_000u64 {
            let u = (i * 214_013 % 4_294_967_296) as f64 / 4_294_967_296.0 + 2.3e-10;
            let (got, want) = (ln_portable(u), u.ln());
            assert!(
                (got - want).abs() <= 4e-16 * want.abs().max(1.0),
                "ln({u}) = {got} vs {want}"
            );
            let v = (i as f64 * 0.618_033_988_749_894_9).fract();
            let (got, want) = (cos_2pi_portable(v), (std::f64::consts::TAU * v).cos());
            assert!((got - want).abs() < 1e-15, "cos(2π·{v}) = {got} vs {want}");
        }
        assert_eq!(ln_portable(1.0), 0.0);
        assert_eq!(cos_2pi_portable(0.0), 1.0);
        assert_eq!(cos_2pi_portable(0.5), -1.0);
    }

    #[test]
    fn streams_are_reproducible_and_distinct() {
        assert_eq!(gaussian_noise(1, 0, 16, 2.0), gaussian_noise(1, 0, 16, 2.0));
        assert_ne!(gaussian_noise(1, 0, 16, 1.0), gaussian_noise(2, 0, 16, 1.0));
        assert_ne!(gaussian_noise(1, 0, 16, 1.0), gaussian_noise(1, 1, 16, 1.0));
    }
}
