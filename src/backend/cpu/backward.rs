//! Gradient of the head's output with respect to the *input pixels* only: no weight
//! gradients are formed (docs/method.md §2.3; what Captum's IG needs).
//!
//! [`block_backward`] is the one block backward of the CPU backend: training calls
//! it too, asking for the weight gradients on the way.

use ndarray::{Array2, Array4};
use rayon::prelude::*;

use super::forward::{sized, BlockSaved, ForwardState, Keep, NormSaved, Workspace};
use super::gemm::{linear_backward_input, linear_backward_params, matmul, MatRef, Threads};
use super::ops;
use crate::error::{Error, Result};
use crate::model::weights::BlockWeights;
use crate::model::{HeadKind, Vit};

/// Input gradient for the upstream gradient `d_features` (batch, in_dim) on the
/// head's input feature. Returns (batch, 3, H, W).
///
/// # Errors
/// [`Error::Internal`] if `state` was produced without saving activations;
/// [`Error::Shape`] if `d_features` does not match the feature.
pub fn input_grad_from_features(
    vit: &Vit,
    state: &mut ForwardState,
    d_features: &Array2<f32>,
) -> Result<Array4<f32>> {
    let c = &vit.config;
    let w = &vit.weights;
    if !matches!(state.keep, Keep::InputGrad | Keep::ParamGrad { from: 0 }) {
        return Err(Error::Internal(
            "backward needs a forward run with saved activations".into(),
        ));
    }
    if d_features.dim() != state.features.dim() {
        return Err(Error::shape(
            "feature gradient",
            &[state.features.nrows(), state.features.ncols()],
            &[d_features.nrows(), d_features.ncols()],
        ));
    }
    let (batch, t, d, hidden) = (state.batch, state.tokens, c.dim, c.mlp_hidden);
    let m = batch * t;
    let head_kind = vit.head.as_ref().map(|h| h.kind).unwrap_or(HeadKind::Cls);
    let dfeat = d_features.as_standard_layout();
    let dfeat = dfeat.as_slice().expect("standard layout");

    let threads = state.threads;
    let ws = &mut state.workspace;
    sized(&mut ws.g, m * d);
    ws.g.fill(0.0);
    sized(&mut ws.ga, m * hidden);
    sized(&mut ws.gn, m * d);
    sized(&mut ws.gqkv, m * 3 * d);
    let Workspace {
        blocks,
        g,
        ga,
        gn,
        gqkv,
        ..
    } = ws;
    let first_tapped = c.depth - state.head_norms.len();
    if head_kind == HeadKind::ClsAvgPoolInterleaved {
        seed_avgpool(g, dfeat, &w.norm_w, &state.head_norms[0], batch, t, d);
    }
    for bi in (0..c.depth).rev() {
        if bi >= first_tapped && head_kind != HeadKind::ClsAvgPoolInterleaved {
            let chunk = bi - first_tapped;
            let n_chunks = state.head_norms.len();
            seed_cls(
                g,
                dfeat,
                &w.norm_w,
                &state.head_norms[chunk],
                chunk,
                n_chunks,
                batch,
                t,
                d,
            );
        }
        block_backward(
            vit,
            &w.blocks[bi],
            &blocks[bi],
            g,
            BackwardScratch { ga, gn, gqkv },
            batch,
            t,
            threads,
            None,
            true,
        );
    }
    Ok(patch_embed_backward(vit, state, &state.workspace.g))
}

/// Backward scratch of one block: (M, hidden), (M, D) and (M, 3·D) floats.
pub struct BackwardScratch<'a> {
    pub ga: &'a mut [f32],
    pub gn: &'a mut [f32],
    pub gqkv: &'a mut [f32],
}

