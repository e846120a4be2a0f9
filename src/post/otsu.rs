//! Otsu's threshold and histogram equalisation, with scikit-image's float semantics.
//!
//! Reference: `skimage.filters.threshold_otsu`, `skimage.exposure.histogram` and
//! `skimage.exposure.equalize_hist` of **scikit-image 0.26.0** with NumPy 2.4 (the versions
//! the fixtures in `tests/fixtures/morphology/` were made with), as described in
//! `docs/postprocessing.md` §7.1–7.2 and checked by black-box fuzzing against
//! the installed versions. Only the float32 path exists here: relevance maps are `f32`
//! (scikit-image's integer path, one bin per integer with `nbins` ignored, is not needed).
//!
//! # Histogram (NumPy `histogram(x, bins=nbins)`, range from the data)
//! With `lo = min x`, `hi = max x` (when `lo == hi`: `lo − 0.5`, `hi + 0.5`, in f32), the
//! `nbins + 1` edges are NumPy's float32 `linspace`: `step = (hi − lo)/nbins`,
//! `e_k = k·step + lo`, `e_nbins = hi`, every operation rounded to f32. Bin `k` holds
//! `e_k ≤ x < e_{k+1}` (the last bin is closed). The bin of `x` is first guessed as
//! `⌊((x − lo)/(hi − lo))·nbins⌋` (f32, clamped to `nbins − 1`) and then moved by at most
//! one bin against the actual edges, exactly as NumPy does. Centres are `(e_k + e_{k+1})/2`
//! in f32. When the f32 edges are not strictly increasing (a range of a few ulps), NumPy
//! refuses ("Too many bins for data range"), and so do we.
//!
//! # Otsu (`threshold_otsu(image, nbins)`)
//! If every pixel equals the first, that value is returned (no histogram). Otherwise,
//! with float32 counts `c_k` and centres `x_k`, every quantity is float32 (cumulative sums
//! are sequential): `w1 = cumsum(c)`, `w2` the cumulative sum from the top,
//! `m1 = cumsum(c·x)/w1`, `m2` likewise from the top, and
//! `σ²(t) = (w1[t]·w2[t+1])·(m1[t] − m2[t+1])²` for `t = 0..nbins−2`. The threshold is the
//! centre of bin `argmax σ²` (first maximum); foreground is `image > threshold`.
//!
//! # Equalisation (`equalize_hist(image, nbins)`)
//! `cdf_k = f32(cumsum(counts)_k / N)` (the division in f64, then rounded to f32, as
//! scikit-image 0.26 stores its cdf as float32), then NumPy's `interp(x, centres, cdf)` in
//! f64, rounded to f32. The output range is `[cdf_0, 1]`, not `[0, 1]`; values below the
//! first or above the last centre clamp to the end values.
//!
//! # Version notes
//! * Older notes (docs/parity.md §5.1) say `w1·w2` is a float32 product "promoted to float64 for the
//!   rest". For float32 images in scikit-image 0.26.0 the whole variance is float32: fuzzing
//!   (≈ 8 500 random and edge-adversarial images, nbins 2 to 1000) matched the float32 rule
//!   every time, and the float64 variant failed on near-ties. We follow the installed version.
//! * scikit-image 0.19.x (pinned by CutLER) used float64 counts; results can differ on
//!   near-ties only.
//! * scikit-image raises for NaN/±inf input ("autodetected range … is not finite"), for an
//!   empty image, and for `nbins < 2` in Otsu (`argmax` of an empty sequence). We return
//!   [`Error::InvalidParam`] in all those cases. A constant image is returned as is even when
//!   it is ±inf, like scikit-image.

use std::borrow::Cow;

use ndarray::{Array2, ArrayView2};

use crate::error::{Error, Result};

/// The pixels of a 2-D view in row-major order, borrowed when the view is contiguous.
pub(crate) fn row_major<'a, T: Clone>(a: &ArrayView2<'a, T>) -> Cow<'a, [T]> {
    match a.to_slice() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(a.iter().cloned().collect()),
    }
}

/// Default number of bins, as scikit-image.
pub const DEFAULT_NBINS: usize = 256;

/// Largest accepted `nbins` (bin indices must be exact in f32).
pub const MAX_NBINS: usize = 1 << 24;

