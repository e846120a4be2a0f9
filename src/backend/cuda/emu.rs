//! [`DeviceApi`] without a GPU (feature `cuda-emu`): the kernels of `kernels/`
//! compiled by g++ with the fiber emulator of `kernels/emu/` (build.rs), launched
//! through its C ABI by name with cuLaunchKernel-style arguments; "device" memory is
//! host memory and GEMMs run on the CPU with cuBLAS's column-major semantics. The
//! engine's orchestration is the GPU's, so this runs the GPU code path in CI.
//!
//! Blocks run one after another on the calling thread (docs/cuda_emulation.md): slow,
//! so use small inputs.

use std::alloc::Layout;
use std::collections::HashMap;
use std::ffi::{c_char, c_void, CStr, CString};
use std::sync::{Mutex, OnceLock};

use super::api::{Captures, Counters, Counting, DeviceApi, Event, GraphId, KArg};
use super::modules::KernelFile;
use crate::backend::blas_layout::ColMajorGemm;
use crate::backend::{Device, Precision};
use crate::error::{Error, Result};

/// The library build.rs compiled; written to a file at first use to be dlopened.
static LIBRARY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/es_kernels_emu.so"));

/// Alignment of emulated allocations (cudaMalloc gives at least 256).
const ALIGN: usize = 256;

type LaunchFn = unsafe extern "C" fn(
    *const c_char,
    u32,
    u32,
    u32,
    u32,
    u32,
    u32,
    u32,
    *mut *mut c_void,
    *const usize,
    usize,
    i32,
    u64,
) -> i32;
type LastErrorFn = unsafe extern "C" fn() -> *const c_char;

struct Library {
    // Kept loaded for the process: the function pointers below point into it.
    _lib: libloading::Library,
    launch: LaunchFn,
    last_error: LastErrorFn,
}

fn library() -> Result<&'static Library> {
    static LIB: OnceLock<std::result::Result<Library, String>> = OnceLock::new();
    LIB.get_or_init(|| {
        // One file per library content, so processes of different builds never
        // overwrite each other's; written under a unique name, then renamed.
        let hash = crate::hash::fnv1a64(LIBRARY);
        let path = std::env::temp_dir().join(format!("explainseg-emu-{hash:016x}.so"));
        if std::fs::metadata(&path).map(|m| m.len()).ok() != Some(LIBRARY.len() as u64) {
            crate::fsutil::write_bytes_atomic(&path, LIBRARY).map_err(|e| e.to_string())?;
        }
        // SAFETY: the library is the one build.rs compiled from kernels/emu/registry.cpp;
        // loading runs only the C++ runtime's static initialisers.
        let lib = unsafe { libloading::Library::new(&path) }.map_err(|e| e.to_string())?;
        // SAFETY: the symbols have these signatures in kernels/emu/registry.cpp.
        let (launch, last_error) = unsafe {
            (
                *lib.get::<LaunchFn>(b"es_emu_launch\0")
                    .map_err(|e| e.to_string())?,
                *lib.get::<LastErrorFn>(b"es_emu_last_error\0")
                    .map_err(|e| e.to_string())?,
            )
        };
        Ok(Library {
            _lib: lib,
            launch,
            last_error,
        })
    })
    .as_ref()
    .map_err(|e| Error::CudaUnavailable(format!("loading the emulated kernels: {e}")))
}

/// The order in which the emulator resumes the threads of a block after each barrier
/// and atomic (docs/cuda_emulation.md §6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    Forward,
    Reverse,
    /// A seeded random order.
    Random(u64),
}

impl Schedule {
    /// The three schedules the tests sweep.
    pub const ALL: [Schedule; 3] = [
        Schedule::Forward,
        Schedule::Reverse,
        Schedule::Random(0x5EED),
    ];

    /// (schedule, seed) as `es_emu_launch` takes them.
    fn code(self) -> (i32, u64) {
        match self {
            Schedule::Forward => (0, 0),
            Schedule::Reverse => (1, 0),
            Schedule::Random(seed) => (2, seed),
        }
    }
}

/// A call recorded during a graph capture, re-issued on replay.
#[derive(Debug, Clone)]
enum Op {
    Launch {
        file: KernelFile,
        name: &'static str,
        grid: u32,
        block: u32,
        args: Vec<KArg>,
    },
    Gemm {
        g: ColMajorGemm,
        a: u64,
        b: u64,
        c: u64,
        beta: f32,
    },
    Zero {
        ptr: u64,
        bytes: usize,
    },
}

