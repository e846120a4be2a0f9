//! Learning-rate schedules, evaluated once per epoch (PyTorch's `StepLR` and
//! `CosineAnnealingLR` stepped after each epoch).

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Schedule {
    /// The same rate every epoch.
    Constant,
    /// `lr · gamma^⌊epoch / every⌋` (the paper: ×0.1 every 50 epochs).
    Step { every: usize, gamma: f32 },
    /// `min + (lr − min)·(1 + cos(π·epoch/epochs))/2` over `epochs` epochs.
    Cosine { epochs: usize, min_lr: f32 },
}

impl Schedule {
    /// The rate for epoch `epoch` (from 0) given the base rate.
    pub fn lr_at(&self, base: f32, epoch: usize) -> f32 {
        match *self {
            Schedule::Constant => base,
            Schedule::Step { every, gamma } => base * gamma.powi((epoch / every.max(1)) as i32),
            Schedule::Cosine { epochs, min_lr } => {
                let t = epoch.min(epochs) as f64 / epochs.max(1) as f64;
                (min_lr as f64
                    + (base - min_lr) as f64 * 0.5 * (1.0 + (std::f64::consts::PI * t).cos()))
                    as f32
            }
        }
    }

    pub fn validate(&self) -> Result<()> {
        match *self {
            Schedule::Step { every, gamma }
                if every == 0 || !(gamma > 0.0 && gamma.is_finite()) =>
            {
                Err(Error::param(
                    "schedule",
                    "step decay needs a period ≥ 1 and a positive factor",
                ))
            }
            Schedule::Cosine { min_lr, .. } if !(min_lr >= 0.0 && min_lr.is_finite()) => {
                Err(Error::param("schedule", "the cosine floor must be ≥ 0"))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_and_cosine_values() {
        let s = Schedule::Step {
            every: 50,
            gamma: 0.1,
        };
        assert_eq!(s.lr_at(0.005, 49), 0.005);
        assert!((s.lr_at(0.005, 50) - 0.0005).abs() < 1e-9);
        assert!((s.lr_at(0.005, 100) - 0.00005).abs() < 1e-10);
        let c = Schedule::Cosine {
            epochs: 10,
            min_lr: 0.0,
        };
        assert_eq!(c.lr_at(1.0, 0), 1.0);
        assert!((c.lr_at(1.0, 5) - 0.5).abs() < 1e-6);
        assert!(c.lr_at(1.0, 10).abs() < 1e-6);
    }
}
