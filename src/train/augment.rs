//! Seeded training augmentation on square RGB images: random resized crop,
//! horizontal/vertical flips and rotation are composed into one affine map and
//! resampled once (bilinear, zero outside the image, as torchvision's
//! `RandomRotation` default fill); then colour jitter (brightness, contrast,
//! saturation, each a factor in [1 − s, 1 + s], torchvision's formulas; no hue).

use crate::error::{Error, Result};
use crate::rng::Rng;

/// Which augmentations run, with their strengths. `Default` is none.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct AugmentConfig {
    pub hflip: bool,
    pub vflip: bool,
    /// Colour-jitter strength s (0 = off).
    pub jitter: f32,
    /// Maximum rotation in degrees, drawn uniformly in [−r, r] (0 = off).
    pub rotate_deg: f32,
    /// Random resized crop: smallest area fraction (0 = off), aspect in [3/4, 4/3].
    pub crop_min_scale: f32,
}

impl AugmentConfig {
    /// The paper's set: horizontal flip, colour jitter and rotation (§4.1).
    pub fn paper() -> Self {
        AugmentConfig {
            hflip: true,
            jitter: 0.2,
            rotate_deg: 15.0,
            ..Default::default()
        }
    }

    /// True when nothing would change an image.
    pub fn is_identity(&self) -> bool {
        !self.hflip
            && !self.vflip
            && self.jitter == 0.0
            && self.rotate_deg == 0.0
            && self.crop_min_scale == 0.0
    }

    pub fn validate(&self) -> Result<()> {
        if !(0.0..1.0).contains(&self.jitter)
            || !(0.0..=180.0).contains(&self.rotate_deg)
            || !(0.0..=1.0).contains(&self.crop_min_scale)
        {
            return Err(Error::param(
                "augment",
                "jitter must be in [0, 1), rotation in [0, 180] degrees, crop scale in [0, 1]",
            ));
        }
        Ok(())
    }
}

/// `src` (side×side×3 u8) → augmented f32 in [0, 1], same size.
pub fn augment(src: &[u8], side: usize, cfg: &AugmentConfig, rng: &mut Rng) -> Vec<f32> {
    let s = side as f32;
    // Crop box in source pixels (x0, y0, w, h).
    let (mut cx0, mut cy0, mut cw, mut ch) = (0.0, 0.0, s, s);
    if cfg.crop_min_scale > 0.0 {
        for _ in 0..10 {
            let area = s * s * rng.range(cfg.crop_min_scale, 1.0);
            let ratio = rng.range((3f32 / 4.0).ln(), (4f32 / 3.0).ln()).exp();
            let w = (area * ratio).sqrt().round();
            let h = (area / ratio).sqrt().round();
            if w >= 1.0 && h >= 1.0 && w <= s && h <= s {
                cx0 = rng.below((s - w) as usize + 1) as f32;
                cy0 = rng.below((s - h) as usize + 1) as f32;
                (cw, ch) = (w, h);
                break;
            }
        }
    }
    let flip_x = cfg.hflip && rng.coin();
    let flip_y = cfg.vflip && rng.coin();
    let angle = if cfg.rotate_deg > 0.0 {
        rng.range(-cfg.rotate_deg, cfg.rotate_deg).to_radians()
    } else {
        0.0
    };
    let (sin, cos) = angle.sin_cos();
    let mut out = vec![0f32; side * side * 3];
    for i in 0..side {
        for j in 0..side {
            // Output pixel centre in [−½, ½]², rotated about the centre, flipped,
            // then mapped into the crop box (half-pixel centres).
            let u = (j as f32 + 0.5) / s - 0.5;
            let v = (i as f32 + 0.5) / s - 0.5;
            let (mut ru, mut rv) = (cos * u - sin * v, sin * u + cos * v);
            if flip_x {
                ru = -ru;
            }
            if flip_y {
                rv = -rv;
            }
            let x = cx0 + (ru + 0.5) * cw - 0.5;
            let y = cy0 + (rv + 0.5) * ch - 0.5;
            bilinear(src, side, x, y, &mut out[(i * side + j) * 3..][..3]);
        }
    }
    if cfg.jitter > 0.0 {
        let b = rng.range(1.0 - cfg.jitter, 1.0 + cfg.jitter);
        let c = rng.range(1.0 - cfg.jitter, 1.0 + cfg.jitter);
        let sat = rng.range(1.0 - cfg.jitter, 1.0 + cfg.jitter);
        color_jitter(&mut out, b, c, sat);
    }
    out
}

