//! [`Engine`] on a CUDA device (a GPU, or the emulated device of feature
//! `cuda-emu`, through [`DeviceApi`]): the ViT forward and input-gradient backward of
//! `backend::cpu::{forward, backward}`, with the same operation order, built from the
//! kernels of `kernels/` and cuBLAS GEMMs; the weights are uploaded once per engine.
//! Attention is fused (`kernels/attention.cu`: online softmax, only the row
//! log-sum-exp kept, P recomputed in the backward), so its rounding differs from the
//! CPU's materialised softmax within the parity tolerances; only `block_taps` builds
//! the (T, T) probabilities, for the tapped layer (docs/cuda_emulation.md §1.2).
//!
//! Every per-call buffer is carved from one workspace arena per engine
//! ([`super::workspace`]), never zeroed but for the buffers that are accumulated into.
//!
//! Also a device-side NoiseTunnel + Integrated Gradients
//! ([`CudaEngine::noise_tunnel_ig`]): the noisy inputs, path points, gradients and
//! their weighted sums stay on the device; only the aggregated attribution comes back.
//! Its loop (`ig_loop`) replays each full batch as a CUDA graph.
//!
//! Supported heads: the CLS-token heads (timm `head.*`, DINO last-blocks CLS). The
//! DINO avgpool head runs on the CPU backend.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use ndarray::{Array2, Array4, ArrayView4};

use super::api::{download_together, Counters, Dev, DevBuf, DeviceApi, Pooled, View};
use super::device::{guarded, CudarcDevice};
use super::launch::{self as k, AttnShape, Batch, PatchGeometry, ATTN_MAX_HEAD_DIM};
use super::workspace::{Carver, Sizer, Workspace};

mod ig_loop;
mod relevance;
use crate::backend::{input, tap_layer, BlockTaps, Device, Engine, Precision};
use crate::error::{Error, Result};
use crate::ig::{
    attribution_sum, convergence_delta, make_noise, path_points, quadrature, IgConfig, Noise,
    NoiseDesign, NoiseTunnelConfig, NtOutput, NtType, Progress,
};
use crate::model::{HeadKind, Vit};
use ig_loop::{graphs_from_env, IgCall, IgGraph};

struct DeviceBlock {
    norm1_w: DevBuf<f32>,
    norm1_b: DevBuf<f32>,
    qkv_w: DevBuf<f32>,
    qkv_b: DevBuf<f32>,
    proj_w: DevBuf<f32>,
    proj_b: DevBuf<f32>,
    norm2_w: DevBuf<f32>,
    norm2_b: DevBuf<f32>,
    fc1_w: DevBuf<f32>,
    fc1_b: DevBuf<f32>,
    fc2_w: DevBuf<f32>,
    fc2_b: DevBuf<f32>,
}

struct DeviceWeights {
    patch_w: DevBuf<f32>,
    patch_b: DevBuf<f32>,
    cls: DevBuf<f32>,
    norm_w: DevBuf<f32>,
    norm_b: DevBuf<f32>,
    blocks: Vec<DeviceBlock>,
    /// (classes, in_dim) and (classes); absent without a head.
    head: Option<(DevBuf<f32>, DevBuf<f32>)>,
}

/// Per-block activations the backward needs (as `cpu::forward::BlockSaved`, but no
/// (T, T) probabilities: the fused attention keeps its output and each query row's
/// log-sum-exp, and its backward recomputes P from them).
struct Saved {
    xhat1: DevBuf<f32>,
    rstd1: DevBuf<f32>,
    qkv: DevBuf<f32>,
    /// Attention output, concatenated heads (M, D): the projection's input.
    attn_out: DevBuf<f32>,
    /// Log-sum-exp of each query row's scaled scores (batch, heads, T).
    lse: DevBuf<f32>,
    xhat2: DevBuf<f32>,
    rstd2: DevBuf<f32>,
    gelu_grad: DevBuf<f32>,
}

/// NoiseTunnel(IG) of one image, left on the device (in the workspace).
struct DeviceIg {
    /// The noisy inputs, baseline, sums and targets of the loop.
    call: IgCall,
    /// Each sample's attribution (samples, 3, H, W).
    per_sample: DevBuf<f32>,
    /// Their aggregate (3, H, W): the attribution.
    aggregated: DevBuf<f32>,
}

/// What a forward leaves on the device.
struct Forward {
    batch: usize,
    tokens: usize,
    geometry: PatchGeometry,
    blocks: Vec<Saved>,
    /// Final norms of the CLS rows read by the head: (x̂ (batch, D), 1/σ (batch)).
    head_norms: Vec<(DevBuf<f32>, DevBuf<f32>)>,
    /// (batch, classes) on the device: read back only by callers that need them, so
    /// the IG loop does not wait for the device once per batch.
    logits: DevBuf<f32>,
    classes: usize,
}

impl Forward {
    fn logits(&self) -> Result<Array2<f32>> {
        Array2::from_shape_vec((self.batch, self.classes), self.logits.download()?)
            .map_err(|e| Error::Internal(e.to_string()))
    }
}

/// Forward buffers every block overwrites: LN output (M, D), fc1/GELU output
/// (M, hidden).
struct BlockScratch {
    normed: DevBuf<f32>,
    act: DevBuf<f32>,
}

/// Backward buffers every block overwrites: (M, hidden), (M, D), (M, 3·D) and the
/// fused attention backward's D = rowsum(dO∘O) (batch, heads, T).
struct BackwardScratch {
    ga: DevBuf<f32>,
    gn: DevBuf<f32>,
    gqkv: DevBuf<f32>,
    delta: DevBuf<f32>,
}

/// A patch grid (rows, cols) and its interpolated positional table on the device.
type GridPositions = ((usize, usize), DevBuf<f32>);

