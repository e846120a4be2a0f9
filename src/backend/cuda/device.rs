//! Finding a usable GPU: the driver, NVRTC and cuBLAS libraries are probed before any
//! cudarc call that would panic without them, and context creation is guarded by
//! `catch_unwind` as a second line of defence.

use std::collections::HashMap;
use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};

use cudarc::cublas::sys::{cublasComputeType_t, cublasOperation_t};
use cudarc::cublas::CudaBlas;
use cudarc::driver::{
    result as driver, sys as cu, CudaContext, CudaFunction, CudaGraph, CudaSlice, CudaStream,
    DevicePtr,
};

use super::api::{Captures, Counters, Counting, DeviceApi, Event, GraphId, KArg};
use super::modules::{KernelFile, ModuleCache};
use crate::backend::blas_layout::ColMajorGemm;
use crate::backend::{Device, Precision};
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

/// Bytes of the cuBLAS workspace set on the handle (NVIDIA's advice for Hopper): with
/// a workspace of its own, cuBLAS allocates nothing inside a graph capture.
const CUBLAS_WORKSPACE_BYTES: usize = 32 << 20;

/// A device, its stream, a cuBLAS handle on that stream, and the kernel modules
/// loaded into its context.
pub struct Gpu {
    pub ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
    pub blas: CudaBlas,
    /// The cuBLAS handle's workspace (kept alive with the handle).
    _blas_workspace: CudaSlice<u8>,
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
            // A stream of our own (non-blocking): the legacy default stream
            // synchronises with every other stream of the process and cannot be
            // captured into a graph.
            let stream = ctx
                .new_stream()
                .map_err(setup_err("creating a CUDA stream"))?;
            let blas = CudaBlas::new(stream.clone())
                .map_err(|e| Error::CudaUnavailable(format!("creating a cuBLAS handle: {e:?}")))?;
            let blas_workspace = stream
                .alloc_zeros::<u8>(CUBLAS_WORKSPACE_BYTES)
                .map_err(setup_err("allocating the cuBLAS workspace"))?;
            {
                let (ptr, _) = blas_workspace.device_ptr(&stream);
                // SAFETY: the handle is live, the workspace is a live allocation of
                // this many bytes, used only on the handle's stream, and outlives it
                // (both are fields of Gpu, the workspace dropped after the handle).
                let status = unsafe {
                    cudarc::cublas::sys::cublasSetWorkspace_v2(
                        *blas.handle(),
                        ptr as *mut std::ffi::c_void,
                        CUBLAS_WORKSPACE_BYTES,
                    )
                };
                if status != cudarc::cublas::sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS {
                    return Err(Error::CudaUnavailable(format!(
                        "setting the cuBLAS workspace: {status:?}"
                    )));
                }
            }
            let compute_capability = ctx
                .compute_capability()
                .map_err(setup_err("reading the compute capability"))?;
            let name = ctx.name().map_err(setup_err("reading the device name"))?;
            Ok(Arc::new(Gpu {
                modules: ModuleCache::default(),
                ctx,
                stream,
                blas,
                _blas_workspace: blas_workspace,
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

/// `g` through `cublasGemmEx` / `cublasGemmStridedBatchedEx` with f32 A, B and C
/// and `compute`, a 32F compute type (TF32 or bf16 tensor-core products with f32
/// accumulation: cuBLAS rounds A and B itself), the default algorithm.
///
/// # Safety
/// As [`DeviceApi::gemm`]; `handle` is bound to the stream the operands are used on.
unsafe fn gemm_ex(
    handle: cudarc::cublas::sys::cublasHandle_t,
    g: &ColMajorGemm,
    compute: cublasComputeType_t,
    a: u64,
    b: u64,
    c: u64,
    beta: f32,
) -> Result<()> {
    use cudarc::cublas::result::{gemm_ex, gemm_strided_batched_ex};
    use cudarc::cublas::sys::{cublasGemmAlgo_t, cudaDataType};
    let int = |v: usize| {
        i32::try_from(v)
            .map_err(|_| Error::param("gemm", format!("{v} exceeds cuBLAS's 32-bit sizes")))
    };
    let op = |t: bool| {
        if t {
            cublasOperation_t::CUBLAS_OP_T
        } else {
            cublasOperation_t::CUBLAS_OP_N
        }
    };
    let f32_ = cudaDataType::CUDA_R_32F;
    let algo = cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT;
    let alpha = 1.0f32;
    let (alpha, beta) = (
        (&alpha as *const f32).cast::<c_void>(),
        (&beta as *const f32).cast::<c_void>(),
    );
    let (pa, pb, pc) = (a as *const c_void, b as *const c_void, c as *mut c_void);
    let (m, n, k) = (int(g.m)?, int(g.n)?, int(g.k)?);
    let (lda, ldb, ldc) = (int(g.lda)?, int(g.ldb)?, int(g.ldc)?);
    let (ta, tb) = (op(g.trans_a), op(g.trans_b));
    // SAFETY: the caller's guarantee; alpha and beta outlive the call.
    unsafe {
        if g.batch == 1 {
            gemm_ex(
                handle, ta, tb, m, n, k, alpha, pa, f32_, lda, pb, f32_, ldb, beta, pc, f32_, ldc,
                compute, algo,
            )
        } else {
            gemm_strided_batched_ex(
                handle,
                ta,
                tb,
                m,
                n,
                k,
                alpha,
                pa,
                f32_,
                lda,
                g.stride_a as i64,
                pb,
                f32_,
                ldb,
                g.stride_b as i64,
                beta,
                pc,
                f32_,
                ldc,
                g.stride_c as i64,
                int(g.batch)?,
                compute,
                algo,
            )
        }
    }
    .map_err(|e| Error::Cuda(format!("cuBLAS GEMM ({}): {e:?}", g.precision)))
}

/// A captured graph. cudarc's `CudaGraph` is not `Send`: CUDA graph objects must not
/// be used from two threads at once, which the [`CudarcDevice`]'s mutex ensures.
struct SendGraph {
    graph: CudaGraph,
    /// What one replay runs, counted at each replay (nothing runs at capture).
    counts: Counts,
}

// SAFETY: a graph is only touched under `CudarcDevice::graphs`' mutex.
unsafe impl Send for SendGraph {}

/// Launches, GEMMs and memsets recorded into an open capture.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    launches: u64,
    gemms: u64,
    zero_fills: u64,
}

#[derive(Default)]
struct Graphs {
    /// The open capture's counts, and the finished graphs.
    captures: Captures<Counts, SendGraph>,
    /// Allocations freed inside a capture, released after it ends.
    deferred: Vec<CudaSlice<u8>>,
}

/// [`DeviceApi`] on a real GPU: cudarc's driver calls on the [`Gpu`]'s stream,
/// cuBLAS for the GEMMs, stream capture for the graphs.
pub struct CudarcDevice {
    gpu: Arc<Gpu>,
    /// Live allocations by device address; dropping the slice frees it (cudarc
    /// chooses stream-ordered or synchronous free as the device supports).
    live: Mutex<HashMap<u64, CudaSlice<u8>>>,
    graphs: Mutex<Graphs>,
    counting: Counting,
}

impl std::fmt::Debug for CudarcDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.gpu.fmt(f)
    }
}

impl CudarcDevice {
    /// Opens GPU `ordinal` (see [`Gpu::new`]).
    ///
    /// # Errors
    /// As [`Gpu::new`].
    pub fn new(ordinal: usize) -> Result<CudarcDevice> {
        Ok(CudarcDevice {
            gpu: Gpu::new(ordinal)?,
            live: Mutex::new(HashMap::new()),
            graphs: Mutex::new(Graphs::default()),
            counting: Counting::default(),
        })
    }

