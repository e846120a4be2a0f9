// Deliberately broken kernels that show the emulator catches what it claims to:
// a barrier skipped by one thread (deadlock) and a reduction missing a barrier
// (a race whose result depends on the thread schedule). Emulator builds only.
#ifndef ES_COMMON_CUH
#include "../common.cuh"
#endif

// Thread 0 returns before the barrier the others wait at.
extern "C" __global__ void selftest_early_return(float* out) {
    if (threadIdx.x == 0) return;
    __syncthreads();
    out[threadIdx.x] = 1.0f;
}

// Sums blockDim.x values through shared memory without the __syncthreads between
// the writes and the read: thread 0 may read slots not written yet.
extern "C" __global__ void selftest_missing_barrier(const float* in, float* out) {
    __shared__ float slots[1024];
    slots[threadIdx.x] = in[threadIdx.x];
    if (threadIdx.x == 0) {
        float s = 0.0f;
        for (unsigned i = 0; i < blockDim.x; ++i) s += slots[i];
        out[0] = s;
    }
}
