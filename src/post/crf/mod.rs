//! Fully connected CRF (DenseCRF) with Gaussian edge potentials, faithful to pydensecrf
//! (Krähenbühl's densecrf, docs/postprocessing.md §4–§5), on the CPU and multi-threaded.
//!
//! The energy of a labelling `x` of the pixels of an image is
//!
//! ```text
//! E(x) = Σ_i U_i(x_i) + Σ_{i<j} [x_i ≠ x_j] · ( w_pos · exp(−|p_i − p_j|² / 2 sxy_pos²)
//!                                             + w_bi  · exp(−|p_i − p_j|² / 2 sxy_bi² − |I_i − I_j|² / 2 srgb²) )
//! ```
//!
//! (Potts compatibilities; positions `p` in pixels, intensities `I` over all image
//! channels). [`dense_crf`] runs `n_iterations` of mean-field inference (densecrf's
//! `inference`) with both kernels evaluated by permutohedral-lattice filtering and
//! symmetric normalisation, and returns the marginals and the MAP labelling.
//! [`refine_mask`] is the DenseCRF step of TokenCut/MaskCut (CutLER `maskcut/crf.py`):
//! unary from a binary mask ([`unary_from_mask`]), the CRF with the defaults of
//! [`CrfParams`], foreground = MAP label 1.
//!
//! Results equal pydensecrf's x86-64 build bit for bit in the cases covered by
//! `tests/crf.rs` (see `tests/fixtures/crf/README.md`). Beyond pydensecrf, any number of
//! labels and any number of image channels (grayscale, RGB, RGBA, multispectral) are
//! accepted; with `C ≠ 3` channels the bilateral features are `(x, y, c_0 … c_{C−1})`
//! scaled as for RGB, which is what pydensecrf computes when given those features through
//! `addPairwiseEnergy`.
//!
//! ```
//! use explainseg::post::crf::{refine_mask, CrfParams};
//! use ndarray::{Array2, Array3};
//!
//! # fn main() -> explainseg::Result<()> {
//! // A bright square on a dark background, and a coarse mask that overshoots it.
//! let image = Array3::from_shape_fn((40, 40, 3), |(y, x, _)| if (10..30).contains(&y) && (10..30).contains(&x) { 220u8 } else { 30 });
//! let mask = Array2::from_shape_fn((40, 40), |(y, x)| (8..32).contains(&y) && (8..32).contains(&x));
//! let refined = refine_mask(image.view(), mask.view(), &CrfParams::default())?;
//! assert!(refined[[20, 20]] && !refined[[0, 0]]);
//! # Ok(())
//! # }
//! ```

#[cfg(feature = "cuda")]
mod device;
mod lattice;
mod mean_field;
mod unary;

use ndarray::{Array2, Array3, ArrayView2, ArrayView3};
use rayon::prelude::*;

pub use unary::{unary_from_labels, unary_from_mask, unary_from_softmax, MAX_LABELS, SOFTMAX_CLIP};

use crate::backend::CrfDevice;
use crate::error::{Error, Result};
use mean_field::PairwiseKernel;

/// DenseCRF settings. The defaults are the TokenCut/MaskCut constants (CutLER
/// `maskcut/crf.py`: `MAX_ITER = 10`, `POS_XY_STD = 3`, `POS_W = 7`, `Bi_XY_STD = 50`,
/// `Bi_RGB_STD = 5`, `Bi_W = 10`).
#[derive(Debug, Clone, PartialEq)]
pub struct CrfParams {
    /// Mean-field iterations (pydensecrf `inference(n)`); default 10. 0 returns `softmax(−U)`.
    pub n_iterations: usize,
    /// Standard deviation of the positional (smoothness) Gaussian kernel, in pixels
    /// (`addPairwiseGaussian(sxy=…)`); default 3.
    pub pos_sxy_px: f32,
    /// Potts weight of the positional kernel (pydensecrf `compat`); default 7. 0 drops the kernel.
    pub pos_weight: f32,
    /// Spatial standard deviation of the bilateral (appearance) kernel, in pixels
    /// (`addPairwiseBilateral(sxy=…)`); default 50.
    pub bi_sxy_px: f32,
    /// Intensity standard deviation of the bilateral kernel, in 8-bit levels, the same
    /// for every channel (`srgb`); default 5.
    pub bi_srgb: f32,
    /// Potts weight of the bilateral kernel (pydensecrf `compat`); default 10. 0 drops the kernel.
    pub bi_weight: f32,
}

impl Default for CrfParams {
    fn default() -> Self {
        CrfParams {
            n_iterations: 10,
            pos_sxy_px: 3.0,
            pos_weight: 7.0,
            bi_sxy_px: 50.0,
            bi_srgb: 5.0,
            bi_weight: 10.0,
        }
    }
}

