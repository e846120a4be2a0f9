//! MaskCut (CutLER, docs/postprocessing.md §3): up to N objects from repeated TokenCut-style cuts of
//! the patch-key graph, each cut run on the features left after zeroing the patches
//! of the earlier masks; then per mask DenseCRF, hole filling and an IoU check.
//!
//! Faithful details: τ = 0.15, ε = 1e-5; iteration 1 builds the graph in f32 and
//! later ones in f64 (the reference's dtype promotion); the corner rule
//! (≥ 3 of the 4 grid corners in the foreground, or the seed outside it, flips the
//! cut); a candidate is dropped when it overlaps the previous mask with IoU > 0.5
//! or covers ≤ 1% of the grid; full-size masks have the earlier masks subtracted.
//! The eigenvector's sign follows LAPACK (`dsygvx`), which the corner rule depends on.
//! As in the reference, painted patches have identical all-ε rows, so their
//! eigenvector entries tie; which painted region holds `argmax v` is then decided
//! by rounding, in CutLER as here.

use ndarray::{Array2, ArrayView2, ArrayView3};

use super::crf::{refine_mask_on, CrfParams};
use super::morphology::binary_fill_holes;
use super::ncut::{binary_affinity, binary_affinity_f64, fiedler_dense, seed_component};
use crate::backend::CrfDevice;
use crate::error::{Error, Result};
use crate::image::grid::upsample_mask;

/// MaskCut settings (CutLER's README run: N 3, τ 0.15).
#[derive(Debug, Clone, PartialEq)]
pub struct MaskCutParams {
    /// Objects to extract.
    pub n_masks: usize,
    pub tau: f32,
    pub eps: f32,
    /// Per-mask DenseCRF + fill holes + IoU ≥ 0.5 check; `None` skips it.
    pub crf: Option<CrfParams>,
}

impl Default for MaskCutParams {
    fn default() -> Self {
        MaskCutParams {
            n_masks: 3,
            tau: 0.15,
            eps: 1e-5,
            crf: Some(CrfParams::default()),
        }
    }
}

/// IoU as TokenCut/CutLER's `metric.IoU`: NaN for an empty union.
fn iou(a: &Array2<bool>, b: &Array2<bool>) -> f64 {
    let inter = a.iter().zip(b.iter()).filter(|(x, y)| **x && **y).count();
    let union = a.iter().zip(b.iter()).filter(|(x, y)| **x || **y).count();
    if union == 0 {
        f64::NAN
    } else {
        inter as f64 / union as f64
    }
}

/// Patch-grid masks from `features` (N = rows·cols, D), before upsampling.
///
/// # Errors
/// Shape mismatches; eigensolver errors.
pub fn maskcut_patch_masks(
    features: ArrayView2<f32>,
    grid: (usize, usize),
    params: &MaskCutParams,
) -> Result<Vec<Array2<bool>>> {
    let (rows, cols) = grid;
    let (n, d) = features.dim();
    crate::limits::check("tokencut_nodes", n as u64)?;
    if rows.checked_mul(cols) != Some(n) {
        return Err(Error::shape(
            "features (rows·cols, D)",
            &[rows * cols, d],
            &[n, d],
        ));
    }
    if params.n_masks == 0 {
        return Err(Error::param("n_masks", "must be at least 1"));
    }
    let corners = [(0, 0), (0, cols - 1), (rows - 1, 0), (rows - 1, cols - 1)];
    let mut painting = Array2::from_elem(grid, false);
    let mut current = Array2::from_elem(grid, false);
    let mut masks = Vec::with_capacity(params.n_masks);
    for i in 0..params.n_masks {
        let w = if i == 0 {
            binary_affinity(features, params.tau, params.eps)?
        } else {
            painting.zip_mut_with(&current, |p, c| *p = *p || *c);
            // Painted patches get zero features; the reference computes in f64 from here on.
            let f64s = Array2::from_shape_fn((n, d), |(k, j)| {
                if painting[[k / cols, k % cols]] {
                    0.0
                } else {
                    features[[k, j]] as f64
                }
            });
            binary_affinity_f64(f64s.view(), params.tau as f64, params.eps as f64)?
        };
        let fiedler = fiedler_dense(w.view())?;
        let mut v = fiedler.vector.to_vec();
        let mean = v.iter().sum::<f64>() / n as f64;
        let mut bip = Array2::from_shape_fn(grid, |(r, c)| v[r * cols + c] > mean);
        let seed0 = argmax_abs(&v);
        let corner_count = corners.iter().filter(|&&p| bip[p]).count();
        let reverse = corner_count >= 3 || !bip[[seed0 / cols, seed0 % cols]];
        if reverse {
            v.iter_mut().for_each(|x| *x = -*x);
            bip.mapv_inplace(|b| !b);
        }
        let seed = argmax(&v);
        let mut pseudo = seed_component(bip.view(), (seed / cols, seed % cols));
        if i >= 1 {
            let ratio = pseudo.iter().filter(|m| **m).count() as f64 / n as f64;
            if iou(&current, &pseudo) > 0.5 || ratio <= 0.01 {
                pseudo.fill(false);
            }
        }
        current = pseudo.clone();
        masks.push(pseudo);
    }
    Ok(masks)
}

