//! Connected components by runs: labelling, border clearing, small-object removal, hole filling.
//!
//! Masks are packed 64 pixels to a word ([`BitRows`]) and each row is cut into runs with
//! bit scans (label images: runs of equal non-zero value);
//! a run is joined (union-find) with the runs of the previous row that overlap it, widened by one
//! pixel on each side for 8-connectivity. Runs are created in raster order and a set's root is its
//! smallest run index, so numbering the roots in order gives scikit-image's labels: raster order
//! of each component's first pixel. Work is O(pixels) for the scan plus O(runs) for the rest,
//! and the outputs are written run by run.

use ndarray::{Array2, ArrayView2};

use super::bits::BitRows;
use crate::error::{Error, Result};
pub(crate) use crate::post::otsu::row_major;

/// A label image: 0 is background, components are numbered `1..=count`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labeling {
    /// Label of each pixel, `(rows, cols)`.
    pub labels: Array2<u32>,
    /// Number of components.
    pub count: usize,
}

impl Labeling {
    /// Pixels per label; index 0 is the background.
    #[must_use]
    pub fn sizes(&self) -> Vec<usize> {
        let mut sizes = vec![0usize; self.count + 1];
        for &l in self.labels.iter() {
            sizes[l as usize] += 1;
        }
        sizes
    }
}

/// `connectivity` 1 → 4-neighbours (false), 2 → 8-neighbours (true).
pub(crate) fn check_connectivity(connectivity: usize) -> Result<bool> {
    match connectivity {
        1 => Ok(false),
        2 => Ok(true),
        c => Err(Error::param(
            "connectivity",
            format!("must be 1 (4-neighbours) or 2 (8-neighbours) for a 2-D image, got {c}"),
        )),
    }
}

pub(crate) fn from_vec<T>(shape: (usize, usize), v: Vec<T>) -> Array2<T> {
    Array2::from_shape_vec(shape, v).expect("one value per pixel")
}

/// A run `[start, end)` of row `row`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Span {
    pub row: usize,
    pub start: usize,
    pub end: usize,
}

/// The components of an image, as runs with their final labels.
pub(crate) struct Components {
    pub rows: usize,
    pub cols: usize,
    pub spans: Vec<Span>,
    /// Final label (1..=count) of each span.
    pub label: Vec<u32>,
    pub count: usize,
}

fn find(parent: &mut [u32], mut x: u32) -> u32 {
    let mut root = x;
    while parent[root as usize] != root {
        root = parent[root as usize];
    }
    while parent[x as usize] != root {
        let next = parent[x as usize];
        parent[x as usize] = root;
        x = next;
    }
    root
}

/// Joins the sets of `a` and `b`; the smaller root survives, so a root stays the first run (in
/// raster order) of its set.
fn union(parent: &mut [u32], a: u32, b: u32) {
    let ra = find(parent, a);
    let rb = find(parent, b);
    if ra < rb {
        parent[rb as usize] = ra;
    } else if rb < ra {
        parent[ra as usize] = rb;
    }
}

impl Components {
    /// Links runs into components. `row_runs(y, out)` appends the runs of row `y` left to right;
    /// an overlapping run of the previous row (widened by one pixel for 8-connectivity) joins
    /// when `same(previous, current)` holds.
    fn build(
        (rows, cols): (usize, usize),
        eight: bool,
        mut row_runs: impl FnMut(usize, &mut Vec<Span>),
        same: impl Fn(&Span, &Span) -> bool,
    ) -> Self {
        let mut spans: Vec<Span> = Vec::new();
        let mut parent: Vec<u32> = Vec::new();
        let widen = eight as usize;
        let (mut prev_begin, mut prev_end) = (0usize, 0usize);
        for y in 0..rows {
            let cur_begin = spans.len();
            row_runs(y, &mut spans);
            let mut k = prev_begin;
            for id in cur_begin..spans.len() {
                parent.push(id as u32);
                let cur = spans[id];
                // Previous-row runs [ps, pe) touching [start − w, end + w) join this one.
                let lo = cur.start.saturating_sub(widen);
                let hi = cur.end + widen;
                while k < prev_end && spans[k].end <= lo {
                    k += 1;
                }
                let mut j = k;
                while j < prev_end && spans[j].start < hi {
                    if spans[j].end > lo && same(&spans[j], &cur) {
                        union(&mut parent, id as u32, j as u32);
                    }
                    j += 1;
                }
            }
            prev_begin = cur_begin;
            prev_end = spans.len();
        }
        let mut label = vec![0u32; spans.len()];
        let mut count = 0u32;
        for i in 0..spans.len() {
            let r = find(&mut parent, i as u32) as usize;
            if r == i {
                count += 1;
                label[i] = count;
            } else {
                label[i] = label[r];
            }
        }
        Components {
            rows,
            cols,
            spans,
            label,
            count: count as usize,
        }
    }

