//! Checkpoints: the model in timm naming (backbone + `head.*`) as safetensors with
//! metadata that [`Vit::load`](crate::model::Vit::load) and the other commands
//! read (`num_heads`, `layer_norm_eps`, `pos_grid`), plus what training adds
//! (`mean`, `std`, `class_names`, `img_size`, …). The optimizer state and the
//! epoch go to a sidecar `<checkpoint>.state.safetensors` for `--resume`.
//!
//! Files are written by hand (the format is an 8-byte header length, a JSON
//! header, then the data) so that the header's key order is fixed: the
//! safetensors crate writes metadata from a `HashMap`, whose order changes from
//! run to run, and training must give bit-identical files for the same seed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use super::optimizer::{Optimizer, OptimizerKind};
use super::params::named_tensors;
use crate::error::{Error, Result};
use crate::image::Normalization;
use crate::model::tensor_file::TensorFile;
use crate::model::{HeadKind, Vit};

/// Writes f32 tensors and string metadata as safetensors, keys sorted.
pub fn write_safetensors(
    path: &Path,
    tensors: &[(String, Vec<usize>, &[f32])],
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let mut sorted: Vec<&(String, Vec<usize>, &[f32])> = tensors.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut header = Map::new();
    header.insert("__metadata__".into(), json!(metadata));
    let mut offset = 0usize;
    for (name, shape, data) in &sorted {
        if shape.iter().product::<usize>() != data.len() {
            return Err(Error::Internal(format!(
                "tensor `{name}`: shape {shape:?} does not hold {} values",
                data.len()
            )));
        }
        let end = offset + 4 * data.len();
        header.insert(
            name.clone(),
            json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, end]}),
        );
        offset = end;
    }
    let mut head =
        serde_json::to_vec(&Value::Object(header)).map_err(|e| Error::Internal(e.to_string()))?;
    while head.len() % 8 != 0 {
        head.push(b' ');
    }
    let mut bytes = Vec::with_capacity(8 + head.len() + offset);
    bytes.extend_from_slice(&(head.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&head);
    for (_, _, data) in &sorted {
        for v in data.iter() {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
    }
    // Write then rename, so an interrupted save never leaves a truncated checkpoint.
    crate::fsutil::write_bytes_atomic(path, &bytes)
}

/// What a checkpoint records beside the weights.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointMeta {
    pub normalization: Normalization,
    pub class_names: Vec<String>,
    pub img_size: usize,
    /// Epochs completed.
    pub epoch: usize,
}

fn head_kind_name(kind: HeadKind) -> String {
    match kind {
        HeadKind::Cls => "cls".into(),
        HeadKind::LastBlocksCls { n } => format!("last_blocks_cls:{n}"),
        HeadKind::ClsAvgPoolInterleaved => "cls_avgpool".into(),
    }
}

/// Saves `vit` (backbone and head) with its configuration and `meta`.
///
/// # Errors
/// I/O errors.
pub fn save_checkpoint(path: &Path, vit: &Vit, meta: &CheckpointMeta) -> Result<()> {
    let c = &vit.config;
    let mut m = BTreeMap::new();
    m.insert("format".into(), "explainseg-checkpoint-1".into());
    m.insert("num_heads".into(), c.heads.to_string());
    m.insert("layer_norm_eps".into(), format!("{:e}", c.eps));
    if let Some((r, cc)) = c.pos_grid {
        m.insert("pos_grid".into(), format!("{r}x{cc}"));
    }
    m.insert("patch_size".into(), c.patch.to_string());
    m.insert("embed_dim".into(), c.dim.to_string());
    m.insert("depth".into(), c.depth.to_string());
    m.insert("img_size".into(), meta.img_size.to_string());
    m.insert("mean".into(), json!(meta.normalization.mean).to_string());
    m.insert("std".into(), json!(meta.normalization.std).to_string());
    m.insert("class_names".into(), json!(meta.class_names).to_string());
    m.insert("epoch".into(), meta.epoch.to_string());
    if let Some(h) = &vit.head {
        m.insert("head_kind".into(), head_kind_name(h.kind));
    }
    write_safetensors(path, &named_tensors(vit), &m)
}

