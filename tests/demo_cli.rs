//! `explainseg demo --json`: runs from nothing but the binary and prints one JSON
//! object with a Dice and mIoU per variant.

use assert_cmd::Command;

#[test]
fn demo_prints_one_json_object_with_scores_per_variant() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::cargo_bin("explainseg")
        .unwrap()
        .args(["demo", "--json", "--count", "5", "--out"])
        .arg(dir.path())
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8(out).unwrap();
    assert_eq!(text.trim().lines().count(), 1, "not one line: {text}");
    let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    for key in ["dice", "miou"] {
        let m = v[key]
            .as_object()
            .unwrap_or_else(|| panic!("no {key}: {v}"));
        let names: Vec<&str> = m.keys().map(|k| k.as_str()).collect();
        assert_eq!(names.len(), 4, "{key}: {names:?}");
        for name in ["a", "b", "c", "xncut"] {
            let d = m[name].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&d), "{key}.{name} = {d}");
        }
    }
    assert!(v["seconds"].as_f64().unwrap() > 0.0);
    let report = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    assert!(report.contains("| xncut |"));
    assert!(dir.path().join("synth_00000_xncut.png").exists());
}

#[test]
fn demo_rejects_an_unknown_variant() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::cargo_bin("explainseg")
        .unwrap()
        .args(["demo", "--variants", "a,zz", "--out"])
        .arg(dir.path())
        .assert()
        .failure()
        .get_output()
        .stderr
        .clone();
    assert!(String::from_utf8_lossy(&out).contains("`zz`"));
}

/// A reader that goes away (`explainseg … | head`) ends the run quietly, not in a panic.
#[test]
fn closed_stdout_is_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("explainseg"))
        .args(["demo", "--json", "--count", "1", "--out"])
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Close the read end before the demo (hundreds of ms) writes its line.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "status {:?}: {stderr}", out.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

fn demo_json(args: &[&str], dir: &std::path::Path) -> serde_json::Value {
    let out = Command::cargo_bin("explainseg")
        .unwrap()
        .args(["demo", "--json", "--out"])
        .arg(dir)
        .args(args)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    serde_json::from_slice(&out).unwrap()
}

/// The default per-variant preset is exactly the paper preset for XNCut and the stable
/// one for C, run on their own; overlays are enlarged 4× and written for the first
/// images only.
#[test]
fn per_variant_preset_is_paper_for_xncut_and_stable_for_c() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let both = demo_json(
        &["--count", "4", "--overlays", "2", "--variants", "c,xncut"],
        dirs[0].path(),
    );
    let x = demo_json(
        &["--count", "4", "--preset", "paper", "--variants", "xncut"],
        dirs[1].path(),
    );
    let c = demo_json(
        &["--count", "4", "--preset", "stable", "--variants", "c"],
        dirs[2].path(),
    );
    assert_eq!(both["dice"]["c"], c["dice"]["c"], "{both} vs {c}");
    assert_eq!(both["dice"]["xncut"], x["dice"]["xncut"], "{both} vs {x}");
    assert_ne!(c["presets"], x["presets"]);
    let png = dirs[0].path().join("synth_00001_xncut.png");
    let img = image::open(&png).unwrap();
    assert_eq!((img.width(), img.height()), (256, 256));
    assert!(!dirs[0].path().join("synth_00002_c.png").exists());
}
