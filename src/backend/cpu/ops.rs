//! Element-wise and row-wise ViT operations on the CPU (forward and input-gradient
//! backward): LayerNorm, exact-erf GELU, scaled softmax, bias add.
//!
//! Row-wise kernels take one row; callers parallelise over rows with rayon.

use super::math;
use super::simd::simd_dispatch;

/// Sum of a slice with 8 independent accumulators (vectorisable, and closer to
/// PyTorch's cascaded sums than a single running total).
#[inline(always)]
fn sum8(x: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = x.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for l in 0..8 {
            acc[l] += c[l];
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for v in rest {
        s += v;
    }
    s
}

#[inline(always)]
fn dot8(x: &[f32], y: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let cx = x.chunks_exact(8);
    let cy = y.chunks_exact(8);
    let (rx, ry) = (cx.remainder(), cy.remainder());
    for (a, b) in cx.zip(cy) {
        for l in 0..8 {
            acc[l] += a[l] * b[l];
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (a, b) in rx.iter().zip(ry) {
        s += a * b;
    }
    s
}

/// `max(scale·x)` with 8 independent lanes and a compare-and-select, which LLVM turns
/// into vector max instructions (`f32::max`'s NaN rule keeps its loop scalar). The
/// maximum of finite values is exact, so the order does not change it; a NaN in the
/// row makes the softmax NaN either way (through `exp`).
#[inline(always)]
fn max8_scaled(x: &[f32], scale: f32) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 8];
    let chunks = x.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for l in 0..8 {
            let v = c[l] * scale;
            acc[l] = if v > acc[l] { v } else { acc[l] };
        }
    }
    let mut m = f32::NEG_INFINITY;
    for v in acc.into_iter().chain(rest.iter().map(|v| v * scale)) {
        m = if v > m { v } else { m };
    }
    m
}

#[inline(always)]
fn layer_norm_row_impl(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    y: &mut [f32],
    xhat: &mut [f32],
    rstd: &mut f32,
) {
    let n = x.len() as f32;
    let mean = sum8(x) / n;
    for (h, v) in xhat.iter_mut().zip(x) {
        *h = v - mean;
    }
    // Biased variance, as torch.nn.LayerNorm.
    let var = dot8(xhat, xhat) / n;
    let r = 1.0 / (var + eps).sqrt();
    *rstd = r;
    for i in 0..x.len() {
        let h = xhat[i] * r;
        xhat[i] = h;
        y[i] = h * gamma[i] + beta[i];
    }
}

simd_dispatch! {
    /// One LayerNorm row: `y = (x − μ)/√(σ² + ε)·γ + β` (biased σ²). Also writes
    /// x̂ and 1/√(σ² + ε), which the backward needs.
    pub fn layer_norm_row(x: &[f32], gamma: &[f32], beta: &[f32], eps: f32, y: &mut [f32], xhat: &mut [f32], rstd: &mut f32) => layer_norm_row_impl;
}

#[inline(always)]
fn layer_norm_bwd_row_impl(
    g: &[f32],
    gamma: &[f32],
    xhat: &[f32],
    rstd: f32,
    dx: &mut [f32],
    accumulate: bool,
) {
    let n = g.len() as f32;
    let mut gg_sum = 0f32;
    let mut gg_xhat = 0f32;
    let mut acc_a = [0f32; 8];
    let mut acc_b = [0f32; 8];
    let d = g.len();
    let main = d - d % 8;
    for c in (0..main).step_by(8) {
        for l in 0..8 {
            let gg = g[c + l] * gamma[c + l];
            acc_a[l] += gg;
            acc_b[l] += gg * xhat[c + l];
        }
    }
    for i in main..d {
        gg_sum += g[i] * gamma[i];
        gg_xhat += g[i] * gamma[i] * xhat[i];
    }
    gg_sum += acc_a.iter().sum::<f32>();
    gg_xhat += acc_b.iter().sum::<f32>();
    let mean_gg = gg_sum / n;
    let mean_gg_xhat = gg_xhat / n;
    for i in 0..d {
        let v = rstd * (g[i] * gamma[i] - mean_gg - xhat[i] * mean_gg_xhat);
        dx[i] = if accumulate { dx[i] + v } else { v };
    }
}

