//! ROUGE-1, ROUGE-2, ROUGE-L and ROUGE-Lsum exactly as rouge-score 0.1.2 computes them with
//! `RougeScorer([...], use_stemmer=stem).score(target=reference, prediction=hypothesis)`.
//!
//! Tokens are the runs of `[a-z0-9]` in the lower-cased text; with stemming, tokens longer than three
//! characters go through NLTK's Porter stemmer ([`super::porter`]). ROUGE-Lsum treats each line of
//! a text as a sentence and scores the union LCS of every reference sentence against all hypothesis
//! sentences, each token counted at most as often as it occurs on both sides.

use std::collections::{BTreeSet, HashMap};

use super::porter;

/// Precision, recall and F-measure (the harmonic mean), each in 0–1.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RougeScore {
    /// Matches over hypothesis size.
    pub precision: f64,
    /// Matches over reference size.
    pub recall: f64,
    /// `2 p r / (p + r)`, or 0 when both are 0.
    pub fmeasure: f64,
}

impl RougeScore {
    /// A score from precision and recall, with rouge-score's F-measure.
    pub fn new(precision: f64, recall: f64) -> RougeScore {
        let fmeasure = if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        };
        RougeScore {
            precision,
            recall,
            fmeasure,
        }
    }
}

/// The four ROUGE variants of one hypothesis/reference pair.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RougeScores {
    /// Unigram overlap.
    pub rouge1: RougeScore,
    /// Bigram overlap.
    pub rouge2: RougeScore,
    /// Longest common subsequence over the whole text.
    pub rouge_l: RougeScore,
    /// Summary-level LCS over newline-separated sentences.
    pub rouge_lsum: RougeScore,
}

