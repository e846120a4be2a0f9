// DenseCRF on the GPU, part 3: filtering on the lattice (splat, blur, slice) and the
// mean-field update. CPU twins: `Lattice::filter` (src/post/crf/lattice.rs) and
// `inference` / `softmax_in_place` (src/post/crf/mean_field.rs), operation for
// operation (the __f*_rn intrinsics keep NVRTC from fusing into FMAs).
//
// Lattice values live in slots: slot 0 is a permanent zero (a missing blur neighbour),
// vertex v in slot v + 1; each slot holds `vs` components.
//
// `seq` selects densecrf's scalar path (value size ≤ 2: blur in double, slice term
// (w·v)·α) or its SSE path (blur in float, slice term (w·α)·v), as the CPU does.
#ifndef ES_COMMON_CUH
#include "common.cuh"
#endif

// Splat as a gather: each vertex sums w · (in[p]·s[p]) over its entries in sorted
// (point, remainder) order — the order in which the CPU's sequential splat adds into
// it — so the sums are bit-identical. Entries ≥ real_entries are the zero-point
// padding (vertices without weight).
extern "C" __global__ void lattice_splat_f32(const unsigned* start, const unsigned* sorted_entry,
                                             const float* bary, const float* in, const float* scale, int vs,
                                             int d, int real_entries, const unsigned* n_vertices, float* val) {
    const long long slots = (long long)*n_vertices + 1;
    for (long long i = es_global_index(); i < slots * vs; i += es_grid_stride()) {
        const long long slot = i / vs;
        const int c = (int)(i % vs);
        float s = 0.0f;
        if (slot > 0) {
            const unsigned v = (unsigned)(slot - 1);
            for (unsigned k = start[v]; k < start[v + 1]; ++k) {
                const unsigned e = sorted_entry[k];
                if (e >= (unsigned)real_entries) continue;
                const unsigned p = e / (unsigned)(d + 1);
                s = __fadd_rn(s, __fmul_rn(bary[e], __fmul_rn(in[(long long)p * vs + c], scale[p])));
            }
        }
        val[i] = s;
    }
}

// One blur pass along one axis (Jacobi): new = old + ½ (old[n1] + old[n2]). `nb` holds
// the (n1, n2) slot pair of each vertex along this axis.
extern "C" __global__ void lattice_blur_f32(const float* old, const unsigned* nb, int vs,
                                            const unsigned* n_vertices, int seq, float* out) {
    const long long slots = (long long)*n_vertices + 1;
    for (long long i = es_global_index(); i < slots * vs; i += es_grid_stride()) {
        const long long slot = i / vs;
        const int c = (int)(i % vs);
        if (slot == 0) {
            out[i] = 0.0f;
            continue;
        }
        const long long v = slot - 1;
        const float s = __fadd_rn(old[(long long)nb[v * 2] * vs + c], old[(long long)nb[v * 2 + 1] * vs + c]);
        const float o = old[i];
        out[i] = seq ? __double2float_rn(__dadd_rn((double)o, __dmul_rn(0.5, (double)s)))
                     : __fadd_rn(o, __fmul_rn(0.5f, s));
    }
}

// out[p] = s[p] · Σ_r term_r, remainders r in order.
extern "C" __global__ void lattice_slice_f32(const float* val, const unsigned* vertex, const float* bary,
                                             const float* scale, int n, int d, int vs, float alpha, int seq,
                                             float* out) {
    for (long long i = es_global_index(); i < (long long)n * vs; i += es_grid_stride()) {
        const long long p = i / vs;
        const int c = (int)(i % vs);
        float acc = 0.0f;
        for (int r = 0; r <= d; ++r) {
            const long long e = p * (d + 1) + r;
            const float w = bary[e];
            const float v = val[((long long)vertex[e] + 1) * vs + c];
            acc = __fadd_rn(acc, seq ? __fmul_rn(__fmul_rn(w, v), alpha) : __fmul_rn(__fmul_rn(w, alpha), v));
        }
        out[i] = __fmul_rn(acc, scale[p]);
    }
}

extern "C" __global__ void crf_fill_f32(float* x, int n, float v) {
    for (long long i = es_global_index(); i < n; i += es_grid_stride()) x[i] = v;
}

// Symmetric normalisation n = 1 / sqrt(L(1) + 1e-20), in double, stored as float.
extern "C" __global__ void crf_norm_f32(const float* filtered_ones, int n, float* norm) {
    for (long long i = es_global_index(); i < n; i += es_grid_stride())
        norm[i] = __double2float_rn(__ddiv_rn(1.0, __dsqrt_rn(__dadd_rn((double)filtered_ones[i], 1e-20))));
}

// One lane of Eigen 3.3's SSE2 pexp (the Cephes expf polynomial, no FMA), as the CPU's
// `eigen_pexp`.
__device__ __forceinline__ float es_eigen_pexp(float x0) {
    const float p[6] = {1.9875691500e-4f, 1.3981999507e-3f, 8.3334519073e-3f,
                        4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f};
    float x = x0 < -88.3762626647949f ? -88.3762626647949f : (x0 > 88.3762626647950f ? 88.3762626647950f : x0);
    float fx = __fadd_rn(__fmul_rn(x, 1.44269504088896341f), 0.5f);
    const float tr = (float)(int)fx;
    fx = tr > fx ? __fsub_rn(tr, 1.0f) : tr;
    x = __fsub_rn(x, __fmul_rn(fx, 0.693359375f));
    x = __fsub_rn(x, __fmul_rn(fx, -2.12194440e-4f));
    const float z = __fmul_rn(x, x);
    float y = p[0];
    for (int k = 1; k < 6; ++k) y = __fadd_rn(__fmul_rn(y, x), p[k]);
    y = __fadd_rn(__fmul_rn(y, z), x);
    y = __fadd_rn(y, 1.0f);
    const float r = __fmul_rn(y, __int_as_float(((int)fx + 0x7f) << 23));
    return r > x0 ? r : x0;
}

