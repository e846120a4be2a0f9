//! Eigenpairs of a symmetric tridiagonal matrix `T` (diagonal `d`, off-diagonal
//! `e`, `e[i] = T(i+1, i)`): one eigenvalue by Sturm-sequence bisection (LAPACK
//! `dstebz`'s method) and its eigenvector by inverse iteration (`dstein`'s method,
//! including its sign rule). Both cost O(n) per step, so a single eigenpair costs
//! O(n) after the O(n³) reduction — this is what makes "only the pairs we need"
//! cheap, both for the dense solver and for the Lanczos Ritz pairs.

/// Largest absolute row sum of `T` (its ∞-norm, which equals its 1-norm).
pub(crate) fn norm_inf(d: &[f64], e: &[f64]) -> f64 {
    let n = d.len();
    (0..n)
        .map(|i| {
            let left = if i > 0 { e[i - 1].abs() } else { 0.0 };
            let right = if i + 1 < n { e[i].abs() } else { 0.0 };
            d[i].abs() + left + right
        })
        .fold(0.0, f64::max)
}

/// Smallest pivot magnitude allowed in a Sturm sequence (LAPACK's `pivmin`).
fn pivmin(e: &[f64]) -> f64 {
    let max_e2 = e.iter().map(|x| x * x).fold(1.0f64, f64::max);
    f64::MIN_POSITIVE * max_e2
}

/// Number of eigenvalues of `T` smaller than `x` (the count of negative pivots in
/// the LDLᵀ factorisation of `T − xI`; a pivot that is too small counts as negative).
fn count_below(d: &[f64], e2: &[f64], x: f64, pivmin: f64) -> usize {
    let mut count = 0;
    let mut q = d[0] - x;
    if q.abs() <= pivmin {
        q = -pivmin;
    }
    if q < 0.0 {
        count += 1;
    }
    for i in 1..d.len() {
        q = d[i] - x - e2[i - 1] / q;
        if q.abs() <= pivmin {
            q = -pivmin;
        }
        if q < 0.0 {
            count += 1;
        }
    }
    count
}

/// The `k`-th smallest eigenvalue (0-based) of `T`, by bisection to an absolute
/// accuracy of about `ε·‖T‖` (LAPACK `dstebz` with `abstol = 0`), or to adjacent
/// floating-point numbers when that is finer relative to the eigenvalue.
///
/// # Panics
/// If `k >= d.len()` or `e.len() + 1 != d.len()` (internal invariants).
pub(crate) fn eigenvalue(d: &[f64], e: &[f64], k: usize) -> f64 {
    let n = d.len();
    assert!(
        k < n && e.len() + 1 == n,
        "tridiagonal eigenvalue: bad index or sizes"
    );
    if n == 1 {
        return d[0];
    }
    let e2: Vec<f64> = e.iter().map(|x| x * x).collect();
    let piv = pivmin(e);
    let tnorm = norm_inf(d, e);
    // Gershgorin interval, widened a little so both ends are strict bounds.
    let mut lo = f64::INFINITY;
    let mut hi = f64::NEG_INFINITY;
    for i in 0..n {
        let left = if i > 0 { e[i - 1].abs() } else { 0.0 };
        let right = if i + 1 < n { e[i].abs() } else { 0.0 };
        lo = lo.min(d[i] - left - right);
        hi = hi.max(d[i] + left + right);
    }
    let widen = 2.0 * f64::EPSILON * tnorm.max(f64::MIN_POSITIVE) * n as f64 + 2.0 * piv;
    lo -= widen;
    hi += widen;
    let abs_tol = f64::EPSILON * tnorm;
    loop {
        let mid = 0.5 * (lo + hi);
        let width = hi - lo;
        if mid <= lo
            || mid >= hi
            || width <= abs_tol.max(2.0 * f64::EPSILON * lo.abs().max(hi.abs()))
        {
            return mid;
        }
        if count_below(d, &e2, mid, piv) > k {
            hi = mid;
        } else {
            lo = mid;
        }
    }
}

