//! The CUDA engine's own code path (allocation, copies, launches, GEMMs) on the
//! emulated device (feature `cuda-emu`): the kernels run in the fiber emulator, the
//! GEMMs on the CPU. It must match the CPU engine as the GPU must (logits rel ≤ 1e-5,
//! gradients and attributions rel-L2 ≤ 1e-4, identical masks), and the device's
//! counters pin down how much work a pass does.
//!
//! The emulator runs blocks one after another on one thread: sizes are small, and
//! the ViT-S/16 case at 224² has 2 blocks and 2 IG steps.
#![cfg(feature = "cuda-emu")]

mod common;

use common::*;
use explainseg::attr::{
    noise_tunnel_ig, IgConfig, Method, Noise, NoiseDesign, NoiseTunnelConfig, NtType,
};
use explainseg::backend::cpu::CpuEngine;
use explainseg::backend::cuda::{Counters, CudaEngine};
use explainseg::backend::{engine_for, Device, Engine};
use explainseg::model::{HeadKind, Vit, VitConfig};
use ndarray::Array4;

fn tiny() -> (Vit, Array4<f32>) {
    engine_case("s16_tiny")
}

/// A ViT-S/16 at 224² (6 heads of 64, T = 197) with `depth` blocks and random weights.
fn vit_s16(depth: usize) -> Vit {
    vit16("s", depth)
}

fn vit16(size: &str, depth: usize) -> Vit {
    let mut cfg = VitConfig::standard(size, 16, 224).unwrap();
    cfg.depth = depth;
    Vit::random(cfg, 5, 7)
}

/// Launches and GEMMs of one forward of `batch` images through `depth` blocks with a
/// head over `chunks` CLS rows (src/backend/cuda/engine.rs, `forward`). Attention is
/// one fused launch per block for every image and head, so no count depends on the
/// batch (the unfused path had 2 GEMMs per image per block, S = QKᵀ and O = PV, and
/// a softmax launch).
fn forward_work(depth: usize, chunks: u64) -> (u64, u64) {
    let d = depth as u64;
    // im2col, embed_tokens; per block LN1, qkv bias, fused attention, proj bias, LN2,
    // bias+GELU, fc2 bias; a final LN per chunk; the head's bias.
    let launches = 2 + 7 * d + chunks + 1;
    // patch projection; per block qkv, proj, fc1, fc2; the head.
    let gemms = 1 + 4 * d + 1;
    (launches, gemms)
}

/// The same for the input-gradient backward after it.
fn backward_work(depth: usize, chunks: u64) -> (u64, u64) {
    let d = depth as u64;
    // head rows; LN backward per chunk; per block GELU', LN2', the fused attention
    // backward's two passes (D and dQ, then dK and dV), LN1'; col2im. (Unfused: one
    // softmax' launch and 4 GEMMs per image per block, dP, dV, dQ, dK.)
    let launches = 1 + chunks + 5 * d + 1;
    // per block fc2ᵀ, fc1ᵀ, projᵀ, qkvᵀ; the patch projection (one batched call).
    let gemms = 4 * d + 1;
    (launches, gemms)
}

fn chunks(vit: &Vit) -> u64 {
    match vit.head.as_ref().unwrap().kind {
        HeadKind::LastBlocksCls { n } => n as u64,
        _ => 1,
    }
}

#[test]
fn the_device_is_named_and_chosen_by_engine_for() {
    assert_eq!("cuda-emu".parse::<Device>().unwrap(), Device::CudaEmu);
    assert_eq!(Device::CudaEmu.name(), "cuda-emu");
    let (vit, _) = tiny();
    let e = engine_for(Device::CudaEmu, &vit).unwrap();
    assert_eq!(e.device(), Device::CudaEmu);
}

