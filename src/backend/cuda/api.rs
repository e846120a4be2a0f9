//! The device interface the CUDA engine runs on: memory, copies, kernel launches,
//! GEMMs and synchronisation, and nothing else. Two implementations: the real GPU
//! over cudarc ([`super::device::CudarcDevice`]) and, with the `cuda-emu` feature,
//! the kernels compiled by g++ and run by the fiber emulator with GEMMs on the CPU
//! (`super::emu::EmuDevice`). The engine's orchestration is written once, against
//! this trait, so the code that runs on a GPU also runs (slowly) on any machine.
//!
//! Device memory is addressed by `u64` (a `CUdeviceptr` on the GPU, a host address
//! under emulation). [`DevBuf`] owns an allocation; [`View`] / [`ViewMut`] borrow a
//! range of one, so the borrow checker keeps a kernel's output apart from its inputs.

use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::modules::KernelFile;
use crate::backend::blas_layout::ColMajorGemm;
use crate::backend::Device;
use crate::error::Result;

/// One kernel argument, as `cuLaunchKernel` takes it (a device pointer is a `u64`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KArg {
    Ptr(u64),
    I32(i32),
    F32(f32),
    U64(u64),
}

impl KArg {
    /// The value's bytes in an 8-aligned word, and its size.
    pub fn word(self) -> (u64, usize) {
        match self {
            KArg::Ptr(p) | KArg::U64(p) => (p, 8),
            KArg::I32(v) => (u64::from(v as u32), 4),
            KArg::F32(v) => (u64::from(v.to_bits()), 4),
        }
    }
}

/// What a device has done since it was opened. Both devices count the same events
/// at the same calls, so a count measured under emulation holds on the GPU.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub launches: u64,
    pub gemms: u64,
    pub allocs: u64,
    pub frees: u64,
    pub bytes_allocated: u64,
    pub htod_copies: u64,
    pub htod_bytes: u64,
    pub dtoh_copies: u64,
    pub dtoh_bytes: u64,
    /// Host waits for the device (every download is one).
    pub syncs: u64,
    /// Allocations served from the [`Pooled`] cache instead of the device.
    pub reuses: u64,
    /// Zeroings on the device (reused pool blocks, the explicitly zeroed
    /// accumulators; inside a graph replay each memset node counts).
    pub zero_fills: u64,
    /// CUDA graphs captured ([`DeviceApi::end_capture`]).
    pub graph_captures: u64,
    /// CUDA graph replays ([`DeviceApi::replay`]); the launches, GEMMs and zero-fills
    /// a replay runs are counted as such too, so totals compare with eager runs.
    pub graph_replays: u64,
}

impl Counters {
    /// `self − earlier`, field by field.
    pub fn since(&self, earlier: &Counters) -> Counters {
        Counters {
            launches: self.launches - earlier.launches,
            gemms: self.gemms - earlier.gemms,
            allocs: self.allocs - earlier.allocs,
            frees: self.frees - earlier.frees,
            bytes_allocated: self.bytes_allocated - earlier.bytes_allocated,
            htod_copies: self.htod_copies - earlier.htod_copies,
            htod_bytes: self.htod_bytes - earlier.htod_bytes,
            dtoh_copies: self.dtoh_copies - earlier.dtoh_copies,
            dtoh_bytes: self.dtoh_bytes - earlier.dtoh_bytes,
            syncs: self.syncs - earlier.syncs,
            reuses: self.reuses - earlier.reuses,
            zero_fills: self.zero_fills - earlier.zero_fills,
            graph_captures: self.graph_captures - earlier.graph_captures,
            graph_replays: self.graph_replays - earlier.graph_replays,
        }
    }
}

/// Atomic [`Counters`], kept by each device implementation.
#[derive(Debug, Default)]
pub struct Counting {
    c: [AtomicU64; 14],
}

#[derive(Clone, Copy)]
pub enum Event {
    Launch,
    Gemm,
    Alloc(usize),
    Free,
    Htod(usize),
    Dtoh(usize),
    Sync,
    Reuse,
    ZeroFill,
    Capture,
    Replay,
}