/// Deterministic start vector for inverse iteration: uniform(−1, 1) from a
/// splitmix64 stream (LAPACK `dstein` also starts from a pseudo-random vector).
pub(crate) fn start_vector(n: usize, seed: u64) -> Vec<f64> {
    let mut rng = crate::rng::Rng::new(seed);
    // 53 random bits → [0, 1) → (−1, 1).
    (0..n).map(|_| rng.uniform_f64() * 2.0 - 1.0).collect()
}

/// LU factors (partial pivoting) of `T − λI`, as in LAPACK `dlagtf`: `U` has two
/// super-diagonals because row swaps push fill-in one place right.
struct ShiftedLu {
    u0: Vec<f64>,
    u1: Vec<f64>,
    u2: Vec<f64>,
    mult: Vec<f64>,
    swapped: Vec<bool>,
}

impl ShiftedLu {
    fn new(d: &[f64], e: &[f64], lambda: f64, tiny: f64) -> Self {
        let n = d.len();
        let (mut u0, mut u1, mut u2) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
        let mut mult = vec![0.0; n.saturating_sub(1)];
        let mut swapped = vec![false; n.saturating_sub(1)];
        // The current (not yet pivoted) row holds entries at columns i and i+1.
        let mut a = d[0] - lambda;
        let mut c = if n > 1 { e[0] } else { 0.0 };
        for i in 0..n - 1 {
            let b = e[i];
            let a_next = d[i + 1] - lambda;
            let c_next = if i + 2 < n { e[i + 1] } else { 0.0 };
            if a.abs() >= b.abs() {
                let m = if a != 0.0 { b / a } else { 0.0 };
                u0[i] = a;
                u1[i] = c;
                u2[i] = 0.0;
                mult[i] = m;
                a = a_next - m * c;
                c = c_next;
            } else {
                let m = a / b;
                u0[i] = b;
                u1[i] = a_next;
                u2[i] = c_next;
                mult[i] = m;
                swapped[i] = true;
                a = c - m * a_next;
                c = -m * c_next;
            }
        }
        u0[n - 1] = a;
        // A zero pivot means λ is (numerically) exact: perturb it, as dlagts does.
        for p in &mut u0 {
            if p.abs() < tiny {
                *p = if *p < 0.0 { -tiny } else { tiny };
            }
        }
        ShiftedLu {
            u0,
            u1,
            u2,
            mult,
            swapped,
        }
    }

    /// Overwrites `x` with `(T − λI)⁻¹ x`.
    fn solve(&self, x: &mut [f64]) {
        let n = x.len();
        for i in 0..n - 1 {
            if self.swapped[i] {
                x.swap(i, i + 1);
            }
            x[i + 1] -= self.mult[i] * x[i];
        }
        for i in (0..n).rev() {
            let mut s = x[i];
            if i + 1 < n {
                s -= self.u1[i] * x[i + 1];
            }
            if i + 2 < n {
                s -= self.u2[i] * x[i + 2];
            }
            x[i] = s / self.u0[i];
        }
    }
}

/// Unit-norm eigenvector of `T` for the eigenvalue `lambda` (accurate to about
/// `ε·‖T‖`, e.g. from [`eigenvalue`]), by inverse iteration from a fixed
/// pseudo-random start. The sign follows LAPACK `dstein`: the entry of largest
/// magnitude (first index on ties) is positive.
///
/// # Panics
/// If `e.len() + 1 != d.len()` or `d` is empty (internal invariants).
pub(crate) fn eigenvector(d: &[f64], e: &[f64], lambda: f64) -> Vec<f64> {
    let n = d.len();
    assert!(
        n > 0 && e.len() + 1 == n,
        "tridiagonal eigenvector: bad sizes"
    );
    if n == 1 {
        return vec![1.0];
    }
    let tnorm = norm_inf(d, e).max(f64::MIN_POSITIVE);
    let lu = ShiftedLu::new(d, e, lambda, f64::EPSILON * tnorm);
    let mut x = start_vector(n, 0x5EED_0FD5_7E14);
    normalise(&mut x);
    // With λ accurate to ε‖T‖ every solve shrinks the other components by about
    // ε‖T‖/gap; three solves reach working accuracy even for small gaps, and a
    // fourth costs O(n).
    for _ in 0..4 {
        lu.solve(&mut x);
        normalise(&mut x);
    }
    apply_dstein_sign(&mut x);
    x
}

