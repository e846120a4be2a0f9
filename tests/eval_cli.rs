//! `explainseg eval` / `eval-merge` on a tiny folder data set with the tiny model:
//! outputs agree with each other and with `explainseg segment`, reruns resume,
//! shards merge into the unsharded result.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use assert_cmd::Command;
use common::{fixture, tiny_dataset};

/// The settings shared by every run: small input, few IG steps, no NoiseTunnel.
const FAST: [&str; 8] = [
    "--size",
    "64",
    "--steps",
    "4",
    "--nt-samples",
    "0",
    "--ncut-grid",
    "16",
];
const METHODS: [&str; 3] = ["c", "xncut", "tokencut"];
/// The chance rows each scored image gets in per_image.csv (and the summaries).
const CHANCE: [&str; 3] = ["chance-empty", "chance-whole", "chance-ellipse"];

fn eval(root: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::cargo_bin("explainseg").unwrap();
    cmd.args([
        "--threads",
        "2",
        "--json",
        "eval",
        "--dataset",
        "folder",
        "--root",
    ])
    .arg(root)
    .arg("--weights")
    .arg(fixture("engine", "s16_tiny/model_timm.safetensors"))
    .args(FAST)
    .args(["--variants", &METHODS.join(",")])
    .args(extra)
    .arg("--out")
    .arg(out);
    cmd
}

fn run_json(cmd: &mut Command) -> serde_json::Value {
    let a = cmd.assert().success();
    serde_json::from_slice(&a.get_output().stdout).unwrap()
}

/// per_image.csv as (id, variant) → (iou, dice, class); ids here hold no commas.
fn rows(dir: &Path) -> BTreeMap<(String, String), (f64, f64, usize)> {
    let text = std::fs::read_to_string(dir.join("per_image.csv")).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("id,variant,iou,dice,class,seconds,label")
    );
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (
                (f[0].to_string(), f[1].to_string()),
                (
                    f[2].parse().unwrap(),
                    f[3].parse().unwrap(),
                    f[4].parse().unwrap(),
                ),
            )
        })
        .collect()
}

/// per_image.csv's lines without the wall-clock `seconds` column, in file order.
fn csv_without_seconds(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("per_image.csv"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut f: Vec<&str> = l.split(',').collect();
            f.remove(5);
            f.join(",")
        })
        .collect()
}

fn summary(dir: &Path) -> serde_json::Value {
    common::json(&dir.join("summary.json"))
}

fn read_mask(p: &Path) -> Vec<bool> {
    image::open(p)
        .unwrap()
        .to_luma8()
        .pixels()
        .map(|p| p.0[0] > 127)
        .collect()
}