fn argmax_abs(v: &[f64]) -> usize {
    (0..v.len()).fold(
        0,
        |best, i| if v[i].abs() > v[best].abs() { i } else { best },
    )
}

fn argmax(v: &[f64]) -> usize {
    (0..v.len()).fold(0, |best, i| if v[i] > v[best] { i } else { best })
}

/// MaskCut's objects at pixel resolution.
#[derive(Debug, Clone)]
pub struct MaskCutObjects {
    /// Each object's patch mask upsampled, minus the earlier objects (before CRF).
    pub raw: Vec<Array2<bool>>,
    /// After the per-mask CRF, hole filling and IoU check (equal to `raw` without CRF).
    pub kept: Vec<Array2<bool>>,
}

/// MaskCut on an image: patch masks upsampled (nearest) to the pixels' size, the
/// earlier masks subtracted, then the per-mask CRF check.
///
/// # Errors
/// As [`maskcut_patch_masks`], plus CRF errors; the grid must divide the image.
pub fn maskcut(
    features: ArrayView2<f32>,
    grid: (usize, usize),
    pixels: ArrayView3<u8>,
    params: &MaskCutParams,
) -> Result<MaskCutObjects> {
    maskcut_on(None, features, grid, pixels, params)
}

/// [`maskcut`] with the per-mask CRF on `crf_device` (see `crf::refine_mask_on`), on
/// the CPU for `None`.
///
/// # Errors
/// As [`maskcut`].
pub fn maskcut_on(
    crf_device: Option<&CrfDevice>,
    features: ArrayView2<f32>,
    grid: (usize, usize),
    pixels: ArrayView3<u8>,
    params: &MaskCutParams,
) -> Result<MaskCutObjects> {
    let (h, w, _) = pixels.dim();
    let patch_masks = maskcut_patch_masks(features, grid, params)?;
    let mut taken = Array2::from_elem((h, w), false);
    let mut raw = Vec::with_capacity(patch_masks.len());
    let mut kept = Vec::with_capacity(patch_masks.len());
    for pm in patch_masks {
        let full = upsample_mask(pm.view(), h, w);
        let own = Array2::from_shape_fn((h, w), |p| full[p] && !taken[p]);
        taken.zip_mut_with(&own, |t, o| *t = *t || *o);
        let refined = match &params.crf {
            Some(p) => {
                let refined = refine_mask_on(crf_device, pixels, own.view(), p)?;
                let filled = binary_fill_holes(refined.view());
                // Dropped when the CRF moved it too far (NaN — empty union — is kept, empty).
                if iou(&own, &filled) < 0.5 {
                    Array2::from_elem((h, w), false)
                } else {
                    filled
                }
            }
            None => own.clone(),
        };
        raw.push(own);
        kept.push(refined);
    }
    Ok(MaskCutObjects { raw, kept })
}

/// The union of MaskCut's masks: the foreground used when comparing a class-agnostic
/// multi-object output with one foreground ground truth.
pub fn union(masks: &[Array2<bool>], dim: (usize, usize)) -> Array2<bool> {
    let mut u = Array2::from_elem(dim, false);
    for m in masks {
        u.zip_mut_with(m, |a, b| *a = *a || *b);
    }
    u
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_objects_come_out_as_two_masks() {
        // 7×7 grid: a 2×2 object at the top left and a separate 2×3 one at the bottom
        // right, each with its own feature direction, background a third one.
        let grid = (7, 7);
        let feats = Array2::from_shape_fn((49, 6), |(k, j)| {
            let (r, c) = (k / 7, k % 7);
            let cls = if (1..3).contains(&r) && (1..3).contains(&c) {
                0
            } else if (4..6).contains(&r) && (3..6).contains(&c) {
                1
            } else {
                2
            };
            if j / 2 == cls {
                1.0
            } else {
                0.01 * ((k + j) % 3) as f32
            }
        });
        let params = MaskCutParams {
            n_masks: 3,
            crf: None,
            ..Default::default()
        };
        let masks = maskcut_patch_masks(feats.view(), grid, &params).unwrap();
        let sizes: Vec<usize> = masks
            .iter()
            .map(|m| m.iter().filter(|b| **b).count())
            .collect();
        assert!(sizes.contains(&4) && sizes.contains(&6), "{sizes:?}");
        assert!(maskcut_patch_masks(feats.view(), (6, 7), &params).is_err());
    }
}
