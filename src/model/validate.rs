//! Logits checked after a forward pass, so that no call ever reports success with
//! NaN scores (the weights themselves are checked at load, in `weights.rs`).

use crate::error::{Error, Result};

/// Checks that a row of logits is finite.
///
/// # Errors
/// [`Error::Format`]-like [`Error::InvalidParam`] naming the class whose logit is
/// NaN or infinite (the model's weights or the input overflowed f32).
pub fn check_logits(logits: &[f32]) -> Result<()> {
    if let Some(i) = logits.iter().position(|v| !v.is_finite()) {
        return Err(Error::param(
            "model",
            format!(
                "the forward pass gave a non-finite logit ({}) for class {i}: the weights or the input overflow f32",
                logits[i]
            ),
        ));
    }
    Ok(())
}
