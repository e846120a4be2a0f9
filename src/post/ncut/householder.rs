//! Householder reduction of a dense symmetric matrix to tridiagonal form,
//! `A = Q T Qᵀ`, with the conventions of LAPACK `dsytrd`/`dsytd2` (`uplo = 'L'`)
//! and `dlarfg`: `Q = H(0) H(1) ⋯ H(n−2)`, `H(i) = I − τᵢ vᵢ vᵢᵀ`, `vᵢ[0..=i] = 0`,
//! `vᵢ[i+1] = 1`, and `e[i] = β = −sign(α)·‖(α, x)‖`. Matching these conventions
//! makes the tridiagonal eigenvector `z = Qᵀy` — whose sign LAPACK `dstein` fixes —
//! the same as LAPACK's, so [`super::fiedler_dense`] can reproduce `dsygvx`'s
//! signs (spec §3.2, option (b)).
//!
//! Blocked as LAPACK `dlatrd`: within a panel of [`PANEL`] steps the trailing
//! matrix is left as it was at the panel's start, each step's matrix-vector
//! product is corrected with the panel's reflectors (`A₀v − V(Wᵀv) − W(Vᵀv)`), and
//! the panel's rank-2k update `A −= VWᵀ + WVᵀ` is applied once at its end as a
//! matrix product (ndarray/matrixmultiply, row blocks over the rayon pool). Each
//! step then only *reads* the trailing triangle once (split over the pool, each
//! worker with its own partial product), which is the memory-bound part: half the
//! traffic of an unblocked step that also rewrites it.
//!
//! Storage: a row-major `n×n` buffer whose row `j` holds column `j` of the lower
//! triangle at positions `j..n` (so each column is contiguous); positions left of
//! the diagonal are unused. After the reduction, row `i` holds `vᵢ[i+2..n]`.

use ndarray::linalg::general_mat_mul;
use ndarray::{s, Array2, ArrayView2, Axis};
use rayon::prelude::*;

use crate::backend::cpu::simd::simd_dispatch;

/// Reflectors per panel (`dsytrd`'s default block size).
pub(crate) const PANEL: usize = 32;
/// Rows per task of the rank-2k update.
const UPDATE_ROWS: usize = 64;
/// Trailing columns at or above which a step's product is split over the pool.
const PARALLEL_MIN_COLUMNS: usize = 192;

/// Output of [`tridiagonalize`].
pub(crate) struct Tridiagonal {
    /// Order of the matrix.
    pub n: usize,
    /// Diagonal of `T` (n).
    pub d: Vec<f64>,
    /// Sub-diagonal of `T` (n−1).
    pub e: Vec<f64>,
    /// Householder scalars τᵢ (n−1).
    tau: Vec<f64>,
    /// The storage buffer; row `i` holds `vᵢ[i+2..n]` at positions `i+2..n`.
    a: Vec<f64>,
}

/// `dlarfg`: given `alpha` and `x`, returns `(beta, tau)` and overwrites `x` with
/// the tail of `v` (whose head is 1) so that `(I − τvvᵀ)(alpha, x) = (beta, 0)`.
fn householder_vector(alpha: f64, x: &mut [f64]) -> (f64, f64) {
    let scale = x.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    if scale == 0.0 {
        return (alpha, 0.0);
    }
    let xnorm = scale * x.iter().map(|v| (v / scale) * (v / scale)).sum::<f64>().sqrt();
    let beta = -alpha.hypot(xnorm).copysign(alpha);
    let tau = (beta - alpha) / beta;
    let inv = 1.0 / (alpha - beta);
    x.iter_mut().for_each(|v| *v *= inv);
    (beta, tau)
}

