//! `cllm-bench tokenize` and `cllm-bench loader`: the data pipeline's throughput.

use anyhow::{Context, Result};
use cllm_engine::clean::{clean_inputs, CleanOptions, InputFormat};
use cllm_engine::data::encode::encode_documents;
use cllm_engine::data::{write_shard, Loader, LoaderConfig, TokenSource};
use cllm_engine::spheres::Spheres;
use cllm_engine::tokenizer::Tokenizer;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// GPT-2 encoding throughput of the documents under `input` (each file one document, as read).
pub struct TokenizeResult {
    pub bytes: usize,
    pub tokens: usize,
    /// Median seconds per pass over all documents.
    pub median_s: f64,
}

pub fn tokenize(input: &str, spheres: Option<&Spheres>, passes: usize) -> Result<TokenizeResult> {
    let (docs, _) = clean_inputs(
        &[input.to_string()],
        &InputFormat::Text,
        &CleanOptions::raw(),
    )
    .with_context(|| format!("reading {input}"))?;
    let texts: Vec<&str> = docs.iter().map(|d| d.text.as_str()).collect();
    let tokenizer = Tokenizer::gpt2_builtin();
    let bytes = texts.iter().map(|t| t.len()).sum();
    let mut times = Vec::with_capacity(passes);
    let mut tokens = 0;
    for _ in 0..passes.max(1) {
        let t = Instant::now();
        tokens = match spheres {
            Some(s) => encode_documents(s, &tokenizer, &texts, &|_| {})?
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
        };
        times.push(t.elapsed().as_secs_f64());
    }
    Ok(TokenizeResult {
        bytes,
        tokens,
        median_s: crate::median(&mut times),
    })
}

/// The loader's throughput serving shuffled (B, T) windows from page-cache u16 shards: returns
/// (GB/s of input tokens served as u32, µs per batch). The shards (4 × 8 Mi tokens) are written
/// to a temporary directory and removed afterwards.
pub fn loader(batch: usize, seq: usize, batches: usize) -> Result<(f64, f64)> {
    let dir = std::env::temp_dir().join(format!("cllm-bench-loader-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = (|| {
        let mut paths: Vec<PathBuf> = Vec::new();
        for s in 0..4u32 {
            let tokens: Vec<u32> = (0..8u32 << 20)
                .map(|i| (i.wrapping_mul(2654435761) ^ s) % 50257)
                .collect();
            let path = dir.join(format!("train_{s:06}.bin"));
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
        let (mut x, mut y) = (vec![0u32; batch * seq], vec![0u32; batch * seq]);
        for _ in 0..batches.min(100) {
            loader.next_batch_into(&mut x, &mut y)?;
        }
        let t = Instant::now();
        for _ in 0..batches {
            loader.next_batch_into(&mut x, &mut y)?;
        }
        let s = t.elapsed().as_secs_f64();
        Ok::<_, anyhow::Error>((
            (batches * batch * seq * 4) as f64 / s / 1e9,
            s / batches as f64 * 1e6,
        ))
    })();
    remove_dir(&dir);
    result
}

fn remove_dir(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
}
