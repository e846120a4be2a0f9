//! Training: a generated separable toy set is learned, runs are deterministic
//! under a seed, checkpoints load with `Vit::load` and give the in-memory logits,
//! and a resumed run ends with the weights of an uninterrupted one.

use std::path::Path;
use std::time::Instant;

use explainseg::backend::cpu::CpuEngine;
use explainseg::backend::Engine;
use explainseg::model::{HeadKind, LoadOptions, Vit};
use explainseg::rng::Rng;
use explainseg::train::{
    accuracy, arch_config, fit, load_state, prepare_model, read_checkpoint_meta, save_checkpoint,
    save_state, AugmentConfig, Balance, CheckpointMeta, EpochStats, InMemoryDataset, LabeledImage,
    Optimizer, OptimizerKind, Schedule, Start, TrainConfig, TrainData, Trainable,
};

/// Grey noisy background with one square, dark (class 0) or bright (class 1),
/// of random size and place.
fn toy_set(n: usize, side: usize, seed: u64) -> InMemoryDataset {
    let mut r = Rng::stream(seed, &[99]);
    let images = (0..n)
        .map(|i| {
            let label = i % 2;
            let mut rgb: Vec<u8> = (0..side * side * 3)
                .map(|_| (110.0 + 40.0 * r.uniform()) as u8)
                .collect();
            let size = side / 4 + r.below(side / 4);
            let (y0, x0) = (r.below(side - size), r.below(side - size));
            let value = if label == 1 { 230 } else { 25 };
            for y in y0..y0 + size {
                for x in x0..x0 + size {
                    rgb[(y * side + x) * 3..][..3].fill(value);
                }
            }
            LabeledImage {
                rgb,
                height: side,
                width: side,
                label,
            }
        })
        .collect();
    InMemoryDataset {
        images,
        classes: vec!["dark".into(), "bright".into()],
    }
}

fn small_vit(side: usize, seed: u64, classes: usize) -> Vit {
    let mut vit = Vit::random(arch_config("custom:2,32,4,8", side).unwrap(), classes, seed);
    prepare_model(&mut vit, classes, side, HeadKind::Cls, seed).unwrap();
    vit
}

fn meta(data: &TrainData, side: usize, epoch: usize) -> CheckpointMeta {
    CheckpointMeta {
        normalization: data.normalization,
        class_names: data.class_names.clone(),
        img_size: side,
        epoch,
    }
}

/// Trains and saves checkpoint + state after every epoch into `ckpt`.
fn run(
    vit: &mut Vit,
    data: &TrainData,
    cfg: &TrainConfig,
    start: Option<Start>,
    ckpt: &Path,
    side: usize,
) -> Vec<EpochStats> {
    let fp = cfg.fingerprint();
    let mut save = |v: &Vit, o: &Optimizer, s: &EpochStats| {
        save_checkpoint(ckpt, v, &meta(data, side, s.epoch + 1))?;
        save_state(ckpt, o, s.epoch + 1, &fp)
    };
    fit(vit, data, cfg, start, &mut |_| {}, &mut save).unwrap()
}

fn sgd_cfg(epochs: usize, trainable: Trainable, augment: AugmentConfig, seed: u64) -> TrainConfig {
    TrainConfig {
        epochs,
        batch_size: 16,
        lr: 0.02,
        optimizer: OptimizerKind::Sgd {
            momentum: 0.9,
            weight_decay: 1e-4,
        },
        schedule: Schedule::Step {
            every: 2,
            gamma: 0.5,
        },
        trainable,
        augment,
        balance: Balance::None,
        seed,
    }
}

