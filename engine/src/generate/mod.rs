//! Text generation with a KV cache: greedy and sampled decoding (temperature, top-k, top-p,
//! min-p, repetition penalty), stop tokens and sequences, batches of left-padded prompts, and
//! beam search.
//!
//! [`Decoder`] holds the session (cache and buffers, allocated once); [`generate`] and
//! [`beam_search`] drive it; [`sample_continuation`] is the one-call form.

pub mod beam;
pub mod bench;
mod decoder;
mod sample;

pub use beam::{beam_search, BeamConfig, BeamHypothesis};
pub use decoder::{Decoder, PANEL_MIN_STEPS, PREFILL_CHUNK};
pub use sample::{argmax, log_softmax, SampleConfig, Sampler};

use crate::model::Gpt;
use crate::spheres::{Spheres, SpheresError};
use crate::topology;
use cllm_kernels::ShapeError;
use std::time::{Duration, Instant};

/// Why generation refused its input or stopped.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// The model would have to run `len` tokens: the prompt and every new token but the last
    /// (which is never fed back).
    #[error(
        "{len} tokens (the prompt and the new tokens fed back, all but the last) do not fit the \
         context of {ctx} positions"
    )]
    TooLong { len: usize, ctx: usize },
    #[error("the prompt has {len} tokens, more than the context of {ctx} positions: shorten it")]
    PromptTooLong { len: usize, ctx: usize },
    /// The decoding session would need more memory than the machine has.
    #[error(
        "{rows} rows of up to {ctx} tokens need {:.1} GiB for their decoding session, more than \
         this machine's {:.1} GiB of memory: use fewer rows (prompts in the batch, or beams) or \
         fewer new tokens",
        gib(*.need),
        gib(*.have)
    )]
    TooLarge {
        rows: usize,
        ctx: usize,
        need: u64,
        have: u64,
    },
    #[error("token {token} at position {pos} is outside the vocabulary (V = {vocab})")]
    TokenOutOfRange {
        token: u32,
        pos: usize,
        vocab: usize,
    },
    #[error("the prompt is empty: generation needs at least one token to start from")]
    EmptyPrompt,
    #[error("{0}")]
    Config(String),
    #[error("sphere workers: {0}")]
    Spheres(#[from] SpheresError),
    #[error(transparent)]
    Kernel(#[from] ShapeError),
}

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateConfig {
    pub sample: SampleConfig,
    /// New tokens per row at most.
    pub max_new_tokens: usize,
    /// A row stops after producing one of these (it is kept in the output).
    pub stop_tokens: Vec<u32>,
    /// A row stops when its output ends with one of these (kept in the output).
    pub stop_sequences: Vec<Vec<u32>>,
    /// Every row's random stream starts from this seed, so a row gives the same text alone or in
    /// a batch.
    pub seed: u64,
}

impl Default for GenerateConfig {
    fn default() -> Self {
        GenerateConfig {
            sample: SampleConfig::greedy(),
            max_new_tokens: 32,
            stop_tokens: Vec::new(),
            stop_sequences: Vec::new(),
            seed: 0,
        }
    }
}

/// What a token callback tells the generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Continue,
    /// Stop this row (the token just produced is kept).
    Stop,
}

/// The new tokens of every row, and how long the two phases took.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// (B) each row's new tokens.
    pub tokens: Vec<Vec<u32>>,
    /// Prompt tokens run (padding included) and the time they took.
    pub prefill_tokens: usize,
    pub prefill_time: Duration,
    /// Decode steps × rows, and the time the steps took.
    pub decode_tokens: usize,
    pub decode_time: Duration,
}

/// Check a prompt against the model: not empty, every id in the vocabulary.
pub fn check_prompt(model: &Gpt, prompt: &[u32]) -> Result<(), GenerateError> {
    if prompt.is_empty() {
        return Err(GenerateError::EmptyPrompt);
    }
    let v = model.config().vocab_size;
    match prompt.iter().position(|&t| t as usize >= v) {
        Some(pos) => Err(GenerateError::TokenOutOfRange {
            token: prompt[pos],
            pos,
            vocab: v,
        }),
        None => Ok(()),
    }
}

/// The positions a session needs for a prompt of `t` tokens (at least one) and `n` new ones:
/// `t + n - 1`, since the last new token is never fed back, and at least the prompt.
pub fn session_ctx(model: &Gpt, t: usize, n: usize) -> Result<usize, GenerateError> {
    let max = model.config().n_positions;
    if t > max {
        return Err(GenerateError::PromptTooLong { len: t, ctx: max });
    }
    let ctx = t.saturating_add(n).saturating_sub(1).max(t);
    if ctx > max {
        return Err(GenerateError::TooLong { len: ctx, ctx: max });
    }
    Ok(ctx)
}

