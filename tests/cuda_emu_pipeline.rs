//! The pipeline on the device (feature `cuda-emu`): the relevance map is computed
//! where the attribution lies (`kernels/relevance.cu`) and equals the host's
//! reduction of the same attribution bit for bit; a segmented image costs the
//! device, after warm-up, no allocation, two host waits, uploads of the image,
//! baseline and CRF inputs, and downloads of the relevance, logits and mask alone.
#![cfg(feature = "cuda-emu")]

mod common;

use common::*;
use explainseg::attr::{
    explain, explain_map, ExplainConfig, Noise, NoiseTunnelConfig, Normalizer, NtType, Reduction,
    RelevanceConfig,
};
use explainseg::backend::cpu::CpuEngine;
use explainseg::backend::cuda::CudaEngine;
use explainseg::backend::Engine;
use explainseg::pipeline::{pixels_from_input, segment, PipelineConfig, Variant};

fn small_explain() -> ExplainConfig {
    ExplainConfig {
        ig: ig_config(3, 4),
        noise_tunnel: Some(seeded_nt(2, 0.3, 11)),
        ..ExplainConfig::default()
    }
}

#[test]
fn the_devices_relevance_map_is_the_hosts_reduction_bit_for_bit() {
    let (vit, x) = engine_case("s16_tiny");
    let x = x.slice(ndarray::s![..1, .., .., ..]).to_owned();
    let emu = CudaEngine::emulated(&vit).unwrap();
    let cfg = small_explain();
    // The full attribution, reduced on the host: the reference for every setting.
    let full = explain(&emu, x.view(), &cfg, None).unwrap();
    let settings = [
        (0.0, Normalizer::MinMax),
        (1.5, Normalizer::MinMax),
        (0.7, Normalizer::captum()),
        (0.0, Normalizer::None),
    ];
    for reduction in [
        Reduction::Sum,
        Reduction::AbsSum,
        Reduction::Positive,
        Reduction::SumAbs,
    ] {
        for (smooth_sigma, normalizer) in settings {
            let rel = RelevanceConfig {
                reduction,
                smooth_sigma,
                normalizer,
            };
            let want = full.map(&rel).unwrap();
            let got = explain_map(&emu, x.view(), &cfg, &rel, None, None).unwrap();
            assert_eq!(
                got.relevance, want.relevance,
                "{reduction:?}, σ {smooth_sigma}, {normalizer:?}"
            );
            assert_eq!(got.logits, want.logits);
            assert_eq!((got.target, got.predicted), (want.target, want.predicted));
        }
    }
    // An explicit class is explained as asked; a class that does not exist is an error.
    for target in [0, 1] {
        let cfg = ExplainConfig {
            target: Some(target),
            ..small_explain()
        };
        let rel = RelevanceConfig {
            reduction: Reduction::AbsSum,
            smooth_sigma: 0.0,
            normalizer: Normalizer::MinMax,
        };
        let want = explain(&emu, x.view(), &cfg, None)
            .unwrap()
            .map(&rel)
            .unwrap();
        let got = explain_map(&emu, x.view(), &cfg, &rel, None, None).unwrap();
        assert_eq!(got.target, target);
        assert_eq!(got.relevance, want.relevance, "target {target}");
    }
    let bad = ExplainConfig {
        target: Some(vit.classes().unwrap()),
        ..small_explain()
    };
    let rel = PipelineConfig::default().relevance();
    assert!(explain_map(&emu, x.view(), &bad, &rel, None, None).is_err());
    // And the CPU engine, which reduces on the host, agrees with the device.
    let cpu = explain_map(&CpuEngine::new(&vit), x.view(), &cfg, &rel, None, None).unwrap();
    let dev = explain_map(&emu, x.view(), &cfg, &rel, None, None).unwrap();
    let d = rel_l2(&to_vec(&dev.relevance), &to_vec(&cpu.relevance));
    assert!(d <= 1e-4, "relevance rel-L2 {d:.2e} against the CPU engine");
}

