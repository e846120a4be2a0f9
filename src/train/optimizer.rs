//! SGD with momentum and AdamW, with PyTorch's update rules, over the tensors a
//! [`ParamGrads`] holds. State is kept per tensor name so it can be saved and
//! resumed.
//!
//! SGD (`torch.optim.SGD`, dampening 0): `g ← g + λ·p`; `b ← μ·b + g` (b = g on the
//! first step); `p ← p − lr·b`.
//! AdamW (`torch.optim.AdamW`): `p ← p·(1 − lr·λ)`; `m ← β₁m + (1−β₁)g`;
//! `v ← β₂v + (1−β₂)g²`; `p ← p − lr·m̂/(√v̂ + ε)` with bias-corrected m̂, v̂.

use std::collections::BTreeMap;

use super::param_grad::ParamGrads;
use super::params::named_tensors_mut;
use crate::error::{Error, Result};
use crate::model::Vit;

/// Which optimizer, with its hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OptimizerKind {
    Sgd {
        momentum: f32,
        weight_decay: f32,
    },
    AdamW {
        beta1: f32,
        beta2: f32,
        eps: f32,
        weight_decay: f32,
    },
}

impl OptimizerKind {
    pub fn name(&self) -> &'static str {
        match self {
            OptimizerKind::Sgd { .. } => "sgd",
            OptimizerKind::AdamW { .. } => "adamw",
        }
    }

    pub fn validate(&self) -> Result<()> {
        let ok = match *self {
            OptimizerKind::Sgd {
                momentum,
                weight_decay,
            } => (0.0..1.0).contains(&momentum) && weight_decay >= 0.0 && weight_decay.is_finite(),
            OptimizerKind::AdamW {
                beta1,
                beta2,
                eps,
                weight_decay,
            } => {
                (0.0..1.0).contains(&beta1)
                    && (0.0..1.0).contains(&beta2)
                    && eps > 0.0
                    && weight_decay >= 0.0
                    && weight_decay.is_finite()
            }
        };
        if ok {
            Ok(())
        } else {
            Err(Error::param(
                "optimizer",
                format!("{self:?}: momentum/betas must be in [0, 1), eps > 0, weight decay ≥ 0"),
            ))
        }
    }
}

/// An optimizer with its per-tensor state.
#[derive(Debug, Clone)]
pub struct Optimizer {
    pub kind: OptimizerKind,
    /// Updates applied so far.
    pub steps: u64,
    /// SGD momentum buffers, or AdamW first moments, by tensor name.
    pub first: BTreeMap<String, Vec<f32>>,
    /// AdamW second moments by tensor name (empty for SGD).
    pub second: BTreeMap<String, Vec<f32>>,
}

impl Optimizer {
    pub fn new(kind: OptimizerKind) -> Self {
        Optimizer {
            kind,
            steps: 0,
            first: BTreeMap::new(),
            second: BTreeMap::new(),
        }
    }

    /// The weight decay of this optimizer's settings.
    pub fn weight_decay(&self) -> f32 {
        match self.kind {
            OptimizerKind::Sgd { weight_decay, .. } | OptimizerKind::AdamW { weight_decay, .. } => {
                weight_decay
            }
        }
    }

    /// Applies one update with rate `lr` to the tensors `grads` holds.
    ///
    /// # Errors
    /// [`Error::Internal`] if a gradient names a tensor the model lacks or has
    /// another length (a bug: both come from the same model).
    pub fn step(&mut self, vit: &mut Vit, grads: &ParamGrads, lr: f32) -> Result<()> {
        let mut params: BTreeMap<String, &mut Vec<f32>> =
            named_tensors_mut(vit).into_iter().collect();
        let decay = self.weight_decay();
        let mut updates = Vec::new();
        for (name, g) in grads.named() {
            let p = params.remove(&name).ok_or_else(|| {
                Error::Internal(format!("gradient `{name}` fits no model tensor"))
            })?;
            updates.push(NamedUpdate {
                name,
                param: p,
                grad: g,
                weight_decay: decay,
            });
        }
        self.step_named(updates, lr)
    }

