//! A pretraining run on disk. The checkpoint is the *teacher* (the network DINO
//! evaluates and fine-tunes): its backbone in timm naming with the metadata
//! every loader reads (`num_heads`, `layer_norm_eps`, `pos_grid`, `mean`, `std`),
//! and its projection head under DINO's `head.mlp.*` / `head.last_layer.*`
//! names, which the loaders skip. The sidecar `<name>.state.safetensors` holds
//! what `--resume` needs besides: the student (`student.*`), the centre, and the
//! AdamW moments (`first.*`, `second.*`). Both files are written with sorted keys
//! and atomically, so the same run gives the same bytes.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::json;

use super::config::DinoConfig;
use super::fit::{backbone_copy, dino_optimizer, DinoModels};
use super::head::ProjectionHead;
use crate::error::{Error, Result};
use crate::image::Normalization;
use crate::model::tensor_file::TensorFile;
use crate::model::{LoadOptions, PosEmbedMode, Vit};
use crate::train::checkpoint::{state_path, write_safetensors};
use crate::train::optimizer::Optimizer;
use crate::train::params::{named_tensors, named_tensors_mut};

/// Format tag of the checkpoint's metadata.
pub const FORMAT: &str = "explainseg-dino-1";

/// Saves the teacher (backbone + projection head) after `epoch` epochs.
///
/// # Errors
/// I/O errors.
pub fn save_pretrained(
    path: &Path,
    m: &DinoModels,
    norm: &Normalization,
    img_size: usize,
) -> Result<()> {
    let c = &m.teacher.config;
    let mut md = BTreeMap::new();
    md.insert("format".into(), FORMAT.to_string());
    md.insert("num_heads".into(), c.heads.to_string());
    md.insert("layer_norm_eps".into(), format!("{:e}", c.eps));
    if let Some((r, cc)) = c.pos_grid {
        md.insert("pos_grid".into(), format!("{r}x{cc}"));
    }
    md.insert("patch_size".into(), c.patch.to_string());
    md.insert("embed_dim".into(), c.dim.to_string());
    md.insert("depth".into(), c.depth.to_string());
    md.insert("img_size".into(), img_size.to_string());
    md.insert("mean".into(), json!(norm.mean).to_string());
    md.insert("std".into(), json!(norm.std).to_string());
    md.insert("epoch".into(), m.epochs_done.to_string());
    let h = &m.teacher_head.config;
    md.insert(
        "dino_head".into(),
        format!("{},{},{}", h.hidden, h.bottleneck, h.out_dim),
    );
    let head = m.teacher_head.named();
    let mut tensors = named_tensors(&m.teacher);
    tensors.extend(
        head.iter()
            .map(|(n, s, v)| (n.clone(), s.clone(), v.as_slice())),
    );
    write_safetensors(path, &tensors, &md)
}

/// Saves the student, centre and optimizer beside `path`.
///
/// # Errors
/// I/O errors.
pub fn save_dino_state(path: &Path, m: &DinoModels, fingerprint: &str) -> Result<()> {
    let head = m.student_head.named();
    let mut tensors: Vec<(String, Vec<usize>, &[f32])> = named_tensors(&m.student)
        .into_iter()
        .map(|(n, s, v)| (format!("student.{n}"), s, v))
        .collect();
    tensors.extend(
        head.iter()
            .map(|(n, s, v)| (format!("student.{n}"), s.clone(), v.as_slice())),
    );
    tensors.push(("center".into(), vec![m.center.len()], &m.center));
    for (n, v) in &m.optimizer.first {
        tensors.push((format!("first.{n}"), vec![v.len()], v.as_slice()));
    }
    for (n, v) in &m.optimizer.second {
        tensors.push((format!("second.{n}"), vec![v.len()], v.as_slice()));
    }
    let mut md = BTreeMap::new();
    md.insert("format".into(), format!("{FORMAT}-state"));
    md.insert("steps".into(), m.optimizer.steps.to_string());
    md.insert("epoch".into(), m.epochs_done.to_string());
    md.insert("fingerprint".into(), fingerprint.to_string());
    write_safetensors(&state_path(path), &tensors, &md)
}

/// Loads a run saved by [`save_pretrained`] and [`save_dino_state`] to continue it.
///
/// # Errors
/// I/O and format errors; [`Error::InvalidParam`] when the settings
/// (`cfg.fingerprint()`) differ from the saved run's.
pub fn load_dino(path: &Path, cfg: &DinoConfig) -> Result<DinoModels> {
    let mut teacher = Vit::load(path, None, &LoadOptions::default())?;
    teacher.pos_embed_mode = PosEmbedMode::Dino;
    teacher.normalization = None;
    let d = teacher.config.dim;
    let file = TensorFile::read(path)?;
    let mut saved: BTreeMap<String, Vec<f32>> =
        file.tensors.into_iter().map(|(k, t)| (k, t.data)).collect();
    let teacher_head = ProjectionHead::from_named(d, cfg.head, &|n| saved.get(n).cloned())?;
    let spath = state_path(path);
    let state = TensorFile::read(&spath)?;
    let md = &state.metadata;
    let get = |k: &str| {
        md.get(k)
            .ok_or_else(|| Error::format(&spath, format!("metadata `{k}` missing")))
    };
    let fingerprint = cfg.fingerprint();
    if get("fingerprint")? != &fingerprint {
        return Err(Error::param(
            "resume",
            format!(
                "the run's settings differ from the saved run's (saved: {}; now: {fingerprint})",
                get("fingerprint")?
            ),
        ));
    }
    let number = |k: &str| -> Result<u64> {
        get(k)?
            .parse()
            .map_err(|_| Error::format(&spath, format!("metadata `{k}` is not a number")))
    };
    let mut optimizer = Optimizer::new(dino_optimizer());
    optimizer.steps = number("steps")?;
    let epochs_done = number("epoch")? as usize;
    saved.clear();
    for (name, t) in state.tensors {
        if let Some(n) = name.strip_prefix("first.") {
            optimizer.first.insert(n.to_string(), t.data);
        } else if let Some(n) = name.strip_prefix("second.") {
            optimizer.second.insert(n.to_string(), t.data);
        } else {
            saved.insert(name, t.data);
        }
    }
    let mut student = backbone_copy(&teacher);
    for (name, slot) in named_tensors_mut(&mut student) {
        let v = saved
            .remove(&format!("student.{name}"))
            .filter(|v| v.len() == slot.len())
            .ok_or_else(|| {
                Error::format(&spath, format!("`student.{name}` missing or mis-sized"))
            })?;
        *slot = v;
    }
    student.clear_pos_cache();
    let student_head = ProjectionHead::from_named(d, cfg.head, &|n| {
        saved.get(&format!("student.{n}")).cloned()
    })?;
    let center = saved
        .remove("center")
        .filter(|c| c.len() == cfg.head.out_dim)
        .ok_or_else(|| Error::format(&spath, "`center` missing or mis-sized"))?;
    Ok(DinoModels {
        student,
        student_head,
        teacher,
        teacher_head,
        center,
        optimizer,
        epochs_done,
    })
}
