//! DINO's per-iteration schedules (its `utils.cosine_scheduler`): a linear
//! warm-up from `start` to `base` over the first `warmup` iterations (NumPy's
//! `linspace`, end point included), then a half cosine from `base` to `end` over
//! the remaining ones. The learning rate, the weight decay and the teacher's
//! momentum use it; the teacher temperature warms up linearly per epoch.

/// A warm-up + cosine schedule over `total` iterations.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CosineSchedule {
    pub base: f64,
    pub end: f64,
    pub total: usize,
    pub warmup: usize,
    pub start: f64,
}

impl CosineSchedule {
    /// The value at iteration `it` (from 0; later iterations keep the last value).
    pub fn at(&self, it: usize) -> f32 {
        let warmup = self.warmup.min(self.total);
        if it < warmup {
            let frac = if warmup > 1 {
                it as f64 / (warmup - 1) as f64
            } else {
                0.0
            };
            return (self.start + (self.base - self.start) * frac) as f32;
        }
        let n = (self.total - warmup).max(1);
        let i = (it - warmup).min(n - 1);
        let cos = (std::f64::consts::PI * i as f64 / n as f64).cos();
        (self.end + 0.5 * (self.base - self.end) * (1.0 + cos)) as f32
    }
}

/// Teacher temperature at `epoch`: linear from `warm` to `temp` over the first
/// `warmup_epochs` epochs (`linspace`, end point included), then `temp`.
pub fn teacher_temp_at(warm: f32, temp: f32, warmup_epochs: usize, epoch: usize) -> f32 {
    if epoch >= warmup_epochs {
        return temp;
    }
    let frac = if warmup_epochs > 1 {
        epoch as f64 / (warmup_epochs - 1) as f64
    } else {
        0.0
    };
    (warm as f64 + (temp - warm) as f64 * frac) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine_as_dino_utils() {
        // NumPy: np.concatenate((np.linspace(0, 1, 3), 0.1 + 0.45*(1 + cos(pi*arange(4)/4))))
        let s = CosineSchedule {
            base: 1.0,
            end: 0.1,
            total: 7,
            warmup: 3,
            start: 0.0,
        };
        let want = [0.0, 0.5, 1.0, 1.0, 0.868_198, 0.55, 0.231_802];
        for (it, w) in want.iter().enumerate() {
            assert!((s.at(it) - w).abs() < 1e-5, "{it}: {} vs {w}", s.at(it));
        }
        assert!((teacher_temp_at(0.04, 0.07, 3, 1) - 0.055).abs() < 1e-7);
        assert_eq!(teacher_temp_at(0.04, 0.07, 3, 5), 0.07);
    }
}
