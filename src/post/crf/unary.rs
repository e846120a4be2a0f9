//! Unary energies, built the way the TokenCut/MaskCut DenseCRF wrapper builds them
//! (CutLER `maskcut/crf.py` = TokenCut_video `crf.py`; docs/postprocessing.md §4):
//!
//! 1. the binary mask `m` becomes two "logits" `[1 − m, m]` (float64; channel 0 is the
//!    background);
//! 2. they are resized bilinearly (PyTorch `F.interpolate(mode="bilinear")`,
//!    `align_corners=False`) to the image size (the identity when the mask already has
//!    that size, as in both callers);
//! 3. softmax over the two channels (float64). A mask pixel therefore gets
//!    `p = (0.26894142, 0.73105858)`, not a hard probability;
//! 4. pydensecrf's `unary_from_softmax`: clip to `[1e-5, 1]`, `−log`, cast to f32.
//!
//! On an image-sized mask the unary is `0.3132617` for the mask's own label and
//! `1.3132616` for the other.
//!
//! A label image (any number of labels) instead goes through pydensecrf's
//! `unary_from_labels` ([`unary_from_labels`]).

use ndarray::{Array3, ArrayView2, ArrayView3};

use crate::error::{Error, Result};

/// pydensecrf `unary_from_softmax`'s default clip.
pub const SOFTMAX_CLIP: f64 = 1e-5;

/// pydensecrf's `unary_from_softmax(probs, clip)`: `−log(clip(p, clip, 1))` in f64, cast
/// to f32. `probs`: `(labels, H, W)`.
///
/// # Errors
/// [`Error::InvalidParam`] for NaN probabilities, a clip outside `(0, 1]`, or no labels.
pub fn unary_from_softmax(probs: ArrayView3<f64>, clip: f64) -> Result<Array3<f32>> {
    if !(clip > 0.0 && clip <= 1.0) {
        return Err(Error::param(
            "clip",
            format!("must be in (0, 1], got {clip}"),
        ));
    }
    if probs.dim().0 == 0 {
        return Err(Error::param("probs", "needs at least one label"));
    }
    if probs.iter().any(|p| p.is_nan()) {
        return Err(Error::param("probs", "contains NaN"));
    }
    Ok(probs.mapv(|p| -(p.clamp(clip, 1.0).ln()) as f32))
}

/// The unary of `mask` for an image of `height × width`, as the TokenCut/MaskCut CRF
/// wrapper builds it (see the module docs). Returns `(2, height, width)`, label 0 =
/// background, label 1 = foreground.
///
/// # Errors
/// [`Error::InvalidParam`] for an empty mask or target size.
pub fn unary_from_mask(mask: ArrayView2<bool>, height: usize, width: usize) -> Result<Array3<f32>> {
    let (mh, mw) = mask.dim();
    if mh == 0 || mw == 0 {
        return Err(Error::param("mask", format!("empty mask ({mh}×{mw})")));
    }
    if height == 0 || width == 0 {
        return Err(Error::param(
            "image",
            format!("empty image ({height}×{width})"),
        ));
    }
    // torch softmax over the 2 channels, exp(v − max) / Σ, then unary_from_softmax.
    let unary_of = |b: f64, f: f64| {
        let mx = if f > b { f } else { b };
        let (eb, ef) = ((b - mx).exp(), (f - mx).exp());
        let s = eb + ef;
        let u = |p: f64| -(p.clamp(SOFTMAX_CLIP, 1.0).ln()) as f32;
        (u(eb / s), u(ef / s))
    };
    let mut unary = Array3::<f32>::zeros((2, height, width));
    if (mh, mw) == (height, width) {
        // Only two distinct pixels: compute them once.
        let (u_bg, u_fg) = (unary_of(1.0, 0.0), unary_of(0.0, 1.0));
        for ((y, x), &m) in mask.indexed_iter() {
            let (b, f) = if m { u_fg } else { u_bg };
            unary[[0, y, x]] = b;
            unary[[1, y, x]] = f;
        }
    } else {
        let fg = resize_bilinear(
            mask.mapv(|m| if m { 1.0f64 } else { 0.0 }).view(),
            height,
            width,
        );
        let bg = resize_bilinear(
            mask.mapv(|m| if m { 0.0f64 } else { 1.0 }).view(),
            height,
            width,
        );
        for ((y, x), &f) in fg.indexed_iter() {
            let (b, f) = unary_of(bg[[y, x]], f);
            unary[[0, y, x]] = b;
            unary[[1, y, x]] = f;
        }
    }
    Ok(unary)
}

/// Most labels [`unary_from_labels`] accepts: an 8-bit label image names at most 256.
pub const MAX_LABELS: usize = 256;

