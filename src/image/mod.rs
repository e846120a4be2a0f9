//! Image input: decoding, Pillow-exact resizing and torchvision-exact normalisation.
//!
//! The shortest path is [`load_and_preprocess`], which turns a PNG, JPEG or TIFF
//! file into the `(1, 3, 224, 224)` tensor that DINO's evaluation transform
//! would give:
//!
//! ```text
//! Resize(256, BICUBIC) -> CenterCrop(224) -> ToTensor() -> Normalize(ImageNet)
//! ```
//!
//! One job per file:
//! * `decode.rs` — magic-byte format detection and decoding to RGB
//!   ([`decode_image_file`], [`DecodedImage`]); JPEG via mozjpeg so that pixels
//!   equal Pillow's (both use libjpeg-turbo's islow IDCT and fancy upsampling).
//! * `resize.rs` — Pillow's separable antialiased resampling (bicubic a = −0.5,
//!   Lanczos-3, bilinear), bit-exact on 8-bit RGB, plus a float path; crops.
//! * `normalize.rs` — `ToTensor` + `Normalize` in `f32`, bit-exact.
//! * `pipeline.rs` — [`ResizeMode`], [`PreprocessConfig`], [`preprocess`].
//!
//! References: `docs/method.md` §4; Pillow `Image.resize`
//! (`libImaging/Resample.c` behaviour, Pillow 13); torchvision
//! `transforms.functional` (`resize`, `center_crop`, `to_tensor`, `normalize`).
//!
//! ```no_run
//! use explainseg::image::{load_and_preprocess, PreprocessConfig};
//! let x = load_and_preprocess("polyp.jpg".as_ref(), &PreprocessConfig::default())?;
//! assert_eq!(x.shape(), &[1, 3, 224, 224]);
//! # Ok::<(), explainseg::error::Error>(())
//! ```

mod decode;
pub mod grid;
pub(crate) use decode::check_size as check_size_for_capi;
mod normalize;
mod pipeline;
mod resize;
mod tiff_check;

pub use decode::{
    decode_image_bytes, decode_image_file, detect_format, DecodedImage, ImageFormat, Pixels,
    MAX_PIXELS,
};
pub use normalize::{normalize_rgb16, normalize_rgb8, normalize_rgb_f32, Normalization};
pub use pipeline::{
    load_and_preprocess, network_input, preprocess, preprocess_with_plan, resize_and_crop,
    PreprocessConfig, ResizeMode, ResizePlan,
};
pub use resize::{
    crop, pillow_pass_order, resize_gray_f32, resize_rgb8, resize_rgb_f32, CropBox, PassOrder,
    ResampleFilter,
};
