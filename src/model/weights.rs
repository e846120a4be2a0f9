//! Assembling a [`Vit`](super::Vit) from safetensors files: naming normalisation,
//! configuration inference and a shape check of every tensor.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::config::{PosEmbedMode, VitConfig};
use super::head::{HeadKind, LinearHead};
use super::keymap::{canonicalize, CanonicalTensors, Naming};
use super::tensor_file::{HostTensor, TensorFile};
use crate::error::{Error, Result};
use crate::image::Normalization;

/// Options for [`load_vit`]; unset fields come from file metadata, then defaults.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Attention heads. Metadata keys `num_heads` / `num_attention_heads`; default D/64.
    pub heads: Option<usize>,
    /// LayerNorm epsilon. Metadata key `layer_norm_eps`; default 1e-6 (DINO, timm).
    pub eps: Option<f32>,
    /// Patch grid of the stored positional table. Metadata `pos_grid` = "RxC"; square
    /// tables are inferred.
    pub pos_grid: Option<(usize, usize)>,
    /// How the positional table is resized for other input sizes.
    pub pos_embed_mode: PosEmbedMode,
    /// Force the head's input layout instead of inferring it from its width.
    pub head_kind: Option<HeadKind>,
}

/// The weights of one pre-norm block, row-major, PyTorch `Linear` layout (out, in).
#[derive(Debug, Clone)]
pub struct BlockWeights {
    pub norm1_w: Vec<f32>,
    pub norm1_b: Vec<f32>,
    /// (3·D, D), rows `[Q | K | V]`, head-major inside each.
    pub qkv_w: Vec<f32>,
    pub qkv_b: Vec<f32>,
    /// (D, D)
    pub proj_w: Vec<f32>,
    pub proj_b: Vec<f32>,
    pub norm2_w: Vec<f32>,
    pub norm2_b: Vec<f32>,
    /// (hidden, D)
    pub fc1_w: Vec<f32>,
    pub fc1_b: Vec<f32>,
    /// (D, hidden)
    pub fc2_w: Vec<f32>,
    pub fc2_b: Vec<f32>,
}

