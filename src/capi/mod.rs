//! The C ABI (`include/explainseg.h`, generated from this module by cbindgen).
//!
//! A thin layer over the Rust API: each extern function checks its pointers,
//! converts the `#[repr(C)]` parameter structs, calls the crate's functions
//! (`image`, `pipeline::segment`, `post::crf`, `post::ncut`, `eval`) and converts
//! the result back.
//!
//! * Handles (`EsModel`, `EsImage`, `EsResult`) are opaque boxes; their `*_free`
//!   functions accept NULL.
//! * Every function that returns an `EsStatus` runs its whole body under
//!   `catch_unwind` ([`status::guard`]): a panic becomes `ES_STATUS_PANIC`, never an
//!   unwind into the caller. The functions that only return constants
//!   (`*_default_params`) cannot panic.
//! * On failure, `explainseg_last_error()` holds a thread-local message.
//! * Outputs go to caller-owned buffers with their length; a short one gives
//!   `ES_STATUS_BUFFER_TOO_SMALL` and the needed length.
//! * Thread safety: a model is immutable once loaded, so one `EsModel` may serve
//!   any number of threads at once (`tests/capi.rs` checks it); images and results
//!   are read-only after creation and may be shared the same way.
//!
//! Files: `status.rs` (codes, last error, guard), `buffers.rs` (pointer checks),
//! `params.rs`, `callbacks.rs`, `image.rs`, `model.rs` (load, classify),
//! `segment.rs` (attribute, segment), `result.rs` (getters), `post.rs` (CRF, NCut),
//! `metrics.rs`, `version.rs`.

#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod buffers;
pub mod callbacks;
pub mod image;
pub mod limits;
pub mod metrics;
pub mod model;
pub mod params;
pub mod post;
pub mod result;
pub mod segment;
pub mod status;
pub mod version;

pub use callbacks::{EsAbortFn, EsCallbacks, EsProgressFn};
pub use image::*;
pub use limits::*;
pub use metrics::*;
pub use model::*;
pub use params::*;
pub use post::*;
pub use result::*;
pub use segment::*;
pub use status::{
    explainseg_last_error, explainseg_last_error_copy, explainseg_status_str, status_of, EsStatus,
};
pub use version::*;
