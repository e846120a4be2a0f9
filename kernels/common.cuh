// Shared by every kernel file: the emulator switch, warp/block reductions, index
// helpers. Kernels are `extern "C" __global__ <op>_f32[_bwd]` and are launched
// only through src/backend/cuda/launch.rs (or the emulator's table in CI), never
// with <<<...>>>, so the same source compiles with NVRTC, nvcc and g++.
//
// Reductions assume blockDim.x is a multiple of 32 (≤ 1024) and that every thread
// of the block calls them (no early return before a reduction).
#ifndef ES_COMMON_CUH
#define ES_COMMON_CUH

#ifdef ES_EMULATE
#include "emu/cuda_emu.h"
#endif

#define ES_FULL_MASK 0xffffffffu
// NVRTC has no <cmath>, hence no INFINITY macro.
#define ES_NEG_INF __int_as_float(0xff800000)

__device__ __forceinline__ float es_warp_sum(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(ES_FULL_MASK, v, offset);
    return v;
}

__device__ __forceinline__ float es_warp_max(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(ES_FULL_MASK, v, offset));
    return v;
}

// Sum over the block, returned to every thread. Two barriers: the first keeps a
// previous call's readers from seeing this call's partials.
__device__ __forceinline__ float es_block_sum(float v) {
    __shared__ float partial[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    v = es_warp_sum(v);
    __syncthreads();
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    return es_warp_sum(lane < n_warps ? partial[lane] : 0.0f);
}

__device__ __forceinline__ float es_block_max(float v) {
    __shared__ float partial[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    v = es_warp_max(v);
    __syncthreads();
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    return es_warp_max(lane < n_warps ? partial[lane] : ES_NEG_INF);
}

// Flat index of this thread in a 1-D grid, and the grid-stride step.
__device__ __forceinline__ long long es_global_index() { return (long long)blockIdx.x * blockDim.x + threadIdx.x; }
__device__ __forceinline__ long long es_grid_stride() { return (long long)gridDim.x * blockDim.x; }

#endif  // ES_COMMON_CUH
