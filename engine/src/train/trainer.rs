//! Data-parallel training over the sphere workers.
//!
//! Every worker owns a training [`Workspace`] for its B/W rows of each micro-batch (made on the
//! worker, so its pages are first touched there) and one buffer of a [`ReduceBuffers`] that *is*
//! its gradient arena: backward accumulates straight into it, and the tree reduction sums the
//! workers' arenas into worker 0's without a copy. Each position's loss enters the gradient with
//! weight 1 / (B·T·grad_accum), so a step is the mean over all its positions, exactly like one big
//! batch. The model's parameters are shared read-only by all workers during forward/backward.
//!
//! A step: `grad_accum` times (the caller fills the (B, T) tokens and targets; every worker runs
//! forward + backward on its rows), reduce, global norm (a non-finite loss or norm stops here,
//! parameters untouched), clip, learning rate from the schedule, optimizer update.
//!
//! With the same seed, data and worker count, runs are bit-identical: each worker's arithmetic
//! is sequential and the reduction order depends only on the tree.

use std::error::Error;
use std::slice;
use std::sync::{Mutex, PoisonError};

use super::optim::update_part;
use super::{clip_to, grad_norm, Optimizer, OptimizerKind, Schedule};
use crate::checkpoint::CheckpointError;
use crate::model::{Gpt, ModelError, Workspace};
use crate::rng::Rng;
use crate::spheres::{PerWorker, ReduceBuffers, Spheres, SpheresError};
use crate::topology;

/// How to train: batch shape, optimizer, schedule, clipping, seed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainConfig {
    /// B: rows per micro-batch, over all workers (must divide by the worker count).
    pub batch: usize,
    /// T: tokens per row (at most n_positions).
    pub seq_len: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    pub optimizer: OptimizerKind,
    pub schedule: Schedule,
    /// Global-norm clipping threshold (`clip_grad_norm_`'s max_norm), or none.
    pub clip: Option<f32>,
    /// The seed of the trainer's [`Rng`] (which the caller may draw from; cllm-train also orders
    /// its data with this seed).
    pub seed: u64,
}

/// What one optimizer step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStats {
    /// The step's index (0 for the first step of a run).
    pub step: u64,
    /// Mean cross-entropy over the step's B·T·grad_accum positions.
    pub loss: f32,
    /// Global L2 norm of the gradient before clipping.
    pub grad_norm: f32,
    /// The learning rate used.
    pub lr: f32,
    /// Tokens processed (B·T·grad_accum).
    pub tokens: usize,
}

/// Bytes of each arena, as planned at construction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryPlan {
    /// The parameter arena (including the vocabulary pad rows).
    pub params: usize,
    /// The gradient arenas, one per worker (the reduction buffers).
    pub grads: usize,
    /// Optimizer moments.
    pub optimizer: usize,
    /// One worker's workspace: activations, their gradients, chunked logits, scratch.
    pub activations_per_worker: usize,
    pub workers: usize,
    /// Everything above: params + grads + optimizer + workers · activations.
    pub total: usize,
}

/// Why training stopped.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(
        "batch {batch} does not divide over {workers} sphere workers; use a multiple of {workers}"
    )]
    BatchNotDivisible { batch: usize, workers: usize },
    #[error("invalid training setup: {0}")]
    Config(String),
    #[error("step {step}: the loss is {loss}; the parameters were left as they were")]
    NonFiniteLoss { step: u64, loss: f32 },
    #[error("step {step}: the gradient norm is {norm}; the parameters were left as they were")]
    NonFiniteGradient { step: u64, norm: f32 },
    /// The parameters hold a NaN or an infinity: refused by `save`, so the run's earlier
    /// checkpoints stay the latest.
    #[error("the parameters hold {value} (at index {index}) after step {step}; no checkpoint was written")]
    NonFiniteParams { step: u64, index: usize, value: f32 },
    #[error("the data source failed: {0}")]
    Data(#[source] Box<dyn Error + Send + Sync>),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Spheres(#[from] SpheresError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// A training-state file that parses but does not fit (wrong key, shape or value).
    #[error("{file}: {problem}")]
    State { file: String, problem: String },
}

/// The optimizer's arenas, shared with the workers of one update job.
struct Arenas {
    params: *mut f32,
    grads: *const f32,
    m: *mut f32,
    v: *mut f32,
}

