//! The method end to end (the paper's Algorithm 1): predict → explain the predicted
//! class → map (relevance, optionally fused with a feature map) → mask (morphology
//! or Normalized Cut) → DenseCRF. Plus the TokenCut baseline on the same engine.
//!
//! | variant | map | mask |
//! |---|---|---|
//! | A | fusion | morphology |
//! | B | fusion | NCut |
//! | C | XAI (relevance) | morphology |
//! | XNCut | XAI (relevance) | NCut |
//! | TokenCut | last-layer keys | TokenCut's feature-graph NCut |
//! | MaskCut | last-layer keys | MaskCut's repeated cuts (union of objects) |
//!
//! Everything runs at the network's input resolution; callers map the mask back
//! to the original image (see [`crate::image::ResizePlan`]).

mod preset;

pub use preset::Preset;

use std::time::Instant;

use ndarray::{Array1, Array2, Array3, ArrayView3, ArrayView4, Axis};

use crate::attr::features::{
    feature_map, feature_map_of, patch_descriptors, Descriptor, FeatureConfig,
};
use crate::attr::fusion::{fuse, pool_to_grid, upsample_mask, Upsample};
use crate::attr::smooth::gaussian_smooth;
use crate::attr::{
    explain_map, ExplainConfig, ExplainedMap, Explanation, Normalizer, Progress, Reduction,
    RelevanceConfig,
};
use crate::backend::{Engine, Facet, TapRequest};
use crate::error::{Error, Result};
use crate::image::ResizePlan;
use crate::model::Vit;
use crate::post::crf::{refine_mask_on, CrfParams};
use crate::post::maskcut::{self, MaskCutParams};
use crate::post::morphology::{morphology_mask, MorphologyParams};
use crate::post::ncut::{ncut_mask, tokencut_bipartition, NcutForegroundParams, ShiMalikParams};

/// Which segmentation to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// Fusion & Morphology.
    A,
    /// Fusion & NCut.
    B,
    /// XAI & Morphology.
    C,
    /// XAI & NCut.
    XNCut,
    /// Baseline: TokenCut on last-layer keys.
    TokenCut,
    /// Baseline: MaskCut (CutLER) on last-layer keys; the mask is the union of its
    /// objects.
    MaskCut,
}

impl Variant {
    pub const ALL: [Variant; 6] = [
        Variant::A,
        Variant::B,
        Variant::C,
        Variant::XNCut,
        Variant::TokenCut,
        Variant::MaskCut,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Variant::A => "a",
            Variant::B => "b",
            Variant::C => "c",
            Variant::XNCut => "xncut",
            Variant::TokenCut => "tokencut",
            Variant::MaskCut => "maskcut",
        }
    }

    fn uses_fusion(self) -> bool {
        matches!(self, Variant::A | Variant::B)
    }

    /// Whether the variant explains the image with IG (all but the baselines).
    pub fn uses_ig(self) -> bool {
        !matches!(self, Variant::TokenCut | Variant::MaskCut)
    }
}

impl std::str::FromStr for Variant {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Variant::ALL
            .into_iter()
            .find(|v| v.name() == s.to_ascii_lowercase())
            .ok_or_else(|| {
                Error::param(
                    "variant",
                    format!("`{s}` is not one of a, b, c, xncut, tokencut, maskcut"),
                )
            })
    }
}

/// TokenCut settings (docs/postprocessing.md §1): keys of the last block, τ = 0.2, ε = 1e-5.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenCutParams {
    pub tau: f32,
    pub eps: f32,
}

impl Default for TokenCutParams {
    fn default() -> Self {
        TokenCutParams {
            tau: 0.2,
            eps: 1e-5,
        }
    }
}