    /// Components of the set pixels of a packed mask.
    pub fn of_mask(bits: &BitRows, eight: bool) -> Self {
        Self::build(
            (bits.rows, bits.cols),
            eight,
            |y, out| bits.for_each_run(y, |start, end| out.push(Span { row: y, start, end })),
            |_, _| true,
        )
    }

    /// Components of the non-zero pixels of a label image: 8-connected regions of equal value.
    pub fn of_values(values: &[u32], (rows, cols): (usize, usize), eight: bool) -> Self {
        Self::build(
            (rows, cols),
            eight,
            |y, out| {
                let row = &values[y * cols..(y + 1) * cols];
                let mut x = 0;
                while x < cols {
                    let v = row[x];
                    let start = x;
                    x += 1;
                    while x < cols && row[x] == v {
                        x += 1;
                    }
                    if v != 0 {
                        out.push(Span {
                            row: y,
                            start,
                            end: x,
                        });
                    }
                }
            },
            |a, b| values[a.row * cols + a.start] == values[b.row * cols + b.start],
        )
    }

    /// The label image.
    pub fn label_image(&self) -> Vec<u32> {
        let mut out = vec![0u32; self.rows * self.cols];
        for (s, &l) in self.spans.iter().zip(&self.label) {
            out[s.row * self.cols + s.start..s.row * self.cols + s.end].fill(l);
        }
        out
    }

    /// Pixels per label; index 0 unused.
    pub fn sizes(&self) -> Vec<usize> {
        let mut sizes = vec![0usize; self.count + 1];
        for (s, &l) in self.spans.iter().zip(&self.label) {
            sizes[l as usize] += s.end - s.start;
        }
        sizes
    }

    /// Labels with a pixel in the outermost `buffer_size + 1` rows or columns; index 0 unused.
    pub fn touching_border(&self, buffer_size: usize) -> Vec<bool> {
        let b = buffer_size + 1;
        let mut touch = vec![false; self.count + 1];
        for (s, &l) in self.spans.iter().zip(&self.label) {
            if s.row < b || s.row + b >= self.rows || s.start < b || s.end + b > self.cols {
                touch[l as usize] = true;
            }
        }
        touch
    }

    /// Sets, in `out`, the pixels of the components whose label satisfies `pick`.
    pub fn paint(&self, out: &mut BitRows, pick: impl Fn(usize) -> bool) {
        for (s, &l) in self.spans.iter().zip(&self.label) {
            if pick(l as usize) {
                out.set_range(s.row, s.start, s.end);
            }
        }
    }

    /// A packed mask of the components whose label satisfies `keep`.
    pub fn mask(&self, keep: impl Fn(usize) -> bool) -> BitRows {
        let mut out = BitRows::zeros(self.rows, self.cols);
        self.paint(&mut out, keep);
        out
    }
}

/// Packs a boolean view.
pub(crate) fn pack(mask: &ArrayView2<bool>) -> BitRows {
    let (rows, cols) = mask.dim();
    BitRows::from_bools(&row_major(mask), rows, cols)
}

