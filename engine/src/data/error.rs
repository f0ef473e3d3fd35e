//! The one error type of the data layer. Every variant names the file (or pattern) it is about,
//! what was found, and what to do.

use std::io;
use std::path::PathBuf;

/// Why token shards could not be written, read or served.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// Opening, reading, mapping, writing, syncing or renaming failed.
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        /// What was being done ("open", "map", "write", "rename", ...).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },

    /// The file is not a well-formed shard: a header field or the file size is wrong.
    #[error("{}: {problem}; {fix}", path.display())]
    BadShard {
        /// The shard file.
        path: PathBuf,
        /// What is wrong: the field, what it holds and what was expected.
        problem: String,
        /// What to do about it.
        fix: &'static str,
    },

    /// A token at or above the model's vocabulary size.
    #[error(
        "{}: token {token} at position {position} is not below the model's vocabulary size \
         {vocab_size}; the tokens were made with a different tokenizer: re-run cllm-prepare \
         with the model's tokenizer, or train a model whose vocabulary covers it",
        source_name.display()
    )]
    TokenOutOfRange {
        /// The shard file (or `<memory>` for an in-memory token source).
        source_name: PathBuf,
        /// Index of the first offending token within that source.
        position: usize,
        /// Its value.
        token: u32,
        /// The model's vocabulary size.
        vocab_size: usize,
    },

    /// Nothing to write or read: an empty token list, a pattern matching no file, or data too
    /// short for one window.
    #[error("{what}: {problem}; {fix}")]
    Empty {
        /// The file, pattern or source concerned.
        what: String,
        /// What is missing.
        problem: String,
        /// What to do about it.
        fix: &'static str,
    },

    /// A glob pattern that does not parse.
    #[error("bad glob pattern {pattern:?}: {problem}")]
    Pattern {
        /// The pattern as given.
        pattern: String,
        /// The parser's message.
        problem: String,
    },

    /// The caller's request does not fit the data or the buffers (B or T zero, buffer lengths,
    /// a position from other data).
    #[error("{0}")]
    Invalid(String),
}

impl DataError {
    /// A closure mapping an `io::Error` to [`DataError::Io`] for `op` on `path`.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| DataError::Io { op, path, source }
    }
}
