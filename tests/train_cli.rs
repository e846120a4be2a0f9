//! `explainseg train` on a folder of generated PNGs: trains, writes a checkpoint
//! that `Vit::load` and `explainseg attribute` read, resumes, and refuses bad input.

use std::path::Path;

use assert_cmd::Command;
use explainseg::model::{LoadOptions, Vit};
use explainseg::rng::Rng;
use explainseg::train::read_checkpoint_meta;

fn bin() -> Command {
    Command::cargo_bin("explainseg").unwrap()
}

/// `images/` with dark- and bright-square PNGs (24×20, resized by the reader)
/// and `labels.csv` naming the classes.
fn write_folder(dir: &Path, n: usize) {
    std::fs::create_dir_all(dir.join("images")).unwrap();
    let mut csv = String::from("file,label\n");
    let mut r = Rng::stream(3, &[]);
    let (w, h) = (24u32, 20u32);
    for i in 0..n {
        let bright = i % 2 == 1;
        let mut img = image::RgbImage::from_fn(w, h, |_, _| {
            let v = (100.0 + 50.0 * r.uniform()) as u8;
            image::Rgb([v, v, v])
        });
        let (x0, y0) = (r.below(12) as u32, r.below(8) as u32);
        for y in y0..y0 + 10 {
            for x in x0..x0 + 10 {
                img.put_pixel(
                    x,
                    y,
                    image::Rgb(if bright {
                        [240, 230, 220]
                    } else {
                        [20, 25, 30]
                    }),
                );
            }
        }
        let name = format!("img_{i:03}.png");
        img.save(dir.join("images").join(&name)).unwrap();
        csv += &format!("{name},{}\n", if bright { "bright" } else { "dark" });
    }
    std::fs::write(dir.join("labels.csv"), csv).unwrap();
}

fn train_cmd(data: &Path, out: &Path, epochs: usize) -> Command {
    let mut cmd = bin();
    cmd.args([
        "--threads",
        "2",
        "--json",
        "train",
        "--init",
        "random",
        "--arch",
        "custom:1,16,2,8",
    ])
    .args([
        "--img-size",
        "16",
        "--finetune",
        "all",
        "--optimizer",
        "adamw",
        "--lr",
        "3e-3",
    ])
    .args([
        "--schedule",
        "step",
        "--step-every",
        "2",
        "--augment",
        "hflip,crop",
        "--val-fraction",
        "0.25",
    ])
    .args(["--batch-size", "8", "--epochs", &epochs.to_string()])
    .arg("--data")
    .arg(data)
    .arg("--out")
    .arg(out);
    cmd
}

#[test]
fn train_writes_a_loadable_checkpoint_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("toy");
    write_folder(&data, 40);
    let ckpt = tmp.path().join("toy.safetensors");
    let out = train_cmd(&data, &ckpt, 2)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(json["epochs_run"], 2);
    assert_eq!(json["classes"], serde_json::json!(["bright", "dark"]));
    assert!(json["history"][1]["val_accuracy"].as_f64().is_some());

    let vit = Vit::load(&ckpt, None, &LoadOptions::default()).unwrap();
    assert_eq!(
        (vit.config.depth, vit.config.dim, vit.config.heads),
        (1, 16, 2)
    );
    assert_eq!(vit.classes().unwrap(), 2);
    let meta = read_checkpoint_meta(&ckpt).unwrap();
    assert_eq!((meta.epoch, meta.img_size), (2, 16));
    assert_eq!(meta.class_names, ["bright", "dark"]);
    assert!(ckpt.with_file_name("toy.state.safetensors").is_file());

    // Other commands load it unchanged.
    let img = data.join("images/img_001.png");
    bin()
        .args([
            "--quiet",
            "attribute",
            "--size",
            "16",
            "--steps",
            "2",
            "--nt-samples",
            "0",
        ])
        .arg("--weights")
        .arg(&ckpt)
        .arg("--image")
        .arg(&img)
        .arg("--out")
        .arg(tmp.path().join("attr"))
        .assert()
        .success();

    // Resume to epoch 3: one more epoch is run.
    let mut resume = train_cmd(&data, &ckpt, 3);
    resume.arg("--resume").arg(&ckpt);
    let out = resume.assert().success().get_output().stdout.clone();
    let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(json["epochs_run"], 1);
    assert_eq!(json["history"][0]["epoch"], 3);
}

