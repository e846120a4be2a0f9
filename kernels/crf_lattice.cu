// DenseCRF on the GPU, part 1: building the permutohedral lattice (docs/postprocessing.md,
// "DenseCRF on the GPU"). The CPU twin is src/post/crf/lattice.rs; every float
// operation below is the twin's, in its order, written with __f*_rn so that NVRTC
// never contracts a product and a sum into an FMA.
//
// Steps (one launch each, sizes from the host, the vertex count stays on the device):
//   crf_features_f32      pixel features (x/sxy, y/sxy[, c_k/srgb]) from the u8 image
//   lattice_locate_f32    elevate + locate each point: packed keys of its d+1 vertices
//                         and their barycentric weights (plus densecrf's zero-point pad)
//   lattice_reset         empties the hash table
//   lattice_insert        hash insert of every key (64-bit atomicCAS, linear probing) and
//                         the first entry that uses each key (atomicMin)
//   lattice_verify        hashed codes only: no two keys share a code
//   lattice_owner_flags   1 for the entry that first uses its key
//   (scan)                exclusive prefix sum of the flags: vertex number = rank of the
//                         key's first use = the CPU's insertion order; independent of
//                         the thread schedule and of where keys landed in the table
//   lattice_number        vertex number of each slot, key of each vertex
//   lattice_entry_vertex  vertex number of each entry (and the identity permutation)
//   (sort)                stable radix sort of the entries by vertex: each vertex's
//                         entries in point order, the order of the CPU's splat
//   lattice_starts        first sorted position of each vertex
//   lattice_neighbors     the two blur neighbours of each vertex along each axis
//
// Keys are the CPU's codes: where the coordinates fit, packed (`Packing`: coordinate i
// of the first d in `bits` bits at i·bits, offset by 2^(bits−1)), exact; otherwise
// (bits = 0) a 64-bit hash of the coordinates, and lattice_verify checks that no two
// distinct keys share a code (a collision is reported, never used), while the
// neighbour lookup compares coordinates as the CPU's `KeyTable::matches` does.
#ifndef ES_COMMON_CUH
#include "common.cuh"
#endif

#define ES_LATTICE_MAX_D 8
#define ES_EMPTY_KEY 0xffffffffffffffffull

// Packed key arithmetic needs `1 in every field`.
__device__ __forceinline__ unsigned long long es_lattice_ones(int d, int bits) {
    unsigned long long ones = 0ull;
    for (int i = 0; i < d; ++i) ones |= 1ull << (i * bits);
    return ones;
}

// First slot to probe (Fibonacci hashing: the high bits of a product), as KeyTable::home.
__device__ __forceinline__ unsigned es_lattice_home(unsigned long long code, int shift_bits) {
    return (unsigned)((code * 0x9e3779b97f4a7c15ull) >> (64 - shift_bits));
}

// Round half to even for |x| < 2^22 (the CPU's `round_half_even`).
__device__ __forceinline__ float es_round_half_even(float x) {
    const float c = 12582912.0f;  // 1.5 · 2^23
    return fabsf(x) < 4194304.0f ? __fsub_rn(__fadd_rn(x, c), c) : x;
}

// Features of pixel p (row-major, width w): d = 2: (x, y)/sxy; d = 2 + c: (x, y)/sxy,
// channel k / srgb. Exact divisions, as the CPU's `x as f32 / sx`.
extern "C" __global__ void crf_features_f32(const unsigned char* image, int n, int w, int d, float sxy,
                                            float srgb, float* feats) {
    const int c = d - 2;
    for (long long p = es_global_index(); p < n; p += es_grid_stride()) {
        const int y = (int)(p / w), x = (int)(p % w);
        float* f = feats + p * d;
        f[0] = __fdiv_rn((float)x, sxy);
        f[1] = __fdiv_rn((float)y, sxy);
        for (int k = 0; k < c; ++k) f[2 + k] = __fdiv_rn((float)image[p * c + k], srgb);
    }
}