/// Backward of one block as run by the block forward: `g` (M, D) holds the
/// gradient at the block output on entry and at its input on exit (left stale
/// when `input_grad` is false, the first trained block's case).
///
/// With `grads`, the block's weight gradients are added to it; that needs a forward
/// that kept the linear inputs ([`Keep::ParamGrad`]). A `cls_only` block (input
/// gradients only) expects non-zero CLS rows of `g` only on entry: its MLP,
/// projection and query gradients are per CLS row, while keys and values still get
/// gradients on every token.
#[allow(clippy::too_many_arguments)]
pub fn block_backward(
    vit: &Vit,
    bw: &BlockWeights,
    s: &BlockSaved,
    g: &mut [f32],
    scratch: BackwardScratch,
    batch: usize,
    t: usize,
    threads: Threads,
    mut grads: Option<&mut BlockWeights>,
    input_grad: bool,
) {
    let c = &vit.config;
    let (d, hidden, heads, hd) = (c.dim, c.mlp_hidden, c.heads, c.head_dim());
    let m = batch * t;
    let scale = c.attn_scale();
    let rows = if s.cls_only { batch } else { m };
    let BackwardScratch { ga, gn, gqkv } = scratch;
    let mut cls_rows = Vec::new();
    {
        // Gradient of the residual rows the block's MLP and projection ran on.
        let gr: &mut [f32] = if s.cls_only {
            cls_rows = vec![0f32; batch * d];
            ops::copy_rows(g, t * d, &mut cls_rows, d, batch, d);
            &mut cls_rows
        } else {
            &mut *g
        };
        // MLP branch: x_out = x_mid + fc2(gelu(fc1(LN2(x_mid)))).
        if let Some(gb) = grads.as_deref_mut() {
            linear_backward_params(gr, &s.act, rows, &mut gb.fc2_w, &mut gb.fc2_b, threads);
        }
        let ga = &mut ga[..rows * hidden];
        linear_backward_input(MatRef::row_major(gr, rows, d), &bw.fc2_w, ga, threads);
        ga.par_chunks_mut(hidden)
            .zip(s.gelu_grad.par_chunks(hidden))
            .for_each(|(gr, dg)| gr.iter_mut().zip(dg).for_each(|(a, b)| *a *= b));
        if let Some(gb) = grads.as_deref_mut() {
            linear_backward_params(ga, &s.normed2, rows, &mut gb.fc1_w, &mut gb.fc1_b, threads);
        }
        let gnr = &mut gn[..rows * d];
        linear_backward_input(MatRef::row_major(ga, rows, hidden), &bw.fc1_w, gnr, threads);
        if let Some(gb) = grads.as_deref_mut() {
            ops::layer_norm_param_grads(gnr, &s.xhat2, &mut gb.norm2_w, &mut gb.norm2_b);
        }
        ln_bwd_rows(gnr, &bw.norm2_w, &s.xhat2, &s.rstd2, gr, d);
        // Attention branch: x_mid = x_in + proj(attn(LN1(x_in))).
        if let Some(gb) = grads.as_deref_mut() {
            linear_backward_params(
                gr,
                &s.attn_cat,
                rows,
                &mut gb.proj_w,
                &mut gb.proj_b,
                threads,
            );
        }
        linear_backward_input(MatRef::row_major(gr, rows, d), &bw.proj_w, gnr, threads);
    }
    if s.cls_only {
        attention_cls_backward(
            &gn[..batch * d],
            &s.qkv,
            &s.probs,
            gqkv,
            batch,
            t,
            heads,
            hd,
            scale,
        );
    } else {
        attention_backward(gn, &s.qkv, &s.probs, gqkv, t, heads, hd, scale);
    }
    if let Some(gb) = grads.as_deref_mut() {
        linear_backward_params(gqkv, &s.normed1, m, &mut gb.qkv_w, &mut gb.qkv_b, threads);
    }
    linear_backward_input(MatRef::row_major(gqkv, m, 3 * d), &bw.qkv_w, gn, threads);
    if let Some(gb) = grads {
        ops::layer_norm_param_grads(gn, &s.xhat1, &mut gb.norm1_w, &mut gb.norm1_b);
    }
    if input_grad {
        if s.cls_only {
            // The other rows of g were zero on entry.
            ops::copy_rows(&cls_rows, d, g, t * d, batch, d);
        }
        ln_bwd_rows(gn, &bw.norm1_w, &s.xhat1, &s.rstd1, g, d);
    }
}

