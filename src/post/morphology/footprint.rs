//! Flat footprints (structuring elements), binary dilation and binary erosion.
//!
//! A footprint is stored as horizontal runs around its centre. Dilation works on rows packed
//! 64 pixels to a word: for each distinct run shape `[dx0, dx1]`, every row is dilated
//! horizontally with O(log width) word shifts, and the output row ORs those rows at the runs'
//! `dy`. For `disk(r)` that is (r + 1) shapes and 2r + 1 rows: O(pixels × r / 64) word
//! operations, plus packing. Erosion is the complement of the dilation of the complement
//! (outside unset), which is scikit-image's outside-is-True erosion.

use ndarray::{Array2, ArrayView2};

use super::bits::BitRows;
use super::components::{pack, unpack};
use crate::error::{Error, Result};

/// One row of a footprint: offsets `(dy, dx)` for `dx` in `dx0..=dx1`, relative to the centre.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    dy: isize,
    dx0: isize,
    dx1: isize,
}

/// A flat structuring element, stored as horizontal runs around its centre.
///
/// The centre of an `h × w` array footprint is `(h/2, w/2)` (integer division), as in
/// scikit-image/SciPy; for even sizes this matters (see [`Footprint::square`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Footprint {
    runs: Vec<Run>,
    shape: (usize, usize),
    center: (usize, usize),
}

impl Footprint {
    /// `skimage.morphology.disk(radius)`: the points with `dy² + dx² ≤ radius²`, a
    /// `(2r+1) × (2r+1)` footprint. `disk(0)` is the single centre pixel (identity);
    /// `disk(1)` is the 3×3 cross, scikit-image's default footprint.
    #[must_use]
    pub fn disk(radius: usize) -> Self {
        let r = radius as isize;
        let r2 = (radius as u128) * (radius as u128);
        let runs = (-r..=r)
            .map(|dy| {
                let dy2 = (dy.unsigned_abs() as u128).pow(2);
                // Largest w with w² ≤ r² − dy², exactly (integer arithmetic).
                let rem = r2 - dy2;
                let mut w = (rem as f64).sqrt() as u128;
                while w * w > rem {
                    w -= 1;
                }
                while (w + 1) * (w + 1) <= rem {
                    w += 1;
                }
                let w = w as isize;
                Run {
                    dy,
                    dx0: -w,
                    dx1: w,
                }
            })
            .collect();
        Footprint {
            runs,
            shape: (2 * radius + 1, 2 * radius + 1),
            center: (radius, radius),
        }
    }

    /// The 3×3 cross (`scipy.ndimage.generate_binary_structure(2, 1)`), scikit-image's default.
    #[must_use]
    pub fn cross() -> Self {
        Self::disk(1)
    }

    /// An all-ones `width × width` square (`skimage.morphology.footprint_rectangle((w, w))`,
    /// formerly `square(w)`). For even widths the centre is at `(w/2, w/2)`.
    ///
    /// # Errors
    /// [`Error::InvalidParam`] when `width` is 0.
    pub fn square(width: usize) -> Result<Self> {
        Self::rectangle(width, width)
    }

    /// An all-ones `rows × cols` rectangle, centre `(rows/2, cols/2)`.
    ///
    /// # Errors
    /// [`Error::InvalidParam`] when a side is 0.
    pub fn rectangle(rows: usize, cols: usize) -> Result<Self> {
        Self::from_mask(Array2::from_elem((rows, cols), true).view())
    }

    /// An arbitrary footprint from a boolean array; the centre is `(h/2, w/2)`.
    ///
    /// # Errors
    /// [`Error::InvalidParam`] when the array is empty or has no true element.
    pub fn from_mask(mask: ArrayView2<bool>) -> Result<Self> {
        let (h, w) = mask.dim();
        let (cy, cx) = (h / 2, w / 2);
        let mut runs = Vec::new();
        for (i, row) in mask.outer_iter().enumerate() {
            let mut j = 0;
            while j < w {
                if row[j] {
                    let start = j;
                    while j < w && row[j] {
                        j += 1;
                    }
                    runs.push(Run {
                        dy: i as isize - cy as isize,
                        dx0: start as isize - cx as isize,
                        dx1: (j - 1) as isize - cx as isize,
                    });
                } else {
                    j += 1;
                }
            }
        }
        if runs.is_empty() {
            return Err(Error::param(
                "footprint",
                format!("needs at least one true element, got a {h}×{w} array without any"),
            ));
        }
        Ok(Footprint {
            runs,
            shape: (h, w),
            center: (cy, cx),
        })
    }

    /// The footprint as a boolean array of shape [`Footprint::shape`].
    #[must_use]
    pub fn to_array(&self) -> Array2<bool> {
        let mut a = Array2::from_elem(self.shape, false);
        let (cy, cx) = (self.center.0 as isize, self.center.1 as isize);
        for r in &self.runs {
            for dx in r.dx0..=r.dx1 {
                a[[(r.dy + cy) as usize, (dx + cx) as usize]] = true;
            }
        }
        a
    }

    /// `(rows, cols)` of the footprint array.
    #[must_use]
    pub fn shape(&self) -> (usize, usize) {
        self.shape
    }

