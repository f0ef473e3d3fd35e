//! Byte-level BPE: GPT-2's vocabulary (ids identical to tiktoken's r50k_base) and vocabularies
//! trained here, both with GPT-2's pre-tokenization.
//!
//! - [`Tokenizer::gpt2`] imports `encoder.json` + `vocab.bpe`; [`Tokenizer::gpt2_builtin`] uses
//!   the copies shipped in `engine/assets/gpt2` (MIT, see the LICENSE there), offline.
//! - [`Tokenizer::train`] (or [`BpeTrainer`]) learns merges from text to a target vocabulary size.
//! - [`Tokenizer::save`] / [`Tokenizer::load`]: our own versioned JSON file (see [`mod@file`]).
//!
//! Ids: the 256 byte tokens take ids 0..256 (GPT-2 orders them by its byte-to-unicode map,
//! trained vocabularies by byte value), merge `i` creates id `256 + i`, and the special tokens
//! follow the merges; `<|endoftext|>` is always one of them. A token's id is its BPE rank.
//!
//! Every byte string is the concatenation of byte tokens, so `decode(encode(s)) == s` for any
//! text, and any byte string decodes from its byte tokens. Special tokens are only produced by
//! [`Tokenizer::encode_with_special`] for the names it is allowed; [`Tokenizer::encode_ordinary`]
//! encodes `<|endoftext|>` as the text it is.
//!
//! `Tokenizer` is `Send + Sync` and encoding takes `&self`: threads share one tokenizer.

mod bpe;
mod error;
pub mod file;
mod gpt2;
mod pretokenize;
mod train;

use std::path::Path;

use rustc_hash::FxHashMap;

pub use error::TokenizerError;
pub use train::BpeTrainer;

use bpe::{pair_key, Pairs};
use pretokenize::PreTokenizer;

/// The most bytes all tokens together may spell. GPT-2's 50,257 tokens spell about 320 KiB;
/// the limit keeps a damaged merge list from asking for gigabytes.
const MAX_TOKEN_BYTES: usize = 256 << 20;

/// The end-of-text special token every tokenizer here has.
pub const ENDOFTEXT: &str = "<|endoftext|>";

/// Which special tokens [`Tokenizer::encode_with_special`] recognises in the text.
#[derive(Clone, Copy, Debug)]
pub enum AllowedSpecial<'a> {
    /// None: the same as [`Tokenizer::encode_ordinary`].
    None,
    /// Every special token of the tokenizer.
    All,
    /// Only these (each must be a special token of the tokenizer).
    Only(&'a [&'a str]),
}

/// A byte-level BPE tokenizer with GPT-2's pre-tokenization.
#[derive(Clone)]
pub struct Tokenizer {
    /// Token id of each byte value.
    byte_ids: [u32; 256],
    /// Merge `i`: the two tokens whose concatenation is token `256 + i`.
    merges: Vec<(u32, u32)>,
    /// Special token texts; special `j` has id `256 + merges.len() + j`.
    specials: Vec<String>,
    /// Bytes of every token (vocab_size + 1 offsets into `bytes`).
    offsets: Vec<u32>,
    bytes: Vec<u8>,
    /// Bytes of every non-special token to its id.
    vocab: FxHashMap<Box<[u8]>, u32>,
    /// Every split of every merged token (see [`bpe`]).
    pairs: Pairs,
    eot: u32,
    pre: PreTokenizer,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("merges", &self.merges.len())
            .field("specials", &self.specials)
            .finish()
    }
}

/// Where the parts of a tokenizer came from, for error messages while building one.
pub(crate) struct Origin<'a> {
    pub(crate) path: &'a Path,
    pub(crate) fix: &'static str,
}

