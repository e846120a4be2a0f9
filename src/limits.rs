//! Resource limits: every size that a file or a parameter can ask for is checked
//! against these before memory is reserved, so that a small hostile input cannot
//! make the host allocate gigabytes, spin for hours or abort.
//!
//! The limits are process-wide (one [`Limits`] value behind a lock): read them
//! with [`current`], change them with [`set`]. The command line sets them with
//! `--limit NAME=VALUE` (repeatable) and `--lenient`; the C ABI with
//! `explainseg_limits_set`. Exceeding one gives [`Error::LimitExceeded`] naming
//! the limit, the value asked for and the maximum. `docs/reliability.md` lists
//! the defaults and why they were chosen.

use std::sync::RwLock;

use crate::error::{Error, Result};

/// The limits, with defaults that suit a scanner processing untrusted files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Pixels (width × height) of any image decoded or resized: 2^26 (8192²).
    pub image_pixels: u64,
    /// Bytes a decoder may allocate for one image's samples: 2^29 (512 MiB).
    pub decoded_bytes: u64,
    /// Tokens (patches + CLS) of one network input: 1025 (a 32×32 patch grid).
    pub tokens: u64,
    /// Elements of one `.npy` array: 2^26 (256 MiB of f32).
    pub npy_elements: u64,
    /// Images or tiles of one data set: 2^20.
    pub dataset_items: u64,
    /// IG steps × NoiseTunnel samples (network passes per explanation): 10 000.
    pub ig_passes: u64,
    /// DenseCRF mean-field iterations: 1000.
    pub crf_iterations: u64,
    /// Cells of a Shi–Malik NCut grid: 65 536 (256²).
    pub ncut_nodes: u64,
    /// Edges of a Shi–Malik NCut graph (cells × neighbourhood): 2^25.
    pub ncut_edges: u64,
    /// Nodes of a dense TokenCut/MaskCut graph: 4096 (a 64×64 patch grid).
    pub tokencut_nodes: u64,
    /// Dilation radius of the NCut foreground, in pixels: 1024.
    pub dilation_px: u64,
    /// Worker threads of one call or run: 256.
    pub threads: u64,
    /// Accept damaged images as the decoders did before (JPEG warnings such as
    /// corrupt scan data, DICOM BitsStored 0 or a PixelData length that does not
    /// match the header). Off by default: such files are errors.
    pub lenient_decoding: bool,
}

impl Limits {
    /// The defaults (see the field docs).
    pub const DEFAULT: Limits = Limits {
        image_pixels: 1 << 26,
        decoded_bytes: 1 << 29,
        tokens: 1025,
        npy_elements: 1 << 26,
        dataset_items: 1 << 20,
        ig_passes: 10_000,
        crf_iterations: 1000,
        ncut_nodes: 1 << 16,
        ncut_edges: 1 << 25,
        tokencut_nodes: 4096,
        dilation_px: 1024,
        threads: 256,
        lenient_decoding: false,
    };

    /// Every numeric limit by its name (as `--limit NAME=VALUE` spells it).
    pub const NAMES: [&'static str; 12] = [
        "image_pixels",
        "decoded_bytes",
        "tokens",
        "npy_elements",
        "dataset_items",
        "ig_passes",
        "crf_iterations",
        "ncut_nodes",
        "ncut_edges",
        "tokencut_nodes",
        "dilation_px",
        "threads",
    ];

    /// The value of the limit called `name`.
    pub fn get(&self, name: &str) -> Option<u64> {
        Some(match name {
            "image_pixels" => self.image_pixels,
            "decoded_bytes" => self.decoded_bytes,
            "tokens" => self.tokens,
            "npy_elements" => self.npy_elements,
            "dataset_items" => self.dataset_items,
            "ig_passes" => self.ig_passes,
            "crf_iterations" => self.crf_iterations,
            "ncut_nodes" => self.ncut_nodes,
            "ncut_edges" => self.ncut_edges,
            "tokencut_nodes" => self.tokencut_nodes,
            "dilation_px" => self.dilation_px,
            "threads" => self.threads,
            _ => return None,
        })
    }

    fn slot(&mut self, name: &str) -> Option<&mut u64> {
        Some(match name {
            "image_pixels" => &mut self.image_pixels,
            "decoded_bytes" => &mut self.decoded_bytes,
            "tokens" => &mut self.tokens,
            "npy_elements" => &mut self.npy_elements,
            "dataset_items" => &mut self.dataset_items,
            "ig_passes" => &mut self.ig_passes,
            "crf_iterations" => &mut self.crf_iterations,
            "ncut_nodes" => &mut self.ncut_nodes,
            "ncut_edges" => &mut self.ncut_edges,
            "tokencut_nodes" => &mut self.tokencut_nodes,
            "dilation_px" => &mut self.dilation_px,
            "threads" => &mut self.threads,
            _ => return None,
        })
    }

