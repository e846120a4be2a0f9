//! `EsImage`: an image decoded from a file or copied from the caller's pixels.

use std::ffi::c_char;

use super::buffers::{handle, path_arg, write_out};
use super::status::{guard, CapiError, EsStatus};
use crate::error::Error;
use crate::image::{decode_image_file, DecodedImage, Pixels};

/// An image (opaque). Create it with `explainseg_image_load` or
/// `explainseg_image_from_pixels`; free it with `explainseg_image_free`.
#[derive(Debug)]
pub struct EsImage {
    pub(crate) image: DecodedImage,
}

/// Interleaved 8-bit pixels (gray, RGB or RGBA; rows `row_stride` bytes apart) as
/// the crate's RGB image. Gray is replicated into R, G and B; alpha is dropped, not
/// composited — as the file decoder does.
pub fn image_from_pixels(
    pixels: &[u8],
    width: u32,
    height: u32,
    channels: u32,
    row_stride: usize,
) -> crate::Result<DecodedImage> {
    if !matches!(channels, 1 | 3 | 4) {
        return Err(Error::param(
            "channels",
            format!("must be 1 (gray), 3 (RGB) or 4 (RGBA), got {channels}"),
        ));
    }
    let (w, h, c) = (width as usize, height as usize, channels as usize);
    let row_bytes = w * c;
    if row_stride < row_bytes {
        return Err(Error::param(
            "row_stride",
            format!("{row_stride} bytes is less than width × channels = {row_bytes}"),
        ));
    }
    let needed = if h == 0 {
        0
    } else {
        (h - 1) * row_stride + row_bytes
    };
    if pixels.len() < needed {
        return Err(Error::shape("pixels (bytes)", &[needed], &[pixels.len()]));
    }
    let mut rgb = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for px in pixels[y * row_stride..y * row_stride + row_bytes].chunks_exact(c) {
            match c {
                1 => rgb.extend_from_slice(&[px[0]; 3]),
                _ => rgb.extend_from_slice(&px[..3]),
            }
        }
    }
    DecodedImage::new(width, height, Pixels::U8(rgb))
}

/// Decodes a PNG, JPEG or TIFF file (8/16-bit; gray, RGB or RGBA) into `*out`.
///
/// # Safety
/// `path` must be NULL or a NUL-terminated string; `out` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn explainseg_image_load(
    path: *const c_char,
    out: *mut *mut EsImage,
) -> EsStatus {
    guard(|| {
        if out.is_null() {
            return Err(CapiError::Null("out"));
        }
        // SAFETY: NUL-terminated or NULL (caller's duty).
        let path = unsafe { path_arg(path, "path") }?;
        let image = decode_image_file(&path)?;
        let raw = Box::into_raw(Box::new(EsImage { image }));
        // SAFETY: `out` is non-NULL and writable (caller's duty).
        unsafe { write_out(out, raw, "out") }
    })
}

/// Copies 8-bit interleaved pixels into a new image `*out`. `channels` is 1
/// (gray), 3 (RGB) or 4 (RGBA; alpha is ignored); row `y` starts at
/// `pixels + y * row_stride` (bytes); `row_stride` 0 means `width * channels`.
///
/// # Safety
/// `pixels` must point to `(height - 1) * row_stride + width * channels` readable
/// bytes; `out` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn explainseg_image_from_pixels(
    pixels: *const u8,
    width: u32,
    height: u32,
    channels: u32,
    row_stride: usize,
    out: *mut *mut EsImage,
) -> EsStatus {
    guard(|| {
        if out.is_null() {
            return Err(CapiError::Null("out"));
        }
        if pixels.is_null() {
            return Err(CapiError::Null("pixels"));
        }
        if !matches!(channels, 1 | 3 | 4) {
            return Err(Error::param(
                "channels",
                format!("must be 1 (gray), 3 (RGB) or 4 (RGBA), got {channels}"),
            )
            .into());
        }
        // Size and limits first: nothing is read before they hold.
        crate::image::check_size_for_capi(width, height)?;
        let row_bytes = (width as usize)
            .checked_mul(channels as usize)
            .ok_or_else(|| Error::param("width", "width × channels overflows"))?;
        let stride = if row_stride == 0 {
            row_bytes
        } else {
            row_stride
        };
        if stride > isize::MAX as usize {
            return Err(Error::param(
                "row_stride",
                format!("{stride} is above isize::MAX (a negative stride cast to size_t?)"),
            )
            .into());
        }
        if stride < row_bytes {
            return Err(Error::param(
                "row_stride",
                format!("{stride} bytes is less than width × channels = {row_bytes}"),
            )
            .into());
        }
        let len = match height {
            0 => 0,
            h => (h as usize - 1)
                .checked_mul(stride)
                .and_then(|n| n.checked_add(row_bytes))
                .filter(|&n| n <= isize::MAX as usize)
                .ok_or_else(|| Error::param("row_stride", "height × row_stride overflows"))?,
        };
        // The span read must be a plausible buffer: within the decoded-bytes
        // limit and not wrapping the address space.
        crate::limits::check("decoded_bytes", len as u64)?;
        if (pixels as usize).checked_add(len).is_none() {
            return Err(
                Error::param("pixels", "pixels + buffer length wraps the address space").into(),
            );
        }
        // SAFETY: `pixels` holds `len` readable bytes (caller's duty, as documented).
        let data = unsafe { std::slice::from_raw_parts(pixels, len) };
        let image = image_from_pixels(data, width, height, channels, stride)?;
        let raw = Box::into_raw(Box::new(EsImage { image }));
        // SAFETY: `out` is non-NULL and writable (caller's duty).
        unsafe { write_out(out, raw, "out") }
    })
}

/// Width and height of an image, in pixels.
///
/// # Safety
/// `image` must be NULL or a live image; `width` and `height` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn explainseg_image_size(
    image: *const EsImage,
    width: *mut u32,
    height: *mut u32,
) -> EsStatus {
    guard(|| {
        // SAFETY: live or NULL (caller's duty).
        let img = unsafe { handle(image, "image") }?;
        // SAFETY: writable or NULL (caller's duty).
        unsafe {
            write_out(width, img.image.width, "width")?;
            write_out(height, img.image.height, "height")
        }
    })
}

/// Frees an image; NULL is a no-op.
///
/// # Safety
/// `image` must be NULL or come from this library and not be freed before.
#[no_mangle]
pub unsafe extern "C" fn explainseg_image_free(image: *mut EsImage) {
    if image.is_null() {
        return;
    }
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: from Box::into_raw in this module, freed once (caller's duty).
        drop(unsafe { Box::from_raw(image) });
    }));
}
