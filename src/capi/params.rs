//! Parameter structs handed over by value, their defaults, and their conversion to
//! the crate's configurations.
//!
//! C can store any integer in an enum field and any byte in a `bool`; in Rust such
//! a value is undefined behaviour. So a struct read from a caller's pointer first has
//! its enum and bool fields checked as plain integers ([`read_checked`]), and a bad
//! one is `ES_STATUS_INVALID_PARAM`.

use crate::attr::baseline::DEFAULT_BLUR_SIGMA_PX;
use crate::attr::{Baseline, ExplainConfig, IgConfig, Method, Noise, NoiseTunnelConfig, NtType};
use crate::backend::{Device, Precision};
use crate::error::{Error, Result};
use crate::image::{Normalization, PreprocessConfig, ResizeMode};
use crate::model::{LoadOptions, PosEmbedMode};
use crate::pipeline::{PipelineConfig, Preset, Variant};
use crate::post::crf::CrfParams;
use crate::post::ncut::{NcutForegroundParams, ShiMalikParams, TOKENCUT_EPS, TOKENCUT_TAU};

use super::buffers::write_out;
use super::status::{guard, CapiError, CapiResult, EsStatus};

/// Where the model runs.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EsDevice {
    /// The CPU (all builds).
    Cpu = 0,
    /// An NVIDIA GPU; `ES_STATUS_CUDA_UNAVAILABLE` in builds without CUDA.
    Cuda = 1,
    /// The CUDA code path on an emulated device (slow; for tests);
    /// `ES_STATUS_CUDA_UNAVAILABLE` in builds without the `cuda-emu` feature.
    CudaEmu = 2,
}

/// What the model's GEMMs compute in (CUDA devices only).
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EsPrecision {
    /// f32 operands and accumulation: faithful to the references (the default).
    F32 = 0,
    /// TF32 tensor cores (operands rounded to 10 mantissa bits), f32 accumulation.
    Tf32 = 1,
    /// bf16 tensor cores (operands rounded to 7 mantissa bits), f32 accumulation.
    Bf16 = 2,
}

/// How the positional embedding is interpolated for other input sizes.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EsPosEmbed {
    /// DINO's bicubic interpolation.
    Dino = 0,
    /// timm's.
    Timm = 1,
    /// Hugging Face's.
    Hf = 2,
}

/// Which segmentation to run (the paper's variants and two baselines).
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EsVariant {
    /// Fusion (relevance × feature map) and morphology.
    A = 0,
    /// Fusion and Normalized Cut.
    B = 1,
    /// Relevance and morphology.
    C = 2,
    /// Relevance and Normalized Cut.
    Xncut = 3,
    /// Baseline: TokenCut on last-layer keys (no IG).
    Tokencut = 4,
    /// Baseline: MaskCut on last-layer keys (no IG).
    Maskcut = 5,
}

/// How the image becomes the network input.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EsResize {
    /// Resize to `image_size` × `image_size` (aspect ratio not kept); the mask
    /// covers the whole image.
    Fixed = 0,
    /// DINO eval: short side to `image_size`·256/224, centre crop `image_size`;
    /// outside the crop the mask is background and the relevance 0.
    DinoEval = 1,
    /// Keep the image's size (each side must be a multiple of the patch size).
    Keep = 2,
}

/// Integrated Gradients quadrature (Captum's `method`).
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EsIgMethod {
    /// Gauss–Legendre (Captum's default).
    GaussLegendre = 0,
    /// Left Riemann sum.
    RiemannLeft = 1,
    /// Right Riemann sum.
    RiemannRight = 2,
    /// Midpoint Riemann sum.
    RiemannMiddle = 3,
    /// Trapezoid rule.
    RiemannTrapezoid = 4,
    /// Stratified random path points shared by all noise samples (not Captum's;
    /// the stable preset's, docs/method.md §6.1).
    Stratified = 5,
}

/// NoiseTunnel aggregation (Captum's `nt_type`).
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EsNtType {
    /// Mean of the attributions.
    Smoothgrad = 0,
    /// Mean of the squared attributions.
    SmoothgradSq = 1,
    /// Variance of the attributions.
    Vargrad = 2,
}

