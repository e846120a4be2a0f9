//! Binary morphology and the paper's threshold-and-morphology chain.
//!
//! The paper (Ma, Stathaki, Lazarou, §3.5 "Morphological Processing") turns a relevance map
//! into a mask by: grayscale → histogram equalisation → threshold → label connected
//! components → remove border artefacts → dilation ("to connect fragmented areas") →
//! erosion ("to clean the boundaries") → fill small holes. It gives no structuring-element
//! sizes, no threshold rule (we use Otsu, docs/postprocessing.md §7) and no minimum object size;
//! [`MorphologyParams`] exposes all of them, and [`morphology_mask`] runs the chain.
//!
//! Note on equalise-then-Otsu: equalisation makes the histogram nearly flat, and Otsu on a flat
//! histogram splits it in the middle, so on a map whose values are all distinct the threshold
//! keeps roughly the top half of the pixels (ties, e.g. exact zeros of a positive-part map,
//! change that). With a noisy background that half is connected to the border and
//! `clear_border` can then remove everything; `equalize: false` thresholds the raw values.
//!
//! Every primitive reproduces the scikit-image 0.26.0 / SciPy 1.17 function named in its
//! docs, bit for bit on masks (`docs/postprocessing.md` §7.3–7.8; fixtures from
//! `tools/gen_morphology.py`):
//!
//! | here | reference | neighbourhood / border |
//! |---|---|---|
//! | [`label`] | `skimage.measure.label(mask, connectivity=c)` | 1 = 4-, 2 = 8-neighbours; labels in raster order of each component's first pixel |
//! | [`clear_border`] | `skimage.segmentation.clear_border(mask, buffer_size)` | 8-neighbours |
//! | [`clear_border_labels`] | the same on a label image | equal-valued 8-neighbours |
//! | [`remove_small_objects`] | `skimage.morphology.remove_small_objects(mask, max_size=min_size−1, connectivity=c)` | removes components with **fewer than** `min_size` pixels |
//! | [`binary_dilation`] | `skimage.morphology.binary_dilation(mask, footprint)` | outside = False, footprint reflected |
//! | [`binary_erosion`] | `skimage.morphology.binary_erosion(mask, footprint)` | outside = True (`mode='ignore'`): no erosion from the image border |
//! | [`binary_fill_holes`] | `scipy.ndimage.binary_fill_holes(mask)` | background 4-connected to the outside stays; the rest is filled |
//! | [`Footprint::disk`], [`Footprint::square`] | `skimage.morphology.disk(r)`, `footprint_rectangle((w, w))` | `x² + y² ≤ r²` |
//!
//! # scikit-image version notes
//! * `remove_small_objects`: up to 0.25, `min_size=m` removed sizes `< m`. 0.26 renamed it to
//!   `max_size=m`, which removes sizes `≤ m`. In 0.26.0 itself the deprecated `min_size=m`
//!   silently behaves like `max_size=m` (`≤ m`), contrary to its docs (scikit-image issue
//!   #8001, fixed by PR #8003 after 0.26.0; verified here on 0.26.0). Our `min_size` keeps the
//!   classical meaning (`< min_size` is removed), i.e. `max_size = min_size − 1` in 0.26.
//! * `binary_dilation`/`binary_erosion` are deprecated in 0.26 (removal planned for 0.28) in
//!   favour of `dilation`/`erosion`, whose default border mode is `'reflect'` and which do
//!   not reflect the footprint for dilation. The binary ones have taken `mode='ignore'` since
//!   0.23 (the same in 0.19, docs/postprocessing.md §7.6): erosion treats the outside as True.
//!   `scipy.ndimage.binary_erosion` (border 0) does erode from the border; not used here.
//! * `skimage.measure.label` defaults to full connectivity (8 in 2-D) but
//!   `remove_small_objects` defaults to 1 (4); `scipy.ndimage.label` and `binary_fill_holes`
//!   use the 4-neighbour cross.
//!
//! # Cost
//! Masks are packed 64 pixels to a word. Components come from runs found with bit scans and
//! joined by union-find (O(pixels / 64 + runs)); holes are the background components that
//! miss the border; dilation ORs word-shifted rows (O(pixels × r / 64) for `disk(r)`). The
//! chain packs once and unpacks once; on a 512×512 map it is dominated by the two float
//! histograms (equalisation, then Otsu on the equalised map). See `tests/post_morphology.rs`
//! (`bench_chain_512`) and `tools/gen_morphology.py --bench` for the timing against
//! scikit-image.

mod bits;
mod components;
mod footprint;

pub use components::{
    binary_fill_holes, clear_border, clear_border_labels, label, remove_small_objects, Labeling,
};
pub use footprint::{binary_dilation, binary_erosion, Footprint};

use ndarray::{Array2, ArrayView2};

