//! `explainseg eval`: a data set through the methods, scored against its masks.
//!
//! Each image is segmented with every requested method (`pipeline::segment`, with
//! one relevance map shared by the IG variants through `segment_mapped`; the
//! `seconds` column counts it in full for each of them, as if run alone). The mask
//! is mapped back to the ground truth's size through the image's
//! [`ResizePlan`](explainseg::image::ResizePlan), and IoU and Dice are appended to
//! `per_image.csv` at once (flushed), so an interrupted run keeps its work. A rerun
//! into the same folder skips the (image, method) pairs already there, after
//! checking that `config.json`'s fingerprint (model file, data set, every
//! setting that changes a score) is the same; the methods, `--shard` and
//! `--limit` may differ between runs. Each run also writes `shard.json` (K/N, the
//! shard's image count, whether the run got through them all), from which
//! `eval-merge` checks that it joins every shard once, each finished.
//!
//! An image that cannot be read stops the run with its id in the error; the rows
//! written before it stay, and a rerun continues from there.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use explainseg::attr::{explain, explain_map, ExplainedMap};
use explainseg::dataset::{self, DatasetKind, OpenOptions, Sample};
use explainseg::eval::scores;
use explainseg::pipeline::{segment_mapped, Variant};
use explainseg::render::{read_mask, to_original, write_mask_png};

use crate::args::{IgArgs, ModelArgs, PreprocessArgs};
use crate::commands::eval_cache::ExplanationCache;
use crate::commands::eval_grid::{write_grid, GridRow};
use crate::commands::eval_report::{
    file_hash, fnv1a, read_config, read_rows, summarize, table_rows, write_rows, write_summary,
    Chance, Row, RowWriter, ShardManifest, CHANCE, CONFIG_FILE, FNV_OFFSET, ROWS_FILE,
};
use crate::commands::segment::PipelineArgs;
use crate::output::{progress_bar, Output};
use explainseg::image::network_input;

/// Which methods to run.
#[derive(Debug, Clone, PartialEq)]
pub struct Methods(pub Vec<Variant>);

fn parse_methods(s: &str) -> std::result::Result<Methods, String> {
    if s.trim() == "all" {
        return Ok(Methods(Variant::ALL.to_vec()));
    }
    let mut v: Vec<Variant> = Vec::new();
    for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let variant: Variant = name.parse().map_err(|e: explainseg::Error| e.to_string())?;
        if !v.contains(&variant) {
            v.push(variant);
        }
    }
    if v.is_empty() {
        return Err("no method given".into());
    }
    Ok(Methods(v))
}

/// This run's share of the images: those whose index i has i mod `count` = `index` − 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

fn parse_shard(s: &str) -> std::result::Result<Shard, String> {
    let bad = || format!("`{s}` is not K/N with 1 <= K <= N");
    let (k, n) = s.split_once('/').ok_or_else(bad)?;
    let (index, count) = (
        k.trim().parse::<usize>().map_err(|_| bad())?,
        n.trim().parse::<usize>().map_err(|_| bad())?,
    );
    if index == 0 || index > count {
        return Err(bad());
    }
    Ok(Shard { index, count })
}

