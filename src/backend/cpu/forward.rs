//! The ViT forward pass on the CPU for a batch of same-sized images, keeping what
//! the input-gradient backward needs (docs/method.md §2.3 and §10: ≈ 0.91 M floats per block
//! per image at 224²).
//!
//! The same pass serves training: [`Keep::ParamGrad`] also keeps the inputs of the
//! linear layers, which weight gradients need.

use ndarray::{Array2, ArrayView4};
use rayon::prelude::*;

use super::gemm::{linear, matmul, MatRef, Threads};
use super::ops;
use crate::backend::input::{self, InputGeometry};
use crate::backend::taps::BlockTaps;
use crate::error::{Error, Result};
use crate::model::weights::BlockWeights;
use crate::model::{HeadKind, Vit};

/// Per-block activations saved for the backward pass.
#[derive(Debug, Default)]
pub struct BlockSaved {
    /// LN1 normalised input x̂ (M, D) and 1/σ per row (M).
    pub xhat1: Vec<f32>,
    pub rstd1: Vec<f32>,
    /// Fused q|k|v projections (M, 3·D).
    pub qkv: Vec<f32>,
    /// Softmax probabilities (batch, heads, T, T).
    pub probs: Vec<f32>,
    pub xhat2: Vec<f32>,
    pub rstd2: Vec<f32>,
    /// GELU derivative at the fc1 output, Φ(h) + h·φ(h) (M, hidden).
    pub gelu_grad: Vec<f32>,
    /// Only the CLS rows were carried through this (last) block: `probs` holds
    /// row 0 of each head's softmax (batch, heads, T), and `xhat2`, `rstd2`,
    /// `gelu_grad` hold one row per image.
    pub cls_only: bool,
    /// The inputs of the linear layers, kept only for weight gradients
    /// ([`Keep::ParamGrad`]; empty otherwise): LN1 output (M, D), concatenated
    /// heads (M, D), LN2 output (M, D) and GELU output (M, hidden).
    pub normed1: Vec<f32>,
    pub attn_cat: Vec<f32>,
    pub normed2: Vec<f32>,
    pub act: Vec<f32>,
}

/// Buffers reused from one call to the next: a ViT-S/16 batch of 10 at 224² saves
/// ≈ 440 MB of activations, and fresh allocations would page-fault all of it in
/// again on every batch.
#[derive(Debug, Default)]
pub struct Workspace {
    pub blocks: Vec<BlockSaved>,
    pub normed: Vec<f32>,
    pub attn_cat: Vec<f32>,
    pub act: Vec<f32>,
    pub fc1_out: Vec<f32>,
    /// Backward scratch.
    pub g: Vec<f32>,
    pub ga: Vec<f32>,
    pub gn: Vec<f32>,
    pub gqkv: Vec<f32>,
}

/// Sets `v` to `len` elements, reusing its memory. Contents are unspecified
/// (stale) unless the length changed; callers overwrite or clear what they read.
pub(crate) fn sized(v: &mut Vec<f32>, len: usize) {
    if v.len() != len {
        v.clear();
        v.resize(len, 0.0);
    }
}

/// A final-norm application to some rows, kept for the backward.
#[derive(Debug, Default)]
pub struct NormSaved {
    pub xhat: Vec<f32>,
    pub rstd: Vec<f32>,
}