#[test]
fn tiny_logits_and_input_gradients_match_the_cpu_and_the_counts_are_exact() {
    let (vit, x) = tiny();
    let emu = CudaEngine::emulated(&vit).unwrap();
    let cpu = CpuEngine::new(&vit);
    let batch =
        ndarray::concatenate(ndarray::Axis(0), &[x.view(), x.mapv(|v| 0.5 * v).view()]).unwrap();
    let targets = [1usize, 0];
    let (l_cpu, g_cpu) = cpu.logits_and_input_grad(batch.view(), &targets).unwrap();

    let c0 = emu.counters();
    let (l_emu, g_emu) = emu.logits_and_input_grad(batch.view(), &targets).unwrap();
    let c1 = emu.counters();
    let l_rel = rel_max(&to_vec(&l_emu), &to_vec(&l_cpu));
    let g_rel = rel_l2(&to_vec(&g_emu), &to_vec(&g_cpu));
    eprintln!("tiny: logits rel {l_rel:.2e}, input grad rel-L2 {g_rel:.2e}");
    assert!(l_rel <= 1e-5, "logits rel {l_rel}");
    assert!(g_rel <= 1e-4, "input grad rel-L2 {g_rel}");

    // Counts of one forward + backward of 2 images.
    let pass = c1.since(&c0);
    eprintln!("tiny forward+backward, batch 2: {pass:?}");
    let depth = vit.config.depth;
    let ch = chunks(&vit);
    let (fl, fg) = forward_work(depth, ch);
    let (bl, bg) = backward_work(depth, ch);
    assert_eq!(pass.launches, fl + bl, "{pass:?}");
    assert_eq!(pass.gemms, fg + bg, "{pass:?}");
    // Uploads: the images, the positional table, the targets; one download each
    // for the logits and the gradient, each a host sync.
    assert_eq!((pass.htod_copies, pass.dtoh_copies, pass.syncs), (3, 2, 2));
    assert_eq!(pass.dtoh_bytes, 4 * (2 * 3 + batch.len()) as u64);
    // A fresh engine's first call allocates its workspace arena (every buffer of
    // the call is carved from it) and the positional table it keeps; the head-norm
    // gradient, which the backward adds into, is the one buffer zeroed.
    assert_eq!((pass.allocs, pass.frees), (2, 0), "{pass:?}");
    assert_eq!((pass.reuses, pass.zero_fills), (0, 1), "{pass:?}");

    // The same call again does the same work, and allocates nothing: the arena is
    // carved again, not zeroed (on this device it is filled with NaN bytes first,
    // so a buffer read before it is written would show).
    let again = {
        let before = emu.counters();
        let (l2, g2) = emu.logits_and_input_grad(batch.view(), &targets).unwrap();
        assert_eq!(to_vec(&l2), to_vec(&l_emu));
        assert_eq!(to_vec(&g2), to_vec(&g_emu));
        emu.counters().since(&before)
    };
    eprintln!("tiny forward+backward, again: {again:?}");
    let work = |c: &Counters| {
        (
            c.launches,
            c.gemms,
            c.htod_copies,
            c.htod_bytes,
            c.dtoh_copies,
            c.dtoh_bytes,
            c.syncs,
        )
    };
    // The positional table stays on the device: the second call uploads only the
    // images and the targets.
    let (gh, gw) = vit.config.grid_for(x.dim().2, x.dim().3).unwrap();
    let pos_bytes = 4 * ((gh * gw + 1) * vit.config.dim) as u64;
    assert_eq!(again.htod_copies, pass.htod_copies - 1, "{again:?}");
    assert_eq!(again.htod_bytes, pass.htod_bytes - pos_bytes, "{again:?}");
    let again_with_pos = Counters {
        htod_copies: again.htod_copies + 1,
        htod_bytes: again.htod_bytes + pos_bytes,
        ..again
    };
    assert_eq!(work(&again_with_pos), work(&pass));
    assert_eq!((again.allocs, again.frees), (0, 0), "{again:?}");
    assert_eq!((again.reuses, again.zero_fills), (0, 1), "{again:?}");

    // Logits alone: a forward without the backward, one download.
    let before = emu.counters();
    let l_only = emu.logits(batch.view()).unwrap();
    let fwd: Counters = emu.counters().since(&before);
    assert!(rel_max(&to_vec(&l_only), &to_vec(&l_cpu)) <= 1e-5);
    assert_eq!((fwd.launches, fwd.gemms), (fl, fg), "{fwd:?}");
    assert_eq!((fwd.htod_copies, fwd.syncs), (1, 1), "{fwd:?}");
    assert_eq!(
        (fwd.allocs, fwd.frees, fwd.zero_fills),
        (0, 0, 0),
        "{fwd:?}"
    );
    // Bad targets are errors, before any device work.
    let before = emu.counters();
    assert!(emu.logits_and_input_grad(batch.view(), &[0]).is_err());
    assert!(emu.logits_and_input_grad(batch.view(), &[0, 999]).is_err());
    assert_eq!(emu.counters().since(&before), Counters::default());
}