fn parse_dataset(s: &str) -> std::result::Result<DatasetKind, String> {
    s.parse().map_err(|e: explainseg::Error| e.to_string())
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Data set layout: kvasir, monuseg, busi, nuinsseg, cbis, folder (images/, masks/, labels.csv).
    #[arg(long, value_parser = parse_dataset)]
    pub dataset: DatasetKind,
    /// The data set's folder.
    #[arg(long, value_name = "DIR")]
    pub root: PathBuf,
    /// Subset: Kvasir train or val; CBIS a word of the CSV names (test, mass, ...); NuInsSeg a
    /// tissue; BUSI and folder train or test (a fixed 80/20 split by a hash of the id).
    #[arg(long)]
    pub split: Option<String>,
    /// MoNuSeg tile side in pixels.
    #[arg(long, default_value_t = dataset::monuseg::TILE_PX)]
    pub tile: u32,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub preprocess: PreprocessArgs,
    #[command(flatten)]
    pub ig: IgArgs,
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// Methods, comma-separated: a, b, c, xncut, tokencut, maskcut, or all.
    #[arg(long, default_value = "all", value_parser = parse_methods)]
    pub variants: Methods,
    /// Run only shard K of N (images i with i mod N = K-1); join shard folders with eval-merge.
    #[arg(long, value_name = "K/N", default_value = "1/1", value_parser = parse_shard)]
    pub shard: Shard,
    /// Only the first N images of this shard (a later run without it resumes).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Only the images whose ids this file lists (one per line; `#` starts a comment),
    /// e.g. the validation images that `explainseg train` wrote beside its checkpoint.
    #[arg(long, value_name = "FILE")]
    pub ids: Option<PathBuf>,
    /// Leave out the images whose ground-truth mask is empty (e.g. BUSI's normal
    /// images, where Dice would only say whether the mask is empty too).
    #[arg(long)]
    pub skip_empty: bool,
    /// Keep each image's explanation in this folder and reuse it in later runs with the
    /// same model, pre-processing and IG settings (a post-processing sweep explains once).
    #[arg(long, value_name = "DIR")]
    pub explanations: Option<PathBuf>,
    /// Example images shown in grid.png (the first of the shard).
    #[arg(long, default_value_t = 4)]
    pub grid_rows: usize,
    /// Output folder: per_image.csv, summary.json, summary.md, grid.png, config.json, shard.json.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

/// The files and folder a run depends on, hashed and resolved once per run
/// (model files can be hundreds of MB).
struct RunInputs {
    root: PathBuf,
    weights_hash: u64,
    head_hash: Option<u64>,
    noise_hash: Option<u64>,
    ids_hash: Option<u64>,
}

impl RunInputs {
    fn read(args: &EvalArgs) -> Result<RunInputs> {
        let hash = |f: &Option<PathBuf>| f.as_deref().map(file_hash).transpose();
        Ok(RunInputs {
            root: args
                .root
                .canonicalize()
                .with_context(|| format!("{}: data set folder not found", args.root.display()))?,
            weights_hash: file_hash(&args.model.weights)?,
            head_hash: hash(&args.model.head)?,
            noise_hash: hash(&args.ig.noise)?,
            ids_hash: hash(&args.ids)?,
        })
    }
}

/// `config.json`: what produced the rows, and its fingerprint.
fn run_config(
    args: &EvalArgs,
    inputs: &RunInputs,
    pipeline_debug: &str,
    pre_debug: &str,
) -> serde_json::Value {
    let canonical = format!(
        "{}|split={:?}|ids={:?}|pipeline={pipeline_debug}",
        explanation_key(args, inputs, pre_debug, ""),
        args.split,
        inputs.ids_hash,
    );
    let fingerprint = format!("{:016x}", fnv1a(canonical.as_bytes(), FNV_OFFSET));
    serde_json::json!({
        "fingerprint": fingerprint,
        "dataset": args.dataset.name(),
        "root": inputs.root.display().to_string(),
        "split": args.split,
        "weights": args.model.weights.display().to_string(),
        "weights_fnv64": format!("{:016x}", inputs.weights_hash),
        "head": args.model.head.as_ref().map(|h| h.display().to_string()),
        "explainseg": env!("CARGO_PKG_VERSION"),
        "settings": canonical,
    })
}

/// What determines an image's explanation (with its id): the data set, the model
/// files and options, the pre-processing and `explain_debug` (the IG settings).
fn explanation_key(
    args: &EvalArgs,
    inputs: &RunInputs,
    pre_debug: &str,
    explain_debug: &str,
) -> String {
    let m = &args.model;
    // Devices round differently, so their explanations and scores are not mixed;
    // the CPU adds nothing, which keeps the keys of earlier CPU runs valid.
    let mut device = match m.device {
        explainseg::backend::Device::Cpu => String::new(),
        other => format!("|device={}", other.name()),
    };
    // Likewise GEMM precisions; f32 adds nothing.
    if m.precision != explainseg::backend::Precision::F32 {
        device.push_str(&format!("|precision={}", m.precision));
    }
    format!(
        "dataset={}|root={}|tile={}|weights={:016x}|head={:?}|noise={:?}|heads={:?}|eps={:?}|pos_embed={}|pos_grid={:?}|preprocess={pre_debug}|explain={explain_debug}{device}",
        args.dataset.name(),
        inputs.root.display(),
        args.tile,
        inputs.weights_hash,
        inputs.head_hash,
        inputs.noise_hash,
        m.heads,
        m.eps,
        m.pos_embed,
        m.pos_grid,
    )
}

/// The ids listed in `path`: one per line, blank lines and `#` comments skipped.
fn read_ids(path: &Path) -> Result<HashSet<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the id list {}", path.display()))?;
    let ids: HashSet<String> = text
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    if ids.is_empty() {
        bail!("{} lists no ids", path.display());
    }
    Ok(ids)
}

