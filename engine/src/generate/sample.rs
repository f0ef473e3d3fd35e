//! Turning one row's logits into the next token: repetition penalty, temperature, top-k, top-p,
//! min-p, then a draw from a seeded [`Rng`]; greedy takes the argmax.
//!
//! The order is Hugging Face's (penalty, temperature, top-k, top-p, min-p), and so are the
//! definitions. A [`Sampler`] owns every buffer it needs: drawing a token allocates nothing.

use super::GenerateError;
use crate::rng::Rng;

/// How the next token is chosen.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleConfig {
    /// Softmax temperature; 0 means greedy (argmax).
    pub temperature: f32,
    /// Keep only the k most likely tokens, and any as likely as the k-th.
    pub top_k: Option<usize>,
    /// Keep the smallest set of most likely tokens whose probabilities sum to at least p, in (0, 1].
    /// When equally likely tokens straddle the boundary, the lower ids stay (Hugging Face leaves
    /// that to torch's sort, whose order among equal values is not fixed).
    pub top_p: Option<f32>,
    /// Drop tokens less likely than min_p times the most likely one, in [0, 1].
    pub min_p: Option<f32>,
    /// Hugging Face's repetition penalty (> 0): a token already in the prompt or the output has
    /// its logit divided by it when positive, multiplied when negative.
    pub repetition_penalty: Option<f32>,
}

impl Default for SampleConfig {
    /// Plain sampling at temperature 1.
    fn default() -> Self {
        SampleConfig {
            temperature: 1.0,
            top_k: None,
            top_p: None,
            min_p: None,
            repetition_penalty: None,
        }
    }
}

impl SampleConfig {
    /// Always the most likely token.
    pub fn greedy() -> SampleConfig {
        SampleConfig {
            temperature: 0.0,
            ..SampleConfig::default()
        }
    }

    /// Whether this is greedy decoding.
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }

    /// Refuse settings outside their ranges, and filters with temperature 0 (greedy decoding,
    /// which has nothing to filter: transformers refuses them too).
    pub fn validate(&self) -> Result<(), GenerateError> {
        let bad = |what: String| Err(GenerateError::Config(what));
        // A value out of range because it is infinite or NaN says so: "must be >= 0, got inf"
        // would read as a contradiction.
        let finite = |v: f32| {
            if v.is_finite() {
                ""
            } else {
                "a finite number "
            }
        };
        let t = self.temperature;
        if !(t >= 0.0 && t.is_finite()) {
            return bad(format!("temperature must be {}>= 0, got {t}", finite(t)));
        }
        if self.top_k == Some(0) {
            return bad("top-k must be at least 1".into());
        }
        if t == 0.0 {
            let filters = [
                (self.top_k.is_some(), "top-k"),
                (self.top_p.is_some(), "top-p"),
                (self.min_p.is_some(), "min-p"),
            ];
            if let Some((_, name)) = filters.iter().find(|(given, _)| *given) {
                return bad(format!(
                    "temperature 0 is greedy decoding, which ignores {name}: give a temperature \
                     above 0, or leave {name} out"
                ));
            }
        }
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return bad(format!("top-p must be in (0, 1], got {p}"));
            }
        }
        if let Some(p) = self.min_p {
            if !(0.0..=1.0).contains(&p) {
                return bad(format!("min-p must be in [0, 1], got {p}"));
            }
        }
        if let Some(r) = self.repetition_penalty {
            if !(r > 0.0 && r.is_finite()) {
                return bad(format!(
                    "the repetition penalty must be {}> 0, got {r}",
                    finite(r)
                ));
            }
        }
        Ok(())
    }
}

/// One row's token chooser: its settings, its random stream and its buffers.
pub struct Sampler {
    cfg: SampleConfig,
    rng: Rng,
    /// (V) the processed logits.
    work: Vec<f32>,
    /// (V) the candidates as (scaled logit, then probability; id).
    cand: Vec<(f32, u32)>,
}

impl Sampler {
    /// A sampler for a vocabulary of `vocab` tokens whose random stream is fixed by `seed`.
    pub fn new(cfg: &SampleConfig, vocab: usize, seed: u64) -> Result<Sampler, GenerateError> {
        cfg.validate()?;
        Ok(Sampler {
            cfg: cfg.clone(),
            rng: Rng::new(seed),
            work: Vec::with_capacity(vocab),
            cand: Vec::with_capacity(vocab),
        })
    }

