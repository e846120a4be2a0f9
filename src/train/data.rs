//! Training data: a small [`Dataset`] trait (so the dataset readers can plug in
//! later), a generic folder reader (`images/` + `labels.csv`), a seeded
//! stratified train/validation split, images cached at the training size, the
//! training split's channel statistics, and class balancing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ndarray::Array4;
use rayon::prelude::*;

use super::augment::{augment, AugmentConfig};
use super::stream_key as rng;
use crate::error::{Error, Result};
use crate::image::{decode_image_file, resize_rgb8, DecodedImage, Normalization, ResampleFilter};
use crate::rng::Rng;

/// One labelled RGB image, 8-bit, row-major with interleaved channels (HWC).
#[derive(Debug, Clone, PartialEq)]
pub struct LabeledImage {
    pub rgb: Vec<u8>,
    pub height: usize,
    pub width: usize,
    /// Class index into [`Dataset::class_names`].
    pub label: usize,
}

impl LabeledImage {
    /// `img` as 8-bit RGB (gray and 16-bit images converted) with `label`.
    pub fn new(img: &DecodedImage, label: usize) -> LabeledImage {
        LabeledImage {
            rgb: img.to_rgb8(),
            height: img.height as usize,
            width: img.width as usize,
            label,
        }
    }
}

/// A labelled image collection.
pub trait Dataset: Sync {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Image `i` (0 ≤ i < len) with its label.
    ///
    /// # Errors
    /// Whatever reading the image can fail with.
    fn get(&self, i: usize) -> Result<LabeledImage>;
    /// Class names, indexed by label.
    fn class_names(&self) -> Vec<String>;
    /// Every label, in order (readers that know them cheaply override this).
    fn labels(&self) -> Result<Vec<usize>> {
        (0..self.len())
            .map(|i| self.get(i).map(|s| s.label))
            .collect()
    }
}

/// Images already in memory.
#[derive(Debug, Clone, Default)]
pub struct InMemoryDataset {
    pub images: Vec<LabeledImage>,
    pub classes: Vec<String>,
}

impl Dataset for InMemoryDataset {
    fn len(&self) -> usize {
        self.images.len()
    }
    fn get(&self, i: usize) -> Result<LabeledImage> {
        self.images
            .get(i)
            .cloned()
            .ok_or_else(|| Error::param("index", format!("{i} ≥ {}", self.images.len())))
    }
    fn class_names(&self) -> Vec<String> {
        self.classes.clone()
    }
    fn labels(&self) -> Result<Vec<usize>> {
        Ok(self.images.iter().map(|s| s.label).collect())
    }
}

/// A folder with `images/` and `labels.csv` (`file,label` header, other columns
/// ignored; `file` may also be called `image` and is looked up under `images/`,
/// then under the folder; a label is a class name, or a class index when every
/// label is an integer). Fields must not contain commas.
#[derive(Debug, Clone)]
pub struct FolderDataset {
    pub root: PathBuf,
    files: Vec<PathBuf>,
    labels: Vec<usize>,
    classes: Vec<String>,
}

