//! Attribution: Integrated Gradients (all Captum quadrature rules), NoiseTunnel,
//! baselines, and relevance maps.

pub mod baseline;
pub mod explain;
pub mod features;
pub mod fusion;
pub mod relevance;
pub mod smooth;

pub use crate::backend::host_ig::{integrated_gradients, IgOutput};
pub use crate::ig::{
    aggregate, make_noise, quadrature, IgConfig, Method, Noise, NoiseDesign, NoiseTunnelConfig,
    NtOutput, NtType, Progress, Quadrature,
};
pub use baseline::Baseline;
pub use explain::{argmax, explain, explain_map, ExplainConfig, ExplainedMap, Explanation};
pub use relevance::{normalize, reduce_channels, Normalizer, Reduction, RelevanceConfig};

/// NoiseTunnel(IG) of one input `x` (1, 3, H, W) towards `target` on `engine`:
/// the engine's own loop ([`crate::backend::Engine::attribute`]), on its device.
///
/// # Errors
/// As [`crate::backend::host_ig::attribute`], plus the engine's errors.
pub fn noise_tunnel_ig(
    engine: &dyn crate::backend::Engine,
    x: ndarray::ArrayView4<f32>,
    baseline: ndarray::ArrayView4<f32>,
    target: usize,
    ig: &IgConfig,
    nt: &NoiseTunnelConfig,
    progress: Option<Progress>,
) -> crate::Result<NtOutput> {
    engine.attribute(x, baseline, target, ig, Some(nt), progress)
}
