//! Gradients of a cross-entropy loss with respect to the ViT's *parameters*, for
//! training. It runs the CPU backend's forward with [`Keep::ParamGrad`], which
//! also keeps the input of every linear layer of the trained blocks (and never
//! prunes the last block), then the backend's block backward asking for weight
//! gradients; the same two functions serve attribution.
//!
//! Loss: `torch.nn.CrossEntropyLoss(weight=w, reduction="mean")`, i.e.
//! `L = Σᵢ w[yᵢ]·(−log softmax(zᵢ)[yᵢ]) / Σᵢ w[yᵢ]` (w = 1 without class weights),
//! so `∂L/∂zᵢ = w[yᵢ]·(softmax(zᵢ) − onehot(yᵢ)) / Σ w`.
//!
//! Rules per layer, with g the upstream gradient (rows = tokens of the batch):
//! Linear `y = xWᵀ + b`: dW = gᵀx, db = Σ_rows g, dx = gW. LayerNorm: dγ = Σ g⊙x̂,
//! dβ = Σ g, dx as in `ops::layer_norm_bwd_row`. Patch conv = a linear map of the
//! im2col rows. CLS token and positional table: the sums over the batch of the
//! gradient at their token rows.
//!
//! The batch is split into slices, one per thread and at most eight images each
//! (single-threaded GEMMs inside), and the slices' gradients are added in slice
//! order, so for a fixed thread count the result is bit-reproducible.

use ndarray::{s, Array2, ArrayView4};
use rayon::prelude::*;

use crate::backend::cpu::backward::{block_backward, ln_bwd_rows, seed_cls, BackwardScratch};
use crate::backend::cpu::forward::{forward_keeping, im2col, sized, ForwardState, Keep, Workspace};
use crate::backend::cpu::gemm::{
    linear_backward_input, linear_backward_params, matmul, MatRef, Threads,
};
use crate::backend::cpu::ops;
use crate::backend::input;
use crate::error::{Error, Result};
use crate::model::pos_embed::pos_embed_grad_to_stored;
use crate::model::weights::BlockWeights;
use crate::model::{HeadKind, LinearHead, Vit};

/// Which parameters receive gradients; the rest are frozen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trainable {
    /// The classifier head only (linear probing).
    Head,
    /// The last `k` blocks, the final norm and the head.
    LastBlocks(usize),
    /// Every parameter (patch embedding, CLS token, positions, blocks, norm, head).
    All,
}

impl Trainable {
    /// Index of the first block that trains (`depth` when none does).
    pub fn first_block(&self, depth: usize) -> usize {
        match *self {
            Trainable::Head => depth,
            Trainable::LastBlocks(k) => depth - k.min(depth),
            Trainable::All => 0,
        }
    }

    /// Whether the final norm trains.
    pub fn norm(&self) -> bool {
        *self != Trainable::Head
    }

    /// Whether the patch embedding, CLS token and positional table train.
    pub fn embedding(&self) -> bool {
        *self == Trainable::All
    }
}

/// Gradients of the patch embedding, CLS token and positional table.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbedGrads {
    /// (D, 3·p·p), as `VitWeights::patch_w`.
    pub patch_w: Vec<f32>,
    pub patch_b: Vec<f32>,
    pub cls_token: Vec<f32>,
    /// (1 + pos_patches, D).
    pub pos_embed: Vec<f32>,
}

/// Gradients of the trainable parameters, laid out like the weights.
#[derive(Debug, Clone)]
pub struct ParamGrads {
    /// Empty for a model without head (self-supervised pretraining trains its own).
    pub head_w: Vec<f32>,
    pub head_b: Vec<f32>,
    /// Final norm (γ, β), if it trains.
    pub norm: Option<(Vec<f32>, Vec<f32>)>,
    /// Gradients of blocks `first_block..depth`, in order.
    pub blocks: Vec<BlockWeights>,
    /// Index of the first trainable block.
    pub first_block: usize,
    pub embed: Option<EmbedGrads>,
}

fn zero_block(d: usize, hidden: usize) -> BlockWeights {
    BlockWeights {
        norm1_w: vec![0.0; d],
        norm1_b: vec![0.0; d],
        qkv_w: vec![0.0; 3 * d * d],
        qkv_b: vec![0.0; 3 * d],
        proj_w: vec![0.0; d * d],
        proj_b: vec![0.0; d],
        norm2_w: vec![0.0; d],
        norm2_b: vec![0.0; d],
        fc1_w: vec![0.0; hidden * d],
        fc1_b: vec![0.0; hidden],
        fc2_w: vec![0.0; d * hidden],
        fc2_b: vec![0.0; d],
    }
}

