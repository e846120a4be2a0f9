//! One typed wrapper per kernel of `kernels/` (nothing else launches), plus the
//! row-major GEMM, all on a [`DeviceApi`] (the GPU, or the emulated device). Each wrapper checks that its buffers hold what the
//! launch will touch, so an unsafe launch never reads or writes out of bounds.
//!
//! Buffers are passed as views, so callers can address rows inside a larger buffer
//! (the CLS rows of a batch, one head's columns of q|k|v).

use super::api::{DeviceApi, KArg, View, ViewMut};
use super::modules::KernelFile;
use crate::backend::blas_layout::{row_major_gemm, span, RowMajor};
pub use crate::backend::cpu::fused_attention::AttnShape;
use crate::backend::Precision;
use crate::error::{Error, Result};

/// Threads per block of the row kernels (one block per row).
const ROW_BLOCK: u32 = 128;
/// Threads per block of the element-wise kernels.
const ELEM_BLOCK: u32 = 256;

/// (grid, block) of a launch.
type Cfg = (u32, u32);

fn rows_cfg(rows: usize) -> Cfg {
    (rows as u32, ROW_BLOCK)
}

/// A grid-stride launch: enough blocks to fill a large GPU, at most one per 256 elements.
fn elems_cfg(n: usize) -> Cfg {
    (
        n.div_ceil(ELEM_BLOCK as usize).clamp(1, 8192) as u32,
        ELEM_BLOCK,
    )
}

/// A size as the kernels' `int`.
fn int(what: &'static str, v: usize) -> Result<i32> {
    i32::try_from(v)
        .map_err(|_| Error::param(what, format!("{v} exceeds the kernels' 32-bit sizes")))
}

/// `len` must cover `need` floats.
fn need(what: &str, len: usize, need: usize) -> Result<()> {
    if len < need {
        return Err(Error::Internal(format!(
            "CUDA launch: buffer `{what}` holds {len} values, the launch touches {need}"
        )));
    }
    Ok(())
}

fn launch(
    gpu: &dyn DeviceApi,
    file: KernelFile,
    name: &'static str,
    (grid, block): Cfg,
    args: &[KArg],
) -> Result<()> {
    // SAFETY: every wrapper below passes arguments in the order and with the types of
    // its kernel's signature in kernels/*.cu, and has checked (with `need`) that each
    // buffer covers every element the kernel touches for the sizes it passes.
    unsafe { gpu.launch(file, name, grid, block, args) }
}

// --- norm.cu ---------------------------------------------------------------------

/// LayerNorm of `rows` rows (x rows `x_ld` apart, y rows `y_ld` apart); saves packed
/// x̂ (rows, cols) and 1/σ (rows).
#[allow(clippy::too_many_arguments)]
pub fn layer_norm_f32(
    gpu: &dyn DeviceApi,
    x: &View<f32>,
    x_ld: usize,
    gamma: &View<f32>,
    beta: &View<f32>,
    y: &mut ViewMut<f32>,
    y_ld: usize,
    xhat: &mut ViewMut<f32>,
    rstd: &mut ViewMut<f32>,
    rows: usize,
    cols: usize,
    eps: f32,
) -> Result<()> {
    need("layer_norm.x", x.len(), span(rows, cols, x_ld))?;
    need("layer_norm.y", y.len(), span(rows, cols, y_ld))?;
    need("layer_norm.xhat", xhat.len(), rows * cols)?;
    need("layer_norm.rstd", rstd.len(), rows)?;
    need("layer_norm.gamma", gamma.len().min(beta.len()), cols)?;
    let (x_ld, y_ld, r, c) = (
        int("ld", x_ld)?,
        int("ld", y_ld)?,
        int("rows", rows)?,
        int("cols", cols)?,
    );
    launch(
        gpu,
        KernelFile::Norm,
        "layer_norm_f32",
        rows_cfg(rows),
        &[
            KArg::Ptr(x.ptr()),
            KArg::I32(x_ld),
            KArg::Ptr(gamma.ptr()),
            KArg::Ptr(beta.ptr()),
            KArg::Ptr(y.ptr()),
            KArg::I32(y_ld),
            KArg::Ptr(xhat.ptr()),
            KArg::Ptr(rstd.ptr()),
            KArg::I32(r),
            KArg::I32(c),
            KArg::F32(eps),
        ],
    )
}