/// Column `j`'s share of `p = A·v` (symmetric, lower triangle stored by columns):
/// `p[j] += cᵀv` and `p[j+k] += c[k]·v[j]` for `k ≥ 1`, in one read of `c`.
/// All slices start at row `j`. Four independent partial sums keep the loop on
/// AVX2 registers.
#[inline(always)]
fn column_symv(c: &[f64], v: &[f64], p: &mut [f64]) {
    let len = c.len();
    let (v, p) = (&v[..len], &mut p[..len]);
    let vj = v[0];
    let mut acc = [0.0f64; 4];
    let (ct, vt, pt) = (&c[1..], &v[1..], &mut p[1..]);
    let mut cc = ct.chunks_exact(4);
    let mut pc = pt.chunks_exact_mut(4);
    let mut vv = vt.chunks_exact(4);
    for ((c4, p4), v4) in (&mut cc).zip(&mut pc).zip(&mut vv) {
        let (Ok(c4), Ok(p4), Ok(v4)) =
            (<&[f64; 4]>::try_from(c4), <&mut [f64; 4]>::try_from(p4), <&[f64; 4]>::try_from(v4))
        else {
            continue;
        };
        acc = std::array::from_fn(|l| acc[l] + c4[l] * v4[l]);
        *p4 = std::array::from_fn(|l| p4[l] + c4[l] * vj);
    }
    for ((x, pk), vk) in cc.remainder().iter().zip(pc.into_remainder()).zip(vv.remainder()) {
        acc[0] += x * vk;
        *pk += x * vj;
    }
    p[0] += c[0] * vj + (acc[0] + acc[1]) + (acc[2] + acc[3]);
}

/// [`column_symv`] over columns `j0..j1` of the storage `a` (order `n`).
#[inline(always)]
fn columns_symv_impl(a: &[f64], n: usize, j0: usize, j1: usize, v: &[f64], p: &mut [f64]) {
    for j in j0..j1 {
        column_symv(&a[j * n + j..(j + 1) * n], &v[j..], &mut p[j..]);
    }
}

simd_dispatch! {
    /// [`columns_symv_impl`], compiled for AVX2 when the CPU has it.
    fn columns_symv(a: &[f64], n: usize, j0: usize, j1: usize, v: &[f64], p: &mut [f64]) => columns_symv_impl;
}

/// `p[first..n] = A[first.., first..]·v[first..n]` from the stored lower triangle,
/// split over the rayon pool for large trailing blocks.
fn trailing_symv(a: &[f64], n: usize, first: usize, v: &[f64], p: &mut [f64], partials: &mut [Vec<f64>]) {
    p[first..n].fill(0.0);
    let m = n - first;
    let workers = partials.len();
    if workers < 2 || m < PARALLEL_MIN_COLUMNS {
        columns_symv(a, n, first, n, v, p);
        return;
    }
    // Column ranges holding about the same number of entries each.
    let total = m * (m + 1) / 2;
    let mut bounds = vec![first];
    let mut acc = 0;
    for j in first..n {
        acc += n - j;
        if acc * workers >= total * bounds.len() && bounds.len() < workers {
            bounds.push(j + 1);
        }
    }
    bounds.push(n);
    bounds.dedup();
    let parts = bounds.len() - 1;
    partials[..parts].par_iter_mut().enumerate().for_each(|(t, part)| {
        let (j0, j1) = (bounds[t], bounds[t + 1]);
        part[j0..n].fill(0.0);
        columns_symv(a, n, j0, j1, v, part);
    });
    for (t, part) in partials[..parts].iter().enumerate() {
        for k in bounds[t]..n {
            p[k] += part[k];
        }
    }
}

