//! Seed stability of the masks (issue 14; run by tools/stability.sh): for each
//! setting, every image is explained with two noise seeds and once with a
//! high-sample reference (another seed), and variants A, C and XNCut are
//! scored by the mask IoU between the two seeds, the mask IoU against the
//! reference's mask (post-processed by the same rule) and Dice against the
//! ground truth (first seed). Explanation seconds are wall time per image.
//!
//! ```text
//! cargo run --release --example stability -- \
//!   (--synth SEED | --weights FILE --dataset kvasir|busi --root DIR --split S --size N) \
//!   [--ids FILE] [--count N] [--skip N] [--settings paper,stable,10x25,10x24:antithetic:otsu,...] \
//!   [--reference 25x64] [--seeds 1,2] [--ref-seed 99] [--cache DIR]
//! ```
//!
//! A setting is `paper`, `stable` (the presets, docs/method.md §6.2) or
//! `STEPSxSAMPLES[:DESIGN][:SPLIT][:KNOB...]` on top of the paper preset (DESIGN a
//! `NoiseDesign` name, SPLIT `mean` or `otsu`; knobs `kK` σ_r = K·std, `gN` NCut
//! grid, `sS` relevance smoothing σ px, `nS` smoothing σ px of the map NCut cuts,
//! `zS` noise σ, `q1` stratified path points instead of Gauss–Legendre).
//! The noise σ is the base configuration's (1.0; 0.5 for the synthetic demo
//! model, whose demo settings stand in for the paper preset). `STABILITY_DEBUG=1`
//! prints each image's seed IoU and foreground fractions. `--cache DIR` keeps
//! every explanation (attribution .npy + logits and seconds .json) so that a
//! later run with other mask rules on the same images re-uses them.

use std::path::PathBuf;
use std::time::Instant;

use explainseg::attr::{explain, Explanation, Noise, NoiseDesign};
use explainseg::backend::cpu::CpuEngine;
use explainseg::dataset::{self, DatasetKind, OpenOptions};
use explainseg::eval::scores;
use explainseg::image::{network_input, Normalization, PreprocessConfig, ResizeMode};
use explainseg::model::Vit;
use explainseg::pipeline::{segment_explained, PipelineConfig, Preset, Variant};
use explainseg::post::ncut::NcutSplit;
use explainseg::render::to_original;
use explainseg::synth::demo::{demo_pipeline_config, model_input};
use explainseg::synth::{generate, SynthConfig};
use ndarray::{Array2, Array3, Array4};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// One image as the network sees it, with what maps its mask back.
struct Image {
    id: String,
    x: Array4<f32>,
    pixels: Array3<u8>,
    truth: Array2<bool>,
    /// Maps a network-resolution mask to the truth's resolution.
    plan: Option<explainseg::image::ResizePlan>,
}

struct Setting {
    name: String,
    cfg: PipelineConfig,
    /// Leave-one-out control variate on the NoiseTunnel mean (knob `v1`).
    control_variate: bool,
}

const VARIANTS: [Variant; 3] = [Variant::A, Variant::C, Variant::XNCut];

fn arg(a: &[String], name: &str) -> Option<String> {
    a.iter()
        .position(|s| s == name)
        .and_then(|i| a.get(i + 1).cloned())
}

