//! Mean-field inference of the fully connected CRF (Krähenbühl & Koltun, NIPS 2011) as
//! densecrf's `DenseCRF::inference` runs it (docs/postprocessing.md §5.2), with Potts compatibilities
//! and symmetrically normalised Gaussian kernels.
//!
//! With unary energies `U` (labels × pixels) and kernels `k` of Potts weight `w_k`:
//!
//! ```text
//! Q⁰ = softmax(−U)
//! repeat n times:  t = −U;  for each kernel k (insertion order): t = t − (−w_k · K_k(Q));  Q = softmax(t)
//! K_k(Q) = n_k ∘ L_k(n_k ∘ Q),   n_k = 1 / sqrt(L_k(1) + 1e-20)   (computed in double, stored f32)
//! ```
//!
//! `L_k` is the permutohedral-lattice Gaussian filter ([`super::lattice`]); it includes
//! each pixel's own contribution. The softmax is per pixel: subtract the maximum, `expf`,
//! divide by the sum. For 4 or more labels densecrf's Eigen evaluates the exponential of
//! each full group of 4 labels with its SSE polynomial (`pexp`) and sums groups of 4
//! lanes pairwise; both are reproduced here so that any label count matches.
//!
//! All arithmetic is f32 in densecrf's order. Every loop is per pixel or per lattice
//! vertex, so the result does not depend on the number of threads.

use rayon::prelude::*;

use super::lattice::{FilterScratch, Lattice};
use crate::error::Result;

/// Pixels per parallel work item.
const CHUNK: usize = 4096;

/// One Gaussian pairwise term: its lattice, its symmetric normalisation and its Potts weight.
#[derive(Debug, Clone)]
pub(crate) struct PairwiseKernel {
    lattice: Lattice,
    norm: Vec<f32>,
    weight: f32,
}

impl PairwiseKernel {
    /// Builds the kernel of `features`, point-major `(n_points, d)`, with Potts weight `weight`
    /// (pydensecrf's scalar `compat`).
    pub(crate) fn new(features: &[f32], d: usize, weight: f32) -> Result<Self> {
        let lattice = Lattice::new(features, d)?;
        let n = lattice.n_points();
        let ones = vec![1f32; n];
        let mut norm = vec![0f32; n];
        lattice.filter(&ones, &ones, 1, &mut norm, &mut FilterScratch::default());
        norm.par_iter_mut()
            .for_each(|v| *v = (1.0 / (*v as f64 + 1e-20).sqrt()) as f32);
        Ok(PairwiseKernel {
            lattice,
            norm,
            weight,
        })
    }

    /// `t = t − (−w · K(q))`, element by element, with `K(q) = n ∘ L(n ∘ q)` for `q`
    /// point-major `(n_points, m)` (Potts: compat(K) = −w·K, and densecrf subtracts it).
    fn subtract_message(&self, q: &[f32], m: usize, t: &mut [f32], scratch: &mut FilterScratch) {
        let w = self.weight;
        self.lattice
            .filter_into(q, &self.norm, m, t, scratch, move |t, k| *t -= -w * k);
    }
}

/// Mean-field inference. `unary` is point-major `(n_points, m)` (−log probabilities);
/// returns the marginals `Q`, point-major `(n_points, m)`.
pub(crate) fn inference(
    unary: &[f32],
    m: usize,
    kernels: &[PairwiseKernel],
    n_iterations: usize,
) -> Vec<f32> {
    let mut q = vec![0f32; unary.len()];
    q.par_chunks_mut(m * CHUNK)
        .zip(unary.par_chunks(m * CHUNK))
        .for_each(|(q, u)| {
            for (q, u) in q.iter_mut().zip(u) {
                *q = -u;
            }
            softmax_rows(q, m);
        });
    if n_iterations == 0 {
        return q;
    }
    let mut scratch = FilterScratch::default();
    // t = −U, then per kernel in order t = t − (−w·K(Q)), then Q = softmax(t); each
    // kernel's message is folded into t as it is sliced (no array per kernel).
    let mut t = vec![0f32; unary.len()];
    for _ in 0..n_iterations {
        t.par_chunks_mut(m * CHUNK)
            .zip(unary.par_chunks(m * CHUNK))
            .for_each(|(t, u)| {
                for (t, u) in t.iter_mut().zip(u) {
                    *t = -u;
                }
            });
        for k in kernels {
            k.subtract_message(&q, m, &mut t, &mut scratch);
        }
        t.par_chunks_mut(m * CHUNK).for_each(|t| softmax_rows(t, m));
        std::mem::swap(&mut q, &mut t);
    }
    q
}

