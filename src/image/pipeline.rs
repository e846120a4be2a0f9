//! The preprocessing pipeline: resize mode → resize → crop → normalise.
//!
//! The default, [`ResizeMode::DinoEval`] 256/224 with ImageNet statistics,
//! reproduces DINO's `eval_linear` transform on a PIL image:
//! `Resize(256, interpolation=BICUBIC)`, `CenterCrop(224)`, `ToTensor()`,
//! `Normalize(IMAGENET_MEAN, IMAGENET_STD)`; bit-identical for 8-bit images.
//!
//! 16-bit images take the float path: the samples are resized as `f32`
//! (no rounding to integers, no clamping; Pillow mode `"F"` arithmetic), cropped,
//! and divided by 65535. torchvision has no 16-bit PIL path to compare with.

use std::path::Path;

use ndarray::{Array3, Array4};

use crate::error::{Error, Result};
use crate::image::decode::{check_size, decode_image_file, DecodedImage, Pixels};
use crate::image::normalize::{normalize_rgb8, normalize_rgb_f32, Normalization};
use crate::image::resize::{crop, resize_rgb8, resize_rgb_f32, CropBox, ResampleFilter};

/// How an image is brought to the network's input size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResizeMode {
    /// Keep the decoded size.
    None,
    /// torchvision `Resize(short_side)` then `CenterCrop(crop)` (DINO eval:
    /// 256 / 224). See [`ResizeMode::ShortSide`] and [`CropBox::center`].
    DinoEval {
        /// Target of the shorter side.
        short_side: u32,
        /// Side of the square centre crop; at most `short_side`.
        crop: u32,
    },
    /// torchvision `Resize(short_side)`: the shorter side becomes `short_side`,
    /// the longer `trunc(short_side · long / short)` (computed in `f64` like
    /// Python's `int(size * long / short)`). No crop.
    ShortSide {
        /// Target of the shorter side.
        short_side: u32,
    },
    /// Resize to exactly `height × width`; aspect ratio not kept
    /// (torchvision `Resize((height, width))`, DINO `visualize_attention`).
    Fixed {
        /// Output rows.
        height: u32,
        /// Output columns.
        width: u32,
    },
    /// Each side to the nearest multiple of `patch`, `round(side / patch) · patch`
    /// with Python's round-half-to-even and at least one patch (TokenCut, per
    /// docs/method.md §4, where it is used with Lanczos). No crop.
    PatchMultiple {
        /// Patch size in pixels (e.g. 16 or 8).
        patch: u32,
    },
}

impl ResizeMode {
    /// DINO eval: short side 256, centre crop 224.
    pub const fn dino_eval() -> Self {
        ResizeMode::DinoEval {
            short_side: 256,
            crop: 224,
        }
    }

    /// Checks the sizes.
    ///
    /// # Errors
    /// [`Error::InvalidParam`] for a zero size or a crop larger than the short side.
    pub fn validate(&self) -> Result<()> {
        match *self {
            ResizeMode::None => Ok(()),
            ResizeMode::DinoEval { short_side, crop } => {
                crate::limits::check_product("image_pixels", &[crop as u64, crop as u64])?;
                if short_side == 0 || crop == 0 || crop > short_side {
                    return Err(Error::param(
                        "resize.crop",
                        format!(
                            "need 0 < crop <= short_side, got crop {crop}, short_side {short_side}"
                        ),
                    ));
                }
                Ok(())
            }
            ResizeMode::ShortSide { short_side: 0 } => {
                Err(Error::param("resize.short_side", "must be at least 1"))
            }
            ResizeMode::ShortSide { short_side } => crate::limits::check_product(
                "image_pixels",
                &[short_side as u64, short_side as u64],
            )
            .map(|_| ()),
            ResizeMode::Fixed { height, width } => check_size(width, height),
            ResizeMode::PatchMultiple { patch: 0 } => {
                Err(Error::param("resize.patch", "must be at least 1"))
            }
            ResizeMode::PatchMultiple { .. } => Ok(()),
        }
    }

    /// The geometry this mode applies to a `width × height` image.
    ///
    /// # Errors
    /// [`Error::InvalidParam`] for invalid modes or sizes that come out empty or too large.
    pub fn plan(&self, width: u32, height: u32) -> Result<ResizePlan> {
        self.validate()?;
        check_size(width, height)?;
        let (rw, rh) = match *self {
            ResizeMode::None => (width, height),
            ResizeMode::DinoEval { short_side, .. } | ResizeMode::ShortSide { short_side } => {
                short_side_size(width, height, short_side)?
            }
            ResizeMode::Fixed { height, width } => (width, height),
            ResizeMode::PatchMultiple { patch } => (
                patch_multiple(width, patch)?,
                patch_multiple(height, patch)?,
            ),
        };
        check_size(rw, rh)?;
        let crop = match *self {
            ResizeMode::DinoEval { crop, .. } => CropBox::center(rw, rh, crop, crop)?,
            _ => CropBox::full(rw, rh),
        };
        Ok(ResizePlan {
            input_width: width,
            input_height: height,
            resized_width: rw,
            resized_height: rh,
            crop,
        })
    }
}

