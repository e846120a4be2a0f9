//! Normalising timm, official-DINO and Hugging Face `ViTModel` tensor names to one
//! canonical (timm == DINO) naming.
//!
//! Rules (docs/method.md §3): wrapper prefixes (`module.`, `backbone.`, `teacher.`, `student.`,
//! `vit.`, `model.`) are stripped; HF names are renamed and its separate
//! query/key/value projections fused in Q, K, V row order (the fused layout is
//! `[Q | K | V]`, head-major inside each); HF's `pooler.*` and DINO's projection head
//! (`head.mlp.*`, `head.last_layer.*`) are ignored; classifier heads under `head.`,
//! `linear.`, `fc.` or `classifier.` are split off. Any other name is an error.

use std::collections::HashMap;
use std::path::Path;

use super::tensor_file::HostTensor;
use crate::error::{Error, Result};

/// Which naming a file used, as detected from its keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Naming {
    /// timm and official DINO share the canonical names.
    TimmOrDino,
    /// Hugging Face `ViTModel` / `ViTForImageClassification`.
    HuggingFace,
    /// The file holds a classifier head only.
    HeadOnly,
}

/// A file's tensors under canonical names, with the classifier head split off.
#[derive(Debug, Default)]
pub struct CanonicalTensors {
    pub backbone: HashMap<String, HostTensor>,
    pub head: Option<(HostTensor, HostTensor)>,
}

const PREFIXES: [&str; 6] = [
    "module.",
    "backbone.",
    "teacher.",
    "student.",
    "vit.",
    "model.",
];
const HEAD_PREFIXES: [&str; 4] = ["head.", "linear.", "fc.", "classifier."];

fn strip_prefixes(mut key: &str) -> &str {
    loop {
        match PREFIXES.iter().find_map(|p| key.strip_prefix(p)) {
            Some(rest) => key = rest,
            None => return key,
        }
    }
}

/// Renames one HF backbone key to its canonical name. q/k/v are returned with a
/// `#q`/`#k`/`#v` marker so they can be fused afterwards.
fn hf_to_canonical(key: &str) -> Option<String> {
    let direct = [
        ("embeddings.cls_token", "cls_token"),
        ("embeddings.position_embeddings", "pos_embed"),
        (
            "embeddings.patch_embeddings.projection.weight",
            "patch_embed.proj.weight",
        ),
        (
            "embeddings.patch_embeddings.projection.bias",
            "patch_embed.proj.bias",
        ),
        ("layernorm.weight", "norm.weight"),
        ("layernorm.bias", "norm.bias"),
    ];
    if let Some((_, c)) = direct.iter().find(|(h, _)| *h == key) {
        return Some(c.to_string());
    }
    let rest = key.strip_prefix("encoder.layer.")?;
    let (index, tail) = rest.split_once('.')?;
    let block: usize = index.parse().ok()?;
    let (module, param) = tail.rsplit_once('.')?;
    let canonical = match module {
        "layernorm_before" => "norm1".to_string(),
        "layernorm_after" => "norm2".to_string(),
        "attention.attention.query" => "attn.qkv#q".to_string(),
        "attention.attention.key" => "attn.qkv#k".to_string(),
        "attention.attention.value" => "attn.qkv#v".to_string(),
        "attention.output.dense" => "attn.proj".to_string(),
        "intermediate.dense" => "mlp.fc1".to_string(),
        "output.dense" => "mlp.fc2".to_string(),
        _ => return None,
    };
    if param != "weight" && param != "bias" {
        return None;
    }
    Some(match canonical.split_once('#') {
        Some((base, part)) => format!("blocks.{block}.{base}.{param}#{part}"),
        None => format!("blocks.{block}.{canonical}.{param}"),
    })
}

