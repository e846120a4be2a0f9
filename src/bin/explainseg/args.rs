//! Argument groups shared by several commands.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use explainseg::attr::{
    Baseline, ExplainConfig, IgConfig, Method, Noise, NoiseDesign, NoiseTunnelConfig, NtType,
};
use explainseg::backend::{engine_for, Device, Engine, EngineOptions, Precision};
use explainseg::image::{Normalization, PreprocessConfig, ResizeMode};
use explainseg::model::{LoadOptions, PosEmbedMode, Vit};
use explainseg::pipeline::Preset;

/// Which model to load.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// Backbone safetensors (timm, DINO or HF naming; f32/f16/bf16). May hold the head.
    #[arg(long, value_name = "FILE")]
    pub weights: PathBuf,
    /// Classifier head safetensors (head.*, linear.*, module.linear.*, fc.*, classifier.*).
    #[arg(long, value_name = "FILE")]
    pub head: Option<PathBuf>,
    /// Attention heads [default: file metadata `num_heads`, else width/64].
    #[arg(long)]
    pub heads: Option<usize>,
    /// LayerNorm epsilon [default: file metadata `layer_norm_eps`, else 1e-6].
    #[arg(long)]
    pub eps: Option<f32>,
    /// Positional-embedding interpolation for other input sizes: dino, timm, hf.
    #[arg(long, default_value = "dino")]
    pub pos_embed: String,
    /// Patch grid of the stored positional table, "RxC" (needed only if not square).
    #[arg(long, value_name = "RxC")]
    pub pos_grid: Option<String>,
    /// Compute device: cpu, cuda or cuda-emu (the CUDA code path emulated on the CPU).
    #[arg(long, default_value = "cpu")]
    pub device: Device,
    /// GEMM precision of the CUDA engine: f32 (faithful), tf32 or bf16 (tensor
    /// cores, f32 accumulation; docs/gpu.md). The cpu device takes f32 only.
    #[arg(long, default_value = "f32")]
    pub precision: Precision,
}

impl ModelArgs {
    pub fn load(&self) -> Result<Vit> {
        let pos_grid = match &self.pos_grid {
            Some(s) => Some(
                explainseg::model::weights::parse_grid(s)
                    .with_context(|| format!("--pos-grid `{s}` is not RxC"))?,
            ),
            None => None,
        };
        let opts = LoadOptions {
            heads: self.heads,
            eps: self.eps,
            pos_grid,
            pos_embed_mode: self.pos_embed.parse::<PosEmbedMode>()?,
            head_kind: None,
        };
        Ok(Vit::load(&self.weights, self.head.as_deref(), &opts)?)
    }

    /// The engine for `--device` and `--precision` over a loaded model
    /// ([`engine_for`]: no fallback).
    pub fn engine<'v>(&self, vit: &'v Vit) -> Result<Box<dyn Engine + 'v>> {
        Ok(engine_for(self.engine_options(), vit)?)
    }

    pub fn engine_options(&self) -> EngineOptions {
        EngineOptions {
            device: self.device,
            precision: self.precision,
        }
    }
}

/// One input image and how it becomes the network input.
#[derive(Args, Debug, Clone)]
pub struct InputArgs {
    /// Input image (PNG, JPEG or TIFF; 8/16-bit; gray, RGB or RGBA).
    #[arg(long, value_name = "FILE")]
    pub image: PathBuf,
    #[command(flatten)]
    pub preprocess: PreprocessArgs,
}

impl InputArgs {
    /// The pre-processing for a model that recorded `stored` mean/std (checkpoints
    /// of `explainseg train`); `--mean`/`--std` override it, ImageNet's otherwise.
    pub fn preprocess_config(&self, stored: Option<Normalization>) -> Result<PreprocessConfig> {
        self.preprocess.preprocess_config(stored)
    }
}

/// How an image becomes the network input.
#[derive(Args, Debug, Clone)]
pub struct PreprocessArgs {
    /// Resize to N×N (PIL bicubic). Without it: DINO eval (short side 256, centre crop 224).
    #[arg(long, value_name = "N")]
    pub size: Option<u32>,
    /// Geometry instead of --size: dino (256→224), none (keep the size), or fixed (needs --size).
    #[arg(long)]
    pub resize: Option<String>,
    /// Per-channel mean "r,g,b" on [0,1] [default: the model's stored one, else ImageNet].
    #[arg(long, value_name = "R,G,B")]
    pub mean: Option<String>,
    /// Per-channel std "r,g,b" [default: the model's stored one, else ImageNet].
    #[arg(long, value_name = "R,G,B")]
    pub std: Option<String>,
}

fn triple(s: &str, what: &str) -> Result<[f32; 3]> {
    let v: Vec<f32> = s
        .split(',')
        .map(|p| p.trim().parse::<f32>())
        .collect::<std::result::Result<_, _>>()
        .with_context(|| format!("--{what} `{s}` is not three numbers"))?;
    match v[..] {
        [a, b, c] => Ok([a, b, c]),
        _ => bail!("--{what} `{s}` must have exactly three comma-separated numbers"),
    }
}

