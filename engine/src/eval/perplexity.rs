//! Perplexity of a model over token streams: the mean next-token negative log-likelihood over
//! every predicted token, in windows of T tokens that may overlap (Hugging Face's strided method).
//!
//! A stream of N tokens has N - 1 predicted tokens. Window w covers inputs `[begin, begin + T)`;
//! with stride S the windows end at T, T + S, T + 2S, ... (the last one at N - 1, moved back to keep
//! T tokens of context), and each scores only the targets the previous window did not, so every
//! target is scored exactly once, with at least T - S tokens of context when S < T.

use crate::model::{Gpt, ModelError, Workspace};

/// What a perplexity run measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Perplexity {
    /// Mean negative log-likelihood per predicted token, in nats.
    pub nll: f64,
    /// exp(nll).
    pub ppl: f64,
    /// Predicted tokens scored.
    pub tokens: usize,
    /// Σ of the scored tokens' negative log-likelihoods, in nats.
    pub total_nll: f64,
}

/// Accumulates the scores of several streams (e.g. one per shard) with one workspace.
pub struct PerplexityMeter<'m> {
    model: &'m Gpt,
    seq: usize,
    stride: usize,
    ws: Workspace,
    targets: Vec<u32>,
    total_nll: f64,
    tokens: usize,
}

impl<'m> PerplexityMeter<'m> {
    /// Windows of `seq` tokens (at most n_positions) moving by `stride` (1..=seq).
    pub fn new(
        model: &'m Gpt,
        seq: usize,
        stride: usize,
    ) -> Result<PerplexityMeter<'m>, ModelError> {
        let max = model.config().n_positions;
        if seq == 0 || seq > max {
            return Err(ModelError::SequenceTooLong { t: seq, max });
        }
        let stride = stride.clamp(1, seq);
        Ok(PerplexityMeter {
            model,
            seq,
            stride,
            ws: Workspace::new(model, 1, seq),
            targets: vec![0; seq],
            total_nll: 0.0,
            tokens: 0,
        })
    }

    /// Score one stream; `on_scored(first, count)` learns which targets (stream indices) were
    /// scored, e.g. to count their bytes. Streams shorter than two tokens score nothing; streams
    /// shorter than a window are scored in one shorter window.
    pub fn add(
        &mut self,
        stream: &[u32],
        mut on_scored: impl FnMut(usize, usize),
    ) -> Result<(), ModelError> {
        let n = stream.len();
        if n < 2 {
            return Ok(());
        }
        if n - 1 < self.seq {
            let mut short = PerplexityMeter::new(self.model, n - 1, n - 1)?;
            short.add(stream, on_scored)?;
            self.total_nll += short.total_nll;
            self.tokens += short.tokens;
            return Ok(());
        }
        let t = self.seq;
        let mut scored_to = 0; // targets [0, scored_to) done; target i is stream[i + 1]
        let mut end = t;
        loop {
            let end_c = end.min(n - 1);
            let begin = end_c - t;
            self.targets.copy_from_slice(&stream[begin + 1..end_c + 1]);
            self.model
                .forward(&mut self.ws, &stream[begin..end_c], Some(&self.targets))?;
            let first = scored_to.max(begin);
            let losses = &self.ws.losses()[first - begin..];
            self.total_nll += losses.iter().map(|&l| l as f64).sum::<f64>();
            self.tokens += losses.len();
            on_scored(first + 1, losses.len());
            scored_to = end_c;
            if end_c == n - 1 {
                return Ok(());
            }
            end += self.stride;
        }
    }

    /// The result so far.
    pub fn result(&self) -> Perplexity {
        let nll = self.total_nll / self.tokens.max(1) as f64;
        Perplexity {
            nll,
            ppl: nll.exp(),
            tokens: self.tokens,
            total_nll: self.total_nll,
        }
    }
}
