//! Dense generalized eigensolver for the normalized cut: the second-smallest
//! eigenpair of `(D − W) v = λ D v`, as `scipy.linalg.eigh(D−W, D,
//! subset_by_index=[1, 2])` (LAPACK `dsygvx`) computes it.
//!
//! Steps (docs/postprocessing.md §1.2 step 5 and §3.3): with `D = LLᵀ`, `L = D^{1/2}` (what
//! `dpotrf` gives for a diagonal matrix), the problem becomes the standard one
//! `C y = λ y`, `C = D^{−1/2}(D − W)D^{−1/2}` (`dsygst`), `v = D^{−1/2} y`.
//! `C` is reduced to tridiagonal `T = QᵀCQ` ([`super::householder`], `dsytrd`),
//! λ₂ and λ₃ come from bisection (`dstebz`), `z` from inverse iteration with
//! `dstein`'s sign rule, `y = Qz` (`dormtr`) and `v = D^{−1/2}y`. Because `‖y‖ = 1`,
//! `vᵀDv = 1`: the same D-normalisation scipy returns, and the same sign.

use ndarray::{Array1, ArrayView2};

use super::householder::{col_start, tridiagonalize};
use super::tridiagonal;
use crate::error::{Error, Result};

/// The Fiedler pair of a graph: the eigenvector of the second-smallest eigenvalue
/// of `(D − W) v = λ D v`.
#[derive(Clone, Debug)]
pub struct Fiedler {
    /// `v` (N), D-normalised (`vᵀDv = 1`). Its sign follows the solver: LAPACK
    /// `dsygvx`'s for [`fiedler_dense`], an arbitrary but deterministic one for the
    /// sparse solver.
    pub vector: Array1<f64>,
    /// λ₂, the second-smallest eigenvalue (λ₁ = 0 for a connected graph).
    pub eigenvalue: f64,
    /// λ₃ when N ≥ 3 (scipy computes it too; a small `λ₃ − λ₂` means the
    /// eigenvector is ill-determined, docs/postprocessing.md §1.3).
    pub next_eigenvalue: Option<f64>,
    /// Degrees `d_i = Σ_j W_ij` (N).
    pub degrees: Array1<f64>,
}

/// Checks a dense affinity matrix and returns its degrees (row sums).
pub(crate) fn degrees_of(w: &ArrayView2<f64>) -> Result<Array1<f64>> {
    let (n, m) = w.dim();
    if n != m {
        return Err(Error::shape("affinity W (N, N)", &[n, n], &[n, m]));
    }
    if n < 2 {
        return Err(Error::param(
            "affinity",
            format!("the graph needs at least 2 nodes, got {n}"),
        ));
    }
    if let Some(bad) = w.iter().position(|x| !x.is_finite()) {
        return Err(Error::param(
            "affinity",
            format!("entry ({}, {}) is not finite", bad / n, bad % n),
        ));
    }
    let degrees: Array1<f64> = w.rows().into_iter().map(|r| r.sum()).collect();
    if let Some(i) = degrees.iter().position(|&x| x.is_nan() || x <= 0.0) {
        return Err(Error::param(
            "affinity",
            format!(
                "node {i} has degree {} (degrees must be > 0; D must be positive definite)",
                degrees[i]
            ),
        ));
    }
    Ok(degrees)
}

/// Fiedler pair of the dense affinity `w` (N, N), with scipy/LAPACK `dsygvx`
/// semantics: `vᵀDv = 1` and LAPACK's sign (`dstein`: the largest-magnitude entry
/// of the tridiagonal-basis vector is positive), which MaskCut's corner rule
/// depends on (docs/postprocessing.md §3.3). Only the lower triangle of `w` enters the
/// eigenproblem (LAPACK `uplo = 'L'`); the degrees are full row sums, as in
/// TokenCut (`W.sum(1)`).
///
/// Cost: O(N³) for the reduction, which is memory-bound (on the shared 2-core dev
/// machine: N = 196 ≈ 2 ms, N = 784 ≈ 70–100 ms, N = 3600 ≈ 8–12 s, on a par with
/// or faster than scipy's `dsygvx`), O(N²) for the rest. Memory: `w` plus a packed
/// triangle of N(N+1)/2 f64.
///
/// # Errors
/// [`Error::Shape`] if `w` is not square; [`Error::InvalidParam`] if N < 2, an
/// entry is not finite, or a degree is not positive.
pub fn fiedler_dense(w: ArrayView2<f64>) -> Result<Fiedler> {
    let degrees = degrees_of(&w)?;
    let n = degrees.len();
    let sqrt_d: Vec<f64> = degrees.iter().map(|d| d.sqrt()).collect();
    // C = D^{-1/2}(D − W)D^{-1/2}, lower triangle, packed by columns.
    let mut packed = vec![0.0; n * (n + 1) / 2];
    for j in 0..n {
        let base = col_start(n, j);
        packed[base] = ((degrees[j] - w[[j, j]]) / sqrt_d[j]) / sqrt_d[j];
        for i in j + 1..n {
            packed[base + i - j] = (-w[[i, j]] / sqrt_d[i]) / sqrt_d[j];
        }
    }
    let tri = tridiagonalize(packed, n);
    let lambda2 = tridiagonal::eigenvalue(&tri.d, &tri.e, 1);
    let lambda3 = (n >= 3).then(|| tridiagonal::eigenvalue(&tri.d, &tri.e, 2));
    let mut y = tridiagonal::eigenvector(&tri.d, &tri.e, lambda2);
    tri.apply_q(&mut y);
    let vector: Array1<f64> = y.iter().zip(&sqrt_d).map(|(yi, si)| yi / si).collect();
    Ok(Fiedler {
        vector,
        eigenvalue: lambda2,
        next_eigenvalue: lambda3,
        degrees,
    })
}
