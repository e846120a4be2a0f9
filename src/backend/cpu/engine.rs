//! [`Engine`](crate::backend::Engine) on the CPU: forward, then input-gradient
//! backward seeded with the head rows of the targets.

use ndarray::{Array2, Array4, ArrayView4};

use super::{forward, input_grad_from_features};
use crate::backend::Engine;
use crate::error::{Error, Result};
use crate::model::Vit;

/// The CPU engine over a loaded model. Cheap to create; borrows the model.
#[derive(Debug, Clone, Copy)]
pub struct CpuEngine<'a> {
    pub vit: &'a Vit,
}

impl<'a> CpuEngine<'a> {
    pub fn new(vit: &'a Vit) -> Self {
        CpuEngine { vit }
    }
}

impl Engine for CpuEngine<'_> {
    fn classes(&self) -> Result<usize> {
        self.vit.classes()
    }

    fn logits(&self, x: ArrayView4<f32>) -> Result<Array2<f32>> {
        self.vit.require_head()?;
        let state = forward(self.vit, x, false)?;
        state.logits.ok_or_else(|| Error::Internal("forward with a head returned no logits".into()))
    }

    fn logits_and_input_grad(&self, x: ArrayView4<f32>, targets: &[usize]) -> Result<(Array2<f32>, Array4<f32>)> {
        let head = self.vit.require_head()?;
        if targets.len() != x.dim().0 {
            return Err(Error::shape("targets (one per input)", &[x.dim().0], &[targets.len()]));
        }
        if let Some(&bad) = targets.iter().find(|&&t| t >= head.classes) {
            return Err(Error::param("target", format!("class {bad} is out of range (the head has {} classes)", head.classes)));
        }
        let state = forward(self.vit, x, true)?;
        let in_dim = state.features.ncols();
        // d logit[t] / d feature = row t of the head weight.
        let d_features = Array2::from_shape_fn((targets.len(), in_dim), |(b, k)| head.weight[targets[b] * in_dim + k]);
        let grad = input_grad_from_features(self.vit, &state, &d_features)?;
        let logits = state.logits.ok_or_else(|| Error::Internal("forward with a head returned no logits".into()))?;
        Ok((logits, grad))
    }
}
