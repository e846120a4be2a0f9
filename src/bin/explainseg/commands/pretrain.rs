//! `explainseg pretrain --method dino`: self-supervised pretraining of a ViT
//! backbone on unlabelled images (docs/pretraining.md). Writes the teacher in
//! timm naming, which `train --weights`, `segment` and `eval` load.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use explainseg::dataset::{self, DatasetKind, OpenOptions};
use explainseg::model::{HeadKind, LoadOptions, Vit};
use explainseg::train::data::Prepared;
use explainseg::train::dino::{
    dino_init, folder_samples, load_dino, load_unlabelled, pretrain, save_dino_state,
    save_pretrained, DinoConfig, DinoModels, DinoProgress, HeadConfig, MultiCropConfig,
};
use explainseg::train::{arch_config, prepare_model, Dataset, FolderDataset};

use crate::output::{EpochBar, Output};

#[derive(Args, Debug)]
pub struct PretrainArgs {
    /// The self-supervised method; only `dino` (Caron et al. 2021).
    #[arg(long, default_value = "dino")]
    pub method: String,
    /// Folder of images (PNG, JPEG, TIFF), read recursively; labels are not used.
    /// With --dataset, that data set's folder.
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// Read --data with a data set reader (kvasir, busi, …) and use its images only.
    #[arg(long, value_parser = parse_dataset)]
    pub dataset: Option<DatasetKind>,
    /// With --dataset: a subset (e.g. Kvasir `train`), so held-out images stay unseen.
    #[arg(long, requires = "dataset")]
    pub split: Option<String>,
    /// Checkpoint to write (the teacher, timm naming); the student and optimizer go
    /// beside it as <name>.state.safetensors.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Continue the run saved in this checkpoint; every setting must be the saved run's.
    #[arg(long, value_name = "FILE", conflicts_with = "weights")]
    pub resume: Option<PathBuf>,
    /// Start from this backbone instead of a random one (its classifier head is dropped).
    #[arg(long, value_name = "FILE")]
    pub weights: Option<PathBuf>,
    /// Attention heads of --weights [default: file metadata, else width/64].
    #[arg(long)]
    pub heads: Option<usize>,
    /// Architecture of a random backbone: ti, s, b, or custom:DEPTH,DIM,HEADS,PATCH.
    #[arg(long, default_value = "s")]
    pub arch: String,
    /// Side of the global crops, which is also the checkpoint's native input size.
    #[arg(long, alias = "img-size", default_value_t = 224)]
    pub global_size: usize,
    /// Side of the local crops [default: half the global side].
    #[arg(long)]
    pub local_size: Option<usize>,
    /// Number of local crops per image.
    #[arg(long, default_value_t = 8)]
    pub local_crops: usize,
    /// Area fractions of the global crops, MIN,MAX.
    #[arg(long, default_value = "0.4,1")]
    pub global_crop_scale: String,
    /// Area fractions of the local crops, MIN,MAX.
    #[arg(long, default_value = "0.05,0.4")]
    pub local_crop_scale: String,
    /// Leave out colour jitter, grey scale and solarisation (flips, crops and blur
    /// stay): for data whose main cue is colour, where they drive the targets to
    /// uniform collapse (docs/pretraining.md).
    #[arg(long)]
    pub no_color_aug: bool,
    /// Side the images are loaded at before cropping [default: 2.5 × the global side].
    #[arg(long)]
    pub source_size: Option<usize>,
    #[arg(long, default_value_t = 100)]
    pub epochs: usize,
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Peak learning rate for a batch of 256 (scaled by batch/256, DINO's rule).
    #[arg(long, default_value_t = 0.0005)]
    pub lr: f32,
    #[arg(long, default_value_t = 1e-6)]
    pub min_lr: f32,
    /// Epochs of linear learning-rate warm-up.
    #[arg(long, default_value_t = 10)]
    pub warmup_epochs: usize,
    /// Weight decay at the start and end of its cosine schedule.
    #[arg(long, default_value_t = 0.04)]
    pub weight_decay: f32,
    #[arg(long, default_value_t = 0.4)]
    pub weight_decay_end: f32,
    /// Teacher EMA momentum at the start (cosine to 1).
    #[arg(long, default_value_t = 0.996)]
    pub momentum_teacher: f32,
    /// Teacher temperature after warm-up, and where its warm-up starts.
    #[arg(long, default_value_t = 0.04)]
    pub teacher_temp: f32,
    #[arg(long, default_value_t = 0.04)]
    pub warmup_teacher_temp: f32,
    #[arg(long, default_value_t = 0)]
    pub warmup_teacher_temp_epochs: usize,
    #[arg(long, default_value_t = 0.1)]
    pub student_temp: f32,
    #[arg(long, default_value_t = 0.9)]
    pub center_momentum: f32,
    /// Epochs during which the head's last layer is not updated.
    #[arg(long, default_value_t = 1)]
    pub freeze_last_layer: usize,
    /// Largest gradient norm per parameter tensor (0: no clipping).
    #[arg(long, default_value_t = 3.0)]
    pub clip_grad: f32,
    /// Projection head: hidden width, bottleneck width, output dimension K.
    #[arg(long, default_value_t = 512)]
    pub head_hidden: usize,
    #[arg(long, default_value_t = 128)]
    pub head_bottleneck: usize,
    #[arg(long, default_value_t = 4096)]
    pub out_dim: usize,
    /// A labelled folder (images/ and labels.csv, as `train --data`): the teacher's
    /// leave-one-out k-NN accuracy on it is reported after each epoch (DINO's k = 20, T = 0.07).
    #[arg(long, value_name = "DIR")]
    pub knn_data: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

fn parse_dataset(s: &str) -> std::result::Result<DatasetKind, String> {
    s.parse().map_err(|e: explainseg::Error| e.to_string())
}

fn parse_range(flag: &str, s: &str) -> Result<(f32, f32)> {
    let parts: Vec<f32> = s
        .split(',')
        .map(|v| v.trim().parse())
        .collect::<std::result::Result<_, _>>()
        .with_context(|| format!("--{flag} `{s}` is not MIN,MAX"))?;
    match parts[..] {
        [a, b] => Ok((a, b)),
        _ => bail!("--{flag} `{s}` is not MIN,MAX"),
    }
}

fn dino_config(a: &PretrainArgs) -> Result<DinoConfig> {
    let local = a.local_size.unwrap_or(a.global_size / 2);
    let crops = MultiCropConfig {
        global_scale: parse_range("global-crop-scale", &a.global_crop_scale)?,
        local_scale: parse_range("local-crop-scale", &a.local_crop_scale)?,
        color: !a.no_color_aug,
        ..MultiCropConfig::dino(a.global_size, local, a.local_crops)
    };
    let cfg = DinoConfig {
        epochs: a.epochs,
        batch_size: a.batch_size,
        lr: a.lr,
        min_lr: a.min_lr,
        warmup_epochs: a.warmup_epochs,
        weight_decay: a.weight_decay,
        weight_decay_end: a.weight_decay_end,
        momentum_teacher: a.momentum_teacher,
        teacher_temp: a.teacher_temp,
        warmup_teacher_temp: a.warmup_teacher_temp,
        warmup_teacher_temp_epochs: a.warmup_teacher_temp_epochs,
        student_temp: a.student_temp,
        center_momentum: a.center_momentum,
        freeze_last_layer: a.freeze_last_layer,
        clip_grad: a.clip_grad,
        head: HeadConfig {
            hidden: a.head_hidden,
            bottleneck: a.head_bottleneck,
            out_dim: a.out_dim,
        },
        crops,
        seed: a.seed,
    };
    cfg.validate()?;
    Ok(cfg)
}

/// The run to continue, or a fresh one from --weights or a random --arch.
fn models(a: &PretrainArgs, cfg: &DinoConfig) -> Result<DinoModels> {
    if let Some(ckpt) = &a.resume {
        return load_dino(ckpt, cfg).with_context(|| format!("resuming {}", ckpt.display()));
    }
    let side = cfg.crops.global_size;
    let backbone = match &a.weights {
        Some(w) => {
            let opts = LoadOptions {
                heads: a.heads,
                ..Default::default()
            };
            let mut vit = Vit::load(w, None, &opts)?;
            // Only the positional resampling of prepare_model is wanted; its head is dropped.
            prepare_model(&mut vit, 2, side, HeadKind::Cls, a.seed)?;
            vit
        }
        None => {
            let mut vit = Vit::random(arch_config(&a.arch, side)?, 2, a.seed);
            dino_init(&mut vit, a.seed);
            vit
        }
    };
    Ok(DinoModels::new(&backbone, cfg))
}

pub fn run(a: &PretrainArgs, out: &Output) -> Result<()> {
    if a.method != "dino" {
        bail!("--method `{}`: only `dino` is implemented", a.method);
    }
    let cfg = dino_config(a)?;
    let mut m = models(a, &cfg)?;
    for side in [cfg.crops.global_size, cfg.crops.local_size] {
        m.student.config.grid_for(side, side)?;
    }
    let samples = match a.dataset {
        Some(kind) => {
            let opts = OpenOptions {
                split: a.split.clone(),
                ..Default::default()
            };
            dataset::open(kind, &a.data, &opts)?
        }
        None => folder_samples(&a.data)?,
    };
    let source = a.source_size.unwrap_or(a.global_size * 5 / 2);
    let data = load_unlabelled(&samples, source)
        .with_context(|| format!("reading {}", a.data.display()))?;
    let norm = data.channel_stats();
    let knn = match &a.knn_data {
        Some(dir) => {
            let folder = FolderDataset::open(dir)?;
            let all: Vec<usize> = (0..folder.len()).collect();
            Some(
                Prepared::load(&folder, &all, cfg.crops.global_size)
                    .with_context(|| format!("reading {}", dir.display()))?,
            )
        }
        None => None,
    };
    let c = &cfg.crops;
    if !out.quiet && !out.json {
        eprintln!(
            "{}: {} images at {source}², crops 2×{}² + {}×{}², head {}→{}→{}, mean {:?} std {:?}{}",
            m.student.config.name(),
            data.len(),
            c.global_size,
            c.local_crops,
            c.local_size,
            cfg.head.hidden,
            cfg.head.bottleneck,
            cfg.head.out_dim,
            norm.mean,
            norm.std,
            if m.epochs_done > 0 {
                format!(", resuming after epoch {}", m.epochs_done)
            } else {
                String::new()
            }
        );
    }
    let mut bar = EpochBar::new(out);
    let mut progress = |p: DinoProgress| match p {
        DinoProgress::EpochStart {
            epoch,
            epochs,
            steps,
        } => bar.start(epoch, epochs, steps),
        DinoProgress::Step { loss } => bar.step(loss),
        DinoProgress::EpochEnd(s) => {
            bar.finish();
            if !out.quiet && !out.json {
                eprintln!(
                    "epoch {:>3}  lr {:.2e}  wd {:.3}  m {:.4}  τt {:.3}  loss {:.4}  KL {:.4}  teacher entropy {:.3} (marginal {:.3}) nats{}  {:.1} img/s  {:.2} s/step",
                    s.epoch + 1,
                    s.lr,
                    s.weight_decay,
                    s.momentum,
                    s.teacher_temp,
                    s.loss,
                    s.student_kl,
                    s.teacher_entropy,
                    s.teacher_marginal_entropy,
                    s.knn_accuracy
                        .map_or(String::new(), |v| format!("  k-NN {:.2}%", 100.0 * v)),
                    s.images_per_s,
                    s.seconds_per_step
                );
            }
        }
    };
    let fingerprint = cfg.fingerprint();
    let mut save = |m: &DinoModels, _: &explainseg::train::dino::DinoEpochStats| {
        save_pretrained(&a.out, m, &norm, cfg.crops.global_size)?;
        save_dino_state(&a.out, m, &fingerprint)
    };
    let history = pretrain(
        &mut m,
        &data,
        &norm,
        &cfg,
        knn.as_ref(),
        &mut progress,
        &mut save,
    )?;
    let json = serde_json::json!({
        "checkpoint": a.out,
        "epochs_run": history.len(),
        "images": data.len(),
        "mean": norm.mean,
        "std": norm.std,
        "history": history.iter().map(|s| serde_json::json!({
            "epoch": s.epoch + 1, "lr": s.lr, "weight_decay": s.weight_decay,
            "momentum": s.momentum, "teacher_temp": s.teacher_temp, "loss": s.loss,
            "student_kl": s.student_kl, "knn_accuracy": s.knn_accuracy, "teacher_entropy": s.teacher_entropy,
            "teacher_marginal_entropy": s.teacher_marginal_entropy,
            "images_per_s": s.images_per_s, "seconds_per_step": s.seconds_per_step,
        })).collect::<Vec<_>>(),
    });
    let text = match history.last() {
        Some(s) => format!(
            "saved {} after epoch {} (loss {:.4}, teacher entropy {:.3})",
            a.out.display(),
            s.epoch + 1,
            s.loss,
            s.teacher_entropy
        ),
        None => format!("nothing to do: the run already has {} epochs", cfg.epochs),
    };
    out.result(&text, json);
    Ok(())
}
