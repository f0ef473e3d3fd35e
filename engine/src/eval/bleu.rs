//! BLEU exactly as sacrebleu 2.6.0 computes it with its defaults: the `13a` tokenizer (mteval-v13a),
//! case-sensitive, n-grams up to 4, `exp` smoothing, the brevity penalty against the closest
//! reference length (the shorter one on a tie).
//!
//! [`corpus_bleu`] is `sacrebleu.corpus_bleu(hyps, refs)` (no effective order);
//! [`sentence_bleu`] is `sacrebleu.sentence_bleu(hyp, refs)` (effective order on). Scores are on
//! sacrebleu's 0–100 scale, and so are the n-gram precisions.

use std::collections::HashMap;

use super::EvalError;

/// The highest n-gram order counted.
pub const MAX_NGRAM_ORDER: usize = 4;

/// BLEU's sufficient statistics; those of a corpus are the sums over its segments.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BleuStats {
    /// Hypothesis length in tokens.
    pub sys_len: usize,
    /// Length of the reference closest in length to the hypothesis (the shorter one on a tie).
    pub ref_len: usize,
    /// Clipped n-gram matches, index `n - 1` for order n.
    pub counts: [usize; MAX_NGRAM_ORDER],
    /// Hypothesis n-grams, index `n - 1` for order n.
    pub totals: [usize; MAX_NGRAM_ORDER],
}

impl BleuStats {
    /// Adds another segment's statistics to these.
    pub fn add(&mut self, other: &BleuStats) {
        self.sys_len += other.sys_len;
        self.ref_len += other.ref_len;
        for n in 0..MAX_NGRAM_ORDER {
            self.counts[n] += other.counts[n];
            self.totals[n] += other.totals[n];
        }
    }
}

/// A BLEU score with the figures sacrebleu's `BLEUScore` carries.
#[derive(Clone, Debug, PartialEq)]
pub struct BleuScore {
    /// BLEU, 0–100.
    pub score: f64,
    /// Brevity penalty, 0–1.
    pub bp: f64,
    /// Smoothed n-gram precisions, 0–100, index `n - 1` for order n.
    pub precisions: [f64; MAX_NGRAM_ORDER],
    /// Clipped n-gram matches.
    pub counts: [usize; MAX_NGRAM_ORDER],
    /// Hypothesis n-grams.
    pub totals: [usize; MAX_NGRAM_ORDER],
    /// Hypothesis length in tokens.
    pub sys_len: usize,
    /// Reference length in tokens.
    pub ref_len: usize,
}

impl BleuScore {
    /// `sys_len / ref_len`, or 0 when the reference is empty (as sacrebleu reports it).
    pub fn ratio(&self) -> f64 {
        if self.ref_len == 0 {
            0.0
        } else {
            self.sys_len as f64 / self.ref_len as f64
        }
    }
}

/// Whitespace as Python's `str.split()` and `str.rstrip()` see it: Unicode White_Space plus the
/// four information separators U+001C..U+001F.
fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// The characters sacrebleu's first regex pads with spaces: `[\{-\~\[-\` -\&\(-\+\:-\@\/]`, i.e.
/// ASCII punctuation and the space except `'`, `,`, `-` and `.`.
fn is_13a_symbol(c: char) -> bool {
    matches!(c, '{'..='~' | '['..='`' | ' '..='&' | '('..='+' | ':'..='@' | '/')
}

