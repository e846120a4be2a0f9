//! NCut mask rules on a synthetic set (the search behind
//! `NcutForegroundParams::default()`): explains every positive image once with the
//! demo model and the demo settings (`demo_pipeline_config`), then scores rules for
//! turning the Shi–Malik cut of the relevance map (XNCut) and of the fused map
//! (variant B) into a mask, with the pipeline's DenseCRF: σ_r = k·std(r) and the
//! dilation radius, against the plain mean split. Choose on a validation seed (2),
//! never on the training (1) or test seeds (7, 11).
//!
//! ```text
//! cargo run --release --example ncut_sweep -- [SEED] [COUNT] [xai|fused|both] [POSITIVE_FRACTION]
//! ```

use explainseg::attr::explain;
use explainseg::attr::fusion::upsample_mask;
use explainseg::backend::cpu::CpuEngine;
use explainseg::eval::scores;
use explainseg::pipeline::{segment_explained, PipelineConfig, Variant};
use explainseg::post::crf::refine_mask;
use explainseg::post::ncut::{ncut_foreground, ncut_mask, NcutForegroundParams};
use explainseg::synth::demo::{demo_pipeline_config, model_input};
use explainseg::synth::{generate, SynthConfig};
use ndarray::{Array2, Array3};

struct Item {
    pixels: Array3<u8>,
    truth: Array2<bool>,
    relevance: Array2<f32>,
    fused: Array2<f32>,
    pipeline: Vec<(Variant, f64)>,
}

