//! `EsResult`: what a segmentation or attribution produced, at the image's size,
//! read through getters that copy into the caller's buffers.

use std::ffi::c_char;

use ndarray::Array2;

use super::buffers::{copy_out, handle, path_arg, write_out};
use super::status::{guard, CapiError, EsStatus};
use crate::backend::cpu::ops::softmax_row;
use crate::render::write_mask_png;

/// A segmentation or attribution result (opaque). Free it with `explainseg_result_free`.
#[derive(Debug, Clone)]
pub struct EsResult {
    pub(crate) width: u32,
    pub(crate) height: u32,
    /// (height, width); None for an attribution.
    pub(crate) mask: Option<Array2<bool>>,
    /// (height, width) in [0, 1]; None for TokenCut and MaskCut.
    pub(crate) relevance: Option<Array2<f32>>,
    pub(crate) logits: Vec<f32>,
    pub(crate) class: usize,
    pub(crate) seconds: f64,
    /// Seconds per stage, indexed by `EsStage`; None for a stage that did not run.
    pub(crate) stages: [Option<f64>; STAGES],
    /// Forward+backward passes of the explanation (0 for TokenCut and MaskCut).
    pub(crate) passes: u64,
}

/// Number of `EsStage` values.
pub(crate) const STAGES: usize = 4;

/// A stage of a segmentation, for `explainseg_result_stage_seconds`.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EsStage {
    /// Integrated Gradients inside NoiseTunnel (the IG variants and attribution).
    Explain = 0,
    /// Feature map and fusion (variants A and B); patch keys and logits (TokenCut, MaskCut).
    Feature = 1,
    /// Map to mask: morphology, NCut, TokenCut's cut, or MaskCut (with its per-object CRF).
    Mask = 2,
    /// DenseCRF refinement (when enabled; MaskCut's is part of `Mask`).
    Crf = 3,
}

impl EsStage {
    /// The pipeline's name of the stage (`Segmentation::timings`).
    pub(crate) const NAMES: [&'static str; STAGES] = ["explain", "feature", "mask", "crf"];
}

/// Per-stage seconds in `EsStage` order from the pipeline's named timings.
pub(crate) fn stage_seconds(timings: &[(&'static str, f64)]) -> [Option<f64>; STAGES] {
    EsStage::NAMES.map(|n| timings.iter().find(|(t, _)| *t == n).map(|(_, s)| *s))
}

/// # Safety
/// `result` must be NULL or live.
unsafe fn result<'a>(result: *const EsResult) -> Result<&'a EsResult, CapiError> {
    // SAFETY: forwarded caller's duty.
    unsafe { handle(result, "result") }
}

/// Width and height of the result's maps: the image's size.
///
/// # Safety
/// `r` NULL or live; `width`, `height` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn explainseg_result_size(
    r: *const EsResult,
    width: *mut u32,
    height: *mut u32,
) -> EsStatus {
    guard(|| {
        // SAFETY: caller's duty, as documented.
        unsafe {
            let r = result(r)?;
            write_out(width, r.width, "width")?;
            write_out(height, r.height, "height")
        }
    })
}

/// The predicted class (arg-max logit).
///
/// # Safety
/// `r` NULL or live; `class_out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn explainseg_result_class(
    r: *const EsResult,
    class_out: *mut u32,
) -> EsStatus {
    guard(|| {
        // SAFETY: caller's duty, as documented.
        unsafe { write_out(class_out, result(r)?.class as u32, "class_out") }
    })
}

/// Wall-clock seconds the call took.
///
/// # Safety
/// `r` NULL or live; `seconds` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn explainseg_result_seconds(
    r: *const EsResult,
    seconds: *mut f64,
) -> EsStatus {
    guard(|| {
        // SAFETY: caller's duty, as documented.
        unsafe { write_out(seconds, result(r)?.seconds, "seconds") }
    })
}

/// Seconds the call spent in `stage` (an `EsStage` value: `ES_STAGE_EXPLAIN`,
/// `ES_STAGE_FEATURE`, `ES_STAGE_MASK`, `ES_STAGE_CRF`). `ES_STATUS_NOT_AVAILABLE`
/// when the variant does not run that stage (e.g. `ES_STAGE_EXPLAIN` for TokenCut,
/// `ES_STAGE_CRF` with the CRF off); `ES_STATUS_INVALID_PARAM` for another value.
///
/// # Safety
/// `r` NULL or live; `seconds` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn explainseg_result_stage_seconds(
    r: *const EsResult,
    stage: u32,
    seconds: *mut f64,
) -> EsStatus {
    guard(|| {
        // SAFETY: caller's duty, as documented.
        let r = unsafe { result(r) }?;
        if stage as usize >= STAGES {
            return Err(CapiError::Lib(crate::error::Error::param(
                "stage",
                format!("{stage} is not an EsStage (0..{STAGES})"),
            )));
        }
        let s = r.stages[stage as usize].ok_or(CapiError::NotAvailable(
            "stage (the variant does not run it)",
        ))?;
        // SAFETY: caller's duty, as documented.
        unsafe { write_out(seconds, s, "seconds") }
    })
}