/// Every choice of the pipeline, with documented defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineConfig {
    pub explain: ExplainConfig,
    /// Channel reduction of the attribution (default |Σc|, Captum's heat map).
    pub reduction: Reduction,
    /// Gaussian σ in pixels applied to the reduced attribution before scaling
    /// ([`crate::attr::smooth`]); default 0 (off, as the paper).
    pub smooth_sigma: f32,
    /// Scaling of the relevance map. Default min–max: on the held-out training
    /// images of Kvasir-SEG and BUSI (docs/results.md) it beat Captum's 98%
    /// cumulative mass for variants A and C on both and for B and XNCut on Kvasir.
    pub normalizer: Normalizer,
    /// Feature map for fusion (default PC1 of last-layer keys, sign matched to the
    /// relevance pooled to the patch grid).
    pub feature: FeatureConfig,
    /// Patch grid → pixels for fusion (default nearest, as DINO and TokenCut).
    pub upsample: Upsample,
    pub morphology: MorphologyParams,
    pub ncut: ShiMalikParams,
    /// Gaussian σ in pixels applied to the map that variants B and XNCut cut (after
    /// scaling; [`crate::attr::smooth`]); default 0 (off, as the paper). The stable
    /// preset's: morphology (A, C) is better without it, the cut steadier with it.
    pub ncut_smooth_sigma: f32,
    /// How variants B and XNCut turn the cut into a mask (default σ_r = 0.5·std of
    /// the map, 8-px dilation; [`NcutForegroundParams::mean_split`] is the plain
    /// Shi–Malik mean split).
    pub ncut_foreground: NcutForegroundParams,
    pub tokencut: TokenCutParams,
    /// MaskCut settings; its per-mask CRF follows `crf`.
    pub maskcut: MaskCutParams,
    /// DenseCRF refinement; `None` skips it.
    pub crf: Option<CrfParams>,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            explain: ExplainConfig::default(),
            reduction: Reduction::AbsSum,
            smooth_sigma: 0.0,
            normalizer: Normalizer::MinMax,
            feature: FeatureConfig::default(),
            upsample: Upsample::Nearest,
            // Border components are kept: clearing them cost a third to a half of
            // the Dice of variants A and C on held-out Kvasir and BUSI images
            // (docs/results.md), where lesions often reach the image's edge.
            morphology: MorphologyParams {
                clear_border: false,
                ..Default::default()
            },
            ncut: ShiMalikParams::default(),
            ncut_smooth_sigma: 0.0,
            ncut_foreground: NcutForegroundParams::default(),
            tokencut: TokenCutParams::default(),
            maskcut: MaskCutParams::default(),
            crf: Some(CrfParams::default()),
        }
    }
}

impl PipelineConfig {
    /// How the attribution becomes the relevance map.
    pub fn relevance(&self) -> RelevanceConfig {
        RelevanceConfig {
            reduction: self.reduction,
            smooth_sigma: self.smooth_sigma,
            normalizer: self.normalizer,
        }
    }

    /// The block taps an explanation should bring back for the feature map of
    /// `variants` (those that fuse it with the relevance), if any.
    pub fn feature_taps(&self, vit: &Vit, variants: &[Variant]) -> Option<TapRequest> {
        match variants.iter().any(|v| v.uses_fusion()) {
            true => self.feature.taps(vit.config.depth),
            false => None,
        }
    }

    /// These settings for one image brought to the network input by `plan`: the
    /// DenseCRF kernels (also MaskCut's, which uses `crf`) are sized in the
    /// original image's pixels ([`CrfParams::at_scale`]). Callers that resize
    /// images call this per image.
    pub fn for_image(&self, plan: &ResizePlan) -> PipelineConfig {
        PipelineConfig {
            crf: self.crf.as_ref().map(|c| c.at_scale(plan.scale())),
            ..self.clone()
        }
    }
}