#[test]
fn tiny_noise_tunnel_and_ig_on_the_device_loop_match_the_cpu() {
    let (vit, x) = tiny();
    let emu = CudaEngine::emulated(&vit).unwrap();
    let cpu = CpuEngine::new(&vit);
    let baseline = Array4::<f32>::zeros(x.dim());
    let ig = ig_config(4, 3);
    for nt_type in [NtType::SmoothGrad, NtType::VarGrad] {
        let nt = NoiseTunnelConfig {
            nt_type,
            noise: Noise::Seeded {
                samples: 2,
                stdev: 0.5,
                seed: 42,
            },
        };
        let want = noise_tunnel_ig(&cpu, x.view(), baseline.view(), 1, &ig, &nt, None).unwrap();
        let before = emu.counters();
        let got = noise_tunnel_ig(&emu, x.view(), baseline.view(), 1, &ig, &nt, None).unwrap();
        let c = emu.counters().since(&before);
        let rel = rel_l2(&to_vec(&got.attribution), &to_vec(&want.attribution));
        eprintln!("tiny NoiseTunnel {nt_type:?}: rel-L2 {rel:.2e}; {c:?}");
        assert!(rel <= 1e-4, "{nt_type:?}: {rel}");
        // The loop stays on the device: 8 path points in batches of 3, and only the
        // aggregated attribution comes back.
        assert_eq!((c.dtoh_copies, c.syncs), (1, 1), "{c:?}");
        assert_eq!(c.frees, 0, "{c:?}");
        // Batches of 3, 3 and 2 rows: the two full ones replay one CUDA graph,
        // captured by the first run; the last runs eagerly.
        let captures = u64::from(nt_type == NtType::SmoothGrad);
        assert_eq!((c.graph_captures, c.graph_replays), (captures, 2), "{c:?}");
        if nt_type == NtType::VarGrad {
            // The second run carves the same workspace: no allocation, and the only
            // zero-fills are the accumulators: the IG sums, the device row counter
            // and the head-norm gradient of each of the 3 batches.
            assert_eq!((c.allocs, c.reuses), (0, 0), "{c:?}");
            assert_eq!(c.zero_fills, 2 + 3, "{c:?}");
        }
    }
    let ig = IgConfig {
        return_delta: true,
        ..ig
    };
    let want = cpu
        .attribute(x.view(), baseline.view(), 1, &ig, None, None)
        .unwrap();
    let got = emu
        .attribute(x.view(), baseline.view(), 1, &ig, None, None)
        .unwrap();
    let rel = rel_l2(&to_vec(&got.attribution), &to_vec(&want.attribution));
    eprintln!("tiny IG: rel-L2 {rel:.2e}");
    assert!(rel <= 1e-4);
    assert_eq!(got.deltas.len(), want.deltas.len());
    for (g, w) in got.deltas.iter().zip(&want.deltas) {
        assert!((g - w).abs() <= 1e-3 * (1.0 + w.abs()), "delta {g} vs {w}");
    }
}

#[test]
fn designed_noise_on_the_device_loop_matches_the_cpu() {
    // The stable preset's noise (crate::ig::noise_design) is drawn on the device by
    // the twin of the host's generator (tests/cuda_emu_pipeline.rs checks the bits).
    let (vit, x) = tiny();
    let emu = CudaEngine::emulated(&vit).unwrap();
    let cpu = CpuEngine::new(&vit);
    let ig = ig_config(3, 4);
    for design in [NoiseDesign::Antithetic, NoiseDesign::StratifiedAntithetic] {
        let nt = NoiseTunnelConfig {
            nt_type: NtType::SmoothGrad,
            noise: Noise::drawn(4, 0.5, 7, design),
        };
        let (_, rel) = device_nt_against_cpu(&cpu, &emu, &x, &ig, &nt);
        eprintln!("tiny NoiseTunnel {design:?}: rel-L2 {rel:.2e}");
        assert!(rel <= 1e-4, "{design:?}: {rel}");
    }
}

#[test]
fn stratified_path_points_on_the_device_loop_match_the_cpu() {
    // The stable preset's path rule: every row has its own α (a table as long as
    // the rows, not the steps). Batches of 5 rows straddle the noise samples.
    let (vit, x) = tiny();
    let emu = CudaEngine::emulated(&vit).unwrap();
    let cpu = CpuEngine::new(&vit);
    for n_steps in [1, 2] {
        let ig = IgConfig {
            method: Method::Stratified,
            ..ig_config(n_steps, 5)
        };
        let nt = NoiseTunnelConfig {
            nt_type: NtType::SmoothGrad,
            noise: Noise::drawn(12, 0.5, 3, NoiseDesign::Stratified),
        };
        let (got, rel) = device_nt_against_cpu(&cpu, &emu, &x, &ig, &nt);
        eprintln!("tiny stratified path, {n_steps} steps: rel-L2 {rel:.2e}");
        assert!(rel <= 1e-4, "{n_steps} steps: {rel}");
        // The rows' own points, not a shared rule: Gauss–Legendre's differ.
        let fixed = IgConfig {
            method: Method::GaussLegendre,
            ..ig
        };
        let other = nt_attribution(&emu, &x, &fixed, &nt);
        assert!(rel_l2(&to_vec(&other), &to_vec(&got)) > 1e-3);
    }
}

