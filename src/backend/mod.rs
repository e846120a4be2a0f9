//! Compute backends. The CPU backend is always built; the CUDA backend is filled
//! by the CUDA issue behind the `cuda` feature.

pub mod blas_layout;
pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod input;

/// Where a computation runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    #[default]
    Cpu,
    Cuda,
}

impl std::str::FromStr for Device {
    type Err = crate::error::Error;
    fn from_str(s: &str) -> crate::error::Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "cpu" => Ok(Device::Cpu),
            "cuda" | "gpu" => Ok(Device::Cuda),
            other => Err(crate::error::Error::param(
                "device",
                format!("`{other}` is not one of cpu, cuda"),
            )),
        }
    }
}

use ndarray::{Array2, Array4, ArrayView4};

/// What attribution needs from a classifier on some device: logits, and logits
/// with the gradient of the selected logits with respect to the input.
pub trait Engine: Sync {
    /// Number of classes of the head.
    fn classes(&self) -> crate::error::Result<usize>;
    /// Raw logits (batch, classes) for normalised inputs (batch, 3, H, W).
    fn logits(&self, x: ArrayView4<f32>) -> crate::error::Result<Array2<f32>>;
    /// Logits and ∂(Σ_b logits[b, targets[b]])/∂x — i.e. each example's own target
    /// logit differentiated w.r.t. its own input (grad_outputs = 1, as Captum).
    fn logits_and_input_grad(
        &self,
        x: ArrayView4<f32>,
        targets: &[usize],
    ) -> crate::error::Result<(Array2<f32>, Array4<f32>)>;
}
