//! The C ABI, called through its Rust `extern "C"` items: every status path, and
//! results equal to the Rust API's on the same inputs.

mod common;

use std::ffi::{c_void, CStr, CString};
use std::mem::MaybeUninit;
use std::ptr::{null, null_mut};
use std::sync::atomic::{AtomicU32, Ordering};

use explainseg::attr::{explain, normalize, reduce_channels};
use explainseg::backend::cpu::CpuEngine;
use explainseg::backend::Engine;
use explainseg::capi::*;
use explainseg::image::{decode_image_file, preprocess_with_plan, resize_and_crop};
use explainseg::model::{LoadOptions, Vit};
use explainseg::pipeline::segment;
use explainseg::render::{read_mask, to_original};
use ndarray::{Array2, Array3, Axis, Ix2};

fn weights() -> CString {
    path_c(&common::fixture(
        "engine",
        "s16_tiny/model_timm.safetensors",
    ))
}

fn image_path() -> std::path::PathBuf {
    common::fixture("preprocess", "jpeg420_q85.jpg")
}

fn path_c(p: &std::path::Path) -> CString {
    CString::new(p.to_str().unwrap()).unwrap()
}

fn last_error() -> String {
    // SAFETY: the library returns a valid NUL-terminated string, never NULL.
    unsafe { CStr::from_ptr(explainseg_last_error()) }
        .to_string_lossy()
        .into_owned()
}

/// Asserts a status, printing the library's message when it differs.
#[track_caller]
fn check(status: EsStatus, expected: EsStatus) {
    assert_eq!(status, expected, "last error: {}", last_error());
}

fn load_model() -> *mut EsModel {
    let mut m = null_mut();
    // SAFETY: valid strings and out pointer.
    check(
        unsafe { explainseg_model_load(weights().as_ptr(), null(), null(), &mut m) },
        EsStatus::Ok,
    );
    m
}

fn load_image() -> *mut EsImage {
    let mut img = null_mut();
    // SAFETY: valid string and out pointer.
    check(
        unsafe { explainseg_image_load(path_c(&image_path()).as_ptr(), &mut img) },
        EsStatus::Ok,
    );
    img
}

/// Small, quick settings for the tiny fixture model: 64² input, 4 steps × 2 samples.
fn quick_params(variant: EsVariant) -> EsSegmentParams {
    EsSegmentParams {
        variant,
        image_size: 64,
        ig_steps: 4,
        ig_batch: 3,
        nt_samples: 2,
        ncut_grid: 16,
        ..explainseg_segment_default_params()
    }
}

fn rust_vit() -> Vit {
    Vit::load(
        &common::fixture("engine", "s16_tiny/model_timm.safetensors"),
        None,
        &LoadOptions::default(),
    )
    .unwrap()
}

/// Everything an `EsResult` holds, read through the getters.
#[derive(PartialEq)]
struct Outputs {
    size: (u32, u32),
    class: u32,
    mask: Option<Vec<u8>>,
    relevance: Option<Vec<f32>>,
    logits: Vec<f32>,
}

/// A summary: the full maps would flood the failure message.
impl std::fmt::Debug for Outputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let fg = self
            .mask
            .as_ref()
            .map(|m| m.iter().filter(|&&v| v != 0).count());
        let rel_sum = self
            .relevance
            .as_ref()
            .map(|r| r.iter().map(|&v| v as f64).sum::<f64>());
        write!(
            f,
            "Outputs {{ size: {:?}, class: {}, foreground: {fg:?}, relevance sum: {rel_sum:?}, logits: {:?} }}",
            self.size, self.class, self.logits
        )
    }
}

fn read_result(r: *const EsResult) -> Outputs {
    let (mut w, mut h, mut class) = (0u32, 0u32, 0u32);
    // SAFETY: `r` is a live result; every buffer has the length passed with it.
    unsafe {
        check(explainseg_result_size(r, &mut w, &mut h), EsStatus::Ok);
        check(explainseg_result_class(r, &mut class), EsStatus::Ok);
        let n = (w * h) as usize;
        let mut mask = vec![0u8; n];
        let mask = match explainseg_result_mask(r, mask.as_mut_ptr(), n, null_mut()) {
            EsStatus::Ok => Some(mask),
            s => {
                check(s, EsStatus::NotAvailable);
                None
            }
        };
        let mut rel = vec![0f32; n];
        let relevance = match explainseg_result_relevance(r, rel.as_mut_ptr(), n, null_mut()) {
            EsStatus::Ok => Some(rel),
            s => {
                check(s, EsStatus::NotAvailable);
                None
            }
        };
        let mut needed = 0;
        check(
            explainseg_result_logits(r, null_mut(), 0, &mut needed),
            EsStatus::BufferTooSmall,
        );
        let mut logits = vec![0f32; needed];
        check(
            explainseg_result_logits(r, logits.as_mut_ptr(), needed, null_mut()),
            EsStatus::Ok,
        );
        Outputs {
            size: (w, h),
            class,
            mask,
            relevance,
            logits,
        }
    }
}

fn run_segment(
    model: *const EsModel,
    image: *const EsImage,
    params: &EsSegmentParams,
    callbacks: Option<&EsCallbacks>,
) -> (EsStatus, Option<Outputs>) {
    let mut r = null_mut();
    let cb = callbacks.map_or(null(), |c| c as *const EsCallbacks);
    // SAFETY: live handles, valid params and callbacks.
    let status = unsafe { explainseg_segment(model, image, params, cb, &mut r) };
    let out = (status == EsStatus::Ok).then(|| read_result(r));
    // SAFETY: `r` is NULL or a live result.
    unsafe { explainseg_result_free(r) };
    (status, out)
}