// Locates a point (features f, d of them): its remainder-0 point, the rank of each
// coordinate and the barycentric weights of its d+1 vertices (Constants::simplex).
__device__ void es_lattice_simplex(const float* f, int d, float* rem0, int* rank, float* bary) {
    float el[ES_LATTICE_MAX_D + 1], b[ES_LATTICE_MAX_D + 2];
    const float dp1f = (float)(d + 1);
    const float inv_dp1 = __fdiv_rn(1.0f, dp1f);
    // The per-axis scale sf[i] = float(sqrt(2/3)·(d+1) / sqrt((i+1)(i+2))), in double.
    const float inv_std = __double2float_rn(__dmul_rn(__dsqrt_rn(__ddiv_rn(2.0, 3.0)), (double)(d + 1)));
    // Elevate onto the hyperplane Σ x = 0.
    float sm = 0.0f;
    for (int j = d; j >= 1; --j) {
        const double s = __dmul_rn(__ddiv_rn(1.0, __dsqrt_rn((double)((j + 1) * j))), (double)inv_std);
        const float cf = __fmul_rn(f[j - 1], __double2float_rn(s));
        el[j] = __fsub_rn(sm, __fmul_rn((float)j, cf));
        sm = __fadd_rn(sm, cf);
    }
    el[0] = sm;
    // Nearest remainder-0 point.
    float sum = 0.0f;
    for (int i = 0; i <= d; ++i) {
        const float v = es_round_half_even(__fmul_rn(inv_dp1, el[i]));
        rem0[i] = __fmul_rn(v, dp1f);
        sum = __fadd_rn(sum, v);
    }
    // Rank of each residual; a tie ranks the later coordinate higher.
    for (int i = 0; i <= d; ++i) rank[i] = 0;
    for (int i = 0; i < d; ++i) {
        const float di = __fsub_rn(el[i], rem0[i]);
        for (int j = i + 1; j <= d; ++j) {
            const int lt = di < __fsub_rn(el[j], rem0[j]) ? 1 : 0;
            rank[i] += lt;
            rank[j] += 1 - lt;
        }
    }
    // Wrap the ranks into 0..d, moving the remainder-0 point along.
    const int isum = (int)sum;
    for (int i = 0; i <= d; ++i) {
        rank[i] += isum;
        if (rank[i] < 0) {
            rank[i] += d + 1;
            rem0[i] = __fadd_rn(rem0[i], dp1f);
        } else if (rank[i] > d) {
            rank[i] -= d + 1;
            rem0[i] = __fsub_rn(rem0[i], dp1f);
        }
    }
    // Barycentric coordinates.
    for (int i = 0; i <= d + 1; ++i) b[i] = 0.0f;
    for (int i = 0; i <= d; ++i) {
        const float t = __fmul_rn(__fsub_rn(el[i], rem0[i]), inv_dp1);
        const int k = d - rank[i];
        b[k] = __fadd_rn(b[k], t);
        b[k + 1] = __fsub_rn(b[k + 1], t);
    }
    b[0] = __fadd_rn(b[0], __fadd_rn(1.0f, b[d + 1]));
    for (int r = 0; r <= d; ++r) bary[r] = b[r];
}

// The first d coordinates of the remainder-r vertex: rem0 + canonical[r][rank].
__device__ __forceinline__ void es_lattice_key(const float* rem0, const int* rank, int d, int r, int* key) {
    for (int k = 0; k < d; ++k) key[k] = (int)rem0[k] + (rank[k] <= d - r ? r : r - (d + 1));
}

// The CPU's hashed code of a key (KeyTable::code without packing); never the empty mark.
__device__ __forceinline__ unsigned long long es_lattice_hash(const int* key, int d) {
    unsigned long long h = 0x243f6a8885a308d3ull;
    for (int k = 0; k < d; ++k) {
        h = (h ^ (unsigned long long)(unsigned)key[k]) * 0x9e3779b97f4a7c15ull;
        h ^= h >> 29;
    }
    return h == ES_EMPTY_KEY ? ES_EMPTY_KEY - 1ull : h;
}

// Codes of the d+1 vertices of a located point, remainder r = 0..d (vertex_codes: from
// r−1 to r every coordinate gains 1 and the one of rank d+1−r loses d+1); hashed when
// bits = 0.
__device__ void es_lattice_codes(const float* rem0, const int* rank, int d, int bits, unsigned long long* codes) {
    if (bits == 0) {
        int key[ES_LATTICE_MAX_D];
        for (int r = 0; r <= d; ++r) {
            es_lattice_key(rem0, rank, d, r, key);
            codes[r] = es_lattice_hash(key, d);
        }
        return;
    }
    int inv_rank[ES_LATTICE_MAX_D + 1];
    for (int i = 0; i <= d; ++i) inv_rank[rank[i]] = i;
    const long long bias = 1ll << (bits - 1);
    const unsigned long long ones = es_lattice_ones(d, bits);
    unsigned long long code = 0ull;
    for (int i = 0; i < d; ++i) code |= (unsigned long long)((long long)(int)rem0[i] + bias) << (i * bits);
    codes[0] = code;
    for (int r = 1; r <= d; ++r) {
        code += ones;
        const int i = inv_rank[d + 1 - r];
        if (i < d) code -= (unsigned long long)(d + 1) << (i * bits);
        codes[r] = code;
    }
}

