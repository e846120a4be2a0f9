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

// A planted race between atomics (check-then-act): each thread reads the claim word
// with one atomic and, seeing it free, claims it with another. On a GPU other threads
// can claim in between, so several "win"; the emulator yields at every atomic, so it
// shows the same. `order` records the winners in the order they won.
extern "C" __global__ void selftest_atomic_race(unsigned long long* claim, unsigned* winners, unsigned* order) {
    const unsigned long long seen = atomicAdd(claim, 0ull);
    if (seen == 0ull) {
        atomicExch(claim, (unsigned long long)threadIdx.x + 1ull);
        order[atomicAdd(winners, 1u)] = threadIdx.x;
    }
}

// The correct claim: one 64-bit atomicCAS tests and sets, so exactly one thread wins
// under every schedule (which one depends on the schedule).
extern "C" __global__ void selftest_atomic_claim(unsigned long long* claim, unsigned* winners, unsigned* order) {
    if (atomicCAS(claim, 0ull, (unsigned long long)threadIdx.x + 1ull) == 0ull)
        order[atomicAdd(winners, 1u)] = threadIdx.x;
}
