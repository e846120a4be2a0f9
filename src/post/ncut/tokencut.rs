//! TokenCut's normalized-cut bipartition of a patch-feature graph (docs/postprocessing.md §1).

use ndarray::{Array1, Array2, ArrayView2};

use super::affinity::binary_affinity;
use super::components::seed_component;
use super::dense::fiedler_dense;
use crate::error::{Error, Result};

/// TokenCut's default similarity threshold τ (`main_tokencut.py`, `get_saliency.py`).
pub const TOKENCUT_TAU: f32 = 0.2;
/// TokenCut's default weight ε of the pairs at or below τ.
pub const TOKENCUT_EPS: f32 = 1e-5;

/// Output of [`tokencut_bipartition`]. Node `n` is patch `(n / cols, n % cols)`.
#[derive(Clone, Debug)]
pub struct TokenCutOutput {
    /// Fiedler vector (N), D-normalised (`vᵀDv = 1`), oriented as TokenCut returns
    /// it: negated when the seed fell on the false side, so `eigvec[seed] > 0`.
    pub eigvec: Array1<f64>,
    /// Final mask (rows, cols): the 4-connected component of `bipartition` that
    /// contains the seed.
    pub mask: Array2<bool>,
    /// `eigvec > mean(eigvec)` after the orientation (rows, cols), before the
    /// component step. Entries equal to the mean are foreground iff `flipped`.
    pub bipartition: Array2<bool>,
    /// `argmax |v|` (first index on ties), a node index in `0..N`.
    pub seed: usize,
    /// Whether the solver's vector was negated (the seed was on the false side).
    pub flipped: bool,
    /// λ₂ of `(D − W)v = λDv`.
    pub eigenvalue: f64,
    /// λ₃ (None when N = 2); `λ₃ − λ₂` small means an ill-determined cut (docs/postprocessing.md §1.3).
    pub next_eigenvalue: Option<f64>,
}

/// Result of [`orient_at_mean`]: TokenCut's split and foreground rule (docs/postprocessing.md
/// §1.2 steps 6–7) applied to a vector.
#[derive(Clone, Debug, PartialEq)]
pub struct Oriented {
    /// The vector, negated if `flipped`.
    pub vector: Array1<f64>,
    /// Foreground flags (N).
    pub foreground: Vec<bool>,
    /// `argmax |v|`, first index on ties.
    pub seed: usize,
    /// Whether the input was negated.
    pub flipped: bool,
}

/// TokenCut's rule: `bip = v > mean(v)` (strict), `seed = argmax |v|` (first on
/// ties); if `bip[seed]` is false, negate `v` and invert `bip` (so entries equal to
/// the mean then land in the foreground). NaN entries compare false.
pub fn orient_at_mean(v: &[f64]) -> Oriented {
    let mean = v.iter().sum::<f64>() / v.len().max(1) as f64;
    let mut foreground: Vec<bool> = v.iter().map(|&x| x > mean).collect();
    let mut seed = 0;
    for (i, x) in v.iter().enumerate() {
        if x.abs() > v[seed].abs() {
            seed = i;
        }
    }
    let flipped = !v.is_empty() && !foreground[seed];
    let vector: Array1<f64> = if flipped {
        foreground.iter_mut().for_each(|b| *b = !*b);
        v.iter().map(|x| -x).collect()
    } else {
        v.iter().copied().collect()
    };
    Oriented {
        vector,
        foreground,
        seed,
        flipped,
    }
}

/// TokenCut bipartition of patch features `(N, D)` laid out row-major on
/// `grid = (rows, cols)` (N = rows·cols), exactly as docs/postprocessing.md §1.2: binary cosine graph
/// ([`binary_affinity`], defaults [`TOKENCUT_TAU`], [`TOKENCUT_EPS`]), the dense
/// generalized eigenproblem with scipy `eigh(D−W, D, subset_by_index=[1,2])`
/// semantics ([`fiedler_dense`]), the split at the mean, the seed rule, and the
/// seed's 4-connected component.
///
/// ```
/// use explainseg::post::ncut::tokencut_bipartition;
/// use ndarray::Array2;
/// // A 4×4 grid whose left half points one way and right half another.
/// let feats = Array2::from_shape_fn((16, 3), |(n, k)| {
///     let left = n % 4 < 2;
///     match (left, k) { (true, 0) | (false, 1) => 1.0, (_, 2) => 0.01 * n as f32, _ => 0.0 }
/// });
/// let out = tokencut_bipartition(feats.view(), (4, 4), 0.2, 1e-5)?;
/// assert!(out.eigvec[out.seed] > 0.0);
/// let left = out.mask.column(0)[0];
/// assert!(out.mask.rows().into_iter().all(|r| r[0] == left && r[1] == left && r[2] != left && r[3] != left));
/// # Ok::<(), explainseg::Error>(())
/// ```
///
/// # Errors
/// [`Error::Shape`] if `N ≠ rows·cols` or D = 0; [`Error::InvalidParam`] if N < 2,
/// a feature is not finite, or `τ`/`ε` are invalid (see [`binary_affinity`]).
pub fn tokencut_bipartition(
    features: ArrayView2<f32>,
    grid: (usize, usize),
    tau: f32,
    eps: f32,
) -> Result<TokenCutOutput> {
    let (rows, cols) = grid;
    let (n, dim) = features.dim();
    crate::limits::check("tokencut_nodes", n as u64)?;
    if rows.checked_mul(cols) != Some(n) {
        return Err(Error::shape(
            format!("features (rows·cols, D) for grid {rows}×{cols}"),
            &[rows.saturating_mul(cols), dim],
            &[n, dim],
        ));
    }
    let w = binary_affinity(features, tau, eps)?;
    let fiedler = fiedler_dense(w.view())?;
    drop(w);
    let oriented = orient_at_mean(&fiedler.vector.to_vec());
    let bipartition = Array2::from_shape_vec((rows, cols), oriented.foreground)
        .map_err(|_| Error::Internal("bipartition reshape".into()))?;
    let mask = seed_component(
        bipartition.view(),
        (oriented.seed / cols, oriented.seed % cols),
    );
    Ok(TokenCutOutput {
        eigvec: oriented.vector,
        mask,
        bipartition,
        seed: oriented.seed,
        flipped: oriented.flipped,
        eigenvalue: fiedler.eigenvalue,
        next_eigenvalue: fiedler.next_eigenvalue,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orientation_flips_when_the_seed_is_below_the_mean() {
        // Largest magnitude is −3 at index 1: below the mean, so flip.
        let o = orient_at_mean(&[1.0, -3.0, 0.5, 1.5]);
        assert!(o.flipped);
        assert_eq!(o.seed, 1);
        assert_eq!(o.vector.to_vec(), vec![-1.0, 3.0, -0.5, -1.5]);
        assert_eq!(o.foreground, vec![false, true, false, false]);
        // Same vector negated: no flip, same partition and vector.
        let p = orient_at_mean(&[-1.0, 3.0, -0.5, -1.5]);
        assert!(!p.flipped);
        assert_eq!(p.vector, o.vector);
        assert_eq!(p.foreground, o.foreground);
    }

    #[test]
    fn ties_at_the_mean_follow_the_flip() {
        // mean = 0; entry 1 equals it. Unflipped: not foreground. Flipped: foreground.
        let a = orient_at_mean(&[2.0, 0.0, -1.0, -1.0]);
        assert!(!a.flipped && !a.foreground[1]);
        let b = orient_at_mean(&[-2.0, 0.0, 1.0, 1.0]);
        assert!(b.flipped && b.foreground[1]);
    }
}