/// A named setting (docs/method.md §6.2). In `EsSegmentParams` it selects the
/// choices that have no field of their own — how the noise samples are drawn, the
/// smoothing of the relevance map and of the map the NCut variants cut, whether
/// the morphology chain equalises the map before Otsu and where the NCut variants
/// split the Fiedler vector; `explainseg_segment_preset_params()` also sets the preset's IG steps
/// and path rule, NoiseTunnel samples and σ, and NCut grid.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EsPreset {
    /// The paper's setting (the default): independent noise, no smoothing,
    /// equalisation before Otsu, the Fiedler vector split at its mean.
    Paper = 0,
    /// Steadier masks across noise seeds within the paper's passes.
    Stable = 1,
}

impl EsPreset {
    /// The crate's preset.
    pub fn preset(self) -> Preset {
        match self {
            EsPreset::Paper => Preset::Paper,
            EsPreset::Stable => Preset::Stable,
        }
    }
}

/// Where IG integrates from.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EsBaseline {
    /// Zeros in normalised space (Captum's default).
    Zero = 0,
    /// A black image.
    Black = 1,
    /// The input blurred by a Gaussian of 10 pixels.
    Blur = 2,
}

/// How a model is loaded. Get the defaults from `explainseg_model_default_params()`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EsModelParams {
    /// Compute device (default CPU).
    pub device: EsDevice,
    /// Attention heads; 0 = the file's `num_heads` metadata, else width / 64.
    pub heads: u32,
    /// LayerNorm epsilon; 0 = the file's `layer_norm_eps` metadata, else 1e-6.
    pub layer_norm_eps: f32,
    /// Positional-embedding interpolation for other input sizes (default DINO).
    pub pos_embed: EsPosEmbed,
    /// GEMM precision (default F32). TF32 and BF16 trade accuracy for speed on a
    /// CUDA device; with the CPU device they make `explainseg_model_load` fail with
    /// `ES_STATUS_INVALID_PARAM`. Added after `pos_embed`: a zero-filled struct, or
    /// one from `explainseg_model_default_params()`, keeps F32.
    pub precision: EsPrecision,
}

/// DenseCRF settings (pydensecrf's meaning). Defaults (TokenCut/MaskCut):
/// 10 iterations, positional 3 px / weight 7, bilateral 50 px / 5 levels / weight 10.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EsCrfParams {
    /// Mean-field iterations.
    pub iterations: u32,
    /// Positional kernel standard deviation, in pixels of the image passed in
    /// (`explainseg_segment` rescales both spatial deviations to the network input).
    pub pos_sxy_px: f32,
    /// Positional kernel Potts weight (0 drops it).
    pub pos_weight: f32,
    /// Bilateral kernel spatial standard deviation, in pixels of the image passed in.
    pub bi_sxy_px: f32,
    /// Bilateral kernel intensity standard deviation, 8-bit levels.
    pub bi_srgb: f32,
    /// Bilateral kernel Potts weight (0 drops it).
    pub bi_weight: f32,
}

/// TokenCut's graph: pairs with cosine similarity > `tau` weigh 1, the others `eps`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EsTokenCutParams {
    /// Similarity threshold τ (default 0.2).
    pub tau: f32,
    /// Weight of the pairs at or below τ (default 1e-5).
    pub eps: f32,
}