/// A float histogram with NumPy/scikit-image binning (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    /// Pixels per bin, `nbins` entries.
    pub counts: Vec<u64>,
    /// Bin edges, `nbins + 1` entries, strictly increasing.
    pub edges: Vec<f32>,
    /// Bin centres `(e_k + e_{k+1})/2` in f32, `nbins` entries.
    pub centers: Vec<f32>,
}

/// Values binned per block (small enough for the stack, large enough to vectorise).
const BLOCK: usize = 256;

/// The NumPy-compatible uniform binning of a data range.
struct Binning {
    lo: f32,
    denom: f32,
    nbins: usize,
    edges: Vec<f32>,
}

impl Binning {
    /// Edges from NumPy's float32 `linspace(lo, hi, nbins + 1)`.
    fn new(min: f32, max: f32, nbins: usize) -> Result<Self> {
        let (lo, hi) = if min == max {
            (min - 0.5, max + 0.5)
        } else {
            (min, max)
        };
        let delta = hi - lo;
        if !delta.is_finite() {
            return Err(Error::param(
                "image",
                format!("the data range [{min}, {max}] overflows f32; NumPy's binning is undefined there"),
            ));
        }
        let n = nbins as f32;
        let step = delta / n;
        let mut edges = Vec::with_capacity(nbins + 1);
        for k in 0..nbins {
            let kf = k as f32;
            // NumPy's linspace divides first when the step underflows to zero.
            let y = if step == 0.0 {
                (kf / n) * delta
            } else {
                kf * step
            };
            edges.push(y + lo);
        }
        edges.push(hi);
        if edges.windows(2).any(|w| w[0] >= w[1]) {
            return Err(Error::param(
                "nbins",
                format!(
                    "too many bins for the data range: cannot create {nbins} finite-sized f32 bins \
                     between {min} and {max} (NumPy raises here too)"
                ),
            ));
        }
        Ok(Binning {
            lo,
            denom: delta,
            nbins,
            edges,
        })
    }

    /// NumPy's bins of up to [`BLOCK`] values: a guess from the scaled value (a vectorisable
    /// pass), then a correction by at most one bin against the actual edges.
    fn bin_block(&self, xs: &[f32], out: &mut [u32; BLOCK]) {
        let n = self.nbins;
        let (lo, denom, nf) = (self.lo, self.denom, n as f32);
        let top = (n - 1) as f32;
        // `as i32` truncates like NumPy's astype(intp); the guess is in [0, nbins] and nbins ≤ 2^24,
        // and clamping to [0, nbins − 1] before truncating (exact: the bounds are integers) lets
        // the conversion vectorise.
        for (o, &x) in out.iter_mut().zip(xs) {
            *o = (((x - lo) / denom) * nf).max(0.0).min(top) as i32 as u32;
        }
        let edges = &self.edges[..];
        for (o, &x) in out.iter_mut().zip(xs) {
            let mut k = *o as usize;
            if x < edges[k] {
                k = k.saturating_sub(1);
            } else if k != n - 1 && x >= edges[k + 1] {
                k += 1;
            }
            *o = k as u32;
        }
    }

    /// Adds the bin counts of `data` to `counts`.
    fn count(&self, data: &[f32], counts: &mut [u64]) {
        let n = self.nbins;
        // Four interleaved count arrays avoid store-to-load stalls on runs of equal bins.
        let mut c4 = vec![0u64; 4 * n];
        let mut buf = [0u32; BLOCK];
        for block in data.chunks(BLOCK) {
            self.bin_block(block, &mut buf);
            for (i, &b) in buf[..block.len()].iter().enumerate() {
                c4[4 * b as usize + (i & 3)] += 1;
            }
        }
        for (k, c) in counts.iter_mut().enumerate() {
            *c += c4[4 * k..4 * k + 4].iter().sum::<u64>();
        }
    }

    fn centers(&self) -> Vec<f32> {
        self.edges.windows(2).map(|w| (w[0] + w[1]) / 2.0).collect()
    }
}

fn check_nbins(nbins: usize, min_bins: usize) -> Result<()> {
    if nbins < min_bins || nbins > MAX_NBINS {
        return Err(Error::param(
            "nbins",
            format!("must be in {min_bins}..={MAX_NBINS}, got {nbins}"),
        ));
    }
    Ok(())
}

