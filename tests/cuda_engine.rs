//! The CUDA engine (feature `cuda`): on a machine without a GPU it must report
//! `Error::CudaUnavailable` rather than panic; on a GPU machine it must match the CPU
//! engine (logits, input gradients, device-side NoiseTunnel + IG), on the tiny fixture
//! and on a ViT-S/16 at 224² (T = 197, head dim 64).
//!
//! Without a GPU the parity tests print "skipped: no CUDA device"; with
//! `EXPLAINSEG_REQUIRE_GPU=1` that skip is a failure, so they can fail where it matters.
#![cfg(feature = "cuda")]

mod common;

use common::*;
use explainseg::attr::{noise_tunnel_ig, IgConfig, Noise, NoiseTunnelConfig, NtType};
use explainseg::backend::cpu::CpuEngine;
use explainseg::backend::cuda::{probe, CudaEngine};
use explainseg::backend::Engine;
use explainseg::model::{Vit, VitConfig};
use explainseg::Error;
use ndarray::Array4;

fn tiny() -> (Vit, Array4<f32>) {
    engine_case("s16_tiny")
}

/// The CUDA engine, or `None` (after checking the error is the right one) without a GPU.
fn engine_or_skip(vit: &Vit) -> Option<CudaEngine<'_>> {
    match CudaEngine::new(vit, 0) {
        Ok(e) => Some(e),
        Err(Error::CudaUnavailable(why)) => {
            assert!(
                std::env::var("EXPLAINSEG_REQUIRE_GPU").as_deref() != Ok("1"),
                "EXPLAINSEG_REQUIRE_GPU=1 but CUDA is unavailable: {why}"
            );
            eprintln!("skipped: no CUDA device ({why})");
            None
        }
        Err(other) => panic!("expected CudaUnavailable without a GPU, got {other:?}"),
    }
}

#[test]
fn without_a_gpu_the_error_is_cuda_unavailable_not_a_panic() {
    let (vit, _) = tiny();
    let probed = probe();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        CudaEngine::new(&vit, 0).map(|_| ())
    }));
    let result = result.expect("CudaEngine::new must not panic");
    match (probed, result) {
        (Err(Error::CudaUnavailable(a)), Err(Error::CudaUnavailable(b))) => {
            assert!(!a.is_empty() && !b.is_empty());
        }
        (Ok(()), Ok(())) => {}
        // Libraries present but no usable device: still a clear error.
        (Ok(()), Err(Error::CudaUnavailable(_))) => {}
        (p, r) => panic!("probe {p:?} and engine {r:?} disagree"),
    }
    // A device ordinal that cannot exist is an error, never a panic.
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        CudaEngine::new(&vit, 4096).map(|_| ())
    }));
    assert!(matches!(r, Ok(Err(Error::CudaUnavailable(_)))), "{r:?}");
}

#[test]
fn gpu_logits_and_input_gradients_match_the_cpu_engine() {
    let (vit, x) = tiny();
    let Some(gpu) = engine_or_skip(&vit) else {
        return;
    };
    let cpu = CpuEngine::new(&vit);
    let batch =
        ndarray::concatenate(ndarray::Axis(0), &[x.view(), x.mapv(|v| 0.5 * v).view()]).unwrap();
    let targets = [1usize, 0];
    let (l_cpu, g_cpu) = cpu.logits_and_input_grad(batch.view(), &targets).unwrap();
    let (l_gpu, g_gpu) = gpu.logits_and_input_grad(batch.view(), &targets).unwrap();
    // cuBLAS sums in another order than the CPU GEMM: f32 rounding, no TF32.
    assert!(rel_l2(&to_vec(&l_gpu), &to_vec(&l_cpu)) < 1e-5);
    assert!(rel_l2(&to_vec(&g_gpu), &to_vec(&g_cpu)) < 1e-4);
    let l_only = gpu.logits(batch.view()).unwrap();
    assert!(rel_l2(&to_vec(&l_only), &to_vec(&l_cpu)) < 1e-5);
    // Bad targets are errors.
    assert!(gpu.logits_and_input_grad(batch.view(), &[0]).is_err());
    assert!(gpu.logits_and_input_grad(batch.view(), &[0, 999]).is_err());
}

#[test]
fn gpu_noise_tunnel_matches_the_cpu_path_for_the_same_seed() {
    let (vit, x) = tiny();
    let Some(gpu) = engine_or_skip(&vit) else {
        return;
    };
    let cpu = CpuEngine::new(&vit);
    let baseline = Array4::<f32>::zeros(x.dim());
    let ig = ig_config(8, 5);
    for nt_type in [NtType::SmoothGrad, NtType::VarGrad] {
        let nt = NoiseTunnelConfig {
            nt_type,
            noise: Noise::Seeded {
                samples: 3,
                stdev: 0.5,
                seed: 42,
            },
        };
        let want = noise_tunnel_ig(&cpu, x.view(), baseline.view(), 1, &ig, &nt, None).unwrap();
        // The engine's own loop: on the device for CUDA.
        let got = noise_tunnel_ig(&gpu, x.view(), baseline.view(), 1, &ig, &nt, None).unwrap();
        assert!(
            rel_l2(&to_vec(&got.attribution), &to_vec(&want.attribution)) < 1e-4,
            "{nt_type:?}"
        );
    }
    // Plain IG with convergence deltas takes the same on-device path.
    let ig = IgConfig {
        return_delta: true,
        ..ig
    };
    let want = cpu
        .attribute(x.view(), baseline.view(), 1, &ig, None, None)
        .unwrap();
    let got = gpu
        .attribute(x.view(), baseline.view(), 1, &ig, None, None)
        .unwrap();
    assert!(rel_l2(&to_vec(&got.attribution), &to_vec(&want.attribution)) < 1e-4);
    assert_eq!(got.deltas.len(), want.deltas.len());
    for (g, w) in got.deltas.iter().zip(&want.deltas) {
        assert!((g - w).abs() <= 1e-3 * (1.0 + w.abs()), "delta {g} vs {w}");
    }
}