/// `base` with the setting `spec` applied.
fn setting(spec: &str, base: &PipelineConfig, patch_px: usize) -> Res<Setting> {
    let mut cfg = base.clone();
    let mut control_variate = false;
    match spec {
        "paper" => Preset::Paper.apply(&mut cfg, patch_px),
        "stable" => Preset::Stable.apply(&mut cfg, patch_px),
        _ => {
            let mut parts = spec.split(':');
            let mut stdev_override: Option<f32> = None;
            let (steps, samples) = parts
                .next()
                .and_then(|p| p.split_once('x'))
                .ok_or("setting must be STEPSxSAMPLES[:DESIGN][:SPLIT]")?;
            let design: NoiseDesign = parts.next().unwrap_or("independent").parse()?;
            let split: NcutSplit = parts.next().unwrap_or("mean").parse()?;
            // Further knobs: kK (σ_r = K·std), gN (NCut grid side), sS (relevance
            // smoothing σ px), nS (smoothing σ px of the map NCut cuts), e0/b0/c0
            // (no equalisation / border clearing / CRF), rR (closing radius px),
            // v1 (control variate), zS (noise σ), q1 (stratified path points).
            for knob in parts {
                let (key, value) = knob.split_at(1);
                match key {
                    "k" => cfg.ncut_foreground.sigma_r_per_std = Some(value.parse()?),
                    "g" => {
                        let n: usize = value.parse()?;
                        cfg.ncut.grid = Some((n, n));
                    }
                    "s" => cfg.smooth_sigma = value.parse()?,
                    "n" => cfg.ncut_smooth_sigma = value.parse()?,
                    // Morphology of A and C: e0 no equalisation, b0 no border clearing.
                    "e" => cfg.morphology.equalize = value != "0",
                    "b" => cfg.morphology.clear_border = value != "0",
                    "c" => cfg.crf = None,
                    "r" => {
                        let r: usize = value.parse()?;
                        (
                            cfg.morphology.dilation_radius,
                            cfg.morphology.erosion_radius,
                        ) = (r, r);
                    }
                    "v" => control_variate = value != "0",
                    "q" => {
                        if value != "0" {
                            cfg.explain.ig.method = explainseg::ig::Method::Stratified;
                        }
                    }
                    "z" => stdev_override = Some(value.parse()?),
                    _ => return Err(format!("unknown knob `{knob}`").into()),
                }
            }
            let (stdev, seed) = cfg
                .explain
                .noise_tunnel
                .as_ref()
                .and_then(|nt| nt.noise.stdev_and_seed())
                .unwrap_or((1.0, 0));
            let stdev = stdev_override.unwrap_or(stdev);
            cfg.explain.ig.n_steps = steps.parse()?;
            let nt = cfg.explain.noise_tunnel.as_mut().ok_or("no NoiseTunnel")?;
            nt.noise = Noise::drawn(samples.parse()?, stdev, seed, design);
            cfg.ncut_foreground.split = split;
        }
    }
    cfg.explain.ig.return_delta = false;
    Ok(Setting {
        name: spec.to_string(),
        cfg,
        control_variate,
    })
}

fn with_seed(cfg: &PipelineConfig, seed: u64) -> PipelineConfig {
    let mut c = cfg.clone();
    if let Some(nt) = c.explain.noise_tunnel.as_mut() {
        let design = match &nt.noise {
            Noise::Designed { design, .. } => *design,
            _ => NoiseDesign::Independent,
        };
        if let Some((stdev, _)) = nt.noise.stdev_and_seed() {
            nt.noise = Noise::drawn(nt.noise.samples(), stdev, seed, design);
        }
    }
    c
}

fn load_images(a: &[String], vit: &Vit) -> Res<(Vec<Image>, PipelineConfig)> {
    let count: usize = arg(a, "--count").map_or(Ok(10), |s| s.parse())?;
    let skip: usize = arg(a, "--skip").map_or(Ok(0), |s| s.parse())?;
    if let Some(seed) = arg(a, "--synth") {
        let synth = SynthConfig {
            size: 64,
            positive_fraction: 0.8,
        };
        let mut images = Vec::new();
        let mut index = 0;
        while images.len() < count {
            let s = generate(seed.parse()?, index, &synth)?;
            index += 1;
            if !s.lesion {
                continue;
            }
            images.push(Image {
                id: format!("synth{}", index - 1),
                x: model_input(vit, &s.image)?,
                pixels: s.image,
                truth: s.mask,
                plan: None,
            });
        }
        return Ok((images, demo_pipeline_config()));
    }
    let kind: DatasetKind = match arg(a, "--dataset").as_deref() {
        Some("kvasir") => DatasetKind::Kvasir,
        Some("busi") => DatasetKind::Busi,
        _ => return Err("--dataset kvasir|busi (or --synth SEED)".into()),
    };
    let root = PathBuf::from(arg(a, "--root").ok_or("--root DIR")?);
    let size: u32 = arg(a, "--size").ok_or("--size N")?.parse()?;
    let opts = OpenOptions {
        split: arg(a, "--split"),
        ..Default::default()
    };
    let mut samples = dataset::open(kind, &root, &opts)?;
    if let Some(ids) = arg(a, "--ids") {
        let keep: Vec<String> = std::fs::read_to_string(ids)?
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        samples.retain(|s| keep.contains(&s.id));
    }
    let pre = PreprocessConfig {
        resize: ResizeMode::Fixed {
            height: size,
            width: size,
        },
        normalization: vit.normalization.unwrap_or(Normalization::imagenet()),
        ..Default::default()
    };
    let mut images = Vec::new();
    for s in samples.iter().skip(skip) {
        if images.len() == count {
            break;
        }
        let loaded = s.load()?;
        let Some(truth) = loaded.mask else { continue };
        if !truth.iter().any(|&b| b) {
            continue; // lesion images only, as `eval --skip-empty`
        }
        let (x, plan, pixels) = network_input(&loaded.image, &pre)?;
        images.push(Image {
            id: s.id.clone(),
            x,
            pixels,
            truth,
            plan: Some(plan),
        });
    }
    let mut cfg = PipelineConfig::default();
    (cfg.explain.mean, cfg.explain.std) = (pre.normalization.mean, pre.normalization.std);
    Ok((images, cfg))
}