/// The same segmentation through the Rust API (as `explainseg segment` does it).
fn rust_segment(vit: &Vit, params: &EsSegmentParams) -> Outputs {
    let decoded = decode_image_file(&image_path()).unwrap();
    let pre = params.preprocess_config(vit.normalization).unwrap();
    let (x, plan) = preprocess_with_plan(&decoded, &pre).unwrap();
    let (seen, _) = resize_and_crop(&decoded, &pre.resize, pre.filter).unwrap();
    let pixels = Array3::from_shape_vec(
        (seen.height as usize, seen.width as usize, 3),
        seen.to_rgb8(),
    )
    .unwrap();
    // DenseCRF kernels are sized in the image's own pixels.
    let cfg = params
        .pipeline_config(vit.config.patch)
        .unwrap()
        .for_image(&plan);
    let seg = segment(
        &CpuEngine::new(vit),
        x.view(),
        pixels.view(),
        params.variant.variant(),
        &cfg,
        None,
    )
    .unwrap();
    Outputs {
        size: (decoded.width, decoded.height),
        class: seg.predicted as u32,
        mask: Some(
            to_original(seg.mask.view(), &plan, false)
                .unwrap()
                .iter()
                .map(|&m| m as u8)
                .collect(),
        ),
        relevance: seg.relevance.map(|r| {
            to_original(r.view(), &plan, 0.0)
                .unwrap()
                .iter()
                .copied()
                .collect()
        }),
        logits: seg.logits.to_vec(),
    }
}

