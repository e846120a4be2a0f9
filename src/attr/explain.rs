//! One call from a normalised image to its explanation: predict, choose the target,
//! run IG (optionally inside NoiseTunnel) — steps 1–2 of the paper's Algorithm 1.

use ndarray::{Array1, Array2, Array4, ArrayView4, Axis};

use super::baseline::Baseline;
use super::relevance::{normalize, Normalizer, RelevanceConfig};
use super::smooth::blur_taps;
use crate::backend::{BlockTaps, Engine, RelevanceJob, TapRequest};
use crate::error::{Error, Result};
use crate::ig::{IgConfig, NoiseTunnelConfig, Progress};

/// Everything that decides an explanation. Defaults are the paper's: IG with
/// Gauss–Legendre, 50 steps, zero baseline, inside a 5-sample smoothgrad
/// NoiseTunnel with stdev 1.0, explaining the predicted class.
#[derive(Debug, Clone, PartialEq)]
pub struct ExplainConfig {
    pub ig: IgConfig,
    /// `None` for plain IG.
    pub noise_tunnel: Option<NoiseTunnelConfig>,
    pub baseline: Baseline,
    /// Class to explain; `None` explains the predicted (arg-max logit) class.
    pub target: Option<usize>,
    /// Normalisation the input went through (needed for the black baseline).
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Default for ExplainConfig {
    fn default() -> Self {
        ExplainConfig {
            ig: IgConfig::default(),
            noise_tunnel: Some(NoiseTunnelConfig::default()),
            baseline: Baseline::Zero,
            target: None,
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
        }
    }
}

impl ExplainConfig {
    /// Forward+backward passes [`explain`] runs: steps × noise samples.
    pub fn passes(&self) -> usize {
        self.ig.n_steps
            * self
                .noise_tunnel
                .as_ref()
                .map_or(1, |nt| nt.noise.samples())
    }
}

/// The result of [`explain`].
#[derive(Debug, Clone)]
pub struct Explanation {
    /// (1, 3, H, W), in the input's (normalised) space.
    pub attribution: Array4<f32>,
    /// Logits of the clean input.
    pub logits: Array1<f32>,
    /// The class whose logit was explained.
    pub target: usize,
    /// The predicted class (arg-max logit).
    pub predicted: usize,
    /// Convergence deltas (one per noise sample, or one for plain IG); empty when
    /// not requested.
    pub deltas: Vec<f32>,
}

pub use crate::backend::relevance::argmax;

/// The checks every explanation makes first: one image, and no more passes than the
/// `ig_passes` limit.
fn check_request(x: ArrayView4<f32>, cfg: &ExplainConfig) -> Result<()> {
    if x.dim().0 != 1 {
        let (b, c, h, w) = x.dim();
        return Err(Error::shape(
            "input (1, 3, H, W)",
            &[1, c, h, w],
            &[b, c, h, w],
        ));
    }
    crate::limits::check_product(
        "ig_passes",
        &[
            cfg.ig.n_steps as u64,
            cfg.noise_tunnel
                .as_ref()
                .map_or(1, |n| n.noise.samples().max(1) as u64),
        ],
    )?;
    Ok(())
}

/// Explains `x` (1, 3, H, W).
///
/// # Errors
/// Invalid settings or shapes; engine errors; [`Error::Aborted`] from the callback.
pub fn explain(
    engine: &dyn Engine,
    x: ArrayView4<f32>,
    cfg: &ExplainConfig,
    progress: Option<Progress>,
) -> Result<Explanation> {
    check_request(x, cfg)?;
    let logits = engine.logits(x)?.index_axis(Axis(0), 0).to_owned();
    crate::model::check_logits(logits.as_slice().unwrap_or(&[]))?;
    let predicted = argmax(logits.as_slice().expect("owned row"));
    let target = cfg.target.unwrap_or(predicted);
    crate::backend::input::check_class_range("target", logits.len(), &[target])?;
    let baseline = cfg.baseline.resolve(x, cfg.mean, cfg.std)?;
    let out = engine.attribute(
        x,
        baseline.view(),
        target,
        &cfg.ig,
        cfg.noise_tunnel.as_ref(),
        progress,
    )?;
    Ok(Explanation {
        attribution: out.attribution,
        logits,
        target,
        predicted,
        deltas: out.deltas,
    })
}

/// An explanation reduced to the relevance map the mask stage reads.
#[derive(Debug, Clone)]
pub struct ExplainedMap {
    /// (H, W), reduced, smoothed and scaled by a [`RelevanceConfig`].
    pub relevance: Array2<f32>,
    /// Logits of the clean input.
    pub logits: Array1<f32>,
    /// The class whose logit was explained.
    pub target: usize,
    /// The predicted class (arg-max logit).
    pub predicted: usize,
    /// As [`Explanation::deltas`].
    pub deltas: Vec<f32>,
    /// The clean image's block taps the caller asked [`explain_map`] for, with their
    /// block, where the device read them in the same wait (`None` on the host path:
    /// the feature map then reads them from the engine).
    pub taps: Option<(usize, BlockTaps)>,
}

impl Explanation {
    /// This explanation's relevance map, computed on the host from the attribution.
    ///
    /// # Errors
    /// As [`RelevanceConfig::apply`].
    pub fn map(&self, rel: &RelevanceConfig) -> Result<ExplainedMap> {
        Ok(ExplainedMap {
            relevance: rel.apply(self.attribution.index_axis(Axis(0), 0))?,
            logits: self.logits.clone(),
            target: self.target,
            predicted: self.predicted,
            deltas: self.deltas.clone(),
            taps: None,
        })
    }
}

/// Explains `x` (1, 3, H, W) and reduces the attribution to its relevance map: on the
/// engine's device when it has a relevance path (the attribution never leaves the
/// device, one wait per image), else on the host from [`explain`]. Both give the same
/// map bit for bit. The device also brings back the clean image's `taps` when asked
/// (for a feature map), in the same wait.
///
/// # Errors
/// As [`explain`] and [`RelevanceConfig::apply`].
pub fn explain_map(
    engine: &dyn Engine,
    x: ArrayView4<f32>,
    cfg: &ExplainConfig,
    rel: &RelevanceConfig,
    taps: Option<TapRequest>,
    progress: Option<Progress>,
) -> Result<ExplainedMap> {
    let Some(device) = engine.relevance_device() else {
        return explain(engine, x, cfg, progress)?.map(rel);
    };
    check_request(x, cfg)?;
    if let Some(t) = cfg.target {
        crate::backend::input::check_class_range("target", engine.classes()?, &[t])?;
    }
    let baseline = cfg.baseline.resolve(x, cfg.mean, cfg.std)?;
    let blur = blur_taps(rel.smooth_sigma)?;
    let min_max = rel.normalizer == Normalizer::MinMax;
    let out = device.explain_relevance(&RelevanceJob {
        x,
        baseline: baseline.view(),
        target: cfg.target,
        ig: &cfg.ig,
        nt: cfg.noise_tunnel.as_ref(),
        reduction: rel.reduction,
        blur_taps: &blur,
        min_max,
        progress,
        taps,
    })?;
    crate::model::check_logits(&out.logits)?;
    let predicted = argmax(&out.logits);
    let relevance = if min_max {
        if out.map.iter().any(|v| !v.is_finite()) {
            return Err(Error::param(
                "relevance map",
                "contains NaN or infinite values",
            ));
        }
        out.map
    } else {
        normalize(&out.map, rel.normalizer)?
    };
    Ok(ExplainedMap {
        relevance,
        logits: Array1::from(out.logits),
        target: cfg.target.unwrap_or(predicted),
        predicted,
        deltas: out.deltas,
        taps: taps.zip(out.taps).map(|(t, b)| (t.layer, b)),
    })
}
