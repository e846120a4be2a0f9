//! Post-processing sweep on a synthetic set (the recipe search behind the demo):
//! explains every positive image once, then scores many mask settings on the same
//! relevance maps. Choose settings on a validation set, then confirm on a test set.
//!
//! ```text
//! cargo run --release --example synth_sweep -- MODEL.safetensors DATA_DIR [STEPS] [NT_SAMPLES] [NT_STDEV] [MAX_IMAGES] [DUMP_DIR]
//! ```

use std::path::{Path, PathBuf};

use explainseg::attr::features::{feature_map, FeatureConfig};
use explainseg::attr::fusion::{fuse, pool_to_grid, upsample_mask, Upsample};
use explainseg::attr::{
    explain, normalize, reduce_channels, ExplainConfig, IgConfig, Noise, NoiseTunnelConfig,
    Normalizer, NtType, Reduction,
};
use explainseg::backend::cpu::CpuEngine;
use explainseg::eval::scores;
use explainseg::image::{decode_image_file, normalize_rgb8, Normalization};
use explainseg::model::{LoadOptions, Vit};
use explainseg::pipeline::{segment, PipelineConfig, Variant};
use explainseg::post::crf::{refine_mask, CrfParams};
use explainseg::post::morphology::{morphology_mask, MorphologyParams};
use explainseg::post::ncut::{shi_malik_ncut, ShiMalikParams};
use explainseg::render::read_mask;
use ndarray::{Array2, Array3, Axis};

struct Item {
    pixels: Array3<u8>,
    truth: Array2<bool>,
    attr: Array2<f32>,
    fused_feature: Array2<f32>,
    tokencut: Array2<bool>,
    correct: bool,
}

