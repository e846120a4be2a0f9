//! Attribution and segmentation of an image into an `EsResult`, mapped back to
//! the image's own size — the same steps as `explainseg segment`.

use std::time::Instant;

use super::buffers::{handle, write_out};
use super::callbacks::{with_threads, EsCallbacks, Hooks};
use super::image::EsImage;
use super::model::EsModel;
use super::params::{read_checked, EsSegmentParams};
use super::result::{stage_seconds, EsResult};
use super::status::{guard, CapiError, EsStatus};
use crate::attr::{explain_map, Progress, RelevanceConfig};
use crate::error::Result;
use crate::image::{network_input, PreprocessConfig};
use crate::pipeline::{segment, PipelineConfig};
use crate::render::to_original;

/// Segments `image` with the variant and settings of `params` (the input fields,
/// IG, NoiseTunnel, NCut, TokenCut/MaskCut, CRF, threads); `*out` receives a result
/// at the image's size. The IG variants report progress after each batch of passes.
///
/// # Safety
/// Handles NULL or live; `params`, `callbacks` NULL or readable; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn explainseg_segment(
    model: *const EsModel,
    image: *const EsImage,
    params: *const EsSegmentParams,
    callbacks: *const EsCallbacks,
    out: *mut *mut EsResult,
) -> EsStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        run_on_image(
            model,
            image,
            params,
            callbacks,
            out,
            |m, img, p, pre, cfg, tick| {
                let (x, plan, pixels) = network_input(&img.image, pre)?;
                let variant = p.variant.variant();
                let cfg = cfg.for_image(&plan);
                let engine = m.engine()?;
                let seg = segment(
                    engine.as_ref(),
                    x.view(),
                    pixels.view(),
                    variant,
                    &cfg,
                    Some(tick),
                )?;
                Ok(EsResult {
                    width: plan.input_width,
                    height: plan.input_height,
                    mask: Some(to_original(seg.mask.view(), &plan, false)?),
                    relevance: match &seg.relevance {
                        Some(r) => Some(to_original(r.view(), &plan, 0.0)?),
                        None => None,
                    },
                    logits: seg.logits.to_vec(),
                    class: seg.predicted,
                    seconds: 0.0,
                    stages: stage_seconds(&seg.timings),
                    passes: seg.passes as u64,
                })
            },
        )
    }
}

/// Explains `image` (IG inside NoiseTunnel, as `params` says) into a result that
/// holds the relevance map in [0, 1] at the image's size, the logits and the
/// predicted class — no mask.
///
/// # Safety
/// As for `explainseg_segment`.
#[no_mangle]
pub unsafe extern "C" fn explainseg_attribute(
    model: *const EsModel,
    image: *const EsImage,
    params: *const EsSegmentParams,
    callbacks: *const EsCallbacks,
    out: *mut *mut EsResult,
) -> EsStatus {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        run_on_image(
            model,
            image,
            params,
            callbacks,
            out,
            |m, img, _, pre, cfg, tick| {
                let (x, plan, _) = network_input(&img.image, pre)?;
                let clock = Instant::now();
                // The relevance as the attribution gives it: no smoothing.
                let rel_cfg = RelevanceConfig {
                    smooth_sigma: 0.0,
                    ..cfg.relevance()
                };
                let e = explain_map(
                    m.engine()?.as_ref(),
                    x.view(),
                    &cfg.explain,
                    &rel_cfg,
                    None,
                    Some(tick),
                )?;
                let explain_s = clock.elapsed().as_secs_f64();
                let rel = e.relevance;
                Ok(EsResult {
                    width: plan.input_width,
                    height: plan.input_height,
                    mask: None,
                    relevance: Some(to_original(rel.view(), &plan, 0.0)?),
                    logits: e.logits.to_vec(),
                    class: e.predicted,
                    seconds: 0.0,
                    stages: stage_seconds(&[("explain", explain_s)]),
                    passes: cfg.explain.passes() as u64,
                })
            },
        )
    }
}

/// What `explainseg_segment` and `explainseg_attribute` share: argument checks, the
/// settings (normalised as the model was trained), the abort check, the thread
/// pool, the timing and handing the result to `*out`. `work` makes the result.
///
/// # Safety
/// As for `explainseg_segment`.
unsafe fn run_on_image(
    model: *const EsModel,
    image: *const EsImage,
    params: *const EsSegmentParams,
    callbacks: *const EsCallbacks,
    out: *mut *mut EsResult,
    work: impl FnOnce(
            &EsModel,
            &EsImage,
            &EsSegmentParams,
            &PreprocessConfig,
            &PipelineConfig,
            Progress,
        ) -> Result<EsResult>
        + Send,
) -> EsStatus {
    guard(|| {
        if out.is_null() {
            return Err(CapiError::Null("out"));
        }
        // SAFETY: live or NULL handles, readable or NULL structs (caller's duty).
        let (m, img, p, hooks) = unsafe {
            (
                handle(model, "model")?,
                handle(image, "image")?,
                read_checked(params)?,
                Hooks::new(callbacks),
            )
        };
        let pre = p.preprocess_config(m.vit.normalization)?;
        let mut cfg = p.pipeline_config(m.vit.config.patch)?;
        // The black baseline is black in the normalisation actually used.
        (cfg.explain.mean, cfg.explain.std) = (pre.normalization.mean, pre.normalization.std);
        hooks.check_abort()?;
        let clock = Instant::now();
        let result = with_threads(p.threads, || {
            let tick = |done: usize, total: usize| hooks.progress(done, total);
            work(m, img, &p, &pre, &cfg, &tick)
        })?;
        let raw = Box::into_raw(Box::new(EsResult {
            seconds: clock.elapsed().as_secs_f64(),
            ..result
        }));
        // SAFETY: non-NULL and writable (caller's duty).
        unsafe { write_out(out, raw, "out") }
    })
}