    /// The point reflection through the centre (what dilation uses).
    fn reflected(&self) -> Vec<Run> {
        self.runs
            .iter()
            .map(|r| Run {
                dy: -r.dy,
                dx0: -r.dx1,
                dx1: -r.dx0,
            })
            .collect()
    }
}

/// `dst[x] |= src[x + k]` (pixels past the end read as 0).
fn or_shifted_down(dst: &mut [u64], src: &[u64], k: usize) {
    let (q, r) = (k / 64, k % 64);
    let n = src.len();
    for i in 0..n.saturating_sub(q) {
        let mut w = src[i + q] >> r;
        if r > 0 && i + q + 1 < n {
            w |= src[i + q + 1] << (64 - r);
        }
        dst[i] |= w;
    }
}

/// `dst[x] |= src[x − k]` (pixels before the start read as 0); the caller clears the tail.
fn or_shifted_up(dst: &mut [u64], src: &[u64], k: usize) {
    let (q, r) = (k / 64, k % 64);
    for i in q..src.len() {
        let mut w = src[i - q] << r;
        if r > 0 && i > q {
            w |= src[i - q - 1] >> (64 - r);
        }
        dst[i] |= w;
    }
}

/// `acc[x] = OR of src[x ..= x + len − 1]` (`down`) or `OR of src[x − len + 1 ..= x]` (up), by
/// doubling windows: O(words × log len). `prev` is scratch.
fn window(src: &[u64], len: usize, down: bool, acc: &mut Vec<u64>, prev: &mut Vec<u64>) {
    let shift = if down { or_shifted_down } else { or_shifted_up };
    acc.clear();
    acc.extend_from_slice(src);
    prev.resize(src.len(), 0);
    let mut m = 1usize;
    while 2 * m <= len {
        prev.copy_from_slice(acc);
        shift(acc, prev, m);
        m *= 2;
    }
    if m < len {
        // [0, m) ∪ [len − m, len) = [0, len) since m ≥ len − m.
        prev.copy_from_slice(acc);
        shift(acc, prev, len - m);
    }
}

/// `out[x] = OR of src[x + dx0 ..= x + dx1]` for one packed row (`dx0 ≤ dx1`). The offsets
/// ≥ 0 are a window looking right, the offsets < 0 one looking left, so that no pixel of the
/// row falls off either end before it is used.
fn window_or(
    src: &[u64],
    dx0: isize,
    dx1: isize,
    cols: usize,
    scratch: &mut [Vec<u64>; 2],
    out: &mut [u64],
) {
    let [acc, prev] = scratch;
    out.fill(0);
    if dx1 >= 0 {
        let a = dx0.max(0);
        window(src, (dx1 - a + 1) as usize, true, acc, prev);
        or_shifted_down(out, acc, a as usize);
    }
    if dx0 < 0 {
        let b = dx1.min(-1);
        window(src, (b - dx0 + 1) as usize, false, acc, prev);
        or_shifted_up(out, acc, b.unsigned_abs());
    }
    if !cols.is_multiple_of(64) {
        if let Some(last) = out.last_mut() {
            *last &= (1u64 << (cols % 64)) - 1;
        }
    }
}

/// `out(y, x) = OR over runs of src(y + dy, x + dx0 ..= x + dx1)`, outside = 0, on packed rows.
/// Each distinct horizontal run is computed once per source row, then rows are ORed.
fn or_filter(src: &BitRows, runs: &[Run]) -> BitRows {
    let (rows, cols, words) = (src.rows, src.cols, src.words);
    let mut out = BitRows {
        rows,
        cols,
        words,
        data: vec![0u64; rows * words],
    };
    if rows == 0 || words == 0 {
        return out;
    }
    let mut shapes: Vec<(isize, isize)> = runs.iter().map(|r| (r.dx0, r.dx1)).collect();
    shapes.sort_unstable();
    shapes.dedup();
    let mut scratch = [Vec::with_capacity(words), Vec::with_capacity(words)];
    for &(dx0, dx1) in &shapes {
        // Horizontal pass for this run shape, every source row.
        let mut h = vec![0u64; rows * words];
        for y in 0..rows {
            window_or(
                src.row(y),
                dx0,
                dx1,
                cols,
                &mut scratch,
                &mut h[y * words..(y + 1) * words],
            );
        }
        // Vertical OR over the runs that have this shape.
        for r in runs.iter().filter(|r| (r.dx0, r.dx1) == (dx0, dx1)) {
            let (y0, y1) = (
                (-r.dy).clamp(0, rows as isize) as usize,
                (rows as isize - r.dy).clamp(0, rows as isize) as usize,
            );
            for y in y0..y1 {
                let sy = (y as isize + r.dy) as usize;
                let (o, hs) = (
                    &mut out.data[y * words..(y + 1) * words],
                    &h[sy * words..(sy + 1) * words],
                );
                o.iter_mut().zip(hs).for_each(|(a, b)| *a |= b);
            }
        }
    }
    out
}

/// Dilation of a packed mask (reflected footprint, outside unset).
pub(crate) fn dilate_bits(bits: &BitRows, footprint: &Footprint) -> BitRows {
    or_filter(bits, &footprint.reflected())
}