#[test]
fn a_segmented_image_waits_twice_and_downloads_only_relevance_logits_taps_and_mask() {
    let (vit, x) = engine_case("s16_tiny");
    let x = x.slice(ndarray::s![..1, .., .., ..]).to_owned();
    let (_, _, h, w) = x.dim();
    let cfg = PipelineConfig {
        explain: small_explain(),
        ..PipelineConfig::default()
    };
    let pixels = pixels_from_input(x.view(), cfg.explain.mean, cfg.explain.std);
    let emu = CudaEngine::emulated(&vit).unwrap();
    let cpu = CpuEngine::new(&vit);
    let classes = vit.classes().unwrap() as u64;
    let (hw, image) = ((h * w) as u64, (3 * h * w * 4) as u64);
    let grid = vit.config.grid_for(h, w).unwrap();
    // q|k|v of the feature map's block, read in the explanation's wait (A and B).
    let qkv = (4 * (grid.0 * grid.1 + 1) * 3 * vit.config.dim) as u64;
    for variant in [Variant::C, Variant::XNCut, Variant::A, Variant::B] {
        let taps = if matches!(variant, Variant::A | Variant::B) {
            qkv
        } else {
            0
        };
        // Warm-up: kernels loaded, positional table cached, and the device's blocks
        // settled: the CRF keeps some of the sizes the first explanation freed, so the
        // second image still allocates what the CRF took.
        for _ in 0..2 {
            segment(&emu, x.view(), pixels.view(), variant, &cfg, None).unwrap();
        }
        let before = emu.counters();
        let got = segment(&emu, x.view(), pixels.view(), variant, &cfg, None).unwrap();
        let c = emu.counters().since(&before);
        eprintln!("{variant:?} at {h}×{w}: {c:?}");
        assert_eq!(c.allocs, 0, "{variant:?}: {c:?}");
        assert!(c.syncs <= 2, "{variant:?}: {c:?}");
        // The image and baseline for IG, then the CRF's pixels and unaries.
        assert!(c.htod_bytes <= 2 * image + (1 << 20), "{variant:?}: {c:?}");
        // Relevance (f32), logits and the feature map's taps in one wait; the mask (a
        // byte per pixel) and the CRF's fault flag in the other.
        assert_eq!(
            c.dtoh_bytes,
            4 * hw + 4 * classes + taps + hw + 1,
            "{variant:?}: {c:?}"
        );
        let want = segment(&cpu, x.view(), pixels.view(), variant, &cfg, None).unwrap();
        assert_eq!(got.mask, want.mask, "{variant:?}");
        assert_eq!(got.predicted, want.predicted);
    }
}

/// `eval` on the emulated device, where the next image is explained on the device
/// while the current one is masked and scored on another thread, scores every image
/// as the CPU does.
#[test]
fn eval_on_the_emulated_device_scores_as_the_cpu() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("data");
    tiny_dataset(&root);
    let mut tables = Vec::new();
    for device in ["cpu", "cuda-emu"] {
        let out = tmp.path().join(device);
        assert_cmd::Command::cargo_bin("explainseg")
            .unwrap()
            .args(["eval", "--dataset", "folder", "--root"])
            .arg(&root)
            .arg("--weights")
            .arg(fixture("engine", "s16_tiny/model_timm.safetensors"))
            .args(["--device", device, "--size", "64", "--steps", "3"])
            .args(["--nt-samples", "2", "--variants", "a,c,xncut", "--out"])
            .arg(&out)
            .assert()
            .success();
        // per_image.csv without the wall-clock `seconds` column.
        let rows: Vec<String> = std::fs::read_to_string(out.join("per_image.csv"))
            .unwrap()
            .lines()
            .map(|l| {
                let mut f: Vec<&str> = l.split(',').collect();
                f.remove(5);
                f.join(",")
            })
            .collect();
        // 4 images × (3 variants + 3 chance rows).
        assert_eq!(rows.len(), 1 + 4 * 6, "{rows:?}");
        tables.push(rows);
    }
    assert_eq!(tables[0], tables[1]);
}

/// The variance-reduced noise designs are drawn on the device bit for bit as on the
/// host: the device's attribution equals the one from the host's noise uploaded as
/// given noise (everything after the noise is the same device code), and the stable
/// preset uploads no noise.
#[test]
fn designed_noise_is_drawn_on_the_device_with_the_hosts_bits() {
    use explainseg::attr::{make_noise, NoiseDesign};
    let (vit, x) = engine_case("s16_tiny");
    let x = x.slice(ndarray::s![..1, .., .., ..]).to_owned();
    let emu = CudaEngine::emulated(&vit).unwrap();
    let baseline = ndarray::Array4::<f32>::zeros(x.dim());
    let ig = ig_config(2, 8);
    let image = (x.len() * 4) as u64;
    for design in [
        NoiseDesign::Antithetic,
        NoiseDesign::Stratified,
        NoiseDesign::StratifiedAntithetic,
    ] {
        for samples in [1, 2, 5, 24] {
            let drawn = Noise::drawn(samples, 1.0, 9 + samples as u64, design);
            let given = Noise::Injected(make_noise(&drawn, x.view()).unwrap());
            let run = |noise: Noise| {
                let nt = NoiseTunnelConfig {
                    nt_type: NtType::SmoothGrad,
                    noise,
                };
                let before = emu.counters();
                let out = emu
                    .attribute(x.view(), baseline.view(), 0, &ig, Some(&nt), None)
                    .unwrap();
                (out.attribution, emu.counters().since(&before))
            };
            let (want, _) = run(given);
            let (got, c) = run(drawn);
            assert_eq!(got, want, "{design:?}, {samples} samples");
            // Image, baseline, quadrature nodes and weights, targets: no noise.
            assert!(c.htod_bytes < 2 * image + 1024, "{design:?}: {c:?}");
        }
    }
}