fn main() -> explainseg::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    let model = PathBuf::from(&a[1]);
    let data = PathBuf::from(&a[2]);
    let arg = |i: usize, d: f64| a.get(i).map_or(d, |s| s.parse().unwrap());
    let steps = arg(3, 16.0) as usize;
    let samples = arg(4, 4.0) as usize;
    let stdev = arg(5, 0.5) as f32;
    let max_images = arg(6, 1e9) as usize;
    let dump = a.get(7).map(PathBuf::from);
    let vit = Vit::load(&model, None, &LoadOptions::default())?;
    let norm = Normalization::imagenet();
    let explain_cfg = ExplainConfig {
        ig: IgConfig {
            n_steps: steps,
            return_delta: false,
            ..Default::default()
        },
        noise_tunnel: (samples > 0).then(|| NoiseTunnelConfig {
            nt_type: NtType::SmoothGrad,
            noise: Noise::Seeded {
                samples,
                stdev,
                seed: 0,
            },
        }),
        ..Default::default()
    };
    let labels = std::fs::read_to_string(data.join("labels.csv")).unwrap();
    let t0 = std::time::Instant::now();
    let mut items = Vec::new();
    let (mut n_neg, mut neg_correct) = (0, 0);
    for line in labels.lines().skip(1) {
        let (file, label) = line.split_once(',').unwrap();
        let positive = label == "lesion";
        if items.len() >= max_images {
            break;
        }
        let img = decode_image_file(&data.join("images").join(file))?;
        let (w, h) = (img.width, img.height);
        let rgb = img.to_rgb8();
        let x = normalize_rgb8(&rgb, w, h, &norm)?;
        let pixels = Array3::from_shape_vec((h as usize, w as usize, 3), rgb).unwrap();
        if !positive {
            let logits = explainseg::backend::Engine::logits(&CpuEngine::new(&vit), x.view())?;
            n_neg += 1;
            neg_correct += (logits[[0, 0]] >= logits[[0, 1]]) as usize;
            continue;
        }
        let truth = read_mask(&data.join("masks").join(file))?;
        let e = explain(&CpuEngine::new(&vit), x.view(), &explain_cfg, None)?;
        let attr = reduce_channels(e.attribution.index_axis(Axis(0), 0), Reduction::AbsSum);
        let rel = normalize(&attr, Normalizer::captum())?;
        let grid = vit.config.grid_for(h as usize, w as usize)?;
        let reference = pool_to_grid(rel.view(), grid)?;
        let feature = feature_map(
            &CpuEngine::new(&vit),
            x.view(),
            &FeatureConfig::default(),
            Some(reference.view()),
        )?;
        let tc = segment(
            &CpuEngine::new(&vit),
            x.view(),
            pixels.view(),
            Variant::TokenCut,
            &PipelineConfig {
                crf: None,
                ..Default::default()
            },
            None,
        )?;
        if let Some(d) = &dump {
            std::fs::create_dir_all(d).unwrap();
            let stem = Path::new(file).file_stem().unwrap().to_string_lossy();
            explainseg::npy::write(&d.join(format!("{stem}_attr.npy")), &attr)?;
        }
        items.push(Item {
            pixels,
            truth,
            attr,
            fused_feature: feature,
            tokencut: tc.mask,
            correct: e.predicted == 1,
        });
    }
    let n = items.len() as f64;
    eprintln!(
        "{} positives explained in {:.1} s ({} steps × {} samples, σ {}); positives correct {:.3}, negatives correct {}/{}",
        items.len(),
        t0.elapsed().as_secs_f64(),
        steps,
        samples,
        stdev,
        items.iter().filter(|i| i.correct).count() as f64 / n,
        neg_correct,
        n_neg
    );
    let crf = CrfParams::default();
    let mean_dice = |masks: &dyn Fn(&Item) -> Array2<bool>, with_crf: bool| -> f64 {
        items
            .iter()
            .map(|it| {
                let mut m = masks(it);
                if with_crf {
                    m = refine_mask(it.pixels.view(), m.view(), &crf).unwrap();
                }
                scores(m.view(), it.truth.view()).unwrap().dice
            })
            .sum::<f64>()
            / n
    };
    let mut rows: Vec<(String, f64)> = Vec::new();
    let report = |name: String, d: f64| {
        println!("{d:.4}  {name}");
        (name, d)
    };
    let tc = mean_dice(&|it| it.tokencut.clone(), false);
    rows.push(report("tokencut nocrf".into(), tc));
    rows.push(report(
        "tokencut crf".into(),
        mean_dice(&|it| it.tokencut.clone(), true),
    ));
    let normalizers = [("cummass", Normalizer::captum())];
    let blur = |m: &Array2<f32>, r: usize| -> Array2<f32> {
        if r == 0 {
            return m.clone();
        }
        let (h, w) = m.dim();
        Array2::from_shape_fn((h, w), |(i, j)| {
            let (mut s, mut c) = (0.0, 0.0);
            for y in i.saturating_sub(r)..(i + r + 1).min(h) {
                for x in j.saturating_sub(r)..(j + r + 1).min(w) {
                    s += m[[y, x]];
                    c += 1.0;
                }
            }
            s / c
        })
    };
    for (nname, normalizer) in normalizers {
        for blur_r in [2usize, 4] {
            let maps: Vec<Array2<f32>> = items
                .iter()
                .map(|it| normalize(&blur(&it.attr, blur_r), normalizer).unwrap())
                .collect();
            let fused: Vec<Array2<f32>> = items
                .iter()
                .zip(&maps)
                .map(|(it, m)| fuse(m.view(), it.fused_feature.view(), Upsample::Nearest).unwrap())
                .collect();
            let idx = |it: &Item| items.iter().position(|j| std::ptr::eq(j, it)).unwrap();
            for (fname, src) in [("xai", &maps), ("fused", &fused)] {
                for equalize in [true, false] {
                    for clear_border in [false] {
                        for dil in [1usize] {
                            let p = MorphologyParams {
                                equalize,
                                clear_border,
                                dilation_radius: dil,
                                erosion_radius: dil,
                                min_object_size: 16,
                                ..Default::default()
                            };
                            let f =
                                |it: &Item| morphology_mask(src[idx(it)].view(), &p).unwrap().mask;
                            for with_crf in [false, true] {
                                rows.push(report(
                                    format!(
                                        "{nname} blur{blur_r} {fname} morph eq{} cb{} d{dil} crf{}",
                                        equalize as u8, clear_border as u8, with_crf as u8
                                    ),
                                    mean_dice(&f, with_crf),
                                ));
                            }
                        }
                    }
                }
                for grid in [16usize, 32] {
                    for sigma_r in [0.03f32, 0.1] {
                        for sigma_x in [2.0f32, 6.0] {
                            let p = ShiMalikParams {
                                grid: Some((grid, grid)),
                                sigma_r,
                                sigma_x: sigma_x * grid as f32 / 64.0,
                                radius: (sigma_x * grid as f32 / 64.0 * 1.25).max(1.0),
                            };
                            let f = |it: &Item| {
                                let (h, w) = it.truth.dim();
                                upsample_mask(
                                    shi_malik_ncut(src[idx(it)].view(), &p).unwrap().mask.view(),
                                    h,
                                    w,
                                )
                            };
                            for with_crf in [false, true] {
                                rows.push(report(
                                    format!("{nname} blur{blur_r} {fname} ncut g{grid} sr{sigma_r} sx{sigma_x} crf{}", with_crf as u8),
                                    mean_dice(&f, with_crf),
                                ));
                            }
                        }
                    }
                }
            }
        }
    }
    rows.sort_by(|a, b| b.1.total_cmp(&a.1));
    eprintln!("best: {:?}", &rows[..rows.len().min(5)]);
    Ok(())
}