/// The NoiseTunnel IG of `x` (target 1, zero baseline) on `engine`.
fn nt_attribution(
    engine: &dyn Engine,
    x: &Array4<f32>,
    ig: &IgConfig,
    nt: &NoiseTunnelConfig,
) -> Array4<f32> {
    let baseline = Array4::<f32>::zeros(x.dim());
    noise_tunnel_ig(engine, x.view(), baseline.view(), 1, ig, nt, None)
        .unwrap()
        .attribution
}

/// The NoiseTunnel IG of `x` on the emulated device, and its rel-L2 to the CPU
/// engine's.
fn device_nt_against_cpu(
    cpu: &CpuEngine,
    emu: &CudaEngine,
    x: &Array4<f32>,
    ig: &IgConfig,
    nt: &NoiseTunnelConfig,
) -> (Array4<f32>, f64) {
    let want = nt_attribution(cpu, x, ig, nt);
    let got = nt_attribution(emu, x, ig, nt);
    let rel = rel_l2(&to_vec(&got), &to_vec(&want));
    (got, rel)
}

#[test]
fn vit_s16_at_224_matches_the_cpu() {
    let vit = vit_s16(2);
    let emu = CudaEngine::emulated(&vit).unwrap();
    let cpu = CpuEngine::new(&vit);
    let x = Array4::from_shape_vec(
        (1, 3, 224, 224),
        explainseg::rng::gaussian_noise(3, 0, 3 * 224 * 224, 1.0),
    )
    .unwrap();
    let (l_cpu, g_cpu) = cpu.logits_and_input_grad(x.view(), &[2]).unwrap();
    let t = std::time::Instant::now();
    let (l_emu, g_emu) = emu.logits_and_input_grad(x.view(), &[2]).unwrap();
    let secs = t.elapsed().as_secs_f64();
    let l_rel = rel_max(&to_vec(&l_emu), &to_vec(&l_cpu));
    let g_rel = rel_l2(&to_vec(&g_emu), &to_vec(&g_cpu));
    eprintln!("ViT-S/16 224², 2 blocks: logits rel {l_rel:.2e}, input grad rel-L2 {g_rel:.2e} ({secs:.1} s)");
    assert!(l_rel <= 1e-5, "logits rel {l_rel}");
    assert!(g_rel <= 1e-4, "input grad rel-L2 {g_rel}");

    // NoiseTunnel IG, 1 sample × 2 steps in one batch of 2.
    let baseline = Array4::<f32>::zeros(x.dim());
    let ig = ig_config(2, 2);
    let nt = seeded_nt(1, 0.2, 9);
    let want = noise_tunnel_ig(&cpu, x.view(), baseline.view(), 2, &ig, &nt, None).unwrap();
    let before = emu.counters();
    let got = noise_tunnel_ig(&emu, x.view(), baseline.view(), 2, &ig, &nt, None).unwrap();
    let c = emu.counters().since(&before);
    let rel = rel_l2(&to_vec(&got.attribution), &to_vec(&want.attribution));
    eprintln!("ViT-S/16 224² NoiseTunnel IG: rel-L2 {rel:.2e}; {c:?}");
    assert!(rel <= 1e-4, "{rel}");
    let (fl, fg) = forward_work(2, 1);
    let (bl, bg) = backward_work(2, 1);
    // nt_noise, ig_path, the pass, ig_accumulate, ig_advance_row0, ig_finish,
    // nt_aggregate (the batch replayed as a graph counts its launches).
    assert_eq!(c.launches, 1 + 1 + fl + bl + 1 + 1 + 1 + 1, "{c:?}");
    assert_eq!((c.graph_captures, c.graph_replays), (1, 1), "{c:?}");
    // The arena (the positional table is already on the device), the IG sums, the
    // row counter and the head-norm gradient.
    assert_eq!((c.allocs, c.reuses, c.zero_fills), (1, 0, 3), "{c:?}");
    let before = emu.counters();
    let again = noise_tunnel_ig(&emu, x.view(), baseline.view(), 2, &ig, &nt, None).unwrap();
    let c2 = emu.counters().since(&before);
    eprintln!("ViT-S/16 224² NoiseTunnel IG, again: {c2:?}");
    assert_eq!(to_vec(&again.attribution), to_vec(&got.attribution));
    assert_eq!((c2.allocs, c2.reuses, c2.zero_fills), (0, 0, 3), "{c2:?}");
    assert_eq!((c2.graph_captures, c2.graph_replays), (0, 1), "{c2:?}");
    assert_eq!(
        (c2.launches, c2.gemms, c2.syncs),
        (c.launches, c.gemms, 1),
        "{c2:?}"
    );
    assert_eq!(c.gemms, fg + bg, "{c:?}");
}