impl Counting {
    pub fn record(&self, e: Event) {
        let add = |i: usize, v: usize| {
            self.c[i].fetch_add(v as u64, Ordering::Relaxed);
        };
        match e {
            Event::Launch => add(0, 1),
            Event::Gemm => add(1, 1),
            Event::Alloc(b) => {
                add(2, 1);
                add(4, b)
            }
            Event::Free => add(3, 1),
            Event::Htod(b) => {
                add(5, 1);
                add(6, b)
            }
            Event::Dtoh(b) => {
                add(7, 1);
                add(8, b)
            }
            Event::Sync => add(9, 1),
            Event::Reuse => add(10, 1),
            Event::ZeroFill => add(11, 1),
            Event::Capture => add(12, 1),
            Event::Replay => add(13, 1),
        }
    }

    pub fn snapshot(&self) -> Counters {
        let g = |i: usize| self.c[i].load(Ordering::Relaxed);
        Counters {
            launches: g(0),
            gemms: g(1),
            allocs: g(2),
            frees: g(3),
            bytes_allocated: g(4),
            htod_copies: g(5),
            htod_bytes: g(6),
            dtoh_copies: g(7),
            dtoh_bytes: g(8),
            syncs: g(9),
            reuses: g(10),
            zero_fills: g(11),
            graph_captures: g(12),
            graph_replays: g(13),
        }
    }
}

/// A captured graph, by the id its device gave it ([`DeviceApi::end_capture`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GraphId(pub u64);

/// The error of a call a device refuses while it captures a graph: a graph replays
/// device work only, so nothing may allocate, copy to or from the host, or wait.
pub fn refused_in_capture(what: &str) -> crate::error::Error {
    crate::error::Error::Cuda(format!(
        "{what} is not allowed while a CUDA graph is being captured"
    ))
}

/// The graph bookkeeping both devices keep: the open capture (what it has recorded so
/// far, `R`, and the first call refused inside it) and the finished graphs (`G`) by id.
#[derive(Debug)]
pub struct Captures<R, G> {
    open: Option<(R, Option<String>)>,
    done: std::collections::HashMap<u64, G>,
    next_id: u64,
}

impl<R, G> Default for Captures<R, G> {
    fn default() -> Self {
        Captures {
            open: None,
            done: Default::default(),
            next_id: 0,
        }
    }
}

impl<R, G> Captures<R, G> {
    /// Opens a capture that starts from `recording`.
    ///
    /// # Errors
    /// When one is open already.
    pub fn begin(&mut self, recording: R) -> Result<()> {
        if self.open.is_some() {
            return Err(refused_in_capture("beginning another capture"));
        }
        self.open = Some((recording, None));
        Ok(())
    }

    /// The open capture's recording; `None` when no capture is open.
    pub fn recording(&mut self) -> Option<&mut R> {
        self.open.as_mut().map(|(r, _)| r)
    }

    /// Errs when a capture is open, which `what` then invalidates.
    pub fn refuse(&mut self, what: &str) -> Result<()> {
        match &mut self.open {
            Some((_, broken)) => {
                broken.get_or_insert_with(|| what.to_string());
                Err(refused_in_capture(what))
            }
            None => Ok(()),
        }
    }

    /// Closes the open capture: its recording, and whether a call inside broke it (an
    /// error to return once the device's own capture has ended too).
    ///
    /// # Errors
    /// When no capture is open.
    pub fn close(&mut self) -> Result<(R, Result<()>)> {
        let (recording, broken) = self.open.take().ok_or_else(|| {
            crate::error::Error::Cuda("ending a graph capture that was not begun".into())
        })?;
        let status = match broken {
            Some(what) => Err(crate::error::Error::Cuda(format!(
                "the graph capture was invalidated: {what} inside it"
            ))),
            None => Ok(()),
        };
        Ok((recording, status))
    }

    /// Keeps a finished graph; its id.
    pub fn insert(&mut self, graph: G) -> GraphId {
        self.next_id += 1;
        self.done.insert(self.next_id, graph);
        GraphId(self.next_id)
    }

    /// Graph `id`, to replay.
    ///
    /// # Errors
    /// While a capture is open, or for an unknown id.
    pub fn get(&self, id: GraphId) -> Result<&G> {
        if self.open.is_some() {
            return Err(refused_in_capture("replaying a graph"));
        }
        self.done
            .get(&id.0)
            .ok_or_else(|| crate::error::Error::Cuda(format!("no graph {}", id.0)))
    }