/// LayerNorm input gradient, added to `dx` when `accumulate`.
#[allow(clippy::too_many_arguments)]
pub fn layer_norm_bwd_f32(
    gpu: &dyn DeviceApi,
    g: &View<f32>,
    g_ld: usize,
    gamma: &View<f32>,
    xhat: &View<f32>,
    rstd: &View<f32>,
    dx: &mut ViewMut<f32>,
    dx_ld: usize,
    rows: usize,
    cols: usize,
    accumulate: bool,
) -> Result<()> {
    need("layer_norm_bwd.g", g.len(), span(rows, cols, g_ld))?;
    need("layer_norm_bwd.dx", dx.len(), span(rows, cols, dx_ld))?;
    need("layer_norm_bwd.xhat", xhat.len(), rows * cols)?;
    need("layer_norm_bwd.rstd", rstd.len(), rows)?;
    need("layer_norm_bwd.gamma", gamma.len(), cols)?;
    let (g_ld, dx_ld, r, c) = (
        int("ld", g_ld)?,
        int("ld", dx_ld)?,
        int("rows", rows)?,
        int("cols", cols)?,
    );
    let acc = accumulate as i32;
    launch(
        gpu,
        KernelFile::Norm,
        "layer_norm_bwd_f32",
        rows_cfg(rows),
        &[
            KArg::Ptr(g.ptr()),
            KArg::I32(g_ld),
            KArg::Ptr(gamma.ptr()),
            KArg::Ptr(xhat.ptr()),
            KArg::Ptr(rstd.ptr()),
            KArg::Ptr(dx.ptr()),
            KArg::I32(dx_ld),
            KArg::I32(r),
            KArg::I32(c),
            KArg::I32(acc),
        ],
    )
}

// --- softmax.cu ------------------------------------------------------------------

/// In place: each row of `s` (rows, cols) ← softmax(scale·row).
pub fn softmax_scale_f32(
    gpu: &dyn DeviceApi,
    s: &mut ViewMut<f32>,
    rows: usize,
    cols: usize,
    scale: f32,
) -> Result<()> {
    need("softmax.s", s.len(), rows * cols)?;
    let (r, c) = (int("rows", rows)?, int("cols", cols)?);
    launch(
        gpu,
        KernelFile::Softmax,
        "softmax_scale_f32",
        rows_cfg(rows),
        &[
            KArg::Ptr(s.ptr()),
            KArg::I32(r),
            KArg::I32(c),
            KArg::F32(scale),
        ],
    )
}

/// In place: `dp ← scale·p ⊙ (dp − ⟨dp, p⟩)` per row.
pub fn softmax_bwd_f32(
    gpu: &dyn DeviceApi,
    p: &View<f32>,
    dp: &mut ViewMut<f32>,
    rows: usize,
    cols: usize,
    scale: f32,
) -> Result<()> {
    need("softmax_bwd.p", p.len(), rows * cols)?;
    need("softmax_bwd.dp", dp.len(), rows * cols)?;
    let (r, c) = (int("rows", rows)?, int("cols", cols)?);
    launch(
        gpu,
        KernelFile::Softmax,
        "softmax_bwd_f32",
        rows_cfg(rows),
        &[
            KArg::Ptr(p.ptr()),
            KArg::Ptr(dp.ptr()),
            KArg::I32(r),
            KArg::I32(c),
            KArg::F32(scale),
        ],
    )
}

// --- attention.cu ----------------------------------------------------------------

/// Largest head dimension the fused attention kernels take (`ES_ATTN_MAX_HD`).
pub const ATTN_MAX_HEAD_DIM: usize = 64;
/// Threads per block of the attention kernels, one per row (`ES_ATTN_ROWS`).
const ATTN_ROWS: usize = 32;

/// One block per (image, head, tile of 32 rows) of `s`, and the sizes as the
/// kernels' ints.
fn attention_cfg(s: &AttnShape) -> Result<(Cfg, [i32; 4])> {
    if s.head_dim == 0 || s.head_dim > ATTN_MAX_HEAD_DIM {
        return Err(Error::param(
            "head_dim",
            format!(
                "the fused attention kernels take head dimensions 1..={ATTN_MAX_HEAD_DIM}, not {}",
                s.head_dim
            ),
        ));
    }
    let blocks = s.batch * s.heads * s.tokens.div_ceil(ATTN_ROWS);
    let ints = [
        int("batch", s.batch)?,
        int("heads", s.heads)?,
        int("tokens", s.tokens)?,
        int("head_dim", s.head_dim)?,
    ];
    Ok(((int("blocks", blocks)? as u32, ATTN_ROWS as u32), ints))
}

/// Fused attention forward: `out` (batch, T, D) ← softmax(scale·Q·Kᵀ)·V per head,
/// `lse` (batch, heads, T) ← each query row's log-sum-exp (all the backward keeps).
pub fn attention_fwd_f32(
    gpu: &dyn DeviceApi,
    qkv: &View<f32>,
    out: &mut ViewMut<f32>,
    lse: &mut ViewMut<f32>,
    s: AttnShape,
    scale: f32,
) -> Result<()> {
    need("attention.qkv", qkv.len(), s.qkv_len())?;
    need("attention.out", out.len(), s.out_len())?;
    need("attention.lse", lse.len(), s.rows())?;
    let (cfg, [b, h, t, hd]) = attention_cfg(&s)?;
    launch(
        gpu,
        KernelFile::Attention,
        "attention_fwd_f32",
        cfg,
        &[
            KArg::Ptr(qkv.ptr()),
            KArg::Ptr(out.ptr()),
            KArg::Ptr(lse.ptr()),
            KArg::I32(b),
            KArg::I32(h),
            KArg::I32(t),
            KArg::I32(hd),
            KArg::F32(scale),
        ],
    )
}