/// ViT-B/16 shapes (12 heads of 64, T = 197), one block: logits and input gradient.
#[test]
fn vit_b16_at_224_matches_the_cpu() {
    let vit = vit16("b", 1);
    let emu = CudaEngine::emulated(&vit).unwrap();
    let cpu = CpuEngine::new(&vit);
    let x = Array4::from_shape_vec(
        (1, 3, 224, 224),
        explainseg::rng::gaussian_noise(4, 0, 3 * 224 * 224, 1.0),
    )
    .unwrap();
    let (l_cpu, g_cpu) = cpu.logits_and_input_grad(x.view(), &[4]).unwrap();
    let (l_emu, g_emu) = emu.logits_and_input_grad(x.view(), &[4]).unwrap();
    let l_rel = rel_max(&to_vec(&l_emu), &to_vec(&l_cpu));
    let g_rel = rel_l2(&to_vec(&g_emu), &to_vec(&g_cpu));
    eprintln!("ViT-B/16 224², 1 block: logits rel {l_rel:.2e}, input grad rel-L2 {g_rel:.2e}");
    assert!(l_rel <= 1e-5, "logits rel {l_rel}");
    assert!(g_rel <= 1e-4, "input grad rel-L2 {g_rel}");
}

/// The fused attention holds a head of at most 64 values per thread: a model with
/// larger heads is refused when the engine is made, with an error naming the limit.
#[test]
fn heads_wider_than_the_fused_attention_takes_are_an_error() {
    let mut cfg = VitConfig::standard("s", 16, 64).unwrap();
    cfg.depth = 1;
    cfg.heads = 3; // head dim 128
    let vit = Vit::random(cfg, 5, 7);
    let err = CudaEngine::emulated(&vit).unwrap_err().to_string();
    assert!(err.contains("head dimensions up to 64"), "{err}");
}

/// `explainseg segment --device cuda-emu` writes the CPU's masks, for every variant.
#[test]
fn cli_segment_on_the_emulated_device_gives_the_cpus_masks() {
    let tmp = tempfile::tempdir().unwrap();
    let image = fixture("preprocess", "big_299x257_q90.jpg");
    let weights = fixture("engine", "s16_tiny/model_timm.safetensors");
    for variant in ["a", "b", "c", "xncut", "tokencut", "maskcut"] {
        let mut masks = Vec::new();
        for device in ["cpu", "cuda-emu"] {
            let out = tmp.path().join(format!("{variant}-{device}"));
            assert_cmd::Command::cargo_bin("explainseg")
                .unwrap()
                .args([
                    "segment", "--device", device, "--size", "64", "--steps", "4",
                ])
                .args(["--nt-samples", "2", "--variant", variant, "--weights"])
                .arg(&weights)
                .arg("--image")
                .arg(&image)
                .arg("--out")
                .arg(&out)
                .assert()
                .success();
            let pre = image::open(out.join("mask_pre_crf.png"))
                .unwrap()
                .to_luma8();
            let post = image::open(out.join("mask.png")).unwrap().to_luma8();
            masks.push((pre, post));
        }
        assert!(
            masks[0].0 == masks[1].0,
            "variant {variant}: pre-CRF masks differ"
        );
        assert!(masks[0].1 == masks[1].1, "variant {variant}: masks differ");
    }
}

#[test]
fn block_taps_match_the_cpu() {
    let (vit, x) = tiny();
    let emu = CudaEngine::emulated(&vit).unwrap();
    let cpu = CpuEngine::new(&vit);
    for layer in [Some(0), None] {
        let want = cpu.block_taps(x.view(), layer).unwrap();
        let got = emu.block_taps(x.view(), layer).unwrap();
        assert_eq!(
            (got.grid, got.heads, got.dim),
            (want.grid, want.heads, want.dim)
        );
        assert!(rel_l2(&got.qkv, &want.qkv) <= 1e-5, "{layer:?} qkv");
        let (got_p, want_p) = (got.probs.unwrap(), want.probs.unwrap());
        assert!(rel_l2(&got_p, &want_p) <= 1e-5, "{layer:?} probs");
    }
    assert!(emu.block_taps(x.view(), Some(99)).is_err());
}