    pub fn remove(&mut self, id: GraphId) {
        self.done.remove(&id.0);
    }
}

/// A device the CUDA engine can run on. Work is ordered as on one CUDA stream.
///
/// Between [`DeviceApi::begin_capture`] and [`DeviceApi::end_capture`] the launches,
/// GEMMs and zeroings are recorded into a graph instead of run (as CUDA stream
/// capture does); allocations, copies and host syncs are refused with an error.
pub trait DeviceApi: Send + Sync + std::fmt::Debug {
    /// Which [`Device`] this is (`Cuda` or `CudaEmu`).
    fn kind(&self) -> Device;
    /// A human-readable name (GPU model, or "emulated").
    fn name(&self) -> String;
    /// `bytes` (> 0) of zeroed device memory.
    fn alloc_zeroed(&self, bytes: usize) -> Result<u64>;
    /// `bytes` (> 0) of device memory with unspecified contents: the engine's
    /// workspace arena, whose buffers are written before they are read. The emulated
    /// device fills it with NaN bytes (see [`DeviceApi::poison`]).
    fn alloc_uninit(&self, bytes: usize) -> Result<u64>;
    /// Declares `bytes` at `ptr` dead: the emulated device fills them with `0xFF`
    /// (NaN as f32, −1 as an integer) so that a later read before a write shows in
    /// the results; a GPU does nothing. Not counted.
    ///
    /// # Safety
    /// `ptr..ptr + bytes` lies inside one live allocation of this device that no
    /// queued work still reads.
    unsafe fn poison(&self, ptr: u64, bytes: usize);
    /// Releases an allocation, ordered after the work already queued.
    ///
    /// # Safety
    /// `ptr` came from [`DeviceApi::alloc_zeroed`] of this device and is not freed yet.
    unsafe fn free(&self, ptr: u64);
    /// Zeroes `bytes` at `ptr`, ordered after the work already queued.
    ///
    /// # Safety
    /// `ptr..ptr + bytes` lies inside one live allocation of this device.
    unsafe fn zero(&self, ptr: u64, bytes: usize) -> Result<()>;
    /// Copies `src` to device address `dst`; `src` may be dropped on return.
    ///
    /// # Safety
    /// `dst..dst + src.len()` lies inside one live allocation of this device.
    unsafe fn htod(&self, src: &[u8], dst: u64) -> Result<()>;
    /// Queues a copy of device bytes at `src` into `dst`, ordered after the work
    /// already queued; the bytes are there once [`DeviceApi::synchronize`] returns.
    ///
    /// # Safety
    /// `src..src + dst.len()` lies inside one live allocation of this device, and
    /// `dst` is neither read, written nor freed before the next `synchronize`.
    unsafe fn dtoh_async(&self, src: u64, dst: &mut [u8]) -> Result<()>;
    /// Copies device bytes at `src` into `dst` once queued work has finished (waits).
    ///
    /// # Safety
    /// `src..src + dst.len()` lies inside one live allocation of this device.
    unsafe fn dtoh(&self, src: u64, dst: &mut [u8]) -> Result<()> {
        // SAFETY: the caller's guarantee; dst stays borrowed until the wait below.
        unsafe { self.dtoh_async(src, dst)? };
        self.synchronize()
    }
    /// Launches kernel `name` of `file` on a 1-D grid, no dynamic shared memory.
    ///
    /// # Safety
    /// `args` match the kernel's signature in order, type and size, and every
    /// pointer covers what the kernel touches for the sizes passed.
    unsafe fn launch(
        &self,
        file: KernelFile,
        name: &'static str,
        grid: u32,
        block: u32,
        args: &[KArg],
    ) -> Result<()>;
    /// cuBLAS's column-major f32 `C = op(A)·op(B) + beta·C` (alpha = 1), strided-batched
    /// when `g.batch > 1`; `a`, `b` are the call's first and second operands.
    ///
    /// # Safety
    /// Each operand covers what the call reads or writes; C overlaps neither A nor B.
    unsafe fn gemm(&self, g: &ColMajorGemm, a: u64, b: u64, c: u64, beta: f32) -> Result<()>;
    /// Waits for all queued work.
    fn synchronize(&self) -> Result<()>;
    /// Starts capturing: until [`DeviceApi::end_capture`], launches, GEMMs and
    /// zeroings are recorded, not run.
    fn begin_capture(&self) -> Result<()>;
    /// Ends the capture and returns the graph of what was recorded.
    ///
    /// # Errors
    /// When no capture is open, or the capture was broken (e.g. a free inside it).
    fn end_capture(&self) -> Result<GraphId>;
    /// Runs a captured graph (its work is queued as one unit, in capture order).
    ///
    /// # Safety
    /// Every address the graph's work touches is still live and holds what the
    /// captured calls' safety conditions require.
    unsafe fn replay(&self, graph: GraphId) -> Result<()>;
    /// Forgets a graph.
    fn drop_graph(&self, graph: GraphId);
    /// What the device has done so far.
    fn counters(&self) -> Counters;
    /// Bytes of device memory an allocation can still get (`usize::MAX`: no limit).
    fn free_memory(&self) -> Result<usize>;
}