// The features of point p, or the zero vector for the padding point p = n.
__device__ __forceinline__ const float* es_point(const float* feats, long long p, int n, int d, const float* zero) {
    return p < n ? feats + p * d : zero;
}

// The coordinates of entry e's vertex (point e / (d+1), remainder e % (d+1)).
__device__ void es_entry_key(const float* feats, int n, int d, long long e, int* key) {
    const float zero[ES_LATTICE_MAX_D] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
    float rem0[ES_LATTICE_MAX_D + 1], bary[ES_LATTICE_MAX_D + 1];
    int rank[ES_LATTICE_MAX_D + 1];
    es_lattice_simplex(es_point(feats, e / (d + 1), n, d, zero), d, rem0, rank, bary);
    es_lattice_key(rem0, rank, d, (int)(e % (d + 1)), key);
}

// Entries e = p·(d+1) + r for points p < n; when `pad`, densecrf's SSE padding adds the
// vertices of the zero feature vector as entries n·(d+1) + r (keys only, no weight).
extern "C" __global__ void lattice_locate_f32(const float* feats, int n, int d, int bits, int pad,
                                              unsigned long long* codes, float* bary) {
    const float zero[ES_LATTICE_MAX_D] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
    const int points = n + (pad ? 1 : 0);
    for (long long p = es_global_index(); p < points; p += es_grid_stride()) {
        float rem0[ES_LATTICE_MAX_D + 1], b[ES_LATTICE_MAX_D + 1];
        int rank[ES_LATTICE_MAX_D + 1];
        es_lattice_simplex(es_point(feats, p, n, d, zero), d, rem0, rank, b);
        es_lattice_codes(rem0, rank, d, bits, codes + p * (d + 1));
        if (p < n)
            for (int r = 0; r <= d; ++r) bary[p * (d + 1) + r] = b[r];
    }
}

extern "C" __global__ void lattice_reset(unsigned long long* keys, unsigned* first, int slots, unsigned* fault) {
    if (es_global_index() == 0) *fault = 0u;
    for (long long s = es_global_index(); s < slots; s += es_grid_stride()) {
        keys[s] = ES_EMPTY_KEY;
        first[s] = 0xffffffffu;
    }
}

// Inserts each entry's key (linear probing; lock-free: a thread never waits for
// another) and records the smallest entry index per key. Where a key lands depends on
// the order of insertion; nothing downstream depends on where.
extern "C" __global__ void lattice_insert(const unsigned long long* codes, int entries, int shift_bits,
                                          unsigned long long* keys, unsigned* first, unsigned* slot_of) {
    const unsigned mask = (1u << shift_bits) - 1u;
    for (long long e = es_global_index(); e < entries; e += es_grid_stride()) {
        const unsigned long long code = codes[e];
        unsigned h = es_lattice_home(code, shift_bits);
        for (;;) {
            const unsigned long long old = atomicCAS(&keys[h], ES_EMPTY_KEY, code);
            if (old == ES_EMPTY_KEY || old == code) break;
            h = (h + 1u) & mask;
        }
        atomicMin(&first[h], (unsigned)e);
        slot_of[e] = h;
    }
}

// Hashed codes only: every entry's key must equal the key of the first entry with its
// code; otherwise two keys collided in 64 bits and *fault is set (the host reports it).
extern "C" __global__ void lattice_verify(const float* feats, int n, int d, const unsigned* slot_of,
                                          const unsigned* first, int entries, unsigned* fault) {
    for (long long e = es_global_index(); e < entries; e += es_grid_stride()) {
        const unsigned owner = first[slot_of[e]];
        if (owner == (unsigned)e) continue;
        int a[ES_LATTICE_MAX_D], b[ES_LATTICE_MAX_D];
        es_entry_key(feats, n, d, e, a);
        es_entry_key(feats, n, d, owner, b);
        for (int k = 0; k < d; ++k)
            if (a[k] != b[k]) *fault = 1u;
    }
}

extern "C" __global__ void lattice_owner_flags(const unsigned* slot_of, const unsigned* first, int entries,
                                               unsigned* flags) {
    for (long long e = es_global_index(); e < entries; e += es_grid_stride())
        flags[e] = first[slot_of[e]] == (unsigned)e ? 1u : 0u;
}