/// The CUDA engine over a loaded model. Create it once per model: it uploads the
/// weights. Calls are serialised (one stream).
pub struct CudaEngine<'a> {
    vit: &'a Vit,
    gpu: Dev,
    weights: DeviceWeights,
    /// The interpolated positional table of the last grid seen, kept on the device:
    /// a scanner segments one image size, so every forward after the first uploads
    /// only its images.
    positions: Mutex<Option<GridPositions>>,
    busy: Mutex<()>,
    /// Every per-call buffer of a forward, backward or IG call (locked after `busy`).
    workspace: Mutex<Workspace>,
    /// The graph of one full IG batch, for the last layout it was captured for.
    ig_graph: Mutex<Option<IgGraph>>,
    /// Replay IG batches as CUDA graphs (default on; `EXPLAINSEG_CUDA_GRAPHS=0` or
    /// [`CudaEngine::set_graphs`] turns it off).
    graphs: AtomicBool,
    /// DenseCRF on the same device (its buffers are made at its first call).
    crf: super::CrfDevice,
    /// What every GEMM computes in ([`CudaEngine::with_precision`]).
    precision: Precision,
}

impl std::fmt::Debug for CudaEngine<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaEngine")
            .field("device", &self.gpu)
            .finish()
    }
}

/// The fused attention's shape for `batch` images of `t` tokens.
fn attn_shape(batch: usize, t: usize, heads: usize, head_dim: usize) -> AttnShape {
    AttnShape {
        batch,
        heads,
        tokens: t,
        head_dim,
    }
}

/// The fused attention kernels hold a row of up to [`ATTN_MAX_HEAD_DIM`] values per thread.
fn check_head_dim(vit: &Vit) -> Result<()> {
    let hd = vit.config.head_dim();
    if hd == 0 || hd > ATTN_MAX_HEAD_DIM {
        return Err(Error::param(
            "model",
            format!(
                "the CUDA engine's fused attention takes head dimensions up to {ATTN_MAX_HEAD_DIM}, this model's is {hd}; use --device cpu"
            ),
        ));
    }
    Ok(())
}

/// Number of head chunks (final-normed CLS rows of the last `n` blocks) a head reads.
fn cls_chunks(kind: HeadKind) -> Result<usize> {
    match kind {
        HeadKind::Cls => Ok(1),
        HeadKind::LastBlocksCls { n } => Ok(n),
        HeadKind::ClsAvgPoolInterleaved => Err(Error::param(
            "head",
            "the CUDA engine supports CLS-token heads; this avgpool head needs --device cpu",
        )),
    }
}

impl<'a> CudaEngine<'a> {
    /// Opens GPU `ordinal` and uploads the model's weights (f32; the loader has
    /// already converted f16/bf16 files).
    ///
    /// # Errors
    /// [`Error::CudaUnavailable`] without a usable GPU or CUDA libraries (never a
    /// panic); [`Error::InvalidParam`] for a head the CUDA engine does not support.
    pub fn new(vit: &'a Vit, ordinal: usize) -> Result<Self> {
        if let Some(h) = &vit.head {
            cls_chunks(h.kind)?;
        }
        Self::on_device(vit, Arc::new(CudarcDevice::new(ordinal)?))
    }

    /// The same engine on the emulated device (feature `cuda-emu`): the kernels run
    /// in the fiber emulator, GEMMs on the CPU; no GPU or CUDA library needed.
    ///
    /// # Errors
    /// As [`CudaEngine::new`], with [`Error::CudaUnavailable`] when the emulated
    /// kernel library cannot be loaded.
    #[cfg(feature = "cuda-emu")]
    pub fn emulated(vit: &'a Vit) -> Result<Self> {
        Self::on_device(vit, Arc::new(super::emu::EmuDevice::new()?))
    }

