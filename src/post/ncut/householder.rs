//! Householder reduction of a dense symmetric matrix to tridiagonal form,
//! `A = Q T Qᵀ`, with the conventions of LAPACK `dsytd2` (`uplo = 'L'`) and
//! `dlarfg`: `Q = H(0) H(1) ⋯ H(n−2)`, `H(i) = I − τᵢ vᵢ vᵢᵀ`, `vᵢ[0..=i] = 0`,
//! `vᵢ[i+1] = 1`, and `e[i] = β = −sign(α)·‖(α, x)‖`. Matching these conventions
//! makes the tridiagonal eigenvector `z = Qᵀy` — whose sign LAPACK `dstein` fixes —
//! the same as LAPACK's, so [`super::fiedler_dense`] can reproduce `dsygvx`'s
//! signs (docs/postprocessing.md §3.3).
//!
//! Storage is packed lower, column-major: column `j` holds rows `j..n` and starts
//! at `j·n − j(j−1)/2`. Each step streams the trailing triangle once: the rank-2
//! update of step `i−1` is applied lazily, fused with the symmetric matrix-vector
//! product of step `i`, and the columns are split over the rayon pool (each worker
//! accumulates its own partial product). That halves the memory traffic of the
//! textbook two-pass step; the reduction stays memory-bound for `n` in the
//! thousands. A `dlatrd`-style blocked variant (read-only product per step, one
//! matrix-product rank-64 update per 32-step panel) was measured on the 2-core
//! dev machine and was not faster (N = 784: 79 vs 71 ms, N = 1600: 0.95 vs 0.72 s
//! of CPU time, N = 3600: 13.9 vs 11.5 s), so this simpler form stays.

use rayon::prelude::*;

use crate::backend::cpu::simd::simd_dispatch;

/// Start of column `j` in packed lower column-major storage of order `n`.
#[inline]
pub(crate) fn col_start(n: usize, j: usize) -> usize {
    j * n - j * j.saturating_sub(1) / 2
}

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
    /// Packed storage; column `i` holds `vᵢ[i+2..n]` below its sub-diagonal.
    packed: Vec<f64>,
}

/// `dlarfg`: given `alpha` and `x`, returns `(beta, tau)` and overwrites `x` with
/// the tail of `v` (whose head is 1) so that `(I − τvvᵀ)(alpha, x) = (beta, 0)`.
fn householder_vector(alpha: f64, x: &mut [f64]) -> (f64, f64) {
    let scale = x.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    if scale == 0.0 {
        return (alpha, 0.0);
    }
    let xnorm = scale
        * x.iter()
            .map(|v| (v / scale) * (v / scale))
            .sum::<f64>()
            .sqrt();
    let beta = -alpha.hypot(xnorm).copysign(alpha);
    let tau = (beta - alpha) / beta;
    let inv = 1.0 / (alpha - beta);
    x.iter_mut().for_each(|v| *v *= inv);
    (beta, tau)
}

/// Independent partial sums of [`dot`] (two AVX2 registers).
const LANES: usize = 8;

/// `Σ aᵢbᵢ` with [`LANES`] independent partial sums, so it vectorises.
#[inline(always)]
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0.0f64; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        // Fixed-size views: no bounds checks, and the lanes map onto vector registers.
        if let (Ok(x), Ok(y)) = (<&[f64; LANES]>::try_from(x), <&[f64; LANES]>::try_from(y)) {
            for l in 0..LANES {
                acc[l] += x[l] * y[l];
            }
        }
    }
    let mut sum = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (x, y) in ra.iter().zip(rb) {
        sum += x * y;
    }
    sum
}

