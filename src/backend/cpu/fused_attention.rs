//! The CPU twin of `kernels/attention.cu`: fused multi-head attention that keeps only
//! each query row's log-sum-exp, and its backward recomputing the probabilities from
//! Q, K and that LSE (FlashAttention's online softmax; FlashAttention-2's dQ pass
//! after D_i = rowsum(dO∘O), then the dK/dV pass). Same f32 operations in the same
//! order as the kernels, so under the emulator (no FMA contraction, the host's
//! `expf`/`logf`) the two agree to the last bit; a GPU differs by its `expf` ulps and
//! FMA contraction. A reference for tests, not used by the CPU engine (whose
//! attention materialises P, see `forward::attention_forward`).
//!
//! Layouts: qkv (batch, T, 3·D) with head h's q, k, v at columns h·hd, D + h·hd,
//! 2·D + h·hd; O and dO (batch, T, D); LSE and D (batch, heads, T); dQ|dK|dV in the
//! layout of qkv.

/// Key rows per tile of the forward (`ES_ATTN_KTILE`): the online softmax rescales
/// once per tile, so the tiling is part of the arithmetic.
pub const KEY_TILE: usize = 32;

/// Shape of one fused attention call (the CPU twin's and the CUDA kernels').
#[derive(Debug, Clone, Copy)]
pub struct AttnShape {
    pub batch: usize,
    pub heads: usize,
    pub tokens: usize,
    pub head_dim: usize,
}

impl AttnShape {
    fn dim(&self) -> usize {
        self.heads * self.head_dim
    }
    /// Length of qkv and dQ|dK|dV: (batch, tokens, 3·D).
    pub fn qkv_len(&self) -> usize {
        self.batch * self.tokens * 3 * self.dim()
    }
    /// Length of O and dO: (batch, tokens, D).
    pub fn out_len(&self) -> usize {
        self.batch * self.tokens * self.dim()
    }
    /// Length of the per-row statistics (LSE, D): (batch, heads, tokens).
    pub fn rows(&self) -> usize {
        self.batch * self.heads * self.tokens
    }
    /// Head h's row `i` of q (part 0), k (1) or v (2) of image `img`.
    fn qkv_row<'a>(
        &self,
        qkv: &'a [f32],
        img: usize,
        part: usize,
        h: usize,
        i: usize,
    ) -> &'a [f32] {
        let d = self.dim();
        let start = (img * self.tokens + i) * 3 * d + part * d + h * self.head_dim;
        &qkv[start..start + self.head_dim]
    }
    /// Offset of head h's row `i` of image `img` in a (batch, T, D) matrix.
    fn out_row(&self, img: usize, h: usize, i: usize) -> usize {
        (img * self.tokens + i) * self.dim() + h * self.head_dim
    }
    /// Offset of row `i` of (image, head) in a (batch, heads, T) vector.
    fn stat(&self, img: usize, h: usize, i: usize) -> usize {
        (img * self.heads + h) * self.tokens + i
    }
}

/// Σ_c a_c·b_c in order from 0.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut s = 0.0f32;
    for (x, y) in a.iter().zip(b) {
        s += x * y;
    }
    s
}

/// `out` (batch, T, D) ← softmax(scale·Q·Kᵀ)·V per head; `lse` (batch, heads, T) ←
/// log Σ_j exp(scale·q_i·k_j). Kernel `attention_fwd_f32`.
pub fn forward(qkv: &[f32], shape: AttnShape, scale: f32, out: &mut [f32], lse: &mut [f32]) {
    let (t, hd) = (shape.tokens, shape.head_dim);
    let mut scores = [0.0f32; KEY_TILE];
    let mut acc = vec![0.0f32; hd];
    for img in 0..shape.batch {
        for h in 0..shape.heads {
            for i in 0..t {
                let q = shape.qkv_row(qkv, img, 0, h, i);
                acc.fill(0.0);
                let (mut m, mut l) = (f32::NEG_INFINITY, 0.0f32);
                for j0 in (0..t).step_by(KEY_TILE) {
                    let nk = KEY_TILE.min(t - j0);
                    let mut tile_max = f32::NEG_INFINITY;
                    for (jj, s) in scores[..nk].iter_mut().enumerate() {
                        *s = dot(q, shape.qkv_row(qkv, img, 1, h, j0 + jj)) * scale;
                        tile_max = tile_max.max(*s);
                    }
                    let m_new = m.max(tile_max);
                    let alpha = (m - m_new).exp();
                    l *= alpha;
                    for s in &mut scores[..nk] {
                        *s = (*s - m_new).exp();
                        l += *s;
                    }
                    for (c, a) in acc.iter_mut().enumerate() {
                        *a *= alpha;
                        for (jj, p) in scores[..nk].iter().enumerate() {
                            *a += p * shape.qkv_row(qkv, img, 2, h, j0 + jj)[c];
                        }
                    }
                    m = m_new;
                }
                let o = shape.out_row(img, h, i);
                for (dst, a) in out[o..o + hd].iter_mut().zip(&acc) {
                    *dst = a / l;
                }
                lse[shape.stat(img, h, i)] = m + l.ln();
            }
        }
    }
}

