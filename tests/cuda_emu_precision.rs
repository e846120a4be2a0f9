//! The CUDA engine's GEMM precision modes on the emulated device (feature
//! `cuda-emu`): f32 is the engine's unchanged path; TF32 and bf16 are the same f32
//! GEMM on operands rounded to the mode's format (docs/cuda_emulation.md §1.4), and
//! move the results by a bounded amount (docs/gpu.md, "Precision modes").
#![cfg(feature = "cuda-emu")]

mod common;

use std::sync::Arc;

use common::*;
use explainseg::attr::noise_tunnel_ig;
use explainseg::backend::blas_layout::{reference_sgemm, ColMajorGemm};
use explainseg::backend::cpu::CpuEngine;
use explainseg::backend::cuda::api::DevBuf;
use explainseg::backend::cuda::emu::EmuDevice;
use explainseg::backend::cuda::CudaEngine;
use explainseg::backend::{engine_for, Device, Engine, EngineOptions, Precision};
use ndarray::Array4;

/// Values with all 23 mantissa bits in use, of both signs, around 1.
fn operand(n: usize, seed: u64) -> Vec<f32> {
    explainseg::rng::gaussian_noise(seed, 0, n, 1.0)
}

/// One strided-batched call with transposed A, padded leading dimensions and a B
/// shared by the batch (stride 0), as the engine's patch-projection backward.
fn call(precision: Precision) -> ColMajorGemm {
    let (m, n, k) = (7, 5, 33);
    ColMajorGemm {
        trans_a: true,
        trans_b: false,
        m,
        n,
        k,
        lda: k + 3,
        ldb: k + 1,
        ldc: m + 2,
        batch: 3,
        stride_a: (k + 3) * m + 4,
        stride_b: 0,
        stride_c: (m + 2) * n,
        precision,
    }
}

fn run_gemm(dev: &Arc<EmuDevice>, g: &ColMajorGemm, a: &[f32], b: &[f32]) -> Vec<f32> {
    let dev: explainseg::backend::cuda::api::Dev = dev.clone();
    let (da, db) = (
        DevBuf::upload(&dev, a).unwrap(),
        DevBuf::upload(&dev, b).unwrap(),
    );
    let dc = DevBuf::<f32>::zeros(&dev, g.batch * g.stride_c).unwrap();
    // SAFETY: A spans (batch−1)·stride_a + (m−1)·lda + k values, B (n−1)·ldb + k and C
    // batch·stride_c, as allocated; C is a buffer of its own.
    unsafe {
        dev.gemm(
            g,
            da.as_view().ptr(),
            db.as_view().ptr(),
            dc.as_view().ptr(),
            0.0,
        )
    }
    .unwrap();
    dc.download().unwrap()
}

#[test]
fn a_mode_is_the_f32_gemm_on_operands_rounded_to_its_format() {
    let dev = Arc::new(EmuDevice::new().unwrap());
    let g = call(Precision::F32);
    let a = operand((g.batch - 1) * g.stride_a + (g.m - 1) * g.lda + g.k, 1);
    let b = operand((g.n - 1) * g.ldb + g.k, 2);
    let exact = run_gemm(&dev, &g, &a, &b);
    let mut want = vec![0f32; exact.len()];
    reference_sgemm(&g, &a, &b, &mut want, 0.0);
    assert!(rel_l2(&exact, &want) < 1e-6);
    for p in [Precision::Tf32, Precision::Bf16] {
        let got = run_gemm(&dev, &call(p), &a, &b);
        // Bit for bit the f32 call on the rounded operands.
        let round = |v: &[f32]| v.iter().map(|&x| p.round_operand(x)).collect::<Vec<_>>();
        let on_rounded = run_gemm(&dev, &g, &round(&a), &round(&b));
        assert!(got == on_rounded, "{p}");
        // cuBLAS's semantics with rounded operands (f64 reference) ...
        let mut want_p = vec![0f32; got.len()];
        reference_sgemm(&call(p), &a, &b, &mut want_p, 0.0);
        assert!(rel_l2(&got, &want_p) < 1e-6, "{p}");
        // ... which is not the f32 product: by about the format's unit roundoff.
        let effect = rel_l2(&got, &exact);
        eprintln!("{p}: GEMM rel-L2 against f32 {effect:.2e}");
        let unit = if p == Precision::Tf32 {
            2f64.powi(-11)
        } else {
            2f64.powi(-8)
        };
        assert!(effect > 0.05 * unit && effect < 2.0 * unit, "{p}: {effect}");
    }
}