    /// Uploads the model's weights to `dev`, behind a [`Pooled`] cache of blocks.
    ///
    /// # Errors
    /// [`Error::InvalidParam`] for an unsupported head; device errors.
    pub fn on_device(vit: &'a Vit, dev: Dev) -> Result<Self> {
        if let Some(h) = &vit.head {
            cls_chunks(h.kind)?;
        }
        check_head_dim(vit)?;
        // Each call's buffers come back to the pool, so later calls allocate nothing.
        let dev: Dev = Arc::new(Pooled::new(dev));
        let up = |v: &[f32]| DevBuf::upload(&dev, v);
        let w = &vit.weights;
        let weights = guarded("uploading weights", || {
            let blocks = w
                .blocks
                .iter()
                .map(|b| {
                    Ok(DeviceBlock {
                        norm1_w: up(&b.norm1_w)?,
                        norm1_b: up(&b.norm1_b)?,
                        qkv_w: up(&b.qkv_w)?,
                        qkv_b: up(&b.qkv_b)?,
                        proj_w: up(&b.proj_w)?,
                        proj_b: up(&b.proj_b)?,
                        norm2_w: up(&b.norm2_w)?,
                        norm2_b: up(&b.norm2_b)?,
                        fc1_w: up(&b.fc1_w)?,
                        fc1_b: up(&b.fc1_b)?,
                        fc2_w: up(&b.fc2_w)?,
                        fc2_b: up(&b.fc2_b)?,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let head = match &vit.head {
                Some(h) => Some((up(&h.weight)?, up(&h.bias)?)),
                None => None,
            };
            Ok(DeviceWeights {
                patch_w: up(&w.patch_w)?,
                patch_b: up(&w.patch_b)?,
                cls: up(&w.cls_token)?,
                norm_w: up(&w.norm_w)?,
                norm_b: up(&w.norm_b)?,
                blocks,
                head,
            })
        })?;
        Ok(CudaEngine {
            vit,
            crf: super::CrfDevice::new(dev.clone()),
            workspace: Mutex::new(Workspace::new(dev.clone())),
            gpu: dev,
            weights,
            positions: Mutex::new(None),
            busy: Mutex::new(()),
            ig_graph: Mutex::new(None),
            graphs: AtomicBool::new(graphs_from_env()),
            precision: Precision::F32,
        })
    }

    /// This engine with its GEMMs in `precision` (f32 by default; TF32 and bf16 use
    /// the tensor cores, docs/gpu.md "Precision modes").
    pub fn with_precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
    }

    /// The device this engine runs on.
    pub fn device_api(&self) -> &dyn DeviceApi {
        &*self.gpu
    }

    /// Workspace bytes an attribution of a `height`×`width` image takes with `rows`
    /// IG path rows per batch, `samples` noise samples and `n_steps` steps: the
    /// engine runs as many rows at once as the device's free memory holds (at most
    /// `IgConfig::batch_size`).
    ///
    /// # Errors
    /// [`Error::Shape`] for a size the model's patches do not tile.
    pub fn ig_workspace_bytes(
        &self,
        height: usize,
        width: usize,
        rows: usize,
        samples: usize,
        n_steps: usize,
    ) -> Result<usize> {
        let geo = self.geometry((1, 3, height, width))?;
        Ok(self.ig_bytes(geo, rows, samples, n_steps))
    }

    /// Turns CUDA graphs for the IG batches on or off (on by default unless
    /// `EXPLAINSEG_CUDA_GRAPHS=0`); the results are the same either way.
    pub fn set_graphs(&self, on: bool) {
        self.graphs.store(on, Ordering::Relaxed);
    }

    /// The device's launches, allocations, copies and host syncs so far.
    pub fn counters(&self) -> Counters {
        self.gpu.counters()
    }

    fn zeros(&self, n: usize) -> Result<DevBuf<f32>> {
        DevBuf::zeros(&self.gpu, n)
    }

    fn upload(&self, v: &[f32]) -> Result<DevBuf<f32>> {
        DevBuf::upload(&self.gpu, v)
    }

    fn download(&self, v: &DevBuf<f32>) -> Result<Vec<f32>> {
        v.download()
    }

    /// Checks an input batch as every engine does; returns its patch geometry.
    fn geometry(&self, dims: (usize, usize, usize, usize)) -> Result<PatchGeometry> {
        let geo = input::check_batch(self.vit, dims)?;
        Ok(PatchGeometry {
            batch: geo.batch,
            height: geo.height,
            width: geo.width,
            patch: self.vit.config.patch,
            grid: geo.grid,
        })
    }

    fn check_targets(&self, batch: usize, targets: &[usize]) -> Result<()> {
        input::check_targets(self.vit, batch, targets)
    }

    /// Checks an input batch (shape, patch grid, finite values) and copies it into
    /// the workspace. Callers hold `busy`.
    fn upload_input(
        &self,
        ws: &mut Carver,
        x: ArrayView4<f32>,
    ) -> Result<(PatchGeometry, DevBuf<f32>)> {
        let geo = self.geometry(x.dim())?;
        input::check_finite(x)?;
        let xs = x.as_standard_layout();
        Ok((geo, ws.upload(xs.as_slice().expect("standard layout"))?))
    }

    /// The workspace, grown to `bytes`. Callers hold `busy`; a growth moves every
    /// buffer, so the IG graph captured for the old arena is dropped with it.
    fn workspace(&self, bytes: usize) -> Result<MutexGuard<'_, Workspace>> {
        let mut ws = self.workspace.lock().unwrap_or_else(|p| p.into_inner());
        if bytes > ws.capacity() {
            *self.ig_graph.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
        ws.reserve(bytes)?;
        Ok(ws)
    }

    /// The positional table of `grid` on the device, uploaded when the grid changes.
    fn positions_for(&self, grid: (usize, usize)) -> Result<MutexGuard<'_, Option<GridPositions>>> {
        let mut positions = self.positions.lock().unwrap_or_else(|p| p.into_inner());
        if positions.as_ref().map(|(g, _)| *g) != Some(grid) {
            *positions = None; // back to the pool before the new table is allocated
            *positions = Some((grid, self.upload(&self.vit.pos_embed(grid)?)?));
        }
        Ok(positions)
    }

    /// Workspace bytes of the images of `geo`, and of a forward of them (keeping
    /// every block when `save`) and, when `backward`, its input-gradient backward:
    /// the buffers [`Self::forward`] and [`Self::backward`] carve, in their terms.
    fn pass_bytes(&self, geo: PatchGeometry, save: bool, backward: bool) -> usize {
        let c = &self.vit.config;
        let (d, hidden, heads, depth) = (c.dim, c.mlp_hidden, c.heads, c.depth);
        let b = geo.batch;
        let np = geo.grid.0 * geo.grid.1;
        let t = np + 1;
        let m = b * t;
        let pp3 = 3 * c.patch * c.patch;
        let chunks = self
            .vit
            .head
            .as_ref()
            .map_or(1, |h| cls_chunks(h.kind).unwrap_or(1));
        let classes = self.vit.head.as_ref().map_or(0, |h| h.classes);
        let image = b * 3 * geo.height * geo.width;
        let mut z = Sizer::default();
        z.f32s(image);
        // forward: cols, emb, xs, normed, act, features; saved blocks; head norms; logits.
        z.f32s(b * np * pp3)
            .f32s(b * np * d)
            .f32s(m * d)
            .f32s(m * d)
            .f32s(m * hidden)
            .f32s(b * chunks * d);
        for _ in 0..if save { depth } else { 1 } {
            z.f32s(m * d)
                .f32s(m)
                .f32s(m * 3 * d)
                .f32s(m * d)
                .f32s(b * heads * t)
                .f32s(m * d)
                .f32s(m)
                .f32s(m * hidden);
        }
        for _ in 0..chunks {
            z.f32s(b * d).f32s(b);
        }
        z.f32s(b * classes);
        if backward {
            // dfeat, g, the block scratch (ga, gn, gqkv, D), gpatch, gx (the
            // targets are the caller's).
            z.f32s(b * chunks * d)
                .f32s(m * d)
                .f32s(m * hidden)
                .f32s(m * d)
                .f32s(m * 3 * d)
                .f32s(b * heads * t)
                .f32s(b * np * pp3)
                .f32s(image);
        }
        z.0
    }

    /// Workspace bytes of an IG call: what it keeps for all batches ([`IgCall`],
    /// the input, the per-sample attributions and the result), then one batch of
    /// `rows` path rows through a saved forward and its backward.
    fn ig_bytes(
        &self,
        geo_one: PatchGeometry,
        rows: usize,
        samples: usize,
        n_steps: usize,
    ) -> usize {
        let len = 3 * geo_one.height * geo_one.width;
        let mut z = Sizer::default();
        // x, baseline, noisy, alphas, weights, acc, row0, targets, per_sample, out.
        z.f32s(len)
            .f32s(len)
            .f32s(samples * len)
            .f32s(n_steps)
            .f32s(n_steps)
            .f32s(samples * len)
            .i32s(1)
            .i32s(rows)
            .f32s(samples * len)
            .f32s(len);
        let geo = PatchGeometry {
            batch: rows,
            ..geo_one
        };
        // The batch's path points are its forward's images.
        z.0 + self.pass_bytes(geo, true, true)
    }

    /// The forward pass on device input `x` (batch, 3, H, W), its buffers carved from
    /// the workspace `ws` (sized by [`Self::pass_bytes`]); keeps every block's
    /// activations when `save`, else reuses one set.
    fn forward(
        &self,
        ws: &mut Carver,
        x: &View<f32>,
        geo: PatchGeometry,
        save: bool,
    ) -> Result<Forward> {
        let gpu = &*self.gpu;
        let c = &self.vit.config;
        let w = &self.weights;
        let head = self.vit.require_head()?;
        let (head_w, head_b) = w
            .head
            .as_ref()
            .ok_or_else(|| Error::Internal("head present but not uploaded".into()))?;
        let n_chunks = cls_chunks(head.kind)?;
        let (d, hidden, heads) = (c.dim, c.mlp_hidden, c.heads);
        let batch = geo.batch;
        let np = geo.grid.0 * geo.grid.1;
        let t = np + 1;
        let m = batch * t;
        let pp3 = 3 * c.patch * c.patch;

        // Patch embedding, CLS and positions.
        let mut cols = ws.take(batch * np * pp3)?;
        k::im2col_f32(gpu, x, &mut cols.as_view_mut(), geo)?;
        let mut emb = ws.take(batch * np * d)?;
        k::linear(
            gpu,
            self.precision,
            &cols.as_view(),
            &w.patch_w.as_view(),
            None,
            &mut emb.as_view_mut(),
            batch * np,
            pp3,
            d,
            false,
        )?;
        let positions = self.positions_for(geo.grid)?;
        let pos = &positions.as_ref().expect("set by positions_for").1;
        let mut xs = ws.take(m * d)?;
        k::embed_tokens_f32(
            gpu,
            &emb.as_view(),
            &w.patch_b.as_view(),
            &w.cls.as_view(),
            &pos.as_view(),
            &mut xs.as_view_mut(),
            batch,
            t,
            d,
        )?;
        drop(positions);

        let mut scratch = BlockScratch {
            normed: ws.take(m * d)?,
            act: ws.take(m * hidden)?,
        };
        let mut features = ws.take(batch * n_chunks * d)?;
        let mut head_norms = Vec::with_capacity(n_chunks);
        let first_tapped = c.depth - n_chunks;
        let mut blocks: Vec<Saved> = Vec::new();
        for (bi, bw) in w.blocks.iter().enumerate() {
            if save || blocks.is_empty() {
                blocks.push(Saved {
                    xhat1: ws.take(m * d)?,
                    rstd1: ws.take(m)?,
                    qkv: ws.take(m * 3 * d)?,
                    attn_out: ws.take(m * d)?,
                    lse: ws.take(batch * heads * t)?,
                    xhat2: ws.take(m * d)?,
                    rstd2: ws.take(m)?,
                    gelu_grad: ws.take(m * hidden)?,
                });
            }
            let s = blocks.last_mut().expect("pushed above");
            self.block_forward(bw, s, &mut xs, &mut scratch, batch, t)?;

            if bi >= first_tapped {
                // Final-normed CLS rows of this block's output → chunk of the feature.
                let chunk = bi - first_tapped;
                let mut xhat = ws.take(batch * d)?;
                let mut rstd = ws.take(batch)?;
                k::layer_norm_f32(
                    gpu,
                    &xs.as_view(),
                    t * d,
                    &w.norm_w.as_view(),
                    &w.norm_b.as_view(),
                    &mut features.slice_mut(chunk * d..),
                    n_chunks * d,
                    &mut xhat.as_view_mut(),
                    &mut rstd.as_view_mut(),
                    batch,
                    d,
                    c.eps,
                )?;
                head_norms.push((xhat, rstd));
            }
        }
        let in_dim = n_chunks * d;
        let mut logits = ws.take(batch * head.classes)?;
        k::linear(
            gpu,
            self.precision,
            &features.as_view(),
            &head_w.as_view(),
            Some(&head_b.as_view()),
            &mut logits.as_view_mut(),
            batch,
            in_dim,
            head.classes,
            false,
        )?;
        Ok(Forward {
            batch,
            tokens: t,
            geometry: geo,
            blocks,
            head_norms,
            logits,
            classes: head.classes,
        })
    }

    /// One pre-norm block over every token, `x += Attn(LN1(x)); x += MLP(LN2(x))`,
    /// saving what the backward needs in `s` (the CPU block forward's order).
    fn block_forward(
        &self,
        bw: &DeviceBlock,
        s: &mut Saved,
        xs: &mut DevBuf<f32>,
        scratch: &mut BlockScratch,
        batch: usize,
        t: usize,
    ) -> Result<()> {
        let gpu = &*self.gpu;
        let c = &self.vit.config;
        let (d, hidden, heads, hd) = (c.dim, c.mlp_hidden, c.heads, c.head_dim());
        let m = batch * t;
        let BlockScratch { normed, act } = scratch;
        // x += Attn(LN1(x))
        k::layer_norm_f32(
            gpu,
            &xs.as_view(),
            d,
            &bw.norm1_w.as_view(),
            &bw.norm1_b.as_view(),
            &mut normed.as_view_mut(),
            d,
            &mut s.xhat1.as_view_mut(),
            &mut s.rstd1.as_view_mut(),
            m,
            d,
            c.eps,
        )?;
        k::linear(
            gpu,
            self.precision,
            &normed.as_view(),
            &bw.qkv_w.as_view(),
            Some(&bw.qkv_b.as_view()),
            &mut s.qkv.as_view_mut(),
            m,
            d,
            3 * d,
            false,
        )?;
        // O = softmax(scale·Q·Kᵀ)·V for every image and head in one launch.
        k::attention_fwd_f32(
            gpu,
            &s.qkv.as_view(),
            &mut s.attn_out.as_view_mut(),
            &mut s.lse.as_view_mut(),
            attn_shape(batch, t, heads, hd),
            c.attn_scale(),
        )?;
        k::linear(
            gpu,
            self.precision,
            &s.attn_out.as_view(),
            &bw.proj_w.as_view(),
            Some(&bw.proj_b.as_view()),
            &mut xs.as_view_mut(),
            m,
            d,
            d,
            true,
        )?;
        // x += MLP(LN2(x))
        k::layer_norm_f32(
            gpu,
            &xs.as_view(),
            d,
            &bw.norm2_w.as_view(),
            &bw.norm2_b.as_view(),
            &mut normed.as_view_mut(),
            d,
            &mut s.xhat2.as_view_mut(),
            &mut s.rstd2.as_view_mut(),
            m,
            d,
            c.eps,
        )?;
        // fc1's bias is added by the GELU kernel.
        k::linear(
            gpu,
            self.precision,
            &normed.as_view(),
            &bw.fc1_w.as_view(),
            None,
            &mut act.as_view_mut(),
            m,
            d,
            hidden,
            false,
        )?;
        k::bias_gelu_f32(
            gpu,
            &mut act.as_view_mut(),
            &bw.fc1_b.as_view(),
            &mut s.gelu_grad.as_view_mut(),
            m,
            hidden,
        )?;
        k::linear(
            gpu,
            self.precision,
            &act.as_view(),
            &bw.fc2_w.as_view(),
            Some(&bw.fc2_b.as_view()),
            &mut xs.as_view_mut(),
            m,
            hidden,
            d,
            true,
        )
    }

    /// Input gradient (batch, 3, H, W) on the device of Σ_b logits[b, targets[b]]
    /// (`targets` on the device, one per image), its buffers carved from `ws`.
    fn backward(&self, ws: &mut Carver, f: &Forward, targets: &View<i32>) -> Result<DevBuf<f32>> {
        let gpu = &*self.gpu;
        let c = &self.vit.config;
        let w = &self.weights;
        let (head_w, _) = w
            .head
            .as_ref()
            .ok_or_else(|| Error::Internal("head present but not uploaded".into()))?;
        let (d, hidden, heads) = (c.dim, c.mlp_hidden, c.heads);
        let (batch, t) = (f.batch, f.tokens);
        let m = batch * t;
        let n_chunks = f.head_norms.len();
        let in_dim = n_chunks * d;
        if f.blocks.len() != c.depth {
            return Err(Error::Internal(
                "backward needs a forward that saved every block".into(),
            ));
        }
        let mut dfeat = ws.take(batch * in_dim)?;
        k::head_rows_f32(
            gpu,
            &head_w.as_view(),
            targets,
            &mut dfeat.as_view_mut(),
            batch,
            in_dim,
        )?;
        // The head's norm backward adds into the CLS rows of g; the other rows
        // start at zero: the one buffer of a pass that is zeroed.
        let mut g = ws.zeros(m * d)?;
        let mut scratch = BackwardScratch {
            ga: ws.take(m * hidden)?,
            gn: ws.take(m * d)?,
            gqkv: ws.take(m * 3 * d)?,
            delta: ws.take(batch * heads * t)?,
        };
        let first_tapped = c.depth - n_chunks;
        for bi in (0..c.depth).rev() {
            if bi >= first_tapped {
                let chunk = bi - first_tapped;
                let (xhat, rstd) = &f.head_norms[chunk];
                k::layer_norm_bwd_f32(
                    gpu,
                    &dfeat.slice(chunk * d..),
                    in_dim,
                    &w.norm_w.as_view(),
                    &xhat.as_view(),
                    &rstd.as_view(),
                    &mut g.as_view_mut(),
                    t * d,
                    batch,
                    d,
                    true,
                )?;
            }
            self.block_backward(&w.blocks[bi], &f.blocks[bi], &mut g, &mut scratch, batch, t)?;
        }
        // Patch projection back to pixels: the patch rows of g (rows 1..T of each image).
        let geo = f.geometry;
        let np = t - 1;
        let pp3 = 3 * c.patch * c.patch;
        let mut gpatch = ws.take(batch * np * pp3)?;
        k::linear_backward_input(
            gpu,
            self.precision,
            &g.slice(d..),
            d,
            &w.patch_w.as_view(),
            &mut gpatch.as_view_mut(),
            np,
            pp3,
            d,
            Batch {
                count: batch,
                stride_a: t * d,
                stride_b: 0,
                stride_c: np * pp3,
            },
        )?;
        let mut gx = ws.take(batch * 3 * geo.height * geo.width)?;
        k::col2im_f32(gpu, &gpatch.as_view(), &mut gx.as_view_mut(), geo)?;
        Ok(gx)
    }

    /// Backward of one block (the CPU block backward's order, input gradients only):
    /// `g` (M, D) holds the gradient at the block output on entry, at its input on exit.
    fn block_backward(
        &self,
        bw: &DeviceBlock,
        s: &Saved,
        g: &mut DevBuf<f32>,
        scratch: &mut BackwardScratch,
        batch: usize,
        t: usize,
    ) -> Result<()> {
        let gpu = &*self.gpu;
        let c = &self.vit.config;
        let (d, hidden, heads, hd) = (c.dim, c.mlp_hidden, c.heads, c.head_dim());
        let m = batch * t;
        let BackwardScratch {
            ga,
            gn,
            gqkv,
            delta,
        } = scratch;
        // MLP branch.
        k::linear_backward_input(
            gpu,
            self.precision,
            &g.as_view(),
            d,
            &bw.fc2_w.as_view(),
            &mut ga.as_view_mut(),
            m,
            hidden,
            d,
            Batch::ONE,
        )?;
        k::gelu_bwd_f32(
            gpu,
            &s.gelu_grad.as_view(),
            &mut ga.as_view_mut(),
            m * hidden,
        )?;
        k::linear_backward_input(
            gpu,
            self.precision,
            &ga.as_view(),
            hidden,
            &bw.fc1_w.as_view(),
            &mut gn.as_view_mut(),
            m,
            d,
            hidden,
            Batch::ONE,
        )?;
        k::layer_norm_bwd_f32(
            gpu,
            &gn.as_view(),
            d,
            &bw.norm2_w.as_view(),
            &s.xhat2.as_view(),
            &s.rstd2.as_view(),
            &mut g.as_view_mut(),
            d,
            m,
            d,
            true,
        )?;
        // Attention branch.
        k::linear_backward_input(
            gpu,
            self.precision,
            &g.as_view(),
            d,
            &bw.proj_w.as_view(),
            &mut gn.as_view_mut(),
            m,
            d,
            d,
            Batch::ONE,
        )?;
        // dQ|dK|dV from q|k|v, O, the LSE and dO (in gn), every image and head at once.
        k::attention_bwd_f32(
            gpu,
            &s.qkv.as_view(),
            &s.attn_out.as_view(),
            &gn.as_view(),
            &s.lse.as_view(),
            &mut delta.as_view_mut(),
            &mut gqkv.as_view_mut(),
            attn_shape(batch, t, heads, hd),
            c.attn_scale(),
        )?;
        k::linear_backward_input(
            gpu,
            self.precision,
            &gqkv.as_view(),
            3 * d,
            &bw.qkv_w.as_view(),
            &mut gn.as_view_mut(),
            m,
            d,
            3 * d,
            Batch::ONE,
        )?;
        k::layer_norm_bwd_f32(
            gpu,
            &gn.as_view(),
            d,
            &bw.norm1_w.as_view(),
            &s.xhat1.as_view(),
            &s.rstd1.as_view(),
            &mut g.as_view_mut(),
            d,
            m,
            d,
            true,
        )
    }

    fn to_array4(
        &self,
        v: &DevBuf<f32>,
        dims: (usize, usize, usize, usize),
    ) -> Result<Array4<f32>> {
        Array4::from_shape_vec(dims, self.download(v)?).map_err(|e| Error::Internal(e.to_string()))
    }

    /// The IG batch: `wanted` rows, or as many as the workspace of the call can hold
    /// in the device's free memory (counting the arena it has now, which a growth
    /// frees first, and keeping a tenth, at least 64 MiB, for cuBLAS and the driver).
    ///
    /// # Errors
    /// [`Error::Cuda`] when not even one row fits.
    fn rows_that_fit(
        &self,
        geo: PatchGeometry,
        wanted: usize,
        samples: usize,
        n_steps: usize,
    ) -> Result<usize> {
        let free = self.gpu.free_memory()?;
        if free == usize::MAX {
            return Ok(wanted);
        }
        let arena = self
            .workspace
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .capacity();
        let usable = free
            .saturating_sub((free / 10).max(64 << 20))
            .saturating_add(arena);
        let bytes = |rows| self.ig_bytes(geo, rows, samples, n_steps);
        match (1..=wanted).rev().find(|&rows| bytes(rows) <= usable) {
            Some(rows) => Ok(rows),
            None => Err(Error::Cuda(format!(
                "an IG batch of one path row needs {} bytes of device memory, {free} are free",
                bytes(1)
            ))),
        }
    }

    /// Checks an explanation's image and baseline as the CPU path does; returns the
    /// image's patch geometry.
    fn check_explanation(
        &self,
        x: ArrayView4<f32>,
        baseline: ArrayView4<f32>,
        ig: &IgConfig,
    ) -> Result<PatchGeometry> {
        let (n, c, h, w) = x.dim();
        if n != 1 {
            return Err(Error::shape(
                "input (1, 3, H, W)",
                &[1, c, h, w],
                &[n, c, h, w],
            ));
        }
        if baseline.dim() != (1, c, h, w) {
            let (a, b, cc, d) = baseline.dim();
            return Err(Error::shape("baseline", &[1, c, h, w], &[a, b, cc, d]));
        }
        if ig.batch_size == 0 {
            return Err(Error::param("batch_size", "must be at least 1"));
        }
        if x.iter().chain(baseline.iter()).any(|v| !v.is_finite()) {
            return Err(Error::param("input", "contains NaN or infinite values"));
        }
        quadrature(ig.method, ig.n_steps)?;
        self.geometry((1, c, h, w))
    }

    /// An IG call's rows per batch (`ig.batch_size`, fewer when the device's free
    /// memory holds fewer) and its noise samples (1 for plain IG).
    fn ig_plan(
        &self,
        geo_one: PatchGeometry,
        ig: &IgConfig,
        nt: Option<&NoiseTunnelConfig>,
    ) -> Result<(usize, usize)> {
        let samples = nt.map_or(1, |nt| nt.noise.samples());
        let total_rows = samples * ig.n_steps;
        let batch = self.rows_that_fit(
            geo_one,
            ig.batch_size.min(total_rows).max(1),
            samples,
            ig.n_steps,
        )?;
        Ok((batch, samples))
    }

    /// Copies an image and its baseline (both checked) into the workspace.
    fn upload_pair(
        &self,
        ws: &mut Carver,
        x: ArrayView4<f32>,
        baseline: ArrayView4<f32>,
    ) -> Result<(DevBuf<f32>, DevBuf<f32>)> {
        let x_std = x.as_standard_layout();
        let b_std = baseline.as_standard_layout();
        Ok((
            ws.upload(x_std.as_slice().expect("standard layout"))?,
            ws.upload(b_std.as_slice().expect("standard layout"))?,
        ))
    }

    /// [`Engine::attribute`] entirely on the device: see [`Self::nt_ig`].
    fn attribute_on_device(
        &self,
        x: ArrayView4<f32>,
        baseline: ArrayView4<f32>,
        target: usize,
        ig: &IgConfig,
        nt: Option<&NoiseTunnelConfig>,
        progress: Option<Progress>,
    ) -> Result<NtOutput> {
        let geo_one = self.check_explanation(x, baseline, ig)?;
        self.check_targets(1, &[target])?;
        let _busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        let (batch, samples) = self.ig_plan(geo_one, ig, nt)?;
        let mut arena = self.workspace(self.ig_bytes(geo_one, batch, samples, ig.n_steps))?;
        let mut ws = arena.carver();
        let (x_dev, base_dev) = self.upload_pair(&mut ws, x, baseline)?;
        let targets = ws.upload(&vec![target as i32; batch])?;
        let out = self.nt_ig(
            &mut ws, &x_dev, x, base_dev, geo_one, targets, ig, nt, progress,
        )?;
        let deltas = if ig.return_delta {
            self.convergence_deltas(
                &mut ws,
                &out.per_sample,
                &out.call.noisy,
                &out.call.base,
                geo_one,
                samples,
                target,
                batch,
            )?
        } else {
            Vec::new()
        };
        let (_, c, h, w) = x.dim();
        Ok(NtOutput {
            attribution: self.to_array4(&out.aggregated, (1, c, h, w))?,
            deltas,
        })
    }

    /// NoiseTunnel(IG) of the image `x_dev` (its host copy `x` serves given noise) on
    /// the device, its buffers carved from `ws`: the noisy inputs (the same seeded
    /// values as the CPU, for every noise design), the path points in batches of
    /// `targets.len()` rows, the weighted gradient sums, the multiply by (x − b) and
    /// the aggregation. Plain IG is the one-sample case with zero noise (x + 0 = x
    /// exactly, and the mean of one sample is the sample). `targets` holds the
    /// explained class once per row of a batch. Nothing is read back, so the host
    /// does not wait.
    #[allow(clippy::too_many_arguments)]
    fn nt_ig(
        &self,
        ws: &mut Carver,
        x_dev: &DevBuf<f32>,
        x: ArrayView4<f32>,
        base_dev: DevBuf<f32>,
        geo_one: PatchGeometry,
        targets: DevBuf<i32>,
        ig: &IgConfig,
        nt: Option<&NoiseTunnelConfig>,
        progress: Option<Progress>,
    ) -> Result<DeviceIg> {
        let (_, c, h, w) = x.dim();
        let plain;
        let nt = match nt {
            Some(nt) => nt,
            None => {
                plain = NoiseTunnelConfig {
                    nt_type: NtType::SmoothGrad,
                    noise: Noise::Injected(Array4::zeros((1, c, h, w))),
                };
                &plain
            }
        };
        let samples = nt.noise.samples();
        let path = path_points(ig.method, ig.n_steps, samples, nt.noise.seed())?;
        let len = c * h * w;
        let gpu = &*self.gpu;
        // The noisy inputs (samples, 3, H, W).
        let mut noisy = ws.take(samples * len)?;
        // Validates samples and stdev as the CPU path does.
        let check = |stdev: f32, seed: u64| -> Result<()> {
            make_noise(
                &Noise::Seeded {
                    samples: 1,
                    stdev,
                    seed,
                },
                x.slice(ndarray::s![.., .., ..1, ..1]),
            )?;
            if samples == 0 {
                return Err(Error::param(
                    "nt_samples",
                    "must be at least 1 (use plain IG for none)",
                ));
            }
            Ok(())
        };
        match &nt.noise {
            Noise::Seeded { stdev, seed, .. }
            | Noise::Designed {
                stdev,
                seed,
                design: NoiseDesign::Independent,
                ..
            } => {
                check(*stdev, *seed)?;
                k::nt_noise_f32(
                    gpu,
                    &x_dev.as_view(),
                    &mut noisy.as_view_mut(),
                    *seed,
                    *stdev,
                    samples,
                    len,
                )?;
            }
            // The variance-reduced designs are drawn on the device too (the same
            // bits as crate::ig::noise_design), up to the strata a thread holds.
            Noise::Designed {
                stdev,
                seed,
                design,
                ..
            } if samples <= k::MAX_DEVICE_STRATA => {
                check(*stdev, *seed)?;
                k::nt_designed_f32(
                    gpu,
                    &x_dev.as_view(),
                    &mut noisy.as_view_mut(),
                    (*seed, *stdev),
                    *design,
                    samples,
                    len,
                )?;
            }
            // Given noise, and designs of more strata, are drawn on the host (by the
            // one generator the CPU path uses) and uploaded.
            Noise::Injected(_) | Noise::Designed { .. } => {
                let noise = make_noise(&nt.noise, x)?;
                let sum = &noise + &x;
                noisy.write(
                    sum.as_standard_layout()
                        .as_slice()
                        .expect("standard layout"),
                )?;
            }
        }
        let batch = targets.len();
        let mut call = IgCall {
            noisy,
            base: base_dev,
            alphas: ws.upload(&path.alphas)?,
            weights: ws.upload(&path.weights)?,
            acc: ws.zeros(samples * len)?,
            row0: ws.zeros(1)?,
            targets,
        };
        let mut per_sample = ws.take(samples * len)?;
        let mut aggregated = ws.take(len)?;
        self.ig_batches(ws, &mut call, geo_one, batch, ig.n_steps, progress)?;
        k::ig_finish_f32(
            gpu,
            &call.acc.as_view(),
            &call.noisy.as_view(),
            &call.base.as_view(),
            &mut per_sample.as_view_mut(),
            samples,
            len,
            ig.multiply_by_inputs,
        )?;
        let nt_code = match nt.nt_type {
            NtType::SmoothGrad => 0,
            NtType::SmoothGradSq => 1,
            NtType::VarGrad => 2,
        };
        k::nt_aggregate_f32(
            gpu,
            &per_sample.as_view(),
            &mut aggregated.as_view_mut(),
            samples,
            len,
            nt_code,
        )?;
        Ok(DeviceIg {
            call,
            per_sample,
            aggregated,
        })
    }

    /// Σ attribution − (F(x_j)[t] − F(b)[t]) per noise sample, as the host loop
    /// computes it (sums in f64 of the f32 per-sample attributions; logits of the
    /// noisy inputs in batches of `batch_size`).
    #[allow(clippy::too_many_arguments)]
    fn convergence_deltas(
        &self,
        ws: &mut Carver,
        per_sample: &DevBuf<f32>,
        noisy: &DevBuf<f32>,
        base: &DevBuf<f32>,
        geo_one: PatchGeometry,
        samples: usize,
        target: usize,
        batch_size: usize,
    ) -> Result<Vec<f32>> {
        let len = 3 * geo_one.height * geo_one.width;
        let mark = ws.mark();
        let f_base = self
            .forward(ws, &base.as_view(), geo_one, false)?
            .logits()?[[0, target]];
        // SAFETY: the forward above is dropped; its buffers are not used again.
        unsafe { ws.rewind(mark) };
        let mut f_inputs = Vec::with_capacity(samples);
        let mut first = 0;
        while first < samples {
            let rows = batch_size.min(samples - first);
            let geo = PatchGeometry {
                batch: rows,
                ..geo_one
            };
            let chunk = noisy.slice(first * len..(first + rows) * len);
            let logits = self.forward(ws, &chunk, geo, false)?.logits()?;
            // SAFETY: as above.
            unsafe { ws.rewind(mark) };
            f_inputs.extend(logits.outer_iter().map(|l| l[target]));
            first += rows;
        }
        let attributions = self.download(per_sample)?;
        Ok(attributions
            .chunks(len)
            .zip(f_inputs)
            .map(|(a, f)| convergence_delta(attribution_sum(a), f, f_base))
            .collect())
    }

    /// The taps of block `layer` of one image: its saved q|k|v, read back from a
    /// forward that keeps every block's activations, and its softmax probabilities,
    /// which the fused attention never stores: [`Self::tap_probs`] materialises them
    /// for this one layer.
    fn taps_on_device(&self, x: ArrayView4<f32>, layer: Option<usize>) -> Result<BlockTaps> {
        let layer = tap_layer(self.vit, x, layer)?;
        let _busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        let mut arena = self.workspace(self.pass_bytes(self.geometry(x.dim())?, true, false))?;
        let mut ws = arena.carver();
        let (geo, x_dev) = self.upload_input(&mut ws, x)?;
        let fwd = self.forward(&mut ws, &x_dev.as_view(), geo, true)?;
        let probs = self.tap_probs(&fwd.blocks[layer].qkv, fwd.batch, fwd.tokens)?;
        let mut got = download_together(&[&fwd.blocks[layer].qkv, &probs])?;
        let probs = got.pop();
        Ok(self.block_taps_of(geo, got.pop().unwrap_or_default(), probs))
    }

    /// Block taps of one image from downloaded q|k|v and probabilities.
    fn block_taps_of(
        &self,
        geo: PatchGeometry,
        qkv: Vec<f32>,
        probs: Option<Vec<f32>>,
    ) -> BlockTaps {
        BlockTaps {
            grid: geo.grid,
            heads: self.vit.config.heads,
            dim: self.vit.config.dim,
            qkv,
            probs,
            // The residual stream is not kept per block on the device.
            output: None,
        }
    }
}

impl CudaEngine<'_> {
    /// Taps only (not the IG or logits path): the attention probabilities
    /// P = softmax(scale·Q·Kᵀ) (batch, heads, T, T) of one block from its saved
    /// q|k|v, with per-image score GEMMs and the row softmax kernel — the (T, T)
    /// matrices the fused attention avoids, built for the tapped layer alone.
    fn tap_probs(&self, qkv: &DevBuf<f32>, batch: usize, t: usize) -> Result<DevBuf<f32>> {
        let gpu = &*self.gpu;
        let c = &self.vit.config;
        let (d, heads, hd) = (c.dim, c.heads, c.head_dim());
        let mut probs = self.zeros(batch * heads * t * t)?;
        for b in 0..batch {
            let base = b * t * 3 * d;
            // S_h = Q_h·K_hᵀ for every head h at once.
            k::heads_a_bt(
                gpu,
                self.precision,
                &qkv.slice(base..),
                3 * d,
                &qkv.slice(base + d..),
                3 * d,
                &mut probs.slice_mut(b * heads * t * t..),
                t,
                hd,
                heads,
            )?;
        }
        k::softmax_scale_f32(
            gpu,
            &mut probs.as_view_mut(),
            batch * heads * t,
            t,
            c.attn_scale(),
        )?;
        Ok(probs)
    }
}

impl Engine for CudaEngine<'_> {
    fn vit(&self) -> &Vit {
        self.vit
    }