/// Fused attention backward (two launches): `delta` (batch, heads, T) ← rowsum(dO∘O),
/// then dQ|dK|dV into `gqkv` (batch, T, 3·D), every element written, from the
/// forward's q|k|v, output and LSE and the output gradient `d_out` (batch, T, D).
#[allow(clippy::too_many_arguments)]
pub fn attention_bwd_f32(
    gpu: &dyn DeviceApi,
    qkv: &View<f32>,
    out: &View<f32>,
    d_out: &View<f32>,
    lse: &View<f32>,
    delta: &mut ViewMut<f32>,
    gqkv: &mut ViewMut<f32>,
    s: AttnShape,
    scale: f32,
) -> Result<()> {
    need("attention_bwd.qkv", qkv.len(), s.qkv_len())?;
    need("attention_bwd.out", out.len(), s.out_len())?;
    need("attention_bwd.d_out", d_out.len(), s.out_len())?;
    need("attention_bwd.lse", lse.len(), s.rows())?;
    need("attention_bwd.delta", delta.len(), s.rows())?;
    need("attention_bwd.gqkv", gqkv.len(), s.qkv_len())?;
    let (cfg, [b, h, t, hd]) = attention_cfg(&s)?;
    let sizes = [
        KArg::I32(b),
        KArg::I32(h),
        KArg::I32(t),
        KArg::I32(hd),
        KArg::F32(scale),
    ];
    let mut args = vec![
        KArg::Ptr(qkv.ptr()),
        KArg::Ptr(out.ptr()),
        KArg::Ptr(d_out.ptr()),
        KArg::Ptr(lse.ptr()),
        KArg::Ptr(delta.ptr()),
        KArg::Ptr(gqkv.ptr()),
    ];
    args.extend_from_slice(&sizes);
    launch(
        gpu,
        KernelFile::Attention,
        "attention_bwd_dq_f32",
        cfg,
        &args,
    )?;
    let mut args = vec![
        KArg::Ptr(qkv.ptr()),
        KArg::Ptr(d_out.ptr()),
        KArg::Ptr(lse.ptr()),
        KArg::Ptr(delta.ptr()),
        KArg::Ptr(gqkv.ptr()),
    ];
    args.extend_from_slice(&sizes);
    launch(
        gpu,
        KernelFile::Attention,
        "attention_bwd_dkdv_f32",
        cfg,
        &args,
    )
}

// --- gelu.cu ---------------------------------------------------------------------

/// In place: `h ← GELU(h + bias)`, `dgelu ← GELU'(h + bias)`.
pub fn bias_gelu_f32(
    gpu: &dyn DeviceApi,
    h: &mut ViewMut<f32>,
    bias: &View<f32>,
    dgelu: &mut ViewMut<f32>,
    rows: usize,
    cols: usize,
) -> Result<()> {
    need("bias_gelu.h", h.len(), rows * cols)?;
    need("bias_gelu.dgelu", dgelu.len(), rows * cols)?;
    need("bias_gelu.bias", bias.len(), cols)?;
    let (r, c) = (int("rows", rows)?, int("cols", cols)?);
    launch(
        gpu,
        KernelFile::Gelu,
        "bias_gelu_f32",
        elems_cfg(rows * cols),
        &[
            KArg::Ptr(h.ptr()),
            KArg::Ptr(bias.ptr()),
            KArg::Ptr(dgelu.ptr()),
            KArg::I32(r),
            KArg::I32(c),
        ],
    )
}

/// In place: `g ← g·dgelu` over `n` values.
pub fn gelu_bwd_f32(
    gpu: &dyn DeviceApi,
    dgelu: &View<f32>,
    g: &mut ViewMut<f32>,
    n: usize,
) -> Result<()> {
    need("gelu_bwd.dgelu", dgelu.len(), n)?;
    need("gelu_bwd.g", g.len(), n)?;
    let n32 = int("n", n)?;
    launch(
        gpu,
        KernelFile::Gelu,
        "gelu_bwd_f32",
        elems_cfg(n),
        &[KArg::Ptr(dgelu.ptr()), KArg::Ptr(g.ptr()), KArg::I32(n32)],
    )
}

// --- elementwise.cu --------------------------------------------------------------

/// `x[r, c] += bias[c]`.
pub fn add_bias_rows_f32(
    gpu: &dyn DeviceApi,
    x: &mut ViewMut<f32>,
    bias: &View<f32>,
    rows: usize,
    cols: usize,
) -> Result<()> {
    need("add_bias_rows.x", x.len(), rows * cols)?;
    need("add_bias_rows.bias", bias.len(), cols)?;
    let (r, c) = (int("rows", rows)?, int("cols", cols)?);
    launch(
        gpu,
        KernelFile::Elementwise,
        "add_bias_rows_f32",
        elems_cfg(rows * cols),
        &[
            KArg::Ptr(x.ptr()),
            KArg::Ptr(bias.ptr()),
            KArg::I32(r),
            KArg::I32(c),
        ],
    )
}

