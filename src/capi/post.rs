//! The post-processing stages on their own: DenseCRF refinement of a mask, and
//! TokenCut's Normalized Cut bipartition of patch features.

use ndarray::{Array2, ArrayView2, ArrayView3};

use super::buffers::{copy_out, expect_len, handle, input};
use super::image::EsImage;
use super::params::{read_checked, EsCrfParams, EsTokenCutParams};
use super::status::{guard, CapiError, EsStatus};
use crate::image::Pixels;
use crate::post::crf::refine_mask;
use crate::post::ncut::tokencut_bipartition;

/// Refines a coarse mask of `image` with DenseCRF (unary from the mask, as
/// TokenCut/MaskCut do). `mask` and `out` are row-major `width * height` bytes of the
/// image (nonzero = foreground in; 1/0 out); `needed` (may be NULL) receives
/// `width * height`. `params` NULL means the defaults.
///
/// # Safety
/// `image` NULL or live; `mask` `mask_len` readable bytes; `out` NULL or `out_len`
/// writable bytes; `params` NULL or readable; `needed` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn explainseg_crf(
    image: *const EsImage,
    mask: *const u8,
    mask_len: usize,
    params: *const EsCrfParams,
    out: *mut u8,
    out_len: usize,
    needed: *mut usize,
) -> EsStatus {
    guard(|| {
        // SAFETY: caller's duty, as documented.
        let (img, mask, p) = unsafe {
            (
                handle(image, "image")?,
                input(mask, mask_len, "mask")?,
                read_checked(params)?,
            )
        };
        let (w, h) = (img.image.width as usize, img.image.height as usize);
        expect_len("mask (width × height of the image)", mask.len(), w * h)?;
        let rgb = match &img.image.pixels {
            Pixels::U8(v) => std::borrow::Cow::Borrowed(v),
            Pixels::U16(_) => std::borrow::Cow::Owned(img.image.to_rgb8()),
        };
        let pixels = ArrayView3::from_shape((h, w, 3), &rgb[..])
            .map_err(|e| crate::Error::Internal(format!("image pixels: {e}")))?;
        let coarse = Array2::from_shape_fn((h, w), |(i, j)| mask[i * w + j] != 0);
        let refined = refine_mask(pixels, coarse.view(), &p.crf_params())?;
        let bytes: Vec<u8> = refined.iter().map(|&m| m as u8).collect();
        // SAFETY: caller's duty, as documented.
        unsafe { copy_out(&bytes, out, out_len, needed, "out") }
    })
}

/// TokenCut's bipartition of `rows * cols` patch features of `dim` floats each
/// (row-major `(rows·cols, dim)`, patches in row-major grid order). Writes the mask
/// of the patch grid (`rows * cols` bytes, 1 = foreground: the seed's connected
/// component) and, if `eigvec` is not NULL, the oriented Fiedler vector (`rows * cols`
/// doubles). `needed` (may be NULL) receives `rows * cols`.
///
/// # Safety
/// `features` `rows * cols * dim` readable floats; `mask` NULL or `mask_len` writable
/// bytes; `eigvec` NULL or `eigvec_len` writable doubles; `params` NULL or readable;
/// `needed` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn explainseg_ncut(
    features: *const f32,
    rows: u32,
    cols: u32,
    dim: u32,
    params: *const EsTokenCutParams,
    mask: *mut u8,
    mask_len: usize,
    eigvec: *mut f64,
    eigvec_len: usize,
    needed: *mut usize,
) -> EsStatus {
    guard(|| {
        let n = rows as usize * cols as usize;
        let len = n
            .checked_mul(dim as usize)
            .ok_or_else(|| crate::Error::param("dim", "rows × cols × dim overflows"))?;
        if len == 0 {
            return Err(crate::Error::param("rows, cols, dim", "must all be at least 1").into());
        }
        // SAFETY: caller's duty, as documented.
        let (f, p) = unsafe { (input(features, len, "features")?, read_checked(params)?) };
        if mask.is_null() {
            return Err(CapiError::Null("mask"));
        }
        let f = ArrayView2::from_shape((n, dim as usize), f)
            .map_err(|e| crate::Error::Internal(format!("features: {e}")))?;
        let cut = tokencut_bipartition(f, (rows as usize, cols as usize), p.tau, p.eps)?;
        let bytes: Vec<u8> = cut.mask.iter().map(|&m| m as u8).collect();
        // SAFETY: caller's duty, as documented.
        unsafe {
            copy_out(&bytes, mask, mask_len, needed, "mask")?;
            if !eigvec.is_null() {
                copy_out(&cut.eigvec.to_vec(), eigvec, eigvec_len, needed, "eigvec")?;
            }
        }
        Ok(())
    })
}