    /// Sets the limit called `name` to `value` (at least 1).
    ///
    /// # Errors
    /// [`Error::InvalidParam`] for an unknown name or a zero value.
    pub fn set_named(&mut self, name: &str, value: u64) -> Result<()> {
        if value == 0 {
            return Err(Error::param(
                "limit",
                format!("`{name}` must be at least 1"),
            ));
        }
        let slot = self.slot(name).ok_or_else(|| {
            Error::param(
                "limit",
                format!(
                    "unknown limit `{name}`; known: {}",
                    Limits::NAMES.join(", ")
                ),
            )
        })?;
        *slot = value;
        Ok(())
    }

    /// Applies `NAME=VALUE` (as given to `--limit`).
    ///
    /// # Errors
    /// [`Error::InvalidParam`] when malformed, unknown or zero.
    pub fn apply(&mut self, spec: &str) -> Result<()> {
        let (name, value) = spec
            .split_once('=')
            .ok_or_else(|| Error::param("limit", format!("`{spec}` is not NAME=VALUE")))?;
        let value: u64 =
            value.trim().replace('_', "").parse().map_err(|_| {
                Error::param("limit", format!("`{value}` is not a positive integer"))
            })?;
        self.set_named(name.trim(), value)
    }

    /// Checks every field (all numeric limits at least 1).
    ///
    /// # Errors
    /// [`Error::InvalidParam`] naming the first zero limit.
    pub fn validate(&self) -> Result<()> {
        for name in Limits::NAMES {
            if self.get(name) == Some(0) {
                return Err(Error::param(
                    "limit",
                    format!("`{name}` must be at least 1"),
                ));
            }
        }
        Ok(())
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

static LIMITS: RwLock<Limits> = RwLock::new(Limits::DEFAULT);

/// The limits now in force.
pub fn current() -> Limits {
    *LIMITS.read().unwrap_or_else(|p| p.into_inner())
}

/// Replaces the limits for the whole process.
///
/// # Errors
/// [`Error::InvalidParam`] when a limit is zero (nothing is changed then).
pub fn set(limits: Limits) -> Result<()> {
    limits.validate()?;
    *LIMITS.write().unwrap_or_else(|p| p.into_inner()) = limits;
    Ok(())
}

/// True when damaged images are to be accepted (see [`Limits::lenient_decoding`]).
pub fn lenient() -> bool {
    current().lenient_decoding
}

/// `Err(LimitExceeded)` when `asked` is above the limit called `name`.
///
/// # Errors
/// [`Error::LimitExceeded`].
pub fn check(name: &'static str, asked: u64) -> Result<()> {
    let max = current().get(name).unwrap_or(u64::MAX);
    if asked > max {
        return Err(Error::LimitExceeded {
            limit: name,
            asked,
            max,
        });
    }
    Ok(())
}

/// [`check`] of a product computed with overflow checks; an overflowing product
/// is reported as `u64::MAX` asked.
///
/// # Errors
/// [`Error::LimitExceeded`].
pub fn check_product(name: &'static str, factors: &[u64]) -> Result<u64> {
    let n = factors
        .iter()
        .try_fold(1u64, |acc, &f| acc.checked_mul(f))
        .unwrap_or(u64::MAX);
    check(name, n)?;
    Ok(n)
}

/// A vector of `n` copies of `value`, its memory reserved with `try_reserve`:
/// a refused allocation is [`Error::OutOfMemory`] naming `what`, never an abort.
/// For buffers whose size comes from a file or a parameter (after [`check`]).
///
/// # Errors
/// [`Error::OutOfMemory`].
pub fn try_vec<T: Clone>(n: usize, value: T, what: &'static str) -> Result<Vec<T>> {
    let mut v = try_with_capacity(n, what)?;
    v.resize(n, value);
    Ok(v)
}

/// An empty vector with room for `n` elements, reserved as in [`try_vec`].
///
/// # Errors
/// [`Error::OutOfMemory`].
pub fn try_with_capacity<T>(n: usize, what: &'static str) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| Error::OutOfMemory {
        what,
        bytes: (n as u64).saturating_mul(std::mem::size_of::<T>() as u64),
    })?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_reject_zero() {
        let mut l = Limits::DEFAULT;
        for name in Limits::NAMES {
            assert!(l.get(name).is_some(), "{name}");
            l.set_named(name, 7).unwrap();
            assert_eq!(l.get(name), Some(7));
        }
        assert!(l.apply("tokens=0").is_err());
        assert!(l.apply("nonsense=3").is_err());
        assert!(l.apply("tokens").is_err());
        l.apply("tokens=4_097").unwrap();
        assert_eq!(l.tokens, 4097);
    }

    #[test]
    fn impossible_allocations_are_errors() {
        assert!(matches!(
            try_vec(usize::MAX / 2, 0u8, "a test buffer"),
            Err(Error::OutOfMemory {
                what: "a test buffer",
                ..
            })
        ));
        assert!(try_with_capacity::<u64>(usize::MAX / 4, "x").is_err());
        assert_eq!(try_vec(3, 7u16, "x").unwrap(), [7, 7, 7]);
    }

    #[test]
    fn overflowing_products_exceed() {
        assert!(matches!(
            check_product("image_pixels", &[u64::MAX, 3]),
            Err(Error::LimitExceeded {
                asked: u64::MAX,
                ..
            })
        ));
        assert_eq!(check_product("image_pixels", &[4, 4]).unwrap(), 16);
    }
}