fn empty_error(shape: &[usize]) -> Error {
    Error::param(
        "image",
        format!("must have at least one pixel, got shape {shape:?}"),
    )
}

/// Min and max of a non-empty image whose values are all finite (8 lanes, vectorisable).
fn finite_range(data: &[f32], shape: &[usize]) -> Result<(f32, f32)> {
    let Some(&first) = data.first() else {
        return Err(empty_error(shape));
    };
    let mut lo = [first; 8];
    let mut hi = [first; 8];
    let mut bad = [false; 8];
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        for l in 0..8 {
            let v = c[l];
            lo[l] = if v < lo[l] { v } else { lo[l] };
            hi[l] = if v > hi[l] { v } else { hi[l] };
            bad[l] |= !v.is_finite();
        }
    }
    for &v in chunks.remainder() {
        lo[0] = if v < lo[0] { v } else { lo[0] };
        hi[0] = if v > hi[0] { v } else { hi[0] };
        bad[0] |= !v.is_finite();
    }
    if bad.iter().any(|&b| b) {
        let i = data.iter().position(|v| !v.is_finite()).unwrap_or(0);
        let cols = shape.get(1).copied().unwrap_or(1).max(1);
        return Err(Error::param(
            "image",
            format!(
                "value {} at {:?} is not finite (scikit-image/NumPy raise here too)",
                data[i],
                [i / cols, i % cols]
            ),
        ));
    }
    let min = lo.iter().fold(first, |m, &v| if v < m { v } else { m });
    let max = hi.iter().fold(first, |m, &v| if v > m { v } else { m });
    Ok((min, max))
}

/// Histogram of row-major data, and its binning for reuse.
fn histogram_core(data: &[f32], shape: &[usize], nbins: usize) -> Result<(Histogram, Binning)> {
    check_nbins(nbins, 1)?;
    let (min, max) = finite_range(data, shape)?;
    let binning = Binning::new(min, max, nbins)?;
    let mut counts = vec![0u64; nbins];
    binning.count(data, &mut counts);
    let hist = Histogram {
        counts,
        edges: binning.edges.clone(),
        centers: binning.centers(),
    };
    Ok((hist, binning))
}

/// Histogram of a float image, as `skimage.exposure.histogram(image, nbins,
/// source_range='image')` (range `[min, max]` of the data; see the module docs).
///
/// # Errors
/// [`Error::InvalidParam`] for an empty image, a NaN or infinite value, `nbins` outside
/// `1..=2^24`, or a data range too narrow for `nbins` distinct f32 edges.
pub fn histogram(image: ArrayView2<f32>, nbins: usize) -> Result<Histogram> {
    histogram_core(&row_major(&image), image.shape(), nbins).map(|(h, _)| h)
}

/// Otsu's threshold of a histogram (float32 arithmetic, first maximum; see the module docs).
///
/// # Errors
/// [`Error::InvalidParam`] when the histogram has fewer than two bins or its lengths disagree.
pub fn threshold_otsu_from_histogram(hist: &Histogram) -> Result<f32> {
    let n = hist.counts.len();
    if n < 2 || hist.centers.len() != n {
        return Err(Error::param(
            "hist",
            format!(
                "need at least 2 bins with as many centres, got {n} counts and {} centres",
                hist.centers.len()
            ),
        ));
    }
    let c: Vec<f32> = hist.counts.iter().map(|&v| v as f32).collect();
    let cx: Vec<f32> = c.iter().zip(&hist.centers).map(|(a, b)| a * b).collect();
    // Cumulative sums from the bottom (w1, s1) and from the top (w2, s2), sequential in f32.
    let mut w1 = vec![0f32; n];
    let mut s1 = vec![0f32; n];
    let (mut acc_w, mut acc_s) = (0f32, 0f32);
    for k in 0..n {
        acc_w += c[k];
        acc_s += cx[k];
        w1[k] = acc_w;
        s1[k] = acc_s;
    }
    let mut w2 = vec![0f32; n];
    let mut s2 = vec![0f32; n];
    let (mut acc_w, mut acc_s) = (0f32, 0f32);
    for k in (0..n).rev() {
        acc_w += c[k];
        acc_s += cx[k];
        w2[k] = acc_w;
        s2[k] = acc_s;
    }
    let mut best = 0usize;
    let mut best_v = f32::NEG_INFINITY;
    for t in 0..n - 1 {
        let m1 = s1[t] / w1[t];
        let m2 = s2[t + 1] / w2[t + 1];
        let d = m1 - m2;
        let v = (w1[t] * w2[t + 1]) * (d * d);
        // np.argmax: the first NaN wins, otherwise the first maximum.
        if v.is_nan() {
            best = t;
            break;
        }
        if t == 0 || v > best_v {
            best = t;
            best_v = v;
        }
    }
    Ok(hist.centers[best])
}