/// The final masks of A, C and XNCut from one explanation (network resolution).
fn masks(
    engine: &CpuEngine,
    im: &Image,
    cfg: &PipelineConfig,
    e: &Explanation,
) -> Res<Vec<Array2<bool>>> {
    let cfg = match &im.plan {
        Some(p) => cfg.for_image(p),
        None => cfg.clone(),
    };
    VARIANTS
        .iter()
        .map(|&v| {
            Ok(segment_explained(engine, im.x.view(), im.pixels.view(), v, &cfg, Some(e))?.mask)
        })
        .collect()
}

/// `explain`, or its copy in `cache` (a directory) from an earlier run; the
/// seconds the explanation took when it was computed.
fn explain_cached(
    engine: &CpuEngine,
    im: &Image,
    cfg: &PipelineConfig,
    control_variate: bool,
    cache: Option<&std::path::Path>,
) -> Res<(Explanation, f64)> {
    let key = format!(
        "{}_{:?}_{}_{:?}{}{}",
        im.id,
        im.x.dim(),
        cfg.explain.ig.n_steps,
        cfg.explain.noise_tunnel.as_ref().map(|nt| &nt.noise),
        if control_variate { "_cv" } else { "" },
        if cfg.explain.ig.method == explainseg::ig::Method::Stratified {
            "_stratified_path"
        } else {
            ""
        }
    )
    .chars()
    .map(|c| {
        if c.is_ascii_alphanumeric() || c == '.' {
            c
        } else {
            '_'
        }
    })
    .collect::<String>();
    let paths = cache.map(|d| (d.join(format!("{key}.npy")), d.join(format!("{key}.json"))));
    if let Some((npy, json)) = &paths {
        if npy.exists() && json.exists() {
            let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(json)?)?;
            let attribution = explainseg::npy::read_f32(npy)?.into_dimensionality()?;
            let logits: Vec<f32> = serde_json::from_value(meta["logits"].clone())?;
            let e = Explanation {
                attribution,
                logits: logits.into(),
                target: serde_json::from_value(meta["target"].clone())?,
                predicted: serde_json::from_value(meta["predicted"].clone())?,
                deltas: Vec::new(),
            };
            return Ok((e, meta["seconds"].as_f64().unwrap_or(0.0)));
        }
    }
    let t = Instant::now();
    let e = if control_variate {
        explain_control_variate(engine, im, cfg)?
    } else {
        explain(engine, im.x.view(), &cfg.explain, None)?
    };
    let seconds = t.elapsed().as_secs_f64();
    if let Some((npy, json)) = &paths {
        explainseg::npy::write(npy, &e.attribution)?;
        let meta = serde_json::json!({
            "logits": e.logits.to_vec(), "target": e.target,
            "predicted": e.predicted, "seconds": seconds,
        });
        std::fs::write(json, meta.to_string())?;
    }
    Ok((e, seconds))
}