/// Keeps the samples listed in `ids`; every listed id must be in the data set.
fn select_ids(samples: Vec<Sample>, ids: &HashSet<String>, path: &Path) -> Result<Vec<Sample>> {
    let known: HashSet<&str> = samples.iter().map(|s| s.id.as_str()).collect();
    let mut missing: Vec<&String> = ids
        .iter()
        .filter(|id| !known.contains(id.as_str()))
        .collect();
    if !missing.is_empty() {
        missing.sort();
        bail!(
            "{}: {} listed id(s) are not in this data set (split), e.g. `{}`",
            path.display(),
            missing.len(),
            missing[0]
        );
    }
    Ok(samples
        .into_iter()
        .filter(|s| ids.contains(&s.id))
        .collect())
}

/// Writes config.json, or checks that the folder's is for the same configuration.
fn claim_output(dir: &Path, config: &serde_json::Value) -> Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create output folder {}", dir.display()))?;
    if dir.join(CONFIG_FILE).exists() {
        let old = read_config(dir)?;
        if old["fingerprint"] != config["fingerprint"] {
            bail!(
                "{} holds results of another configuration (fingerprint {} there, {} now; compare the `settings` in its {CONFIG_FILE}); use another --out",
                dir.display(),
                old["fingerprint"],
                config["fingerprint"]
            );
        }
        return Ok(());
    }
    let text = serde_json::to_string_pretty(config)? + "\n";
    Ok(explainseg::fsutil::write_bytes_atomic(
        &dir.join(CONFIG_FILE),
        text.as_bytes(),
    )?)
}

/// A file name made from a sample id.
fn file_stem(id: &str) -> String {
    // Then no leading dot: an id of `..` (from an image named `...png`) must not
    // name the parent folder.
    explainseg::fsutil::sanitize_id(
        &id.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect::<String>(),
    )
}