impl Tokenizer {
    /// Builds the tables from byte ids, merges and specials, checking that they are consistent.
    pub(crate) fn from_parts(
        byte_ids: [u32; 256],
        merges: Vec<(u32, u32)>,
        specials: Vec<String>,
        origin: &Origin<'_>,
    ) -> Result<Tokenizer, TokenizerError> {
        let invalid = |field: String, problem: String| TokenizerError::Invalid {
            path: origin.path.to_path_buf(),
            field,
            problem,
            fix: origin.fix,
        };
        let mut seen = [false; 256];
        for (b, &id) in byte_ids.iter().enumerate() {
            if id >= 256 || std::mem::replace(&mut seen[id as usize], true) {
                return Err(invalid(
                    format!("byte_ids[{b}]"),
                    format!("is {id}: the byte ids must be each of 0..256 once"),
                ));
            }
        }
        let vocab_size = 256 + merges.len() + specials.len();
        if vocab_size > u32::MAX as usize / 2 {
            return Err(invalid(
                "merges".into(),
                format!("has {} entries", merges.len()),
            ));
        }
        let mut offsets = vec![0u32; 257];
        let mut bytes = Vec::new();
        let mut by_id = [0u8; 256];
        for (b, &id) in byte_ids.iter().enumerate() {
            by_id[id as usize] = b as u8;
        }
        for (id, &b) in by_id.iter().enumerate() {
            bytes.push(b);
            offsets[id + 1] = bytes.len() as u32;
        }
        let mut vocab: FxHashMap<Box<[u8]>, u32> = FxHashMap::default();
        vocab.reserve(256 + merges.len());
        for id in 0..256u32 {
            vocab.insert(Box::from(&bytes[id as usize..id as usize + 1]), id);
        }
        for (i, &(a, b)) in merges.iter().enumerate() {
            let id = 256 + i as u32;
            if a >= id || b >= id {
                return Err(invalid(
                    format!("merges[{i}]"),
                    format!(
                        "is [{a}, {b}]: a merge may only join tokens made before it (ids < {id})"
                    ),
                ));
            }
            let start = bytes.len();
            let (sa, ea) = (
                offsets[a as usize] as usize,
                offsets[a as usize + 1] as usize,
            );
            let (sb, eb) = (
                offsets[b as usize] as usize,
                offsets[b as usize + 1] as usize,
            );
            // Checked before copying: each merge can double a token's length, so a few dozen
            // lines of a damaged file could otherwise ask for gigabytes.
            if start + (ea - sa) + (eb - sb) > MAX_TOKEN_BYTES {
                return Err(invalid(
                    format!("merges[{i}]"),
                    format!(
                        "is [{a}, {b}], which takes the tokens' bytes past {} MiB in all, \
                         far more than a real vocabulary holds",
                        MAX_TOKEN_BYTES >> 20
                    ),
                ));
            }
            bytes.extend_from_within(sa..ea);
            bytes.extend_from_within(sb..eb);
            offsets.push(bytes.len() as u32);
            let token: Box<[u8]> = Box::from(&bytes[start..]);
            if let Some(prev) = vocab.insert(token, id) {
                return Err(invalid(
                    format!("merges[{i}]"),
                    format!("is [{a}, {b}], which makes the same bytes as token {prev}"),
                ));
            }
        }
        let mut eot = None;
        for (j, text) in specials.iter().enumerate() {
            if text.is_empty() || specials[..j].contains(text) {
                return Err(invalid(
                    format!("specials[{j}]"),
                    format!("is {text:?}: special tokens must be non-empty and distinct"),
                ));
            }
            if text == ENDOFTEXT {
                eot = Some((256 + merges.len() + j) as u32);
            }
            bytes.extend_from_slice(text.as_bytes());
            offsets.push(bytes.len() as u32);
        }
        let eot = eot
            .ok_or_else(|| invalid("specials".into(), format!("does not contain {ENDOFTEXT:?}")))?;
        // Every split of every merged token into two tokens.
        let mut pairs = Pairs::default();
        pairs.reserve(merges.len() * 2);
        for id in 256..256 + merges.len() as u32 {
            let t = &bytes[offsets[id as usize] as usize..offsets[id as usize + 1] as usize];
            for k in 1..t.len() {
                if let (Some(&a), Some(&b)) = (vocab.get(&t[..k]), vocab.get(&t[k..])) {
                    pairs.insert(pair_key(a, b), id);
                }
            }
        }
        Ok(Tokenizer {
            byte_ids,
            merges,
            specials,
            offsets,
            bytes,
            vocab,
            pairs,
            eot,
            pre: PreTokenizer::new(),
        })
    }

