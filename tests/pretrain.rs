//! DINO pretraining as a library: a run resumed from its checkpoint after an
//! epoch writes the same bytes as the uninterrupted run (same seed and threads),
//! the student moves towards its teacher, and the checkpoint loads as a plain
//! backbone whose projection head the loader skips.

use std::path::Path;

use explainseg::model::tensor_file::TensorFile;
use explainseg::model::{LoadOptions, Vit};
use explainseg::rng::Rng;
use explainseg::train::arch_config;
use explainseg::train::data::Prepared;
use explainseg::train::dino::checkpoint::FORMAT;
use explainseg::train::dino::{
    dino_init, knn_accuracy, load_dino, pretrain, save_dino_state, save_pretrained, DinoConfig,
    DinoEpochStats, DinoModels, HeadConfig, MultiCropConfig,
};

/// Square 24-px images: a bright or dark disc on a noisy background.
fn images(n: usize) -> Prepared {
    let side = 24;
    let mut r = Rng::stream(11, &[]);
    let images = (0..n)
        .map(|i| {
            let (cx, cy, rad) = (
                4.0 + 16.0 * r.uniform(),
                4.0 + 16.0 * r.uniform(),
                3.0 + 4.0 * r.uniform(),
            );
            let mut img = Vec::with_capacity(side * side * 3);
            for y in 0..side {
                for x in 0..side {
                    let inside = ((x as f32 - cx).powi(2) + (y as f32 - cy).powi(2)).sqrt() < rad;
                    let base = if inside {
                        if i % 2 == 0 {
                            230.0
                        } else {
                            30.0
                        }
                    } else {
                        120.0
                    };
                    for c in 0..3 {
                        img.push(
                            (base + 20.0 * r.uniform() - 10.0 * c as f32).clamp(0.0, 255.0) as u8,
                        );
                    }
                }
            }
            img
        })
        .collect::<Vec<_>>();
    Prepared {
        side,
        labels: vec![0; n],
        images,
    }
}

fn config(epochs: usize) -> DinoConfig {
    DinoConfig {
        epochs,
        batch_size: 6,
        lr: 0.05,
        warmup_epochs: 1,
        head: HeadConfig {
            hidden: 32,
            bottleneck: 16,
            out_dim: 64,
        },
        ..DinoConfig::with_crops(MultiCropConfig::dino(16, 8, 2))
    }
}

fn fresh(cfg: &DinoConfig) -> DinoModels {
    let mut backbone = Vit::random(arch_config("custom:1,16,2,8", 16).unwrap(), 2, 5);
    dino_init(&mut backbone, 5);
    DinoModels::new(&backbone, cfg)
}

fn run(
    m: &mut DinoModels,
    cfg: &DinoConfig,
    data: &Prepared,
    knn: Option<&Prepared>,
    out: &Path,
) -> Vec<DinoEpochStats> {
    let norm = data.channel_stats();
    let fp = cfg.fingerprint();
    pretrain(m, data, &norm, cfg, knn, &mut |_| {}, &mut |m, _| {
        save_pretrained(out, m, &norm, cfg.crops.global_size)?;
        save_dino_state(out, m, &fp)
    })
    .unwrap()
}

fn bytes(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

#[test]
fn resumed_run_writes_the_uninterrupted_runs_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let data = images(14);
    let cfg = config(3);
    let straight = dir.path().join("straight.safetensors");
    let history = run(&mut fresh(&cfg), &cfg, &data, None, &straight);
    assert_eq!(history.len(), 3);

    // Stop after the first epoch (a run configured for 3 whose loop is cut short
    // is what an interruption leaves: same settings, so the same fingerprint).
    let split = dir.path().join("split.safetensors");
    let norm = data.channel_stats();
    let fp = cfg.fingerprint();
    let mut m = fresh(&cfg);
    let err = pretrain(
        &mut m,
        &data,
        &norm,
        &cfg,
        None,
        &mut |_| {},
        &mut |m, _| {
            save_pretrained(&split, m, &norm, cfg.crops.global_size)?;
            save_dino_state(&split, m, &fp)?;
            Err(explainseg::Error::Aborted)
        },
    );
    assert!(err.is_err());
    let mut resumed = load_dino(&split, &cfg).unwrap();
    assert_eq!(resumed.epochs_done, 1);
    let rest = run(&mut resumed, &cfg, &data, None, &split);
    assert_eq!(rest.len(), 2);
    assert_eq!(rest.last().unwrap().loss, history.last().unwrap().loss);
    assert!(bytes(&split) == bytes(&straight), "checkpoints differ");
    let state = |p: &Path| bytes(&explainseg::train::checkpoint::state_path(p));
    assert!(state(&split) == state(&straight), "resume states differ");

    // Other settings cannot resume this run.
    let other = DinoConfig {
        seed: 1,
        ..cfg.clone()
    };
    assert!(load_dino(&split, &other).is_err());
}

#[test]
fn the_student_approaches_the_teacher_and_the_checkpoint_is_a_backbone() {
    let dir = tempfile::tempdir().unwrap();
    let data = images(24);
    let cfg = DinoConfig {
        lr: 0.5,
        ..config(12)
    };
    let out = dir.path().join("dino.safetensors");
    let labelled = Prepared {
        labels: (0..24).map(|i| i % 2).collect(),
        ..data.clone()
    };
    let h = run(&mut fresh(&cfg), &cfg, &data, Some(&labelled), &out);
    for s in &h {
        assert!(s.loss.is_finite() && s.teacher_entropy >= 0.0);
        assert!(s.teacher_entropy <= (64f32).ln() + 1e-4);
        assert!(s.knn_accuracy.is_some_and(|a| (0.0..=1.0).contains(&a)));
    }
    // The health signal: KL(teacher ‖ student) falls over the run.
    // (A toy this small ends collapsed at a high rate — teacher entropy near
    // ln K — which is what the entropies are reported for; the KL checks that
    // the student follows its teacher.)
    let (first, last) = (h[0].student_kl, h.last().unwrap().student_kl);
    assert!(last < 0.5 * first, "KL {first} → {last}");

    let vit = Vit::load(&out, None, &LoadOptions::default()).unwrap();
    assert!(vit.head.is_none());
    assert_eq!(vit.config.pos_grid, Some((2, 2)));
    let file = TensorFile::read(&out).unwrap();
    assert_eq!(file.metadata["format"], FORMAT);
    assert!(file.tensors.contains_key("head.last_layer.weight_v"));
}

#[test]
fn knn_tells_bright_from_dark_discs_with_a_fresh_backbone() {
    // Bright and dark discs differ in their mean colour, which any backbone's
    // features carry: leave-one-out k-NN must find it; shuffled labels must not.
    let data = images(24);
    let norm = data.channel_stats();
    let mut vit = Vit::random(arch_config("custom:1,16,2,8", 24).unwrap(), 2, 5);
    dino_init(&mut vit, 5);
    let labelled = Prepared {
        labels: (0..24).map(|i| i % 2).collect(),
        ..data.clone()
    };
    let acc = knn_accuracy(&vit, &labelled, &norm, 5, 0.07).unwrap();
    assert!(acc >= 0.75, "{acc}"); // chance: 0.5
    let shuffled = Prepared {
        labels: (0..24).map(|i| (i / 2) % 2).collect(),
        ..data
    };
    let chance = knn_accuracy(&vit, &shuffled, &norm, 5, 0.07).unwrap();
    assert!(chance < acc, "{chance} vs {acc}");
}
