//! `explainseg train`: the classifier head G on frozen features, or fine-tuning
//! of the last blocks or all of the backbone F; checkpoints in timm naming that
//! every other command loads.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use explainseg::dataset::patches::{labelled_patches, PatchConfig};
use explainseg::dataset::{self, DatasetKind, OpenOptions};
use explainseg::model::{HeadKind, LoadOptions, Vit};
use explainseg::train::{
    arch_config, fit, load_state, prepare_model, read_checkpoint_meta, save_checkpoint, save_state,
    split_sources, AugmentConfig, Balance, CheckpointMeta, Dataset, FolderDataset, InMemoryDataset,
    OptimizerKind, Progress, SampleDataset, Schedule, Start, TrainConfig, TrainData, Trainable,
};

use crate::output::{EpochBar, Output};

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Data folder: images/ and labels.csv (columns file,label; label = class name or index;
    /// `file` may be named `image` and may include the images/ prefix); with --dataset, that
    /// data set's folder.
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// Read --data with a data set reader instead (kvasir, busi, nuinsseg, cbis, folder,
    /// monuseg); labels come from the data set, or from --patches.
    #[arg(long, value_parser = parse_dataset)]
    pub dataset: Option<DatasetKind>,
    /// With --dataset: a subset (Kvasir train/val; BUSI and folder train/test, the fixed
    /// 80/20 split that `eval --split test` holds out; CBIS a CSV word; NuInsSeg a tissue).
    #[arg(long, requires = "dataset")]
    pub split: Option<String>,
    /// With --dataset: train on square patches labelled positive/negative by their mask
    /// (the paper's Kvasir set-up), balanced; validation patches come from other images.
    #[arg(long, requires = "dataset")]
    pub patches: bool,
    /// Patch side in pixels of the source image.
    #[arg(long, default_value_t = 224, requires = "patches")]
    pub patch_size: u32,
    /// A patch is positive when at least this fraction of it is foreground.
    #[arg(long, default_value_t = 0.05, requires = "patches")]
    pub patch_min_positive: f64,
    /// Checkpoint to write (safetensors, timm naming); the optimizer state goes
    /// beside it as <name>.state.safetensors.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Start from these weights (backbone, and head if it fits the classes).
    #[arg(long, value_name = "FILE", conflicts_with = "init")]
    pub weights: Option<PathBuf>,
    /// `random` trains from scratch with --arch.
    #[arg(long, value_name = "random")]
    pub init: Option<String>,
    /// Architecture for --init random: ti, s, b, or custom:DEPTH,DIM,HEADS,PATCH.
    #[arg(long, default_value = "s")]
    pub arch: String,
    /// Continue the run saved in this checkpoint (and its .state.safetensors): the
    /// model comes from it (--weights/--init are then ignored), the other settings
    /// must be the saved run's, and --epochs is the new total.
    #[arg(long, value_name = "FILE")]
    pub resume: Option<PathBuf>,
    /// Attention heads of --weights [default: file metadata, else width/64].
    #[arg(long)]
    pub heads: Option<usize>,
    /// Training side in pixels [default: the model's positional grid; 224 for --init random].
    #[arg(long, value_name = "N")]
    pub img_size: Option<usize>,
    /// Head layout: cls (final-normed CLS), last:N (DINO, CLS of the last N blocks), avgpool.
    #[arg(long, default_value = "cls")]
    pub head_kind: String,
    /// What trains besides the head: none, last:K (last K blocks + norm), all.
    #[arg(long, default_value = "none")]
    pub finetune: String,
    #[arg(long, default_value_t = 100)]
    pub epochs: usize,
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// sgd or adamw.
    #[arg(long, default_value = "sgd")]
    pub optimizer: String,
    /// Base learning rate (the paper: 0.005).
    #[arg(long, default_value_t = 0.005)]
    pub lr: f32,
    /// SGD momentum.
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f32,
    /// Weight decay [default: 0 for sgd, 0.05 for adamw].
    #[arg(long)]
    pub weight_decay: Option<f32>,
    /// step (×--step-gamma every --step-every epochs), cosine, or constant.
    #[arg(long, default_value = "step")]
    pub schedule: String,
    #[arg(long, default_value_t = 50)]
    pub step_every: usize,
    #[arg(long, default_value_t = 0.1)]
    pub step_gamma: f32,
    /// Floor of the cosine schedule.
    #[arg(long, default_value_t = 0.0)]
    pub min_lr: f32,
    /// Augmentations, comma-separated: hflip, vflip, jitter, rotate, crop; or none.
    /// The paper's set is hflip,jitter,rotate.
    #[arg(long, default_value = "hflip,jitter,rotate")]
    pub augment: String,
    /// Colour-jitter strength (brightness, contrast, saturation factors in [1−s, 1+s]).
    #[arg(long, default_value_t = 0.2)]
    pub jitter: f32,
    /// Largest rotation in degrees.
    #[arg(long, default_value_t = 15.0)]
    pub rotate_deg: f32,
    /// Smallest area fraction of the random resized crop.
    #[arg(long, default_value_t = 0.5)]
    pub crop_scale: f32,
    /// Class balancing: none, loss (weighted cross-entropy) or sampler.
    #[arg(long, default_value = "none")]
    pub balance: String,
    /// Fraction of each class held out for validation (seeded; with --dataset, of the
    /// source images, so their patches stay on one side).
    #[arg(long, default_value_t = 0.1)]
    pub val_fraction: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

fn parse_dataset(s: &str) -> std::result::Result<DatasetKind, String> {
    s.parse().map_err(|e: explainseg::Error| e.to_string())
}

/// The training data at `side`: the labels.csv folder split by image, or a data
/// set reader's samples (optionally cut into labelled patches) split by source
/// image before patching; then also the ids of the validation sources, which no
/// training step saw (for choosing settings with `eval --ids`).
fn load_data(a: &TrainArgs, side: usize) -> Result<(TrainData, Option<Vec<String>>)> {
    let Some(kind) = a.dataset else {
        let folder = FolderDataset::open(&a.data)?;
        let data = TrainData::from_dataset(&folder, side, a.val_fraction, a.seed)?;
        return Ok((data, None));
    };
    let opts = OpenOptions {
        split: a.split.clone(),
        ..Default::default()
    };
    let sources = dataset::open(kind, &a.data, &opts)?;
    let (train, val) = split_sources(sources, a.val_fraction, a.seed)?;
    let val_ids = val.iter().map(|s| s.id.clone()).collect();
    let (train, val, classes) = if a.patches {
        let cfg = PatchConfig {
            size_px: a.patch_size,
            min_positive_fraction: a.patch_min_positive,
            seed: a.seed,
            ..Default::default()
        };
        let classes = Some(vec!["negative".to_string(), "positive".to_string()]);
        let val = if val.is_empty() {
            val
        } else {
            labelled_patches(&val, &cfg)?
        };
        (labelled_patches(&train, &cfg)?, val, classes)
    } else {
        (train, val, None)
    };
    let train = SampleDataset::new(train, classes)?;
    let classes = train.class_names();
    let data = if val.is_empty() {
        let none = InMemoryDataset {
            images: vec![],
            classes,
        };
        TrainData::from_parts(&train, &none, side)?
    } else {
        TrainData::from_parts(&train, &SampleDataset::new(val, Some(classes))?, side)?
    };
    Ok((data, Some(val_ids)))
}

/// `<checkpoint stem>.val_ids.txt` beside the checkpoint.
fn val_ids_path(checkpoint: &std::path::Path) -> PathBuf {
    checkpoint.with_extension("val_ids.txt")
}

fn parse_finetune(s: &str) -> Result<Trainable> {
    Ok(match s {
        "none" | "head" => Trainable::Head,
        "all" => Trainable::All,
        _ => match s.strip_prefix("last:").and_then(|k| k.parse().ok()) {
            Some(k) if k > 0 => Trainable::LastBlocks(k),
            _ => bail!("--finetune `{s}` is not none, last:K (K ≥ 1) or all"),
        },
    })
}

fn parse_head_kind(s: &str) -> Result<HeadKind> {
    Ok(match s {
        "cls" => HeadKind::Cls,
        "avgpool" => HeadKind::ClsAvgPoolInterleaved,
        _ => match s.strip_prefix("last:").and_then(|k| k.parse().ok()) {
            Some(n) if n > 0 => HeadKind::LastBlocksCls { n },
            _ => bail!("--head-kind `{s}` is not cls, last:N or avgpool"),
        },
    })
}

fn parse_augment(a: &TrainArgs) -> Result<AugmentConfig> {
    let mut cfg = AugmentConfig::default();
    if a.augment == "none" {
        return Ok(cfg);
    }
    for item in a.augment.split(',').map(str::trim) {
        match item {
            "hflip" => cfg.hflip = true,
            "vflip" => cfg.vflip = true,
            "jitter" => cfg.jitter = a.jitter,
            "rotate" => cfg.rotate_deg = a.rotate_deg,
            "crop" => cfg.crop_min_scale = a.crop_scale,
            other => {
                bail!("--augment: `{other}` is not one of hflip, vflip, jitter, rotate, crop, none")
            }
        }
    }
    Ok(cfg)
}

fn train_config(a: &TrainArgs) -> Result<TrainConfig> {
    let optimizer = match a.optimizer.as_str() {
        "sgd" => OptimizerKind::Sgd {
            momentum: a.momentum,
            weight_decay: a.weight_decay.unwrap_or(0.0),
        },
        "adamw" => OptimizerKind::AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: a.weight_decay.unwrap_or(0.05),
        },
        other => bail!("--optimizer `{other}` is not sgd or adamw"),
    };
    let schedule = match a.schedule.as_str() {
        "step" => Schedule::Step {
            every: a.step_every,
            gamma: a.step_gamma,
        },
        "cosine" => Schedule::Cosine {
            epochs: a.epochs,
            min_lr: a.min_lr,
        },
        "constant" => Schedule::Constant,
        other => bail!("--schedule `{other}` is not step, cosine or constant"),
    };
    let balance = match a.balance.as_str() {
        "none" => Balance::None,
        "loss" => Balance::LossWeights,
        "sampler" => Balance::Sampler,
        other => bail!("--balance `{other}` is not none, loss or sampler"),
    };
    Ok(TrainConfig {
        epochs: a.epochs,
        batch_size: a.batch_size,
        lr: a.lr,
        optimizer,
        schedule,
        trainable: parse_finetune(&a.finetune)?,
        augment: parse_augment(a)?,
        balance,
        seed: a.seed,
    })
}

