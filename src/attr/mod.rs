//! Attribution: Integrated Gradients (all Captum quadrature rules), NoiseTunnel,
//! baselines, and relevance maps.

pub mod baseline;
pub mod explain;
pub mod features;
pub mod fusion;
pub mod ig;
pub mod noise_tunnel;
pub mod quadrature;
pub mod relevance;
pub mod smooth;

pub use baseline::Baseline;
pub use explain::{argmax, explain, ExplainConfig, Explanation};
pub use ig::{integrated_gradients, IgConfig, IgOutput, Progress};
pub use noise_tunnel::{noise_tunnel_ig, Noise, NoiseTunnelConfig, NtOutput, NtType};
pub use quadrature::{quadrature, Method, Quadrature};
pub use relevance::{normalize, reduce_channels, Normalizer, Reduction};