simd_dispatch! {
    /// LayerNorm input gradient for one row:
    /// `dx = r·(gγ − mean(gγ) − x̂·mean(gγ ⊙ x̂))`, added to `dx` when `accumulate`.
    pub fn layer_norm_bwd_row(g: &[f32], gamma: &[f32], xhat: &[f32], rstd: f32, dx: &mut [f32], accumulate: bool) => layer_norm_bwd_row_impl;
}

#[inline(always)]
fn gelu_impl(x: &[f32], y: &mut [f32]) {
    for (o, &v) in y.iter_mut().zip(x) {
        *o = v * math::normal_cdf(v);
    }
}

simd_dispatch! {
    /// Exact (erf) GELU, `y = x·Φ(x)` — PyTorch's `nn.GELU()` default. The engine
    /// uses [`gelu_in_place_with_grad`]; this and [`gelu_bwd`] are the plain CPU twins
    /// the CUDA kernels are checked against.
    pub fn gelu(x: &[f32], y: &mut [f32]) => gelu_impl;
}

#[inline(always)]
fn gelu_bwd_impl(x: &[f32], g: &mut [f32]) {
    for (gv, &v) in g.iter_mut().zip(x) {
        *gv *= math::normal_cdf(v) + v * math::normal_pdf(v);
    }
}

simd_dispatch! {
    /// In place: `g ← g·(Φ(x) + x·φ(x))`, the GELU input gradient.
    pub fn gelu_bwd(x: &[f32], g: &mut [f32]) => gelu_bwd_impl;
}

#[inline(always)]
fn gelu_in_place_with_grad_impl(x: &mut [f32], dy_dx: &mut [f32]) {
    for (v, d) in x.iter_mut().zip(dy_dx.iter_mut()) {
        let cdf = math::normal_cdf(*v);
        *d = cdf + *v * math::normal_pdf(*v);
        *v *= cdf;
    }
}

simd_dispatch! {
    /// In place, GELU and its derivative in one pass: `x ← x·Φ(x)` and
    /// `dy_dx = Φ(x) + x·φ(x)` (the backward then only multiplies).
    pub fn gelu_in_place_with_grad(x: &mut [f32], dy_dx: &mut [f32]) => gelu_in_place_with_grad_impl;
}

#[inline(always)]
fn softmax_row_impl(row: &mut [f32], scale: f32) {
    let max = max8_scaled(row, scale);
    for v in row.iter_mut() {
        *v = math::exp(*v * scale - max);
    }
    let inv = 1.0 / sum8(row);
    for v in row.iter_mut() {
        *v *= inv;
    }
}

simd_dispatch! {
    /// In place: `row ← softmax(scale·row)` (max-subtracted).
    pub fn softmax_row(row: &mut [f32], scale: f32) => softmax_row_impl;
}

#[inline(always)]
fn softmax_bwd_row_impl(p: &[f32], dp: &mut [f32], scale: f32) {
    let dot = dot8(p, dp);
    for (d, &pv) in dp.iter_mut().zip(p) {
        *d = scale * pv * (*d - dot);
    }
}

simd_dispatch! {
    /// In place: `dp ← scale·p ⊙ (dp − ⟨dp, p⟩)`, the gradient w.r.t. the unscaled
    /// scores of `softmax(scale·s)`.
    pub fn softmax_bwd_row(p: &[f32], dp: &mut [f32], scale: f32) => softmax_bwd_row_impl;
}

/// Adds `bias` to every row of the row-major matrix `x` (rows of `bias.len()`).
pub fn add_bias_rows(x: &mut [f32], bias: &[f32]) {
    for row in x.chunks_exact_mut(bias.len()) {
        row.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
    }
}

