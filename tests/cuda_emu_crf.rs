//! DenseCRF on the emulated CUDA device (feature `cuda-emu`): the device lattice and
//! mean field (`backend::cuda::CrfDevice`, kernels/crf_*.cu) against the CPU DenseCRF
//! (`post::crf`, itself bit-exact with pydensecrf), under every emulator schedule.
//! Sizes are small: the emulator runs blocks one after another on one thread.
#![cfg(feature = "cuda-emu")]

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use explainseg::backend::cuda::crf::{run_launches, CrfImage, CrfResult, CrfSpec, CrfWant};
use explainseg::backend::cuda::emu::{EmuDevice, Schedule};
use explainseg::backend::cuda::CrfDevice;
use explainseg::backend::{crf_device_for, Device};
use explainseg::post::crf::{
    dense_crf, dense_crf_on, lattice_filter, refine_mask_on, unary_from_mask, CrfParams,
};
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
    // srgb = 0.4: coordinates beyond 12 bits, so both sides hash the d = 5 keys.
    for (what, sxy, srgb) in [
        ("d=2", 3.0, None),
        ("d=5", 5.0, Some(5.0)),
        ("d=5 hashed keys", 5.0, Some(0.4)),
    ] {
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

// ---------------------------------------------------------------------------------
// The CRF fixtures (tools/gen_crf.py, pydensecrf).

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/crf")
        .join(name)
}

fn npy_f32(name: &str) -> ArrayD<f32> {
    ArrayD::<f32>::read_npy(std::fs::File::open(fixture(name)).unwrap()).unwrap()
}

fn npy_u8(name: &str) -> ArrayD<u8> {
    ArrayD::<u8>::read_npy(std::fs::File::open(fixture(name)).unwrap()).unwrap()
}

fn png_rgb(name: &str) -> Array3<u8> {
    let img = image::open(fixture(name)).unwrap().to_rgb8();
    let (w, h) = img.dimensions();
    Array3::from_shape_vec((h as usize, w as usize, 3), img.into_raw()).unwrap()
}

fn png_mask(name: &str) -> Array2<bool> {
    let img = image::open(fixture(name)).unwrap().to_luma8();
    let (w, h) = img.dimensions();
    Array2::from_shape_vec((h as usize, w as usize), img.into_raw())
        .unwrap()
        .mapv(|v| v > 127)
}

fn mask_unary(mask: Array2<bool>) -> Array3<f32> {
    let (h, w) = mask.dim();
    unary_from_mask(mask.view(), h, w).unwrap()
}