#[test]
fn outputs_agree_with_each_other_and_with_segment() {
    let tmp = tempfile::tempdir().unwrap();
    let (root, out) = (tmp.path().join("data"), tmp.path().join("eval"));
    tiny_dataset(&root);
    let printed = run_json(&mut eval(&root, &out, &[]));
    for f in [
        "per_image.csv",
        "summary.json",
        "summary.md",
        "grid.png",
        "config.json",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let rows = rows(&out);
    assert_eq!(rows.len(), 4 * (METHODS.len() + CHANCE.len()));
    let s = summary(&out);
    assert_eq!(s["images"], 4);
    assert_eq!(
        printed["methods"], s["methods"],
        "stdout JSON = summary.json"
    );
    let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
    let methods = s["methods"].as_array().unwrap();
    assert_eq!(methods.len(), METHODS.len());
    // Chance rows: every image of the tiny set has foreground, none is all foreground.
    let chance = s["chance"].as_array().unwrap();
    assert_eq!(printed["chance"], s["chance"], "stdout JSON = summary.json");
    assert_eq!(
        chance
            .iter()
            .map(|c| c["variant"].as_str().unwrap())
            .collect::<Vec<_>>(),
        CHANCE
    );
    let (mut iou_whole, mut dice_whole) = (0.0, 0.0);
    for i in 0..4 {
        let truth = read_mask(&root.join(format!("masks/im{i}.png")));
        let id = format!("im{i}");
        let (g, n) = (
            truth.iter().filter(|t| **t).count() as f64,
            truth.len() as f64,
        );
        assert!(g > 0.0 && g < n);
        assert_eq!(rows[&(id.clone(), "chance-empty".into())], (0.0, 0.0, 0));
        let (iou, dice, _) = rows[&(id.clone(), "chance-whole".into())];
        assert_eq!((iou, dice), (g / n, 2.0 * g / (g + n)));
        // The ellipse row scores the library's centred ellipse at the mask's size.
        let dims = image::image_dimensions(root.join(format!("masks/im{i}.png"))).unwrap();
        let ellipse = explainseg::eval::centred_ellipse(dims.1 as usize, dims.0 as usize);
        let (e, inter) = (
            ellipse.iter().filter(|v| **v).count() as f64,
            ellipse
                .iter()
                .zip(&truth)
                .filter(|(p, t)| **p && **t)
                .count() as f64,
        );
        let (e_iou, e_dice, _) = rows[&(id, "chance-ellipse".into())];
        assert!((e_iou - inter / (e + g - inter)).abs() < 1e-12);
        assert!((e_dice - 2.0 * inter / (e + g)).abs() < 1e-12);
        (iou_whole, dice_whole) = (iou_whole + iou, dice_whole + dice);
    }
    assert_eq!(chance[0]["images"], 4);
    assert_eq!(
        (chance[0]["miou"].as_f64(), chance[0]["dice"].as_f64()),
        (Some(0.0), Some(0.0))
    );
    assert!((chance[1]["miou"].as_f64().unwrap() - iou_whole / 4.0).abs() < 1e-12);
    assert!((chance[1]["dice"].as_f64().unwrap() - dice_whole / 4.0).abs() < 1e-12);
    for c in chance {
        let line = format!(
            "| {} | 4 | {:.1} | {:.1} |",
            c["method"].as_str().unwrap(),
            100.0 * c["miou"].as_f64().unwrap(),
            100.0 * c["dice"].as_f64().unwrap()
        );
        assert!(md.contains(&line), "{line} not in\n{md}");
    }
    for m in methods {
        let v = m["variant"].as_str().unwrap();
        // The means of the CSV's rows, summed in id order as the summary does.
        let mine: Vec<_> = rows
            .iter()
            .filter(|((_, var), _)| var == v)
            .map(|(_, r)| *r)
            .collect();
        let n = mine.len() as f64;
        let miou = mine.iter().map(|r| r.0).sum::<f64>() / n;
        let dice = mine.iter().map(|r| r.1).sum::<f64>() / n;
        // serde_json's default float parser may be 1 ulp off; the sums themselves are exact.
        assert!((m["miou"].as_f64().unwrap() - miou).abs() < 1e-12, "{v}");
        assert!((m["dice"].as_f64().unwrap() - dice).abs() < 1e-12, "{v}");
        let line = format!(
            "| {} | 4 | {:.1} | {:.1} |",
            m["method"].as_str().unwrap(),
            100.0 * miou,
            100.0 * dice
        );
        assert!(md.contains(&line), "{line} not in\n{md}");
    }
    // Rows = 4 images, columns = image, ground truth, 3 methods; 160-px cells, 4-px gaps.
    let grid = image::open(out.join("grid.png")).unwrap();
    assert_eq!(
        (grid.width(), grid.height()),
        (5 * 160 + 6 * 4, 4 * 160 + 5 * 4)
    );
    assert!(
        md.contains("grid.png columns: image, ground truth, c, xncut, tokencut."),
        "{md}"
    );

    // `explainseg segment` with the same settings gives the mask the CSV scored.
    let truth = read_mask(&root.join("masks/im1.png"));
    for variant in ["xncut", "tokencut"] {
        let seg = tmp.path().join(format!("seg_{variant}"));
        Command::cargo_bin("explainseg")
            .unwrap()
            .args(["--threads", "2", "--quiet", "segment", "--image"])
            .arg(root.join("images/im1.png"))
            .arg("--weights")
            .arg(fixture("engine", "s16_tiny/model_timm.safetensors"))
            .args(FAST)
            .args(["--variant", variant, "--out"])
            .arg(&seg)
            .assert()
            .success();
        let pred = read_mask(&seg.join("mask.png"));
        assert_eq!(pred.len(), truth.len(), "mask at the ground truth's size");
        let inter = pred.iter().zip(&truth).filter(|(p, t)| **p && **t).count();
        let (p, t) = (
            pred.iter().filter(|v| **v).count(),
            truth.iter().filter(|v| **v).count(),
        );
        // IoU = |P∩G| / |P∪G|, Dice = 2|P∩G| / (|P| + |G|); both 1 when both are empty.
        let (iou, dice) = if p + t == 0 {
            (1.0, 1.0)
        } else {
            (
                inter as f64 / (p + t - inter) as f64,
                2.0 * inter as f64 / (p + t) as f64,
            )
        };
        let (csv_iou, csv_dice, _) = rows[&("im1".to_string(), variant.to_string())];
        assert_eq!((csv_iou, csv_dice), (iou, dice), "{variant}");
    }
}

#[test]
fn reruns_resume_and_shards_merge_into_the_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("data");
    tiny_dataset(&root);
    let whole = tmp.path().join("whole");

    // "Interrupted" after two images, with a half-written last line.
    let first = run_json(&mut eval(&root, &whole, &["--limit", "2"]));
    assert_eq!(
        (first["evaluated"].as_u64(), first["images"].as_u64()),
        (Some(2), Some(2))
    );
    let before = std::fs::read_to_string(whole.join("per_image.csv")).unwrap();
    let mut torn = before.clone();
    torn.push_str("im2,c,0.12");
    std::fs::write(whole.join("per_image.csv"), &torn).unwrap();

    let resumed = run_json(&mut eval(&root, &whole, &[]));
    assert_eq!(
        (resumed["evaluated"].as_u64(), resumed["skipped"].as_u64()),
        (Some(2), Some(2))
    );
    let after = std::fs::read_to_string(whole.join("per_image.csv")).unwrap();
    assert!(
        after.starts_with(&before),
        "rows already written are kept as they were"
    );
    assert_eq!(rows(&whole).len(), 4 * (METHODS.len() + CHANCE.len()));
    let again = run_json(&mut eval(&root, &whole, &[]));
    assert_eq!(
        (again["evaluated"].as_u64(), again["skipped"].as_u64()),
        (Some(0), Some(4))
    );
    assert_eq!(
        std::fs::read_to_string(whole.join("per_image.csv")).unwrap(),
        after
    );

    // Another configuration may not write into the same folder.
    let a = eval(&root, &whole, &["--no-crf"]).assert().code(1);
    let err = String::from_utf8_lossy(&a.get_output().stderr).to_string();
    assert!(err.contains("another configuration"), "{err}");

    let (s1, s2, merged) = (
        tmp.path().join("s1"),
        tmp.path().join("s2"),
        tmp.path().join("merged"),
    );
    run_json(&mut eval(&root, &s1, &["--shard", "1/2"]));
    run_json(&mut eval(&root, &s2, &["--shard", "2/2"]));
    assert_eq!(
        rows(&s1).len() + rows(&s2).len(),
        4 * (METHODS.len() + CHANCE.len())
    );
    assert!(
        rows(&s1).keys().all(|(id, _)| id == "im0" || id == "im2"),
        "shard 1/2 takes images 0 and 2"
    );
    Command::cargo_bin("explainseg")
        .unwrap()
        .args(["--quiet", "eval-merge", "--out"])
        .arg(&merged)
        .arg(&s1)
        .arg(&s2)
        .assert()
        .success();
    assert_eq!(rows(&merged), rows(&whole));
    assert_eq!(
        csv_without_seconds(&merged),
        csv_without_seconds(&whole),
        "merged rows come in the order of a single run"
    );
    assert_eq!(
        summary(&merged)["methods"].as_array().unwrap().len(),
        METHODS.len()
    );
    assert_eq!(
        summary(&merged)["chance"],
        summary(&whole)["chance"],
        "chance rows merge into the single run's"
    );
    assert_eq!(
        summary(&whole)["chance"].as_array().unwrap().len(),
        CHANCE.len()
    );
    for (m, w) in summary(&merged)["methods"]
        .as_array()
        .unwrap()
        .iter()
        .zip(summary(&whole)["methods"].as_array().unwrap())
    {
        assert_eq!(
            (&m["variant"], &m["images"], &m["miou"], &m["dice"]),
            (&w["variant"], &w["images"], &w["miou"], &w["dice"])
        );
    }
    assert!(merged.join("summary.md").is_file());

    // Merging runs of different configurations, or a folder that is no eval output, fails.
    let other = tmp.path().join("other");
    run_json(&mut eval(&root, &other, &["--limit", "1", "--no-crf"]));
    let a = Command::cargo_bin("explainseg")
        .unwrap()
        .args(["eval-merge", "--out"])
        .arg(tmp.path().join("m2"))
        .arg(&s1)
        .arg(&other)
        .assert()
        .code(1);
    assert!(String::from_utf8_lossy(&a.get_output().stderr).contains("another configuration"));
    Command::cargo_bin("explainseg")
        .unwrap()
        .args(["eval-merge", "--out"])
        .arg(tmp.path().join("m3"))
        .arg(&root)
        .assert()
        .code(1);
}