pub use crate::model::weights::{block_tensors, block_tensors_mut};

impl ParamGrads {
    /// All-zero gradients for the parameters `trainable` selects.
    pub fn zeros(vit: &Vit, head: &LinearHead, trainable: Trainable) -> Self {
        ParamGrads {
            head_w: vec![0.0; head.weight.len()],
            head_b: vec![0.0; head.bias.len()],
            ..Self::zeros_backbone(vit, trainable)
        }
    }

    /// All-zero gradients for the backbone parameters `trainable` selects, with no head.
    pub fn zeros_backbone(vit: &Vit, trainable: Trainable) -> Self {
        let c = &vit.config;
        let (d, hidden) = (c.dim, c.mlp_hidden);
        let first_block = trainable.first_block(c.depth);
        ParamGrads {
            head_w: Vec::new(),
            head_b: Vec::new(),
            norm: trainable.norm().then(|| (vec![0.0; d], vec![0.0; d])),
            blocks: (first_block..c.depth)
                .map(|_| zero_block(d, hidden))
                .collect(),
            first_block,
            embed: trainable.embedding().then(|| EmbedGrads {
                patch_w: vec![0.0; vit.weights.patch_w.len()],
                patch_b: vec![0.0; d],
                cls_token: vec![0.0; d],
                pos_embed: vec![0.0; vit.weights.pos_embed.len()],
            }),
        }
    }

    /// Every gradient under its timm parameter name (`head.weight`, `blocks.3.attn.qkv.bias`, …).
    pub fn named(&self) -> Vec<(String, &Vec<f32>)> {
        let mut out: Vec<(String, &Vec<f32>)> = Vec::new();
        if let Some(e) = &self.embed {
            out.push(("patch_embed.proj.weight".into(), &e.patch_w));
            out.push(("patch_embed.proj.bias".into(), &e.patch_b));
            out.push(("cls_token".into(), &e.cls_token));
            out.push(("pos_embed".into(), &e.pos_embed));
        }
        for (i, b) in self.blocks.iter().enumerate() {
            for (name, t) in block_tensors(b) {
                out.push((format!("blocks.{}.{name}", self.first_block + i), t));
            }
        }
        if let Some((w, b)) = &self.norm {
            out.push(("norm.weight".into(), w));
            out.push(("norm.bias".into(), b));
        }
        if !self.head_w.is_empty() {
            out.push(("head.weight".into(), &self.head_w));
            out.push(("head.bias".into(), &self.head_b));
        }
        out
    }

    /// Every gradient tensor, mutable, in [`ParamGrads::named`]'s order.
    pub fn tensors_mut(&mut self) -> Vec<&mut Vec<f32>> {
        let mut out: Vec<&mut Vec<f32>> = Vec::new();
        if let Some(e) = &mut self.embed {
            out.extend([
                &mut e.patch_w,
                &mut e.patch_b,
                &mut e.cls_token,
                &mut e.pos_embed,
            ]);
        }
        for b in &mut self.blocks {
            out.extend(block_tensors_mut(b).into_iter().map(|(_, t)| t));
        }
        if let Some((w, b)) = &mut self.norm {
            out.extend([w, b]);
        }
        out.extend([&mut self.head_w, &mut self.head_b]);
        out
    }

    /// `self += other` (same trainable set).
    pub fn add(&mut self, other: &mut ParamGrads) {
        for (a, b) in self.tensors_mut().into_iter().zip(other.tensors_mut()) {
            a.iter_mut().zip(b.iter()).for_each(|(x, y)| *x += y);
        }
    }
}

/// Loss options.
#[derive(Debug, Clone, Default)]
pub struct LossOptions<'a> {
    /// Per-class weights of the cross-entropy (PyTorch `weight=`), or `None`.
    pub class_weights: Option<&'a [f32]>,
}

/// What [`loss_and_param_grads`] returns.
#[derive(Debug, Clone)]
pub struct LossAndGrads {
    /// Mean (weighted) cross-entropy over the batch.
    pub loss: f32,
    /// (batch, classes).
    pub logits: Array2<f32>,
    pub grads: ParamGrads,
}