/// Everything a classification, attribution or segmentation call reads. Get the
/// defaults (the paper's) from `explainseg_segment_default_params()` and change
/// fields. `explainseg_classify` reads the input fields and `threads`;
/// `explainseg_attribute` also the IG and NoiseTunnel fields.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EsSegmentParams {
    /// Segmentation variant (default XNCUT).
    pub variant: EsVariant,
    /// Input geometry (default FIXED).
    pub resize: EsResize,
    /// Network input side in pixels, a multiple of the patch size (default 224).
    pub image_size: u32,
    /// Per-channel mean on [0, 1] (default ImageNet).
    pub mean: [f32; 3],
    /// Per-channel standard deviation (default ImageNet).
    pub std: [f32; 3],
    /// IG path points, Captum `n_steps` (default 50).
    pub ig_steps: u32,
    /// IG quadrature (default Gauss–Legendre).
    pub ig_method: EsIgMethod,
    /// Forward+backward passes per batch; bounds memory (default 10).
    pub ig_batch: u32,
    /// IG baseline (default zero).
    pub baseline: EsBaseline,
    /// Class to explain; -1 = the predicted class (default).
    pub target: i32,
    /// NoiseTunnel samples; 0 = plain IG (default 5).
    pub nt_samples: u32,
    /// Noise standard deviation in normalised units (default 1.0).
    pub nt_stdev: f32,
    /// NoiseTunnel aggregation (default smoothgrad).
    pub nt_type: EsNtType,
    /// Seed of the noise generator (default 0).
    pub seed: u64,
    /// DenseCRF settings, used when `crf_enabled`.
    pub crf: EsCrfParams,
    /// Shi–Malik NCut (variants B, XNCUT): graph grid side (default 56).
    pub ncut_grid: u32,
    /// Shi–Malik NCut: intensity scale σr on the min–max map (default 0.1), used
    /// when `ncut_sigma_r_std` is 0 (and for a constant map).
    pub ncut_sigma_r: f32,
    /// Shi–Malik NCut: spatial scale σx, grid cells (default 4).
    pub ncut_sigma_x: f32,
    /// Shi–Malik NCut: neighbourhood radius, grid cells (default 5).
    pub ncut_radius: f32,
    /// NCut variants: σr = this × the standard deviation of the min–max map,
    /// replacing `ncut_sigma_r` (default 0.5; 0 uses `ncut_sigma_r`).
    pub ncut_sigma_r_std: f32,
    /// NCut variants: the cut is grown by a disk of this radius in pixels before
    /// DenseCRF (default 8; 0 = off).
    pub ncut_dilation_px: u32,
    /// TokenCut settings (variant TOKENCUT).
    pub tokencut: EsTokenCutParams,
    /// MaskCut τ (default 0.15).
    pub maskcut_tau: f32,
    /// MaskCut objects (default 3).
    pub maskcut_masks: u32,
    /// Worker threads; 0 = one per core (default). Results are reproducible for a
    /// given value; another worker count may change the last float bits (GEMM
    /// blocking), and so, rarely, a pixel near a threshold.
    pub threads: u32,
    /// Refine the mask with DenseCRF (default true).
    pub crf_enabled: bool,
    /// Normalise with the mean/std the model file records (checkpoints of
    /// `explainseg train`) instead of `mean`/`std`, when it records them
    /// (default true).
    pub model_normalization: bool,
    /// Noise design, smoothing, equalisation and NCut split of this preset
    /// (default PAPER); see `EsPreset`.
    pub preset: EsPreset,
}

impl Default for EsModelParams {
    fn default() -> Self {
        EsModelParams {
            device: EsDevice::Cpu,
            heads: 0,
            layer_norm_eps: 0.0,
            pos_embed: EsPosEmbed::Dino,
            precision: EsPrecision::F32,
        }
    }
}

impl Default for EsCrfParams {
    fn default() -> Self {
        let d = CrfParams::default();
        EsCrfParams {
            iterations: d.n_iterations as u32,
            pos_sxy_px: d.pos_sxy_px,
            pos_weight: d.pos_weight,
            bi_sxy_px: d.bi_sxy_px,
            bi_srgb: d.bi_srgb,
            bi_weight: d.bi_weight,
        }
    }
}

impl Default for EsTokenCutParams {
    fn default() -> Self {
        EsTokenCutParams {
            tau: TOKENCUT_TAU,
            eps: TOKENCUT_EPS,
        }
    }
}