/// `dst[j] += Σ_rows x[row, j]`, rows in order (deterministic): a bias gradient.
pub fn add_col_sums(dst: &mut [f32], x: &[f32]) {
    for row in x.chunks_exact(dst.len()) {
        dst.iter_mut().zip(row).for_each(|(a, v)| *a += v);
    }
}

/// LayerNorm parameter gradients, added: dγ += Σ_rows g⊙x̂, dβ += Σ_rows g.
pub fn layer_norm_param_grads(g: &[f32], xhat: &[f32], dgamma: &mut [f32], dbeta: &mut [f32]) {
    let d = dgamma.len();
    for (gr, hr) in g.chunks_exact(d).zip(xhat.chunks_exact(d)) {
        for j in 0..d {
            dgamma[j] += gr[j] * hr[j];
            dbeta[j] += gr[j];
        }
    }
}

/// Copies `rows` rows of `cols` values from `src` (rows `src_ld` apart) to `dst`
/// (rows `dst_ld` apart): gathers or scatters the CLS rows of a batch.
pub fn copy_rows(
    src: &[f32],
    src_ld: usize,
    dst: &mut [f32],
    dst_ld: usize,
    rows: usize,
    cols: usize,
) {
    for r in 0..rows {
        dst[r * dst_ld..][..cols].copy_from_slice(&src[r * src_ld..][..cols]);
    }
}

/// `d_features[b] = head_w[targets[b]]`: ∂ logit[target] / ∂ feature for a linear
/// head with weight (classes, in_dim).
pub fn head_rows(head_w: &[f32], targets: &[usize], in_dim: usize) -> Vec<f32> {
    targets
        .iter()
        .flat_map(|&t| head_w[t * in_dim..][..in_dim].iter().copied())
        .collect()
}

/// Non-overlapping `patch`² patches of one image (3, H, W), row-major in `x`, as rows
/// (Np, 3·p·p) with columns in (channel, row, col) order (the conv weight's
/// flattening); `grid` = (rows, cols) of patches. Written to `out`.
pub fn im2col_image(
    x: &[f32],
    height: usize,
    width: usize,
    patch: usize,
    grid: (usize, usize),
    out: &mut [f32],
) {
    let (gr, gc) = grid;
    let p = patch;
    let cols = 3 * p * p;
    for i in 0..gr {
        for j in 0..gc {
            let row = &mut out[(i * gc + j) * cols..][..cols];
            for c in 0..3 {
                for u in 0..p {
                    let src = &x[(c * height + i * p + u) * width + j * p..][..p];
                    row[(c * p + u) * p..][..p].copy_from_slice(src);
                }
            }
        }
    }
}

/// The adjoint of [`im2col_image`] (a permutation, as the patches do not overlap):
/// patch rows (Np, 3·p·p) back to an image (3, H, W); pixels outside the grid get 0.
pub fn col2im_image(
    rows: &[f32],
    height: usize,
    width: usize,
    patch: usize,
    grid: (usize, usize),
    out: &mut [f32],
) {
    let (gr, gc) = grid;
    let p = patch;
    let cols = 3 * p * p;
    out.fill(0.0);
    for i in 0..gr {
        for j in 0..gc {
            let row = &rows[(i * gc + j) * cols..][..cols];
            for c in 0..3 {
                for u in 0..p {
                    out[(c * height + i * p + u) * width + j * p..][..p]
                        .copy_from_slice(&row[(c * p + u) * p..][..p]);
                }
            }
        }
    }
}