/// The C ABI's `ES_DEVICE_CUDA_EMU`: the CPU's masks and (to 1e-4) relevance.
#[test]
fn c_abi_segment_on_the_emulated_device_matches_the_cpu() {
    use explainseg::capi::*;
    use std::ffi::CString;
    use std::ptr::{null, null_mut};

    let weights = CString::new(
        fixture("engine", "s16_tiny/model_timm.safetensors")
            .to_str()
            .unwrap(),
    )
    .unwrap();
    let image = CString::new(fixture("preprocess", "jpeg420_q85.jpg").to_str().unwrap()).unwrap();
    // SAFETY: valid strings, params and out pointers throughout; every handle is freed.
    unsafe {
        let mut img = null_mut();
        assert_eq!(
            explainseg_image_load(image.as_ptr(), &mut img),
            EsStatus::Ok
        );
        let mut models = Vec::new();
        for device in [EsDevice::Cpu, EsDevice::CudaEmu] {
            let params = EsModelParams {
                device,
                ..explainseg_model_default_params()
            };
            let mut m = null_mut();
            assert_eq!(
                explainseg_model_load(weights.as_ptr(), null(), &params, &mut m),
                EsStatus::Ok
            );
            models.push(m);
        }
        for variant in [EsVariant::A, EsVariant::C, EsVariant::Maskcut] {
            let params = EsSegmentParams {
                variant,
                image_size: 64,
                ig_steps: 4,
                ig_batch: 3,
                nt_samples: 2,
                ncut_grid: 16,
                ..explainseg_segment_default_params()
            };
            let mut outs = Vec::new();
            for &m in &models {
                let mut r = null_mut();
                assert_eq!(
                    explainseg_segment(m, img, &params, null(), &mut r),
                    EsStatus::Ok
                );
                let (mut w, mut h) = (0u32, 0u32);
                assert_eq!(explainseg_result_size(r, &mut w, &mut h), EsStatus::Ok);
                let n = (w * h) as usize;
                let mut mask = vec![0u8; n];
                assert_eq!(
                    explainseg_result_mask(r, mask.as_mut_ptr(), n, null_mut()),
                    EsStatus::Ok
                );
                let mut rel = vec![0f32; n];
                let has_rel =
                    explainseg_result_relevance(r, rel.as_mut_ptr(), n, null_mut()) == EsStatus::Ok;
                explainseg_result_free(r);
                outs.push((mask, has_rel.then_some(rel)));
            }
            assert!(outs[0].0 == outs[1].0, "{variant:?}: masks differ");
            if let (Some(a), Some(b)) = (&outs[1].1, &outs[0].1) {
                let rel = rel_l2(a, b);
                assert!(rel <= 1e-4, "{variant:?}: relevance rel-L2 {rel}");
            }
        }
        for m in models {
            explainseg_model_free(m);
        }
        explainseg_image_free(img);
    }
}

/// The IG batch comes from the device's free memory: with room for four path rows
/// the engine runs the same 16 rows in four batches and gets the same attribution;
/// with room for none it says so.
#[test]
fn ig_batch_is_chosen_from_free_device_memory() {
    use explainseg::backend::cuda::emu::EmuDevice;
    use std::sync::Arc;
    let (vit, x) = tiny();
    let (_, _, h, w) = x.dim();
    let baseline = Array4::<f32>::zeros(x.dim());
    let ig = ig_config(8, 16);
    let nt = seeded_nt(2, 0.3, 5);
    let roomy = CudaEngine::emulated(&vit).unwrap();
    let weights = roomy.counters().bytes_allocated as usize;
    let arena = |rows| roomy.ig_workspace_bytes(h, w, rows, 2, 8).unwrap();
    let before = roomy.counters();
    let want = roomy
        .attribute(x.view(), baseline.view(), 1, &ig, Some(&nt), None)
        .unwrap();
    let one_batch = roomy.counters().since(&before);

    // Weights, the 64 MiB the engine leaves to the driver, and a workspace between
    // those of 4 and 5 rows per batch.
    let capacity = weights + (64 << 20) + (arena(4) + arena(5)) / 2;
    let dev = Arc::new(EmuDevice::with_capacity(capacity).unwrap());
    let tight = CudaEngine::on_device(&vit, dev).unwrap();
    let before = tight.counters();
    let got = tight
        .attribute(x.view(), baseline.view(), 1, &ig, Some(&nt), None)
        .unwrap();
    let four_batches = tight.counters().since(&before);
    let rel = rel_l2(&to_vec(&got.attribution), &to_vec(&want.attribution));
    eprintln!(
        "workspace {} B for 4 rows, {} B for 16; 16 rows in 4 batches vs 1: rel-L2 {rel:.2e}",
        arena(4),
        arena(16)
    );
    assert!(rel <= 1e-6, "{rel}");
    // The GEMMs of a pass do not depend on its batch (fused attention), so four
    // batches make four times the GEMM calls of one.
    assert_eq!(four_batches.gemms, 4 * one_batch.gemms, "{four_batches:?}");

    let dev = Arc::new(EmuDevice::with_capacity(weights + (64 << 20) + arena(1) - 1).unwrap());
    let starved = CudaEngine::on_device(&vit, dev).unwrap();
    let err = starved
        .attribute(x.view(), baseline.view(), 1, &ig, Some(&nt), None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("needs") && err.contains("device memory"),
        "{err}"
    );
}