/// Reads the training metadata of a checkpoint written by [`save_checkpoint`].
///
/// # Errors
/// I/O and format errors; [`Error::Format`] when a key is missing or malformed.
pub fn read_checkpoint_meta(path: &Path) -> Result<CheckpointMeta> {
    let file = TensorFile::read(path)?;
    let md = &file.metadata;
    let get = |k: &str| {
        md.get(k).ok_or_else(|| {
            Error::format(
                path,
                format!("metadata `{k}` missing (not an explainseg training checkpoint)"),
            )
        })
    };
    let parse3 = |k: &str| -> Result<[f32; 3]> {
        serde_json::from_str::<[f32; 3]>(get(k)?)
            .map_err(|e| Error::format(path, format!("metadata `{k}`: {e}")))
    };
    Ok(CheckpointMeta {
        normalization: Normalization {
            mean: parse3("mean")?,
            std: parse3("std")?,
        },
        class_names: serde_json::from_str(get("class_names")?)
            .map_err(|e| Error::format(path, format!("metadata `class_names`: {e}")))?,
        img_size: get("img_size")?
            .parse()
            .map_err(|_| Error::format(path, "metadata `img_size` is not a number"))?,
        epoch: get("epoch")?
            .parse()
            .map_err(|_| Error::format(path, "metadata `epoch` is not a number"))?,
    })
}

/// The sidecar holding the optimizer state of `checkpoint`.
pub fn state_path(checkpoint: &Path) -> PathBuf {
    let mut name = checkpoint.file_stem().unwrap_or_default().to_os_string();
    name.push(".state.safetensors");
    checkpoint.with_file_name(name)
}

/// Saves the optimizer state and the epochs completed next to `checkpoint`.
///
/// # Errors
/// I/O errors.
pub fn save_state(
    checkpoint: &Path,
    opt: &Optimizer,
    epoch: usize,
    fingerprint: &str,
) -> Result<()> {
    let mut tensors = Vec::new();
    for (n, v) in &opt.first {
        tensors.push((format!("first.{n}"), vec![v.len()], v.as_slice()));
    }
    for (n, v) in &opt.second {
        tensors.push((format!("second.{n}"), vec![v.len()], v.as_slice()));
    }
    let mut m = BTreeMap::new();
    m.insert("optimizer".into(), format!("{:?}", opt.kind));
    m.insert("steps".into(), opt.steps.to_string());
    m.insert("epoch".into(), epoch.to_string());
    m.insert("fingerprint".into(), fingerprint.to_string());
    write_safetensors(&state_path(checkpoint), &tensors, &m)
}

/// Loads the state saved by [`save_state`]: (optimizer, epochs completed).
///
/// # Errors
/// I/O and format errors; [`Error::InvalidParam`] when the run's settings
/// (`fingerprint`: optimizer, data, schedule) differ from the saved run's.
pub fn load_state(
    checkpoint: &Path,
    kind: OptimizerKind,
    fingerprint: &str,
) -> Result<(Optimizer, usize)> {
    let path = state_path(checkpoint);
    let file = TensorFile::read(&path)?;
    let md = &file.metadata;
    let get = |k: &str| {
        md.get(k)
            .ok_or_else(|| Error::format(&path, format!("metadata `{k}` missing")))
    };
    if get("optimizer")? != &format!("{kind:?}") || get("fingerprint")? != fingerprint {
        return Err(Error::param(
            "resume",
            format!(
                "the run's settings differ from the saved run's (saved: {} / {}; now: {kind:?} / {fingerprint})",
                get("optimizer")?,
                get("fingerprint")?
            ),
        ));
    }
    let mut opt = Optimizer::new(kind);
    opt.steps = get("steps")?
        .parse()
        .map_err(|_| Error::format(&path, "metadata `steps` is not a number"))?;
    let epoch = get("epoch")?
        .parse()
        .map_err(|_| Error::format(&path, "metadata `epoch` is not a number"))?;
    for (name, t) in file.tensors {
        if let Some(n) = name.strip_prefix("first.") {
            opt.first.insert(n.to_string(), t.data);
        } else if let Some(n) = name.strip_prefix("second.") {
            opt.second.insert(n.to_string(), t.data);
        } else {
            return Err(Error::format(&path, format!("unexpected tensor `{name}`")));
        }
    }
    Ok((opt, epoch))
}
