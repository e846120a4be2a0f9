//! `eval --explanations DIR`: a folder of explanations reused across eval runs,
//! so a sweep over post-processing settings (feature map, normaliser, graph,
//! morphology, CRF) pays for IG + NoiseTunnel once per image.
//!
//! `key.txt` holds what determines an explanation — the model files and options,
//! the pre-processing, the explanation settings and the data set — and a folder
//! made for another key is refused. Per image, `<id>.attr.npy` holds the
//! (1, 3, H, W) attribution and `<id>.json` the logits and classes; the JSON is
//! written last, so an interrupted write leaves no entry.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use explainseg::attr::Explanation;
use ndarray::{Array1, Array4};

const KEY_FILE: &str = "key.txt";

pub struct ExplanationCache {
    dir: PathBuf,
}

impl ExplanationCache {
    /// Opens `dir` for explanations made under `key`, creating it if needed.
    ///
    /// # Errors
    /// The folder cannot be made, or it holds explanations of another key.
    pub fn open(dir: &Path, key: &str) -> Result<ExplanationCache> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create explanation folder {}", dir.display()))?;
        let key_path = dir.join(KEY_FILE);
        match std::fs::read_to_string(&key_path) {
            Ok(old) if old.trim_end() == key => {}
            Ok(_) => bail!(
                "{} holds explanations of another model, data set or IG setting (see its {KEY_FILE}); use another --explanations folder",
                dir.display()
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => claim_key(dir, key)?,
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", key_path.display())),
        }
        Ok(ExplanationCache {
            dir: dir.to_path_buf(),
        })
    }

    fn paths(&self, stem: &str) -> (PathBuf, PathBuf) {
        (
            self.dir.join(format!("{stem}.attr.npy")),
            self.dir.join(format!("{stem}.json")),
        )
    }

    /// The stored explanation of the image whose file stem is `stem`, if any, checked
    /// to have `shape` (the network input's).
    ///
    /// # Errors
    /// An entry that exists but cannot be read or has another shape.
    pub fn get(
        &self,
        stem: &str,
        shape: (usize, usize, usize, usize),
    ) -> Result<Option<Explanation>> {
        let (attr_path, meta_path) = self.paths(stem);
        let Ok(text) = std::fs::read_to_string(&meta_path) else {
            return Ok(None);
        };
        let meta: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{}: not JSON", meta_path.display()))?;
        let attribution = explainseg::npy::read_f32(&attr_path)?
            .into_dimensionality::<ndarray::Ix4>()
            .ok()
            .filter(|a| a.dim() == shape)
            .with_context(|| format!("{}: not a {shape:?} attribution", attr_path.display()))?;
        let floats = |k: &str| -> Result<Vec<f32>> {
            meta[k]
                .as_array()
                .with_context(|| format!("{}: no `{k}`", meta_path.display()))?
                .iter()
                .map(|v| v.as_f64().map(|f| f as f32))
                .collect::<Option<_>>()
                .with_context(|| format!("{}: `{k}` is not numbers", meta_path.display()))
        };
        let index = |k: &str| -> Result<usize> {
            meta[k]
                .as_u64()
                .map(|v| v as usize)
                .with_context(|| format!("{}: no `{k}`", meta_path.display()))
        };
        Ok(Some(Explanation {
            attribution,
            logits: Array1::from(floats("logits")?),
            target: index("target")?,
            predicted: index("predicted")?,
            deltas: floats("deltas")?,
        }))
    }

    /// Stores `e` for the image whose file stem is `stem`.
    ///
    /// # Errors
    /// The files cannot be written.
    pub fn put(&self, stem: &str, e: &Explanation) -> Result<()> {
        let (attr_path, meta_path) = self.paths(stem);
        let attribution: &Array4<f32> = &e.attribution;
        // Each file appears whole (written aside, then renamed): runs that share the
        // folder, e.g. sweeps on a cluster, may read an entry while another rewrites it.
        explainseg::npy::write(&attr_path, attribution)?;
        // f32 → f64 → JSON → f64 → f32 is exact, so a reused explanation is bit-identical.
        let meta = serde_json::json!({
            "logits": e.logits.to_vec(),
            "target": e.target,
            "predicted": e.predicted,
            "deltas": e.deltas,
        });
        let text = serde_json::to_string(&meta)? + "\n";
        Ok(explainseg::fsutil::write_bytes_atomic(
            &meta_path,
            text.as_bytes(),
        )?)
    }
}

/// Writes `key.txt` if no run has yet. The shards of a job array open the folder at
/// the same moment: the file is linked into place whole, so none reads it half
/// written, and a run that loses the race checks the winner's key against its own.
fn claim_key(dir: &Path, key: &str) -> Result<()> {
    let key_path = dir.join(KEY_FILE);
    let tmp = explainseg::fsutil::temp_sibling(&key_path);
    if let Err(e) = std::fs::write(&tmp, format!("{key}\n")) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write {}", key_path.display()));
    }
    let linked = std::fs::hard_link(&tmp, &key_path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let old = std::fs::read_to_string(&key_path)
                .with_context(|| format!("cannot read {}", key_path.display()))?;
            if old.trim_end() != key {
                bail!(
                    "{} holds explanations of another model, data set or IG setting (see its {KEY_FILE}); use another --explanations folder",
                    dir.display()
                );
            }
            Ok(())
        }
        Err(e) => Err(e).with_context(|| format!("cannot write {}", key_path.display())),
    }
}
