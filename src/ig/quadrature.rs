//! Captum's quadrature rules for the IG path integral
//! (`captum/attr/_utils/approximation_methods.py`, docs/method.md §5.2).
//!
//! Each rule gives `n` path points α ∈ [0, 1] and weights ("step sizes"). Values are
//! returned in f64, as Captum hands Python floats to IG; IG rounds them to f32.

use crate::error::{Error, Result};

/// An IG quadrature rule, named as in Captum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Method {
    /// Gauss–Legendre nodes mapped to [0, 1] (Captum's default).
    #[default]
    GaussLegendre,
    RiemannLeft,
    RiemannRight,
    RiemannMiddle,
    /// Ends at 0 and 1; Captum halves the first and last of its 1/n weights.
    RiemannTrapezoid,
    /// Not Captum's: random points, one from each of the equal strata of [0, 1]
    /// that all inputs' rows share, weights 1/n ([`crate::ig::path_points`]).
    /// [`quadrature`] gives its stratum midpoints, the points' expectation.
    Stratified,
}

impl Method {
    /// Captum's rules (the ones its parity fixtures cover).
    pub const CAPTUM: [Method; 5] = [
        Method::GaussLegendre,
        Method::RiemannLeft,
        Method::RiemannRight,
        Method::RiemannMiddle,
        Method::RiemannTrapezoid,
    ];

    pub const ALL: [Method; 6] = [
        Method::GaussLegendre,
        Method::RiemannLeft,
        Method::RiemannRight,
        Method::RiemannMiddle,
        Method::RiemannTrapezoid,
        Method::Stratified,
    ];

    /// A fixed quadrature of each input's path, so that Captum's per-input
    /// convergence delta checks it. Random stratified points are not (one point per
    /// noise sample is no quadrature of that sample's path): the presets and the CLI
    /// ask for no deltas with them.
    pub fn is_quadrature(self) -> bool {
        self != Method::Stratified
    }

    /// Captum's name for the rule.
    pub fn name(self) -> &'static str {
        match self {
            Method::GaussLegendre => "gausslegendre",
            Method::RiemannLeft => "riemann_left",
            Method::RiemannRight => "riemann_right",
            Method::RiemannMiddle => "riemann_middle",
            Method::RiemannTrapezoid => "riemann_trapezoid",
            Method::Stratified => "stratified",
        }
    }
}

impl std::str::FromStr for Method {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Method::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| Error::param("method", format!("`{s}` is not one of gausslegendre, riemann_left, riemann_right, riemann_middle, riemann_trapezoid, stratified")))
    }
}

/// Path points and weights of one rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Quadrature {
    pub alphas: Vec<f64>,
    pub steps: Vec<f64>,
}

/// The rule's `n` points and weights, exactly as Captum computes them.
///
/// # Errors
/// [`Error::InvalidParam`] when `n` is 0, or 1 for the Riemann rules (Captum asserts
/// n > 1 there).
pub fn quadrature(method: Method, n: usize) -> Result<Quadrature> {
    // Captum asserts n > 1 for its Riemann rules.
    let min_steps = match method {
        Method::GaussLegendre | Method::Stratified => 1,
        _ => 2,
    };
    if n < min_steps {
        return Err(Error::param(
            "n_steps",
            format!("{n} steps: {} needs at least {min_steps}", method.name()),
        ));
    }
    if n > 100_000 {
        return Err(Error::param(
            "n_steps",
            format!("{n} steps is unreasonably many (max 100000)"),
        ));
    }
    if method == Method::GaussLegendre {
        let (nodes, weights) = gauss_legendre(n);
        return Ok(Quadrature {
            alphas: nodes.iter().map(|x| 0.5 * (1.0 + x)).collect(),
            steps: weights.iter().map(|w| 0.5 * w).collect(),
        });
    }
    let nf = n as f64;
    let mut steps = vec![1.0 / nf; n];
    let (start, end) = match method {
        Method::RiemannTrapezoid => {
            steps[0] /= 2.0;
            steps[n - 1] /= 2.0;
            (0.0, 1.0)
        }
        Method::RiemannLeft => (0.0, 1.0 - 1.0 / nf),
        Method::RiemannMiddle => (1.0 / (2.0 * nf), 1.0 - 1.0 / (2.0 * nf)),
        Method::RiemannRight => (1.0 / nf, 1.0),
        Method::Stratified => {
            return Ok(Quadrature {
                alphas: (0..n).map(|k| (k as f64 + 0.5) / nf).collect(),
                steps,
            })
        }
        Method::GaussLegendre => unreachable!("handled above"),
    };
    Ok(Quadrature {
        alphas: linspace_f32(start as f32, end as f32, n)
            .into_iter()
            .map(f64::from)
            .collect(),
        steps,
    })
}

