//! DINO's multi-crop augmentation (its `DataAugmentationDINO`): two global crops
//! and N local crops of one image, each a random resized crop (torchvision's
//! sampling: area fraction in `scale`, aspect ratio log-uniform in [3/4, 4/3],
//! ten tries, then the whole image) resized with Pillow's bicubic filter, then
//! a horizontal flip (p ½), colour jitter (p 0.8: brightness 0.4, contrast 0.4,
//! saturation 0.2, hue 0.1, applied in a random order as torchvision does),
//! grey scale (p 0.2) and Gaussian blur — always on the first global crop, with
//! p 0.1 on the second, p ½ on the local ones — and solarisation (p 0.2) on the
//! second global crop only.
//!
//! Differences from the reference, on purpose: the colour operations run on
//! floats in [0, 1] (Pillow rounds to 8 bits after each), and the blur is a true
//! Gaussian (Pillow approximates it with box blurs). DINO draws the blur's σ
//! in [0.1, 2] pixels for 224-px crops; here the range is scaled by
//! `global_size/224`, so a blur covers the same part of the image at any size.

use crate::error::{Error, Result};
use crate::image::{crop, resize_rgb8, CropBox, ResampleFilter};
use crate::rng::Rng;

/// Sizes, counts and scale ranges of the crops.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MultiCropConfig {
    pub global_size: usize,
    pub local_size: usize,
    pub local_crops: usize,
    /// Area fractions of the global and local crops (DINO: (0.4, 1), (0.05, 0.4)).
    pub global_scale: (f32, f32),
    pub local_scale: (f32, f32),
    /// Colour jitter, grey scale and solarisation as DINO; off for data whose main
    /// cue is colour (on Kvasir-SEG they drive the targets to uniform collapse,
    /// docs/pretraining.md). Flips, crops and blur stay.
    pub color: bool,
}

impl MultiCropConfig {
    /// DINO's defaults at the given sizes.
    pub fn dino(global_size: usize, local_size: usize, local_crops: usize) -> Self {
        MultiCropConfig {
            global_size,
            local_size,
            local_crops,
            global_scale: (0.4, 1.0),
            local_scale: (0.05, 0.4),
            color: true,
        }
    }

    pub fn validate(&self) -> Result<()> {
        let ok = |(a, b): (f32, f32)| a > 0.0 && a <= b && b <= 1.0;
        if self.global_size == 0 || self.local_size == 0 {
            return Err(Error::param("crops", "crop sizes must be ≥ 1"));
        }
        if !ok(self.global_scale) || !ok(self.local_scale) {
            return Err(Error::param(
                "crops",
                "crop scales must satisfy 0 < min ≤ max ≤ 1",
            ));
        }
        Ok(())
    }

    pub fn crops(&self) -> usize {
        2 + self.local_crops
    }
}

/// torchvision `RandomResizedCrop.get_params` (ratio 3/4 to 4/3) in a `w`×`h` image.
pub fn random_resized_crop_box(w: usize, h: usize, scale: (f32, f32), rng: &mut Rng) -> CropBox {
    let area = (w * h) as f32;
    let (lo, hi) = ((3f32 / 4.0).ln(), (4f32 / 3.0).ln());
    for _ in 0..10 {
        let target = area * rng.range(scale.0, scale.1);
        let ratio = rng.range(lo, hi).exp();
        let cw = (target * ratio).sqrt().round() as usize;
        let ch = (target / ratio).sqrt().round() as usize;
        if cw > 0 && cw <= w && ch > 0 && ch <= h {
            let top = rng.below(h - ch + 1);
            let left = rng.below(w - cw + 1);
            return CropBox {
                left: left as u32,
                top: top as u32,
                width: cw as u32,
                height: ch as u32,
            };
        }
    }
    // torchvision's fallback: the central crop at the nearest allowed ratio.
    let in_ratio = w as f32 / h as f32;
    let (cw, ch) = if in_ratio < 0.75 {
        (w, ((w as f32 / 0.75).round() as usize).min(h))
    } else if in_ratio > 4.0 / 3.0 {
        (((h as f32 * 4.0 / 3.0).round() as usize).min(w), h)
    } else {
        (w, h)
    };
    CropBox {
        left: ((w - cw) / 2) as u32,
        top: ((h - ch) / 2) as u32,
        width: cw as u32,
        height: ch as u32,
    }
}

/// What happens to one crop besides its box.
#[derive(Debug, Clone, Copy)]
struct CropKind {
    size: usize,
    scale: (f32, f32),
    blur_p: f32,
    solarize_p: f32,
    color: bool,
}

