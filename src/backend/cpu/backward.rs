//! Gradient of the head's output with respect to the *input pixels* only: no weight
//! gradients are formed (docs/method.md §2.3; what Captum's IG needs).

use ndarray::{Array2, Array4};
use rayon::prelude::*;

use super::forward::{sized, BlockSaved, ForwardState, NormSaved, Workspace};
use super::gemm::{matmul, MatRef, Threads};
use super::ops;
use crate::error::{Error, Result};
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
    if state.workspace.blocks.len() != c.depth {
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
    let (batch, t, d, hidden, heads) = (state.batch, state.tokens, c.dim, c.mlp_hidden, c.heads);
    let hd = c.head_dim();
    let m = batch * t;
    let scale = c.attn_scale();
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
        let bw = &w.blocks[bi];
        let s = &blocks[bi];
        if s.cls_only {
            last_block_cls_only_backward(vit, bi, s, g, gn, gqkv, batch, t, threads);
            continue;
        }
        // MLP branch: x_out = x_mid + fc2(gelu(fc1(LN2(x_mid)))).
        matmul(
            ga,
            hidden,
            MatRef::row_major(g, m, d),
            MatRef::row_major(&bw.fc2_w, d, hidden),
            false,
            threads,
        );
        ga.par_chunks_mut(hidden)
            .zip(s.gelu_grad.par_chunks(hidden))
            .for_each(|(gr, dg)| gr.iter_mut().zip(dg).for_each(|(a, b)| *a *= b));
        matmul(
            gn,
            d,
            MatRef::row_major(ga, m, hidden),
            MatRef::row_major(&bw.fc1_w, hidden, d),
            false,
            threads,
        );
        ln_bwd_rows(gn, &bw.norm2_w, &s.xhat2, &s.rstd2, g, d);
        // Attention branch: x_mid = x_in + proj(attn(LN1(x_in))).
        matmul(
            gn,
            d,
            MatRef::row_major(g, m, d),
            MatRef::row_major(&bw.proj_w, d, d),
            false,
            threads,
        );
        attention_backward(gn, &s.qkv, &s.probs, gqkv, t, heads, hd, scale);
        matmul(
            gn,
            d,
            MatRef::row_major(gqkv, m, 3 * d),
            MatRef::row_major(&bw.qkv_w, 3 * d, d),
            false,
            threads,
        );
        ln_bwd_rows(gn, &bw.norm1_w, &s.xhat1, &s.rstd1, g, d);
    }
    Ok(patch_embed_backward(vit, state, &state.workspace.g))
}

/// Backward of a block run by `last_block_cls_only`: only the CLS rows of `g` are
/// non-zero on entry, so the MLP, projection and query gradients are per-CLS-row;
/// keys and values still get gradients on every token.
#[allow(clippy::too_many_arguments)]
fn last_block_cls_only_backward(
    vit: &Vit,
    bi: usize,
    s: &BlockSaved,
    g: &mut [f32],
    gn: &mut [f32],
    gqkv: &mut [f32],
    batch: usize,
    t: usize,
    threads: Threads,
) {
    let c = &vit.config;
    let bw = &vit.weights.blocks[bi];
    let (d, hidden, heads, hd) = (c.dim, c.mlp_hidden, c.heads, c.head_dim());
    let m = batch * t;
    let scale = c.attn_scale();
    let mut gc: Vec<f32> = (0..batch)
        .flat_map(|b| g[b * t * d..][..d].to_vec())
        .collect();
    // MLP on the CLS rows.
    let mut ga = vec![0f32; batch * hidden];
    matmul(
        &mut ga,
        hidden,
        MatRef::row_major(&gc, batch, d),
        MatRef::row_major(&bw.fc2_w, d, hidden),
        false,
        threads,
    );
    ga.iter_mut().zip(&s.gelu_grad).for_each(|(a, b)| *a *= b);
    let mut gnc = vec![0f32; batch * d];
    matmul(
        &mut gnc,
        d,
        MatRef::row_major(&ga, batch, hidden),
        MatRef::row_major(&bw.fc1_w, hidden, d),
        false,
        threads,
    );
    for b in 0..batch {
        let r = b * d..(b + 1) * d;
        ops::layer_norm_bwd_row(
            &gnc[r.clone()],
            &bw.norm2_w,
            &s.xhat2[r.clone()],
            s.rstd2[b],
            &mut gc[r],
            true,
        );
    }
    // Projection, then attention with one query row per image.
    let mut go = vec![0f32; batch * d];
    matmul(
        &mut go,
        d,
        MatRef::row_major(&gc, batch, d),
        MatRef::row_major(&bw.proj_w, d, d),
        false,
        threads,
    );
    gqkv.fill(0.0);
    let ld = 3 * d;
    let mut dp = vec![0f32; t];
    for b in 0..batch {
        let img = &s.qkv[b * t * ld..][..t * ld];
        let gimg = &mut gqkv[b * t * ld..][..t * ld];
        for h in 0..heads {
            let p = &s.probs[(b * heads + h) * t..][..t];
            let d_out = MatRef::block(&go, b * d + h * hd, 1, hd, d);
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
    matmul(
        gn,
        d,
        MatRef::row_major(gqkv, m, ld),
        MatRef::row_major(&bw.qkv_w, ld, d),
        false,
        threads,
    );
    // g now carries the CLS rows' residual gradient; other rows were zero.
    for b in 0..batch {
        g[b * t * d..][..d].copy_from_slice(&gc[b * d..][..d]);
    }
    ln_bwd_rows(gn, &bw.norm1_w, &s.xhat1, &s.rstd1, g, d);
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
            matmul(
                out,
                cols,
                rows,
                MatRef::row_major(&vit.weights.patch_w, d, cols),
                false,
                Threads::Single,
            );
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