/// The twelve tensors of a block in timm order, with their timm suffixes.
pub fn block_tensors(b: &BlockWeights) -> [(&'static str, &Vec<f32>); 12] {
    [
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
    ]
}

/// Mutable twin of [`block_tensors`].
pub fn block_tensors_mut(b: &mut BlockWeights) -> [(&'static str, &mut Vec<f32>); 12] {
    [
        ("norm1.weight", &mut b.norm1_w),
        ("norm1.bias", &mut b.norm1_b),
        ("attn.qkv.weight", &mut b.qkv_w),
        ("attn.qkv.bias", &mut b.qkv_b),
        ("attn.proj.weight", &mut b.proj_w),
        ("attn.proj.bias", &mut b.proj_b),
        ("norm2.weight", &mut b.norm2_w),
        ("norm2.bias", &mut b.norm2_b),
        ("mlp.fc1.weight", &mut b.fc1_w),
        ("mlp.fc1.bias", &mut b.fc1_b),
        ("mlp.fc2.weight", &mut b.fc2_w),
        ("mlp.fc2.bias", &mut b.fc2_b),
    ]
}

/// Backbone weights under canonical names, shape-checked.
#[derive(Debug, Clone)]
pub struct VitWeights {
    /// Patch projection as a matrix (D, 3·p·p); columns ordered (channel, row, col).
    pub patch_w: Vec<f32>,
    pub patch_b: Vec<f32>,
    /// (D,)
    pub cls_token: Vec<f32>,
    /// (1 + pos_patches, D), CLS position first.
    pub pos_embed: Vec<f32>,
    pub blocks: Vec<BlockWeights>,
    pub norm_w: Vec<f32>,
    pub norm_b: Vec<f32>,
}

/// What [`load_vit`] returns: configuration, weights, optional head, provenance.
#[derive(Debug, Clone)]
pub struct LoadedVit {
    pub config: VitConfig,
    pub weights: VitWeights,
    pub head: Option<LinearHead>,
    pub naming: Naming,
    /// Input mean/std stored by `explainseg train` (metadata `mean`, `std`).
    pub normalization: Option<Normalization>,
    /// Class names stored by `explainseg train` (metadata `class_names`); empty if none.
    pub class_names: Vec<String>,
}

/// Loads a backbone (and a head, from the same file or from `head_path`).
///
/// # Errors
/// I/O and format errors; [`Error::MissingTensor`] / [`Error::Shape`] naming the key,
/// the expected and the actual shape; [`Error::InvalidParam`] for inconsistent
/// configuration (heads not dividing D, a head whose width fits no known layout).
pub fn load_vit(
    backbone_path: &Path,
    head_path: Option<&Path>,
    opts: &LoadOptions,
) -> Result<LoadedVit> {
    load_vit_from(
        TensorFile::read(backbone_path)?,
        backbone_path,
        head_path,
        opts,
    )
}

/// [`load_vit`] from safetensors bytes already in memory (e.g. embedded with
/// `include_bytes!`); `name` stands for the file in error messages.
///
/// # Errors
/// As for [`load_vit`].
pub fn load_vit_bytes(bytes: &[u8], name: &Path, opts: &LoadOptions) -> Result<LoadedVit> {
    load_vit_from(TensorFile::parse(bytes, name)?, name, None, opts)
}

fn load_vit_from(
    file: TensorFile,
    backbone_path: &Path,
    head_path: Option<&Path>,
    opts: &LoadOptions,
) -> Result<LoadedVit> {
    let metadata = file.metadata.clone();
    let (naming, mut canon) = canonicalize(file.tensors, backbone_path)?;
    if naming == Naming::HeadOnly {
        return Err(missing(backbone_path, "patch_embed.proj.weight"));
    }
    let mut head_source = backbone_path.to_path_buf();
    if let Some(hp) = head_path {
        let head_file = TensorFile::read(hp)?;
        let (_, head_canon) = canonicalize(head_file.tensors, hp)?;
        if !head_canon.backbone.is_empty() && head_canon.head.is_none() {
            return Err(missing(
                hp,
                "head.weight (or linear.weight, fc.weight, classifier.weight)",
            ));
        }
        canon.head = head_canon.head;
        head_source = hp.to_path_buf();
    }
    let config = infer_config(&canon, &metadata, opts, backbone_path)?;
    let head = match canon.head.take() {
        Some((w, b)) => Some(LinearHead::from_tensors(
            w,
            b,
            &config,
            opts.head_kind.or(if head_path.is_none() {
                metadata
                    .get("head_kind")
                    .and_then(|k| HeadKind::from_metadata(k))
            } else {
                None
            }),
            &head_source,
        )?),
        None => None,
    };
    let weights = take_weights(canon.backbone, &config, backbone_path)?;
    check_finite(&weights, head.as_ref(), backbone_path, &head_source)?;
    let normalization = stored_normalization(&metadata, backbone_path)?;
    let class_names = match metadata.get("class_names") {
        Some(v) => serde_json::from_str::<Vec<String>>(v).map_err(|_| {
            Error::format(
                backbone_path,
                format!("metadata `class_names` = `{v}` is not a list of strings"),
            )
        })?,
        None => Vec::new(),
    };
    Ok(LoadedVit {
        config,
        weights,
        head,
        naming,
        normalization,
        class_names,
    })
}

/// The training split's mean/std a checkpoint records, as JSON triples under
/// `mean` and `std`; both or neither.
fn stored_normalization(
    metadata: &HashMap<String, String>,
    path: &Path,
) -> Result<Option<Normalization>> {
    let triple = |k: &str| -> Result<Option<[f32; 3]>> {
        metadata
            .get(k)
            .map(|v| {
                serde_json::from_str::<[f32; 3]>(v).map_err(|_| {
                    Error::format(path, format!("metadata `{k}` = `{v}` is not [r, g, b]"))
                })
            })
            .transpose()
    };
    match (triple("mean")?, triple("std")?) {
        (Some(mean), Some(std)) => {
            let n = Normalization { mean, std };
            n.validate()
                .map_err(|e| Error::format(path, format!("stored normalization: {e}")))?;
            Ok(Some(n))
        }
        (None, None) => Ok(None),
        _ => Err(Error::format(
            path,
            "metadata has only one of `mean` and `std`",
        )),
    }
}

fn meta_parse<T: std::str::FromStr>(
    meta: &HashMap<String, String>,
    keys: &[&str],
    path: &Path,
) -> Result<Option<T>> {
    for k in keys {
        if let Some(v) = meta.get(*k) {
            return v.trim().parse().map(Some).map_err(|_| {
                Error::format(path, format!("metadata `{k}` = `{v}` is not a valid value"))
            });
        }
    }
    Ok(None)
}

/// Parses "RxC" (also "R,C") into a grid.
pub fn parse_grid(s: &str) -> Option<(usize, usize)> {
    let (r, c) = s.split_once(['x', 'X', ',', '×'])?;
    Some((r.trim().parse().ok()?, c.trim().parse().ok()?))
}

fn infer_config(
    canon: &CanonicalTensors,
    meta: &HashMap<String, String>,
    opts: &LoadOptions,
    path: &Path,
) -> Result<VitConfig> {
    let get = |key: &str| canon.backbone.get(key).ok_or_else(|| missing(path, key));
    let patch_w = get("patch_embed.proj.weight")?;
    let [dim, channels, ph, pw] = patch_w.shape[..] else {
        return Err(Error::shape(
            "patch_embed.proj.weight",
            &[0, 3, 0, 0],
            &patch_w.shape,
        ));
    };
    if channels != 3 || ph != pw || ph == 0 {
        return Err(Error::shape(
            "patch_embed.proj.weight",
            &[dim, 3, ph.max(pw), ph.max(pw)],
            &patch_w.shape,
        ));
    }
    let depth = (0..)
        .take_while(|i| {
            canon
                .backbone
                .contains_key(&format!("blocks.{i}.attn.qkv.weight"))
        })
        .count();
    let fc1 = get("blocks.0.mlp.fc1.weight")?;
    let mlp_hidden = fc1.shape.first().copied().unwrap_or(0);
    let pos = get("pos_embed")?;
    let pos_tokens = match pos.shape[..] {
        [1, t, d] if d == dim && t >= 2 => t,
        _ => return Err(Error::shape("pos_embed", &[1, 0, dim], &pos.shape)),
    };
    let pos_patches = pos_tokens - 1;
    let meta_grid = match meta.get("pos_grid") {
        Some(s) => Some(parse_grid(s).ok_or_else(|| {
            Error::format(path, format!("metadata `pos_grid` = `{s}` is not RxC"))
        })?),
        None => None,
    };
    let side = (pos_patches as f64).sqrt().round() as usize;
    let pos_grid = opts
        .pos_grid
        .or(meta_grid)
        .or((side * side == pos_patches).then_some((side, side)));
    let heads = match opts.heads {
        Some(h) => h,
        None => meta_parse(meta, &["num_heads", "num_attention_heads"], path)?
            .unwrap_or((dim / 64).max(1)),
    };
    let eps = match opts.eps {
        Some(e) => e,
        None => meta_parse(meta, &["layer_norm_eps", "eps"], path)?.unwrap_or(1e-6),
    };
    let config = VitConfig {
        patch: ph,
        dim,
        depth,
        heads,
        mlp_hidden,
        eps,
        pos_grid,
        pos_patches,
    };
    config.validate()?;
    Ok(config)
}

fn take_weights(
    mut t: HashMap<String, HostTensor>,
    c: &VitConfig,
    path: &Path,
) -> Result<VitWeights> {
    let d = c.dim;
    let mut take = |key: &str, shape: &[usize]| -> Result<Vec<f32>> {
        let tensor = t.remove(key).ok_or_else(|| missing(path, key))?;
        if tensor.shape != shape {
            return Err(Error::Shape {
                what: format!("{}: tensor `{key}`", path.display()),
                expected: shape.to_vec(),
                got: tensor.shape,
            });
        }
        Ok(tensor.data)
    };
    let patch_w = take("patch_embed.proj.weight", &[d, 3, c.patch, c.patch])?;
    let patch_b = take("patch_embed.proj.bias", &[d])?;
    let cls_token = take("cls_token", &[1, 1, d])?;
    let pos_embed = take("pos_embed", &[1, c.pos_patches + 1, d])?;
    let mut blocks = Vec::with_capacity(c.depth);
    for i in 0..c.depth {
        let mut b = |name: &str, shape: &[usize]| take(&format!("blocks.{i}.{name}"), shape);
        blocks.push(BlockWeights {
            norm1_w: b("norm1.weight", &[d])?,
            norm1_b: b("norm1.bias", &[d])?,
            qkv_w: b("attn.qkv.weight", &[3 * d, d])?,
            qkv_b: b("attn.qkv.bias", &[3 * d])?,
            proj_w: b("attn.proj.weight", &[d, d])?,
            proj_b: b("attn.proj.bias", &[d])?,
            norm2_w: b("norm2.weight", &[d])?,
            norm2_b: b("norm2.bias", &[d])?,
            fc1_w: b("mlp.fc1.weight", &[c.mlp_hidden, d])?,
            fc1_b: b("mlp.fc1.bias", &[c.mlp_hidden])?,
            fc2_w: b("mlp.fc2.weight", &[d, c.mlp_hidden])?,
            fc2_b: b("mlp.fc2.bias", &[d])?,
        });
    }
    let norm_w = take("norm.weight", &[d])?;
    let norm_b = take("norm.bias", &[d])?;
    if let Some(extra) = t.keys().min() {
        // Canonical names beyond `depth` (e.g. a gap in block numbering).
        return Err(Error::UnexpectedTensor {
            path: path.to_path_buf(),
            key: extra.clone(),
        });
    }
    Ok(VitWeights {
        patch_w,
        patch_b,
        cls_token,
        pos_embed,
        blocks,
        norm_w,
        norm_b,
    })
}

fn missing(path: &Path, key: &str) -> Error {
    Error::MissingTensor {
        path: PathBuf::from(path),
        key: key.to_string(),
    }
}

// Load-time check of the model's numbers: every tensor finite, the first NaN or
// infinity reported with its tensor's name.
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
fn check_finite(
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
        for (name, data) in block_tensors(b) {
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
