//! Synthetic "lesion" images with exact masks, for tests and demos that must run
//! with nothing downloaded.
//!
//! Each image is a tissue-like textured background ([`texture`]); a positive one
//! also holds one lesion ([`lesion`]) of random shape, size, position, colour,
//! texture and contrast. The image-level label is "lesion present", which is all
//! a classifier is trained on; the mask is kept for scoring the segmentation.
//!
//! Image `i` of seed `k` depends on `(k, i)` only, so sets of any size agree on
//! their common items.
//!
//! ```
//! use explainseg::synth::{generate, SynthConfig};
//! let cfg = SynthConfig { size: 64, positive_fraction: 0.5 };
//! let s = generate(7, 1, &cfg)?;
//! assert_eq!(s.image.dim(), (64, 64, 3));
//! assert_eq!(s.lesion, s.mask.iter().any(|&m| m));
//! # Ok::<(), explainseg::Error>(())
//! ```

pub mod demo;
pub mod lesion;
pub mod texture;

use std::path::Path;

use ndarray::{Array2, Array3};

use crate::error::{Error, Result};
use crate::rng::Rng;
use lesion::Lesion;

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthConfig {
    /// Image side in pixels (square images), at least 16.
    pub size: usize,
    /// Fraction of images with a lesion, in [0, 1]. Positives are spread evenly
    /// through the indices (image `i` is positive when ⌊(i+1)f⌋ > ⌊if⌋), so every
    /// prefix of a set holds the stated fraction up to one image.
    pub positive_fraction: f64,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            size: 64,
            positive_fraction: 0.5,
        }
    }
}

impl SynthConfig {
    /// # Errors
    /// [`Error::InvalidParam`] for a size below 16 or above 4096, or a fraction
    /// outside [0, 1].
    pub fn validate(&self) -> Result<()> {
        if !(16..=4096).contains(&self.size) {
            return Err(Error::param(
                "size",
                format!("must be in 16..=4096 pixels, got {}", self.size),
            ));
        }
        if !(0.0..=1.0).contains(&self.positive_fraction) {
            return Err(Error::param(
                "positive_fraction",
                format!("must be in [0, 1], got {}", self.positive_fraction),
            ));
        }
        Ok(())
    }

    /// Whether image `index` holds a lesion.
    pub fn is_positive(&self, index: u64) -> bool {
        let f = self.positive_fraction;
        ((index + 1) as f64 * f).floor() > (index as f64 * f).floor()
    }
}

/// One generated image.
#[derive(Debug, Clone)]
pub struct Sample {
    /// (H, W, 3) 8-bit RGB.
    pub image: Array3<u8>,
    /// (H, W) lesion pixels; all false for a negative.
    pub mask: Array2<bool>,
    /// The image-level label: a lesion is present.
    pub lesion: bool,
}

impl Sample {
    /// The label as written to `labels.csv`.
    pub fn label_name(&self) -> &'static str {
        if self.lesion {
            "lesion"
        } else {
            "normal"
        }
    }
}

/// Image `index` of the set seeded by `seed`.
///
/// # Errors
/// [`Error::InvalidParam`] for an invalid `cfg`.
pub fn generate(seed: u64, index: u64, cfg: &SynthConfig) -> Result<Sample> {
    cfg.validate()?;
    let mut rng = Rng::for_item(seed, index);
    let mut img = texture::background(cfg.size, &mut rng);
    let lesion = cfg.is_positive(index);
    let mask = if lesion {
        let n = (cfg.size * cfg.size) as f32;
        let mean = [0, 1, 2].map(|c| img.index_axis(ndarray::Axis(2), c).sum() / n);
        Lesion::sample(cfg.size, mean, &mut rng).paint(&mut img)
    } else {
        Array2::from_elem((cfg.size, cfg.size), false)
    };
    let image = img.mapv(|v| (v * 255.0).round().clamp(0.0, 255.0) as u8);
    Ok(Sample {
        image,
        mask,
        lesion,
    })
}

/// File stem of image `index`.
pub fn image_id(index: u64) -> String {
    format!("synth_{index:05}")
}

/// Writes `count` images as the folder layout the data readers take:
/// `dir/images/<id>.png`, `dir/masks/<id>.png` (0/255) and `dir/labels.csv`
/// (`file,label` with `lesion` / `normal`). Calls `progress(done)` after each.
/// Every file is written atomically; on a failure the files and folders this
/// call created are removed again, and files that existed before keep their
/// content or are replaced whole.
///
/// # Errors
/// Invalid `cfg`; [`Error::Io`] when a file cannot be written.
pub fn write_dataset(
    dir: &Path,
    count: u64,
    seed: u64,
    cfg: &SynthConfig,
    progress: impl FnMut(u64),
) -> Result<()> {
    cfg.validate()?;
    let mut created = crate::fsutil::CreatedFiles::new();
    let result = write_files(dir, count, seed, cfg, progress, &mut created);
    if result.is_err() {
        created.remove_all();
    }
    result
}