/// [`softmax_in_place`] on every row of `m` values of `t`, bit for bit, in stages over
/// the whole block (max, packet exps, tail exps, sums) so that the independent packet
/// exponentials of successive pixels overlap in the pipeline instead of waiting on one
/// another and on the libm calls.
pub(crate) fn softmax_rows(t: &mut [f32], m: usize) {
    // Common label counts get a copy with `m` known at compile time (unrolled rows).
    match m {
        2 => softmax_rows_of(t, 2),
        3 => softmax_rows_of(t, 3),
        4 => softmax_rows_of(t, 4),
        5 => softmax_rows_of(t, 5),
        6 => softmax_rows_of(t, 6),
        7 => softmax_rows_of(t, 7),
        8 => softmax_rows_of(t, 8),
        _ => softmax_rows_of(t, m),
    }
}

#[inline(always)]
fn softmax_rows_of(t: &mut [f32], m: usize) {
    if m < 4 {
        for row in t.chunks_exact_mut(m) {
            softmax_in_place(row);
        }
        return;
    }
    let packets = m / 4 * 4;
    for row in t.chunks_exact_mut(m) {
        subtract_max(row);
    }
    exp_packets(t, m, packets);
    if packets < m {
        for row in t.chunks_exact_mut(m) {
            exp_tail(&mut row[packets..]);
        }
    }
    for row in t.chunks_exact_mut(m) {
        normalize_packets(row, packets);
    }
}

/// [`eigen_pexp4`] on the first `packets` values of every row of `m`: two packets at
/// a time in the 256-bit registers where the CPU has AVX2 (the same operations on each
/// lane, so the same bits), one at a time otherwise.
#[inline(always)]
fn exp_packets(t: &mut [f32], m: usize, packets: usize) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is present (checked just above).
        unsafe { exp_packets_avx2(t, m, packets) };
        return;
    }
    for row in t.chunks_exact_mut(m) {
        for x in row[..packets].chunks_exact_mut(4) {
            let x: &mut [f32; 4] = x.try_into().expect("a packet of 4");
            *x = eigen_pexp4(*x);
        }
    }
}

/// [`exp_packets`] with AVX2: the packets in order, paired into one 8-lane
/// [`eigen_pexp4`] each (an odd last one alone).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(clippy::excessive_precision)]
unsafe fn exp_packets_avx2(t: &mut [f32], m: usize, packets: usize) {
    use std::arch::x86_64::*;
    let per_row = packets / 4;
    let total = t.len() / m * per_row;
    // Where packet i starts (one packet per row below 8 labels: no division).
    let start = |i: usize| {
        if per_row == 1 {
            i * m
        } else {
            i / per_row * m + 4 * (i % per_row)
        }
    };
    if total % 2 == 1 {
        let a = start(total - 1);
        let x: &mut [f32; 4] = (&mut t[a..a + 4]).try_into().expect("a packet of 4");
        *x = eigen_pexp4(*x);
    }
    let base = t.as_mut_ptr();
    for i in (0..total / 2 * 2).step_by(2) {
        let (a, b) = (start(i), start(i + 1));
        // SAFETY: a + 4 and b + 4 are within t (packets ≤ m, rows·m ≤ t.len()), the
        // two packets do not overlap, and the loads and stores are unaligned.
        unsafe {
            let (pa, pb) = (base.add(a), base.add(b));
            let xin = _mm256_insertf128_ps::<1>(
                _mm256_castps128_ps256(_mm_loadu_ps(pa)),
                _mm_loadu_ps(pb),
            );
            let one = _mm256_set1_ps(1.0);
            let x = _mm256_max_ps(
                _mm256_min_ps(xin, _mm256_set1_ps(88.3762626647950)),
                _mm256_set1_ps(-88.3762626647949),
            );
            let fx = _mm256_add_ps(
                _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E)),
                _mm256_set1_ps(0.5),
            );
            let tr = _mm256_cvtepi32_ps(_mm256_cvttps_epi32(fx));
            let fx = _mm256_sub_ps(tr, _mm256_and_ps(_mm256_cmp_ps::<_CMP_GT_OS>(tr, fx), one));
            let x = _mm256_sub_ps(x, _mm256_mul_ps(fx, _mm256_set1_ps(0.693359375)));
            let x = _mm256_sub_ps(x, _mm256_mul_ps(fx, _mm256_set1_ps(-2.12194440e-4)));
            let z = _mm256_mul_ps(x, x);
            let mut y = _mm256_set1_ps(1.9875691500e-4);
            for p in [
                1.3981999507e-3f32,
                8.3334519073e-3,
                4.1665795894e-2,
                1.6666665459e-1,
                5.0000001201e-1,
            ] {
                y = _mm256_add_ps(_mm256_mul_ps(y, x), _mm256_set1_ps(p));
            }
            y = _mm256_add_ps(_mm256_mul_ps(y, z), x);
            y = _mm256_add_ps(y, one);
            let e = _mm256_slli_epi32::<23>(_mm256_add_epi32(
                _mm256_cvttps_epi32(fx),
                _mm256_set1_epi32(0x7f),
            ));
            let r = _mm256_max_ps(_mm256_mul_ps(y, _mm256_castsi256_ps(e)), xin);
            _mm_storeu_ps(pa, _mm256_castps256_ps128(r));
            _mm_storeu_ps(pb, _mm256_extractf128_ps::<1>(r));
        }
    }
}

