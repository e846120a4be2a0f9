#!/usr/bin/env python3
"""Compare explainseg's CPU engine with PyTorch + Captum in the same run.

Runs `explainseg bench --json` and `tools/bench_torch.py` alternately (--rounds times each, same shapes,
threads, batch, IG steps x NoiseTunnel samples), so both see the same machine state, and prints the
per-round numbers, the medians and the ratios (explainseg / PyTorch for throughput, PyTorch / explainseg
for IG wall time: > 1 means explainseg is faster). Also prints the fraction of the machine's measured
SGEMM peak (the best rate explainseg's GEMM or PyTorch's BLAS reached in the run).

Needs: a release build (cargo build --release), and torch/timm/captum (see tools/bench_torch.py).
Usage:
    python tools/bench_engine.py [--threads 2] [--batch 10] [--seconds 10] [--steps 10] [--samples 1] [--rounds 3]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_json(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--samples", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "explainseg"))
    args = ap.parse_args()
    common = ["--batch", str(args.batch), "--seconds", str(args.seconds), "--steps", str(args.steps), "--samples", str(args.samples)]
    ours, theirs = [], []
    for r in range(args.rounds):
        ours.append(run_json([args.binary, "bench", "--json", "--threads", str(args.threads)] + common))
        theirs.append(run_json([sys.executable, os.path.join(ROOT, "tools", "bench_torch.py"), "--threads", str(args.threads)] + common))
        print(f"round {r + 1}: explainseg {ours[-1]['fwd_bwd_passes_per_s']:.3f} passes/s, IG {ours[-1]['ig_seconds']:.2f} s | "
              f"pytorch {theirs[-1]['fwd_bwd_passes_per_s']:.3f} passes/s, IG {theirs[-1]['ig_seconds']:.2f} s", file=sys.stderr)
    med = lambda rows, key: statistics.median(row[key] for row in rows)
    summary = {
        "threads": args.threads, "batch": args.batch, "ig_steps": args.steps, "nt_samples": args.samples, "rounds": args.rounds,
        "explainseg_passes_per_s": med(ours, "fwd_bwd_passes_per_s"), "pytorch_passes_per_s": med(theirs, "fwd_bwd_passes_per_s"),
        "explainseg_gflops": med(ours, "gflops_per_s"), "pytorch_gflops": med(theirs, "gflops_per_s"),
        # The machine's peak: the best SGEMM rate either library reached in this run.
        "sgemm_peak_gflops": max(row["sgemm_peak_gflops"] for row in ours + theirs),
        # Each library's own best SGEMM rate (they may use different instruction sets).
        "explainseg_sgemm_peak_gflops": max(row["sgemm_peak_gflops"] for row in ours),
        "pytorch_sgemm_peak_gflops": max(row["sgemm_peak_gflops"] for row in theirs),
        "explainseg_ig_seconds": med(ours, "ig_seconds"), "pytorch_ig_seconds": med(theirs, "ig_seconds"),
        "torch": theirs[0]["torch"],
    }
    summary["throughput_ratio"] = summary["explainseg_passes_per_s"] / summary["pytorch_passes_per_s"]
    summary["ig_speedup"] = summary["pytorch_ig_seconds"] / summary["explainseg_ig_seconds"]
    summary["explainseg_fraction_of_peak"] = summary["explainseg_gflops"] / summary["sgemm_peak_gflops"]
    summary["pytorch_fraction_of_peak"] = summary["pytorch_gflops"] / summary["sgemm_peak_gflops"]
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
