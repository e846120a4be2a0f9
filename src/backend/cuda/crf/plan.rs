//! The host's part of a device lattice: sizes, the key packing and the range check,
//! decided exactly as the CPU lattice decides them (`Lattice::build` in
//! src/post/crf/lattice.rs), so both accept and reject the same inputs.

use crate::error::{Error, Result};

/// Largest feature count the kernels handle (`ES_LATTICE_MAX_D`): 2 positional + 6 channels.
pub(crate) const MAX_D: usize = 8;

/// Largest |lattice coordinate| accepted (the CPU's `LIMIT`).
const LIMIT: f64 = (1u64 << 22) as f64;

/// Sizes and key layout of one lattice over `n` points with `d` features.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Plan {
    pub n: usize,
    pub d: usize,
    /// Bits per packed coordinate; 0: the keys are hashed (they do not pack into 64 bits).
    pub bits: u32,
    /// densecrf's SSE padding: the zero feature vector's vertices join when n % 4 ≠ 0.
    pub pad: bool,
    /// Entries: (n + pad)·(d+1); also the bound on the vertex count.
    pub entries: usize,
    /// log2 of the hash table's slot count (at least twice the entries).
    pub shift_bits: u32,
}

/// The CPU's per-axis elevation scale `sf[i]` (f32, from double).
fn scale(d: usize) -> Vec<f32> {
    let inv_std = ((2.0f64 / 3.0).sqrt() * (d + 1) as f64) as f32;
    (0..d)
        .map(|i| (1.0 / (((i + 2) * (i + 1)) as f64).sqrt() * inv_std as f64) as f32)
        .collect()
}

impl Plan {
    /// The plan for `n` points whose features `k` reach at most `max_abs[k]` in magnitude.
    ///
    /// # Errors
    /// [`Error::InvalidParam`] when a coordinate would leave the exact range (as on the
    /// CPU), for more than [`MAX_D`] features, or for sizes beyond the kernels' 32-bit
    /// indices.
    pub(crate) fn new(n: usize, max_abs: &[f64]) -> Result<Plan> {
        let d = max_abs.len();
        if d == 0 || d > MAX_D {
            return Err(Error::param(
                "features",
                format!("DenseCRF on the device takes 1 to {MAX_D} lattice features (2 positional + up to 6 channels), got {d}"),
            ));
        }
        let dp1 = d + 1;
        let bound = max_abs
            .iter()
            .zip(scale(d))
            .enumerate()
            .map(|(k, (m, sf))| (k + 1) as f64 * m * sf as f64)
            .sum::<f64>()
            + 4.0 * dp1 as f64
            + 2.0;
        if bound.is_nan() || bound > LIMIT {
            return Err(Error::param(
                "features",
                format!("lattice coordinates up to {bound:e} out of range: a standard deviation (sxy, srgb) is too small"),
            ));
        }
        // The CPU's packing decision (`Packing::new`); where it fails, hashed keys.
        let bits = (64 / d as u32).min(32);
        let packed = bits >= 2 && bound < ((1i64 << (bits - 1)) - 1) as f64;
        let bits = if packed { bits } else { 0 };
        let pad = !n.is_multiple_of(4);
        let entries = (n + usize::from(pad))
            .checked_mul(dp1)
            .filter(|&e| e < i32::MAX as usize / 2)
            .ok_or_else(|| {
                Error::param(
                    "image",
                    format!("too many pixels ({n}) for DenseCRF on the device"),
                )
            })?;
        let shift_bits = (2 * entries).next_power_of_two().trailing_zeros().max(1);
        Ok(Plan {
            n,
            d,
            bits,
            pad,
            entries,
            shift_bits,
        })
    }

    pub(crate) fn slots(&self) -> usize {
        1 << self.shift_bits
    }

    /// Radix passes of 8 bits that cover every vertex number (< entries).
    pub(crate) fn radix_passes(&self) -> u32 {
        let bits = usize::BITS - (self.entries.max(2) - 1).leading_zeros();
        bits.div_ceil(8).max(1)
    }

    /// densecrf's slice factor `1 / (1 + 2^-d)`, in f32.
    pub(crate) fn alpha(&self) -> f32 {
        1.0f32 / (1.0f32 + 2f32.powi(-(self.d as i32)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_match_the_cpu_decisions() {
        // Positional at 3 px on 480 px, bilateral RGB: packed, padded when n % 4 ≠ 0.
        let p = Plan::new(117 * 121, &[120.0 / 3.0, 116.0 / 3.0]).unwrap();
        assert_eq!((p.bits, p.pad, p.entries), (32, true, (117 * 121 + 1) * 3));
        assert!(p.slots() >= 2 * p.entries);
        let b = Plan::new(64, &[1.3, 1.3, 51.0, 51.0, 51.0]).unwrap();
        assert_eq!((b.bits, b.pad, b.radix_passes()), (12, false, 2));
        // A tiny srgb: out of the exact range, as on the CPU.
        assert!(Plan::new(64, &[1.0, 1.0, 1e9]).is_err());
        // Keys that the CPU hashes: hashed here too.
        assert_eq!(
            Plan::new(64, &[1.0, 1.0, 600.0, 600.0, 600.0])
                .unwrap()
                .bits,
            0
        );
        assert!(Plan::new(64, &[1.0; 9]).is_err());
    }
}
