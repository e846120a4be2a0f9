//! Shi–Malik normalized cut of a scalar map (a relevance or fused map), for the
//! XAI variants: the map is area-averaged onto a coarse grid, a sparse
//! intensity-and-distance graph is built on it, and its Fiedler vector
//! ([`super::lanczos`]) is split at its mean. The foreground is the side with the
//! higher mean map value ([`foreground_by_relevance`]).
//!
//! Graph (Shi & Malik 2000, eq. 11): for grid cells `i ≠ j` or `i = j` with
//! `‖x_i − x_j‖ ≤ radius`,
//! `w_ij = exp(−(r_i − r_j)²/σ_r²) · exp(−‖x_i − x_j‖²/σ_x²)`, else 0, where `r` is
//! the grid map min–max normalised to [0, 1] (all zeros if the map is constant)
//! and `x` are cell coordinates in grid units. Self-loops (`w_ii = 1`) are kept,
//! as in TokenCut's graph.

use ndarray::{Array1, Array2, ArrayView2};

use super::lanczos::{fiedler_sparse, SparseFiedler, SparseGraph};
use crate::error::{Error, Result};

/// Checks the cells and (an upper bound of) the edges of a grid graph against
/// the `ncut_nodes` / `ncut_edges` limits.
fn check_graph_size(grid: (usize, usize), radius: f32) -> Result<()> {
    let nodes = crate::limits::check_product("ncut_nodes", &[grid.0 as u64, grid.1 as u64])?;
    let side = if radius.is_finite() {
        (2.0 * radius.max(0.0).floor() + 1.0) as f64
    } else {
        f64::INFINITY
    };
    // The neighbourhood window is visited whole, so it counts unclipped.
    let per_node = (side * side).min(u64::MAX as f64) as u64;
    crate::limits::check_product("ncut_edges", &[nodes, per_node.max(1)])?;
    Ok(())
}

/// Parameters of [`shi_malik_ncut`]. Defaults: a 56×56 grid, `σ_r = 0.1`,
/// `σ_x = 4` cells, `radius = 5` cells.
#[derive(Clone, Debug, PartialEq)]
pub struct ShiMalikParams {
    /// Graph grid `(rows, cols)`: the map is area-averaged onto it
    /// ([`resample_area`]); `None` uses the map's own pixels (N = H·W; mind the
    /// cost, O(N·radius²) memory and time per Lanczos step).
    pub grid: Option<(usize, usize)>,
    /// Intensity scale σ_r, in units of the min–max normalised map (0..1).
    pub sigma_r: f32,
    /// Spatial scale σ_x, in grid cells.
    pub sigma_x: f32,
    /// Neighbourhood radius in grid cells (Euclidean, inclusive; ≥ 1).
    pub radius: f32,
}

impl Default for ShiMalikParams {
    fn default() -> Self {
        ShiMalikParams {
            grid: Some((56, 56)),
            sigma_r: 0.1,
            sigma_x: 4.0,
            radius: 5.0,
        }
    }
}

impl ShiMalikParams {
    /// Checks every field.
    ///
    /// # Errors
    /// [`Error::InvalidParam`] if a σ is not finite and positive, the radius is not
    /// finite or below 1, or the grid has fewer than 2 cells.
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [("sigma_r", self.sigma_r), ("sigma_x", self.sigma_x)] {
            if !(v.is_finite() && v > 0.0) {
                return Err(Error::param(
                    name,
                    format!("must be finite and > 0, got {v}"),
                ));
            }
        }
        if !(self.radius.is_finite() && self.radius >= 1.0) {
            return Err(Error::param(
                "radius",
                format!("must be finite and ≥ 1 (grid cells), got {}", self.radius),
            ));
        }
        if let Some(grid) = self.grid {
            check_graph_size(grid, self.radius)?;
        }
        if let Some((r, c)) = self.grid {
            if r.checked_mul(c).is_none_or(|n| n < 2) {
                return Err(Error::param(
                    "grid",
                    format!("needs at least 2 cells, got {r}×{c}"),
                ));
            }
        }
        Ok(())
    }
}