// SAFETY: the pointers are only dereferenced inside `Trainer::parallel_update`'s job, each worker
// on its own disjoint part, while the trainer's borrows keep the arenas alive and unaliased.
unsafe impl Sync for Arenas {}

/// One worker's state; locked only by that worker during a job (never contended).
pub(super) struct WorkerState {
    pub(super) ws: Workspace,
    /// Σ of this worker's position losses over the step's micro-batches.
    loss_sum: f64,
    error: Option<ModelError>,
}

/// A model, its optimizer, and the workers that train it.
pub struct Trainer {
    pub model: Gpt,
    pub optimizer: Optimizer,
    /// For the caller's random draws (cllm-train's samples); saved and restored with checkpoints.
    pub rng: Rng,
    pub(super) config: TrainConfig,
    /// Optimizer steps taken.
    pub(super) step: u64,
    /// Best validation loss seen by `save`, and its checkpoint directory.
    pub(super) best: Option<(f32, String)>,
    pub(super) spheres: Spheres,
    pub(super) workers: PerWorker<Mutex<WorkerState>>,
    /// Worker i's gradient arena; after the reduction worker 0's holds the step's gradient.
    pub(super) grads: ReduceBuffers,
    /// (B, T) the current micro-batch.
    tokens: Vec<u32>,
    /// (B, T)
    targets: Vec<u32>,
}

impl Trainer {
    /// Sets up training of `model` on `spheres`' workers: checks the shapes, then makes each
    /// worker's workspace and gradient arena on that worker.
    pub fn new(model: Gpt, config: TrainConfig, spheres: Spheres) -> Result<Trainer, TrainError> {
        let workers = spheres.count();
        let cfg = *model.config();
        cfg.validate().map_err(TrainError::Config)?;
        if config.batch == 0 || config.seq_len == 0 || config.grad_accum == 0 {
            return Err(TrainError::Config(format!(
                "batch {}, seq_len {} and grad_accum {} must all be positive",
                config.batch, config.seq_len, config.grad_accum
            )));
        }
        config.schedule.validate().map_err(TrainError::Config)?;
        config.optimizer.validate().map_err(TrainError::Config)?;
        if let Some(clip) = config.clip {
            if !(clip.is_finite() && clip > 0.0) {
                return Err(TrainError::Config(format!(
                    "the gradient clip is {clip}; it must be a finite number > 0 (or none)"
                )));
            }
        }
        if !config.batch.is_multiple_of(workers) {
            return Err(TrainError::BatchNotDivisible {
                batch: config.batch,
                workers,
            });
        }
        if config.seq_len > cfg.n_positions {
            return Err(ModelError::SequenceTooLong {
                t: config.seq_len,
                max: cfg.n_positions,
            }
            .into());
        }
        let rows = config.batch / workers;
        // Before allocating the workspaces: a batch far beyond this machine's memory (a typo, or
        // a damaged training state) is an error, not an abort on a failed allocation. The
        // estimate is a lower bound of the activations (each token keeps more than 16·C floats
        // per layer), so no batch that fits is refused.
        let need = [
            config.seq_len as u128,
            16 * cfg.n_layer as u128 + 1,
            cfg.n_embd as u128,
            4 * workers as u128,
        ]
        .into_iter()
        .fold(rows as u128, u128::saturating_mul);
        let have = topology::memory_bytes().map_or(isize::MAX as u128, u128::from);
        if need > have {
            let gib = |bytes: u128| bytes as f64 / (1u64 << 30) as f64;
            return Err(TrainError::Config(format!(
                "batch {} of sequence length {} needs at least {:.1} GiB of activations, more \
                 than this machine's {:.1} GiB of memory; use a smaller batch (and a larger \
                 grad_accum for the same tokens per step)",
                config.batch,
                config.seq_len,
                gib(need),
                gib(have)
            )));
        }
        let ws_states = spheres.per_worker(|_| {
            Mutex::new(WorkerState {
                ws: Workspace::for_training(&model, rows, config.seq_len),
                loss_sum: 0.0,
                error: None,
            })
        })?;
        let grads = spheres.reduce_buffers(model.layout.total)?;
        let optimizer = Optimizer::new(config.optimizer, &model.layout);
        let bt = config.batch * config.seq_len;
        Ok(Trainer {
            optimizer,
            rng: Rng::new(config.seed),
            config,
            step: 0,
            best: None,
            spheres,
            workers: ws_states,
            grads,
            tokens: vec![0; bt],
            targets: vec![0; bt],
            model,
        })
    }

    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// Optimizer steps taken so far (restored by resume).
    pub fn step_count(&self) -> u64 {
        self.step
    }

