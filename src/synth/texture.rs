//! Tissue-like backgrounds: multi-octave value noise (fractal Brownian motion)
//! blending two colours drawn per image, plus fine grain.

use ndarray::Array3;

use crate::rng::{mix, Rng};

/// Value noise on the integer lattice, quintic-interpolated (smooth to the second
/// derivative, so no grid creases show).
#[derive(Debug, Clone, Copy)]
pub struct ValueNoise {
    seed: u64,
}

impl ValueNoise {
    pub fn new(seed: u64) -> Self {
        ValueNoise { seed }
    }

    fn lattice(&self, ix: i64, iy: i64) -> f32 {
        let h = mix(self.seed ^ mix((ix as u64) ^ (iy as u64).rotate_left(32)));
        (h >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Noise in [0, 1] at continuous coordinates (lattice cells of size 1).
    pub fn sample(&self, x: f32, y: f32) -> f32 {
        let (fx, fy) = (x.floor(), y.floor());
        let (ix, iy) = (fx as i64, fy as i64);
        let fade = |t: f32| t * t * t * (t * (t * 6.0 - 15.0) + 10.0);
        let (u, v) = (fade(x - fx), fade(y - fy));
        let a = self.lattice(ix, iy) + u * (self.lattice(ix + 1, iy) - self.lattice(ix, iy));
        let b = self.lattice(ix, iy + 1)
            + u * (self.lattice(ix + 1, iy + 1) - self.lattice(ix, iy + 1));
        a + v * (b - a)
    }
}

/// Fractal sum of `octaves` noise layers, each twice the frequency and `gain`
/// times the amplitude of the previous; `freq` is in cycles per image side.
/// Returns a value in [0, 1].
#[derive(Debug, Clone, Copy)]
pub struct Fbm {
    pub noise: ValueNoise,
    pub freq: f32,
    pub octaves: usize,
    pub gain: f32,
}

impl Fbm {
    /// At pixel `(x, y)` of an image `size` pixels wide.
    pub fn at(&self, x: f32, y: f32, size: f32) -> f32 {
        let (mut sum, mut amp, mut norm, mut f) = (0.0, 1.0, 0.0, self.freq / size);
        for o in 0..self.octaves {
            // Offset each octave so their lattices do not line up.
            let off = 17.31 * o as f32;
            sum += amp * self.noise.sample(x * f + off, y * f - off);
            norm += amp;
            amp *= self.gain;
            f *= 2.0;
        }
        sum / norm
    }
}

/// Tissue colours (linear RGB in [0, 1]): mucosa pinks, stromal beiges, H&E
/// purples, ultrasound-like greys.
const TISSUE: [[f32; 3]; 6] = [
    [0.86, 0.56, 0.52],
    [0.80, 0.66, 0.56],
    [0.74, 0.38, 0.34],
    [0.70, 0.52, 0.74],
    [0.62, 0.60, 0.58],
    [0.90, 0.72, 0.68],
];

/// A colour near one of the tissue colours.
pub fn tissue_colour(rng: &mut Rng) -> [f32; 3] {
    let base = TISSUE[rng.below_u32(TISSUE.len())];
    base.map(|c| (c + rng.range(-0.08, 0.08)).clamp(0.05, 0.95))
}

/// One image's background: two related colours blended by fBm, shaded by a
/// second, coarser fBm, plus per-pixel grain. Returns (size, size, 3) in [0, 1].
pub fn background(size: usize, rng: &mut Rng) -> Array3<f32> {
    let a = tissue_colour(rng);
    // The second colour is a darker or lighter shade of the first, so the
    // background has structure but no lesion-like colour change.
    let shade = rng.range(0.7, 1.15);
    let b = a.map(|c| (c * shade + rng.range(-0.05, 0.05)).clamp(0.0, 1.0));
    let blend = Fbm {
        noise: ValueNoise::new(rng.next_u64()),
        freq: rng.range(2.0, 8.0),
        octaves: 4,
        gain: rng.range(0.4, 0.65),
    };
    let light = Fbm {
        noise: ValueNoise::new(rng.next_u64()),
        freq: rng.range(1.0, 2.5),
        octaves: 2,
        gain: 0.5,
    };
    let light_amount = rng.range(0.05, 0.25);
    let grain = rng.range(0.01, 0.04);
    let s = size as f32;
    let mut img = Array3::zeros((size, size, 3));
    for i in 0..size {
        for j in 0..size {
            let (x, y) = (j as f32, i as f32);
            let t = blend.at(x, y, s);
            let l = 1.0 + light_amount * (2.0 * light.at(x, y, s) - 1.0);
            for c in 0..3 {
                let v = (a[c] + t * (b[c] - a[c])) * l + grain * rng.normal();
                img[[i, j, c]] = v;
            }
        }
    }
    img
}
