//! `explainseg bench`: CPU engine throughput against the machine's SGEMM peak.
//! tools/bench_engine.py runs this next to tools/bench_torch.py (PyTorch + Captum on
//! the same shapes and threads) and prints the ratio.
//!
//! `explainseg bench --crf`: one DenseCRF (mask refinement, 10 mean-field iterations)
//! at --size² on --device, best of --repeats after a warm-up (scripts/gpu_check.sh).
//!
//! `explainseg bench --pipeline`: seconds per image of each stage (explain, feature,
//! mask, crf) of every variant, with a preset (`--preset`); tools/bench_pipeline.py runs
//! it beside the reference stack (PyTorch + Captum, scikit-image, SciPy, pydensecrf).

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::Args;
use explainseg::attr::{noise_tunnel_ig, IgConfig, Noise, NoiseTunnelConfig, NtType};
use explainseg::backend::cpu::gemm::{matmul, MatRef, Threads};
use explainseg::model::{Vit, VitConfig};
use ndarray::{Array3, Array4};

use crate::output::{spinner, Output};

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Model size: ti, s or b.
    #[arg(long, default_value = "s")]
    pub model: String,
    #[arg(long, default_value_t = 16)]
    pub patch: usize,
    /// Input side in pixels.
    #[arg(long, default_value_t = 224)]
    pub size: usize,
    /// Rows per forward+backward batch.
    #[arg(long, default_value_t = 10)]
    pub batch: usize,
    /// Seconds to spend on the throughput measurement.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// IG steps and NoiseTunnel samples for the wall-time measurement.
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    #[arg(long, default_value_t = 1)]
    pub samples: usize,
    /// Compute device: cpu, cuda or cuda-emu (the CUDA code path emulated on the CPU).
    #[arg(long, default_value = "cpu")]
    pub device: explainseg::backend::Device,
    /// GEMM precision of the CUDA engine: f32 (faithful), tf32 or bf16 (tensor
    /// cores, f32 accumulation; docs/gpu.md). The cpu device takes f32 only.
    #[arg(long, default_value = "f32")]
    pub precision: explainseg::backend::Precision,
    /// Time the whole pipeline instead: seconds per image of each stage of every
    /// variant (a, b, c, xncut, tokencut, maskcut) on synthetic images, random weights,
    /// the paper's preset with --steps × --samples IG passes (the paper's 50 × 5 takes
    /// minutes on 2 cores; the defaults 10 × 1 about a minute for 2 images).
    #[arg(long)]
    pub pipeline: bool,
    /// Time one DenseCRF instead: the refinement of an elliptic mask on a synthetic
    /// --size² RGB image, the paper's CRF settings (10 mean-field iterations).
    #[arg(long, conflicts_with = "pipeline")]
    pub crf: bool,
    /// Images for --pipeline.
    #[arg(long, default_value_t = 2)]
    pub images: usize,
    /// Time the IG + NoiseTunnel call (the DenseCRF with --crf) this many times and
    /// report the fastest (the first call on a GPU also pays for lazy set-up).
    #[arg(long, default_value_t = 1)]
    pub repeats: usize,
    /// Preset for --pipeline: paper or stable (its noise design, smoothing and NCut
    /// rule; the passes stay --steps × --samples, e.g. 50 × 5 for the paper's and
    /// 10 × 24 for the stable preset's own).
    #[arg(long, default_value = "paper")]
    pub preset: String,
}

impl BenchArgs {
    fn engine_options(&self) -> explainseg::backend::EngineOptions {
        explainseg::backend::EngineOptions {
            device: self.device,
            precision: self.precision,
        }
    }
}

/// Best GFLOP/s of a few (m×k)·(k×n) products on the current pool.
fn sgemm_gflops(m: usize, k: usize, n: usize, reps: usize) -> f64 {
    let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
    let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
    let mut c = vec![0f32; m * n];
    let mut best = f64::MAX;
    for _ in 0..reps {
        let t = Instant::now();
        matmul(
            &mut c,
            n,
            MatRef::row_major(&a, m, k),
            MatRef::row_major(&b, k, n),
            false,
            Threads::Pool,
        );
        best = best.min(t.elapsed().as_secs_f64());
    }
    2.0 * (m * n * k) as f64 / best / 1e9
}

