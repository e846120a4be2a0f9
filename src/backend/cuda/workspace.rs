//! The engine's workspace arena: one device allocation per engine from which every
//! per-call buffer of a pass (activations, gradients, the IG loop's inputs and sums)
//! is carved. It is laid out again for each call, grown only when a larger shape
//! comes, and never zeroed: each buffer is written before it is read, and the few
//! that are accumulated into are zeroed explicitly by the engine. So a repeated call
//! allocates nothing and zeroes only its accumulators, and buffers sit at the same
//! addresses call after call, which a captured CUDA graph needs.
//!
//! On the emulated device every (re)use of the arena is first filled with NaN bytes
//! ([`DeviceApi::poison`]), so a kernel that reads a buffer nobody wrote this call
//! gives NaN, which the parity tests see.

use std::marker::PhantomData;

use super::api::{Dev, DevBuf, DevScalar};
use crate::error::{Error, Result};

/// Alignment of every carved buffer (cudaMalloc's; keeps vector loads aligned).
const ALIGN: usize = 256;

/// Bytes a buffer of `n` values of `T` takes in the arena (at least one value, as
/// [`DevBuf::zeros`], rounded up to [`ALIGN`]).
pub fn carved_bytes<T>(n: usize) -> usize {
    (n.max(1) * std::mem::size_of::<T>()).div_ceil(ALIGN) * ALIGN
}

/// Adds up the arena bytes of a list of buffers, in the terms [`Carver::take`] uses.
#[derive(Debug, Default, Clone, Copy)]
pub struct Sizer(pub usize);

impl Sizer {
    pub fn f32s(&mut self, n: usize) -> &mut Self {
        self.0 += carved_bytes::<f32>(n);
        self
    }
    pub fn i32s(&mut self, n: usize) -> &mut Self {
        self.0 += carved_bytes::<i32>(n);
        self
    }
}

/// The arena: one device allocation, grown on demand.
#[derive(Debug)]
pub struct Workspace {
    dev: Dev,
    ptr: u64,
    bytes: usize,
}

impl Workspace {
    pub fn new(dev: Dev) -> Workspace {
        Workspace {
            dev,
            ptr: 0,
            bytes: 0,
        }
    }

    /// Bytes the arena holds now.
    pub fn capacity(&self) -> usize {
        self.bytes
    }

    /// Device address of the arena (0 before the first call): with a layout, it
    /// fixes every buffer's address.
    pub fn base(&self) -> u64 {
        self.ptr
    }

    /// Makes the arena hold at least `bytes`. Growing replaces the allocation (the
    /// old one is freed first, so the device needs room for the new size only), which
    /// moves every buffer.
    pub fn reserve(&mut self, bytes: usize) -> Result<()> {
        if bytes <= self.bytes {
            return Ok(());
        }
        self.release();
        self.ptr = self.dev.alloc_uninit(bytes)?;
        self.bytes = bytes;
        Ok(())
    }

    fn release(&mut self) {
        if self.bytes > 0 {
            // SAFETY: ptr is this arena's live allocation, freed once; buffers carved
            // from it do not outlive the call that carved them (see `carver`).
            unsafe { self.dev.free(self.ptr) };
            self.ptr = 0;
            self.bytes = 0;
        }
    }

    /// A bump allocator over the whole arena, which is poisoned first (on the
    /// emulated device). Buffers it hands out must be dropped before the next call
    /// to `carver` or `reserve` (the engine's calls are serialised and keep their
    /// buffers local to the call).
    pub fn carver(&mut self) -> Carver<'_> {
        if self.bytes > 0 {
            // SAFETY: the whole live allocation; the previous call's work on it is
            // ordered before anything queued from now on, and nothing reads it again.
            unsafe { self.dev.poison(self.ptr, self.bytes) };
        }
        Carver {
            dev: &self.dev,
            base: self.ptr,
            cap: self.bytes,
            offset: 0,
            high: 0,
            _arena: PhantomData,
        }
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        self.release();
    }
}

/// Hands out consecutive, non-overlapping ranges of the arena.
pub struct Carver<'w> {
    dev: &'w Dev,
    base: u64,
    cap: usize,
    offset: usize,
    /// The furthest offset handed out so far.
    high: usize,
    _arena: PhantomData<&'w mut Workspace>,
}

/// Where a carver stood; [`Carver::rewind`] hands the ranges after it out again.
#[derive(Debug, Clone, Copy)]
pub struct Mark(usize);

impl Carver<'_> {
    /// `n` values of `T`, contents unspecified (NaN bytes under emulation).
    ///
    /// # Errors
    /// [`Error::Internal`] when the arena was sized too small for the call (a bug:
    /// each caller reserves what its layout carves).
    pub fn take<T: DevScalar>(&mut self, n: usize) -> Result<DevBuf<T>> {
        let bytes = carved_bytes::<T>(n);
        if self.offset + bytes > self.cap {
            return Err(Error::Internal(format!(
                "workspace arena of {} bytes is too small: {} used, {bytes} more wanted",
                self.cap, self.offset
            )));
        }
        let ptr = self.base + self.offset as u64;
        self.offset += bytes;
        self.high = self.high.max(self.offset);
        // SAFETY: ptr..ptr + bytes lies inside the arena (checked above), which
        // outlives the carver's borrow; ranges handed out do not overlap until a
        // rewind, whose caller has dropped the buffers after its mark.
        Ok(unsafe { DevBuf::borrowed(self.dev, ptr, n.max(1)) })
    }

    /// `n` zeros of `T`: for buffers that are accumulated into (one zero-fill).
    pub fn zeros<T: DevScalar>(&mut self, n: usize) -> Result<DevBuf<T>> {
        let mut b = self.take(n)?;
        b.zero()?;
        Ok(b)
    }

    /// A device copy of `v`.
    pub fn upload<T: DevScalar>(&mut self, v: &[T]) -> Result<DevBuf<T>> {
        let mut b = self.take(v.len())?;
        b.write(v)?;
        Ok(b)
    }

    /// The device address the next buffer will be carved at.
    pub fn next_address(&self) -> u64 {
        self.base + self.offset as u64
    }

    pub fn mark(&self) -> Mark {
        Mark(self.offset)
    }

    /// Hands the ranges carved since `m` out again, poisoning them first (emulated
    /// device): every IG batch gets the same addresses.
    ///
    /// # Safety
    /// No buffer carved after `m` is used again.
    pub unsafe fn rewind(&mut self, m: Mark) {
        if self.high > m.0 {
            // SAFETY: a range of the live arena that, by the caller's guarantee, no
            // one reads again; queued work on it is ordered before later work.
            unsafe { self.dev.poison(self.base + m.0 as u64, self.high - m.0) };
        }
        self.offset = m.0;
        self.high = m.0;
    }
}
