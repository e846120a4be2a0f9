// CPU emulation of the CUDA execution model, so the kernels in kernels/*.cu can be
// compiled with g++ and tested in CI without a GPU (see docs/cuda_emulation.md).
//
// Model: the blocks of a grid run one after another on the calling OS thread; the
// threads of a block are fibers (ucontext) that switch only at barriers
// (__syncthreads, __syncwarp and the *_sync warp intrinsics). Warp intrinsics have
// Volta+ semantics: lanes meet only at the *_sync call. Shared memory lives in one
// linker section that is filled with 0xFF (NaN as f32) before every block, so reads
// of unwritten shared memory show up in the results. The order in which fibers are
// resumed after each barrier is a parameter (forward, reverse, seeded random), so
// missing barriers change the results under at least one order.
//
// Limits: full-warp masks only, block sizes that are multiples of 32, no dynamic
// shared memory, no grid-wide sync, no inter-block communication except atomics.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__
#define __launch_bounds__(...)
#define __shared__ static __attribute__((section("es_shared"), aligned(16)))

struct uint3 {
    unsigned x, y, z;
};
struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

// Set by the scheduler before it resumes a fiber.
inline uint3 threadIdx;
inline uint3 blockIdx;
inline dim3 blockDim;
inline dim3 gridDim;
constexpr int warpSize = 32;

namespace emu {

// The running block's synchronisation entry points (defined in emu_runtime.h).
inline void sync_block();
inline void sync_warp(unsigned mask);
inline unsigned long long warp_exchange(unsigned mask, unsigned long long mine, int src_lane, bool keep_own);
[[noreturn]] inline void fail(const std::string& what);

template <typename T>
inline T shfl(unsigned mask, T v, int src_lane, bool keep_own) {
    static_assert(sizeof(T) <= 8, "shuffle of a type wider than 8 bytes");
    unsigned long long bits = 0;
    std::memcpy(&bits, &v, sizeof(T));
    bits = warp_exchange(mask, bits, src_lane, keep_own);
    T out;
    std::memcpy(&out, &bits, sizeof(T));
    return out;
}

inline int lane_id() { return int(threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z)) & 31; }

}  // namespace emu

inline void __syncthreads() { emu::sync_block(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { emu::sync_warp(mask); }

template <typename T>
inline T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
    int lane = emu::lane_id();
    int base = lane & ~(width - 1);
    return emu::shfl(mask, v, base + (src & (width - 1)), false);
}
template <typename T>
inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
    int lane = emu::lane_id();
    int src = lane ^ lane_mask;
    bool outside = (src & ~(width - 1)) != (lane & ~(width - 1));
    return emu::shfl(mask, v, outside ? lane : src, outside);
}
template <typename T>
inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    int lane = emu::lane_id();
    int src = lane + int(delta);
    bool outside = (src & ~(width - 1)) != (lane & ~(width - 1));
    return emu::shfl(mask, v, outside ? lane : src, outside);
}
template <typename T>
inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    int lane = emu::lane_id();
    int src = lane - int(delta);
    bool outside = src < (lane & ~(width - 1));
    return emu::shfl(mask, v, outside ? lane : src, outside);
}

// Atomics. A read-modify-write runs without a switch in between, so it is atomic; but
// the calling fiber first yields to the scheduler, so that the threads of a block
// interleave at every atomic in the order of the schedule (forward, reverse, random).
// Code that reads a value and acts on it with a *separate* atomic (check-then-act)
// then sees other threads' updates in between, as on a GPU (selftest_atomic_race).
namespace emu {
inline void atomic_yield();
}
template <typename T>
inline T atomicAdd(T* p, T v) {
    emu::atomic_yield();
    T old = *p;
    *p = old + v;
    return old;
}
template <typename T>
inline T atomicMax(T* p, T v) {
    emu::atomic_yield();
    T old = *p;
    *p = std::max(old, v);
    return old;
}
template <typename T>
inline T atomicMin(T* p, T v) {
    emu::atomic_yield();
    T old = *p;
    *p = std::min(old, v);
    return old;
}
template <typename T>
inline T atomicExch(T* p, T v) {
    emu::atomic_yield();
    T old = *p;
    *p = v;
    return old;
}
inline unsigned atomicCAS(unsigned* p, unsigned cmp, unsigned v) {
    emu::atomic_yield();
    unsigned old = *p;
    if (old == cmp) *p = v;
    return old;
}
inline unsigned long long atomicCAS(unsigned long long* p, unsigned long long cmp, unsigned long long v) {
    emu::atomic_yield();
    unsigned long long old = *p;
    if (old == cmp) *p = v;
    return old;
}

// Math: the host's correctly rounded (or nearly) versions. GPU intrinsics may differ
// by a few ulp; tests take their tolerances from the GPU's documented error bounds.
// expf, erfcf, sqrtf, log, cos, ... come from the C library (<cmath>); only the
// CUDA-specific names are defined here.
inline float __expf(float x) { return std::exp(x); }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
    return (unsigned long long)(((unsigned __int128)a * b) >> 64);
}
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dsub_rn(double a, double b) { return a - b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline long long __double_as_longlong(double v) { long long i; std::memcpy(&i, &v, 8); return i; }
inline double __longlong_as_double(long long v) { double d; std::memcpy(&d, &v, 8); return d; }
inline double __ddiv_rn(double a, double b) { return a / b; }
inline double __dsqrt_rn(double a) { return std::sqrt(a); }
inline float __int_as_float(int v) { float f; std::memcpy(&f, &v, 4); return f; }
inline int __float_as_int(float v) { int i; std::memcpy(&i, &v, 4); return i; }
inline float __uint_as_float(unsigned v) { float f; std::memcpy(&f, &v, 4); return f; }
inline unsigned __float_as_uint(float v) { unsigned i; std::memcpy(&i, &v, 4); return i; }
inline float __ull2float_rn(unsigned long long v) { return float(v); }
inline double __ull2double_rn(unsigned long long v) { return double(v); }
inline double __uint2double_rn(unsigned v) { return double(v); }
inline float __double2float_rn(double v) { return float(v); }
