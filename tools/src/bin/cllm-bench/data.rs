//! `cllm-bench tokenize` and `cllm-bench loader`: the data pipeline's throughput.

use crate::{timed, Timing};
use anyhow::{Context, Result};
use cllm_engine::clean::{clean_inputs, CleanOptions, InputFormat};
use cllm_engine::data::encode::encode_documents;
use cllm_engine::data::{write_shard, Loader, LoaderConfig, TokenSource};
use cllm_engine::spheres::Spheres;
use cllm_engine::tokenizer::Tokenizer;
use std::path::PathBuf;

/// GPT-2 encoding throughput of a set of documents.
pub struct TokenizeResult {
    pub bytes: usize,
    pub tokens: usize,
    /// Every pass over all documents, in order.
    pub passes: Vec<Timing>,
    /// Median seconds per pass.
    pub median_s: f64,
}

/// Encode the documents under `input` (each file one document, as read); see [`tokenize_texts`].
pub fn tokenize(input: &str, spheres: Option<&Spheres>, passes: usize) -> Result<TokenizeResult> {
    let (docs, _) = clean_inputs(
        &[input.to_string()],
        &[],
        &InputFormat::Text,
        &CleanOptions::raw(),
    )
    .with_context(|| format!("reading {input}"))?;
    let texts: Vec<&str> = docs.iter().map(|d| d.text.as_str()).collect();
    tokenize_texts(&texts, spheres, passes)
}

/// Encode every document of `texts` with GPT-2's tokenizer, `passes` times (at least once): on
/// this thread, or on the workers of `spheres` (documents shared among them).
pub fn tokenize_texts(
    texts: &[&str],
    spheres: Option<&Spheres>,
    passes: usize,
) -> Result<TokenizeResult> {
    let tokenizer = Tokenizer::gpt2_builtin();
    let bytes = texts.iter().map(|t| t.len()).sum();
    let mut times = Vec::with_capacity(passes.max(1));
    let mut timings = Vec::with_capacity(passes.max(1));
    let mut tokens = 0;
    for _ in 0..passes.max(1) {
        let (n, t) = timed(|| -> Result<usize> {
            Ok(match spheres {
                Some(s) => encode_documents(s, &tokenizer, texts, &|_| {})?
                    .iter()
                    .map(Vec::len)
                    .sum(),
                None => {
                    let mut ids = Vec::new();
                    texts
                        .iter()
                        .map(|d| {
                            ids.clear();
                            tokenizer.encode_ordinary_into(d, &mut ids);
                            ids.len()
                        })
                        .sum()
                }
            })
        });
        tokens = n?;
        times.push(t.wall_s);
        timings.push(t);
    }
    Ok(TokenizeResult {
        bytes,
        tokens,
        passes: timings,
        median_s: crate::median(&mut times),
    })
}

/// Tokens in each of the four shards `cllm-bench loader` serves from (8 Mi: 64 MiB of u16 in all).
pub const LOADER_SHARD_TOKENS: usize = 8 << 20;

/// The loader serving shuffled (B, T) windows from page-cache u16 shards: the time of each of
/// `runs` (at least one) timed runs of `batches` batches, after `min(batches, 100)` untimed ones.
/// Four shards of `shard_tokens` tokens are written to a temporary directory, removed on every
/// way out (an error or a panic included); the batches are allocated before it is made.
pub fn loader(
    batch: usize,
    seq: usize,
    batches: usize,
    shard_tokens: usize,
    runs: usize,
) -> Result<Vec<Timing>> {
    let rows = batch
        .checked_mul(seq)
        .with_context(|| format!("batches of {batch} x {seq} tokens are too large to allocate"))?;
    let (mut x, mut y) = (vec![0u32; rows], vec![0u32; rows]);
    let dir = TempDir::create(
        std::env::temp_dir().join(format!("cllm-bench-loader-{}", std::process::id())),
    )?;
    let mut paths: Vec<PathBuf> = Vec::new();
    for s in 0..4u32 {
        let tokens: Vec<u32> = (0..shard_tokens as u32)
            .map(|i| (i.wrapping_mul(2654435761) ^ s) % 50257)
            .collect();
        let path = dir.0.join(format!("train_{s:06}.bin"));
        write_shard(&path, &tokens, 50257)?;
        paths.push(path);
    }
    let cfg = LoaderConfig {
        batch,
        seq,
        seed: 1,
        shuffle: true,
        vocab_size: None,
    };
    let mut loader = Loader::new(TokenSource::Shards(paths), cfg)?;
    for _ in 0..batches.min(100) {
        loader.next_batch_into(&mut x, &mut y)?;
    }
    let mut out = Vec::with_capacity(runs.max(1));
    for _ in 0..runs.max(1) {
        let (r, t) = timed(|| -> Result<()> {
            for _ in 0..batches {
                loader.next_batch_into(&mut x, &mut y)?;
            }
            Ok(())
        });
        r?;
        out.push(t);
    }
    Ok(out)
}

/// A directory made for this run, removed with everything in it when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn create(path: PathBuf) -> Result<TempDir> {
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
