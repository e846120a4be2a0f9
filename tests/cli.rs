//! The `explainseg` binary, driven as users and scripts drive it.

mod common;

use assert_cmd::Command;
use common::*;

fn bin() -> Command {
    Command::cargo_bin("explainseg").unwrap()
}

/// Writes the fixture's u8 picture as a PNG so the CLI can read it.
fn fixture_png(case: &str, dir: &std::path::Path) -> std::path::PathBuf {
    let f = std::fs::File::open(fixture("engine", &format!("{case}/input_u8.npy"))).unwrap();
    let a = <ndarray::Array3<u8> as ndarray_npy::ReadNpyExt>::read_npy(f).unwrap();
    let (h, w, _) = a.dim();
    let img = image::RgbImage::from_raw(w as u32, h as u32, a.iter().copied().collect()).unwrap();
    let path = dir.join(format!("{case}.png"));
    img.save(&path).unwrap();
    path
}

/// `explainseg attribute` on the tiny fixture model, with `extra` flags.
fn attribute(image: &std::path::Path, out: &std::path::Path, extra: &[&str]) -> Command {
    let mut cmd = bin();
    cmd.arg("attribute")
        .args(extra)
        .arg("--weights")
        .arg(fixture("engine", "s16_tiny/model_timm.safetensors"))
        .arg("--image")
        .arg(image)
        .arg("--out")
        .arg(out);
    cmd
}

#[test]
fn attribute_with_injected_noise_reproduces_captum() {
    let tmp = tempfile::tempdir().unwrap();
    let png = fixture_png("s16_tiny", tmp.path());
    let out = tmp.path().join("out");
    let assert = attribute(
        &png,
        &out,
        &["--resize", "none", "--steps", "8", "--batch", "5"],
    )
    .arg("--noise")
    .arg(fixture("engine", "s16_tiny/noise.npy"))
    .assert()
    .success();
    let stdout = String::from_utf8(assert.get_output().stdout.clone()).unwrap();
    let cfg = json(&fixture("engine", "s16_tiny/config.json"));
    assert!(
        stdout.contains(&format!("class {}", cfg["target"])),
        "{stdout}"
    );
    assert!(stdout.contains("convergence_delta"), "{stdout}");
    // Normalisation is bit-identical to torchvision's.
    assert_eq!(
        to_vec(&npy_f32(&out.join("input.npy"))),
        to_vec(&npy_f32(&fixture("engine", "s16_tiny/input.npy")))
    );
    let logits = to_vec(&npy_f32(&out.join("logits.npy")));
    assert!(
        rel_max(
            &logits,
            &to_vec(&npy_f32(&fixture("engine", "s16_tiny/logits.npy")))
        ) <= 1e-5
    );
    let attr = npy_f32(&out.join("attribution.npy"));
    assert_eq!(attr.shape(), &[3, 64, 64]);
    assert!(
        rel_l2(
            &to_vec(&attr),
            &to_vec(&npy_f32(&fixture("engine", "s16_tiny/nt_smoothgrad.npy")))
        ) <= 1e-4
    );
    let rel = npy_f32(&out.join("relevance.npy"));
    assert_eq!(rel.shape(), &[64, 64]);
    assert!(rel.iter().all(|v| (0.0..=1.0).contains(v)));
}

#[test]
fn plain_ig_with_json_output() {
    let tmp = tempfile::tempdir().unwrap();
    let png = fixture_png("s16_tiny", tmp.path());
    let out = tmp.path().join("out");
    let assert = attribute(
        &png,
        &out,
        &[
            "--json",
            "--nt-samples",
            "0",
            "--steps",
            "16",
            "--resize",
            "none",
        ],
    )
    .assert()
    .success();
    let v: serde_json::Value = serde_json::from_slice(&assert.get_output().stdout).unwrap();
    assert_eq!(v["deltas"].as_array().unwrap().len(), 1);
    let attr = npy_f32(&out.join("attribution.npy"));
    assert!(
        rel_l2(
            &to_vec(&attr),
            &to_vec(&npy_f32(&fixture(
                "engine",
                "s16_tiny/ig_gausslegendre.npy"
            )))
        ) <= 1e-4
    );
}