/// Checks labels and class weights; returns Σᵢ w[yᵢ], the loss normaliser.
pub fn loss_normaliser(classes: usize, labels: &[usize], opts: &LossOptions) -> Result<f32> {
    input::check_class_range("label", classes, labels)?;
    if let Some(w) = opts.class_weights {
        if w.len() != classes {
            return Err(Error::shape("class weights", &[classes], &[w.len()]));
        }
        if w.iter().any(|v| !(v.is_finite() && *v >= 0.0)) {
            return Err(Error::param(
                "class weights",
                "every weight must be finite and non-negative",
            ));
        }
    }
    let total: f32 = labels
        .iter()
        .map(|&y| opts.class_weights.map_or(1.0, |w| w[y]))
        .sum();
    if total <= 0.0 {
        return Err(Error::param(
            "class weights",
            "the labels of this batch all have weight 0",
        ));
    }
    Ok(total)
}

/// Cross-entropy terms of some rows: returns (Σ w·nll / `normaliser`, ∂L/∂logits).
pub fn cross_entropy_rows(
    logits: &Array2<f32>,
    labels: &[usize],
    class_weights: Option<&[f32]>,
    normaliser: f32,
) -> (f32, Array2<f32>) {
    let mut dlogits = logits.clone();
    let mut loss = 0f64;
    for (mut row, &y) in dlogits.outer_iter_mut().zip(labels) {
        let w = class_weights.map_or(1.0, |cw| cw[y]);
        let max = row.fold(f32::NEG_INFINITY, |m, v| m.max(*v));
        row.mapv_inplace(|v| (v - max).exp());
        let sum: f32 = row.sum();
        row.mapv_inplace(|v| v / sum);
        loss -= (w * row[y].max(f32::MIN_POSITIVE).ln()) as f64;
        row[y] -= 1.0;
        let scale = w / normaliser;
        row.mapv_inplace(|v| v * scale);
    }
    ((loss / normaliser as f64) as f32, dlogits)
}

/// Head gradients for features (batch, in_dim) and ∂L/∂logits; adds to `grads`.
pub fn head_grads(
    dlogits: &Array2<f32>,
    features: &Array2<f32>,
    head_w: &mut [f32],
    head_b: &mut [f32],
) {
    linear_backward_params(
        dlogits.as_slice().expect("standard layout"),
        features.as_slice().expect("standard layout"),
        dlogits.nrows(),
        head_w,
        head_b,
        Threads::Single,
    );
}

/// Head kinds whose feature is the final-normed CLS of the last `n` blocks.
fn cls_blocks(kind: HeadKind) -> Option<usize> {
    match kind {
        HeadKind::Cls => Some(1),
        HeadKind::LastBlocksCls { n } => Some(n),
        HeadKind::ClsAvgPoolInterleaved => None,
    }
}

/// The forward a parameter backward needs: the inference forward keeping the
/// linear inputs of the blocks `trainable` trains.
///
/// # Errors
/// As [`forward_keeping`].
pub fn forward_for_grads(
    vit: &Vit,
    x: ArrayView4<f32>,
    trainable: Trainable,
    threads: Threads,
) -> Result<ForwardState> {
    let first = trainable.first_block(vit.config.depth);
    forward_keeping(
        vit,
        x,
        Keep::ParamGrad { from: first },
        Workspace::default(),
        threads,
        None,
    )
}

/// Forward + backward of one slice of the batch.
#[allow(clippy::too_many_arguments)]
fn slice_grads(
    vit: &Vit,
    head: &LinearHead,
    x: ArrayView4<f32>,
    labels: &[usize],
    opts: &LossOptions,
    normaliser: f32,
    trainable: Trainable,
    threads: Threads,
) -> Result<LossAndGrads> {
    let c = &vit.config;
    let (batch, _, height, width) = x.dim();
    let grid = c.grid_for(height, width)?;
    let np = grid.0 * grid.1;
    let native_grid = np == c.pos_patches && c.pos_grid.unwrap_or(grid) == grid;
    if trainable.embedding() && !native_grid {
        return Err(Error::param(
            "input size",
            format!(
                "training the positional table needs inputs on its own {}-patch grid, got {height}×{width}",
                c.pos_patches
            ),
        ));
    }

    // The inference forward, keeping the linear inputs of the trained blocks.
    let mut state = forward_for_grads(vit, x, trainable, threads)?;
    let features = std::mem::replace(&mut state.features, Array2::zeros((0, 0)));
    let logits = state
        .logits
        .take()
        .ok_or_else(|| Error::Internal("forward with a head returned no logits".into()))?;

    // Head and loss.
    let (loss, dlogits) = cross_entropy_rows(&logits, labels, opts.class_weights, normaliser);
    let mut grads = ParamGrads::zeros(vit, head, trainable);
    head_grads(&dlogits, &features, &mut grads.head_w, &mut grads.head_b);
    if trainable == Trainable::Head {
        return Ok(LossAndGrads {
            loss,
            logits,
            grads,
        });
    }

    // ∂L/∂feature = dlogits·W, then through the backbone.
    let mut dfeat = vec![0f32; batch * features.ncols()];
    linear_backward_input(
        MatRef::row_major(
            dlogits.as_slice().expect("standard layout"),
            batch,
            head.classes,
        ),
        &head.weight,
        &mut dfeat,
        Threads::Single,
    );
    backbone_backward(vit, &mut state, x, &dfeat, trainable, &mut grads, threads)?;
    Ok(LossAndGrads {
        loss,
        logits,
        grads,
    })
}

