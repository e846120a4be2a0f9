//! IoU and Dice of a predicted mask against its ground truth.

use ndarray::ArrayView2;

use super::buffers::{expect_len, input, write_out};
use super::status::{guard, EsStatus};
use crate::eval::scores;

/// Foreground IoU and Dice of one mask (the paper's metrics; both 1 when both
/// masks are empty).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EsScores {
    /// |P∩G| / |P∪G|.
    pub iou: f64,
    /// 2|P∩G| / (|P| + |G|).
    pub dice: f64,
}

/// Scores `pred` against `truth`, `len` bytes each (nonzero = foreground).
///
/// # Safety
/// `pred`, `truth` `len` readable bytes each; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn explainseg_mask_scores(
    pred: *const u8,
    truth: *const u8,
    len: usize,
    out: *mut EsScores,
) -> EsStatus {
    guard(|| {
        // SAFETY: caller's duty, as documented.
        let (p, t) = unsafe { (input(pred, len, "pred")?, input(truth, len, "truth")?) };
        expect_len("truth", t.len(), p.len())?;
        let to_bool = |v: &[u8]| v.iter().map(|&b| b != 0).collect::<Vec<bool>>();
        let (p, t) = (to_bool(p), to_bool(t));
        let s = scores(
            ArrayView2::from_shape((1, p.len()), &p)
                .map_err(|e| crate::Error::Internal(e.to_string()))?,
            ArrayView2::from_shape((1, t.len()), &t)
                .map_err(|e| crate::Error::Internal(e.to_string()))?,
        )?;
        // SAFETY: caller's duty, as documented.
        unsafe {
            write_out(
                out,
                EsScores {
                    iou: s.iou,
                    dice: s.dice,
                },
                "out",
            )
        }
    })
}