#[test]
fn usage_errors_exit_2_and_help_documents_exit_codes() {
    let help = Command::cargo_bin("explainseg")
        .unwrap()
        .arg("--help")
        .assert()
        .success();
    let text = String::from_utf8_lossy(&help.get_output().stdout).to_string();
    assert!(
        text.contains("Exit codes") && text.contains("2  usage error"),
        "{text}"
    );
    for cmd in [
        "attribute",
        "segment",
        "mask",
        "crf",
        "ncut",
        "bench",
        "eval",
        "eval-merge",
    ] {
        let a = Command::cargo_bin("explainseg")
            .unwrap()
            .args([cmd, "--help"])
            .assert()
            .success();
        let text = String::from_utf8_lossy(&a.get_output().stdout).to_string();
        assert!(text.contains("Example"), "`{cmd} --help` has no example");
    }
    let tmp = tempfile::tempdir().unwrap();
    for bad in [
        ["--dataset", "nope"],
        ["--shard", "3/2"],
        ["--variants", "a,zz"],
    ] {
        let mut cmd = eval(tmp.path(), &tmp.path().join("o"), &[]);
        cmd.args(bad).assert().code(2);
    }
    // A data set without masks/ cannot be evaluated; a missing root is named.
    std::fs::create_dir_all(tmp.path().join("images")).unwrap();
    image::RgbImage::new(8, 8)
        .save(tmp.path().join("images/a.png"))
        .unwrap();
    let a = eval(tmp.path(), &tmp.path().join("o"), &[])
        .assert()
        .code(1);
    assert!(String::from_utf8_lossy(&a.get_output().stderr).contains("no ground-truth mask"));
    let a = eval(&tmp.path().join("absent"), &tmp.path().join("o"), &[])
        .assert()
        .code(1);
    assert!(String::from_utf8_lossy(&a.get_output().stderr).contains("absent"));
    let a = eval(tmp.path(), &tmp.path().join("o"), &["--device", "cuda"])
        .assert()
        .code(1);
    assert!(String::from_utf8_lossy(&a.get_output().stderr).contains("CUDA"));
}