/// What a segmentation produced, all at the network input's resolution.
#[derive(Debug, Clone)]
pub struct Segmentation {
    pub variant: Variant,
    /// Final mask (after DenseCRF when enabled).
    pub mask: Array2<bool>,
    /// Mask before DenseCRF.
    pub mask_pre_crf: Array2<bool>,
    /// Relevance map (H, W) in [0, 1]; absent for TokenCut.
    pub relevance: Option<Array2<f32>>,
    /// Feature map at the patch grid; for TokenCut its Fiedler vector.
    pub feature: Option<Array2<f32>>,
    /// Fused map (H, W) for variants A and B.
    pub fused: Option<Array2<f32>>,
    pub logits: Array1<f32>,
    pub predicted: usize,
    /// Seconds per stage, in order, named `explain` (IG + NoiseTunnel), `feature`
    /// (feature map and fusion for A and B; the patch keys and logits for TokenCut and
    /// MaskCut), `mask` (morphology, NCut, TokenCut's cut, or MaskCut with its per-object
    /// CRF) and `crf` (DenseCRF), each present where the variant runs it.
    pub timings: Vec<(&'static str, f64)>,
    /// Forward+backward passes of the explanation (IG steps × NoiseTunnel samples); 0
    /// for TokenCut and MaskCut.
    pub passes: usize,
}

impl Segmentation {
    /// Seconds spent in `stage` (`explain`, `feature`, `mask`, `crf`), if it ran.
    pub fn stage_seconds(&self, stage: &str) -> Option<f64> {
        self.timings
            .iter()
            .find(|(n, _)| *n == stage)
            .map(|(_, s)| *s)
    }
}

/// Runs `variant` on one image. `x` is the normalised input (1, 3, H, W); `pixels`
/// the (H, W, C) 8-bit image the network sees, for DenseCRF.
///
/// # Errors
/// Shape mismatches between `x` and `pixels`; any stage's error;
/// [`Error::Aborted`] from the progress callback.
pub fn segment(
    engine: &dyn Engine,
    x: ArrayView4<f32>,
    pixels: ArrayView3<u8>,
    variant: Variant,
    cfg: &PipelineConfig,
    progress: Option<Progress>,
) -> Result<Segmentation> {
    if !variant.uses_ig() {
        return segment_mapped(engine, x, pixels, variant, cfg, None);
    }
    let clock = Instant::now();
    let taps = cfg.feature_taps(engine.vit(), &[variant]);
    let e = explain_map(engine, x, &cfg.explain, &cfg.relevance(), taps, progress)?;
    let explain_s = clock.elapsed().as_secs_f64();
    let mut seg = segment_mapped(engine, x, pixels, variant, cfg, Some(&e))?;
    seg.timings.insert(0, ("explain", explain_s));
    Ok(seg)
}

/// [`segment`] from a full explanation the caller computed with
/// `explain(engine, x, &cfg.explain, ..)` (e.g. read from a cache): its relevance
/// map is computed on the host, then as [`segment_mapped`].
///
/// # Errors
/// As for [`segment_mapped`]; [`Error::Shape`] when the attribution is not the
/// input's shape.
pub fn segment_explained(
    engine: &dyn Engine,
    x: ArrayView4<f32>,
    pixels: ArrayView3<u8>,
    variant: Variant,
    cfg: &PipelineConfig,
    explanation: Option<&Explanation>,
) -> Result<Segmentation> {
    let mapped = match explanation {
        Some(e) if variant.uses_ig() => {
            if e.attribution.dim() != x.dim() {
                let (a, b) = (e.attribution.dim(), x.dim());
                return Err(Error::shape(
                    "attribution (1, 3, H, W) of this input",
                    &[b.0, b.1, b.2, b.3],
                    &[a.0, a.1, a.2, a.3],
                ));
            }
            Some(e.map(&cfg.relevance())?)
        }
        _ => None,
    };
    segment_mapped(engine, x, pixels, variant, cfg, mapped.as_ref())
}

/// [`segment`] from a relevance map the caller computed with
/// `explain_map(engine, x, &cfg.explain, &cfg.relevance(), ..)`, so that variants A,
/// B, C and XNCut of one image can share it (they differ only after the
/// explanation). `explained` is required by those variants and ignored by the
/// baselines.
///
/// # Errors
/// As for [`segment`]; [`Error::InvalidParam`] when an IG variant gets no
/// explanation; [`Error::Shape`] when its map is not the input's size.
pub fn segment_mapped(
    engine: &dyn Engine,
    x: ArrayView4<f32>,
    pixels: ArrayView3<u8>,
    variant: Variant,
    cfg: &PipelineConfig,
    explained: Option<&ExplainedMap>,
) -> Result<Segmentation> {
    let (b, _, h, w) = x.dim();
    if b != 1 || pixels.dim().0 != h || pixels.dim().1 != w {
        return Err(Error::shape(
            "pixels (H, W, C) matching the input",
            &[h, w, 3],
            &[pixels.dim().0, pixels.dim().1, pixels.dim().2],
        ));
    }
    let mut timings = Vec::new();
    let mut clock = Instant::now();
    let mut lap = |name: &'static str, timings: &mut Vec<(&'static str, f64)>| {
        timings.push((name, clock.elapsed().as_secs_f64()));
        clock = Instant::now();
    };
    let vit = engine.vit();
    let (mut relevance, mut feature, mut fused) = (None, None, None);
    let (logits, predicted, pre_crf) = if variant.uses_ig() {
        let e = explained.ok_or_else(|| {
            Error::param(
                "explanation",
                format!("variant {} needs the image's explanation", variant.name()),
            )
        })?;
        if e.relevance.dim() != (h, w) {
            let (rh, rw) = e.relevance.dim();
            return Err(Error::shape(
                "relevance map (H, W) of this input",
                &[h, w],
                &[rh, rw],
            ));
        }
        let rel = e.relevance.clone();
        let map = if variant.uses_fusion() {
            let grid = vit.config.grid_for(h, w)?;
            let reference = pool_to_grid(rel.view(), grid)?;
            let layer = cfg
                .feature
                .layer
                .unwrap_or(vit.config.depth.saturating_sub(1));
            let f = match &e.taps {
                // Read by the explanation's forward, in its wait.
                Some((l, taps)) if *l == layer => {
                    feature_map_of(taps, &cfg.feature, Some(reference.view()))?
                }
                _ => feature_map(engine, x, &cfg.feature, Some(reference.view()))?,
            };
            let fm = fuse(rel.view(), f.view(), cfg.upsample)?;
            feature = Some(f);
            fused = Some(fm.clone());
            lap("feature", &mut timings);
            fm
        } else {
            rel.clone()
        };
        relevance = Some(rel);
        let mask = match variant {
            Variant::A | Variant::C => morphology_mask(map.view(), &cfg.morphology)?.mask,
            _ => ncut_mask(
                gaussian_smooth(map.view(), cfg.ncut_smooth_sigma)?.view(),
                &cfg.ncut,
                &cfg.ncut_foreground,
            )?,
        };
        lap("mask", &mut timings);
        (e.logits.clone(), e.predicted, mask)
    } else {
        let logits = engine.logits(x)?.index_axis(Axis(0), 0).to_owned();
        let predicted = crate::attr::argmax(logits.as_slice().expect("owned row"));
        let keys = patch_descriptors(engine, x, Descriptor::Facet(Facet::Key), None)?;
        let grid = vit.config.grid_for(h, w)?;
        lap("feature", &mut timings);
        if variant == Variant::MaskCut {
            // MaskCut runs its CRF per object inside; one call gives both unions.
            let params = MaskCutParams {
                crf: cfg.crf.clone(),
                ..cfg.maskcut.clone()
            };
            let objects =
                maskcut::maskcut_on(engine.crf_device(), keys.view(), grid, pixels, &params)?;
            let pre = maskcut::union(&objects.raw, (h, w));
            let final_mask = maskcut::union(&objects.kept, (h, w));
            lap("mask", &mut timings);
            return Ok(Segmentation {
                variant,
                mask: final_mask,
                mask_pre_crf: pre,
                relevance,
                feature,
                fused,
                logits,
                predicted,
                timings,
                passes: 0,
            });
        }
        let cut = tokencut_bipartition(keys.view(), grid, cfg.tokencut.tau, cfg.tokencut.eps)?;
        feature = Some(
            Array2::from_shape_vec(grid, cut.eigvec.iter().map(|v| *v as f32).collect())
                .expect("one value per patch"),
        );
        lap("mask", &mut timings);
        (logits, predicted, upsample_mask(cut.mask.view(), h, w))
    };
    let mask = match &cfg.crf {
        Some(p) => {
            // On the engine's device when it has one (the GPU twin of the CPU CRF).
            let m = refine_mask_on(engine.crf_device(), pixels, pre_crf.view(), p)?;
            lap("crf", &mut timings);
            m
        }
        None => pre_crf.clone(),
    };
    Ok(Segmentation {
        variant,
        mask,
        mask_pre_crf: pre_crf,
        relevance,
        feature,
        fused,
        logits,
        predicted,
        timings,
        passes: if variant.uses_ig() {
            cfg.explain.passes()
        } else {
            0
        },
    })
}

