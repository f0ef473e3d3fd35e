//! Decoding speed: prefill and decode tokens/s on a random-weight model, against the
//! memory-bandwidth bound measured in the same run (decode streams every weight once per step,
//! so a step cannot take less than weight bytes / bandwidth).

use super::{argmax, Decoder, GenerateError};
use crate::huge_pages;
use crate::model::{Gpt, GptConfig};
use crate::rng::Rng;
use crate::spheres::Spheres;
use cllm_kernels::probe;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

/// GPT-2 124M's shape.
pub fn gpt2_124m() -> GptConfig {
    GptConfig {
        vocab_size: 50257,
        n_positions: 1024,
        n_embd: 768,
        n_layer: 12,
        n_head: 12,
    }
}

/// A model of shape `cfg` with uniform random weights in [-0.05, 0.05) (vocabulary pad rows zero).
pub fn random_model(cfg: GptConfig, seed: u64) -> Gpt {
    let mut model = Gpt::zeros(cfg);
    let mut rng = Rng::new(seed);
    for p in model.params.iter_mut() {
        *p = ((rng.next_u64() >> 40) as f32 * (1.0 / (1u64 << 24) as f32) - 0.5) * 0.1;
    }
    let (v, c) = (cfg.vocab_size, cfg.n_embd);
    let wte = model.layout.wte.clone();
    model.params[wte.start + v * c..wte.end].fill(0.0);
    model
}

/// Bytes of weights one decode step reads: every block's matrices and vectors, the final
/// LayerNorm and the (unpadded) LM head.
pub fn weight_bytes_per_step(cfg: &GptConfig) -> usize {
    let (p, c) = (cfg.n_positions, cfg.n_embd);
    // Every parameter (the token table is the LM head) but the position table, of which a step
    // reads one row.
    (cfg.num_parameters() - p * c + c) * 4
}

/// Read bandwidth in bytes/s: the best of `passes` streaming reads of a `bytes` buffer, split
/// across the pool's workers (or one thread).
pub fn read_bandwidth(
    pool: Option<&Spheres>,
    bytes: usize,
    passes: usize,
) -> Result<f64, GenerateError> {
    let mut probe = ReadProbe::new(bytes);
    for _ in 0..passes.max(1) {
        probe.pass(pool)?;
    }
    Ok(probe.best())
}

/// A buffer read again and again, split across the pool's workers (or one thread), each pass
/// timed.
struct ReadProbe {
    /// On huge pages like the weights it is the yardstick for.
    data: Vec<f32>,
    passes: usize,
    secs: f64,
    best_secs: f64,
    sink: Mutex<f32>,
}

impl ReadProbe {
    fn new(bytes: usize) -> ReadProbe {
        let mut data = huge_pages::zeroed(bytes / 4);
        for (i, x) in data.iter_mut().enumerate() {
            *x = (i % 7) as f32;
        }
        ReadProbe {
            data,
            passes: 0,
            secs: 0.0,
            best_secs: f64::INFINITY,
            sink: Mutex::new(0.0),
        }
    }

    fn pass(&mut self, pool: Option<&Spheres>) -> Result<(), GenerateError> {
        let (data, sink) = (&self.data, &self.sink);
        let add = |s: f32| *sink.lock().unwrap_or_else(PoisonError::into_inner) += s;
        let start = Instant::now();
        match pool {
            Some(pool) => {
                pool.run(|ctx| add(probe::stream_sum(&data[ctx.share(0..data.len())])))?
            }
            None => add(probe::stream_sum(data)),
        }
        let secs = start.elapsed().as_secs_f64();
        std::hint::black_box(sink);
        self.passes += 1;
        self.secs += secs;
        self.best_secs = self.best_secs.min(secs);
        Ok(())
    }

    /// Bytes over seconds of all passes together.
    fn overall(&self) -> f64 {
        (self.passes * self.data.len() * 4) as f64 / self.secs
    }

    /// Bytes per second of the fastest pass.
    fn best(&self) -> f64 {
        (self.data.len() * 4) as f64 / self.best_secs
    }
}