use crate::error::{Error, Result};
use crate::post::otsu::{equalize_hist, threshold_otsu, DEFAULT_NBINS};
use bits::BitRows;
use components::{
    check_connectivity, clear_border_bits, fill_holes_bits, from_vec, remove_small_objects_bits,
    row_major,
};
use footprint::{dilate_bits, erode_bits};

// ---------------------------------------------------------------------------------------
// The paper's chain
// ---------------------------------------------------------------------------------------

/// Shape of the dilation and erosion footprints of the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FootprintShape {
    /// `disk(radius)`: `dy² + dx² ≤ radius²`.
    #[default]
    Disk,
    /// `(2·radius + 1)`-wide square.
    Square,
}

impl FootprintShape {
    fn footprint(self, radius: usize) -> Footprint {
        match self {
            FootprintShape::Disk => Footprint::disk(radius),
            FootprintShape::Square => Footprint::square(2 * radius + 1).expect("2r+1 is positive"),
        }
    }
}

/// Settings of [`morphology_mask`]. The paper names the steps but none of these values; the
/// defaults are ours, chosen for relevance maps at the classifier's input resolution
/// (224–512 px) and justified field by field.
#[derive(Debug, Clone, PartialEq)]
pub struct MorphologyParams {
    /// Histogram bins for equalisation and Otsu. Default 256, scikit-image's default.
    pub nbins: usize,
    /// Equalise the histogram before thresholding (the paper: "enhanced through histogram
    /// equalization"). Default true, as in the paper. Equalisation makes the Otsu split depend on
    /// the rank order of relevance rather than on its heavy-tailed values, which on maps with
    /// all-distinct values means roughly a median split (see the module docs).
    pub equalize: bool,
    /// Connectivity of the components for labelling, border clearing of labels and
    /// small-object removal: 1 = 4-neighbours, 2 = 8-neighbours. Default 2, the
    /// `skimage.measure.label` default; one setting so that "object" means the same thing in
    /// every step (note that `remove_small_objects` alone would default to 1).
    pub connectivity: usize,
    /// Remove the components touching the image border ("removed border artefacts"; relevance
    /// maps of ViTs often light up along the edges). Default true. `clear_border` with
    /// `buffer_size` 0 is applied to the label image of step `connectivity`.
    pub clear_border: bool,
    /// Radius of the dilation footprint ("dilation to connect fragmented areas"), pixels.
    /// Default 3: closes gaps of up to ~6 px, about a third of a 16-px ViT patch at 224 px,
    /// so fragments of one object join without merging neighbouring objects. 0 skips it.
    pub dilation_radius: usize,
    /// Radius of the erosion footprint ("erosion to clean the boundaries"), pixels. Default 3,
    /// equal to the dilation, so dilation + erosion is a morphological closing that keeps the
    /// object size. 0 skips it.
    pub erosion_radius: usize,
    /// Shape of both footprints. Default [`FootprintShape::Disk`] (isotropic; a square grows
    /// diagonal corners).
    pub footprint: FootprintShape,
    /// Fill the holes of the mask ("small holes were filled"), `scipy.ndimage.binary_fill_holes`
    /// (fills every enclosed hole, whatever its size). Default true.
    pub fill_holes: bool,
    /// Components with fewer pixels than this are removed, last. Default 64, the classical
    /// `remove_small_objects` default: an 8×8 square, a quarter of one 16-px patch, below
    /// which a region cannot come from a patch-level relevance signal. 0 or 1 keeps everything.
    pub min_object_size: usize,
}

impl Default for MorphologyParams {
    fn default() -> Self {
        MorphologyParams {
            nbins: DEFAULT_NBINS,
            equalize: true,
            connectivity: 2,
            clear_border: true,
            dilation_radius: 3,
            erosion_radius: 3,
            footprint: FootprintShape::Disk,
            fill_holes: true,
            min_object_size: 64,
        }
    }
}

impl MorphologyParams {
    /// Checks the ranges.
    ///
    /// # Errors
    /// [`Error::InvalidParam`] for `nbins` outside `2..=2^24`, a connectivity other than 1 or
    /// 2, or a radius above 4096.
    pub fn validate(&self) -> Result<()> {
        if !(2..=crate::post::otsu::MAX_NBINS).contains(&self.nbins) {
            return Err(Error::param(
                "nbins",
                format!("must be in 2..=2^24, got {}", self.nbins),
            ));
        }
        check_connectivity(self.connectivity)?;
        for (name, r) in [
            ("dilation_radius", self.dilation_radius),
            ("erosion_radius", self.erosion_radius),
        ] {
            if r > 4096 {
                return Err(Error::param(
                    name,
                    format!("must be at most 4096 px, got {r}"),
                ));
            }
        }
        Ok(())
    }
}