/// Token rows of one image: row 0 = cls + pos[0], row t = (emb[t − 1] + bias) + pos[t].
/// `emb` (T − 1, D), `pos` (T, D), `out` (T, D).
pub fn embed_tokens_image(emb: &[f32], patch_b: &[f32], cls: &[f32], pos: &[f32], out: &mut [f32]) {
    let d = cls.len();
    for (ti, row) in out.chunks_exact_mut(d).enumerate() {
        let p = &pos[ti * d..][..d];
        if ti == 0 {
            row.iter_mut()
                .zip(cls)
                .zip(p)
                .for_each(|((o, c), p)| *o = c + p);
        } else {
            let e = &emb[(ti - 1) * d..][..d];
            row.iter_mut()
                .zip(e)
                .zip(patch_b)
                .zip(p)
                .for_each(|(((o, e), b), p)| *o = (e + b) + p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric_grad(f: impl Fn(&[f32]) -> f64, x: &[f32]) -> Vec<f64> {
        (0..x.len())
            .map(|i| {
                let h = 1e-2f32;
                let mut a = x.to_vec();
                let mut b = x.to_vec();
                a[i] += h;
                b[i] -= h;
                (f(&a) - f(&b)) / (2.0 * h as f64)
            })
            .collect()
    }

    #[test]
    fn layer_norm_backward_matches_central_differences() {
        let x: Vec<f32> = (0..11)
            .map(|i| ((i * 37) % 17) as f32 * 0.3 - 2.0)
            .collect();
        let gamma: Vec<f32> = (0..11).map(|i| 1.0 + 0.1 * i as f32).collect();
        let beta = vec![0.5f32; 11];
        let w: Vec<f32> = (0..11).map(|i| (i as f32 - 5.0) * 0.2).collect();
        let loss = |x: &[f32]| {
            let (mut y, mut h, mut r) = (vec![0.0; 11], vec![0.0; 11], 0.0);
            layer_norm_row(x, &gamma, &beta, 1e-6, &mut y, &mut h, &mut r);
            y.iter().zip(&w).map(|(a, b)| (a * b) as f64).sum::<f64>()
        };
        let (mut y, mut h, mut r) = (vec![0.0; 11], vec![0.0; 11], 0.0);
        layer_norm_row(&x, &gamma, &beta, 1e-6, &mut y, &mut h, &mut r);
        let mut dx = vec![0.0; 11];
        layer_norm_bwd_row(&w, &gamma, &h, r, &mut dx, false);
        for (a, b) in dx.iter().zip(numeric_grad(loss, &x)) {
            assert!((*a as f64 - b).abs() < 2e-3, "{a} vs {b}");
        }
    }

    #[test]
    fn gelu_and_softmax_backward_match_central_differences() {
        let x: Vec<f32> = (0..9).map(|i| i as f32 * 0.7 - 3.0).collect();
        let loss = |x: &[f32]| {
            let mut y = vec![0.0; x.len()];
            gelu(x, &mut y);
            y.iter().map(|v| *v as f64).sum::<f64>()
        };
        let mut g = vec![1.0; 9];
        gelu_bwd(&x, &mut g);
        let (mut y, mut d) = (x.clone(), vec![0.0; 9]);
        gelu_in_place_with_grad(&mut y, &mut d);
        assert_eq!(d, g);
        let mut y2 = vec![0.0; 9];
        gelu(&x, &mut y2);
        assert_eq!(y, y2);
        for (a, b) in g.iter().zip(numeric_grad(loss, &x)) {
            assert!((*a as f64 - b).abs() < 2e-3, "gelu' {a} vs {b}");
        }
        let w: Vec<f32> = (0..9).map(|i| (i as f32).sin()).collect();
        let sm_loss = |x: &[f32]| {
            let mut p = x.to_vec();
            softmax_row(&mut p, 0.5);
            p.iter().zip(&w).map(|(a, b)| (a * b) as f64).sum::<f64>()
        };
        let mut p = x.clone();
        softmax_row(&mut p, 0.5);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        let mut dp = w.clone();
        softmax_bwd_row(&p, &mut dp, 0.5);
        for (a, b) in dp.iter().zip(numeric_grad(sm_loss, &x)) {
            assert!((*a as f64 - b).abs() < 1e-3, "softmax' {a} vs {b}");
        }
    }
}