fn is_canonical_backbone_key(key: &str) -> bool {
    const TOP: [&str; 6] = [
        "cls_token",
        "pos_embed",
        "patch_embed.proj.weight",
        "patch_embed.proj.bias",
        "norm.weight",
        "norm.bias",
    ];
    const BLOCK: [&str; 12] = [
        "norm1.weight",
        "norm1.bias",
        "attn.qkv.weight",
        "attn.qkv.bias",
        "attn.proj.weight",
        "attn.proj.bias",
        "norm2.weight",
        "norm2.bias",
        "mlp.fc1.weight",
        "mlp.fc1.bias",
        "mlp.fc2.weight",
        "mlp.fc2.bias",
    ];
    if TOP.contains(&key) {
        return true;
    }
    key.strip_prefix("blocks.")
        .and_then(|r| r.split_once('.'))
        .is_some_and(|(i, tail)| i.parse::<usize>().is_ok() && BLOCK.contains(&tail))
}

/// Ignored on purpose: HF's pooler (not part of DINO) and DINO's projection head.
fn is_ignored(key: &str) -> bool {
    key.starts_with("pooler.")
        || key.starts_with("head.mlp.")
        || key.starts_with("head.last_layer")
        || key == "embeddings.mask_token"
}

/// Detects the naming of `tensors` and maps them to canonical names.
///
/// # Errors
/// [`Error::UnexpectedTensor`] for names no layout knows; [`Error::Shape`] when HF
/// q/k/v projections disagree in shape; [`Error::MissingTensor`] when one of them is
/// missing.
pub fn canonicalize(
    tensors: HashMap<String, HostTensor>,
    path: &Path,
) -> Result<(Naming, CanonicalTensors)> {
    let is_hf = tensors.keys().any(|k| {
        strip_prefixes(k).starts_with("encoder.layer.")
            || strip_prefixes(k).starts_with("embeddings.")
    });
    let mut out = CanonicalTensors::default();
    let mut head_w = None;
    let mut head_b = None;
    let mut qkv_parts: HashMap<String, [Option<HostTensor>; 3]> = HashMap::new();
    let mut names: Vec<String> = tensors.keys().cloned().collect();
    names.sort();
    let mut tensors = tensors;
    for raw in names {
        let tensor = tensors.remove(&raw).expect("key listed above");
        let key = strip_prefixes(&raw);
        if is_ignored(key) {
            continue;
        }
        if let Some(param) = HEAD_PREFIXES.iter().find_map(|p| key.strip_prefix(p)) {
            match param {
                "weight" => head_w = Some(tensor),
                "bias" => head_b = Some(tensor),
                _ => return Err(unexpected(path, &raw)),
            }
            continue;
        }
        let canonical = if is_hf {
            hf_to_canonical(key).ok_or_else(|| unexpected(path, &raw))?
        } else if is_canonical_backbone_key(key) {
            key.to_string()
        } else {
            return Err(unexpected(path, &raw));
        };
        match canonical.split_once('#') {
            Some((base, part)) => {
                let slot = match part {
                    "q" => 0,
                    "k" => 1,
                    _ => 2,
                };
                qkv_parts.entry(base.to_string()).or_default()[slot] = Some(tensor);
            }
            None => {
                out.backbone.insert(canonical, tensor);
            }
        }
    }
    for (base, parts) in qkv_parts {
        out.backbone
            .insert(base.clone(), fuse_qkv(&base, parts, path)?);
    }
    out.head = match (head_w, head_b) {
        (Some(w), Some(b)) => Some((w, b)),
        (None, None) => None,
        (Some(_), None) => return Err(missing(path, "head bias (`head.bias` or equivalent)")),
        (None, Some(_)) => return Err(missing(path, "head weight (`head.weight` or equivalent)")),
    };
    let naming = if out.backbone.is_empty() && out.head.is_some() {
        Naming::HeadOnly
    } else if is_hf {
        Naming::HuggingFace
    } else {
        Naming::TimmOrDino
    };
    Ok((naming, out))
}

