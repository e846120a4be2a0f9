//! Named settings of the explanation and the cut (docs/method.md §6.2).
//!
//! * **paper** (the default): IG 50 Gauss–Legendre steps inside a 5-sample
//!   smoothgrad NoiseTunnel of independent noise (σ 1), NCut on a 56×56 grid
//!   with the Fiedler vector split at its mean — the paper's setting, bit for bit
//!   what [`PipelineConfig::default`] has always been.
//! * **stable**: fewer passes, spent where the mask depends on them: one pass
//!   per noise sample, 200 samples drawn stratified ([`NoiseDesign::Stratified`])
//!   at σ 0.25 (about 6% of the normalised input's range: half of SmoothGrad's
//!   lower end, as the relevance smoothing below already does the denoising that
//!   larger noise buys), each at its own path point of a stratification of
//!   [0, 1] shared by all samples ([`Method::Stratified`]), so that as many noise
//!   images are averaged as passes are run; relevance smoothed by a Gaussian of σ
//!   one patch of the model (the network sees patches, so finer detail in the map
//!   is sampling noise, not signal) and thresholded by Otsu on its values, not on
//!   its equalised ranks; for the NCut variants the map is smoothed by σ two
//!   patches and cut on a 28×28 grid.
//!
//! Smoothing is set in patches, so the preset needs the model's patch size
//! (`patch_px`) to become pixels.

use super::PipelineConfig;
use crate::attr::{ExplainConfig, Noise, NoiseDesign, NoiseTunnelConfig, NtType};
use crate::error::{Error, Result};
use crate::ig::Method;
use crate::post::ncut::NcutSplit;

/// A named setting of the explanation and the NCut split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Preset {
    /// The paper's setting (the default).
    #[default]
    Paper,
    /// Steadier masks across noise seeds in fewer passes than the paper's (§6.2).
    Stable,
}

impl Preset {
    pub const ALL: [Preset; 2] = [Preset::Paper, Preset::Stable];

