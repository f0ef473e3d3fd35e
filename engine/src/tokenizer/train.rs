//! Training a byte-level BPE vocabulary.
//!
//! 1. Text is split into GPT-2 pre-token pieces and each distinct piece ("word") is counted
//!    ([`BpeTrainer::add_text`]; trainers fed on different threads combine with
//!    [`BpeTrainer::absorb`]).
//! 2. Every word starts as its bytes (byte `b` is token `b`). The count of an adjacent pair of
//!    tokens is the sum of the counts of the words it occurs in, once per occurrence.
//! 3. Repeatedly the most frequent pair is merged into a new token — on equal counts the
//!    smallest (left id, right id), so training is deterministic — in every word that has it,
//!    left to right without overlap (`a a a` becomes `aa a`).
//!
//! Pair counts are updated incrementally: only the words holding the merged pair are rewritten
//! (each pair keeps the list of words it may occur in), and only those words' pairs change. The
//! most frequent pair comes from a max-heap with lazy deletion: counts only ever grow for pairs
//! holding the token just made, and those are pushed after each merge; an entry popped with a
//! count above the pair's current one is pushed back with the current count.
//!
//! A merge whose bytes already form a token (possible when pieces merged in different orders)
//! rewrites the words with that token and adds no new one: encoding looks up pairs by their
//! concatenated bytes, so it joins them the same way.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::path::Path;

use rustc_hash::FxHashMap;

use super::bpe::pair_key;
use super::pretokenize::PreTokenizer;
use super::{Origin, Tokenizer, TokenizerError, ENDOFTEXT};

/// Counts pre-token words of a corpus, then learns merges from them.
#[derive(Clone, Debug)]
pub struct BpeTrainer {
    pre: PreTokenizer,
    counts: FxHashMap<Box<str>, u64>,
}

impl Default for BpeTrainer {
    fn default() -> Self {
        Self::new()
    }
}

impl BpeTrainer {
    /// A trainer that has seen no text.
    pub fn new() -> BpeTrainer {
        BpeTrainer {
            pre: PreTokenizer::new(),
            counts: FxHashMap::default(),
        }
    }

    /// Counts the pre-token words of one document (documents are split independently).
    pub fn add_text(&mut self, text: &str) {
        let counts = &mut self.counts;
        self.pre
            .for_each_piece(text, |piece| match counts.get_mut(piece) {
                Some(c) => *c += 1,
                None => {
                    counts.insert(Box::from(piece), 1);
                }
            });
    }

    /// Adds the counts of `other` (e.g. a trainer fed on another thread).
    pub fn absorb(&mut self, other: BpeTrainer) {
        for (word, c) in other.counts {
            *self.counts.entry(word).or_insert(0) += c;
        }
    }

    /// Number of distinct words counted so far.
    pub fn distinct_words(&self) -> usize {
        self.counts.len()
    }

    /// Learns merges up to `vocab_size` tokens in all: 256 byte tokens, the merges, then the
    /// special tokens `<|endoftext|>` followed by `extra_specials` (a repeated
    /// `<|endoftext|>` is ignored). A corpus with too few distinct pairs gives a smaller
    /// vocabulary: check [`Tokenizer::vocab_size`].
    pub fn train(
        self,
        vocab_size: usize,
        extra_specials: &[&str],
    ) -> Result<Tokenizer, TokenizerError> {
        let mut specials = vec![ENDOFTEXT.to_string()];
        for &s in extra_specials {
            if s != ENDOFTEXT {
                specials.push(s.to_string());
            }
        }
        let fixed = 256 + specials.len();
        if vocab_size < fixed {
            return Err(TokenizerError::Train(format!(
                "a vocabulary of {vocab_size} cannot hold the 256 byte tokens and {} special \
                 tokens; ask for at least {fixed}",
                specials.len()
            )));
        }
        let merges = learn_merges(self.counts, vocab_size - fixed);
        let mut byte_ids = [0u32; 256];
        for (b, id) in byte_ids.iter_mut().enumerate() {
            *id = b as u32;
        }
        Tokenizer::from_parts(
            byte_ids,
            merges,
            specials,
            &Origin {
                path: Path::new("(training)"),
                fix: "give each special token once, and none empty",
            },
        )
    }
}

