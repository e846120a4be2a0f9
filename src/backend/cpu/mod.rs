//! The CPU backend: ndarray + rayon, GEMMs through the `gemm` crate.

pub mod backward;
pub mod forward;
pub mod fused_attention;
pub mod gemm;
pub mod math;
pub mod ops;
pub(crate) mod simd;

pub use crate::backend::taps::Facet;
pub use backward::input_grad_from_features;
pub use forward::{forward, forward_tapped, ForwardState};
pub mod engine;
pub use engine::CpuEngine;
