//! Integrated Gradients settings (Captum names and defaults), shared by every
//! engine's attribution loop and by [`crate::attr`].

use super::quadrature::{quadrature, Method};
use crate::error::{Error, Result};

/// Progress callback: `(done, total)` passes; return `false` to abort.
pub type Progress<'a> = &'a (dyn Fn(usize, usize) -> bool + Sync);

/// Integrated Gradients settings (Captum names and defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct IgConfig {
    pub method: Method,
    /// Path points (Captum `n_steps`, default 50).
    pub n_steps: usize,
    /// Multiply the integrated gradient by (x − b) (Captum default true).
    pub multiply_by_inputs: bool,
    /// Rows (path points) per forward+backward batch; bounds memory.
    pub batch_size: usize,
    /// Also compute the convergence delta (2 extra forwards per input).
    pub return_delta: bool,
}

impl Default for IgConfig {
    fn default() -> Self {
        IgConfig {
            method: Method::GaussLegendre,
            n_steps: 50,
            multiply_by_inputs: true,
            batch_size: 10,
            return_delta: true,
        }
    }
}

impl IgConfig {
    /// # Errors
    /// [`Error::InvalidParam`] for a zero batch size or an invalid step count.
    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 {
            return Err(Error::param("batch_size", "must be at least 1"));
        }
        crate::limits::check("ig_passes", self.n_steps as u64)?;
        quadrature(self.method, self.n_steps).map(|_| ())
    }
}