#[test]
fn shared_explanation_gives_what_segment_gives() {
    use explainseg::attr::{explain, IgConfig};
    use explainseg::backend::cpu::CpuEngine;
    use explainseg::model::{LoadOptions, Vit};
    use explainseg::pipeline::{
        pixels_from_input, segment, segment_explained, PipelineConfig, Variant,
    };

    let vit = Vit::load(
        &fixture("engine", "s16_tiny/model_timm.safetensors"),
        None,
        &LoadOptions::default(),
    )
    .unwrap();
    let x = common::dyn4(common::npy_f32(&fixture("engine", "s16_tiny/input.npy")));
    let mut cfg = PipelineConfig::default();
    cfg.explain.ig = IgConfig {
        n_steps: 4,
        ..Default::default()
    };
    cfg.explain.noise_tunnel = None;
    let pixels = pixels_from_input(x.view(), cfg.explain.mean, cfg.explain.std);
    let engine = CpuEngine::new(&vit);
    let e = explain(&engine, x.view(), &cfg.explain, None).unwrap();
    for v in [Variant::A, Variant::C, Variant::TokenCut] {
        let alone = segment(&engine, x.view(), pixels.view(), v, &cfg, None).unwrap();
        let shared =
            segment_explained(&engine, x.view(), pixels.view(), v, &cfg, Some(&e)).unwrap();
        assert_eq!(alone.mask, shared.mask, "{}", v.name());
        assert_eq!(alone.predicted, shared.predicted);
    }
    let err = segment_explained(&engine, x.view(), pixels.view(), Variant::XNCut, &cfg, None)
        .unwrap_err();
    assert!(err.to_string().contains("explanation"), "{err}");
}