impl FolderDataset {
    /// Reads `root/labels.csv` and checks that every listed image exists.
    ///
    /// # Errors
    /// [`Error::Io`] for a missing CSV, [`Error::Format`] for a malformed one, a
    /// missing image or an empty list.
    pub fn open(root: &Path) -> Result<Self> {
        let csv_path = root.join("labels.csv");
        let text = std::fs::read_to_string(&csv_path).map_err(|e| Error::io(&csv_path, e))?;
        let mut lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty());
        let header = lines
            .next()
            .map(|(_, l)| l.to_ascii_lowercase())
            .unwrap_or_default();
        let cols: Vec<&str> = header.split(',').map(|c| c.trim()).collect();
        let file_col = cols
            .iter()
            .position(|c| ["file", "image", "filename", "path"].contains(c));
        let (Some(fi), Some(li)) = (file_col, cols.iter().position(|c| *c == "label")) else {
            return Err(Error::format(
                &csv_path,
                "the first line must name the columns `file` (or `image`) and `label`",
            ));
        };
        let mut rows = Vec::new();
        for (n, line) in lines {
            let fields: Vec<&str> = line
                .split(',')
                .map(|f| f.trim().trim_matches('"'))
                .collect();
            let (Some(file), Some(label)) = (fields.get(fi), fields.get(li)) else {
                return Err(Error::format(
                    &csv_path,
                    format!("line {}: expected {} columns", n + 1, cols.len()),
                ));
            };
            if file.is_empty() || label.is_empty() {
                return Err(Error::format(
                    &csv_path,
                    format!("line {}: empty file or label", n + 1),
                ));
            }
            // `file` is relative to images/, or to the folder itself (`images/x.png`).
            let in_images = root.join("images").join(file);
            let path = if in_images.is_file() {
                in_images
            } else {
                root.join(file)
            };
            rows.push((path, label.to_string()));
        }
        if rows.is_empty() {
            return Err(Error::format(&csv_path, "lists no images"));
        }
        if let Some((missing, _)) = rows.iter().find(|(p, _)| !p.is_file()) {
            return Err(Error::format(
                &csv_path,
                format!("image {} does not exist", missing.display()),
            ));
        }
        let numeric: Option<Vec<usize>> = rows.iter().map(|(_, l)| l.parse().ok()).collect();
        let (labels, classes) = match numeric {
            Some(idx) => {
                let n = idx.iter().max().map_or(0, |m| m + 1);
                (idx, (0..n).map(|i| i.to_string()).collect())
            }
            None => {
                let names: Vec<String> = rows
                    .iter()
                    .map(|(_, l)| l.clone())
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .collect();
                let idx = rows
                    .iter()
                    .map(|(_, l)| names.iter().position(|n| n == l).expect("collected above"))
                    .collect();
                (idx, names)
            }
        };
        Ok(FolderDataset {
            root: root.to_path_buf(),
            files: rows.into_iter().map(|(p, _)| p).collect(),
            labels,
            classes,
        })
    }
}

impl Dataset for FolderDataset {
    fn len(&self) -> usize {
        self.files.len()
    }
    fn get(&self, i: usize) -> Result<LabeledImage> {
        let path = self
            .files
            .get(i)
            .ok_or_else(|| Error::param("index", format!("{i} ≥ {}", self.files.len())))?;
        Ok(LabeledImage::new(&decode_image_file(path)?, self.labels[i]))
    }
    fn class_names(&self) -> Vec<String> {
        self.classes.clone()
    }
    fn labels(&self) -> Result<Vec<usize>> {
        Ok(self.labels.clone())
    }
}

/// Seeded stratified split: per class, a shuffled `val_fraction` (rounded, and at
/// least one image when the class has two or more) goes to validation. Returns
/// (train, val) indices, each sorted.
pub fn split_indices(
    labels: &[usize],
    val_fraction: f32,
    seed: u64,
) -> Result<(Vec<usize>, Vec<usize>)> {
    if !(0.0..1.0).contains(&val_fraction) {
        return Err(Error::param(
            "val_fraction",
            format!("{val_fraction} is not in [0, 1)"),
        ));
    }
    let mut by_class: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, &l) in labels.iter().enumerate() {
        by_class.entry(l).or_default().push(i);
    }
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for (class, mut idx) in by_class {
        Rng::stream(seed, &[rng::SPLIT, class as u64]).shuffle(&mut idx);
        let mut n_val = (idx.len() as f32 * val_fraction).round() as usize;
        if val_fraction > 0.0 && n_val == 0 && idx.len() >= 2 {
            n_val = 1;
        }
        val.extend_from_slice(&idx[..n_val]);
        train.extend_from_slice(&idx[n_val..]);
    }
    train.sort_unstable();
    val.sort_unstable();
    if train.is_empty() {
        return Err(Error::param("val_fraction", "leaves no training images"));
    }
    Ok((train, val))
}