fn write_files(
    dir: &Path,
    count: u64,
    seed: u64,
    cfg: &SynthConfig,
    mut progress: impl FnMut(u64),
    created: &mut crate::fsutil::CreatedFiles,
) -> Result<()> {
    let (images, masks) = (dir.join("images"), dir.join("masks"));
    for d in [&images, &masks] {
        created.create_dir_all(d)?;
    }
    let mut csv = String::from("file,label\n");
    for index in 0..count {
        let s = generate(seed, index, cfg)?;
        let file = format!("{}.png", image_id(index));
        let (h, w, _) = s.image.dim();
        let rgb = s.image.iter().copied().collect();
        created.track(&images.join(&file), |p| {
            crate::render::write_rgb_png(p, rgb, h, w)
        })?;
        created.track(&masks.join(&file), |p| {
            crate::render::write_mask_png(p, s.mask.view())
        })?;
        csv.push_str(&format!("{file},{}\n", s.label_name()));
        progress(index + 1);
    }
    let csv_path = dir.join("labels.csv");
    created.track(&csv_path, |p| {
        crate::fsutil::write_bytes_atomic(p, csv.as_bytes())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(n: u64, size: usize) -> Vec<Sample> {
        let cfg = SynthConfig {
            size,
            positive_fraction: 0.5,
        };
        (0..n).map(|i| generate(3, i, &cfg).unwrap()).collect()
    }

    #[test]
    fn a_failed_write_removes_only_what_it_created() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("images")).unwrap();
        std::fs::write(dir.path().join("images/keep.txt"), b"mine").unwrap();
        // labels.csv cannot be written over a folder: the last step fails.
        std::fs::create_dir(dir.path().join("labels.csv")).unwrap();
        let cfg = SynthConfig {
            size: 16,
            positive_fraction: 0.5,
        };
        assert!(write_dataset(dir.path(), 3, 1, &cfg, |_| {}).is_err());
        let mut left: Vec<String> = walk(dir.path());
        left.sort();
        assert_eq!(left, ["images", "images/keep.txt", "labels.csv"]);
    }

    fn walk(root: &Path) -> Vec<String> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(root).unwrap().flatten() {
            let p = e.path();
            out.push(p.file_name().unwrap().to_string_lossy().into_owned());
            if p.is_dir() {
                let name = out.last().unwrap().clone();
                out.extend(walk(&p).into_iter().map(|c| format!("{name}/{c}")));
            }
        }
        out
    }

    #[test]
    fn same_seed_same_images_other_seed_other_images() {
        let cfg = SynthConfig::default();
        let a = generate(11, 5, &cfg).unwrap();
        let b = generate(11, 5, &cfg).unwrap();
        assert_eq!(a.image, b.image);
        assert_eq!(a.mask, b.mask);
        let c = generate(12, 5, &cfg).unwrap();
        assert_ne!(a.image, c.image);
        let d = generate(11, 6, &cfg).unwrap();
        assert_ne!(a.image, d.image);
    }

    #[test]
    fn masks_agree_with_labels_and_fraction_holds() {
        for f in [0.0, 0.3, 0.5, 1.0] {
            let cfg = SynthConfig {
                size: 32,
                positive_fraction: f,
            };
            let samples: Vec<Sample> = (0..40).map(|i| generate(1, i, &cfg).unwrap()).collect();
            for s in &samples {
                assert_eq!(s.lesion, s.mask.iter().any(|&m| m));
            }
            let pos = samples.iter().filter(|s| s.lesion).count();
            assert_eq!(pos, (40.0 * f).floor() as usize, "fraction {f}");
        }
    }

    #[test]
    fn lesions_vary_in_size_and_place_and_stay_off_the_border() {
        let samples = set(200, 64);
        let (mut areas, mut rows, mut cols) = (vec![], vec![], vec![]);
        for s in samples.iter().filter(|s| s.lesion) {
            let n = s.mask.iter().filter(|&&m| m).count() as f64;
            areas.push(n / 4096.0);
            let (mut r, mut c) = (0.0, 0.0);
            for ((i, j), &m) in s.mask.indexed_iter() {
                if m {
                    r += i as f64 / n;
                    c += j as f64 / n;
                }
            }
            rows.push(r);
            cols.push(c);
            let touches = s
                .mask
                .row(0)
                .iter()
                .chain(s.mask.row(63).iter())
                .any(|&m| m)
                || s.mask
                    .column(0)
                    .iter()
                    .chain(s.mask.column(63).iter())
                    .any(|&m| m);
            assert!(!touches, "lesion touches the border");
        }
        let spread = |v: &[f64]| {
            let mut v = v.to_vec();
            v.sort_by(f64::total_cmp);
            (v[v.len() / 10], v[v.len() * 9 / 10])
        };
        let (a10, a90) = spread(&areas);
        assert!(a10 < 0.05 && a90 > 0.10, "area fractions {a10}..{a90}");
        for (name, v) in [("rows", &rows), ("cols", &cols)] {
            let (p10, p90) = spread(v);
            assert!(p10 < 24.0 && p90 > 40.0, "centroid {name} {p10}..{p90}");
        }
    }

    #[test]
    fn backgrounds_differ_between_images() {
        let samples = set(20, 32);
        let means: Vec<f64> = samples
            .iter()
            .map(|s| s.image.iter().map(|&v| v as f64).sum::<f64>() / s.image.len() as f64)
            .collect();
        let lo = means.iter().copied().fold(f64::MAX, f64::min);
        let hi = means.iter().copied().fold(f64::MIN, f64::max);
        assert!(hi - lo > 30.0, "mean brightness only spans {lo}..{hi}");
    }

    #[test]
    fn bad_config_is_an_error() {
        let bad = SynthConfig {
            size: 8,
            positive_fraction: 0.5,
        };
        assert!(generate(0, 0, &bad).is_err());
        let bad = SynthConfig {
            size: 64,
            positive_fraction: 1.5,
        };
        assert!(generate(0, 0, &bad).is_err());
    }
}
