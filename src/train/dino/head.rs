//! DINO's projection head: a 3-layer MLP (GELU between layers) down to a
//! bottleneck, L2 normalisation, then a weight-normalised linear layer without
//! bias whose gain g is fixed to 1 (`norm_last_layer=True`): `W = V/‖V_row‖`.
//!
//! Backward rules, g the upstream gradient: linear as `nn.Linear`; for
//! `ẑ = z/‖z‖`, `dz = (dẑ − (dẑ·ẑ)ẑ)/‖z‖`; for `Wᵢ = Vᵢ/‖Vᵢ‖`,
//! `dVᵢ = (dWᵢ − (dWᵢ·Wᵢ)Wᵢ)/‖Vᵢ‖`. PyTorch's `F.normalize` divides by
//! `max(‖z‖, 1e-12)`; the same floor is used here.
//!
//! Tensor names are DINO's (`head.mlp.0.weight`, …, `head.last_layer.weight_v`),
//! which every model loader of this crate ignores.

use super::super::stream_key;
use crate::backend::cpu::gemm::{
    linear, linear_backward_input, linear_backward_params, matmul, MatRef, Threads,
};
use crate::backend::cpu::ops;
use crate::error::{Error, Result};
use crate::rng::{standard_normal, Rng};

/// Widths of the projection head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadConfig {
    pub hidden: usize,
    pub bottleneck: usize,
    /// K, the number of prototypes the softmax runs over.
    pub out_dim: usize,
}

impl HeadConfig {
    pub fn validate(&self) -> Result<()> {
        if self.hidden == 0 || self.bottleneck == 0 || self.out_dim < 2 {
            return Err(Error::param(
                "head",
                "hidden and bottleneck widths must be ≥ 1 and the output ≥ 2",
            ));
        }
        Ok(())
    }
}

const NORM_FLOOR: f32 = 1e-12;

/// The head's parameters. `w[k]`, `b[k]` are the MLP's layers `mlp.{0,2,4}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectionHead {
    pub in_dim: usize,
    pub config: HeadConfig,
    pub w: [Vec<f32>; 3],
    pub b: [Vec<f32>; 3],
    /// V of the last layer (out_dim, bottleneck); its gain is 1.
    pub last_v: Vec<f32>,
}

/// Gradients of a [`ProjectionHead`], same layout.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadGrads {
    pub w: [Vec<f32>; 3],
    pub b: [Vec<f32>; 3],
    pub last_v: Vec<f32>,
}

/// What the forward keeps for the backward.
#[derive(Debug, Clone)]
pub struct HeadForward {
    pub rows: usize,
    input: Vec<f32>,
    /// GELU outputs of layers 0 and 1, and their derivatives.
    act: [Vec<f32>; 2],
    dact: [Vec<f32>; 2],
    /// Bottleneck after normalisation, and 1/max(‖z‖, floor) per row.
    z_hat: Vec<f32>,
    inv_norm: Vec<f32>,
    /// The normalised last-layer weight W (out_dim, bottleneck) and 1/‖Vᵢ‖.
    w_last: Vec<f32>,
    inv_v_norm: Vec<f32>,
    /// (rows, out_dim).
    pub output: Vec<f32>,
}

fn layer_dims(in_dim: usize, c: &HeadConfig) -> [(usize, usize); 3] {
    [
        (c.hidden, in_dim),
        (c.hidden, c.hidden),
        (c.bottleneck, c.hidden),
    ]
}

impl ProjectionHead {
    /// DINO's initialisation: MLP weights N(0, 0.02²) (its truncation at ±2 never
    /// bites at that scale), biases 0; the last layer as `nn.Linear`'s default,
    /// U(−1/√bottleneck, 1/√bottleneck).
    pub fn new(in_dim: usize, config: HeadConfig, seed: u64) -> ProjectionHead {
        let mut r = Rng::stream(seed, &[stream_key::INIT, 1]);
        let dims = layer_dims(in_dim, &config);
        let w = dims.map(|(o, i)| {
            let key = r.next_u64();
            (0..o * i)
                .map(|k| (0.02 * standard_normal(key, k as u64)) as f32)
                .collect()
        });
        let b = dims.map(|(o, _)| vec![0.0; o]);
        let bound = 1.0 / (config.bottleneck as f32).sqrt();
        let last_v = (0..config.out_dim * config.bottleneck)
            .map(|_| r.range(-bound, bound))
            .collect();
        ProjectionHead {
            in_dim,
            config,
            w,
            b,
            last_v,
        }
    }

    /// All-zero gradients.
    pub fn zero_grads(&self) -> HeadGrads {
        HeadGrads {
            w: self.w.clone().map(|v| vec![0.0; v.len()]),
            b: self.b.clone().map(|v| vec![0.0; v.len()]),
            last_v: vec![0.0; self.last_v.len()],
        }
    }

