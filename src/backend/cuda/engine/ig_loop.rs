//! The IG loop of [`CudaEngine::attribute`](crate::backend::Engine::attribute) on
//! the device: batches of path rows through forward, backward and accumulation,
//! each full batch replayed as a CUDA graph captured once per layout
//! (docs/cuda_emulation.md §1.3).

use std::sync::atomic::Ordering;

use super::super::api::{Dev, DevBuf, GraphId};
use super::super::launch::{self as k, PatchGeometry, PathRows};
use super::super::workspace::Carver;
use super::CudaEngine;
use crate::error::{Error, Result};
use crate::ig::Progress;

/// What fixes every address and size an IG batch's graph bakes in: where the call's
/// buffers and the batch's range of the arena lie (callers carve different buffers
/// before them), and the layout (rows per batch, image size, noise samples, steps,
/// path-table entries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct IgGraphKey {
    /// noisy, base, alphas, weights, acc, row0, targets, then the batch's first
    /// carved address.
    pub addresses: [u64; 8],
    pub rows: usize,
    pub height: usize,
    pub width: usize,
    pub samples: usize,
    pub n_steps: usize,
    pub period: usize,
}

/// A captured IG batch graph, forgotten by its device on drop.
pub(super) struct IgGraph {
    key: IgGraphKey,
    id: GraphId,
    dev: Dev,
}

impl Drop for IgGraph {
    fn drop(&mut self) {
        self.dev.drop_graph(self.id);
    }
}

/// Whether the environment leaves CUDA graphs on (`EXPLAINSEG_CUDA_GRAPHS=0` turns
/// them off, for timing graphs against eager launches).
pub(super) fn graphs_from_env() -> bool {
    std::env::var("EXPLAINSEG_CUDA_GRAPHS").map_or(true, |v| v.trim() != "0")
}

/// The device buffers an IG call keeps for all its batches.
pub(super) struct IgCall {
    pub noisy: DevBuf<f32>,
    pub base: DevBuf<f32>,
    pub alphas: DevBuf<f32>,
    pub weights: DevBuf<f32>,
    /// Σ_k w_k·∇ per input (samples, 3, H, W): accumulated into, so zeroed.
    pub acc: DevBuf<f32>,
    /// The first row of the next batch, on the device (kernels/ig.cu).
    pub row0: DevBuf<i32>,
    /// The target class, once per row of a batch.
    pub targets: DevBuf<i32>,
}

impl CudaEngine<'_> {
    /// The IG loop: every path row of `call` in batches of `rows` (the last may be
    /// shorter), each one path → forward → backward → accumulate → advance row0.
    /// With graphs on, a full batch is captured once per layout ([`IgGraphKey`]) and replayed;
    /// a shorter last batch runs eagerly. Every batch carves the same addresses.
    pub(super) fn ig_batches(
        &self,
        ws: &mut Carver,
        call: &mut IgCall,
        geo_one: PatchGeometry,
        rows: usize,
        n_steps: usize,
        progress: Option<Progress>,
    ) -> Result<()> {
        let gpu = &*self.gpu;
        let len = 3 * geo_one.height * geo_one.width;
        let samples = call.noisy.len() / len;
        let total_rows = samples * n_steps;
        let key = IgGraphKey {
            addresses: [
                call.noisy.as_view().ptr(),
                call.base.as_view().ptr(),
                call.alphas.as_view().ptr(),
                call.weights.as_view().ptr(),
                call.acc.as_view().ptr(),
                call.row0.as_view().ptr(),
                call.targets.as_view().ptr(),
                ws.next_address(),
            ],
            rows,
            height: geo_one.height,
            width: geo_one.width,
            samples,
            n_steps,
            period: call.alphas.len(),
        };
        let mark = ws.mark();
        let mut row0 = 0;
        while row0 < total_rows {
            let p = PathRows {
                row0,
                rows: rows.min(total_rows - row0),
                n_steps,
                period: call.alphas.len(),
                len,
            };
            if p.rows == rows && self.graphs.load(Ordering::Relaxed) {
                let mut graph = self.ig_graph.lock().unwrap_or_else(|p| p.into_inner());
                if graph.as_ref().map(|g| g.key) != Some(key) {
                    *graph = None;
                    // Uploaded now if needed: nothing is copied inside a capture.
                    drop(self.positions_for(geo_one.grid)?);
                    gpu.begin_capture()?;
                    let captured = self.ig_batch(ws, call, geo_one, p);
                    let id = gpu.end_capture();
                    captured?;
                    *graph = Some(IgGraph {
                        key,
                        id: id?,
                        dev: self.gpu.clone(),
                    });
                }
                let id = graph.as_ref().expect("captured above").id;
                // SAFETY: the graph was captured for this layout (`key`: the same
                // arena and sizes), so every address it names is a buffer of `call`
                // or of this batch's range of the arena, carved again at the same
                // place; row0 on the device is this batch's first row (advanced by
                // the previous batch), and row0 + rows ≤ total rows, so the bounds
                // checked at capture hold for this batch too.
                unsafe { gpu.replay(id)? };
            } else {
                self.ig_batch(ws, call, geo_one, p)?;
            }
            // SAFETY: ig_batch's buffers were dropped when it returned.
            unsafe { ws.rewind(mark) };
            row0 += p.rows;
            if let Some(report) = progress {
                if !report(row0, total_rows) {
                    return Err(Error::Aborted);
                }
            }
        }
        Ok(())
    }

    /// One IG batch: path points, forward, backward, accumulation, row0 advanced.
    fn ig_batch(
        &self,
        ws: &mut Carver,
        call: &mut IgCall,
        geo_one: PatchGeometry,
        p: PathRows,
    ) -> Result<()> {
        let gpu = &*self.gpu;
        let mut path = ws.take(p.rows * p.len)?;
        k::ig_path_f32(
            gpu,
            &call.noisy.as_view(),
            &call.base.as_view(),
            &call.alphas.as_view(),
            &mut path.as_view_mut(),
            &call.row0.as_view(),
            p,
        )?;
        let geo = PatchGeometry {
            batch: p.rows,
            ..geo_one
        };
        let fwd = self.forward(ws, &path.as_view(), geo, true)?;
        let grads = self.backward(ws, &fwd, &call.targets.slice(..p.rows))?;
        k::ig_accumulate_f32(
            gpu,
            &grads.as_view(),
            &call.weights.as_view(),
            &mut call.acc.as_view_mut(),
            &call.row0.as_view(),
            p,
        )?;
        k::ig_advance_row0(gpu, &mut call.row0.as_view_mut(), p.rows)
    }
}
