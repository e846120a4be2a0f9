//! The arithmetic of the CUDA engine's GEMMs ([`Precision`]) and the operand
//! rounding each mode implies, which the emulated device applies before its f32
//! GEMM (docs/cuda_emulation.md §1.5).
//!
//! TF32 and bf16 are tensor-core modes of cuBLAS with f32 inputs and outputs: the
//! library rounds A and B to the narrower format and accumulates in f32
//! (`CUBLAS_COMPUTE_32F_FAST_TF32`, `CUBLAS_COMPUTE_32F_FAST_16BF`). Only f32 is
//! faithful to the references; the other two trade accuracy for speed.

use crate::error::{Error, Result};

/// How the engine's GEMMs compute. Every other operation stays f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum Precision {
    /// f32 operands and accumulation (cuBLAS `sgemm`): the faithful default.
    #[default]
    F32,
    /// Operands rounded to TF32 (8-bit exponent, 10 mantissa bits), f32 accumulation.
    Tf32,
    /// Operands rounded to bfloat16 (8-bit exponent, 7 mantissa bits), f32 accumulation.
    Bf16,
}

impl Precision {
    pub const ALL: [Precision; 3] = [Precision::F32, Precision::Tf32, Precision::Bf16];

    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Tf32 => "tf32",
            Precision::Bf16 => "bf16",
        }
    }

    /// `x` as a GEMM operand in this mode, widened back to f32 (exact: both narrow
    /// formats are f32 with low mantissa bits cleared).
    pub fn round_operand(self, x: f32) -> f32 {
        match self {
            Precision::F32 => x,
            Precision::Tf32 => round_tf32(x),
            Precision::Bf16 => round_bf16(x),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Precision {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "fp32" => Ok(Precision::F32),
            "tf32" => Ok(Precision::Tf32),
            "bf16" => Ok(Precision::Bf16),
            other => Err(Error::param(
                "precision",
                format!("`{other}` is not one of f32, tf32, bf16"),
            )),
        }
    }
}

/// Clears the low `dropped` mantissa bits of `x` after adding `bias`, which
/// decides the rounding; NaN and infinity pass unchanged (a NaN made quiet).
fn round_mantissa(x: f32, dropped: u32, bias: impl Fn(u32) -> u32) -> f32 {
    if !x.is_finite() {
        return if x.is_nan() {
            f32::from_bits(x.to_bits() | 0x0040_0000)
        } else {
            x
        };
    }
    let bits = x.to_bits();
    let mask = (1u32 << dropped) - 1;
    // In sign-magnitude the carry out of the mantissa bumps the exponent, which is
    // the right result (up to infinity past the largest finite value).
    f32::from_bits(bits.wrapping_add(bias(bits)) & !mask)
}

/// Round to the nearest TF32 value, ties away from zero (PTX `cvt.rna.tf32.f32`):
/// 13 of f32's 23 mantissa bits dropped.
pub fn round_tf32(x: f32) -> f32 {
    round_mantissa(x, 13, |_| 1 << 12)
}

/// Round to the nearest bfloat16 value, ties to even: 16 mantissa bits dropped.
pub fn round_bf16(x: f32) -> f32 {
    round_mantissa(x, 16, |bits| 0x7FFF + ((bits >> 16) & 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nearest multiple of the format's spacing at |x| (f64, exact for these
    /// magnitudes), ties away from zero or to even.
    fn reference(x: f32, mantissa_bits: i32, ties_even: bool) -> f32 {
        let a = f64::from(x).abs();
        let e = a.log2().floor() as i32;
        let ulp = 2f64.powi(e - mantissa_bits);
        let q = a / ulp;
        let lo = q.floor();
        let r = if q - lo > 0.5 {
            lo + 1.0
        } else if q - lo < 0.5 {
            lo
        } else if ties_even {
            if lo % 2.0 == 0.0 {
                lo
            } else {
                lo + 1.0
            }
        } else {
            lo + 1.0
        };
        (r * ulp).copysign(f64::from(x)) as f32
    }

    #[test]
    fn names_parse_and_unknown_names_are_an_error() {
        for p in Precision::ALL {
            assert_eq!(p.name().parse::<Precision>().unwrap(), p);
        }
        assert_eq!("BF16".parse::<Precision>().unwrap(), Precision::Bf16);
        let err = "fp16".parse::<Precision>().unwrap_err().to_string();
        assert!(err.contains("f32, tf32, bf16"), "{err}");
        assert_eq!(Precision::default(), Precision::F32);
    }

    #[test]
    fn the_cpu_engine_takes_f32_only() {
        use crate::backend::{engine_for, Device, EngineOptions};
        let mut cfg = crate::model::VitConfig::standard("ti", 16, 32).unwrap();
        cfg.depth = 1;
        let vit = crate::model::Vit::random(cfg, 1, 2);
        let on_cpu = |precision| {
            engine_for(
                EngineOptions {
                    device: Device::Cpu,
                    precision,
                },
                &vit,
            )
        };
        assert_eq!(on_cpu(Precision::F32).unwrap().precision(), Precision::F32);
        for p in [Precision::Tf32, Precision::Bf16] {
            match on_cpu(p).map(|_| ()) {
                Err(Error::InvalidParam { name, reason }) => {
                    assert_eq!(name, "precision");
                    assert!(reason.contains("f32 only"), "{reason}");
                }
                other => panic!("{p} on the cpu: {other:?}"),
            }
        }
    }

    #[test]
    fn ties_round_away_for_tf32_and_to_even_for_bf16() {
        // 1 + 2^-11 is half way between the TF32 neighbours 1 and 1 + 2^-10.
        assert_eq!(round_tf32(1.0 + 2f32.powi(-11)), 1.0 + 2f32.powi(-10));
        assert_eq!(round_tf32(-(1.0 + 2f32.powi(-11))), -(1.0 + 2f32.powi(-10)));
        // bf16 spacing at 1 is 2^-7: 1 + 2^-8 ties to 1 (even), 1 + 3·2^-8 to 1 + 2^-6.
        assert_eq!(round_bf16(1.0 + 2f32.powi(-8)), 1.0);
        assert_eq!(round_bf16(1.0 + 3.0 * 2f32.powi(-8)), 1.0 + 2f32.powi(-6));
        assert_eq!(round_bf16(f32::MAX), f32::INFINITY);
        assert!(round_tf32(f32::NAN).is_nan() && round_bf16(f32::NAN).is_nan());
        assert_eq!(round_bf16(f32::NEG_INFINITY), f32::NEG_INFINITY);
        assert_eq!(Precision::F32.round_operand(0.1), 0.1);
    }

    #[test]
    fn rounding_matches_the_nearest_value_of_each_format() {
        let mut s = 0x1234_5678_u64;
        for _ in 0..20_000 {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            // f32 values of both signs across the binades far from under/overflow.
            let x = f32::from_bits((s >> 32) as u32);
            if !x.is_normal() || !(1e-30..1e30).contains(&x.abs()) {
                continue;
            }
            assert_eq!(round_tf32(x), reference(x, 10, false), "tf32 {x:e}");
            assert_eq!(round_bf16(x), reference(x, 7, true), "bf16 {x:e}");
            assert_eq!(
                round_bf16(x),
                half::bf16::from_f32(x).to_f32(),
                "bf16 {x:e}"
            );
        }
    }
}