/// Images resized (squashed, bicubic) to `side`×`side`, kept in memory.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub side: usize,
    pub images: Vec<Vec<u8>>,
    pub labels: Vec<usize>,
}

impl Prepared {
    /// Loads `indices` of `data` in parallel and resizes them.
    ///
    /// # Errors
    /// Reading or decoding errors; labels beyond the class list.
    pub fn load(data: &dyn Dataset, indices: &[usize], side: usize) -> Result<Prepared> {
        let classes = data.class_names().len();
        let loaded: Vec<Result<(Vec<u8>, usize)>> = indices
            .par_iter()
            .map(|&i| {
                let s = data.get(i)?;
                if s.label >= classes {
                    return Err(Error::param(
                        "label",
                        format!(
                            "image {i} has label {} but there are {classes} classes",
                            s.label
                        ),
                    ));
                }
                if s.rgb.len() != s.height * s.width * 3 {
                    return Err(Error::shape(
                        format!("image {i} (height, width, 3)"),
                        &[s.height, s.width, 3],
                        &[s.rgb.len()],
                    ));
                }
                let rgb = if (s.height, s.width) == (side, side) {
                    s.rgb
                } else {
                    resize_rgb8(
                        &s.rgb,
                        s.width as u32,
                        s.height as u32,
                        side as u32,
                        side as u32,
                        ResampleFilter::Bicubic,
                    )?
                };
                Ok((rgb, s.label))
            })
            .collect();
        let mut images = Vec::with_capacity(indices.len());
        let mut labels = Vec::with_capacity(indices.len());
        for r in loaded {
            let (img, l) = r?;
            images.push(img);
            labels.push(l);
        }
        Ok(Prepared {
            side,
            images,
            labels,
        })
    }

    pub fn len(&self) -> usize {
        self.images.len()
    }

    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }

    /// Per-channel mean and (population) standard deviation of the pixels on the
    /// [0, 1] scale: the paper normalises with the training split's statistics.
    pub fn channel_stats(&self) -> Normalization {
        let mut sum = [0f64; 3];
        let mut sq = [0f64; 3];
        let mut n = 0f64;
        for img in &self.images {
            for p in img.chunks_exact(3) {
                for k in 0..3 {
                    let v = p[k] as f64 / 255.0;
                    sum[k] += v;
                    sq[k] += v * v;
                }
                n += 1.0;
            }
        }
        let n = n.max(1.0);
        let mean = sum.map(|s| s / n);
        let mut std = [0f32; 3];
        for k in 0..3 {
            // A constant channel would divide by 0: fall back to 1.
            let s = (sq[k] / n - mean[k] * mean[k]).max(0.0).sqrt();
            std[k] = if s > 1e-6 { s as f32 } else { 1.0 };
        }
        Normalization {
            mean: mean.map(|m| m as f32),
            std,
        }
    }

    /// Images `rows` as a normalised (len, 3, side, side) batch; with `aug`, image
    /// `k` of the batch is augmented with the stream (seed, AUGMENT, epoch, position).
    pub fn batch(
        &self,
        rows: &[usize],
        norm: &Normalization,
        aug: Option<(&AugmentConfig, u64, usize, usize)>,
    ) -> Array4<f32> {
        let side = self.side;
        let plane = side * side;
        let mut x = Array4::<f32>::zeros((rows.len(), 3, side, side));
        x.as_slice_mut()
            .expect("fresh array")
            .par_chunks_mut(3 * plane)
            .enumerate()
            .for_each(|(k, out)| {
                let src = &self.images[rows[k]];
                let px: Vec<f32> = match aug {
                    Some((cfg, seed, epoch, first)) => {
                        let mut r =
                            Rng::stream(seed, &[rng::AUGMENT, epoch as u64, (first + k) as u64]);
                        augment(src, side, cfg, &mut r)
                    }
                    None => src.iter().map(|&v| v as f32 / 255.0).collect(),
                };
                for (i, p) in px.chunks_exact(3).enumerate() {
                    for c in 0..3 {
                        out[c * plane + i] = (p[c] - norm.mean[c]) / norm.std[c];
                    }
                }
            });
        x
    }
}