/// Gradients of q, k, v (M, 3·D) from the gradient `go` (batch, D) of the CLS rows'
/// concatenated heads, for a block that attended from the CLS query only.
#[allow(clippy::too_many_arguments)]
fn attention_cls_backward(
    go: &[f32],
    qkv: &[f32],
    probs: &[f32],
    gqkv: &mut [f32],
    batch: usize,
    t: usize,
    heads: usize,
    hd: usize,
    scale: f32,
) {
    let d = heads * hd;
    // dQ is written for row 0 only: the other query rows must read zero.
    gqkv.fill(0.0);
    let ld = 3 * d;
    let mut dp = vec![0f32; t];
    for b in 0..batch {
        let img = &qkv[b * t * ld..][..t * ld];
        let gimg = &mut gqkv[b * t * ld..][..t * ld];
        for h in 0..heads {
            let p = &probs[(b * heads + h) * t..][..t];
            let d_out = MatRef::block(go, b * d + h * hd, 1, hd, d);
            let k = MatRef::block(img, d + h * hd, t, hd, ld);
            let v = MatRef::block(img, 2 * d + h * hd, t, hd, ld);
            let q0 = MatRef::block(img, h * hd, 1, hd, ld);
            // dP₀ = dO₀·Vᵀ; dV = P₀ᵀ ⊗ dO₀.
            matmul(&mut dp, t, d_out, v.t(), false, Threads::Single);
            matmul(
                &mut gimg[2 * d + h * hd..],
                ld,
                MatRef::row_major(p, 1, t).t(),
                d_out,
                false,
                Threads::Single,
            );
            ops::softmax_bwd_row(p, &mut dp, scale);
            let ds = MatRef::row_major(&dp, 1, t);
            // dQ₀ = dS₀·K; dK = dS₀ᵀ ⊗ Q₀.
            matmul(&mut gimg[h * hd..], ld, ds, k, false, Threads::Single);
            matmul(
                &mut gimg[d + h * hd..],
                ld,
                ds.t(),
                q0,
                false,
                Threads::Single,
            );
        }
    }
}

/// `g[row] += LN_bwd(gn[row])` for every row, in parallel.
pub(crate) fn ln_bwd_rows(
    gn: &[f32],
    gamma: &[f32],
    xhat: &[f32],
    rstd: &[f32],
    g: &mut [f32],
    d: usize,
) {
    g.par_chunks_mut(d)
        .zip(gn.par_chunks(d))
        .zip(xhat.par_chunks(d))
        .zip(rstd.par_iter())
        .for_each(|(((gr, gnr), h), &r)| ops::layer_norm_bwd_row(gnr, gamma, h, r, gr, true));
}

/// Adds the gradient of chunk `chunk` of a CLS-based feature to the CLS rows.
#[allow(clippy::too_many_arguments)]
pub(crate) fn seed_cls(
    g: &mut [f32],
    dfeat: &[f32],
    gamma: &[f32],
    norm: &NormSaved,
    chunk: usize,
    n_chunks: usize,
    batch: usize,
    t: usize,
    d: usize,
) {
    for b in 0..batch {
        let df = &dfeat[b * n_chunks * d + chunk * d..][..d];
        let row = &mut g[b * t * d..][..d];
        ops::layer_norm_bwd_row(df, gamma, &norm.xhat[b * d..][..d], norm.rstd[b], row, true);
    }
}

