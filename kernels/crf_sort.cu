// DenseCRF on the GPU, part 2: the deterministic building blocks of the lattice's vertex
// table — an exclusive prefix sum and a stable radix sort of 32-bit keys with a 32-bit
// payload. Both give the same result under any thread schedule: the scan adds integers
// (exact), the sort ranks equal keys by their position (stable), never by arrival.
#ifndef ES_COMMON_CUH
#include "common.cuh"
#endif

#define ES_SCAN_THREADS 1024
#define ES_RADIX_TILE 256
#define ES_RADIX_BUCKETS 256

// out[i] = Σ_{k<i} in[k] for i < n, and *total = Σ in. One block of ES_SCAN_THREADS
// threads: each sums a contiguous chunk, thread 0 scans the chunk sums, each thread
// then writes its chunk.
extern "C" __global__ void scan_exclusive_u32(const unsigned* in, int n, unsigned* out, unsigned* total) {
    __shared__ unsigned chunk_base[ES_SCAN_THREADS];
    const int t = threadIdx.x, threads = blockDim.x;
    const int per = (n + threads - 1) / threads;
    const int lo = t * per < n ? t * per : n, hi = lo + per < n ? lo + per : n;
    unsigned s = 0u;
    for (int i = lo; i < hi; ++i) s += in[i];
    chunk_base[t] = s;
    __syncthreads();
    if (t == 0) {
        unsigned run = 0u;
        for (int k = 0; k < threads; ++k) {
            const unsigned c = chunk_base[k];
            chunk_base[k] = run;
            run += c;
        }
        *total = run;
    }
    __syncthreads();
    unsigned run = chunk_base[t];
    for (int i = lo; i < hi; ++i) {
        const unsigned v = in[i];
        out[i] = run;
        run += v;
    }
}

// Tile b's count of each digit ((key >> shift) & 255), digit-major: hist[digit·tiles + b].
// One block of ES_RADIX_TILE threads per tile of ES_RADIX_TILE keys.
extern "C" __global__ void radix_histogram_u32(const unsigned* key, int n, int shift, unsigned* hist) {
    __shared__ unsigned count[ES_RADIX_BUCKETS];
    const int t = threadIdx.x, tiles = gridDim.x;
    const long long i = (long long)blockIdx.x * ES_RADIX_TILE + t;
    count[t] = 0u;
    __syncthreads();
    if (i < n) atomicAdd(&count[(key[i] >> shift) & 255u], 1u);
    __syncthreads();
    hist[(long long)t * tiles + blockIdx.x] = count[t];
}

// Stable scatter by digit: `offset` is the exclusive scan of the histogram; a key goes
// after the keys of its digit in earlier tiles and after those earlier in its own tile.
extern "C" __global__ void radix_scatter_u32(const unsigned* key_in, const unsigned* val_in, int n, int shift,
                                             const unsigned* offset, unsigned* key_out, unsigned* val_out) {
    __shared__ unsigned digit[ES_RADIX_TILE];
    const int t = threadIdx.x, tiles = gridDim.x;
    const long long i = (long long)blockIdx.x * ES_RADIX_TILE + t;
    const unsigned mine = i < n ? (key_in[i] >> shift) & 255u : ES_RADIX_BUCKETS;
    digit[t] = mine;
    __syncthreads();
    if (i < n) {
        unsigned rank = 0u;
        for (int k = 0; k < t; ++k) rank += digit[k] == mine ? 1u : 0u;
        const unsigned dst = offset[(long long)mine * tiles + blockIdx.x] + rank;
        key_out[dst] = key_in[i];
        val_out[dst] = val_in[i];
    }
}