/// Rewrites every leftmost, non-overlapping match of a two-character pattern, as `re.sub` does.
fn sub_pairs(
    s: &[char],
    matches: impl Fn(char, char) -> bool,
    replace: impl Fn(char, char, &mut Vec<char>),
) -> Vec<char> {
    let mut out = Vec::with_capacity(s.len() + s.len() / 2);
    let mut i = 0;
    while i < s.len() {
        if i + 1 < s.len() && matches(s[i], s[i + 1]) {
            replace(s[i], s[i + 1], &mut out);
            i += 2;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    out
}

/// sacrebleu's `Tokenizer13a` on one segment: tokens joined by single spaces.
pub fn tokenize_13a(line: &str) -> String {
    let mut line = line
        .replace("<skipped>", "")
        .replace("-\n", "")
        .replace('\n', " ");
    if line.contains('&') {
        line = line
            .replace("&quot;", "\"")
            .replace("&amp;", "&")
            .replace("&lt;", "<")
            .replace("&gt;", ">");
    }
    let padded: Vec<char> = format!(" {line} ").chars().collect();

    // ([\{-\~\[-\` -\&\(-\+\:-\@\/]) -> ' \1 '
    let mut s = Vec::with_capacity(padded.len() * 2);
    for c in padded {
        if is_13a_symbol(c) {
            s.extend([' ', c, ' ']);
        } else {
            s.push(c);
        }
    }
    let digit = |c: char| c.is_ascii_digit();
    let period_comma = |c: char| c == '.' || c == ',';
    // ([^0-9])([\.,]) -> '\1 \2 ': a period or comma not after a digit.
    let s = sub_pairs(
        &s,
        |a, b| !digit(a) && period_comma(b),
        |a, b, o| o.extend([a, ' ', b, ' ']),
    );
    // ([\.,])([^0-9]) -> ' \1 \2': a period or comma not before a digit.
    let s = sub_pairs(
        &s,
        |a, b| period_comma(a) && !digit(b),
        |a, b, o| o.extend([' ', a, ' ', b]),
    );
    // ([0-9])(-) -> '\1 \2 ': a dash after a digit.
    let s = sub_pairs(
        &s,
        |a, b| digit(a) && b == '-',
        |a, b, o| o.extend([a, ' ', b, ' ']),
    );

    let s: String = s.into_iter().collect();
    s.split(is_py_space)
        .filter(|t| !t.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// sacrebleu's segment preprocessing: trailing whitespace removed, then tokenized.
fn preprocess(segment: &str) -> String {
    tokenize_13a(segment.trim_end_matches(is_py_space))
}

/// Counts of every n-gram of orders 1..=4 of a tokenized segment.
fn ngram_counts<'a>(tokens: &'a [&'a str]) -> HashMap<&'a [&'a str], usize> {
    let mut counts = HashMap::new();
    for n in 1..=MAX_NGRAM_ORDER {
        for gram in tokens.windows(n) {
            *counts.entry(gram).or_insert(0) += 1;
        }
    }
    counts
}

/// The reference length closest to `hyp_len`, the shorter on a tie.
fn closest_ref_len(hyp_len: usize, ref_lens: &[usize]) -> usize {
    let mut best: Option<(usize, usize)> = None; // (difference, length)
    for &len in ref_lens {
        let diff = hyp_len.abs_diff(len);
        best = match best {
            Some((d, l)) if d < diff || (d == diff && l <= len) => Some((d, l)),
            _ => Some((diff, len)),
        };
    }
    best.map_or(0, |(_, len)| len)
}

/// The statistics of one hypothesis against its references (raw, untokenized text).
///
/// With no references the reference length is 0 and nothing matches.
pub fn segment_stats<R: AsRef<str>>(hypothesis: &str, references: &[R]) -> BleuStats {
    let hyp = preprocess(hypothesis);
    let refs: Vec<String> = references.iter().map(|r| preprocess(r.as_ref())).collect();

    let hyp_tokens: Vec<&str> = hyp.split(' ').filter(|t| !t.is_empty()).collect();
    let ref_tokens: Vec<Vec<&str>> = refs
        .iter()
        .map(|r| r.split(' ').filter(|t| !t.is_empty()).collect())
        .collect();

    // The most times each n-gram occurs in any one reference.
    let mut ref_max: HashMap<&[&str], usize> = HashMap::new();
    for tokens in &ref_tokens {
        for (gram, count) in ngram_counts(tokens) {
            let slot = ref_max.entry(gram).or_insert(0);
            *slot = (*slot).max(count);
        }
    }
    let ref_lens: Vec<usize> = ref_tokens.iter().map(Vec::len).collect();

    let mut stats = BleuStats {
        sys_len: hyp_tokens.len(),
        ref_len: closest_ref_len(hyp_tokens.len(), &ref_lens),
        ..BleuStats::default()
    };
    for (gram, count) in ngram_counts(&hyp_tokens) {
        let n = gram.len() - 1;
        stats.totals[n] += count;
        if let Some(&in_ref) = ref_max.get(gram) {
            stats.counts[n] += count.min(in_ref);
        }
    }
    stats
}

/// sacrebleu's `my_log`: the natural log, with log 0 floored to -9999999999.
fn floored_ln(x: f64) -> f64 {
    if x == 0.0 {
        -9_999_999_999.0
    } else {
        x.ln()
    }
}

/// BLEU from sufficient statistics with `exp` smoothing (sacrebleu's `BLEU.compute_bleu`).
///
/// With `effective_order`, orders the hypothesis has no n-grams of are left out of the geometric
/// mean (sentence BLEU); without it they make the score 0 (corpus BLEU).
pub fn compute_bleu(stats: &BleuStats, effective_order: bool) -> BleuScore {
    let (sys_len, ref_len) = (stats.sys_len, stats.ref_len);
    let bp = if sys_len < ref_len {
        if sys_len > 0 {
            (1.0 - ref_len as f64 / sys_len as f64).exp()
        } else {
            0.0
        }
    } else {
        1.0
    };
    let mut score = BleuScore {
        score: 0.0,
        bp,
        precisions: [0.0; MAX_NGRAM_ORDER],
        counts: stats.counts,
        totals: stats.totals,
        sys_len,
        ref_len,
    };
    if stats.counts.iter().all(|&c| c == 0) {
        return score;
    }

    let mut smooth = 1.0f64;
    let mut eff_order = MAX_NGRAM_ORDER;
    for n in 0..MAX_NGRAM_ORDER {
        let (correct, total) = (stats.counts[n], stats.totals[n]);
        if total == 0 {
            break;
        }
        if effective_order {
            eff_order = n + 1;
        }
        score.precisions[n] = if correct == 0 {
            smooth *= 2.0;
            100.0 / (smooth * total as f64)
        } else {
            100.0 * correct as f64 / total as f64
        };
    }
    let log_sum: f64 = score.precisions[..eff_order]
        .iter()
        .map(|&p| floored_ln(p))
        .sum();
    score.score = bp * (log_sum / eff_order as f64).exp();
    score
}

/// Sentence BLEU of one hypothesis against one or more references (`sacrebleu.sentence_bleu`).
pub fn sentence_bleu<R: AsRef<str>>(hypothesis: &str, references: &[R]) -> BleuScore {
    compute_bleu(&segment_stats(hypothesis, references), true)
}

/// Corpus BLEU (`sacrebleu.corpus_bleu(hypotheses, reference_streams)`): `reference_streams[k][i]`
/// is the k-th reference of hypothesis i, so each stream is as long as `hypotheses`.
///
/// Fails when there are no hypotheses, no reference streams, or a stream of another length.
pub fn corpus_bleu<H, R, S>(
    hypotheses: &[H],
    reference_streams: &[R],
) -> Result<BleuScore, EvalError>
where
    H: AsRef<str>,
    R: AsRef<[S]>,
    S: AsRef<str>,
{
    if hypotheses.is_empty() {
        return Err(EvalError::NoSegments);
    }
    if reference_streams.is_empty() {
        return Err(EvalError::NoReferences);
    }
    for (stream, refs) in reference_streams.iter().enumerate() {
        let found = refs.as_ref().len();
        if found != hypotheses.len() {
            return Err(EvalError::LengthMismatch {
                stream,
                expected: hypotheses.len(),
                found,
            });
        }
    }
    let mut total = BleuStats::default();
    let mut refs: Vec<&str> = Vec::with_capacity(reference_streams.len());
    for (i, hyp) in hypotheses.iter().enumerate() {
        refs.clear();
        refs.extend(reference_streams.iter().map(|s| s.as_ref()[i].as_ref()));
        total.add(&segment_stats(hyp.as_ref(), &refs));
    }
    Ok(compute_bleu(&total, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizer_13a_cases() {
        for (raw, expected) in [
            ("Hello, world.", "Hello , world ."),
            ("3.14 and 1,000", "3.14 and 1,000"),
            ("a.b", "a . b"),
            ("1-2 x-y", "1 - 2 x-y"),
            ("&quot;x&quot; &amp; y", "\" x \" & y"),
            ("don't <skipped> stop", "don't stop"),
            ("  spaced\t out  ", "spaced out"),
        ] {
            assert_eq!(tokenize_13a(raw), expected, "{raw:?}");
        }
    }

    #[test]
    fn closest_reference_prefers_shorter_on_tie() {
        assert_eq!(closest_ref_len(5, &[7, 3]), 3);
        assert_eq!(closest_ref_len(5, &[3, 7]), 3);
        assert_eq!(closest_ref_len(5, &[6, 9, 4]), 4);
        assert_eq!(closest_ref_len(5, &[]), 0);
    }

    #[test]
    fn identical_sentence_scores_100() {
        let s = sentence_bleu("The cat sat on the mat.", &["The cat sat on the mat."]);
        assert!((s.score - 100.0).abs() < 1e-12);
        assert_eq!(s.bp, 1.0);
    }
}