pub fn run(args: &EvalArgs, out: &Output) -> Result<()> {
    let methods = &args.variants.0;
    // The model first: a bad weights file or device fails before any other work.
    let vit = args.model.load()?;
    let engine = args.model.engine(&vit)?;
    let pre = args.preprocess.preprocess_config(vit.normalization)?;
    let cfg = args.pipeline.config(
        args.ig.explain_config(&pre.normalization)?,
        args.ig.preset()?,
        vit.config.patch,
    )?;
    let opts = OpenOptions {
        split: args.split.clone(),
        tile_px: args.tile,
    };
    let mut samples = dataset::open(args.dataset, &args.root, &opts)?;
    if let Some(path) = &args.ids {
        samples = select_ids(samples, &read_ids(path)?, path)?;
    }
    if let Some(s) = samples.iter().find(|s| s.mask.is_none()) {
        bail!(
            "sample `{}` has no ground-truth mask; eval needs masks/",
            s.id
        );
    }
    let whole_shard: Vec<&Sample> = samples
        .iter()
        .enumerate()
        .filter(|(i, _)| i % args.shard.count == args.shard.index - 1)
        .map(|(_, s)| s)
        .collect();
    let shard = &whole_shard[..whole_shard.len().min(args.limit.unwrap_or(usize::MAX))];
    let inputs = RunInputs::read(args)?;
    let pre_debug = format!("{pre:?}");
    let config = run_config(args, &inputs, &format!("{cfg:?}"), &pre_debug);
    claim_output(&args.out, &config)?;
    let method_names: Vec<&str> = methods.iter().map(|v| v.name()).collect();
    let mut manifest = ShardManifest {
        index: args.shard.index,
        count: args.shard.count,
        images: whole_shard.len(),
        methods: method_names.iter().map(|m| m.to_string()).collect(),
        empty_left_out: 0,
        complete: false,
    };
    // Written before any work, so a run killed mid-way leaves `complete: false` behind.
    manifest.write(&args.out)?;
    let cache = match &args.explanations {
        Some(dir) => {
            let key = explanation_key(args, &inputs, &pre_debug, &format!("{:?}", cfg.explain));
            Some(ExplanationCache::open(dir, &key)?)
        }
        None => None,
    };

    let rows_path = args.out.join(ROWS_FILE);
    let done: HashSet<(String, String)> = read_rows(&rows_path)?
        .into_iter()
        .map(|r| (r.id, r.variant))
        .collect();
    let mut writer = RowWriter::open(&rows_path)?;
    let grid_dir = args.out.join("grid");
    let bar = progress_bar(out, shard.len() as u64, "eval");
    bar.enable_steady_tick(std::time::Duration::from_millis(500));
    let (mut skipped, mut evaluated, mut empty) = (0usize, 0usize, 0usize);
    // Two stages in two threads: this one explains the next image on the engine's
    // device while the other turns the current one into masks (morphology, NCut, the
    // CRF) and scores them, so the device does not wait for the CPU stages. One
    // image is prepared ahead; the first error of either stage ends the run.
    let prepare = |sample: &Sample| -> Result<Prepared> {
        let todo: Vec<Variant> = methods
            .iter()
            .copied()
            .filter(|v| !done.contains(&(sample.id.clone(), v.name().to_string())))
            .collect();
        let chance_todo: Vec<&'static Chance> = CHANCE
            .iter()
            .filter(|c| !done.contains(&(sample.id.clone(), c.variant.to_string())))
            .collect();
        if todo.is_empty() && chance_todo.is_empty() {
            return Ok(Prepared::Done);
        }
        let loaded = sample
            .load()
            .with_context(|| format!("sample `{}`", sample.id))?;
        let truth = loaded.mask.expect("checked above");
        if args.skip_empty && !truth.iter().any(|&t| t) {
            return Ok(Prepared::Empty);
        }
        let (x, plan, pixels) = network_input(&loaded.image, &pre)
            .with_context(|| format!("sample `{}`", sample.id))?;
        // One explanation serves every IG variant of the image.
        let (explained, explain_s) = if todo.iter().any(|v| v.uses_ig()) {
            let start = Instant::now();
            let taps = cfg.feature_taps(&vit, &todo);
            let e = explain_image(
                engine.as_ref(),
                cache.as_ref(),
                &cfg,
                taps,
                sample,
                x.view(),
            )?;
            (Some(e), start.elapsed().as_secs_f64())
        } else {
            (None, 0.0)
        };
        Ok(Prepared::Ready(Box::new(ReadyImage {
            todo,
            chance_todo,
            truth,
            x,
            plan,
            pixels,
            explained,
            explain_s,
        })))
    };
    std::thread::scope(|scope| -> Result<()> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Prepared>>(1);
        let bar_ahead = bar.clone();
        let producer = scope.spawn(move || {
            for sample in shard {
                bar_ahead.set_message(format!("{} IG", sample.id));
                let prepared = prepare(sample);
                let failed = prepared.is_err();
                // A closed channel: the scoring stage stopped on an error.
                if tx.send(prepared).is_err() || failed {
                    break;
                }
            }
        });
        for (i, (sample, prepared)) in shard.iter().zip(rx.iter()).enumerate() {
            let image = match prepared? {
                Prepared::Done => {
                    skipped += 1;
                    bar.inc(1);
                    continue;
                }
                Prepared::Empty => {
                    empty += 1;
                    bar.inc(1);
                    continue;
                }
                Prepared::Ready(image) => image,
            };
            if evaluated == 0 && skipped > 0 {
                bar.reset_eta();
            }
            let image_cfg = cfg.for_image(&image.plan);
            for &v in &image.todo {
                bar.set_message(format!("{} {}", sample.id, v.name()));
                let start = Instant::now();
                let seg = segment_mapped(
                    engine.as_ref(),
                    image.x.view(),
                    image.pixels.view(),
                    v,
                    &image_cfg,
                    image.explained.as_ref(),
                )
                .with_context(|| format!("sample `{}`, method {}", sample.id, v.name()))?;
                let shared = if v.uses_ig() { image.explain_s } else { 0.0 };
                let mask = to_original(seg.mask.view(), &image.plan, false)?;
                let s = scores(mask.view(), image.truth.view())?;
                writer.append(&Row {
                    id: sample.id.clone(),
                    variant: v.name().to_string(),
                    iou: s.iou,
                    dice: s.dice,
                    class: seg.predicted,
                    seconds: start.elapsed().as_secs_f64() + shared,
                    label: sample.label.clone().unwrap_or_default(),
                })?;
                if i < args.grid_rows {
                    let dir = grid_dir.join(file_stem(&sample.id));
                    std::fs::create_dir_all(&dir)?;
                    write_mask_png(&dir.join(format!("{}.png", v.name())), mask.view())?;
                }
            }
            // The chance rows: fixed masks scored like the methods.
            for c in &image.chance_todo {
                let (h, w) = image.truth.dim();
                let pred = (c.mask)(h, w);
                let s = scores(pred.view(), image.truth.view())?;
                writer.append(&Row {
                    id: sample.id.clone(),
                    variant: c.variant.to_string(),
                    iou: s.iou,
                    dice: s.dice,
                    class: 0,
                    seconds: 0.0,
                    label: sample.label.clone().unwrap_or_default(),
                })?;
            }
            evaluated += 1;
            bar.inc(1);
        }
        drop(rx);
        producer
            .join()
            .map_err(|_| anyhow::anyhow!("the explanation thread panicked"))
    })?;
    bar.finish_and_clear();
    // Every image of the shard was either scored (now or before) or left out as empty:
    // the loop above stops at the first error, and only --limit can cut it short.
    manifest.complete = shard.len() == whole_shard.len();
    manifest.empty_left_out = empty;
    manifest.write(&args.out)?;

    let header = serde_json::json!({
        "dataset": args.dataset.name(),
        "fingerprint": config["fingerprint"],
    });
    let summary = summarize(&read_rows(&rows_path)?, &header);
    let columns = grid(args, shard, methods, &grid_dir)?;
    write_summary(&args.out, &summary, columns.as_deref())?;
    report(out, &summary, evaluated, skipped, empty, &args.out);
    Ok(())
}