/// Output of [`shi_malik_ncut`]. Cell `n` is `(n / cols, n % cols)`.
#[derive(Clone, Debug)]
pub struct ShiMalikOutput {
    /// Fiedler vector (rows·cols), D-normalised (`vᵀDv = 1`), signed so that the
    /// foreground is `eigvec > mean(eigvec)` (up to ties at the mean).
    pub eigvec: Array1<f64>,
    /// Foreground (rows, cols): the side of the mean split with the higher mean map
    /// value.
    pub mask: Array2<bool>,
    /// λ₂ of `(D − W)v = λDv`.
    pub eigenvalue: f64,
    /// Lanczos residual `‖My − (1−λ₂)y‖` of the normalised pair (`M = D^{−1/2}WD^{−1/2}`,
    /// `y = D^{1/2}v`): ≤ 1e-10 when converged. Larger only when the step budget
    /// (1000 steps) ran out, which happens for graphs nearly disconnected into many
    /// pieces (e.g. σ_r far below the map's contrast); the cut is then still along
    /// weak links but not the exact Fiedler cut.
    pub residual: f64,
    /// The map on the graph grid (area-averaged, before normalisation).
    pub grid_map: Array2<f32>,
}

/// One axis of the area-averaging weights: output cell `i` covers input
/// `[i·s, (i+1)·s)`, `s = n_in/n_out`; returns `(first input index, weights)`.
fn area_weights(n_in: usize, n_out: usize) -> Vec<(usize, Vec<f64>)> {
    let scale = n_in as f64 / n_out as f64;
    (0..n_out)
        .map(|i| {
            let lo = i as f64 * scale;
            let hi = ((i + 1) as f64 * scale).min(n_in as f64);
            let first = lo.floor() as usize;
            let last = (hi.ceil() as usize).min(n_in).max(first + 1);
            let weights = (first..last)
                .map(|p| ((p + 1) as f64).min(hi) - (p as f64).max(lo))
                .map(|overlap| overlap.max(0.0) / scale)
                .collect();
            (first, weights)
        })
        .collect()
}

pub(super) fn resample_area_f64(
    map: &ArrayView2<f32>,
    (rows, cols): (usize, usize),
) -> Array2<f64> {
    let (h, w) = map.dim();
    let wy = area_weights(h, rows);
    let wx = area_weights(w, cols);
    // Columns first: (h, cols), then rows: (rows, cols).
    let mut tmp = Array2::<f64>::zeros((h, cols));
    for y in 0..h {
        for (j, (x0, ws)) in wx.iter().enumerate() {
            tmp[[y, j]] = ws
                .iter()
                .enumerate()
                .map(|(k, wk)| wk * map[[y, x0 + k]] as f64)
                .sum();
        }
    }
    let mut out = Array2::<f64>::zeros((rows, cols));
    for (i, (y0, ws)) in wy.iter().enumerate() {
        for j in 0..cols {
            out[[i, j]] = ws
                .iter()
                .enumerate()
                .map(|(k, wk)| wk * tmp[[y0 + k, j]])
                .sum();
        }
    }
    out
}

pub(super) fn check_map(map: &ArrayView2<f32>) -> Result<()> {
    let (h, w) = map.dim();
    if h == 0 || w == 0 {
        return Err(Error::shape("map (H, W) with H, W ≥ 1", &[1, 1], &[h, w]));
    }
    if let Some((idx, _)) = map.indexed_iter().find(|(_, v)| !v.is_finite()) {
        return Err(Error::param("map", format!("entry {idx:?} is not finite")));
    }
    Ok(())
}

/// Area-averages `map` (H, W) onto `size = (rows, cols)`: output cell `(i, j)` is
/// the mean of the map over the rectangle `[i·H/rows, (i+1)·H/rows) × [j·W/cols,
/// (j+1)·W/cols)`, pixels weighted by their overlap (an exact block mean for
/// integer factors; works for up-sampling too). Computed in f64.
///
/// # Errors
/// [`Error::Shape`] if the map or `size` is empty; [`Error::InvalidParam`] if a
/// map value is not finite.
pub fn resample_area(map: ArrayView2<f32>, size: (usize, usize)) -> Result<Array2<f32>> {
    check_map(&map)?;
    if size.0 == 0 || size.1 == 0 {
        return Err(Error::shape(
            "resample size (rows, cols) ≥ 1",
            &[1, 1],
            &[size.0, size.1],
        ));
    }
    Ok(resample_area_f64(&map, size).mapv(|v| v as f32))
}

