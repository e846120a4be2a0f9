//! The CUDA backend (feature `cuda`): the kernels of `kernels/` compiled by NVRTC at
//! run time for the device's compute capability, GEMMs through cuBLAS (f32 by default;
//! TF32 or bf16 tensor cores on request, `backend::Precision`),
//! all through cudarc with its libraries loaded at run time — so this builds where no
//! CUDA is installed, and [`Gpu::new`] then reports [`Error::CudaUnavailable`]
//! instead of panicking.
//!
//! - [`api`]: the device interface the engine runs on ([`DeviceApi`]: memory, copies,
//!   launches, GEMMs, synchronisation, counters) and device buffers.
//! - [`device`]: probing the driver/NVRTC/cuBLAS libraries, the context, stream and
//!   cuBLAS handle; [`CudarcDevice`], the [`DeviceApi`] of a real GPU.
//! - `emu` (feature `cuda-emu`): `EmuDevice`, the [`DeviceApi`] that runs the kernels
//!   in the fiber emulator of `kernels/emu/` and the GEMMs on the CPU.
//! - [`workspace`]: the engine's workspace arena (one allocation, carved per call).
//! - [`modules`]: the kernel files, the NVRTC flags (one place) and the per-process module cache.
//! - [`launch`]: one typed wrapper per kernel (nothing else launches) and the row-major GEMM.
//! - [`engine`]: [`CudaEngine`], the [`Engine`](crate::backend::Engine) on a GPU.
//! - [`crf`]: [`CrfDevice`], DenseCRF on the same device interface (its kernels'
//!   launch wrappers live there).
//!
//! Every kernel is tested without a GPU by `tests/cuda_emulated.rs` (g++ + the emulator in
//! `kernels/emu/`) against its CPU twin; `.ci/cuda_kernels.sh` compiles them all with NVRTC.
//!
//! [`Error::CudaUnavailable`]: crate::Error::CudaUnavailable

pub mod api;
pub mod crf;
pub mod device;
#[cfg(feature = "cuda-emu")]
pub mod emu;
pub mod engine;
pub mod launch;
pub mod modules;
pub mod workspace;

pub use api::{Counters, DeviceApi};
pub use crf::CrfDevice;
pub use device::{probe, CudarcDevice, Gpu};
pub use engine::CudaEngine;
