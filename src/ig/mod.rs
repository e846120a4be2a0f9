//! What Integrated Gradients and NoiseTunnel are, independent of where they run:
//! the settings, Captum's quadrature rules, the seeded noise and the aggregation.
//!
//! This layer sits below the backends so that every engine's attribution loop
//! (the host loop in [`crate::backend::host_ig`], the CUDA engine's on-device
//! loop) and [`crate::attr`] share one definition without importing upward.
//! The method and its Captum semantics are described in `docs/method.md`.

pub mod config;
pub mod noise_design;
pub mod noise_tunnel;
pub mod path;
pub mod quadrature;
pub mod reduction;

pub use config::{IgConfig, Progress};
pub use noise_design::NoiseDesign;
pub use noise_tunnel::{
    aggregate, make_noise, Aggregator, Noise, NoiseTunnelConfig, NtOutput, NtType,
};
pub use path::{path_points, PathPoints};
pub use quadrature::{quadrature, Method, Quadrature};
pub use reduction::Reduction;

/// Σ attribution of one input as Captum's convergence delta takes it: in f64 over
/// the f32 values, rounded to f32.
pub fn attribution_sum<'a>(attribution: impl IntoIterator<Item = &'a f32>) -> f32 {
    attribution.into_iter().map(|v| *v as f64).sum::<f64>() as f32
}

/// Captum's convergence delta (completeness check) of one input from its
/// [`attribution_sum`]: Σ attribution − (F(x)[t] − F(b)[t]).
pub fn convergence_delta(attribution_sum: f32, f_input: f32, f_base: f32) -> f32 {
    attribution_sum - (f_input - f_base)
}
