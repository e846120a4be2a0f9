//! Row-major GEMMs as column-major BLAS calls (cuBLAS), without moving data.
//!
//! A row-major (r, c) matrix with rows `ld` apart, read column-major with leading
//! dimension `ld`, is its transpose. So row-major `C = op(A)·op(B)` is computed as the
//! column-major `Cᵀ = op(B)ᵀ·op(A)ᵀ`: the BLAS call's first operand is B's storage,
//! its second A's, and the sizes m and n swap. [`reference_sgemm`] executes such a
//! call on the CPU with cuBLAS's semantics, so the mapping is tested without a GPU.

use super::Precision;

/// A column-major, optionally strided-batched f32 GEMM:
/// `C_i = op(A_i)·op(B_i) + beta·C_i`, `X_i` starting `i·stride_x` floats in, with
/// A and B rounded to `precision`'s operand format (f32: untouched, `sgemm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColMajorGemm {
    pub trans_a: bool,
    pub trans_b: bool,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub lda: usize,
    pub ldb: usize,
    pub ldc: usize,
    pub batch: usize,
    pub stride_a: usize,
    pub stride_b: usize,
    pub stride_c: usize,
    pub precision: Precision,
}

/// One row-major operand: rows `ld` floats apart, used transposed when `t`; batch
/// members `stride` floats apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowMajor {
    pub ld: usize,
    pub t: bool,
    pub stride: usize,
}

/// The column-major call computing row-major `C (m, n) = op(A) (m, k)·op(B) (k, n)`,
/// C rows `ldc` apart, `batch` times with C members `stride_c` apart. Its first
/// operand is **B's** storage and its second **A's**. Precision f32; set
/// [`ColMajorGemm::precision`] for another.
#[allow(clippy::too_many_arguments)]
pub fn row_major_gemm(
    m: usize,
    n: usize,
    k: usize,
    a: RowMajor,
    b: RowMajor,
    ldc: usize,
    batch: usize,
    stride_c: usize,
) -> ColMajorGemm {
    ColMajorGemm {
        trans_a: b.t,
        trans_b: a.t,
        m: n,
        n: m,
        k,
        lda: b.ld,
        ldb: a.ld,
        ldc,
        batch,
        stride_a: b.stride,
        stride_b: a.stride,
        stride_c,
        precision: Precision::F32,
    }
}

/// Floats spanned by `rows` rows of `cols` that are `ld` apart.
pub fn span(rows: usize, cols: usize, ld: usize) -> usize {
    if rows == 0 {
        0
    } else {
        (rows - 1) * ld + cols
    }
}

/// What cuBLAS computes for `g` (alpha = 1), on the CPU in f64 accumulation of the
/// operands rounded to `g.precision`. `a`, `b` are the call's first and second
/// operands. For tests.
///
/// # Panics
/// If a buffer is shorter than the call reads or writes.
pub fn reference_sgemm(g: &ColMajorGemm, a: &[f32], b: &[f32], c: &mut [f32], beta: f32) {
    // Column-major element (i, j) of a matrix with leading dimension ld: i + j·ld.
    let at = |x: &[f32], base: usize, ld: usize, t: bool, i: usize, j: usize| {
        g.precision.round_operand(if t {
            x[base + j + i * ld]
        } else {
            x[base + i + j * ld]
        })
    };
    for bi in 0..g.batch {
        for j in 0..g.n {
            for i in 0..g.m {
                let mut s = 0f64;
                for p in 0..g.k {
                    s += at(a, bi * g.stride_a, g.lda, g.trans_a, i, p) as f64
                        * at(b, bi * g.stride_b, g.ldb, g.trans_b, p, j) as f64;
                }
                let ci = bi * g.stride_c + i + j * g.ldc;
                let prev = if beta == 0.0 {
                    0.0
                } else {
                    beta as f64 * c[ci] as f64
                };
                c[ci] = (s + prev) as f32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 7919 + seed * 104_729) % 1000) as f32 / 500.0 - 1.0)
            .collect()
    }

    #[test]
    fn row_major_products_come_out_of_the_column_major_call() {
        let (m, n, k) = (5, 7, 3);
        for (a_t, b_t) in [(false, false), (false, true), (true, false), (true, true)] {
            // Padded leading dimensions, so ld ≠ width is exercised too.
            let (a_rows, a_cols) = if a_t { (k, m) } else { (m, k) };
            let (b_rows, b_cols) = if b_t { (n, k) } else { (k, n) };
            let (lda, ldb, ldc) = (a_cols + 2, b_cols + 1, n + 3);
            let a = seq(a_rows * lda, 1);
            let b = seq(b_rows * ldb, 2);
            let get_a = |i: usize, p: usize| if a_t { a[p * lda + i] } else { a[i * lda + p] };
            let get_b = |p: usize, j: usize| if b_t { b[j * ldb + p] } else { b[p * ldb + j] };
            let g = row_major_gemm(
                m,
                n,
                k,
                RowMajor {
                    ld: lda,
                    t: a_t,
                    stride: 0,
                },
                RowMajor {
                    ld: ldb,
                    t: b_t,
                    stride: 0,
                },
                ldc,
                1,
                0,
            );
            let mut c = vec![0.5f32; m * ldc];
            reference_sgemm(&g, &b, &a, &mut c, 1.0);
            for i in 0..m {
                for j in 0..n {
                    let want: f32 = 0.5 + (0..k).map(|p| get_a(i, p) * get_b(p, j)).sum::<f32>();
                    assert!(
                        (c[i * ldc + j] - want).abs() < 1e-5,
                        "{a_t} {b_t} ({i},{j})"
                    );
                }
            }
        }
    }
}