    pub fn spheres(&self) -> &Spheres {
        &self.spheres
    }

    /// The gradient of the last step (after clipping), at the parameter layout's offsets.
    pub fn grads(&self) -> &[f32] {
        self.grads.output()
    }

    /// Replaces the learning-rate schedule (e.g. to extend a resumed run).
    pub fn set_schedule(&mut self, schedule: Schedule) -> Result<(), TrainError> {
        schedule.validate().map_err(TrainError::Config)?;
        self.config.schedule = schedule;
        Ok(())
    }

    /// Bytes of every arena.
    pub fn memory_plan(&self) -> MemoryPlan {
        let params = 4 * self.model.params.len();
        let workers = self.spheres.count();
        let grads = 4 * self.grads.len() * workers;
        let optimizer = 4 * (self.optimizer.m.len() + self.optimizer.v.len());
        let activations_per_worker = self
            .workers
            .iter()
            .map(|w| w.lock().unwrap_or_else(PoisonError::into_inner).ws.bytes())
            .max()
            .unwrap_or(0);
        MemoryPlan {
            params,
            grads,
            optimizer,
            activations_per_worker,
            workers,
            total: params + grads + optimizer + workers * activations_per_worker,
        }
    }

    /// One optimizer step. `fill(tokens, targets)` is called `grad_accum` times and must fill
    /// both (B, T) buffers (row-major) with the next micro-batch. On an error the parameters
    /// and optimizer state are unchanged.
    pub fn step<F, E>(&mut self, mut fill: F) -> Result<StepStats, TrainError>
    where
        F: FnMut(&mut [u32], &mut [u32]) -> Result<(), E>,
        E: Into<Box<dyn Error + Send + Sync>>,
    {
        let TrainConfig {
            batch,
            seq_len,
            grad_accum,
            ..
        } = self.config;
        let positions = batch * seq_len * grad_accum;
        let dloss = 1.0 / positions as f32;
        let rows = batch / self.spheres.count() * seq_len;
        for micro in 0..grad_accum {
            fill(&mut self.tokens, &mut self.targets).map_err(|e| TrainError::Data(e.into()))?;
            let (model, tokens, targets, workers) =
                (&self.model, &self.tokens, &self.targets, &self.workers);
            self.spheres
                .run_with_buffers(&mut self.grads, |ctx, grads| {
                    let mut state = workers
                        .get(ctx.index())
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner);
                    let state = &mut *state;
                    if micro == 0 {
                        grads.fill(0.0);
                        state.loss_sum = 0.0;
                        state.error = None;
                    }
                    if state.error.is_some() {
                        return;
                    }
                    let mine = ctx.index() * rows..(ctx.index() + 1) * rows;
                    match model.forward_backward(
                        &mut state.ws,
                        grads,
                        &tokens[mine.clone()],
                        &targets[mine],
                        dloss,
                    ) {
                        Ok(sum) => state.loss_sum += sum,
                        Err(e) => state.error = Some(e),
                    }
                })?;
            self.take_worker_error()?;
        }
        let loss_sum: f64 = (0..self.workers.len())
            .map(|i| self.worker(i).loss_sum)
            .sum();
        let loss = (loss_sum / positions as f64) as f32;
        let step = self.step;
        if !loss.is_finite() {
            return Err(TrainError::NonFiniteLoss { step, loss });
        }
        self.spheres.reduce_sum(&mut self.grads)?;
        let grads = self.grads.buffer_mut(0);
        let norm = grad_norm(grads);
        if !norm.is_finite() {
            return Err(TrainError::NonFiniteGradient { step, norm });
        }
        if let Some(max_norm) = self.config.clip {
            clip_to(grads, norm, max_norm);
        }
        let lr = self.config.schedule.lr(step as usize);
        self.parallel_update(lr)?;
        self.step += 1;
        Ok(StepStats {
            step,
            loss,
            grad_norm: norm,
            lr,
            tokens: positions,
        })
    }

    /// The mean loss of the model on one (B, T) batch, forward only (B as in the config).
    pub fn eval_loss(&mut self, tokens: &[u32], targets: &[u32]) -> Result<f32, TrainError> {
        let (batch, seq_len) = (self.config.batch, self.config.seq_len);
        for (what, got) in [("tokens", tokens.len()), ("targets", targets.len())] {
            if got != batch * seq_len {
                return Err(ModelError::TokenCount {
                    what,
                    got,
                    want: batch * seq_len,
                }
                .into());
            }
        }
        let rows = batch / self.spheres.count() * seq_len;
        let (model, workers) = (&self.model, &self.workers);
        self.spheres.run(|ctx| {
            let mut state = workers
                .get(ctx.index())
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let state = &mut *state;
            let mine = ctx.index() * rows..(ctx.index() + 1) * rows;
            state.error = None;
            match model.forward(&mut state.ws, &tokens[mine.clone()], Some(&targets[mine])) {
                Ok(_) => {
                    state.loss_sum = state.ws.losses().iter().map(|&x| x as f64).sum();
                }
                Err(e) => state.error = Some(e),
            }
        })?;
        self.take_worker_error()?;
        let sum: f64 = (0..self.workers.len())
            .map(|i| self.worker(i).loss_sum)
            .sum();
        Ok((sum / (batch * seq_len) as f64) as f32)
    }

    /// The optimizer update with the arena split over the workers in parts of whole 64-float
    /// blocks (the same result as one serial update; see [`update_part`]).
    fn parallel_update(&mut self, lr: f32) -> Result<(), TrainError> {
        const BLOCK: usize = 64;
        let opt = &mut self.optimizer;
        let total = self.model.layout.total;
        // The arenas are public fields, so what the raw slices below rely on is checked here.
        let v_len = if matches!(opt.kind, OptimizerKind::AdamW { .. }) {
            total
        } else {
            0
        };
        let sizes = [
            self.model.params.len(),
            self.grads.output().len(),
            opt.m.len(),
        ];
        if sizes.iter().any(|&n| n != total) || opt.v.len() != v_len {
            return Err(TrainError::Config(format!(
                "the arenas do not fit the model's {total} parameters: params {}, grads {}, optimizer moments {} and {} (want {v_len})",
                sizes[0],
                sizes[1],
                sizes[2],
                opt.v.len()
            )));
        }
        opt.step += 1;
        let (kind, step, layout) = (opt.kind, opt.step, &self.model.layout);
        let has_v = !opt.v.is_empty();
        let arena = Arenas {
            params: self.model.params.as_mut_ptr(),
            grads: self.grads.output().as_ptr(),
            m: opt.m.as_mut_ptr(),
            v: opt.v.as_mut_ptr(),
        };
        let arena = &arena;
        self.spheres.run(|ctx| {
            let blocks = ctx.share(0..total.div_ceil(BLOCK));
            let part = (blocks.start * BLOCK).min(total)..(blocks.end * BLOCK).min(total);
            let len = part.len();
            // SAFETY: the four arenas hold `total` floats each (`v` none for SGD, then unused;
            // checked above)
            // and stay borrowed by this call until the job ends; `share` gives the workers
            // disjoint block ranges, so each element is reached through one slice only, and
            // `grads` is only read.
            let (params, grads, m, v) = unsafe {
                (
                    slice::from_raw_parts_mut(arena.params.add(part.start), len),
                    slice::from_raw_parts(arena.grads.add(part.start), len),
                    slice::from_raw_parts_mut(arena.m.add(part.start), len),
                    if has_v {
                        slice::from_raw_parts_mut(arena.v.add(part.start), len)
                    } else {
                        &mut []
                    },
                )
            };
            update_part(kind, step, layout, part, params, grads, m, v, lr);
        })?;
        Ok(())
    }

    fn worker(&self, i: usize) -> std::sync::MutexGuard<'_, WorkerState> {
        self.workers
            .get(i)
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The first worker's error of the last job, if any.
    fn take_worker_error(&mut self) -> Result<(), TrainError> {
        for i in 0..self.workers.len() {
            let state = self
                .workers
                .get_mut(i)
                .get_mut()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(e) = state.error.take() {
                return Err(e.into());
            }
        }
        Ok(())
    }
}