fn main() -> explainseg::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    let seed: u64 = a.get(1).map_or(2, |s| s.parse().unwrap());
    let count: u64 = a.get(2).map_or(60, |s| s.parse().unwrap());
    let sources = a.get(3).map_or("both", |s| s.as_str()).to_string();
    let vit = explainseg::model::Vit::load(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/synth_vit.safetensors"),
        None,
        &Default::default(),
    )?;
    let engine = CpuEngine::new(&vit);
    let cfg = demo_pipeline_config();
    let synth = SynthConfig {
        size: 64,
        // 0.5 as `explainseg synth`; the demo's set (seed 7, 10 images) uses 0.8.
        positive_fraction: a.get(4).map_or(0.5, |s| s.parse().unwrap()),
    };
    let t0 = std::time::Instant::now();
    let mut items = Vec::new();
    for index in 0..count {
        let s = generate(seed, index, &synth)?;
        if !s.lesion {
            continue;
        }
        let x = model_input(&vit, &s.image)?;
        let mut explain_cfg = cfg.explain.clone();
        if let Some(n) = vit.normalization {
            (explain_cfg.mean, explain_cfg.std) = (n.mean, n.std);
        }
        let e = explain(&engine, x.view(), &explain_cfg, None)?;
        let mut pipeline = Vec::new();
        for v in [Variant::C, Variant::XNCut, Variant::B] {
            let seg = segment_explained(&engine, x.view(), s.image.view(), v, &cfg, Some(&e))?;
            pipeline.push((v, scores(seg.mask.view(), s.mask.view())?.dice));
        }
        let no_crf = PipelineConfig {
            crf: None,
            ..cfg.clone()
        };
        let seg = segment_explained(
            &engine,
            x.view(),
            s.image.view(),
            Variant::B,
            &no_crf,
            Some(&e),
        )?;
        items.push(Item {
            pixels: s.image,
            truth: s.mask,
            relevance: seg.relevance.unwrap(),
            fused: seg.fused.unwrap(),
            pipeline,
        });
    }
    let n = items.len() as f64;
    eprintln!(
        "seed {seed}: {} positives explained in {:.1} s",
        items.len(),
        t0.elapsed().as_secs_f64()
    );
    for v in [Variant::C, Variant::XNCut, Variant::B] {
        let d: f64 = items
            .iter()
            .map(|it| it.pipeline.iter().find(|p| p.0 == v).unwrap().1)
            .sum::<f64>()
            / n;
        println!("{d:.4}  pipeline {}", v.name());
    }
    let base = NcutForegroundParams::default();
    if let Some(k) = std::env::var("SHOW")
        .ok()
        .and_then(|s| s.parse::<f32>().ok())
    {
        let rule = NcutForegroundParams {
            sigma_r_per_std: Some(k),
            ..base.clone()
        };
        // SHOW=k prints the first maps, the truth and the σ_r = k·std cut.
        for it in items.iter().take(6) {
            let out = ncut_foreground(it.relevance.view(), &cfg.ncut, &rule)?;
            println!(
                "σr {} λ2 {:.4} ncut {:.4} residual {:.1e}",
                out.cut.eigenvalue.max(0.0),
                out.cut.eigenvalue,
                out.ncut,
                out.cut.residual
            );
            let (h, w) = it.truth.dim();
            show(
                &it.relevance,
                &it.truth,
                &upsample_mask(out.mask.view(), h, w),
            );
        }
        return Ok(());
    }
    // (name, rule); the rule's dilation is applied by `ncut_mask`.
    let plain = NcutForegroundParams::mean_split();
    let mut rules: Vec<(String, NcutForegroundParams)> = vec![
        ("mean split (plain Shi–Malik)".into(), plain.clone()),
        (
            "mean split, dilation 8".into(),
            NcutForegroundParams {
                dilation_radius_px: 8,
                ..plain.clone()
            },
        ),
    ];
    for dilation_radius_px in [0, 4, 6, 8] {
        for k in [0.25, 0.5, 0.75, 1.0, 2.0] {
            rules.push((
                format!("σr={k}·std, dilation {dilation_radius_px}"),
                NcutForegroundParams {
                    sigma_r_per_std: Some(k),
                    dilation_radius_px,
                    ..base.clone()
                },
            ));
        }
    }
    // ONLY=text keeps the rules whose name holds it.
    let only = std::env::var("ONLY").ok();
    rules.retain(|r| only.as_deref().is_none_or(|o| r.0.contains(o)));
    let crf = cfg.crf.clone().unwrap();
    for (sname, pick) in [
        (
            "xai",
            (|it: &Item| &it.relevance) as fn(&Item) -> &Array2<f32>,
        ),
        ("fused", |it: &Item| &it.fused),
    ] {
        if sources != "both" && sources != sname {
            continue;
        }
        for (name, rule) in &rules {
            let t = std::time::Instant::now();
            let (mut d_pre, mut d_crf, mut frac) = (0.0, 0.0, 0.0);
            for it in &items {
                // The grid mask alone (pre-CRF, undilated) and the variant's mask.
                let out = ncut_foreground(pick(it).view(), &cfg.ncut, rule)?;
                let (h, w) = it.truth.dim();
                let grid = upsample_mask(out.mask.view(), h, w);
                d_pre += scores(grid.view(), it.truth.view())?.dice;
                let m = ncut_mask(pick(it).view(), &cfg.ncut, rule)?;
                let r = refine_mask(it.pixels.view(), m.view(), &crf)?;
                d_crf += scores(r.view(), it.truth.view())?.dice;
                frac += m.iter().filter(|&&b| b).count() as f64 / m.len() as f64;
            }
            println!(
                "{:.4}  {sname} {name}  (grid mask {:.4}, fg {:.3} of image, {:.1} s)",
                d_crf / n,
                d_pre / n,
                frac / n,
                t.elapsed().as_secs_f64()
            );
        }
    }
    Ok(())
}

/// Prints `map` area-averaged to 16×16 (0–9) next to the truth, for a look.
#[allow(dead_code)]
fn show(map: &Array2<f32>, truth: &Array2<bool>, mask: &Array2<bool>) {
    let g = explainseg::post::ncut::resample_area(map.view(), (16, 16)).unwrap();
    let t = explainseg::post::ncut::resample_area(truth.mapv(|b| b as u8 as f32).view(), (16, 16))
        .unwrap();
    let m = explainseg::post::ncut::resample_area(mask.mapv(|b| b as u8 as f32).view(), (16, 16))
        .unwrap();
    for i in 0..16 {
        let row: String = (0..16)
            .map(|j| char::from_digit((g[[i, j]] * 9.99) as u32, 10).unwrap())
            .collect();
        let tr: String = (0..16)
            .map(|j| if t[[i, j]] > 0.5 { '#' } else { '.' })
            .collect();
        let mr: String = (0..16)
            .map(|j| if m[[i, j]] > 0.5 { '#' } else { '.' })
            .collect();
        println!("{row}  {tr}  {mr}");
    }
    println!();
}