impl CrfParams {
    /// The same kernels on an image resized by `scale`: the spatial standard
    /// deviations (given in the original image's pixels, as TokenCut and CutLER run
    /// DenseCRF at full resolution) are multiplied by it. Without this, a 50-px
    /// bilateral kernel on a 160-px network input would span a third of the image
    /// and pull the mask toward the majority label.
    pub fn at_scale(&self, scale: f32) -> CrfParams {
        CrfParams {
            pos_sxy_px: self.pos_sxy_px * scale,
            bi_sxy_px: self.bi_sxy_px * scale,
            ..self.clone()
        }
    }

    /// # Errors
    /// [`Error::InvalidParam`] for a standard deviation that is not finite and positive,
    /// or a weight that is not finite.
    pub fn validate(&self) -> Result<()> {
        crate::limits::check("crf_iterations", self.n_iterations as u64)?;
        for (name, v) in [
            ("pos_sxy_px", self.pos_sxy_px),
            ("bi_sxy_px", self.bi_sxy_px),
            ("bi_srgb", self.bi_srgb),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(Error::param(
                    name,
                    format!("must be finite and > 0, got {v}"),
                ));
            }
        }
        for (name, v) in [
            ("pos_weight", self.pos_weight),
            ("bi_weight", self.bi_weight),
        ] {
            if !v.is_finite() {
                return Err(Error::param(name, format!("must be finite, got {v}")));
            }
        }
        Ok(())
    }
}

/// What [`dense_crf`] returns.
#[derive(Debug, Clone, PartialEq)]
pub struct CrfOutput {
    /// Marginals `Q`: `(labels, H, W)`, each pixel's column sums to 1 (pydensecrf's
    /// `inference` output reshaped).
    pub probs: Array3<f32>,
    /// MAP labelling `(H, W)`: argmax of `probs` over labels, ties to the lower label.
    pub labels: Array2<u32>,
}

/// Mean-field DenseCRF inference on `image` `(H, W, C)` (any `C ≥ 1`, u8) with unary
/// energies `unary` `(labels, H, W)` (−log probabilities, as pydensecrf's
/// `setUnaryEnergy`), a positional Gaussian and a bilateral kernel, both Potts.
///
/// Equivalent to pydensecrf's `DenseCRF2D(W, H, labels)`, `setUnaryEnergy(U)`,
/// `addPairwiseGaussian(sxy, compat)`, `addPairwiseBilateral(sxy, srgb, image, compat)`,
/// `inference(n)`.
///
/// # Errors
/// [`Error::InvalidParam`] for an empty image, no labels, non-finite unaries or invalid
/// parameters; [`Error::Shape`] when the unary's spatial size differs from the image's.
pub fn dense_crf(
    image: ArrayView3<u8>,
    unary: ArrayView3<f32>,
    params: &CrfParams,
) -> Result<CrfOutput> {
    dense_crf_on(None, image, unary, params)
}

/// [`dense_crf`] on `device` (the one of `backend::crf_device_for`, or an engine's
/// `Engine::crf_device`), or on the CPU for `None`. The device runs the CPU's twin
/// (docs/postprocessing.md, "DenseCRF on the GPU"): the same labels on ≥ 99.9 % of pixels.
///
/// # Errors
/// As [`dense_crf`]; on a device also [`Error::InvalidParam`] for lattices it cannot
/// build (more than 6 channels, keys beyond 64 bits) and device errors.
pub fn dense_crf_on(
    device: Option<&CrfDevice>,
    image: ArrayView3<u8>,
    unary: ArrayView3<f32>,
    params: &CrfParams,
) -> Result<CrfOutput> {
    let q = marginals_on(device, image, unary, params)?;
    let (h, w, _) = image.dim();
    let m = unary.dim().0;
    // Pixel-major Q to (labels, H, W).
    let n = h * w;
    let mut probs = vec![0f32; m * n];
    for (l, plane) in probs.chunks_exact_mut(n).enumerate() {
        for (p, v) in plane.iter_mut().enumerate() {
            *v = q[p * m + l];
        }
    }
    let probs = Array3::from_shape_vec((m, h, w), probs).expect("one value per label and pixel");
    Ok(CrfOutput {
        probs,
        labels: map_labels(&q, m, h, w),
    })
}

/// [`dense_crf_on`]'s MAP labelling alone, without copying out the marginals.
///
/// # Errors
/// As [`dense_crf_on`].
pub fn dense_crf_labels_on(
    device: Option<&CrfDevice>,
    image: ArrayView3<u8>,
    unary: ArrayView3<f32>,
    params: &CrfParams,
) -> Result<Array2<u32>> {
    let q = marginals_on(device, image, unary, params)?;
    let (h, w, _) = image.dim();
    Ok(map_labels(&q, unary.dim().0, h, w))
}

