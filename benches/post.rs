//! Post-processing benchmark: DenseCRF, TokenCut and Shi–Malik NCut, and the
//! morphology chain, on inputs that `tools/bench_post.py` writes and then times
//! with the references (pydensecrf, SciPy, scikit-image) in the same run.
//!
//! Run through the script (it builds this with `cargo bench --bench post --no-run`):
//!
//! ```text
//! python3 tools/bench_post.py --rounds 3
//! ```
//!
//! By hand: `cargo bench --bench post -- --dir DIR [--reps N] [--threads N] [--crf-only]`,
//! where DIR holds the script's `manifest.json` and inputs. Prints one JSON object: for
//! each case and thread count, the median and best wall time in milliseconds.
//! `--threads N` times only N threads (default: 1 and all); `--crf-only` only the
//! DenseCRF cases. The manifest's optional `crf` list adds DenseCRF cases with a given
//! unary (any label count; `tools/bench_crf_process.py`).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Instant;

use explainseg::post::crf::{dense_crf, refine_mask, CrfParams};
use explainseg::post::morphology::{morphology_mask, MorphologyParams};
use explainseg::post::ncut::{shi_malik_ncut, tokencut_bipartition, ShiMalikParams};
use ndarray::{Array2, Array3};
use ndarray_npy::ReadNpyExt;
use serde_json::{json, Value};

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

struct Options {
    dir: PathBuf,
    reps: usize,
    threads: Option<usize>,
    crf_only: bool,
}

fn options() -> Result<Options, String> {
    // cargo passes `--bench`; everything else is ours.
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let (mut dir, mut reps, mut threads, mut crf_only) = (None, 5, None, false);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--dir" => dir = args.next().map(PathBuf::from),
            "--reps" => {
                reps = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|&n| n > 0)
                    .ok_or("--reps needs a positive integer")?
            }
            "--threads" => {
                threads = Some(
                    args.next()
                        .and_then(|v| v.parse().ok())
                        .filter(|&n: &usize| n > 0)
                        .ok_or("--threads needs a positive integer")?,
                )
            }
            "--crf-only" => crf_only = true,
            other => {
                return Err(format!(
                "unknown argument `{other}` (use --dir DIR [--reps N] [--threads N] [--crf-only])"
            ))
            }
        }
    }
    let dir = dir.ok_or("--dir DIR is required (made by tools/bench_post.py)")?;
    Ok(Options {
        dir,
        reps,
        threads,
        crf_only,
    })
}

fn read<T: ReadNpyExt>(dir: &Path, name: &str) -> Result<T, String> {
    let path = dir.join(name);
    let file = File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    T::read_npy(file).map_err(|e| format!("{}: {e}", path.display()))
}

/// Median and best wall time (ms) of `reps` runs after one warm-up, on `threads`.
fn time_ms(threads: usize, reps: usize, f: &(dyn Fn() + Sync)) -> Value {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("a thread pool");
    pool.install(f);
    let mut ts: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            pool.install(f);
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    ts.sort_by(f64::total_cmp);
    json!({"median_ms": ts[reps / 2], "min_ms": ts[0]})
}

fn run() -> Result<(), String> {
    let opt = options()?;
    let manifest: Value = serde_json::from_reader(
        File::open(opt.dir.join("manifest.json")).map_err(|e| format!("manifest.json: {e}"))?,
    )
    .map_err(|e| format!("manifest.json: {e}"))?;
    let all = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = match opt.threads {
        Some(n) => vec![n],
        None if all > 1 => vec![1, all],
        None => vec![1],
    };
    let mut out = serde_json::Map::new();
    let mut case = |name: String, f: &(dyn Fn() + Sync)| {
        let per: serde_json::Map<String, Value> = threads
            .iter()
            .map(|&t| (format!("threads_{t}"), time_ms(t, opt.reps, f)))
            .collect();
        out.insert(name, Value::Object(per));
    };

    let crf = CrfParams::default();
    if opt.dir.join("crf_image.npy").exists() {
        let image: Array3<u8> = read(&opt.dir, "crf_image.npy")?;
        let mask: Array2<u8> = read(&opt.dir, "crf_mask.npy")?;
        let mask = mask.mapv(|v| v != 0);
        let (h, w) = mask.dim();
        case(format!("densecrf_{h}x{w}"), &|| {
            std::hint::black_box(refine_mask(image.view(), mask.view(), &crf).expect("crf"));
        });
    }
    for c in manifest["crf"].as_array().map_or(&[][..], |v| &v[..]) {
        let name = c["name"].as_str().ok_or("manifest: crf name")?;
        let image: Array3<u8> = read(&opt.dir, c["image"].as_str().ok_or("manifest: image")?)?;
        let unary: Array3<f32> = read(&opt.dir, c["unary"].as_str().ok_or("manifest: unary")?)?;
        case(name.to_string(), &|| {
            std::hint::black_box(dense_crf(image.view(), unary.view(), &crf).expect("crf"));
        });
    }
    if opt.crf_only {
        println!("{}", Value::Object(out));
        return Ok(());
    }

    for tc in manifest["tokencut"]
        .as_array()
        .ok_or("manifest: tokencut")?
    {
        let (rows, cols) = (
            tc["rows"].as_u64().unwrap_or(0) as usize,
            tc["cols"].as_u64().unwrap_or(0) as usize,
        );
        let feats: Array2<f32> = read(&opt.dir, tc["file"].as_str().ok_or("manifest: file")?)?;
        case(format!("tokencut_{rows}x{cols}"), &|| {
            std::hint::black_box(
                tokencut_bipartition(feats.view(), (rows, cols), 0.2, 1e-5).expect("tokencut"),
            );
        });
    }

    let map: Array2<f32> = read(&opt.dir, "shimalik_map.npy")?;
    for g in manifest["shimalik_grids"]
        .as_array()
        .ok_or("manifest: shimalik_grids")?
    {
        let n = g.as_u64().ok_or("manifest: grid")? as usize;
        let params = ShiMalikParams {
            grid: Some((n, n)),
            ..Default::default()
        };
        case(format!("shimalik_{n}x{n}"), &|| {
            std::hint::black_box(shi_malik_ncut(map.view(), &params).expect("shi-malik"));
        });
    }

    let rel: Array2<f32> = read(&opt.dir, "morph_map.npy")?;
    let morph = MorphologyParams::default();
    let (mh, mw) = rel.dim();
    case(format!("morphology_{mh}x{mw}"), &|| {
        std::hint::black_box(morphology_mask(rel.view(), &morph).expect("morphology"));
    });

    println!("{}", Value::Object(out));
    Ok(())
}