/// `d_features[b] = head_w[targets[b]]`; targets must be < classes (checked by the caller).
pub fn head_rows_f32(
    gpu: &dyn DeviceApi,
    head_w: &View<f32>,
    targets: &View<i32>,
    d_features: &mut ViewMut<f32>,
    batch: usize,
    in_dim: usize,
) -> Result<()> {
    need("head_rows.targets", targets.len(), batch)?;
    need("head_rows.d_features", d_features.len(), batch * in_dim)?;
    let (b, d) = (int("batch", batch)?, int("in_dim", in_dim)?);
    launch(
        gpu,
        KernelFile::Elementwise,
        "head_rows_f32",
        elems_cfg(batch * in_dim),
        &[
            KArg::Ptr(head_w.ptr()),
            KArg::Ptr(targets.ptr()),
            KArg::Ptr(d_features.ptr()),
            KArg::I32(b),
            KArg::I32(d),
        ],
    )
}

// --- patch_embed.cu --------------------------------------------------------------

/// Patch geometry shared by im2col/col2im.
#[derive(Debug, Clone, Copy)]
pub struct PatchGeometry {
    pub batch: usize,
    pub height: usize,
    pub width: usize,
    pub patch: usize,
    pub grid: (usize, usize),
}

impl PatchGeometry {
    fn image_len(&self) -> usize {
        self.batch * 3 * self.height * self.width
    }
    fn cols_len(&self) -> usize {
        self.batch * self.grid.0 * self.grid.1 * 3 * self.patch * self.patch
    }
    fn ints(&self) -> Result<[i32; 6]> {
        Ok([
            int("batch", self.batch)?,
            int("height", self.height)?,
            int("width", self.width)?,
            int("patch", self.patch)?,
            int("grid", self.grid.0)?,
            int("grid", self.grid.1)?,
        ])
    }
}

/// Images (batch, 3, H, W) → patch rows (batch·Np, 3·p·p).
pub fn im2col_f32(
    gpu: &dyn DeviceApi,
    x: &View<f32>,
    cols: &mut ViewMut<f32>,
    g: PatchGeometry,
) -> Result<()> {
    need("im2col.x", x.len(), g.image_len())?;
    need("im2col.cols", cols.len(), g.cols_len())?;
    let v = g.ints()?;
    launch(
        gpu,
        KernelFile::PatchEmbed,
        "im2col_f32",
        elems_cfg(g.cols_len()),
        &[
            KArg::Ptr(x.ptr()),
            KArg::Ptr(cols.ptr()),
            KArg::I32(v[0]),
            KArg::I32(v[1]),
            KArg::I32(v[2]),
            KArg::I32(v[3]),
            KArg::I32(v[4]),
            KArg::I32(v[5]),
        ],
    )
}

/// Patch-row gradients → image gradients (batch, 3, H, W).
pub fn col2im_f32(
    gpu: &dyn DeviceApi,
    cols: &View<f32>,
    x: &mut ViewMut<f32>,
    g: PatchGeometry,
) -> Result<()> {
    need("col2im.cols", cols.len(), g.cols_len())?;
    need("col2im.x", x.len(), g.image_len())?;
    let v = g.ints()?;
    launch(
        gpu,
        KernelFile::PatchEmbed,
        "col2im_f32",
        elems_cfg(g.image_len()),
        &[
            KArg::Ptr(cols.ptr()),
            KArg::Ptr(x.ptr()),
            KArg::I32(v[0]),
            KArg::I32(v[1]),
            KArg::I32(v[2]),
            KArg::I32(v[3]),
            KArg::I32(v[4]),
            KArg::I32(v[5]),
        ],
    )
}

/// Token rows (batch·T, D) from patch embeddings (batch·(T−1), D), CLS and positions.
#[allow(clippy::too_many_arguments)]
pub fn embed_tokens_f32(
    gpu: &dyn DeviceApi,
    emb: &View<f32>,
    patch_b: &View<f32>,
    cls: &View<f32>,
    pos: &View<f32>,
    xs: &mut ViewMut<f32>,
    batch: usize,
    tokens: usize,
    dim: usize,
) -> Result<()> {
    need("embed_tokens.emb", emb.len(), batch * (tokens - 1) * dim)?;
    need("embed_tokens.pos", pos.len(), tokens * dim)?;
    need("embed_tokens.xs", xs.len(), batch * tokens * dim)?;
    need("embed_tokens.cls", cls.len().min(patch_b.len()), dim)?;
    let (b, t, d) = (
        int("batch", batch)?,
        int("tokens", tokens)?,
        int("dim", dim)?,
    );
    launch(
        gpu,
        KernelFile::PatchEmbed,
        "embed_tokens_f32",
        elems_cfg(batch * tokens * dim),
        &[
            KArg::Ptr(emb.ptr()),
            KArg::Ptr(patch_b.ptr()),
            KArg::Ptr(cls.ptr()),
            KArg::Ptr(pos.ptr()),
            KArg::Ptr(xs.ptr()),
            KArg::I32(b),
            KArg::I32(t),
            KArg::I32(d),
        ],
    )
}

// --- ig.cu -----------------------------------------------------------------------

