//! Optimizers over the parameter arena, like their PyTorch namesakes: AdamW (decoupled weight
//! decay) and SGD (momentum, dampening, Nesterov, L2 weight decay). Weight decay applies only to
//! tensors with two or more dimensions, as GPT training recipes (and the golden reference) do.

use crate::huge_pages;
use crate::model::ParamLayout;
use cllm_kernels::adamw::{self, AdamWHparams};
use std::ops::Range;

/// Which update rule, with its hyperparameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OptimizerKind {
    AdamW {
        beta1: f64,
        beta2: f64,
        eps: f64,
        weight_decay: f64,
    },
    Sgd {
        momentum: f32,
        dampening: f32,
        nesterov: bool,
        weight_decay: f32,
    },
}

impl OptimizerKind {
    /// Checks the hyperparameters: betas and momentum in [0, 1), eps > 0, weight decay >= 0,
    /// every one finite.
    pub fn validate(&self) -> Result<(), String> {
        let in_unit = |name: &str, x: f64| {
            if (0.0..1.0).contains(&x) {
                Ok(())
            } else {
                Err(format!("{name} is {x}; it must lie in [0, 1)"))
            }
        };
        let non_negative = |name: &str, x: f64| {
            if x.is_finite() && x >= 0.0 {
                Ok(())
            } else {
                Err(format!("{name} is {x}; it must be a finite number >= 0"))
            }
        };
        match *self {
            OptimizerKind::AdamW {
                beta1,
                beta2,
                eps,
                weight_decay,
            } => {
                in_unit("beta1", beta1)?;
                in_unit("beta2", beta2)?;
                if !(eps.is_finite() && eps > 0.0) {
                    return Err(format!("eps is {eps}; it must be a finite number > 0"));
                }
                non_negative("weight decay", weight_decay)
            }
            OptimizerKind::Sgd {
                momentum,
                dampening,
                weight_decay,
                ..
            } => {
                in_unit("momentum", momentum.into())?;
                in_unit("dampening", dampening.into())?;
                non_negative("weight decay", weight_decay.into())
            }
        }
    }
}

/// An optimizer and its state: moments at the same offsets as the parameters.
#[derive(Debug, Clone)]
pub struct Optimizer {
    pub kind: OptimizerKind,
    /// Steps taken so far.
    pub step: u64,
    /// AdamW: first moments; SGD: momentum buffers. Same layout as the parameters.
    pub m: Vec<f32>,
    /// AdamW: second moments (empty for SGD).
    pub v: Vec<f32>,
}

impl Optimizer {
    /// State for `layout`'s arena, allocated once.
    pub fn new(kind: OptimizerKind, layout: &ParamLayout) -> Optimizer {
        let v = match kind {
            OptimizerKind::AdamW { .. } => huge_pages::zeroed(layout.total),
            OptimizerKind::Sgd { .. } => Vec::new(),
        };
        Optimizer {
            kind,
            step: 0,
            m: huge_pages::zeroed(layout.total),
            v,
        }
    }

    /// Apply one update with learning rate `lr` to every named tensor.
    pub fn update(&mut self, layout: &ParamLayout, params: &mut [f32], grads: &[f32], lr: f32) {
        self.step += 1;
        update_part(
            self.kind,
            self.step,
            layout,
            0..layout.total,
            params,
            grads,
            &mut self.m,
            &mut self.v,
            lr,
        );
    }
}

/// Update `step` (1-based) of `kind` applied only to the arena elements `part`: `params`,
/// `grads`, `m` and `v` are those elements (`v` empty for SGD). Every element's update depends
/// only on its own values, so splitting the arena into parts (one per worker) changes nothing
/// as long as the kernel treats an element alike wherever the part starts; parts starting on
/// multiples of 64 floats keep even the SIMD lanes the same.
#[allow(clippy::too_many_arguments)]
pub fn update_part(
    kind: OptimizerKind,
    step: u64,
    layout: &ParamLayout,
    part: Range<usize>,
    params: &mut [f32],
    grads: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    lr: f32,
) {
    for t in &layout.tensors {
        let (lo, hi) = (t.range.start.max(part.start), t.range.end.min(part.end));
        if lo >= hi {
            continue;
        }
        let r = lo - part.start..hi - part.start;
        match kind {
            OptimizerKind::AdamW {
                beta1,
                beta2,
                eps,
                weight_decay,
            } => {
                let h = AdamWHparams {
                    lr: lr as f64,
                    beta1,
                    beta2,
                    eps,
                    weight_decay: if t.decay { weight_decay } else { 0.0 },
                    step,
                };
                adamw::adamw_step_unchecked(
                    &mut params[r.clone()],
                    &grads[r.clone()],
                    &mut m[r.clone()],
                    &mut v[r],
                    &h,
                );
            }
            OptimizerKind::Sgd {
                momentum,
                dampening,
                nesterov,
                weight_decay,
            } => {
                let wd = if t.decay { weight_decay } else { 0.0 };
                let first = step == 1;
                for ((p, &g), buf) in params[r.clone()]
                    .iter_mut()
                    .zip(&grads[r.clone()])
                    .zip(&mut m[r])
                {
                    let mut d = g + wd * *p;
                    if momentum != 0.0 {
                        *buf = if first {
                            d
                        } else {
                            momentum * *buf + (1.0 - dampening) * d
                        };
                        d = if nesterov { d + momentum * *buf } else { *buf };
                    }
                    *p -= lr * d;
                }
            }
        }
    }
}

/// The global L2 norm of all gradients (before clipping).
pub fn grad_norm(grads: &[f32]) -> f32 {
    adamw::sumsq_unchecked(grads).sqrt() as f32
}

/// Scale the gradients so their global norm is at most `max_norm`, as `clip_grad_norm_` does
/// (coefficient `max_norm / (norm + 1e-6)`, applied only when below 1). Returns the norm before.
pub fn clip_grad_norm(grads: &mut [f32], max_norm: f32) -> f32 {
    let norm = grad_norm(grads);
    clip_to(grads, norm, max_norm);
    norm
}

/// [`clip_grad_norm`] for gradients whose norm ([`grad_norm`]) the caller has already taken:
/// the same coefficient, without a second pass to find it.
pub fn clip_to(grads: &mut [f32], norm: f32, max_norm: f32) {
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        adamw::scale_unchecked(grads, coef);
    }
}
