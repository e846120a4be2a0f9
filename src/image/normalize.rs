//! Pixels → normalised `(1, 3, H, W)` tensors, exactly as torchvision's
//! `ToTensor()` followed by `Normalize(mean, std)`.
//!
//! For every sample `v`, in `f32` and in this order:
//! `x = v as f32 / max` (`max` = 255 for u8, 65535 for u16 — ToTensor divides
//! by 255 in `f32`), then `y = (x - mean[c]) / std[c]` (Normalize's `sub_` then
//! `div_` with `f32` mean/std). Rust does not contract or reorder these
//! operations, so the result is bit-identical to torchvision (checked on every
//! u8 value by `tests/preprocess.rs`).

use ndarray::Array4;

use crate::error::{Error, Result};

/// Per-channel mean and standard deviation, in RGB order, on the [0, 1] scale.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Normalization {
    /// Subtracted from each channel.
    pub mean: [f32; 3],
    /// Each channel is divided by this after the mean is subtracted.
    pub std: [f32; 3],
}

impl Normalization {
    /// ImageNet statistics used by DINO, timm's `.dino` configs and TokenCut:
    /// mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225).
    pub const fn imagenet() -> Self {
        Normalization {
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
        }
    }

    /// mean = std = 0.5 (Hugging Face `ViTImageProcessor` defaults); maps [0, 1] to [−1, 1].
    pub const fn half() -> Self {
        Normalization {
            mean: [0.5; 3],
            std: [0.5; 3],
        }
    }

    /// No normalisation beyond the division to [0, 1].
    pub const fn identity() -> Self {
        Normalization {
            mean: [0.0; 3],
            std: [1.0; 3],
        }
    }

    /// Checks that every mean is finite and every std finite and positive.
    ///
    /// # Errors
    /// [`Error::InvalidParam`] naming the bad field.
    pub fn validate(&self) -> Result<()> {
        if let Some(m) = self.mean.iter().find(|m| !m.is_finite()) {
            return Err(Error::param(
                "normalization.mean",
                format!("must be finite, got {m}"),
            ));
        }
        if let Some(s) = self.std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(Error::param(
                "normalization.std",
                format!("must be finite and > 0, got {s}"),
            ));
        }
        Ok(())
    }
}

impl Default for Normalization {
    /// [`Normalization::imagenet`].
    fn default() -> Self {
        Normalization::imagenet()
    }
}

/// Core loop: HWC samples (already `f32` on the native scale) → NCHW tensor.
fn to_nchw<T: Copy>(
    src: &[T],
    width: u32,
    height: u32,
    norm: &Normalization,
    to_unit: impl Fn(T) -> f32,
) -> Result<Array4<f32>> {
    norm.validate()?;
    let (w, h) = (width as usize, height as usize);
    if w == 0 || h == 0 || src.len() != w * h * 3 {
        return Err(Error::shape(
            "normalize input (height, width, 3)",
            &[h, w, 3],
            &[src.len()],
        ));
    }
    let mut out = Array4::<f32>::zeros((1, 3, h, w));
    for c in 0..3 {
        let (mean, std) = (norm.mean[c], norm.std[c]);
        let mut plane = out.slice_mut(ndarray::s![0, c, .., ..]);
        for (dst, px) in plane.iter_mut().zip(src.chunks_exact(3)) {
            let x = to_unit(px[c]);
            *dst = (x - mean) / std;
        }
    }
    Ok(out)
}

/// 8-bit RGB `(height, width, 3)` → `(1, 3, height, width)`:
/// `((v / 255) - mean) / std` in `f32`.
///
/// # Errors
/// [`Error::Shape`] for a wrong buffer length; [`Error::InvalidParam`] for a bad
/// [`Normalization`].
pub fn normalize_rgb8(
    src: &[u8],
    width: u32,
    height: u32,
    norm: &Normalization,
) -> Result<Array4<f32>> {
    to_nchw(src, width, height, norm, |v| f32::from(v) / 255.0)
}

/// 16-bit RGB `(height, width, 3)` → `(1, 3, height, width)`:
/// `((v / 65535) - mean) / std` in `f32`.
///
/// # Errors
/// As for [`normalize_rgb8`].
pub fn normalize_rgb16(
    src: &[u16],
    width: u32,
    height: u32,
    norm: &Normalization,
) -> Result<Array4<f32>> {
    to_nchw(src, width, height, norm, |v| f32::from(v) / 65535.0)
}

/// Float RGB `(height, width, 3)` on a scale of `0..=max_value` (e.g. the float
/// resize of a 16-bit image, `max_value = 65535`) → `(1, 3, height, width)`:
/// `((v / max_value) - mean) / std` in `f32`. Values are not clamped.
///
/// # Errors
/// As for [`normalize_rgb8`], and [`Error::InvalidParam`] when `max_value` is
/// not finite and positive.
pub fn normalize_rgb_f32(
    src: &[f32],
    width: u32,
    height: u32,
    max_value: f32,
    norm: &Normalization,
) -> Result<Array4<f32>> {
    if !(max_value.is_finite() && max_value > 0.0) {
        return Err(Error::param(
            "max_value",
            format!("must be finite and > 0, got {max_value}"),
        ));
    }
    to_nchw(src, width, height, norm, |v| v / max_value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_nchw() {
        // 2x1 image: pixel 0 = (0, 51, 255), pixel 1 = (255, 0, 102)
        let t =
            normalize_rgb8(&[0, 51, 255, 255, 0, 102], 2, 1, &Normalization::identity()).unwrap();
        assert_eq!(t.shape(), &[1, 3, 1, 2]);
        assert_eq!(t[[0, 0, 0, 0]], 0.0);
        assert_eq!(t[[0, 0, 0, 1]], 1.0);
        assert_eq!(t[[0, 1, 0, 0]], 51.0 / 255.0);
        assert_eq!(t[[0, 2, 0, 1]], 102.0 / 255.0);
    }

    #[test]
    fn imagenet_values() {
        let t = normalize_rgb8(&[255, 255, 255], 1, 1, &Normalization::imagenet()).unwrap();
        // (1 - 0.485) / 0.229 = 2.2489...
        assert!((t[[0, 0, 0, 0]] - 2.248_908_3).abs() < 1e-6);
        let t16 =
            normalize_rgb16(&[65535, 65535, 65535], 1, 1, &Normalization::imagenet()).unwrap();
        assert_eq!(t, t16);
    }

    #[test]
    fn bad_params() {
        let bad = Normalization {
            mean: [0.0; 3],
            std: [1.0, 0.0, 1.0],
        };
        assert!(normalize_rgb8(&[0; 3], 1, 1, &bad).is_err());
        assert!(normalize_rgb8(&[0; 4], 1, 1, &Normalization::imagenet()).is_err());
        assert!(normalize_rgb_f32(&[0.0; 3], 1, 1, 0.0, &Normalization::imagenet()).is_err());
    }
}
