//! The stable preset (docs/method.md §6.2) on held-out synthetic lesions with the
//! committed demo model: deterministic for a seed, and masks of two seeds agree
//! at least as well as measured when written.
//! The paper preset's own outputs are pinned by the parity tests (ig, synth_e2e,
//! capi, cuda_emu), which run unchanged.

use explainseg::attr::{explain, Noise};
use explainseg::backend::cpu::CpuEngine;
use explainseg::eval::scores;
use explainseg::model::Vit;
use explainseg::pipeline::{segment_explained, PipelineConfig, Preset, Variant};
use explainseg::synth::demo::{demo_pipeline_config, model_input};
use explainseg::synth::{generate, Sample, SynthConfig};
use ndarray::{Array2, Array4};

const VARIANTS: [Variant; 3] = [Variant::A, Variant::C, Variant::XNCut];

fn demo_model() -> Vit {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/synth_vit.safetensors");
    Vit::load(&path, None, &Default::default()).unwrap()
}

/// The demo settings with the stable preset applied and noise seed `seed`.
fn stable(seed: u64) -> PipelineConfig {
    let mut cfg = demo_pipeline_config();
    if let Some(nt) = cfg.explain.noise_tunnel.as_mut() {
        let (stdev, _) = nt.noise.stdev_and_seed().unwrap();
        nt.noise = Noise::drawn(5, stdev, seed, Default::default());
    }
    Preset::Stable.apply(&mut cfg, 8);
    cfg
}

/// Held-out lesion images (seed 11: neither the model nor the demo settings saw it).
fn lesions(n: usize) -> Vec<Sample> {
    let synth = SynthConfig {
        size: 64,
        positive_fraction: 0.8,
    };
    (0..)
        .map(|i| generate(11, i, &synth).unwrap())
        .filter(|s| s.lesion)
        .take(n)
        .collect()
}

fn masks(
    engine: &CpuEngine,
    x: &Array4<f32>,
    s: &Sample,
    cfg: &PipelineConfig,
) -> Vec<Array2<bool>> {
    let e = explain(engine, x.view(), &cfg.explain, None).unwrap();
    VARIANTS
        .iter()
        .map(|&v| {
            segment_explained(engine, x.view(), s.image.view(), v, cfg, Some(&e))
                .unwrap()
                .mask
        })
        .collect()
}

#[test]
fn stable_preset_is_deterministic_for_a_seed() {
    let vit = demo_model();
    let engine = CpuEngine::new(&vit);
    let s = &lesions(1)[0];
    let x = model_input(&vit, &s.image).unwrap();
    let cfg = stable(3);
    assert_eq!(cfg.explain.passes(), 200);
    let a = explain(&engine, x.view(), &cfg.explain, None).unwrap();
    let b = explain(&engine, x.view(), &cfg.explain, None).unwrap();
    assert_eq!(a.attribution, b.attribution);
    assert_eq!(masks(&engine, &x, s, &cfg), masks(&engine, &x, s, &cfg));
    let other = explain(&engine, x.view(), &stable(4).explain, None).unwrap();
    assert_ne!(a.attribution, other.attribution, "the seed matters");
}

/// Mean seed-to-seed mask IoU (A, C, XNCut) over the held-out lesions, between
/// the settings `cfg(1)` and `cfg(2)`.
fn mean_seed_iou(engine: &CpuEngine, vit: &Vit, cfg: impl Fn(u64) -> PipelineConfig) -> [f64; 3] {
    let images = lesions(8);
    let mut sums = [0f64; 3];
    for s in &images {
        let x = model_input(vit, &s.image).unwrap();
        let (m1, m2) = (masks(engine, &x, s, &cfg(1)), masks(engine, &x, s, &cfg(2)));
        for v in 0..3 {
            sums[v] += scores(m1[v].view(), m2[v].view()).unwrap().iou;
        }
    }
    sums.map(|s| s / images.len() as f64)
}

#[test]
fn stable_preset_masks_agree_across_seeds_on_synthetic_lesions() {
    let vit = demo_model();
    let engine = CpuEngine::new(&vit);
    let stable = mean_seed_iou(&engine, &vit, stable);
    let paper = mean_seed_iou(&engine, &vit, paper);
    eprintln!("seed-to-seed mask IoU (A, C, XNCut): stable {stable:?}, demo settings {paper:?}");
    for (v, (&got, want)) in VARIANTS.iter().zip(stable.iter().zip(MIN_IOU)) {
        assert!(
            got >= want,
            "{}: mean seed-to-seed IoU {got:.3} < {want}",
            v.name()
        );
    }
}

/// Issue 14's 64-pass target for A and C: the stable preset with its samples cut
/// to 64 (`--nt-samples 64`; `nt_samples = 64` in the C ABI's parameters).
#[test]
fn stable_preset_with_64_passes_keeps_a_and_c_steady() {
    let vit = demo_model();
    let engine = CpuEngine::new(&vit);
    let with_64 = |seed| {
        let mut cfg = stable(seed);
        cfg.explain.noise_tunnel.as_mut().unwrap().noise = Preset::Stable.noise(64, seed);
        assert_eq!(cfg.explain.passes(), 64);
        cfg
    };
    let got = mean_seed_iou(&engine, &vit, with_64);
    eprintln!("seed-to-seed mask IoU (A, C, XNCut) at 64 passes: {got:?}");
    for (v, &iou) in VARIANTS[..2].iter().zip(&got[..2]) {
        assert!(
            iou >= 0.95,
            "{}: mean seed-to-seed IoU {iou:.3} < 0.95",
            v.name()
        );
    }
}

/// The demo settings (the paper preset's pipeline for this model) with seed `seed`.
fn paper(seed: u64) -> PipelineConfig {
    let mut cfg = demo_pipeline_config();
    if let Some(nt) = cfg.explain.noise_tunnel.as_mut() {
        let (stdev, _) = nt.noise.stdev_and_seed().unwrap();
        nt.noise = Noise::drawn(4, stdev, seed, Default::default());
    }
    cfg
}

/// Lower bounds of the mean seed-to-seed IoU (A, C, XNCut): issue 14's target.
/// Measured on these 8 images: stable 1.000, 0.994, 0.997 (σ 0.25; 64 passes:
/// 1.000, 0.995, 0.996; at the earlier σ 0.5: 1.000, 0.995, 0.990; with 10 steps × 24
/// samples at the demo's σ and the NCut map smoothed by one patch: 1.000, 0.990,
/// 0.993; before the preset smoothed the relevance and dropped equalisation:
/// 0.983, 0.856, 0.848); the demo settings (16 steps × 4 independent samples)
/// 0.993, 0.768, 0.883. Real images: docs/results.md ("Stable masks").
const MIN_IOU: [f64; 3] = [0.95, 0.95, 0.95];
