//! The `explainseg` command line.
//!
//! Exit codes: 0 success; 1 runtime failure (bad file, bad model, I/O); 2 usage
//! error (unknown flag or value, printed by clap).

mod args;
mod commands;
mod malloc;
mod output;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use output::Output;

#[derive(Parser, Debug)]
#[command(
    name = "explainseg",
    version,
    about = "Turn a ViT image classifier into a segmenter: Integrated Gradients + NoiseTunnel, Normalized Cut, DenseCRF (ExplainSeg)",
    after_help = "Exit codes:\n  0  success\n  1  runtime failure (missing or bad file, bad model, I/O, CUDA not available,\n     a resource limit exceeded: raise it with --limit NAME=VALUE)\n  2  usage error (unknown command, flag or value)\n\nRun `explainseg <command> --help` for a command's flags and examples."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Worker threads [default: all cores].
    #[arg(long, global = true)]
    threads: Option<usize>,
    /// Print nothing but errors.
    #[arg(long, global = true)]
    quiet: bool,
    /// Print one JSON object with the result (for scripts).
    #[arg(long, global = true)]
    json: bool,
    /// Raise or lower a resource limit, NAME=VALUE (repeatable): image_pixels,
    /// decoded_bytes, tokens, npy_elements, dataset_items, ig_passes,
    /// crf_iterations, ncut_nodes, ncut_edges, tokencut_nodes, dilation_px,
    /// threads. See docs/reliability.md for the defaults.
    #[arg(long = "limit", global = true, value_name = "NAME=VALUE")]
    limits: Vec<String>,
    /// Accept damaged images (JPEG corrupt-data warnings, DICOM header and
    /// PixelData inconsistencies) instead of refusing them.
    #[arg(long, global = true)]
    lenient: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Integrated Gradients (+ NoiseTunnel) of one image's predicted class.
    ///
    /// Example:
    ///   explainseg attribute --weights vit.safetensors --image polyp.jpg --out out/
    ///   explainseg attribute --weights dino.safetensors --head head.safetensors \
    ///       --image x.png --size 224 --nt-samples 0 --steps 50 --out out/
    #[command(verbatim_doc_comment)]
    Attribute(Box<commands::attribute::AttributeArgs>),
    /// Segment one image with a variant of the method (a, b, c, xncut) or TokenCut.
    ///
    /// Example:
    ///   explainseg segment --weights vit.safetensors --image polyp.jpg --variant xncut --out seg/
    #[command(verbatim_doc_comment)]
    Segment(Box<commands::segment::SegmentArgs>),
    /// Turn a map into a mask: otsu, the morphology chain, or Shi–Malik NCut.
    ///
    /// Example:
    ///   explainseg mask --map out/relevance.npy --image img.png --method otsu --out m/
    #[command(verbatim_doc_comment)]
    Mask(commands::post::MaskArgs),
    /// Refine a mask or a label image with DenseCRF (pydensecrf's model; any channel count).
    ///
    /// Examples:
    ///   explainseg crf --image img.png --mask coarse.png --out refined.png --probs q.npy
    ///   explainseg crf --image img.png --label-image labels.png --labels 5 --out refined.png
    #[command(verbatim_doc_comment)]
    Crf(commands::post::CrfCmdArgs),
    /// TokenCut bipartition of patch features.
    ///
    /// Example:
    ///   explainseg ncut --features keys.npy --grid 14,14 --out cut/
    #[command(verbatim_doc_comment)]
    Ncut(commands::post::NcutArgs),
    /// Evaluate methods on a data set: per-image IoU/Dice, summary table, example grid.
    ///
    /// Resumable: a rerun into the same --out skips the images already scored
    /// (the configuration must be the same; config.json holds its fingerprint).
    ///
    /// Examples:
    ///   explainseg eval --dataset kvasir --root data/kvasir_seg --weights vit.safetensors \
    ///       --variants xncut,tokencut --out eval/kvasir
    ///   explainseg eval --dataset busi --root data/busi --weights vit.safetensors \
    ///       --head head.safetensors --variants all --steps 50 --nt-samples 5 --out eval/busi
    ///   explainseg eval --dataset folder --root my_data --weights vit.safetensors --shard 1/2 --out s1
    ///   explainseg eval --dataset folder --root my_data --weights vit.safetensors --shard 2/2 --out s2
    ///   explainseg eval-merge --out merged s1 s2
    #[command(verbatim_doc_comment)]
    Eval(Box<commands::eval::EvalArgs>),
    /// Join the output folders of `eval --shard K/N` runs into one CSV and summary.
    ///
    /// Every shard 1..N must be given exactly once, finished, with one configuration
    /// (each folder's shard.json and config.json say so); otherwise nothing is
    /// written and the folders at fault are named. On Slurm,
    /// scripts/slurm/submit_eval.sh runs the shards and this merge (docs/scaling.md).
    ///
    /// Example:
    ///   explainseg eval-merge --out eval/all eval/shard1 eval/shard2
    #[command(verbatim_doc_comment)]
    EvalMerge(commands::eval::MergeArgs),
    /// Measure the CPU engine: SGEMM peak, forward+backward passes/s, IG wall time.
    ///
    /// Example:
    ///   explainseg bench --threads 2 --seconds 10 --json
    #[command(verbatim_doc_comment)]
    Bench(commands::bench::BenchArgs),
    /// Train the classifier: the head on frozen features, or fine-tune the last
    /// blocks or all of the backbone; writes a checkpoint every command loads.
    ///
    /// Examples:
    ///   explainseg train --data kvasir_patches/ --weights dino_vits16.safetensors \
    ///       --out head.safetensors --epochs 100            # the paper: SGD 0.005, ×0.1 / 50 epochs
    ///   explainseg train --data toy/ --init random --arch custom:4,64,4,8 --img-size 32 \
    ///       --finetune all --optimizer adamw --lr 1e-3 --schedule cosine --augment none --out toy.safetensors
    ///   explainseg train --data toy/ --resume toy.safetensors --epochs 20 --out toy.safetensors ...
    #[command(verbatim_doc_comment)]
    Train(Box<commands::train::TrainArgs>),
    /// Self-supervised pretraining of a ViT backbone on unlabelled images (DINO);
    /// writes the teacher in timm naming for `train --weights`, `segment`, `eval`.
    ///
    /// Example:
    ///   explainseg --threads 2 pretrain --method dino --data images/ --arch custom:4,96,3,8 \
    ///       --global-size 64 --local-size 32 --local-crops 4 --epochs 50 --out ssl.safetensors
    #[command(verbatim_doc_comment)]
    Pretrain(Box<commands::pretrain::PretrainArgs>),
    /// Write a synthetic lesion data set (images, masks, labels.csv).
    ///
    /// Example:
    ///   explainseg synth --out data/synth --count 500 --size 64 --seed 0
    #[command(verbatim_doc_comment)]
    Synth(commands::synth::SynthArgs),
    /// The method end to end with nothing downloaded: synthetic lesions, the embedded
    /// small ViT, variants a, b, c, xncut scored against the true masks.
    ///
    /// Example:
    ///   explainseg demo --out demo/ && open demo/report.md
    #[command(verbatim_doc_comment)]
    Demo(commands::demo::DemoArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Short runs dominated by a few large buffers (see the module).
    malloc::configure(matches!(cli.command, Command::Crf(_) | Command::Mask(_)));
    let out = Output {
        quiet: cli.quiet,
        json: cli.json,
    };
    let mut limits = explainseg::limits::current();
    limits.lenient_decoding = cli.lenient;
    for spec in &cli.limits {
        if let Err(e) = limits.apply(spec) {
            eprintln!("error: --limit: {e}");
            return ExitCode::from(2);
        }
    }
    if let Err(e) = explainseg::limits::set(limits) {
        eprintln!("error: --limit: {e}");
        return ExitCode::from(2);
    }
    if let Some(n) = cli.threads {
        if n == 0 {
            eprintln!("error: --threads must be at least 1");
            return ExitCode::from(2);
        }
        if let Err(e) = explainseg::limits::check("threads", n as u64) {
            eprintln!("error: --threads: {e}");
            return ExitCode::FAILURE;
        }
        if let Err(e) = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
        {
            eprintln!("error: cannot start {n} threads: {e}");
            return ExitCode::FAILURE;
        }
    }
    let result = match &cli.command {
        Command::Attribute(a) => commands::attribute::run(a, &out),
        Command::Bench(a) => commands::bench::run(a, &out),
        Command::Segment(a) => commands::segment::run(a, &out),
        Command::Eval(a) => commands::eval::run(a, &out),
        Command::EvalMerge(a) => commands::eval::run_merge(a, &out),
        Command::Mask(a) => commands::post::run_mask(a, &out),
        Command::Crf(a) => commands::post::run_crf(a, &out),
        Command::Ncut(a) => commands::post::run_ncut(a, &out),
        Command::Train(a) => commands::train::run(a, &out),
        Command::Pretrain(a) => commands::pretrain::run(a, &out),
        Command::Synth(a) => commands::synth::run(a, &out),
        Command::Demo(a) => commands::demo::run(a, &out),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the error and its causes.
            // One line: the error, then any cause it does not already spell out.
            let mut line = e.to_string();
            for cause in e.chain().skip(1).map(|c| c.to_string()) {
                if !line.contains(&cause) {
                    line = format!("{line}: {cause}");
                }
            }
            eprintln!("error: {line}");
            ExitCode::FAILURE
        }
    }
}
