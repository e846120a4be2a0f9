//! MoNuSeg 2018 (Kumar et al.): 1000×1000 H&E tiles with nucleus masks, tiled to
//! [`TILE_PX`] by the rule of [`super::tiles`] (14 test images → 56 tiles).
//!
//! Layout read: `labels.csv` with columns `image`, `mask_binary` (or `mask`) and
//! `label` (the organ), as in `../shared/data/monuseg`.

use std::path::Path;

use crate::error::Result;

use super::csv::Table;
use super::tiles::tile_sample;
use super::{csv_path, require_file, stem, Sample};

/// Default tile side: 512 px, as NuInsSeg's tiles, which MoNuSeg stands in for.
pub const TILE_PX: u32 = 512;

/// Every tile of every image, image by image, in CSV order.
///
/// # Errors
/// Missing files, bad CSV rows (with the line), masks whose size differs from the image's.
pub fn open(root: &Path, tile_px: u32) -> Result<Vec<Sample>> {
    let path = root.join("labels.csv");
    require_file(&path, "MoNuSeg labels.csv")?;
    let t = Table::read(&path)?;
    let ci = t.column(&["image"])?;
    let cm = t.column(&["mask_binary", "mask"])?;
    let cl = t.find_column(&["label", "organ"]);
    let mut out = Vec::new();
    for row in &t.rows {
        let image = csv_path(&t, row, root, &row.fields[ci], "image")?;
        let mask = csv_path(&t, row, root, &row.fields[cm], "mask")?;
        let whole = Sample {
            mask: Some(mask),
            label: cl.map(|c| row.fields[c].trim().to_string()),
            ..Sample::new(stem(&image), image)
        };
        out.extend(tile_sample(&whole, tile_px).map_err(|e| t.row_error(row, e))?);
    }
    Ok(out)
}