    /// One update with rate `lr` of named tensors, each with its own weight decay
    /// (self-supervised pretraining exempts biases and norms, and schedules the decay).
    ///
    /// # Errors
    /// [`Error::Internal`] when a gradient's length differs from its tensor's.
    pub fn step_named(&mut self, updates: Vec<NamedUpdate>, lr: f32) -> Result<()> {
        self.steps += 1;
        let t = self.steps as i32;
        for NamedUpdate {
            name,
            param: p,
            grad: g,
            weight_decay,
        } in updates
        {
            if p.len() != g.len() {
                return Err(Error::Internal(format!(
                    "gradient `{name}` has {} values, the tensor {}",
                    g.len(),
                    p.len()
                )));
            }
            match self.kind {
                OptimizerKind::Sgd { momentum, .. } => {
                    let b = self.first.entry(name).or_default();
                    let fresh = b.is_empty();
                    if fresh {
                        b.resize(g.len(), 0.0);
                    }
                    for ((pv, &gv), bv) in p.iter_mut().zip(g.iter()).zip(b.iter_mut()) {
                        let gd = gv + weight_decay * *pv;
                        let upd = if momentum == 0.0 {
                            gd
                        } else {
                            *bv = if fresh { gd } else { momentum * *bv + gd };
                            *bv
                        };
                        *pv -= lr * upd;
                    }
                }
                OptimizerKind::AdamW {
                    beta1, beta2, eps, ..
                } => {
                    let m = self
                        .first
                        .entry(name.clone())
                        .or_insert_with(|| vec![0.0; g.len()]);
                    let v = self
                        .second
                        .entry(name)
                        .or_insert_with(|| vec![0.0; g.len()]);
                    let c1 = 1.0 - beta1.powi(t);
                    let c2 = 1.0 - beta2.powi(t);
                    for (((pv, &gv), mv), vv) in p
                        .iter_mut()
                        .zip(g.iter())
                        .zip(m.iter_mut())
                        .zip(v.iter_mut())
                    {
                        *pv *= 1.0 - lr * weight_decay;
                        *mv = beta1 * *mv + (1.0 - beta1) * gv;
                        *vv = beta2 * *vv + (1.0 - beta2) * gv * gv;
                        *pv -= lr * (*mv / c1) / ((*vv / c2).sqrt() + eps);
                    }
                }
            }
        }
        Ok(())
    }
}

/// One tensor of an update: its name (the key of its optimizer state), the
/// tensor, its gradient and its weight decay.
#[derive(Debug)]
pub struct NamedUpdate<'a> {
    pub name: String,
    pub param: &'a mut Vec<f32>,
    pub grad: &'a [f32],
    pub weight_decay: f32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::VitConfig;
    use crate::train::param_grad::Trainable;

    fn tiny() -> Vit {
        let c = VitConfig {
            patch: 8,
            dim: 8,
            depth: 1,
            heads: 2,
            mlp_hidden: 16,
            eps: 1e-6,
            pos_grid: Some((2, 2)),
            pos_patches: 4,
        };
        Vit::random(c, 2, 1)
    }

    #[test]
    fn sgd_momentum_matches_the_pytorch_recurrence() {
        let mut vit = tiny();
        let head = vit.head.clone().unwrap();
        let mut g = ParamGrads::zeros(&vit, &head, Trainable::Head);
        g.head_b = vec![1.0, -2.0];
        let mut opt = Optimizer::new(OptimizerKind::Sgd {
            momentum: 0.9,
            weight_decay: 0.0,
        });
        let b0 = vit.head.as_ref().unwrap().bias.clone();
        opt.step(&mut vit, &g, 0.1).unwrap();
        opt.step(&mut vit, &g, 0.1).unwrap();
        // b₁ = g, b₂ = 0.9·g + g = 1.9·g → total change −0.1·(1 + 1.9)·g.
        let b = &vit.head.as_ref().unwrap().bias;
        assert!((b[0] - (b0[0] - 0.29)).abs() < 1e-6);
        assert!((b[1] - (b0[1] + 0.58)).abs() < 1e-6);
    }

    #[test]
    fn adamw_first_step_moves_by_lr() {
        let mut vit = tiny();
        let head = vit.head.clone().unwrap();
        let mut g = ParamGrads::zeros(&vit, &head, Trainable::Head);
        g.head_b = vec![3.0, -0.5];
        let mut opt = Optimizer::new(OptimizerKind::AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        });
        let b0 = vit.head.as_ref().unwrap().bias.clone();
        opt.step(&mut vit, &g, 0.01).unwrap();
        // m̂ = g, v̂ = g² on the first step: the update is lr·sign(g).
        let b = &vit.head.as_ref().unwrap().bias;
        assert!((b[0] - (b0[0] - 0.01)).abs() < 1e-6);
        assert!((b[1] - (b0[1] + 0.01)).abs() < 1e-6);
    }
}