pub fn run(args: &BenchArgs, out: &Output) -> Result<()> {
    if args.pipeline {
        return run_pipeline(args, out);
    }
    if args.crf {
        return run_crf(args, out);
    }
    let Some(config) = VitConfig::standard(&args.model, args.patch, args.size) else {
        bail!("--model `{}` is not one of ti, s, b", args.model)
    };
    if !args.size.is_multiple_of(args.patch) || args.batch == 0 {
        bail!("--size must be a multiple of --patch and --batch at least 1");
    }
    let threads = rayon::current_num_threads();
    let tokens = (args.size / args.patch).pow(2) + 1;
    let gflop_per_pass =
        (config.forward_macs(tokens) + config.backward_macs(tokens)) as f64 * 2.0 / 1e9;
    let mlp_shape = (args.batch * tokens, config.dim, config.mlp_hidden);
    let vit = Vit::random(config, 2, 1);
    let engine = explainseg::backend::engine_for(args.engine_options(), &vit)?;
    let busy = spinner(out, "benchmarking");
    // Best of many repetitions: the machine's sustained SGEMM rate with this GEMM.
    let peak_square = sgemm_gflops(1536, 1536, 1536, 12).max(sgemm_gflops(2048, 2048, 2048, 6));
    let peak_vit_shape = sgemm_gflops(mlp_shape.0, mlp_shape.1, mlp_shape.2, 12);
    let peak = peak_square.max(peak_vit_shape);
    let x = Array4::from_shape_fn((args.batch, 3, args.size, args.size), |(b, c, i, j)| {
        ((b + 3 * c + i * 7 + j * 13) % 17) as f32 * 0.1 - 0.8
    });
    let targets = vec![0usize; args.batch];
    engine.logits_and_input_grad(x.view(), &targets)?; // warm-up
    let start = Instant::now();
    let mut passes = 0usize;
    while start.elapsed() < Duration::from_secs_f64(args.seconds) || passes == 0 {
        engine.logits_and_input_grad(x.view(), &targets)?;
        passes += args.batch;
    }
    let passes_per_s = passes as f64 / start.elapsed().as_secs_f64();
    let gflops = passes_per_s * gflop_per_pass;

    let one = x.slice(ndarray::s![0..1, .., .., ..]).to_owned();
    let zero = Array4::<f32>::zeros(one.dim());
    let ig = IgConfig {
        n_steps: args.steps,
        batch_size: args.batch,
        return_delta: false,
        ..Default::default()
    };
    let nt = NoiseTunnelConfig {
        nt_type: NtType::SmoothGrad,
        noise: Noise::Seeded {
            samples: args.samples,
            stdev: 1.0,
            seed: 0,
        },
    };
    let mut ig_times = Vec::with_capacity(args.repeats.max(1));
    for _ in 0..args.repeats.max(1) {
        let t = Instant::now();
        noise_tunnel_ig(engine.as_ref(), one.view(), zero.view(), 0, &ig, &nt, None)?;
        ig_times.push(t.elapsed().as_secs_f64());
    }
    let ig_seconds = ig_times.iter().copied().fold(f64::INFINITY, f64::min);
    busy.finish_and_clear();

    out.result(
        &format!(
            "{} at {}², {threads} threads, batch {}\n  SGEMM peak (measured): {peak:.1} GFLOP/s (square: {peak_square:.1}, ViT fc1 shape: {peak_vit_shape:.1})\n  forward+input-backward: {passes_per_s:.2} passes/s = {gflops:.1} GFLOP/s ({:.0}% of peak; {gflop_per_pass:.2} GFLOP/pass)\n  IG {} steps × {} samples: {ig_seconds:.2} s",
            vit.config.name(),
            args.size,
            args.batch,
            100.0 * gflops / peak,
            args.steps,
            args.samples
        ),
        serde_json::json!({
            "model": vit.config.name(), "size": args.size, "threads": threads, "batch": args.batch,
            "sgemm_peak_gflops": peak, "sgemm_square_gflops": peak_square, "sgemm_vit_shape_gflops": peak_vit_shape,
            "fwd_bwd_passes_per_s": passes_per_s, "gflops_per_s": gflops, "gflop_per_pass": gflop_per_pass,
            "fraction_of_peak": gflops / peak, "ig_seconds": ig_seconds, "ig_seconds_each": ig_times,
            "ig_steps": args.steps, "nt_samples": args.samples, "device": format!("{:?}", engine.device()),
            "precision": engine.precision().name(),
        }),
    );
    Ok(())
}