/// Reduces the symmetric matrix in `a` (order `n`, see the module docs for the
/// layout) to tridiagonal form.
///
/// # Panics
/// If `a.len() != n·n` or `n == 0` (internal invariants).
pub(crate) fn tridiagonalize(a: Vec<f64>, n: usize) -> Tridiagonal {
    assert!(n > 0 && a.len() == n * n, "tridiagonalize: bad storage size");
    let mut a = Array2::from_shape_vec((n, n), a).expect("n·n elements");
    let mut d = vec![0.0; n];
    let mut e = vec![0.0; n - 1];
    let mut tau = vec![0.0; n - 1];
    // Panel reflectors V and products W, one row per step; row k is valid from
    // position i0+k+1 on.
    let mut vmat = Array2::<f64>::zeros((PANEL, n));
    let mut wmat = Array2::<f64>::zeros((PANEL, n));
    let mut v = vec![0.0; n];
    let mut p = vec![0.0; n];
    let workers = rayon::current_num_threads().max(1);
    let mut partials: Vec<Vec<f64>> = vec![vec![0.0; n]; if workers > 1 { workers } else { 0 }];
    let mut y1 = [0.0f64; PANEL];
    let mut y2 = [0.0f64; PANEL];

    let mut i0 = 0;
    while i0 + 1 < n {
        let i1 = (i0 + PANEL).min(n - 1);
        for i in i0..i1 {
            let k = i - i0;
            // Bring column i up to date with the panel's earlier reflectors.
            {
                let (panel_v, panel_w) = (vmat.view(), wmat.view());
                let mut col = a.slice_mut(s![i, i..]);
                for l in 0..k {
                    let (vl, wl) = (panel_v.row(l), panel_w.row(l));
                    let (vli, wli) = (vl[i], wl[i]);
                    col.iter_mut()
                        .zip(vl.slice(s![i..]).iter().zip(wl.slice(s![i..]).iter()))
                        .for_each(|(x, (vr, wr))| *x -= vr * wli + wr * vli);
                }
            }
            d[i] = a[[i, i]];
            let alpha = a[[i, i + 1]];
            let row = a.row_mut(i).into_slice().expect("rows of a standard-layout array are contiguous");
            let (beta, t) = householder_vector(alpha, &mut row[i + 2..]);
            e[i] = beta;
            tau[i] = t;
            let first = i + 1;
            if t == 0.0 {
                vmat.slice_mut(s![k, first..]).fill(0.0);
                wmat.slice_mut(s![k, first..]).fill(0.0);
                continue;
            }
            v[first] = 1.0;
            v[first + 1..].copy_from_slice(&row[i + 2..]);
            // p = A₀v on the trailing block as it was at the panel start …
            let data = a.as_slice().expect("standard layout");
            trailing_symv(data, n, first, &v, &mut p, &mut partials);
            // … minus the panel's pending update: p −= V(Wᵀv) + W(Vᵀv).
            for l in 0..k {
                let (vl, wl) = (vmat.row(l), wmat.row(l));
                let (vl, wl) = (&vl.as_slice().expect("contiguous")[first..], &wl.as_slice().expect("contiguous")[first..]);
                y1[l] = wl.iter().zip(&v[first..]).map(|(a, b)| a * b).sum();
                y2[l] = vl.iter().zip(&v[first..]).map(|(a, b)| a * b).sum();
            }
            for l in 0..k {
                let (vl, wl) = (vmat.row(l), wmat.row(l));
                let (c1, c2) = (y1[l], y2[l]);
                p[first..]
                    .iter_mut()
                    .zip(vl.slice(s![first..]).iter().zip(wl.slice(s![first..]).iter()))
                    .for_each(|(pr, (vr, wr))| *pr -= vr * c1 + wr * c2);
            }
            // w = τp − ½τ²(pᵀv)v.
            let dot: f64 = p[first..].iter().zip(&v[first..]).map(|(a, b)| a * b).sum();
            let half = -0.5 * t * t * dot;
            let mut vk = vmat.slice_mut(s![k, first..]);
            vk.iter_mut().zip(&v[first..]).for_each(|(dst, src)| *dst = *src);
            let mut wk = wmat.slice_mut(s![k, first..]);
            wk.iter_mut().zip(p[first..].iter().zip(&v[first..])).for_each(|(dst, (pr, vr))| *dst = t * pr + half * vr);
        }
        // Rank-2k update of the trailing block: A −= VWᵀ + WVᵀ (lower part, by rows of
        // the storage, i.e. by columns of A), as one product [W; V]ᵀ[V; W].
        let kk = i1 - i0;
        let mut left = Array2::<f64>::zeros((2 * kk, n - i1));
        let mut right = Array2::<f64>::zeros((2 * kk, n - i1));
        left.slice_mut(s![..kk, ..]).assign(&wmat.slice(s![..kk, i1..]));
        left.slice_mut(s![kk.., ..]).assign(&vmat.slice(s![..kk, i1..]));
        right.slice_mut(s![..kk, ..]).assign(&vmat.slice(s![..kk, i1..]));
        right.slice_mut(s![kk.., ..]).assign(&wmat.slice(s![..kk, i1..]));
        let (left, right) = (left.view(), right.view());
        a.slice_mut(s![i1.., ..]).axis_chunks_iter_mut(Axis(0), UPDATE_ROWS).into_par_iter().enumerate().for_each(
            |(b, mut rows)| {
                let jb = b * UPDATE_ROWS; // relative to i1
                let je = jb + rows.nrows();
                let mut c = rows.slice_mut(s![.., i1 + jb..]);
                let l: ArrayView2<f64> = left.slice(s![.., jb..je]);
                general_mat_mul(-1.0, &l.t(), &right.slice(s![.., jb..]), 1.0, &mut c);
            },
        );
        i0 = i1;
    }
    d[n - 1] = a[[n - 1, n - 1]];
    Tridiagonal { n, d, e, tau, a: a.into_raw_vec_and_offset().0 }
}

