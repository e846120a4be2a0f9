// Bias + exact (erf) GELU, as timm's nn.GELU(), saving the derivative for the
// backward; and the backward itself (a multiply by the saved derivative).
// CPU twins: backend::cpu::ops::{add_bias_rows, gelu_in_place_with_grad, gelu_bwd}.
#ifndef ES_COMMON_CUH
#include "common.cuh"
#endif

// h ← GELU(h + bias) per (rows, cols) element, dgelu ← Φ(h + bias) + (h + bias)·φ(h + bias).
extern "C" __global__ void bias_gelu_f32(float* __restrict__ h, const float* __restrict__ bias,
                                         float* __restrict__ dgelu, int rows, int cols) {
    const long long n = (long long)rows * cols;
    for (long long i = es_global_index(); i < n; i += es_grid_stride()) {
        const float v = h[i] + bias[i % cols];
        const float cdf = 0.5f * erfcf(-v * 0.70710678118654752f);
        const float pdf = 0.39894228040143268f * expf(-0.5f * v * v);
        dgelu[i] = cdf + v * pdf;
        h[i] = v * cdf;
    }
}

// g ← g·dgelu (the saved GELU derivative).
extern "C" __global__ void gelu_bwd_f32(const float* __restrict__ dgelu, float* __restrict__ g, int n) {
    for (long long i = es_global_index(); i < n; i += es_grid_stride()) g[i] *= dgelu[i];
}