/// Otsu's threshold, as `skimage.filters.threshold_otsu(image, nbins)` (scikit-image 0.26,
/// float32 image). Foreground is `image > threshold` (see [`apply_threshold`]).
///
/// A constant image returns its value (then nothing is foreground).
///
/// # Errors
/// [`Error::InvalidParam`] for an empty image, any NaN, an infinite value in a non-constant
/// image, `nbins` outside `2..=2^24`, or a data range too narrow for `nbins` f32 bins.
pub fn threshold_otsu(image: ArrayView2<f32>, nbins: usize) -> Result<f32> {
    check_nbins(nbins, 2)?;
    let data = row_major(&image);
    let Some(&first) = data.first() else {
        return Err(empty_error(image.shape()));
    };
    // NaN never compares equal, so an image with a NaN goes on to the histogram and fails there.
    if data.iter().all(|&v| v == first) {
        return Ok(first);
    }
    threshold_otsu_from_histogram(&histogram_core(&data, image.shape(), nbins)?.0)
}

/// `image > threshold` (the foreground convention of Otsu in scikit-image).
#[must_use]
pub fn apply_threshold(image: ArrayView2<f32>, threshold: f32) -> Array2<bool> {
    image.mapv(|v| v > threshold)
}

/// Histogram equalisation, as `skimage.exposure.equalize_hist(image, nbins)` for a float32
/// image (scikit-image 0.26): output in `[cdf_0, 1]`, see the module docs.
///
/// A constant image maps to the cdf interpolated at its value (0.5 for `nbins` = 256).
///
/// # Errors
/// [`Error::InvalidParam`] for an empty image, a NaN or infinite value, `nbins` outside
/// `1..=2^24`, or a data range too narrow for `nbins` f32 bins.
pub fn equalize_hist(image: ArrayView2<f32>, nbins: usize) -> Result<Array2<f32>> {
    let data = row_major(&image);
    let (hist, binning) = histogram_core(&data, image.shape(), nbins)?;
    let total = data.len() as f64;
    let mut acc = 0u64;
    let cdf: Vec<f64> = hist
        .counts
        .iter()
        .map(|&c| {
            acc += c;
            ((acc as f64 / total) as f32) as f64
        })
        .collect();
    let xp: Vec<f64> = hist.centers.iter().map(|&v| v as f64).collect();
    // np.interp with j = (number of centres ≤ x) − 1: below the first centre → cdf[0], at or
    // above the last → cdf[last], else slope_j·(x − xp_j) + cdf_j (which is cdf_j when x = xp_j).
    // Tables indexed by j + 1, padded so both ends are a zero slope: no branches per pixel.
    let mut t_xp = Vec::with_capacity(nbins + 1);
    let mut t_slope = Vec::with_capacity(nbins + 1);
    let mut t_cdf = Vec::with_capacity(nbins + 1);
    t_xp.push(xp[0]);
    t_slope.push(0.0);
    t_cdf.push(cdf[0]);
    for j in 0..nbins {
        t_xp.push(xp[j]);
        t_slope.push(if j + 1 < nbins {
            (cdf[j + 1] - cdf[j]) / (xp[j + 1] - xp[j])
        } else {
            0.0
        });
        t_cdf.push(cdf[j]);
    }
    let mut out: Vec<f32> = Vec::with_capacity(data.len());
    let mut buf = [0u32; BLOCK];
    for block in data.chunks(BLOCK) {
        binning.bin_block(block, &mut buf);
        out.extend(block.iter().zip(&buf).map(|(&x, &b)| {
            let x = x as f64;
            // A pixel of bin b lies in [e_b, e_{b+1}), so centre b−1 ≤ x < centre b+1: j is b or
            // b − 1. The general search below is a safety net that NumPy's binning never needs.
            let b = b as usize;
            let mut t = b + (x >= xp[b]) as usize; // j + 1
            let ok = (t == 0 || t_xp[t] <= x) && (t == nbins || x < xp[t]);
            if !ok {
                t = xp.partition_point(|&c| c <= x);
            }
            (t_slope[t] * (x - t_xp[t]) + t_cdf[t]) as f32
        }));
    }
    Array2::from_shape_vec(image.raw_dim(), out)
        .map_err(|e| Error::Internal(format!("equalize_hist: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn bin_centres_and_threshold_of_a_small_image() {
        // [1, 2, 3, 4], 4 bins: step 0.75, edges 1, 1.75, 2.5, 3.25, 4; centres 1.375 … 3.625.
        let a = array![[1f32, 2.], [3., 4.]];
        let h = histogram(a.view(), 4).unwrap();
        assert_eq!(h.counts, vec![1, 1, 1, 1]);
        assert_eq!(h.centers, vec![1.375, 2.125, 2.875, 3.625]);
        // Symmetric: σ² is largest for the split {1, 2} | {3, 4} → centre of bin 1.
        assert_eq!(threshold_otsu(a.view(), 4).unwrap(), 2.125);
    }

    #[test]
    fn constant_image_returns_its_value_and_equalises_to_half() {
        let a = Array2::from_elem((3, 3), 0.7f32);
        assert_eq!(threshold_otsu(a.view(), 256).unwrap(), 0.7);
        assert!(apply_threshold(a.view(), 0.7).iter().all(|&m| !m));
        // Edges 0.2 … 1.2, the value sits on edge 128 → cdf jumps there; interp at 0.7 gives 0.5.
        assert!(equalize_hist(a.view(), 256)
            .unwrap()
            .iter()
            .all(|&v| v == 0.5));
    }

    #[test]
    fn equalize_range_starts_at_first_cdf() {
        // 4 values, 4 bins: cdf = 1/4, 2/4, 3/4, 1; each value lies below/above its centre.
        let a = array![[1f32, 2.], [3., 4.]];
        let e = equalize_hist(a.view(), 4).unwrap();
        assert_eq!(e[[0, 0]], 0.25);
        assert_eq!(e[[1, 1]], 1.0);
        assert!(e[[0, 1]] > 0.25 && e[[0, 1]] < 0.75);
    }

    #[test]
    fn errors_instead_of_panics() {
        let empty = Array2::<f32>::zeros((0, 4));
        assert!(threshold_otsu(empty.view(), 256).is_err());
        assert!(equalize_hist(empty.view(), 256).is_err());
        assert!(histogram(empty.view(), 256).is_err());
        let nan = array![[1f32, f32::NAN]];
        assert!(threshold_otsu(nan.view(), 256).is_err());
        assert!(equalize_hist(nan.view(), 256).is_err());
        let all_nan = array![[f32::NAN, f32::NAN]];
        assert!(threshold_otsu(all_nan.view(), 256).is_err());
        let inf = array![[1f32, f32::INFINITY]];
        assert!(threshold_otsu(inf.view(), 256).is_err());
        let ok = array![[1f32, 2.]];
        assert!(threshold_otsu(ok.view(), 1).is_err());
        assert!(threshold_otsu(ok.view(), 0).is_err());
        assert!(equalize_hist(ok.view(), 0).is_err());
        // Two values one ulp apart cannot hold 256 distinct f32 edges.
        let tight = array![[1f32, 1.0 + f32::EPSILON]];
        assert!(threshold_otsu(tight.view(), 256).is_err());
        let huge = array![[-3e38f32, 3e38]];
        assert!(threshold_otsu(huge.view(), 256).is_err());
    }

    #[test]
    fn non_contiguous_views_work() {
        let a = Array2::from_shape_fn((6, 5), |(i, j)| (i * 5 + j) as f32);
        let t = a.t();
        let owned = t.to_owned();
        assert_eq!(
            threshold_otsu(t, 16).unwrap(),
            threshold_otsu(owned.view(), 16).unwrap()
        );
        assert_eq!(
            equalize_hist(t, 16).unwrap(),
            equalize_hist(owned.view(), 16).unwrap()
        );
    }
}