/// Concatenates HF query, key and value rows into the fused `[Q | K | V]` layout.
fn fuse_qkv(base: &str, parts: [Option<HostTensor>; 3], path: &Path) -> Result<HostTensor> {
    let names = ["query", "key", "value"];
    let mut fused_shape: Option<Vec<usize>> = None;
    let mut data = Vec::new();
    for (part, name) in parts.into_iter().zip(names) {
        let t = part.ok_or_else(|| missing(path, &format!("{base} ({name} projection)")))?;
        match &fused_shape {
            None => fused_shape = Some(t.shape.clone()),
            Some(s) if *s != t.shape => {
                return Err(Error::shape(
                    format!("{base} ({name} projection)"),
                    s,
                    &t.shape,
                ))
            }
            Some(_) => {}
        }
        data.extend_from_slice(&t.data);
    }
    let mut shape = fused_shape.expect("three parts were present");
    shape[0] *= 3;
    Ok(HostTensor::new(shape, data))
}

fn unexpected(path: &Path, key: &str) -> Error {
    Error::UnexpectedTensor {
        path: path.to_path_buf(),
        key: key.to_string(),
    }
}

fn missing(path: &Path, key: &str) -> Error {
    Error::MissingTensor {
        path: path.to_path_buf(),
        key: key.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(shape: &[usize], start: f32) -> HostTensor {
        let n = shape.iter().product::<usize>();
        HostTensor::new(shape.to_vec(), (0..n).map(|i| start + i as f32).collect())
    }

    #[test]
    fn hf_qkv_fuse_in_q_k_v_order() {
        let mut m = HashMap::new();
        m.insert(
            "vit.encoder.layer.0.attention.attention.query.weight".into(),
            t(&[2, 2], 0.0),
        );
        m.insert(
            "vit.encoder.layer.0.attention.attention.key.weight".into(),
            t(&[2, 2], 10.0),
        );
        m.insert(
            "vit.encoder.layer.0.attention.attention.value.weight".into(),
            t(&[2, 2], 20.0),
        );
        m.insert("vit.pooler.dense.weight".into(), t(&[2, 2], 0.0));
        m.insert("classifier.weight".into(), t(&[3, 2], 0.0));
        m.insert("classifier.bias".into(), t(&[3], 0.0));
        let (naming, c) = canonicalize(m, Path::new("f")).unwrap();
        assert_eq!(naming, Naming::HuggingFace);
        let qkv = &c.backbone["blocks.0.attn.qkv.weight"];
        assert_eq!(qkv.shape, vec![6, 2]);
        assert_eq!(qkv.data[..4], [0.0, 1.0, 2.0, 3.0]);
        assert_eq!(qkv.data[4..8], [10.0, 11.0, 12.0, 13.0]);
        assert_eq!(qkv.data[8..], [20.0, 21.0, 22.0, 23.0]);
        assert_eq!(c.head.unwrap().0.shape, vec![3, 2]);
    }

    #[test]
    fn unknown_key_is_named_in_the_error() {
        let mut m = HashMap::new();
        m.insert("blocks.0.attn.qkv.weight".into(), t(&[3, 1], 0.0));
        m.insert("blocks.0.ls1.gamma".into(), t(&[1], 0.0));
        let err = canonicalize(m, Path::new("f")).unwrap_err().to_string();
        assert!(err.contains("blocks.0.ls1.gamma"), "{err}");
    }

    #[test]
    fn dino_prefixes_and_linear_head() {
        let mut m = HashMap::new();
        m.insert("module.backbone.cls_token".into(), t(&[1, 1, 2], 0.0));
        m.insert("module.linear.weight".into(), t(&[3, 8], 0.0));
        m.insert("module.linear.bias".into(), t(&[3], 0.0));
        let (naming, c) = canonicalize(m, Path::new("f")).unwrap();
        assert_eq!(naming, Naming::TimmOrDino);
        assert!(c.backbone.contains_key("cls_token"));
        assert_eq!(c.head.unwrap().0.shape, vec![3, 8]);
    }
}