/// Everything a forward pass produced.
#[derive(Debug)]
pub struct ForwardState {
    pub batch: usize,
    pub tokens: usize,
    pub grid: (usize, usize),
    pub height: usize,
    pub width: usize,
    /// What was kept for a backward pass.
    pub keep: Keep,
    /// Saved activations per block (in `workspace.blocks`; empty when not saving)
    /// and scratch buffers, handed back for reuse by the next call.
    pub workspace: Workspace,
    /// The block whose q|k|v, softmax and output were kept (`None`: no taps).
    pub tap_layer: Option<usize>,
    /// Output tokens of the tapped block, before any final norm (M, D).
    pub tap_tokens: Vec<f32>,
    /// Final norms used by the head's feature (one per block output it reads).
    pub head_norms: Vec<NormSaved>,
    /// The head's input feature (batch, in_dim); the final-normed CLS without head.
    pub features: Array2<f32>,
    /// Logits (batch, classes) when the model has a head.
    pub logits: Option<Array2<f32>>,
    /// The tapped block's q|k|v (M, 3·D) and softmax (batch, heads, T, T).
    pub tap_qkv: Vec<f32>,
    pub tap_probs: Vec<f32>,
    /// GEMM threading used by the forward; the backward uses the same.
    pub threads: Threads,
    /// Width and heads of the model that produced this state.
    pub dim: usize,
    pub heads: usize,
}

impl ForwardState {
    fn check_image(&self, image: usize) -> Result<()> {
        if image >= self.batch {
            return Err(Error::param(
                "image",
                format!("index {image} is outside the batch of {}", self.batch),
            ));
        }
        if self.tap_layer.is_none() {
            return Err(Error::param(
                "taps",
                "this forward kept no taps; use forward_tapped",
            ));
        }
        Ok(())
    }

    /// The taps of image `image` (the tapped block's q|k|v, softmax and output
    /// tokens), in the layout every backend returns.
    ///
    /// # Errors
    /// [`Error::InvalidParam`] for an image outside the batch or a state without taps.
    pub fn taps(&self, image: usize) -> Result<BlockTaps> {
        self.check_image(image)?;
        let (t, d, heads) = (self.tokens, self.dim, self.heads);
        Ok(BlockTaps {
            grid: self.grid,
            heads,
            dim: d,
            qkv: self.tap_qkv[image * t * 3 * d..][..t * 3 * d].to_vec(),
            probs: Some(self.tap_probs[image * heads * t * t..][..heads * t * t].to_vec()),
            output: Some(self.tap_tokens[image * t * d..][..t * d].to_vec()),
        })
    }
}

/// Row-wise LayerNorm of `x` (rows of `d`) in parallel, saving x̂ and 1/σ.
pub(crate) fn layer_norm_rows(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    y: &mut [f32],
    xhat: &mut [f32],
    rstd: &mut [f32],
) {
    let d = gamma.len();
    y.par_chunks_mut(d)
        .zip(xhat.par_chunks_mut(d))
        .zip(rstd.par_iter_mut())
        .zip(x.par_chunks(d))
        .for_each(|(((y, h), r), x)| ops::layer_norm_row(x, gamma, beta, eps, y, h, r));
}

/// Non-overlapping p×p patches of (batch, 3, H, W) as rows (batch·Np, 3·p·p), columns
/// in (channel, row, col) order to match the conv weight flattening.
pub(crate) fn im2col(x: &ArrayView4<f32>, p: usize, grid: (usize, usize)) -> Vec<f32> {
    let (b, _, h, w) = x.dim();
    let x = x.as_standard_layout();
    let xs = x.as_slice().expect("standard layout");
    let per_image = grid.0 * grid.1 * 3 * p * p;
    let mut out = vec![0f32; b * per_image];
    out.par_chunks_mut(per_image)
        .enumerate()
        .for_each(|(bi, img)| {
            ops::im2col_image(&xs[bi * 3 * h * w..][..3 * h * w], h, w, p, grid, img)
        });
    out
}

/// Runs the ViT on `x` (batch, 3, H, W), normalised. `save` keeps activations for
/// [`backward`](super::backward::input_grad).
///
/// # Errors
/// [`Error::Shape`] for a non-3-channel input, [`Error::InvalidParam`] for a size
/// that is not a multiple of the patch or needs an unknown positional grid.
pub fn forward(vit: &Vit, x: ArrayView4<f32>, save: bool) -> Result<ForwardState> {
    forward_in(vit, x, save, Workspace::default(), Threads::Pool, None)
}