impl Tridiagonal {
    /// Overwrites `z` with `Q z` (`dormtr`): an eigenvector of `T` becomes one of `A`.
    pub(crate) fn apply_q(&self, z: &mut [f64]) {
        let n = self.n;
        for i in (0..n.saturating_sub(1)).rev() {
            let t = self.tau[i];
            if t == 0.0 {
                continue;
            }
            let tail = &self.a[i * n + i + 2..(i + 1) * n];
            let mut s = z[i + 1];
            for (vk, zk) in tail.iter().zip(&z[i + 2..]) {
                s += vk * zk;
            }
            s *= t;
            z[i + 1] -= s;
            for (vk, zk) in tail.iter().zip(&mut z[i + 2..]) {
                *zk -= s * vk;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Q T Qᵀ must rebuild A, for sizes around the panel width and the parallel
    /// threshold.
    #[test]
    fn reconstructs_the_matrix() {
        for n in [1, 2, 3, 7, PANEL, PANEL + 1, 2 * PANEL + 5, PARALLEL_MIN_COLUMNS + 13] {
            let r = crate::post::ncut::tridiagonal::start_vector(n * n, n as u64);
            let mut a = vec![0.0; n * n];
            for i in 0..n {
                for j in 0..=i {
                    a[i * n + j] = r[i * n + j];
                    a[j * n + i] = r[i * n + j];
                }
            }
            // a is symmetric, so row j already holds column j at positions j..n.
            let tri = tridiagonalize(a.clone(), n);
            // Column k of Q T = Q (T e_k); then (Q T Qᵀ)[i][j] = Σ_k (QT)[i][k] Q[j][k].
            let mut qt = vec![0.0; n * n]; // row k = column k of Q T
            let mut q = vec![0.0; n * n]; // q[i·n + k] = Q[i][k]
            for k in 0..n {
                let mut col = vec![0.0; n];
                col[k] = tri.d[k];
                if k > 0 {
                    col[k - 1] = tri.e[k - 1];
                }
                if k + 1 < n {
                    col[k + 1] = tri.e[k];
                }
                tri.apply_q(&mut col);
                qt[k * n..(k + 1) * n].copy_from_slice(&col);
                let mut unit = vec![0.0; n];
                unit[k] = 1.0;
                tri.apply_q(&mut unit);
                for i in 0..n {
                    q[i * n + k] = unit[i];
                }
            }
            let mut err = 0.0f64;
            for i in 0..n {
                for j in 0..n {
                    let s: f64 = (0..n).map(|k| qt[k * n + i] * q[j * n + k]).sum();
                    err = err.max((s - a[i * n + j]).abs());
                }
            }
            assert!(err < 1e-12 * n as f64, "n={n}: reconstruction error {err}");
        }
    }
}