/// The 8-bit (H, W, 3) pixels of a normalised input, undoing the normalisation —
/// for callers that have only the tensor.
pub fn pixels_from_input(x: ArrayView4<f32>, mean: [f32; 3], std: [f32; 3]) -> Array3<u8> {
    let (_, _, h, w) = x.dim();
    Array3::from_shape_fn((h, w, 3), |(i, j, c)| {
        ((x[[0, c, i, j]] * std[c] + mean[c]) * 255.0)
            .round()
            .clamp(0.0, 255.0) as u8
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::CropBox;

    #[test]
    fn crf_kernels_are_sized_in_original_pixels() {
        // 640×480 squashed to 160×160: x by 1/4, y by 1/3, geometric mean 1/√12.
        let plan = ResizePlan {
            input_width: 640,
            input_height: 480,
            resized_width: 160,
            resized_height: 160,
            crop: CropBox {
                left: 0,
                top: 0,
                width: 160,
                height: 160,
            },
        };
        let scale = (1.0f64 / 12.0).sqrt() as f32;
        assert!((plan.scale() - scale).abs() < 1e-7);
        let cfg = PipelineConfig::default().for_image(&plan);
        let crf = cfg.crf.unwrap();
        let base = CrfParams::default();
        assert!((crf.bi_sxy_px - base.bi_sxy_px * scale).abs() < 1e-5);
        assert!((crf.pos_sxy_px - base.pos_sxy_px * scale).abs() < 1e-6);
        assert_eq!((crf.bi_srgb, crf.bi_weight), (base.bi_srgb, base.bi_weight));
        // Nothing else changes, and an image at the network's size is left as is.
        let same = ResizePlan {
            resized_width: 640,
            resized_height: 480,
            ..plan
        };
        assert_eq!(
            PipelineConfig::default().for_image(&same),
            PipelineConfig::default()
        );
    }
}
