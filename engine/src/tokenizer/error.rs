//! The tokenizer's errors.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong reading, writing, training or using a tokenizer.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// A file could not be read or written.
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        /// "read", "write", "rename", ...
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A file is not valid JSON.
    #[error("{}: not valid JSON: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's error (with line and column).
        #[source]
        source: serde_json::Error,
    },
    /// A field of a file has a wrong value.
    #[error("{}: `{field}` {problem}; {fix}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The field (or line) that is wrong.
        field: String,
        /// What is wrong with it.
        problem: String,
        /// What to do about it.
        fix: &'static str,
    },
    /// `encode_with_special` was allowed a special token this tokenizer does not have.
    #[error("`{name}` is not a special token of this tokenizer (it has: {known})")]
    UnknownSpecial {
        /// The name asked for.
        name: String,
        /// The special tokens the tokenizer has, comma-separated.
        known: String,
    },
    /// A token id at or above the vocabulary size.
    #[error("token id {id} is outside the vocabulary (size {vocab_size})")]
    UnknownToken {
        /// The id.
        id: u32,
        /// The vocabulary size.
        vocab_size: usize,
    },
    /// Training options that cannot work.
    #[error("cannot train a tokenizer: {0}")]
    Train(String),
}
