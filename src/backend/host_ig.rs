//! The host loop of Integrated Gradients and NoiseTunnel over any [`Engine`]: the
//! default of [`Engine::attribute`], which a backend may override with a loop that
//! stays on its device.
//!
//! Integrated Gradients as Captum computes it (docs/method.md §5):
//! `IG(x) = (x − b) ⊙ Σ_k w_k · ∂F_t/∂x |_{b + α_k (x − b)}`, with F_t the raw logit of
//! the target class.
//!
//! The path points of several inputs (the NoiseTunnel copies) are processed together
//! in batches of `batch_size` rows, which bounds memory (≈ 44 MB per row for ViT-S/16
//! at 224²). Captum multiplies by (x − b) once per internal batch and adds the
//! chunks; here the weighted gradients are summed first and multiplied once, which
//! differs in rounding only.

use ndarray::{Array4, ArrayView4, Axis};

use super::Engine;
use crate::error::{Error, Result};
use crate::ig::{
    aggregate, convergence_delta, make_noise, quadrature, IgConfig, NoiseTunnelConfig, NtOutput,
    Progress,
};

/// IG of each input, with its convergence delta when requested.
#[derive(Debug, Clone)]
pub struct IgOutput {
    /// (inputs, 3, H, W)
    pub attributions: Array4<f32>,
    /// Σ attribution − (F(x)[t] − F(b)[t]) per input; empty unless requested.
    pub deltas: Vec<f32>,
}

/// Integrated Gradients of `inputs` (n, 3, H, W) towards `target`, all from the same
/// `baseline` (1, 3, H, W).
///
/// # Errors
/// Invalid configuration or shapes; engine errors; [`Error::Aborted`] when the
/// progress callback returns false.
pub fn integrated_gradients<E: Engine + ?Sized>(
    engine: &E,
    inputs: ArrayView4<f32>,
    baseline: ArrayView4<f32>,
    target: usize,
    cfg: &IgConfig,
    progress: Option<Progress>,
) -> Result<IgOutput> {
    if cfg.batch_size == 0 {
        return Err(Error::param("batch_size", "must be at least 1"));
    }
    let (n_inputs, c, h, w) = inputs.dim();
    if baseline.dim() != (1, c, h, w) {
        let (a, b, cc, d) = baseline.dim();
        return Err(Error::shape("baseline", &[1, c, h, w], &[a, b, cc, d]));
    }
    // Also validates n_steps for the rule.
    let q = quadrature(cfg.method, cfg.n_steps)?;
    let alphas: Vec<f32> = q.alphas.iter().map(|&a| a as f32).collect();
    let steps: Vec<f32> = q.steps.iter().map(|&s| s as f32).collect();
    let base = baseline.index_axis(Axis(0), 0);
    // (x − b) per input, in f32 as Captum forms it.
    let diffs: Array4<f32> = &inputs - &baseline;
    let total_rows = n_inputs * cfg.n_steps;
    let mut total_grad = Array4::<f32>::zeros((n_inputs, c, h, w));
    let mut done = 0;
    while done < total_rows {
        let rows = cfg.batch_size.min(total_rows - done);
        let mut batch = Array4::<f32>::zeros((rows, c, h, w));
        for (r, mut row) in batch.outer_iter_mut().enumerate() {
            let (j, k) = ((done + r) / cfg.n_steps, (done + r) % cfg.n_steps);
            let diff = diffs.index_axis(Axis(0), j);
            ndarray::Zip::from(&mut row)
                .and(&base)
                .and(&diff)
                .for_each(|o, &b, &d| *o = b + alphas[k] * d);
        }
        let (_, grads) = engine.logits_and_input_grad(batch.view(), &vec![target; rows])?;
        for (r, g) in grads.outer_iter().enumerate() {
            let (j, k) = ((done + r) / cfg.n_steps, (done + r) % cfg.n_steps);
            let mut acc = total_grad.index_axis_mut(Axis(0), j);
            acc.zip_mut_with(&g, |a, &gv| *a += gv * steps[k]);
        }
        done += rows;
        if let Some(p) = progress {
            if !p(done, total_rows) {
                return Err(Error::Aborted);
            }
        }
    }
    let attributions = if cfg.multiply_by_inputs {
        total_grad * &diffs
    } else {
        total_grad
    };
    let deltas = if cfg.return_delta {
        convergence_deltas(
            engine,
            inputs,
            baseline,
            target,
            &attributions,
            cfg.batch_size,
        )?
    } else {
        Vec::new()
    };
    Ok(IgOutput {
        attributions,
        deltas,
    })
}

/// Σ attribution − (F(x)[t] − F(b)[t]) for each input (Captum's completeness check).
fn convergence_deltas<E: Engine + ?Sized>(
    engine: &E,
    inputs: ArrayView4<f32>,
    baseline: ArrayView4<f32>,
    target: usize,
    attributions: &Array4<f32>,
    batch_size: usize,
) -> Result<Vec<f32>> {
    let f_base = engine.logits(baseline)?[[0, target]];
    let mut f_inputs = Vec::with_capacity(inputs.dim().0);
    for chunk in inputs.axis_chunks_iter(Axis(0), batch_size) {
        let logits = engine.logits(chunk)?;
        f_inputs.extend(logits.outer_iter().map(|l| l[target]));
    }
    Ok(attributions
        .outer_iter()
        .zip(f_inputs)
        .map(|(a, f)| convergence_delta(a, f, f_base))
        .collect())
}

/// NoiseTunnel(IG) of one input `x` (1, 3, H, W) towards `target`, or plain IG when
/// `nt` is `None`: IG runs on `x + ε_j` for each noise sample (the multiply by
/// (x − b) uses the noisy input), then the per-sample attributions are aggregated.
///
/// # Errors
/// As [`integrated_gradients`] and [`make_noise`].
pub fn attribute<E: Engine + ?Sized>(
    engine: &E,
    x: ArrayView4<f32>,
    baseline: ArrayView4<f32>,
    target: usize,
    ig: &IgConfig,
    nt: Option<&NoiseTunnelConfig>,
    progress: Option<Progress>,
) -> Result<NtOutput> {
    if x.dim().0 != 1 {
        return Err(Error::shape(
            "input (1, 3, H, W)",
            &[1, 3, x.dim().2, x.dim().3],
            &[x.dim().0, x.dim().1, x.dim().2, x.dim().3],
        ));
    }
    let Some(nt) = nt else {
        let out = integrated_gradients(engine, x, baseline, target, ig, progress)?;
        return Ok(NtOutput {
            attribution: out.attributions,
            deltas: out.deltas,
        });
    };
    let noise = make_noise(&nt.noise, x)?;
    let noisy = &noise + &x;
    let out = integrated_gradients(engine, noisy.view(), baseline, target, ig, progress)?;
    Ok(NtOutput {
        attribution: aggregate(&out.attributions, nt.nt_type),
        deltas: out.deltas,
    })
}