/// One column of the fused pass. `c` is column `j` (rows `j..n`); `pv`, `pw`
/// (pending rank-2 update `A −= pv·pwᵀ + pw·pvᵀ`), `v` and `p` are aligned with it
/// (index 0 = row `j`). Applies the pending update when `flush`, then, when
/// `symv`, adds column `j`'s share of `p = A·v`: `p[j] += cᵀv` and
/// `p[j+k] += c[k]·v[j]` for `k ≥ 1`, in the same sweep (one read and one write of
/// the column; the dot product keeps four independent partial sums so the loop
/// maps onto AVX2 registers).
#[inline(always)]
fn column_pass(
    c: &mut [f64],
    pv: &[f64],
    pw: &[f64],
    v: &[f64],
    p: &mut [f64],
    flush: bool,
    symv: bool,
) {
    let len = c.len();
    let (pv, pw, v, p) = (&pv[..len], &pw[..len], &v[..len], &mut p[..len]);
    let (pvj, pwj, vj) = (pv[0], pw[0], v[0]);
    if flush && !symv {
        for ((x, a), b) in c.iter_mut().zip(pv).zip(pw) {
            *x -= a * pwj + b * pvj;
        }
        return;
    }
    if !symv {
        return;
    }
    if flush {
        c[0] -= pvj * pwj + pwj * pvj;
        let diag = c[0];
        let mut acc = [0.0f64; 4];
        let (ct, pvt, pwt, vt, pt) = (&mut c[1..], &pv[1..], &pw[1..], &v[1..], &mut p[1..]);
        let mut cc = ct.chunks_exact_mut(4);
        let mut pc = pt.chunks_exact_mut(4);
        let mut av = pvt.chunks_exact(4);
        let mut bw = pwt.chunks_exact(4);
        let mut vv = vt.chunks_exact(4);
        for ((((c4, p4), a4), b4), v4) in (&mut cc)
            .zip(&mut pc)
            .zip(&mut av)
            .zip(&mut bw)
            .zip(&mut vv)
        {
            let (Ok(c4), Ok(p4), Ok(a4), Ok(b4), Ok(v4)) = (
                <&mut [f64; 4]>::try_from(c4),
                <&mut [f64; 4]>::try_from(p4),
                <&[f64; 4]>::try_from(a4),
                <&[f64; 4]>::try_from(b4),
                <&[f64; 4]>::try_from(v4),
            ) else {
                continue;
            };
            let x: [f64; 4] = std::array::from_fn(|l| c4[l] - a4[l] * pwj - b4[l] * pvj);
            *c4 = x;
            acc = std::array::from_fn(|l| acc[l] + x[l] * v4[l]);
            *p4 = std::array::from_fn(|l| p4[l] + x[l] * vj);
        }
        let tail = cc.into_remainder().iter_mut().zip(pc.into_remainder());
        for ((x, pk), ((a, b), vk)) in tail.zip(
            av.remainder()
                .iter()
                .zip(bw.remainder())
                .zip(vv.remainder()),
        ) {
            let y = *x - a * pwj - b * pvj;
            *x = y;
            acc[0] += y * vk;
            *pk += y * vj;
        }
        p[0] += diag * vj + (acc[0] + acc[1]) + (acc[2] + acc[3]);
        return;
    }
    for (x, pk) in c[1..].iter().zip(&mut p[1..]) {
        *pk += x * vj;
    }
    p[0] += dot(c, v);
}

/// Runs [`column_pass`] over columns `j0..j1`, packed contiguously in `cols`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn columns_pass_impl(
    cols: &mut [f64],
    n: usize,
    j0: usize,
    j1: usize,
    pv: &[f64],
    pw: &[f64],
    v: &[f64],
    p: &mut [f64],
    flush: bool,
    symv: bool,
) {
    let mut off = 0;
    for j in j0..j1 {
        let len = n - j;
        column_pass(
            &mut cols[off..off + len],
            &pv[j..],
            &pw[j..],
            &v[j..],
            &mut p[j..],
            flush,
            symv,
        );
        off += len;
    }
}

simd_dispatch! {
    /// [`columns_pass_impl`], compiled for AVX2 when the CPU has it.
    #[allow(clippy::too_many_arguments)]
    fn columns_pass(
        cols: &mut [f64],
        n: usize,
        j0: usize,
        j1: usize,
        pv: &[f64],
        pw: &[f64],
        v: &[f64],
        p: &mut [f64],
        flush: bool,
        symv: bool,
    ) => columns_pass_impl;
}

/// Trailing columns at or above which a step is split over the rayon pool.
const PARALLEL_MIN_COLUMNS: usize = 192;

