//! `explainseg segment`: one image through a variant of the method (or a baseline).

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use explainseg::attr::features::{FeatureConfig, FeatureSource};
use explainseg::attr::ExplainConfig;
use explainseg::image::{decode_image_file, network_input};
use explainseg::pipeline::{segment, PipelineConfig, Preset, Variant};
use explainseg::post::ncut::{NcutForegroundParams, NcutSplit, ShiMalikParams};
use explainseg::render::{overlay, to_original, write_mask_png, write_rgb_png};

use crate::args::{IgArgs, InputArgs, ModelArgs};
use crate::commands::attribute::{write_all, Writer};

/// An owned output writer, for files that exist only for some variants.
type BoxedWriter<'a> = Box<dyn Fn(&std::path::Path) -> explainseg::Result<()> + 'a>;
use crate::output::{progress_bar, Output};

#[derive(Args, Debug)]
pub struct SegmentArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub input: InputArgs,
    #[command(flatten)]
    pub ig: IgArgs,
    /// a (fusion+morphology), b (fusion+NCut), c (XAI+morphology), xncut (XAI+NCut), tokencut, maskcut.
    #[arg(long, default_value = "xncut")]
    pub variant: String,
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// Output folder: mask.png, mask_pre_crf.png, overlay.png, relevance.npy, feature.npy, fused.npy.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

/// The pipeline's settings after the explanation (shared by `segment` and `eval`).
#[derive(Args, Debug, Clone)]
pub struct PipelineArgs {
    /// Skip the DenseCRF refinement.
    #[arg(long)]
    pub no_crf: bool,
    /// Feature map for fusion: key-pc1, query-pc1, value-pc1, token-pc1, key-norm, token-norm, cls-attn.
    #[arg(long, default_value = "key-pc1")]
    pub feature: String,
    /// Block the feature map is read from [default: the last].
    #[arg(long)]
    pub layer: Option<usize>,
    /// Patch grid → pixels for fusion: nearest or bilinear.
    #[arg(long, default_value = "nearest")]
    pub upsample: String,
    /// Channel reduction of the attribution: abs, sum, positive, sum_abs.
    #[arg(long, default_value = "abs")]
    pub reduce: String,
    /// Gaussian σ (pixels) on the relevance map before scaling; 0 = off [default:
    /// the preset's, 0 for paper (the paper's), one patch for stable].
    #[arg(long)]
    pub smooth: Option<f32>,
    /// Gaussian σ (pixels) on the map the NCut variants cut; 0 = off [default: the
    /// preset's, 0 for paper, one patch for stable].
    #[arg(long)]
    pub ncut_smooth: Option<f32>,
    /// Relevance scaling: minmax, cummass (Captum's 98% mass), percentile, none.
    #[arg(long, default_value = "minmax")]
    pub normalize: String,
    /// Shi–Malik NCut: graph grid side [default: the preset's, 56 for paper], σr (map
    /// units), σx and radius (grid cells).
    #[arg(long)]
    pub ncut_grid: Option<usize>,
    #[arg(long, default_value_t = 0.1)]
    pub ncut_sigma_r: f32,
    #[arg(long, default_value_t = 4.0)]
    pub ncut_sigma_x: f32,
    #[arg(long, default_value_t = 5.0)]
    pub ncut_radius: f32,
    /// Morphology chain: skip the histogram equalisation before Otsu [default: the
    /// preset's, equalise for paper, not for stable]; --equalize forces it on.
    #[arg(long, conflicts_with = "equalize")]
    pub no_equalize: bool,
    #[arg(long)]
    pub equalize: bool,
    /// Morphology chain: remove the components that touch the image border (the
    /// paper's "border artefacts"; off by default, see docs/results.md).
    #[arg(long)]
    pub clear_border: bool,
    /// Morphology chain: radius (pixels) of the dilation and of the erosion after it.
    #[arg(long, default_value_t = 3)]
    pub morph_radius: usize,
    /// Morphology chain: components smaller than this many pixels are removed.
    #[arg(long, default_value_t = 64)]
    pub min_object: usize,
    /// NCut variants' mask: σr = K·std of the map, replacing --ncut-sigma-r (0: use
    /// --ncut-sigma-r), and a dilation of the cut by a disk of PX pixels (0: off).
    #[arg(long, value_name = "K", default_value_t = 0.5)]
    pub ncut_sigma_r_std: f32,
    #[arg(long, value_name = "PX", default_value_t = 8)]
    pub ncut_dilation: usize,
    /// NCut variants: where the Fiedler vector is split, mean or otsu [default: the
    /// preset's, mean for paper].
    #[arg(long)]
    pub ncut_split: Option<String>,
    /// TokenCut τ and MaskCut τ / number of masks.
    #[arg(long, default_value_t = 0.2)]
    pub tokencut_tau: f32,
    #[arg(long, default_value_t = 0.15)]
    pub maskcut_tau: f32,
    #[arg(long, default_value_t = 3)]
    pub maskcut_masks: usize,
}