/// Whether the complement of `mask` has the higher mean of `map` (an empty side
/// is never the foreground; ties keep `mask`).
fn complement_is_foreground(mask: &[bool], map: &[f64]) -> bool {
    let (mut s_in, mut n_in, mut s_out, mut n_out) = (0.0, 0usize, 0.0, 0usize);
    for (&m, &v) in mask.iter().zip(map) {
        if m {
            s_in += v;
            n_in += 1;
        } else {
            s_out += v;
            n_out += 1;
        }
    }
    if n_out == 0 {
        return false;
    }
    if n_in == 0 {
        return true;
    }
    s_out / n_out as f64 > s_in / n_in as f64
}

/// The foreground of a bipartition for the XAI variants: `mask` or its
/// complement, whichever has the higher mean `map` value (ties keep `mask`; an
/// empty side is never the foreground).
///
/// # Errors
/// [`Error::Shape`] if the shapes differ; [`Error::InvalidParam`] if a map value
/// is not finite.
pub fn foreground_by_relevance(
    mask: ArrayView2<bool>,
    map: ArrayView2<f32>,
) -> Result<Array2<bool>> {
    if mask.dim() != map.dim() {
        let (a, b) = (mask.dim(), map.dim());
        return Err(Error::shape(
            "map (same shape as the mask)",
            &[a.0, a.1],
            &[b.0, b.1],
        ));
    }
    check_map(&map)?;
    let m: Vec<bool> = mask.iter().copied().collect();
    let v: Vec<f64> = map.iter().map(|&x| x as f64).collect();
    Ok(if complement_is_foreground(&m, &v) {
        mask.mapv(|b| !b)
    } else {
        mask.to_owned()
    })
}

/// Builds the Shi–Malik graph of the normalised grid map `r` (rows, cols).
pub(super) fn build_graph(r: &Array2<f64>, params: &ShiMalikParams) -> SparseGraph {
    let (rows, cols) = r.dim();
    let n = rows * cols;
    let radius = params.radius as f64;
    let reach = radius.floor() as isize;
    let inv_sr2 = 1.0 / (params.sigma_r as f64).powi(2);
    let inv_sx2 = 1.0 / (params.sigma_x as f64).powi(2);
    // Offsets in raster order with their spatial factor.
    let mut offsets = Vec::new();
    for dy in -reach..=reach {
        for dx in -reach..=reach {
            let dist2 = (dy * dy + dx * dx) as f64;
            if dist2 <= radius * radius {
                offsets.push((dy, dx, (-dist2 * inv_sx2).exp()));
            }
        }
    }
    let flat = r
        .as_slice()
        .map(|s| s.to_vec())
        .unwrap_or_else(|| r.iter().copied().collect());
    let mut indptr = Vec::with_capacity(n + 1);
    let mut indices = Vec::with_capacity(n * offsets.len());
    let mut values = Vec::with_capacity(n * offsets.len());
    indptr.push(0);
    for y in 0..rows as isize {
        for x in 0..cols as isize {
            let i = (y as usize) * cols + x as usize;
            for &(dy, dx, spatial) in &offsets {
                let (yy, xx) = (y + dy, x + dx);
                if yy < 0 || xx < 0 || yy >= rows as isize || xx >= cols as isize {
                    continue;
                }
                let j = (yy as usize) * cols + xx as usize;
                let diff = flat[i] - flat[j];
                indices.push(j);
                values.push((-diff * diff * inv_sr2).exp() * spatial);
            }
            indptr.push(indices.len());
        }
    }
    SparseGraph {
        n,
        indptr,
        indices,
        values,
    }
}