/// Subtracts the row's maximum (densecrf's first step).
#[inline(always)]
fn subtract_max(t: &mut [f32]) {
    let mx = t
        .iter()
        .copied()
        .fold(f32::NEG_INFINITY, |a, b| if b > a { b } else { a });
    for x in t.iter_mut() {
        *x -= mx;
    }
}

/// libm `expf` on the labels after the last full packet.
#[inline(always)]
fn exp_tail(t: &mut [f32]) {
    for x in t {
        // exp(±0) = 1 exactly: skip the call for the maximum.
        *x = if *x == 0.0 { 1.0 } else { x.exp() };
    }
}

/// Eigen's sum of the exponentials (`packets` of them in full packets of 4) and the
/// division by it.
#[inline(always)]
fn normalize_packets(t: &mut [f32], packets: usize) {
    let m = t.len();
    let sum = if packets == 0 {
        t[1..].iter().fold(t[0], |a, b| a + b)
    } else {
        // Eigen's vectorised redux: two packet accumulators over pairs of packets, then
        // one more packet, then the horizontal sum (a0+a2)+(a1+a3), then the tail.
        let add = |a: [f32; 4], b: &[f32]| [a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3]];
        let mut p0 = [t[0], t[1], t[2], t[3]];
        if packets > 4 {
            let mut p1 = [t[4], t[5], t[6], t[7]];
            let end2 = m / 8 * 8;
            let mut i = 8;
            while i < end2 {
                p0 = add(p0, &t[i..i + 4]);
                p1 = add(p1, &t[i + 4..i + 8]);
                i += 8;
            }
            p0 = add(p0, &p1);
            if packets > end2 {
                p0 = add(p0, &t[end2..end2 + 4]);
            }
        }
        let mut s = (p0[0] + p0[2]) + (p0[1] + p0[3]);
        for x in &t[packets..] {
            s += x;
        }
        s
    };
    for x in t.iter_mut() {
        *x /= sum;
    }
}

/// densecrf's `expAndNormalize` on one pixel (Eigen, SSE2 build): subtract the max,
/// exponentiate, divide by the sum.
#[inline]
pub(crate) fn softmax_in_place(t: &mut [f32]) {
    let m = t.len();
    if let [a, b] = t {
        // Two labels: the larger one's exponential is exp(0) = 1 exactly, the other's
        // expf(min − max); Σ = e0 + e1 in either order (addition commutes exactly).
        let (lo, hi) = if *b > *a { (*a, *b) } else { (*b, *a) };
        let e = (lo - hi).exp();
        let (e0, e1) = if *b > *a {
            (e, 1.0)
        } else if *a > *b {
            (1.0, e)
        } else {
            (1.0, 1.0)
        };
        let s = e0 + e1;
        (*a, *b) = (e0 / s, e1 / s);
        return;
    }
    subtract_max(t);
    // Full groups of 4 go through Eigen's packet exp, the rest through libm expf.
    let packets = m / 4 * 4;
    for x in t[..packets].chunks_exact_mut(4) {
        let x: &mut [f32; 4] = x.try_into().expect("a packet of 4");
        *x = eigen_pexp4(*x);
    }
    exp_tail(&mut t[packets..]);
    normalize_packets(t, packets);
}

