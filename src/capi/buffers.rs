//! Checked access to what the caller passed: handles, strings, input arrays,
//! output pointers and caller-owned output buffers.

use std::ffi::{c_char, CStr};
use std::path::PathBuf;

use super::status::{CapiError, CapiResult};
use crate::error::Error;

/// The object behind a handle, or a NULL-argument error naming it.
///
/// # Safety
/// A non-NULL `ptr` must point to a live `T` that nobody mutates during `'a`.
pub(crate) unsafe fn handle<'a, T>(ptr: *const T, name: &'static str) -> CapiResult<&'a T> {
    // SAFETY: non-NULL pointers are live and shared for 'a (caller's duty).
    unsafe { ptr.as_ref() }.ok_or(CapiError::Null(name))
}

/// A path from a NUL-terminated string (any bytes on Unix, UTF-8 elsewhere).
///
/// # Safety
/// A non-NULL `ptr` must point to a NUL-terminated string.
pub(crate) unsafe fn path_arg(ptr: *const c_char, name: &'static str) -> CapiResult<PathBuf> {
    if ptr.is_null() {
        return Err(CapiError::Null(name));
    }
    // SAFETY: non-NULL and NUL-terminated (caller's duty).
    let bytes = unsafe { CStr::from_ptr(ptr) }.to_bytes();
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        Ok(PathBuf::from(std::ffi::OsStr::from_bytes(bytes)))
    }
    #[cfg(not(unix))]
    {
        std::str::from_utf8(bytes)
            .map(PathBuf::from)
            .map_err(|_| Error::param(name, "path is not valid UTF-8").into())
    }
}

/// An input array of `len` elements (empty when `len` is 0, even if `ptr` is NULL).
///
/// # Safety
/// A non-NULL `ptr` must point to `len` initialised elements that stay unchanged during `'a`.
pub(crate) unsafe fn input<'a, T>(
    ptr: *const T,
    len: usize,
    name: &'static str,
) -> CapiResult<&'a [T]> {
    if len == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return Err(CapiError::Null(name));
    }
    // SAFETY: `ptr` points to `len` initialised elements (caller's duty).
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// Writes `value` through an output pointer.
///
/// # Safety
/// A non-NULL `ptr` must be valid for a write of `T`.
pub(crate) unsafe fn write_out<T>(ptr: *mut T, value: T, name: &'static str) -> CapiResult {
    if ptr.is_null() {
        return Err(CapiError::Null(name));
    }
    // SAFETY: non-NULL and writable (caller's duty).
    unsafe { ptr.write(value) };
    Ok(())
}

/// Writes `value` when `ptr` is not NULL (optional outputs).
///
/// # Safety
/// As for [`write_out`].
pub(crate) unsafe fn write_opt<T>(ptr: *mut T, value: T) {
    if !ptr.is_null() {
        // SAFETY: non-NULL and writable (caller's duty).
        unsafe { ptr.write(value) };
    }
}

/// Copies `data` into the caller's buffer `buf` of `buf_len` elements. `needed`
/// (may be NULL) always receives `data.len()`; a short buffer is
/// `BUFFER_TOO_SMALL` and nothing is written to it.
///
/// # Safety
/// A non-NULL `buf` must point to `buf_len` writable elements; a non-NULL
/// `needed` must be writable.
pub(crate) unsafe fn copy_out<T: Copy>(
    data: &[T],
    buf: *mut T,
    buf_len: usize,
    needed: *mut usize,
    name: &'static str,
) -> CapiResult {
    // SAFETY: forwarded caller's duty.
    unsafe { write_opt(needed, data.len()) };
    if buf_len < data.len() {
        return Err(CapiError::TooSmall {
            what: name,
            needed: data.len(),
            got: buf_len,
        });
    }
    if data.is_empty() {
        return Ok(());
    }
    if buf.is_null() {
        return Err(CapiError::Null(name));
    }
    // SAFETY: `buf` holds buf_len ≥ data.len() writable elements (caller's duty);
    // `data` is Rust-owned memory, so the two cannot overlap.
    unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), buf, data.len()) };
    Ok(())
}

/// Checks the length of an input array that must match another size (a mask
/// of the image's size...).
pub(crate) fn expect_len(name: &'static str, got: usize, expected: usize) -> CapiResult {
    if got != expected {
        return Err(Error::shape(name, &[expected], &[got]).into());
    }
    Ok(())
}
