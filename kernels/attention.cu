// Fused multi-head attention, O = softmax(scale·Q·Kᵀ)·V, and its backward, without
// the (T, T) probabilities in memory: the forward keeps only each query row's
// log-sum-exp, the backward recomputes P from Q, K and that LSE one key tile at a
// time (the tiling and online softmax of FlashAttention, Dao et al. 2022; the
// backward's split into a dQ pass and a dK/dV pass after D_i = rowsum(dO∘O),
// FlashAttention-2, Dao 2023). Deterministic: no atomics, every output element is
// summed by one thread in a fixed order. fp32 throughout.
//
// Layouts (those of the engine): qkv (batch, T, 3·D) row-major, head h's q, k, v at
// columns h·hd, D + h·hd, 2·D + h·hd; O and dO (batch, T, D), head h at column h·hd;
// LSE and D (batch, heads, T); dQ|dK|dV written into (batch, T, 3·D) like qkv.
//
// One thread per row (a query row in the forward and dQ pass, a key row in the
// dK/dV pass); a block is ES_ATTN_ROWS = 32 threads, one warp. The block's grid
// index is (image·heads + head)·n_row_tiles + row tile. Head dims up to
// ES_ATTN_MAX_HD; the launch wrappers check it. Per-thread vectors live in shared
// memory, column-major ([c][row]) so that the 32 threads hit 32 banks; tiles read
// by every thread at once are row-major ([row][c]), a broadcast.
// CPU twin: backend::cuda::attention_twin (same operations in the same order).
#ifndef ES_COMMON_CUH
#include "common.cuh"
#endif

#define ES_ATTN_MAX_HD 64
#define ES_ATTN_ROWS 32
// Key rows per tile of the forward and dQ pass; query rows per tile of the dK/dV pass.
#define ES_ATTN_KTILE 32
#define ES_ATTN_QTILE 16

// Where a block's rows are: the head, image and first row of its tile.
struct EsAttnTile {
    int img, head, row0;
};

__device__ __forceinline__ EsAttnTile es_attn_tile(int heads, int t) {
    const int n_tiles = (t + ES_ATTN_ROWS - 1) / ES_ATTN_ROWS;
    const int bh = blockIdx.x / n_tiles;
    EsAttnTile tile;
    tile.row0 = (blockIdx.x % n_tiles) * ES_ATTN_ROWS;
    tile.head = bh % heads;
    tile.img = bh / heads;
    return tile;
}

// Rows row0.. of a (rows, hd) matrix whose rows are `ld` apart into dst[c·32 + r]
// (column-major, one column per thread); rows past `t` are zero.
__device__ __forceinline__ void es_attn_load_cols(float* dst, const float* src, int ld, int row0, int t, int hd) {
    for (int idx = threadIdx.x; idx < ES_ATTN_ROWS * hd; idx += blockDim.x) {
        const int r = idx / hd, c = idx % hd;
        dst[c * ES_ATTN_ROWS + r] = row0 + r < t ? src[(long long)(row0 + r) * ld + c] : 0.0f;
    }
}

// `rows` rows from row0 into dst[r·ES_ATTN_MAX_HD + c] (row-major); rows past `t` are zero.
__device__ __forceinline__ void es_attn_load_rows(float* dst, const float* src, int ld, int row0, int rows, int t,
                                                  int hd) {
    for (int idx = threadIdx.x; idx < rows * hd; idx += blockDim.x) {
        const int r = idx / hd, c = idx % hd;
        dst[r * ES_ATTN_MAX_HD + c] = row0 + r < t ? src[(long long)(row0 + r) * ld + c] : 0.0f;
    }
}

// ⟨a[·, r], b[j, ·]⟩ over hd, summed in order: a column-major (this thread's column),
// b row-major.
__device__ __forceinline__ float es_attn_dot(const float* a, int r, const float* b_row, int hd) {
    float s = 0.0f;
    for (int c = 0; c < hd; ++c) s += a[c * ES_ATTN_ROWS + r] * b_row[c];
    return s;
}