/// Adds to `grads` the gradients of the backbone parameters `trainable` selects
/// (final norm, blocks, embedding), given `dfeat` = ∂L/∂feature (batch, in_dim)
/// for the feature the forward `state` (from [`forward_for_grads`] on `x`) made:
/// the head's input, or the final-normed CLS when the model has no head. Inputs
/// off the positional table's own grid send their positional gradient through
/// the interpolation's adjoint.
///
/// # Errors
/// [`Error::Shape`] when `dfeat` does not fit the state's features;
/// [`Error::InvalidParam`] for `Trainable::Head`, which has no backbone part.
pub fn backbone_backward(
    vit: &Vit,
    state: &mut ForwardState,
    x: ArrayView4<f32>,
    dfeat: &[f32],
    trainable: Trainable,
    grads: &mut ParamGrads,
    threads: Threads,
) -> Result<()> {
    let c = &vit.config;
    let w = &vit.weights;
    if trainable == Trainable::Head {
        return Err(Error::param(
            "trainable",
            "only the head trains: no backbone gradient",
        ));
    }
    let (batch, grid) = (state.batch, state.grid);
    let d = c.dim;
    let np = grid.0 * grid.1;
    let t = np + 1;
    let m = batch * t;
    let p = c.patch;
    let cols = 3 * p * p;
    let head_kind = vit.head.as_ref().map_or(HeadKind::Cls, |h| h.kind);
    let in_dim = head_kind.in_dim(d);
    if dfeat.len() != batch * in_dim {
        return Err(Error::shape(
            "feature gradient",
            &[batch, in_dim],
            &[dfeat.len()],
        ));
    }
    let first = trainable.first_block(c.depth);
    let n_cls = cls_blocks(head_kind);
    let head_norms = &state.head_norms;
    let ws = &mut state.workspace;
    sized(&mut ws.g, m * d);
    ws.g.fill(0.0);
    sized(&mut ws.ga, m * c.mlp_hidden);
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
    let (dnw, dnb) = grads
        .norm
        .as_mut()
        .ok_or_else(|| Error::Internal("the norm trains unless only the head does".into()))?;
    let n_chunks = head_norms.len();
    match n_cls {
        Some(_) => {
            for (k, s) in head_norms.iter().enumerate() {
                for b in 0..batch {
                    let df = &dfeat[b * in_dim + k * d..][..d];
                    ops::layer_norm_param_grads(df, &s.xhat[b * d..][..d], dnw, dnb);
                }
            }
        }
        None => {
            // Interleaved [CLS, mean patch]: every row gets its share, then LN backward.
            let s = &head_norms[0];
            let mut dy = vec![0f32; m * d];
            for b in 0..batch {
                let f = &dfeat[b * 2 * d..][..2 * d];
                for ti in 0..t {
                    let row = &mut dy[(b * t + ti) * d..][..d];
                    for j in 0..d {
                        row[j] = if ti == 0 {
                            f[2 * j]
                        } else {
                            f[2 * j + 1] / np as f32
                        };
                    }
                }
            }
            ops::layer_norm_param_grads(&dy, &s.xhat, dnw, dnb);
            ln_bwd_rows(&dy, &w.norm_w, &s.xhat, &s.rstd, g, d);
        }
    }

    // Blocks, last to first; CLS features are seeded as their block is reached.
    for bi in (first..c.depth).rev() {
        if let Some(n) = n_cls {
            if bi + n >= c.depth {
                let k = bi + n - c.depth;
                seed_cls(
                    g,
                    dfeat,
                    &w.norm_w,
                    &head_norms[k],
                    k,
                    n_chunks,
                    batch,
                    t,
                    d,
                );
            }
        }
        // The input gradient of the first trained block only feeds the embedding.
        let need_input = bi > first || trainable.embedding();
        block_backward(
            vit,
            &w.blocks[bi],
            &blocks[bi],
            g,
            BackwardScratch { ga, gn, gqkv },
            batch,
            t,
            threads,
            Some(&mut grads.blocks[bi - first]),
            need_input,
        );
    }

    if let Some(e) = grads.embed.as_mut() {
        let native_grid = np == c.pos_patches && c.pos_grid.unwrap_or(grid) == grid;
        // The gradient of the table this grid used; mapped back below when interpolated.
        let mut dtable = vec![0f32; if native_grid { 0 } else { t * d }];
        // The patch rows are cheap to rebuild; the forward does not keep them.
        let patches = im2col(&x, p, grid);
        for b in 0..batch {
            let img = &g[b * t * d..][..t * d];
            ops::add_col_sums(&mut e.cls_token, &img[..d]);
            ops::add_col_sums(&mut e.patch_b, &img[d..]);
            let table = if native_grid {
                &mut e.pos_embed
            } else {
                &mut dtable
            };
            table.iter_mut().zip(img).for_each(|(a, v)| *a += v);
            matmul(
                &mut e.patch_w,
                cols,
                MatRef::block(g, (b * t + 1) * d, np, d, d).t(),
                MatRef::row_major(&patches[b * np * cols..][..np * cols], np, cols),
                true,
                threads,
            );
        }
        if !native_grid {
            let stored = pos_embed_grad_to_stored(c, &dtable, grid, vit.pos_embed_mode)?;
            e.pos_embed
                .iter_mut()
                .zip(&stored)
                .for_each(|(a, v)| *a += v);
        }
    }
    Ok(())
}

