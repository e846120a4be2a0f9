//! `explainseg demo`: the method end to end with nothing downloaded — synthetic
//! lesion images, the embedded small ViT, variants a, b, c and XNCut scored against
//! the true masks, overlays and a Markdown report.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;
use clap::Args;
use explainseg::backend::{engine_for, Device, EngineOptions, Precision};
use explainseg::fsutil::CreatedFiles;
use explainseg::model::{LoadOptions, Vit};
use explainseg::pipeline::{Preset, Variant};
use explainseg::render::{overlay, write_rgb_png};
use explainseg::synth::demo::{
    demo_pipeline_config, mean_over_positives, run_demo, DemoImage, DemoSet,
};
use explainseg::synth::image_id;

use crate::output::{progress_bar, Output};

/// The demo model: ViT (patch 8, width 64, 4 blocks, 2 heads) at 64 × 64 px, two
/// classes (0 normal, 1 lesion), trained from scratch on image labels only
/// (recipe in `assets/README.md`). Embedded in the CLI only: the library a device
/// ships does not carry it.
pub const DEMO_MODEL: &[u8] = include_bytes!("../../../../assets/synth_vit.safetensors");

/// Loads [`DEMO_MODEL`].
pub fn demo_model() -> explainseg::Result<Vit> {
    Vit::from_bytes(
        DEMO_MODEL,
        "assets/synth_vit.safetensors",
        &LoadOptions::default(),
    )
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Output folder: report.md and one overlay per image and variant.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Number of synthetic images (80% with a lesion). 60 keeps each variant's mean
    /// Dice within about ±0.04 from one image seed to another; 10 swung by 0.2.
    #[arg(long, default_value_t = 60)]
    pub count: u64,
    /// Variants to run, comma-separated (tokencut and maskcut for comparison).
    #[arg(long, value_delimiter = ',', default_value = "a,b,c,xncut")]
    pub variants: Vec<String>,
    /// Seed of the images (the model was trained on seed 1, its settings chosen on seed 2).
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Gaussian σ (pixels) on the relevance map [default: the demo setting, 1].
    #[arg(long)]
    pub smooth: Option<f32>,
    /// paper (the demo settings), stable (docs/method.md §6.2 applied on top: its
    /// steps, samples, noise design and σ, smoothing and NCut rule), or
    /// per-variant: stable for c, paper for the others — what measured better on
    /// image seeds other than the demo's (docs/method.md §6.2).
    #[arg(long, default_value = "per-variant")]
    pub preset: String,
    /// Overlays are written for the first this many images (scores cover all).
    #[arg(long, default_value_t = 12)]
    pub overlays: u64,
    /// Overlays are enlarged by this whole factor (nearest neighbour), so the 64-px
    /// images show their contours.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub overlay_scale: u32,
    /// Compute device: cpu, cuda or cuda-emu (the CUDA code path emulated on the CPU).
    #[arg(long, default_value = "cpu")]
    pub device: Device,
    /// GEMM precision of the CUDA engine: f32 (faithful), tf32 or bf16 (tensor
    /// cores, f32 accumulation; docs/gpu.md). The cpu device takes f32 only.
    #[arg(long, default_value = "f32")]
    pub precision: Precision,
}

fn write_overlays(
    dir: &Path,
    im: &DemoImage,
    scale: usize,
    created: &mut CreatedFiles,
) -> explainseg::Result<()> {
    let (h, w, _) = im.sample.image.dim();
    let (sh, sw) = (h * scale, w * scale);
    // Nearest-neighbour enlargement before drawing, so contours stay one pixel wide.
    let big = |y: usize, x: usize| (y / scale, x / scale);
    let rgb: Vec<u8> = ndarray::Array3::from_shape_fn((sh, sw, 3), |(y, x, c)| {
        let (y, x) = big(y, x);
        im.sample.image[[y, x, c]]
    })
    .into_raw_vec_and_offset()
    .0;
    let mask = |m: ndarray::ArrayView2<bool>| {
        ndarray::Array2::from_shape_fn((sh, sw), |(y, x)| m[big(y, x)])
    };
    let id = image_id(im.index);
    let mut png = |name: String, pixels: Vec<u8>| {
        created.track(&dir.join(name), |p| write_rgb_png(p, pixels, sh, sw))
    };
    png(format!("{id}.png"), rgb.clone())?;
    png(
        format!("{id}_truth.png"),
        overlay(&rgb, sh, sw, None, mask(im.sample.mask.view()).view())?,
    )?;
    for (v, seg, _) in &im.results {
        let heat = seg
            .relevance
            .as_ref()
            .map(|r| ndarray::Array2::from_shape_fn((sh, sw), |(y, x)| r[big(y, x)]));
        let o = overlay(
            &rgb,
            sh,
            sw,
            heat.as_ref().map(|r| r.view()),
            mask(seg.mask.view()).view(),
        )?;
        png(format!("{id}_{}.png", v.name()), o)?;
    }
    Ok(())
}

