//! Finding a usable GPU: the driver, NVRTC and cuBLAS libraries are probed before any
//! cudarc call that would panic without them, and context creation is guarded by
//! `catch_unwind` as a second line of defence.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use cudarc::cublas::CudaBlas;
use cudarc::driver::{CudaContext, CudaStream};

use cudarc::driver::CudaFunction;

use super::modules::{KernelFile, ModuleCache};
use crate::error::{Error, Result};

/// Checks that the CUDA driver, NVRTC and cuBLAS libraries can be loaded.
///
/// # Errors
/// [`Error::CudaUnavailable`] naming the first library that is missing.
pub fn probe() -> Result<()> {
    // SAFETY: each probe only dlopens candidate library names and drops the handle.
    let (driver, nvrtc, cublas) = unsafe {
        (
            cudarc::driver::sys::is_culib_present(),
            cudarc::nvrtc::sys::is_culib_present(),
            cudarc::cublas::sys::is_culib_present(),
        )
    };
    if !driver {
        return Err(Error::CudaUnavailable(
            "the NVIDIA driver library (libcuda.so.1) was not found; is a GPU driver installed?"
                .into(),
        ));
    }
    if !nvrtc {
        return Err(Error::CudaUnavailable(
            "NVRTC (libnvrtc.so.13 or .12) was not found; install the CUDA runtime compiler \
             (e.g. `pip install nvidia-cuda-nvrtc-cu12`) and add it to LD_LIBRARY_PATH"
                .into(),
        ));
    }
    if !cublas {
        return Err(Error::CudaUnavailable(
            "cuBLAS (libcublas.so.13 or .12) was not found; install it \
             (e.g. `pip install nvidia-cublas-cu12`) and add it to LD_LIBRARY_PATH"
                .into(),
        ));
    }
    Ok(())
}

/// Runs `f`, turning a panic inside cudarc into [`Error::CudaUnavailable`].
pub(crate) fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".into());
            Err(Error::CudaUnavailable(format!("{what}: {msg}")))
        }
    }
}

/// Converts a cudarc error into ours, saying what was being done.
pub(crate) fn cuda_err(what: &str) -> impl Fn(cudarc::driver::DriverError) -> Error + '_ {
    move |e| Error::Cuda(format!("{what}: {e:?}"))
}

/// Maps a driver error while finding and opening the device: CUDA is unavailable.
fn setup_err(what: &str) -> impl Fn(cudarc::driver::DriverError) -> Error + '_ {
    move |e| Error::CudaUnavailable(format!("{what}: {e:?}"))
}

/// A device, its stream, a cuBLAS handle on that stream, and the kernel modules
/// loaded into its context.
pub struct Gpu {
    pub ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
    pub blas: CudaBlas,
    pub modules: ModuleCache,
    /// (major, minor) compute capability.
    pub compute_capability: (i32, i32),
    pub name: String,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu")
            .field("name", &self.name)
            .field("compute_capability", &self.compute_capability)
            .finish()
    }
}

impl Gpu {
    /// Opens device `ordinal`.
    ///
    /// # Errors
    /// [`Error::CudaUnavailable`] when a library is missing (see [`probe`]), there is
    /// no such device, or the driver refuses a context.
    pub fn new(ordinal: usize) -> Result<Arc<Gpu>> {
        probe()?;
        guarded("opening the CUDA device", || {
            let count = CudaContext::device_count().map_err(setup_err("counting CUDA devices"))?;
            if ordinal >= count.max(0) as usize {
                return Err(Error::CudaUnavailable(format!(
                    "device {ordinal} requested, {count} CUDA device(s) present"
                )));
            }
            let ctx = CudaContext::new(ordinal).map_err(setup_err("creating a CUDA context"))?;
            // One stream: nothing to synchronise between streams, so skip the events
            // cudarc would record around every use of a buffer.
            // SAFETY: every buffer of this backend is used on `stream` only.
            unsafe { ctx.disable_event_tracking() };
            let stream = ctx.default_stream();
            let blas = CudaBlas::new(stream.clone())
                .map_err(|e| Error::CudaUnavailable(format!("creating a cuBLAS handle: {e:?}")))?;
            let compute_capability = ctx
                .compute_capability()
                .map_err(setup_err("reading the compute capability"))?;
            let name = ctx.name().map_err(setup_err("reading the device name"))?;
            Ok(Arc::new(Gpu {
                modules: ModuleCache::default(),
                ctx,
                stream,
                blas,
                compute_capability,
                name,
            }))
        })
    }
}

impl Gpu {
    /// Kernel `name` of `file` in this GPU's context, compiled and loaded on first use.
    ///
    /// # Errors
    /// As [`ModuleCache::function`].
    pub fn function(&self, file: KernelFile, name: &'static str) -> Result<CudaFunction> {
        self.modules
            .function(&self.ctx, self.compute_capability, file, name)
    }
}
