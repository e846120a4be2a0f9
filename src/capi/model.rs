//! `EsModel`: loading a ViT classifier, and classifying an image.

use std::ffi::c_char;

use ndarray::Axis;

use super::buffers::{copy_out, handle, path_arg, write_opt, write_out};
use super::callbacks::with_threads;
use super::image::EsImage;
use super::params::{read_checked, EsModelParams, EsSegmentParams};
use super::status::{guard, CapiError, EsStatus};
use crate::attr::argmax;
use crate::backend::cpu::ops::softmax_row;
use crate::backend::{engine_for, Device, Engine, EngineOptions, Precision};
use crate::model::Vit;

/// A loaded model (opaque). Immutable once loaded: one handle may be used by any
/// number of threads at once. Free it with `explainseg_model_free`.
#[derive(Debug)]
pub struct EsModel {
    pub(crate) vit: Vit,
    /// Where every call on this model runs (`EsModelParams::device`).
    pub(crate) device: Device,
    /// What its GEMMs compute in (`EsModelParams::precision`).
    pub(crate) precision: Precision,
}

impl EsModel {
    /// The engine for this model's device (cheap on the CPU; the CUDA engine
    /// uploads the weights).
    pub(crate) fn engine(&self) -> crate::Result<Box<dyn Engine + '_>> {
        let options = EngineOptions {
            device: self.device,
            precision: self.precision,
        };
        engine_for(options, &self.vit)
    }
}

/// Loads a ViT from `weights` (safetensors; timm, DINO or HF naming; f32/f16/bf16)
/// and its classifier head from the same file or from `head` (may be NULL).
/// `params` may be NULL for the defaults.
///
/// # Safety
/// `weights` and `head` must be NULL or NUL-terminated strings; `params` NULL or
/// readable; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn explainseg_model_load(
    weights: *const c_char,
    head: *const c_char,
    params: *const EsModelParams,
    out: *mut *mut EsModel,
) -> EsStatus {
    guard(|| {
        if out.is_null() {
            return Err(CapiError::Null("out"));
        }
        // SAFETY: strings or NULL, params readable or NULL (caller's duty).
        let (weights, head, params) = unsafe {
            let head = if head.is_null() {
                None
            } else {
                Some(path_arg(head, "head")?)
            };
            (path_arg(weights, "weights")?, head, read_checked(params)?)
        };
        let vit = Vit::load(&weights, head.as_deref(), &params.load_options()?)?;
        let model = EsModel {
            vit,
            device: params.device(),
            precision: params.precision(),
        };
        // A device that cannot run fails here, at load, with its reason
        // (ES_STATUS_CUDA_UNAVAILABLE), never later and never on another device.
        drop(model.engine()?);
        let raw = Box::into_raw(Box::new(model));
        // SAFETY: non-NULL and writable (caller's duty).
        unsafe { write_out(out, raw, "out") }
    })
}

/// Frees a model; NULL is a no-op. No call may be using it.
///
/// # Safety
/// `model` must be NULL or come from `explainseg_model_load` and not be freed before.
#[no_mangle]
pub unsafe extern "C" fn explainseg_model_free(model: *mut EsModel) {
    if model.is_null() {
        return;
    }
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: from Box::into_raw in explainseg_model_load, freed once (caller's duty).
        drop(unsafe { Box::from_raw(model) });
    }));
}

/// Number of classes of the model's head (`ES_STATUS_INVALID_PARAM` without a head).
///
/// # Safety
/// `model` must be NULL or live; `classes` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn explainseg_model_num_classes(
    model: *const EsModel,
    classes: *mut u32,
) -> EsStatus {
    guard(|| {
        // SAFETY: live or NULL (caller's duty).
        let m = unsafe { handle(model, "model") }?;
        let n = m.vit.classes()? as u32;
        // SAFETY: writable or NULL (caller's duty).
        unsafe { write_out(classes, n, "classes") }
    })
}

/// Classifies an image: writes the logits and/or the softmax probabilities (either
/// buffer may be NULL) of `buf_len` floats each, the number of classes to
/// `n_classes` (may be NULL) and the arg-max class to `class_out` (may be NULL).
/// Reads `image_size`, `resize`, `mean`, `std` and `threads` of `params` (NULL for
/// the defaults). A `buf_len` below the class count is `ES_STATUS_BUFFER_TOO_SMALL`.
///
/// # Safety
/// Handles NULL or live; `logits`/`probs` NULL or `buf_len` writable floats; the
/// other pointers NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn explainseg_classify(
    model: *const EsModel,
    image: *const EsImage,
    params: *const EsSegmentParams,
    logits: *mut f32,
    probs: *mut f32,
    buf_len: usize,
    n_classes: *mut usize,
    class_out: *mut u32,
) -> EsStatus {
    guard(|| {
        // SAFETY: live or NULL handles, readable or NULL params (caller's duty).
        let (m, img, p) = unsafe {
            (
                handle(model, "model")?,
                handle(image, "image")?,
                read_checked(params)?,
            )
        };
        let pre = p.preprocess_config(m.vit.normalization)?;
        let row = with_threads(p.threads, || {
            let (x, _, _) = crate::image::network_input(&img.image, &pre)?;
            Ok(m.engine()?
                .logits(x.view())?
                .index_axis(Axis(0), 0)
                .to_vec())
        })?;
        crate::model::check_logits(&row)?;
        let mut softmax = row.clone();
        softmax_row(&mut softmax, 1.0);
        // SAFETY: buffers and outputs writable or NULL (caller's duty).
        unsafe {
            write_opt(n_classes, row.len());
            if !logits.is_null() {
                copy_out(&row, logits, buf_len, n_classes, "logits")?;
            }
            if !probs.is_null() {
                copy_out(&softmax, probs, buf_len, n_classes, "probs")?;
            }
            write_opt(class_out, argmax(&row) as u32);
        }
        Ok(())
    })
}
