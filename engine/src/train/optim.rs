//! Optimizers over the parameter arena, like their PyTorch namesakes: AdamW (decoupled weight
//! decay) and SGD (momentum, dampening, Nesterov, L2 weight decay). Weight decay applies only to
//! tensors with two or more dimensions, as GPT training recipes (and the golden reference) do.

use crate::model::ParamLayout;
use cllm_kernels::adamw::{self, AdamWHparams};

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
            OptimizerKind::AdamW { .. } => vec![0.0; layout.total],
            OptimizerKind::Sgd { .. } => Vec::new(),
        };
        Optimizer {
            kind,
            step: 0,
            m: vec![0.0; layout.total],
            v,
        }
    }

    /// Apply one update with learning rate `lr` to every named tensor.
    pub fn update(&mut self, layout: &ParamLayout, params: &mut [f32], grads: &[f32], lr: f32) {
        self.step += 1;
        for t in &layout.tensors {
            let r = t.range.clone();
            match self.kind {
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
                        step: self.step,
                    };
                    adamw::adamw_step_unchecked(
                        &mut params[r.clone()],
                        &grads[r.clone()],
                        &mut self.m[r.clone()],
                        &mut self.v[r],
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
                    let first = self.step == 1;
                    for ((p, &g), buf) in params[r.clone()]
                        .iter_mut()
                        .zip(&grads[r.clone()])
                        .zip(&mut self.m[r])
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
}

/// The global L2 norm of all gradients (before clipping).
pub fn grad_norm(grads: &[f32]) -> f32 {
    adamw::sumsq_unchecked(grads).sqrt() as f32
}

/// Scale the gradients so their global norm is at most `max_norm`, as `clip_grad_norm_` does
/// (coefficient `max_norm / (norm + 1e-6)`, applied only when below 1). Returns the norm before.
pub fn clip_grad_norm(grads: &mut [f32], max_norm: f32) -> f32 {
    let norm = grad_norm(grads);
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        adamw::scale_unchecked(grads, coef);
    }
    norm
}