#[test]
fn id_lists_select_images_and_stored_explanations_give_the_same_scores() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("data");
    tiny_dataset(&root);
    let ids = tmp.path().join("ids.txt");
    std::fs::write(&ids, "# two of the four\nim1\n\nim3  # trailing comment\n").unwrap();
    let cache = tmp.path().join("explanations");
    let with_ids = |out: &Path, extra: &[&str]| {
        let mut cmd = eval(&root, out, extra);
        cmd.arg("--ids").arg(&ids);
        cmd
    };

    // Without a cache, then filling it, then reading it: identical rows.
    let plain = tmp.path().join("plain");
    run_json(&mut with_ids(&plain, &[]));
    let ids_seen: std::collections::BTreeSet<String> =
        rows(&plain).keys().map(|(id, _)| id.clone()).collect();
    assert_eq!(ids_seen.into_iter().collect::<Vec<_>>(), ["im1", "im3"]);
    let fill = tmp.path().join("fill");
    let reuse = tmp.path().join("reuse");
    for out in [&fill, &reuse] {
        let mut cmd = with_ids(out, &[]);
        cmd.arg("--explanations").arg(&cache);
        run_json(&mut cmd);
        assert_eq!(rows(out), rows(&plain));
    }
    assert!(cache.join("im1.attr.npy").is_file() && cache.join("im3.json").is_file());
    assert!(!cache.join("im0.json").exists());

    // Another post-processing setting reuses the explanations; other IG settings are
    // refused rather than silently mixed.
    let mut other_post = with_ids(&tmp.path().join("nocrf"), &["--no-crf"]);
    other_post.arg("--explanations").arg(&cache);
    run_json(&mut other_post);
    let mut other_ig = with_ids(&tmp.path().join("trap"), &["--method", "riemann_trapezoid"]);
    other_ig.arg("--explanations").arg(&cache);
    let err = other_ig.assert().failure().get_output().stderr.clone();
    assert!(String::from_utf8_lossy(&err).contains("another model"));

    // An id that the data set does not have is an error naming it.
    std::fs::write(&ids, "im1\nnot_there\n").unwrap();
    let err = with_ids(&tmp.path().join("bad"), &[])
        .assert()
        .failure()
        .get_output()
        .stderr
        .clone();
    assert!(String::from_utf8_lossy(&err).contains("not_there"));

    // --skip-empty leaves out an image whose ground truth has no foreground.
    std::fs::write(&ids, "im1\nim3\n").unwrap();
    image::GrayImage::new(80, 72)
        .save(root.join("masks/im3.png"))
        .unwrap();
    let skipping = tmp.path().join("skip");
    let json = run_json(&mut with_ids(&skipping, &["--skip-empty"]));
    assert_eq!(json["empty_left_out"], 1);
    assert_eq!(json["evaluated"], 1);
    assert!(rows(&skipping).keys().all(|(id, _)| id == "im1"));
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// eval-merge's stderr for these shard folders; it must fail with exit code 1.
fn merge_error(out: &Path, shards: &[&Path]) -> String {
    let a = Command::cargo_bin("explainseg")
        .unwrap()
        .args(["eval-merge", "--out"])
        .arg(out)
        .args(shards)
        .assert()
        .code(1);
    String::from_utf8_lossy(&a.get_output().stderr).to_string()
}