#[test]
fn stable_preset_is_plumbed_through_attribute_and_segment() {
    let tmp = tempfile::tempdir().unwrap();
    let png = fixture_png("s16_tiny", tmp.path());
    let run = |name: &str, extra: &[&str]| {
        let out = tmp.path().join(name);
        let assert = attribute(
            &png,
            &out,
            &[&["--json", "--resize", "none"], extra].concat(),
        )
        .assert()
        .success();
        let v: serde_json::Value = serde_json::from_slice(&assert.get_output().stdout).unwrap();
        (v, to_vec(&npy_f32(&out.join("attribution.npy"))))
    };
    // No convergence deltas for the stratified path (one random point per sample is
    // no quadrature); one per noise sample otherwise, here an explicit count.
    let (stable, a) = run("stable", &["--preset", "stable"]);
    assert_eq!(stable["deltas"].as_array().map_or(0, |d| d.len()), 0);
    let (_, again) = run("again", &["--preset", "stable"]);
    assert_eq!(a, again, "deterministic for a seed");
    let (_, other_seed) = run("seed", &["--preset", "stable", "--seed", "5"]);
    assert_ne!(a, other_seed);
    let (paper, p) = run("paper", &["--preset", "paper"]);
    assert_eq!(paper["deltas"].as_array().unwrap().len(), 5);
    let (_, default) = run("default", &[]);
    assert_eq!(p, default, "paper is the default");
    let (few, _) = run(
        "few",
        &[
            "--preset",
            "stable",
            "--nt-samples",
            "6",
            "--steps",
            "4",
            "--method",
            "gausslegendre",
        ],
    );
    assert_eq!(few["deltas"].as_array().unwrap().len(), 6);
    // The same draws as the preset's own noise design, given explicitly.
    let (_, explicit) = run(
        "explicit",
        &[
            "--steps",
            "1",
            "--method",
            "stratified",
            "--nt-samples",
            "200",
            "--nt-stdev",
            "0.25",
            "--noise-design",
            "stratified",
        ],
    );
    assert_eq!(a, explicit);
    // The preset's σ and path rule are its own: the paper's σ 1 changes the draws,
    // the paper's Gauss–Legendre point changes where the gradients are taken.
    for (name, flag, value) in [
        ("sigma", "--nt-stdev", "1.0"),
        ("gl", "--method", "gausslegendre"),
    ] {
        let (_, other) = run(name, &["--preset", "stable", flag, value]);
        assert_ne!(a, other, "{flag} {value}");
    }

    let image = fixture("preprocess", "big_299x257_q90.jpg");
    let segment = |name: &str, extra: &[&str]| {
        let assert = bin()
            .args(["--json", "segment", "--size", "64", "--variant", "xncut"])
            .args(extra)
            .arg("--weights")
            .arg(fixture("engine", "s16_tiny/model_timm.safetensors"))
            .arg("--image")
            .arg(&image)
            .arg("--out")
            .arg(tmp.path().join(name))
            .assert()
            .success();
        let v: serde_json::Value = serde_json::from_slice(&assert.get_output().stdout).unwrap();
        let relevance = to_vec(&npy_f32(&tmp.path().join(name).join("relevance.npy")));
        (v, relevance)
    };
    let (v, smoothed) = segment("seg", &["--preset", "stable"]);
    assert_eq!(
        (v["passes"].as_u64(), v["preset"].as_str()),
        (Some(200), Some("stable"))
    );
    // The preset smooths the relevance by one patch of the model (16 px here); an
    // explicit --smooth overrides it.
    let (_, one_patch) = segment("seg16", &["--preset", "stable", "--smooth", "16"]);
    assert_eq!(smoothed, one_patch);
    let (_, raw) = segment("seg0", &["--preset", "stable", "--smooth", "0"]);
    assert_ne!(smoothed, raw);
    let conflict = bin()
        .args(["segment", "--equalize", "--no-equalize"])
        .assert()
        .failure();
    let err = String::from_utf8(conflict.get_output().stderr.clone()).unwrap();
    assert!(err.contains("cannot be used with"), "{err}");

    for bad in [&["--preset", "fast"][..], &["--noise-design", "sobol"][..]] {
        let assert = attribute(&png, &tmp.path().join("bad"), bad)
            .assert()
            .failure();
        let err = String::from_utf8(assert.get_output().stderr.clone()).unwrap();
        assert!(
            err.contains(bad[0].trim_start_matches("--").replace('-', "_").as_str()),
            "{err}"
        );
    }
}