#[test]
fn version_matches_cargo() {
    // SAFETY: static NUL-terminated string.
    let v = unsafe { CStr::from_ptr(explainseg_version()) };
    assert_eq!(v.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
    assert_eq!(
        format!(
            "{}.{}.{}",
            explainseg_version_major(),
            explainseg_version_minor(),
            explainseg_version_patch()
        ),
        env!("CARGO_PKG_VERSION")
    );
}

#[test]
fn every_status_has_text() {
    for code in 0..=15 {
        // SAFETY: static NUL-terminated strings.
        let text = unsafe { CStr::from_ptr(explainseg_status_str(code)) };
        assert_ne!(text.to_str().unwrap(), "unknown status", "code {code}");
    }
    // SAFETY: as above.
    let unknown = unsafe { CStr::from_ptr(explainseg_status_str(999)) };
    assert_eq!(unknown.to_str().unwrap(), "unknown status");
    assert_eq!(EsStatus::Panic as i32, 15);
    assert_eq!(EsStatus::BufferTooSmall as i32, 3);
}

#[test]
fn frees_accept_null() {
    // SAFETY: NULL is documented as a no-op.
    unsafe {
        explainseg_model_free(null_mut());
        explainseg_image_free(null_mut());
        explainseg_result_free(null_mut());
    }
}

#[test]
fn model_load_statuses() {
    let mut m = null_mut();
    // SAFETY: every pointer is NULL or valid.
    unsafe {
        check(
            explainseg_model_load(null(), null(), null(), &mut m),
            EsStatus::NullArgument,
        );
        assert!(last_error().contains("weights"), "{}", last_error());
        check(
            explainseg_model_load(weights().as_ptr(), null(), null(), null_mut()),
            EsStatus::NullArgument,
        );
        let missing = CString::new("/nonexistent/model.safetensors").unwrap();
        check(
            explainseg_model_load(missing.as_ptr(), null(), null(), &mut m),
            EsStatus::Io,
        );
        assert!(last_error().contains("/nonexistent/model.safetensors"));
        let not_weights = path_c(&image_path());
        check(
            explainseg_model_load(not_weights.as_ptr(), null(), null(), &mut m),
            EsStatus::Format,
        );
        assert!(m.is_null(), "no handle on failure");

        let cuda = EsModelParams {
            device: EsDevice::Cuda,
            ..explainseg_model_default_params()
        };
        check(
            explainseg_model_load(weights().as_ptr(), null(), &cuda, &mut m),
            EsStatus::CudaUnavailable,
        );
        assert!(last_error().contains("CUDA"), "{}", last_error());

        // The emulated device needs its feature; without it, the same clear refusal.
        if !cfg!(feature = "cuda-emu") {
            let emu = EsModelParams {
                device: EsDevice::CudaEmu,
                ..explainseg_model_default_params()
            };
            check(
                explainseg_model_load(weights().as_ptr(), null(), &emu, &mut m),
                EsStatus::CudaUnavailable,
            );
            assert!(last_error().contains("cuda-emu"), "{}", last_error());
        }

        let negative_eps = EsModelParams {
            layer_norm_eps: -1.0,
            ..explainseg_model_default_params()
        };
        check(
            explainseg_model_load(weights().as_ptr(), null(), &negative_eps, &mut m),
            EsStatus::InvalidParam,
        );
        assert!(last_error().contains("layer_norm_eps"), "{}", last_error());

        // An enum field holding a value C allows but Rust does not.
        let mut bad = MaybeUninit::new(explainseg_model_default_params());
        std::ptr::addr_of_mut!((*bad.as_mut_ptr()).pos_embed)
            .cast::<u32>()
            .write(7);
        check(
            explainseg_model_load(weights().as_ptr(), null(), bad.as_ptr(), &mut m),
            EsStatus::InvalidParam,
        );
        assert!(last_error().contains("pos_embed"), "{}", last_error());

        // TF32 and bf16 are GEMM modes of the CUDA engine: the CPU refuses them at
        // load instead of computing in f32 behind the caller's back.
        for precision in [EsPrecision::Tf32, EsPrecision::Bf16] {
            let p = EsModelParams {
                precision,
                ..explainseg_model_default_params()
            };
            check(
                explainseg_model_load(weights().as_ptr(), null(), &p, &mut m),
                EsStatus::InvalidParam,
            );
            assert!(last_error().contains("precision"), "{}", last_error());
        }
        assert_eq!(
            explainseg_model_default_params().precision,
            EsPrecision::F32
        );
        let mut bad = MaybeUninit::new(explainseg_model_default_params());
        std::ptr::addr_of_mut!((*bad.as_mut_ptr()).precision)
            .cast::<u32>()
            .write(3);
        check(
            explainseg_model_load(weights().as_ptr(), null(), bad.as_ptr(), &mut m),
            EsStatus::InvalidParam,
        );
        assert!(last_error().contains("precision"), "{}", last_error());

        let m = load_model();
        let mut classes = 0;
        check(explainseg_model_num_classes(m, &mut classes), EsStatus::Ok);
        assert_eq!(classes, 3);
        check(
            explainseg_model_num_classes(null(), &mut classes),
            EsStatus::NullArgument,
        );
        explainseg_model_free(m);
    }
}

#[test]
fn backbone_and_head_files() {
    // The DINO fixture keeps its head in a separate file.
    let backbone = path_c(&common::fixture(
        "engine",
        "s16_tiny/model_dino.safetensors",
    ));
    let head = path_c(&common::fixture("engine", "s16_tiny/head_dino.safetensors"));
    let (mut m, mut classes) = (null_mut(), 0);
    // SAFETY: valid strings and out pointers.
    unsafe {
        check(
            explainseg_model_load(backbone.as_ptr(), head.as_ptr(), null(), &mut m),
            EsStatus::Ok,
        );
        check(explainseg_model_num_classes(m, &mut classes), EsStatus::Ok);
        explainseg_model_free(m);
    }
    assert_eq!(classes, 3);
}

#[test]
fn image_statuses_and_layouts() {
    let mut img = null_mut();
    // SAFETY: every pointer is NULL or valid; buffers are as long as stated.
    unsafe {
        let missing = CString::new("/nonexistent.png").unwrap();
        check(
            explainseg_image_load(missing.as_ptr(), &mut img),
            EsStatus::Io,
        );
        let not_image = weights();
        check(
            explainseg_image_load(not_image.as_ptr(), &mut img),
            EsStatus::Decode,
        );
        check(
            explainseg_image_load(null(), &mut img),
            EsStatus::NullArgument,
        );

        let px = [0u8; 2 * 3 * 4];
        check(
            explainseg_image_from_pixels(px.as_ptr(), 3, 2, 2, 0, &mut img),
            EsStatus::InvalidParam,
        );
        assert!(last_error().contains("channels"));
        check(
            explainseg_image_from_pixels(px.as_ptr(), 3, 2, 3, 5, &mut img),
            EsStatus::InvalidParam,
        );
        assert!(last_error().contains("row_stride"));
        check(
            explainseg_image_from_pixels(null(), 3, 2, 3, 0, &mut img),
            EsStatus::NullArgument,
        );
        check(
            explainseg_image_from_pixels(px.as_ptr(), 0, 2, 3, 0, &mut img),
            EsStatus::InvalidParam,
        );
    }

    // Gray, RGB, RGBA and padded rows of the same picture classify identically.
    let decoded = decode_image_file(&image_path()).unwrap();
    let (w, h) = (decoded.width, decoded.height);
    let rgb = decoded.to_rgb8();
    let gray_values: Vec<u8> = rgb.chunks(3).map(|p| p[1]).collect();
    let gray_as_rgb: Vec<u8> = gray_values.iter().flat_map(|&g| [g, g, g]).collect();
    let rgba: Vec<u8> = rgb.chunks(3).flat_map(|p| [p[0], p[1], p[2], 9]).collect();
    let stride = w as usize * 3 + 5;
    let mut padded = vec![77u8; stride * h as usize];
    for y in 0..h as usize {
        padded[y * stride..y * stride + w as usize * 3]
            .copy_from_slice(&rgb[y * w as usize * 3..(y + 1) * w as usize * 3]);
    }
    let m = load_model();
    let params = quick_params(EsVariant::Xncut);
    let logits_of = |data: &[u8], channels: u32, stride: usize| {
        let mut img = null_mut();
        let mut logits = [0f32; 3];
        // SAFETY: `data` holds the rows described by (w, h, channels, stride).
        unsafe {
            check(
                explainseg_image_from_pixels(data.as_ptr(), w, h, channels, stride, &mut img),
                EsStatus::Ok,
            );
            let (mut iw, mut ih) = (0, 0);
            check(explainseg_image_size(img, &mut iw, &mut ih), EsStatus::Ok);
            assert_eq!((iw, ih), (w, h));
            check(
                explainseg_classify(
                    m,
                    img,
                    &params,
                    logits.as_mut_ptr(),
                    null_mut(),
                    3,
                    null_mut(),
                    null_mut(),
                ),
                EsStatus::Ok,
            );
            explainseg_image_free(img);
        }
        logits
    };
    assert_eq!(logits_of(&rgb, 3, 0), logits_of(&rgba, 4, 0));
    assert_eq!(logits_of(&rgb, 3, 0), logits_of(&padded, 3, stride));
    assert_eq!(logits_of(&gray_values, 1, 0), logits_of(&gray_as_rgb, 3, 0));
    // From a file and from the same pixels: the same image.
    let file = load_image();
    let mut from_file = [0f32; 3];
    // SAFETY: live handles, buffer of 3.
    unsafe {
        check(
            explainseg_classify(
                m,
                file,
                &params,
                from_file.as_mut_ptr(),
                null_mut(),
                3,
                null_mut(),
                null_mut(),
            ),
            EsStatus::Ok,
        );
        explainseg_image_free(file);
    }
    assert_eq!(from_file, logits_of(&rgb, 3, 0));
    // SAFETY: live, freed once, after its last use.
    unsafe { explainseg_model_free(m) };
}

#[test]
fn classify_equals_rust_and_reports_buffer_size() {
    let (m, img) = (load_model(), load_image());
    let params = quick_params(EsVariant::Xncut);
    let (mut logits, mut probs) = ([0f32; 3], [0f32; 3]);
    let (mut n, mut class) = (0usize, 0u32);
    // SAFETY: live handles; buffers of the stated lengths.
    unsafe {
        check(
            explainseg_classify(
                m,
                img,
                &params,
                logits.as_mut_ptr(),
                probs.as_mut_ptr(),
                3,
                &mut n,
                &mut class,
            ),
            EsStatus::Ok,
        );
        let mut short = [0f32; 2];
        let mut needed = 0usize;
        check(
            explainseg_classify(
                m,
                img,
                &params,
                short.as_mut_ptr(),
                null_mut(),
                2,
                &mut needed,
                null_mut(),
            ),
            EsStatus::BufferTooSmall,
        );
        assert_eq!(needed, 3);
        assert!(last_error().contains("3 are needed"), "{}", last_error());
        check(
            explainseg_classify(
                null(),
                img,
                &params,
                logits.as_mut_ptr(),
                null_mut(),
                3,
                null_mut(),
                null_mut(),
            ),
            EsStatus::NullArgument,
        );
        let zero = EsSegmentParams {
            image_size: 0,
            ..params
        };
        check(
            explainseg_classify(
                m,
                img,
                &zero,
                logits.as_mut_ptr(),
                null_mut(),
                3,
                null_mut(),
                null_mut(),
            ),
            EsStatus::InvalidParam,
        );
        explainseg_image_free(img);
        explainseg_model_free(m);
    }
    let vit = rust_vit();
    let pre = params.preprocess_config(vit.normalization).unwrap();
    let (x, _) = preprocess_with_plan(&decode_image_file(&image_path()).unwrap(), &pre).unwrap();
    let expected = CpuEngine::new(&vit).logits(x.view()).unwrap();
    assert_eq!(n, 3);
    assert_eq!(logits.to_vec(), expected.index_axis(Axis(0), 0).to_vec());
    assert_eq!(class as usize, explainseg::attr::argmax(&logits));
    assert!((probs.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    let top = probs.iter().cloned().fold(f32::MIN, f32::max);
    assert_eq!(probs[class as usize], top);
}

#[test]
fn presets_through_the_c_abi() {
    let mut p = MaybeUninit::<EsSegmentParams>::uninit();
    // SAFETY: a writable out pointer.
    check(
        unsafe { explainseg_segment_preset_params(EsPreset::Paper as u32, p.as_mut_ptr()) },
        EsStatus::Ok,
    );
    // SAFETY: written above.
    assert_eq!(
        unsafe { p.assume_init() },
        explainseg_segment_default_params()
    );
    // SAFETY: as above.
    check(
        unsafe { explainseg_segment_preset_params(EsPreset::Stable as u32, p.as_mut_ptr()) },
        EsStatus::Ok,
    );
    // SAFETY: written above.
    let stable = unsafe { p.assume_init() };
    assert_eq!(
        (stable.ig_steps, stable.nt_samples, stable.preset),
        (1, 200, EsPreset::Stable)
    );
    // SAFETY: as above; NULL is refused.
    check(
        unsafe { explainseg_segment_preset_params(2, p.as_mut_ptr()) },
        EsStatus::InvalidParam,
    );
    assert!(last_error().contains("preset"), "{}", last_error());
    check(
        // SAFETY: NULL is a documented error.
        unsafe { explainseg_segment_preset_params(1, null_mut()) },
        EsStatus::NullArgument,
    );
    // The preset's noise design and NCut rule reach the pipeline, and the C ABI's
    // stable segmentation equals the Rust API's.
    let patch = rust_vit().config.patch;
    let cfg = stable.pipeline_config(patch).unwrap();
    let want = explainseg::pipeline::Preset::Stable.pipeline_config(0, patch);
    assert_eq!(cfg.explain.noise_tunnel, want.explain.noise_tunnel);
    assert_eq!(cfg.explain.ig.method, want.explain.ig.method);
    assert_eq!(cfg.explain.ig.n_steps, want.explain.ig.n_steps);
    assert_eq!(cfg.ncut_foreground, want.ncut_foreground);
    assert_eq!(cfg.ncut_smooth_sigma, want.ncut_smooth_sigma);
    assert_eq!(cfg.smooth_sigma, want.smooth_sigma);
    assert_eq!(cfg.morphology.equalize, want.morphology.equalize);
    let (m, img) = (load_model(), load_image());
    let params = EsSegmentParams {
        preset: EsPreset::Stable,
        ..quick_params(EsVariant::Xncut)
    };
    let (status, got) = run_segment(m, img, &params, None);
    check(status, EsStatus::Ok);
    assert!(got.unwrap() == rust_segment(&rust_vit(), &params));
    // SAFETY: live handles.
    unsafe {
        explainseg_image_free(img);
        explainseg_model_free(m);
    }
}

#[test]
fn every_variant_equals_the_rust_pipeline() {
    let (m, img) = (load_model(), load_image());
    let vit = rust_vit();
    for variant in [
        EsVariant::A,
        EsVariant::B,
        EsVariant::C,
        EsVariant::Xncut,
        EsVariant::Tokencut,
        EsVariant::Maskcut,
    ] {
        let params = quick_params(variant);
        let (status, out) = run_segment(m, img, &params, None);
        check(status, EsStatus::Ok);
        let out = out.unwrap();
        assert_eq!(out.size, (61, 47), "mask at the image's own size");
        let expected = rust_segment(&vit, &params);
        assert_eq!(out, expected, "variant {variant:?}");
        let has_relevance = !matches!(variant, EsVariant::Tokencut | EsVariant::Maskcut);
        assert_eq!(out.relevance.is_some(), has_relevance, "{variant:?}");
    }
    // SAFETY: live handles, freed once.
    unsafe {
        explainseg_image_free(img);
        explainseg_model_free(m);
    }
}

#[test]
fn attribute_equals_the_rust_explanation() {
    let (m, img) = (load_model(), load_image());
    let params = quick_params(EsVariant::Xncut);
    let mut r = null_mut();
    // SAFETY: live handles, valid params, writable out.
    let out = unsafe {
        check(
            explainseg_attribute(m, img, &params, null(), &mut r),
            EsStatus::Ok,
        );
        let out = read_result(r);
        let mut buf = [0u8; 4];
        check(
            explainseg_result_mask(r, buf.as_mut_ptr(), 4, null_mut()),
            EsStatus::NotAvailable,
        );
        let png = std::env::temp_dir().join(format!("capi_attr_{}.png", std::process::id()));
        check(
            explainseg_result_save_mask_png(r, path_c(&png).as_ptr()),
            EsStatus::NotAvailable,
        );
        explainseg_result_free(r);
        explainseg_image_free(img);
        explainseg_model_free(m);
        out
    };
    let vit = rust_vit();
    let decoded = decode_image_file(&image_path()).unwrap();
    let (x, plan) = preprocess_with_plan(
        &decoded,
        &params.preprocess_config(vit.normalization).unwrap(),
    )
    .unwrap();
    let cfg = params.pipeline_config(vit.config.patch).unwrap();
    let e = explain(&CpuEngine::new(&vit), x.view(), &cfg.explain, None).unwrap();
    let rel = normalize(
        &reduce_channels(e.attribution.index_axis(Axis(0), 0), cfg.reduction),
        cfg.normalizer,
    )
    .unwrap();
    let rel = to_original(rel.view(), &plan, 0.0).unwrap();
    assert_eq!(out.mask, None);
    assert_eq!(
        out.relevance.unwrap(),
        rel.iter().copied().collect::<Vec<_>>()
    );
    assert_eq!(out.logits, e.logits.to_vec());
    assert_eq!(out.class as usize, e.predicted);
}

#[test]
fn segment_statuses() {
    let (m, img) = (load_model(), load_image());
    let good = quick_params(EsVariant::C);
    let mut r = null_mut();
    // SAFETY: every pointer is NULL or valid.
    unsafe {
        check(
            explainseg_segment(null(), img, &good, null(), &mut r),
            EsStatus::NullArgument,
        );
        check(
            explainseg_segment(m, null(), &good, null(), &mut r),
            EsStatus::NullArgument,
        );
        check(
            explainseg_segment(m, img, &good, null(), null_mut()),
            EsStatus::NullArgument,
        );
        for (bad, field) in [
            (
                EsSegmentParams {
                    ig_steps: 0,
                    ..good
                },
                "n_steps",
            ),
            (
                EsSegmentParams {
                    ig_batch: 0,
                    ..good
                },
                "batch_size",
            ),
            (
                EsSegmentParams {
                    image_size: 0,
                    ..good
                },
                "image_size",
            ),
            (
                EsSegmentParams {
                    nt_stdev: f32::NAN,
                    ..good
                },
                "nt_stdev",
            ),
            (EsSegmentParams { target: -2, ..good }, "target"),
            (EsSegmentParams { target: 3, ..good }, "target"),
            (
                EsSegmentParams {
                    ncut_sigma_r: 0.0,
                    variant: EsVariant::Xncut,
                    ..good
                },
                "sigma_r",
            ),
            (
                EsSegmentParams {
                    ncut_sigma_r_std: f32::NAN,
                    ..good
                },
                "sigma_r_per_std",
            ),
        ] {
            let status = explainseg_segment(m, img, &bad, null(), &mut r);
            check(status, EsStatus::InvalidParam);
            assert!(last_error().contains(field), "{field}: {}", last_error());
            assert!(r.is_null());
        }
        // Enum and bool fields holding values outside their range.
        for (offset_of, value, field) in [
            (
                std::mem::offset_of!(EsSegmentParams, variant),
                6u32,
                "variant",
            ),
            (std::mem::offset_of!(EsSegmentParams, nt_type), 3, "nt_type"),
            (
                std::mem::offset_of!(EsSegmentParams, ig_method),
                99,
                "ig_method",
            ),
            (std::mem::offset_of!(EsSegmentParams, resize), 3, "resize"),
            (
                std::mem::offset_of!(EsSegmentParams, baseline),
                3,
                "baseline",
            ),
            (std::mem::offset_of!(EsSegmentParams, preset), 2, "preset"),
        ] {
            let mut raw = MaybeUninit::new(good);
            raw.as_mut_ptr()
                .cast::<u8>()
                .add(offset_of)
                .cast::<u32>()
                .write(value);
            check(
                explainseg_segment(m, img, raw.as_ptr(), null(), &mut r),
                EsStatus::InvalidParam,
            );
            assert!(last_error().contains(field), "{}", last_error());
        }
        let mut raw = MaybeUninit::new(good);
        std::ptr::addr_of_mut!((*raw.as_mut_ptr()).crf_enabled)
            .cast::<u8>()
            .write(2);
        check(
            explainseg_segment(m, img, raw.as_ptr(), null(), &mut r),
            EsStatus::InvalidParam,
        );
        assert!(last_error().contains("crf_enabled"));

        // A too-small mask buffer reports the needed length and writes nothing.
        check(
            explainseg_segment(m, img, &good, null(), &mut r),
            EsStatus::Ok,
        );
        let mut small = vec![7u8; 100];
        let mut needed = 0;
        check(
            explainseg_result_mask(r, small.as_mut_ptr(), small.len(), &mut needed),
            EsStatus::BufferTooSmall,
        );
        assert_eq!(needed, 61 * 47);
        assert!(small.iter().all(|&v| v == 7));
        let mut rel = vec![0f32; 10];
        check(
            explainseg_result_relevance(r, rel.as_mut_ptr(), rel.len(), &mut needed),
            EsStatus::BufferTooSmall,
        );
        assert_eq!(needed, 61 * 47);
        check(
            explainseg_result_mask(null(), small.as_mut_ptr(), 100, &mut needed),
            EsStatus::NullArgument,
        );
        // Scores are the softmax of the logits.
        let (mut logits, mut scores) = ([0f32; 3], [0f32; 3]);
        check(
            explainseg_result_logits(r, logits.as_mut_ptr(), 3, null_mut()),
            EsStatus::Ok,
        );
        check(
            explainseg_result_scores(r, scores.as_mut_ptr(), 3, null_mut()),
            EsStatus::Ok,
        );
        let z: f32 = logits.iter().map(|l| l.exp()).sum();
        for (s, l) in scores.iter().zip(logits) {
            assert!((s - l.exp() / z).abs() < 1e-6);
        }
        let mut seconds = -1.0;
        check(explainseg_result_seconds(r, &mut seconds), EsStatus::Ok);
        assert!(seconds >= 0.0);

        // The PNG holds the mask at the image's size.
        let out = read_result(r);
        let png = std::env::temp_dir().join(format!("capi_mask_{}.png", std::process::id()));
        check(
            explainseg_result_save_mask_png(r, path_c(&png).as_ptr()),
            EsStatus::Ok,
        );
        let back = read_mask(&png).unwrap();
        std::fs::remove_file(&png).ok();
        assert_eq!(back.dim(), (47, 61));
        assert_eq!(
            back.iter().map(|&m| m as u8).collect::<Vec<_>>(),
            out.mask.unwrap()
        );
        let unwritable = CString::new("/nonexistent/dir/mask.png").unwrap();
        check(
            explainseg_result_save_mask_png(r, unwritable.as_ptr()),
            EsStatus::Io,
        );
        explainseg_result_free(r);
        explainseg_image_free(img);
        explainseg_model_free(m);
    }
}

struct Counter {
    calls: AtomicU32,
    last_done: AtomicU32,
    last_total: AtomicU32,
    /// Abort once this many progress calls have been seen (u32::MAX: never).
    abort_after: u32,
}

unsafe extern "C" fn on_progress(done: u32, total: u32, user_data: *mut c_void) {
    // SAFETY: the tests pass a live Counter as user_data.
    let c = unsafe { &*(user_data as *const Counter) };
    assert!(done > c.last_done.load(Ordering::SeqCst) || done == 0);
    c.calls.fetch_add(1, Ordering::SeqCst);
    c.last_done.store(done, Ordering::SeqCst);
    c.last_total.store(total, Ordering::SeqCst);
}

unsafe extern "C" fn should_abort(user_data: *mut c_void) -> bool {
    // SAFETY: the tests pass a live Counter as user_data.
    let c = unsafe { &*(user_data as *const Counter) };
    c.calls.load(Ordering::SeqCst) >= c.abort_after
}

fn counter(abort_after: u32) -> Counter {
    Counter {
        calls: AtomicU32::new(0),
        last_done: AtomicU32::new(0),
        last_total: AtomicU32::new(0),
        abort_after,
    }
}

#[test]
fn progress_and_abort_callbacks() {
    let (m, img) = (load_model(), load_image());
    let params = quick_params(EsVariant::C); // 4 steps × 2 samples = 8 passes, batches of 3
    let c = counter(u32::MAX);
    let cb = EsCallbacks {
        progress: Some(on_progress),
        abort: Some(should_abort),
        user_data: &c as *const Counter as *mut c_void,
    };
    let (status, with_cb) = run_segment(m, img, &params, Some(&cb));
    check(status, EsStatus::Ok);
    assert_eq!(c.calls.load(Ordering::SeqCst), 3, "ceil(8 / 3) batches");
    assert_eq!(c.last_done.load(Ordering::SeqCst), 8);
    assert_eq!(c.last_total.load(Ordering::SeqCst), 8);
    // Callbacks do not change the result.
    assert_eq!(with_cb, run_segment(m, img, &params, None).1);

    // Abort after the first batch.
    let c = counter(1);
    let cb = EsCallbacks {
        user_data: &c as *const Counter as *mut c_void,
        ..cb
    };
    let (status, out) = run_segment(m, img, &params, Some(&cb));
    check(status, EsStatus::Aborted);
    assert!(out.is_none());
    assert_eq!(c.calls.load(Ordering::SeqCst), 1);
    assert!(last_error().contains("aborted"), "{}", last_error());

    // Abort before the start, also for variants without IG, and for attribution.
    let c = counter(0);
    let cb = EsCallbacks {
        user_data: &c as *const Counter as *mut c_void,
        ..cb
    };
    check(
        run_segment(m, img, &quick_params(EsVariant::Tokencut), Some(&cb)).0,
        EsStatus::Aborted,
    );
    let mut r = null_mut();
    // SAFETY: live handles, valid params and callbacks.
    unsafe {
        check(
            explainseg_attribute(m, img, &params, &cb, &mut r),
            EsStatus::Aborted,
        );
        explainseg_image_free(img);
        explainseg_model_free(m);
    }
}

#[test]
fn one_model_many_threads() {
    let (m, img) = (load_model(), load_image());
    let params = quick_params(EsVariant::A);
    // For the shared pool (threads = 0) and for a private single worker each.
    for threads in [0, 1] {
        let params = EsSegmentParams { threads, ..params };
        let single = run_segment(m, img, &params, None).1.unwrap();
        // Handles are plain addresses; the header promises they may be shared.
        let (m_addr, img_addr) = (m as usize, img as usize);
        let outs: Vec<Outputs> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(move || {
                        let (status, out) = run_segment(
                            m_addr as *const EsModel,
                            img_addr as *const EsImage,
                            &params,
                            None,
                        );
                        check(status, EsStatus::Ok);
                        out.unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for out in &outs {
            assert_eq!(out, &single, "threads = {threads}");
        }
    }
    // SAFETY: live handles, freed once after every thread finished.
    unsafe {
        explainseg_image_free(img);
        explainseg_model_free(m);
    }
}

#[test]
fn crf_equals_refine_mask() {
    let img = load_image();
    let decoded = decode_image_file(&image_path()).unwrap();
    let (w, h) = (decoded.width as usize, decoded.height as usize);
    let coarse = Array2::from_shape_fn((h, w), |(i, j)| {
        (10..35).contains(&i) && (15..45).contains(&j)
    });
    let mask: Vec<u8> = coarse.iter().map(|&m| m as u8 * 255).collect();
    let mut out = vec![0u8; w * h];
    let params = EsCrfParams {
        iterations: 5,
        ..explainseg_crf_default_params()
    };
    let mut needed = 0;
    // SAFETY: live image; buffers of the stated lengths.
    unsafe {
        check(
            explainseg_crf(
                img,
                mask.as_ptr(),
                mask.len(),
                &params,
                out.as_mut_ptr(),
                out.len(),
                &mut needed,
            ),
            EsStatus::Ok,
        );
        assert_eq!(needed, w * h);
        check(
            explainseg_crf(
                img,
                mask.as_ptr(),
                mask.len() - 1,
                &params,
                out.as_mut_ptr(),
                out.len(),
                null_mut(),
            ),
            EsStatus::Shape,
        );
        let mut small = vec![0u8; 10];
        check(
            explainseg_crf(
                img,
                mask.as_ptr(),
                mask.len(),
                &params,
                small.as_mut_ptr(),
                10,
                &mut needed,
            ),
            EsStatus::BufferTooSmall,
        );
        assert_eq!(needed, w * h);
        check(
            explainseg_crf(
                null(),
                mask.as_ptr(),
                mask.len(),
                &params,
                out.as_mut_ptr(),
                out.len(),
                null_mut(),
            ),
            EsStatus::NullArgument,
        );
        check(
            explainseg_crf(
                img,
                null(),
                mask.len(),
                &params,
                out.as_mut_ptr(),
                out.len(),
                null_mut(),
            ),
            EsStatus::NullArgument,
        );
        explainseg_image_free(img);
    }
    let pixels = Array3::from_shape_vec((h, w, 3), decoded.to_rgb8()).unwrap();
    let expected =
        explainseg::post::crf::refine_mask(pixels.view(), coarse.view(), &params.crf_params())
            .unwrap();
    assert_eq!(out, expected.iter().map(|&m| m as u8).collect::<Vec<_>>());
}

#[test]
fn ncut_equals_the_tokencut_reference() {
    // tests/fixtures/ncut: a 14×14 grid of 384-d features and scipy's mask.
    let f = common::npy_f32(&common::fixture("ncut", "features_s14.npy"))
        .into_dimensionality::<Ix2>()
        .unwrap();
    let (n, d) = f.dim();
    let expected_mask: Array2<u8> = ndarray_npy::ReadNpyExt::read_npy(
        std::fs::File::open(common::fixture("ncut", "mask_s14.npy")).unwrap(),
    )
    .unwrap();
    let features = f.as_standard_layout().to_owned();
    let (mut mask, mut eigvec, mut needed) = (vec![0u8; n], vec![0f64; n], 0usize);
    // SAFETY: buffers of the stated lengths.
    unsafe {
        check(
            explainseg_ncut(
                features.as_ptr(),
                14,
                14,
                d as u32,
                null(),
                mask.as_mut_ptr(),
                n,
                eigvec.as_mut_ptr(),
                n,
                &mut needed,
            ),
            EsStatus::Ok,
        );
        assert_eq!(needed, n);
        let mut small = vec![0u8; n - 1];
        check(
            explainseg_ncut(
                features.as_ptr(),
                14,
                14,
                d as u32,
                null(),
                small.as_mut_ptr(),
                n - 1,
                null_mut(),
                0,
                &mut needed,
            ),
            EsStatus::BufferTooSmall,
        );
        assert_eq!(needed, n);
        check(
            explainseg_ncut(
                features.as_ptr(),
                14,
                14,
                0,
                null(),
                mask.as_mut_ptr(),
                n,
                null_mut(),
                0,
                null_mut(),
            ),
            EsStatus::InvalidParam,
        );
        check(
            explainseg_ncut(
                null(),
                14,
                14,
                d as u32,
                null(),
                mask.as_mut_ptr(),
                n,
                null_mut(),
                0,
                null_mut(),
            ),
            EsStatus::NullArgument,
        );
        let mut short_eig = vec![0f64; 5];
        check(
            explainseg_ncut(
                features.as_ptr(),
                14,
                14,
                d as u32,
                null(),
                mask.as_mut_ptr(),
                n,
                short_eig.as_mut_ptr(),
                5,
                &mut needed,
            ),
            EsStatus::BufferTooSmall,
        );
    }
    assert_eq!(mask, expected_mask.iter().copied().collect::<Vec<_>>());
    let rust = explainseg::post::ncut::tokencut_bipartition(f.view(), (14, 14), 0.2, 1e-5).unwrap();
    assert_eq!(eigvec, rust.eigvec.to_vec());
}

#[test]
fn mask_scores_by_hand() {
    // P = 3 pixels, G = 2, overlap 1: IoU = 1/4, Dice = 2/5 (as tests in src/eval.rs).
    let pred = [1u8, 1, 1, 0];
    let truth = [0u8, 255, 0, 1];
    let mut s = EsScores {
        iou: -1.0,
        dice: -1.0,
    };
    // SAFETY: 4-byte arrays and a writable out.
    unsafe {
        check(
            explainseg_mask_scores(pred.as_ptr(), truth.as_ptr(), 4, &mut s),
            EsStatus::Ok,
        );
        assert_eq!((s.iou, s.dice), (0.25, 0.4));
        let empty = [0u8; 4];
        check(
            explainseg_mask_scores(empty.as_ptr(), empty.as_ptr(), 4, &mut s),
            EsStatus::Ok,
        );
        assert_eq!((s.iou, s.dice), (1.0, 1.0));
        check(
            explainseg_mask_scores(null(), truth.as_ptr(), 4, &mut s),
            EsStatus::NullArgument,
        );
        check(
            explainseg_mask_scores(pred.as_ptr(), truth.as_ptr(), 4, null_mut()),
            EsStatus::NullArgument,
        );
    }
}

#[test]
fn last_error_copy_truncates_without_changing_the_message() {
    let mut m = null_mut();
    // SAFETY: valid pointers; buffers of the stated lengths.
    unsafe {
        check(
            explainseg_model_load(null(), null(), null(), &mut m),
            EsStatus::NullArgument,
        );
        let full = last_error();
        let mut needed = 0;
        check(
            explainseg_last_error_copy(null_mut(), 0, &mut needed),
            EsStatus::BufferTooSmall,
        );
        assert_eq!(needed, full.len() + 1);
        let mut small = [b'x' as std::ffi::c_char; 5];
        check(
            explainseg_last_error_copy(small.as_mut_ptr(), 5, &mut needed),
            EsStatus::BufferTooSmall,
        );
        assert_eq!(CStr::from_ptr(small.as_ptr()).to_str().unwrap(), &full[..4]);
        assert_eq!(last_error(), full, "a failed copy keeps the message");
        let mut buf = vec![0 as std::ffi::c_char; needed];
        check(
            explainseg_last_error_copy(buf.as_mut_ptr(), buf.len(), null_mut()),
            EsStatus::Ok,
        );
        assert_eq!(CStr::from_ptr(buf.as_ptr()).to_str().unwrap(), full);
    }
    // Messages are per thread.
    let other = std::thread::spawn(last_error).join().unwrap();
    assert_eq!(other, "");
}

/// 8 threads × 100 calls on one model handle give results bit-identical to one
/// thread's (`ES_THREAD_CALLS` overrides the 100, e.g. under ThreadSanitizer).
#[test]
fn one_model_eight_threads_hundred_calls() {
    let calls: usize = std::env::var("ES_THREAD_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let (m, img) = (load_model(), load_image());
    let params = EsSegmentParams {
        image_size: 32,
        ig_steps: 2,
        nt_samples: 1,
        threads: 1,
        ..quick_params(EsVariant::A)
    };
    let single = run_segment(m, img, &params, None).1.unwrap();
    let (m_addr, img_addr) = (m as usize, img as usize);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let single = &single;
                s.spawn(move || {
                    for _ in 0..calls {
                        let (status, out) = run_segment(
                            m_addr as *const EsModel,
                            img_addr as *const EsImage,
                            &params,
                            None,
                        );
                        check(status, EsStatus::Ok);
                        assert_eq!(&out.unwrap(), single);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    });
    // SAFETY: live handles, freed once after every thread finished.
    unsafe {
        explainseg_image_free(img);
        explainseg_model_free(m);
    }
}

/// Per-stage seconds and passes (issue #14): every stage the variant runs, and only
/// those, with its time; passes = IG steps × NoiseTunnel samples for the IG variants.
#[test]
fn stage_seconds_and_passes() {
    let (m, img) = (load_model(), load_image());
    for (variant, crf) in [
        (EsVariant::A, true),
        (EsVariant::B, false),
        (EsVariant::C, true),
        (EsVariant::Xncut, false),
        (EsVariant::Tokencut, true),
        (EsVariant::Maskcut, true),
    ] {
        let params = EsSegmentParams {
            crf_enabled: crf,
            ..quick_params(variant)
        };
        let ig = !matches!(variant, EsVariant::Tokencut | EsVariant::Maskcut);
        let feature = matches!(
            variant,
            EsVariant::A | EsVariant::B | EsVariant::Tokencut | EsVariant::Maskcut
        );
        let has_crf = crf && variant != EsVariant::Maskcut;
        let mut r = null_mut();
        // SAFETY: live handles, valid params, writable outs; `r` freed once.
        unsafe {
            check(
                explainseg_segment(m, img, &params, null(), &mut r),
                EsStatus::Ok,
            );
            let mut passes = u64::MAX;
            check(explainseg_result_passes(r, &mut passes), EsStatus::Ok);
            assert_eq!(passes, if ig { 4 * 2 } else { 0 }, "{variant:?}");
            let mut total = 0.0;
            check(explainseg_result_seconds(r, &mut total), EsStatus::Ok);
            let mut sum = 0.0;
            for (stage, runs) in [
                (EsStage::Explain, ig),
                (EsStage::Feature, feature),
                (EsStage::Mask, true),
                (EsStage::Crf, has_crf),
            ] {
                let mut s = -1.0;
                let status = explainseg_result_stage_seconds(r, stage as u32, &mut s);
                if runs {
                    check(status, EsStatus::Ok);
                    assert!(s >= 0.0, "{variant:?} {stage:?}: {s}");
                    sum += s;
                } else {
                    check(status, EsStatus::NotAvailable);
                    assert_eq!(s, -1.0, "untouched when not available");
                }
            }
            assert!(
                sum <= total + 1e-9,
                "{variant:?}: stages {sum} > call {total}"
            );
            let mut s = 0.0;
            check(
                explainseg_result_stage_seconds(r, 4, &mut s),
                EsStatus::InvalidParam,
            );
            check(
                explainseg_result_stage_seconds(r, 0, null_mut()),
                if ig {
                    EsStatus::NullArgument
                } else {
                    EsStatus::NotAvailable
                },
            );
            check(
                explainseg_result_stage_seconds(null(), 0, &mut s),
                EsStatus::NullArgument,
            );
            check(
                explainseg_result_passes(null(), &mut passes),
                EsStatus::NullArgument,
            );
            explainseg_result_free(r);
        }
    }
    // Attribution: the explanation only.
    let params = quick_params(EsVariant::Xncut);
    let mut r = null_mut();
    // SAFETY: as above.
    unsafe {
        check(
            explainseg_attribute(m, img, &params, null(), &mut r),
            EsStatus::Ok,
        );
        let (mut s, mut passes) = (-1.0, 0u64);
        check(
            explainseg_result_stage_seconds(r, EsStage::Explain as u32, &mut s),
            EsStatus::Ok,
        );
        assert!(s >= 0.0);
        check(
            explainseg_result_stage_seconds(r, EsStage::Mask as u32, &mut s),
            EsStatus::NotAvailable,
        );
        check(explainseg_result_passes(r, &mut passes), EsStatus::Ok);
        assert_eq!(passes, 8);
        explainseg_result_free(r);
        explainseg_image_free(img);
        explainseg_model_free(m);
    }
}
