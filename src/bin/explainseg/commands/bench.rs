//! `explainseg bench`: CPU engine throughput against the machine's SGEMM peak.
//! tools/bench_engine.py runs this next to tools/bench_torch.py (PyTorch + Captum on
//! the same shapes and threads) and prints the ratio.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::Args;
use explainseg::attr::{noise_tunnel_ig, IgConfig, Noise, NoiseTunnelConfig, NtType};
use explainseg::backend::cpu::gemm::{matmul, MatRef, Threads};
use explainseg::model::{Vit, VitConfig};
use ndarray::Array4;

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
    let Some(config) = VitConfig::standard(&args.model, args.patch, args.size) else {
        bail!("--model `{}` is not one of ti, s, b", args.model)
    };
    if args.size % args.patch != 0 || args.batch == 0 {
        bail!("--size must be a multiple of --patch and --batch at least 1");
    }
    let threads = rayon::current_num_threads();
    let busy = spinner(out, "benchmarking");
    // Best of many repetitions: the machine's sustained SGEMM rate with this GEMM.
    let peak_square = sgemm_gflops(1536, 1536, 1536, 12).max(sgemm_gflops(2048, 2048, 2048, 6));
    let tokens = (args.size / args.patch).pow(2) + 1;
    let peak_vit_shape = sgemm_gflops(args.batch * tokens, config.dim, config.mlp_hidden, 12);
    let peak = peak_square.max(peak_vit_shape);

    let gflop_per_pass =
        (config.forward_macs(tokens) + config.backward_macs(tokens)) as f64 * 2.0 / 1e9;
    let vit = Vit::random(config, 2, 1);
    let engine = explainseg::backend::engine_for(args.device, &vit)?;
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
    let t = Instant::now();
    noise_tunnel_ig(engine.as_ref(), one.view(), zero.view(), 0, &ig, &nt, None)?;
    let ig_seconds = t.elapsed().as_secs_f64();
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
            "fraction_of_peak": gflops / peak, "ig_seconds": ig_seconds, "ig_steps": args.steps, "nt_samples": args.samples,
        }),
    );
    Ok(())
}