#[test]
fn merge_refuses_shard_sets_that_are_not_one_whole_run_and_names_the_culprit() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("data");
    tiny_dataset(&root);
    let dir = |name: &str| tmp.path().join(name);
    let (s1, s2) = (dir("s1"), dir("s2"));
    run_json(&mut eval(&root, &s1, &["--shard", "1/2"]));
    run_json(&mut eval(&root, &s2, &["--shard", "2/2"]));
    let shard = common::json(&s2.join("shard.json"));
    assert_eq!(
        (&shard["shard"], &shard["images"], &shard["complete"]),
        (&"2/2".into(), &2.into(), &true.into())
    );

    // A missing shard is named by K/N.
    let err = merge_error(&dir("m1"), &[&s1]);
    assert!(err.contains("missing shard 2/2"), "{err}");

    // The same shard twice: both folders are named.
    let s1_copy = dir("s1-copy");
    copy_dir(&s1, &s1_copy);
    let err = merge_error(&dir("m2"), &[&s1, &s1_copy, &s2]);
    assert!(
        err.contains("duplicate shard 1/2")
            && err.contains(&s1.display().to_string())
            && err.contains(&s1_copy.display().to_string()),
        "{err}"
    );

    // Another configuration: the odd folder and both fingerprints are named.
    let other = dir("other");
    run_json(&mut eval(&root, &other, &["--shard", "2/2", "--no-crf"]));
    let err = merge_error(&dir("m3"), &[&s1, &other]);
    assert!(
        err.contains("another configuration") && err.contains(&other.display().to_string()),
        "{err}"
    );

    // A shard cut short (--limit stands for a killed task), and one whose rows were lost.
    let partial = dir("partial");
    run_json(&mut eval(
        &root,
        &partial,
        &["--shard", "2/2", "--limit", "1"],
    ));
    assert_eq!(common::json(&partial.join("shard.json"))["complete"], false);
    let err = merge_error(&dir("m4"), &[&s1, &partial]);
    assert!(
        err.contains(&format!("{} (shard 2/2) is incomplete", partial.display()))
            && err.contains("1 of its 2 images"),
        "{err}"
    );
    let truncated = dir("truncated");
    copy_dir(&s2, &truncated);
    let csv = std::fs::read_to_string(s2.join("per_image.csv")).unwrap();
    let kept: Vec<&str> = csv.lines().take(1 + METHODS.len()).collect();
    std::fs::write(truncated.join("per_image.csv"), kept.join("\n") + "\n").unwrap();
    let err = merge_error(&dir("m5"), &[&s1, &truncated]);
    assert!(
        err.contains(&format!(
            "{} (shard 2/2) is incomplete",
            truncated.display()
        )),
        "{err}"
    );
    // Resuming the cut-short shard completes it, and the merge goes through.
    run_json(&mut eval(&root, &partial, &["--shard", "2/2"]));
    Command::cargo_bin("explainseg")
        .unwrap()
        .args(["--quiet", "eval-merge", "--out"])
        .arg(dir("m6"))
        .arg(&s1)
        .arg(&partial)
        .assert()
        .success();
    assert_eq!(rows(&dir("m6")).len(), 4 * (METHODS.len() + CHANCE.len()));

    // Shards of another split, and a folder written before shard.json existed.
    let third = dir("third");
    run_json(&mut eval(&root, &third, &["--shard", "1/3"]));
    let err = merge_error(&dir("m7"), &[&s2, &third]);
    assert!(
        err.contains(&format!("{} is shard 1/3", third.display())),
        "{err}"
    );
    let old = dir("old");
    copy_dir(&s2, &old);
    std::fs::remove_file(old.join("shard.json")).unwrap();
    let err = merge_error(&dir("m8"), &[&s1, &old]);
    assert!(
        err.contains(&format!("{} has no shard.json", old.display())),
        "{err}"
    );
}