// Forward: out (batch, T, D) ← per head softmax(scale·Q·Kᵀ)·V; lse (batch, heads, T)
// ← log Σ_j exp(scale·q·k_j) per query row.
extern "C" __global__ void attention_fwd_f32(const float* __restrict__ qkv, float* __restrict__ out,
                                             float* __restrict__ lse, int batch, int heads, int t, int hd,
                                             float scale) {
    __shared__ float q_s[ES_ATTN_MAX_HD * ES_ATTN_ROWS];    // [c][row]
    __shared__ float acc_s[ES_ATTN_MAX_HD * ES_ATTN_ROWS];  // [c][row]: Σ_j p_j·v_j, rescaled
    __shared__ float k_s[ES_ATTN_KTILE * ES_ATTN_MAX_HD];   // [key][c]
    __shared__ float v_s[ES_ATTN_KTILE * ES_ATTN_MAX_HD];   // [key][c]
    __shared__ float p_s[ES_ATTN_KTILE * ES_ATTN_ROWS];     // [key][row]: scores, then exp
    const EsAttnTile tile = es_attn_tile(heads, t);
    if (tile.img >= batch) return;  // whole block
    const int dim = heads * hd, ld = 3 * dim;
    const float* base = qkv + (long long)tile.img * t * ld + tile.head * hd;
    const int r = threadIdx.x, i = tile.row0 + r;
    es_attn_load_cols(q_s, base, ld, tile.row0, t, hd);
    for (int c = 0; c < hd; ++c) acc_s[c * ES_ATTN_ROWS + r] = 0.0f;
    float m = ES_NEG_INF, l = 0.0f;  // running max of the scaled scores, Σ exp(s − m)
    for (int j0 = 0; j0 < t; j0 += ES_ATTN_KTILE) {
        const int nk = t - j0 < ES_ATTN_KTILE ? t - j0 : ES_ATTN_KTILE;
        __syncthreads();  // the previous tile's readers are done (and q_s is loaded)
        es_attn_load_rows(k_s, base + dim, ld, j0, ES_ATTN_KTILE, t, hd);
        es_attn_load_rows(v_s, base + 2 * dim, ld, j0, ES_ATTN_KTILE, t, hd);
        __syncthreads();
        float tile_max = ES_NEG_INF;
        for (int jj = 0; jj < nk; ++jj) {
            const float s = es_attn_dot(q_s, r, k_s + jj * ES_ATTN_MAX_HD, hd) * scale;
            p_s[jj * ES_ATTN_ROWS + r] = s;
            tile_max = fmaxf(tile_max, s);
        }
        const float m_new = fmaxf(m, tile_max);
        const float alpha = expf(m - m_new);  // 0 on the first tile (m = −∞)
        l *= alpha;
        for (int jj = 0; jj < nk; ++jj) {
            const float p = expf(p_s[jj * ES_ATTN_ROWS + r] - m_new);
            p_s[jj * ES_ATTN_ROWS + r] = p;
            l += p;
        }
        for (int c = 0; c < hd; ++c) {
            float a = acc_s[c * ES_ATTN_ROWS + r] * alpha;
            for (int jj = 0; jj < nk; ++jj) a += p_s[jj * ES_ATTN_ROWS + r] * v_s[jj * ES_ATTN_MAX_HD + c];
            acc_s[c * ES_ATTN_ROWS + r] = a;
        }
        m = m_new;
    }
    if (i >= t) return;  // after the last barrier
    float* o = out + ((long long)tile.img * t + i) * dim + tile.head * hd;
    for (int c = 0; c < hd; ++c) o[c] = acc_s[c * ES_ATTN_ROWS + r] / l;
    lse[((long long)tile.img * heads + tile.head) * t + i] = m + logf(l);
}

