// From the device's attribution to the relevance map the mask stage reads, without
// the attribution leaving the device: the explained class chosen from the logits,
// the channel reduction, the Gaussian blur and the min-max scaling. Each value is
// computed with the round-to-nearest intrinsics in the CPU's order, so the map is
// bit-identical to the host's.
// CPU twins: attr::explain::argmax, attr::relevance::reduce_channels,
// attr::smooth::gaussian_smooth, attr::features::min_max.
#ifndef ES_COMMON_CUH
#include "common.cuh"
#endif

#define ES_POS_INF __int_as_float(0x7f800000)
// Rust's f32 `Sum` starts from −0.0 (so a sum of −0.0 stays −0.0); the blur does too.
#define ES_NEG_ZERO __int_as_float(0x80000000)

// targets[0..rows) ← `requested` when ≥ 0, else the arg-max of `logits` (lowest
// index on ties; NaN never wins). One block.
extern "C" __global__ void select_target_i32(const float* __restrict__ logits, int classes, int requested,
                                             int* __restrict__ targets, int rows) {
    __shared__ int chosen;
    if (threadIdx.x == 0) {
        int best = 0;
        if (requested >= 0) {
            best = requested;
        } else {
            for (int i = 1; i < classes; ++i)
                if (logits[i] > logits[best]) best = i;
        }
        chosen = best;
    }
    __syncthreads();
    for (int r = threadIdx.x; r < rows; r += blockDim.x) targets[r] = chosen;
}

// (3, plane) → (plane): mode 0 Σ_c a_c, 1 |Σ_c a_c|, 2 max(Σ_c a_c, 0), 3 Σ_c |a_c|.
// The sum runs 0 + a_0 + a_1 + a_2, as ndarray's sum over the outer axis.
extern "C" __global__ void reduce_channels_f32(const float* __restrict__ attr, float* __restrict__ out, int plane,
                                               int mode) {
    for (long long p = es_global_index(); p < plane; p += es_grid_stride()) {
        float s = 0.0f;
        for (int c = 0; c < 3; ++c) {
            const float v = attr[(long long)c * plane + p];
            s = __fadd_rn(s, mode == 3 ? fabsf(v) : v);
        }
        if (mode == 1) s = fabsf(s);
        if (mode == 2) s = s > 0.0f ? s : 0.0f;
        out[p] = s;
    }
}

// `i` mirrored into 0..n with the edge sample repeated (scipy's `reflect`).
__device__ __forceinline__ int es_reflect(int i, int n) {
    const int period = 2 * n;
    int m = i % period;
    if (m < 0) m += period;
    return m < n ? m : period - 1 - m;
}

// One axis of a separable blur of an (h, w) map: out = Σ_k w_k · in[reflect(· + k − r)]
// along rows (axis 0) or columns (axis 1), taps summed in order. `in` ≠ `out`.
extern "C" __global__ void blur_axis_f32(const float* __restrict__ in, float* __restrict__ out,
                                         const float* __restrict__ weights, int taps, int h, int w, int axis) {
    const long long n = (long long)h * w;
    const int radius = taps / 2;
    for (long long o = es_global_index(); o < n; o += es_grid_stride()) {
        const int i = int(o / w), j = int(o % w);
        float s = ES_NEG_ZERO;
        for (int k = 0; k < taps; ++k) {
            const float v = axis == 0 ? in[(long long)es_reflect(i + k - radius, h) * w + j]
                                      : in[(long long)i * w + es_reflect(j + k - radius, w)];
            s = __fadd_rn(s, __fmul_rn(weights[k], v));
        }
        out[o] = s;
    }
}

// lohi ← (min, max) of v[0..n) (NaN ignored, as f32::min / f32::max). One block.
extern "C" __global__ void min_max_f32(const float* __restrict__ v, int n, float* __restrict__ lohi) {
    float lo = ES_POS_INF, hi = ES_NEG_INF;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        lo = fminf(lo, v[i]);
        hi = fmaxf(hi, v[i]);
    }
    // min(v) = −max(−v) exactly: negation only flips the sign bit.
    lo = -es_block_max(-lo);
    hi = es_block_max(hi);
    if (threadIdx.x == 0) {
        lohi[0] = lo;
        lohi[1] = hi;
    }
}

// v ← (v − lo)/(hi − lo) with (lo, hi) from min_max_f32; all zeros unless hi > lo.
extern "C" __global__ void min_max_scale_f32(float* __restrict__ v, int n, const float* __restrict__ lohi) {
    const float lo = lohi[0], hi = lohi[1];
    const bool spread = hi > lo;
    for (long long i = es_global_index(); i < n; i += es_grid_stride())
        v[i] = spread ? __fdiv_rn(__fsub_rn(v[i], lo), __fsub_rn(hi, lo)) : 0.0f;
}