/// Unpacks into an array.
pub(crate) fn unpack(bits: &BitRows) -> Array2<bool> {
    from_vec((bits.rows, bits.cols), bits.to_bools())
}

/// [`clear_border`] (buffer 0 or more) on a packed mask with the given connectivity for the
/// components (8 for scikit-image's clear_border on a mask).
pub(crate) fn clear_border_bits(bits: &BitRows, eight: bool, buffer_size: usize) -> BitRows {
    let comps = Components::of_mask(bits, eight);
    let touch = comps.touching_border(buffer_size);
    comps.mask(|l| !touch[l])
}

/// [`remove_small_objects`] on a packed mask.
pub(crate) fn remove_small_objects_bits(bits: &BitRows, min_size: usize, eight: bool) -> BitRows {
    if min_size <= 1 {
        return bits.clone();
    }
    let comps = Components::of_mask(bits, eight);
    let sizes = comps.sizes();
    comps.mask(|l| sizes[l] >= min_size)
}

/// [`binary_fill_holes`] on a packed mask.
pub(crate) fn fill_holes_bits(bits: &BitRows) -> BitRows {
    let background = Components::of_mask(&bits.not(), false);
    let outside = background.touching_border(0);
    let mut out = bits.clone();
    background.paint(&mut out, |l| !outside[l]);
    out
}

/// Connected components of a mask, as `skimage.measure.label(mask, connectivity=c)`.
///
/// `connectivity` 1 joins the 4 edge neighbours, 2 (scikit-image's 2-D default) also the
/// diagonal ones. Labels are `1..=count` in raster order of each component's first pixel.
///
/// # Errors
/// [`Error::InvalidParam`] when `connectivity` is not 1 or 2.
pub fn label(mask: ArrayView2<bool>, connectivity: usize) -> Result<Labeling> {
    let eight = check_connectivity(connectivity)?;
    let comps = Components::of_mask(&pack(&mask), eight);
    Ok(Labeling {
        labels: from_vec(mask.dim(), comps.label_image()),
        count: comps.count,
    })
}

pub(crate) fn check_buffer(shape: (usize, usize), buffer_size: usize) -> Result<()> {
    if buffer_size >= shape.0.min(shape.1) {
        return Err(Error::param(
            "buffer_size",
            format!(
                "must be smaller than both image dimensions {:?}, got {buffer_size} \
                 (scikit-image: \"buffer size may not be greater than labels size\")",
                [shape.0, shape.1]
            ),
        ));
    }
    Ok(())
}

/// Removes the components (8-connected, whatever the connectivity used elsewhere) that touch
/// the border, as `skimage.segmentation.clear_border(mask, buffer_size)`. The border is the
/// outermost `buffer_size + 1` rows and columns.
///
/// # Errors
/// [`Error::InvalidParam`] when `buffer_size` is not smaller than both dimensions (scikit-image
/// raises there; this includes an empty image).
pub fn clear_border(mask: ArrayView2<bool>, buffer_size: usize) -> Result<Array2<bool>> {
    check_buffer(mask.dim(), buffer_size)?;
    Ok(unpack(&clear_border_bits(&pack(&mask), true, buffer_size)))
}

/// `skimage.segmentation.clear_border` on a label image: regions of equal non-zero value,
/// 8-connected, that touch the border become 0; every other pixel keeps its value. For the
/// output of [`label`] this removes exactly the labels seen on the border (so with
/// connectivity 1, a component that only touches a border component diagonally stays).
///
/// # Errors
/// As [`clear_border`].
pub fn clear_border_labels(labels: ArrayView2<u32>, buffer_size: usize) -> Result<Array2<u32>> {
    check_buffer(labels.dim(), buffer_size)?;
    let values = row_major(&labels);
    let comps = Components::of_values(&values, labels.dim(), true);
    let touch = comps.touching_border(buffer_size);
    let mut out = values.into_owned();
    for (s, &l) in comps.spans.iter().zip(&comps.label) {
        if touch[l as usize] {
            out[s.row * comps.cols + s.start..s.row * comps.cols + s.end].fill(0);
        }
    }
    Ok(from_vec(labels.dim(), out))
}

