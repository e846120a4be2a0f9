//! Gaussian smoothing of a relevance map before it becomes a mask.
//!
//! IG maps of small ViTs trained from scratch are speckled and concentrate on
//! object boundaries and patch seams; a blur of about a patch's half-width joins
//! the speckles into one region that thresholding and NCut can pick up. Not in
//! the paper (its maps come from a fine-tuned DeiT-S/16 at 224 px), so off by
//! default.

use ndarray::{Array2, ArrayView2, Axis};

use crate::error::{Error, Result};

/// The largest σ accepted, in pixels: the side of the largest network input (32
/// patches of 32 px). Beyond it a blur only flattens the map, and its taps (8σ + 1)
/// would cost memory and time for nothing.
pub const MAX_SIGMA_PX: f32 = 1024.0;

/// Normalised Gaussian taps for σ (pixels), truncated at 4σ like
/// `scipy.ndimage.gaussian_filter`.
fn taps(sigma: f32) -> Vec<f32> {
    let radius = (4.0 * sigma + 0.5) as isize;
    let w: Vec<f32> = (-radius..=radius)
        .map(|k| (-0.5 * (k as f32 / sigma).powi(2)).exp())
        .collect();
    let total: f32 = w.iter().sum();
    w.into_iter().map(|v| v / total).collect()
}

/// Index of `i` mirrored into `0..n` with the edge sample repeated
/// (scipy's `reflect` mode: `d c b a | a b c d | d c b a`).
fn reflect(i: isize, n: usize) -> usize {
    let n = n as isize;
    let period = 2 * n;
    let m = i.rem_euclid(period);
    (if m < n { m } else { period - 1 - m }) as usize
}

fn blur_axis(map: ArrayView2<f32>, axis: Axis, w: &[f32]) -> Array2<f32> {
    let radius = (w.len() / 2) as isize;
    let n = map.len_of(axis);
    Array2::from_shape_fn(map.dim(), |(i, j)| {
        let at = if axis == Axis(0) { i } else { j } as isize;
        w.iter()
            .enumerate()
            .map(|(k, wk)| {
                let p = reflect(at + k as isize - radius, n);
                let v = if axis == Axis(0) {
                    map[[p, j]]
                } else {
                    map[[i, p]]
                };
                wk * v
            })
            .sum()
    })
}

/// `map` convolved with a Gaussian of standard deviation `sigma` pixels (separable,
/// mirrored borders, taps to 4σ as scipy's `gaussian_filter`). σ = 0 returns the
/// map unchanged.
///
/// # Errors
/// [`Error::InvalidParam`] when σ is negative, not finite or above [`MAX_SIGMA_PX`].
pub fn gaussian_smooth(map: ArrayView2<f32>, sigma: f32) -> Result<Array2<f32>> {
    let w = blur_taps(sigma)?;
    if w.is_empty() || map.is_empty() {
        return Ok(map.to_owned());
    }
    let rows = blur_axis(map, Axis(0), &w);
    Ok(blur_axis(rows.view(), Axis(1), &w))
}

/// The taps [`gaussian_smooth`] convolves with for `sigma` (none for σ = 0), for a
/// device that blurs the map where it was computed.
///
/// # Errors
/// As [`gaussian_smooth`].
pub fn blur_taps(sigma: f32) -> Result<Vec<f32>> {
    if !(sigma.is_finite() && (0.0..=MAX_SIGMA_PX).contains(&sigma)) {
        return Err(Error::param(
            "smooth_sigma",
            format!("must be between 0 and {MAX_SIGMA_PX} pixels, got {sigma}"),
        ));
    }
    Ok(if sigma == 0.0 {
        Vec::new()
    } else {
        taps(sigma)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn constants_stay_and_mass_is_kept_away_from_borders() {
        let c = Array2::from_elem((9, 7), 2.5f32);
        let s = gaussian_smooth(c.view(), 1.5).unwrap();
        assert!(s.iter().all(|v| (v - 2.5).abs() < 1e-5));
        let mut d = Array2::<f32>::zeros((21, 21));
        d[[10, 10]] = 1.0;
        let s = gaussian_smooth(d.view(), 1.0).unwrap();
        assert!((s.sum() - 1.0).abs() < 1e-5);
        // The centre tap of a σ = 1 kernel (radius 4): 1/Σₖ e^{−k²/2}, squared for 2-D.
        let centre = 1.0
            / (-4..=4)
                .map(|k: i32| (-0.5 * (k * k) as f32).exp())
                .sum::<f32>();
        assert!((s[[10, 10]] - centre * centre).abs() < 1e-6);
        assert_eq!(s[[10, 9]], s[[9, 10]]);
    }

    #[test]
    fn borders_mirror_and_bad_sigma_is_an_error() {
        assert_eq!(reflect(-1, 4), 0);
        assert_eq!(reflect(-2, 4), 1);
        assert_eq!(reflect(4, 4), 3);
        assert_eq!(reflect(5, 4), 2);
        let m = array![[1.0f32, 2.0], [3.0, 4.0]];
        assert_eq!(gaussian_smooth(m.view(), 0.0).unwrap(), m);
        assert!(gaussian_smooth(m.view(), -1.0).is_err());
        assert!(gaussian_smooth(m.view(), f32::NAN).is_err());
        // A huge σ is refused before its taps are allocated (8σ + 1 of them).
        assert!(gaussian_smooth(m.view(), 1e9).is_err());
        assert!(gaussian_smooth(m.view(), MAX_SIGMA_PX).is_ok());
    }
}
