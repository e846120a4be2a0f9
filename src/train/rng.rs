//! A small seeded generator (SplitMix64) whose streams are keyed by purpose and
//! position, e.g. `(seed, SHUFFLE, epoch)`, so any epoch's order or any sample's
//! augmentation can be regenerated on its own — which is what makes `--resume`
//! continue exactly like an uninterrupted run.

const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Stream purposes (keys).
pub const SPLIT: u64 = 1;
pub const SHUFFLE: u64 = 2;
pub const AUGMENT: u64 = 3;
pub const INIT: u64 = 4;

/// SplitMix64 state.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// The stream for `seed` and a key path.
    pub fn stream(seed: u64, keys: &[u64]) -> Rng {
        let mut state = mix(seed ^ GOLDEN_GAMMA);
        for &k in keys {
            state = mix(state ^ mix(k.wrapping_add(GOLDEN_GAMMA)));
        }
        Rng { state }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN_GAMMA);
        mix(self.state)
    }

    /// Uniform in [0, 1) with 24 random bits.
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.uniform()
    }

    /// Uniform integer in [0, n) (Lemire's multiply-shift; n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// True with probability ½.
    pub fn coin(&mut self) -> bool {
        self.next_u64() >> 63 == 1
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let a: Vec<u64> = (0..4)
            .map(|_| Rng::stream(7, &[SHUFFLE, 3]).next_u64())
            .collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        assert_ne!(
            Rng::stream(7, &[SHUFFLE, 3]).next_u64(),
            Rng::stream(7, &[SHUFFLE, 4]).next_u64()
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
}
