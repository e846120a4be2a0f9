//! The crate's error type. Every public fallible function returns [`Result`];
//! variants carry data (what was expected, what was found) rather than
//! preformatted strings, so the C ABI can map each to a stable status code.

use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong in explainseg.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A tensor or array had the wrong shape.
    #[error("{what}: expected shape {expected:?}, got {got:?}")]
    Shape {
        what: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    /// A weight tensor could not be found under any known naming.
    #[error("{path}: tensor `{key}` not found (known layouts: timm, DINO, HF)")]
    MissingTensor { path: PathBuf, key: String },
    /// A weight file holds a tensor whose name no layout knows.
    #[error("{path}: unexpected tensor `{key}` (known layouts: timm, DINO, HF)")]
    UnexpectedTensor { path: PathBuf, key: String },
    /// A weight tensor is stored in a dtype we cannot read.
    #[error("{path}: tensor `{key}` has dtype {dtype}; supported: F32, F16, BF16")]
    UnsupportedDtype {
        path: PathBuf,
        key: String,
        dtype: String,
    },
    /// A parameter is out of its valid range.
    #[error("invalid parameter `{name}`: {reason}")]
    InvalidParam { name: &'static str, reason: String },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file was readable but its content is malformed.
    #[error("{path}: {reason}")]
    Format { path: PathBuf, reason: String },
    /// An image could not be decoded.
    #[error("{path}: cannot decode image: {reason}")]
    Decode { path: PathBuf, reason: String },
    /// The requested device is not available in this build or on this machine.
    #[error("CUDA is not available: {0}")]
    CudaUnavailable(String),
    /// A CUDA call failed on a working device (out of memory, a failed launch).
    #[error("CUDA error: {0}")]
    Cuda(String),
    /// The caller asked to stop (abort callback).
    #[error("aborted by the caller")]
    Aborted,
    /// A broken internal invariant; a bug in explainseg.
    #[error("internal error: {0}")]
    Internal(String),
    /// A size asked for by a file or a parameter is above a resource limit
    /// (see [`crate::limits`]); nothing was allocated for it.
    #[error("limit `{limit}` exceeded: {asked} asked for, at most {max} allowed (raise it with `--limit {limit}=N`, `EsLimits` or `explainseg::limits::set` if the input is trusted)")]
    LimitExceeded {
        limit: &'static str,
        asked: u64,
        max: u64,
    },
    /// Memory for a buffer whose size passed the limits could not be reserved
    /// (the machine's memory or the process's address-space cap is exhausted);
    /// the allocation was refused, not attempted blindly.
    #[error("cannot reserve {bytes} bytes for {what}: out of memory (the input passed the limits but the process cannot hold it; lower the limits or give the process more memory)")]
    OutOfMemory { what: &'static str, bytes: u64 },
}

impl Error {
    /// Shorthand for [`Error::InvalidParam`].
    pub fn param(name: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidParam {
            name,
            reason: reason.into(),
        }
    }

    /// Shorthand for [`Error::Shape`].
    pub fn shape(what: impl Into<String>, expected: &[usize], got: &[usize]) -> Self {
        Error::Shape {
            what: what.into(),
            expected: expected.to_vec(),
            got: got.to_vec(),
        }
    }

    /// Shorthand for [`Error::Io`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// Shorthand for [`Error::Format`].
    pub fn format(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Format {
            path: path.into(),
            reason: reason.into(),
        }
    }
}
