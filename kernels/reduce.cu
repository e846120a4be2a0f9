// Relevance reductions: the channel reduction of an attribution (3, H, W) → (H, W)
// and the min/max of a map (for min-max normalisation).
// CPU twins: attr::relevance::reduce_channels, attr::features::min_max.
#ifndef ES_COMMON_CUH
#include "common.cuh"
#endif

// mode: 0 Σ_c a_c, 1 |Σ_c a_c|, 2 max(Σ_c a_c, 0), 3 Σ_c |a_c| (attr::relevance::Reduction).
extern "C" __global__ void reduce_channels_f32(const float* __restrict__ attr, float* __restrict__ out, int channels,
                                               int hw, int mode) {
    for (long long p = es_global_index(); p < hw; p += es_grid_stride()) {
        float s = 0.0f;
        for (int c = 0; c < channels; ++c) {
            const float v = attr[(long long)c * hw + p];
            s += mode == 3 ? fabsf(v) : v;
        }
        out[p] = mode == 1 ? fabsf(s) : mode == 2 ? fmaxf(s, 0.0f) : s;
    }
}

// out[0] = min, out[1] = max over x[0..n); launch with a single block.
extern "C" __global__ void min_max_f32(const float* __restrict__ x, int n, float* __restrict__ out) {
    float lo = -ES_NEG_INF, hi = ES_NEG_INF;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        lo = fminf(lo, x[i]);
        hi = fmaxf(hi, x[i]);
    }
    lo = -es_block_max(-lo);
    hi = es_block_max(hi);
    if (threadIdx.x == 0) {
        out[0] = lo;
        out[1] = hi;
    }
}
