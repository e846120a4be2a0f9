//! Where each IG pass evaluates the gradient: the path points and weights of every
//! row of an attribution, for the fixed rules of [`quadrature`] and for the
//! stratified random design (docs/method.md §6.1).
//!
//! With a fixed rule every input (NoiseTunnel sample) uses the same `n_steps`
//! points. With [`Method::Stratified`] the `inputs · n_steps` rows share one
//! stratification of [0, 1]: row `g` sits at `α_g = (π(g) + u_g)/(inputs · n_steps)`,
//! `π` a seeded permutation of the strata and `u_g` uniform, with weight
//! `1/n_steps`. Each α is uniform on [0, 1] and independent of the noise, so the
//! NoiseTunnel mean of `(x_j − b) ⊙ Σ_k w ∇F(b + α (x_j − b))` is an unbiased
//! estimate of E_ε[IG(x + ε)] with the path integral exact; spending one pass per
//! noise sample (`n_steps` 1) draws as many noise images as there are passes.

use super::quadrature::{quadrature, Method};
use crate::error::Result;
use crate::rng::Rng;

/// Key of the path-point stream, apart from the noise of the same seed.
const PATH_KEY: u64 = 0x5041_5448; // "PATH"

/// The path points of an attribution's rows. Row `g = j·n_steps + k` (input `j`,
/// step `k`) uses entry `g % period()` of both tables.
#[derive(Debug, Clone, PartialEq)]
pub struct PathPoints {
    pub alphas: Vec<f32>,
    pub weights: Vec<f32>,
}

impl PathPoints {
    /// How often the tables repeat along the rows: `n_steps` for a fixed rule (every
    /// input uses the same points), all rows for the stratified design.
    pub fn period(&self) -> usize {
        self.alphas.len()
    }

    /// α and weight of row `g`.
    pub fn at(&self, g: usize) -> (f32, f32) {
        let i = g % self.period();
        (self.alphas[i], self.weights[i])
    }
}

/// The path points of `inputs` inputs with `n_steps` points each under `method`;
/// `seed` decides the stratified design (unused by the fixed rules).
///
/// # Errors
/// As [`quadrature`] for the step count.
pub fn path_points(method: Method, n_steps: usize, inputs: usize, seed: u64) -> Result<PathPoints> {
    let q = quadrature(method, n_steps)?;
    if method != Method::Stratified {
        return Ok(PathPoints {
            alphas: q.alphas.iter().map(|&a| a as f32).collect(),
            weights: q.steps.iter().map(|&s| s as f32).collect(),
        });
    }
    let rows = inputs * n_steps;
    let mut strata: Vec<usize> = (0..rows).collect();
    let mut rng = Rng::stream(seed, &[PATH_KEY]);
    rng.shuffle(&mut strata);
    let alphas = strata
        .iter()
        .map(|&k| {
            let u = rng.uniform_open_f64();
            ((k as f64 + u) / rows as f64) as f32
        })
        .collect();
    Ok(PathPoints {
        alphas,
        weights: vec![(1.0 / n_steps as f64) as f32; rows],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_rules_repeat_their_quadrature_for_every_input() {
        let p = path_points(Method::GaussLegendre, 4, 3, 9).unwrap();
        let q = quadrature(Method::GaussLegendre, 4).unwrap();
        assert_eq!(p.period(), 4);
        for g in 0..12 {
            assert_eq!(p.at(g).0, q.alphas[g % 4] as f32);
            assert_eq!(p.at(g).1, q.steps[g % 4] as f32);
        }
        assert_eq!(p, path_points(Method::GaussLegendre, 4, 3, 10).unwrap());
    }

    #[test]
    fn stratified_points_take_one_from_each_stratum() {
        let (inputs, steps) = (40, 3);
        let p = path_points(Method::Stratified, steps, inputs, 5).unwrap();
        let n = inputs * steps;
        assert_eq!(p.period(), n);
        let mut seen = vec![false; n];
        for &a in &p.alphas {
            assert!(a > 0.0 && a < 1.0);
            let k = ((a as f64) * n as f64).floor() as usize;
            assert!(!seen[k], "stratum {k} twice");
            seen[k] = true;
        }
        assert!(p.weights.iter().all(|&w| w == (1.0f64 / 3.0) as f32));
        // Seeded: the same seed gives the same points, another seed others.
        assert_eq!(
            p,
            path_points(Method::Stratified, steps, inputs, 5).unwrap()
        );
        assert_ne!(
            p,
            path_points(Method::Stratified, steps, inputs, 6).unwrap()
        );
    }
}
