//! Compute backends, and the one place that chooses between them
//! ([`engine_for`]). An [`Engine`] is a ViT on a device: logits, input gradients,
//! the IG + NoiseTunnel loop and the block activations feature maps read. Every
//! entry point (CLI, C ABI, pipeline, demo, evaluation) gets its engine from
//! [`engine_for`] and never builds one itself, so `--device` means the same
//! everywhere and no device silently falls back to another.
//!
//! - [`cpu`]: ndarray + rayon, always built.
//! - `cuda` (feature `cuda`): the kernels of `kernels/` through cudarc, loaded at
//!   run time; with `cuda-emu`, the same engine on an emulated device.
//! - [`host_ig`]: the IG + NoiseTunnel loop over any engine's gradients (the
//!   default of [`Engine::attribute`]).

pub mod blas_layout;
pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod host_ig;
pub mod input;
pub mod precision;
pub mod relevance;
pub mod taps;

pub use precision::Precision;
pub use relevance::{DeviceRelevance, RelevanceDevice, RelevanceJob, TapRequest};
pub use taps::{BlockTaps, Facet};

use ndarray::{Array2, Array4, ArrayView4};

use crate::error::{Error, Result};
use crate::ig::{IgConfig, NoiseTunnelConfig, NtOutput, Progress};
use crate::model::Vit;

/// Where a computation runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    #[default]
    Cpu,
    /// GPU 0 through CUDA (builds with the `cuda` feature).
    Cuda,
    /// The CUDA engine on the emulated device (builds with the `cuda-emu` feature):
    /// the GPU code path, kernels in the fiber emulator, GEMMs on the CPU. Slow.
    CudaEmu,
}

impl Device {
    pub fn name(self) -> &'static str {
        match self {
            Device::Cpu => "cpu",
            Device::Cuda => "cuda",
            Device::CudaEmu => "cuda-emu",
        }
    }
}

impl std::str::FromStr for Device {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "cpu" => Ok(Device::Cpu),
            "cuda" | "gpu" => Ok(Device::Cuda),
            "cuda-emu" => Ok(Device::CudaEmu),
            other => Err(Error::param(
                "device",
                format!("`{other}` is not one of cpu, cuda, cuda-emu"),
            )),
        }
    }
}

/// How to build an engine: the device, and the arithmetic of the CUDA engine's
/// GEMMs. A bare [`Device`] converts into the faithful default (f32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EngineOptions {
    pub device: Device,
    /// GEMM precision (docs/gpu.md, "Precision modes"); only the CUDA engine
    /// (`cuda`, `cuda-emu`) has modes other than [`Precision::F32`].
    pub precision: Precision,
}

impl From<Device> for EngineOptions {
    fn from(device: Device) -> Self {
        EngineOptions {
            device,
            precision: Precision::F32,
        }
    }
}

/// The engine for `options` (a [`Device`], or [`EngineOptions`] with a GEMM
/// precision) over a loaded model: the one place a backend is chosen.
///
/// # Errors
/// [`Error::CudaUnavailable`] for [`Device::Cuda`] in a build without the `cuda`
/// feature (for [`Device::CudaEmu`], without `cuda-emu`), or where no usable GPU or CUDA library is found — never a CPU engine
/// in its place. [`Error::InvalidParam`] for a precision other than f32 on the CPU
/// (its GEMMs are f32 only; no silent substitute).
pub fn engine_for<'v>(
    options: impl Into<EngineOptions>,
    vit: &'v Vit,
) -> Result<Box<dyn Engine + 'v>> {
    let EngineOptions { device, precision } = options.into();
    match device {
        Device::Cpu => {
            if precision != Precision::F32 {
                return Err(Error::param(
                    "precision",
                    format!(
                        "{precision} is a GEMM mode of the CUDA engine; the cpu device computes in f32 only (use --precision f32, or --device cuda)"
                    ),
                ));
            }
            Ok(Box::new(cpu::CpuEngine::new(vit)))
        }
        #[cfg(feature = "cuda")]
        Device::Cuda => Ok(Box::new(
            cuda::CudaEngine::new(vit, 0)?.with_precision(precision),
        )),
        #[cfg(not(feature = "cuda"))]
        Device::Cuda => Err(unavailable(device)),
        #[cfg(feature = "cuda-emu")]
        Device::CudaEmu => Ok(Box::new(
            cuda::CudaEngine::emulated(vit)?.with_precision(precision),
        )),
        #[cfg(not(feature = "cuda-emu"))]
        Device::CudaEmu => Err(unavailable(device)),
    }
}

/// DenseCRF on a CUDA device (`cuda::CrfDevice`); without the `cuda` feature there is
/// no such device and this type has no values.
#[cfg(feature = "cuda")]
pub use cuda::CrfDevice;
#[cfg(not(feature = "cuda"))]
#[derive(Debug)]
pub enum CrfDevice {}