// densecrf's expAndNormalize of one pixel's m values (the CPU's `softmax_in_place`):
// two labels exactly as there; otherwise subtract the maximum, Eigen's packet exp on
// full groups of 4, expf on the rest, Eigen's summation order, divide.
__device__ void es_crf_softmax(float* t, int m) {
    if (m == 2) {
        const float a = t[0], b = t[1];
        const float lo = b > a ? a : b, hi = b > a ? b : a;
        const float e = expf(__fsub_rn(lo, hi));
        const float e0 = b > a ? e : 1.0f, e1 = b > a ? 1.0f : (a > b ? e : 1.0f);
        const float s = __fadd_rn(e0, e1);
        t[0] = __fdiv_rn(e0, s);
        t[1] = __fdiv_rn(e1, s);
        return;
    }
    float mx = ES_NEG_INF;
    for (int l = 0; l < m; ++l) mx = t[l] > mx ? t[l] : mx;
    for (int l = 0; l < m; ++l) t[l] = __fsub_rn(t[l], mx);
    const int packets = m / 4 * 4;
    for (int l = 0; l < packets; ++l) t[l] = es_eigen_pexp(t[l]);
    for (int l = packets; l < m; ++l) t[l] = t[l] == 0.0f ? 1.0f : expf(t[l]);
    float sum;
    if (packets == 0) {
        sum = t[0];
        for (int l = 1; l < m; ++l) sum = __fadd_rn(sum, t[l]);
    } else {
        // Two packet accumulators over pairs of packets, one more packet, the
        // horizontal sum (a0+a2)+(a1+a3), then the tail.
        float p0[4] = {t[0], t[1], t[2], t[3]};
        if (packets > 4) {
            float p1[4] = {t[4], t[5], t[6], t[7]};
            const int end2 = m / 8 * 8;
            for (int i = 8; i < end2; i += 8)
                for (int k = 0; k < 4; ++k) {
                    p0[k] = __fadd_rn(p0[k], t[i + k]);
                    p1[k] = __fadd_rn(p1[k], t[i + 4 + k]);
                }
            for (int k = 0; k < 4; ++k) p0[k] = __fadd_rn(p0[k], p1[k]);
            if (packets > end2)
                for (int k = 0; k < 4; ++k) p0[k] = __fadd_rn(p0[k], t[end2 + k]);
        }
        sum = __fadd_rn(__fadd_rn(p0[0], p0[2]), __fadd_rn(p0[1], p0[3]));
        for (int l = packets; l < m; ++l) sum = __fadd_rn(sum, t[l]);
    }
    for (int l = 0; l < m; ++l) t[l] = __fdiv_rn(t[l], sum);
}

// q = softmax(−U), pixel-major (n, m).
extern "C" __global__ void crf_softmax_init_f32(const float* unary, int n, int m, float* q) {
    for (long long p = es_global_index(); p < n; p += es_grid_stride()) {
        float* t = q + p * m;
        for (int l = 0; l < m; ++l) t[l] = -unary[p * m + l];
        es_crf_softmax(t, m);
    }
}

// One mean-field update: t = −U; t −= −w_k · K_k(Q) for the kernels in order (Potts);
// Q = softmax(t). `kernels` (0..2) says how many of (f0, w0), (f1, w1) are used.
extern "C" __global__ void crf_update_f32(const float* unary, const float* f0, float w0, const float* f1,
                                          float w1, int kernels, int n, int m, float* q) {
    for (long long p = es_global_index(); p < n; p += es_grid_stride()) {
        float* t = q + p * m;
        for (int l = 0; l < m; ++l) {
            const long long o = p * m + l;
            float v = -unary[o];
            if (kernels > 0) v = __fsub_rn(v, __fmul_rn(-w0, f0[o]));
            if (kernels > 1) v = __fsub_rn(v, __fmul_rn(-w1, f1[o]));
            t[l] = v;
        }
        es_crf_softmax(t, m);
    }
}

// MAP label of pixel p: argmax over labels, ties to the lower label.
__device__ __forceinline__ int es_crf_argmax(const float* col, int m) {
    int best = 0;
    for (int l = 1; l < m; ++l)
        if (col[l] > col[best]) best = l;
    return best;
}

// Labels of every pixel; labels[n] gets the lattices' fault flags (a hashed-key
// collision), so one download brings both.
extern "C" __global__ void crf_labels(const float* q, int n, int m, const unsigned* fault0, const unsigned* fault1,
                                      int* labels) {
    if (es_global_index() == 0) labels[n] = (int)(*fault0 | *fault1);
    for (long long p = es_global_index(); p < n; p += es_grid_stride()) labels[p] = es_crf_argmax(q + p * m, m);
}

// The foreground mask (label 1) as bytes, for the mask refinement: a quarter of the
// labels' download. mask[n] gets the fault flags.
extern "C" __global__ void crf_foreground_u8(const float* q, int n, int m, const unsigned* fault0,
                                             const unsigned* fault1, unsigned char* mask) {
    if (es_global_index() == 0) mask[n] = (unsigned char)((*fault0 | *fault1) != 0u);
    for (long long p = es_global_index(); p < n; p += es_grid_stride())
        mask[p] = es_crf_argmax(q + p * m, m) == 1 ? 1 : 0;
}
