//! Unlabelled training images: every image file under a folder (recursively),
//! or a data set reader's samples, loaded once and squashed to a square side
//! (Pillow bicubic) from which the crops are cut.

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::dataset::Sample;
use crate::error::{Error, Result};
use crate::image::{resize_rgb8, ResampleFilter};
use crate::train::data::Prepared;

const EXTENSIONS: [&str; 5] = ["png", "jpg", "jpeg", "tif", "tiff"];

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        if path.is_dir() {
            walk(&path, out)?;
        } else if path.extension().is_some_and(|e| {
            EXTENSIONS.contains(&e.to_string_lossy().to_ascii_lowercase().as_str())
        }) {
            out.push(path);
        }
    }
    Ok(())
}

/// Every PNG, JPEG and TIFF file under `root`, as samples with their relative
/// paths as ids, sorted.
///
/// # Errors
/// I/O errors; [`Error::InvalidParam`] when the folder holds no image.
pub fn folder_samples(root: &Path) -> Result<Vec<Sample>> {
    let mut files = Vec::new();
    walk(root, &mut files)?;
    files.sort();
    if files.is_empty() {
        return Err(Error::param(
            "data",
            format!("no PNG, JPEG or TIFF image under {}", root.display()),
        ));
    }
    Ok(files
        .into_iter()
        .map(|p| {
            let id = p
                .strip_prefix(root)
                .unwrap_or(&p)
                .to_string_lossy()
                .into_owned();
            Sample::new(id, p)
        })
        .collect())
}

/// The samples' images (their regions, if any) at `side`×`side`, in parallel.
///
/// # Errors
/// Reading and decoding errors, naming the file.
pub fn load_unlabelled(samples: &[Sample], side: usize) -> Result<Prepared> {
    if side == 0 {
        return Err(Error::param("source size", "must be ≥ 1"));
    }
    let images = samples
        .par_iter()
        .map(|s| {
            let img = s.load_image()?;
            let rgb = img.to_rgb8();
            resize_rgb8(
                &rgb,
                img.width,
                img.height,
                side as u32,
                side as u32,
                ResampleFilter::Bicubic,
            )
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Prepared {
        side,
        labels: vec![0; images.len()],
        images,
    })
}