/// Which rows of the flattened (input, step) list a batch holds. The kernels read
/// the first row from a device scalar (`row0_at`, moved on by [`ig_advance_row0`])
/// so that every batch's launches are the same and a CUDA graph can replay them;
/// `row0` is the value it holds when the batch runs, for the bounds checks.
#[derive(Debug, Clone, Copy)]
pub struct PathRows {
    pub row0: usize,
    pub rows: usize,
    pub n_steps: usize,
    /// Entries of the α and weight tables; row `g` reads entry `g % period`
    /// ([`crate::ig::PathPoints`]).
    pub period: usize,
    /// Values per input (3·H·W).
    pub len: usize,
}

impl PathRows {
    fn n_inputs_touched(&self) -> usize {
        (self.row0 + self.rows).div_ceil(self.n_steps)
    }
}

/// Path points `b + α_g (x_j − b)` of the batch's rows.
pub fn ig_path_f32(
    gpu: &dyn DeviceApi,
    inputs: &View<f32>,
    baseline: &View<f32>,
    alphas: &View<f32>,
    out: &mut ViewMut<f32>,
    row0_at: &View<i32>,
    p: PathRows,
) -> Result<()> {
    need("ig_path.row0", row0_at.len(), 1)?;
    need("ig_path.inputs", inputs.len(), p.n_inputs_touched() * p.len)?;
    need("ig_path.baseline", baseline.len(), p.len)?;
    need("ig_path.alphas", alphas.len(), p.period)?;
    need("ig_path.out", out.len(), p.rows * p.len)?;
    let v = path_ints(p)?;
    launch(
        gpu,
        KernelFile::Ig,
        "ig_path_f32",
        elems_cfg(p.rows * p.len),
        &[
            KArg::Ptr(inputs.ptr()),
            KArg::Ptr(baseline.ptr()),
            KArg::Ptr(alphas.ptr()),
            KArg::Ptr(out.ptr()),
            KArg::Ptr(row0_at.ptr()),
            KArg::I32(v[0]),
            KArg::I32(v[1]),
            KArg::I32(v[2]),
            KArg::I32(v[3]),
        ],
    )
}

/// (rows, n_steps, period, len) as the kernels' ints; row0 must fit one too.
fn path_ints(p: PathRows) -> Result<[i32; 4]> {
    int("row0", p.row0 + p.rows)?;
    if p.n_steps == 0 || p.period == 0 {
        return Err(Error::param("n_steps", "path tables must not be empty"));
    }
    Ok([
        int("rows", p.rows)?,
        int("n_steps", p.n_steps)?,
        int("period", p.period)?,
        int("len", p.len)?,
    ])
}

/// `acc[j] += w_g·grad[r]` for the batch's rows.
pub fn ig_accumulate_f32(
    gpu: &dyn DeviceApi,
    grads: &View<f32>,
    weights: &View<f32>,
    acc: &mut ViewMut<f32>,
    row0_at: &View<i32>,
    p: PathRows,
) -> Result<()> {
    need("ig_accumulate.row0", row0_at.len(), 1)?;
    need("ig_accumulate.grads", grads.len(), p.rows * p.len)?;
    need("ig_accumulate.weights", weights.len(), p.period)?;
    need("ig_accumulate.acc", acc.len(), p.n_inputs_touched() * p.len)?;
    let v = path_ints(p)?;
    launch(
        gpu,
        KernelFile::Ig,
        "ig_accumulate_f32",
        elems_cfg(p.len),
        &[
            KArg::Ptr(grads.ptr()),
            KArg::Ptr(weights.ptr()),
            KArg::Ptr(acc.ptr()),
            KArg::Ptr(row0_at.ptr()),
            KArg::I32(v[0]),
            KArg::I32(v[1]),
            KArg::I32(v[2]),
            KArg::I32(v[3]),
        ],
    )
}

/// `*row0_at += rows`: the next batch's first row (the batch's last launch).
pub fn ig_advance_row0(gpu: &dyn DeviceApi, row0_at: &mut ViewMut<i32>, rows: usize) -> Result<()> {
    need("ig_advance_row0.row0", row0_at.len(), 1)?;
    launch(
        gpu,
        KernelFile::Ig,
        "ig_advance_row0",
        (1, 32),
        &[KArg::Ptr(row0_at.ptr()), KArg::I32(int("rows", rows)?)],
    )
}

/// `out = acc ⊙ (x − b)` (or `acc`).
#[allow(clippy::too_many_arguments)]
pub fn ig_finish_f32(
    gpu: &dyn DeviceApi,
    acc: &View<f32>,
    inputs: &View<f32>,
    baseline: &View<f32>,
    out: &mut ViewMut<f32>,
    n_inputs: usize,
    len: usize,
    multiply_by_inputs: bool,
) -> Result<()> {
    need("ig_finish.acc", acc.len(), n_inputs * len)?;
    need("ig_finish.inputs", inputs.len(), n_inputs * len)?;
    need("ig_finish.baseline", baseline.len(), len)?;
    need("ig_finish.out", out.len(), n_inputs * len)?;
    let (n, l, m) = (
        int("inputs", n_inputs)?,
        int("len", len)?,
        multiply_by_inputs as i32,
    );
    launch(
        gpu,
        KernelFile::Ig,
        "ig_finish_f32",
        elems_cfg(n_inputs * len),
        &[
            KArg::Ptr(acc.ptr()),
            KArg::Ptr(inputs.ptr()),
            KArg::Ptr(baseline.ptr()),
            KArg::Ptr(out.ptr()),
            KArg::I32(n),
            KArg::I32(l),
            KArg::I32(m),
        ],
    )
}