/// An inference forward that keeps the taps of block `layer` (q|k|v, softmax,
/// output tokens) for feature maps; `None` taps the last block.
///
/// # Errors
/// As [`forward`], and [`Error::InvalidParam`] for a layer beyond the depth.
pub fn forward_tapped(vit: &Vit, x: ArrayView4<f32>, layer: Option<usize>) -> Result<ForwardState> {
    let depth = vit.config.depth;
    let layer = layer.unwrap_or(depth - 1);
    if layer >= depth {
        return Err(Error::param(
            "layer",
            format!("block {layer} does not exist (the model has {depth}, numbered from 0)"),
        ));
    }
    forward_in(
        vit,
        x,
        false,
        Workspace::default(),
        Threads::Pool,
        Some(layer),
    )
}

/// What a forward pass keeps for a backward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Nothing: inference only.
    Nothing,
    /// What the input-gradient backward needs, for every block. The last block
    /// may run for the CLS rows only when the head reads nothing else.
    InputGrad,
    /// For blocks `from..depth`, also the input of every linear layer (LN outputs,
    /// concatenated heads, GELU output) on every token: what weight gradients need
    /// (training). Earlier, frozen blocks share one scratch set.
    ParamGrad { from: usize },
}

/// [`forward`] reusing the buffers of an earlier call's [`Workspace`]; `threads`
/// says whether the GEMMs may use the whole pool (callers that already run several
/// forwards in parallel pass [`Threads::Single`]).
///
/// # Errors
/// As [`forward`].
pub fn forward_in(
    vit: &Vit,
    x: ArrayView4<f32>,
    save: bool,
    ws: Workspace,
    threads: Threads,
    tap_layer: Option<usize>,
) -> Result<ForwardState> {
    let keep = if save { Keep::InputGrad } else { Keep::Nothing };
    forward_keeping(vit, x, keep, ws, threads, tap_layer)
}