/// The marginals of [`dense_crf_on`], pixel-major `(H·W, labels)`.
fn marginals_on(
    device: Option<&CrfDevice>,
    image: ArrayView3<u8>,
    unary: ArrayView3<f32>,
    params: &CrfParams,
) -> Result<Vec<f32>> {
    let u = checked_unary(image, unary, params)?;
    let m = unary.dim().0;
    match device {
        None => cpu_inference(image, &u, m, params),
        Some(dev) => device_probs(dev, image, &u, m, params),
    }
}

/// Argmax over labels of pixel-major `q`, ties to the lower label, as `(H, W)`.
fn map_labels(q: &[f32], m: usize, h: usize, w: usize) -> Array2<u32> {
    let labels = q
        .chunks_exact(m)
        .map(|col| {
            let mut best = 0;
            for l in 1..m {
                if col[l] > col[best] {
                    best = l;
                }
            }
            best as u32
        })
        .collect();
    Array2::from_shape_vec((h, w), labels).expect("one label per pixel")
}

/// The device's marginals, pixel-major.
#[cfg(feature = "cuda")]
fn device_probs(
    dev: &CrfDevice,
    image: ArrayView3<u8>,
    u: &[f32],
    m: usize,
    params: &CrfParams,
) -> Result<Vec<f32>> {
    use crate::backend::cuda::crf::{CrfResult, CrfWant};
    match device::inference(dev, image, u, m, params, CrfWant::LabelsAndProbs)? {
        CrfResult::LabelsAndProbs(_, q) => Ok(q),
        other => Err(Error::Internal(format!(
            "asked the device for marginals, got {other:?}"
        ))),
    }
}

/// The device's foreground mask (MAP label 1), row-major.
#[cfg(feature = "cuda")]
fn device_foreground(
    dev: &CrfDevice,
    image: ArrayView3<u8>,
    u: &[f32],
    params: &CrfParams,
) -> Result<Vec<bool>> {
    use crate::backend::cuda::crf::{CrfResult, CrfWant};
    match device::inference(dev, image, u, 2, params, CrfWant::Foreground)? {
        CrfResult::Foreground(mask) => Ok(mask),
        other => Err(Error::Internal(format!(
            "asked the device for a mask, got {other:?}"
        ))),
    }
}

#[cfg(not(feature = "cuda"))]
fn device_probs(
    dev: &CrfDevice,
    _: ArrayView3<u8>,
    _: &[f32],
    _: usize,
    _: &CrfParams,
) -> Result<Vec<f32>> {
    match *dev {}
}

#[cfg(not(feature = "cuda"))]
fn device_foreground(
    dev: &CrfDevice,
    _: ArrayView3<u8>,
    _: &[f32],
    _: &CrfParams,
) -> Result<Vec<bool>> {
    match *dev {}
}

/// Checks the inputs of [`dense_crf`] and returns the unary pixel-major `(H·W, labels)`
/// (densecrf's column-major (labels, pixels) matrix).
fn checked_unary(
    image: ArrayView3<u8>,
    unary: ArrayView3<f32>,
    params: &CrfParams,
) -> Result<Vec<f32>> {
    params.validate()?;
    let (h, w, c) = image.dim();
    if h == 0 || w == 0 || c == 0 {
        return Err(Error::param(
            "image",
            format!("empty image (H, W, C) = ({h}, {w}, {c})"),
        ));
    }
    let (m, uh, uw) = unary.dim();
    if m == 0 {
        return Err(Error::param("unary", "needs at least one label"));
    }
    if (uh, uw) != (h, w) {
        return Err(Error::shape(
            "unary (labels, H, W)",
            &[m, h, w],
            &[m, uh, uw],
        ));
    }
    if unary.iter().any(|u| !u.is_finite()) {
        return Err(Error::param("unary", "contains NaN or infinite energies"));
    }
    let mut u = vec![0f32; h * w * m];
    let n = h * w;
    match unary.as_slice() {
        // (labels, H, W) contiguous: plain slice reads.
        Some(src) => u.par_chunks_mut(m * w).enumerate().for_each(|(y, row)| {
            for (x, px) in row.chunks_exact_mut(m).enumerate() {
                for (l, v) in px.iter_mut().enumerate() {
                    *v = src[l * n + y * w + x];
                }
            }
        }),
        None => u.par_chunks_mut(m * w).enumerate().for_each(|(y, row)| {
            for x in 0..w {
                for l in 0..m {
                    row[x * m + l] = unary[[l, y, x]];
                }
            }
        }),
    }
    Ok(u)
}