/// rouge-score's default tokenizer: lower-case, every run of characters other than `[a-z0-9]` is a
/// separator, and with `stem` the tokens longer than 3 characters are Porter-stemmed.
pub fn tokenize(text: &str, stem: bool) -> Vec<String> {
    let lower = text.to_lowercase();
    lower
        .split(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit()))
        .filter(|t| !t.is_empty())
        .map(|t| {
            if stem && t.len() > 3 {
                porter::stem(t)
            } else {
                t.to_string()
            }
        })
        .filter(|t| {
            !t.is_empty()
                && t.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
        .collect()
}

fn ngram_counts(tokens: &[String], n: usize) -> HashMap<&[String], usize> {
    let mut counts = HashMap::new();
    for gram in tokens.windows(n) {
        *counts.entry(gram).or_insert(0) += 1;
    }
    counts
}

/// ROUGE-N on tokens: clipped n-gram overlap over the n-gram counts of each side.
///
/// # Panics
/// If `n` is 0.
pub fn rouge_n(hypothesis: &[String], reference: &[String], n: usize) -> RougeScore {
    assert!(n > 0, "ROUGE-N needs n >= 1");
    let hyp = ngram_counts(hypothesis, n);
    let reference = ngram_counts(reference, n);
    let overlap: usize = reference
        .iter()
        .map(|(g, &c)| c.min(hyp.get(g).copied().unwrap_or(0)))
        .sum();
    let hyp_total: usize = hyp.values().sum();
    let ref_total: usize = reference.values().sum();
    RougeScore::new(
        overlap as f64 / hyp_total.max(1) as f64,
        overlap as f64 / ref_total.max(1) as f64,
    )
}

/// The LCS table of `reference` (rows) against `candidate` (columns), (R+1) × (C+1) row-major.
fn lcs_table(reference: &[String], candidate: &[String]) -> Vec<usize> {
    let cols = candidate.len() + 1;
    let mut t = vec![0usize; (reference.len() + 1) * cols];
    for i in 1..=reference.len() {
        for j in 1..=candidate.len() {
            t[i * cols + j] = if reference[i - 1] == candidate[j - 1] {
                t[(i - 1) * cols + j - 1] + 1
            } else {
                t[(i - 1) * cols + j].max(t[i * cols + j - 1])
            };
        }
    }
    t
}

/// Indices into `reference` of one longest common subsequence, chosen as rouge-score's
/// `_backtrack_norec` chooses it (the choice matters for the ROUGE-Lsum union).
fn lcs_indices(reference: &[String], candidate: &[String]) -> Vec<usize> {
    let t = lcs_table(reference, candidate);
    let cols = candidate.len() + 1;
    let (mut i, mut j) = (reference.len(), candidate.len());
    let mut lcs = Vec::new();
    while i > 0 && j > 0 {
        if reference[i - 1] == candidate[j - 1] {
            lcs.push(i - 1);
            i -= 1;
            j -= 1;
        } else if t[i * cols + j - 1] > t[(i - 1) * cols + j] {
            j -= 1;
        } else {
            i -= 1;
        }
    }
    lcs.reverse();
    lcs
}

/// ROUGE-L on tokens: LCS length over each side's length; 0 when either side is empty.
pub fn rouge_l(hypothesis: &[String], reference: &[String]) -> RougeScore {
    if hypothesis.is_empty() || reference.is_empty() {
        return RougeScore::default();
    }
    let lcs = lcs_table(reference, hypothesis)[(reference.len() + 1) * (hypothesis.len() + 1) - 1];
    RougeScore::new(
        lcs as f64 / hypothesis.len() as f64,
        lcs as f64 / reference.len() as f64,
    )
}

/// The non-empty lines of a text, tokenized: ROUGE-Lsum's sentences.
fn sentences(text: &str, stem: bool) -> Vec<Vec<String>> {
    text.split('\n')
        .filter(|s| !s.is_empty())
        .map(|s| tokenize(s, stem))
        .collect()
}

/// ROUGE-Lsum on sentences of tokens (rouge-score's `_summary_level_lcs`).
pub fn rouge_lsum_tokens(hypothesis: &[Vec<String>], reference: &[Vec<String>]) -> RougeScore {
    let hyp_len: usize = hypothesis.iter().map(Vec::len).sum();
    let ref_len: usize = reference.iter().map(Vec::len).sum();
    if hyp_len == 0 || ref_len == 0 {
        return RougeScore::default();
    }
    // How many more times each token may be counted as a hit, on each side.
    let mut left_hyp: HashMap<&str, usize> = HashMap::new();
    let mut left_ref: HashMap<&str, usize> = HashMap::new();
    for t in hypothesis.iter().flatten() {
        *left_hyp.entry(t).or_insert(0) += 1;
    }
    for t in reference.iter().flatten() {
        *left_ref.entry(t).or_insert(0) += 1;
    }

    let mut hits = 0usize;
    for sentence in reference {
        let union: BTreeSet<usize> = hypothesis
            .iter()
            .flat_map(|candidate| lcs_indices(sentence, candidate))
            .collect();
        for i in union {
            let token = sentence[i].as_str();
            let (Some(h), Some(r)) = (left_hyp.get_mut(token), left_ref.get_mut(token)) else {
                continue;
            };
            if *h > 0 && *r > 0 {
                hits += 1;
                *h -= 1;
                *r -= 1;
            }
        }
    }
    RougeScore::new(hits as f64 / hyp_len as f64, hits as f64 / ref_len as f64)
}

/// ROUGE-Lsum of two texts whose sentences are separated by newlines.
pub fn rouge_lsum(hypothesis: &str, reference: &str, stem: bool) -> RougeScore {
    rouge_lsum_tokens(&sentences(hypothesis, stem), &sentences(reference, stem))
}

/// ROUGE-1, ROUGE-2, ROUGE-L and ROUGE-Lsum of a hypothesis against its reference.
pub fn score(hypothesis: &str, reference: &str, stem: bool) -> RougeScores {
    let hyp = tokenize(hypothesis, stem);
    let reference_tokens = tokenize(reference, stem);
    RougeScores {
        rouge1: rouge_n(&hyp, &reference_tokens, 1),
        rouge2: rouge_n(&hyp, &reference_tokens, 2),
        rouge_l: rouge_l(&hyp, &reference_tokens),
        rouge_lsum: rouge_lsum(hypothesis, reference, stem),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizer_lowercases_and_splits_on_non_alphanumerics() {
        assert_eq!(
            tokenize("Hello, World! it's 42-ish", false),
            ["hello", "world", "it", "s", "42", "ish"]
        );
        assert_eq!(tokenize("Running dogs ran", true), ["run", "dog", "ran"]);
        // U+212A KELVIN SIGN lower-cases to an ASCII k.
        assert_eq!(tokenize("\u{212a}ing", false), ["king"]);
    }

    #[test]
    fn rouge_l_and_lsum_agree_on_one_sentence() {
        let s = score(
            "the cat was found under the bed",
            "the cat was under the bed",
            false,
        );
        assert_eq!(s.rouge_l, s.rouge_lsum);
        assert!((s.rouge_l.recall - 1.0).abs() < 1e-12);
    }
}