/// IG batches replayed as CUDA graphs give the eager run's attribution bit for bit
/// and the same device work; a graph is captured once per layout and replayed after.
#[test]
fn ig_graphs_match_eager_launches_bit_for_bit() {
    let (vit, x) = tiny();
    let baseline = Array4::<f32>::zeros(x.dim());
    let ig = |n_steps| IgConfig {
        method: Method::GaussLegendre,
        n_steps,
        multiply_by_inputs: true,
        batch_size: 3,
        return_delta: false,
    };
    let nt = seeded_nt(2, 0.5, 42);
    let run = |e: &CudaEngine, n_steps| {
        let before = e.counters();
        let out = e
            .attribute(x.view(), baseline.view(), 1, &ig(n_steps), Some(&nt), None)
            .unwrap();
        let bits: Vec<u32> = out.attribution.iter().map(|v| v.to_bits()).collect();
        (bits, e.counters().since(&before))
    };
    let eager = CudaEngine::emulated(&vit).unwrap();
    eager.set_graphs(false);
    let graphed = CudaEngine::emulated(&vit).unwrap();
    graphed.set_graphs(true);
    let (a_eager, c_eager) = run(&eager, 4);
    let (a_graph, c_graph) = run(&graphed, 4);
    eprintln!("eager: {c_eager:?}\ngraphs: {c_graph:?}");
    assert_eq!(a_graph, a_eager);
    // 8 rows in batches of 3: the two full batches replay the graph captured for the
    // first; the last 2 rows run eagerly.
    assert_eq!((c_graph.graph_captures, c_graph.graph_replays), (1, 2));
    assert_eq!((c_eager.graph_captures, c_eager.graph_replays), (0, 0));
    // A replay's launches, GEMMs and memsets count as such: the same totals.
    let work = |c: &Counters| (c.launches, c.gemms, c.zero_fills, c.dtoh_bytes, c.syncs);
    assert_eq!(work(&c_graph), work(&c_eager));
    assert_eq!(c_graph.htod_bytes, c_eager.htod_bytes);

    // Again: no capture, two replays, no allocation.
    let (a2, c2) = run(&graphed, 4);
    assert_eq!(a2, a_eager);
    assert_eq!((c2.graph_captures, c2.graph_replays), (0, 2), "{c2:?}");
    assert_eq!((c2.allocs, c2.reuses), (0, 0), "{c2:?}");
    assert_eq!(work(&c2), work(&c_eager));
    // The positional table stays on the device.
    assert_eq!(c2.htod_copies, c_graph.htod_copies - 1, "{c2:?}");

    // Another number of steps is another layout: one capture, then its replays
    // (10 rows: 3 full batches and 1 row).
    let (a5_graph, c5) = run(&graphed, 5);
    let (a5_eager, _) = run(&eager, 5);
    assert_eq!(a5_graph, a5_eager);
    assert_eq!((c5.graph_captures, c5.graph_replays), (1, 3), "{c5:?}");
}

/// While a graph is captured the device records work instead of running it and
/// refuses what a graph cannot hold: a download, an allocation, a host sync.
#[test]
fn a_capture_refuses_copies_allocations_and_syncs() {
    use explainseg::backend::cuda::api::{Dev, DevBuf};
    use explainseg::backend::cuda::emu::EmuDevice;
    use std::sync::Arc;
    let dev: Dev = Arc::new(EmuDevice::new().unwrap());
    let mut buf = DevBuf::<f32>::upload(&dev, &[1.0, 2.0]).unwrap();
    dev.begin_capture().unwrap();
    let err = buf.download().unwrap_err().to_string();
    assert!(
        err.contains("copying from the device") && err.contains("captured"),
        "{err}"
    );
    assert!(DevBuf::<f32>::zeros(&dev, 4).is_err());
    assert!(dev.synchronize().is_err());
    // The refused calls break the capture.
    let err = dev.end_capture().unwrap_err().to_string();
    assert!(err.contains("invalidated"), "{err}");

    // A clean capture runs nothing until it is replayed.
    let before = dev.counters();
    dev.begin_capture().unwrap();
    buf.zero().unwrap();
    let graph = dev.end_capture().unwrap();
    assert_eq!(buf.download().unwrap(), [1.0, 2.0]);
    // SAFETY: the graph zeroes `buf`, which is live.
    unsafe { dev.replay(graph).unwrap() };
    unsafe { dev.replay(graph).unwrap() };
    assert_eq!(buf.download().unwrap(), [0.0, 0.0]);
    let c = dev.counters().since(&before);
    assert_eq!((c.graph_captures, c.graph_replays, c.zero_fills), (1, 2, 2));
}

