//! `explainseg demo`: the method end to end with nothing downloaded — synthetic
//! lesion images, the embedded small ViT, variants a, b, c and XNCut scored against
//! the true masks, overlays and a Markdown report.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;
use clap::Args;
use explainseg::backend::{engine_for, Device};
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
    /// Number of synthetic images (80% with a lesion).
    #[arg(long, default_value_t = 10)]
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
    /// paper (the demo settings) or stable (docs/method.md §6.2 applied on top: its
    /// steps, samples, noise design, smoothing and NCut rule; the demo's noise σ).
    #[arg(long, default_value = "paper")]
    pub preset: String,
    /// Compute device: cpu, cuda or cuda-emu (the CUDA code path emulated on the CPU).
    #[arg(long, default_value = "cpu")]
    pub device: Device,
}

fn write_overlays(
    dir: &Path,
    im: &DemoImage,
    created: &mut CreatedFiles,
) -> explainseg::Result<()> {
    let (h, w, _) = im.sample.image.dim();
    let rgb: Vec<u8> = im.sample.image.iter().copied().collect();
    let id = image_id(im.index);
    let mut png = |name: String, pixels: Vec<u8>| {
        created.track(&dir.join(name), |p| write_rgb_png(p, pixels, h, w))
    };
    png(format!("{id}.png"), rgb.clone())?;
    png(
        format!("{id}_truth.png"),
        overlay(&rgb, h, w, None, im.sample.mask.view())?,
    )?;
    for (v, seg, _) in &im.results {
        let heat = seg.relevance.as_ref().map(|r| r.view());
        let o = overlay(&rgb, h, w, heat, seg.mask.view())?;
        png(format!("{id}_{}.png", v.name()), o)?;
    }
    Ok(())
}

fn report(
    vit: &Vit,
    images: &[DemoImage],
    variants: &[Variant],
    set: &DemoSet,
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
         (the *predicted* column).\n",
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
    let _ = writeln!(md, "\n## Images\n\nGreen: mask contour; heat: relevance.\n");
    let mut head = String::from("| image | truth | predicted |");
    let mut rule = String::from("|---|---|---|");
    for v in variants {
        let _ = write!(head, " {} |", v.name());
        rule.push_str("---|");
    }
    let _ = writeln!(md, "{head}\n{rule}");
    for im in images {
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
    let mut cfg = demo_pipeline_config();
    args.preset.parse::<Preset>()?.apply(&mut cfg);
    if let Some(s) = args.smooth {
        cfg.smooth_sigma = s;
    }
    let bar = progress_bar(out, args.count * variants.len() as u64, "segmentations");
    let tick = |done: usize, _: usize| {
        bar.set_position(done as u64);
        true
    };
    let engine = engine_for(args.device, &vit)?;
    let images = run_demo(engine.as_ref(), &set, &variants, &cfg, &tick)?;
    bar.finish_and_clear();
    // Every file atomic; on a failure the files and folders this run created
    // are removed again.
    let seconds = start.elapsed().as_secs_f64();
    let path = args.out.join("report.md");
    let mut created = CreatedFiles::new();
    let written = created.create_dir_all(&args.out).and_then(|()| {
        for im in &images {
            write_overlays(&args.out, im, &mut created)?;
        }
        let text = report(&vit, &images, &variants, &set, seconds);
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
        serde_json::json!({"dice": dice, "miou": miou, "seconds": seconds}),
    );
    Ok(())
}
