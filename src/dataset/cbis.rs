//! CBIS-DDSM (Lee et al., Scientific Data 2017): mammograms with ROI masks and a
//! pathology per abnormality, described by TCIA's case-description CSVs
//! (`mass_case_description_test_set.csv`, `calc_case_description_train_set.csv`, ...)
//! with the columns `image file path`, `ROI mask file path` and `pathology`.
//!
//! One sample per CSV row (per abnormality): the full mammogram, the ROI mask,
//! the pathology as label, and as id the first folder of the mask path
//! (`Mass-Test_P_00016_LEFT_CC_1`). Images may be DICOM (read with the `dicom`
//! feature) or already converted PNG/JPEG files at the same relative paths.
//!
//! The CSV paths (`<case>/<study uid>/<series uid>/000000.dcm`) are tried under the
//! root and under `root/CBIS-DDSM/`. TCIA's download tool names the files
//! differently (`<case>/<date-uid>/<series>/1-1.dcm`); for those the DICOM files
//! under `<case>/` are searched: the only one for the image, and for the mask the
//! one of the image's size (the ROI folder also holds the cropped lesion).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

use super::csv::{Row, Table};
use super::{image_size, Sample};

/// Samples of every case-description CSV in `root` (or `root/csv/`), CSVs sorted
/// by name; `filter` keeps the CSVs whose name contains it (`test`, `mass`, ...).
///
/// # Errors
/// No CSV, missing columns, a row whose files cannot be found (with its line).
pub fn open(root: &Path, filter: Option<&str>) -> Result<Vec<Sample>> {
    let mut csvs = Vec::new();
    for dir in [root.to_path_buf(), root.join("csv")] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        csvs.extend(
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    let name = p
                        .file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .to_lowercase();
                    name.ends_with(".csv") && name.contains("case_description")
                }),
        );
    }
    csvs.sort();
    if csvs.is_empty() {
        return Err(Error::format(
            root,
            "CBIS-DDSM: no *case_description*.csv here or in csv/",
        ));
    }
    let chosen: Vec<_> = csvs
        .iter()
        .filter(|p| {
            filter.is_none_or(|f| {
                p.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .to_lowercase()
                    .contains(&f.to_lowercase())
            })
        })
        .collect();
    if chosen.is_empty() {
        return Err(Error::param(
            "split",
            format!(
                "no CBIS-DDSM CSV name contains `{}` (CSVs: {})",
                filter.unwrap_or_default(),
                csvs.iter()
                    .map(|p| p
                        .file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .into_owned())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    let mut out = Vec::new();
    for path in chosen {
        let t = Table::read(path)?;
        let ci = t.column(&["image file path", "image_file_path"])?;
        let cm = t.column(&["ROI mask file path", "roi_mask_file_path"])?;
        let cp = t.column(&["pathology"])?;
        for row in &t.rows {
            let image = resolve(root, &t, row, &row.fields[ci], None)?;
            let mask = resolve(root, &t, row, &row.fields[cm], Some(&image))?;
            let id = row.fields[cm]
                .trim()
                .split(['/', '\\'])
                .next()
                .unwrap_or_default()
                .to_string();
            out.push(Sample {
                mask: Some(mask),
                label: Some(row.fields[cp].trim().to_string()),
                ..Sample::new(id, image)
            });
        }
    }
    Ok(out)
}

/// Finds the file a CSV path means; `image` is set when resolving a mask.
fn resolve(root: &Path, t: &Table, row: &Row, rel: &str, image: Option<&Path>) -> Result<PathBuf> {
    // The published CSVs end some paths with a line break inside the quotes.
    let rel = rel.trim();
    if rel.is_empty() {
        return Err(t.row_error(row, "empty file path"));
    }
    for base in [root.to_path_buf(), root.join("CBIS-DDSM")] {
        let p = base.join(rel);
        if p.is_file() {
            return Ok(p);
        }
    }
    let case = rel.split(['/', '\\']).next().unwrap_or_default();
    let case_dir = [root.join(case), root.join("CBIS-DDSM").join(case)]
        .into_iter()
        .find(|d| d.is_dir())
        .ok_or_else(|| t.row_error(row, format!("`{rel}` not found under {}", root.display())))?;
    let mut found = Vec::new();
    collect_dicoms(&case_dir, &mut found);
    found.sort();
    let pick = match (image, found.len()) {
        (_, 0) => None,
        (None, 1) => found.pop(),
        (Some(img), _) => {
            let want = image_size(img)?;
            found.into_iter().find(|p| image_size(p).ok() == Some(want))
        }
        (None, _) => None,
    };
    pick.ok_or_else(|| {
        t.row_error(
            row,
            format!(
                "`{rel}` not found, and {} does not hold exactly one {}",
                case_dir.display(),
                if image.is_some() {
                    "DICOM file of the image's size"
                } else {
                    "DICOM file"
                }
            ),
        )
    })
}

fn collect_dicoms(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut seen = std::collections::HashSet::new();
    collect_dicoms_in(dir, out, &mut seen, 0);
}

/// The walk of [`collect_dicoms`]: each real folder is entered once (symbolic
/// links that loop back are skipped), at most 64 levels deep, and it stops at the
/// `dataset_items` limit.
fn collect_dicoms_in(
    dir: &Path,
    out: &mut Vec<PathBuf>,
    seen: &mut std::collections::HashSet<PathBuf>,
    depth: usize,
) {
    if depth > 64 {
        return;
    }
    let Ok(real) = std::fs::canonicalize(dir) else {
        return;
    };
    if !seen.insert(real) {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let max = crate::limits::current().dataset_items;
    for p in entries.filter_map(|e| e.ok().map(|e| e.path())) {
        if out.len() as u64 >= max {
            return;
        }
        if p.is_dir() {
            collect_dicoms_in(&p, out, seen, depth + 1);
        } else if p.extension().is_some_and(|e| e.eq_ignore_ascii_case("dcm")) {
            out.push(p);
        }
    }
}