impl PipelineArgs {
    /// The pipeline configuration these flags describe, around `explain`, with
    /// `preset`'s values where a flag is not given (its smoothing for a model of
    /// `patch_px`-pixel patches).
    pub fn config(
        &self,
        explain: ExplainConfig,
        preset: Preset,
        patch_px: usize,
    ) -> Result<PipelineConfig> {
        let mut cfg = PipelineConfig {
            explain,
            ..Default::default()
        };
        if self.no_crf {
            cfg.crf = None;
        }
        cfg.feature = FeatureConfig {
            source: feature_source(&self.feature)?,
            layer: self.layer,
        };
        cfg.upsample = self.upsample.parse()?;
        cfg.reduction = self.reduce.parse()?;
        cfg.normalizer = self.normalize.parse()?;
        cfg.ncut = ShiMalikParams {
            grid: Some({
                let n = self.ncut_grid.unwrap_or(preset.ncut_grid());
                (n, n)
            }),
            sigma_r: self.ncut_sigma_r,
            sigma_x: self.ncut_sigma_x,
            radius: self.ncut_radius,
        };
        cfg.morphology.clear_border = self.clear_border;
        cfg.morphology.dilation_radius = self.morph_radius;
        cfg.morphology.erosion_radius = self.morph_radius;
        cfg.morphology.min_object_size = self.min_object;
        cfg.ncut_foreground = NcutForegroundParams {
            sigma_r_per_std: (self.ncut_sigma_r_std > 0.0).then_some(self.ncut_sigma_r_std),
            dilation_radius_px: self.ncut_dilation,
            ..Default::default()
        };
        // The preset's rules, then the flags given explicitly.
        preset.apply_post_rules(&mut cfg, patch_px);
        if let Some(sigma) = self.smooth {
            cfg.smooth_sigma = sigma;
        }
        if let Some(sigma) = self.ncut_smooth {
            cfg.ncut_smooth_sigma = sigma;
        }
        if self.equalize || self.no_equalize {
            cfg.morphology.equalize = self.equalize;
        }
        if let Some(split) = &self.ncut_split {
            cfg.ncut_foreground.split = split.parse::<NcutSplit>()?;
        }
        cfg.morphology.validate()?;
        cfg.ncut_foreground.validate()?;
        cfg.tokencut.tau = self.tokencut_tau;
        cfg.maskcut.tau = self.maskcut_tau;
        cfg.maskcut.n_masks = self.maskcut_masks;
        Ok(cfg)
    }
}

fn feature_source(name: &str) -> Result<FeatureSource> {
    use explainseg::attr::features::{Descriptor, Reduce};
    use explainseg::backend::cpu::Facet;
    let (what, how) = name.split_once('-').unwrap_or((name, ""));
    if what == "cls" && how == "attn" {
        return Ok(FeatureSource::ClsAttention { heads: Vec::new() });
    }
    let descriptor = match what {
        "key" => Descriptor::Facet(Facet::Key),
        "query" => Descriptor::Facet(Facet::Query),
        "value" => Descriptor::Facet(Facet::Value),
        "token" => Descriptor::Tokens,
        _ => bail!("--feature `{name}` is not one of key-pc1, query-pc1, value-pc1, token-pc1, key-norm, token-norm, cls-attn"),
    };
    let reduce = match how {
        "pc1" => Reduce::FirstPrincipalComponent,
        "norm" => Reduce::Norm,
        _ => bail!("--feature `{name}` is not one of key-pc1, query-pc1, value-pc1, token-pc1, key-norm, token-norm, cls-attn"),
    };
    Ok(FeatureSource::Descriptor { descriptor, reduce })
}