/// Gradient of the interleaved [CLS, mean patch] feature through the final norm.
fn seed_avgpool(
    g: &mut [f32],
    dfeat: &[f32],
    gamma: &[f32],
    norm: &NormSaved,
    batch: usize,
    t: usize,
    d: usize,
) {
    let np = (t - 1) as f32;
    let mut dy = vec![0f32; d];
    for b in 0..batch {
        for ti in 0..t {
            let f = &dfeat[b * 2 * d..][..2 * d];
            for j in 0..d {
                dy[j] = if ti == 0 { f[2 * j] } else { f[2 * j + 1] / np };
            }
            let r = (b * t + ti) * d;
            ops::layer_norm_bwd_row(
                &dy,
                gamma,
                &norm.xhat[r..r + d],
                norm.rstd[b * t + ti],
                &mut g[r..r + d],
                true,
            );
        }
    }
}

/// Gradients of q, k, v from the gradient `go` (M, D) of the concatenated heads.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention_backward(
    go: &[f32],
    qkv: &[f32],
    probs: &[f32],
    gqkv: &mut [f32],
    t: usize,
    heads: usize,
    hd: usize,
    scale: f32,
) {
    let d = heads * hd;
    let ld = 3 * d;
    gqkv.par_chunks_mut(t * ld)
        .enumerate()
        .for_each(|(b, gimg)| {
            let q_img = &qkv[b * t * ld..][..t * ld];
            let go_img = &go[b * t * d..][..t * d];
            let mut dp = vec![0f32; t * t];
            for h in 0..heads {
                let p = MatRef::row_major(&probs[(b * heads + h) * t * t..][..t * t], t, t);
                let q = MatRef::block(q_img, h * hd, t, hd, ld);
                let k = MatRef::block(q_img, d + h * hd, t, hd, ld);
                let v = MatRef::block(q_img, 2 * d + h * hd, t, hd, ld);
                let d_out = MatRef::block(go_img, h * hd, t, hd, d);
                // dP = dO·Vᵀ; dV = Pᵀ·dO.
                matmul(&mut dp, t, d_out, v.t(), false, Threads::Single);
                matmul(
                    &mut gimg[2 * d + h * hd..],
                    ld,
                    p.t(),
                    d_out,
                    false,
                    Threads::Single,
                );
                // dS = scale·P ⊙ (dP − rowsum(dP ⊙ P)).
                dp.chunks_exact_mut(t)
                    .zip(p.data.chunks_exact(t))
                    .for_each(|(dr, pr)| ops::softmax_bwd_row(pr, dr, scale));
                let ds = MatRef::row_major(&dp, t, t);
                // dQ = dS·K; dK = dSᵀ·Q.
                matmul(&mut gimg[h * hd..], ld, ds, k, false, Threads::Single);
                matmul(
                    &mut gimg[d + h * hd..],
                    ld,
                    ds.t(),
                    q,
                    false,
                    Threads::Single,
                );
            }
        });
}

/// Through the patch projection (a non-overlapping conv) back to pixels.
fn patch_embed_backward(vit: &Vit, state: &ForwardState, g: &[f32]) -> Array4<f32> {
    let c = &vit.config;
    let (batch, t, d, p) = (state.batch, state.tokens, c.dim, c.patch);
    let (gr, gc) = state.grid;
    let np = gr * gc;
    let cols = 3 * p * p;
    let mut gpatch = vec![0f32; batch * np * cols];
    // Patch rows of g are rows 1..t of each image: a strided view with a gap per image.
    gpatch
        .par_chunks_mut(np * cols)
        .enumerate()
        .for_each(|(b, out)| {
            let rows = MatRef::block(g, (b * t + 1) * d, np, d, d);
            linear_backward_input(rows, &vit.weights.patch_w, out, Threads::Single);
        });
    let mut img = Array4::<f32>::zeros((batch, 3, state.height, state.width));
    img.outer_iter_mut()
        .into_par_iter()
        .enumerate()
        .for_each(|(b, mut im)| {
            let im = im.as_slice_mut().expect("standard layout");
            ops::col2im_image(
                &gpatch[b * np * cols..][..np * cols],
                state.height,
                state.width,
                p,
                state.grid,
                im,
            );
        });
    img
}