/// The backward of [`forward`] given dO (batch, T, D): `delta` (batch, heads, T) ←
/// D_i = Σ_c dO_ic·O_ic, then with P_ij = exp(scale·q_i·k_j − lse_i),
/// dP_ij = dO_i·v_j and dS_ij = P_ij (dP_ij − D_i): dQ_i = scale·Σ_j dS_ij k_j,
/// dK_j = scale·Σ_i dS_ij q_i, dV_j = Σ_i P_ij dO_i, written into `gqkv` (batch, T, 3·D).
/// Kernels `attention_bwd_dq_f32` then `attention_bwd_dkdv_f32`.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    qkv: &[f32],
    out: &[f32],
    d_out: &[f32],
    lse: &[f32],
    shape: AttnShape,
    scale: f32,
    delta: &mut [f32],
    gqkv: &mut [f32],
) {
    let (t, hd, d) = (shape.tokens, shape.head_dim, shape.dim());
    let mut acc = vec![0.0f32; hd];
    let mut acc2 = vec![0.0f32; hd];
    for img in 0..shape.batch {
        for h in 0..shape.heads {
            // Pass 1: D_i, then dQ_i, per query row.
            for i in 0..t {
                let o = shape.out_row(img, h, i);
                let d_oi = &d_out[o..o + hd];
                let d_i = dot(d_oi, &out[o..o + hd]);
                let lse_i = lse[shape.stat(img, h, i)];
                delta[shape.stat(img, h, i)] = d_i;
                let q = shape.qkv_row(qkv, img, 0, h, i);
                acc.fill(0.0);
                for j in 0..t {
                    let k = shape.qkv_row(qkv, img, 1, h, j);
                    let p = (dot(q, k) * scale - lse_i).exp();
                    let dp = dot(d_oi, shape.qkv_row(qkv, img, 2, h, j));
                    let ds = p * (dp - d_i);
                    acc.iter_mut().zip(k).for_each(|(a, kc)| *a += ds * kc);
                }
                let g = (img * t + i) * 3 * d + h * hd;
                for (dst, a) in gqkv[g..g + hd].iter_mut().zip(&acc) {
                    *dst = scale * a;
                }
            }
            // Pass 2: dK_j and dV_j, per key row.
            for j in 0..t {
                let k = shape.qkv_row(qkv, img, 1, h, j);
                let v = shape.qkv_row(qkv, img, 2, h, j);
                acc.fill(0.0); // dK
                acc2.fill(0.0); // dV
                for i in 0..t {
                    let q = shape.qkv_row(qkv, img, 0, h, i);
                    let o = shape.out_row(img, h, i);
                    let d_oi = &d_out[o..o + hd];
                    let p = (dot(q, k) * scale - lse[shape.stat(img, h, i)]).exp();
                    let dp = dot(d_oi, v);
                    let ds = p * (dp - delta[shape.stat(img, h, i)]);
                    for c in 0..hd {
                        acc2[c] += p * d_oi[c];
                        acc[c] += ds * q[c];
                    }
                }
                let g = (img * t + j) * 3 * d + h * hd;
                for c in 0..hd {
                    gqkv[g + d + c] = scale * acc[c];
                    gqkv[g + 2 * d + c] = acc2[c];
                }
            }
        }
    }
}