/// How the classes are balanced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Balance {
    #[default]
    None,
    /// Cross-entropy class weights N / (C·n_c) (scikit-learn's "balanced").
    LossWeights,
    /// Each epoch draws N images with replacement, P(i) ∝ 1/n_{label(i)}.
    Sampler,
}

/// Images per class.
pub fn class_counts(labels: &[usize], classes: usize) -> Vec<usize> {
    let mut counts = vec![0; classes];
    labels.iter().for_each(|&l| counts[l] += 1);
    counts
}

/// N / (C·n_c) per class (0 for a class with no images).
pub fn balanced_class_weights(labels: &[usize], classes: usize) -> Vec<f32> {
    let counts = class_counts(labels, classes);
    let n = labels.len() as f32;
    counts
        .iter()
        .map(|&c| {
            if c == 0 {
                0.0
            } else {
                n / (classes as f32 * c as f32)
            }
        })
        .collect()
}

/// The order of training rows for one epoch: a seeded permutation, or with
/// [`Balance::Sampler`] a class-balanced draw with replacement.
pub fn epoch_order(
    labels: &[usize],
    classes: usize,
    balance: Balance,
    seed: u64,
    epoch: usize,
) -> Vec<usize> {
    let mut r = Rng::stream(seed, &[rng::SHUFFLE, epoch as u64]);
    if balance == Balance::Sampler {
        let counts = class_counts(labels, classes);
        let mut cumulative = Vec::with_capacity(labels.len());
        let mut total = 0f64;
        for &l in labels {
            total += 1.0 / counts[l] as f64;
            cumulative.push(total);
        }
        return (0..labels.len())
            .map(|_| {
                let u = r.uniform() as f64 * total;
                cumulative
                    .partition_point(|&c| c <= u)
                    .min(labels.len() - 1)
            })
            .collect();
    }
    let mut order: Vec<usize> = (0..labels.len()).collect();
    r.shuffle(&mut order);
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_stratified_seeded_and_disjoint() {
        let labels: Vec<usize> = (0..40).map(|i| usize::from(i % 4 == 0)).collect();
        let (t, v) = split_indices(&labels, 0.2, 3).unwrap();
        assert_eq!(t.len() + v.len(), 40);
        assert!(t.iter().all(|i| !v.contains(i)));
        assert_eq!(v.iter().filter(|&&i| labels[i] == 1).count(), 2);
        assert_eq!(
            (t.clone(), v.clone()),
            split_indices(&labels, 0.2, 3).unwrap()
        );
        assert_ne!(v, split_indices(&labels, 0.2, 4).unwrap().1);
        assert!(split_indices(&labels, 1.0, 3).is_err());
    }

    #[test]
    fn balanced_sampler_equalises_classes() {
        let labels: Vec<usize> = (0..1000).map(|i| usize::from(i % 10 == 0)).collect();
        let order = epoch_order(&labels, 2, Balance::Sampler, 1, 0);
        let ones = order.iter().filter(|&&i| labels[i] == 1).count();
        assert!((400..600).contains(&ones), "{ones}");
        let w = balanced_class_weights(&labels, 2);
        assert!((w[0] - 1000.0 / 1800.0).abs() < 1e-6 && (w[1] - 5.0).abs() < 1e-6);
        let mut perm = epoch_order(&labels, 2, Balance::None, 1, 0);
        perm.sort_unstable();
        assert_eq!(perm, (0..1000).collect::<Vec<_>>());
    }
}
