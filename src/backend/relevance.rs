//! The explanation as the mask stage reads it, computed where the engine runs: an
//! engine with a device ([`Engine::relevance_device`](super::Engine::relevance_device))
//! predicts, chooses the explained class, runs IG + NoiseTunnel, reduces the
//! attribution's channels, blurs and scales the map on the device, and hands back
//! only the map and the logits — one wait for the device per explanation. The host
//! computes the same map from the full attribution (`attr::explain::Explanation::map`);
//! the two agree bit for bit (docs/cuda_emulation.md §1.4).

use ndarray::{Array2, ArrayView4};

use super::BlockTaps;
use crate::error::Result;
use crate::ig::{IgConfig, NoiseTunnelConfig, Progress, Reduction};

/// One image's explanation, reduced to a map.
#[derive(Clone, Copy)]
pub struct RelevanceJob<'a> {
    /// The normalised image (1, 3, H, W).
    pub x: ArrayView4<'a, f32>,
    /// The IG baseline (1, 3, H, W).
    pub baseline: ArrayView4<'a, f32>,
    /// The class to explain; `None`: the arg-max logit (lowest index on ties).
    pub target: Option<usize>,
    pub ig: &'a IgConfig,
    /// `None` for plain IG.
    pub nt: Option<&'a NoiseTunnelConfig>,
    pub reduction: Reduction,
    /// Normalised Gaussian taps for the separable blur (`attr::smooth`); empty: none.
    pub blur_taps: &'a [f32],
    /// Scale the blurred map to [0, 1] by its minimum and maximum.
    pub min_max: bool,
    pub progress: Option<Progress<'a>>,
    /// Also hand back the clean image's taps at this block (for a feature map), read
    /// in the same wait.
    pub taps: Option<TapRequest>,
}

/// Which block taps an explanation brings back with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TapRequest {
    /// The block, counted from 0.
    pub layer: usize,
    /// Also its attention probabilities (heads × tokens²), which a key-based feature
    /// map does not read.
    pub attention: bool,
}

/// What comes back from the device.
#[derive(Debug, Clone)]
pub struct DeviceRelevance {
    /// (H, W): reduced, blurred and (when asked) min-max scaled.
    pub map: Array2<f32>,
    /// Logits of the clean image.
    pub logits: Vec<f32>,
    /// Convergence deltas per noise sample, when `ig.return_delta`.
    pub deltas: Vec<f32>,
    /// The taps the job asked for.
    pub taps: Option<BlockTaps>,
}

/// An engine that computes [`DeviceRelevance`] on its device.
pub trait RelevanceDevice {
    /// # Errors
    /// Invalid settings or shapes; device errors; [`crate::Error::Aborted`] from the
    /// progress callback.
    fn explain_relevance(&self, job: &RelevanceJob<'_>) -> Result<DeviceRelevance>;
}

/// Arg-max with the lowest index on ties (as torch.argmax on CPU); NaN never wins.
/// The device's class choice (`kernels/relevance.cu`) is its twin.
pub fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}