/// Reduces the packed lower triangle `packed` (order `n`) to tridiagonal form.
///
/// # Panics
/// If `packed.len() != n(n+1)/2` or `n == 0` (internal invariants).
pub(crate) fn tridiagonalize(mut packed: Vec<f64>, n: usize) -> Tridiagonal {
    assert!(
        n > 0 && packed.len() == n * (n + 1) / 2,
        "tridiagonalize: bad packed size"
    );
    let mut d = vec![0.0; n];
    let mut e = vec![0.0; n.saturating_sub(1)];
    let mut tau = vec![0.0; n.saturating_sub(1)];
    // Vectors indexed by global row; entries before the active range are unused.
    let mut v = vec![0.0; n];
    let mut p = vec![0.0; n];
    let mut pv = vec![0.0; n];
    let mut pw = vec![0.0; n];
    let mut pending = false;
    let workers = rayon::current_num_threads().max(1);
    let mut partials: Vec<Vec<f64>> = vec![vec![0.0; n]; if workers > 1 { workers } else { 0 }];

    for i in 0..n.saturating_sub(1) {
        let ci = col_start(n, i);
        let len = n - i;
        if pending {
            let pwi = pw[i];
            let pvi = pv[i];
            for k in 0..len {
                packed[ci + k] -= pv[i + k] * pwi + pw[i + k] * pvi;
            }
        }
        d[i] = packed[ci];
        let alpha = packed[ci + 1];
        let (beta, t) = householder_vector(alpha, &mut packed[ci + 2..ci + len]);
        e[i] = beta;
        tau[i] = t;
        let symv = t != 0.0;
        if !symv && !pending {
            continue;
        }
        v[i + 1] = 1.0;
        v[i + 2..n].copy_from_slice(&packed[ci + 2..ci + len]);
        p[i + 1..n].fill(0.0);

        // Fused pass over the trailing columns i+1..n.
        let first = i + 1;
        let trailing = &mut packed[col_start(n, first)..];
        let m = n - first;
        if workers > 1 && m >= PARALLEL_MIN_COLUMNS {
            // Split columns so each part holds about the same number of entries.
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
            let mut pieces: Vec<(usize, usize, &mut [f64], &mut Vec<f64>)> =
                Vec::with_capacity(workers);
            let mut rest = trailing;
            for (part, w) in bounds.windows(2).zip(partials.iter_mut()) {
                let (j0, j1) = (part[0], part[1]);
                let size = col_start(n, j1) - col_start(n, j0);
                let (head, tail) = rest.split_at_mut(size);
                rest = tail;
                pieces.push((j0, j1, head, w));
            }
            let (pv_r, pw_r, v_r) = (&pv, &pw, &v);
            pieces.par_iter_mut().for_each(|(j0, j1, cols, part)| {
                part[*j0..n].fill(0.0);
                columns_pass(cols, n, *j0, *j1, pv_r, pw_r, v_r, part, pending, symv);
            });
            if symv {
                for (j0, _, _, part) in &pieces {
                    for k in *j0..n {
                        p[k] += part[k];
                    }
                }
            }
        } else {
            columns_pass(trailing, n, first, n, &pv, &pw, &v, &mut p, pending, symv);
        }

        if symv {
            // w = τp − ½τ²(pᵀv)v, the pending update for step i+1.
            let mut dot = 0.0;
            for k in first..n {
                p[k] *= t;
                dot += p[k] * v[k];
            }
            let half = -0.5 * t * dot;
            for k in first..n {
                pw[k] = p[k] + half * v[k];
                pv[k] = v[k];
            }
            pending = true;
        } else {
            pending = false;
        }
    }
    let last = col_start(n, n - 1);
    d[n - 1] = packed[last];
    if pending {
        d[n - 1] -= 2.0 * pv[n - 1] * pw[n - 1];
    }
    Tridiagonal {
        n,
        d,
        e,
        tau,
        packed,
    }
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
            let ci = col_start(n, i);
            let tail = &self.packed[ci + 2..ci + n - i];
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

    fn packed_from_dense(a: &[f64], n: usize) -> Vec<f64> {
        let mut p = Vec::with_capacity(n * (n + 1) / 2);
        for j in 0..n {
            for i in j..n {
                p.push(a[i * n + j]);
            }
        }
        p
    }

    /// Q T Qᵀ must rebuild A, for sizes on both sides of the parallel threshold.
    #[test]
    fn reconstructs_the_matrix() {
        for n in [1, 2, 3, 7, 40, PARALLEL_MIN_COLUMNS + 13] {
            let r = crate::post::ncut::tridiagonal::start_vector(n * n, n as u64);
            let mut a = vec![0.0; n * n];
            for i in 0..n {
                for j in 0..=i {
                    a[i * n + j] = r[i * n + j];
                    a[j * n + i] = r[i * n + j];
                }
            }
            let tri = tridiagonalize(packed_from_dense(&a, n), n);
            // Column k of Q T Qᵀ = Q (T (Qᵀ e_k)); Qᵀ is built by applying Q to T's columns
            // and using symmetry: (Q T Qᵀ)ᵀ = Q T Qᵀ, so compute Q T Q ᵀ via Q (Q T)ᵀ.
            let mut qt = vec![0.0; n * n]; // rows of (Q T)ᵀ = columns of Q T
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
                for i in 0..n {
                    qt[k * n + i] = col[i]; // (QT)[i][k] stored at row k
                }
            }
            // (Q T Qᵀ)[i][j] = Σ_k (QT)[i][k] Q[j][k]; Q's columns via apply_q(e_k).
            let mut q = vec![0.0; n * n];
            for k in 0..n {
                let mut col = vec![0.0; n];
                col[k] = 1.0;
                tri.apply_q(&mut col);
                for i in 0..n {
                    q[i * n + k] = col[i];
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