// `number` is the exclusive scan of the owner flags.
extern "C" __global__ void lattice_number(const unsigned long long* codes, const unsigned* slot_of,
                                          const unsigned* flags, const unsigned* number, int entries,
                                          unsigned* vertex_of_slot, unsigned long long* vertex_code,
                                          unsigned* vertex_entry) {
    for (long long e = es_global_index(); e < entries; e += es_grid_stride())
        if (flags[e]) {
            vertex_of_slot[slot_of[e]] = number[e];
            vertex_code[number[e]] = codes[e];
            vertex_entry[number[e]] = (unsigned)e;
        }
}

extern "C" __global__ void lattice_entry_vertex(const unsigned* slot_of, const unsigned* vertex_of_slot,
                                                int entries, unsigned* vertex, unsigned* entry) {
    for (long long e = es_global_index(); e < entries; e += es_grid_stride()) {
        vertex[e] = vertex_of_slot[slot_of[e]];
        entry[e] = (unsigned)e;
    }
}

// `sorted_vertex` is non-decreasing: a vertex starts where its number changes.
// start has n_vertices + 1 slots; the last is `entries`.
extern "C" __global__ void lattice_starts(const unsigned* sorted_vertex, int entries, unsigned* start) {
    for (long long k = es_global_index(); k < entries; k += es_grid_stride()) {
        const unsigned v = sorted_vertex[k];
        if (k == 0 || sorted_vertex[k - 1] != v) start[v] = (unsigned)k;
        if (k == entries - 1) start[v + 1] = (unsigned)entries;
    }
}

// Slot (vertex + 1) of the key `code`, or 0 when it is not in the lattice. With hashed
// codes (`key` given) the found vertex's coordinates must be `key` (else a key outside
// the lattice hashed onto one inside it: not found, as on the CPU).
__device__ unsigned es_lattice_find(unsigned long long code, const unsigned long long* keys,
                                    const unsigned* vertex_of_slot, int shift_bits, const int* key,
                                    const float* feats, int n, int d, const unsigned* vertex_entry) {
    const unsigned mask = (1u << shift_bits) - 1u;
    unsigned h = es_lattice_home(code, shift_bits);
    for (;;) {
        const unsigned long long k = keys[h];
        if (k == ES_EMPTY_KEY) return 0u;
        if (k == code) {
            const unsigned v = vertex_of_slot[h];
            if (key) {
                int other[ES_LATTICE_MAX_D];
                es_entry_key(feats, n, d, vertex_entry[v], other);
                for (int i = 0; i < d; ++i)
                    if (other[i] != key[i]) return 0u;
            }
            return v + 1u;
        }
        h = (h + 1u) & mask;
    }
}

// Blur neighbours, axis-major: nb[(j·stride + v)·2 + {0,1}] = slots of v ± the lattice
// step along axis j, e = (d+1)·e_j − 1 (for j = d: −1 in every stored coordinate).
extern "C" __global__ void lattice_neighbors(const unsigned long long* vertex_code, const unsigned* n_vertices,
                                             const unsigned long long* keys, const unsigned* vertex_of_slot,
                                             const float* feats, int n, const unsigned* vertex_entry, int d,
                                             int bits, int shift_bits, int stride, unsigned* nb) {
    const long long nv = (long long)*n_vertices;
    const unsigned long long ones = bits ? es_lattice_ones(d, bits) : 0ull;
    for (long long i = es_global_index(); i < nv * (d + 1); i += es_grid_stride()) {
        const int j = (int)(i / nv);
        const long long v = i % nv;
        unsigned* out = nb + ((long long)j * stride + v) * 2;
        if (bits) {
            const unsigned long long step = j < d ? (unsigned long long)(d + 1) << (j * bits) : 0ull;
            const unsigned long long code = vertex_code[v];
            out[0] = es_lattice_find(code - ones + step, keys, vertex_of_slot, shift_bits, nullptr, feats, n, d,
                                     vertex_entry);
            out[1] = es_lattice_find(code + ones - step, keys, vertex_of_slot, shift_bits, nullptr, feats, n, d,
                                     vertex_entry);
        } else {
            int key[ES_LATTICE_MAX_D], n1[ES_LATTICE_MAX_D], n2[ES_LATTICE_MAX_D];
            es_entry_key(feats, n, d, vertex_entry[v], key);
            for (int k = 0; k < d; ++k) {
                const int step = k == j ? d + 1 : 0;
                n1[k] = key[k] - 1 + step;
                n2[k] = key[k] + 1 - step;
            }
            out[0] = es_lattice_find(es_lattice_hash(n1, d), keys, vertex_of_slot, shift_bits, n1, feats, n, d,
                                     vertex_entry);
            out[1] = es_lattice_find(es_lattice_hash(n2, d), keys, vertex_of_slot, shift_bits, n2, feats, n, d,
                                     vertex_entry);
        }
    }
}
