//! [`Engine`](crate::backend::Engine) on the CPU: forward, then input-gradient
//! backward seeded with the head rows of the targets.

use std::sync::Mutex;

use ndarray::{Array2, Array4, ArrayView4};

use super::forward::forward_tapped;
use super::forward::{forward_in, Workspace};
use super::gemm::Threads;
use super::input_grad_from_features;
use crate::backend::{input, tap_layer, BlockTaps, Device, Engine};
use crate::error::{Error, Result};
use crate::model::Vit;
use ndarray::{s, Axis};
use rayon::prelude::*;

/// The CPU engine over a loaded model. Cheap to create; borrows the model and
/// keeps a pool of activation buffers, so keep one alive across the batches of an
/// attribution. Safe to share between threads (each call takes its own buffers).
#[derive(Debug)]
pub struct CpuEngine<'a> {
    pub vit: &'a Vit,
    spare: Mutex<Vec<Workspace>>,
}

impl<'a> CpuEngine<'a> {
    pub fn new(vit: &'a Vit) -> Self {
        CpuEngine {
            vit,
            spare: Mutex::new(Vec::new()),
        }
    }

    fn take_workspace(&self) -> Workspace {
        self.spare
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .unwrap_or_default()
    }

    fn give_back(&self, ws: Workspace) {
        self.spare
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(ws);
    }

    /// Forward + backward of one slice of the batch with the given GEMM threading.
    fn grad_chunk(
        &self,
        x: ArrayView4<f32>,
        targets: &[usize],
        threads: Threads,
    ) -> Result<(Array2<f32>, Array4<f32>)> {
        let head = self.vit.require_head()?;
        let mut state = forward_in(self.vit, x, true, self.take_workspace(), threads, None)?;
        let in_dim = state.features.ncols();
        // d logit[t] / d feature = row t of the head weight.
        let d_features = Array2::from_shape_fn((targets.len(), in_dim), |(b, k)| {
            head.weight[targets[b] * in_dim + k]
        });
        let grad = input_grad_from_features(self.vit, &mut state, &d_features)?;
        self.give_back(std::mem::take(&mut state.workspace));
        let logits = state
            .logits
            .ok_or_else(|| Error::Internal("forward with a head returned no logits".into()))?;
        Ok((logits, grad))
    }
}

impl Engine for CpuEngine<'_> {
    fn vit(&self) -> &Vit {
        self.vit
    }

    fn device(&self) -> Device {
        Device::Cpu
    }

    fn block_taps(&self, x: ArrayView4<f32>, layer: Option<usize>) -> Result<BlockTaps> {
        let layer = tap_layer(self.vit, x, layer)?;
        forward_tapped(self.vit, x, Some(layer))?.taps(0)
    }

    fn logits(&self, x: ArrayView4<f32>) -> Result<Array2<f32>> {
        self.vit.require_head()?;
        let state = forward_in(
            self.vit,
            x,
            false,
            self.take_workspace(),
            Threads::Pool,
            None,
        )?;
        let logits = state.logits;
        self.give_back(state.workspace);
        logits.ok_or_else(|| Error::Internal("forward with a head returned no logits".into()))
    }

    fn logits_and_input_grad(
        &self,
        x: ArrayView4<f32>,
        targets: &[usize],
    ) -> Result<(Array2<f32>, Array4<f32>)> {
        input::check_targets(self.vit, x.dim().0, targets)?;
        // Coarse-grained parallelism: one slice of the batch per thread, each with
        // single-threaded GEMMs, avoids a fork/join per GEMM (measured faster on the
        // 2-core dev machine; `explainseg bench`).
        let batch = x.dim().0;
        let n_par = rayon::current_num_threads().min(batch);
        if n_par <= 1 {
            return self.grad_chunk(x, targets, Threads::Pool);
        }
        let per = batch.div_ceil(n_par);
        let parts: Vec<Result<(Array2<f32>, Array4<f32>)>> = (0..batch)
            .step_by(per)
            .collect::<Vec<_>>()
            .into_par_iter()
            .map(|start| {
                let end = (start + per).min(batch);
                self.grad_chunk(
                    x.slice(s![start..end, .., .., ..]),
                    &targets[start..end],
                    Threads::Single,
                )
            })
            .collect();
        let mut logits = Vec::with_capacity(parts.len());
        let mut grads = Vec::with_capacity(parts.len());
        for part in parts {
            let (l, g) = part?;
            logits.push(l);
            grads.push(g);
        }
        let logits = ndarray::concatenate(
            Axis(0),
            &logits.iter().map(|a| a.view()).collect::<Vec<_>>(),
        )
        .map_err(|e| Error::Internal(e.to_string()))?;
        let grads =
            ndarray::concatenate(Axis(0), &grads.iter().map(|a| a.view()).collect::<Vec<_>>())
                .map_err(|e| Error::Internal(e.to_string()))?;
        Ok((logits, grads))
    }
}
