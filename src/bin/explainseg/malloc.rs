//! Memory for a process that allocates and frees a few large buffers (DenseCRF at
//! 480²: some 50 MB in buffers of 1–5 MB).
//!
//! With 4 KiB pages every fresh page of those buffers costs a page fault (zeroing plus the
//! trap; at 480² with 5 labels some 13 000 faults, a sixth of the run). So on Linux:
//!
//! * for the post-processing commands (`crf`, `mask`; asked by [`configure`]), blocks of
//!   1 MiB or more are mapped by themselves, 2 MiB-aligned, and marked for transparent
//!   huge pages (`madvise(MADV_HUGEPAGE)`) when the kernel offers them
//!   (`/sys/kernel/mm/transparent_hugepage/enabled` not `[never]`): one fault per 2 MiB.
//!   At 480² with 5 labels this takes `explainseg crf` from about 13 600 page faults to
//!   2 100 and its run time down by an eighth;
//! * and glibc keeps freed memory in its heap instead of unmapping it (`mallopt` of the
//!   mmap and trim thresholds), so that the next buffer reuses pages already faulted in.
//!
//! The other commands (the model ones allocate their buffers again and again, where a
//! fresh mapping would be zeroed each time) keep glibc's defaults: they have not been
//! measured with these settings. Smaller blocks, and everything on other systems, go to
//! the system allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, Ordering};

/// The process's allocator (see the module docs).
pub struct Allocator;

/// Whether large blocks get their own huge-page mapping (set once by [`configure`]).
static HUGE: AtomicBool = AtomicBool::new(false);

/// Blocks from this size up are mapped by themselves when [`HUGE`] is set.
const BIG: usize = 1 << 20;
/// The huge page size (x86-64 and aarch64 with 4 KiB base pages).
const HUGE_PAGE: usize = 2 << 20;

/// For the short post-processing runs (`tuned`): large blocks on huge pages where the
/// kernel offers them, freed memory kept in glibc's heap. Otherwise nothing changes. Call
/// in `main` before any block of 1 MiB or more exists.
pub fn configure(tuned: bool) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if tuned {
        let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
            .is_ok_and(|s| s.contains("[always]") || s.contains("[madvise]"));
        HUGE.store(thp, Ordering::Relaxed);
        // <malloc.h>: M_TRIM_THRESHOLD = -1, M_MMAP_THRESHOLD = -3.
        // SAFETY: mallopt only tunes glibc's allocator; called before other threads exist,
        // and a rejected value leaves the default.
        unsafe {
            sys::mallopt(-3, 32 << 20);
            sys::mallopt(-1, 256 << 20);
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = tuned;
}

#[inline]
fn is_big(layout: &Layout) -> bool {
    cfg!(target_os = "linux")
        && layout.size() >= BIG
        && layout.align() <= HUGE_PAGE
        && HUGE.load(Ordering::Relaxed)
}

/// `size` rounded up to whole huge pages.
#[inline]
fn mapped_len(size: usize) -> usize {
    size.div_ceil(HUGE_PAGE) * HUGE_PAGE
}

// SAFETY: every pointer handed out is either the system allocator's or the start of a
// private anonymous mapping of `mapped_len(size)` bytes, 2 MiB-aligned, that is unmapped
// exactly once, in `dealloc` (or `realloc`) with the same layout; `is_big` depends only on
// the layout and on `HUGE`, which is set before the first allocation of `main`'s work
// (a block allocated before is freed by the same rule: see `dealloc`).
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_big(&layout) {
            map_huge(layout.size())
        } else {
            // SAFETY: forwarded contract.
            unsafe { System.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_big(&layout) {
            // Fresh anonymous pages are zero.
            map_huge(layout.size())
        } else {
            // SAFETY: forwarded contract.
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_big(&layout) && (ptr as usize) % HUGE_PAGE == 0 {
            // SAFETY: a mapping of `map_huge` (the system allocator never returns a
            // 2 MiB-aligned block of this size: its blocks follow a header).
            unsafe { sys::unmap(ptr, mapped_len(layout.size())) }
        } else {
            // SAFETY: forwarded contract.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees a valid layout for `new_size`.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if !is_big(&layout) && !is_big(&new_layout) {
            // SAFETY: forwarded contract.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // SAFETY: forwarded contract; the copy stays within both blocks.
        unsafe {
            let new = self.alloc(new_layout);
            if !new.is_null() {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}

/// A fresh 2 MiB-aligned private anonymous mapping of at least `size` bytes, marked
/// for huge pages; null on failure.
fn map_huge(size: usize) -> *mut u8 {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let len = mapped_len(size);
        // Map one huge page more, then cut the ends off at 2 MiB boundaries.
        let Some(raw) = sys::map(len + HUGE_PAGE) else {
            return std::ptr::null_mut();
        };
        let start = (raw as usize).next_multiple_of(HUGE_PAGE);
        let head = start - raw as usize;
        // SAFETY: both ranges lie inside the mapping just made and are page-aligned.
        unsafe {
            if head > 0 {
                sys::unmap(raw, head);
            }
            let tail = HUGE_PAGE - head;
            if tail > 0 {
                sys::unmap((start + len) as *mut u8, tail);
            }
            sys::advise_huge(start as *mut u8, len);
        }
        start as *mut u8
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        let _ = size;
        std::ptr::null_mut()
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod sys {
    use std::ffi::{c_int, c_void};

    extern "C" {
        pub fn mallopt(param: c_int, value: c_int) -> c_int;
        fn mmap(
            addr: *mut c_void,
            len: usize,
            prot: c_int,
            flags: c_int,
            fd: c_int,
            off: i64,
        ) -> *mut c_void;
        fn munmap(addr: *mut c_void, len: usize) -> c_int;
        fn madvise(addr: *mut c_void, len: usize, advice: c_int) -> c_int;
    }

    // <sys/mman.h> on Linux.
    const PROT_READ: c_int = 1;
    const PROT_WRITE: c_int = 2;
    const MAP_PRIVATE: c_int = 2;
    const MAP_ANONYMOUS: c_int = 0x20;
    const MADV_HUGEPAGE: c_int = 14;

    /// A private anonymous read-write mapping of `len` bytes.
    pub fn map(len: usize) -> Option<*mut u8> {
        // SAFETY: a new anonymous mapping touches no existing memory.
        let p = unsafe {
            mmap(
                std::ptr::null_mut(),
                len,
                PROT_READ | PROT_WRITE,
                MAP_PRIVATE | MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        (p as isize != -1).then_some(p as *mut u8)
    }

    /// # Safety
    /// `[p, p + len)` is a page-aligned range of a mapping made by [`map`], not in use.
    pub unsafe fn unmap(p: *mut u8, len: usize) {
        // SAFETY: forwarded contract.
        unsafe { munmap(p as *mut c_void, len) };
    }

    /// # Safety
    /// `[p, p + len)` is a page-aligned range of a mapping made by [`map`].
    pub unsafe fn advise_huge(p: *mut u8, len: usize) {
        // SAFETY: forwarded contract; the advice only changes how pages are backed.
        unsafe { madvise(p as *mut c_void, len, MADV_HUGEPAGE) };
    }
}