    /// Number of tokens, special tokens included (ids are `0..vocab_size()`).
    pub fn vocab_size(&self) -> usize {
        self.offsets.len() - 1
    }

    /// The id of `<|endoftext|>`.
    pub fn eot_token(&self) -> u32 {
        self.eot
    }

    /// The special tokens and their ids.
    pub fn special_tokens(&self) -> impl Iterator<Item = (&str, u32)> + '_ {
        let first = 256 + self.merges.len() as u32;
        self.specials
            .iter()
            .enumerate()
            .map(move |(j, s)| (s.as_str(), first + j as u32))
    }

    /// The id of special token `name`, if this tokenizer has it.
    pub fn special_token(&self, name: &str) -> Option<u32> {
        self.special_tokens()
            .find(|(s, _)| *s == name)
            .map(|(_, id)| id)
    }

    /// The merges: merge `i` joins the two tokens into token `256 + i`.
    pub fn merges(&self) -> &[(u32, u32)] {
        &self.merges
    }

    /// The token id of each byte value.
    pub fn byte_ids(&self) -> &[u32; 256] {
        &self.byte_ids
    }

    /// The bytes of token `id` (a special token's text), or `None` past the vocabulary.
    pub fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        let i = id as usize;
        (i < self.vocab_size())
            .then(|| &self.bytes[self.offsets[i] as usize..self.offsets[i + 1] as usize])
    }

    /// The id of the non-special token whose bytes are `bytes`.
    pub fn token_id(&self, bytes: &[u8]) -> Option<u32> {
        self.vocab.get(bytes).copied()
    }

    /// Encodes `text` with no special tokens: `<|endoftext|>` in the text is ordinary text.
    pub fn encode_ordinary(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 4 + 1);
        self.encode_ordinary_into(text, &mut out);
        out
    }

    /// Appends the tokens of `text` (no special tokens) to `out`. Allocates nothing except
    /// what `out` needs to grow (and scratch for a single pre-token piece over 64 bytes).
    pub fn encode_ordinary_into(&self, text: &str, out: &mut Vec<u32>) {
        let s = text.as_bytes();
        let mut pos = 0;
        while pos < s.len() {
            let end = self.pre.next_piece(s, pos);
            let piece = &s[pos..end];
            match self.vocab.get(piece) {
                Some(&id) => out.push(id),
                None => bpe::merge_piece(&self.pairs, &self.byte_ids, piece, out),
            }
            pos = end;
        }
    }

    /// Encodes `text`, turning the `allowed` special tokens found in it into their ids; the
    /// text between them is encoded as by [`encode_ordinary`](Self::encode_ordinary). Where
    /// two allowed specials start at the same place, the longer wins.
    pub fn encode_with_special(
        &self,
        text: &str,
        allowed: AllowedSpecial<'_>,
    ) -> Result<Vec<u32>, TokenizerError> {
        let mut out = Vec::with_capacity(text.len() / 4 + 1);
        self.encode_with_special_into(text, allowed, &mut out)?;
        Ok(out)
    }

    /// [`encode_with_special`](Self::encode_with_special), appending to `out`.
    pub fn encode_with_special_into(
        &self,
        text: &str,
        allowed: AllowedSpecial<'_>,
        out: &mut Vec<u32>,
    ) -> Result<(), TokenizerError> {
        let specials: Vec<(&str, u32)> = match allowed {
            AllowedSpecial::None => Vec::new(),
            AllowedSpecial::All => self.special_tokens().collect(),
            AllowedSpecial::Only(names) => names
                .iter()
                .map(|&name| {
                    self.special_token(name)
                        .map(|id| (name, id))
                        .ok_or_else(|| TokenizerError::UnknownSpecial {
                            name: name.to_string(),
                            known: self.specials.join(", "),
                        })
                })
                .collect::<Result<_, _>>()?,
        };
        let mut rest = text;
        loop {
            // The earliest (then longest) allowed special in `rest`.
            let mut found: Option<(usize, &str, u32)> = None;
            for &(name, id) in &specials {
                if let Some(at) = rest.find(name) {
                    let better = match found {
                        None => true,
                        Some((f, n, _)) => at < f || (at == f && name.len() > n.len()),
                    };
                    if better {
                        found = Some((at, name, id));
                    }
                }
            }
            match found {
                Some((at, name, id)) => {
                    self.encode_ordinary_into(&rest[..at], out);
                    out.push(id);
                    rest = &rest[at + name.len()..];
                }
                None => {
                    self.encode_ordinary_into(rest, out);
                    return Ok(());
                }
            }
        }
    }

    /// The bytes of `ids` (special tokens as their text).
    pub fn decode(&self, ids: &[u32]) -> Result<Vec<u8>, TokenizerError> {
        let mut out = Vec::with_capacity(ids.len() * 4);
        self.decode_into(ids, &mut out)?;
        Ok(out)
    }

    /// Appends the bytes of `ids` to `out`.
    pub fn decode_into(&self, ids: &[u32], out: &mut Vec<u8>) -> Result<(), TokenizerError> {
        for &id in ids {
            let bytes = self.token_bytes(id).ok_or(TokenizerError::UnknownToken {
                id,
                vocab_size: self.vocab_size(),
            })?;
            out.extend_from_slice(bytes);
        }
        Ok(())
    }

    /// The text of `ids`, with invalid UTF-8 (e.g. a character cut between tokens) replaced by
    /// U+FFFD.
    pub fn decode_to_string_lossy(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        let bytes = self.decode(ids)?;
        Ok(match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
    }

    /// Calls `f` with each GPT-2 pre-token piece of `text`, in order (what BPE is applied to).
    pub fn pre_tokenize<'t>(&self, text: &'t str, f: impl FnMut(&'t str)) {
        self.pre.for_each_piece(text, f)
    }
}