    /// Tensors under DINO's names with shapes (the gain `weight_g` of ones is
    /// stored too, so the file reads like DINO's).
    pub fn named(&self) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        let dims = layer_dims(self.in_dim, &self.config);
        let mut out = Vec::new();
        for (k, (&(o, i), (w, b))) in dims.iter().zip(self.w.iter().zip(&self.b)).enumerate() {
            out.push((format!("head.mlp.{}.weight", 2 * k), vec![o, i], w.clone()));
            out.push((format!("head.mlp.{}.bias", 2 * k), vec![o], b.clone()));
        }
        let c = &self.config;
        out.push((
            "head.last_layer.weight_g".into(),
            vec![c.out_dim, 1],
            vec![1.0; c.out_dim],
        ));
        out.push((
            "head.last_layer.weight_v".into(),
            vec![c.out_dim, c.bottleneck],
            self.last_v.clone(),
        ));
        out
    }

    /// The trainable tensors by name, mutable, in [`HeadGrads::named`]'s order.
    pub fn tensors_mut(&mut self) -> Vec<(String, &mut Vec<f32>)> {
        let [w0, w1, w2] = &mut self.w;
        let [b0, b1, b2] = &mut self.b;
        vec![
            ("head.mlp.0.weight".into(), w0),
            ("head.mlp.0.bias".into(), b0),
            ("head.mlp.2.weight".into(), w1),
            ("head.mlp.2.bias".into(), b1),
            ("head.mlp.4.weight".into(), w2),
            ("head.mlp.4.bias".into(), b2),
            ("head.last_layer.weight_v".into(), &mut self.last_v),
        ]
    }

    /// Rebuilds a head from its named tensors (as [`ProjectionHead::named`] wrote them).
    ///
    /// # Errors
    /// [`Error::InvalidParam`] when a tensor is missing or has the wrong size.
    pub fn from_named(
        in_dim: usize,
        config: HeadConfig,
        get: &dyn Fn(&str) -> Option<Vec<f32>>,
    ) -> Result<ProjectionHead> {
        let mut head = ProjectionHead {
            in_dim,
            config,
            w: Default::default(),
            b: Default::default(),
            last_v: Vec::new(),
        };
        let dims = layer_dims(in_dim, &config);
        let expected: Vec<usize> = dims
            .iter()
            .flat_map(|&(o, i)| [o * i, o])
            .chain([config.out_dim * config.bottleneck])
            .collect();
        for ((name, slot), len) in head.tensors_mut().into_iter().zip(expected) {
            let v = get(&name).filter(|v| v.len() == len).ok_or_else(|| {
                Error::param(
                    "projection head",
                    format!("`{name}` is missing or has the wrong size"),
                )
            })?;
            *slot = v;
        }
        Ok(head)
    }

    /// The head on `rows` features (rows, in_dim).
    pub fn forward(&self, x: &[f32], rows: usize, threads: Threads) -> HeadForward {
        let c = &self.config;
        let input = x.to_vec();
        let mut act: [Vec<f32>; 2] = Default::default();
        let mut dact: [Vec<f32>; 2] = Default::default();
        for k in 0..2 {
            let prev = if k == 0 { &input } else { &act[0] };
            let in_w = prev.len() / rows.max(1);
            let mut h = vec![0f32; rows * c.hidden];
            linear(
                MatRef::row_major(prev, rows, in_w),
                &self.w[k],
                Some(&self.b[k]),
                &mut h,
                false,
                threads,
            );
            let mut d = vec![0f32; h.len()];
            ops::gelu_in_place_with_grad(&mut h, &mut d);
            act[k] = h;
            dact[k] = d;
        }
        let mut z = vec![0f32; rows * c.bottleneck];
        linear(
            MatRef::row_major(&act[1], rows, c.hidden),
            &self.w[2],
            Some(&self.b[2]),
            &mut z,
            false,
            threads,
        );
        let mut inv_norm = vec![0f32; rows];
        for (row, inv) in z.chunks_exact_mut(c.bottleneck).zip(&mut inv_norm) {
            let n = row
                .iter()
                .map(|v| v * v)
                .sum::<f32>()
                .sqrt()
                .max(NORM_FLOOR);
            *inv = 1.0 / n;
            row.iter_mut().for_each(|v| *v /= n);
        }
        let (w_last, inv_v_norm) = self.normalised_last();
        let mut output = vec![0f32; rows * c.out_dim];
        linear(
            MatRef::row_major(&z, rows, c.bottleneck),
            &w_last,
            None,
            &mut output,
            false,
            threads,
        );
        HeadForward {
            rows,
            input,
            act,
            dact,
            z_hat: z,
            inv_norm,
            w_last,
            inv_v_norm,
            output,
        }
    }

    /// `W = V/‖V_row‖` and 1/‖V_row‖ (`torch.nn.utils.weight_norm` over dim 0, g = 1).
    fn normalised_last(&self) -> (Vec<f32>, Vec<f32>) {
        let bn = self.config.bottleneck;
        let mut w = self.last_v.clone();
        let mut inv = Vec::with_capacity(self.config.out_dim);
        for row in w.chunks_exact_mut(bn) {
            let r = 1.0 / row.iter().map(|v| v * v).sum::<f32>().sqrt();
            row.iter_mut().for_each(|v| *v *= r);
            inv.push(r);
        }
        (w, inv)
    }

    /// Adds the parameter gradients for `dout` = ∂L/∂output (rows, out_dim) to
    /// `grads`; returns ∂L/∂input (rows, in_dim).
    pub fn backward(
        &self,
        fwd: &HeadForward,
        dout: &[f32],
        grads: &mut HeadGrads,
        threads: Threads,
    ) -> Vec<f32> {
        let c = &self.config;
        let (rows, bn) = (fwd.rows, c.bottleneck);
        // Last layer: dW = doutᵀ·ẑ, then through the weight norm.
        let mut dw = vec![0f32; c.out_dim * bn];
        matmul(
            &mut dw,
            bn,
            MatRef::row_major(dout, rows, c.out_dim).t(),
            MatRef::row_major(&fwd.z_hat, rows, bn),
            false,
            threads,
        );
        for (((dv, dwi), wi), &inv) in grads
            .last_v
            .chunks_exact_mut(bn)
            .zip(dw.chunks_exact(bn))
            .zip(fwd.w_last.chunks_exact(bn))
            .zip(&fwd.inv_v_norm)
        {
            let proj: f32 = dwi.iter().zip(wi).map(|(a, b)| a * b).sum();
            for ((d, &a), &b) in dv.iter_mut().zip(dwi).zip(wi) {
                *d += (a - proj * b) * inv;
            }
        }
        // ∂L/∂ẑ = dout·W, then through the L2 normalisation.
        let mut dz = vec![0f32; rows * bn];
        linear_backward_input(
            MatRef::row_major(dout, rows, c.out_dim),
            &fwd.w_last,
            &mut dz,
            threads,
        );
        for ((g, zh), &inv) in dz
            .chunks_exact_mut(bn)
            .zip(fwd.z_hat.chunks_exact(bn))
            .zip(&fwd.inv_norm)
        {
            let proj: f32 = g.iter().zip(zh).map(|(a, b)| a * b).sum();
            g.iter_mut()
                .zip(zh)
                .for_each(|(a, &b)| *a = (*a - proj * b) * inv);
        }
        // The MLP, last layer first.
        let inputs = [&fwd.input, &fwd.act[0], &fwd.act[1]];
        let mut dy = dz;
        for k in (0..3).rev() {
            let x = inputs[k];
            let in_w = x.len() / rows.max(1);
            linear_backward_params(&dy, x, rows, &mut grads.w[k], &mut grads.b[k], threads);
            let mut dx = vec![0f32; rows * in_w];
            linear_backward_input(
                MatRef::row_major(&dy, rows, self.b[k].len()),
                &self.w[k],
                &mut dx,
                threads,
            );
            if k > 0 {
                dx.iter_mut()
                    .zip(&fwd.dact[k - 1])
                    .for_each(|(g, d)| *g *= d);
            }
            dy = dx;
        }
        dy
    }
}

impl HeadGrads {
    /// The gradients by name, in [`ProjectionHead::tensors_mut`]'s order.
    pub fn named(&self) -> Vec<(String, &Vec<f32>)> {
        vec![
            ("head.mlp.0.weight".into(), &self.w[0]),
            ("head.mlp.0.bias".into(), &self.b[0]),
            ("head.mlp.2.weight".into(), &self.w[1]),
            ("head.mlp.2.bias".into(), &self.b[1]),
            ("head.mlp.4.weight".into(), &self.w[2]),
            ("head.mlp.4.bias".into(), &self.b[2]),
            ("head.last_layer.weight_v".into(), &self.last_v),
        ]
    }

    /// Every gradient tensor, mutable (for clipping).
    pub fn tensors_mut(&mut self) -> Vec<&mut Vec<f32>> {
        let [w0, w1, w2] = &mut self.w;
        let [b0, b1, b2] = &mut self.b;
        vec![w0, b0, w1, b1, w2, b2, &mut self.last_v]
    }
}