impl Tokenizer {
    /// Trains a byte-level BPE tokenizer of `vocab_size` tokens on `texts` (each one document);
    /// see [`BpeTrainer::train`] for the layout and the specials.
    pub fn train<'a>(
        texts: impl IntoIterator<Item = &'a str>,
        vocab_size: usize,
        extra_specials: &[&str],
    ) -> Result<Tokenizer, TokenizerError> {
        let mut trainer = BpeTrainer::new();
        for t in texts {
            trainer.add_text(t);
        }
        trainer.train(vocab_size, extra_specials)
    }
}

/// Up to `max_merges` merges learned from the word counts (ids: bytes are 0..256, merge `i`
/// makes `256 + i`).
fn learn_merges(counts: FxHashMap<Box<str>, u64>, max_merges: usize) -> Vec<(u32, u32)> {
    // Words in a fixed order (by bytes) so that nothing depends on the hash map's order.
    let mut entries: Vec<(Box<str>, u64)> = counts.into_iter().collect();
    entries.sort_unstable();
    let mut words: Vec<Vec<u32>> = Vec::with_capacity(entries.len());
    let mut wcount: Vec<i64> = Vec::with_capacity(entries.len());
    for (w, c) in &entries {
        words.push(w.bytes().map(u32::from).collect());
        wcount.push(*c as i64);
    }
    drop(entries);

    let mut pair_counts: FxHashMap<u64, i64> = FxHashMap::default();
    let mut pair_words: FxHashMap<u64, Vec<u32>> = FxHashMap::default();
    for (w, sym) in words.iter().enumerate() {
        for p in sym.windows(2) {
            let key = pair_key(p[0], p[1]);
            *pair_counts.entry(key).or_insert(0) += wcount[w];
            let list = pair_words.entry(key).or_default();
            if list.last() != Some(&(w as u32)) {
                list.push(w as u32);
            }
        }
    }
    let mut heap: BinaryHeap<(i64, Reverse<u64>)> =
        pair_counts.iter().map(|(&k, &c)| (c, Reverse(k))).collect();

    let mut token_bytes: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
    let mut token_of: FxHashMap<Vec<u8>, u32> = token_bytes
        .iter()
        .enumerate()
        .map(|(i, b)| (b.clone(), i as u32))
        .collect();
    let mut merges = Vec::with_capacity(max_merges);
    let mut rewritten: Vec<u32> = Vec::new();
    let mut grown: Vec<u64> = Vec::new();

    while merges.len() < max_merges {
        let Some((count, Reverse(key))) = heap.pop() else {
            break;
        };
        let now = pair_counts.get(&key).copied().unwrap_or(0);
        if now != count {
            if now > 0 {
                heap.push((now, Reverse(key)));
            }
            continue;
        }
        let (a, b) = ((key >> 32) as u32, key as u32);
        let mut joined = token_bytes[a as usize].clone();
        joined.extend_from_slice(&token_bytes[b as usize]);
        let new = match token_of.get(&joined) {
            Some(&existing) => existing,
            None => {
                let id = token_bytes.len() as u32;
                token_of.insert(joined.clone(), id);
                token_bytes.push(joined);
                merges.push((a, b));
                id
            }
        };

        let mut list = pair_words.remove(&key).unwrap_or_default();
        list.sort_unstable();
        list.dedup();
        grown.clear();
        for &w in &list {
            let sym = &words[w as usize];
            if !sym.windows(2).any(|p| p[0] == a && p[1] == b) {
                continue;
            }
            let c = wcount[w as usize];
            for p in sym.windows(2) {
                *pair_counts
                    .get_mut(&pair_key(p[0], p[1]))
                    .expect("counted pair") -= c;
            }
            rewritten.clear();
            let mut i = 0;
            while i < sym.len() {
                if i + 1 < sym.len() && sym[i] == a && sym[i + 1] == b {
                    rewritten.push(new);
                    i += 2;
                } else {
                    rewritten.push(sym[i]);
                    i += 1;
                }
            }
            for p in rewritten.windows(2) {
                let k = pair_key(p[0], p[1]);
                *pair_counts.entry(k).or_insert(0) += c;
                if p[0] == new || p[1] == new {
                    let l = pair_words.entry(k).or_default();
                    if l.last() != Some(&w) {
                        l.push(w);
                    }
                    grown.push(k);
                }
            }
            let sym = &mut words[w as usize];
            sym.clear();
            sym.extend_from_slice(&rewritten);
        }
        pair_counts.remove(&key);
        grown.sort_unstable();
        grown.dedup();
        for &k in &grown {
            let c = pair_counts[&k];
            if c > 0 {
                heap.push((c, Reverse(k)));
            }
        }
    }
    merges
}