/// Mean-field inference on the CPU; returns Q pixel-major.
fn cpu_inference(
    image: ArrayView3<u8>,
    u: &[f32],
    m: usize,
    params: &CrfParams,
) -> Result<Vec<f32>> {
    // Run on a pool thread: called from outside the pool, each of the many parallel
    // loops below would otherwise hand its work to the pool and wait for it (a thread
    // hand-off per loop, hundreds per call).
    if rayon::current_thread_index().is_none() {
        return rayon::scope(|_| cpu_inference(image, u, m, params));
    }
    let (h, w, c) = image.dim();
    let mut kernels = Vec::with_capacity(2);
    if params.pos_weight != 0.0 {
        let (sx, sy) = (params.pos_sxy_px, params.pos_sxy_px);
        let feats = features(h, w, 2, |y, x, f| {
            f[0] = x as f32 / sx;
            f[1] = y as f32 / sy;
        });
        kernels.push(PairwiseKernel::new(&feats, 2, params.pos_weight)?);
    }
    if params.bi_weight != 0.0 {
        let (sx, sy, sr) = (params.bi_sxy_px, params.bi_sxy_px, params.bi_srgb);
        let feats = features(h, w, 2 + c, |y, x, f| {
            f[0] = x as f32 / sx;
            f[1] = y as f32 / sy;
            for k in 0..c {
                f[2 + k] = image[[y, x, k]] as f32 / sr;
            }
        });
        kernels.push(PairwiseKernel::new(&feats, 2 + c, params.bi_weight)?);
    }

    Ok(mean_field::inference(u, m, &kernels, params.n_iterations))
}

/// The DenseCRF refinement of a binary mask used by TokenCut and MaskCut: the unary of
/// [`unary_from_mask`] (a mask of another size is resized bilinearly first), then
/// [`dense_crf`], then foreground = MAP label 1.
///
/// # Errors
/// As [`dense_crf`]; [`Error::InvalidParam`] for an empty mask.
pub fn refine_mask(
    image: ArrayView3<u8>,
    mask: ArrayView2<bool>,
    params: &CrfParams,
) -> Result<Array2<bool>> {
    refine_mask_on(None, image, mask, params)
}

/// [`refine_mask`] with the CRF on `device` (see [`dense_crf_on`]); only the mask (a
/// byte per pixel) comes back from the device.
///
/// # Errors
/// As [`refine_mask`] and [`dense_crf_on`].
pub fn refine_mask_on(
    device: Option<&CrfDevice>,
    image: ArrayView3<u8>,
    mask: ArrayView2<bool>,
    params: &CrfParams,
) -> Result<Array2<bool>> {
    let (h, w, c) = image.dim();
    if h == 0 || w == 0 || c == 0 {
        return Err(Error::param(
            "image",
            format!("empty image (H, W, C) = ({h}, {w}, {c})"),
        ));
    }
    let unary = unary_from_mask(mask, h, w)?;
    match device {
        None => Ok(dense_crf(image, unary.view(), params)?
            .labels
            .mapv(|l| l == 1)),
        Some(dev) => {
            let u = checked_unary(image, unary.view(), params)?;
            let mask = device_foreground(dev, image, &u, params)?;
            Ok(Array2::from_shape_vec((h, w), mask).expect("one value per pixel"))
        }
    }
}

/// The permutohedral-lattice Gaussian filter of the CPU DenseCRF alone (the twin the
/// device lattice is tested against): `s ∘ L(s ∘ input)` for `features` point-major
/// `(n, d)`, `input` `(n, vs)`, `scale` `(n)`. Returns the output and the vertex count.
///
/// # Errors
/// [`Error::InvalidParam`] for inconsistent sizes or out-of-range features.
pub fn lattice_filter(
    features: &[f32],
    d: usize,
    input: &[f32],
    scale: &[f32],
    vs: usize,
) -> Result<(Vec<f32>, usize)> {
    let n = crate::backend::input::check_lattice_input(features, d, input, scale, vs)?;
    let lattice = lattice::Lattice::new(features, d)?;
    let mut out = vec![0f32; n * vs];
    lattice.filter(input, scale, vs, &mut out, &mut Default::default());
    Ok((out, lattice.n_vertices()))
}

/// Per-pixel features, point-major `(H·W, d)`, filled by `f(y, x, out)`.
fn features(h: usize, w: usize, d: usize, f: impl Fn(usize, usize, &mut [f32]) + Sync) -> Vec<f32> {
    let mut feats = vec![0f32; h * w * d];
    feats
        .par_chunks_mut(w * d)
        .enumerate()
        .for_each(|(y, row)| {
            for (x, px) in row.chunks_exact_mut(d).enumerate() {
                f(y, x, px);
            }
        });
    feats
}
