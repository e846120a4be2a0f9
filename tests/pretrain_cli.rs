//! `explainseg pretrain --method dino` end to end on synthetic images, in
//! seconds: a short run on a nested folder whose student follows its teacher
//! (the KL falls), a checkpoint that `train --weights` fine-tunes and
//! `segment` uses, a resume that refuses changed settings, clear errors.

use std::path::Path;

use assert_cmd::Command;
use explainseg::model::{LoadOptions, Vit};

fn bin() -> Command {
    Command::cargo_bin("explainseg").unwrap()
}

/// Runs `cmd`, which must fail with `text` in its error.
fn fails_with(cmd: &mut Command, text: &str) {
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains(text), "{stderr}");
}

fn pretrain(data: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut cmd = bin();
    cmd.args(["--threads", "2", "--json", "pretrain", "--data"])
        .arg(data)
        .args([
            "--arch",
            "custom:1,16,2,8",
            "--global-size",
            "32",
            "--local-size",
            "16",
            "--local-crops",
            "2",
            "--source-size",
            "48",
            "--epochs",
            "6",
            "--batch-size",
            "8",
            "--warmup-epochs",
            "1",
            "--head-hidden",
            "32",
            "--head-bottleneck",
            "16",
            "--out-dim",
            "64",
            "--lr",
            "0.5",
            "--momentum-teacher",
            "0.9",
            "--out",
        ])
        .arg(out)
        .args(extra);
    cmd
}

#[test]
fn pretrain_then_fine_tune_then_segment() {
    let dir = tempfile::tempdir().unwrap();
    let synth = dir.path().join("synth");
    bin()
        .args(["--quiet", "synth", "--out"])
        .arg(&synth)
        .args(["--count", "24", "--size", "48", "--seed", "1"])
        .assert()
        .success();
    // The same images in two nested folders: the reader walks them all.
    let unlabelled = dir.path().join("unlabelled");
    for (i, entry) in std::fs::read_dir(synth.join("images")).unwrap().enumerate() {
        let p = entry.unwrap().path();
        let sub = unlabelled.join(if i % 2 == 0 { "a" } else { "b/c" });
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::copy(&p, sub.join(p.file_name().unwrap())).unwrap();
    }
    let ckpt = dir.path().join("dino.safetensors");
    let out = pretrain(&unlabelled, &ckpt, &["--method", "dino", "--knn-data"])
        .arg(&synth)
        .assert()
        .success();
    let report: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(report["images"], 24);
    let kl: Vec<f64> = report["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["student_kl"].as_f64().unwrap())
        .collect();
    assert_eq!(kl.len(), 6);
    for h in report["history"].as_array().unwrap() {
        let acc = h["knn_accuracy"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&acc));
    }
    // The student follows its teacher: the KL drops well below the first epoch's.
    let later = kl[1..].iter().cloned().fold(f64::INFINITY, f64::min);
    assert!(later < 0.5 * kl[0], "KL per epoch {kl:?}");
    assert!(ckpt.with_file_name("dino.state.safetensors").is_file());
    let vit = Vit::load(&ckpt, None, &LoadOptions::default()).unwrap();
    assert!(vit.head.is_none() && vit.config.dim == 16);

    // Resuming a finished run does nothing; changed settings are refused.
    pretrain(&unlabelled, &ckpt, &["--resume"])
        .arg(&ckpt)
        .assert()
        .success();
    pretrain(&unlabelled, &ckpt, &["--seed", "3", "--resume"])
        .arg(&ckpt)
        .assert()
        .failure();
    fails_with(
        pretrain(&unlabelled, &ckpt, &["--seed", "3", "--resume"]).arg(&ckpt),
        "settings differ",
    );

    // Fine-tune a classifier from the pretrained backbone, then segment with it,
    // and run TokenCut on the pretrained backbone with that head.
    let tuned = dir.path().join("tuned.safetensors");
    bin()
        .args(["--threads", "2", "--quiet", "train", "--data"])
        .arg(&synth)
        .arg("--weights")
        .arg(&ckpt)
        .args([
            "--finetune",
            "all",
            "--optimizer",
            "adamw",
            "--lr",
            "1e-3",
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--augment",
            "none",
            "--out",
        ])
        .arg(&tuned)
        .assert()
        .success();
    let image = std::fs::read_dir(synth.join("images"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    for (weights, head, variant) in [(&tuned, None, "a"), (&ckpt, Some(&tuned), "tokencut")] {
        let mut cmd = bin();
        cmd.args(["--quiet", "segment", "--weights"])
            .arg(weights)
            .arg("--image")
            .arg(&image)
            .args(["--variant", variant, "--size", "32", "--out"])
            .arg(dir.path().join(format!("seg_{variant}")));
        if let Some(h) = head {
            cmd.arg("--head").arg(h);
        }
        cmd.assert().success();
    }
}

#[test]
fn bad_settings_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.safetensors");
    fails_with(
        &mut pretrain(dir.path(), &out, &[]),
        "no PNG, JPEG or TIFF image",
    );
    fails_with(
        &mut pretrain(dir.path(), &out, &["--method", "byol"]),
        "only `dino`",
    );
    // A local crop the 8-px patch does not divide.
    fails_with(
        bin()
            .args([
                "pretrain",
                "--arch",
                "custom:1,16,2,8",
                "--global-size",
                "32",
            ])
            .args(["--local-size", "12", "--data"])
            .arg(dir.path())
            .arg("--out")
            .arg(&out),
        "12",
    );
    assert!(!out.exists());
}