/// NoiseTunnel inputs `x + ε_s` for `samples` samples of the seeded generator.
pub fn nt_noise_f32(
    gpu: &dyn DeviceApi,
    x: &View<f32>,
    noisy: &mut ViewMut<f32>,
    seed: u64,
    stdev: f32,
    samples: usize,
    len: usize,
) -> Result<()> {
    need("nt_noise.x", x.len(), len)?;
    need("nt_noise.noisy", noisy.len(), samples * len)?;
    let (s, l) = (int("samples", samples)?, int("len", len)?);
    launch(
        gpu,
        KernelFile::Ig,
        "nt_noise_f32",
        elems_cfg(samples * len),
        &[
            KArg::Ptr(x.ptr()),
            KArg::Ptr(noisy.ptr()),
            KArg::U64(seed),
            KArg::F32(stdev),
            KArg::I32(s),
            KArg::I32(l),
        ],
    )
}

/// Strata one device thread shuffles (`ES_MAX_STRATA` of kernels/ig.cu): designs
/// with more are drawn on the host.
pub const MAX_DEVICE_STRATA: usize = 256;

/// NoiseTunnel inputs `x + ε_s` for `samples` samples of a variance-reduced design
/// (`ig::noise_design`), drawn on the device bit for bit as on the host.
pub fn nt_designed_f32(
    gpu: &dyn DeviceApi,
    x: &View<f32>,
    noisy: &mut ViewMut<f32>,
    (seed, stdev): (u64, f32),
    design: crate::ig::NoiseDesign,
    samples: usize,
    len: usize,
) -> Result<()> {
    use crate::ig::NoiseDesign;
    need("nt_designed.x", x.len(), len)?;
    need("nt_designed.noisy", noisy.len(), samples * len)?;
    let (code, strata) = match design {
        NoiseDesign::Antithetic => (1, 0),
        NoiseDesign::Stratified => (2, samples),
        NoiseDesign::StratifiedAntithetic => (3, samples.div_ceil(2)),
        NoiseDesign::Independent => {
            return Err(Error::Internal(
                "independent noise is drawn by nt_noise_f32".into(),
            ))
        }
    };
    if strata > MAX_DEVICE_STRATA {
        return Err(Error::Internal(format!(
            "{strata} strata; the device draws at most {MAX_DEVICE_STRATA}"
        )));
    }
    let (s, l) = (int("samples", samples)?, int("len", len)?);
    launch(
        gpu,
        KernelFile::Ig,
        "nt_designed_f32",
        elems_cfg(len),
        &[
            KArg::Ptr(x.ptr()),
            KArg::Ptr(noisy.ptr()),
            KArg::U64(seed),
            KArg::F32(stdev),
            KArg::I32(s),
            KArg::I32(l),
            KArg::I32(code),
        ],
    )
}

/// NoiseTunnel aggregation: `nt_type` 0 smoothgrad, 1 smoothgrad_sq, 2 vargrad.
pub fn nt_aggregate_f32(
    gpu: &dyn DeviceApi,
    per_sample: &View<f32>,
    out: &mut ViewMut<f32>,
    samples: usize,
    len: usize,
    nt_type: i32,
) -> Result<()> {
    need("nt_aggregate.per_sample", per_sample.len(), samples * len)?;
    need("nt_aggregate.out", out.len(), len)?;
    let (s, l) = (int("samples", samples)?, int("len", len)?);
    launch(
        gpu,
        KernelFile::Ig,
        "nt_aggregate_f32",
        elems_cfg(len),
        &[
            KArg::Ptr(per_sample.ptr()),
            KArg::Ptr(out.ptr()),
            KArg::I32(s),
            KArg::I32(l),
            KArg::I32(nt_type),
        ],
    )
}

// --- relevance.cu ------------------------------------------------------------------

/// `targets[0..rows)` ← `requested`, or the arg-max of row 0 of `logits` when `None`.
pub fn select_target_i32(
    gpu: &dyn DeviceApi,
    logits: &View<f32>,
    classes: usize,
    requested: Option<usize>,
    targets: &mut ViewMut<i32>,
    rows: usize,
) -> Result<()> {
    need("select_target.logits", logits.len(), classes.max(1))?;
    need("select_target.targets", targets.len(), rows)?;
    let requested = match requested {
        Some(t) if t < classes => int("target", t)?,
        Some(t) => {
            return Err(Error::param(
                "target",
                format!("class {t} does not exist ({classes} classes)"),
            ))
        }
        None => -1,
    };
    launch(
        gpu,
        KernelFile::Relevance,
        "select_target_i32",
        (1, ROW_BLOCK),
        &[
            KArg::Ptr(logits.ptr()),
            KArg::I32(int("classes", classes)?),
            KArg::I32(requested),
            KArg::Ptr(targets.ptr()),
            KArg::I32(int("rows", rows)?),
        ],
    )
}