/// Erosion of a packed mask (outside set): the complement of the dilation of the complement.
pub(crate) fn erode_bits(bits: &BitRows, footprint: &Footprint) -> BitRows {
    or_filter(&bits.not(), &footprint.runs).not()
}

/// Binary dilation, as `skimage.morphology.binary_dilation(mask, footprint)`: a pixel is set
/// when the reflected footprint placed on it covers a set pixel; pixels outside the image
/// count as unset.
#[must_use]
pub fn binary_dilation(mask: ArrayView2<bool>, footprint: &Footprint) -> Array2<bool> {
    unpack(&dilate_bits(&pack(&mask), footprint))
}

/// Binary erosion, as `skimage.morphology.binary_erosion(mask, footprint)` (`mode='ignore'`):
/// a pixel stays set when every footprint pixel inside the image is set; pixels outside the
/// image count as set, so nothing is eroded from the image border. Computed as the complement
/// of the dilation of the complement with the outside unset.
#[must_use]
pub fn binary_erosion(mask: ArrayView2<bool>, footprint: &Footprint) -> Array2<bool> {
    unpack(&erode_bits(&pack(&mask), footprint))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    fn b(a: Array2<u8>) -> Array2<bool> {
        a.mapv(|v| v != 0)
    }

    #[test]
    fn disk_matches_skimage_disk() {
        // skimage.morphology.disk(3)
        let d3 = b(array![
            [0, 0, 0, 1, 0, 0, 0],
            [0, 1, 1, 1, 1, 1, 0],
            [0, 1, 1, 1, 1, 1, 0],
            [1, 1, 1, 1, 1, 1, 1],
            [0, 1, 1, 1, 1, 1, 0],
            [0, 1, 1, 1, 1, 1, 0],
            [0, 0, 0, 1, 0, 0, 0]
        ]);
        assert_eq!(Footprint::disk(3).to_array(), d3);
        assert_eq!(Footprint::disk(0).to_array(), array![[true]]);
        assert_eq!(
            Footprint::cross().to_array(),
            b(array![[0, 1, 0], [1, 1, 1], [0, 1, 0]])
        );
        for r in 0..40usize {
            let a = Footprint::disk(r).to_array();
            for ((i, j), &v) in a.indexed_iter() {
                let (dy, dx) = (i as i64 - r as i64, j as i64 - r as i64);
                assert_eq!(v, dy * dy + dx * dx <= (r * r) as i64);
            }
        }
    }

    #[test]
    fn dilation_and_erosion_border_conventions() {
        let mut m = Array2::from_elem((7, 7), false);
        m[[3, 3]] = true;
        let d = binary_dilation(m.view(), &Footprint::disk(2));
        assert_eq!(
            d.slice(ndarray::s![1..6, 1..6]),
            Footprint::disk(2).to_array()
        );
        assert_eq!(d.iter().filter(|&&v| v).count(), 13);
        // Erosion with outside = True: a full image stays full.
        let full = Array2::from_elem((5, 6), true);
        assert_eq!(binary_erosion(full.view(), &Footprint::disk(3)), full);
        // Dilation with outside = False: an empty image stays empty.
        let empty = Array2::from_elem((5, 6), false);
        assert_eq!(binary_dilation(empty.view(), &Footprint::disk(3)), empty);
        // A one-pixel hole grows by the footprint under erosion.
        let mut holed = full.clone();
        holed[[2, 2]] = false;
        let e = binary_erosion(holed.view(), &Footprint::cross());
        assert_eq!(e.iter().filter(|&&v| !v).count(), 5);
        // Zero-sized images pass through.
        let z = Array2::from_elem((0, 4), false);
        assert_eq!(binary_dilation(z.view(), &Footprint::disk(2)).dim(), (0, 4));
        assert_eq!(binary_erosion(z.view(), &Footprint::disk(2)).dim(), (0, 4));
    }

    #[test]
    fn even_square_dilation_is_reflected() {
        // 2×2 square, centre (1, 1), offsets {-1, 0}²: erosion reads them, dilation reads the
        // reflection {0, 1}², so a dilated pixel grows up-left and an eroded hole down-right
        // (checked against skimage 0.26 binary_dilation/binary_erosion).
        let mut m = Array2::from_elem((4, 4), false);
        m[[1, 1]] = true;
        let sq = Footprint::square(2).unwrap();
        let d = binary_dilation(m.view(), &sq);
        assert_eq!(
            d,
            b(array![
                [1, 1, 0, 0],
                [1, 1, 0, 0],
                [0, 0, 0, 0],
                [0, 0, 0, 0]
            ])
        );
        let e = binary_erosion(m.mapv(|v| !v).view(), &sq);
        assert_eq!(
            e,
            b(array![
                [1, 1, 1, 1],
                [1, 0, 0, 1],
                [1, 0, 0, 1],
                [1, 1, 1, 1]
            ])
        );
        assert!(Footprint::square(0).is_err());
        assert!(Footprint::from_mask(Array2::from_elem((2, 2), false).view()).is_err());
    }
}
