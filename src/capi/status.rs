//! Status codes, the thread-local last-error message, and the panic guard that
//! wraps every extern function.

use std::cell::RefCell;
use std::ffi::{c_char, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::error::Error;

/// What a call returned. `ES_STATUS_OK` is 0; every error has its own fixed,
/// never reused value. On an error, `explainseg_last_error()` says what happened.
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EsStatus {
    /// Success.
    Ok = 0,
    /// A required pointer argument was NULL.
    NullArgument = 1,
    /// A parameter is out of range (the message names it).
    InvalidParam = 2,
    /// An output buffer is too small; the needed length was written to the
    /// function's `*_needed` argument.
    BufferTooSmall = 3,
    /// A file could not be read or written.
    Io = 4,
    /// An image file could not be decoded.
    Decode = 5,
    /// A file was readable but its content is malformed.
    Format = 6,
    /// A weight file lacks a tensor the model needs.
    MissingTensor = 7,
    /// A weight file holds a tensor that no known layout names.
    UnexpectedTensor = 8,
    /// A weight tensor has a dtype other than F32, F16, BF16.
    UnsupportedDtype = 9,
    /// Arrays or images of mismatched sizes.
    Shape = 10,
    /// CUDA was requested but this build (or machine) has none.
    CudaUnavailable = 11,
    /// The abort callback asked to stop.
    Aborted = 12,
    /// The result does not hold this output (e.g. relevance of a TokenCut run).
    NotAvailable = 13,
    /// A broken internal invariant: a bug in explainseg.
    Internal = 14,
    /// A panic was caught at the C boundary: a bug in explainseg.
    Panic = 15,
    /// A CUDA call failed on a working device (out of memory, a failed launch).
    Cuda = 16,
    /// A size asked for by a file or a parameter is above a resource limit
    /// (`explainseg_limits_set` raises them); the message names it.
    LimitExceeded = 17,
}

impl EsStatus {
    const ALL: [EsStatus; 18] = [
        EsStatus::Ok,
        EsStatus::NullArgument,
        EsStatus::InvalidParam,
        EsStatus::BufferTooSmall,
        EsStatus::Io,
        EsStatus::Decode,
        EsStatus::Format,
        EsStatus::MissingTensor,
        EsStatus::UnexpectedTensor,
        EsStatus::UnsupportedDtype,
        EsStatus::Shape,
        EsStatus::CudaUnavailable,
        EsStatus::Aborted,
        EsStatus::NotAvailable,
        EsStatus::Internal,
        EsStatus::Panic,
        EsStatus::Cuda,
        EsStatus::LimitExceeded,
    ];

    /// The status with this code, if any.
    pub fn from_code(code: i32) -> Option<EsStatus> {
        EsStatus::ALL.into_iter().find(|s| *s as i32 == code)
    }

    /// Static, NUL-terminated description.
    pub(crate) fn text(self) -> &'static std::ffi::CStr {
        match self {
            EsStatus::Ok => c"ok",
            EsStatus::NullArgument => c"a required pointer argument was NULL",
            EsStatus::InvalidParam => c"invalid parameter",
            EsStatus::BufferTooSmall => c"output buffer too small",
            EsStatus::Io => c"file could not be read or written",
            EsStatus::Decode => c"image could not be decoded",
            EsStatus::Format => c"malformed file",
            EsStatus::MissingTensor => c"weight tensor missing",
            EsStatus::UnexpectedTensor => c"unexpected weight tensor",
            EsStatus::UnsupportedDtype => c"unsupported weight dtype",
            EsStatus::Shape => c"shape mismatch",
            EsStatus::CudaUnavailable => c"CUDA is not available",
            EsStatus::Aborted => c"aborted by the caller",
            EsStatus::NotAvailable => c"the result does not hold this output",
            EsStatus::Internal => c"internal error",
            EsStatus::Panic => c"panic caught at the C boundary",
            EsStatus::Cuda => c"CUDA error on the device",
            EsStatus::LimitExceeded => c"a resource limit was exceeded",
        }
    }
}

