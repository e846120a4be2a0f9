//! Lesions: blobs bounded by a perturbed radial function, painted with their own
//! colour and texture at a contrast that is sometimes subtle.

use ndarray::{Array2, Array3};

use super::texture::{tissue_colour, Fbm, ValueNoise};
use crate::rng::Rng;

/// The outline `r(θ) = radius · (1 + Σₖ aₖ cos(kθ + φₖ))` in a frame stretched by
/// `aspect` and rotated by `angle`, centred at `(cy, cx)` pixels.
#[derive(Debug, Clone)]
pub struct Shape {
    pub cy: f32,
    pub cx: f32,
    pub radius: f32,
    pub aspect: f32,
    pub angle: f32,
    /// (k, aₖ, φₖ) for the harmonics k = 2..; Σ|aₖ| < 0.5 keeps the blob star-shaped
    /// and its outline at least half the radius from the centre.
    pub harmonics: Vec<(f32, f32, f32)>,
}

impl Shape {
    /// Signed distance-like margin in pixels: > 0 inside, < 0 outside (exact on a
    /// circle; on the perturbed outline it is measured along the ray from the centre).
    pub fn margin(&self, y: f32, x: f32) -> f32 {
        let (dy, dx) = (y - self.cy, x - self.cx);
        let (s, c) = self.angle.sin_cos();
        let u = (c * dx + s * dy) / self.aspect.sqrt();
        let v = (-s * dx + c * dy) * self.aspect.sqrt();
        let r = (u * u + v * v).sqrt();
        let theta = v.atan2(u);
        let wobble: f32 = self
            .harmonics
            .iter()
            .map(|&(k, a, phi)| a * (k * theta + phi).cos())
            .sum();
        self.radius * (1.0 + wobble) - r
    }

    /// Largest distance of the outline from the centre, in pixels.
    pub fn extent(&self) -> f32 {
        let wobble: f32 = self.harmonics.iter().map(|h| h.1.abs()).sum();
        self.radius * (1.0 + wobble) * self.aspect.max(1.0 / self.aspect).sqrt()
    }
}

/// How a lesion looks: colour, contrast against the background, and texture.
#[derive(Debug, Clone)]
pub struct Look {
    pub colour: [f32; 3],
    /// Blend weight of the lesion colour over the background (0 = invisible).
    pub contrast: f32,
    pub texture: Fbm,
    /// Brightness modulation of the texture (±).
    pub texture_amount: f32,
    /// Width of the soft edge in pixels.
    pub edge: f32,
}

/// One lesion.
#[derive(Debug, Clone)]
pub struct Lesion {
    pub shape: Shape,
    pub look: Look,
}

/// Radius range, as a fraction of the image side.
const RADIUS: (f32, f32) = (0.08, 0.22);
/// Pixels kept between the lesion and the image border: the method's morphology
/// step clears border-touching components, and real datasets mostly frame lesions.
const BORDER: f32 = 2.0;

impl Lesion {
    /// Draws a lesion for an image `size` pixels wide whose background has mean
    /// colour `background`.
    pub fn sample(size: usize, background: [f32; 3], rng: &mut Rng) -> Lesion {
        let s = size as f32;
        let n_harm = 1 + rng.below_u32(4);
        let mut budget = rng.range(0.05, 0.4);
        let harmonics = (0..n_harm)
            .map(|i| {
                let a = budget * rng.range(0.3, 0.8);
                budget -= a;
                ((2 + i) as f32, a, rng.range(0.0, std::f32::consts::TAU))
            })
            .collect();
        let mut shape = Shape {
            cy: 0.0,
            cx: 0.0,
            radius: s * rng.range(RADIUS.0, RADIUS.1),
            aspect: rng.range(0.6, 1.6),
            angle: rng.range(0.0, std::f32::consts::PI),
            harmonics,
        };
        let reach = shape.extent().min(s / 2.0 - BORDER - 1.0);
        shape.cy = rng.range(reach + BORDER, s - reach - BORDER);
        shape.cx = rng.range(reach + BORDER, s - reach - BORDER);
        // Darker, redder, paler or another tissue colour: never the background's own.
        let colour = match rng.below_u32(4) {
            0 => background.map(|c| c * rng.range(0.35, 0.6)),
            1 => [
                (background[0] * 1.1).min(1.0),
                background[1] * 0.45,
                background[2] * 0.45,
            ],
            2 => background.map(|c| c + (1.0 - c) * rng.range(0.4, 0.7)),
            _ => {
                let c = tissue_colour(rng);
                let shade = rng.range(0.5, 0.8);
                c.map(|v| v * shade)
            }
        };
        // A quarter of the lesions are subtle.
        let contrast = if rng.uniform() < 0.25 {
            rng.range(0.3, 0.5)
        } else {
            rng.range(0.5, 0.95)
        };
        let look = Look {
            colour,
            contrast,
            texture: Fbm {
                noise: ValueNoise::new(rng.next_u64()),
                freq: rng.range(6.0, 20.0),
                octaves: 3,
                gain: 0.5,
            },
            texture_amount: rng.range(0.0, 0.25),
            edge: rng.range(0.5, 2.5),
        };
        Lesion { shape, look }
    }

    /// Paints the lesion over `img` (H, W, 3 in [0, 1]) and returns its mask: the
    /// pixels whose centre lies inside the outline.
    pub fn paint(&self, img: &mut Array3<f32>) -> Array2<bool> {
        let (h, w, _) = img.dim();
        let s = w as f32;
        let look = &self.look;
        let mut mask = Array2::from_elem((h, w), false);
        for i in 0..h {
            for j in 0..w {
                let (y, x) = (i as f32 + 0.5, j as f32 + 0.5);
                let m = self.shape.margin(y, x);
                mask[[i, j]] = m > 0.0;
                // Soft edge: alpha 0.5 exactly on the outline.
                let alpha = (0.5 + m / look.edge).clamp(0.0, 1.0) * look.contrast;
                if alpha == 0.0 {
                    continue;
                }
                let t = 1.0 + look.texture_amount * (2.0 * look.texture.at(x, y, s) - 1.0);
                for c in 0..3 {
                    let v = &mut img[[i, j, c]];
                    *v += alpha * (look.colour[c] * t - *v);
                }
            }
        }
        mask
    }
}