/// pydensecrf's `unary_from_labels(labels, n_labels, gt_prob, zero_unsure=False)`: every
/// pixel gets `−ln(gt_prob)` for its own label and `−ln((1 − gt_prob)/(n_labels − 1))`
/// for each other one, both computed in f64 and stored as f32. `labels` `(H, W)` holds
/// values `0..n_labels`; returns `(n_labels, H, W)`.
///
/// # Errors
/// [`Error::InvalidParam`] for `n_labels` outside `2..=`[`MAX_LABELS`], `gt_prob` outside
/// `(0, 1)`, an empty label image or a label `≥ n_labels`.
pub fn unary_from_labels(
    labels: ArrayView2<u8>,
    n_labels: usize,
    gt_prob: f64,
) -> Result<Array3<f32>> {
    if !(2..=MAX_LABELS).contains(&n_labels) {
        return Err(Error::param(
            "labels",
            format!("the label count must be 2..={MAX_LABELS}, got {n_labels}"),
        ));
    }
    if !(gt_prob > 0.0 && gt_prob < 1.0) {
        return Err(Error::param(
            "gt_prob",
            format!("must be in (0, 1), got {gt_prob}"),
        ));
    }
    let (h, w) = labels.dim();
    if h == 0 || w == 0 {
        return Err(Error::param(
            "labels",
            format!("empty label image ({h}×{w})"),
        ));
    }
    if let Some(((y, x), &l)) = labels.indexed_iter().find(|(_, &l)| l as usize >= n_labels) {
        return Err(Error::param(
            "labels",
            format!(
                "pixel (x {x}, y {y}) has label {l}, but there are only {n_labels} labels (0..={})",
                n_labels - 1
            ),
        ));
    }
    let own = -gt_prob.ln() as f32;
    let other = -((1.0 - gt_prob) / (n_labels - 1) as f64).ln() as f32;
    let mut unary = Array3::<f32>::from_elem((n_labels, h, w), other);
    for ((y, x), &l) in labels.indexed_iter() {
        unary[[l as usize, y, x]] = own;
    }
    Ok(unary)
}

/// Torch's source indices and weights for one axis of a bilinear resize with
/// `align_corners=False` (f64 scale `in/out`, negative source positions clamped to 0).
fn linear_taps(n_in: usize, n_out: usize) -> Vec<(usize, usize, f64, f64)> {
    let scale = n_in as f64 / n_out as f64;
    (0..n_out)
        .map(|i| {
            let src = (scale * (i as f64 + 0.5) - 0.5).max(0.0);
            let i0 = (src.floor() as usize).min(n_in - 1);
            let l1 = (src - i0 as f64).clamp(0.0, 1.0);
            let i1 = if i0 < n_in - 1 { i0 + 1 } else { i0 };
            (i0, i1, 1.0 - l1, l1)
        })
        .collect()
}

/// PyTorch `F.interpolate(x, size, mode="bilinear", align_corners=False)` on one f64
/// channel: `h0·(w0·x00 + w1·x01) + h1·(w0·x10 + w1·x11)`.
fn resize_bilinear(x: ArrayView2<f64>, height: usize, width: usize) -> ndarray::Array2<f64> {
    let (ih, iw) = x.dim();
    let ty = linear_taps(ih, height);
    let tx = linear_taps(iw, width);
    ndarray::Array2::from_shape_fn((height, width), |(y, xo)| {
        let (y0, y1, h0, h1) = ty[y];
        let (x0, x1, w0, w1) = tx[xo];
        let top = w0 * x[[y0, x0]] + w1 * x[[y0, x1]];
        let bottom = w0 * x[[y1, x0]] + w1 * x[[y1, x1]];
        h0 * top + h1 * bottom
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    /// −log(σ(1)) = log(1 + e⁻¹) and −log(σ(−1)) = log(1 + e), rounded to f32 (docs/postprocessing.md §4).
    #[test]
    fn mask_unary_constants() {
        let u = unary_from_mask(array![[true, false]].view(), 1, 2).unwrap();
        assert_eq!(u[[1, 0, 0]], (1.0f64 + (-1.0f64).exp()).ln() as f32);
        assert_eq!(u[[0, 0, 0]], (1.0f64 + 1.0f64.exp()).ln() as f32);
        assert_eq!(u[[1, 0, 0]], 0.3132617);
        assert_eq!(u[[0, 0, 0]], 1.3132616);
        assert_eq!((u[[0, 0, 1]], u[[1, 0, 1]]), (u[[1, 0, 0]], u[[0, 0, 0]]));
    }

    /// pydensecrf's `unary_from_labels(…, zero_unsure=False)` with gt_prob 0.5 and 5
    /// labels: −ln 0.5 for the own label, −ln(0.5/4) = ln 8 for the others.
    #[test]
    fn label_unary_values_and_errors() {
        let u = unary_from_labels(array![[0u8, 4], [2, 2]].view(), 5, 0.5).unwrap();
        assert_eq!(u.dim(), (5, 2, 2));
        let (own, other) = (2f64.ln() as f32, 8f64.ln() as f32);
        assert_eq!((u[[0, 0, 0]], u[[4, 0, 1]], u[[2, 1, 0]]), (own, own, own));
        assert_eq!(
            (u[[1, 0, 0]], u[[0, 0, 1]], u[[3, 1, 1]]),
            (other, other, other)
        );
        let l = array![[0u8, 1]];
        for (k, p) in [(1, 0.5), (257, 0.5), (2, 0.0), (2, 1.0), (2, f64::NAN)] {
            assert!(unary_from_labels(l.view(), k, p).is_err(), "{k} {p}");
        }
        let e = unary_from_labels(array![[0u8, 3]].view(), 3, 0.5).unwrap_err();
        assert!(e.to_string().contains("label 3"), "{e}");
    }

    #[test]
    fn bilinear_identity_and_constant() {
        let x = array![[0.0, 1.0, 0.5], [2.0, -1.0, 3.0]];
        assert_eq!(resize_bilinear(x.view(), 2, 3), x);
        let c = ndarray::Array2::from_elem((3, 5), 0.25);
        assert!(resize_bilinear(c.view(), 7, 4)
            .iter()
            .all(|&v| (v - 0.25).abs() < 1e-15));
    }
}