/// Refuses, before allocating it, a session of `rows` rows of up to `ctx` tokens that needs more
/// memory than this machine has: an error that says so rather than an abort on a failed
/// allocation. `per_row` is what the caller keeps beside the decoder for each row (its samplers,
/// or beam search's copy of the cache for reordering). The estimate leaves out the model's
/// weights, so no session that fits is refused.
pub(crate) fn check_memory(
    model: &Gpt,
    pool: Option<&Spheres>,
    (rows, ctx): (usize, usize),
    per_row: u64,
) -> Result<(), GenerateError> {
    let workers = pool.map_or(1, Spheres::count);
    let need = Decoder::memory_bytes(model.config(), workers, rows, ctx)
        .and_then(|d| d.checked_add(per_row.checked_mul(rows as u64)?))
        .unwrap_or(u64::MAX);
    // An allocation beyond isize::MAX bytes fails on any machine.
    let have = topology::memory_bytes().unwrap_or(isize::MAX as u64);
    if need > have {
        return Err(GenerateError::TooLarge {
            rows,
            ctx,
            need,
            have,
        });
    }
    Ok(())
}

/// Bytes in GiB, for messages.
fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

/// Continue every prompt (left-padded into one batch) by up to `cfg.max_new_tokens` tokens,
/// calling `on_token(row, token)` as each is produced. Each row's output is what generating its
/// prompt alone gives.
pub fn generate(
    model: &Gpt,
    pool: Option<&Spheres>,
    prompts: &[&[u32]],
    cfg: &GenerateConfig,
    mut on_token: impl FnMut(usize, u32) -> Control,
) -> Result<Generation, GenerateError> {
    cfg.sample.validate()?;
    if prompts.is_empty() {
        return Err(GenerateError::Config("no prompts".into()));
    }
    for p in prompts {
        check_prompt(model, p)?;
    }
    let b = prompts.len();
    let t = prompts.iter().map(|p| p.len()).max().unwrap_or(0);
    let ctx = session_ctx(model, t, cfg.max_new_tokens)?;
    // Each row's sampler: V logits and V (probability, id) candidates.
    let sampler = 12 * model.config().vocab_size as u64;
    check_memory(model, pool, (b, ctx), sampler)?;
    let mut dec = Decoder::new(model, pool, b, ctx)?;
    let v = model.config().vocab_size;
    let mut samplers = (0..b)
        .map(|_| Sampler::new(&cfg.sample, v, cfg.seed))
        .collect::<Result<Vec<_>, _>>()?;
    let mut history: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| {
            let mut h = Vec::with_capacity(p.len() + cfg.max_new_tokens);
            h.extend_from_slice(p);
            h
        })
        .collect();
    let mut tokens = vec![0u32; b * t];
    let mut pads = vec![0usize; b];
    for (i, p) in prompts.iter().enumerate() {
        pads[i] = t - p.len();
        tokens[i * t + pads[i]..(i + 1) * t].copy_from_slice(p);
    }
    let mut out: Vec<Vec<u32>> = (0..b)
        .map(|_| Vec::with_capacity(cfg.max_new_tokens))
        .collect();
    let mut done = vec![cfg.max_new_tokens == 0; b];
    let start = Instant::now();
    dec.prefill(&tokens, &pads)?;
    let prefill_time = start.elapsed();
    let start = Instant::now();
    let mut steps = 0;
    let mut next = vec![0u32; b];
    loop {
        for row in 0..b {
            if done[row] {
                continue;
            }
            let tok = samplers[row].next(dec.logits(row), &history[row]);
            next[row] = tok;
            history[row].push(tok);
            out[row].push(tok);
            let stop = cfg.stop_tokens.contains(&tok)
                || cfg
                    .stop_sequences
                    .iter()
                    .any(|s| !s.is_empty() && out[row].ends_with(s));
            if on_token(row, tok) == Control::Stop || stop || out[row].len() >= cfg.max_new_tokens {
                done[row] = true;
            }
        }
        if done.iter().all(|&d| d) {
            break;
        }
        dec.step(&next)?;
        steps += 1;
    }
    Ok(Generation {
        tokens: out,
        prefill_tokens: b * t,
        prefill_time,
        decode_tokens: steps * b,
        decode_time: start.elapsed(),
    })
}

/// Continue `prompt` by `n` tokens on the calling thread (the trainer's samples). A prompt
/// longer than the context allows keeps its last tokens (at least one, so `n` may be at most the
/// context).
pub fn sample_continuation(
    model: &Gpt,
    prompt: &[u32],
    n: usize,
    cfg: &SampleConfig,
    seed: u64,
) -> Result<Vec<u32>, GenerateError> {
    let max = model.config().n_positions;
    if n > max {
        return Err(GenerateError::TooLong { len: n, ctx: max });
    }
    // The prompt and all the new tokens but the last take the context.
    let prompt = &prompt[prompt.len().saturating_sub(max + 1 - n.max(1))..];
    let gen = GenerateConfig {
        sample: cfg.clone(),
        max_new_tokens: n,
        seed,
        ..GenerateConfig::default()
    };
    let mut g = generate(model, None, &[prompt], &gen, |_, _| Control::Continue)?;
    Ok(g.tokens.swap_remove(0))
}
