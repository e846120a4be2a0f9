//! TokenCut's feature graph (docs/postprocessing.md §1.2 steps 1–3): L2-normalised rows, cosine
//! similarity, and the binary graph `W_ij = 1` if `S_ij > τ`, else `ε`.

use ndarray::{s, Array2, ArrayView2, Axis};
use rayon::prelude::*;

use crate::backend::cpu::gemm::{matmul, MatRef, Threads};
use crate::error::{Error, Result};

/// torch `F.normalize`'s default `eps`: rows are divided by `max(‖x‖₂, 1e-12)`.
pub const NORMALIZE_EPS: f64 = 1e-12;

/// Widens an `f32` parameter through its shortest decimal form, so `1e-5_f32`
/// becomes the `f64` `1e-5` the Python reference uses (a plain `as f64` would give
/// 9.99999974737875e-6).
pub(crate) fn widen_decimal(x: f32) -> f64 {
    format!("{x}").parse().unwrap_or(x as f64)
}

fn check_features<T: Copy + Into<f64>>(features: &ArrayView2<T>) -> Result<()> {
    let (n, dim) = features.dim();
    if n < 2 {
        return Err(Error::param(
            "features",
            format!("the graph needs at least 2 tokens, got {n}"),
        ));
    }
    if dim == 0 {
        return Err(Error::shape("features (N, D) with D ≥ 1", &[n, 1], &[n, 0]));
    }
    if let Some((idx, _)) = features
        .indexed_iter()
        .find(|(_, v)| !(**v).into().is_finite())
    {
        return Err(Error::param(
            "features",
            format!("entry {idx:?} is not finite"),
        ));
    }
    Ok(())
}

fn check_tau_eps(tau: f64, eps: f64) -> Result<()> {
    if !tau.is_finite() {
        return Err(Error::param("tau", format!("must be finite, got {tau}")));
    }
    if !eps.is_finite() || eps < 0.0 {
        return Err(Error::param(
            "eps",
            format!("must be finite and ≥ 0, got {eps}"),
        ));
    }
    Ok(())
}

/// Fills `W` from the lower triangle of the similarity (so `W` is exactly
/// symmetric even if the product is not), with `1` where `S > τ` and `ε` elsewhere.
fn threshold_lower<T: Copy + PartialOrd + Sync>(
    sim: &[T],
    n: usize,
    tau: T,
    eps: f64,
) -> Array2<f64> {
    let mut w = Array2::<f64>::zeros((n, n));
    w.axis_iter_mut(Axis(0))
        .into_par_iter()
        .enumerate()
        .for_each(|(i, mut row)| {
            for j in 0..n {
                let s = if j <= i {
                    sim[i * n + j]
                } else {
                    sim[j * n + i]
                };
                row[j] = if s > tau { 1.0 } else { eps };
            }
        });
    w
}

/// Binary cosine graph of float32 features `(N, D)` (TokenCut, and MaskCut's first
/// iteration): rows normalised as torch `F.normalize` (norm accumulated in f64,
/// division in f32), `S = XₙXₙᵀ` by a float32 GEMM (the reference's precision),
/// `W_ij = 1.0` if `S_ij > τ` (strict, compared in f32 as torch does against a
/// Python scalar) else `ε`, as float64 (N, N). `ε` is widened through its decimal
/// form (`1e-5` stays `1e-5`). An all-zero row stays zero and connects to
/// everything with weight `ε`, including itself.
///
/// Pairs with `S_ij` within ~1e-7 of `τ` may fall on either side compared with a
/// GPU or BLAS reference (docs/postprocessing.md §1.3).
///
/// # Errors
/// [`Error::InvalidParam`] if N < 2, a feature is not finite, `τ` is not finite or
/// `ε` is negative or not finite; [`Error::Shape`] if D = 0.
pub fn binary_affinity(features: ArrayView2<f32>, tau: f32, eps: f32) -> Result<Array2<f64>> {
    check_features(&features)?;
    let eps64 = widen_decimal(eps);
    check_tau_eps(tau as f64, eps64)?;
    let (n, dim) = features.dim();
    let mut xn = vec![0.0f32; n * dim];
    xn.par_chunks_mut(dim)
        .zip(features.axis_iter(Axis(0)).into_par_iter())
        .for_each(|(dst, row)| {
            let norm = row
                .iter()
                .map(|&v| (v as f64) * (v as f64))
                .sum::<f64>()
                .sqrt();
            let denom = norm.max(NORMALIZE_EPS) as f32;
            for (d, &v) in dst.iter_mut().zip(row.iter()) {
                *d = v / denom;
            }
        });
    let mut sim = vec![0.0f32; n * n];
    let x = MatRef::row_major(&xn, n, dim);
    matmul(&mut sim, n, x, x.t(), false, Threads::Pool);
    Ok(threshold_lower(&sim, n, tau, eps64))
}

/// [`binary_affinity`] for float64 features: MaskCut from its second iteration on,
/// where the painted features are promoted to float64 (docs/postprocessing.md §3.2 step 2), so
/// the normalisation, `S` and the `S > τ` test are all float64.
///
/// # Errors
/// As [`binary_affinity`].
pub fn binary_affinity_f64(features: ArrayView2<f64>, tau: f64, eps: f64) -> Result<Array2<f64>> {
    check_features(&features)?;
    check_tau_eps(tau, eps)?;
    let (n, _) = features.dim();
    let mut xn = features.to_owned();
    xn.axis_iter_mut(Axis(0))
        .into_par_iter()
        .for_each(|mut row| {
            let norm = row.iter().map(|v| v * v).sum::<f64>().sqrt();
            let denom = norm.max(NORMALIZE_EPS);
            row.mapv_inplace(|v| v / denom);
        });
    // Row blocks in parallel; ndarray's product (matrixmultiply) is single-threaded.
    let mut sim = Array2::<f64>::zeros((n, n));
    let block = 64;
    sim.axis_chunks_iter_mut(Axis(0), block)
        .into_par_iter()
        .enumerate()
        .for_each(|(b, mut rows)| {
            let r0 = b * block;
            let r1 = (r0 + block).min(n);
            rows.assign(&xn.slice(s![r0..r1, ..]).dot(&xn.t()));
        });
    let sim = sim.into_raw_vec_and_offset().0;
    Ok(threshold_lower(&sim, n, tau, eps))
}