/// The forward pass, keeping what `keep` asks for in the returned state's
/// workspace (see [`forward_in`] for the other arguments).
///
/// # Errors
/// As [`forward`].
pub fn forward_keeping(
    vit: &Vit,
    x: ArrayView4<f32>,
    keep: Keep,
    mut ws: Workspace,
    threads: Threads,
    tap_layer: Option<usize>,
) -> Result<ForwardState> {
    let c = &vit.config;
    let w = &vit.weights;
    let InputGeometry {
        batch,
        height,
        width,
        grid,
    } = input::check_input(vit, x)?;
    let pos = vit.pos_embed(grid)?;
    let (d, hidden, heads) = (c.dim, c.mlp_hidden, c.heads);
    let np = grid.0 * grid.1;
    let t = np + 1;
    let m = batch * t;

    // Patch embedding + CLS + positions.
    let patches = im2col(&x, c.patch, grid);
    let mut emb = vec![0f32; batch * np * d];
    linear(
        MatRef::row_major(&patches, batch * np, 3 * c.patch * c.patch),
        &w.patch_w,
        None,
        &mut emb,
        false,
        threads,
    );
    let mut xs = vec![0f32; m * d];
    xs.par_chunks_mut(t * d).enumerate().for_each(|(b, img)| {
        ops::embed_tokens_image(
            &emb[b * np * d..][..np * d],
            &w.patch_b,
            &w.cls_token,
            &pos,
            img,
        )
    });
    drop(patches);
    drop(emb);

    let head_kind = vit.head.as_ref().map(|h| h.kind).unwrap_or(HeadKind::Cls);
    let first_tapped = match head_kind {
        HeadKind::LastBlocksCls { n } => c.depth - n,
        _ => c.depth - 1,
    };
    sized(&mut ws.normed, m * d);
    sized(&mut ws.attn_cat, m * d);
    sized(&mut ws.act, m * hidden);
    // Which saved set block `bi` writes: one shared set without a backward; for
    // weight gradients the frozen blocks borrow the first trained block's set,
    // which that block then overwrites.
    let slot = |bi: usize| match keep {
        Keep::Nothing => 0,
        Keep::InputGrad => bi,
        Keep::ParamGrad { from } => bi.max(from).min(c.depth - 1),
    };
    let n_saved = if keep == Keep::Nothing { 1 } else { c.depth };
    ws.blocks.resize_with(n_saved, BlockSaved::default);
    ws.blocks.truncate(n_saved);
    let Workspace {
        blocks,
        normed,
        attn_cat,
        act,
        ..
    } = &mut ws;
    let mut head_norms = Vec::new();
    let mut cls_features: Vec<Vec<f32>> = Vec::new();
    let mut tap_qkv = Vec::new();
    let mut tap_probs = Vec::new();
    let mut tap_tokens = Vec::new();
    // When only input gradients are wanted and the head reads CLS tokens, the last
    // block needs just the CLS rows after its keys and values (≈ 7% fewer FLOPs).
    let prune_last = keep == Keep::InputGrad
        && head_kind != HeadKind::ClsAvgPoolInterleaved
        && tap_layer != Some(c.depth - 1);
    for (bi, bw) in w.blocks.iter().enumerate() {
        let s = &mut blocks[slot(bi)];
        s.cls_only = prune_last && bi == c.depth - 1;
        let keep_inputs = matches!(keep, Keep::ParamGrad { from } if bi >= from);
        block_forward(
            vit,
            bw,
            s,
            &mut xs,
            Scratch {
                normed,
                attn_cat,
                act,
            },
            batch,
            t,
            threads,
            keep_inputs,
        );

        if tap_layer == Some(bi) {
            tap_qkv = s.qkv.clone();
            tap_probs = s.probs.clone();
            tap_tokens = xs.clone();
        }
        if bi >= first_tapped && matches!(head_kind, HeadKind::Cls | HeadKind::LastBlocksCls { .. })
        {
            // Final-normed CLS rows of this block's output.
            let (f, saved) = norm_cls_rows(&xs, batch, t, d, &w.norm_w, &w.norm_b, c.eps);
            cls_features.push(f);
            head_norms.push(saved);
        }
    }
    if keep == Keep::Nothing {
        blocks.clear();
    }

    let features = match head_kind {
        HeadKind::Cls | HeadKind::LastBlocksCls { .. } => {
            let n = cls_features.len();
            Array2::from_shape_fn((batch, n * d), |(b, k)| cls_features[k / d][b * d + k % d])
        }
        HeadKind::ClsAvgPoolInterleaved => {
            let mut saved = NormSaved {
                xhat: vec![0f32; m * d],
                rstd: vec![0f32; m],
            };
            layer_norm_rows(
                &xs,
                &w.norm_w,
                &w.norm_b,
                c.eps,
                normed,
                &mut saved.xhat,
                &mut saved.rstd,
            );
            head_norms.push(saved);
            Array2::from_shape_fn((batch, 2 * d), |(b, k)| {
                let j = k / 2;
                if k % 2 == 0 {
                    normed[b * t * d + j]
                } else {
                    (1..t).map(|ti| normed[(b * t + ti) * d + j]).sum::<f32>() / np as f32
                }
            })
        }
    };
    let logits = vit.head.as_ref().map(|h| {
        let in_dim = features.ncols();
        let mut out = vec![0f32; batch * h.classes];
        linear(
            MatRef::row_major(features.as_slice().expect("standard layout"), batch, in_dim),
            &h.weight,
            Some(&h.bias),
            &mut out,
            false,
            Threads::Single,
        );
        Array2::from_shape_vec((batch, h.classes), out).expect("sized above")
    });
    Ok(ForwardState {
        batch,
        tokens: t,
        grid,
        height,
        width,
        keep,
        workspace: ws,
        head_norms,
        features,
        logits,
        tap_layer,
        tap_qkv,
        tap_probs,
        tap_tokens,
        threads,
        dim: d,
        heads,
    })
}

/// Per-call scratch a block writes when it does not keep its linear inputs.
struct Scratch<'a> {
    normed: &'a mut [f32],
    attn_cat: &'a mut [f32],
    act: &'a mut [f32],
}