/// What the explaining stage hands the scoring stage for one image.
enum Prepared {
    /// Every row of the image is already in `per_image.csv`.
    Done,
    /// Left out by `--skip-empty`.
    Empty,
    Ready(Box<ReadyImage>),
}

struct ReadyImage {
    todo: Vec<Variant>,
    chance_todo: Vec<&'static Chance>,
    truth: ndarray::Array2<bool>,
    x: ndarray::Array4<f32>,
    plan: explainseg::image::ResizePlan,
    pixels: ndarray::Array3<u8>,
    explained: Option<ExplainedMap>,
    explain_s: f64,
}

/// The image's relevance map: from the explanation cache when one is given (it
/// keeps full attributions, reduced here on the host), else on the engine's device.
fn explain_image(
    engine: &dyn explainseg::backend::Engine,
    cache: Option<&ExplanationCache>,
    cfg: &explainseg::pipeline::PipelineConfig,
    taps: Option<explainseg::backend::TapRequest>,
    sample: &Sample,
    x: ndarray::ArrayView4<f32>,
) -> Result<ExplainedMap> {
    let context = || format!("sample `{}`", sample.id);
    let Some(cache) = cache else {
        return explain_map(engine, x, &cfg.explain, &cfg.relevance(), taps, None)
            .with_context(context);
    };
    let stem = file_stem(&sample.id);
    let e = match cache.get(&stem, x.dim())? {
        Some(e) => e,
        None => {
            let e = explain(engine, x, &cfg.explain, None).with_context(context)?;
            cache.put(&stem, &e)?;
            e
        }
    };
    e.map(&cfg.relevance()).with_context(context)
}

