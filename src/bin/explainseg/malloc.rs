//! glibc malloc settings for the short post-processing runs (`crf`, `mask`), which
//! allocate and free a few large buffers (DenseCRF at 480²: some 50 MB in blocks of 1–5 MB).
//!
//! By default glibc serves blocks above a moving threshold (128 KiB at start) with their
//! own `mmap` and unmaps them on `free`, and gives the top of the heap back to the system
//! once 128 KiB or more are free there; the next buffer's pages are then faulted in and
//! zeroed by the kernel again. Raising both thresholds keeps freed memory in the heap for
//! the next buffer: at 480² with 5 labels `explainseg crf` goes from about 19 600 page
//! faults to 15 800 (the rest is memory touched for the first time).
//!
//! Tried and left out: mapping large blocks on transparent huge pages
//! (`madvise(MADV_HUGEPAGE)`) cut the faults to 2 100 and the run by an eighth on a quiet
//! machine, but right after another large process had exited the kernel compacted memory
//! for the huge pages inside our faults (system time 0.03–0.07 s instead of 0.01–0.04 s),
//! so the run was no faster where it matters.
//!
//! The other commands keep glibc's defaults: they have not been measured with these settings.

/// Raises glibc's mmap and trim thresholds when `tuned` (glibc only; elsewhere nothing
/// happens). Call in `main` before other threads exist.
pub fn configure(tuned: bool) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if tuned {
        extern "C" {
            fn mallopt(param: std::ffi::c_int, value: std::ffi::c_int) -> std::ffi::c_int;
        }
        // <malloc.h>: M_TRIM_THRESHOLD = -1, M_MMAP_THRESHOLD = -3 (32 MiB is glibc's
        // largest mmap threshold).
        // SAFETY: mallopt only tunes glibc's allocator; called before other threads exist,
        // and a rejected value leaves the default.
        unsafe {
            mallopt(-3, 32 << 20);
            mallopt(-1, 256 << 20);
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = tuned;
}