impl Default for ResizeMode {
    /// [`ResizeMode::dino_eval`].
    fn default() -> Self {
        ResizeMode::dino_eval()
    }
}

/// torchvision `_compute_resized_output_size` for an int size: returns (w, h).
fn short_side_size(width: u32, height: u32, short_side: u32) -> Result<(u32, u32)> {
    let (short, long) = if width <= height {
        (width, height)
    } else {
        (height, width)
    };
    // Python: int(requested_new_short * long / short), float64 division then truncation.
    let new_long_f = (f64::from(short_side) * f64::from(long)) / f64::from(short);
    if new_long_f >= f64::from(u32::MAX) {
        return Err(Error::param(
            "resize.short_side",
            "resized long side overflows",
        ));
    }
    let new_long = new_long_f as u32;
    Ok(if width <= height {
        (short_side, new_long)
    } else {
        (new_long, short_side)
    })
}

/// `max(round_half_even(side / patch), 1) * patch`.
fn patch_multiple(side: u32, patch: u32) -> Result<u32> {
    let q = side / patch;
    let r = side % patch;
    // compare 2r with patch to find below / tie / above half
    let n = match (2 * u64::from(r)).cmp(&u64::from(patch)) {
        std::cmp::Ordering::Less => q,
        std::cmp::Ordering::Greater => q + 1,
        std::cmp::Ordering::Equal => q + (q % 2),
    };
    n.max(1)
        .checked_mul(patch)
        .ok_or_else(|| Error::param("resize.patch", "resized side overflows"))
}

/// The geometry of one preprocessing: the image is resized from
/// `input_width × input_height` to `resized_width × resized_height`, then `crop`
/// (in resized coordinates) is cut out. Later stages use it to map masks back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResizePlan {
    /// Decoded width.
    pub input_width: u32,
    /// Decoded height.
    pub input_height: u32,
    /// Width after the resize, before the crop.
    pub resized_width: u32,
    /// Height after the resize, before the crop.
    pub resized_height: u32,
    /// The part of the resized image that is kept (the whole image unless the mode crops).
    pub crop: CropBox,
}

impl ResizePlan {
    /// Final (width, height) handed to the network.
    pub fn output_size(&self) -> (u32, u32) {
        (self.crop.width, self.crop.height)
    }

    /// Network-input pixels per decoded pixel: the geometric mean of the two
    /// axes' resize factors (1 when nothing is resized).
    pub fn scale(&self) -> f32 {
        let sx = self.resized_width as f64 / self.input_width.max(1) as f64;
        let sy = self.resized_height as f64 / self.input_height.max(1) as f64;
        (sx * sy).sqrt() as f32
    }
}

/// Everything [`preprocess`] needs.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PreprocessConfig {
    /// Geometry (default: DINO eval 256 / 224).
    pub resize: ResizeMode,
    /// Resampling filter for every resizing mode (default: bicubic, as DINO).
    pub filter: ResampleFilter,
    /// Per-channel statistics (default: ImageNet).
    pub normalization: Normalization,
}

impl PreprocessConfig {
    /// Checks the resize mode and the normalisation.
    ///
    /// # Errors
    /// [`Error::InvalidParam`] naming the bad field.
    pub fn validate(&self) -> Result<()> {
        self.resize.validate()?;
        self.normalization.validate()
    }
}

/// Resizes and crops `img` as `mode` says, keeping its bit depth: 8-bit images
/// are bit-identical to Pillow (+ torchvision CenterCrop); 16-bit images go
/// through the float path and are rounded back to u16 (half away from zero,
/// clamped to 0..=65535). This is the pixel image the network sees — for
/// overlays and DenseCRF.
///
/// # Errors
/// [`Error::InvalidParam`] for a bad mode; [`Error::Shape`] for an inconsistent image.
pub fn resize_and_crop(
    img: &DecodedImage,
    mode: &ResizeMode,
    filter: ResampleFilter,
) -> Result<(DecodedImage, ResizePlan)> {
    img.validate()?;
    let plan = mode.plan(img.width, img.height)?;
    let (rw, rh) = (plan.resized_width, plan.resized_height);
    let (cw, ch) = plan.output_size();
    let pixels = match &img.pixels {
        Pixels::U8(src) => {
            let resized = resize_rgb8(src, img.width, img.height, rw, rh, filter)?;
            Pixels::U8(crop(&resized, rw, rh, 3, plan.crop)?)
        }
        Pixels::U16(_) => {
            let f = resize_crop_f32(img, &plan, filter)?;
            Pixels::U16(
                f.iter()
                    .map(|&v| v.round().clamp(0.0, 65535.0) as u16)
                    .collect(),
            )
        }
    };
    Ok((DecodedImage::new(cw, ch, pixels)?, plan))
}

fn resize_crop_f32(
    img: &DecodedImage,
    plan: &ResizePlan,
    filter: ResampleFilter,
) -> Result<Vec<f32>> {
    let (rw, rh) = (plan.resized_width, plan.resized_height);
    let resized = resize_rgb_f32(&img.to_f32(), img.width, img.height, rw, rh, filter)?;
    crop(&resized, rw, rh, 3, plan.crop)
}