/// Graph capture on the emulated device: calls are recorded instead of run, as CUDA
/// stream capture does, so a result read before the replay is visibly wrong.
type Graphs = Captures<Vec<Op>, Vec<Op>>;

/// The emulated device. Its memory is host memory, freed on [`DeviceApi::free`].
#[derive(Debug)]
pub struct EmuDevice {
    lib: &'static Library,
    live: Mutex<HashMap<u64, Layout>>,
    graphs: Mutex<Graphs>,
    counting: Counting,
    schedule: Schedule,
    /// Device memory in bytes, as a GPU has; `None`: host memory, no limit.
    capacity: Option<usize>,
}

impl std::fmt::Debug for Library {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("emulated kernel library")
    }
}

impl EmuDevice {
    /// Loads the emulated kernels.
    ///
    /// # Errors
    /// [`Error::CudaUnavailable`] when the library cannot be written or loaded.
    pub fn new() -> Result<EmuDevice> {
        Self::with_schedule(Schedule::Forward)
    }

    /// The emulated device running every launch under `schedule`.
    ///
    /// # Errors
    /// As [`EmuDevice::new`].
    pub fn with_schedule(schedule: Schedule) -> Result<EmuDevice> {
        Ok(EmuDevice {
            lib: library()?,
            live: Mutex::new(HashMap::new()),
            graphs: Mutex::new(Graphs::default()),
            counting: Counting::default(),
            schedule,
            capacity: None,
        })
    }

    /// The emulated device with `bytes` of device memory: allocations beyond it fail
    /// as on a full GPU, and [`DeviceApi::free_memory`] reports what is left.
    ///
    /// # Errors
    /// As [`EmuDevice::new`].
    pub fn with_capacity(bytes: usize) -> Result<EmuDevice> {
        let mut dev = Self::new()?;
        dev.capacity = Some(bytes);
        Ok(dev)
    }

    fn live_bytes(live: &HashMap<u64, Layout>) -> usize {
        live.values().map(Layout::size).sum()
    }

    fn graphs(&self) -> std::sync::MutexGuard<'_, Graphs> {
        self.graphs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records `op` when a capture is open (true), else leaves it to run (false).
    fn recorded(&self, op: impl FnOnce() -> Op) -> bool {
        match self.graphs().recording() {
            Some(ops) => {
                ops.push(op());
                true
            }
            None => false,
        }
    }

    /// Errs when a capture is open: `what` cannot be part of a graph.
    fn refuse_in_capture(&self, what: &str) -> Result<()> {
        self.graphs().refuse(what)
    }

    /// Runs a recorded call as if just issued (counted as such).
    ///
    /// # Safety
    /// As the call it records.
    unsafe fn run(&self, op: &Op) -> Result<()> {
        // SAFETY: the caller's guarantee, passed on.
        unsafe {
            match op {
                Op::Launch {
                    file,
                    name,
                    grid,
                    block,
                    args,
                } => self.launch(*file, name, *grid, *block, args),
                Op::Gemm { g, a, b, c, beta } => self.gemm(g, *a, *b, *c, *beta),
                Op::Zero { ptr, bytes } => self.zero(*ptr, *bytes),
            }
        }
    }
}

impl Drop for EmuDevice {
    fn drop(&mut self) {
        for (ptr, layout) in self
            .live
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
        {
            // SAFETY: each entry is a live allocation made with this layout.
            unsafe { std::alloc::dealloc(ptr as *mut u8, layout) };
        }
    }
}

/// Operand `x` of `g` (`rows` of op(X) by g.k, stored transposed when `t`, leading
/// dimension `ld`, batch members `stride` apart) rounded to `g.precision`'s format,
/// and the address to read it at: `x` itself for f32 (no copy), else the copy's.
///
/// # Safety
/// `x` covers what the call reads of this operand.
unsafe fn rounded(
    g: &ColMajorGemm,
    x: u64,
    t: bool,
    ld: usize,
    rows: usize,
    stride: usize,
) -> (Vec<f32>, u64) {
    if g.precision == Precision::F32 || g.batch == 0 || rows == 0 || g.k == 0 {
        return (Vec::new(), x);
    }
    // Column-major: not transposed, (rows, k) with columns ld apart; transposed, (k, rows).
    let span = if t {
        (rows - 1) * ld + g.k
    } else {
        (g.k - 1) * ld + rows
    };
    let len = (g.batch - 1) * stride + span;
    // SAFETY: the caller guarantees x covers the `len` values the call reads.
    let src = unsafe { std::slice::from_raw_parts(x as *const f32, len) };
    let copy: Vec<f32> = src.iter().map(|&v| g.precision.round_operand(v)).collect();
    let at = copy.as_ptr() as u64;
    (copy, at)
}

