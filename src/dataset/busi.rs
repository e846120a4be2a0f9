//! BUSI (Al-Dhabyani et al., 2020): breast ultrasound with lesion masks and a
//! benign / malignant / normal label (normal images have empty masks).
//!
//! Layout read: `labels.csv` with columns `image`, `mask`, `label`, as in
//! `../shared/data/busi`.

use std::path::Path;

use crate::error::Result;

use super::csv::Table;
use super::{csv_path, require_file, stem, Sample};

/// Every image, in CSV order.
///
/// # Errors
/// Missing files, bad CSV rows (with the line), an empty label.
pub fn open(root: &Path) -> Result<Vec<Sample>> {
    let path = root.join("labels.csv");
    require_file(&path, "BUSI labels.csv")?;
    let t = Table::read(&path)?;
    let (ci, cm, cl) = (
        t.column(&["image"])?,
        t.column(&["mask"])?,
        t.column(&["label"])?,
    );
    let mut out = Vec::new();
    for row in &t.rows {
        let label = row.fields[cl].trim();
        if label.is_empty() {
            return Err(t.row_error(row, "empty label"));
        }
        let image = csv_path(&t, row, root, &row.fields[ci], "image")?;
        let mask = csv_path(&t, row, root, &row.fields[cm], "mask")?;
        out.push(Sample {
            mask: Some(mask),
            label: Some(label.to_string()),
            ..Sample::new(stem(&image), image)
        });
    }
    Ok(out)
}
