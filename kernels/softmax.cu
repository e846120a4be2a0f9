// Row softmax of scaled attention scores, in place, and its backward. One block per
// row (a row is one query's scores over the T keys).
// CPU twins: backend::cpu::ops::{softmax_row, softmax_bwd_row}.
#ifndef ES_COMMON_CUH
#include "common.cuh"
#endif

// s ← softmax(scale·s), max-subtracted.
extern "C" __global__ void softmax_scale_f32(float* __restrict__ s, int rows, int cols, float scale) {
    const int row = blockIdx.x;
    if (row >= rows) return;
    float* sr = s + (long long)row * cols;
    float m = ES_NEG_INF;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) m = fmaxf(m, sr[i] * scale);
    m = es_block_max(m);
    float sum = 0.0f;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) {
        const float e = expf(sr[i] * scale - m);
        sr[i] = e;
        sum += e;
    }
    const float inv = 1.0f / es_block_sum(sum);
    for (int i = threadIdx.x; i < cols; i += blockDim.x) sr[i] *= inv;
}

// dp ← scale·p ⊙ (dp − ⟨dp, p⟩): the gradient w.r.t. the unscaled scores.
extern "C" __global__ void softmax_bwd_f32(const float* __restrict__ p, float* __restrict__ dp, int rows, int cols,
                                           float scale) {
    const int row = blockIdx.x;
    if (row >= rows) return;
    const float* pr = p + (long long)row * cols;
    float* dr = dp + (long long)row * cols;
    float dot = 0.0f;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) dot += pr[i] * dr[i];
    dot = es_block_sum(dot);
    for (int i = threadIdx.x; i < cols; i += blockDim.x) dr[i] = scale * pr[i] * (dr[i] - dot);
}
