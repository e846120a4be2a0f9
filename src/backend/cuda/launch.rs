//! One typed wrapper per kernel of `kernels/` (nothing else launches), plus the
//! row-major GEMM on cuBLAS. Each wrapper checks that its buffers hold what the
//! launch will touch, so an unsafe launch never reads or writes out of bounds.
//!
//! Buffers are passed as views, so callers can address rows inside a larger buffer
//! (the CLS rows of a batch, one head's columns of q|k|v).

use cudarc::cublas::sys::cublasOperation_t;
use cudarc::cublas::{Gemm, GemmConfig, StridedBatchedConfig};
use cudarc::driver::{CudaView, CudaViewMut, LaunchConfig, PushKernelArg};

use super::device::{cuda_err, Gpu};
use super::modules::KernelFile;
use crate::backend::blas_layout::{row_major_gemm, span, RowMajor};
use crate::error::{Error, Result};

/// Threads per block of the row kernels (one block per row).
const ROW_BLOCK: u32 = 128;
/// Threads per block of the element-wise kernels.
const ELEM_BLOCK: u32 = 256;

fn rows_cfg(rows: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (rows as u32, 1, 1),
        block_dim: (ROW_BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// A grid-stride launch: enough blocks to fill a large GPU, at most one per 256 elements.
fn elems_cfg(n: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (n.div_ceil(ELEM_BLOCK as usize).clamp(1, 8192) as u32, 1, 1),
        block_dim: (ELEM_BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
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

fn run(mut args: cudarc::driver::LaunchArgs<'_>, cfg: LaunchConfig) -> Result<()> {
    // SAFETY: every wrapper below pushes arguments in the order and with the types of
    // its kernel's signature in kernels/*.cu, and has checked (with `need`) that each
    // buffer covers every element the kernel touches for the sizes it passes.
    unsafe { args.launch(cfg) }.map_err(cuda_err("kernel launch"))?;
    Ok(())
}

// --- norm.cu ---------------------------------------------------------------------

/// LayerNorm of `rows` rows (x rows `x_ld` apart, y rows `y_ld` apart); saves packed
/// x̂ (rows, cols) and 1/σ (rows).
#[allow(clippy::too_many_arguments)]
pub fn layer_norm_f32(
    gpu: &Gpu,
    x: &CudaView<f32>,
    x_ld: usize,
    gamma: &CudaView<f32>,
    beta: &CudaView<f32>,
    y: &mut CudaViewMut<f32>,
    y_ld: usize,
    xhat: &mut CudaViewMut<f32>,
    rstd: &mut CudaViewMut<f32>,
    rows: usize,
    cols: usize,
    eps: f32,
) -> Result<()> {
    need("layer_norm.x", x.len(), span(rows, cols, x_ld))?;
    need("layer_norm.y", y.len(), span(rows, cols, y_ld))?;
    need("layer_norm.xhat", xhat.len(), rows * cols)?;
    need("layer_norm.rstd", rstd.len(), rows)?;
    need("layer_norm.gamma", gamma.len().min(beta.len()), cols)?;
    let f = gpu.function(KernelFile::Norm, "layer_norm_f32")?;
    let (x_ld, y_ld, r, c) = (
        int("ld", x_ld)?,
        int("ld", y_ld)?,
        int("rows", rows)?,
        int("cols", cols)?,
    );
    let mut a = gpu.stream.launch_builder(&f);
    a.arg(x)
        .arg(&x_ld)
        .arg(gamma)
        .arg(beta)
        .arg(y)
        .arg(&y_ld)
        .arg(xhat)
        .arg(rstd);
    a.arg(&r).arg(&c).arg(&eps);
    run(a, rows_cfg(rows))
}

/// LayerNorm input gradient, added to `dx` when `accumulate`.
#[allow(clippy::too_many_arguments)]
pub fn layer_norm_bwd_f32(
    gpu: &Gpu,
    g: &CudaView<f32>,
    g_ld: usize,
    gamma: &CudaView<f32>,
    xhat: &CudaView<f32>,
    rstd: &CudaView<f32>,
    dx: &mut CudaViewMut<f32>,
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
    let f = gpu.function(KernelFile::Norm, "layer_norm_bwd_f32")?;
    let (g_ld, dx_ld, r, c) = (
        int("ld", g_ld)?,
        int("ld", dx_ld)?,
        int("rows", rows)?,
        int("cols", cols)?,
    );
    let acc = accumulate as i32;
    let mut a = gpu.stream.launch_builder(&f);
    a.arg(g)
        .arg(&g_ld)
        .arg(gamma)
        .arg(xhat)
        .arg(rstd)
        .arg(dx)
        .arg(&dx_ld);
    a.arg(&r).arg(&c).arg(&acc);
    run(a, rows_cfg(rows))
}

// --- softmax.cu ------------------------------------------------------------------

/// In place: each row of `s` (rows, cols) ← softmax(scale·row).
pub fn softmax_scale_f32(
    gpu: &Gpu,
    s: &mut CudaViewMut<f32>,
    rows: usize,
    cols: usize,
    scale: f32,
) -> Result<()> {
    need("softmax.s", s.len(), rows * cols)?;
    let f = gpu.function(KernelFile::Softmax, "softmax_scale_f32")?;
    let (r, c) = (int("rows", rows)?, int("cols", cols)?);
    let mut a = gpu.stream.launch_builder(&f);
    a.arg(s).arg(&r).arg(&c).arg(&scale);
    run(a, rows_cfg(rows))
}

/// In place: `dp ← scale·p ⊙ (dp − ⟨dp, p⟩)` per row.
pub fn softmax_bwd_f32(
    gpu: &Gpu,
    p: &CudaView<f32>,
    dp: &mut CudaViewMut<f32>,
    rows: usize,
    cols: usize,
    scale: f32,
) -> Result<()> {
    need("softmax_bwd.p", p.len(), rows * cols)?;
    need("softmax_bwd.dp", dp.len(), rows * cols)?;
    let f = gpu.function(KernelFile::Softmax, "softmax_bwd_f32")?;
    let (r, c) = (int("rows", rows)?, int("cols", cols)?);
    let mut a = gpu.stream.launch_builder(&f);
    a.arg(p).arg(dp).arg(&r).arg(&c).arg(&scale);
    run(a, rows_cfg(rows))
}

// --- gelu.cu ---------------------------------------------------------------------

/// In place: `h ← GELU(h + bias)`, `dgelu ← GELU'(h + bias)`.
pub fn bias_gelu_f32(
    gpu: &Gpu,
    h: &mut CudaViewMut<f32>,
    bias: &CudaView<f32>,
    dgelu: &mut CudaViewMut<f32>,
    rows: usize,
    cols: usize,
) -> Result<()> {
    need("bias_gelu.h", h.len(), rows * cols)?;
    need("bias_gelu.dgelu", dgelu.len(), rows * cols)?;
    need("bias_gelu.bias", bias.len(), cols)?;
    let f = gpu.function(KernelFile::Gelu, "bias_gelu_f32")?;
    let (r, c) = (int("rows", rows)?, int("cols", cols)?);
    let mut a = gpu.stream.launch_builder(&f);
    a.arg(h).arg(bias).arg(dgelu).arg(&r).arg(&c);
    run(a, elems_cfg(rows * cols))
}

/// In place: `g ← g·dgelu` over `n` values.
pub fn gelu_bwd_f32(
    gpu: &Gpu,
    dgelu: &CudaView<f32>,
    g: &mut CudaViewMut<f32>,
    n: usize,
) -> Result<()> {
    need("gelu_bwd.dgelu", dgelu.len(), n)?;
    need("gelu_bwd.g", g.len(), n)?;
    let f = gpu.function(KernelFile::Gelu, "gelu_bwd_f32")?;
    let n32 = int("n", n)?;
    let mut a = gpu.stream.launch_builder(&f);
    a.arg(dgelu).arg(g).arg(&n32);
    run(a, elems_cfg(n))
}

// --- elementwise.cu --------------------------------------------------------------

/// `x[r, c] += bias[c]`.
pub fn add_bias_rows_f32(
    gpu: &Gpu,
    x: &mut CudaViewMut<f32>,
    bias: &CudaView<f32>,
    rows: usize,
    cols: usize,
) -> Result<()> {
    need("add_bias_rows.x", x.len(), rows * cols)?;
    need("add_bias_rows.bias", bias.len(), cols)?;
    let f = gpu.function(KernelFile::Elementwise, "add_bias_rows_f32")?;
    let (r, c) = (int("rows", rows)?, int("cols", cols)?);
    let mut a = gpu.stream.launch_builder(&f);
    a.arg(x).arg(bias).arg(&r).arg(&c);
    run(a, elems_cfg(rows * cols))
}

/// `d_features[b] = head_w[targets[b]]`; targets must be < classes (checked by the caller).
pub fn head_rows_f32(
    gpu: &Gpu,
    head_w: &CudaView<f32>,
    targets: &CudaView<i32>,
    d_features: &mut CudaViewMut<f32>,
    batch: usize,
    in_dim: usize,
) -> Result<()> {
    need("head_rows.targets", targets.len(), batch)?;
    need("head_rows.d_features", d_features.len(), batch * in_dim)?;
    let f = gpu.function(KernelFile::Elementwise, "head_rows_f32")?;
    let (b, d) = (int("batch", batch)?, int("in_dim", in_dim)?);
    let mut a = gpu.stream.launch_builder(&f);
    a.arg(head_w).arg(targets).arg(d_features).arg(&b).arg(&d);
    run(a, elems_cfg(batch * in_dim))
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
    gpu: &Gpu,
    x: &CudaView<f32>,
    cols: &mut CudaViewMut<f32>,
    g: PatchGeometry,
) -> Result<()> {
    need("im2col.x", x.len(), g.image_len())?;
    need("im2col.cols", cols.len(), g.cols_len())?;
    let f = gpu.function(KernelFile::PatchEmbed, "im2col_f32")?;
    let v = g.ints()?;
    let mut a = gpu.stream.launch_builder(&f);
    a.arg(x).arg(cols);
    for i in &v {
        a.arg(i);
    }
    run(a, elems_cfg(g.cols_len()))
}

/// Patch-row gradients → image gradients (batch, 3, H, W).
pub fn col2im_f32(
    gpu: &Gpu,
    cols: &CudaView<f32>,
    x: &mut CudaViewMut<f32>,
    g: PatchGeometry,
) -> Result<()> {
    need("col2im.cols", cols.len(), g.cols_len())?;
    need("col2im.x", x.len(), g.image_len())?;
    let f = gpu.function(KernelFile::PatchEmbed, "col2im_f32")?;
    let v = g.ints()?;
    let mut a = gpu.stream.launch_builder(&f);
    a.arg(cols).arg(x);
    for i in &v {
        a.arg(i);
    }
    run(a, elems_cfg(g.image_len()))
}

/// Token rows (batch·T, D) from patch embeddings (batch·(T−1), D), CLS and positions.
#[allow(clippy::too_many_arguments)]
pub fn embed_tokens_f32(
    gpu: &Gpu,
    emb: &CudaView<f32>,
    patch_b: &CudaView<f32>,
    cls: &CudaView<f32>,
    pos: &CudaView<f32>,
    xs: &mut CudaViewMut<f32>,
    batch: usize,
    tokens: usize,
    dim: usize,
) -> Result<()> {
    need("embed_tokens.emb", emb.len(), batch * (tokens - 1) * dim)?;
    need("embed_tokens.pos", pos.len(), tokens * dim)?;
    need("embed_tokens.xs", xs.len(), batch * tokens * dim)?;
    need("embed_tokens.cls", cls.len().min(patch_b.len()), dim)?;
    let f = gpu.function(KernelFile::PatchEmbed, "embed_tokens_f32")?;
    let (b, t, d) = (
        int("batch", batch)?,
        int("tokens", tokens)?,
        int("dim", dim)?,
    );
    let mut a = gpu.stream.launch_builder(&f);
    a.arg(emb)
        .arg(patch_b)
        .arg(cls)
        .arg(pos)
        .arg(xs)
        .arg(&b)
        .arg(&t)
        .arg(&d);
    run(a, elems_cfg(batch * tokens * dim))
}

// --- ig.cu -----------------------------------------------------------------------

/// Which rows of the flattened (input, step) list a batch holds.
#[derive(Debug, Clone, Copy)]
pub struct PathRows {
    pub row0: usize,
    pub rows: usize,
    pub n_steps: usize,
    /// Values per input (3·H·W).
    pub len: usize,
}

impl PathRows {
    fn n_inputs_touched(&self) -> usize {
        (self.row0 + self.rows).div_ceil(self.n_steps)
    }
}

/// Path points `b + α_k (x_j − b)` of the batch's rows.
pub fn ig_path_f32(
    gpu: &Gpu,
    inputs: &CudaView<f32>,
    baseline: &CudaView<f32>,
    alphas: &CudaView<f32>,
    out: &mut CudaViewMut<f32>,
    p: PathRows,
) -> Result<()> {
    need("ig_path.inputs", inputs.len(), p.n_inputs_touched() * p.len)?;
    need("ig_path.baseline", baseline.len(), p.len)?;
    need("ig_path.alphas", alphas.len(), p.n_steps)?;
    need("ig_path.out", out.len(), p.rows * p.len)?;
    let f = gpu.function(KernelFile::Ig, "ig_path_f32")?;
    let v = [
        int("row0", p.row0)?,
        int("rows", p.rows)?,
        int("n_steps", p.n_steps)?,
        int("len", p.len)?,
    ];
    let mut a = gpu.stream.launch_builder(&f);
    a.arg(inputs).arg(baseline).arg(alphas).arg(out);
    for i in &v {
        a.arg(i);
    }
    run(a, elems_cfg(p.rows * p.len))
}

/// `acc[j] += w_k·grad[r]` for the batch's rows.
pub fn ig_accumulate_f32(
    gpu: &Gpu,
    grads: &CudaView<f32>,
    weights: &CudaView<f32>,
    acc: &mut CudaViewMut<f32>,
    p: PathRows,
) -> Result<()> {
    need("ig_accumulate.grads", grads.len(), p.rows * p.len)?;
    need("ig_accumulate.weights", weights.len(), p.n_steps)?;
    need("ig_accumulate.acc", acc.len(), p.n_inputs_touched() * p.len)?;
    let f = gpu.function(KernelFile::Ig, "ig_accumulate_f32")?;
    let v = [
        int("row0", p.row0)?,
        int("rows", p.rows)?,
        int("n_steps", p.n_steps)?,
        int("len", p.len)?,
    ];
    let mut a = gpu.stream.launch_builder(&f);
    a.arg(grads).arg(weights).arg(acc);
    for i in &v {
        a.arg(i);
    }
    run(a, elems_cfg(p.len))
}

/// `out = acc ⊙ (x − b)` (or `acc`).
#[allow(clippy::too_many_arguments)]
pub fn ig_finish_f32(
    gpu: &Gpu,
    acc: &CudaView<f32>,
    inputs: &CudaView<f32>,
    baseline: &CudaView<f32>,
    out: &mut CudaViewMut<f32>,
    n_inputs: usize,
    len: usize,
    multiply_by_inputs: bool,
) -> Result<()> {
    need("ig_finish.acc", acc.len(), n_inputs * len)?;
    need("ig_finish.inputs", inputs.len(), n_inputs * len)?;
    need("ig_finish.baseline", baseline.len(), len)?;
    need("ig_finish.out", out.len(), n_inputs * len)?;
    let f = gpu.function(KernelFile::Ig, "ig_finish_f32")?;
    let (n, l, m) = (
        int("inputs", n_inputs)?,
        int("len", len)?,
        multiply_by_inputs as i32,
    );
    let mut a = gpu.stream.launch_builder(&f);
    a.arg(acc)
        .arg(inputs)
        .arg(baseline)
        .arg(out)
        .arg(&n)
        .arg(&l)
        .arg(&m);
    run(a, elems_cfg(n_inputs * len))
}

/// NoiseTunnel inputs `x + ε_s` for `samples` samples of the seeded generator.
pub fn nt_noise_f32(
    gpu: &Gpu,
    x: &CudaView<f32>,
    noisy: &mut CudaViewMut<f32>,
    seed: u64,
    stdev: f32,
    samples: usize,
    len: usize,
) -> Result<()> {
    need("nt_noise.x", x.len(), len)?;
    need("nt_noise.noisy", noisy.len(), samples * len)?;
    let f = gpu.function(KernelFile::Ig, "nt_noise_f32")?;
    let (s, l) = (int("samples", samples)?, int("len", len)?);
    let mut a = gpu.stream.launch_builder(&f);
    a.arg(x).arg(noisy).arg(&seed).arg(&stdev).arg(&s).arg(&l);
    run(a, elems_cfg(samples * len))
}

/// NoiseTunnel aggregation: `nt_type` 0 smoothgrad, 1 smoothgrad_sq, 2 vargrad.
pub fn nt_aggregate_f32(
    gpu: &Gpu,
    per_sample: &CudaView<f32>,
    out: &mut CudaViewMut<f32>,
    samples: usize,
    len: usize,
    nt_type: i32,
) -> Result<()> {
    need("nt_aggregate.per_sample", per_sample.len(), samples * len)?;
    need("nt_aggregate.out", out.len(), len)?;
    let f = gpu.function(KernelFile::Ig, "nt_aggregate_f32")?;
    let (s, l) = (int("samples", samples)?, int("len", len)?);
    let mut a = gpu.stream.launch_builder(&f);
    a.arg(per_sample).arg(out).arg(&s).arg(&l).arg(&nt_type);
    run(a, elems_cfg(len))
}

// --- GEMM --------------------------------------------------------------------------

/// A row-major GEMM operand: rows `ld` floats apart, used transposed when `t`.
pub struct Operand<'v, 'a> {
    pub data: &'v CudaView<'a, f32>,
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
/// in f32 on cuBLAS (default math mode: no TF32 unless NVIDIA_TF32_OVERRIDE says so).
///
/// cuBLAS is column-major: [`row_major_gemm`] turns the call around (tested on the
/// CPU in `backend::blas_layout`), so no data moves.
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    gpu: &Gpu,
    m: usize,
    n: usize,
    k: usize,
    a: Operand,
    b: Operand,
    c: &mut CudaViewMut<f32>,
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
    let g = row_major_gemm(
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
    let op = |t: bool| {
        if t {
            cublasOperation_t::CUBLAS_OP_T
        } else {
            cublasOperation_t::CUBLAS_OP_N
        }
    };
    let cfg = GemmConfig {
        transa: op(g.trans_a),
        transb: op(g.trans_b),
        m: int("gemm n", g.m)?,
        n: int("gemm m", g.n)?,
        k: int("gemm k", g.k)?,
        alpha: 1.0f32,
        lda: int("gemm ld", g.lda)?,
        ldb: int("gemm ld", g.ldb)?,
        beta,
        ldc: int("gemm ld", g.ldc)?,
    };
    let blas_err =
        |e: cudarc::cublas::result::CublasError| Error::Cuda(format!("cuBLAS sgemm: {e:?}"));
    // SAFETY: the spans checked above cover every element cuBLAS reads (A, B) and
    // writes (C) for these sizes, leading dimensions and batch strides.
    unsafe {
        if batch.count == 1 {
            gpu.blas.gemm(cfg, b.data, a.data, c).map_err(blas_err)
        } else {
            let cfg = StridedBatchedConfig {
                gemm: cfg,
                batch_size: int("gemm batch", g.batch)?,
                stride_a: g.stride_a as i64,
                stride_b: g.stride_b as i64,
                stride_c: g.stride_c as i64,
            };
            gpu.blas
                .gemm_strided_batched(cfg, b.data, a.data, c)
                .map_err(blas_err)
        }
    }
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
    gpu: &Gpu,
    x: &CudaView<f32>,
    w: &CudaView<f32>,
    bias: Option<&CudaView<f32>>,
    y: &mut CudaViewMut<f32>,
    rows: usize,
    inp: usize,
    out: usize,
    accumulate: bool,
) -> Result<()> {
    gemm(
        gpu,
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
    gpu: &Gpu,
    dy: &CudaView<f32>,
    dy_ld: usize,
    w: &CudaView<f32>,
    dx: &mut CudaViewMut<f32>,
    rows: usize,
    inp: usize,
    out: usize,
    repeat: Batch,
) -> Result<()> {
    gemm(
        gpu,
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
/// the consecutive (t, t) matrices of `c`. Scores Q·Kᵀ; in the backward dP = dO·Vᵀ.
#[allow(clippy::too_many_arguments)]
pub fn heads_a_bt(
    gpu: &Gpu,
    a: &CudaView<f32>,
    lda: usize,
    b: &CudaView<f32>,
    ldb: usize,
    c: &mut CudaViewMut<f32>,
    t: usize,
    hd: usize,
    heads: usize,
) -> Result<()> {
    gemm(
        gpu,
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

/// Per head h of one image: `C_h (t, hd) = op(P_h)·B_h`, with P_h the consecutive
/// (t, t) matrices of `p` (transposed when `p_t`), B_h and C_h column block h of
/// row-major matrices whose rows are `ldb`, `ldc` apart. O = P·V; in the backward
/// dV = Pᵀ·dO, dQ = dS·K, dK = dSᵀ·Q.
#[allow(clippy::too_many_arguments)]
pub fn heads_p_b(
    gpu: &Gpu,
    p: &CudaView<f32>,
    p_t: bool,
    b: &CudaView<f32>,
    ldb: usize,
    c: &mut CudaViewMut<f32>,
    ldc: usize,
    t: usize,
    hd: usize,
    heads: usize,
) -> Result<()> {
    gemm(
        gpu,
        t,
        hd,
        t,
        Operand {
            data: p,
            ld: t,
            t: p_t,
        },
        Operand {
            data: b,
            ld: ldb,
            t: false,
        },
        c,
        ldc,
        0.0,
        Batch {
            count: heads,
            stride_a: t * t,
            stride_b: hd,
            stride_c: hd,
        },
    )
}