impl DeviceApi for EmuDevice {
    fn kind(&self) -> Device {
        Device::CudaEmu
    }

    fn name(&self) -> String {
        "emulated CUDA device (g++ + fiber emulator)".into()
    }

    fn alloc_zeroed(&self, bytes: usize) -> Result<u64> {
        self.refuse_in_capture("allocating device memory")?;
        let layout = Layout::from_size_align(bytes.max(1), ALIGN)
            .map_err(|e| Error::Cuda(format!("allocating {bytes} bytes: {e}")))?;
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(cap) = self.capacity {
            let used = Self::live_bytes(&live);
            if used.saturating_add(layout.size()) > cap {
                return Err(Error::Cuda(format!(
                    "out of device memory allocating {bytes} bytes ({used} of {cap} in use)"
                )));
            }
        }
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { std::alloc::alloc_zeroed(layout) };
        if p.is_null() {
            return Err(Error::Cuda(format!(
                "out of memory allocating {bytes} bytes"
            )));
        }
        live.insert(p as u64, layout);
        self.counting.record(Event::Alloc(bytes));
        Ok(p as u64)
    }

    fn alloc_uninit(&self, bytes: usize) -> Result<u64> {
        let ptr = self.alloc_zeroed(bytes)?;
        // SAFETY: the allocation just made holds `bytes`.
        unsafe { self.poison(ptr, bytes) };
        Ok(ptr)
    }

    unsafe fn poison(&self, ptr: u64, bytes: usize) {
        // SAFETY: the caller guarantees ptr covers `bytes` of a live allocation.
        unsafe { std::ptr::write_bytes(ptr as *mut u8, 0xFF, bytes) };
    }