    fn graphs(&self) -> std::sync::MutexGuard<'_, Graphs> {
        self.graphs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Errs when a capture is open: `what` cannot be part of a graph.
    fn refuse_in_capture(&self, what: &str) -> Result<()> {
        self.graphs().captures.refuse(what)
    }

    /// Counts `e` now, or into the open capture's graph (counted at each replay).
    fn count(&self, e: Event) {
        if let Some(c) = self.graphs().captures.recording() {
            match e {
                Event::Launch => c.launches += 1,
                Event::Gemm => c.gemms += 1,
                Event::ZeroFill => c.zero_fills += 1,
                _ => {}
            }
            return;
        }
        self.counting.record(e);
    }

    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    fn bind(&self) -> Result<()> {
        self.gpu
            .ctx
            .bind_to_thread()
            .map_err(cuda_err("binding the CUDA context"))
    }
}

impl DeviceApi for CudarcDevice {
    fn kind(&self) -> Device {
        Device::Cuda
    }

    fn name(&self) -> String {
        self.gpu.name.clone()
    }

    fn free_memory(&self) -> Result<usize> {
        self.bind()?;
        let (free, _total) = self
            .gpu
            .ctx
            .mem_get_info()
            .map_err(cuda_err("reading the free device memory"))?;
        Ok(free)
    }