/// NoiseTunnel(IG) with a leave-one-out control variate: with d_i = x + ε_i − b
/// and G_i the path-averaged gradient of sample i (IG_i = d_i ⊙ G_i), the term
/// ε_i ⊙ Ḡ_{−i} (Ḡ_{−i} the mean of the other samples' G) has expectation 0, so
/// mean_i(IG_i − ε_i ⊙ Ḡ_{−i}) estimates the same mean with less variance.
fn explain_control_variate(
    engine: &CpuEngine,
    im: &Image,
    cfg: &PipelineConfig,
) -> Res<Explanation> {
    let nt = cfg.explain.noise_tunnel.as_ref().ok_or("no NoiseTunnel")?;
    let noise = explainseg::attr::make_noise(&nt.noise, im.x.view())?;
    let baseline = cfg
        .explain
        .baseline
        .resolve(im.x.view(), cfg.explain.mean, cfg.explain.std)?;
    let n = noise.dim().0;
    let mut igs = Vec::new();
    let mut grads = Vec::new();
    let mut first = None;
    for i in 0..n {
        let mut one = cfg.explain.clone();
        one.noise_tunnel = Some(explainseg::attr::NoiseTunnelConfig {
            nt_type: nt.nt_type,
            noise: Noise::Injected(noise.slice(ndarray::s![i..i + 1, .., .., ..]).to_owned()),
        });
        let e = explain(engine, im.x.view(), &one, None)?;
        let eps = noise.slice(ndarray::s![i..i + 1, .., .., ..]);
        let d = &im.x + &eps - &baseline;
        let g = ndarray::Zip::from(&e.attribution)
            .and(&d)
            .map_collect(|&a, &d| if d != 0.0 { a / d } else { 0.0 });
        igs.push(e.attribution.clone());
        grads.push(g);
        first.get_or_insert(e);
    }
    let sum_g = grads
        .iter()
        .fold(Array4::<f32>::zeros(im.x.dim()), |acc, g| acc + g);
    let mut out = Array4::<f32>::zeros(im.x.dim());
    for i in 0..n {
        let eps = noise.slice(ndarray::s![i..i + 1, .., .., ..]);
        let loo = (&sum_g - &grads[i]) / (n - 1).max(1) as f32;
        out = out + &igs[i] - &(&eps * &loo);
    }
    let mut e = first.ok_or("no samples")?;
    e.attribution = out / n as f32;
    Ok(e)
}

fn iou(a: &Array2<bool>, b: &Array2<bool>) -> Res<f64> {
    Ok(scores(a.view(), b.view())?.iou)
}