impl Default for EsSegmentParams {
    fn default() -> Self {
        let pipe = PipelineConfig::default();
        let ig = &pipe.explain.ig;
        let (nt_samples, nt_stdev, nt_type) = match &pipe.explain.noise_tunnel {
            Some(NoiseTunnelConfig {
                nt_type,
                noise: Noise::Seeded { samples, stdev, .. },
            }) => (*samples as u32, *stdev, *nt_type),
            _ => (0, 1.0, NtType::SmoothGrad),
        };
        let ncut_grid = pipe.ncut.grid.map_or(0, |(r, _)| r as u32);
        let imagenet = Normalization::imagenet();
        EsSegmentParams {
            variant: EsVariant::Xncut,
            resize: EsResize::Fixed,
            image_size: 224,
            mean: imagenet.mean,
            std: imagenet.std,
            ig_steps: ig.n_steps as u32,
            ig_method: EsIgMethod::from(ig.method),
            ig_batch: ig.batch_size as u32,
            baseline: EsBaseline::Zero,
            target: -1,
            nt_samples,
            nt_stdev,
            nt_type: EsNtType::from(nt_type),
            seed: 0,
            crf: EsCrfParams::default(),
            ncut_grid,
            ncut_sigma_r: pipe.ncut.sigma_r,
            ncut_sigma_x: pipe.ncut.sigma_x,
            ncut_radius: pipe.ncut.radius,
            ncut_sigma_r_std: pipe.ncut_foreground.sigma_r_per_std.unwrap_or(0.0),
            ncut_dilation_px: pipe.ncut_foreground.dilation_radius_px as u32,
            tokencut: EsTokenCutParams::default(),
            maskcut_tau: pipe.maskcut.tau,
            maskcut_masks: pipe.maskcut.n_masks as u32,
            threads: 0,
            crf_enabled: pipe.crf.is_some(),
            model_normalization: true,
            preset: EsPreset::Paper,
        }
    }
}

impl EsSegmentParams {
    /// The defaults with `preset`'s IG steps and path rule, NoiseTunnel samples and
    /// σ, and NCut grid.
    pub fn for_preset(preset: EsPreset) -> Self {
        let p = preset.preset();
        EsSegmentParams {
            ig_steps: p.ig_steps() as u32,
            ig_method: EsIgMethod::from(p.ig_method()),
            nt_samples: p.nt_samples() as u32,
            nt_stdev: p.nt_stdev(),
            ncut_grid: p.ncut_grid() as u32,
            preset,
            ..EsSegmentParams::default()
        }
    }
}

impl From<Method> for EsIgMethod {
    fn from(m: Method) -> Self {
        match m {
            Method::GaussLegendre => EsIgMethod::GaussLegendre,
            Method::RiemannLeft => EsIgMethod::RiemannLeft,
            Method::RiemannRight => EsIgMethod::RiemannRight,
            Method::RiemannMiddle => EsIgMethod::RiemannMiddle,
            Method::RiemannTrapezoid => EsIgMethod::RiemannTrapezoid,
            Method::Stratified => EsIgMethod::Stratified,
        }
    }
}

impl From<NtType> for EsNtType {
    fn from(t: NtType) -> Self {
        match t {
            NtType::SmoothGrad => EsNtType::Smoothgrad,
            NtType::SmoothGradSq => EsNtType::SmoothgradSq,
            NtType::VarGrad => EsNtType::Vargrad,
        }
    }
}

impl EsIgMethod {
    fn method(self) -> Method {
        match self {
            EsIgMethod::GaussLegendre => Method::GaussLegendre,
            EsIgMethod::RiemannLeft => Method::RiemannLeft,
            EsIgMethod::RiemannRight => Method::RiemannRight,
            EsIgMethod::RiemannMiddle => Method::RiemannMiddle,
            EsIgMethod::RiemannTrapezoid => Method::RiemannTrapezoid,
            EsIgMethod::Stratified => Method::Stratified,
        }
    }
}

impl EsNtType {
    fn nt_type(self) -> NtType {
        match self {
            EsNtType::Smoothgrad => NtType::SmoothGrad,
            EsNtType::SmoothgradSq => NtType::SmoothGradSq,
            EsNtType::Vargrad => NtType::VarGrad,
        }
    }
}

impl EsVariant {
    /// The pipeline's variant.
    pub fn variant(self) -> Variant {
        match self {
            EsVariant::A => Variant::A,
            EsVariant::B => Variant::B,
            EsVariant::C => Variant::C,
            EsVariant::Xncut => Variant::XNCut,
            EsVariant::Tokencut => Variant::TokenCut,
            EsVariant::Maskcut => Variant::MaskCut,
        }
    }
}