/// GPT-2 pre-token pieces of `text`, in order (the pieces [`Tokenizer`] merges).
pub fn gpt2_pieces(text: &str) -> Vec<&str> {
    let mut v = Vec::new();
    PreTokenizer::new().for_each_piece(text, |p| v.push(p));
    v
}

/// Single-thread encoding throughput, measured by [`time_encode`].
#[derive(Clone, Copy, Debug)]
pub struct EncodeTiming {
    /// Bytes of text encoded per pass.
    pub bytes: usize,
    /// Tokens produced per pass.
    pub tokens: usize,
    /// Median seconds per pass.
    pub median_s: f64,
}

impl EncodeTiming {
    /// Throughput in MB (10^6 bytes of text) per second.
    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / self.median_s / 1e6
    }
}

/// Encodes every document of `docs` with [`Tokenizer::encode_ordinary_into`] on this thread,
/// `passes` times (at least once), and reports the median pass: what `cllm-bench tokenize`
/// prints.
pub fn time_encode(tokenizer: &Tokenizer, docs: &[&str], passes: usize) -> EncodeTiming {
    let bytes = docs.iter().map(|d| d.len()).sum();
    let mut out = Vec::with_capacity(bytes / 3);
    let mut times = Vec::with_capacity(passes.max(1));
    let mut tokens = 0;
    for _ in 0..passes.max(1) {
        tokens = 0;
        let t = std::time::Instant::now();
        for d in docs {
            out.clear();
            tokenizer.encode_ordinary_into(d, &mut out);
            tokens += out.len();
        }
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    EncodeTiming {
        bytes,
        tokens,
        median_s: times[times.len() / 2],
    }
}
