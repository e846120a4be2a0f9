//! The effect of the CUDA engine's GEMM precision modes (docs/gpu.md, "Precision
//! modes"), measured on the emulated device, whose GEMMs round their operands as
//! the tensor cores do (docs/cuda_emulation.md §1.4). For each case and mode
//! against the f32 mode of the same engine: logits rel (max |Δ| / max |f32|), the
//! IG + NoiseTunnel attribution rel-L2, and the mask IoU of variants C and XNCut
//! (one explanation per mode, then the pipeline's post-processing with DenseCRF).
//! The f32 mode against the CPU engine gives the scale of plain f32 reordering.
//!
//! ```text
//! cargo run --release --features cuda-emu --example precision_effect -- \
//!   [--case tiny|vit-s16|demo|all] [--steps N] [--samples N] [--images N]
//! ```
//!
//! Cases: the tiny engine fixture (tests/fixtures/engine/s16_tiny, 64², 2 blocks of
//! width 24) and a ViT-S/16 at 224² (6 heads of 64, T = 197) with 2 blocks and
//! random weights, as tests/cuda_emu.rs; the image is the JPEG fixture
//! tests/fixtures/preprocess/jpeg420_q85.jpg (64² fixed resize, or DINO's 224 crop).
//! `--steps`/`--samples` set their IG. A third case, `demo`, is a trained model: the
//! demo ViT (assets/synth_vit.safetensors, patch 8, 4 blocks, 64²) on `--images`
//! synthetic lesion images of the demo's seed, with the demo's own settings
//! (`synth::demo`, 16 steps × 4 samples): per mode the mean and least mask IoU
//! against f32 over the images, and the mean Dice against the true masks.

use std::path::Path;
use std::time::Instant;

use explainseg::attr::{explain, Noise, NoiseTunnelConfig, NtType};
use explainseg::backend::{cpu::CpuEngine, engine_for, Device, Engine, EngineOptions, Precision};
use explainseg::image::{decode_image_file, network_input, PreprocessConfig, ResizeMode};
use explainseg::model::{LoadOptions, Vit, VitConfig};
use explainseg::pipeline::{segment_explained, PipelineConfig, Variant};
use explainseg::synth::demo::{demo_pipeline_config, run_demo, DemoSet};
use ndarray::{Array2, Array3, Array4};

fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
        .sum();
    let den: f64 = b.iter().map(|y| f64::from(*y).powi(2)).sum();
    (num / den.max(1e-300)).sqrt()
}

fn rel_max(a: &[f32], b: &[f32]) -> f64 {
    let num = a
        .iter()
        .zip(b)
        .map(|(x, y)| (f64::from(*x) - f64::from(*y)).abs())
        .fold(0.0, f64::max);
    let den = b.iter().map(|y| f64::from(*y).abs()).fold(0.0, f64::max);
    num / den.max(1e-300)
}

/// Intersection over union; 1 for two empty masks.
fn iou(a: &Array2<bool>, b: &Array2<bool>) -> f64 {
    let inter = a.iter().zip(b).filter(|(x, y)| **x && **y).count();
    let union = a.iter().zip(b).filter(|(x, y)| **x || **y).count();
    if union == 0 {
        1.0
    } else {
        inter as f64 / union as f64
    }
}

struct Case {
    name: &'static str,
    vit: Vit,
    x: Array4<f32>,
    pixels: Array3<u8>,
}

fn fixture(rel: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

fn input(resize: ResizeMode) -> (Array4<f32>, Array3<u8>) {
    let image = decode_image_file(&fixture("preprocess/jpeg420_q85.jpg")).expect("fixture image");
    let pre = PreprocessConfig {
        resize,
        ..Default::default()
    };
    let (x, _, pixels) = network_input(&image, &pre).expect("network input");
    (x, pixels)
}

fn tiny() -> Case {
    let opts = LoadOptions {
        heads: Some(3),
        eps: Some(1e-6),
        ..Default::default()
    };
    let vit = Vit::load(
        &fixture("engine/s16_tiny/model_dino.safetensors"),
        Some(&fixture("engine/s16_tiny/head_dino.safetensors")),
        &opts,
    )
    .expect("tiny fixture");
    let (x, pixels) = input(ResizeMode::Fixed {
        height: 64,
        width: 64,
    });
    Case {
        name: "tiny 64² (2 blocks, width 24)",
        vit,
        x,
        pixels,
    }
}

fn vit_s16() -> Case {
    let mut cfg = VitConfig::standard("s", 16, 224).expect("ViT-S/16");
    cfg.depth = 2;
    let (x, pixels) = input(ResizeMode::default());
    Case {
        name: "ViT-S/16 224² (2 blocks, random weights)",
        vit: Vit::random(cfg, 5, 7),
        x,
        pixels,
    }
}

/// The demo model on `images` synthetic images, variants C and XNCut, per mode.
fn demo(images: u64) -> explainseg::Result<()> {
    let vit = Vit::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/synth_vit.safetensors"),
        None,
        &LoadOptions::default(),
    )?;
    let set = DemoSet {
        count: images,
        ..Default::default()
    };
    let cfg = demo_pipeline_config();
    let variants = [Variant::C, Variant::XNCut];
    println!("demo model (patch 8, 4 blocks, 64²), {images} synthetic images, the demo's settings");
    println!(
        "  {:<14} {:>12} {:>12} {:>12} {:>12} {:>9} {:>9} {:>8}",
        "mode",
        "IoU C mean",
        "IoU C min",
        "XNCut mean",
        "XNCut min",
        "Dice C",
        "Dice XN",
        "seconds"
    );
    let quiet = |_: usize, _: usize| true;
    let mut reference: Option<Vec<explainseg::synth::demo::DemoImage>> = None;
    for precision in Precision::ALL {
        let t = Instant::now();
        let engine = engine_for(
            EngineOptions {
                device: Device::CudaEmu,
                precision,
            },
            &vit,
        )?;
        let run = run_demo(engine.as_ref(), &set, &variants, &cfg, &quiet)?;
        let secs = t.elapsed().as_secs_f64();
        let dice = |k: usize| {
            let d: Vec<f64> = run
                .iter()
                .filter(|i| i.sample.mask.iter().any(|&b| b))
                .map(|i| i.results[k].2.dice)
                .collect();
            d.iter().sum::<f64>() / d.len().max(1) as f64
        };
        let ious = |k: usize| -> (f64, f64) {
            let Some(r) = &reference else {
                return (1.0, 1.0);
            };
            let v: Vec<f64> = run
                .iter()
                .zip(r)
                .map(|(a, b)| iou(&a.results[k].1.mask, &b.results[k].1.mask))
                .collect();
            (
                v.iter().sum::<f64>() / v.len().max(1) as f64,
                v.iter().copied().fold(1.0, f64::min),
            )
        };
        let ((c_mean, c_min), (x_mean, x_min)) = (ious(0), ious(1));
        println!(
            "  {:<14} {c_mean:>12.5} {c_min:>12.5} {x_mean:>12.5} {x_min:>12.5} {:>9.4} {:>9.4} {secs:>8.1}",
            format!("cuda-emu {precision}"),
            dice(0),
            dice(1),
        );
        if reference.is_none() {
            reference = Some(run);
        }
    }
    Ok(())
}

