//! NuInsSeg (Mahbod et al., Scientific Data 2024): 665 H&E tiles of 512×512 from 31
//! human and mouse organs, as distributed on Kaggle (`ipateam/nuinsseg`) and
//! Zenodo: one folder per tissue, e.g. `human bladder/`, each holding
//!
//! ```text
//! tissue images/<name>.png          the H&E tile
//! mask binary/<name>.png            binary nucleus mask (preferred)
//! label masks modify/<name>.tif     instance labels (used when no binary mask exists)
//! ```
//!
//! Samples are labelled with their tissue folder's name, and their ids are
//! `<tissue>/<name>` (tiles of different tissues may share a name).

use std::path::Path;

use crate::error::{Error, Result};

use super::{image_files, require_dir, stem, MaskEncoding, Sample};

/// All tiles, tissue by tissue (sorted), or only those of the tissue `tissue`.
///
/// # Errors
/// No tissue folder, a tissue folder without `tissue images/`, an image with no
/// mask in either mask folder, an unknown tissue.
pub fn open(root: &Path, tissue: Option<&str>) -> Result<Vec<Sample>> {
    let mut tissues: Vec<_> = std::fs::read_dir(root)
        .map_err(|e| Error::io(root, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("tissue images").is_dir())
        .collect();
    tissues.sort();
    if tissues.is_empty() {
        return Err(Error::format(
            root,
            "NuInsSeg: no `<tissue>/tissue images/` folder found",
        ));
    }
    let names: Vec<String> = tissues
        .iter()
        .map(|p| {
            p.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    if let Some(t) = tissue.filter(|t| !names.iter().any(|n| n == t)) {
        return Err(Error::param(
            "split",
            format!("no NuInsSeg tissue `{t}` (tissues: {})", names.join(", ")),
        ));
    }
    let mut out = Vec::new();
    for (dir, name) in tissues.iter().zip(&names) {
        if tissue.is_some_and(|t| t != name) {
            continue;
        }
        let images = dir.join("tissue images");
        require_dir(&images, "NuInsSeg tissue images")?;
        for image in image_files(&images)? {
            let s = stem(&image);
            let binary = dir.join("mask binary").join(format!("{s}.png"));
            let labels = ["tif", "tiff", "png"]
                .iter()
                .map(|e| dir.join("label masks modify").join(format!("{s}.{e}")))
                .find(|p| p.is_file());
            let (mask, mask_encoding) = if binary.is_file() {
                (binary, MaskEncoding::Binary)
            } else if let Some(l) = labels {
                (l, MaskEncoding::Instance)
            } else {
                return Err(Error::format(
                    &image,
                    format!(
                        "no mask: expected `{}` or `label masks modify/{s}.tif`",
                        binary.display()
                    ),
                ));
            };
            out.push(Sample {
                mask: Some(mask),
                mask_encoding,
                label: Some(name.clone()),
                ..Sample::new(format!("{name}/{s}"), image)
            });
        }
    }
    Ok(out)
}