/// (3, plane) → (plane) by `reduction` (`attr::relevance::reduce_channels`).
pub fn reduce_channels_f32(
    gpu: &dyn DeviceApi,
    attr: &View<f32>,
    out: &mut ViewMut<f32>,
    plane: usize,
    reduction: crate::ig::Reduction,
) -> Result<()> {
    use crate::ig::Reduction;
    need("reduce_channels.attr", attr.len(), 3 * plane)?;
    need("reduce_channels.out", out.len(), plane)?;
    let mode = match reduction {
        Reduction::Sum => 0,
        Reduction::AbsSum => 1,
        Reduction::Positive => 2,
        Reduction::SumAbs => 3,
    };
    launch(
        gpu,
        KernelFile::Relevance,
        "reduce_channels_f32",
        elems_cfg(plane),
        &[
            KArg::Ptr(attr.ptr()),
            KArg::Ptr(out.ptr()),
            KArg::I32(int("plane", plane)?),
            KArg::I32(mode),
        ],
    )
}

/// One axis (0: along rows, 1: along columns) of the separable Gaussian blur of an
/// (h, w) map with mirrored borders.
pub fn blur_axis_f32(
    gpu: &dyn DeviceApi,
    input: &View<f32>,
    out: &mut ViewMut<f32>,
    taps: &View<f32>,
    (h, w): (usize, usize),
    axis: usize,
) -> Result<()> {
    need("blur.in", input.len(), h * w)?;
    need("blur.out", out.len(), h * w)?;
    if taps.is_empty() || taps.len().is_multiple_of(2) || axis > 1 {
        return Err(Error::Internal(format!(
            "blur: {} taps along axis {axis}",
            taps.len()
        )));
    }
    launch(
        gpu,
        KernelFile::Relevance,
        "blur_axis_f32",
        elems_cfg(h * w),
        &[
            KArg::Ptr(input.ptr()),
            KArg::Ptr(out.ptr()),
            KArg::Ptr(taps.ptr()),
            KArg::I32(int("taps", taps.len())?),
            KArg::I32(int("height", h)?),
            KArg::I32(int("width", w)?),
            KArg::I32(axis as i32),
        ],
    )
}

/// `v` ← (v − min)/(max − min), or zeros for a constant map; `lohi` (2 values) is
/// scratch that ends up holding (min, max).
pub fn min_max_f32(
    gpu: &dyn DeviceApi,
    v: &mut ViewMut<f32>,
    lohi: &mut ViewMut<f32>,
    n: usize,
) -> Result<()> {
    need("min_max.v", v.len(), n)?;
    need("min_max.lohi", lohi.len(), 2)?;
    let len = int("len", n)?;
    launch(
        gpu,
        KernelFile::Relevance,
        "min_max_f32",
        (1, ELEM_BLOCK),
        &[KArg::Ptr(v.ptr()), KArg::I32(len), KArg::Ptr(lohi.ptr())],
    )?;
    launch(
        gpu,
        KernelFile::Relevance,
        "min_max_scale_f32",
        elems_cfg(n),
        &[KArg::Ptr(v.ptr()), KArg::I32(len), KArg::Ptr(lohi.ptr())],
    )
}

// --- GEMM --------------------------------------------------------------------------

/// A row-major GEMM operand: rows `ld` floats apart, used transposed when `t`.
pub struct Operand<'v, 'a> {
    pub data: &'v View<'a, f32>,
    pub ld: usize,
    pub t: bool,
}

/// A strided batch of GEMMs (`count` = 1 for a single one); strides in floats.
#[derive(Debug, Clone, Copy)]
pub struct Batch {
    pub count: usize,
    pub stride_a: usize,
    pub stride_b: usize,
    pub stride_c: usize,
}

impl Batch {
    pub const ONE: Batch = Batch {
        count: 1,
        stride_a: 0,
        stride_b: 0,
        stride_c: 0,
    };
}

