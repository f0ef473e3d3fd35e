//! cllm's tokenizer file: JSON, versioned, written atomically.
//!
//! ```text
//! {
//!   "format": "cllm-bpe-tokenizer",
//!   "version": 1,
//!   "pre_tokenizer": "gpt2",
//!   "byte_ids": [ ...256 ids: the token of byte 0, 1, ..., 255 (a permutation of 0..256)... ],
//!   "specials": ["<|endoftext|>", "<pad>"],
//!   "merges": [
//!     [97, 98],
//!     ...
//!   ]
//! }
//! ```
//!
//! Merge `i` joins two earlier tokens into token `256 + i`; special `j` has id
//! `256 + merges.len() + j`; `<|endoftext|>` must be one of the specials. Loading checks every
//! field and names the file, the field and the fix. Saving goes through
//! [`crate::atomic_file::write_atomic`]: a crash leaves the old file or the new one, never half of
//! one.

use std::fs;
use std::path::Path;

use serde_json::Value;

use super::{Origin, Tokenizer, TokenizerError};
use crate::atomic_file::write_atomic;

/// The `format` field.
pub const FORMAT: &str = "cllm-bpe-tokenizer";
/// The `version` field this build writes and reads.
pub const VERSION: u64 = 1;

/// What to do about a damaged or hand-edited file: use one cllm wrote. Users of the command line
/// get theirs from cllm-prepare or a checkpoint; library users write one with `Tokenizer::save`.
const FIX: &str = "use a tokenizer file as cllm writes it: the tokenizer.json cllm-prepare \
     writes beside its shards, or the one a cllm checkpoint directory holds (from Rust, \
     `Tokenizer::save` writes one)";

fn invalid(path: &Path, field: &str, problem: String, fix: &'static str) -> TokenizerError {
    TokenizerError::Invalid {
        path: path.to_path_buf(),
        field: field.to_string(),
        problem,
        fix,
    }
}

fn io<'p>(op: &'static str, path: &'p Path) -> impl FnOnce(std::io::Error) -> TokenizerError + 'p {
    move |source| TokenizerError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

fn as_u32(v: &Value) -> Option<u32> {
    v.as_u64().and_then(|x| u32::try_from(x).ok())
}

impl Tokenizer {
    /// The tokenizer file's text.
    pub fn to_json(&self) -> String {
        let mut s = String::with_capacity(32 + self.merges.len() * 14);
        s.push_str(&format!(
            "{{\n  \"format\": \"{FORMAT}\",\n  \"version\": {VERSION},\n  \"pre_tokenizer\": \"gpt2\",\n"
        ));
        let ids: Vec<String> = self.byte_ids.iter().map(u32::to_string).collect();
        s.push_str(&format!("  \"byte_ids\": [{}],\n", ids.join(", ")));
        s.push_str(&format!(
            "  \"specials\": {},\n",
            serde_json::to_string(&self.specials).expect("strings serialize")
        ));
        s.push_str("  \"merges\": [");
        for (i, (a, b)) in self.merges.iter().enumerate() {
            s.push_str(if i == 0 { "\n    [" } else { ",\n    [" });
            s.push_str(&format!("{a}, {b}]"));
        }
        s.push_str(if self.merges.is_empty() {
            "]\n}\n"
        } else {
            "\n  ]\n}\n"
        });
        s
    }

    /// Writes the tokenizer file to `path` atomically ([`crate::atomic_file`]).
    pub fn save(&self, path: &Path) -> Result<(), TokenizerError> {
        write_atomic(path, self.to_json().as_bytes()).map_err(io("write", path))
    }

    /// Reads a tokenizer file written by [`save`](Self::save).
    pub fn load(path: &Path) -> Result<Tokenizer, TokenizerError> {
        let text = fs::read(path).map_err(io("read", path))?;
        Self::from_json(&text, path)
    }

    /// Parses the tokenizer file's text; `path` only names it in errors.
    pub fn from_json(text: &[u8], path: &Path) -> Result<Tokenizer, TokenizerError> {
        let v: Value = serde_json::from_slice(text).map_err(|source| TokenizerError::Json {
            path: path.to_path_buf(),
            source,
        })?;
        let field = |name: &str| {
            v.get(name)
                .ok_or_else(|| invalid(path, name, "is missing".into(), FIX))
        };
        match field("format")?.as_str() {
            Some(FORMAT) => {}
            other => {
                return Err(invalid(
                    path,
                    "format",
                    format!("is {other:?}, not {FORMAT:?}: this is not a cllm tokenizer file"),
                    "pass a file written by cllm, or `--tokenizer gpt2` for GPT-2's vocabulary",
                ))
            }
        }
        match field("version")?.as_u64() {
            Some(VERSION) => {}
            Some(newer) if newer > VERSION => {
                return Err(invalid(
                    path,
                    "version",
                    format!("is {newer}; this cllm reads version {VERSION}"),
                    "use a newer cllm",
                ))
            }
            other => {
                return Err(invalid(
                    path,
                    "version",
                    format!("is {other:?}, not {VERSION}"),
                    FIX,
                ))
            }
        }
        match field("pre_tokenizer")?.as_str() {
            Some("gpt2") => {}
            other => {
                return Err(invalid(
                    path,
                    "pre_tokenizer",
                    format!("is {other:?}; the only pre-tokenizer is \"gpt2\""),
                    FIX,
                ))
            }
        }
        let byte_ids_v = field("byte_ids")?
            .as_array()
            .filter(|a| a.len() == 256)
            .ok_or_else(|| invalid(path, "byte_ids", "is not an array of 256 ids".into(), FIX))?;
        let mut byte_ids = [0u32; 256];
        for (i, x) in byte_ids_v.iter().enumerate() {
            byte_ids[i] = as_u32(x).ok_or_else(|| {
                invalid(
                    path,
                    &format!("byte_ids[{i}]"),
                    format!("is {x}, not an id"),
                    FIX,
                )
            })?;
        }
        let specials_v = field("specials")?
            .as_array()
            .ok_or_else(|| invalid(path, "specials", "is not an array of strings".into(), FIX))?;
        let mut specials = Vec::with_capacity(specials_v.len());
        for (j, x) in specials_v.iter().enumerate() {
            let s = x.as_str().ok_or_else(|| {
                invalid(
                    path,
                    &format!("specials[{j}]"),
                    format!("is {x}, not a string"),
                    FIX,
                )
            })?;
            specials.push(s.to_string());
        }
        let merges_v = field("merges")?.as_array().ok_or_else(|| {
            invalid(
                path,
                "merges",
                "is not an array of [id, id] pairs".into(),
                FIX,
            )
        })?;
        let mut merges = Vec::with_capacity(merges_v.len());
        for (i, x) in merges_v.iter().enumerate() {
            let pair = x
                .as_array()
                .filter(|p| p.len() == 2)
                .and_then(|p| Some((as_u32(&p[0])?, as_u32(&p[1])?)));
            merges.push(pair.ok_or_else(|| {
                invalid(
                    path,
                    &format!("merges[{i}]"),
                    format!("is {x}, not [id, id]"),
                    FIX,
                )
            })?);
        }
        Tokenizer::from_parts(byte_ids, merges, specials, &Origin { path, fix: FIX })
    }
}
