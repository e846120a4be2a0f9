//! Binary images packed 64 pixels to a word, the working form of the morphology chain.
//!
//! Row `y` occupies words `y·words .. (y+1)·words`; pixel `x` is bit `x % 64` of word `x / 64`.
//! Bits past the last column are always zero, so word-wise operations never see them.

/// A packed binary image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BitRows {
    pub rows: usize,
    pub cols: usize,
    /// Words per row.
    pub words: usize,
    pub data: Vec<u64>,
}

/// Gathers the low bits of 8 bytes (each 0 or 1, little-endian) into one byte, byte i → bit i.
const GATHER: u64 = 0x0102_0408_1020_4080;

impl BitRows {
    /// All-zero image.
    pub fn zeros(rows: usize, cols: usize) -> Self {
        let words = cols.div_ceil(64);
        BitRows {
            rows,
            cols,
            words,
            data: vec![0; rows * words],
        }
    }

    /// Packs `pred(i)` for the row-major pixels `i` of a `rows × cols` image.
    fn from_pred(rows: usize, cols: usize, pred: impl Fn(usize) -> bool) -> Self {
        let mut out = Self::zeros(rows, cols);
        if out.words == 0 {
            return out;
        }
        for (y, row) in out.data.chunks_exact_mut(out.words).enumerate() {
            let base = y * cols;
            for (wi, w) in row.iter_mut().enumerate() {
                let x0 = wi * 64;
                let n = (cols - x0).min(64);
                let mut bits = 0u64;
                let mut k = 0;
                // Eight pixels at a time: bytes of 0/1 gathered with one multiply.
                while k + 8 <= n {
                    let bytes: [u8; 8] = std::array::from_fn(|i| pred(base + x0 + k + i) as u8);
                    bits |= (u64::from_le_bytes(bytes).wrapping_mul(GATHER) >> 56) << k;
                    k += 8;
                }
                while k < n {
                    bits |= (pred(base + x0 + k) as u64) << k;
                    k += 1;
                }
                *w = bits;
            }
        }
        out
    }

    /// Packs a row-major boolean image.
    pub fn from_bools(src: &[bool], rows: usize, cols: usize) -> Self {
        debug_assert_eq!(src.len(), rows * cols);
        Self::from_pred(rows, cols, |i| src[i])
    }

    /// Packs `src > threshold` for a row-major f32 image.
    pub fn from_greater(src: &[f32], rows: usize, cols: usize, threshold: f32) -> Self {
        debug_assert_eq!(src.len(), rows * cols);
        Self::from_pred(rows, cols, |i| src[i] > threshold)
    }

    /// Unpacks to row-major booleans.
    pub fn to_bools(&self) -> Vec<bool> {
        let mut out = vec![false; self.rows * self.cols];
        if self.words == 0 {
            return out;
        }
        for (row, dst) in self
            .data
            .chunks_exact(self.words)
            .zip(out.chunks_exact_mut(self.cols))
        {
            for (w, chunk) in row.iter().zip(dst.chunks_mut(64)) {
                for (i, o) in chunk.iter_mut().enumerate() {
                    *o = (w >> i) & 1 != 0;
                }
            }
        }
        out
    }

    /// Clears the bits past the last column of every row.
    pub fn clear_tail(&mut self) {
        if !self.cols.is_multiple_of(64) && self.words > 0 {
            let keep = (1u64 << (self.cols % 64)) - 1;
            for row in self.data.chunks_exact_mut(self.words) {
                row[self.words - 1] &= keep;
            }
        }
    }

    /// The complement.
    pub fn not(&self) -> Self {
        let mut out = BitRows {
            rows: self.rows,
            cols: self.cols,
            words: self.words,
            data: self.data.iter().map(|w| !w).collect(),
        };
        out.clear_tail();
        out
    }

    pub fn row(&self, y: usize) -> &[u64] {
        &self.data[y * self.words..(y + 1) * self.words]
    }

    /// Sets pixels `start..end` of row `y`.
    pub fn set_range(&mut self, y: usize, start: usize, end: usize) {
        if start >= end {
            return;
        }
        let row = &mut self.data[y * self.words..(y + 1) * self.words];
        let (w0, w1) = (start / 64, (end - 1) / 64);
        let lo_mask = !0u64 << (start % 64);
        let hi_mask = !0u64 >> (63 - (end - 1) % 64);
        if w0 == w1 {
            row[w0] |= lo_mask & hi_mask;
        } else {
            row[w0] |= lo_mask;
            row[w0 + 1..w1].fill(!0);
            row[w1] |= hi_mask;
        }
    }

    /// Calls `f(start, end)` for every run of set pixels of row `y`, left to right.
    pub fn for_each_run(&self, y: usize, mut f: impl FnMut(usize, usize)) {
        let row = self.row(y);
        let n = row.len();
        let Some(&first) = row.first() else {
            return;
        };
        // `w`: the bits of word `i` not yet consumed.
        let (mut i, mut w) = (0usize, first);
        loop {
            while w == 0 {
                i += 1;
                if i == n {
                    return;
                }
                w = row[i];
            }
            let start = i * 64 + w.trailing_zeros() as usize;
            // Clear bits at or after `start`.
            let mut z = !w & (!0u64 << (start % 64));
            while z == 0 {
                i += 1;
                if i == n {
                    f(start, self.cols);
                    return;
                }
                z = !row[i];
            }
            let end = i * 64 + z.trailing_zeros() as usize;
            f(start, end);
            w = row[i] & (!0u64 << (end % 64));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs_naive(v: &[bool]) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        let mut x = 0;
        while x < v.len() {
            if v[x] {
                let s = x;
                while x < v.len() && v[x] {
                    x += 1;
                }
                out.push((s, x));
            } else {
                x += 1;
            }
        }
        out
    }

    #[test]
    fn pack_unpack_runs_and_ranges_round_trip() {
        let mut seed = 12345u64;
        let mut rnd = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize
        };
        for case in 0..400 {
            let cols = 1 + rnd() % 200;
            let density = rnd() % 100;
            let v: Vec<bool> = (0..cols).map(|_| rnd() % 100 < density).collect();
            let b = BitRows::from_bools(&v, 1, cols);
            assert_eq!(b.to_bools(), v, "case {case}");
            assert_eq!(
                b.data
                    .iter()
                    .map(|w| w.count_ones() as usize)
                    .sum::<usize>(),
                v.iter().filter(|&&x| x).count()
            );
            let mut runs = Vec::new();
            b.for_each_run(0, |s, e| runs.push((s, e)));
            assert_eq!(runs, runs_naive(&v), "case {case}, cols {cols}");
            let n = b.not();
            assert_eq!(n.to_bools(), v.iter().map(|x| !x).collect::<Vec<_>>());
            let mut z = BitRows::zeros(1, cols);
            for &(s, e) in &runs {
                z.set_range(0, s, e);
            }
            assert_eq!(z, b);
        }
        let f = BitRows::from_greater(&[0.1, 0.5, 0.9], 1, 3, 0.5);
        assert_eq!(f.to_bools(), vec![false, false, true]);
        assert_eq!(BitRows::zeros(0, 5).to_bools(), Vec::<bool>::new());
        assert_eq!(BitRows::zeros(3, 0).to_bools(), Vec::<bool>::new());
    }
}