/// Shi–Malik normalized cut of a scalar `map` (H, W): resample to `params.grid`
/// ([`resample_area`]), min–max normalise, build the sparse graph (module docs),
/// solve `(D − W)v = λDv` for the second-smallest eigenpair by Lanczos, split at
/// `mean(v)` (strict `>`), and take as foreground the side with the higher mean
/// grid-map value. The mask lives on the graph grid; up-sample it (e.g. nearest,
/// docs/postprocessing.md §6.2) to the image size if needed.
///
/// Cost on the default 56×56 grid: ~3k nodes, ~240k edges, ~100 Lanczos steps,
/// well under a second (≈ 50–100 ms on two cores).
///
/// # Errors
/// [`Error::InvalidParam`] for invalid parameters ([`ShiMalikParams::validate`]),
/// a non-finite map value or fewer than 2 cells; [`Error::Shape`] for an empty map;
/// [`Error::Internal`] only for a broken internal invariant. Slow convergence is
/// not an error: see [`ShiMalikOutput::residual`].
pub fn shi_malik_ncut(map: ArrayView2<f32>, params: &ShiMalikParams) -> Result<ShiMalikOutput> {
    shi_malik_split(map, params, NcutSplit::Mean)
}

/// Where the Fiedler vector is thresholded (docs/postprocessing.md §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum NcutSplit {
    /// At its mean (Shi–Malik's usual choice; the paper preset's).
    #[default]
    Mean,
    /// At the Otsu threshold of its values (256 bins): the split between the two
    /// modes of the eigenvector, which stays put when the mass of one mode
    /// changes a little — the mean moves with it.
    Otsu,
}

impl NcutSplit {
    pub fn name(self) -> &'static str {
        match self {
            NcutSplit::Mean => "mean",
            NcutSplit::Otsu => "otsu",
        }
    }
}

impl std::str::FromStr for NcutSplit {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "mean" => Ok(NcutSplit::Mean),
            "otsu" => Ok(NcutSplit::Otsu),
            other => Err(Error::param(
                "ncut_split",
                format!("`{other}` is not one of mean, otsu"),
            )),
        }
    }
}

/// The eigenvector's threshold for `split`.
fn split_threshold(v: &Array1<f64>, split: NcutSplit) -> Result<f64> {
    Ok(match split {
        NcutSplit::Mean => v.sum() / v.len() as f64,
        NcutSplit::Otsu => {
            // On the min–max scaled values, so that 256 f32 bins always resolve them.
            let lo = v.fold(f64::INFINITY, |m, &x| m.min(x));
            let hi = v.fold(f64::NEG_INFINITY, |m, &x| m.max(x));
            if hi <= lo {
                return Ok(lo);
            }
            let scaled =
                Array2::from_shape_fn((1, v.len()), |(_, i)| ((v[i] - lo) / (hi - lo)) as f32);
            lo + crate::post::otsu::threshold_otsu(scaled.view(), 256)? as f64 * (hi - lo)
        }
    })
}