/// One pre-norm block: `x += Attn(LN1(x)); x += MLP(LN2(x))`, saving what the
/// backward needs in `s` (and the inputs of the linear layers when `keep_inputs`).
///
/// With `s.cls_only`, LN1 and q|k|v run on every token (the keys and values are
/// needed) but attention, projection, LN2 and MLP only on the CLS row of each
/// image; only those rows of `xs` are updated.
#[allow(clippy::too_many_arguments)]
fn block_forward(
    vit: &Vit,
    bw: &BlockWeights,
    s: &mut BlockSaved,
    xs: &mut [f32],
    scratch: Scratch,
    batch: usize,
    t: usize,
    threads: Threads,
    keep_inputs: bool,
) {
    let c = &vit.config;
    let (d, hidden, heads, hd) = (c.dim, c.mlp_hidden, c.heads, c.head_dim());
    let m = batch * t;
    let scale = c.attn_scale();
    let cls_only = s.cls_only;
    // Rows after attention: every token, or the CLS row of each image.
    let rows = if cls_only { batch } else { m };
    sized(&mut s.xhat1, m * d);
    sized(&mut s.rstd1, m);
    sized(&mut s.qkv, m * 3 * d);
    sized(
        &mut s.probs,
        batch * heads * t * if cls_only { 1 } else { t },
    );
    sized(&mut s.xhat2, rows * d);
    sized(&mut s.rstd2, rows);
    sized(&mut s.gelu_grad, rows * hidden);
    if keep_inputs {
        sized(&mut s.normed1, m * d);
        sized(&mut s.attn_cat, m * d);
        sized(&mut s.normed2, m * d);
        sized(&mut s.act, m * hidden);
    }
    let Scratch {
        normed,
        attn_cat,
        act,
    } = scratch;
    let normed1: &mut [f32] = if keep_inputs { &mut s.normed1 } else { normed };
    layer_norm_rows(
        xs,
        &bw.norm1_w,
        &bw.norm1_b,
        c.eps,
        normed1,
        &mut s.xhat1,
        &mut s.rstd1,
    );
    linear(
        MatRef::row_major(normed1, m, d),
        &bw.qkv_w,
        Some(&bw.qkv_b),
        &mut s.qkv,
        false,
        threads,
    );
    let attn: &mut [f32] = if keep_inputs {
        &mut s.attn_cat
    } else {
        &mut attn_cat[..rows * d]
    };
    if cls_only {
        attention_cls_forward(&s.qkv, &mut s.probs, attn, batch, t, heads, hd, scale);
    } else {
        attention_forward(&s.qkv, &mut s.probs, attn, batch, t, heads, hd, scale);
    }
    // The residual rows the rest of the block updates.
    let mut cls_rows = Vec::new();
    let x_res: &mut [f32] = if cls_only {
        cls_rows = vec![0f32; batch * d];
        ops::copy_rows(xs, t * d, &mut cls_rows, d, batch, d);
        &mut cls_rows
    } else {
        &mut *xs
    };
    linear(
        MatRef::row_major(attn, rows, d),
        &bw.proj_w,
        Some(&bw.proj_b),
        x_res,
        true,
        threads,
    );
    let normed2: &mut [f32] = if keep_inputs {
        &mut s.normed2
    } else {
        &mut normed1[..rows * d]
    };
    layer_norm_rows(
        x_res,
        &bw.norm2_w,
        &bw.norm2_b,
        c.eps,
        normed2,
        &mut s.xhat2,
        &mut s.rstd2,
    );
    // fc1 output goes to `act`, then GELU in place (with its derivative saved).
    let act: &mut [f32] = if keep_inputs {
        &mut s.act
    } else {
        &mut act[..rows * hidden]
    };
    linear(
        MatRef::row_major(normed2, rows, d),
        &bw.fc1_w,
        Some(&bw.fc1_b),
        act,
        false,
        threads,
    );
    act.par_chunks_mut(hidden)
        .zip(s.gelu_grad.par_chunks_mut(hidden))
        .for_each(|(a, dg)| ops::gelu_in_place_with_grad(a, dg));
    linear(
        MatRef::row_major(act, rows, hidden),
        &bw.fc2_w,
        Some(&bw.fc2_b),
        x_res,
        true,
        threads,
    );
    if cls_only {
        ops::copy_rows(&cls_rows, d, xs, t * d, batch, d);
    }
}