/// All crops of one square `side`×`side` RGB image, in order: global 1, global 2,
/// then the local crops; each (size, size, 3) in [0, 1].
///
/// # Errors
/// [`Error::Shape`] when `src` is not `side`×`side`×3; resize errors.
pub fn multi_crop(
    src: &[u8],
    side: usize,
    cfg: &MultiCropConfig,
    rng: &mut Rng,
) -> Result<Vec<Vec<f32>>> {
    if src.len() != side * side * 3 {
        return Err(Error::shape(
            "image (side, side, 3)",
            &[side, side, 3],
            &[src.len()],
        ));
    }
    let global = |blur_p, solarize_p| CropKind {
        size: cfg.global_size,
        scale: cfg.global_scale,
        blur_p,
        solarize_p,
        color: cfg.color,
    };
    let local = CropKind {
        size: cfg.local_size,
        scale: cfg.local_scale,
        blur_p: 0.5,
        solarize_p: 0.0,
        color: cfg.color,
    };
    let kinds = [global(1.0, 0.0), global(0.1, 0.2)]
        .into_iter()
        .chain(std::iter::repeat_n(local, cfg.local_crops));
    let sigma_scale = cfg.global_size as f32 / 224.0;
    kinds
        .map(|k| one_crop(src, side, k, sigma_scale, rng))
        .collect()
}

fn one_crop(
    src: &[u8],
    side: usize,
    k: CropKind,
    sigma_scale: f32,
    rng: &mut Rng,
) -> Result<Vec<f32>> {
    let bx = random_resized_crop_box(side, side, k.scale, rng);
    let cut = crop(src, side as u32, side as u32, 3, bx)?;
    let resized = resize_rgb8(
        &cut,
        bx.width,
        bx.height,
        k.size as u32,
        k.size as u32,
        ResampleFilter::Bicubic,
    )?;
    let mut img: Vec<f32> = resized.iter().map(|&v| v as f32 / 255.0).collect();
    if rng.coin() {
        hflip(&mut img, k.size);
    }
    if k.color && rng.uniform() < 0.8 {
        color_jitter(&mut img, rng);
    }
    if k.color && rng.uniform() < 0.2 {
        for p in img.chunks_exact_mut(3) {
            p.fill(gray(p));
        }
    }
    if rng.uniform() < k.blur_p {
        let sigma = rng.range(0.1, 2.0) * sigma_scale;
        gaussian_blur(&mut img, k.size, sigma);
    }
    if k.color && k.solarize_p > 0.0 && rng.uniform() < k.solarize_p {
        // Pillow's solarize(threshold=128): values at or above it are inverted.
        img.iter_mut().for_each(|v| {
            if *v >= 128.0 / 255.0 {
                *v = 1.0 - *v
            }
        });
    }
    Ok(img)
}

fn hflip(img: &mut [f32], size: usize) {
    for row in img.chunks_exact_mut(size * 3) {
        for j in 0..size / 2 {
            for c in 0..3 {
                row.swap(j * 3 + c, (size - 1 - j) * 3 + c);
            }
        }
    }
}

fn gray(p: &[f32]) -> f32 {
    0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2]
}

/// torchvision `ColorJitter(0.4, 0.4, 0.2, 0.1)`: factors drawn, order permuted.
fn color_jitter(img: &mut [f32], rng: &mut Rng) {
    let mut order = [0usize, 1, 2, 3];
    rng.shuffle(&mut order);
    let brightness = rng.range(0.6, 1.4);
    let contrast = rng.range(0.6, 1.4);
    let saturation = rng.range(0.8, 1.2);
    let hue = rng.range(-0.1, 0.1);
    for op in order {
        match op {
            0 => img
                .iter_mut()
                .for_each(|v| *v = (*v * brightness).clamp(0.0, 1.0)),
            1 => {
                let mean = img.chunks_exact(3).map(gray).sum::<f32>() / (img.len() / 3) as f32;
                img.iter_mut()
                    .for_each(|v| *v = (contrast * *v + (1.0 - contrast) * mean).clamp(0.0, 1.0));
            }
            2 => {
                for p in img.chunks_exact_mut(3) {
                    let g = gray(p);
                    p.iter_mut().for_each(|v| {
                        *v = (saturation * *v + (1.0 - saturation) * g).clamp(0.0, 1.0)
                    });
                }
            }
            _ => img.chunks_exact_mut(3).for_each(|p| shift_hue(p, hue)),
        }
    }
}

/// Rotates the hue of one pixel by `shift` turns (HSV round trip).
fn shift_hue(p: &mut [f32], shift: f32) {
    let (r, g, b) = (p[0], p[1], p[2]);
    let max = r.max(g).max(b);
    let min = r.min(g).min(b);
    let delta = max - min;
    if delta <= 0.0 {
        return;
    }
    let s = delta / max;
    let mut h = if max == r {
        (g - b) / delta
    } else if max == g {
        2.0 + (b - r) / delta
    } else {
        4.0 + (r - g) / delta
    } / 6.0;
    h = (h + shift).rem_euclid(1.0);
    let v = max;
    let h6 = h * 6.0;
    let i = h6.floor();
    let f = h6 - i;
    let (pv, qv, tv) = (v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f)));
    let (r, g, b) = match i as i32 % 6 {
        0 => (v, tv, pv),
        1 => (qv, v, pv),
        2 => (pv, v, tv),
        3 => (pv, qv, v),
        4 => (tv, pv, v),
        _ => (v, pv, qv),
    };
    p[0] = r;
    p[1] = g;
    p[2] = b;
}