impl EsModelParams {
    /// The precision of the model's GEMMs.
    pub fn precision(&self) -> Precision {
        match self.precision {
            EsPrecision::F32 => Precision::F32,
            EsPrecision::Tf32 => Precision::Tf32,
            EsPrecision::Bf16 => Precision::Bf16,
        }
    }

    /// The device the model's calls run on.
    pub fn device(&self) -> Device {
        match self.device {
            EsDevice::Cpu => Device::Cpu,
            EsDevice::Cuda => Device::Cuda,
            EsDevice::CudaEmu => Device::CudaEmu,
        }
    }

    /// The loader's options.
    ///
    /// # Errors
    /// [`Error::InvalidParam`] for a negative or non-finite epsilon.
    pub fn load_options(&self) -> Result<LoadOptions> {
        if !(self.layer_norm_eps.is_finite() && self.layer_norm_eps >= 0.0) {
            return Err(Error::param(
                "layer_norm_eps",
                format!(
                    "must be finite and >= 0 (0 = from the file), got {}",
                    self.layer_norm_eps
                ),
            ));
        }
        Ok(LoadOptions {
            heads: (self.heads > 0).then_some(self.heads as usize),
            eps: (self.layer_norm_eps > 0.0).then_some(self.layer_norm_eps),
            pos_embed_mode: match self.pos_embed {
                EsPosEmbed::Dino => PosEmbedMode::Dino,
                EsPosEmbed::Timm => PosEmbedMode::Timm,
                EsPosEmbed::Hf => PosEmbedMode::Hf,
            },
            ..LoadOptions::default()
        })
    }
}

impl EsCrfParams {
    /// The crate's DenseCRF settings.
    pub fn crf_params(&self) -> CrfParams {
        CrfParams {
            n_iterations: self.iterations as usize,
            pos_sxy_px: self.pos_sxy_px,
            pos_weight: self.pos_weight,
            bi_sxy_px: self.bi_sxy_px,
            bi_srgb: self.bi_srgb,
            bi_weight: self.bi_weight,
        }
    }
}