fn report(
    vit: &Vit,
    images: &[DemoImage],
    variants: &[Variant],
    set: &DemoSet,
    presets: &str,
    overlays: usize,
    seconds: f64,
) -> String {
    let mut md = String::new();
    let positives = images.iter().filter(|i| i.sample.lesion).count();
    let _ = writeln!(md, "# explainseg demo\n");
    let _ = writeln!(
        md,
        "{} synthetic {}×{} images (seed {}, {positives} with a lesion), the embedded ViT \
         trained on image labels only, {seconds:.1} s.\n\nDice and IoU are means over the \
         images with a lesion; images without one count only through the classifier \
         (the *predicted* column). Presets: {presets}.\n",
        images.len(),
        set.synth.size,
        set.synth.size,
        set.seed
    );
    let _ = writeln!(md, "| variant | mean Dice | mIoU |\n|---|---|---|");
    for &v in variants {
        if let Some(s) = mean_over_positives(images, v) {
            let _ = writeln!(md, "| {} | {:.3} | {:.3} |", v.name(), s.dice, s.iou);
        }
    }
    let _ = writeln!(
        md,
        "\n## Images\n\nThe first {overlays} images. Green: mask contour; heat: relevance.\n"
    );
    let mut head = String::from("| image | truth | predicted |");
    let mut rule = String::from("|---|---|---|");
    for v in variants {
        let _ = write!(head, " {} |", v.name());
        rule.push_str("---|");
    }
    let _ = writeln!(md, "{head}\n{rule}");
    for im in images.iter().take(overlays) {
        let id = image_id(im.index);
        let predicted = im.predicted().map_or("-".into(), |c| vit.class_name(c));
        let _ = write!(
            md,
            "| ![]({id}.png) | ![]({id}_truth.png) {} | {predicted} |",
            im.sample.label_name()
        );
        for (v, _, s) in &im.results {
            let _ = write!(md, " ![]({id}_{}.png) Dice {:.2} |", v.name(), s.dice);
        }
        md.push('\n');
    }
    md
}

pub fn run(args: &DemoArgs, out: &Output) -> Result<()> {
    let start = Instant::now();
    let variants: Vec<Variant> = args
        .variants
        .iter()
        .map(|v| v.parse())
        .collect::<explainseg::Result<_>>()?;
    let vit = demo_model()?;
    let set = DemoSet {
        count: args.count,
        seed: args.seed,
        ..Default::default()
    };
    let (paper_variants, stable_variants, presets) = match args.preset.as_str() {
        "per-variant" => {
            let (stable, paper): (Vec<Variant>, Vec<Variant>) =
                variants.iter().partition(|v| **v == Variant::C);
            (paper, stable, "per variant: stable for c, paper otherwise")
        }
        name => match name
            .parse::<Preset>()
            .map_err(|e| anyhow::anyhow!("{e}, or per-variant"))?
        {
            Preset::Paper => (variants.clone(), Vec::new(), "paper"),
            Preset::Stable => (Vec::new(), variants.clone(), "stable"),
        },
    };
    let config = |preset: Preset| {
        let mut cfg = demo_pipeline_config();
        preset.apply(&mut cfg, vit.config.patch);
        if let Some(s) = args.smooth {
            cfg.smooth_sigma = s;
        }
        cfg
    };
    let bar = progress_bar(out, args.count * variants.len() as u64, "segmentations");
    let options = EngineOptions {
        device: args.device,
        precision: args.precision,
    };
    let engine = engine_for(options, &vit)?;
    // One run per preset over the same images, merged back in the requested order.
    let mut done_before = 0;
    let mut runs = Vec::new();
    for (preset, vs) in [
        (Preset::Paper, &paper_variants),
        (Preset::Stable, &stable_variants),
    ] {
        if vs.is_empty() {
            continue;
        }
        let tick = |done: usize, _: usize| {
            bar.set_position((done_before + done) as u64);
            true
        };
        runs.push(run_demo(engine.as_ref(), &set, vs, &config(preset), &tick)?);
        done_before += args.count as usize * vs.len();
    }
    let mut images = runs.pop().expect("at least one variant");
    for earlier in runs {
        for (im, other) in images.iter_mut().zip(earlier) {
            im.results.extend(other.results);
        }
    }
    for im in &mut images {
        im.results
            .sort_by_key(|(v, _, _)| variants.iter().position(|w| w == v));
    }
    bar.finish_and_clear();
    // Every file atomic; on a failure the files and folders this run created
    // are removed again.
    let seconds = start.elapsed().as_secs_f64();
    let path = args.out.join("report.md");
    let mut created = CreatedFiles::new();
    let written = created.create_dir_all(&args.out).and_then(|()| {
        let overlays = args.overlays.min(args.count) as usize;
        for im in images.iter().take(overlays) {
            write_overlays(&args.out, im, args.overlay_scale as usize, &mut created)?;
        }
        let text = report(&vit, &images, &variants, &set, presets, overlays, seconds);
        created.track(&path, |p| {
            explainseg::fsutil::write_bytes_atomic(p, text.as_bytes())
        })
    });
    if let Err(e) = written {
        created.remove_all();
        return Err(e.into());
    }
    let (mut dice, mut miou, mut text) = (
        serde_json::Map::new(),
        serde_json::Map::new(),
        String::from("variant  Dice   mIoU\n"),
    );
    for &v in &variants {
        if let Some(s) = mean_over_positives(&images, v) {
            dice.insert(v.name().into(), s.dice.into());
            miou.insert(v.name().into(), s.iou.into());
            let _ = writeln!(text, "{:<8} {:.3}  {:.3}", v.name(), s.dice, s.iou);
        }
    }
    let _ = write!(text, "report: {} ({seconds:.1} s)", path.display());
    out.result(
        &text,
        serde_json::json!({"dice": dice, "miou": miou, "seconds": seconds, "images": images.len(), "presets": presets}),
    );
    Ok(())
}