// Backward, pass 1 (before pass 2): delta (batch, heads, T) ← D_i = Σ_c dO_ic·O_ic;
// dQ, columns [0, D) of gqkv, ← scale·Σ_j P_ij (dP_ij − D_i) k_j with
// P_ij = exp(scale·q_i·k_j − lse_i), dP_ij = dO_i·v_j.
extern "C" __global__ void attention_bwd_dq_f32(const float* __restrict__ qkv, const float* __restrict__ out,
                                                const float* __restrict__ d_out, const float* __restrict__ lse,
                                                float* __restrict__ delta, float* __restrict__ gqkv, int batch,
                                                int heads, int t, int hd, float scale) {
    __shared__ float q_s[ES_ATTN_MAX_HD * ES_ATTN_ROWS];    // [c][row]
    __shared__ float do_s[ES_ATTN_MAX_HD * ES_ATTN_ROWS];   // [c][row]
    __shared__ float dq_s[ES_ATTN_MAX_HD * ES_ATTN_ROWS];   // [c][row]: Σ_j ds_j·k_j
    __shared__ float k_s[ES_ATTN_KTILE * ES_ATTN_MAX_HD];   // [key][c]
    __shared__ float v_s[ES_ATTN_KTILE * ES_ATTN_MAX_HD];   // [key][c]
    __shared__ float ds_s[ES_ATTN_KTILE * ES_ATTN_ROWS];    // [key][row]
    const EsAttnTile tile = es_attn_tile(heads, t);
    if (tile.img >= batch) return;  // whole block
    const int dim = heads * hd, ld = 3 * dim;
    const float* base = qkv + (long long)tile.img * t * ld + tile.head * hd;
    const long long o_off = (long long)tile.img * t * dim + tile.head * hd;
    const int r = threadIdx.x, i = tile.row0 + r;
    es_attn_load_cols(q_s, base, ld, tile.row0, t, hd);
    es_attn_load_cols(do_s, d_out + o_off, dim, tile.row0, t, hd);
    for (int c = 0; c < hd; ++c) dq_s[c * ES_ATTN_ROWS + r] = 0.0f;
    __syncthreads();
    float lse_i = 0.0f, d_i = 0.0f;
    if (i < t) {
        const float* o = out + o_off + (long long)i * dim;
        for (int c = 0; c < hd; ++c) d_i += do_s[c * ES_ATTN_ROWS + r] * o[c];
        lse_i = lse[((long long)tile.img * heads + tile.head) * t + i];
        delta[((long long)tile.img * heads + tile.head) * t + i] = d_i;
    }
    for (int j0 = 0; j0 < t; j0 += ES_ATTN_KTILE) {
        const int nk = t - j0 < ES_ATTN_KTILE ? t - j0 : ES_ATTN_KTILE;
        __syncthreads();
        es_attn_load_rows(k_s, base + dim, ld, j0, ES_ATTN_KTILE, t, hd);
        es_attn_load_rows(v_s, base + 2 * dim, ld, j0, ES_ATTN_KTILE, t, hd);
        __syncthreads();
        for (int jj = 0; jj < nk; ++jj) {
            const float p = expf(es_attn_dot(q_s, r, k_s + jj * ES_ATTN_MAX_HD, hd) * scale - lse_i);
            const float dp = es_attn_dot(do_s, r, v_s + jj * ES_ATTN_MAX_HD, hd);
            ds_s[jj * ES_ATTN_ROWS + r] = p * (dp - d_i);
        }
        for (int c = 0; c < hd; ++c) {
            float a = dq_s[c * ES_ATTN_ROWS + r];
            for (int jj = 0; jj < nk; ++jj) a += ds_s[jj * ES_ATTN_ROWS + r] * k_s[jj * ES_ATTN_MAX_HD + c];
            dq_s[c * ES_ATTN_ROWS + r] = a;
        }
    }
    if (i >= t) return;  // after the last barrier
    float* dq = gqkv + ((long long)tile.img * t + i) * ld + tile.head * hd;
    for (int c = 0; c < hd; ++c) dq[c] = scale * dq_s[c * ES_ATTN_ROWS + r];
}