    fn alloc_zeroed(&self, bytes: usize) -> Result<u64> {
        self.refuse_in_capture("allocating device memory")?;
        let slice = self
            .gpu
            .stream
            .alloc_zeros::<u8>(bytes)
            .map_err(cuda_err("allocating device memory"))?;
        let (ptr, _) = slice.device_ptr(&self.gpu.stream);
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(ptr, slice);
        self.counting.record(Event::Alloc(bytes));
        Ok(ptr)
    }

    fn alloc_uninit(&self, bytes: usize) -> Result<u64> {
        self.refuse_in_capture("allocating device memory")?;
        // SAFETY: u8 has no invalid bit patterns; every carved buffer is written on
        // the device before it is read.
        let slice = unsafe { self.gpu.stream.alloc::<u8>(bytes) }
            .map_err(cuda_err("allocating device memory"))?;
        let (ptr, _) = slice.device_ptr(&self.gpu.stream);
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(ptr, slice);
        self.counting.record(Event::Alloc(bytes));
        Ok(ptr)
    }

    unsafe fn poison(&self, _ptr: u64, _bytes: usize) {}

    unsafe fn free(&self, ptr: u64) {
        let slice = self
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&ptr);
        if self.refuse_in_capture("freeing device memory").is_err() {
            // A free inside a capture would become a graph node: keep the memory
            // until the capture (now failed) ends.
            self.graphs().deferred.extend(slice);
        }
        self.counting.record(Event::Free);
    }

    unsafe fn zero(&self, ptr: u64, bytes: usize) -> Result<()> {
        self.bind()?;
        // SAFETY: the caller guarantees ptr covers `bytes` of a live allocation.
        unsafe { driver::memset_d8_async(ptr, 0, bytes, self.gpu.stream.cu_stream()) }
            .map_err(cuda_err("zeroing device memory"))?;
        self.count(Event::ZeroFill);
        Ok(())
    }

    unsafe fn htod(&self, src: &[u8], dst: u64) -> Result<()> {
        self.refuse_in_capture("copying to the device")?;
        self.bind()?;
        // SAFETY: the caller guarantees dst covers src.len() bytes of a live
        // allocation. From pageable memory the call returns once src is staged, so
        // src may be dropped afterwards.
        unsafe { driver::memcpy_htod_async(dst, src, self.gpu.stream.cu_stream()) }
            .map_err(cuda_err("copying to the device"))?;
        self.counting.record(Event::Htod(src.len()));
        Ok(())
    }

    unsafe fn dtoh_async(&self, src: u64, dst: &mut [u8]) -> Result<()> {
        self.refuse_in_capture("copying from the device")?;
        self.bind()?;
        // SAFETY: the caller guarantees src covers dst.len() bytes of a live
        // allocation and leaves dst alone until the next synchronize.
        unsafe { driver::memcpy_dtoh_async(dst, src, self.gpu.stream.cu_stream()) }
            .map_err(cuda_err("copying from the device"))?;
        self.counting.record(Event::Dtoh(dst.len()));
        Ok(())
    }

    unsafe fn launch(
        &self,
        file: KernelFile,
        name: &'static str,
        grid: u32,
        block: u32,
        args: &[KArg],
    ) -> Result<()> {
        let f = self.gpu.function(file, name)?;
        self.bind()?;
        let mut words: Vec<u64> = args.iter().map(|a| a.word().0).collect();
        let mut params: Vec<*mut std::ffi::c_void> =
            words.iter_mut().map(|w| (w as *mut u64).cast()).collect();
        // SAFETY: the caller guarantees the arguments match the kernel's signature
        // (4-byte values sit in the low bytes of their little-endian words) and cover
        // what it touches; `words` outlives the call, which copies the values.
        unsafe {
            driver::launch_kernel(
                f.cu_function(),
                (grid, 1, 1),
                (block, 1, 1),
                0,
                self.gpu.stream.cu_stream(),
                &mut params,
            )
        }
        .map_err(cuda_err("kernel launch"))?;
        self.count(Event::Launch);
        Ok(())
    }

