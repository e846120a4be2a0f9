//! The crate's one seeded generator: SplitMix64 (Steele, Lea & Flood, "Fast
//! splittable pseudorandom number generators", OOPSLA 2014), deterministic across
//! platforms and releases, which a dependency's stream need not be.
//!
//! Two ways in:
//! - [`Rng`], a sequential stream: training (shuffles, augmentation, weight init;
//!   streams keyed by purpose and position so `--resume` regenerates any epoch on
//!   its own), synthetic images, patch sampling and the NCut start vectors.
//! - [`standard_normal`] / [`gaussian_noise`], counter-based: element `i` of a
//!   stream is a pure function of `(seed, i)`, so the CUDA kernels in
//!   `kernels/ig.cu` produce the same NoiseTunnel noise element by element.
//!
//! Every draw method below is pinned by a user whose outputs are compared bit for
//! bit (checkpoints, synthetic data sets, noise); do not change one to "improve" it.

/// φ·2⁶⁴, SplitMix64's increment.
pub const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's finaliser: a good 64-bit hash on its own.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A SplitMix64 stream.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// The stream starting from state `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng { state: seed }
    }

    /// The stream for `seed` and a key path, e.g. `(seed, [SHUFFLE, epoch])`: any
    /// key path can be regenerated without drawing the others.
    pub fn stream(seed: u64, keys: &[u64]) -> Rng {
        let mut state = mix(seed ^ GOLDEN_GAMMA);
        for &k in keys {
            state = mix(state ^ mix(k.wrapping_add(GOLDEN_GAMMA)));
        }
        Rng { state }
    }

    /// The stream for item `index` of a set seeded by `seed` (synthetic images):
    /// items do not depend on how many others are drawn.
    pub fn for_item(seed: u64, index: u64) -> Rng {
        let mut r = Rng::new(seed ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03));
        r.next_u64();
        r
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN_GAMMA);
        mix(self.state)
    }

    /// Uniform in [0, 1) with 24 random bits.
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub fn uniform_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in (0, 1), never 0 (so an inverse CDF stays finite and a path point
    /// is never the baseline itself), with 53 random bits.
    pub fn uniform_open_f64(&mut self) -> f64 {
        let bits = mix(self.next_u64() ^ GOLDEN_GAMMA);
        ((bits >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.uniform()
    }

    /// Uniform integer in [0, n) by Lemire's 64×64→128 multiply-shift (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// Uniform integer in [0, n) from the top 32 bits (n ≥ 1, n < 2³²): the
    /// synthetic data sets' draw.
    pub fn below_u32(&mut self, n: usize) -> usize {
        (((self.next_u64() >> 32) * n as u64) >> 32) as usize
    }

    /// `next mod n` (n > 0; slightly biased for huge n): the patch sampler's draw.
    pub fn below_mod(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// True with probability ½.
    pub fn coin(&mut self) -> bool {
        self.next_u64() >> 63 == 1
    }

    /// Fisher–Yates shuffle with [`Rng::below`].
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }

    /// Fisher–Yates shuffle with [`Rng::below_mod`].
    pub fn shuffle_mod<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below_mod(i + 1);
            v.swap(i, j);
        }
    }

    /// Standard normal in f32 (Box–Muller, library ln/cos): for synthetic images
    /// only; attribution noise uses [`standard_normal`].
    pub fn normal(&mut self) -> f32 {
        let u = self.uniform().max(1e-7);
        let v = self.uniform();
        (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
    }
}

/// N(0, 1) sample number `index` of the counter-based stream `seed`: the SplitMix64
/// finaliser of `seed + (index + 1)·φ64` split into two 32-bit uniforms
/// u₁ ∈ (0, 1], u₂ ∈ [0, 1), then Box–Muller (cosine branch) in f64. ln and cos are
/// evaluated with IEEE basic operations only, in a fixed order, so the CUDA kernel
/// (`kernels/ig.cu`, round-to-nearest intrinsics) gives the same bits.
pub fn standard_normal(seed: u64, index: u64) -> f64 {
    let bits = mix(seed.wrapping_add(index.wrapping_add(1).wrapping_mul(GOLDEN_GAMMA)));
    let u1 = ((bits >> 32) as f64 + 1.0) / 4_294_967_296.0;
    let u2 = (bits & 0xFFFF_FFFF) as f64 / 4_294_967_296.0;
    (-2.0 * ln_portable(u1)).sqrt() * cos_2pi_portable(u2)
}

/// `len` values of N(0, stdev²) for NoiseTunnel sample `sample` of stream `seed`
/// (flat indices `sample·len ..`).
pub fn gaussian_noise(seed: u64, sample: usize, len: usize, stdev: f32) -> Vec<f32> {
    let base = sample as u64 * len as u64;
    (0..len as u64)
        .map(|e| (standard_normal(seed, base + e) * stdev as f64) as f32)
        .collect()
}

/// ln(u) for normal u > 0: u = 2^e·m with m ∈ [√½, √2), ln m = 2·atanh(s),
/// s = (m − 1)/(m + 1), |s| ≤ 0.172, by 14 terms of its odd series (error < 1e-16).
pub(crate) fn ln_portable(u: f64) -> f64 {
    let bits = u.to_bits();
    let mut e = ((bits >> 52) & 0x7FF) as i64 - 1023;
    let mut m = f64::from_bits((bits & 0x000F_FFFF_FFFF_FFFF) | (1023u64 << 52));
    if m > std::f64::consts::SQRT_2 {
        m /= 2.0;
        e += 1;
    }
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let mut acc = 1.0 / 29.0;
    for k in (0..14).rev() {
        acc = 1.0 / (2 * k + 1) as f64 + s2 * acc;
    }
    e as f64 * std::f64::consts::LN_2 + 2.0 * s * acc
}

/// cos(2π·v) for v ∈ [0, 1): the quadrant q = round(4v) and the remainder
/// r = 4v − q ∈ [−½, ½] are exact, θ = r·π/2 ∈ [−π/4, π/4], and cos θ or sin θ come
/// from 11 nested Taylor factors (error < 1e-16).
pub(crate) fn cos_2pi_portable(v: f64) -> f64 {
    let v4 = 4.0 * v;
    let q = (v4 + 0.5).floor();
    let theta = (v4 - q) * std::f64::consts::FRAC_PI_2;
    let t2 = theta * theta;
    let (mut c, mut s) = (1.0, 1.0);
    for k in (1..=11).rev() {
        let k = k as f64;
        c = 1.0 - t2 * c / ((2.0 * k - 1.0) * (2.0 * k));
        s = 1.0 - t2 * s / ((2.0 * k) * (2.0 * k + 1.0));
    }
    let s = theta * s;
    match (q as i64) & 3 {
        0 => c,
        1 => -s,
        2 => -c,
        _ => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_matches_the_reference_sequence() {
        // First outputs of the reference C implementation (Vigna's splitmix64.c)
        // seeded with 0.
        let mut r = Rng::new(0);
        assert_eq!(r.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(r.next_u64(), 0x6e78_9e6a_a1b9_65f4);
    }

    #[test]
    fn keyed_streams_are_reproducible_and_distinct() {
        let a: Vec<u64> = (0..4).map(|_| Rng::stream(7, &[2, 3]).next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        assert_ne!(
            Rng::stream(7, &[2, 3]).next_u64(),
            Rng::stream(7, &[2, 4]).next_u64()
        );
        let mut r = Rng::stream(1, &[]);
        let mean = (0..10_000).map(|_| r.uniform() as f64).sum::<f64>() / 1e4;
        assert!((mean - 0.5).abs() < 0.02);
        let mut counts = [0usize; 3];
        (0..3000).for_each(|_| counts[r.below(3)] += 1);
        assert!(
            counts.iter().all(|&c| (900..1100).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn shuffles_are_seeded_permutations() {
        let mut a: Vec<u32> = (0..50).collect();
        let mut b = a.clone();
        Rng::new(3).shuffle_mod(&mut a);
        Rng::new(3).shuffle_mod(&mut b);
        assert_eq!(a, b);
        let mut c: Vec<u32> = (0..50).collect();
        Rng::new(4).shuffle_mod(&mut c);
        assert_ne!(a, c);
        a.sort();
        assert_eq!(a, (0..50).collect::<Vec<_>>());
    }

    #[test]
    fn counter_normals_have_standard_moments() {
        let v = gaussian_noise(7, 3, 200_000, 1.0);
        let n = v.len() as f64;
        let mean = v.iter().map(|x| *x as f64).sum::<f64>() / n;
        let var = v.iter().map(|x| (*x as f64 - mean).powi(2)).sum::<f64>() / n;
        let kurt = v.iter().map(|x| (*x as f64 - mean).powi(4)).sum::<f64>() / n / (var * var);
        assert!(
            mean.abs() < 0.01 && (var - 1.0).abs() < 0.01 && (kurt - 3.0).abs() < 0.05,
            "{mean} {var} {kurt}"
        );
        assert_eq!(gaussian_noise(1, 0, 16, 2.0), gaussian_noise(1, 0, 16, 2.0));
        assert_ne!(gaussian_noise(1, 0, 16, 1.0), gaussian_noise(2, 0, 16, 1.0));
        assert_ne!(gaussian_noise(1, 0, 16, 1.0), gaussian_noise(1, 1, 16, 1.0));
    }

    #[test]
    fn portable_ln_and_cos_agree_with_the_library() {
        for i in 1..=20_000u64 {
            let u = (i * 214_013 % 4_294_967_296) as f64 / 4_294_967_296.0 + 2.3e-10;
            let (got, want) = (ln_portable(u), u.ln());
            assert!(
                (got - want).abs() <= 4e-16 * want.abs().max(1.0),
                "ln({u}) = {got} vs {want}"
            );
            let v = (i as f64 * 0.618_033_988_749_894_9).fract();
            let (got, want) = (cos_2pi_portable(v), (std::f64::consts::TAU * v).cos());
            assert!((got - want).abs() < 1e-15, "cos(2π·{v}) = {got} vs {want}");
        }
        assert_eq!(ln_portable(1.0), 0.0);
        assert_eq!(cos_2pi_portable(0.0), 1.0);
        assert_eq!(cos_2pi_portable(0.5), -1.0);
    }
}
