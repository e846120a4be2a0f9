// Bias adds and the seed of the backward (the head rows of the targets). Grid-stride
// loops over the elements. CPU twins: backend::cpu::ops::{add_bias_rows, head_rows}.
#ifndef ES_COMMON_CUH
#include "common.cuh"
#endif

// x[r, c] += bias[c] for a row-major (rows, cols) matrix.
extern "C" __global__ void add_bias_rows_f32(float* __restrict__ x, const float* __restrict__ bias, int rows, int cols) {
    const long long n = (long long)rows * cols;
    for (long long i = es_global_index(); i < n; i += es_grid_stride()) x[i] += bias[i % cols];
}

// d_features[b, :] = head_w[targets[b], :]: ∂ logit[target] / ∂ feature.
extern "C" __global__ void head_rows_f32(const float* __restrict__ head_w, const int* __restrict__ targets,
                                         float* __restrict__ d_features, int batch, int in_dim) {
    const long long n = (long long)batch * in_dim;
    for (long long i = es_global_index(); i < n; i += es_grid_stride()) {
        const long long b = i / in_dim, k = i % in_dim;
        d_features[i] = head_w[(long long)targets[b] * in_dim + k];
    }
}