/// Forward+backward passes the explanation used (IG steps × NoiseTunnel samples);
/// 0 for TokenCut and MaskCut, which explain nothing.
///
/// # Safety
/// `r` NULL or live; `passes` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn explainseg_result_passes(
    r: *const EsResult,
    passes: *mut u64,
) -> EsStatus {
    guard(|| {
        // SAFETY: caller's duty, as documented.
        unsafe { write_out(passes, result(r)?.passes, "passes") }
    })
}

/// The mask, row-major, `width * height` bytes: 1 foreground, 0 background.
/// `needed` (may be NULL) receives `width * height`. `ES_STATUS_NOT_AVAILABLE`
/// for an attribution result.
///
/// # Safety
/// `r` NULL or live; `buf` NULL or `buf_len` writable bytes; `needed` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn explainseg_result_mask(
    r: *const EsResult,
    buf: *mut u8,
    buf_len: usize,
    needed: *mut usize,
) -> EsStatus {
    guard(|| {
        // SAFETY: caller's duty, as documented.
        let r = unsafe { result(r) }?;
        let mask = r.mask.as_ref().ok_or(CapiError::NotAvailable("mask"))?;
        let bytes: Vec<u8> = mask.iter().map(|&m| m as u8).collect();
        // SAFETY: caller's duty, as documented.
        unsafe { copy_out(&bytes, buf, buf_len, needed, "buf") }
    })
}

/// The relevance map in [0, 1], row-major, `width * height` floats (0 outside a
/// crop). `ES_STATUS_NOT_AVAILABLE` for the TokenCut and MaskCut variants.
///
/// # Safety
/// `r` NULL or live; `buf` NULL or `buf_len` writable floats; `needed` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn explainseg_result_relevance(
    r: *const EsResult,
    buf: *mut f32,
    buf_len: usize,
    needed: *mut usize,
) -> EsStatus {
    guard(|| {
        // SAFETY: caller's duty, as documented.
        let r = unsafe { result(r) }?;
        let rel = r
            .relevance
            .as_ref()
            .ok_or(CapiError::NotAvailable("relevance map"))?;
        let values: Vec<f32> = rel.iter().copied().collect();
        // SAFETY: caller's duty, as documented.
        unsafe { copy_out(&values, buf, buf_len, needed, "buf") }
    })
}

/// The logits of the clean image, one per class.
///
/// # Safety
/// As for `explainseg_result_relevance`.
#[no_mangle]
pub unsafe extern "C" fn explainseg_result_logits(
    r: *const EsResult,
    buf: *mut f32,
    buf_len: usize,
    needed: *mut usize,
) -> EsStatus {
    guard(|| {
        // SAFETY: caller's duty, as documented.
        unsafe { copy_out(&result(r)?.logits, buf, buf_len, needed, "buf") }
    })
}

/// The softmax of the logits (class probabilities), one per class.
///
/// # Safety
/// As for `explainseg_result_relevance`.
#[no_mangle]
pub unsafe extern "C" fn explainseg_result_scores(
    r: *const EsResult,
    buf: *mut f32,
    buf_len: usize,
    needed: *mut usize,
) -> EsStatus {
    guard(|| {
        // SAFETY: caller's duty, as documented.
        let mut scores = unsafe { result(r) }?.logits.clone();
        softmax_row(&mut scores, 1.0);
        // SAFETY: caller's duty, as documented.
        unsafe { copy_out(&scores, buf, buf_len, needed, "buf") }
    })
}

/// Writes the mask as an 8-bit grayscale PNG (255 foreground) at the image's size.
///
/// # Safety
/// `r` NULL or live; `path` NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn explainseg_result_save_mask_png(
    r: *const EsResult,
    path: *const c_char,
) -> EsStatus {
    guard(|| {
        // SAFETY: caller's duty, as documented.
        let (r, path) = unsafe { (result(r)?, path_arg(path, "path")?) };
        let mask = r.mask.as_ref().ok_or(CapiError::NotAvailable("mask"))?;
        Ok(write_mask_png(&path, mask.view())?)
    })
}

/// Frees a result; NULL is a no-op.
///
/// # Safety
/// `r` must be NULL or come from this library and not be freed before.
#[no_mangle]
pub unsafe extern "C" fn explainseg_result_free(r: *mut EsResult) {
    if r.is_null() {
        return;
    }
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: from Box::into_raw in this library, freed once (caller's duty).
        drop(unsafe { Box::from_raw(r) });
    }));
}