    unsafe fn gemm(&self, g: &ColMajorGemm, a: u64, b: u64, c: u64, beta: f32) -> Result<()> {
        let op = |t: bool| {
            if t {
                cublasOperation_t::CUBLAS_OP_T
            } else {
                cublasOperation_t::CUBLAS_OP_N
            }
        };
        let int = |v: usize| {
            i32::try_from(v)
                .map_err(|_| Error::param("gemm", format!("{v} exceeds cuBLAS's 32-bit sizes")))
        };
        let (m, n, k) = (int(g.m)?, int(g.n)?, int(g.k)?);
        let (lda, ldb, ldc) = (int(g.lda)?, int(g.ldb)?, int(g.ldc)?);
        let alpha = 1.0f32;
        let handle = *self.gpu.blas.handle();
        self.bind()?;
        let blas_err =
            |e: cudarc::cublas::result::CublasError| Error::Cuda(format!("cuBLAS sgemm: {e:?}"));
        let compute = match g.precision {
            Precision::F32 => None,
            Precision::Tf32 => Some(cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_TF32),
            Precision::Bf16 => Some(cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_16BF),
        };
        if let Some(compute) = compute {
            // SAFETY: the caller guarantees the operands cover what this call reads
            // and writes; the handle's stream is the Gpu's stream.
            unsafe { gemm_ex(handle, g, compute, a, b, c, beta) }?;
            self.count(Event::Gemm);
            return Ok(());
        }
        // SAFETY: the caller guarantees the operands cover what this call reads and
        // writes; the handle's stream is the Gpu's stream.
        unsafe {
            if g.batch == 1 {
                cudarc::cublas::result::sgemm(
                    handle,
                    op(g.trans_a),
                    op(g.trans_b),
                    m,
                    n,
                    k,
                    &alpha,
                    a as *const f32,
                    lda,
                    b as *const f32,
                    ldb,
                    &beta,
                    c as *mut f32,
                    ldc,
                )
            } else {
                cudarc::cublas::result::sgemm_strided_batched(
                    handle,
                    op(g.trans_a),
                    op(g.trans_b),
                    m,
                    n,
                    k,
                    &alpha,
                    a as *const f32,
                    lda,
                    g.stride_a as i64,
                    b as *const f32,
                    ldb,
                    g.stride_b as i64,
                    &beta,
                    c as *mut f32,
                    ldc,
                    g.stride_c as i64,
                    int(g.batch)?,
                )
            }
        }
        .map_err(blas_err)?;
        self.count(Event::Gemm);
        Ok(())
    }

    fn synchronize(&self) -> Result<()> {
        self.refuse_in_capture("waiting for the device")?;
        self.gpu
            .stream
            .synchronize()
            .map_err(cuda_err("synchronizing"))?;
        self.counting.record(Event::Sync);
        Ok(())
    }

    fn begin_capture(&self) -> Result<()> {
        let mut g = self.graphs();
        g.captures.begin(Counts::default())?;
        // Relaxed: loading a kernel module on first use inside the capture is
        // allowed (it is not stream work).
        let begun = self
            .gpu
            .stream
            .begin_capture(cu::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED)
            .map_err(cuda_err("beginning a graph capture"));
        if begun.is_err() {
            // Nothing was captured: close the bookkeeping's capture again.
            let _ = g.captures.close();
        }
        begun
    }

    fn end_capture(&self) -> Result<GraphId> {
        let mut g = self.graphs();
        let (counts, status) = g.captures.close()?;
        let graph = self
            .gpu
            .stream
            .end_capture(cu::CUgraphInstantiate_flags(0))
            .map_err(cuda_err("ending a graph capture"));
        g.deferred.clear();
        status?;
        let graph =
            graph?.ok_or_else(|| Error::Cuda("the graph capture recorded nothing".into()))?;
        self.counting.record(Event::Capture);
        Ok(g.captures.insert(SendGraph { graph, counts }))
    }

    unsafe fn replay(&self, graph: GraphId) -> Result<()> {
        let g = self.graphs();
        let sg = g.captures.get(graph)?;
        sg.graph.launch().map_err(cuda_err("replaying a graph"))?;
        self.counting.record(Event::Replay);
        for (e, n) in [
            (Event::Launch, sg.counts.launches),
            (Event::Gemm, sg.counts.gemms),
            (Event::ZeroFill, sg.counts.zero_fills),
        ] {
            for _ in 0..n {
                self.counting.record(e);
            }
        }
        Ok(())
    }

    fn drop_graph(&self, graph: GraphId) {
        self.graphs().captures.remove(graph);
    }

    fn counters(&self) -> Counters {
        self.counting.snapshot()
    }
}
