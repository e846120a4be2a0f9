// LayerNorm over the last axis (biased variance, as torch.nn.LayerNorm) and its
// input gradient. One block per row; rows may be strided (the CLS rows of a batch
// are `tokens·dim` apart), the saved x̂ is always packed (rows, cols).
// CPU twins: backend::cpu::ops::{layer_norm_row, layer_norm_bwd_row}.
#ifndef ES_COMMON_CUH
#include "common.cuh"
#endif

// y = (x − μ)·r·γ + β with r = 1/√(σ² + ε); saves x̂ = (x − μ)·r and r.
extern "C" __global__ void layer_norm_f32(const float* __restrict__ x, int x_ld, const float* __restrict__ gamma,
                                          const float* __restrict__ beta, float* __restrict__ y, int y_ld,
                                          float* __restrict__ xhat, float* __restrict__ rstd, int rows, int cols,
                                          float eps) {
    const int row = blockIdx.x;
    if (row >= rows) return;  // uniform per block: no barrier is skipped by part of it
    const float* xr = x + (long long)row * x_ld;
    float s = 0.0f;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) s += xr[i];
    const float mean = es_block_sum(s) / cols;
    float q = 0.0f;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) {
        const float c = xr[i] - mean;
        q += c * c;
    }
    const float var = es_block_sum(q) / cols;
    const float r = 1.0f / sqrtf(var + eps);
    float* yr = y + (long long)row * y_ld;
    float* hr = xhat + (long long)row * cols;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) {
        const float h = (xr[i] - mean) * r;
        hr[i] = h;
        yr[i] = h * gamma[i] + beta[i];
    }
    if (threadIdx.x == 0) rstd[row] = r;
}

// dx = r·(gγ − mean(gγ) − x̂·mean(gγ ⊙ x̂)); added to dx when `accumulate` != 0.
extern "C" __global__ void layer_norm_bwd_f32(const float* __restrict__ g, int g_ld, const float* __restrict__ gamma,
                                              const float* __restrict__ xhat, const float* __restrict__ rstd,
                                              float* __restrict__ dx, int dx_ld, int rows, int cols, int accumulate) {
    const int row = blockIdx.x;
    if (row >= rows) return;
    const float* gr = g + (long long)row * g_ld;
    const float* hr = xhat + (long long)row * cols;
    float a = 0.0f, b = 0.0f;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) {
        const float gg = gr[i] * gamma[i];
        a += gg;
        b += gg * hr[i];
    }
    const float mean_gg = es_block_sum(a) / cols;
    const float mean_gg_xhat = es_block_sum(b) / cols;
    const float r = rstd[row];
    float* dr = dx + (long long)row * dx_ld;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) {
        const float v = r * (gr[i] * gamma[i] - mean_gg - hr[i] * mean_gg_xhat);
        dr[i] = accumulate ? dr[i] + v : v;
    }
}