    pub fn name(self) -> &'static str {
        match self {
            Preset::Paper => "paper",
            Preset::Stable => "stable",
        }
    }

    /// IG path points per noise sample.
    pub fn ig_steps(self) -> usize {
        match self {
            Preset::Paper => 50,
            Preset::Stable => 1,
        }
    }

    /// Where the path points lie: Captum's Gauss–Legendre rule, or one
    /// stratification of [0, 1] shared by all noise samples.
    pub fn ig_method(self) -> Method {
        match self {
            Preset::Paper => Method::GaussLegendre,
            Preset::Stable => Method::Stratified,
        }
    }

    /// NoiseTunnel samples.
    pub fn nt_samples(self) -> usize {
        match self {
            Preset::Paper => 5,
            Preset::Stable => 200,
        }
    }

    /// NoiseTunnel noise σ in normalised units (Captum's default 1.0 for the paper,
    /// about 22% of the ImageNet-normalised range; 0.25, about 6%, for stable: the
    /// smaller the noise, the less 64–200 samples leave of it in the mask).
    pub fn nt_stdev(self) -> f32 {
        match self {
            Preset::Paper => 1.0,
            Preset::Stable => 0.25,
        }
    }

    /// How the noise samples are drawn.
    pub fn noise_design(self) -> NoiseDesign {
        match self {
            Preset::Paper => NoiseDesign::Independent,
            Preset::Stable => NoiseDesign::Stratified,
        }
    }

    /// Gaussian σ in pixels on the relevance map, before fusion and scaling, for
    /// a model of `patch_px`-pixel patches.
    pub fn relevance_smooth_sigma(self, patch_px: usize) -> f32 {
        match self {
            Preset::Paper => 0.0,
            Preset::Stable => patch_px as f32,
        }
    }

    /// Whether the morphology chain equalises the map's histogram before Otsu.
    /// On a noisy map equalisation puts the threshold near the median rank, in
    /// the flat middle of the map where noise moves the boundary most; Otsu on
    /// the smoothed values splits between its modes instead.
    pub fn equalize(self) -> bool {
        match self {
            Preset::Paper => true,
            Preset::Stable => false,
        }
    }

    /// Gaussian σ in pixels on the map the NCut variants cut, for a model of
    /// `patch_px`-pixel patches (on top of the relevance smoothing).
    pub fn ncut_smooth_sigma(self, patch_px: usize) -> f32 {
        match self {
            Preset::Paper => 0.0,
            Preset::Stable => 2.0 * patch_px as f32,
        }
    }

    /// Side of the NCut variants' graph grid.
    pub fn ncut_grid(self) -> usize {
        match self {
            Preset::Paper => 56,
            Preset::Stable => 28,
        }
    }

    /// Where the NCut variants split the Fiedler vector.
    pub fn ncut_split(self) -> NcutSplit {
        match self {
            Preset::Paper => NcutSplit::Mean,
            Preset::Stable => NcutSplit::Mean,
        }
    }

    /// The preset's explanation settings with noise seed `seed` (the rest as
    /// [`ExplainConfig::default`]).
    pub fn explain_config(self, seed: u64) -> ExplainConfig {
        let mut cfg = ExplainConfig::default();
        cfg.ig.n_steps = self.ig_steps();
        cfg.ig.method = self.ig_method();
        cfg.ig.return_delta = self.ig_method().is_quadrature();
        cfg.noise_tunnel = Some(NoiseTunnelConfig {
            nt_type: NtType::SmoothGrad,
            noise: self.noise(self.nt_samples(), seed),
        });
        cfg
    }

    /// `samples` noise draws of the preset's σ and design for `seed` (its own
    /// count is [`Preset::nt_samples`]; fewer trade steadiness for latency,
    /// docs/method.md §6.2).
    pub fn noise(self, samples: usize, seed: u64) -> Noise {
        Noise::drawn(samples, self.nt_stdev(), seed, self.noise_design())
    }

    /// Applies the preset to `cfg`, keeping its noise seed and aggregation (a given
    /// noise tensor is replaced by drawn noise of seed 0) and all settings the
    /// preset does not name, for a model of `patch_px`-pixel patches.
    /// [`Preset::Paper`] leaves `cfg` as it is.
    pub fn apply(self, cfg: &mut PipelineConfig, patch_px: usize) {
        if self == Preset::Paper {
            return;
        }
        cfg.explain.ig.n_steps = self.ig_steps();
        cfg.explain.ig.method = self.ig_method();
        cfg.explain.ig.return_delta &= self.ig_method().is_quadrature();
        let (nt_type, seed) = match &cfg.explain.noise_tunnel {
            Some(nt) => (nt.nt_type, nt.noise.seed()),
            None => (NtType::SmoothGrad, 0),
        };
        cfg.explain.noise_tunnel = Some(NoiseTunnelConfig {
            nt_type,
            noise: self.noise(self.nt_samples(), seed),
        });
        cfg.ncut.grid = Some((self.ncut_grid(), self.ncut_grid()));
        self.apply_post_rules(cfg, patch_px);
    }

    /// The preset's post-processing rules, for a model of `patch_px`-pixel
    /// patches: the smoothing of both maps, equalisation before Otsu and the
    /// Fiedler split (the choices that have no field of their own in the C ABI's
    /// parameters; the NCut grid has one).
    pub fn apply_post_rules(self, cfg: &mut PipelineConfig, patch_px: usize) {
        cfg.smooth_sigma = self.relevance_smooth_sigma(patch_px);
        cfg.morphology.equalize = self.equalize();
        cfg.ncut_smooth_sigma = self.ncut_smooth_sigma(patch_px);
        cfg.ncut_foreground.split = self.ncut_split();
    }

    /// The whole pipeline's settings for this preset with noise seed `seed`, for a
    /// model of `patch_px`-pixel patches; `Preset::Paper.pipeline_config(0, _)` is
    /// [`PipelineConfig::default`].
    pub fn pipeline_config(self, seed: u64, patch_px: usize) -> PipelineConfig {
        let mut cfg = PipelineConfig {
            explain: self.explain_config(seed),
            ..Default::default()
        };
        cfg.ncut.grid = Some((self.ncut_grid(), self.ncut_grid()));
        self.apply_post_rules(&mut cfg, patch_px);
        cfg
    }
}

impl std::str::FromStr for Preset {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Preset::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| Error::param("preset", format!("`{s}` is not one of paper, stable")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paper_preset_is_the_default_pipeline() {
        assert_eq!(
            Preset::Paper.pipeline_config(0, 16),
            PipelineConfig::default()
        );
        assert_eq!(Preset::default(), Preset::Paper);
    }

    #[test]
    fn stable_preset_spends_no_more_passes_than_the_paper() {
        let (paper, stable) = (
            Preset::Paper.explain_config(3),
            Preset::Stable.explain_config(3),
        );
        assert!(stable.passes() <= paper.passes(), "{}", stable.passes());
        assert_eq!(stable.passes(), 200);
        for p in Preset::ALL {
            assert_eq!(p.name().parse::<Preset>().unwrap(), p);
        }
        assert!("fast".parse::<Preset>().is_err());
    }
}
