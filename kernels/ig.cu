// Integrated Gradients and NoiseTunnel on the device: the path points of a batch of
// rows, the quadrature-weighted gradient sum, the final multiply by (x − b), the
// seeded NoiseTunnel noise and its aggregation. The arithmetic uses the
// round-to-nearest intrinsics, which are never contracted into FMAs, so each value
// is bit-identical to the CPU's (Rust does not contract either).
// CPU twins: attr::ig::integrated_gradients (path, accumulation, multiply),
// attr::noise::gaussian_noise, attr::noise_tunnel::aggregate.
#ifndef ES_COMMON_CUH
#include "common.cuh"
#endif

// The batch's first row, `row0`, is read from device memory rather than passed as an
// argument, so that the launches of an IG batch are identical from batch to batch and
// can be captured once into a CUDA graph and replayed; ig_advance_row0 moves it on.

// Row r of the batch is row g = row0 + r of the (input, step) list: path point k
// of input j, g = j·n_steps + k. Its α and weight are entry g % period of the
// tables (period n_steps for a fixed rule, every row for the stratified design):
// out[r] = b + α·(x_j − b).
extern "C" __global__ void ig_path_f32(const float* __restrict__ inputs, const float* __restrict__ baseline,
                                       const float* __restrict__ alphas, float* __restrict__ out,
                                       const int* __restrict__ row0_at, int rows, int n_steps, int period,
                                       int len) {
    const int row0 = *row0_at;
    const long long n = (long long)rows * len;
    for (long long o = es_global_index(); o < n; o += es_grid_stride()) {
        const int r = int(o / len), e = int(o % len);
        const int g = row0 + r, j = g / n_steps;
        const float b = baseline[e];
        const float d = __fsub_rn(inputs[(long long)j * len + e], b);
        out[o] = __fadd_rn(b, __fmul_rn(alphas[g % period], d));
    }
}

// acc[j] += w·grad[r] for each row r of the batch, in row order (one thread owns
// an element of every input, so there is no race and the order matches the CPU).
extern "C" __global__ void ig_accumulate_f32(const float* __restrict__ grads, const float* __restrict__ weights,
                                             float* __restrict__ acc, const int* __restrict__ row0_at, int rows,
                                             int n_steps, int period, int len) {
    const int row0 = *row0_at;
    for (long long e = es_global_index(); e < len; e += es_grid_stride()) {
        for (int r = 0; r < rows; ++r) {
            const int g = row0 + r, j = g / n_steps;
            float* a = acc + (long long)j * len + e;
            *a = __fadd_rn(*a, __fmul_rn(grads[(long long)r * len + e], weights[g % period]));
        }
    }
}

// *row0_at += rows, after a batch's last read of it (one thread; launched <<<1, 32>>>).
extern "C" __global__ void ig_advance_row0(int* __restrict__ row0_at, int rows) {
    if (blockIdx.x == 0 && threadIdx.x == 0) *row0_at += rows;
}

// out = acc ⊙ (x − b) when multiply_by_inputs, else acc.
extern "C" __global__ void ig_finish_f32(const float* __restrict__ acc, const float* __restrict__ inputs,
                                         const float* __restrict__ baseline, float* __restrict__ out, int n_inputs,
                                         int len, int multiply_by_inputs) {
    const long long n = (long long)n_inputs * len;
    for (long long o = es_global_index(); o < n; o += es_grid_stride()) {
        const float a = acc[o];
        out[o] = multiply_by_inputs ? __fmul_rn(a, __fsub_rn(inputs[o], baseline[o % len])) : a;
    }
}