/// The shared handle the engine and its buffers hold.
pub type Dev = Arc<dyn DeviceApi>;

/// Bytes a [`Pooled`] device keeps cached at most; beyond, freed blocks go back to
/// the device.
const POOL_MAX_BYTES: usize = 1 << 30;

/// A device whose freed blocks are kept, by exact size, and handed out again
/// (zeroed on the device): the engine's per-call buffers have the same sizes call
/// after call, so after the first call a pass allocates nothing. On one stream a
/// reused block's earlier work is ordered before its new use.
#[derive(Debug)]
pub struct Pooled {
    dev: Dev,
    /// Free blocks by size in bytes, and the bytes they hold.
    free: std::sync::Mutex<(std::collections::HashMap<usize, Vec<u64>>, usize)>,
    /// Sizes of the live blocks handed out.
    live: std::sync::Mutex<std::collections::HashMap<u64, usize>>,
    /// Uninitialised allocations (the workspace arena): not pooled, freed on the device.
    direct: std::sync::Mutex<std::collections::HashSet<u64>>,
    /// The thread capturing a graph, if any. A capture takes every call made on
    /// the stream, so device work of other threads (e.g. DenseCRF) waits for it to
    /// end; every call holds this lock while it is issued, so none slips in.
    capture: std::sync::Mutex<Option<std::thread::ThreadId>>,
    capture_ended: std::sync::Condvar,
    counting: Counting,
}

/// Who may issue device work now, under [`Pooled::gate`]'s lock.
enum Gate<'a> {
    /// No capture is open.
    Free(#[allow(dead_code)] std::sync::MutexGuard<'a, Option<std::thread::ThreadId>>),
    /// This thread is capturing.
    Capturing(#[allow(dead_code)] std::sync::MutexGuard<'a, Option<std::thread::ThreadId>>),
}

impl Pooled {
    pub fn new(dev: Dev) -> Pooled {
        Pooled {
            dev,
            free: Default::default(),
            live: Default::default(),
            direct: Default::default(),
            capture: Default::default(),
            capture_ended: Default::default(),
            counting: Counting::default(),
        }
    }

    /// Waits while another thread captures; the guard keeps captures from starting
    /// until the caller's call is issued.
    fn gate(&self) -> Gate<'_> {
        let me = std::thread::current().id();
        let mut g = self.capture.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            match *g {
                None => return Gate::Free(g),
                Some(t) if t == me => return Gate::Capturing(g),
                Some(_) => {
                    g = self
                        .capture_ended
                        .wait(g)
                        .unwrap_or_else(|p| p.into_inner())
                }
            }
        }
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let (free, _) = &mut *self.free.get_mut().unwrap_or_else(|p| p.into_inner());
        for ptr in free.drain().flat_map(|(_, v)| v) {
            // SAFETY: cached blocks are live device allocations no buffer holds.
            unsafe { self.dev.free(ptr) };
        }
    }
}