/// Eigen 3.3's SSE2 `pexp<Packet4f>` on one packet: [`eigen_pexp`] on each lane, with
/// the same SSE2 instructions as Eigen on x86-64 (so bit-identical to the scalar lane).
#[inline]
#[allow(clippy::excessive_precision)]
fn eigen_pexp4(x0: [f32; 4]) -> [f32; 4] {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        // SAFETY: SSE2 is part of the x86-64 baseline; loads and stores are unaligned.
        unsafe {
            let xin = _mm_loadu_ps(x0.as_ptr());
            let one = _mm_set1_ps(1.0);
            let x = _mm_max_ps(
                _mm_min_ps(xin, _mm_set1_ps(88.3762626647950)),
                _mm_set1_ps(-88.3762626647949),
            );
            let fx = _mm_add_ps(
                _mm_mul_ps(x, _mm_set1_ps(std::f32::consts::LOG2_E)),
                _mm_set1_ps(0.5),
            );
            let tr = _mm_cvtepi32_ps(_mm_cvttps_epi32(fx));
            let fx = _mm_sub_ps(tr, _mm_and_ps(_mm_cmpgt_ps(tr, fx), one));
            let x = _mm_sub_ps(x, _mm_mul_ps(fx, _mm_set1_ps(0.693359375)));
            let x = _mm_sub_ps(x, _mm_mul_ps(fx, _mm_set1_ps(-2.12194440e-4)));
            let z = _mm_mul_ps(x, x);
            let mut y = _mm_set1_ps(1.9875691500e-4);
            for p in [
                1.3981999507e-3f32,
                8.3334519073e-3,
                4.1665795894e-2,
                1.6666665459e-1,
                5.0000001201e-1,
            ] {
                y = _mm_add_ps(_mm_mul_ps(y, x), _mm_set1_ps(p));
            }
            y = _mm_add_ps(_mm_mul_ps(y, z), x);
            y = _mm_add_ps(y, one);
            let e = _mm_slli_epi32::<23>(_mm_add_epi32(_mm_cvttps_epi32(fx), _mm_set1_epi32(0x7f)));
            // max(r, x0): the second operand when not r > x0, as the scalar lane.
            let r = _mm_max_ps(_mm_mul_ps(y, _mm_castsi128_ps(e)), xin);
            let mut out = [0f32; 4];
            _mm_storeu_ps(out.as_mut_ptr(), r);
            out
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        x0.map(eigen_pexp)
    }
}

/// One lane of Eigen 3.3's SSE2 `pexp<Packet4f>` (the Cephes `expf` polynomial, no FMA,
/// floor by truncation). The constants are Cephes' decimal literals, rounded to f32.
#[inline]
#[allow(clippy::excessive_precision)]
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
fn eigen_pexp(x0: f32) -> f32 {
    const EXP_HI: f32 = 88.3762626647950;
    const EXP_LO: f32 = -88.3762626647949;
    const C1: f32 = 0.693359375;
    const C2: f32 = -2.12194440e-4;
    const P: [f32; 6] = [
        1.9875691500e-4,
        1.3981999507e-3,
        8.3334519073e-3,
        4.1665795894e-2,
        1.6666665459e-1,
        5.0000001201e-1,
    ];
    let x = x0.clamp(EXP_LO, EXP_HI);
    let fx = x * std::f32::consts::LOG2_E + 0.5;
    let tr = (fx as i32) as f32;
    let fx = if tr > fx { tr - 1.0 } else { tr };
    let x = x - fx * C1;
    let x = x - fx * C2;
    let z = x * x;
    let mut y = P[0];
    for &p in &P[1..] {
        y = y * x + p;
    }
    y = y * z + x;
    y += 1.0;
    let pow2 = f32::from_bits((((fx as i32) + 0x7f) << 23) as u32);
    let r = y * pow2;
    if r > x0 {
        r
    } else {
        x0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_matches_definition() {
        for m in 1..12 {
            let mut t: Vec<f32> = (0..m)
                .map(|i| -(i as f32) * 0.37 + (i % 3) as f32)
                .collect();
            let want: Vec<f64> = {
                let mx = t.iter().copied().fold(f32::MIN, f32::max) as f64;
                let e: Vec<f64> = t.iter().map(|&x| (x as f64 - mx).exp()).collect();
                let s: f64 = e.iter().sum();
                e.iter().map(|v| v / s).collect()
            };
            softmax_in_place(&mut t);
            for (a, b) in t.iter().zip(&want) {
                assert!((*a as f64 - b).abs() < 1e-6, "m={m}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn softmax_rows_equals_rows_of_softmax_in_place() {
        for m in 1..12 {
            let t: Vec<f32> = (0..m * 37)
                .map(|i| ((i * 7919) % 1000) as f32 / 97.0 - 5.0)
                .collect();
            let mut a = t.clone();
            softmax_rows(&mut a, m);
            for (row, want) in t.chunks_exact(m).zip(a.chunks_exact(m)) {
                let mut r = row.to_vec();
                softmax_in_place(&mut r);
                assert_eq!(
                    r.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    "m={m}"
                );
            }
        }
    }

    #[test]
    fn pexp_is_close_to_expf() {
        let mut x = 0f32;
        while x > -87.0 {
            let (a, b) = (eigen_pexp(x), x.exp());
            assert!(((a - b) / b).abs() < 4e-7, "{x}: {a} vs {b}");
            x -= 0.013;
        }
        assert_eq!(eigen_pexp(0.0), 1.0);
        // The packet version is the scalar lane, bit for bit.
        let mut x = 1.5f32;
        while x > -100.0 {
            let p = [x, x * 0.5, x - 0.37, -x.abs() * 0.9];
            let want = p.map(eigen_pexp);
            assert_eq!(
                eigen_pexp4(p).map(f32::to_bits),
                want.map(f32::to_bits),
                "{p:?}"
            );
            x -= 0.0071;
        }
        assert_eq!(eigen_pexp(-200.0), 0.0);
    }
}
