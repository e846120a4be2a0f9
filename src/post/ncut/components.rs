//! The 4-connected component that holds a seed (docs/postprocessing.md §1.2 step 9: TokenCut and
//! MaskCut label the bipartition with `scipy.ndimage.label`'s default cross
//! structure and keep the seed's component, which need not be the largest).

use ndarray::{Array2, ArrayView2};

/// Mask (rows, cols) of the 4-connected component of `mask` that contains
/// `seed = (row, col)`; all false if the seed is outside the grid or not set.
pub fn seed_component(mask: ArrayView2<bool>, seed: (usize, usize)) -> Array2<bool> {
    let (rows, cols) = mask.dim();
    let mut out = Array2::from_elem((rows, cols), false);
    if seed.0 >= rows || seed.1 >= cols || !mask[seed] {
        return out;
    }
    let mut stack = vec![seed];
    out[seed] = true;
    while let Some((r, c)) = stack.pop() {
        let mut visit = |rr: usize, cc: usize| {
            if mask[(rr, cc)] && !out[(rr, cc)] {
                out[(rr, cc)] = true;
                stack.push((rr, cc));
            }
        };
        if r > 0 {
            visit(r - 1, c);
        }
        if r + 1 < rows {
            visit(r + 1, c);
        }
        if c > 0 {
            visit(r, c - 1);
        }
        if c + 1 < cols {
            visit(r, c + 1);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn four_connectivity_only() {
        let m = array![
            [true, false, true],
            [false, true, true],
            [true, false, false]
        ];
        let got = seed_component(m.view(), (1, 1));
        // (1,1)–(1,2)–(0,2) are 4-connected; (0,0) and (2,0) touch only diagonally.
        let want = array![
            [false, false, true],
            [false, true, true],
            [false, false, false]
        ];
        assert_eq!(got, want);
        assert!(!seed_component(m.view(), (0, 1)).iter().any(|&b| b));
        assert!(!seed_component(m.view(), (5, 0)).iter().any(|&b| b));
    }
}
