//! Single-precision matrix products through the `gemm` crate (faer's kernels:
//! AVX2/AVX-512 FMA micro-kernels with cache blocking).
//!
//! Chosen by measurement, with no system library to install. The crate's AVX-512
//! kernels are compiled in (its `x86-v4` feature) and picked at run time when the
//! CPU has AVX-512F; on the 2-core AMD Zen 5 dev machine, whose FMA units are
//! 512 bits wide, they reach about twice the AVX2 rate, well above PyTorch's BLAS
//! there (docs/performance.md). Operands are strided views, so transposes
//! cost nothing.

use gemm::Parallelism;

/// A read-only strided matrix view: element (i, j) is `data[i·row_stride + j·col_stride]`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a> MatRef<'a> {
    /// A row-major (rows, cols) matrix.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        MatRef {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// A (rows, cols) block starting at `offset` inside a row-major matrix whose rows
    /// are `ld` floats apart.
    pub fn block(data: &'a [f32], offset: usize, rows: usize, cols: usize, ld: usize) -> Self {
        MatRef {
            data: &data[offset..],
            rows,
            cols,
            row_stride: ld,
            col_stride: 1,
        }
    }

    /// The transposed view.
    pub fn t(self) -> Self {
        MatRef {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }

    fn last_index(&self) -> usize {
        if self.rows == 0 || self.cols == 0 {
            return 0;
        }
        (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride
    }
}

/// Whether products run multi-threaded (on the current rayon pool) or not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Threads {
    /// Use every thread of the current rayon pool when the product is large enough.
    Pool,
    /// Single-threaded (for calls made from inside a parallel loop).
    Single,
}

/// `dst (m×n, row stride ld_dst) = a·b`, or `+=` when `accumulate`.
///
/// # Panics
/// If the shapes disagree or a view reaches past its slice (internal invariant:
/// callers build views from buffers they sized themselves).
#[track_caller]
pub fn matmul(
    dst: &mut [f32],
    ld_dst: usize,
    a: MatRef,
    b: MatRef,
    accumulate: bool,
    threads: Threads,
) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(b.rows, k, "matmul: inner dimensions differ");
    assert!(ld_dst >= n, "matmul: destination stride too small");
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        (m - 1) * ld_dst + n <= dst.len(),
        "matmul: destination too small"
    );
    if k == 0 {
        if !accumulate {
            dst.chunks_mut(ld_dst)
                .take(m)
                .for_each(|r| r[..n].fill(0.0));
        }
        return;
    }
    assert!(
        a.last_index() < a.data.len() && b.last_index() < b.data.len(),
        "matmul: view out of bounds"
    );
    let work = m * n * k;
    let par = match threads {
        Threads::Pool if work >= 1 << 18 && rayon::current_num_threads() > 1 => {
            Parallelism::Rayon(rayon::current_num_threads())
        }
        _ => Parallelism::None,
    };
    // SAFETY: every index the kernel touches is below the checked last_index of each
    // view (and (m−1)·ld_dst + n for dst), all within their slices; dst is a unique
    // borrow, so it cannot alias a or b.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            ld_dst as isize,
            accumulate,
            a.data.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

// --- Linear layers -------------------------------------------------------------------
//
// The ViT's linear maps are PyTorch `nn.Linear`: weight W (out, in) row-major, so a
// forward is x·Wᵀ and the input gradient g·W. Forward, inference backward and the
// training backward all go through these three, so the GEMM shapes, operand order
// and threading are written once.

/// `y (rows, out) = x (rows, in)·Wᵀ + b`, or `y += x·Wᵀ + b` when `accumulate` (a
/// residual branch). `b = None` leaves the bias to a later step (the patch
/// embedding adds it with the positions).
pub fn linear(
    x: MatRef,
    w: &[f32],
    b: Option<&[f32]>,
    y: &mut [f32],
    accumulate: bool,
    threads: Threads,
) {
    let out = w.len() / x.cols;
    matmul(
        y,
        out,
        x,
        MatRef::row_major(w, out, x.cols).t(),
        accumulate,
        threads,
    );
    if let Some(b) = b {
        super::ops::add_bias_rows(&mut y[..x.rows * out], b);
    }
}

/// Input gradient of [`linear`]: `dx (rows, in) = dy (rows, out)·W`.
pub fn linear_backward_input(dy: MatRef, w: &[f32], dx: &mut [f32], threads: Threads) {
    let inp = w.len() / dy.cols;
    matmul(
        dx,
        inp,
        dy,
        MatRef::row_major(w, dy.cols, inp),
        false,
        threads,
    );
}

/// Parameter gradients of [`linear`], added: `dW (out, in) += dyᵀ·x` and
/// `db += Σ_rows dy` (rows in order, so the sums are reproducible), for `rows`
/// rows of the layer's input `x` and output gradient `dy`.
pub fn linear_backward_params(
    dy: &[f32],
    x: &[f32],
    rows: usize,
    dw: &mut [f32],
    db: &mut [f32],
    threads: Threads,
) {
    let out = db.len();
    let inp = dw.len() / out;
    let dy = &dy[..rows * out];
    matmul(
        dw,
        inp,
        MatRef::row_major(dy, rows, out).t(),
        MatRef::row_major(&x[..rows * inp], rows, inp),
        true,
        threads,
    );
    super::ops::add_col_sums(db, dy);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: MatRef, b: MatRef) -> Vec<f32> {
        let mut c = vec![0.0; a.rows * b.cols];
        for i in 0..a.rows {
            for j in 0..b.cols {
                let mut s = 0.0f64;
                for p in 0..a.cols {
                    s += (a.data[i * a.row_stride + p * a.col_stride]
                        * b.data[p * b.row_stride + j * b.col_stride])
                        as f64;
                }
                c[i * b.cols + j] = s as f32;
            }
        }
        c
    }

    #[test]
    fn strided_products_match_a_naive_loop() {
        let a: Vec<f32> = (0..35).map(|i| ((i * 7) % 11) as f32 - 5.0).collect();
        let b: Vec<f32> = (0..35).map(|i| ((i * 3) % 13) as f32 * 0.5 - 3.0).collect();
        let av = MatRef::row_major(&a, 5, 7);
        let bv = MatRef::row_major(&b, 5, 7).t(); // (7, 5)
        let mut c = vec![f32::NAN; 25];
        matmul(&mut c, 5, av, bv, false, Threads::Single);
        assert_eq!(c, naive(av, bv));
        let mut acc = c.clone();
        matmul(&mut acc, 5, av, bv, true, Threads::Pool);
        assert_eq!(acc, c.iter().map(|x| 2.0 * x).collect::<Vec<_>>());
    }
}