/// [`shi_malik_ncut`] with the eigenvector split at `split`'s threshold.
///
/// # Errors
/// As for [`shi_malik_ncut`].
pub fn shi_malik_split(
    map: ArrayView2<f32>,
    params: &ShiMalikParams,
    split: NcutSplit,
) -> Result<ShiMalikOutput> {
    params.validate()?;
    check_map(&map)?;
    let size = params.grid.unwrap_or(map.dim());
    check_graph_size(size, params.radius)?;
    if size.0 * size.1 < 2 {
        return Err(Error::param(
            "map",
            format!(
                "the graph needs at least 2 cells, got {}×{}",
                size.0, size.1
            ),
        ));
    }
    let grid_map = if params.grid.is_some() {
        resample_area_f64(&map, size)
    } else {
        map.mapv(|v| v as f64)
    };
    let lo = grid_map.fold(f64::INFINITY, |m, &v| m.min(v));
    let hi = grid_map.fold(f64::NEG_INFINITY, |m, &v| m.max(v));
    let range = hi - lo;
    let r = if range > 0.0 {
        grid_map.mapv(|v| (v - lo) / range)
    } else {
        grid_map.mapv(|_| 0.0)
    };
    let graph = build_graph(&r, params);
    let SparseFiedler { fiedler, residual } = fiedler_sparse(&graph);
    let v = fiedler.vector;
    if v.len() != size.0 * size.1 {
        return Err(Error::Internal("Lanczos returned no vector".into()));
    }
    let threshold = split_threshold(&v, split)?;
    let split: Vec<bool> = v.iter().map(|&x| x > threshold).collect();
    let gm: Vec<f64> = grid_map.iter().copied().collect();
    let flip = complement_is_foreground(&split, &gm);
    let (eigvec, fg): (Array1<f64>, Vec<bool>) = if flip {
        (v.mapv(|x| -x), split.iter().map(|b| !b).collect())
    } else {
        (v, split)
    };
    let mask =
        Array2::from_shape_vec(size, fg).map_err(|_| Error::Internal("mask reshape".into()))?;
    Ok(ShiMalikOutput {
        eigvec,
        mask,
        eigenvalue: fiedler.eigenvalue,
        residual,
        grid_map: grid_map.mapv(|v| v as f32),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::post::ncut::dense::fiedler_dense;

    #[test]
    fn area_weights_are_block_means_for_integer_factors() {
        let w = area_weights(6, 3);
        assert_eq!(
            w,
            vec![
                (0, vec![0.5, 0.5]),
                (2, vec![0.5, 0.5]),
                (4, vec![0.5, 0.5])
            ]
        );
        let w = area_weights(3, 2); // s = 1.5: [0, 1.5) and [1.5, 3)
        assert_eq!(
            w,
            vec![
                (0, vec![1.0 / 1.5, 0.5 / 1.5]),
                (1, vec![0.5 / 1.5, 1.0 / 1.5])
            ]
        );
        let w = area_weights(2, 4); // up-sampling: each output cell inside one pixel
        assert_eq!(
            w,
            vec![
                (0, vec![1.0]),
                (0, vec![1.0]),
                (1, vec![1.0]),
                (1, vec![1.0])
            ]
        );
    }

    /// Lanczos and the dense solver agree on the same graph.
    #[test]
    fn lanczos_matches_the_dense_solver() {
        let (rows, cols) = (17, 23);
        let map = Array2::from_shape_fn((rows, cols), |(y, x)| {
            let (dy, dx) = (y as f64 - 8.0, x as f64 - 14.0);
            ((-(dy * dy + dx * dx) / 30.0).exp() + 0.05 * ((x * 7 + y * 3) % 5) as f64) as f32
        });
        let params = ShiMalikParams {
            grid: None,
            ..Default::default()
        };
        let lo = map.fold(f32::INFINITY, |m, &v| m.min(v)) as f64;
        let hi = map.fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
        let r = map.mapv(|v| (v as f64 - lo) / (hi - lo));
        let g = build_graph(&r, &params);
        let mut dense = Array2::<f64>::zeros((g.n, g.n));
        for i in 0..g.n {
            for k in g.indptr[i]..g.indptr[i + 1] {
                dense[[i, g.indices[k]]] = g.values[k];
            }
        }
        let a = fiedler_dense(dense.view()).unwrap();
        let SparseFiedler {
            fiedler: b,
            residual,
        } = fiedler_sparse(&g);
        assert!(residual <= crate::post::ncut::lanczos::RESIDUAL_TOL);
        let dot: f64 = a.vector.iter().zip(&b.vector).map(|(x, y)| x * y).sum();
        let sign = dot.signum();
        let err = a
            .vector
            .iter()
            .zip(&b.vector)
            .map(|(x, y)| (x - sign * y).powi(2))
            .sum::<f64>()
            .sqrt()
            / a.vector.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!(err < 1e-7, "eigenvector rel err {err}");
        assert!((a.eigenvalue - b.eigenvalue).abs() < 1e-12 * a.eigenvalue.max(1e-3));
        let out = shi_malik_ncut(map.view(), &params).unwrap();
        // The bright blob is the foreground.
        assert!(out.mask[[8, 14]]);
        assert!(!out.mask[[0, 0]]);
    }
}