/// ViT-S/16 at 224² (6 heads of 64, T = 197), 2 blocks of random weights: the shapes the
/// product runs, where the tiny fixture's head dim 8 hides tiling bugs.
#[test]
fn gpu_vit_s16_at_224_matches_the_cpu_engine() {
    let mut cfg = VitConfig::standard("s", 16, 224).unwrap();
    cfg.depth = 2;
    let vit = Vit::random(cfg, 5, 7);
    let Some(gpu) = engine_or_skip(&vit) else {
        return;
    };
    let cpu = CpuEngine::new(&vit);
    let x = Array4::from_shape_vec(
        (2, 3, 224, 224),
        explainseg::rng::gaussian_noise(3, 0, 2 * 3 * 224 * 224, 1.0),
    )
    .unwrap();
    let (l_cpu, g_cpu) = cpu.logits_and_input_grad(x.view(), &[2, 0]).unwrap();
    let (l_gpu, g_gpu) = gpu.logits_and_input_grad(x.view(), &[2, 0]).unwrap();
    let l_rel = rel_max(&to_vec(&l_gpu), &to_vec(&l_cpu));
    let g_rel = rel_l2(&to_vec(&g_gpu), &to_vec(&g_cpu));
    eprintln!("ViT-S/16 224² on the GPU: logits rel {l_rel:.2e}, input grad rel-L2 {g_rel:.2e}");
    assert!(l_rel <= 1e-5, "logits rel {l_rel}");
    assert!(g_rel <= 1e-4, "input grad rel-L2 {g_rel}");

    let one = x.slice(ndarray::s![0..1, .., .., ..]).to_owned();
    let baseline = Array4::<f32>::zeros(one.dim());
    let ig = ig_config(4, 4);
    let nt = seeded_nt(2, 0.2, 9);
    let want = noise_tunnel_ig(&cpu, one.view(), baseline.view(), 2, &ig, &nt, None).unwrap();
    let got = noise_tunnel_ig(&gpu, one.view(), baseline.view(), 2, &ig, &nt, None).unwrap();
    let rel = rel_l2(&to_vec(&got.attribution), &to_vec(&want.attribution));
    eprintln!("ViT-S/16 224² NoiseTunnel IG on the GPU: rel-L2 {rel:.2e}");
    assert!(rel <= 1e-4, "{rel}");
}

/// The TF32 and bf16 GEMM modes (cublasGemmEx with the 32F fast compute types) run and
/// stay near the f32 mode: the tiny fixture, IG 8 steps × NoiseTunnel 2 samples, as
/// tests/cuda_emu_precision.rs measures with the CPU twin. The twin models the operand
/// rounding but not the tensor cores' summation (docs/cuda_emulation.md §1.4), so the
/// bounds here are 10× the twin's effects (docs/gpu.md, "Precision modes").
#[test]
fn gpu_tf32_and_bf16_modes_stay_near_f32() {
    use explainseg::backend::Precision;
    let (vit, x) = tiny();
    let Some(f32_mode) = engine_or_skip(&vit) else {
        return;
    };
    let baseline = Array4::<f32>::zeros(x.dim());
    let ig = ig_config(8, 16);
    let nt = seeded_nt(2, 1.0, 0);
    let run = |e: &CudaEngine| {
        let logits = to_vec(&e.logits(x.view()).unwrap());
        let a = noise_tunnel_ig(e, x.view(), baseline.view(), 1, &ig, &nt, None).unwrap();
        (logits, to_vec(&a.attribution))
    };
    let (l_ref, a_ref) = run(&f32_mode);
    for (p, logits_bound, ig_bound) in
        [(Precision::Tf32, 6e-3, 1e-2), (Precision::Bf16, 3e-2, 8e-2)]
    {
        let e = CudaEngine::new(&vit, 0).unwrap().with_precision(p);
        assert_eq!(e.precision(), p);
        let (l, a) = run(&e);
        let (l_rel, a_rel) = (rel_max(&l, &l_ref), rel_l2(&a, &a_ref));
        eprintln!("GPU {p} vs f32: logits rel {l_rel:.2e}, IG+NT rel-L2 {a_rel:.2e}");
        assert!(l_rel <= logits_bound, "{p}: logits rel {l_rel}");
        assert!(a_rel <= ig_bound, "{p}: IG+NT rel-L2 {a_rel}");
    }
}