/// Separable Gaussian blur, radius ⌈3σ⌉, edges extended.
fn gaussian_blur(img: &mut [f32], size: usize, sigma: f32) {
    let radius = (3.0 * sigma).ceil().max(1.0) as i64;
    let kernel: Vec<f32> = (-radius..=radius)
        .map(|x| (-(x * x) as f32 / (2.0 * sigma * sigma)).exp())
        .collect();
    let total: f32 = kernel.iter().sum();
    let kernel: Vec<f32> = kernel.iter().map(|w| w / total).collect();
    let n = size as i64;
    let clamp = |i: i64| i.clamp(0, n - 1) as usize;
    let mut tmp = vec![0f32; img.len()];
    for y in 0..size {
        for x in 0..size {
            for c in 0..3 {
                tmp[(y * size + x) * 3 + c] = kernel
                    .iter()
                    .enumerate()
                    .map(|(k, w)| w * img[(y * size + clamp(x as i64 + k as i64 - radius)) * 3 + c])
                    .sum();
            }
        }
    }
    for y in 0..size {
        for x in 0..size {
            for c in 0..3 {
                img[(y * size + x) * 3 + c] = kernel
                    .iter()
                    .enumerate()
                    .map(|(k, w)| w * tmp[(clamp(y as i64 + k as i64 - radius) * size + x) * 3 + c])
                    .sum();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crops_have_their_sizes_stay_in_range_and_repeat_per_seed() {
        let side = 40;
        let src: Vec<u8> = (0..side * side * 3)
            .map(|i| ((i * 13) % 256) as u8)
            .collect();
        let cfg = MultiCropConfig::dino(24, 12, 3);
        let a = multi_crop(&src, side, &cfg, &mut Rng::stream(7, &[1])).unwrap();
        let b = multi_crop(&src, side, &cfg, &mut Rng::stream(7, &[1])).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 5);
        assert_eq!(a[0].len(), 24 * 24 * 3);
        assert_eq!(a[4].len(), 12 * 12 * 3);
        assert!(a.iter().flatten().all(|v| (0.0..=1.0).contains(v)));
        let c = multi_crop(&src, side, &cfg, &mut Rng::stream(8, &[1])).unwrap();
        assert_ne!(a, c);
    }

    #[test]
    fn without_colour_ops_a_flat_image_keeps_its_colour() {
        let side = 40;
        let rgb = [200u8, 90, 60];
        let src: Vec<u8> = (0..side * side * 3).map(|i| rgb[i % 3]).collect();
        let flat = |crops: &[Vec<f32>]| {
            crops.iter().all(|c| {
                c.chunks_exact(3).all(|p| {
                    p.iter()
                        .zip(rgb)
                        .all(|(v, w)| (v - w as f32 / 255.0).abs() < 1e-5)
                })
            })
        };
        let on = MultiCropConfig::dino(24, 12, 3);
        let off = MultiCropConfig { color: false, ..on };
        for seed in 0..4 {
            let a = multi_crop(&src, side, &off, &mut Rng::stream(seed, &[1])).unwrap();
            assert!(flat(&a), "seed {seed}");
        }
        // With them, jitter (p 0.8 per crop) changes some crop in every seed.
        for seed in 0..4 {
            let a = multi_crop(&src, side, &on, &mut Rng::stream(seed, &[1])).unwrap();
            assert!(!flat(&a), "seed {seed}");
        }
    }

    #[test]
    fn crop_boxes_respect_the_scale_range() {
        let mut rng = Rng::stream(3, &[]);
        for _ in 0..200 {
            let b = random_resized_crop_box(100, 100, (0.05, 0.4), &mut rng);
            let frac = (b.width * b.height) as f32 / 1e4;
            // Rounding of the sides moves the area a little off the drawn one.
            assert!((0.03..=0.45).contains(&frac), "{b:?}");
            assert!(b.left + b.width <= 100 && b.top + b.height <= 100);
        }
    }

    #[test]
    fn hue_shift_by_a_full_turn_is_identity_and_grey_is_fixed() {
        let mut p = [0.8, 0.3, 0.1];
        shift_hue(&mut p, 1.0);
        assert!(
            (p[0] - 0.8).abs() < 1e-5 && (p[1] - 0.3).abs() < 1e-5 && (p[2] - 0.1).abs() < 1e-5
        );
        let mut g = [0.4, 0.4, 0.4];
        shift_hue(&mut g, 0.3);
        assert_eq!(g, [0.4, 0.4, 0.4]);
        // A third of a turn maps red to green.
        let mut r = [1.0, 0.0, 0.0];
        shift_hue(&mut r, 1.0 / 3.0);
        assert!(r[0].abs() < 1e-5 && (r[1] - 1.0).abs() < 1e-5 && r[2].abs() < 1e-5);
    }
}
