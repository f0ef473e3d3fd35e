//! Training: optimizers, gradient clipping and learning-rate schedules.

mod optim;
mod schedule;

pub use optim::{clip_grad_norm, grad_norm, Optimizer, OptimizerKind};
pub use schedule::Schedule;
