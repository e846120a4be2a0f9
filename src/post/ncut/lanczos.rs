//! Sparse generalized eigensolver for the normalized cut: the second-smallest
//! eigenpair of `(D − W) v = λ D v` for a sparse symmetric `W`, by Lanczos with
//! full reorthogonalisation on `M = D^{−1/2} W D^{−1/2}` (whose eigenvalues are
//! `1 − λ`). The top eigenvector of `M`, `u₁ = D^{1/2}1/‖·‖` (λ₁ = 0), is known
//! exactly and is deflated: the Krylov space is kept orthogonal to it, so the
//! largest Ritz value converges to `1 − λ₂`. Then `v = D^{−1/2} y`, `vᵀDv = 1`.
//!
//! The basis is stored whole (full reorthogonalisation, classical Gram–Schmidt
//! with one DGKS refinement when needed), at most 500 vectors or 64 MiB; past
//! that the iteration restarts once from the current Ritz vector, then stops with
//! the best pair. Convergence is tested every few steps on the Ritz residual
//! `|β_m s_m|`.

use ndarray::Array1;
use rayon::prelude::*;

use super::dense::Fiedler;
use super::tridiagonal::{self, normalise, start_vector};

/// A sparse symmetric affinity in compressed sparse row form (N×N).
#[derive(Clone, Debug)]
pub(crate) struct SparseGraph {
    pub n: usize,
    pub indptr: Vec<usize>,
    pub indices: Vec<usize>,
    pub values: Vec<f64>,
}

impl SparseGraph {
    fn degrees(&self) -> Vec<f64> {
        (0..self.n)
            .map(|i| self.values[self.indptr[i]..self.indptr[i + 1]].iter().sum())
            .collect()
    }
}

/// Ritz residual `‖My − θy‖` (‖M‖ ≤ 1) at which the pair is accepted.
pub(crate) const RESIDUAL_TOL: f64 = 1e-10;
/// β below which the Krylov space is invariant (the Ritz pairs are exact).
const BREAKDOWN: f64 = 1e-13;
/// Lanczos steps per cycle. Well-posed cuts converge in 60–200 steps on grids up
/// to 112×112; a graph that is nearly disconnected into many pieces (e.g. a tiny
/// σ_r) has a continuum of eigenvalues near 0, and Krylov methods crawl there.
const MAX_STEPS: usize = 500;
/// Restarts (from the current Ritz vector) after a cycle without convergence;
/// the work is bounded by `(1 + MAX_RESTARTS)·MAX_STEPS` steps.
const MAX_RESTARTS: usize = 1;
/// Check convergence every this many steps.
const CHECK_EVERY: usize = 5;
/// Basis memory cap, in f64 values (64 MiB).
const BASIS_CAP_VALUES: usize = 8 << 20;

/// Output of [`fiedler_sparse`].
pub(crate) struct SparseFiedler {
    pub fiedler: Fiedler,
    /// Ritz residual `‖My − θy‖` of the returned pair (≤ [`RESIDUAL_TOL`] when
    /// converged; larger when the step budget ran out).
    pub residual: f64,
}

/// `r −= Σ_k (q_kᵀ r) q_k` over the rows of `basis` (m × n, row-major).
fn project_out(basis: &[f64], n: usize, r: &mut [f64]) {
    if basis.is_empty() {
        return;
    }
    let coef: Vec<f64> = basis
        .par_chunks(n)
        .map(|q| q.iter().zip(r.iter()).map(|(a, b)| a * b).sum())
        .collect();
    const CHUNK: usize = 512;
    r.par_chunks_mut(CHUNK).enumerate().for_each(|(b, rc)| {
        let off = b * CHUNK;
        for (k, c) in coef.iter().enumerate() {
            let q = &basis[k * n + off..k * n + off + rc.len()];
            for (x, qv) in rc.iter_mut().zip(q) {
                *x -= c * qv;
            }
        }
    });
}

fn norm2(x: &[f64]) -> f64 {
    x.iter().map(|v| v * v).sum::<f64>().sqrt()
}