/// Bilinear sample at (x, y) in pixel coordinates; outside the image counts as 0.
fn bilinear(src: &[u8], side: usize, x: f32, y: f32, px: &mut [f32]) {
    let (x0, y0) = (x.floor(), y.floor());
    let (fx, fy) = (x - x0, y - y0);
    px.fill(0.0);
    for (dy, wy) in [(0, 1.0 - fy), (1, fy)] {
        for (dx, wx) in [(0, 1.0 - fx), (1, fx)] {
            let (xi, yi) = (x0 as i64 + dx, y0 as i64 + dy);
            let w = wx * wy;
            if w == 0.0 || xi < 0 || yi < 0 || xi >= side as i64 || yi >= side as i64 {
                continue;
            }
            let p = &src[(yi as usize * side + xi as usize) * 3..][..3];
            for k in 0..3 {
                px[k] += w * (p[k] as f32 / 255.0);
            }
        }
    }
}

fn gray(p: &[f32]) -> f32 {
    0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2]
}

/// torchvision: brightness scales, contrast blends with the mean grey level,
/// saturation blends with each pixel's grey; clamped to [0, 1] after each.
fn color_jitter(img: &mut [f32], brightness: f32, contrast: f32, saturation: f32) {
    img.iter_mut()
        .for_each(|v| *v = (*v * brightness).clamp(0.0, 1.0));
    let mean = img.chunks_exact(3).map(gray).sum::<f32>() / (img.len() / 3) as f32;
    img.iter_mut()
        .for_each(|v| *v = (contrast * *v + (1.0 - contrast) * mean).clamp(0.0, 1.0));
    for p in img.chunks_exact_mut(3) {
        let g = gray(p);
        p.iter_mut()
            .for_each(|v| *v = (saturation * *v + (1.0 - saturation) * g).clamp(0.0, 1.0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(side: usize) -> Vec<u8> {
        (0..side * side * 3)
            .map(|i| ((i * 7) % 256) as u8)
            .collect()
    }

    #[test]
    fn identity_config_reproduces_the_image() {
        let src = ramp(8);
        let out = augment(&src, 8, &AugmentConfig::default(), &mut Rng::stream(0, &[]));
        for (a, b) in out.iter().zip(&src) {
            assert!((a - *b as f32 / 255.0).abs() < 1e-6);
        }
    }

    #[test]
    fn flips_mirror_exactly_and_seeds_repeat() {
        let src = ramp(6);
        let cfg = AugmentConfig {
            hflip: true,
            ..Default::default()
        };
        // Find a seed that flips, then check the mirror.
        let seed = (0..64).find(|&s| Rng::stream(s, &[]).coin()).unwrap();
        let out = augment(&src, 6, &cfg, &mut Rng::stream(seed, &[]));
        for i in 0..6 {
            for j in 0..6 {
                for k in 0..3 {
                    let want = src[(i * 6 + 5 - j) * 3 + k] as f32 / 255.0;
                    assert!((out[(i * 6 + j) * 3 + k] - want).abs() < 1e-6);
                }
            }
        }
        let full = AugmentConfig {
            vflip: true,
            crop_min_scale: 0.3,
            ..AugmentConfig::paper()
        };
        let a = augment(&src, 6, &full, &mut Rng::stream(5, &[1]));
        let b = augment(&src, 6, &full, &mut Rng::stream(5, &[1]));
        assert_eq!(a, b);
        assert!(a.iter().all(|v| (0.0..=1.0).contains(v)));
    }
}
