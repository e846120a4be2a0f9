//! DenseCRF on the emulated CUDA device (feature `cuda-emu`): the device lattice and
//! mean field (`backend::cuda::CrfDevice`, kernels/crf_*.cu) against the CPU DenseCRF
//! (`post::crf`, itself bit-exact with pydensecrf), under every emulator schedule.
//! Sizes are small: the emulator runs blocks one after another on one thread.
#![cfg(feature = "cuda-emu")]

use std::path::PathBuf;
use std::sync::Arc;

use explainseg::backend::cuda::crf::{run_launches, CrfImage, CrfSpec};
use explainseg::backend::cuda::emu::{EmuDevice, Schedule};
use explainseg::backend::cuda::CrfDevice;
use explainseg::backend::{crf_device_for, Device};
use explainseg::post::crf::{dense_crf, dense_crf_on, lattice_filter, unary_from_mask, CrfParams};
use ndarray::{Array2, Array3, ArrayD, Axis};
use ndarray_npy::ReadNpyExt;

fn device(schedule: Schedule) -> CrfDevice {
    CrfDevice::new(Arc::new(EmuDevice::with_schedule(schedule).unwrap()))
}

/// Seeded pseudo-random bytes.
fn bytes(seed: u32, n: usize) -> Vec<u8> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            (x >> 16) as u8
        })
        .collect()
}

/// An (h, w, 3) image: smooth gradients plus noise, a flat dark corner (its simplices
/// touch the zero feature vector's, whose vertices densecrf pads in).
fn test_image(h: usize, w: usize, seed: u32) -> Array3<u8> {
    let noise = bytes(seed, h * w * 3);
    Array3::from_shape_fn((h, w, 3), |(y, x, k)| {
        if y < 4 && x < 4 {
            [2u8, 1, 1][k]
        } else {
            let base = (x * 255 / w + y * 97 / h + k * 40) % 256;
            (base as i32 + (noise[(y * w + x) * 3 + k] as i32 % 13) - 6).clamp(0, 255) as u8
        }
    })
}

/// Pixel features as the CPU CRF builds them: (x, y)/sxy and, for `srgb`, the channels.
fn features(img: &Array3<u8>, sxy: f32, srgb: Option<f32>) -> (Vec<f32>, usize) {
    let (h, w, c) = img.dim();
    let d = if srgb.is_some() { 2 + c } else { 2 };
    let mut f = Vec::with_capacity(h * w * d);
    for y in 0..h {
        for x in 0..w {
            f.push(x as f32 / sxy);
            f.push(y as f32 / sxy);
            if let Some(sr) = srgb {
                f.extend((0..c).map(|k| img[[y, x, k]] as f32 / sr));
            }
        }
    }
    (f, d)
}

/// Distance in units in the last place between two finite f32 of any sign.
fn ulps(a: f32, b: f32) -> u64 {
    let key = |v: f32| {
        let i = v.to_bits() as i32;
        if i < 0 {
            i64::from(i32::MIN) - i64::from(i)
        } else {
            i64::from(i)
        }
    };
    (key(a) - key(b)).unsigned_abs()
}

#[test]
fn lattice_filter_is_the_cpu_lattice_bit_for_bit() {
    // 23×29 = 667 points (n % 4 = 3: densecrf's zero-point padding vertices join).
    let img = test_image(23, 29, 3);
    let n = 23 * 29;
    for (what, sxy, srgb) in [("d=2", 3.0, None), ("d=5", 5.0, Some(5.0))] {
        let (f, d) = features(&img, sxy, srgb);
        for vs in [1usize, 2, 3] {
            let input: Vec<f32> = bytes(7, n * vs).iter().map(|&b| b as f32 / 255.0).collect();
            let scale: Vec<f32> = bytes(9, n)
                .iter()
                .map(|&b| 0.5 + b as f32 / 512.0)
                .collect();
            let (want, want_vertices) = lattice_filter(&f, d, &input, &scale, vs).unwrap();
            for s in Schedule::ALL {
                let (got, got_vertices) = device(s).filter(&f, d, &input, &scale, vs).unwrap();
                assert_eq!(got_vertices as usize, want_vertices, "{what} vs={vs} {s:?}");
                let (max_ulp, max_abs) =
                    got.iter().zip(&want).fold((0u64, 0f32), |(u, a), (g, w)| {
                        (u.max(ulps(*g, *w)), a.max((g - w).abs()))
                    });
                eprintln!("filter {what} vs={vs} {s:?}: {} vertices, max {max_ulp} ulp, max |Δ| {max_abs:e}", got_vertices);
                assert_eq!(max_ulp, 0, "{what} vs={vs} {s:?}: max |Δ| {max_abs:e}");
            }
        }
    }
}