/// Removes the connected components with **fewer than** `min_size` pixels.
///
/// Same result as `skimage.morphology.remove_small_objects(mask, max_size=min_size − 1,
/// connectivity=c)` in scikit-image 0.26, and `min_size=min_size` up to 0.25 (0.26.0's
/// deprecated `min_size` removes `≤`, see the module docs). `min_size` 0 or 1 removes nothing.
/// scikit-image's default connectivity here is 1 (4-neighbours).
///
/// # Errors
/// [`Error::InvalidParam`] when `connectivity` is not 1 or 2.
pub fn remove_small_objects(
    mask: ArrayView2<bool>,
    min_size: usize,
    connectivity: usize,
) -> Result<Array2<bool>> {
    let eight = check_connectivity(connectivity)?;
    if min_size <= 1 {
        return Ok(mask.to_owned());
    }
    Ok(unpack(&remove_small_objects_bits(
        &pack(&mask),
        min_size,
        eight,
    )))
}

/// Fills the holes of a mask, as `scipy.ndimage.binary_fill_holes(mask)` (default structure):
/// background pixels 4-connected to a background pixel on the image edge stay background,
/// every other pixel becomes foreground. A background region that reaches the outside only
/// through a diagonal step is therefore a hole and gets filled.
#[must_use]
pub fn binary_fill_holes(mask: ArrayView2<bool>) -> Array2<bool> {
    unpack(&fill_holes_bits(&pack(&mask)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    fn b(a: Array2<u8>) -> Array2<bool> {
        a.mapv(|v| v != 0)
    }

    #[test]
    fn label_raster_order_and_connectivity() {
        let m = b(array![[0, 1, 0, 1], [1, 0, 0, 1], [0, 0, 1, 0]]);
        // 4-neighbours: (0,1), (0,3)+(1,3), (1,0), (2,2) → 4 labels in raster order.
        let l4 = label(m.view(), 1).unwrap();
        assert_eq!(l4.count, 4);
        assert_eq!(l4.labels, array![[0, 1, 0, 2], [3, 0, 0, 2], [0, 0, 4, 0]]);
        // 8-neighbours: (0,1)+(1,0) and (0,3)+(1,3)+(2,2).
        let l8 = label(m.view(), 2).unwrap();
        assert_eq!(l8.count, 2);
        assert_eq!(l8.labels, array![[0, 1, 0, 2], [1, 0, 0, 2], [0, 0, 2, 0]]);
        assert_eq!(l8.sizes(), vec![7, 2, 3]);
        assert!(label(m.view(), 0).is_err());
        assert!(label(m.view(), 3).is_err());
    }

    #[test]
    fn label_merges_late_and_keeps_first_pixel_order() {
        // A U and a W: runs on the first row merge further down; the later-started component
        // (row 0, col 4) must still get label 2 even though its runs merge after label 1's.
        let m = b(array![
            [1, 0, 1, 0, 1, 0, 1],
            [1, 0, 1, 0, 1, 0, 1],
            [1, 1, 1, 0, 1, 1, 1],
            [0, 0, 0, 0, 0, 0, 0],
            [0, 1, 0, 0, 0, 0, 0]
        ]);
        for c in [1, 2] {
            let l = label(m.view(), c).unwrap();
            assert_eq!(l.count, 3);
            assert_eq!(l.labels.row(0).to_vec(), vec![1, 0, 1, 0, 2, 0, 2]);
            assert_eq!(l.labels[[4, 1]], 3);
        }
    }

    #[test]
    fn label_of_non_contiguous_view() {
        let m = b(array![[1, 0, 0], [1, 0, 1], [0, 0, 1]]);
        let t = m.t();
        assert_eq!(label(t, 1).unwrap(), label(t.to_owned().view(), 1).unwrap());
    }

    #[test]
    fn clear_border_uses_eight_neighbours_and_buffer() {
        let m = b(array![
            [1, 0, 0, 0, 0],
            [0, 1, 0, 0, 0],
            [0, 0, 0, 0, 0],
            [0, 0, 0, 1, 0],
            [0, 0, 0, 0, 0]
        ]);
        let c = clear_border(m.view(), 0).unwrap();
        // (1,1) is diagonal to the corner pixel → removed with it; (3,3) stays.
        assert_eq!(c.iter().filter(|&&v| v).count(), 1);
        assert!(c[[3, 3]]);
        assert!(!clear_border(m.view(), 1).unwrap().iter().any(|&v| v));
        assert!(clear_border(m.view(), 5).is_err());
        assert!(clear_border(Array2::from_elem((0, 3), false).view(), 0).is_err());
        // Label image: with 4-connectivity labels, the diagonal neighbour keeps its label.
        let l = label(m.view(), 1).unwrap();
        let cl = clear_border_labels(l.labels.view(), 0).unwrap();
        assert_eq!(
            cl,
            array![
                [0, 0, 0, 0, 0],
                [0, 2, 0, 0, 0],
                [0, 0, 0, 0, 0],
                [0, 0, 0, 3, 0],
                [0, 0, 0, 0, 0]
            ]
        );
        // Equal values that touch belong together; different values stay apart.
        let v = array![[0, 0, 0, 0], [0, 5, 6, 0], [5, 5, 6, 0], [0, 0, 0, 0]];
        assert_eq!(
            clear_border_labels(v.view(), 0).unwrap(),
            array![[0, 0, 0, 0], [0, 0, 6, 0], [0, 0, 6, 0], [0, 0, 0, 0]]
        );
    }

    #[test]
    fn remove_small_objects_is_strict() {
        let m = b(array![
            [1, 0, 1, 1, 0],
            [0, 0, 0, 0, 0],
            [1, 1, 1, 0, 1],
            [0, 0, 0, 1, 0]
        ]);
        let count = |a: &Array2<bool>| a.iter().filter(|&&v| v).count();
        // 4-conn sizes 1, 2, 3, 1, 1; 8-conn sizes 1, 2, 5 ((2,2)–(3,3)–(2,4) diagonally).
        assert_eq!(count(&remove_small_objects(m.view(), 0, 1).unwrap()), 8);
        assert_eq!(count(&remove_small_objects(m.view(), 2, 1).unwrap()), 5);
        assert_eq!(count(&remove_small_objects(m.view(), 3, 1).unwrap()), 3);
        assert_eq!(count(&remove_small_objects(m.view(), 2, 2).unwrap()), 7);
        assert_eq!(count(&remove_small_objects(m.view(), 5, 2).unwrap()), 5);
        assert_eq!(count(&remove_small_objects(m.view(), 6, 2).unwrap()), 0);
        assert!(remove_small_objects(m.view(), 2, 0).is_err());
    }

    #[test]
    fn fill_holes_counts_diagonal_exits_as_holes() {
        // The centre hole touches the outside-connected background only diagonally.
        let m = b(array![
            [0, 0, 0, 0, 0],
            [0, 1, 1, 1, 0],
            [0, 1, 0, 1, 0],
            [0, 1, 1, 1, 0],
            [0, 0, 0, 0, 0]
        ]);
        assert!(binary_fill_holes(m.view())[[2, 2]]);
        let m2 = b(array![
            [1, 1, 1, 0],
            [1, 0, 1, 0],
            [1, 1, 0, 1],
            [0, 0, 1, 1]
        ]);
        // (1,1) and (2,2) have only foreground 4-neighbours → holes; (0,3), (1,3), (3,0),
        // (3,1) reach the edge.
        let f2 = binary_fill_holes(m2.view());
        assert!(f2[[1, 1]] && f2[[2, 2]]);
        assert!(!f2[[0, 3]] && !f2[[1, 3]] && !f2[[3, 0]] && !f2[[3, 1]]);
        let z = Array2::from_elem((0, 4), false);
        assert_eq!(binary_fill_holes(z.view()).dim(), (0, 4));
    }
}
