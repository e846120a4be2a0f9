//! The self-contained demo: a small ViT trained on synthetic lesions (embedded in
//! the CLI binary, `assets/synth_vit.safetensors`), synthetic images generated at run time, and the method's variants
//! scored against the exact masks. Needs no files and no network.

use ndarray::{Array3, Array4};

use super::{generate, Sample, SynthConfig};
use crate::attr::explain_map;
use crate::attr::{
    ExplainConfig, IgConfig, Noise, NoiseTunnelConfig, Normalizer, NtType, Progress,
};
use crate::backend::Engine;
use crate::error::Result;
use crate::eval::{scores, Scores};
use crate::image::normalize_rgb8;
use crate::model::Vit;
use crate::pipeline::{segment_mapped, PipelineConfig, Segmentation, Variant};
use crate::post::morphology::MorphologyParams;

/// The settings chosen for the demo model on a validation set (seed 2, never the
/// demo's own images): 16 Gauss–Legendre steps × 4 NoiseTunnel samples of σ 0.5,
/// relevance smoothed with σ = 1 px (σ 0, 1, 1.5, 2, 3, 4 tried), and a morphology chain without border
/// clearing (lesions sit anywhere, and small 64-px maps make every blob "near" the
/// border), dilation/erosion radius 1 and 16-px minimum objects (the paper's 3 and
/// 64 are sized for 224-px inputs).
pub fn demo_pipeline_config() -> PipelineConfig {
    PipelineConfig {
        explain: ExplainConfig {
            ig: IgConfig {
                n_steps: 16,
                return_delta: false,
                ..Default::default()
            },
            noise_tunnel: Some(NoiseTunnelConfig {
                nt_type: NtType::SmoothGrad,
                noise: Noise::Seeded {
                    samples: 4,
                    stdev: 0.5,
                    seed: 0,
                },
            }),
            ..Default::default()
        },
        smooth_sigma: 1.0,
        // The scaling the demo settings were chosen with (not the library default).
        normalizer: Normalizer::captum(),
        morphology: MorphologyParams {
            clear_border: false,
            dilation_radius: 1,
            erosion_radius: 1,
            min_object_size: 16,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Which images the demo runs on.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoSet {
    pub seed: u64,
    pub count: u64,
    pub synth: SynthConfig,
}

impl Default for DemoSet {
    /// Ten images, eight with a lesion, from a seed the model never saw (it was
    /// trained on seed 1 and its settings chosen on seed 2).
    fn default() -> Self {
        DemoSet {
            seed: 7,
            count: 10,
            synth: SynthConfig {
                size: 64,
                positive_fraction: 0.8,
            },
        }
    }
}

/// One image's outcome.
#[derive(Debug, Clone)]
pub struct DemoImage {
    pub index: u64,
    pub sample: Sample,
    /// Per variant: the segmentation and its scores against the true mask.
    pub results: Vec<(Variant, Segmentation, Scores)>,
}

impl DemoImage {
    /// The class the model predicted (its name: `Vit::class_name`).
    pub fn predicted(&self) -> Option<usize> {
        self.results.first().map(|r| r.1.predicted)
    }
}

/// The network input of an 8-bit image, normalised as `vit` was trained (the mean/std
/// its file records, else ImageNet's).
///
/// # Errors
/// Never for images from [`generate`].
pub fn model_input(vit: &Vit, image: &Array3<u8>) -> Result<Array4<f32>> {
    let (h, w, _) = image.dim();
    let rgb: Vec<u8> = image.iter().copied().collect();
    let norm = vit.normalization.unwrap_or_default();
    normalize_rgb8(&rgb, w as u32, h as u32, &norm)
}

/// Runs `variants` on every image of `set`; `progress(done, total)` is called after
/// each (image, variant) pair and may return false to stop.
///
/// # Errors
/// Any stage's error; [`crate::Error::Aborted`] when `progress` stops the run.
pub fn run_demo(
    engine: &dyn Engine,
    set: &DemoSet,
    variants: &[Variant],
    cfg: &PipelineConfig,
    progress: Progress,
) -> Result<Vec<DemoImage>> {
    let vit = engine.vit();
    let total = set.count as usize * variants.len();
    let mut out = Vec::new();
    for index in 0..set.count {
        let sample = generate(set.seed, index, &set.synth)?;
        let x = model_input(vit, &sample.image)?;
        // Variants A, B, C and XNCut differ only after the explanation: run it once.
        let mut explain_cfg = cfg.explain.clone();
        if let Some(n) = vit.normalization {
            (explain_cfg.mean, explain_cfg.std) = (n.mean, n.std);
        }
        let explanation = match variants.iter().any(|v| v.uses_ig()) {
            true => Some(explain_map(
                engine,
                x.view(),
                &explain_cfg,
                &cfg.relevance(),
                cfg.feature_taps(vit, variants),
                None,
            )?),
            false => None,
        };
        let mut results = Vec::new();
        for &v in variants {
            let seg = segment_mapped(
                engine,
                x.view(),
                sample.image.view(),
                v,
                cfg,
                explanation.as_ref(),
            )?;
            let s = scores(seg.mask.view(), sample.mask.view())?;
            results.push((v, seg, s));
            if !progress(out.len() * variants.len() + results.len(), total) {
                return Err(crate::Error::Aborted);
            }
        }
        out.push(DemoImage {
            index,
            sample,
            results,
        });
    }
    Ok(out)
}

/// Mean scores of `variant` over the images with a lesion (Dice is undefined in
/// spirit on an empty truth: an image without a lesion counts only through the
/// classifier's verdict, reported separately).
pub fn mean_over_positives(images: &[DemoImage], variant: Variant) -> Option<Scores> {
    let all: Vec<Scores> = images
        .iter()
        .filter(|im| im.sample.lesion)
        .flat_map(|im| im.results.iter().filter(|r| r.0 == variant).map(|r| r.2))
        .collect();
    crate::eval::mean_scores(&all)
}