/// Errors at the boundary: the crate's, plus the ABI's own.
#[derive(Debug)]
pub(crate) enum CapiError {
    Lib(Error),
    Null(&'static str),
    TooSmall {
        what: &'static str,
        needed: usize,
        got: usize,
    },
    NotAvailable(&'static str),
}

impl From<Error> for CapiError {
    fn from(e: Error) -> Self {
        CapiError::Lib(e)
    }
}

/// Result of an extern function body.
pub(crate) type CapiResult<T = ()> = std::result::Result<T, CapiError>;

/// The stable code of a crate error.
pub fn status_of(e: &Error) -> EsStatus {
    #[allow(unreachable_patterns)] // variants added later map to Internal until listed here
    match e {
        Error::Shape { .. } => EsStatus::Shape,
        Error::MissingTensor { .. } => EsStatus::MissingTensor,
        Error::UnexpectedTensor { .. } => EsStatus::UnexpectedTensor,
        Error::UnsupportedDtype { .. } => EsStatus::UnsupportedDtype,
        Error::InvalidParam { .. } => EsStatus::InvalidParam,
        Error::Io { .. } => EsStatus::Io,
        Error::Format { .. } => EsStatus::Format,
        Error::Decode { .. } => EsStatus::Decode,
        Error::CudaUnavailable(_) => EsStatus::CudaUnavailable,
        Error::Cuda(_) => EsStatus::Cuda,
        Error::Aborted => EsStatus::Aborted,
        Error::Internal(_) => EsStatus::Internal,
        Error::LimitExceeded { .. } | Error::OutOfMemory { .. } => EsStatus::LimitExceeded,
        _ => EsStatus::Internal,
    }
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// Records `message` as this thread's last error.
pub(crate) fn set_last_error(message: String) {
    // Interior NULs cannot cross as a C string; show them as spaces.
    let c = CString::new(message.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|m| *m.borrow_mut() = c);
}

/// Pointer to this thread's last message; valid until the thread's next failing call.
pub(crate) fn last_error_ptr() -> *const c_char {
    LAST_ERROR.with(|m| m.borrow().as_ptr())
}

/// A copy of this thread's last message, with its NUL.
pub(crate) fn last_error_bytes() -> Vec<u8> {
    LAST_ERROR.with(|m| m.borrow().as_bytes_with_nul().to_vec())
}

/// Turns an error into its status, recording its message (and the needed
/// length of a too-small buffer).
pub(crate) fn fail(e: CapiError) -> EsStatus {
    let (status, message) = match e {
        CapiError::Lib(e) => (status_of(&e), e.to_string()),
        CapiError::Null(arg) => (EsStatus::NullArgument, format!("`{arg}` must not be NULL")),
        CapiError::TooSmall { what, needed, got } => (
            EsStatus::BufferTooSmall,
            format!("`{what}` holds {got} elements; {needed} are needed"),
        ),
        CapiError::NotAvailable(what) => {
            (EsStatus::NotAvailable, format!("this result has no {what}"))
        }
    };
    set_last_error(message);
    status
}

/// Runs `body`, turning its error or panic into a status. Every extern function
/// that returns a status runs its whole body through this, so no panic unwinds
/// into the caller.
pub(crate) fn guard(body: impl FnOnce() -> CapiResult) -> EsStatus {
    match silent_catch_unwind(body) {
        Ok(Ok(())) => EsStatus::Ok,
        Ok(Err(e)) => fail(e),
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown payload".into());
            set_last_error(format!("panic caught at the C boundary (a bug): {what}"));
            EsStatus::Panic
        }
    }
}

/// [`guard`] for functions that return a value instead of a status: `fallback`
/// when the body panics.
pub(crate) fn guard_value<T>(fallback: T, body: impl FnOnce() -> T) -> T {
    silent_catch_unwind(body).unwrap_or(fallback)
}

/// C-boundary calls running in the process.
static ACTIVE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

thread_local! {
    /// Depth of C-boundary calls on this thread; the panic hook stays silent
    /// while it is above zero (the panic is reported through the last error).
    static IN_CAPI: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Installs, once per process, a panic hook that prints nothing for panics
/// raised inside a C-boundary call on the panicking thread, and defers to the
/// previous hook for every other panic. Worker threads of the library's pools
/// are marked by [`mark_worker_silent`].
fn install_silent_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // Silent on the calling thread of a C call, and on pool workers
            // while any C call is running (their panics reach the caller).
            let silent = IN_CAPI.try_with(|d| d.get() > 0).unwrap_or(false)
                || (ACTIVE.load(std::sync::atomic::Ordering::SeqCst) > 0
                    && (rayon::current_thread_index().is_some()
                        || std::thread::current()
                            .name()
                            .is_some_and(|n| n.starts_with("explainseg-"))));
            if !silent {
                previous(info);
            }
        }));
    });
}

