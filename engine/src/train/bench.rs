//! Training throughput, for `cllm-bench train` and `benches/train_step.rs`: tokens/s (median over
//! steps after warm-up), FLOPs per token, the memory plan and the peak RSS.

use std::convert::Infallible;
use std::time::Instant;

use super::{MemoryPlan, OptimizerKind, Schedule, TrainConfig, TrainError, Trainer};
use crate::model::{Gpt, GptConfig};
use crate::rng::Rng;
use crate::spheres::Spheres;

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrainBench {
    pub model: GptConfig,
    /// B over all workers.
    pub batch: usize,
    /// T.
    pub seq_len: usize,
    /// Timed steps.
    pub steps: usize,
    /// Untimed steps first (first touch, caches, clocks).
    pub warmup: usize,
}

/// What was measured.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainBenchReport {
    pub threads: usize,
    /// B·T / median step time.
    pub tokens_per_s: f64,
    /// Seconds of every timed step.
    pub step_seconds: Vec<f64>,
    /// CPU seconds the process used during every timed step (all threads; empty where
    /// [`process_cpu_seconds`] is unavailable).
    pub step_cpu_seconds: Vec<f64>,
    /// [`flops_per_token`] of the shape.
    pub flops_per_token: f64,
    /// Trainable parameters (V, not Vp).
    pub params: usize,
    pub memory: MemoryPlan,
    /// The process's peak resident set (VmHWM) after the run, where Linux reports it.
    pub peak_rss_bytes: Option<u64>,
    /// The last step's loss (a sanity check: about ln V on random data).
    pub last_loss: f32,
}

impl TrainBenchReport {
    /// Model FLOP utilisation against `peak_gflops_per_core` on each worker's core.
    pub fn mfu(&self, peak_gflops_per_core: f64) -> f64 {
        self.tokens_per_s * self.flops_per_token
            / (peak_gflops_per_core * 1e9 * self.threads as f64)
    }
}

/// Training FLOPs per token, the PaLM-style estimate `../shared/peers/torch_gpt_bench.py` uses:
/// 6 per weight the token passes through (every parameter but the two embedding tables, plus the
/// LM head's V·C) and 12·L·T·C for attention scores and their weighted sums (forward and
/// backward, no causal discount).
pub fn flops_per_token(cfg: &GptConfig, t: usize) -> f64 {
    let (v, c, l) = (cfg.vocab_size, cfg.n_embd, cfg.n_layer);
    let non_embedding = cfg.num_parameters() - v * c - cfg.n_positions * c;
    (6 * (non_embedding + v * c) + 12 * l * t * c) as f64
}

/// The peak resident set size (VmHWM of /proc/self/status), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// CPU seconds (user + system, every thread) this process has used so far, from
/// `CLOCK_PROCESS_CPUTIME_ID` (nanosecond resolution); `None` where the clock is unavailable.
/// Throughput per CPU-second does not change when a shared machine hands the process less than
/// whole cores, which makes it the steadier figure to compare runs by.
pub fn process_cpu_seconds() -> Option<f64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant the kernel knows.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    (rc == 0).then_some(ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9)
}

/// Trains a randomly initialised model on random tokens with AdamW (lr 3e-4, weight decay 0.1,
/// clip 1.0) as the PyTorch peer does, and times each step.
pub fn run_train_bench(
    spec: &TrainBench,
    spheres: Spheres,
) -> Result<TrainBenchReport, TrainError> {
    let threads = spheres.count();
    let config = TrainConfig {
        batch: spec.batch,
        seq_len: spec.seq_len,
        grad_accum: 1,
        optimizer: OptimizerKind::AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.1,
        },
        schedule: Schedule::Constant { lr: 3e-4 },
        clip: Some(1.0),
        seed: 0,
    };
    let mut trainer = Trainer::new(Gpt::init_random(spec.model, 0), config, spheres)?;
    let v = spec.model.vocab_size as u64;
    let mut rng = Rng::new(1);
    let mut fill = |x: &mut [u32], y: &mut [u32]| {
        for (a, b) in x.iter_mut().zip(y.iter_mut()) {
            *a = rng.below(v) as u32;
            *b = rng.below(v) as u32;
        }
        Ok::<_, Infallible>(())
    };
    let mut last_loss = 0.0;
    for _ in 0..spec.warmup {
        last_loss = trainer.step(&mut fill)?.loss;
    }
    let mut step_seconds = Vec::with_capacity(spec.steps);
    let mut step_cpu_seconds = Vec::with_capacity(spec.steps);
    for _ in 0..spec.steps {
        let cpu0 = process_cpu_seconds();
        let t0 = Instant::now();
        last_loss = trainer.step(&mut fill)?.loss;
        step_seconds.push(t0.elapsed().as_secs_f64());
        if let (Some(c0), Some(c1)) = (cpu0, process_cpu_seconds()) {
            step_cpu_seconds.push(c1 - c0);
        }
    }
    let mut sorted = step_seconds.clone();
    sorted.sort_by(f64::total_cmp);
    let median = if sorted.is_empty() {
        f64::NAN
    } else if sorted.len() % 2 == 1 {
        sorted[sorted.len() / 2]
    } else {
        0.5 * (sorted[sorted.len() / 2 - 1] + sorted[sorted.len() / 2])
    };
    Ok(TrainBenchReport {
        threads,
        tokens_per_s: (spec.batch * spec.seq_len) as f64 / median,
        step_seconds,
        step_cpu_seconds,
        flops_per_token: flops_per_token(&spec.model, spec.seq_len),
        params: spec.model.num_parameters(),
        memory: trainer.memory_plan(),
        peak_rss_bytes: peak_rss_bytes(),
        last_loss,
    })
}
