//! Learning-rate schedules: constant, or linear warmup followed by cosine or linear decay.

/// How the learning rate moves over a run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Schedule {
    /// `lr` at every step.
    Constant { lr: f32 },
    /// Linear warmup from lr/warmup to `lr` over `warmup` steps, then cosine decay to `min_lr` at
    /// step `total`, `min_lr` after.
    Cosine {
        lr: f32,
        min_lr: f32,
        warmup: usize,
        total: usize,
    },
    /// Linear warmup as above, then linear decay to `min_lr` at step `total`.
    Linear {
        lr: f32,
        min_lr: f32,
        warmup: usize,
        total: usize,
    },
}

impl Schedule {
    /// Checks the rates: finite and `>= 0` (a final rate above the peak is allowed: the
    /// "decay" then rises).
    pub fn validate(&self) -> Result<(), String> {
        let (lr, min_lr) = match *self {
            Schedule::Constant { lr } => (lr, 0.0),
            Schedule::Cosine { lr, min_lr, .. } | Schedule::Linear { lr, min_lr, .. } => {
                (lr, min_lr)
            }
        };
        for (name, x) in [("learning rate", lr), ("final learning rate", min_lr)] {
            if !(x.is_finite() && x >= 0.0) {
                return Err(format!(
                    "the {name} is {x}; it must be a finite number >= 0"
                ));
            }
        }
        Ok(())
    }

    /// The learning rate of step `step` (0-based).
    pub fn lr(&self, step: usize) -> f32 {
        match *self {
            Schedule::Constant { lr } => lr,
            Schedule::Cosine {
                lr,
                min_lr,
                warmup,
                total,
            }
            | Schedule::Linear {
                lr,
                min_lr,
                warmup,
                total,
            } => {
                if step < warmup {
                    return lr * (step + 1) as f32 / warmup as f32;
                }
                if step >= total {
                    return min_lr;
                }
                let progress = (step - warmup) as f32 / (total - warmup).max(1) as f32;
                let coeff = match self {
                    Schedule::Cosine { .. } => {
                        0.5 * (1.0 + (std::f32::consts::PI * progress).cos())
                    }
                    _ => 1.0 - progress,
                };
                min_lr + coeff * (lr - min_lr)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_decay_reaches_min() {
        for s in [
            Schedule::Cosine {
                lr: 1.0,
                min_lr: 0.1,
                warmup: 10,
                total: 110,
            },
            Schedule::Linear {
                lr: 1.0,
                min_lr: 0.1,
                warmup: 10,
                total: 110,
            },
        ] {
            assert!((s.lr(0) - 0.1).abs() < 1e-6);
            assert!((s.lr(9) - 1.0).abs() < 1e-6);
            assert!((s.lr(10) - 1.0).abs() < 1e-6);
            assert!((s.lr(60) - 0.55).abs() < 1e-5, "{:?} {}", s, s.lr(60));
            assert!((s.lr(110) - 0.1).abs() < 1e-6 && (s.lr(1000) - 0.1).abs() < 1e-6);
            assert!((1..110).all(|i| s.lr(i) <= s.lr(i - 1) + 1e-6 || i <= 10));
        }
        assert_eq!(Schedule::Constant { lr: 0.3 }.lr(12345), 0.3);
    }
}
