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

#[test]
fn attribute_with_injected_noise_reproduces_captum() {
    let tmp = tempfile::tempdir().unwrap();
    let png = fixture_png("s16_tiny", tmp.path());
    let out = tmp.path().join("out");
    let assert = bin()
        .args(["attribute", "--weights"])
        .arg(fixture("engine", "s16_tiny/model_timm.safetensors"))
        .arg("--image")
        .arg(&png)
        .args(["--resize", "none", "--steps", "8", "--batch", "5", "--noise"])
        .arg(fixture("engine", "s16_tiny/noise.npy"))
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    let stdout = String::from_utf8(assert.get_output().stdout.clone()).unwrap();
    let cfg = json(&fixture("engine", "s16_tiny/config.json"));
    assert!(stdout.contains(&format!("class {}", cfg["target"])), "{stdout}");
    assert!(stdout.contains("convergence_delta"), "{stdout}");
    // Normalisation is bit-identical to torchvision's.
    assert_eq!(to_vec(&npy_f32(&out.join("input.npy"))), to_vec(&npy_f32(&fixture("engine", "s16_tiny/input.npy"))));
    let logits = to_vec(&npy_f32(&out.join("logits.npy")));
    assert!(rel_max(&logits, &to_vec(&npy_f32(&fixture("engine", "s16_tiny/logits.npy")))) <= 1e-5);
    let attr = npy_f32(&out.join("attribution.npy"));
    assert_eq!(attr.shape(), &[3, 64, 64]);
    assert!(rel_l2(&to_vec(&attr), &to_vec(&npy_f32(&fixture("engine", "s16_tiny/nt_smoothgrad.npy")))) <= 1e-4);
    let rel = npy_f32(&out.join("relevance.npy"));
    assert_eq!(rel.shape(), &[64, 64]);
    assert!(rel.iter().all(|v| (0.0..=1.0).contains(v)));
}

#[test]
fn plain_ig_with_json_output() {
    let tmp = tempfile::tempdir().unwrap();
    let png = fixture_png("s16_tiny", tmp.path());
    let out = tmp.path().join("out");
    let assert = bin()
        .args(["attribute", "--json", "--nt-samples", "0", "--steps", "16", "--resize", "none", "--weights"])
        .arg(fixture("engine", "s16_tiny/model_timm.safetensors"))
        .arg("--image")
        .arg(&png)
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    let v: serde_json::Value = serde_json::from_slice(&assert.get_output().stdout).unwrap();
    assert_eq!(v["deltas"].as_array().unwrap().len(), 1);
    let attr = npy_f32(&out.join("attribution.npy"));
    assert!(rel_l2(&to_vec(&attr), &to_vec(&npy_f32(&fixture("engine", "s16_tiny/ig_gausslegendre.npy")))) <= 1e-4);
}

#[test]
fn errors_are_one_line_with_no_partial_output() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let assert = bin()
        .args(["attribute", "--weights"])
        .arg(fixture("engine", "s16_tiny/model_timm.safetensors"))
        .args(["--image", "/nonexistent/x.png", "--out"])
        .arg(&out)
        .assert()
        .failure();
    let stderr = String::from_utf8(assert.get_output().stderr.clone()).unwrap();
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("/nonexistent/x.png"), "{stderr}");
    assert!(!out.exists());

    // A size that is not a multiple of the patch.
    let png = fixture_png("s16_tiny", tmp.path());
    let assert = bin()
        .args(["attribute", "--size", "60", "--weights"])
        .arg(fixture("engine", "s16_tiny/model_timm.safetensors"))
        .arg("--image")
        .arg(&png)
        .arg("--out")
        .arg(&out)
        .assert()
        .failure();
    let stderr = String::from_utf8(assert.get_output().stderr.clone()).unwrap();
    assert!(stderr.contains("multiple of the patch"), "{stderr}");
    assert!(!out.exists());

    // Injected noise of the wrong size.
    bin()
        .args(["attribute", "--resize", "none", "--weights"])
        .arg(fixture("engine", "s16_tiny/model_timm.safetensors"))
        .arg("--image")
        .arg(&png)
        .arg("--noise")
        .arg(fixture("engine", "p8_dino4/noise.npy"))
        .arg("--out")
        .arg(&out)
        .assert()
        .failure();
    assert!(!out.exists());
    bin().args(["attribute", "--device", "cuda", "--weights", "w", "--image", "i", "--out", "o"]).assert().failure();
}