fn main() -> explainseg::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |name: &str, default: &str| -> String {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
            .unwrap_or_else(|| default.to_string())
    };
    let steps: usize = arg("--steps", "8").parse().expect("--steps N");
    let samples: usize = arg("--samples", "2").parse().expect("--samples N");
    let which = arg("--case", "all");
    let mut cases = Vec::new();
    if which == "tiny" || which == "all" {
        cases.push(tiny());
    }
    if which == "vit-s16" || which == "all" {
        cases.push(vit_s16());
    }
    if which == "demo" || which == "all" {
        let images: u64 = arg("--images", "10").parse().expect("--images N");
        demo(images)?;
    }
    for case in &cases {
        let mut cfg = PipelineConfig::default();
        cfg.explain.ig.n_steps = steps;
        cfg.explain.ig.batch_size = steps * samples.max(1);
        cfg.explain.ig.return_delta = false;
        cfg.explain.noise_tunnel = (samples > 0).then(|| NoiseTunnelConfig {
            nt_type: NtType::SmoothGrad,
            noise: Noise::Seeded {
                samples,
                stdev: 1.0,
                seed: 0,
            },
        });
        println!(
            "{}: IG {steps} steps × NoiseTunnel {samples} samples (Gauss–Legendre, smoothgrad σ 1)",
            case.name
        );
        println!(
            "  {:<14} {:>11} {:>13} {:>9} {:>9} {:>11} {:>11} {:>8}",
            "mode",
            "logits rel",
            "IG+NT rel-L2",
            "IoU C",
            "IoU XNCut",
            "C pre-CRF",
            "XNCut pre",
            "seconds"
        );
        let cpu = CpuEngine::new(&case.vit);
        let mut reference = None;
        for (label, device, precision) in [
            ("cuda-emu f32", Device::CudaEmu, Precision::F32),
            ("cuda-emu tf32", Device::CudaEmu, Precision::Tf32),
            ("cuda-emu bf16", Device::CudaEmu, Precision::Bf16),
            ("cpu f32", Device::Cpu, Precision::F32),
        ] {
            let t = Instant::now();
            let boxed;
            let engine: &dyn Engine = if device == Device::Cpu {
                &cpu
            } else {
                boxed = engine_for(EngineOptions { device, precision }, &case.vit)?;
                boxed.as_ref()
            };
            let e = explain(engine, case.x.view(), &cfg.explain, None)?;
            let masks = [Variant::C, Variant::XNCut]
                .iter()
                .map(|&v| {
                    segment_explained(engine, case.x.view(), case.pixels.view(), v, &cfg, Some(&e))
                        .map(|s| (s.mask, s.mask_pre_crf))
                })
                .collect::<explainseg::Result<Vec<_>>>()?;
            let secs = t.elapsed().as_secs_f64();
            let logits = e.logits.to_vec();
            let attribution: Vec<f32> = e.attribution.iter().copied().collect();
            let Some((l0, a0, m0)) = &reference else {
                let fg =
                    |m: &Array2<bool>| m.iter().filter(|&&b| b).count() as f64 / m.len() as f64;
                println!(
                    "  {label:<14} {:>11} {:>13} {:>9} {:>9} {:>11} {:>11} {secs:>8.1}   (reference; foreground C {:.3}, XNCut {:.3}; pre-CRF {:.3}, {:.3})",
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                    fg(&masks[0].0),
                    fg(&masks[1].0),
                    fg(&masks[0].1),
                    fg(&masks[1].1),
                );
                reference = Some((logits, attribution, masks));
                continue;
            };
            println!(
                "  {label:<14} {:>11.2e} {:>13.2e} {:>9.5} {:>9.5} {:>11.5} {:>11.5} {secs:>8.1}",
                rel_max(&logits, l0),
                rel_l2(&attribution, a0),
                iou(&masks[0].0, &m0[0].0),
                iou(&masks[1].0, &m0[1].0),
                iou(&masks[0].1, &m0[0].1),
                iou(&masks[1].1, &m0[1].1),
            );
        }
    }
    Ok(())
}