    /// The tokens [`Sampler::next`] chooses among after `history` (prompt and output so far),
    /// from `logits` (V): the repetition penalty, temperature, top-k, top-p and min-p applied as
    /// Hugging Face's logits processors apply them. Each kept token comes with its probability
    /// relative to the most likely one (which is 1), in no particular order; divided by their
    /// sum they are the probabilities a token is drawn with. Greedy keeps the argmax alone.
    pub fn candidates(&mut self, logits: &[f32], history: &[u32]) -> &[(f32, u32)] {
        self.filter(logits, history);
        &self.cand
    }

    /// The next token after `history` (prompt and output so far), from `logits` (V).
    pub fn next(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        self.filter(logits, history);
        if self.cfg.is_greedy() {
            return self.cand[0].1;
        }
        let total: f64 = self.cand.iter().map(|c| c.0 as f64).sum();
        if !(total > 0.0 && total.is_finite()) {
            // No distribution to draw from (logits that are NaN or infinite): greedy's token.
            return argmax(&self.work);
        }
        let mut r = uniform(&mut self.rng) * total;
        let mut last = None;
        for &(w, id) in self.cand.iter() {
            r -= w as f64;
            if r < 0.0 {
                return id;
            }
            if w > 0.0 {
                last = Some(id);
            }
        }
        // Rounding left a little of the draw: the last token that may be drawn.
        last.unwrap_or_else(|| argmax(&self.work))
    }

    /// Leaves in `cand` the tokens that may be drawn, with their relative probabilities.
    fn filter(&mut self, logits: &[f32], history: &[u32]) {
        let cfg = &self.cfg;
        self.work.clear();
        self.work.extend_from_slice(logits);
        if let Some(r) = cfg.repetition_penalty {
            // Computed from the original logit, so a repeated token is penalised once.
            for &t in history {
                if let Some(&l) = logits.get(t as usize) {
                    self.work[t as usize] = if l < 0.0 { l * r } else { l / r };
                }
            }
        }
        self.cand.clear();
        if cfg.is_greedy() {
            self.cand.push((1.0, argmax(&self.work)));
            return;
        }
        // The largest logit is subtracted before dividing by the temperature, so it maps to 0 and
        // a tiny temperature sends the others to -inf, never to inf - inf = NaN.
        let t = cfg.temperature;
        let lmax = self.work.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        self.cand.extend(
            self.work
                .iter()
                .enumerate()
                .map(|(i, &l)| ((l - lmax) / t, i as u32)),
        );
        // Most likely first, and among equal logits the lower id first.
        let desc = |a: &(f32, u32), b: &(f32, u32)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
        if let Some(k) = cfg.top_k.filter(|&k| k < self.cand.len()) {
            // Every token as likely as the k-th stays, so ties at the boundary are all kept.
            self.cand.select_nth_unstable_by(k - 1, desc);
            let kth = self.cand[k - 1].0;
            self.cand.retain(|c| c.0 >= kth);
        }
        let sorted = cfg.top_p.is_some_and(|p| p < 1.0);
        if sorted {
            self.cand.sort_unstable_by(desc);
        }
        // Probabilities of the remaining candidates.
        let max = self
            .cand
            .iter()
            .map(|c| c.0)
            .fold(f32::NEG_INFINITY, f32::max);
        let mut total = 0.0f64;
        for c in self.cand.iter_mut() {
            c.0 = (c.0 - max).exp();
            total += c.0 as f64;
        }
        if sorted {
            // The most likely tokens until their mass reaches p: a token stays while the mass
            // of those before it is below p.
            let p = cfg.top_p.unwrap_or(1.0) as f64 * total;
            let mut cum = 0.0f64;
            let mut keep = self.cand.len();
            for (i, c) in self.cand.iter().enumerate() {
                cum += c.0 as f64;
                if cum >= p {
                    keep = i + 1;
                    break;
                }
            }
            self.cand.truncate(keep);
        }
        if let Some(min_p) = cfg.min_p {
            // The largest unnormalised probability is exp(0) = 1.
            self.cand.retain(|c| c.0 >= min_p);
        }
    }
}

/// A uniform f64 in [0, 1) from 53 random bits.
fn uniform(rng: &mut Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// The index of the largest logit (the first on ties, as `torch.argmax`).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// `out[i] = log softmax(logits)[i]`, in f64.
pub fn log_softmax(logits: &[f32], out: &mut [f64]) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = logits
        .iter()
        .map(|&l| (l as f64 - max).exp())
        .sum::<f64>()
        .ln()
        + max;
    for (o, &l) in out.iter_mut().zip(logits) {
        *o = l as f64 - lse;
    }
}