fn emulated(vit: &explainseg::model::Vit, precision: Precision) -> Box<dyn Engine + '_> {
    engine_for(
        EngineOptions {
            device: Device::CudaEmu,
            precision,
        },
        vit,
    )
    .unwrap()
}

#[test]
fn f32_is_the_engines_default_path_bit_for_bit() {
    let (vit, x) = engine_case("s16_tiny");
    let default = CudaEngine::emulated(&vit).unwrap();
    let f32_mode = emulated(&vit, Precision::F32);
    assert_eq!(default.precision(), Precision::F32);
    assert_eq!(f32_mode.precision(), Precision::F32);
    let (l0, g0) = default.logits_and_input_grad(x.view(), &[1]).unwrap();
    let (l1, g1) = f32_mode.logits_and_input_grad(x.view(), &[1]).unwrap();
    assert!(l0 == l1 && g0 == g1);
    // And that path is the one the CPU parity holds for.
    let (lc, gc) = CpuEngine::new(&vit)
        .logits_and_input_grad(x.view(), &[1])
        .unwrap();
    assert!(rel_max(&to_vec(&l1), &to_vec(&lc)) <= 1e-5);
    assert!(rel_l2(&to_vec(&g1), &to_vec(&gc)) <= 1e-4);
}

/// IG 8 steps × NoiseTunnel 2 samples on the tiny fixture, as docs/gpu.md's table.
fn attribution(engine: &dyn Engine, x: &Array4<f32>) -> Vec<f32> {
    let ig = ig_config(8, 16);
    let nt = seeded_nt(2, 1.0, 0);
    let baseline = Array4::<f32>::zeros(x.dim());
    let out = noise_tunnel_ig(engine, x.view(), baseline.view(), 1, &ig, &nt, None).unwrap();
    to_vec(&out.attribution)
}

#[test]
fn tf32_and_bf16_differ_from_f32_within_the_measured_bounds() {
    let (vit, x) = engine_case("s16_tiny");
    let reference = emulated(&vit, Precision::F32);
    let l_ref = to_vec(&reference.logits(x.view()).unwrap());
    let a_ref = attribution(reference.as_ref(), &x);
    let mut effects = Vec::new();
    // Bounds: the effects measured here (docs/gpu.md) times about 3.
    for (p, logits_bound, ig_bound) in [
        (Precision::Tf32, 2e-3, 3e-3),
        (Precision::Bf16, 1e-2, 2.5e-2),
    ] {
        let e = emulated(&vit, p);
        assert_eq!(e.precision(), p);
        let logits = rel_max(&to_vec(&e.logits(x.view()).unwrap()), &l_ref);
        let ig = rel_l2(&attribution(e.as_ref(), &x), &a_ref);
        eprintln!("{p}: logits rel {logits:.2e}, IG+NT rel-L2 {ig:.2e}");
        assert!(
            logits > 0.0 && logits <= logits_bound,
            "{p}: logits rel {logits}"
        );
        assert!(ig > 0.0 && ig <= ig_bound, "{p}: IG+NT rel-L2 {ig}");
        effects.push(ig);
    }
    // Fewer mantissa bits, a larger effect.
    assert!(effects[1] > effects[0], "{effects:?}");
}

/// `--precision` on the CLI: taken by the emulated CUDA engine, refused by the CPU
/// engine and for unknown names, each with its reason.
#[test]
fn cli_precision_runs_on_the_cuda_engine_and_is_refused_elsewhere() {
    let tmp = tempfile::tempdir().unwrap();
    let image = fixture("preprocess", "big_299x257_q90.jpg");
    let weights = fixture("engine", "s16_tiny/model_timm.safetensors");
    let segment = |device: &str, precision: &str| {
        let mut cmd = assert_cmd::Command::cargo_bin("explainseg").unwrap();
        cmd.args(["segment", "--device", device, "--precision", precision])
            .args(["--size", "64", "--steps", "2", "--nt-samples", "1"])
            .args(["--variant", "c", "--weights"])
            .arg(&weights)
            .arg("--image")
            .arg(&image)
            .arg("--out")
            .arg(tmp.path().join(format!("{device}-{precision}")));
        cmd.assert()
    };
    segment("cuda-emu", "bf16").success();
    let refused = segment("cpu", "tf32").failure();
    let err = String::from_utf8_lossy(&refused.get_output().stderr).into_owned();
    assert!(err.contains("f32 only"), "{err}");
    let unknown = segment("cuda-emu", "fp8").failure();
    let err = String::from_utf8_lossy(&unknown.get_output().stderr).into_owned();
    assert!(err.contains("f32, tf32, bf16"), "{err}");
}