#[test]
fn toy_set_is_learned_from_scratch() {
    let side = 32;
    let data = TrainData::from_dataset(&toy_set(240, side, 1), side, 0.25, 7).unwrap();
    assert_eq!((data.train.len(), data.val.len()), (180, 60));
    let mut vit = small_vit(side, 3, 2);
    let cfg = TrainConfig {
        epochs: 6,
        batch_size: 16,
        lr: 2e-3,
        optimizer: OptimizerKind::AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        },
        schedule: Schedule::Cosine {
            epochs: 6,
            min_lr: 0.0,
        },
        trainable: Trainable::All,
        augment: AugmentConfig {
            hflip: true,
            vflip: true,
            ..Default::default()
        },
        balance: Balance::LossWeights,
        seed: 5,
    };
    let t = Instant::now();
    let history = fit(&mut vit, &data, &cfg, None, &mut |_| {}, &mut |_, _, _| {
        Ok(())
    })
    .unwrap();
    for s in &history {
        println!("{s:?}");
    }
    let val = history.last().unwrap().val_accuracy.unwrap();
    println!(
        "val accuracy {val} after {:.1} s",
        t.elapsed().as_secs_f64()
    );
    assert!(val >= 0.95, "validation accuracy {val}");
    assert_eq!(
        accuracy(&vit, &data.val, &data.normalization, 7).unwrap(),
        val
    );
}

#[test]
fn linear_probe_on_cached_features_reduces_the_loss() {
    let side = 32;
    let data = TrainData::from_dataset(&toy_set(120, side, 2), side, 0.2, 1).unwrap();
    let mut vit = small_vit(side, 4, 2);
    let backbone_before = vit.weights.blocks[1].fc2_w.clone();
    let cfg = sgd_cfg(4, Trainable::Head, AugmentConfig::default(), 3);
    let history = fit(&mut vit, &data, &cfg, None, &mut |_| {}, &mut |_, _, _| {
        Ok(())
    })
    .unwrap();
    assert!(history[3].loss < history[0].loss, "{history:?}");
    assert_eq!(
        vit.weights.blocks[1].fc2_w, backbone_before,
        "the backbone is frozen"
    );
}

#[test]
fn same_seed_gives_bit_identical_checkpoints() {
    let side = 32;
    let dir = tempfile::tempdir().unwrap();
    let data = TrainData::from_dataset(&toy_set(64, side, 3), side, 0.25, 2).unwrap();
    let aug = AugmentConfig {
        vflip: true,
        crop_min_scale: 0.5,
        ..AugmentConfig::paper()
    };
    let train = |seed: u64, name: &str| {
        let mut vit = small_vit(side, 9, 2);
        let path = dir.path().join(name);
        run(
            &mut vit,
            &data,
            &sgd_cfg(2, Trainable::LastBlocks(1), aug, seed),
            None,
            &path,
            side,
        );
        std::fs::read(path).unwrap()
    };
    let a = train(11, "a.safetensors");
    let b = train(11, "b.safetensors");
    let c = train(12, "c.safetensors");
    assert!(a == b, "same seed, different checkpoints");
    assert!(a != c, "another seed should change the run");
}

#[test]
fn checkpoint_round_trip_gives_the_same_logits() {
    let side = 32;
    let dir = tempfile::tempdir().unwrap();
    let data = TrainData::from_dataset(&toy_set(48, side, 4), side, 0.25, 2).unwrap();
    for (kind, trainable) in [
        (HeadKind::Cls, Trainable::All),
        (HeadKind::LastBlocksCls { n: 2 }, Trainable::LastBlocks(1)),
        (HeadKind::ClsAvgPoolInterleaved, Trainable::Head),
    ] {
        let mut vit = Vit::random(arch_config("custom:2,32,4,8", 48).unwrap(), 2, 1);
        // Built at 48², trained at 32²: the positional table is resampled first.
        prepare_model(&mut vit, 2, side, kind, 1).unwrap();
        let path = dir.path().join("m.safetensors");
        run(
            &mut vit,
            &data,
            &sgd_cfg(1, trainable, AugmentConfig::paper(), 1),
            None,
            &path,
            side,
        );
        let loaded = Vit::load(&path, None, &LoadOptions::default()).unwrap();
        assert_eq!(loaded.config, vit.config);
        assert_eq!(loaded.head.as_ref().unwrap().kind, kind, "{kind:?}");
        let x = data.val.batch(&[0, 1, 2], &data.normalization, None);
        let want = CpuEngine::new(&vit).logits(x.view()).unwrap();
        let got = CpuEngine::new(&loaded).logits(x.view()).unwrap();
        assert_eq!(got, want, "{kind:?}");
        let m = read_checkpoint_meta(&path).unwrap();
        assert_eq!(m, meta(&data, side, 1));
        assert_eq!(loaded.normalization, Some(data.normalization));
        let plain = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/engine/s16_tiny/model_timm.safetensors");
        let plain = Vit::load(&plain, None, &LoadOptions::default()).unwrap();
        assert_eq!(plain.normalization, None);
    }
}