impl DeviceApi for Pooled {
    fn kind(&self) -> Device {
        self.dev.kind()
    }
    fn name(&self) -> String {
        self.dev.name()
    }
    fn alloc_zeroed(&self, bytes: usize) -> Result<u64> {
        let _gate = match self.gate() {
            // A pool hit would queue a memset into the graph.
            Gate::Capturing(_) => return Err(refused_in_capture("allocating device memory")),
            free => free,
        };
        let cached = {
            let (free, total) = &mut *self.free.lock().unwrap_or_else(|p| p.into_inner());
            let p = free.get_mut(&bytes).and_then(Vec::pop);
            if p.is_some() {
                *total -= bytes;
            }
            p
        };
        let ptr = match cached {
            Some(p) => {
                // SAFETY: p is a cached allocation of exactly `bytes`.
                unsafe { self.dev.zero(p, bytes)? };
                self.counting.record(Event::Reuse);
                p
            }
            None => self.dev.alloc_zeroed(bytes)?,
        };
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(ptr, bytes);
        Ok(ptr)
    }
    fn alloc_uninit(&self, bytes: usize) -> Result<u64> {
        let _gate = self.gate();
        let ptr = self.dev.alloc_uninit(bytes)?;
        self.direct
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(ptr);
        Ok(ptr)
    }
    unsafe fn poison(&self, ptr: u64, bytes: usize) {
        let _gate = self.gate();
        // SAFETY: forwarded with the caller's guarantee.
        unsafe { self.dev.poison(ptr, bytes) }
    }
    unsafe fn free(&self, ptr: u64) {
        if self
            .direct
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&ptr)
        {
            // SAFETY: ptr is a live direct allocation of the inner device, given back once.
            unsafe { self.dev.free(ptr) };
            return;
        }
        let bytes = self
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&ptr);
        let Some(bytes) = bytes else { return };
        let (free, total) = &mut *self.free.lock().unwrap_or_else(|p| p.into_inner());
        if *total + bytes <= POOL_MAX_BYTES {
            free.entry(bytes).or_default().push(ptr);
            *total += bytes;
        } else {
            // SAFETY: ptr is a live allocation of the inner device, given back once.
            unsafe { self.dev.free(ptr) };
        }
    }
    unsafe fn zero(&self, ptr: u64, bytes: usize) -> Result<()> {
        let _gate = self.gate();
        // SAFETY: forwarded with the caller's guarantee.
        unsafe { self.dev.zero(ptr, bytes) }
    }
    unsafe fn htod(&self, src: &[u8], dst: u64) -> Result<()> {
        let _gate = self.gate();
        // SAFETY: forwarded with the caller's guarantee.
        unsafe { self.dev.htod(src, dst) }
    }
    unsafe fn dtoh_async(&self, src: u64, dst: &mut [u8]) -> Result<()> {
        let _gate = self.gate();
        // SAFETY: forwarded with the caller's guarantee.
        unsafe { self.dev.dtoh_async(src, dst) }
    }
    unsafe fn launch(
        &self,
        file: KernelFile,
        name: &'static str,
        grid: u32,
        block: u32,
        args: &[KArg],
    ) -> Result<()> {
        let _gate = self.gate();
        // SAFETY: forwarded with the caller's guarantee.
        unsafe { self.dev.launch(file, name, grid, block, args) }
    }
    unsafe fn gemm(&self, g: &ColMajorGemm, a: u64, b: u64, c: u64, beta: f32) -> Result<()> {
        let _gate = self.gate();
        // SAFETY: forwarded with the caller's guarantee.
        unsafe { self.dev.gemm(g, a, b, c, beta) }
    }
    fn synchronize(&self) -> Result<()> {
        let _gate = self.gate();
        self.dev.synchronize()
    }
    fn begin_capture(&self) -> Result<()> {
        let Gate::Free(mut g) = self.gate() else {
            return Err(refused_in_capture("beginning another capture"));
        };
        self.dev.begin_capture()?;
        *g = Some(std::thread::current().id());
        Ok(())
    }
    fn end_capture(&self) -> Result<GraphId> {
        let Gate::Capturing(mut g) = self.gate() else {
            return Err(crate::error::Error::Cuda(
                "ending a graph capture that was not begun".into(),
            ));
        };
        *g = None;
        self.capture_ended.notify_all();
        self.dev.end_capture()
    }
    unsafe fn replay(&self, graph: GraphId) -> Result<()> {
        let _gate = self.gate();
        // SAFETY: forwarded with the caller's guarantee.
        unsafe { self.dev.replay(graph) }
    }
    fn drop_graph(&self, graph: GraphId) {
        self.dev.drop_graph(graph)
    }
    /// The device's counts (its allocations are the pool's misses) plus the reuses.
    fn counters(&self) -> Counters {
        Counters {
            reuses: self.counting.snapshot().reuses,
            ..self.dev.counters()
        }
    }
    /// The device's free memory plus the blocks cached here: a call that needs the
    /// sizes of the last one gets them back from the cache.
    fn free_memory(&self) -> Result<usize> {
        let cached = self.free.lock().unwrap_or_else(|p| p.into_inner()).1;
        Ok(self.dev.free_memory()?.saturating_add(cached))
    }
}