/// `torch.linspace(start, end, n)` in float32: the first half counts up from
/// `start`, the second half down from `end`, with the step computed in f32 and each
/// point formed by one fused multiply-add (PyTorch's vectorised CPU kernel; checked
/// bit for bit against torch 2.15 in tests/ig.rs).
fn linspace_f32(start: f32, end: f32, n: usize) -> Vec<f32> {
    let step = (end - start) / (n - 1) as f32;
    let half = n / 2;
    (0..n)
        .map(|i| {
            if i < half {
                step.mul_add(i as f32, start)
            } else {
                (-step).mul_add((n - 1 - i) as f32, end)
            }
        })
        .collect()
}

/// Gauss–Legendre nodes (ascending) and weights on [−1, 1], by Newton's method on
/// the Legendre recurrence in f64 (agrees with numpy's `leggauss` to ~1e-16).
fn gauss_legendre(n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut nodes = vec![0f64; n];
    let mut weights = vec![0f64; n];
    let nf = n as f64;
    for i in 0..n.div_ceil(2) {
        // Tricomi's initial guess for the i-th largest root.
        let mut x = (std::f64::consts::PI * (i as f64 + 0.75) / (nf + 0.5)).cos();
        for _ in 0..100 {
            let (p, d) = legendre_and_derivative(n, x);
            let dx = p / d;
            x -= dx;
            if dx.abs() < 1e-16 {
                break;
            }
        }
        // At a root, w = 2(1 − x²)/(n·P_{n−1}(x))²; (1 − x)(1 + x) keeps precision near ±1.
        let p_prev = legendre_and_derivative(n - 1, x).0;
        let w = 2.0 * (1.0 - x) * (1.0 + x) / (nf * p_prev).powi(2);
        nodes[n - 1 - i] = x;
        nodes[i] = -x;
        weights[n - 1 - i] = w;
        weights[i] = w;
    }
    if n % 2 == 1 {
        nodes[n / 2] = 0.0;
    }
    // As numpy's leggauss: rescale so the weights sum to exactly 2.
    let total: f64 = weights.iter().sum();
    weights.iter_mut().for_each(|w| *w *= 2.0 / total);
    (nodes, weights)
}

/// P_n(x) and P_n'(x) by the three-term recurrence.
fn legendre_and_derivative(n: usize, x: f64) -> (f64, f64) {
    let (mut p0, mut p1) = (1.0, x);
    for k in 2..=n {
        let kf = k as f64;
        let p2 = ((2.0 * kf - 1.0) * x * p1 - (kf - 1.0) * p0) / kf;
        p0 = p1;
        p1 = p2;
    }
    if n == 0 {
        return (1.0, 0.0);
    }
    let d = n as f64 * (x * p1 - p0) / (x * x - 1.0);
    (p1, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauss_legendre_50_matches_published_check_values() {
        // docs/method.md §5.2, from numpy leggauss(50).
        let q = quadrature(Method::GaussLegendre, 50).unwrap();
        assert!((q.alphas[0] - 0.0005667977899644905).abs() < 1e-15);
        assert!((q.alphas[1] - 0.002984015283954644).abs() < 1e-15);
        assert!((q.alphas[49] - 0.9994332022100355).abs() < 1e-15);
        // Weights agree with numpy to ~1e-12 relative, and exactly once cast to f32
        // (which is all IG uses).
        assert!(
            (q.steps[0] / 0.0014543112765789633 - 1.0).abs() < 1e-11,
            "{}",
            q.steps[0]
        );
        assert_eq!(q.steps[0] as f32, 0.0014543112765789633f64 as f32);
        assert!((q.steps[24] / 0.031088308327673515 - 1.0).abs() < 1e-11);
        assert_eq!(q.steps[24] as f32, 0.031088308327673515f64 as f32);
        assert!((q.steps.iter().sum::<f64>() - 1.0).abs() < 1e-14);
    }

    #[test]
    fn gauss_legendre_integrates_polynomials_exactly() {
        // n points integrate degree 2n−1 exactly: ∫₀¹ α^k dα = 1/(k+1).
        for n in 1..12 {
            let q = quadrature(Method::GaussLegendre, n).unwrap();
            for k in 0..2 * n {
                let s: f64 = q
                    .alphas
                    .iter()
                    .zip(&q.steps)
                    .map(|(a, w)| w * a.powi(k as i32))
                    .sum();
                assert!(
                    (s - 1.0 / (k as f64 + 1.0)).abs() < 1e-13,
                    "n={n} k={k} {s}"
                );
            }
        }
    }

    #[test]
    fn riemann_rules_follow_captum() {
        let q = quadrature(Method::RiemannTrapezoid, 5).unwrap();
        assert_eq!(q.alphas, vec![0.0, 0.25, 0.5, 0.75, 1.0]);
        assert_eq!(q.steps, vec![0.1, 0.2, 0.2, 0.2, 0.1]);
        assert!(quadrature(Method::RiemannLeft, 1).is_err());
        assert!(quadrature(Method::GaussLegendre, 0).is_err());
        assert_eq!(
            quadrature(Method::GaussLegendre, 1).unwrap().alphas,
            vec![0.5]
        );
    }
}