/// A fixture: name, image, unary, pydensecrf's labels.
type Case = (&'static str, Array3<u8>, Array3<f32>, Array2<u32>);

/// (name, image, unary, pydensecrf's labels) of every CRF fixture; the 480×480 case
/// (big_*) last, with `big`.
fn cases(big: bool) -> Vec<Case> {
    let argmax = |q: ArrayD<f32>| -> Array2<u32> {
        q.map_axis(Axis(0), |col| {
            let mut best = 0;
            for l in 1..col.len() {
                if col[l] > col[best] {
                    best = l;
                }
            }
            best as u32
        })
        .into_dimensionality()
        .unwrap()
    };
    let small = png_rgb("small_image.png");
    let mut v = vec![
        (
            "small",
            small.clone(),
            mask_unary(png_mask("small_mask.png")),
            argmax(npy_f32("small_q.npy")),
        ),
        (
            "resize",
            small,
            npy_f32("resize_unary.npy").into_dimensionality().unwrap(),
            argmax(npy_f32("resize_q.npy")),
        ),
    ];
    for m in [3, 5] {
        let name = if m == 3 { "labels3" } else { "labels5" };
        v.push((
            name,
            npy_u8(&format!("{name}_image.npy"))
                .into_dimensionality()
                .unwrap(),
            npy_f32(&format!("{name}_unary.npy"))
                .into_dimensionality()
                .unwrap(),
            argmax(npy_f32(&format!("{name}_q.npy"))),
        ));
    }
    for name in ["gray", "rgba"] {
        let mask: Array2<u8> = npy_u8(&format!("{name}_mask.npy"))
            .into_dimensionality()
            .unwrap();
        v.push((
            name,
            npy_u8(&format!("{name}_image.npy"))
                .into_dimensionality()
                .unwrap(),
            mask_unary(mask.mapv(|x| x != 0)),
            argmax(npy_f32(&format!("{name}_q.npy"))),
        ));
    }
    if big {
        let labels = png_mask("big_labels.png").mapv(u32::from);
        v.push((
            "big",
            png_rgb("big_image.png"),
            mask_unary(png_mask("big_mask.png")),
            labels,
        ));
    }
    v
}

fn agreement(a: &Array2<u32>, b: &Array2<u32>) -> f64 {
    let same = a.iter().zip(b.iter()).filter(|(x, y)| x == y).count();
    same as f64 / a.len() as f64
}

/// Every fixture, every schedule: the device's labels against pydensecrf's and the CPU's
/// (≥ 99.9 %), and its marginals against the CPU's. The 480×480 case (≈ 40 s per
/// schedule here) runs under the forward schedule, under all three with
/// `EXPLAINSEG_CRF_BIG=1`; the refined mask (`refine_mask_on`) is checked on it too.
#[test]
fn crf_fixtures_agree_with_pydensecrf_under_every_schedule() {
    let params = CrfParams::default();
    let all_big = std::env::var_os("EXPLAINSEG_CRF_BIG").is_some();
    for (name, image, unary, reference) in cases(true) {
        let cpu = dense_crf(image.view(), unary.view(), &params).unwrap();
        let schedules: &[Schedule] = if name == "big" && !all_big {
            &Schedule::ALL[..1]
        } else {
            &Schedule::ALL
        };
        if name == "big" {
            let mask = png_mask("big_mask.png");
            let dev = device(Schedule::Forward);
            let refined = refine_mask_on(Some(&dev), image.view(), mask.view(), &params).unwrap();
            assert_eq!(refined, cpu.labels.mapv(|l| l == 1));
        }
        for &s in schedules {
            let dev = device(s);
            let got = dense_crf_on(Some(&dev), image.view(), unary.view(), &params).unwrap();
            let (vs_ref, vs_cpu) = (
                agreement(&got.labels, &reference),
                agreement(&got.labels, &cpu.labels),
            );
            let max_dq = got
                .probs
                .iter()
                .zip(cpu.probs.iter())
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            eprintln!(
                "{name} {:?} {s:?}: labels = pydensecrf on {:.4} %, = CPU on {:.4} %; max |Q − Q_cpu| = {max_dq:e}",
                image.dim(),
                100.0 * vs_ref,
                100.0 * vs_cpu
            );
            assert!(vs_ref >= 0.999 && vs_cpu >= 0.999, "{name} {s:?}");
        }
    }
}

fn spec_of(p: &CrfParams) -> CrfSpec {
    CrfSpec {
        n_iterations: p.n_iterations,
        positional: Some((p.pos_sxy_px, p.pos_weight)),
        bilateral: Some((p.bi_sxy_px, p.bi_srgb, p.bi_weight)),
    }
}

/// A second call of the same size allocates nothing; launches, copies and host syncs
/// per call are as designed (one upload each of image and unary, one download of the
/// mask, a byte per pixel, and one sync).
#[test]
fn repeated_calls_reuse_buffers_and_counts_are_pinned() {
    let img = test_image(21, 26, 5);
    let (h, w, c) = img.dim();
    let mask = Array2::from_shape_fn((h, w), |(y, x)| {
        (5..16).contains(&y) && (6..20).contains(&x)
    });
    let unary = mask_unary(mask);
    let m = 2;
    let u: Vec<f32> = (0..h * w)
        .flat_map(|p| (0..m).map(move |l| (p, l)))
        .map(|(p, l)| unary[[l, p / w, p % w]])
        .collect();
    let params = CrfParams {
        n_iterations: 3,
        ..CrfParams::default()
    };
    let spec = spec_of(&params);
    let dev = device(Schedule::Forward);
    let image = CrfImage {
        pixels: img.as_slice().unwrap(),
        h,
        w,
        channels: c,
    };
    let first = dev.run(image, &u, m, &spec, CrfWant::Foreground).unwrap();
    let before = dev.counters();
    let second = dev.run(image, &u, m, &spec, CrfWant::Foreground).unwrap();
    let per_call = dev.counters().since(&before);
    assert_eq!(first, second);
    assert_eq!(per_call.allocs, 0, "{per_call:?}");
    assert_eq!(
        per_call.launches,
        run_launches((h, w, c), &spec).unwrap(),
        "{per_call:?}"
    );
    assert_eq!(
        (per_call.htod_copies, per_call.htod_bytes),
        (2, (h * w * c + h * w * m * 4) as u64)
    );
    assert_eq!(
        (per_call.dtoh_copies, per_call.dtoh_bytes, per_call.syncs),
        (1, (h * w + 1) as u64, 1)
    );
    eprintln!("one 21×26 call, 3 iterations: {per_call:?}");
    // The CPU's foreground, and the CPU's labels when the labels are asked for.
    let cpu = dense_crf(img.view(), unary.view(), &params).unwrap();
    let CrfResult::Foreground(fg) = second else {
        panic!("{second:?}")
    };
    assert_eq!(
        Array2::from_shape_vec((h, w), fg).unwrap(),
        cpu.labels.mapv(|l| l == 1)
    );
    let CrfResult::Labels(labels) = dev.run(image, &u, m, &spec, CrfWant::Labels).unwrap() else {
        panic!("labels asked")
    };
    assert_eq!(
        Array2::from_shape_fn((h, w), |(y, x)| labels[y * w + x] as u32),
        cpu.labels
    );
    // Another size: new buffers, then reused again.
    let img2 = test_image(12, 13, 6);
    let u2 = vec![0.5f32; 12 * 13 * m];
    let image2 = CrfImage {
        pixels: img2.as_slice().unwrap(),
        h: 12,
        w: 13,
        channels: 3,
    };
    let a = dev.counters();
    dev.run(image2, &u2, m, &spec, CrfWant::LabelsAndProbs)
        .unwrap();
    assert!(dev.counters().since(&a).allocs > 0);
    let b = dev.counters();
    dev.run(image2, &u2, m, &spec, CrfWant::LabelsAndProbs)
        .unwrap();
    assert_eq!(dev.counters().since(&b).allocs, 0);
}

/// Inputs the device lattice cannot take are errors that say so, never a CPU stand-in.
#[test]
fn device_refusals_are_clear_errors() {
    let dev = device(Schedule::Forward);
    // 7 channels: 9 lattice features, beyond the kernels' 8.
    let img = Array3::from_shape_fn((6, 7, 7), |(y, x, k)| (y * 7 + x + k) as u8);
    let unary = Array3::from_elem((2, 6, 7), 0.5f32);
    let e = dense_crf_on(Some(&dev), img.view(), unary.view(), &CrfParams::default()).unwrap_err();
    assert!(e.to_string().contains("device"), "{e}");
    // The CPU takes it.
    dense_crf(img.view(), unary.view(), &CrfParams::default()).unwrap();
    // Bad shapes are caught before the device.
    let bad = Array3::from_elem((2, 5, 7), 0.5f32);
    assert!(dense_crf_on(Some(&dev), img.view(), bad.view(), &CrfParams::default()).is_err());
    // No GPU here: the cuda device is unavailable (or, in a build without it, absent).
    if std::env::var_os("EXPLAINSEG_REQUIRE_GPU").is_none() {
        if let Err(e) = crf_device_for(Device::Cuda) {
            assert!(e.to_string().contains("CUDA"), "{e}");
        }
    }
    assert!(crf_device_for(Device::Cpu).unwrap().is_none());
}

// ---------------------------------------------------------------------------------
// The pipeline.

/// The CUDA engine hands its device to the pipeline's CRF stage: with the CRF on, the
/// device runs exactly one DenseCRF's launches more (MaskCut: one per object), and the
/// masks are the CPU engine's.
#[test]
fn the_pipeline_crf_stage_runs_on_the_engines_device() {
    use explainseg::backend::engine_for;
    use explainseg::pipeline::{pixels_from_input, segment, PipelineConfig, Variant};
    let (vit, x) = common::engine_case("s16_tiny");
    let x = x.slice(ndarray::s![0..1, .., .., ..]).to_owned();
    let pixels = pixels_from_input(x.view(), [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]);
    let (_, _, h, w) = x.dim();
    let cpu = engine_for(Device::Cpu, &vit).unwrap();
    assert!(cpu.crf_device().is_none());
    let emu = engine_for(Device::CudaEmu, &vit).unwrap();
    let crf = emu
        .crf_device()
        .expect("the CUDA engine offers its CRF device");
    let with_crf = PipelineConfig::default();
    let without = PipelineConfig {
        crf: None,
        ..PipelineConfig::default()
    };
    let launches = |cfg: &PipelineConfig| {
        let before = crf.counters();
        let seg = segment(&*emu, x.view(), pixels.view(), Variant::TokenCut, cfg, None).unwrap();
        (crf.counters().since(&before).launches, seg)
    };
    let (plain, _) = launches(&without);
    let (refined, seg) = launches(&with_crf);
    let p = with_crf.crf.as_ref().unwrap();
    let spec = spec_of(p);
    assert_eq!(refined - plain, run_launches((h, w, 3), &spec).unwrap());
    let want = segment(
        &*cpu,
        x.view(),
        pixels.view(),
        Variant::TokenCut,
        &with_crf,
        None,
    )
    .unwrap();
    assert_eq!(seg.mask_pre_crf, want.mask_pre_crf);
    assert_eq!(seg.mask, want.mask);
    // MaskCut's per-object CRF too: one DenseCRF per object on the device.
    let maskcut = |engine: &dyn explainseg::backend::Engine, cfg: &PipelineConfig| {
        let before = crf.counters();
        let seg = segment(engine, x.view(), pixels.view(), Variant::MaskCut, cfg, None).unwrap();
        (crf.counters().since(&before).launches, seg.mask)
    };
    let (plain, _) = maskcut(&*emu, &without);
    let (refined, got) = maskcut(&*emu, &with_crf);
    let (_, want) = maskcut(&*cpu, &with_crf);
    assert_eq!(got, want);
    let per_crf = run_launches((h, w, 3), &spec).unwrap();
    let crf_launches = refined - plain;
    assert!(
        crf_launches > 0 && crf_launches % per_crf == 0,
        "{crf_launches} launches, {per_crf} per CRF"
    );
}

// ---------------------------------------------------------------------------------
// The CLI.

fn bin() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_explainseg"))
}

