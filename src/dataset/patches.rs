//! The paper's Kvasir-SEG classification set (§4.1): "we split each image into
//! smaller patches and labeled them as positive or negative based on the presence
//! of polyp pixels in the corresponding mask", balanced.
//!
//! The paper gives neither the patch size nor the threshold, so here they are
//! parameters ([`PatchConfig`]): patches of `size_px` laid out by the tiling rule of
//! [`super::tiles`] (covering the image, evenly overlapping, no padding); a patch is
//! `positive` when at least `min_positive_fraction` of its pixels are polyp,
//! `negative` when at most `max_negative_fraction` are, and dropped in between
//! (ambiguous). Balancing keeps the same number of each class over the whole set,
//! chosen by a Fisher–Yates shuffle seeded with `seed` (SplitMix64); the kept
//! patches are returned in source order, so the result depends only on the inputs
//! and the config.

use ndarray::s;

use crate::error::{Error, Result};
use crate::image::CropBox;

use super::tiles::tile_origins;
use super::Sample;

/// How patches are cut and labelled.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchConfig {
    /// Patch side in pixels (default 224, the network's input).
    pub size_px: u32,
    /// Positive when the polyp fraction is at least this (default 0.05).
    pub min_positive_fraction: f64,
    /// Negative when the polyp fraction is at most this (default 0: no polyp pixel).
    pub max_negative_fraction: f64,
    /// Keep as many negatives as positives (default true).
    pub balance: bool,
    pub seed: u64,
}

impl Default for PatchConfig {
    fn default() -> Self {
        PatchConfig {
            size_px: 224,
            min_positive_fraction: 0.05,
            max_negative_fraction: 0.0,
            balance: true,
            seed: 0,
        }
    }
}

impl PatchConfig {
    /// # Errors
    /// [`Error::InvalidParam`] for a zero size or thresholds that overlap.
    pub fn validate(&self) -> Result<()> {
        if self.size_px == 0 {
            return Err(Error::param("patch size", "must be at least 1 px"));
        }
        if !(0.0..=1.0).contains(&self.max_negative_fraction)
            || !(0.0..=1.0).contains(&self.min_positive_fraction)
            || self.max_negative_fraction >= self.min_positive_fraction
        {
            return Err(Error::param(
                "patch fractions",
                format!(
                    "need 0 <= max_negative ({}) < min_positive ({}) <= 1",
                    self.max_negative_fraction, self.min_positive_fraction
                ),
            ));
        }
        Ok(())
    }
}

/// Labelled patches of every sample that has a mask. Patch ids are
/// `<id>_r<top>_c<left>`, labels `positive` / `negative`; each patch keeps its
/// source's image and mask paths with its region set.
///
/// # Errors
/// A bad config; a sample without a mask; mask decoding errors.
pub fn labelled_patches(samples: &[Sample], cfg: &PatchConfig) -> Result<Vec<Sample>> {
    cfg.validate()?;
    let (mut pos, mut neg) = (Vec::new(), Vec::new());
    for s in samples {
        let mask = s.load_mask()?.ok_or_else(|| {
            Error::param(
                "samples",
                format!("`{}` has no mask to label patches with", s.id),
            )
        })?;
        let (h, w) = (mask.nrows() as u32, mask.ncols() as u32);
        let (ph, pw) = (cfg.size_px.min(h), cfg.size_px.min(w));
        let (oy, ox) = s.region.map_or((0, 0), |r| (r.top, r.left));
        for top in tile_origins(h, cfg.size_px) {
            for left in tile_origins(w, cfg.size_px) {
                let window = mask.slice(s![
                    top as usize..(top + ph) as usize,
                    left as usize..(left + pw) as usize
                ]);
                let fraction = window.iter().filter(|m| **m).count() as f64 / window.len() as f64;
                let label = if fraction >= cfg.min_positive_fraction {
                    "positive"
                } else if fraction <= cfg.max_negative_fraction {
                    "negative"
                } else {
                    continue;
                };
                let patch = Sample {
                    id: format!("{}_r{top}_c{left}", s.id),
                    label: Some(label.to_string()),
                    region: Some(CropBox {
                        left: ox + left,
                        top: oy + top,
                        width: pw,
                        height: ph,
                    }),
                    ..s.clone()
                };
                let order = pos.len() + neg.len();
                if label == "positive" {
                    pos.push((order, patch));
                } else {
                    neg.push((order, patch));
                }
            }
        }
    }
    if cfg.balance {
        let n = pos.len().min(neg.len());
        shuffle(&mut pos, cfg.seed);
        shuffle(&mut neg, cfg.seed ^ 0x6E65_6761_7469_7665);
        pos.truncate(n);
        neg.truncate(n);
    }
    let mut all: Vec<_> = pos.into_iter().chain(neg).collect();
    all.sort_by_key(|(order, _)| *order);
    Ok(all.into_iter().map(|(_, p)| p).collect())
}

/// Fisher–Yates with `next mod n` draws of the SplitMix64 stream `seed`.
fn shuffle<T>(v: &mut [T], seed: u64) {
    crate::rng::Rng::new(seed).shuffle_mod(v);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shuffle_is_a_seeded_permutation() {
        let mut a: Vec<u32> = (0..50).collect();
        let mut b = a.clone();
        shuffle(&mut a, 3);
        shuffle(&mut b, 3);
        assert_eq!(a, b);
        let mut c: Vec<u32> = (0..50).collect();
        shuffle(&mut c, 4);
        assert_ne!(a, c);
        a.sort();
        assert_eq!(a, (0..50).collect::<Vec<_>>());
    }
}