/// Fiedler pair of the sparse graph `g` (degrees must be > 0, checked by the
/// caller). The sign of the vector is deterministic but arbitrary. Never fails:
/// when the step budget runs out, the best Ritz pair is returned with its
/// residual (a nearly disconnected graph then gives a mix of near-null vectors,
/// which still splits along the weak links).
pub(crate) fn fiedler_sparse(g: &SparseGraph) -> SparseFiedler {
    let n = g.n;
    let degrees = g.degrees();
    let inv_sqrt: Vec<f64> = degrees.iter().map(|d| 1.0 / d.sqrt()).collect();
    // Scaled values of M = D^{-1/2} W D^{-1/2}.
    let mut mvals = g.values.clone();
    for i in 0..n {
        for k in g.indptr[i]..g.indptr[i + 1] {
            mvals[k] *= inv_sqrt[i] * inv_sqrt[g.indices[k]];
        }
    }
    let matvec = |x: &[f64], y: &mut [f64]| {
        y.par_chunks_mut(256).enumerate().for_each(|(b, yc)| {
            for (l, yi) in yc.iter_mut().enumerate() {
                let i = b * 256 + l;
                let (s, e) = (g.indptr[i], g.indptr[i + 1]);
                *yi = mvals[s..e]
                    .iter()
                    .zip(&g.indices[s..e])
                    .map(|(m, &j)| m * x[j])
                    .sum();
            }
        });
    };
    let mut u1: Vec<f64> = degrees.iter().map(|d| d.sqrt()).collect();
    normalise(&mut u1);

    let max_basis = (n - 1).min(MAX_STEPS).min((BASIS_CAP_VALUES / n).max(64));
    let mut start = start_vector(n, 0xF1ED_1E12);
    // (θ, y, residual) of the best unconverged cycle; always set (max_basis ≥ 1).
    let mut best: (f64, Vec<f64>, f64) = (f64::NAN, Vec::new(), f64::INFINITY);
    for _cycle in 0..=MAX_RESTARTS {
        let dot = start.iter().zip(&u1).map(|(a, b)| a * b).sum::<f64>();
        start.iter_mut().zip(&u1).for_each(|(s, u)| *s -= dot * u);
        normalise(&mut start);
        let mut basis: Vec<f64> = Vec::with_capacity(max_basis.min(256) * n);
        let mut alpha: Vec<f64> = Vec::new();
        let mut beta: Vec<f64> = Vec::new();
        let mut q = start.clone();
        let mut r = vec![0.0; n];
        for m in 0..max_basis {
            basis.extend_from_slice(&q);
            matvec(&q, &mut r);
            let a: f64 = q.iter().zip(&r).map(|(x, y)| x * y).sum();
            // Three-term recurrence, then full reorthogonalisation against u₁ and the
            // basis; DGKS: a second pass only if the first one shrank r a lot.
            r.iter_mut().zip(&q).for_each(|(x, qi)| *x -= a * qi);
            if let Some(&b_prev) = beta.last() {
                let prev = &basis[(m - 1) * n..m * n];
                r.iter_mut().zip(prev).for_each(|(x, qi)| *x -= b_prev * qi);
            }
            let before = norm2(&r);
            for pass in 0..2 {
                let c = r.iter().zip(&u1).map(|(x, y)| x * y).sum::<f64>();
                r.iter_mut().zip(&u1).for_each(|(x, u)| *x -= c * u);
                project_out(&basis, n, &mut r);
                if pass == 0 && norm2(&r) > 0.7 * before {
                    break;
                }
            }
            let b = norm2(&r);
            alpha.push(a);
            let last = m + 1 == max_basis;
            let broke = b <= BREAKDOWN;
            if broke || last || (m + 1) % CHECK_EVERY == 0 {
                let theta = tridiagonal::eigenvalue(&alpha, &beta, m);
                let s = tridiagonal::eigenvector(&alpha, &beta, theta);
                let residual = if broke { 0.0 } else { b * s[m].abs() };
                let converged = broke || residual <= RESIDUAL_TOL;
                if converged || last {
                    let mut y = vec![0.0; n];
                    for (k, sk) in s.iter().enumerate() {
                        let qk = &basis[k * n..(k + 1) * n];
                        y.iter_mut().zip(qk).for_each(|(yi, qi)| *yi += sk * qi);
                    }
                    normalise(&mut y);
                    if converged {
                        return finish(theta, &y, &inv_sqrt, degrees, residual);
                    }
                    if residual < best.2 {
                        best = (theta, y.clone(), residual);
                    }
                    start = y;
                    break;
                }
            }
            beta.push(b);
            q.iter_mut().zip(&r).for_each(|(qi, ri)| *qi = ri / b);
        }
    }
    let (theta, y, residual) = best;
    finish(theta, &y, &inv_sqrt, degrees, residual)
}

fn finish(
    theta: f64,
    y: &[f64],
    inv_sqrt: &[f64],
    degrees: Vec<f64>,
    residual: f64,
) -> SparseFiedler {
    let fiedler = Fiedler {
        vector: y.iter().zip(inv_sqrt).map(|(a, b)| a * b).collect(),
        eigenvalue: 1.0 - theta,
        next_eigenvalue: None,
        degrees: Array1::from(degrees),
    };
    SparseFiedler { fiedler, residual }
}