impl EsSegmentParams {
    /// Image geometry and normalisation.
    ///
    /// # Errors
    /// [`Error::InvalidParam`] for a zero size or bad statistics.
    pub fn preprocess_config(&self, stored: Option<Normalization>) -> Result<PreprocessConfig> {
        if self.resize != EsResize::Keep && self.image_size == 0 {
            return Err(Error::param("image_size", "must be at least 1"));
        }
        let n = self.image_size;
        let resize = match self.resize {
            EsResize::Fixed => ResizeMode::Fixed {
                height: n,
                width: n,
            },
            EsResize::DinoEval => ResizeMode::DinoEval {
                short_side: n.saturating_mul(256) / 224,
                crop: n,
            },
            EsResize::Keep => ResizeMode::None,
        };
        let cfg = PreprocessConfig {
            resize,
            normalization: match stored {
                Some(n) if self.model_normalization => n,
                _ => Normalization {
                    mean: self.mean,
                    std: self.std,
                },
            },
            ..Default::default()
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Integrated Gradients and NoiseTunnel settings.
    ///
    /// # Errors
    /// [`Error::InvalidParam`] naming the bad field.
    pub fn explain_config(&self) -> Result<ExplainConfig> {
        let ig = IgConfig {
            method: self.ig_method.method(),
            n_steps: self.ig_steps as usize,
            multiply_by_inputs: true,
            batch_size: self.ig_batch as usize,
            // Deltas are a diagnostic the C API does not return; skip their 2 forwards.
            return_delta: false,
        };
        ig.validate()?;
        if !(self.nt_stdev.is_finite() && self.nt_stdev >= 0.0) {
            return Err(Error::param(
                "nt_stdev",
                format!("must be finite and >= 0, got {}", self.nt_stdev),
            ));
        }
        let target = match self.target {
            -1 => None,
            t if t >= 0 => Some(t as usize),
            t => {
                return Err(Error::param(
                    "target",
                    format!("must be a class index or -1 (the predicted class), got {t}"),
                ))
            }
        };
        Ok(ExplainConfig {
            ig,
            noise_tunnel: (self.nt_samples > 0).then(|| NoiseTunnelConfig {
                nt_type: self.nt_type.nt_type(),
                noise: Noise::drawn(
                    self.nt_samples as usize,
                    self.nt_stdev,
                    self.seed,
                    self.preset.preset().noise_design(),
                ),
            }),
            baseline: match self.baseline {
                EsBaseline::Zero => Baseline::Zero,
                EsBaseline::Black => Baseline::Black,
                EsBaseline::Blur => Baseline::Blur {
                    sigma_px: DEFAULT_BLUR_SIGMA_PX,
                },
            },
            target,
            mean: self.mean,
            std: self.std,
        })
    }

    /// The whole pipeline's settings for a model of `patch_px`-pixel patches (the
    /// preset's smoothing is set in patches).
    ///
    /// # Errors
    /// As for [`EsSegmentParams::explain_config`], plus bad NCut settings.
    pub fn pipeline_config(&self, patch_px: usize) -> Result<PipelineConfig> {
        let defaults = PipelineConfig::default();
        let ncut = ShiMalikParams {
            grid: Some((self.ncut_grid as usize, self.ncut_grid as usize)),
            sigma_r: self.ncut_sigma_r,
            sigma_x: self.ncut_sigma_x,
            radius: self.ncut_radius,
        };
        ncut.validate()?;
        let ncut_foreground = NcutForegroundParams {
            sigma_r_per_std: (self.ncut_sigma_r_std != 0.0).then_some(self.ncut_sigma_r_std),
            dilation_radius_px: self.ncut_dilation_px as usize,
            ..Default::default()
        };
        ncut_foreground.validate()?;
        let mut cfg = PipelineConfig {
            explain: self.explain_config()?,
            ncut,
            ncut_foreground,
            crf: self.crf_enabled.then(|| self.crf.crf_params()),
            ..defaults
        };
        self.preset.preset().apply_post_rules(&mut cfg, patch_px);
        cfg.tokencut.tau = self.tokencut.tau;
        cfg.tokencut.eps = self.tokencut.eps;
        cfg.maskcut.tau = self.maskcut_tau;
        cfg.maskcut.n_masks = self.maskcut_masks as usize;
        Ok(cfg)
    }
}

/// Reads a parameter struct from a caller's pointer after checking that every enum
/// and bool field holds a valid value.
///
/// # Safety
/// A non-NULL `ptr` must point to a readable, initialised `T`.
pub(crate) unsafe fn read_checked<T: CheckedParams>(ptr: *const T) -> CapiResult<T> {
    if ptr.is_null() {
        return Ok(T::default());
    }
    // SAFETY: readable (caller's duty); `check_raw` reads fields only as integers.
    unsafe { T::check_raw(ptr) }?;
    // SAFETY: every enum and bool field now holds a valid value.
    Ok(unsafe { ptr.read() })
}

/// A `#[repr(C)]` parameter struct whose enum and bool fields can be checked
/// before it is read as a Rust value. NULL means the defaults.
pub(crate) trait CheckedParams: Default {
    /// # Safety
    /// `ptr` is non-NULL and readable.
    unsafe fn check_raw(ptr: *const Self) -> CapiResult;
}

/// The raw integer in an enum field (every parameter enum is `repr(u32)`).
macro_rules! raw_u32 {
    ($ptr:expr, $field:ident) => {
        // SAFETY: the field is a repr(u32) enum inside a readable struct (caller's
        // duty); reading its bytes as u32 is defined whatever they hold.
        unsafe { std::ptr::addr_of!((*$ptr).$field).cast::<u32>().read() }
    };
}

/// The raw byte of a bool field.
macro_rules! raw_bool {
    ($ptr:expr, $field:ident) => {
        // SAFETY: as in raw_u32, for a one-byte bool.
        unsafe { std::ptr::addr_of!((*$ptr).$field).cast::<u8>().read() }
    };
}

fn check_enum(name: &'static str, raw: u32, count: u32) -> CapiResult {
    if raw >= count {
        return Err(CapiError::Lib(Error::param(
            name,
            format!("{raw} is not a valid value (0..{count})"),
        )));
    }
    Ok(())
}

fn check_bool(name: &'static str, raw: u8) -> CapiResult {
    if raw > 1 {
        return Err(CapiError::Lib(Error::param(
            name,
            format!("{raw} is not a valid bool (0 or 1)"),
        )));
    }
    Ok(())
}

impl CheckedParams for EsModelParams {
    unsafe fn check_raw(ptr: *const Self) -> CapiResult {
        check_enum("device", raw_u32!(ptr, device), 3)?;
        check_enum("pos_embed", raw_u32!(ptr, pos_embed), 3)?;
        check_enum("precision", raw_u32!(ptr, precision), 3)
    }
}

impl CheckedParams for EsCrfParams {
    unsafe fn check_raw(_: *const Self) -> CapiResult {
        Ok(())
    }
}

impl CheckedParams for EsTokenCutParams {
    unsafe fn check_raw(_: *const Self) -> CapiResult {
        Ok(())
    }
}

impl CheckedParams for EsSegmentParams {
    unsafe fn check_raw(ptr: *const Self) -> CapiResult {
        check_enum("variant", raw_u32!(ptr, variant), 6)?;
        check_enum("resize", raw_u32!(ptr, resize), 3)?;
        check_enum("ig_method", raw_u32!(ptr, ig_method), 6)?;
        check_enum("baseline", raw_u32!(ptr, baseline), 3)?;
        check_enum("nt_type", raw_u32!(ptr, nt_type), 3)?;
        check_bool("crf_enabled", raw_bool!(ptr, crf_enabled))?;
        check_bool("model_normalization", raw_bool!(ptr, model_normalization))?;
        check_enum("preset", raw_u32!(ptr, preset), 2)
    }
}

/// Defaults for `explainseg_model_load`: CPU, heads and epsilon from the file,
/// DINO positional interpolation.
#[no_mangle]
pub extern "C" fn explainseg_model_default_params() -> EsModelParams {
    EsModelParams::default()
}

/// The paper's defaults: variant XNCUT, 224×224 input, IG Gauss–Legendre 50 steps
/// inside a 5-sample smoothgrad NoiseTunnel (σ 1.0, seed 0), DenseCRF on, all cores.
#[no_mangle]
pub extern "C" fn explainseg_segment_default_params() -> EsSegmentParams {
    EsSegmentParams::default()
}

/// The defaults of `preset` (an `EsPreset` value) into `out`:
/// `explainseg_segment_default_params()` with the preset's IG steps and path rule,
/// NoiseTunnel samples and σ, NCut grid and `preset` field (PAPER gives exactly the
/// defaults; STABLE: 200 passes, each one stratified noise sample of σ 0.25 at its own
/// stratified path point, a 28-cell NCut grid, docs/method.md §6.2).
/// `ES_STATUS_INVALID_PARAM` for an unknown preset.
///
/// # Safety
/// `out` NULL (`ES_STATUS_NULL_POINTER`) or writable.
#[no_mangle]
pub unsafe extern "C" fn explainseg_segment_preset_params(
    preset: u32,
    out: *mut EsSegmentParams,
) -> EsStatus {
    guard(|| {
        check_enum("preset", preset, 2)?;
        let p = if preset == EsPreset::Stable as u32 {
            EsPreset::Stable
        } else {
            EsPreset::Paper
        };
        // SAFETY: caller's duty, as documented.
        unsafe { write_out(out, EsSegmentParams::for_preset(p), "out") }
    })
}

/// DenseCRF defaults (TokenCut/MaskCut's constants).
#[no_mangle]
pub extern "C" fn explainseg_crf_default_params() -> EsCrfParams {
    EsCrfParams::default()
}

/// TokenCut defaults: τ = 0.2, ε = 1e-5.
#[no_mangle]
pub extern "C" fn explainseg_tokencut_default_params() -> EsTokenCutParams {
    EsTokenCutParams::default()
}