    fn device(&self) -> Device {
        self.gpu.kind()
    }

    fn precision(&self) -> Precision {
        self.precision
    }

    fn attribute(
        &self,
        x: ArrayView4<f32>,
        baseline: ArrayView4<f32>,
        target: usize,
        ig: &IgConfig,
        nt: Option<&NoiseTunnelConfig>,
        progress: Option<Progress>,
    ) -> Result<NtOutput> {
        self.attribute_on_device(x, baseline, target, ig, nt, progress)
    }

    fn block_taps(&self, x: ArrayView4<f32>, layer: Option<usize>) -> Result<BlockTaps> {
        self.taps_on_device(x, layer)
    }

    fn crf_device(&self) -> Option<&super::CrfDevice> {
        Some(&self.crf)
    }

    fn relevance_device(&self) -> Option<&dyn crate::backend::RelevanceDevice> {
        Some(self)
    }

    fn logits(&self, x: ArrayView4<f32>) -> Result<Array2<f32>> {
        self.vit.require_head()?;
        let _busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        let mut arena = self.workspace(self.pass_bytes(self.geometry(x.dim())?, false, false))?;
        let mut ws = arena.carver();
        let (geo, x_dev) = self.upload_input(&mut ws, x)?;
        self.forward(&mut ws, &x_dev.as_view(), geo, false)?
            .logits()
    }

    fn logits_and_input_grad(
        &self,
        x: ArrayView4<f32>,
        targets: &[usize],
    ) -> Result<(Array2<f32>, Array4<f32>)> {
        let geo = self.geometry(x.dim())?;
        self.check_targets(x.dim().0, targets)?;
        let _busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        let bytes = self.pass_bytes(geo, true, true) + Sizer::default().i32s(geo.batch).0;
        let mut arena = self.workspace(bytes)?;
        let mut ws = arena.carver();
        let (geo, x_dev) = self.upload_input(&mut ws, x)?;
        let t32: Vec<i32> = targets.iter().map(|&v| v as i32).collect();
        let targets_dev = ws.upload(&t32)?;
        let fwd = self.forward(&mut ws, &x_dev.as_view(), geo, true)?;
        let gx = self.backward(&mut ws, &fwd, &targets_dev.as_view())?;
        let grad = self.to_array4(&gx, x.dim())?;
        Ok((fwd.logits()?, grad))
    }
}
