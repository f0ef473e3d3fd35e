//! Beam search as Hugging Face runs it: every step, each running beam's log-probabilities are
//! added to its summed score, the best (1 + EOS tokens)·beams (at least 2·beams) (beam, token)
//! pairs over all beams are taken in order, a pair ending in an EOS token (and ranked within the
//! first `beams`) becomes a finished hypothesis scored `sum / len^length_penalty`, and the best
//! `beams` others run on.

use super::{check_memory, check_prompt, log_softmax, session_ctx, Decoder, GenerateError};
use crate::model::Gpt;
use crate::spheres::Spheres;
use std::collections::BinaryHeap;

/// Beam search settings.
#[derive(Debug, Clone, PartialEq)]
pub struct BeamConfig {
    pub beams: usize,
    pub max_new_tokens: usize,
    /// Hypotheses are ranked by `sum_logprob / len^length_penalty` (len: new tokens); 0 ranks by
    /// the plain sum.
    pub length_penalty: f64,
    /// A beam that produces one of these tokens is finished.
    pub eos: Vec<u32>,
    /// Stop as soon as `beams` hypotheses are finished (otherwise when no running beam can
    /// still beat the worst finished one).
    pub early_stopping: bool,
}

/// One finished beam.
#[derive(Debug, Clone, PartialEq)]
pub struct BeamHypothesis {
    /// The new tokens (with the EOS when it ended on one).
    pub tokens: Vec<u32>,
    /// Summed log-probability of the new tokens.
    pub sum_logprob: f64,
    /// `sum_logprob / len^length_penalty`: what hypotheses are ranked by.
    pub score: f64,
}

fn penalised(sum: f64, len: usize, lp: f64) -> f64 {
    sum / (len.max(1) as f64).powf(lp)
}

/// A (beam, token) candidate of one step. Ordered best first: the higher summed score, then the
/// lower beam, then the lower token (the order they are met in), so the selection is the same
/// whatever the scores' ties.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Candidate {
    score: f64,
    beam: usize,
    token: u32,
}

impl Eq for Candidate {}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other
            .score
            .total_cmp(&self.score)
            .then(self.beam.cmp(&other.beam))
            .then(self.token.cmp(&other.token))
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Beam search from `prompt`; returns up to `beams` hypotheses, best first.
pub fn beam_search(
    model: &Gpt,
    pool: Option<&Spheres>,
    prompt: &[u32],
    cfg: &BeamConfig,
) -> Result<Vec<BeamHypothesis>, GenerateError> {
    check_prompt(model, prompt)?;
    let k = cfg.beams;
    if k == 0 {
        return Err(GenerateError::Config(
            "beam search needs at least one beam".into(),
        ));
    }
    let ctx = session_ctx(model, prompt.len(), cfg.max_new_tokens)?;
    // Each beam's row of the decoder's reorder copy of one layer's cache, (ctx, C) floats.
    let reorder = 4 * ctx as u64 * model.config().n_embd as u64;
    check_memory(model, pool, (k, ctx), reorder)?;
    let v = model.config().vocab_size;
    let mut dec = Decoder::new(model, pool, k, ctx)?;
    let t = prompt.len();
    let mut tokens = Vec::with_capacity(k * t);
    for _ in 0..k {
        tokens.extend_from_slice(prompt);
    }
    dec.prefill(&tokens, &vec![0; k])?;
    // Only the first beam is live at the start (the others are copies of it).
    let mut scores = vec![f64::NEG_INFINITY; k];
    scores[0] = 0.0;
    let mut seqs: Vec<Vec<u32>> = vec![Vec::with_capacity(cfg.max_new_tokens); k];
    let mut finished: Vec<BeamHypothesis> = Vec::new();
    let mut lp = vec![0.0f64; v];
    // Enough candidates that `beams` of them still run when all the EOS tokens rank best.
    let mut eos = cfg.eos.clone();
    eos.sort_unstable();
    eos.dedup();
    let width = (1 + eos.len()).max(2) * k;
    // The best `width` candidates: a max-heap whose top is the worst of them while it fills,
    // then sorted best first.
    let mut heap: BinaryHeap<Candidate> = BinaryHeap::with_capacity(width);
    let mut top: Vec<Candidate> = Vec::with_capacity(width);
    let mut src = vec![0usize; k];
    let mut next = vec![0u32; k];
    let mut next_scores = vec![0.0f64; k];
    let mut next_seqs: Vec<Vec<u32>> = vec![Vec::with_capacity(cfg.max_new_tokens); k];
    for step in 0..cfg.max_new_tokens {
        for (b, &s) in scores.iter().enumerate() {
            if s == f64::NEG_INFINITY {
                continue;
            }
            log_softmax(dec.logits(b), &mut lp);
            for (tok, &l) in lp.iter().enumerate() {
                let cand = Candidate {
                    score: s + l,
                    beam: b,
                    token: tok as u32,
                };
                if heap.len() < width {
                    heap.push(cand);
                } else if let Some(mut worst) = heap.peek_mut() {
                    if cand < *worst {
                        *worst = cand;
                    }
                }
            }
        }
        top.clear();
        top.extend(heap.drain());
        top.sort_unstable();
        let len = step + 1;
        let mut kept = 0;
        for (
            rank,
            &Candidate {
                score: s,
                beam: b,
                token: tok,
            },
        ) in top.iter().enumerate()
        {
            if cfg.eos.contains(&tok) {
                if rank < k {
                    let mut toks = seqs[b].clone();
                    toks.push(tok);
                    finished.push(BeamHypothesis {
                        tokens: toks,
                        sum_logprob: s,
                        score: penalised(s, len, cfg.length_penalty),
                    });
                }
                continue;
            }
            src[kept] = b;
            next[kept] = tok;
            next_scores[kept] = s;
            next_seqs[kept].clear();
            next_seqs[kept].extend_from_slice(&seqs[b]);
            next_seqs[kept].push(tok);
            kept += 1;
            if kept == k {
                break;
            }
        }
        for i in kept..k {
            // Not enough non-EOS candidates (tiny vocabularies): park the row.
            src[i] = src[0];
            next[i] = next[0];
            next_scores[i] = f64::NEG_INFINITY;
            next_seqs[i].clear();
        }
        std::mem::swap(&mut seqs, &mut next_seqs);
        scores.copy_from_slice(&next_scores);
        finished.sort_by(|a, b| b.score.total_cmp(&a.score));
        finished.truncate(k);
        if finished.len() == k {
            let worst = finished[k - 1].score;
            let best_running = penalised(scores[0], len, cfg.length_penalty);
            if cfg.early_stopping || best_running <= worst {
                return Ok(finished);
            }
        }
        if len == cfg.max_new_tokens {
            break;
        }
        dec.reorder(&src);
        dec.step(&next)?;
    }
    for b in 0..k {
        if scores[b] > f64::NEG_INFINITY {
            finished.push(BeamHypothesis {
                tokens: seqs[b].clone(),
                sum_logprob: scores[b],
                score: penalised(scores[b], seqs[b].len(), cfg.length_penalty),
            });
        }
    }
    finished.sort_by(|a, b| b.score.total_cmp(&a.score));
    finished.truncate(k);
    Ok(finished)
}