fn main() -> Res<()> {
    let a: Vec<String> = std::env::args().collect();
    let vit = match arg(&a, "--weights") {
        Some(w) => Vit::load(std::path::Path::new(&w), None, &Default::default())?,
        None => Vit::load(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/synth_vit.safetensors"),
            None,
            &Default::default(),
        )?,
    };
    let engine = CpuEngine::new(&vit);
    let (images, base) = load_images(&a, &vit)?;
    let specs = arg(&a, "--settings").unwrap_or_else(|| "paper,stable".into());
    let settings: Vec<Setting> = specs
        .split(',')
        .map(|s| setting(s, &base, vit.config.patch))
        .collect::<Res<_>>()?;
    let reference = setting(
        &arg(&a, "--reference").unwrap_or_else(|| "25x64".into()),
        &base,
        vit.config.patch,
    )?;
    let seeds: Vec<u64> = arg(&a, "--seeds")
        .unwrap_or_else(|| "1,2".into())
        .split(',')
        .map(|s| s.parse())
        .collect::<Result<_, _>>()?;
    let ref_seed: u64 = arg(&a, "--ref-seed").map_or(Ok(99), |s| s.parse())?;
    let cache = arg(&a, "--cache").map(PathBuf::from);
    if let Some(dir) = &cache {
        std::fs::create_dir_all(dir)?;
    }
    eprintln!(
        "{} images; reference {} ({} passes, seed {ref_seed}); seeds {seeds:?}",
        images.len(),
        reference.name,
        reference.cfg.explain.passes()
    );
    // [setting][variant] sums: seed IoU, reference IoU, Dice, min seed IoU; and
    // explanation seconds per setting.
    let n_set = settings.len();
    let mut seed_iou = vec![[0f64; 3]; n_set];
    let mut min_seed_iou = vec![[1f64; 3]; n_set];
    let mut ref_iou = vec![[0f64; 3]; n_set];
    let mut dice = vec![[0f64; 3]; n_set];
    let mut seconds = vec![0f64; n_set];
    for (i, im) in images.iter().enumerate() {
        let (ref_e, _) = explain_cached(
            &engine,
            im,
            &with_seed(&reference.cfg, ref_seed),
            false,
            cache.as_deref(),
        )?;
        for (k, s) in settings.iter().enumerate() {
            // The reference's masks post-processed by this setting's rule.
            let ref_masks = masks(&engine, im, &s.cfg, &ref_e)?;
            let mut per_seed = Vec::new();
            for &seed in &seeds {
                let cfg = with_seed(&s.cfg, seed);
                let (e, secs) =
                    explain_cached(&engine, im, &cfg, s.control_variate, cache.as_deref())?;
                seconds[k] += secs / seeds.len() as f64;
                per_seed.push(masks(&engine, im, &cfg, &e)?);
            }
            for v in 0..VARIANTS.len() {
                let si = iou(&per_seed[0][v], &per_seed[1][v])?;
                if std::env::var_os("STABILITY_DEBUG").is_some() {
                    let frac =
                        |m: &Array2<bool>| m.iter().filter(|&&b| b).count() as f64 / m.len() as f64;
                    eprintln!(
                        "  {} {} {}: seed IoU {si:.3}, foreground {:.3} / {:.3}, reference {:.3}",
                        im.id,
                        s.name,
                        VARIANTS[v].name(),
                        frac(&per_seed[0][v]),
                        frac(&per_seed[1][v]),
                        frac(&ref_masks[v])
                    );
                }
                seed_iou[k][v] += si;
                min_seed_iou[k][v] = min_seed_iou[k][v].min(si);
                ref_iou[k][v] += iou(&per_seed[0][v], &ref_masks[v])?;
                let pred = match &im.plan {
                    Some(p) => to_original(per_seed[0][v].view(), p, false)?,
                    None => per_seed[0][v].clone(),
                };
                dice[k][v] += scores(pred.view(), im.truth.view())?.dice;
            }
        }
        eprintln!("image {}/{} {} done", i + 1, images.len(), im.id);
        if i + 1 < images.len() {
            // Running means so far, for runs cut short.
            let so_far = table(
                &settings,
                i + 1,
                &seconds,
                &seed_iou,
                &min_seed_iou,
                &ref_iou,
                &dice,
            );
            eprintln!("{so_far}");
        }
    }
    let n = images.len();
    println!(
        "{}",
        table(
            &settings,
            n,
            &seconds,
            &seed_iou,
            &min_seed_iou,
            &ref_iou,
            &dice
        )
    );
    Ok(())
}

/// The markdown table of the means over `n` images.
fn table(
    settings: &[Setting],
    n: usize,
    seconds: &[f64],
    seed_iou: &[[f64; 3]],
    min_seed_iou: &[[f64; 3]],
    ref_iou: &[[f64; 3]],
    dice: &[[f64; 3]],
) -> String {
    let n = n as f64;
    let mut t = String::new();
    t.push_str("| setting | passes | explain s/image | variant | seed IoU (mean / min) | IoU vs reference | Dice |\n");
    t.push_str("|---|---|---|---|---|---|---|\n");
    for (k, s) in settings.iter().enumerate() {
        for (v, variant) in VARIANTS.iter().enumerate() {
            t.push_str(&format!(
                "| {} | {} | {:.2} | {} | {:.3} / {:.3} | {:.3} | {:.3} |\n",
                s.name,
                s.cfg.explain.passes(),
                seconds[k] / n,
                variant.name(),
                seed_iou[k][v] / n,
                min_seed_iou[k][v],
                ref_iou[k][v] / n,
                dice[k][v] / n
            ));
        }
    }
    t
}