/// Scales `x` to unit 2-norm (leaves a zero vector alone).
pub(crate) fn normalise(x: &mut [f64]) {
    let scale = x.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    if scale == 0.0 || !scale.is_finite() {
        return;
    }
    let norm = scale
        * x.iter()
            .map(|v| (v / scale) * (v / scale))
            .sum::<f64>()
            .sqrt();
    x.iter_mut().for_each(|v| *v /= norm);
}

/// LAPACK `dstein`'s sign rule: negate `x` if its largest-magnitude entry (the
/// first one on ties, like `idamax`) is negative.
pub(crate) fn apply_dstein_sign(x: &mut [f64]) {
    let mut best = 0;
    for (i, v) in x.iter().enumerate() {
        if v.abs() > x[best].abs() {
            best = i;
        }
    }
    if x[best] < 0.0 {
        x.iter_mut().for_each(|v| *v = -*v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Path-graph Laplacian-like matrix 2 on the diagonal, −1 off it: eigenvalues
    /// 2 − 2cos(kπ/(n+1)), eigenvectors sin(jkπ/(n+1)).
    #[test]
    fn second_difference_matrix() {
        let n = 50;
        let d = vec![2.0; n];
        let e = vec![-1.0; n - 1];
        for k in [0, 1, 2, 25, n - 1] {
            let exact =
                2.0 - 2.0 * (((k + 1) as f64) * std::f64::consts::PI / (n + 1) as f64).cos();
            let got = eigenvalue(&d, &e, k);
            assert!((got - exact).abs() < 1e-14, "k={k}: {got} vs {exact}");
            let v = eigenvector(&d, &e, got);
            let mut want: Vec<f64> = (0..n)
                .map(|j| (((j + 1) * (k + 1)) as f64 * std::f64::consts::PI / (n + 1) as f64).sin())
                .collect();
            normalise(&mut want);
            // Up to sign: these vectors have exact ± ties in magnitude, so the
            // dstein sign rule is decided by rounding.
            let sign = v
                .iter()
                .zip(&want)
                .map(|(a, b)| a * b)
                .sum::<f64>()
                .signum();
            let err = v
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - sign * b).abs())
                .fold(0.0, f64::max);
            assert!(err < 1e-12, "k={k}: eigenvector error {err}");
        }
    }

    #[test]
    fn tiny_sizes_and_split_matrix() {
        assert_eq!(eigenvalue(&[3.0], &[], 0), 3.0);
        assert_eq!(eigenvector(&[3.0], &[], 3.0), vec![1.0]);
        // A zero off-diagonal splits T into blocks; eigenvalues 1, 2 (block 1) and 5.
        let d = [1.0, 2.0, 5.0];
        let e = [0.0, 0.0];
        for (k, want) in [1.0, 2.0, 5.0].into_iter().enumerate() {
            assert!((eigenvalue(&d, &e, k) - want).abs() < 1e-15);
        }
        let v = eigenvector(&d, &e, 2.0);
        assert!((v[1] - 1.0).abs() < 1e-15 && v[0].abs() < 1e-15 && v[2].abs() < 1e-15);
    }

    #[test]
    fn dstein_sign_rule() {
        let mut x = vec![0.1, -0.5, 0.3];
        apply_dstein_sign(&mut x);
        assert_eq!(x, vec![-0.1, 0.5, -0.3]);
        let mut y = vec![0.5, -0.5]; // tie: the first index decides
        apply_dstein_sign(&mut y);
        assert_eq!(y, vec![0.5, -0.5]);
    }
}