/// `catch_unwind` with the panic message kept off stderr.
fn silent_catch_unwind<T>(body: impl FnOnce() -> T) -> std::thread::Result<T> {
    use std::sync::atomic::Ordering;
    install_silent_hook();
    IN_CAPI.with(|d| d.set(d.get() + 1));
    ACTIVE.fetch_add(1, Ordering::SeqCst);
    let r = catch_unwind(AssertUnwindSafe(body));
    ACTIVE.fetch_sub(1, Ordering::SeqCst);
    IN_CAPI.with(|d| d.set(d.get().saturating_sub(1)));
    r
}

/// Static description of a status code; "unknown status" for codes this
/// library never returns. Never NULL; the text lives as long as the program.
#[no_mangle]
pub extern "C" fn explainseg_status_str(status: i32) -> *const c_char {
    guard_value(c"unknown status".as_ptr(), || {
        match EsStatus::from_code(status) {
            Some(s) => s.text().as_ptr(),
            None => c"unknown status".as_ptr(),
        }
    })
}

/// This thread's last error message (empty if no call has failed on this
/// thread). Borrowed: valid until this thread's next failing explainseg call;
/// copy it (or use `explainseg_last_error_copy`) to keep it. Never NULL.
#[no_mangle]
pub extern "C" fn explainseg_last_error() -> *const c_char {
    guard_value(c"".as_ptr(), last_error_ptr)
}

/// Copies this thread's last error message into `buf` (`buf_len` bytes),
/// always NUL-terminated when `buf_len > 0`. `needed` (may be NULL) receives
/// the message length including the NUL. Returns `ES_STATUS_BUFFER_TOO_SMALL`
/// when the message was truncated; this call never changes the last error.
///
/// # Safety
/// `buf` must be NULL or point to `buf_len` writable bytes; `needed` must be NULL
/// or point to a writable `size_t`.
#[no_mangle]
pub unsafe extern "C" fn explainseg_last_error_copy(
    buf: *mut c_char,
    buf_len: usize,
    needed: *mut usize,
) -> EsStatus {
    // Not through `guard`: a failure here must not replace the message it copies.
    guard_value(EsStatus::Panic, || {
        let message = last_error_bytes();
        if !needed.is_null() {
            // SAFETY: non-NULL `needed` points to a writable size_t (caller's duty).
            unsafe { needed.write(message.len()) };
        }
        if buf.is_null() {
            return if buf_len == 0 {
                EsStatus::BufferTooSmall
            } else {
                EsStatus::NullArgument
            };
        }
        if buf_len == 0 {
            return EsStatus::BufferTooSmall;
        }
        let n = message.len().min(buf_len);
        // SAFETY: `buf` holds `buf_len` writable bytes (caller's duty) and n ≤ buf_len;
        // the source is our own vector, so the ranges cannot overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(message.as_ptr().cast::<c_char>(), buf, n);
            *buf.add(n - 1) = 0;
        }
        if n < message.len() {
            EsStatus::BufferTooSmall
        } else {
            EsStatus::Ok
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_a_status_and_a_message() {
        let status = guard(|| panic!("boom"));
        assert_eq!(status, EsStatus::Panic);
        // SAFETY: the pointer is this thread's live message.
        let msg = unsafe { std::ffi::CStr::from_ptr(last_error_ptr()) };
        assert!(msg.to_str().unwrap().contains("boom"));
    }

    #[test]
    fn codes_round_trip() {
        for s in EsStatus::ALL {
            assert_eq!(EsStatus::from_code(s as i32), Some(s));
        }
        assert_eq!(EsStatus::from_code(-1), None);
    }
}
