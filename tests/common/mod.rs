//! Helpers shared by the integration tests: fixture paths, .npy reading, error norms.
#![allow(dead_code)]

use std::path::PathBuf;

use ndarray::{ArrayD, IxDyn};
use ndarray_npy::ReadNpyExt;

/// `tests/fixtures/<stage>/<name>`.
pub fn fixture(stage: &str, name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(stage)
        .join(name)
}

/// Reads an f32 .npy of any rank.
pub fn npy_f32(path: &PathBuf) -> ArrayD<f32> {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    ArrayD::<f32>::read_npy(f).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Reads an f64 .npy of any rank.
pub fn npy_f64(path: &PathBuf) -> ArrayD<f64> {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    ArrayD::<f64>::read_npy(f).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Reads a JSON file.
pub fn json(path: &PathBuf) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// ‖a − b‖₂ / ‖b‖₂.
pub fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let num: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
        .sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den.max(1e-300)).sqrt()
}

/// max |a − b| / max |b| (the "rel err" of the logits tolerances).
pub fn rel_max(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let num = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).abs())
        .fold(0.0, f64::max);
    let den = b.iter().map(|y| (*y as f64).abs()).fold(0.0, f64::max);
    num / den.max(1e-300)
}

pub fn to_vec<D: ndarray::Dimension>(a: &ndarray::Array<f32, D>) -> Vec<f32> {
    a.iter().copied().collect()
}

pub fn dyn4(a: ArrayD<f32>) -> ndarray::Array4<f32> {
    a.into_dimensionality().expect("rank 4")
}

pub fn shape(a: &ArrayD<f32>) -> IxDyn {
    a.raw_dim()
}

/// Engine fixture `name` (`tests/fixtures/engine/<name>`, from `tools/gen_engine.py`):
/// the DINO-named backbone with its head, loaded with the fixture's heads and eps,
/// and its input (batch, 3, H, W).
pub fn engine_case(name: &str) -> (explainseg::model::Vit, ndarray::Array4<f32>) {
    let cfg = json(&fixture("engine", &format!("{name}/config.json")));
    let opts = explainseg::model::LoadOptions {
        heads: Some(cfg["heads"].as_u64().unwrap() as usize),
        eps: Some(cfg["eps"].as_f64().unwrap() as f32),
        ..Default::default()
    };
    let head = fixture("engine", &format!("{name}/head_dino.safetensors"));
    let vit = explainseg::model::Vit::load(
        &fixture("engine", &format!("{name}/model_dino.safetensors")),
        Some(&head),
        &opts,
    )
    .unwrap();
    let x = dyn4(npy_f32(&fixture("engine", &format!("{name}/input.npy"))));
    (vit, x)
}

/// Four 80×72 images (a textured background and a bright square that moves) with
/// the square as ground truth.
pub fn tiny_dataset(root: &std::path::Path) {
    for d in ["images", "masks"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    for i in 0..4u32 {
        let inside =
            |x: u32, y: u32| (20 + 4 * i..50 + 4 * i).contains(&x) && (15..45).contains(&y);
        image::RgbImage::from_fn(80, 72, |x, y| {
            if inside(x, y) {
                image::Rgb([230, 80 + 10 * i as u8, 60])
            } else {
                image::Rgb([
                    ((x * 7 + y * 13 + i * 31) % 200) as u8,
                    ((x * y) % 150) as u8,
                    90,
                ])
            }
        })
        .save(root.join(format!("images/im{i}.png")))
        .unwrap();
        image::GrayImage::from_fn(80, 72, |x, y| {
            image::Luma([if inside(x, y) { 255 } else { 0 }])
        })
        .save(root.join(format!("masks/im{i}.png")))
        .unwrap();
    }
}

/// IG as the device tests run it: Gauss–Legendre, `n_steps` path points in batches of
/// `batch_size` rows, multiplied by the inputs, no convergence deltas.
pub fn ig_config(n_steps: usize, batch_size: usize) -> explainseg::ig::IgConfig {
    explainseg::ig::IgConfig {
        n_steps,
        batch_size,
        return_delta: false,
        ..Default::default()
    }
}

/// A smoothgrad NoiseTunnel of `samples` independent seeded draws of σ `stdev`.
pub fn seeded_nt(samples: usize, stdev: f32, seed: u64) -> explainseg::ig::NoiseTunnelConfig {
    explainseg::ig::NoiseTunnelConfig {
        nt_type: explainseg::ig::NtType::SmoothGrad,
        noise: explainseg::ig::Noise::Seeded {
            samples,
            stdev,
            seed,
        },
    }
}