/// Final-norms the CLS row of each image; returns (features (batch·D), saved).
pub(crate) fn norm_cls_rows(
    xs: &[f32],
    batch: usize,
    t: usize,
    d: usize,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
) -> (Vec<f32>, NormSaved) {
    let mut f = vec![0f32; batch * d];
    let mut saved = NormSaved {
        xhat: vec![0f32; batch * d],
        rstd: vec![0f32; batch],
    };
    for b in 0..batch {
        let x = &xs[b * t * d..][..d];
        ops::layer_norm_row(
            x,
            gamma,
            beta,
            eps,
            &mut f[b * d..][..d],
            &mut saved.xhat[b * d..][..d],
            &mut saved.rstd[b],
        );
    }
    (f, saved)
}

/// The CLS query's attention only (the keys and values of every token): per image
/// and head, p = softmax(scale·q₀·Kᵀ) and o₀ = p·V; `out` (batch, D) gets the heads
/// concatenated, `probs` (batch, heads, T).
#[allow(clippy::too_many_arguments)]
fn attention_cls_forward(
    qkv: &[f32],
    probs: &mut [f32],
    out: &mut [f32],
    batch: usize,
    t: usize,
    heads: usize,
    hd: usize,
    scale: f32,
) {
    let d = heads * hd;
    for b in 0..batch {
        let img = &qkv[b * t * 3 * d..][..t * 3 * d];
        for h in 0..heads {
            let p = &mut probs[(b * heads + h) * t..][..t];
            let q0 = MatRef::block(img, h * hd, 1, hd, 3 * d);
            matmul(
                p,
                t,
                q0,
                MatRef::block(img, d + h * hd, t, hd, 3 * d).t(),
                false,
                Threads::Single,
            );
            ops::softmax_row(p, scale);
            let p = MatRef::row_major(p, 1, t);
            matmul(
                &mut out[b * d + h * hd..],
                d,
                p,
                MatRef::block(img, 2 * d + h * hd, t, hd, 3 * d),
                false,
                Threads::Single,
            );
        }
    }
}

/// Multi-head attention core: for each image and head, P = softmax(scale·Q·Kᵀ) and
/// O = P·V; `out` (M, D) gets the heads concatenated head-major.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention_forward(
    qkv: &[f32],
    probs: &mut [f32],
    out: &mut [f32],
    batch: usize,
    t: usize,
    heads: usize,
    hd: usize,
    scale: f32,
) {
    let d = heads * hd;
    let ld = 3 * d;
    let per_image = qkv.len() / batch;
    out.par_chunks_mut(t * d)
        .zip(probs.par_chunks_mut(heads * t * t))
        .enumerate()
        .for_each(|(b, (out_img, p_img))| {
            let q_img = &qkv[b * per_image..][..per_image];
            for h in 0..heads {
                let p = &mut p_img[h * t * t..][..t * t];
                let q = MatRef::block(q_img, h * hd, t, hd, ld);
                let k = MatRef::block(q_img, d + h * hd, t, hd, ld);
                let v = MatRef::block(q_img, 2 * d + h * hd, t, hd, ld);
                matmul(p, t, q, k.t(), false, Threads::Single);
                p.chunks_exact_mut(t)
                    .for_each(|row| ops::softmax_row(row, scale));
                matmul(
                    &mut out_img[h * hd..],
                    d,
                    MatRef::row_major(p, t, t),
                    v,
                    false,
                    Threads::Single,
                );
            }
        });
    let _ = batch;
}
