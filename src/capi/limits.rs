//! `EsLimits`: the process-wide resource limits (see `docs/reliability.md`).

use super::buffers::{handle, write_out};
use super::status::{guard, EsStatus};
use crate::error::Error;
use crate::limits::Limits;

/// Resource limits, checked before memory is reserved for any size that a file or
/// a parameter asks for. Start from `explainseg_limits_default()`, change fields,
/// then `explainseg_limits_set()`. Every field must be at least 1. A call that
/// exceeds one returns `ES_STATUS_LIMIT_EXCEEDED`, and the last error names the
/// limit, the value asked for and the maximum.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct EsLimits {
    /// Pixels (width × height) of any decoded or resized image (default 2^26).
    pub image_pixels: u64,
    /// Bytes a decoder may allocate for one image (default 2^29, 512 MiB).
    pub decoded_bytes: u64,
    /// Tokens (patches + 1) of one network input (default 1025).
    pub tokens: u64,
    /// Elements of one `.npy` array (default 2^26).
    pub npy_elements: u64,
    /// Images or tiles of one data set (default 2^20).
    pub dataset_items: u64,
    /// IG steps × NoiseTunnel samples (default 10000).
    pub ig_passes: u64,
    /// DenseCRF iterations (default 1000).
    pub crf_iterations: u64,
    /// Cells of an NCut grid (default 65536).
    pub ncut_nodes: u64,
    /// Edges of an NCut graph (default 2^25).
    pub ncut_edges: u64,
    /// Nodes of a TokenCut / MaskCut graph (default 4096).
    pub tokencut_nodes: u64,
    /// NCut foreground dilation radius in pixels (default 1024).
    pub dilation_px: u64,
    /// Worker threads of one call (default 256).
    pub threads: u64,
    /// 1: accept damaged images (JPEG warnings, DICOM inconsistencies); 0: refuse
    /// them (default).
    pub lenient_decoding: u8,
}

impl From<Limits> for EsLimits {
    fn from(l: Limits) -> Self {
        EsLimits {
            image_pixels: l.image_pixels,
            decoded_bytes: l.decoded_bytes,
            tokens: l.tokens,
            npy_elements: l.npy_elements,
            dataset_items: l.dataset_items,
            ig_passes: l.ig_passes,
            crf_iterations: l.crf_iterations,
            ncut_nodes: l.ncut_nodes,
            ncut_edges: l.ncut_edges,
            tokencut_nodes: l.tokencut_nodes,
            dilation_px: l.dilation_px,
            threads: l.threads,
            lenient_decoding: u8::from(l.lenient_decoding),
        }
    }
}

impl EsLimits {
    fn to_limits(self) -> crate::Result<Limits> {
        if self.lenient_decoding > 1 {
            return Err(Error::param(
                "lenient_decoding",
                format!("must be 0 or 1, got {}", self.lenient_decoding),
            ));
        }
        let l = Limits {
            image_pixels: self.image_pixels,
            decoded_bytes: self.decoded_bytes,
            tokens: self.tokens,
            npy_elements: self.npy_elements,
            dataset_items: self.dataset_items,
            ig_passes: self.ig_passes,
            crf_iterations: self.crf_iterations,
            ncut_nodes: self.ncut_nodes,
            ncut_edges: self.ncut_edges,
            tokencut_nodes: self.tokencut_nodes,
            dilation_px: self.dilation_px,
            threads: self.threads,
            lenient_decoding: self.lenient_decoding == 1,
        };
        l.validate()?;
        Ok(l)
    }
}

/// The default limits (what a process starts with).
#[no_mangle]
pub extern "C" fn explainseg_limits_default() -> EsLimits {
    Limits::DEFAULT.into()
}

/// Writes the limits now in force to `*out`.
///
/// # Safety
/// `out` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn explainseg_limits_get(out: *mut EsLimits) -> EsStatus {
    // SAFETY: writable or NULL (caller's duty).
    guard(|| unsafe { write_out(out, crate::limits::current().into(), "out") })
}

/// Replaces the limits for the whole process (all threads, all handles). A zero
/// field is `ES_STATUS_INVALID_PARAM` and changes nothing.
///
/// # Safety
/// `limits` must be NULL or point to a readable `EsLimits`.
#[no_mangle]
pub unsafe extern "C" fn explainseg_limits_set(limits: *const EsLimits) -> EsStatus {
    guard(|| {
        // SAFETY: readable or NULL (caller's duty); every bit pattern of the
        // fields (integers) is a valid value.
        let l = unsafe { handle(limits, "limits") }?;
        crate::limits::set(l.to_limits()?)?;
        Ok(())
    })
}
