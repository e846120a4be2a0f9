//! Load-time checks of a model's numbers: every tensor finite (the first NaN or
//! infinity is reported with its tensor's name), and logits checked after a
//! forward pass, so that no call ever reports success with NaN scores.

use std::path::Path;

use super::head::LinearHead;
use super::weights::VitWeights;
use crate::error::{Error, Result};

fn check(path: &Path, name: &str, data: &[f32]) -> Result<()> {
    if let Some(i) = data.iter().position(|v| !v.is_finite()) {
        return Err(Error::format(
            path,
            format!(
                "tensor `{name}` holds a non-finite value ({}) at element {i}",
                data[i]
            ),
        ));
    }
    Ok(())
}

/// Checks that every weight of the backbone and the head is finite.
///
/// # Errors
/// [`Error::Format`] naming the first tensor with a NaN or an infinity.
pub(crate) fn check_finite(
    w: &VitWeights,
    head: Option<&LinearHead>,
    path: &Path,
    head_path: &Path,
) -> Result<()> {
    check(path, "patch_embed.proj.weight", &w.patch_w)?;
    check(path, "patch_embed.proj.bias", &w.patch_b)?;
    check(path, "cls_token", &w.cls_token)?;
    check(path, "pos_embed", &w.pos_embed)?;
    for (i, b) in w.blocks.iter().enumerate() {
        for (name, data) in [
            ("norm1.weight", &b.norm1_w),
            ("norm1.bias", &b.norm1_b),
            ("attn.qkv.weight", &b.qkv_w),
            ("attn.qkv.bias", &b.qkv_b),
            ("attn.proj.weight", &b.proj_w),
            ("attn.proj.bias", &b.proj_b),
            ("norm2.weight", &b.norm2_w),
            ("norm2.bias", &b.norm2_b),
            ("mlp.fc1.weight", &b.fc1_w),
            ("mlp.fc1.bias", &b.fc1_b),
            ("mlp.fc2.weight", &b.fc2_w),
            ("mlp.fc2.bias", &b.fc2_b),
        ] {
            check(path, &format!("blocks.{i}.{name}"), data)?;
        }
    }
    check(path, "norm.weight", &w.norm_w)?;
    check(path, "norm.bias", &w.norm_b)?;
    if let Some(h) = head {
        if h.classes == 0 {
            return Err(Error::format(
                head_path,
                "the classifier head has 0 classes",
            ));
        }
        check(head_path, "head.weight", &h.weight)?;
        check(head_path, "head.bias", &h.bias)?;
    }
    Ok(())
}

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
