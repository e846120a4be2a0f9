//! Training on the data set readers ([`crate::dataset`]): labelled samples
//! (whole images, or regions such as Kvasir's polyp patches) as a [`Dataset`],
//! and a split that keeps every source image on one side, so validation never
//! sees a patch of an image it trained on.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use super::data::{split_indices, Dataset, LabeledImage};
use crate::dataset::Sample;
use crate::error::{Error, Result};

/// Samples that all carry a label; classes are the sorted label names unless
/// given.
#[derive(Debug, Clone)]
pub struct SampleDataset {
    samples: Vec<Sample>,
    labels: Vec<usize>,
    classes: Vec<String>,
}

impl SampleDataset {
    /// `classes`: the label names in class-index order; `None` sorts the names
    /// found (so two parts of one data set agree when both have every class).
    ///
    /// # Errors
    /// [`Error::InvalidParam`] for a sample without a label or with one outside
    /// `classes`, or for no samples.
    pub fn new(samples: Vec<Sample>, classes: Option<Vec<String>>) -> Result<SampleDataset> {
        if samples.is_empty() {
            return Err(Error::param("samples", "no labelled images to train on"));
        }
        let label_of = |s: &Sample| {
            s.label.clone().ok_or_else(|| {
                Error::param(
                    "label",
                    format!("sample `{}` has no label (use --patches for Kvasir)", s.id),
                )
            })
        };
        let names: Vec<String> = samples.iter().map(label_of).collect::<Result<_>>()?;
        let classes = classes.unwrap_or_else(|| {
            names
                .iter()
                .cloned()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect()
        });
        let labels = names
            .iter()
            .map(|n| {
                classes.iter().position(|c| c == n).ok_or_else(|| {
                    Error::param("label", format!("`{n}` is not one of {classes:?}"))
                })
            })
            .collect::<Result<_>>()?;
        Ok(SampleDataset {
            samples,
            labels,
            classes,
        })
    }
}

impl Dataset for SampleDataset {
    fn len(&self) -> usize {
        self.samples.len()
    }
    fn get(&self, i: usize) -> Result<LabeledImage> {
        let s = self
            .samples
            .get(i)
            .ok_or_else(|| Error::param("index", format!("{i} ≥ {}", self.samples.len())))?;
        Ok(LabeledImage::new(&s.load_image()?, self.labels[i]))
    }
    fn class_names(&self) -> Vec<String> {
        self.classes.clone()
    }
    fn labels(&self) -> Result<Vec<usize>> {
        Ok(self.labels.clone())
    }
}

/// Splits `sources` (whole images) into (train, val) by seed, stratified by label
/// when every source has one, with `val_fraction` of each class to validation —
/// before any patching, so the patches of one image stay together.
///
/// # Errors
/// [`Error::InvalidParam`] for a fraction outside [0, 1) or one that leaves no
/// training images.
pub fn split_sources(
    sources: Vec<Sample>,
    val_fraction: f32,
    seed: u64,
) -> Result<(Vec<Sample>, Vec<Sample>)> {
    let strata: Vec<usize> = if sources.iter().all(|s| s.label.is_some()) {
        let names: BTreeMap<&str, usize> = sources
            .iter()
            .filter_map(|s| s.label.as_deref())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .enumerate()
            .map(|(i, n)| (n, i))
            .collect();
        sources
            .iter()
            .map(|s| names[s.label.as_deref().expect("checked above")])
            .collect()
    } else {
        vec![0; sources.len()]
    };
    let (train_idx, val_idx) = split_indices(&strata, val_fraction, seed)?;
    let mut slots: Vec<Option<Sample>> = sources.into_iter().map(Some).collect();
    let mut take = |idx: &[usize]| -> Vec<Sample> {
        idx.iter()
            .map(|&i| slots[i].take().expect("each index once"))
            .collect()
    };
    let train = take(&train_idx);
    let val = take(&val_idx);
    Ok((train, val))
}

/// The source image files of `samples`, to check that two parts share none.
pub fn source_images(samples: &[Sample]) -> BTreeSet<PathBuf> {
    samples.iter().map(|s| s.image.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labelled(id: &str, label: &str) -> Sample {
        Sample {
            label: Some(label.into()),
            ..Sample::new(id, format!("{id}.png"))
        }
    }

    #[test]
    fn classes_sort_unless_given_and_unknown_labels_fail() {
        let s = vec![labelled("a", "pos"), labelled("b", "neg")];
        let d = SampleDataset::new(s.clone(), None).unwrap();
        assert_eq!(d.class_names(), ["neg", "pos"]);
        assert_eq!(d.labels().unwrap(), [1, 0]);
        let given = SampleDataset::new(s.clone(), Some(vec!["pos".into(), "neg".into()])).unwrap();
        assert_eq!(given.labels().unwrap(), [0, 1]);
        assert!(SampleDataset::new(s, Some(vec!["pos".into()])).is_err());
        assert!(SampleDataset::new(vec![Sample::new("x", "x.png")], None).is_err());
        assert!(SampleDataset::new(vec![], None).is_err());
    }

    #[test]
    fn source_split_is_stratified_seeded_and_disjoint() {
        let sources: Vec<Sample> = (0..40)
            .map(|i| labelled(&format!("i{i}"), if i < 30 { "a" } else { "b" }))
            .collect();
        let (train, val) = split_sources(sources.clone(), 0.2, 3).unwrap();
        assert_eq!((train.len(), val.len()), (32, 8));
        let count =
            |v: &[Sample], l: &str| v.iter().filter(|s| s.label.as_deref() == Some(l)).count();
        assert_eq!((count(&val, "a"), count(&val, "b")), (6, 2));
        assert!(source_images(&train).is_disjoint(&source_images(&val)));
        let (_, again) = split_sources(sources, 0.2, 3).unwrap();
        assert_eq!(again, val);
    }
}