/// Plain values that live on the device (f32 activations, i32 targets, the DenseCRF
/// lattice's u8 pixels, u32 indices and u64 keys).
pub trait DevScalar: Copy + Default + 'static {}
impl DevScalar for f32 {}
impl DevScalar for i32 {}
impl DevScalar for u8 {}
impl DevScalar for u32 {}
impl DevScalar for u64 {}

/// An owned device allocation of `len` values of `T`, freed on drop.
pub struct DevBuf<T: DevScalar> {
    dev: Dev,
    ptr: u64,
    len: usize,
    /// False for a range of the workspace arena ([`super::workspace`]): not freed on drop.
    owned: bool,
    _t: PhantomData<T>,
}

impl<T: DevScalar> std::fmt::Debug for DevBuf<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DevBuf({:#x}, {})", self.ptr, self.len)
    }
}

fn range_of(r: impl RangeBounds<usize>, len: usize) -> (usize, usize) {
    let start = match r.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s + 1,
        Bound::Unbounded => 0,
    };
    let end = match r.end_bound() {
        Bound::Included(&e) => e + 1,
        Bound::Excluded(&e) => e,
        Bound::Unbounded => len,
    };
    assert!(
        start <= end && end <= len,
        "device slice {start}..{end} of a buffer of {len}"
    );
    (start, end)
}

impl<T: DevScalar> DevBuf<T> {
    const SIZE: usize = std::mem::size_of::<T>();

    /// `n` zeros (at least one value is allocated, as cudarc did).
    pub fn zeros(dev: &Dev, n: usize) -> Result<Self> {
        let len = n.max(1);
        let ptr = dev.alloc_zeroed(len * Self::SIZE)?;
        Ok(DevBuf {
            dev: dev.clone(),
            ptr,
            len,
            owned: true,
            _t: PhantomData,
        })
    }

    /// `len` values at `ptr` inside an allocation someone else owns (the workspace
    /// arena); dropping it frees nothing.
    ///
    /// # Safety
    /// `ptr..ptr + len·size_of::<T>()` lies inside a live allocation of `dev` that
    /// outlives the buffer, and no other live buffer overlaps it.
    pub(crate) unsafe fn borrowed(dev: &Dev, ptr: u64, len: usize) -> Self {
        DevBuf {
            dev: dev.clone(),
            ptr,
            len,
            owned: false,
            _t: PhantomData,
        }
    }