impl PreprocessArgs {
    /// The pre-processing for a model that recorded `stored` mean/std (checkpoints
    /// of `explainseg train`); `--mean`/`--std` override it, ImageNet's otherwise.
    pub fn preprocess_config(&self, stored: Option<Normalization>) -> Result<PreprocessConfig> {
        let resize = match (self.resize.as_deref(), self.size) {
            (None | Some("fixed"), Some(n)) => ResizeMode::Fixed {
                height: n,
                width: n,
            },
            (Some("fixed"), None) => bail!("--resize fixed needs --size N"),
            (None | Some("dino"), None) => ResizeMode::dino_eval(),
            (Some("dino"), Some(n)) => ResizeMode::DinoEval {
                short_side: n * 256 / 224,
                crop: n,
            },
            (Some("none"), None) => ResizeMode::None,
            (Some("none"), Some(_)) => bail!("--resize none cannot be combined with --size"),
            (Some(other), _) => bail!("--resize `{other}` is not one of dino, none, fixed"),
        };
        let mut normalization = stored.unwrap_or(Normalization::imagenet());
        if let Some(m) = &self.mean {
            normalization.mean = triple(m, "mean")?;
        }
        if let Some(s) = &self.std {
            normalization.std = triple(s, "std")?;
        }
        Ok(PreprocessConfig {
            resize,
            normalization,
            ..Default::default()
        })
    }
}

/// Integrated Gradients and NoiseTunnel settings (Captum's names and defaults).
#[derive(Args, Debug, Clone)]
pub struct IgArgs {
    /// Class to explain [default: the predicted class].
    #[arg(long)]
    pub target: Option<usize>,
    /// Named setting (docs/method.md §6.2): paper (IG 50 steps × NoiseTunnel 5, the
    /// default) or stable (steadier masks across noise seeds within the same passes).
    /// Flags given explicitly override the preset's values.
    #[arg(long, default_value = "paper")]
    pub preset: String,
    /// IG path points (Captum n_steps) [default: the preset's, 50 for paper].
    #[arg(long)]
    pub steps: Option<usize>,
    /// Path points: gausslegendre, riemann_left, riemann_right, riemann_middle,
    /// riemann_trapezoid (Captum's rules), stratified (random, one stratum of [0, 1]
    /// per pass across all noise samples) [default: the preset's, gausslegendre for
    /// paper].
    #[arg(long)]
    pub method: Option<String>,
    /// NoiseTunnel aggregation: smoothgrad, smoothgrad_sq, vargrad.
    #[arg(long, default_value = "smoothgrad")]
    pub nt_type: String,
    /// NoiseTunnel samples; 0 means plain IG [default: the preset's (5 for paper), or
    /// the count in --noise].
    #[arg(long)]
    pub nt_samples: Option<usize>,
    /// How the noise samples are drawn: independent, antithetic, stratified,
    /// stratified-antithetic [default: the preset's, independent for paper].
    #[arg(long)]
    pub noise_design: Option<String>,
    /// Noise standard deviation in normalised units (absolute, as Captum)
    /// [default: the preset's, 1.0 for paper].
    #[arg(long)]
    pub nt_stdev: Option<f32>,
    /// Inject noise from an (S,3,H,W) float32 .npy instead of drawing it.
    #[arg(long, value_name = "FILE.npy")]
    pub noise: Option<PathBuf>,
    /// Seed of the noise generator.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// IG baseline: zero (normalised, Captum's default), black, blur.
    #[arg(long, default_value = "zero")]
    pub baseline: String,
    /// Forward+backward passes per batch (bounds memory: ~44 MB each for ViT-S/16 at 224²).
    #[arg(long, default_value_t = 10)]
    pub batch: usize,
    /// Skip the convergence delta (saves 2 forwards per sample). The stratified path
    /// rule never computes it: one random point per sample is not a quadrature of
    /// its path, so a per-sample delta checks nothing.
    #[arg(long)]
    pub no_delta: bool,
}

impl IgArgs {
    /// The `--preset`.
    pub fn preset(&self) -> Result<Preset> {
        Ok(self.preset.parse::<Preset>()?)
    }

    pub fn explain_config(&self, norm: &Normalization) -> Result<ExplainConfig> {
        let preset = self.preset()?;
        let design: NoiseDesign = match &self.noise_design {
            Some(d) => d.parse()?,
            None => preset.noise_design(),
        };
        let method = match &self.method {
            Some(m) => m.parse::<Method>()?,
            None => preset.ig_method(),
        };
        let ig = IgConfig {
            method,
            n_steps: self.steps.unwrap_or(preset.ig_steps()),
            multiply_by_inputs: true,
            batch_size: self.batch,
            return_delta: !self.no_delta && method.is_quadrature(),
        };
        ig.validate()?;
        let nt_type: NtType = self.nt_type.parse()?;
        let noise_tunnel = match (&self.noise, self.nt_samples) {
            (Some(_), _) if self.noise_design.is_some() => {
                bail!("--noise-design draws noise; it cannot be combined with --noise")
            }
            (Some(path), samples) => {
                let noise = explainseg::npy::read_f32(path)?;
                let noise = noise.into_dimensionality::<ndarray::Ix4>().map_err(|_| {
                    anyhow::anyhow!("{}: noise must have shape (S,3,H,W)", path.display())
                })?;
                if let Some(s) = samples.filter(|&s| s != noise.dim().0) {
                    bail!(
                        "--nt-samples {s} contradicts --noise, which holds {} samples",
                        noise.dim().0
                    );
                }
                Some(NoiseTunnelConfig {
                    nt_type,
                    noise: Noise::Injected(noise),
                })
            }
            (None, Some(0)) => None,
            (None, samples) => Some(NoiseTunnelConfig {
                nt_type,
                noise: Noise::drawn(
                    samples.unwrap_or(preset.nt_samples()),
                    self.nt_stdev.unwrap_or(preset.nt_stdev()),
                    self.seed,
                    design,
                ),
            }),
        };
        Ok(ExplainConfig {
            ig,
            noise_tunnel,
            baseline: self.baseline.parse::<Baseline>()?,
            target: self.target,
            mean: norm.mean,
            std: norm.std,
        })
    }
}