// Backward, pass 2 (after pass 1, which wrote delta): per key row j,
// dK_j (columns [D, 2·D) of gqkv) ← scale·Σ_i P_ij (dP_ij − D_i) q_i and
// dV_j (columns [2·D, 3·D)) ← Σ_i P_ij dO_i.
extern "C" __global__ void attention_bwd_dkdv_f32(const float* __restrict__ qkv, const float* __restrict__ d_out,
                                                  const float* __restrict__ lse, const float* __restrict__ delta,
                                                  float* __restrict__ gqkv, int batch, int heads, int t, int hd,
                                                  float scale) {
    __shared__ float k_s[ES_ATTN_MAX_HD * ES_ATTN_ROWS];    // [c][row]
    __shared__ float v_s[ES_ATTN_MAX_HD * ES_ATTN_ROWS];    // [c][row]
    __shared__ float dk_s[ES_ATTN_MAX_HD * ES_ATTN_ROWS];   // [c][row]: Σ_i ds_i·q_i
    __shared__ float dv_s[ES_ATTN_MAX_HD * ES_ATTN_ROWS];   // [c][row]: Σ_i p_i·dO_i
    __shared__ float q_t[ES_ATTN_QTILE * ES_ATTN_MAX_HD];   // [query][c]
    __shared__ float do_t[ES_ATTN_QTILE * ES_ATTN_MAX_HD];  // [query][c]
    __shared__ float lse_t[ES_ATTN_QTILE];
    __shared__ float delta_t[ES_ATTN_QTILE];
    __shared__ float p_s[ES_ATTN_QTILE * ES_ATTN_ROWS];     // [query][row]
    __shared__ float ds_s[ES_ATTN_QTILE * ES_ATTN_ROWS];    // [query][row]
    const EsAttnTile tile = es_attn_tile(heads, t);
    if (tile.img >= batch) return;  // whole block
    const int dim = heads * hd, ld = 3 * dim;
    const float* base = qkv + (long long)tile.img * t * ld + tile.head * hd;
    const float* dout = d_out + (long long)tile.img * t * dim + tile.head * hd;
    const long long stats = ((long long)tile.img * heads + tile.head) * t;
    const int r = threadIdx.x, j = tile.row0 + r;
    es_attn_load_cols(k_s, base + dim, ld, tile.row0, t, hd);
    es_attn_load_cols(v_s, base + 2 * dim, ld, tile.row0, t, hd);
    for (int c = 0; c < hd; ++c) {
        dk_s[c * ES_ATTN_ROWS + r] = 0.0f;
        dv_s[c * ES_ATTN_ROWS + r] = 0.0f;
    }
    for (int i0 = 0; i0 < t; i0 += ES_ATTN_QTILE) {
        const int nq = t - i0 < ES_ATTN_QTILE ? t - i0 : ES_ATTN_QTILE;
        __syncthreads();  // the previous tile's readers are done (and k_s, v_s are loaded)
        es_attn_load_rows(q_t, base, ld, i0, ES_ATTN_QTILE, t, hd);
        es_attn_load_rows(do_t, dout, dim, i0, ES_ATTN_QTILE, t, hd);
        if (r < ES_ATTN_QTILE) {
            lse_t[r] = i0 + r < t ? lse[stats + i0 + r] : 0.0f;
            delta_t[r] = i0 + r < t ? delta[stats + i0 + r] : 0.0f;
        }
        __syncthreads();
        for (int ii = 0; ii < nq; ++ii) {
            const float p = expf(es_attn_dot(k_s, r, q_t + ii * ES_ATTN_MAX_HD, hd) * scale - lse_t[ii]);
            const float dp = es_attn_dot(v_s, r, do_t + ii * ES_ATTN_MAX_HD, hd);
            p_s[ii * ES_ATTN_ROWS + r] = p;
            ds_s[ii * ES_ATTN_ROWS + r] = p * (dp - delta_t[ii]);
        }
        for (int c = 0; c < hd; ++c) {
            float a = dv_s[c * ES_ATTN_ROWS + r], b = dk_s[c * ES_ATTN_ROWS + r];
            for (int ii = 0; ii < nq; ++ii) {
                a += p_s[ii * ES_ATTN_ROWS + r] * do_t[ii * ES_ATTN_MAX_HD + c];
                b += ds_s[ii * ES_ATTN_ROWS + r] * q_t[ii * ES_ATTN_MAX_HD + c];
            }
            dv_s[c * ES_ATTN_ROWS + r] = a;
            dk_s[c * ES_ATTN_ROWS + r] = b;
        }
    }
    if (j >= t) return;  // after the last barrier
    float* g = gqkv + ((long long)tile.img * t + j) * ld + tile.head * hd;
    for (int c = 0; c < hd; ++c) {
        g[dim + c] = scale * dk_s[c * ES_ATTN_ROWS + r];
        g[2 * dim + c] = dv_s[c * ES_ATTN_ROWS + r];
    }
}