#[test]
fn errors_are_one_line_with_no_partial_output() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let assert = attribute(std::path::Path::new("/nonexistent/x.png"), &out, &[])
        .assert()
        .failure();
    let stderr = String::from_utf8(assert.get_output().stderr.clone()).unwrap();
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("/nonexistent/x.png"), "{stderr}");
    assert!(!out.exists());

    // A size that is not a multiple of the patch.
    let png = fixture_png("s16_tiny", tmp.path());
    let assert = attribute(&png, &out, &["--size", "60"]).assert().failure();
    let stderr = String::from_utf8(assert.get_output().stderr.clone()).unwrap();
    assert!(stderr.contains("multiple of the patch"), "{stderr}");
    assert!(!out.exists());

    // Injected noise of the wrong size.
    attribute(&png, &out, &["--resize", "none"])
        .arg("--noise")
        .arg(fixture("engine", "p8_dino4/noise.npy"))
        .assert()
        .failure();
    assert!(!out.exists());
    bin()
        .args([
            "attribute",
            "--device",
            "cuda",
            "--weights",
            "w",
            "--image",
            "i",
            "--out",
            "o",
        ])
        .assert()
        .failure();
}

#[test]
fn segment_writes_every_output_at_the_image_size() {
    let tmp = tempfile::tempdir().unwrap();
    let image = fixture("preprocess", "big_299x257_q90.jpg");
    for variant in ["a", "b", "c", "xncut", "tokencut", "maskcut"] {
        let out = tmp.path().join(variant);
        // Variant a also exercises the non-default feature and fusion flags.
        let extra: &[&str] = if variant == "a" {
            &[
                "--feature",
                "cls-attn",
                "--upsample",
                "bilinear",
                "--normalize",
                "percentile",
            ]
        } else {
            &[]
        };
        let assert = bin()
            .arg("segment")
            .args(extra)
            .args([
                "--size",
                "64",
                "--steps",
                "4",
                "--nt-samples",
                "1",
                "--variant",
                variant,
                "--weights",
            ])
            .arg(fixture("engine", "s16_tiny/model_timm.safetensors"))
            .arg("--image")
            .arg(&image)
            .arg("--out")
            .arg(&out)
            .assert()
            .success();
        let stdout = String::from_utf8(assert.get_output().stdout.clone()).unwrap();
        assert!(
            stdout.contains("class ") && stdout.contains("times:"),
            "{stdout}"
        );
        for png in ["mask.png", "mask_pre_crf.png", "overlay.png"] {
            let img = image::open(out.join(png)).unwrap();
            assert_eq!((img.width(), img.height()), (299, 257), "{variant} {png}");
        }
        let mask = image::open(out.join("mask.png")).unwrap().to_luma8();
        assert!(mask.pixels().all(|p| p.0[0] == 0 || p.0[0] == 255));
        assert_eq!(
            out.join("relevance.npy").exists(),
            !variant.ends_with("cut") || variant == "xncut",
            "{variant}"
        );
        assert_eq!(
            out.join("fused.npy").exists(),
            variant == "a" || variant == "b",
            "{variant}"
        );
        assert!(
            out.join("feature.npy").exists() == matches!(variant, "a" | "b" | "tokencut"),
            "{variant}"
        );
    }
}