/// The workspace is NaN-poisoned on the emulated device, so a kernel that reads a
/// buffer nobody wrote gives NaN: here IG sums added into an accumulator that was
/// not zeroed, and a buffer read after its range was handed back.
#[test]
fn a_kernel_reading_poisoned_workspace_gives_nan() {
    use explainseg::backend::cuda::api::Dev;
    use explainseg::backend::cuda::emu::EmuDevice;
    use explainseg::backend::cuda::launch::{ig_accumulate_f32, PathRows};
    use explainseg::backend::cuda::workspace::Workspace;
    use std::sync::Arc;
    let dev: Dev = Arc::new(EmuDevice::new().unwrap());
    let len = 1000;
    let p = PathRows {
        row0: 0,
        rows: 1,
        n_steps: 1,
        period: 1,
        len,
    };
    let mut arena = Workspace::new(dev.clone());
    arena.reserve(1 << 16).unwrap();
    let mut ws = arena.carver();
    let grads = ws.upload(&vec![1.0f32; len]).unwrap();
    let weights = ws.upload(&[0.5f32]).unwrap();
    let row0 = ws.zeros::<i32>(1).unwrap();
    let mark = ws.mark();
    let mut acc = ws.take::<f32>(len).unwrap();
    let accumulate = |acc: &mut explainseg::backend::cuda::api::DevBuf<f32>| {
        ig_accumulate_f32(
            &*dev,
            &grads.as_view(),
            &weights.as_view(),
            &mut acc.as_view_mut(),
            &row0.as_view(),
            p,
        )
        .unwrap();
        acc.download().unwrap()
    };
    // Not zeroed: every sum is NaN.
    assert!(accumulate(&mut acc).iter().all(|v| v.is_nan()));
    // Zeroed: the sums.
    acc.zero().unwrap();
    assert!(accumulate(&mut acc).iter().all(|&v| v == 0.5));
    drop(acc);
    // Handed back and carved again: poisoned again.
    // SAFETY: `acc` is dropped.
    unsafe { ws.rewind(mark) };
    let mut again = ws.take::<f32>(len).unwrap();
    assert!(accumulate(&mut again).iter().all(|v| v.is_nan()));
}

/// A capture takes every call made on the device's stream, so another thread's
/// device work (DenseCRF beside the IG loop) waits until the capture ends instead
/// of landing in the graph.
#[test]
fn another_threads_work_waits_for_a_capture_to_end() {
    use explainseg::backend::cuda::api::{Dev, DevBuf, Pooled};
    use explainseg::backend::cuda::emu::EmuDevice;
    use std::sync::Arc;
    let dev: Dev = Arc::new(Pooled::new(Arc::new(EmuDevice::new().unwrap())));
    let mut mine = DevBuf::<f32>::upload(&dev, &[1.0]).unwrap();
    let mut theirs = DevBuf::<f32>::upload(&dev, &[2.0]).unwrap();
    dev.begin_capture().unwrap();
    let graph = std::thread::scope(|s| {
        let other = s.spawn(|| theirs.zero().unwrap());
        // Give the other thread time to reach the device (it must wait there).
        std::thread::sleep(std::time::Duration::from_millis(50));
        mine.zero().unwrap();
        let graph = dev.end_capture().unwrap();
        other.join().unwrap();
        graph
    });
    // The other thread's zeroing ran (after the capture), and is not in the graph.
    assert_eq!(theirs.download().unwrap(), [0.0]);
    assert_eq!(mine.download().unwrap(), [1.0]);
    let before = dev.counters();
    // SAFETY: the graph zeroes `mine`, which is live.
    unsafe { dev.replay(graph).unwrap() };
    assert_eq!(dev.counters().since(&before).zero_fills, 1);
    assert_eq!(mine.download().unwrap(), [0.0]);
}
