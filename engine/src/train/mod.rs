//! Training: the data-parallel [`Trainer`], optimizers, gradient clipping, learning-rate
//! schedules, and checkpoints with the full training state.

pub mod bench;
mod checkpoint;
mod optim;
mod schedule;
mod trainer;

pub use checkpoint::{
    checkpoint_dir, Resumed, SaveOptions, Saved, OPTIMIZER_FILE, TRAINER_STATE_FILE,
};
pub use optim::{clip_grad_norm, clip_to, grad_norm, update_part, Optimizer, OptimizerKind};
pub use schedule::Schedule;
pub use trainer::{MemoryPlan, StepStats, TrainConfig, TrainError, Trainer};