pub fn run(args: &SegmentArgs, out: &Output) -> Result<()> {
    let variant: Variant = args.variant.parse()?;
    let vit = args.model.load()?;
    let engine = args.model.engine(&vit)?;
    let pre = args.input.preprocess_config(vit.normalization)?;
    let decoded = decode_image_file(&args.input.image)?;
    let (x, plan, pixels) = network_input(&decoded, &pre)?;
    let cfg = args.pipeline.config(
        args.ig.explain_config(&pre.normalization)?,
        args.ig.preset()?,
        vit.config.patch,
    )?;
    let passes = cfg.explain.passes();
    let bar = progress_bar(out, passes as u64, "IG passes");
    let tick = |done: usize, total: usize| {
        bar.set_position(done as u64);
        if done == total {
            // The mask and DenseCRF stages follow; keep the clock visibly running.
            bar.set_message("IG done; mask + DenseCRF");
            bar.enable_steady_tick(std::time::Duration::from_millis(200));
        }
        true
    };
    let cfg = cfg.for_image(&plan);
    let seg = segment(
        engine.as_ref(),
        x.view(),
        pixels.view(),
        variant,
        &cfg,
        Some(&tick),
    )?;
    bar.finish_and_clear();

    let mask = to_original(seg.mask.view(), &plan, false)?;
    let mask_pre = to_original(seg.mask_pre_crf.view(), &plan, false)?;
    let heat = match &seg.relevance {
        Some(r) => Some(to_original(r.view(), &plan, 0.0)?),
        None => None,
    };
    let (oh, ow) = (decoded.height as usize, decoded.width as usize);
    let over = overlay(
        &decoded.to_rgb8(),
        oh,
        ow,
        heat.as_ref().map(|h| h.view()),
        mask.view(),
    )?;
    let mut files: Vec<(&str, BoxedWriter)> = vec![
        ("mask.png", Box::new(|p| write_mask_png(p, mask.view()))),
        (
            "mask_pre_crf.png",
            Box::new(|p| write_mask_png(p, mask_pre.view())),
        ),
        (
            "overlay.png",
            Box::new(move |p| write_rgb_png(p, over.clone(), oh, ow)),
        ),
    ];
    if let Some(r) = &seg.relevance {
        files.push((
            "relevance.npy",
            Box::new(move |p| explainseg::npy::write(p, r)),
        ));
    }
    if let Some(f) = &seg.feature {
        files.push((
            "feature.npy",
            Box::new(move |p| explainseg::npy::write(p, f)),
        ));
    }
    if let Some(f) = &seg.fused {
        files.push(("fused.npy", Box::new(move |p| explainseg::npy::write(p, f))));
    }
    let refs: Vec<(&str, Writer)> = files.iter().map(|(n, f)| (*n, f.as_ref())).collect();
    write_all(&args.out, &refs)?;
    let times: Vec<String> = seg
        .timings
        .iter()
        .map(|(n, s)| format!("{n} {s:.2} s"))
        .collect();
    out.result(
        &format!("class {}\nvariant {}\nforeground {:.1}%\ntimes: {}\npasses {}", seg.predicted, variant.name(), 100.0 * mask.iter().filter(|m| **m).count() as f64 / mask.len() as f64, times.join(", "), seg.passes),
        serde_json::json!({"class": seg.predicted, "variant": variant.name(), "logits": seg.logits.to_vec(), "timings": seg.timings.iter().map(|(n, s)| serde_json::json!({"stage": n, "seconds": s})).collect::<Vec<_>>(), "seconds": seg.timings.iter().map(|(n, s)| (n.to_string(), serde_json::json!(s))).collect::<serde_json::Map<_, _>>(), "passes": seg.passes, "preset": args.ig.preset}),
    );
    Ok(())
}