#[test]
fn train_reports_bad_input_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = tmp.path().join("m.safetensors");
    let err = train_cmd(tmp.path(), &ckpt, 1)
        .assert()
        .failure()
        .get_output()
        .stderr
        .clone();
    assert!(String::from_utf8_lossy(&err).contains("labels.csv"));

    let data = tmp.path().join("d");
    write_folder(&data, 6);
    std::fs::write(data.join("labels.csv"), "file,label\nmissing.png,a\n").unwrap();
    let err = train_cmd(&data, &ckpt, 1)
        .assert()
        .failure()
        .get_output()
        .stderr
        .clone();
    assert!(String::from_utf8_lossy(&err).contains("does not exist"));

    std::fs::write(data.join("labels.csv"), "name,class\nimg_000.png,a\n").unwrap();
    train_cmd(&data, &ckpt, 1).assert().failure();

    write_folder(&data, 6);
    let mut bad = train_cmd(&data, &ckpt, 1);
    bad.args(["--finetune", "last:0"]);
    bad.assert().failure();
}

/// A Kvasir-layout folder (`index.csv`, images/, masks/): 48×48 images, each with
/// a bright square "polyp" in its mask, `n` of them in the train split.
fn write_kvasir(dir: &Path, n: usize) {
    std::fs::create_dir_all(dir.join("images")).unwrap();
    std::fs::create_dir_all(dir.join("masks")).unwrap();
    let mut csv = String::from("image,mask,split_medico2020\n");
    let mut r = Rng::stream(5, &[]);
    for i in 0..n + 2 {
        let (x0, y0) = (r.below(24) as u32, r.below(24) as u32);
        let inside = |x: u32, y: u32| (x0..x0 + 16).contains(&x) && (y0..y0 + 16).contains(&y);
        let img = image::RgbImage::from_fn(48, 48, |x, y| {
            let v = if inside(x, y) {
                230
            } else {
                (60.0 + 40.0 * r.uniform()) as u8
            };
            image::Rgb([v, v / 2, v / 3])
        });
        let mask =
            image::GrayImage::from_fn(48, 48, |x, y| image::Luma([255 * inside(x, y) as u8]));
        let id = format!("p{i:02}");
        img.save(dir.join(format!("images/{id}.png"))).unwrap();
        mask.save(dir.join(format!("masks/{id}.png"))).unwrap();
        let split = if i < n { "train" } else { "val" };
        csv += &format!("images/{id}.png,masks/{id}.png,{split}\n");
    }
    std::fs::write(dir.join("index.csv"), csv).unwrap();
}

#[test]
fn train_on_kvasir_patches_through_the_dataset_reader() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("kvasir");
    write_kvasir(&data, 12);
    let ckpt = tmp.path().join("k.safetensors");
    let mut cmd = train_cmd(&data, &ckpt, 1);
    cmd.args(["--dataset", "kvasir", "--split", "train", "--patches"])
        .args(["--patch-size", "16", "--patch-min-positive", "0.5"]);
    let out = cmd.assert().success().get_output().stdout.clone();
    let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(json["classes"], serde_json::json!(["negative", "positive"]));
    assert!(json["history"][0]["val_accuracy"].as_f64().is_some());
    assert_eq!(
        read_checkpoint_meta(&ckpt).unwrap().class_names,
        ["negative", "positive"]
    );
    // The validation sources (a quarter of the 12 train images) are listed for eval --ids.
    let listed = std::fs::read_to_string(tmp.path().join("k.val_ids.txt")).unwrap();
    let ids: Vec<&str> = listed.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(ids.len(), 3, "{listed}");
    assert!(ids.iter().all(|id| id.starts_with('p')));
    assert_eq!(
        json["val_ids"],
        serde_json::json!(tmp.path().join("k.val_ids.txt"))
    );

    // Kvasir samples carry no label: without --patches there is nothing to learn.
    let mut unlabelled = train_cmd(&data, &ckpt, 1);
    unlabelled.args(["--dataset", "kvasir"]);
    let err = unlabelled.assert().failure().get_output().stderr.clone();
    assert!(
        String::from_utf8_lossy(&err).contains("--patches"),
        "{}",
        String::from_utf8_lossy(&err)
    );
    // --patches needs a data set reader.
    let mut no_reader = train_cmd(&data, &ckpt, 1);
    no_reader.arg("--patches");
    no_reader.assert().failure();
}