/// grid.png from the saved masks of the shard's first images; returns its column names.
fn grid(
    args: &EvalArgs,
    shard: &[&Sample],
    methods: &[Variant],
    grid_dir: &Path,
) -> Result<Option<Vec<String>>> {
    let mut rows = Vec::new();
    for s in shard.iter().take(args.grid_rows) {
        let dir = grid_dir.join(file_stem(&s.id));
        let files: Vec<PathBuf> = methods
            .iter()
            .map(|v| dir.join(format!("{}.png", v.name())))
            .collect();
        if !files.iter().all(|f| f.is_file()) {
            continue;
        }
        let loaded = s.load()?;
        rows.push(GridRow {
            rgb: loaded.image.to_rgb8(),
            height: loaded.image.height as usize,
            width: loaded.image.width as usize,
            truth: loaded.mask.expect("checked in run"),
            masks: files
                .iter()
                .map(|f| read_mask(f))
                .collect::<explainseg::Result<_>>()?,
        });
    }
    if rows.is_empty() {
        return Ok(None);
    }
    write_grid(&args.out.join("grid.png"), &rows)?;
    let mut cols = vec!["image".to_string(), "ground truth".to_string()];
    cols.extend(methods.iter().map(|v| v.name().to_string()));
    Ok(Some(cols))
}

fn report(
    out: &Output,
    summary: &serde_json::Value,
    evaluated: usize,
    skipped: usize,
    empty: usize,
    dir: &Path,
) {
    let left_out = if empty > 0 {
        format!(", {empty} with an empty mask left out")
    } else {
        String::new()
    };
    let mut text = format!(
        "{evaluated} images evaluated, {skipped} already done{left_out}; results in {}\n\n| method | images | mIoU % | Dice % |\n|---|---:|---:|---:|",
        dir.display()
    );
    for m in table_rows(summary) {
        text.push_str(&format!(
            "\n| {} | {} | {:.1} | {:.1} |",
            m["method"].as_str().unwrap_or("?"),
            m["images"],
            100.0 * m["miou"].as_f64().unwrap_or(f64::NAN),
            100.0 * m["dice"].as_f64().unwrap_or(f64::NAN),
        ));
    }
    let mut json = summary.clone();
    json["evaluated"] = evaluated.into();
    json["skipped"] = skipped.into();
    json["empty_left_out"] = empty.into();
    out.result(&text, json);
}

#[derive(Args, Debug)]
pub struct MergeArgs {
    /// Folder for the merged per_image.csv, summary.json, summary.md, config.json.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Output folders of `eval --shard K/N` runs of one configuration: each K once, all finished.
    #[arg(value_name = "SHARD_DIR", required = true, num_args = 1..)]
    pub shards: Vec<PathBuf>,
}

pub fn run_merge(args: &MergeArgs, out: &Output) -> Result<()> {
    let first = read_config(&args.shards[0])?;
    let mut shards: Vec<(&Path, ShardManifest, Vec<Row>)> = Vec::new();
    for dir in &args.shards {
        let config = read_config(dir)?;
        if config["fingerprint"] != first["fingerprint"] {
            bail!(
                "{} was made with another configuration (fingerprint {}, {} has {}; compare the `settings` in their {CONFIG_FILE})",
                dir.display(),
                config["fingerprint"],
                args.shards[0].display(),
                first["fingerprint"]
            );
        }
        if same_dir(dir, &args.out) {
            bail!(
                "--out must not be one of the shard folders ({})",
                dir.display()
            );
        }
        let manifest = ShardManifest::read(dir)?;
        let rows = read_rows(&dir.join(ROWS_FILE))?;
        shards.push((dir.as_path(), manifest, rows));
    }
    check_shards(&shards)?;

    // Image i of the data set is image i / N of shard (i mod N) + 1: interleaving the
    // shards' images restores the order a single run writes.
    shards.sort_by_key(|(_, m, _)| m.index);
    let per_shard: Vec<Vec<Vec<Row>>> = shards
        .iter()
        .map(|(_, _, rows)| rows_by_image(rows))
        .collect();
    let longest = per_shard.iter().map(Vec::len).max().unwrap_or(0);
    let mut rows: Vec<Row> = Vec::new();
    let mut seen = HashSet::new();
    let mut duplicates = 0usize;
    for j in 0..longest {
        for images in &per_shard {
            for r in images.get(j).into_iter().flatten() {
                if seen.insert((r.id.clone(), r.variant.clone())) {
                    rows.push(r.clone());
                } else {
                    duplicates += 1;
                }
            }
        }
    }
    let mut config = first.clone();
    config["merged_from"] = args
        .shards
        .iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .into();
    claim_output(&args.out, &config)?;
    write_rows(&args.out.join(ROWS_FILE), &rows)?;
    let header = serde_json::json!({
        "dataset": first["dataset"],
        "fingerprint": first["fingerprint"],
    });
    let summary = summarize(&rows, &header);
    write_summary(&args.out, &summary, None)?;
    report(out, &summary, 0, 0, 0, &args.out);
    if duplicates > 0 && !out.quiet && !out.json {
        eprintln!("note: {duplicates} rows found in more than one shard were kept once");
    }
    Ok(())
}

