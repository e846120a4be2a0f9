//! A generic layout for the user's own data:
//!
//! ```text
//! images/<name>.png|jpg|tif|dcm
//! masks/<name>.<any of those>     optional folder; when present, every image needs one
//! labels.csv                      optional: `id,label` (id = file stem) or `file,label`
//! ```

use std::collections::HashMap;
use std::path::Path;

use crate::error::{Error, Result};

use super::csv::Table;
use super::{image_files, require_dir, stem, Sample};

/// Every image of `images/`, sorted by file name.
///
/// # Errors
/// No `images/` folder, an image without a mask, two masks for one image, a
/// labels.csv row that names no image (with its line).
pub fn open(root: &Path) -> Result<Vec<Sample>> {
    let images = root.join("images");
    require_dir(&images, "folder layout: images/")?;
    let masks_dir = root.join("masks");
    let masks = if masks_dir.is_dir() {
        let mut by_stem = HashMap::new();
        for m in image_files(&masks_dir)? {
            if let Some(prev) = by_stem.insert(stem(&m), m.clone()) {
                return Err(Error::format(
                    &m,
                    format!("two masks for one image: also `{}`", prev.display()),
                ));
            }
        }
        Some(by_stem)
    } else {
        None
    };
    let mut out = Vec::new();
    for image in image_files(&images)? {
        let id = stem(&image);
        let mask = match &masks {
            Some(m) => Some(m.get(&id).cloned().ok_or_else(|| {
                Error::format(&image, format!("no mask `masks/{id}.*` for this image"))
            })?),
            None => None,
        };
        out.push(Sample {
            mask,
            ..Sample::new(id, image)
        });
    }
    if out.is_empty() {
        return Err(Error::format(&images, "no PNG, JPEG, TIFF or DICOM images"));
    }
    let labels = root.join("labels.csv");
    if labels.is_file() {
        apply_labels(&Table::read(&labels)?, &mut out)?;
    }
    Ok(out)
}

fn apply_labels(t: &Table, samples: &mut [Sample]) -> Result<()> {
    let key = t.column(&["id", "file", "image"])?;
    let by_file = !t.header[key].eq_ignore_ascii_case("id");
    let cl = t.column(&["label"])?;
    let index: HashMap<String, usize> = samples
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.clone(), i))
        .collect();
    for row in &t.rows {
        let k = row.fields[key].trim();
        let id = if by_file {
            stem(Path::new(k))
        } else {
            k.to_string()
        };
        let i = *index
            .get(&id)
            .ok_or_else(|| t.row_error(row, format!("`{k}` is not an image of images/")))?;
        samples[i].label = Some(row.fields[cl].trim().to_string());
    }
    Ok(())
}
