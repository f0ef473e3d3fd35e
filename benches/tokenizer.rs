//! Criterion benchmarks of the tokenizer, side by side with its peers in one run.
//!
//! - `encode_gpt2`: the whole Shakespeare corpus (42 files, ~5.3 MB) encoded with GPT-2's
//!   vocabulary on one thread by cllm and by tiktoken-rs (r50k_base), labelled in bytes of text.
//!   The ids are checked equal before timing.
//! - `train_bpe`: an 8,192-token byte-level BPE trained on the same corpus (Hugging Face
//!   `tokenizers` on the same text: scripts/peers/hf_tokenizers_train.py).
//!
//! The corpus is `$CLLM_SHARED/corpora/shakespeare`, or `../shared` beside the workspace.
//! `cargo bench --bench tokenizer` (add `-- encode_gpt2` or `-- train_bpe` for one group).

use std::path::PathBuf;

use cllm::engine::tokenizer::Tokenizer;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn corpus() -> Vec<String> {
    let shared = match std::env::var_os("CLLM_SHARED") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared"),
    };
    let dir = shared.join("corpora/shakespeare");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}; set CLLM_SHARED", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .collect()
}

fn bench_encode(c: &mut Criterion) {
    let docs = corpus();
    let bytes: usize = docs.iter().map(String::len).sum();
    let ours = Tokenizer::gpt2_builtin();
    let theirs = tiktoken_rs::r50k_base().expect("tiktoken-rs's embedded r50k_base");
    let mut out = Vec::new();
    for d in &docs {
        out.clear();
        ours.encode_ordinary_into(d, &mut out);
        assert_eq!(
            out,
            theirs.encode_ordinary(d),
            "ids differ from tiktoken-rs"
        );
    }
    let mut g = c.benchmark_group("encode_gpt2");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function("cllm", |b| {
        b.iter(|| {
            let mut n = 0;
            for d in &docs {
                out.clear();
                ours.encode_ordinary_into(d, &mut out);
                n += out.len();
            }
            n
        })
    });
    g.bench_function("tiktoken-rs", |b| {
        b.iter(|| {
            docs.iter()
                .map(|d| theirs.encode_ordinary(d).len())
                .sum::<usize>()
        })
    });
    g.finish();
}

fn bench_train(c: &mut Criterion) {
    let docs = corpus();
    let bytes: usize = docs.iter().map(String::len).sum();
    let mut g = c.benchmark_group("train_bpe");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function("cllm_8192", |b| {
        b.iter(|| {
            let t = Tokenizer::train(docs.iter().map(String::as_str), 8192, &[]).expect("trains");
            assert_eq!(t.vocab_size(), 8192);
            t
        })
    });
    g.finish();
}

criterion_group!(benches, bench_encode, bench_train);
criterion_main!(benches);
