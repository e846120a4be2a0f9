//! explainseg: ExplainSeg on the CPU and GPU.
pub mod attr;
pub mod backend;
pub mod error;
pub mod model;
pub mod npy;

pub use error::{Error, Result};
pub mod image;