/// DenseCRF on `device`: `None` for the CPU (the caller runs `post::crf` there), the
/// device's CRF for a CUDA device. Like [`engine_for`], never a CPU stand-in.
///
/// # Errors
/// As [`engine_for`]: [`Error::CudaUnavailable`] where the device does not exist.
pub fn crf_device_for(device: Device) -> Result<Option<CrfDevice>> {
    match device {
        Device::Cpu => Ok(None),
        #[cfg(feature = "cuda")]
        Device::Cuda => Ok(Some(CrfDevice::new(std::sync::Arc::new(
            cuda::CudarcDevice::new(0)?,
        )))),
        #[cfg(feature = "cuda-emu")]
        Device::CudaEmu => Ok(Some(CrfDevice::new(std::sync::Arc::new(
            cuda::emu::EmuDevice::new()?,
        )))),
        #[cfg(not(feature = "cuda"))]
        Device::Cuda => Err(unavailable(device)),
        #[cfg(not(feature = "cuda-emu"))]
        Device::CudaEmu => Err(unavailable(device)),
    }
}

/// Why `device` does not exist in this build.
#[cfg_attr(feature = "cuda-emu", allow(dead_code))]
fn unavailable(device: Device) -> Error {
    match device {
        Device::CudaEmu => Error::CudaUnavailable(
            "this build has no emulated CUDA device (the `cuda-emu` feature is not compiled in); use the cpu device"
                .into(),
        ),
        _ => Error::CudaUnavailable(
            "this build has no CUDA backend (the `cuda` feature is not compiled in); use the cpu device"
                .into(),
        ),
    }
}

/// A ViT classifier on some device.
pub trait Engine: Sync {
    /// The model this engine runs.
    fn vit(&self) -> &Vit;
    /// The device it runs on.
    fn device(&self) -> Device;
    /// The arithmetic of its GEMMs ([`Precision::F32`] unless built with another).
    fn precision(&self) -> Precision {
        Precision::F32
    }
    /// Number of classes of the head.
    fn classes(&self) -> Result<usize> {
        self.vit().classes()
    }
    /// Raw logits (batch, classes) for normalised inputs (batch, 3, H, W).
    fn logits(&self, x: ArrayView4<f32>) -> Result<Array2<f32>>;
    /// Logits and ∂(Σ_b logits[b, targets[b]])/∂x — i.e. each example's own target
    /// logit differentiated w.r.t. its own input (grad_outputs = 1, as Captum).
    fn logits_and_input_grad(
        &self,
        x: ArrayView4<f32>,
        targets: &[usize],
    ) -> Result<(Array2<f32>, Array4<f32>)>;
    /// Integrated Gradients of one input `x` (1, 3, H, W) towards `target` from
    /// `baseline` (1, 3, H, W), inside a NoiseTunnel when `nt` is given; the path
    /// points of all noise samples run in batches of `ig.batch_size`. The default
    /// is the host loop over [`Engine::logits_and_input_grad`]; a backend may keep
    /// the whole loop on its device.
    ///
    /// # Errors
    /// Invalid settings or shapes; engine errors; [`Error::Aborted`] when
    /// `progress` returns false.
    fn attribute(
        &self,
        x: ArrayView4<f32>,
        baseline: ArrayView4<f32>,
        target: usize,
        ig: &IgConfig,
        nt: Option<&NoiseTunnelConfig>,
        progress: Option<Progress>,
    ) -> Result<NtOutput> {
        host_ig::attribute(self, x, baseline, target, ig, nt, progress)
    }
    /// The activations of block `layer` (`None`: the last) for the single image
    /// `x` (1, 3, H, W), read by feature maps, TokenCut and MaskCut.
    ///
    /// # Errors
    /// Shapes; a layer beyond the depth; engine errors.
    fn block_taps(&self, x: ArrayView4<f32>, layer: Option<usize>) -> Result<BlockTaps>;
    /// DenseCRF on this engine's device, for the pipeline's CRF stage; `None` (the
    /// default): the CRF runs on the CPU.
    fn crf_device(&self) -> Option<&CrfDevice> {
        None
    }
    /// The engine's path from an image to its reduced relevance map without the
    /// attribution leaving the device; `None` (the default): the host reduces what
    /// [`Engine::attribute`] returns.
    fn relevance_device(&self) -> Option<&dyn RelevanceDevice> {
        None
    }
}

/// Checks a tap request: one image, an existing block. Returns the block index.
pub(crate) fn tap_layer(vit: &Vit, x: ArrayView4<f32>, layer: Option<usize>) -> Result<usize> {
    if x.dim().0 != 1 {
        return Err(Error::param(
            "input",
            "feature maps take one image (1, 3, H, W)",
        ));
    }
    let depth = vit.config.depth;
    let layer = layer.unwrap_or(depth.saturating_sub(1));
    if layer >= depth {
        return Err(Error::param(
            "layer",
            format!("block {layer} does not exist (the model has {depth}, numbered from 0)"),
        ));
    }
    Ok(layer)
}