    unsafe fn free(&self, ptr: u64) {
        // A graph may still name this memory: the capture fails at its end.
        let _ = self.refuse_in_capture("freeing device memory");
        let layout = self
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&ptr);
        if let Some(layout) = layout {
            // SAFETY: ptr was allocated by alloc_zeroed with this layout and is
            // removed from the live set, so it is freed once.
            unsafe { std::alloc::dealloc(ptr as *mut u8, layout) };
        }
        self.counting.record(Event::Free);
    }

    unsafe fn zero(&self, ptr: u64, bytes: usize) -> Result<()> {
        if self.recorded(|| Op::Zero { ptr, bytes }) {
            return Ok(());
        }
        // SAFETY: the caller guarantees ptr covers `bytes` of a live allocation.
        unsafe { std::ptr::write_bytes(ptr as *mut u8, 0, bytes) };
        self.counting.record(Event::ZeroFill);
        Ok(())
    }

    unsafe fn htod(&self, src: &[u8], dst: u64) -> Result<()> {
        self.refuse_in_capture("copying to the device")?;
        // SAFETY: the caller guarantees dst covers src.len() bytes of a live
        // allocation, which a host slice cannot overlap.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst as *mut u8, src.len()) };
        self.counting.record(Event::Htod(src.len()));
        Ok(())
    }

    unsafe fn dtoh_async(&self, src: u64, dst: &mut [u8]) -> Result<()> {
        self.refuse_in_capture("copying from the device")?;
        // SAFETY: as htod, the other way. Work is done when its call returns, so the
        // copy can happen now.
        unsafe { std::ptr::copy_nonoverlapping(src as *const u8, dst.as_mut_ptr(), dst.len()) };
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
        if self.recorded(|| Op::Launch {
            file,
            name,
            grid,
            block,
            args: args.to_vec(),
        }) {
            return Ok(());
        }
        let cname = CString::new(name).map_err(|e| Error::Internal(e.to_string()))?;
        let (schedule, seed) = self.schedule.code();
        let (mut words, sizes): (Vec<u64>, Vec<usize>) = args.iter().map(|a| a.word()).unzip();
        let mut params: Vec<*mut c_void> =
            words.iter_mut().map(|w| (w as *mut u64).cast()).collect();
        // SAFETY: the caller guarantees the arguments match the kernel and cover what
        // it touches; the emulator checks the count and each size again, and reads
        // 4-byte values from the low bytes of their (little-endian) words.
        let rc = unsafe {
            (self.lib.launch)(
                cname.as_ptr(),
                grid,
                1,
                1,
                block,
                1,
                1,
                0,
                params.as_mut_ptr(),
                sizes.as_ptr(),
                params.len(),
                schedule,
                seed,
            )
        };
        if rc != 0 {
            // SAFETY: a NUL-terminated string owned by the library.
            let msg = unsafe { CStr::from_ptr((self.lib.last_error)()) }
                .to_string_lossy()
                .into_owned();
            return Err(Error::Cuda(format!("emulated kernel launch: {msg}")));
        }
        self.counting.record(Event::Launch);
        Ok(())
    }

    unsafe fn gemm(&self, g: &ColMajorGemm, a: u64, b: u64, c: u64, beta: f32) -> Result<()> {
        if self.recorded(|| Op::Gemm {
            g: *g,
            a,
            b,
            c,
            beta,
        }) {
            return Ok(());
        }
        // Column-major element (i, j) of X with leading dimension ld is x[i + j·ld]:
        // row stride 1, column stride ld; a transposed operand swaps them.
        let strides = |ld: usize, t: bool| {
            if t {
                (ld as isize, 1)
            } else {
                (1, ld as isize)
            }
        };
        let (a_rs, a_cs) = strides(g.lda, g.trans_a);
        let (b_rs, b_cs) = strides(g.ldb, g.trans_b);
        // TF32/bf16: the tensor cores' operand rounding, then the same f32 GEMM.
        // SAFETY: the caller guarantees A and B cover what the call reads.
        let (_a_rounded, a) = unsafe { rounded(g, a, g.trans_a, g.lda, g.m, g.stride_a) };
        // SAFETY: as above.
        let (_b_rounded, b) = unsafe { rounded(g, b, !g.trans_b, g.ldb, g.n, g.stride_b) };
        let work = g.m * g.n * g.k;
        let par = if work >= 1 << 18 && rayon::current_num_threads() > 1 {
            gemm::Parallelism::Rayon(rayon::current_num_threads())
        } else {
            gemm::Parallelism::None
        };
        for i in 0..g.batch {
            let (pa, pb, pc) = (
                (a as *const f32).wrapping_add(i * g.stride_a),
                (b as *const f32).wrapping_add(i * g.stride_b),
                (c as *mut f32).wrapping_add(i * g.stride_c),
            );
            if g.k == 0 {
                for j in 0..g.n {
                    for r in 0..g.m {
                        // SAFETY: C covers (n−1)·ldc + m values per batch member.
                        unsafe { *pc.add(r + j * g.ldc) *= beta };
                    }
                }
                continue;
            }
            // SAFETY: the caller guarantees the operands cover what the call reads and
            // writes and that C overlaps neither A nor B. gemm computes
            // dst = alpha·dst + beta·lhs·rhs: here alpha is cuBLAS's beta.
            unsafe {
                gemm::gemm(
                    g.m,
                    g.n,
                    g.k,
                    pc,
                    g.ldc as isize,
                    1,
                    beta != 0.0,
                    pa,
                    a_cs,
                    a_rs,
                    pb,
                    b_cs,
                    b_rs,
                    beta,
                    1.0,
                    false,
                    false,
                    false,
                    par,
                )
            };
        }
        self.counting.record(Event::Gemm);
        Ok(())
    }

    fn synchronize(&self) -> Result<()> {
        self.refuse_in_capture("waiting for the device")?;
        // Work is done when its call returns.
        self.counting.record(Event::Sync);
        Ok(())
    }

    fn begin_capture(&self) -> Result<()> {
        self.graphs().begin(Vec::new())
    }

    fn end_capture(&self) -> Result<GraphId> {
        let mut g = self.graphs();
        let (ops, status) = g.close()?;
        status?;
        self.counting.record(Event::Capture);
        Ok(g.insert(ops))
    }

    unsafe fn replay(&self, graph: GraphId) -> Result<()> {
        let ops = self.graphs().get(graph)?.clone();
        self.counting.record(Event::Replay);
        for op in &ops {
            // SAFETY: the caller guarantees the graph's addresses are still valid
            // for the calls recorded.
            unsafe { self.run(op)? };
        }
        Ok(())
    }

    fn drop_graph(&self, graph: GraphId) {
        self.graphs().remove(graph);
    }

    fn counters(&self) -> Counters {
        self.counting.snapshot()
    }

    fn free_memory(&self) -> Result<usize> {
        Ok(match self.capacity {
            None => usize::MAX,
            Some(cap) => {
                let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
                cap.saturating_sub(Self::live_bytes(&live))
            }
        })
    }
}
