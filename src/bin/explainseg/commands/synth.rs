//! `explainseg synth`: a synthetic lesion data set in the generic folder layout.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use explainseg::synth::{write_dataset, SynthConfig};

use crate::output::{progress_bar, Output};

#[derive(Args, Debug)]
pub struct SynthArgs {
    /// Output folder: images/<id>.png, masks/<id>.png (0/255), labels.csv (file,label).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Number of images.
    #[arg(long, default_value_t = 100)]
    pub count: u64,
    /// Image side in pixels.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Seed; image i of seed k is the same whatever the count.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Fraction of images with a lesion.
    #[arg(long, default_value_t = 0.5)]
    pub positive_fraction: f64,
}

pub fn run(args: &SynthArgs, out: &Output) -> Result<()> {
    let cfg = SynthConfig {
        size: args.size,
        positive_fraction: args.positive_fraction,
    };
    let bar = progress_bar(out, args.count, "images");
    write_dataset(&args.out, args.count, args.seed, &cfg, |done| {
        bar.set_position(done)
    })
    .with_context(|| format!("writing the synthetic set to {}", args.out.display()))?;
    bar.finish_and_clear();
    let positives = (0..args.count).filter(|&i| cfg.is_positive(i)).count();
    out.result(
        &format!(
            "{} images ({positives} with a lesion) in {}",
            args.count,
            args.out.display()
        ),
        serde_json::json!({"count": args.count, "positives": positives, "out": args.out}),
    );
    Ok(())
}