/// Rows grouped by image, images in the order they first appear.
fn rows_by_image(rows: &[Row]) -> Vec<Vec<Row>> {
    let mut order: Vec<&str> = Vec::new();
    let mut groups: std::collections::HashMap<&str, Vec<Row>> = Default::default();
    for r in rows {
        groups
            .entry(r.id.as_str())
            .or_insert_with(|| {
                order.push(r.id.as_str());
                Vec::new()
            })
            .push(r.clone());
    }
    order
        .iter()
        .map(|id| groups.remove(id).unwrap_or_default())
        .collect()
}

/// Refuses a set of shard folders that is not every shard of one split exactly
/// once, each run to its end with the same methods; names the folders at fault.
fn check_shards(shards: &[(&Path, ShardManifest, Vec<Row>)]) -> Result<()> {
    let (first_dir, first, _) = &shards[0];
    let mut holder: Vec<Option<&Path>> = vec![None; first.count];
    for (dir, m, rows) in shards {
        if m.count != first.count {
            bail!(
                "{} is shard {}/{} but {} is shard {}/{}: the shards of one merge must split the images the same way",
                dir.display(),
                m.index,
                m.count,
                first_dir.display(),
                first.index,
                first.count
            );
        }
        if let Some(other) = holder[m.index - 1] {
            bail!(
                "duplicate shard {}/{}: both {} and {} hold it",
                m.index,
                m.count,
                other.display(),
                dir.display()
            );
        }
        holder[m.index - 1] = Some(dir);
        if m.methods != first.methods {
            bail!(
                "{} (shard {}/{}) ran the methods {} but {} ran {}; rerun it with --variants {}",
                dir.display(),
                m.index,
                m.count,
                m.methods.join(","),
                first_dir.display(),
                first.methods.join(","),
                first.methods.join(",")
            );
        }
        let expected = m.images.saturating_sub(m.empty_left_out);
        let done = images_with_every_method(rows, &m.methods);
        if !m.complete || done < expected {
            bail!(
                "{} (shard {}/{}) is incomplete: {done} of its {expected} images have a row for every method; rerun the same `eval --shard {}/{} --out {}` to finish it (done images are skipped)",
                dir.display(),
                m.index,
                m.count,
                m.index,
                m.count,
                dir.display()
            );
        }
    }
    let missing: Vec<String> = holder
        .iter()
        .enumerate()
        .filter(|(_, h)| h.is_none())
        .map(|(k, _)| format!("{}/{}", k + 1, first.count))
        .collect();
    if !missing.is_empty() {
        bail!(
            "missing shard{} {}: no folder given holds {}",
            if missing.len() > 1 { "s" } else { "" },
            missing.join(", "),
            if missing.len() > 1 { "them" } else { "it" }
        );
    }
    Ok(())
}

/// How many images have a row for each of `methods`.
fn images_with_every_method(rows: &[Row], methods: &[String]) -> usize {
    let have: HashSet<(&str, &str)> = rows
        .iter()
        .map(|r| (r.id.as_str(), r.variant.as_str()))
        .collect();
    let ids: HashSet<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    ids.iter()
        .filter(|id| methods.iter().all(|m| have.contains(&(**id, m.as_str()))))
        .count()
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}