#[test]
fn cli_crf_on_cuda_emu_matches_cpu() {
    let dir = tempfile::tempdir().unwrap();
    let run = |device: &str| {
        let out = dir.path().join(format!("{device}.png"));
        let probs = dir.path().join(format!("{device}.npy"));
        let st = bin()
            .args(["crf", "--image"])
            .arg(fixture("small_image.png"))
            .arg("--mask")
            .arg(fixture("small_mask.png"))
            .arg("--out")
            .arg(&out)
            .arg("--probs")
            .arg(&probs)
            .args(["--device", device])
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "{device}: {}",
            String::from_utf8_lossy(&st.stderr)
        );
        (std::fs::read(out).unwrap(), npy_path(&probs))
    };
    let (cpu_png, cpu_q) = run("cpu");
    let (emu_png, emu_q) = run("cuda-emu");
    assert_eq!(cpu_png, emu_png, "refined masks differ");
    let max_dq = cpu_q
        .iter()
        .zip(emu_q.iter())
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    eprintln!("crf CLI small 117×121: identical masks, max |Q_emu − Q_cpu| = {max_dq:e}");
    assert!(max_dq <= 1e-6, "{max_dq:e}");
    // Without a GPU, --device cuda is an error naming CUDA, and writes nothing.
    if std::env::var_os("EXPLAINSEG_REQUIRE_GPU").is_none() {
        let out = dir.path().join("cuda.png");
        let st = bin()
            .args(["crf", "--image"])
            .arg(fixture("small_image.png"))
            .arg("--mask")
            .arg(fixture("small_mask.png"))
            .arg("--out")
            .arg(&out)
            .args(["--device", "cuda"])
            .output()
            .unwrap();
        if !st.status.success() {
            let err = String::from_utf8_lossy(&st.stderr);
            assert!(err.contains("CUDA"), "{err}");
            assert!(!out.exists());
        }
    }
}

fn npy_path(p: &std::path::Path) -> ArrayD<f32> {
    ArrayD::<f32>::read_npy(std::fs::File::open(p).unwrap()).unwrap()
}
