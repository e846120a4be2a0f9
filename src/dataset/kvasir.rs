//! Kvasir-SEG (Jha et al., MMM 2020): 1000 colonoscopy images with polyp masks, and
//! the official 880/120 train/val split published for MediaEval 2020 Medico.
//!
//! Layout read: `index.csv` (columns `image`, `mask`, `split_medico2020`), as in
//! `../shared/data/kvasir_seg`; or, without it, `splits/{train,val}.txt` (one id per
//! line) with `images/<id>.jpg` and `masks/<id>.png|jpg`. Every image is a polyp
//! image, so samples carry no label; [`super::patches`] makes the paper's
//! positive/negative patches from them.

use std::path::Path;

use crate::error::{Error, Result};

use super::csv::Table;
use super::{csv_path, require_dir, stem, Sample};

const SPLITS: [&str; 2] = ["train", "val"];

/// The samples of `split` (`train`, `val`, or all for `None`), in file order.
///
/// # Errors
/// Missing files or folders, bad CSV rows (with the line), an unknown split.
pub fn open(root: &Path, split: Option<&str>) -> Result<Vec<Sample>> {
    if let Some(s) = split.filter(|s| !SPLITS.contains(s)) {
        return Err(Error::param(
            "split",
            format!("Kvasir-SEG has the splits train and val, not `{s}`"),
        ));
    }
    let index = root.join("index.csv");
    if index.is_file() {
        return from_index(root, &Table::read(&index)?, split);
    }
    from_split_files(root, split)
}

fn from_index(root: &Path, t: &Table, split: Option<&str>) -> Result<Vec<Sample>> {
    let (ci, cm) = (t.column(&["image"])?, t.column(&["mask"])?);
    let cs = t.column(&["split_medico2020", "split"])?;
    let mut out = Vec::new();
    for row in &t.rows {
        let s = row.fields[cs].trim();
        if !SPLITS.contains(&s) {
            return Err(t.row_error(row, format!("split `{s}` is neither train nor val")));
        }
        if split.is_some_and(|want| want != s) {
            continue;
        }
        let image = csv_path(t, row, root, &row.fields[ci], "image")?;
        let mask = csv_path(t, row, root, &row.fields[cm], "mask")?;
        out.push(Sample {
            mask: Some(mask),
            ..Sample::new(stem(&image), image)
        });
    }
    Ok(out)
}

fn from_split_files(root: &Path, split: Option<&str>) -> Result<Vec<Sample>> {
    let splits = root.join("splits");
    require_dir(&splits, "Kvasir-SEG: neither index.csv nor splits/")?;
    let mut out = Vec::new();
    for name in SPLITS
        .iter()
        .filter(|s| split.is_none_or(|want| want == **s))
    {
        let list = splits.join(format!("{name}.txt"));
        let text = std::fs::read_to_string(&list).map_err(|e| Error::io(&list, e))?;
        for (i, id) in text.lines().map(str::trim).enumerate() {
            if id.is_empty() {
                continue;
            }
            let line_error = |what: &str| {
                Error::format(&list, format!("line {}: {what} of `{id}` not found", i + 1))
            };
            let image = root.join("images").join(format!("{id}.jpg"));
            if !image.is_file() {
                return Err(line_error("images/<id>.jpg"));
            }
            let mask = ["png", "jpg"]
                .iter()
                .map(|e| root.join("masks").join(format!("{id}.{e}")))
                .find(|p| p.is_file())
                .ok_or_else(|| line_error("masks/<id>.png or .jpg"))?;
            out.push(Sample {
                mask: Some(mask),
                ..Sample::new(id, image)
            });
        }
    }
    Ok(out)
}

/// The paper's positive/negative patches of `split` (see [`super::patches`]).
///
/// # Errors
/// Those of [`open`] and [`super::patches::labelled_patches`].
pub fn patches(
    root: &Path,
    split: Option<&str>,
    cfg: &super::patches::PatchConfig,
) -> Result<Vec<Sample>> {
    super::patches::labelled_patches(&open(root, split)?, cfg)
}
