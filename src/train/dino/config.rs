//! The settings of a DINO run, with DINO's defaults (`main_dino.py`) where they
//! fit a CPU; docs/pretraining.md says why each differs.

use super::head::HeadConfig;
use super::multicrop::MultiCropConfig;
use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq)]
pub struct DinoConfig {
    pub epochs: usize,
    pub batch_size: usize,
    /// Peak learning rate at a batch of 256; the run uses `lr·batch/256` (DINO's scaling).
    pub lr: f32,
    pub min_lr: f32,
    pub warmup_epochs: usize,
    /// Weight decay, cosine from `weight_decay` to `weight_decay_end` (biases and norms: none).
    pub weight_decay: f32,
    pub weight_decay_end: f32,
    /// Teacher momentum m₀ (cosine to 1).
    pub momentum_teacher: f32,
    /// Teacher temperature after its warm-up from `warmup_teacher_temp`.
    pub teacher_temp: f32,
    pub warmup_teacher_temp: f32,
    pub warmup_teacher_temp_epochs: usize,
    pub student_temp: f32,
    pub center_momentum: f32,
    /// Epochs during which the head's last layer stays fixed.
    pub freeze_last_layer: usize,
    /// Largest L2 norm of each parameter's gradient (0 = no clipping).
    pub clip_grad: f32,
    pub head: HeadConfig,
    pub crops: MultiCropConfig,
    pub seed: u64,
}

impl DinoConfig {
    /// DINO's recipe for the given crops, with a smaller head (K = 4096).
    pub fn with_crops(crops: MultiCropConfig) -> DinoConfig {
        DinoConfig {
            epochs: 100,
            batch_size: 64,
            lr: 0.0005,
            min_lr: 1e-6,
            warmup_epochs: 10,
            weight_decay: 0.04,
            weight_decay_end: 0.4,
            momentum_teacher: 0.996,
            teacher_temp: 0.04,
            warmup_teacher_temp: 0.04,
            warmup_teacher_temp_epochs: 0,
            student_temp: 0.1,
            center_momentum: 0.9,
            freeze_last_layer: 1,
            clip_grad: 3.0,
            head: HeadConfig {
                hidden: 512,
                bottleneck: 128,
                out_dim: 4096,
            },
            crops,
            seed: 0,
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 || self.batch_size == 0 {
            return Err(Error::param(
                "epochs / batch_size",
                "both must be at least 1",
            ));
        }
        let positive = [
            self.lr,
            self.teacher_temp,
            self.warmup_teacher_temp,
            self.student_temp,
        ];
        if positive.iter().any(|v| !(*v > 0.0 && v.is_finite())) {
            return Err(Error::param(
                "lr / temperatures",
                "must be positive numbers",
            ));
        }
        let unit = [self.momentum_teacher, self.center_momentum];
        if unit.iter().any(|v| !(0.0..=1.0).contains(v)) {
            return Err(Error::param(
                "momentum",
                "the teacher and centre momenta must be in [0, 1]",
            ));
        }
        let non_negative = [
            self.min_lr,
            self.weight_decay,
            self.weight_decay_end,
            self.clip_grad,
        ];
        if non_negative.iter().any(|v| !(*v >= 0.0 && v.is_finite())) {
            return Err(Error::param("min_lr / weight decay / clip", "must be ≥ 0"));
        }
        self.head.validate()?;
        self.crops.validate()
    }

    /// What must not change between a run and its resumption (all but `epochs`,
    /// which the schedules also depend on, so it is included too).
    pub fn fingerprint(&self) -> String {
        format!("{self:?}")
    }
}
