//! Criterion benchmark of the data loader: batches served from page-cache shards.
//!
//! Throughput is labelled in bytes of tokens *served*: each (B, T) batch fills B·T u32 inputs and
//! B·T u32 targets, 2·B·T·4 bytes. The shards (u16 for a 50,257-token vocabulary, u32 for a
//! 128,256-token one) are written once to a temporary directory and read once before timing, so
//! they sit in the page cache; windows are shuffled, so every batch gathers B rows from random
//! places in 64 MiB of shards.

use cllm::engine::data::{write_shard, Loader, LoaderConfig, TokenSource};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// Tokens per shard and shards: 4 × 8 Mi tokens.
const SHARD_TOKENS: usize = 8 << 20;
const SHARDS: usize = 4;

fn bench_loader(c: &mut Criterion) {
    let mut g = c.benchmark_group("loader");
    for (label, vocab) in [("u16", 50_257u32), ("u32", 128_256u32)] {
        let dir = tempfile::tempdir().unwrap();
        let mut x = 0x9E37_79B9u32;
        for s in 0..SHARDS {
            let toks: Vec<u32> = (0..SHARD_TOKENS)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x % vocab
                })
                .collect();
            write_shard(
                dir.path().join(format!("train_{s:06}.bin")),
                &toks,
                vocab as usize,
            )
            .unwrap();
        }
        let pattern = dir
            .path()
            .join("train_*.bin")
            .to_string_lossy()
            .into_owned();
        // (B, T): the L=6 training benchmark's batch, and GPT-2 small's.
        for (b, t) in [(8usize, 256usize), (16, 1024)] {
            let cfg = LoaderConfig {
                batch: b,
                seq: t,
                seed: 1,
                shuffle: true,
                vocab_size: Some(vocab as usize),
            };
            // Opening checks every token against the vocabulary: that read warms the page cache.
            let mut loader = Loader::new(TokenSource::Glob(pattern.clone()), cfg).unwrap();
            let mut inputs = vec![0u32; b * t]; // (B, T)
            let mut targets = vec![0u32; b * t]; // (B, T)
            g.throughput(Throughput::Bytes((2 * b * t * 4) as u64));
            g.bench_function(format!("{label}_shards/B{b}_T{t}"), |bench| {
                bench.iter(|| loader.next_batch_into(&mut inputs, &mut targets).unwrap())
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench_loader);
criterion_main!(benches);
