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

use std::collections::VecDeque;

use ndarray::{Array3, Array4, ArrayView3, ArrayView4, Axis};

use super::Engine;
use crate::error::{Error, Result};
use crate::ig::{
    attribution_sum, convergence_delta, make_noise, path_points, Aggregator, IgConfig,
    NoiseTunnelConfig, NtOutput, Progress,
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
    let mut attributions = Array4::<f32>::zeros(inputs.dim());
    let sums = ig_rows(
        engine,
        inputs,
        baseline,
        target,
        cfg,
        0,
        progress,
        |j, a| {
            attributions.index_axis_mut(Axis(0), j).assign(&a);
        },
    )?;
    let deltas = deltas_if_asked(engine, inputs, baseline, target, cfg, &sums)?;
    Ok(IgOutput {
        attributions,
        deltas,
    })
}

/// The IG loop: every (input, step) row in batches of `cfg.batch_size`, the
/// weighted gradients of an input summed in row order and, once its last row is
/// done, multiplied by (x − b) (when `multiply_by_inputs`) and handed to `finish`
/// in input order. Only the inputs a batch touches hold an accumulator, so the
/// attributions of many noise samples are never all in memory. Returns each
/// input's Σ attribution (in f64, rounded to f32, as the convergence delta sums)
/// when `cfg.return_delta`, else nothing.
#[allow(clippy::too_many_arguments)]
fn ig_rows<E: Engine + ?Sized>(
    engine: &E,
    inputs: ArrayView4<f32>,
    baseline: ArrayView4<f32>,
    target: usize,
    cfg: &IgConfig,
    path_seed: u64,
    progress: Option<Progress>,
    mut finish: impl FnMut(usize, ArrayView3<f32>),
) -> Result<Vec<f32>> {
    if cfg.batch_size == 0 {
        return Err(Error::param("batch_size", "must be at least 1"));
    }
    let (n_inputs, c, h, w) = inputs.dim();
    if baseline.dim() != (1, c, h, w) {
        let (a, b, cc, d) = baseline.dim();
        return Err(Error::shape("baseline", &[1, c, h, w], &[a, b, cc, d]));
    }
    // Also validates n_steps for the rule.
    let path = path_points(cfg.method, cfg.n_steps, n_inputs, path_seed)?;
    let base = baseline.index_axis(Axis(0), 0);
    let total_rows = n_inputs * cfg.n_steps;
    // The inputs begun and not finished, in input order (consecutive indices).
    let mut open: VecDeque<OpenInput> = VecDeque::new();
    let mut sums = Vec::with_capacity(n_inputs);
    let mut done = 0;
    while done < total_rows {
        let rows = cfg.batch_size.min(total_rows - done);
        let mut batch = Array4::<f32>::zeros((rows, c, h, w));
        for (r, mut row) in batch.outer_iter_mut().enumerate() {
            let j = (done + r) / cfg.n_steps;
            if open.back().map(|o| o.index) != Some(j) {
                open.push_back(OpenInput {
                    index: j,
                    // (x − b), in f32 as Captum forms it: once per input.
                    diff: &inputs.index_axis(Axis(0), j) - &base,
                    acc: Array3::zeros((c, h, w)),
                });
            }
            let d = &open.back().expect("pushed above").diff;
            let (alpha, _) = path.at(done + r);
            ndarray::Zip::from(&mut row)
                .and(&base)
                .and(d)
                .for_each(|o, &b, &d| *o = b + alpha * d);
        }
        let (_, grads) = engine.logits_and_input_grad(batch.view(), &vec![target; rows])?;
        let first = open.front().expect("the batch opened its inputs").index;
        for (r, g) in grads.outer_iter().enumerate() {
            let (_, weight) = path.at(done + r);
            let acc = &mut open[(done + r) / cfg.n_steps - first].acc;
            acc.zip_mut_with(&g, |a, &gv| *a += gv * weight);
        }
        done += rows;
        // Inputs whose rows are all done, in order.
        while open
            .front()
            .is_some_and(|o| (o.index + 1) * cfg.n_steps <= done)
        {
            let OpenInput {
                index,
                diff,
                mut acc,
            } = open.pop_front().expect("front exists");
            if cfg.multiply_by_inputs {
                acc *= &diff;
            }
            if cfg.return_delta {
                sums.push(attribution_sum(&acc));
            }
            finish(index, acc.view());
        }
        if let Some(p) = progress {
            if !p(done, total_rows) {
                return Err(Error::Aborted);
            }
        }
    }
    Ok(sums)
}

/// An input of [`ig_rows`] whose rows are under way.
struct OpenInput {
    index: usize,
    /// x − b.
    diff: Array3<f32>,
    /// Σ w·∇F over its rows so far.
    acc: Array3<f32>,
}

/// The convergence deltas of the inputs whose Σ attribution is `sums`, when
/// `cfg.return_delta`; else none.
fn deltas_if_asked<E: Engine + ?Sized>(
    engine: &E,
    inputs: ArrayView4<f32>,
    baseline: ArrayView4<f32>,
    target: usize,
    cfg: &IgConfig,
    sums: &[f32],
) -> Result<Vec<f32>> {
    if !cfg.return_delta {
        return Ok(Vec::new());
    }
    let f_base = engine.logits(baseline)?[[0, target]];
    let mut f_inputs = Vec::with_capacity(inputs.dim().0);
    for chunk in inputs.axis_chunks_iter(Axis(0), cfg.batch_size) {
        let logits = engine.logits(chunk)?;
        f_inputs.extend(logits.outer_iter().map(|l| l[target]));
    }
    Ok(sums
        .iter()
        .zip(f_inputs)
        .map(|(&sum, f)| convergence_delta(sum, f, f_base))
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
    // The noise tensor becomes the noisy inputs in place (one buffer of samples × image).
    let mut noisy = make_noise(&nt.noise, x)?;
    noisy += &x;
    let mut aggregator = Aggregator::default();
    let sums = ig_rows(
        engine,
        noisy.view(),
        baseline,
        target,
        ig,
        nt.noise.seed(),
        progress,
        |_, a| aggregator.add(a),
    )?;
    let deltas = deltas_if_asked(engine, noisy.view(), baseline, target, ig, &sums)?;
    Ok(NtOutput {
        attribution: aggregator.finish(nt.nt_type),
        deltas,
    })
}