    /// Copies `v` (of the buffer's length at most) to the start of the buffer.
    pub fn write(&mut self, v: &[T]) -> Result<()> {
        if v.len() > self.len {
            return Err(crate::error::Error::Internal(format!(
                "writing {} values into a device buffer of {}",
                v.len(),
                self.len
            )));
        }
        if v.is_empty() {
            return Ok(());
        }
        // SAFETY: T is plain data; the bytes of `v` are initialised.
        let bytes = unsafe {
            std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), std::mem::size_of_val(v))
        };
        // SAFETY: checked above that the buffer holds v.len() values.
        unsafe { self.dev.htod(bytes, self.ptr) }
    }

    /// Zeroes the buffer on the device (one counted zero-fill).
    pub fn zero(&mut self) -> Result<()> {
        // SAFETY: ptr..ptr + len·SIZE is exactly this buffer.
        unsafe { self.dev.zero(self.ptr, self.len * Self::SIZE) }
    }

    /// A device copy of `v`.
    pub fn upload(dev: &Dev, v: &[T]) -> Result<Self> {
        let buf = Self::zeros(dev, v.len())?;
        if !v.is_empty() {
            // SAFETY: T is plain data (f32/i32); the bytes of `v` are initialised.
            let bytes = unsafe {
                std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), std::mem::size_of_val(v))
            };
            // SAFETY: the allocation just made holds at least v.len() values.
            unsafe { dev.htod(bytes, buf.ptr)? };
        }
        Ok(buf)
    }

    /// The buffer's values on the host (waits for the device).
    pub fn download(&self) -> Result<Vec<T>> {
        let mut out = Vec::new();
        let bytes = self.host_bytes(&mut out);
        // SAFETY: ptr..ptr + len·SIZE is exactly this live allocation.
        unsafe { self.dev.dtoh(self.ptr, bytes)? };
        Ok(out)
    }

    /// `out` sized to the buffer, as the bytes a download writes.
    fn host_bytes<'o>(&self, out: &'o mut Vec<T>) -> &'o mut [u8] {
        *out = vec![T::default(); self.len];
        // SAFETY: T is plain data, so any bytes written are valid values.
        unsafe {
            std::slice::from_raw_parts_mut(out.as_mut_ptr().cast::<u8>(), self.len * Self::SIZE)
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn as_view(&self) -> View<'_, T> {
        self.slice(..)
    }

    pub fn as_view_mut(&mut self) -> ViewMut<'_, T> {
        self.slice_mut(..)
    }

    /// Values `r` of the buffer, read-only.
    ///
    /// # Panics
    /// If `r` is not inside the buffer.
    pub fn slice(&self, r: impl RangeBounds<usize>) -> View<'_, T> {
        let (s, e) = range_of(r, self.len);
        View {
            ptr: self.ptr + (s * Self::SIZE) as u64,
            len: e - s,
            _b: PhantomData,
        }
    }

    /// Values `r` of the buffer, writable.
    ///
    /// # Panics
    /// If `r` is not inside the buffer.
    pub fn slice_mut(&mut self, r: impl RangeBounds<usize>) -> ViewMut<'_, T> {
        let (s, e) = range_of(r, self.len);
        ViewMut {
            ptr: self.ptr + (s * Self::SIZE) as u64,
            len: e - s,
            _b: PhantomData,
        }
    }
}

/// Downloads several f32 buffers of one device with a single wait: every copy is
/// queued, then the host waits once (a download per buffer would wait per buffer).
///
/// # Errors
/// Device errors; [`crate::Error::Internal`] when the buffers are on different devices.
pub fn download_together(bufs: &[&DevBuf<f32>]) -> Result<Vec<Vec<f32>>> {
    let Some(first) = bufs.first() else {
        return Ok(Vec::new());
    };
    if bufs.iter().any(|b| !Arc::ptr_eq(&b.dev, &first.dev)) {
        return Err(crate::Error::Internal(
            "download_together takes buffers of one device".into(),
        ));
    }
    let mut outs: Vec<Vec<f32>> = vec![Vec::new(); bufs.len()];
    for (buf, out) in bufs.iter().zip(outs.iter_mut()) {
        let bytes = buf.host_bytes(out);
        // SAFETY: ptr..ptr + len·SIZE is exactly this live allocation; `outs` is not
        // touched again before the synchronize below, and its vectors keep their
        // heap storage where it is (no push, no reallocation) until then.
        unsafe { first.dev.dtoh_async(buf.ptr, bytes)? };
    }
    first.dev.synchronize()?;
    Ok(outs)
}

impl<T: DevScalar> Drop for DevBuf<T> {
    fn drop(&mut self) {
        if self.owned {
            // SAFETY: ptr came from this device's alloc_zeroed and is freed only here.
            unsafe { self.dev.free(self.ptr) };
        }
    }
}

/// A read-only range of a [`DevBuf`].
#[derive(Clone, Copy)]
pub struct View<'b, T> {
    ptr: u64,
    len: usize,
    _b: PhantomData<&'b T>,
}

/// A writable range of a [`DevBuf`].
pub struct ViewMut<'b, T> {
    ptr: u64,
    len: usize,
    _b: PhantomData<&'b mut T>,
}

impl<T> View<'_, T> {
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn ptr(&self) -> u64 {
        self.ptr
    }
}

impl<T> ViewMut<'_, T> {
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn ptr(&self) -> u64 {
        self.ptr
    }
}
