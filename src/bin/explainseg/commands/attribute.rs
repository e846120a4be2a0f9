//! `explainseg attribute`: Integrated Gradients (+ NoiseTunnel) of one image.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use explainseg::attr::{explain, normalize, reduce_channels, Normalizer, Reduction};
use explainseg::image::load_and_preprocess;
use ndarray::Axis;

use crate::args::{IgArgs, InputArgs, ModelArgs};
use crate::output::{progress_bar, Output};

#[derive(Args, Debug)]
pub struct AttributeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub input: InputArgs,
    #[command(flatten)]
    pub ig: IgArgs,
    /// Channel reduction for relevance.npy: abs (|Σc|, Captum's default), sum, positive, sum_abs.
    #[arg(long, default_value = "abs")]
    pub reduce: String,
    /// Scaling for relevance.npy: cummass (Captum's 98% mass), percentile (99th), minmax, none.
    #[arg(long, default_value = "minmax")]
    pub normalize: String,
    /// Output folder: input.npy, logits.npy, attribution.npy, relevance.npy.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

pub fn run(args: &AttributeArgs, out: &Output) -> Result<()> {
    let vit = args.model.load()?;
    let pre = args.input.preprocess_config(vit.normalization)?;
    let x = load_and_preprocess(&args.input.image, &pre)?;
    let cfg = args.ig.explain_config(&pre.normalization)?;
    let reduction: Reduction = args.reduce.parse()?;
    let normalizer: Normalizer = args.normalize.parse()?;
    let engine = args.model.engine(&vit)?;
    let passes = cfg.passes();
    let bar = progress_bar(out, passes as u64, "IG passes");
    let tick = |done: usize, _total: usize| {
        bar.set_position(done as u64);
        true
    };
    let start = Instant::now();
    let e = explain(engine.as_ref(), x.view(), &cfg, Some(&tick))?;
    bar.finish_and_clear();
    let seconds = start.elapsed().as_secs_f64();
    let attribution = e.attribution.index_axis(Axis(0), 0).to_owned();
    let relevance = normalize(&reduce_channels(attribution.view(), reduction), normalizer)?;
    write_all(
        &args.out,
        &[
            ("input.npy", &|p| explainseg::npy::write(p, &x)),
            ("logits.npy", &|p| explainseg::npy::write(p, &e.logits)),
            ("attribution.npy", &|p| {
                explainseg::npy::write(p, &attribution)
            }),
            ("relevance.npy", &|p| explainseg::npy::write(p, &relevance)),
        ],
    )?;
    let max_delta = e.deltas.iter().fold(0f32, |m, d| m.max(d.abs()));
    out.result(
        &format!(
            "class {}\nconvergence_delta {}\ntime {:.2} s ({} passes)",
            e.predicted,
            if e.deltas.is_empty() { "not computed".to_string() } else { format!("{max_delta:e} (max |delta| over {} samples)", e.deltas.len()) },
            seconds,
            passes
        ),
        serde_json::json!({"class": e.predicted, "target": e.target, "logits": e.logits.to_vec(), "deltas": e.deltas, "seconds": seconds}),
    );
    Ok(())
}

/// Writes one output file at the given path.
pub type Writer<'a> = &'a dyn Fn(&Path) -> explainseg::Result<()>;

/// Writes every file or none: each is written under a temporary name first;
/// only when all succeeded are they renamed into place. On a failure the
/// temporary files are removed and the files that existed before are untouched.
pub fn write_all(dir: &Path, files: &[(&str, Writer)]) -> Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create output folder {}", dir.display()))?;
    let mut staged: Vec<(std::path::PathBuf, std::path::PathBuf)> = Vec::new();
    let discard = |staged: &[(std::path::PathBuf, std::path::PathBuf)]| {
        for (tmp, _) in staged {
            let _ = std::fs::remove_file(tmp);
        }
    };
    for (name, write) in files {
        let path = dir.join(name);
        let tmp = explainseg::fsutil::temp_sibling(&path);
        if let Err(e) = write(&tmp) {
            let _ = std::fs::remove_file(&tmp);
            discard(&staged);
            return Err(e.into());
        }
        staged.push((tmp, path));
    }
    for (i, (tmp, path)) in staged.iter().enumerate() {
        if let Err(e) = std::fs::rename(tmp, path) {
            discard(&staged[i..]);
            return Err(anyhow::Error::from(e).context(format!("cannot write {}", path.display())));
        }
    }
    Ok(())
}
