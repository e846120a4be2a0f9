// Patch embedding as a GEMM: im2col turns (batch, 3, H, W) into patch rows
// (batch·Np, 3·p·p) in the conv weight's (channel, row, col) order; col2im is its
// adjoint (the patches do not overlap, so it is a permutation) and gives the input
// gradient; embed_tokens_f32 assembles [CLS; patches + bias] + positions.
// CPU twins: backend::cpu::forward::im2col and backward::patch_embed_backward
// (exposed as backend::cpu::ops::{im2col, col2im, embed_tokens}).
#ifndef ES_COMMON_CUH
#include "common.cuh"
#endif

extern "C" __global__ void im2col_f32(const float* __restrict__ x, float* __restrict__ cols, int batch, int height,
                                      int width, int patch, int grid_rows, int grid_cols) {
    const int row_len = 3 * patch * patch;
    const int n_patches = grid_rows * grid_cols;
    const long long n = (long long)batch * n_patches * row_len;
    for (long long o = es_global_index(); o < n; o += es_grid_stride()) {
        const long long row = o / row_len;
        const int col = int(o % row_len);
        const int b = int(row / n_patches), pi = int(row % n_patches);
        const int i = pi / grid_cols, j = pi % grid_cols;
        const int c = col / (patch * patch), u = (col / patch) % patch, v = col % patch;
        cols[o] = x[(((long long)b * 3 + c) * height + i * patch + u) * width + j * patch + v];
    }
}

// Pixels outside the patch grid (none for sizes that are multiples of the patch) get 0.
extern "C" __global__ void col2im_f32(const float* __restrict__ cols, float* __restrict__ x, int batch, int height,
                                      int width, int patch, int grid_rows, int grid_cols) {
    const int row_len = 3 * patch * patch;
    const int n_patches = grid_rows * grid_cols;
    const long long n = (long long)batch * 3 * height * width;
    for (long long o = es_global_index(); o < n; o += es_grid_stride()) {
        const int xx = int(o % width), yy = int((o / width) % height);
        const int c = int((o / ((long long)width * height)) % 3);
        const int b = int(o / (3LL * width * height));
        const int i = yy / patch, j = xx / patch;
        if (i >= grid_rows || j >= grid_cols) {
            x[o] = 0.0f;
            continue;
        }
        const int u = yy % patch, v = xx % patch;
        x[o] = cols[((long long)b * n_patches + i * grid_cols + j) * row_len + (c * patch + u) * patch + v];
    }
}

// xs[b, 0] = cls + pos[0]; xs[b, t] = (emb[b, t−1] + bias) + pos[t] for t ≥ 1.
extern "C" __global__ void embed_tokens_f32(const float* __restrict__ emb, const float* __restrict__ patch_b,
                                            const float* __restrict__ cls, const float* __restrict__ pos,
                                            float* __restrict__ xs, int batch, int tokens, int dim) {
    const long long n = (long long)batch * tokens * dim;
    for (long long o = es_global_index(); o < n; o += es_grid_stride()) {
        const int k = int(o % dim);
        const int t = int((o / dim) % tokens);
        const long long b = o / ((long long)dim * tokens);
        const float p = pos[(long long)t * dim + k];
        if (t == 0)
            xs[o] = cls[k] + p;
        else
            xs[o] = (emb[(b * (tokens - 1) + t - 1) * dim + k] + patch_b[k]) + p;
    }
}