/// A synthetic 8-bit RGB image: a colour gradient, an elliptic "lesion" whose place
/// depends on `seed`, and hash noise.
fn synthetic_pixels(size: usize, seed: usize) -> Array3<u8> {
    let (cy, cx) = (
        0.4 + 0.05 * (seed % 4) as f32,
        0.45 + 0.04 * (seed % 3) as f32,
    );
    Array3::from_shape_fn((size, size, 3), |(y, x, c)| {
        let (fy, fx) = (y as f32 / size as f32, x as f32 / size as f32);
        let inside = ((fy - cy) / 0.22).powi(2) + ((fx - cx) / 0.17).powi(2) < 1.0;
        let base = if inside {
            [200.0, 70.0, 50.0][c]
        } else {
            [
                60.0 + 80.0 * fx,
                90.0 + 60.0 * (3.0 * fy).sin(),
                140.0 - 70.0 * fy,
            ][c]
        };
        let h = (y * 7919 + x * 104_729 + c * 31 + seed * 1_000_003) as u64;
        let noise = ((h.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 59) as f32) - 16.0;
        (base + noise * 0.4).clamp(0.0, 255.0) as u8
    })
}

/// `bench --pipeline`.
fn run_pipeline(args: &BenchArgs, out: &Output) -> Result<()> {
    use explainseg::attr::explain_map;
    use explainseg::pipeline::{segment_mapped, Preset, Variant};

    let Some(config) = VitConfig::standard(&args.model, args.patch, args.size) else {
        bail!("--model `{}` is not one of ti, s, b", args.model)
    };
    if !args.size.is_multiple_of(args.patch)
        || args.batch == 0
        || args.images == 0
        || args.steps == 0
    {
        bail!("--size must be a multiple of --patch, and --batch, --images, --steps at least 1");
    }
    let threads = rayon::current_num_threads();
    let vit = Vit::random(config, 2, 1);
    let engine = explainseg::backend::engine_for(args.engine_options(), &vit)?;
    let norm = vit
        .normalization
        .unwrap_or(explainseg::image::Normalization {
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
        });
    // The preset (paper: PipelineConfig::default) with the requested pass counts.
    let preset: Preset = args.preset.parse()?;
    let mut cfg = preset.pipeline_config(0, vit.config.patch);
    cfg.explain.ig.n_steps = args.steps;
    cfg.explain.ig.batch_size = args.batch;
    cfg.explain.ig.return_delta = false;
    cfg.explain.noise_tunnel = (args.samples > 0).then(|| NoiseTunnelConfig {
        nt_type: NtType::SmoothGrad,
        noise: Noise::drawn(args.samples, 1.0, 0, preset.noise_design()),
    });
    cfg.explain.mean = norm.mean;
    cfg.explain.std = norm.std;
    let passes = cfg.explain.passes();
    let stages = ["explain", "feature", "mask", "crf"];
    // [variant][stage] summed over images.
    let mut sums = vec![[0f64; 4]; Variant::ALL.len()];
    if engine.device() != explainseg::backend::Device::Cpu {
        // Uncounted: a device's first explanation also pays for module loading and
        // workspace growth, which a scanner pays once per process.
        let pixels = synthetic_pixels(args.size, usize::MAX);
        let x = Array4::from_shape_fn((1, 3, args.size, args.size), |(_, c, y, xx)| {
            (pixels[[y, xx, c]] as f32 / 255.0 - norm.mean[c]) / norm.std[c]
        });
        explain_map(
            engine.as_ref(),
            x.view(),
            &cfg.explain,
            &cfg.relevance(),
            cfg.feature_taps(&vit, &Variant::ALL),
            None,
        )?;
    }
    let bar =
        crate::output::progress_bar(out, (args.images * Variant::ALL.len()) as u64, "pipeline");
    for i in 0..args.images {
        let pixels = synthetic_pixels(args.size, i);
        let x = Array4::from_shape_fn((1, 3, args.size, args.size), |(_, c, y, xx)| {
            (pixels[[y, xx, c]] as f32 / 255.0 - norm.mean[c]) / norm.std[c]
        });
        // One explanation serves the four IG variants (as `eval` does); its time is
        // counted in each of their rows.
        let t = Instant::now();
        let e = explain_map(
            engine.as_ref(),
            x.view(),
            &cfg.explain,
            &cfg.relevance(),
            cfg.feature_taps(&vit, &Variant::ALL),
            None,
        )?;
        let explain_s = t.elapsed().as_secs_f64();
        for (k, &v) in Variant::ALL.iter().enumerate() {
            let seg = segment_mapped(engine.as_ref(), x.view(), pixels.view(), v, &cfg, Some(&e))?;
            if v.uses_ig() {
                sums[k][0] += explain_s;
            }
            for (j, st) in stages.iter().enumerate().skip(1) {
                sums[k][j] += seg.stage_seconds(st).unwrap_or(0.0);
            }
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    let n = args.images as f64;
    let mut text = format!(
        "{} at {}², {threads} threads, {} synthetic images, random weights\n  preset: {}\n  IG passes per image: {passes} ({} steps × {} NoiseTunnel samples; the paper's preset uses 50 × 5 = 250, the stable preset 10 × 24 = 240)\n  seconds per image (explain: one explanation shared by a, b, c, xncut; MaskCut's CRF is inside its mask stage)\n  variant     explain  feature     mask      crf    total",
        vit.config.name(),
        args.size,
        args.images,
        preset.name(),
        args.steps,
        args.samples.max(1),
    );
    let mut rows = Vec::new();
    for (k, v) in Variant::ALL.iter().enumerate() {
        let per: Vec<f64> = sums[k].iter().map(|s| s / n).collect();
        let total: f64 = per.iter().sum();
        text.push_str(&format!(
            "\n  {:<10} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8.3}",
            v.name(),
            per[0],
            per[1],
            per[2],
            per[3],
            total
        ));
        rows.push(serde_json::json!({
            "variant": v.name(),
            "passes": if v.uses_ig() { passes } else { 0 },
            "seconds": {"explain": per[0], "feature": per[1], "mask": per[2], "crf": per[3]},
            "total_seconds": total,
        }));
    }
    out.result(
        &text,
        serde_json::json!({
            "model": vit.config.name(), "size": args.size, "threads": threads, "images": args.images,
            "preset": preset.name(), "ig_steps": args.steps, "nt_samples": args.samples, "passes": passes,
            "device": engine.device().name(), "precision": engine.precision().name(), "variants": rows,
        }),
    );
    Ok(())
}

/// `bench --crf`: best-of-N seconds of one DenseCRF mask refinement on the device.
fn run_crf(args: &BenchArgs, out: &Output) -> Result<()> {
    use explainseg::post::crf::{refine_mask_on, CrfParams};
    if args.size == 0 {
        bail!("--size must be at least 1");
    }
    let device = explainseg::backend::crf_device_for(args.device)?;
    let pixels = synthetic_pixels(args.size, 0);
    let n = args.size as f32;
    let mask = ndarray::Array2::from_shape_fn((args.size, args.size), |(y, x)| {
        let (dy, dx) = (
            (y as f32 - 0.45 * n) / (0.3 * n),
            (x as f32 - 0.5 * n) / (0.25 * n),
        );
        dy * dy + dx * dx <= 1.0
    });
    let params = CrfParams::default();
    // Uncounted: the first call loads modules and sizes the device buffers.
    let first = refine_mask_on(device.as_ref(), pixels.view(), mask.view(), &params)?;
    let mut times = Vec::with_capacity(args.repeats.max(1));
    for _ in 0..args.repeats.max(1) {
        let t = Instant::now();
        let again = refine_mask_on(device.as_ref(), pixels.view(), mask.view(), &params)?;
        times.push(t.elapsed().as_secs_f64());
        if again != first {
            bail!("DenseCRF gave another mask on a repeated call");
        }
    }
    let best = times.iter().copied().fold(f64::INFINITY, f64::min);
    out.result(
        &format!(
            "DenseCRF {0}×{0}, 2 labels, {1} iterations on {2:?}: {3:.3} ms (best of {4})",
            args.size,
            params.n_iterations,
            args.device,
            1e3 * best,
            times.len()
        ),
        serde_json::json!({
            "size": args.size, "labels": 2, "iterations": params.n_iterations,
            "device": format!("{:?}", args.device), "crf_seconds": best, "crf_seconds_each": times,
        }),
    );
    Ok(())
}
