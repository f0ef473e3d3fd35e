//! Evaluation metrics that reproduce the reference implementations to the last bit that matters:
//! BLEU as sacrebleu 2.6.0 computes it by default ([`bleu`]), ROUGE as rouge-score 0.1.2 does
//! ([`rouge`], with NLTK's Porter stemmer in [`porter`]); and a model's perplexity over token
//! streams ([`perplexity`]).

pub mod bleu;
pub mod perplexity;
pub mod porter;
pub mod rouge;

/// Why a metric could not be computed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EvalError {
    /// There was nothing to score.
    #[error("no segments to score")]
    NoSegments,
    /// A corpus was given without any reference stream.
    #[error("no references given")]
    NoReferences,
    /// A reference stream does not have one segment per hypothesis.
    #[error("reference stream {stream} has {found} segments, the hypotheses {expected}")]
    LengthMismatch {
        /// Index of the reference stream.
        stream: usize,
        /// Number of hypotheses.
        expected: usize,
        /// Number of segments in the stream.
        found: usize,
    },
}