// SplitMix64 finaliser (Steele, Lea & Flood 2014), as attr::noise::splitmix64.
__device__ __forceinline__ unsigned long long es_splitmix64(unsigned long long z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// ln(u), u > 0 normal, and cos(2π·v), v ∈ [0, 1), from IEEE basic operations in the
// order of attr::noise::{ln_portable, cos_2pi_portable}: the library log/cos differ
// between host and device in the last bit, these do not.
__device__ __forceinline__ double es_ln_portable(double u) {
    const unsigned long long bits = (unsigned long long)__double_as_longlong(u);
    long long e = (long long)((bits >> 52) & 0x7FFull) - 1023;
    double m = __longlong_as_double((long long)((bits & 0x000FFFFFFFFFFFFFull) | (1023ull << 52)));
    if (m > 1.4142135623730951) {
        m = __ddiv_rn(m, 2.0);
        e += 1;
    }
    const double s = __ddiv_rn(__dsub_rn(m, 1.0), __dadd_rn(m, 1.0));
    const double s2 = __dmul_rn(s, s);
    double acc = __ddiv_rn(1.0, 29.0);
    for (int k = 13; k >= 0; --k) acc = __dadd_rn(__ddiv_rn(1.0, (double)(2 * k + 1)), __dmul_rn(s2, acc));
    return __dadd_rn(__dmul_rn((double)e, 0.6931471805599453), __dmul_rn(__dmul_rn(2.0, s), acc));
}

__device__ __forceinline__ double es_cos_2pi_portable(double v) {
    const double v4 = __dmul_rn(4.0, v);
    const double q = floor(__dadd_rn(v4, 0.5));
    const double theta = __dmul_rn(__dsub_rn(v4, q), 1.5707963267948966);
    const double t2 = __dmul_rn(theta, theta);
    double c = 1.0, s = 1.0;
    for (int k = 11; k >= 1; --k) {
        const double kk = (double)k;
        c = __dsub_rn(1.0, __ddiv_rn(__dmul_rn(t2, c), __dmul_rn(__dsub_rn(__dmul_rn(2.0, kk), 1.0), __dmul_rn(2.0, kk))));
        s = __dsub_rn(1.0, __ddiv_rn(__dmul_rn(t2, s), __dmul_rn(__dmul_rn(2.0, kk), __dadd_rn(__dmul_rn(2.0, kk), 1.0))));
    }
    s = __dmul_rn(theta, s);
    switch (((long long)q) & 3) {
        case 0: return c;
        case 1: return -s;
        case 2: return -c;
        default: return s;
    }
}

// N(0, 1) number `index` of stream `seed`: Box–Muller (cosine branch) in f64.
__device__ __forceinline__ double es_standard_normal(unsigned long long seed, unsigned long long index) {
    const unsigned long long bits = es_splitmix64(seed + (index + 1ull) * 0x9E3779B97F4A7C15ull);
    const double u1 = __ddiv_rn(__dadd_rn(__ull2double_rn(bits >> 32), 1.0), 4294967296.0);
    const double u2 = __ddiv_rn(__ull2double_rn(bits & 0xFFFFFFFFull), 4294967296.0);
    return __dmul_rn(__dsqrt_rn(__dmul_rn(-2.0, es_ln_portable(u1))), es_cos_2pi_portable(u2));
}

// noisy[s, e] = f32(N(seed, s·len + e)·stdev) + x[e] for NoiseTunnel sample s.
extern "C" __global__ void nt_noise_f32(const float* __restrict__ x, float* __restrict__ noisy,
                                        unsigned long long seed, float stdev, int samples, int len) {
    const long long n = (long long)samples * len;
    for (long long o = es_global_index(); o < n; o += es_grid_stride()) {
        const float noise = __double2float_rn(__dmul_rn(es_standard_normal(seed, (unsigned long long)o), (double)stdev));
        noisy[o] = __fadd_rn(noise, x[o % len]);
    }
}

// --- Variance-reduced noise (ig::noise_design), drawn where it is used -------------

#define ES_GOLDEN_GAMMA 0x9E3779B97F4A7C15ull
#define ES_STRATA_KEY 0x535452415441ull  // "STRATA"
// Strata one thread shuffles in its local memory (ig::noise_design draws any number;
// the engine draws more on the host).
#define ES_MAX_STRATA 256

// Φ⁻¹(p), p ∈ (0, 1), by Acklam's rational approximation in the host's order
// (ig::noise_design::inverse_normal_cdf), with the portable ln.
__device__ __forceinline__ double es_inverse_normal_cdf(double p) {
    const double a[6] = {-3.969683028665376e1, 2.209460984245205e2, -2.759285104469687e2,
                         1.38357751867269e2,   -3.066479806614716e1, 2.506628277459239};
    const double b[5] = {-5.447609879822406e1, 1.615858368580409e2, -1.556989798598866e2,
                         6.680131188771972e1,  -1.328068155288572e1};
    const double c[6] = {-7.784894002430293e-3, -3.223964580411365e-1, -2.400758277161838,
                         -2.549732539343734,    4.374664141464968,     2.938163982698783};
    const double d[4] = {7.784695709041462e-3, 3.224671290700398e-1, 2.445134137142996, 3.754408661907416};
    const double p_low = 0.02425;
    if (p < p_low || p > __dsub_rn(1.0, p_low)) {
        const double tail_p = p < p_low ? p : __dsub_rn(1.0, p);
        const double q = __dsqrt_rn(__dmul_rn(-2.0, es_ln_portable(tail_p)));
        double num = c[0], den = d[0];
        for (int i = 1; i < 6; ++i) num = __dadd_rn(__dmul_rn(num, q), c[i]);
        for (int i = 1; i < 4; ++i) den = __dadd_rn(__dmul_rn(den, q), d[i]);
        den = __dadd_rn(__dmul_rn(den, q), 1.0);
        const double z = __ddiv_rn(num, den);
        return p < p_low ? z : -z;
    }
    const double q = __dsub_rn(p, 0.5);
    const double r = __dmul_rn(q, q);
    double num = a[0], den = b[0];
    for (int i = 1; i < 6; ++i) num = __dadd_rn(__dmul_rn(num, r), a[i]);
    for (int i = 1; i < 5; ++i) den = __dadd_rn(__dmul_rn(den, r), b[i]);
    den = __dadd_rn(__dmul_rn(den, r), 1.0);
    return __ddiv_rn(__dmul_rn(num, q), den);
}

// noisy[j, e] = noise_j[e] + x[e] for the designs of ig::noise_design:
// 1 antithetic, 2 stratified, 3 stratified antithetic. Antithetic designs draw the
// first ⌈s/2⌉ samples and append the negatives of the first ⌊s/2⌋. One thread per
// element draws all its samples, as the host does element by element.
extern "C" __global__ void nt_designed_f32(const float* __restrict__ x, float* __restrict__ noisy,
                                           unsigned long long seed, float stdev, int samples, int len,
                                           int design) {
    const bool mirrored = design != 2;
    const int drawn = mirrored ? (samples + 1) / 2 : samples;
    unsigned short strata[ES_MAX_STRATA];
    for (long long e = es_global_index(); e < len; e += es_grid_stride()) {
        if (design == 1) {
            for (int j = 0; j < drawn; ++j) {
                const unsigned long long index = (unsigned long long)j * (unsigned long long)len + e;
                noisy[(long long)j * len + e] =
                    __double2float_rn(__dmul_rn(es_standard_normal(seed, index), (double)stdev));
            }
        } else {
            // Rng::stream(seed, [STRATA_KEY, e]), then a Fisher–Yates shuffle with
            // Rng::below and one uniform per sample.
            unsigned long long state = es_splitmix64(seed ^ ES_GOLDEN_GAMMA);
            state = es_splitmix64(state ^ es_splitmix64(ES_STRATA_KEY + ES_GOLDEN_GAMMA));
            state = es_splitmix64(state ^ es_splitmix64((unsigned long long)e + ES_GOLDEN_GAMMA));
            for (int j = 0; j < drawn; ++j) strata[j] = (unsigned short)j;
            for (int i = drawn - 1; i >= 1; --i) {
                state += ES_GOLDEN_GAMMA;
                const int k = (int)__umul64hi(es_splitmix64(state), (unsigned long long)(i + 1));
                const unsigned short t = strata[i];
                strata[i] = strata[k];
                strata[k] = t;
            }
            for (int j = 0; j < drawn; ++j) {
                state += ES_GOLDEN_GAMMA;
                const unsigned long long bits = es_splitmix64(es_splitmix64(state) ^ ES_GOLDEN_GAMMA);
                const double u = __ddiv_rn(__dadd_rn(__ull2double_rn(bits >> 11), 0.5), 9007199254740992.0);
                const double p = __ddiv_rn(__dadd_rn((double)strata[j], u), (double)drawn);
                noisy[(long long)j * len + e] =
                    __double2float_rn(__dmul_rn(es_inverse_normal_cdf(p), (double)stdev));
            }
        }
        for (int j = drawn; j < samples; ++j) noisy[(long long)j * len + e] = -noisy[(long long)(j - drawn) * len + e];
        for (int j = 0; j < samples; ++j) {
            float* v = noisy + (long long)j * len + e;
            *v = __fadd_rn(*v, x[e]);
        }
    }
}

// NoiseTunnel aggregation over samples: 0 smoothgrad (mean), 1 smoothgrad_sq (mean
// of squares), 2 vargrad (E[a²] − E[a]²), accumulated in sample order as the CPU.
extern "C" __global__ void nt_aggregate_f32(const float* __restrict__ per_sample, float* __restrict__ out,
                                            int samples, int len, int nt_type) {
    for (long long e = es_global_index(); e < len; e += es_grid_stride()) {
        float sum = per_sample[e];
        float sum_sq = __fmul_rn(sum, sum);
        for (int s = 1; s < samples; ++s) {
            const float v = per_sample[(long long)s * len + e];
            sum = __fadd_rn(sum, v);
            sum_sq = __fadd_rn(sum_sq, __fmul_rn(v, v));
        }
        const float mean = __fdiv_rn(sum, (float)samples);
        const float mean_sq = __fdiv_rn(sum_sq, (float)samples);
        out[e] = nt_type == 0 ? mean : nt_type == 1 ? mean_sq : __fsub_rn(mean_sq, __fmul_rn(mean, mean));
    }
}