/// Decoded image → network input `(1, 3, H, W)`, as torchvision's
/// `Resize → CenterCrop → ToTensor → Normalize` on the PIL image (for the
/// default config). 8-bit images: bit-identical to torchvision. 16-bit images:
/// float resize (Pillow `"F"` arithmetic), then `v / 65535`.
///
/// # Errors
/// [`Error::InvalidParam`] for a bad config; [`Error::Shape`] for an inconsistent image.
pub fn preprocess(img: &DecodedImage, cfg: &PreprocessConfig) -> Result<Array4<f32>> {
    preprocess_with_plan(img, cfg).map(|(t, _)| t)
}

/// [`preprocess`], also returning the geometry that was applied.
///
/// # Errors
/// As for [`preprocess`].
pub fn preprocess_with_plan(
    img: &DecodedImage,
    cfg: &PreprocessConfig,
) -> Result<(Array4<f32>, ResizePlan)> {
    cfg.validate()?;
    img.validate()?;
    match &img.pixels {
        Pixels::U8(_) => {
            let (out, plan) = resize_and_crop(img, &cfg.resize, cfg.filter)?;
            let Pixels::U8(px) = &out.pixels else {
                return Err(Error::Internal(
                    "8-bit resize returned 16-bit pixels".into(),
                ));
            };
            Ok((
                normalize_rgb8(px, out.width, out.height, &cfg.normalization)?,
                plan,
            ))
        }
        Pixels::U16(_) => {
            let plan = cfg.resize.plan(img.width, img.height)?;
            let f = resize_crop_f32(img, &plan, cfg.filter)?;
            let (w, h) = plan.output_size();
            Ok((
                normalize_rgb_f32(&f, w, h, 65535.0, &cfg.normalization)?,
                plan,
            ))
        }
    }
}

/// [`decode_image_file`] then [`preprocess`].
///
/// # Errors
/// Those of both.
pub fn load_and_preprocess(path: &Path, cfg: &PreprocessConfig) -> Result<Array4<f32>> {
    cfg.validate()?;
    let img = decode_image_file(path)?;
    preprocess(&img, cfg)
}

/// Everything segmentation needs from one image: the network input (1, 3, H, W),
/// the geometry back to the image, and the 8-bit (H, W, 3) pixels the network sees
/// (for DenseCRF and overlays).
///
/// # Errors
/// As [`preprocess_with_plan`].
pub fn network_input(
    image: &DecodedImage,
    pre: &PreprocessConfig,
) -> Result<(Array4<f32>, ResizePlan, Array3<u8>)> {
    let (x, plan) = preprocess_with_plan(image, pre)?;
    let (seen, _) = resize_and_crop(image, &pre.resize, pre.filter)?;
    let (h, w) = (seen.height as usize, seen.width as usize);
    let pixels = Array3::from_shape_vec((h, w, 3), seen.to_rgb8())
        .map_err(|e| Error::Internal(format!("network-input pixels: {e}")))?;
    Ok((x, plan, pixels))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torchvision_resize_sizes() {
        // Resize(256) on 61x47 (w x h): short = 47 -> 256, long = int(256*61/47) = 332
        assert_eq!(short_side_size(61, 47, 256).unwrap(), (332, 256));
        // portrait
        assert_eq!(short_side_size(47, 61, 256).unwrap(), (256, 332));
        // 299x257 -> int(256*299/257) = int(297.836) = 297
        assert_eq!(short_side_size(299, 257, 256).unwrap(), (297, 256));
        // square
        assert_eq!(short_side_size(500, 500, 256).unwrap(), (256, 256));
    }

    #[test]
    fn dino_plan_uses_bankers_rounding() {
        let plan = ResizeMode::dino_eval().plan(299, 257).unwrap();
        assert_eq!((plan.resized_width, plan.resized_height), (297, 256));
        // left = round(73 / 2) = round(36.5) = 36 (half to even), top = 16
        assert_eq!(
            plan.crop,
            CropBox {
                left: 36,
                top: 16,
                width: 224,
                height: 224
            }
        );
        assert_eq!(plan.output_size(), (224, 224));
    }

    #[test]
    fn patch_multiple_rounds_half_even() {
        assert_eq!(patch_multiple(500, 16).unwrap(), 496); // 31.25 -> 31
        assert_eq!(patch_multiple(504, 16).unwrap(), 512); // 31.5 -> 32
        assert_eq!(patch_multiple(488, 16).unwrap(), 480); // 30.5 -> 30
        assert_eq!(patch_multiple(5, 16).unwrap(), 16); // at least one patch
    }

    #[test]
    fn invalid_modes() {
        assert!(ResizeMode::DinoEval {
            short_side: 100,
            crop: 101
        }
        .validate()
        .is_err());
        assert!(ResizeMode::Fixed {
            height: 0,
            width: 3
        }
        .validate()
        .is_err());
        assert!(ResizeMode::PatchMultiple { patch: 0 }.validate().is_err());
        assert!(PreprocessConfig::default().validate().is_ok());
    }
}