/// Result of [`morphology_mask`].
#[derive(Debug, Clone, PartialEq)]
pub struct MorphologyOutput {
    /// The final mask, `(rows, cols)` like the input.
    pub mask: Array2<bool>,
    /// The Otsu threshold, on the equalised map when `equalize` is set (then in `[0, 1]`).
    pub threshold: f32,
}

/// The paper's morphology chain on a one-channel relevance map `(rows, cols)`:
/// equalise (optional) → Otsu threshold (`>`) → label → clear border (optional) → dilation →
/// erosion → fill holes (optional) → remove small objects.
///
/// Identical to this scikit-image 0.26 / SciPy code (see `tools/gen_morphology.py`):
/// ```text
/// x = equalize_hist(rel, nbins) if equalize else rel
/// t = threshold_otsu(x, nbins); lab = label(x > t, connectivity=c)
/// if clear_border: lab = clear_border(lab)
/// m = binary_dilation(lab > 0, fp(dilation_radius)); m = binary_erosion(m, fp(erosion_radius))
/// if fill_holes: m = ndimage.binary_fill_holes(m)
/// m = remove_small_objects(m, max_size=min_object_size - 1, connectivity=c)
/// ```
/// A constant map gives an empty mask.
///
/// # Errors
/// [`Error::InvalidParam`] for invalid parameters, an empty map, a NaN or infinite value, or a
/// value range too narrow for `nbins` distinct f32 bins (NumPy refuses those too).
pub fn morphology_mask(
    relevance: ArrayView2<f32>,
    params: &MorphologyParams,
) -> Result<MorphologyOutput> {
    params.validate()?;
    let equalized;
    let x = if params.equalize {
        equalized = equalize_hist(relevance, params.nbins)?;
        equalized.view()
    } else {
        relevance
    };
    let threshold = threshold_otsu(x, params.nbins)?;
    let eight = check_connectivity(params.connectivity)?;
    // Everything below works on the packed mask; it is unpacked once at the end.
    let (rows, cols) = x.dim();
    let mut bits = BitRows::from_greater(&row_major(&x), rows, cols, threshold);
    if params.clear_border {
        // Labels of `connectivity`; each is connected, so clear_border on the label image drops
        // exactly the labels seen on the border.
        bits = clear_border_bits(&bits, eight, 0);
    }
    if params.dilation_radius > 0 {
        bits = dilate_bits(&bits, &params.footprint.footprint(params.dilation_radius));
    }
    if params.erosion_radius > 0 {
        bits = erode_bits(&bits, &params.footprint.footprint(params.erosion_radius));
    }
    if params.fill_holes {
        bits = fill_holes_bits(&bits);
    }
    bits = remove_small_objects_bits(&bits, params.min_object_size, eight);
    let mask = from_vec((rows, cols), bits.to_bools());
    Ok(MorphologyOutput { mask, threshold })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_defaults_and_errors() {
        let p = MorphologyParams::default();
        p.validate().unwrap();
        // Background 0; a disc of radius 10 (317 px) kept; a 12×12 block on the corner removed
        // as a border artefact; a 3×3 speck (9 < 64 px) removed as small.
        let rel = Array2::from_shape_fn((64, 64), |(i, j)| {
            let d2 = (i as f32 - 32.0).powi(2) + (j as f32 - 32.0).powi(2);
            let on =
                d2 <= 100.0 || (i < 12 && j < 12) || ((5..8).contains(&i) && (40..43).contains(&j));
            if on {
                1.0
            } else {
                0.0
            }
        });
        let out = morphology_mask(rel.view(), &p).unwrap();
        assert!(out.mask[[32, 32]] && !out.mask[[5, 5]] && !out.mask[[6, 41]]);
        // Closing a digital disc can only add pixels at its digital concavities.
        let n = out.mask.iter().filter(|&&v| v).count();
        assert!((317..=330).contains(&n), "{n}");
        for ((i, j), &v) in out.mask.indexed_iter() {
            assert!(!v || (i as f32 - 32.0).powi(2) + (j as f32 - 32.0).powi(2) <= 121.0);
        }
        let constant = Array2::from_elem((8, 8), 0.3f32);
        assert!(!morphology_mask(constant.view(), &p)
            .unwrap()
            .mask
            .iter()
            .any(|&v| v));
        assert!(morphology_mask(Array2::<f32>::zeros((0, 8)).view(), &p).is_err());
        let mut nan = rel.clone();
        nan[[3, 3]] = f32::NAN;
        assert!(morphology_mask(nan.view(), &p).is_err());
        for bad in [
            MorphologyParams {
                nbins: 1,
                ..p.clone()
            },
            MorphologyParams {
                connectivity: 3,
                ..p.clone()
            },
            MorphologyParams {
                dilation_radius: 5000,
                ..p.clone()
            },
        ] {
            assert!(morphology_mask(rel.view(), &bad).is_err());
        }
    }
}