pub fn run(a: &TrainArgs, out: &Output) -> Result<()> {
    let cfg = train_config(a)?;
    let head_kind = parse_head_kind(&a.head_kind)?;
    let opts = LoadOptions {
        heads: a.heads,
        ..Default::default()
    };
    // The model and the side it trains at.
    let (mut vit, side) = match (&a.resume, &a.weights, a.init.as_deref()) {
        (Some(ckpt), _, _) => {
            let meta = read_checkpoint_meta(ckpt)?;
            if let Some(n) = a.img_size.filter(|&n| n != meta.img_size) {
                bail!(
                    "--img-size {n} differs from the resumed run's {}",
                    meta.img_size
                );
            }
            (Vit::load(ckpt, None, &opts)?, meta.img_size)
        }
        (None, Some(w), None) => {
            let vit = Vit::load(w, None, &opts)?;
            let native = vit
                .config
                .pos_grid
                .map(|(r, _)| r * vit.config.patch)
                .unwrap_or(224);
            (vit, a.img_size.unwrap_or(native))
        }
        (None, None, Some("random")) => {
            let side = a.img_size.unwrap_or(224);
            (Vit::random(arch_config(&a.arch, side)?, 2, a.seed), side)
        }
        (None, None, Some(other)) => bail!("--init `{other}`: only `random` is known"),
        (None, None, None) => {
            bail!("give --weights FILE, --init random --arch A, or --resume CKPT")
        }
        (None, Some(_), Some(_)) => bail!("--weights and --init exclude each other"),
    };
    let (data, val_ids) =
        load_data(a, side).with_context(|| format!("reading {}", a.data.display()))?;
    if let Some(ids) = &val_ids {
        let path = val_ids_path(&a.out);
        let text = format!(
            "# validation images of {} (seed {}, {} of the sources): `explainseg eval --ids` this file\n{}",
            a.out.display(),
            a.seed,
            a.val_fraction,
            ids.iter().map(|id| format!("{id}\n")).collect::<String>()
        );
        explainseg::fsutil::write_bytes_atomic(&path, text.as_bytes())?;
    }
    if let Some(ckpt) = &a.resume {
        let saved = read_checkpoint_meta(ckpt)?.class_names;
        if saved != data.class_names {
            bail!(
                "the data's classes {:?} differ from the resumed run's {saved:?}",
                data.class_names
            );
        }
    }
    let classes = data.class_names.len();
    let replaced = prepare_model(&mut vit, classes, side, head_kind, a.seed)?;
    let start = match &a.resume {
        Some(ckpt) => {
            let (optimizer, epochs_done) = load_state(ckpt, cfg.optimizer, &cfg.fingerprint())?;
            Some(Start {
                optimizer,
                epochs_done,
            })
        }
        None => None,
    };
    if !out.quiet && !out.json {
        eprintln!(
            "{}: {} train / {} val images, {} classes {:?}, {side}², mean {:?} std {:?}{}",
            vit.config.name(),
            data.train.len(),
            data.val.len(),
            classes,
            data.class_names,
            data.normalization.mean,
            data.normalization.std,
            if replaced { ", new head" } else { "" }
        );
    }
    let mut bar = EpochBar::new(out);
    let mut progress = |p: Progress| match p {
        Progress::EpochStart {
            epoch,
            epochs,
            batches,
        } => bar.start(epoch, epochs, batches),
        Progress::Batch { loss } => bar.step(loss),
        Progress::EpochEnd(s) => {
            bar.finish();
            if !out.quiet && !out.json {
                let val = s
                    .val_accuracy
                    .map_or("-".to_string(), |v| format!("{:.2}%", 100.0 * v));
                eprintln!(
                    "epoch {:>3}  lr {:.2e}  loss {:.4}  train acc {:.2}%  val acc {val}  {:.1} img/s",
                    s.epoch + 1,
                    s.lr,
                    s.loss,
                    100.0 * s.train_accuracy,
                    s.images_per_s
                );
            }
        }
    };
    let fingerprint = cfg.fingerprint();
    let mut save =
        |vit: &Vit, opt: &explainseg::train::Optimizer, s: &explainseg::train::EpochStats| {
            let meta = CheckpointMeta {
                normalization: data.normalization,
                class_names: data.class_names.clone(),
                img_size: side,
                epoch: s.epoch + 1,
            };
            save_checkpoint(&a.out, vit, &meta)?;
            save_state(&a.out, opt, s.epoch + 1, &fingerprint)
        };
    let history = fit(&mut vit, &data, &cfg, start, &mut progress, &mut save)?;
    let last = history.last();
    let json = serde_json::json!({
        "checkpoint": a.out,
        "val_ids": val_ids.as_ref().map(|_| val_ids_path(&a.out)),
        "epochs_run": history.len(),
        "classes": data.class_names,
        "mean": data.normalization.mean,
        "std": data.normalization.std,
        "history": history.iter().map(|s| serde_json::json!({
            "epoch": s.epoch + 1, "lr": s.lr, "loss": s.loss, "train_accuracy": s.train_accuracy,
            "val_accuracy": s.val_accuracy, "images_per_s": s.images_per_s,
        })).collect::<Vec<_>>(),
    });
    let text = match last {
        Some(s) => format!(
            "saved {} after epoch {} (val acc {})",
            a.out.display(),
            s.epoch + 1,
            s.val_accuracy
                .map_or("-".into(), |v| format!("{:.2}%", 100.0 * v))
        ),
        None => format!("nothing to do: the run already has {} epochs", cfg.epochs),
    };
    out.result(&text, json);
    Ok(())
}