#[test]
fn resumed_run_ends_with_the_uninterrupted_weights() {
    let side = 32;
    let dir = tempfile::tempdir().unwrap();
    let data = TrainData::from_dataset(&toy_set(64, side, 5), side, 0.25, 2).unwrap();
    let aug = AugmentConfig {
        crop_min_scale: 0.6,
        ..AugmentConfig::paper()
    };
    for (name, trainable, optimizer) in [
        ("sgd_all", Trainable::All, None),
        (
            "adamw_head",
            Trainable::Head,
            Some(OptimizerKind::AdamW {
                beta1: 0.9,
                beta2: 0.99,
                eps: 1e-8,
                weight_decay: 0.05,
            }),
        ),
    ] {
        let cfg = |epochs| {
            let mut c = sgd_cfg(epochs, trainable, aug, 21);
            if let Some(o) = optimizer {
                c.optimizer = o;
                c.lr = 1e-3;
            }
            c
        };
        let straight = dir.path().join(format!("{name}_straight.safetensors"));
        run(
            &mut small_vit(side, 6, 2),
            &data,
            &cfg(4),
            None,
            &straight,
            side,
        );

        let part = dir.path().join(format!("{name}_part.safetensors"));
        run(
            &mut small_vit(side, 6, 2),
            &data,
            &cfg(2),
            None,
            &part,
            side,
        );
        let mut resumed = Vit::load(&part, None, &LoadOptions::default()).unwrap();
        let (optimizer, epochs_done) =
            load_state(&part, cfg(4).optimizer, &cfg(4).fingerprint()).unwrap();
        assert_eq!(epochs_done, 2);
        let history = run(
            &mut resumed,
            &data,
            &cfg(4),
            Some(Start {
                optimizer,
                epochs_done,
            }),
            &part,
            side,
        );
        assert_eq!(history.iter().map(|s| s.epoch).collect::<Vec<_>>(), [2, 3]);
        assert!(
            std::fs::read(&part).unwrap() == std::fs::read(&straight).unwrap(),
            "{name}: resumed weights differ"
        );
        // Another seed is refused rather than silently mixed.
        assert!(load_state(
            &part,
            cfg(4).optimizer,
            &sgd_cfg(4, trainable, aug, 22).fingerprint()
        )
        .is_err());
    }
}

/// ViT-Ti (12 blocks, D 192, 3 heads) at 64², patches 16 and 8, all parameters
/// training: images/s of forward + backward + SGD step. Run with
/// `RAYON_NUM_THREADS=2 cargo test --release --test train -- --ignored --nocapture`.
#[test]
#[ignore = "timing report, not a check"]
fn training_speed_vit_ti_64() {
    let side = 64;
    let data = TrainData::from_dataset(&toy_set(96, side, 6), side, 0.0, 1).unwrap();
    for arch in ["ti", "custom:12,192,3,8"] {
        for trainable in [Trainable::All, Trainable::Head] {
            let mut vit = Vit::random(arch_config(arch, side).unwrap(), 2, 1);
            prepare_model(&mut vit, 2, side, HeadKind::Cls, 1).unwrap();
            let cfg = TrainConfig {
                epochs: 2,
                batch_size: 32,
                trainable,
                augment: AugmentConfig::paper(),
                ..Default::default()
            };
            let h = fit(&mut vit, &data, &cfg, None, &mut |_| {}, &mut |_, _, _| {
                Ok(())
            })
            .unwrap();
            println!(
                "{arch} 64² {trainable:?}, {} threads: {:.1} images/s (epoch 2)",
                rayon::current_num_threads(),
                h[1].images_per_s
            );
        }
    }
}
