//! glibc malloc settings for a process that allocates and frees a few large buffers.
//!
//! By default glibc serves blocks above a moving threshold (128 KiB at start) with their
//! own `mmap` and unmaps them on `free`, and gives the top of the heap back to the
//! system once 128 KiB or more are free there. A command such as `crf` allocates tens of
//! MB in buffers of 1–5 MB, frees them and allocates the next ones: every time, the
//! fresh pages are faulted in and zeroed again by the kernel (at 480² with 5 labels,
//! about a fifth of the page faults and 5 % of the run). Keeping freed memory in the
//! heap lets the next buffer reuse it. Blocks above 32 MiB (glibc's largest threshold)
//! are still mapped on their own.

/// Raises the `mmap` and trim thresholds (glibc only; elsewhere nothing happens).
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn mallopt(param: std::ffi::c_int, value: std::ffi::c_int) -> std::ffi::c_int;
        }
        // <malloc.h>: M_TRIM_THRESHOLD = -1, M_MMAP_THRESHOLD = -3.
        const M_TRIM_THRESHOLD: std::ffi::c_int = -1;
        const M_MMAP_THRESHOLD: std::ffi::c_int = -3;
        // SAFETY: mallopt only changes allocator tuning; it is called before any other
        // thread exists, and a rejected value leaves the default in place.
        unsafe {
            mallopt(M_MMAP_THRESHOLD, 32 << 20);
            mallopt(M_TRIM_THRESHOLD, 256 << 20);
        }
    }
}