/// Largest number of images one slice of the batch runs at once.
const MAX_SLICE: usize = 8;

/// Mean cross-entropy of the head's logits on `x` (batch, 3, H, W), normalised
/// inputs, against `labels`, and its gradients w.r.t. the parameters `trainable`
/// selects.
///
/// # Errors
/// [`Error::InvalidParam`] for a model without head, labels out of range, bad
/// class weights, an input size the model cannot take (or, when the positional
/// table trains, a size other than its own grid); [`Error::Shape`] for a label
/// count that differs from the batch or a non-RGB input.
pub fn loss_and_param_grads(
    vit: &Vit,
    x: ArrayView4<f32>,
    labels: &[usize],
    opts: &LossOptions,
    trainable: Trainable,
) -> Result<LossAndGrads> {
    let head = vit.require_head()?;
    let batch = input::check_batch(vit, x.dim())?.batch;
    input::check_classes(
        "labels (one per input)",
        "label",
        head.classes,
        batch,
        labels,
    )?;
    if let Trainable::LastBlocks(k) = trainable {
        if k == 0 || k > vit.config.depth {
            return Err(Error::param(
                "finetune",
                format!(
                    "last {k} blocks requested; the model has {}",
                    vit.config.depth
                ),
            ));
        }
    }
    input::check_finite(x)?;
    let normaliser = loss_normaliser(head.classes, labels, opts)?;
    // One slice per thread, at most MAX_SLICE images each to bound the saved
    // activations (≈ 70 MB per image for ViT-S/16 at 224² with every block training).
    let threads = rayon::current_num_threads().max(1);
    let per = batch.div_ceil(threads.min(batch)).min(MAX_SLICE);
    if per >= batch {
        return slice_grads(
            vit,
            head,
            x,
            labels,
            opts,
            normaliser,
            trainable,
            Threads::Pool,
        );
    }
    let starts: Vec<usize> = (0..batch).step_by(per).collect();
    let parts: Vec<Result<LossAndGrads>> = starts
        .into_par_iter()
        .map(|start| {
            let end = (start + per).min(batch);
            slice_grads(
                vit,
                head,
                x.slice(s![start..end, .., .., ..]),
                &labels[start..end],
                opts,
                normaliser,
                trainable,
                Threads::Single,
            )
        })
        .collect();
    let mut total: Option<LossAndGrads> = None;
    let mut logits = Vec::with_capacity(parts.len());
    for part in parts {
        let mut part = part?;
        logits.push(part.logits.clone());
        match total.as_mut() {
            None => total = Some(part),
            Some(t) => {
                t.loss += part.loss;
                t.grads.add(&mut part.grads);
            }
        }
    }
    let mut total = total.ok_or_else(|| Error::Internal("no batch slice was run".into()))?;
    total.logits = ndarray::concatenate(
        ndarray::Axis(0),
        &logits.iter().map(|a| a.view()).collect::<Vec<_>>(),
    )
    .map_err(|e| Error::Internal(e.to_string()))?;
    Ok(total)
}