/// Row-major `C (m, n) = op(A) (m, k) · op(B) (k, n) + beta·C`, C rows `ldc` apart,
/// f32 in and out on the device's BLAS, A and B rounded to `precision` (f32: cuBLAS
/// `sgemm`, default math mode, no TF32 unless NVIDIA_TF32_OVERRIDE says so; TF32 and
/// bf16: tensor cores, f32 accumulation).
///
/// cuBLAS is column-major: [`row_major_gemm`] turns the call around (tested on the
/// CPU in `backend::blas_layout`), so no data moves.
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    gpu: &dyn DeviceApi,
    precision: Precision,
    m: usize,
    n: usize,
    k: usize,
    a: Operand,
    b: Operand,
    c: &mut ViewMut<f32>,
    ldc: usize,
    beta: f32,
    batch: Batch,
) -> Result<()> {
    let last = batch.count.saturating_sub(1);
    let a_span = if a.t {
        span(k, m, a.ld)
    } else {
        span(m, k, a.ld)
    };
    let b_span = if b.t {
        span(n, k, b.ld)
    } else {
        span(k, n, b.ld)
    };
    need("gemm.a", a.data.len(), a_span + last * batch.stride_a)?;
    need("gemm.b", b.data.len(), b_span + last * batch.stride_b)?;
    need("gemm.c", c.len(), span(m, n, ldc) + last * batch.stride_c)?;
    if batch.count == 0 || m == 0 || n == 0 {
        return Ok(());
    }
    let mut g = row_major_gemm(
        m,
        n,
        k,
        RowMajor {
            ld: a.ld,
            t: a.t,
            stride: batch.stride_a,
        },
        RowMajor {
            ld: b.ld,
            t: b.t,
            stride: batch.stride_b,
        },
        ldc,
        batch.count,
        batch.stride_c,
    );
    g.precision = precision;
    // SAFETY: the spans checked above cover every element the call reads (A, B) and
    // writes (C) for these sizes, leading dimensions and batch strides; C is a
    // unique borrow, so it overlaps neither A nor B.
    unsafe { gpu.gemm(&g, b.data.ptr(), a.data.ptr(), c.ptr(), beta) }
}

// --- Layer GEMMs ---------------------------------------------------------------------
//
// The ViT's products in the row-major terms of [`gemm`], so that the engine's block
// forward and backward name layers, not operand layouts. Linear weights are
// PyTorch's W (out, in), row-major. Attention operands are per-head column blocks of
// wider row-major matrices: head h of q|k|v (rows 3·D apart) or of the concatenated
// heads (rows D apart) starts at column h·hd, while the per-head (T, T) score
// matrices are consecutive; one strided batch covers the heads of one image.

/// `y (rows, out) = x (rows, in)·Wᵀ`, or `y +=` that when `accumulate` (a residual
/// branch); x rows `in` apart, y rows `out` apart. With `bias`, adds it to every row
/// of y; `None` leaves the bias to a fused kernel (GELU, token embedding).
#[allow(clippy::too_many_arguments)]
pub fn linear(
    gpu: &dyn DeviceApi,
    precision: Precision,
    x: &View<f32>,
    w: &View<f32>,
    bias: Option<&View<f32>>,
    y: &mut ViewMut<f32>,
    rows: usize,
    inp: usize,
    out: usize,
    accumulate: bool,
) -> Result<()> {
    gemm(
        gpu,
        precision,
        rows,
        out,
        inp,
        Operand {
            data: x,
            ld: inp,
            t: false,
        },
        Operand {
            data: w,
            ld: inp,
            t: true,
        },
        y,
        out,
        if accumulate { 1.0 } else { 0.0 },
        Batch::ONE,
    )?;
    match bias {
        Some(b) => add_bias_rows_f32(gpu, y, b, rows, out),
        None => Ok(()),
    }
}

/// Input gradient of [`linear`]: `dx (rows, in) = dy (rows, out)·W`, dy rows `dy_ld`
/// apart, dx rows `in` apart. `repeat` runs it once per image with those strides
/// (the patch rows of each image); [`Batch::ONE`] otherwise.
#[allow(clippy::too_many_arguments)]
pub fn linear_backward_input(
    gpu: &dyn DeviceApi,
    precision: Precision,
    dy: &View<f32>,
    dy_ld: usize,
    w: &View<f32>,
    dx: &mut ViewMut<f32>,
    rows: usize,
    inp: usize,
    out: usize,
    repeat: Batch,
) -> Result<()> {
    gemm(
        gpu,
        precision,
        rows,
        inp,
        out,
        Operand {
            data: dy,
            ld: dy_ld,
            t: false,
        },
        Operand {
            data: w,
            ld: inp,
            t: false,
        },
        dx,
        inp,
        0.0,
        repeat,
    )
}

/// Per head h of one image: `C_h (t, t) = A_h (t, hd)·B_h (t, hd)ᵀ`, with A_h, B_h
/// column block h of row-major matrices whose rows are `lda`, `ldb` apart and C_h
/// the consecutive (t, t) matrices of `c`: the scores Q·Kᵀ of a tapped layer
/// (the engine's attention is otherwise fused, kernels/attention.cu).
#[allow(clippy::too_many_arguments)]
pub fn heads_a_bt(
    gpu: &dyn DeviceApi,
    precision: Precision,
    a: &View<f32>,
    lda: usize,
    b: &View<f32>,
    ldb: usize,
    c: &mut ViewMut<f32>,
    t: usize,
    hd: usize,
    heads: usize,
) -> Result<()> {
    gemm(
        gpu,
        precision,
        t,
        t,
        hd,
        Operand {
            data: a,
            ld: lda,
            t: false,
        },
        Operand {
            data: b,
            ld: ldb,
            t: true,
        },
        c,
        t,
        0.0,
        Batch {
            count: heads,
            stride_a: hd,
            stride_b: hd,
            stride_c: t * t,
        },
    )
}