/// One decoding benchmark's numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeReport {
    pub threads: usize,
    pub batch: usize,
    pub prompt_tokens: usize,
    pub new_tokens: usize,
    /// Prompt tokens (all rows) per second of prefill (the median of three).
    pub prefill_tokens_per_s: f64,
    /// New tokens (all rows) per second of decode.
    pub decode_tokens_per_s: f64,
    /// Milliseconds per decode step (one token for every row).
    pub decode_ms_per_step: f64,
    pub weight_bytes_per_step: usize,
    /// Read bandwidth measured in the same run, bytes/s: the bytes of all the probe's passes
    /// (one before the decode steps, [`PROBE_PASSES`] spread over them) over their time, as the
    /// decode's rate is its steps over theirs.
    pub bandwidth_bytes_per_s: f64,
    /// The fastest single pass of the probe, bytes/s.
    pub bandwidth_best_bytes_per_s: f64,
    /// Steps/s the bandwidth allows: bandwidth / weight bytes per step.
    pub bound_steps_per_s: f64,
    /// Achieved steps/s over the bound (≤ 1 up to measurement noise).
    pub bandwidth_fraction: f64,
    /// Achieved steps/s over the bound at the fastest pass's bandwidth.
    pub bandwidth_fraction_best: f64,
}

/// Passes of the bandwidth probe spread evenly over the decode steps (the last after the final
/// step), besides the one before them. A shared host's bandwidth moves from one pass to the
/// next (two workers, 256 MiB passes of ~10 ms here: 19–29.5 GB/s over thirty passes, median
/// 26.1), so the probe samples the same stretch of time the decode runs in and is summed the
/// same way.
pub const PROBE_PASSES: usize = 8;

/// Timed prefills per report (odd: the median is one of them).
const PREFILL_REPEATS: usize = 3;

/// Prefill `prompt` random tokens in each of `batch` rows (`PREFILL_REPEATS` times, the median
/// reported), then decode `new_tokens` greedy steps; the bandwidth is measured on a buffer of
/// `bandwidth_bytes`, once before the steps and [`PROBE_PASSES`] times spread over them (untimed
/// for the decode).
pub fn decode(
    model: &Gpt,
    pool: Option<&Spheres>,
    batch: usize,
    prompt: usize,
    new_tokens: usize,
    bandwidth_bytes: usize,
) -> Result<DecodeReport, GenerateError> {
    let cfg = *model.config();
    let mut probe = ReadProbe::new(bandwidth_bytes);
    probe.pass(pool)?;
    let mut dec = Decoder::new(model, pool, batch, prompt + new_tokens)?;
    let mut rng = Rng::new(1);
    let tokens: Vec<u32> = (0..batch * prompt)
        .map(|_| rng.below(cfg.vocab_size as u64) as u32)
        .collect();
    let pads = vec![0; batch];
    // Warm-up: page in the weights and let the workers spin up.
    dec.prefill(&tokens[..batch], &pads)?;
    dec.step(&tokens[..batch])?;
    // The median of PREFILL_REPEATS prefills (each starts the cache afresh); the last one stays
    // for the decode steps.
    let mut prefills = [0.0f64; PREFILL_REPEATS];
    for t in prefills.iter_mut() {
        let start = Instant::now();
        dec.prefill(&tokens, &pads)?;
        *t = start.elapsed().as_secs_f64();
    }
    prefills.sort_by(f64::total_cmp);
    let prefill = prefills[PREFILL_REPEATS / 2];
    let mut next = vec![0u32; batch];
    let mut decode = 0.0;
    let mut done = 0;
    for pass in 1..=PROBE_PASSES {
        let start = Instant::now();
        while done < new_tokens * pass / PROBE_PASSES {
            for (b, n) in next.iter_mut().enumerate() {
                *n = argmax(dec.logits(b));
            }
            dec.step(&next)?;
            done += 1;
        }
        decode += start.elapsed().as_secs_f64();
        probe.pass(pool)?;
    }
    let wb = weight_bytes_per_step(&cfg);
    let steps_per_s = new_tokens as f64 / decode;
    let (bw, best) = (probe.overall(), probe.best());
    let bound = bw / wb as f64;
    Ok(DecodeReport {
        threads: pool.map_or(1, Spheres::count),
        batch,
        prompt_tokens: prompt,
        new_tokens,
        prefill_tokens_per_s: (batch * prompt) as f64 / prefill,
        decode_tokens_per_s: steps_per_s * batch as f64,
        decode_ms_per_step: 1e3 / steps_per_s,
        weight_bytes_per_step: wb,
        bandwidth_bytes_per_s: bw,
        bandwidth_best_bytes_per_s: best,
        bound_steps_per_s: bound,
        bandwidth_fraction: steps_per_s / bound,
        bandwidth_fraction_best: steps_per_s * wb as f64 / best,
    })
}