#[test]
fn post_processing_commands_run_on_their_own() {
    let tmp = tempfile::tempdir().unwrap();
    // A map with a bright square: Otsu must split it off.
    let map = ndarray::Array2::from_shape_fn((40, 48), |(i, j)| {
        if (10..30).contains(&i) && (12..36).contains(&j) {
            0.9f32
        } else {
            0.1
        }
    });
    let map_path = tmp.path().join("map.npy");
    explainseg::npy::write(&map_path, &map).unwrap();
    let img = image::RgbImage::from_fn(48, 40, |x, y| {
        if (10..30).contains(&y) && (12..36).contains(&x) {
            image::Rgb([200, 60, 60])
        } else {
            image::Rgb([40, 40, 40])
        }
    });
    let img_path = tmp.path().join("img.png");
    img.save(&img_path).unwrap();
    let out = tmp.path().join("otsu");
    let assert = bin()
        .args(["mask", "--method", "otsu", "--map"])
        .arg(&map_path)
        .arg("--image")
        .arg(&img_path)
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    let stdout = String::from_utf8(assert.get_output().stdout.clone()).unwrap();
    let t: f32 = stdout
        .trim()
        .strip_prefix("threshold ")
        .unwrap()
        .parse()
        .unwrap();
    // Any value between the background (0.1) and the square (0.9) splits them.
    assert!((0.1..0.9).contains(&t), "{t}");
    let mask = image::open(out.join("mask.png")).unwrap().to_luma8();
    assert_eq!(mask.pixels().filter(|p| p.0[0] == 255).count(), 20 * 24);

    let refined = tmp.path().join("refined.png");
    let probs = tmp.path().join("q.npy");
    bin()
        .args(["crf", "--image"])
        .arg(&img_path)
        .arg("--mask")
        .arg(out.join("mask.png"))
        .arg("--out")
        .arg(&refined)
        .arg("--probs")
        .arg(&probs)
        .assert()
        .success();
    assert_eq!(npy_f32(&probs).shape(), &[2, 40, 48]);

    // Two clusters of features on a 4×4 grid: the cut separates them.
    let feats = ndarray::Array2::from_shape_fn((16, 8), |(n, k)| {
        if (n % 4 < 2) == (k < 4) {
            1.0f32
        } else {
            0.05 * ((n * 7 + k) % 5) as f32
        }
    });
    let f_path = tmp.path().join("f.npy");
    explainseg::npy::write(&f_path, &feats).unwrap();
    let out = tmp.path().join("ncut");
    bin()
        .args(["ncut", "--grid", "4,4", "--features"])
        .arg(&f_path)
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    assert_eq!(npy_f64_any(&out.join("eigvec.npy")).len(), 16);
    bin()
        .args(["ncut", "--grid", "5,4", "--features"])
        .arg(&f_path)
        .arg("--out")
        .arg(tmp.path().join("bad"))
        .assert()
        .failure();
}

fn npy_f64_any(p: &std::path::Path) -> Vec<f64> {
    let f = std::fs::File::open(p).unwrap();
    <ndarray::Array1<f64> as ndarray_npy::ReadNpyExt>::read_npy(f)
        .unwrap()
        .to_vec()
}

/// `--device cuda` never runs on the CPU instead: without a GPU (or without the
/// `cuda` feature) every command that runs a model exits 1 naming CUDA, and writes
/// nothing.
#[test]
fn device_cuda_without_a_gpu_fails_naming_cuda_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let image = fixture("preprocess", "big_299x257_q90.jpg");
    let weights = fixture("engine", "s16_tiny/model_timm.safetensors");
    for command in ["attribute", "segment"] {
        let out = tmp.path().join(command);
        let assert = bin()
            .args([
                command,
                "--device",
                "cuda",
                "--size",
                "64",
                "--steps",
                "2",
                "--weights",
            ])
            .arg(&weights)
            .arg("--image")
            .arg(&image)
            .arg("--out")
            .arg(&out)
            .assert()
            .code(1);
        let stderr = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
        assert!(stderr.contains("CUDA"), "{command}: {stderr}");
        if !cfg!(feature = "cuda") {
            assert!(stderr.contains("no CUDA backend"), "{command}: {stderr}");
        }
        assert!(!out.exists(), "{command} wrote {}", out.display());
    }
    let out = tmp.path().join("demo");
    let assert = bin()
        .args(["demo", "--device", "cuda", "--count", "1", "--out"])
        .arg(&out)
        .assert()
        .code(1);
    assert!(String::from_utf8_lossy(&assert.get_output().stderr).contains("CUDA"));
}

/// `--device cuda-emu` needs its feature; without it the command fails naming it.
#[cfg(not(feature = "cuda-emu"))]
#[test]
fn device_cuda_emu_without_its_feature_fails_naming_the_feature() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let assert = bin()
        .args([
            "segment",
            "--device",
            "cuda-emu",
            "--size",
            "64",
            "--steps",
            "2",
            "--weights",
        ])
        .arg(fixture("engine", "s16_tiny/model_timm.safetensors"))
        .arg("--image")
        .arg(fixture("preprocess", "big_299x257_q90.jpg"))
        .arg("--out")
        .arg(&out)
        .assert()
        .code(1);
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
    assert!(stderr.contains("`cuda-emu` feature"), "{stderr}");
    assert!(!out.exists());
}
