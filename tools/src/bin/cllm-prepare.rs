//! cllm-prepare: text in, token shards out.
//!
//! Inputs (files, directories, globs; plain text or JSONL) are cleaned into documents, tokenized
//! (a BPE trained here with `--vocab-size`, or `--tokenizer gpt2|FILE`) on the sphere workers, and
//! written as llm.c shards `train_NNNNNN.bin` / `val_NNNNNN.bin` with the end-of-text token before
//! each document, the tokenizer file beside them. The output is the same whatever the thread count.

use anyhow::{bail, Context, Result};
use clap::Parser;
use cllm_engine::clean::{clean_inputs, CleanOptions, InputFormat};
use cllm_engine::data::encode::{count_words, encode_documents};
use cllm_engine::data::{shard_set_files, write_shard_set, ShardSetConfig, MAX_SHARD_TOKENS};
use cllm_engine::spheres::Spheres;
use cllm_engine::tokenizer::{Tokenizer, ENDOFTEXT};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::time::Instant;

/// The tokenizer file written beside the shards.
const TOKENIZER_FILE: &str = "tokenizer.json";

#[derive(Parser, Debug)]
#[command(
    name = "cllm-prepare",
    about = "Clean and tokenize text into llm.c token shards"
)]
struct Args {
    /// Text files, directories or glob patterns. A file holding a NUL byte is binary, not text:
    /// it is skipped and named in the cleaning report.
    #[arg(required = true)]
    inputs: Vec<String>,
    /// Output directory for the shards and the tokenizer file.
    #[arg(long)]
    out: PathBuf,
    /// Train a byte-level BPE tokenizer of this many tokens on the cleaned input.
    #[arg(long, conflicts_with = "tokenizer")]
    vocab_size: Option<usize>,
    /// Use GPT-2's tokenizer (`gpt2`) or a cllm tokenizer file.
    #[arg(long)]
    tokenizer: Option<String>,
    /// Extra special tokens for a trained tokenizer (after <|endoftext|>), e.g. --special '<pad>'.
    #[arg(long = "special")]
    specials: Vec<String>,
    /// Inputs are JSONL; take each line's text from this field.
    #[arg(long)]
    jsonl_field: Option<String>,
    /// No cleaning: each input file is exactly one document, as read.
    #[arg(long)]
    raw: bool,
    /// NFKC instead of NFC normalisation.
    #[arg(long)]
    nfkc: bool,
    /// Lowercase everything.
    #[arg(long)]
    lowercase: bool,
    /// Invalid UTF-8 is an error (default: replaced with U+FFFD and counted).
    #[arg(long)]
    strict: bool,
    /// Drop documents shorter than this many characters after cleaning.
    #[arg(long, default_value_t = 16)]
    min_chars: usize,
    /// Fraction of the token stream (at its end) written as validation shards.
    #[arg(long, default_value_t = 0.05)]
    val_fraction: f64,
    /// Tokens per shard.
    #[arg(long, default_value_t = 100_000_000)]
    shard_tokens: usize,
    /// Worker threads (default: one per allowed core, or CLLM_THREADS).
    #[arg(long)]
    threads: Option<usize>,
}

fn main() {
    cllm_drivers::restore_sigpipe();
    cllm_drivers::exit_on_error(run(Args::parse()));
}

/// The `--special` tokens to train with, checked: none empty, none given twice. `<|endoftext|>`
/// is always the first special token, so naming it is a warning and it is left out.
fn special_tokens(specials: &[String]) -> Result<Vec<&str>> {
    let mut out: Vec<&str> = Vec::new();
    for s in specials {
        if s.is_empty() {
            bail!("--special '': a special token needs at least one character; drop the empty --special");
        }
        if s == ENDOFTEXT {
            eprintln!(
                "warning: --special {ENDOFTEXT}: it is always the first special token; \
                 ignoring the extra one"
            );
        } else if out.contains(&s.as_str()) {
            bail!("--special {s:?} is given twice; give each special token once");
        } else {
            out.push(s);
        }
    }
    Ok(out)
}

fn run(args: Args) -> Result<()> {
    cllm_engine::kernels::isa::init()?;
    let start = Instant::now();
    if args.vocab_size.is_none() && args.tokenizer.is_none() {
        bail!("say which tokenizer: --vocab-size N to train one, or --tokenizer gpt2|FILE");
    }
    if !args.specials.is_empty() && args.vocab_size.is_none() {
        bail!("--special adds tokens to a tokenizer cllm-prepare trains: it needs --vocab-size, not --tokenizer");
    }
    let specials = special_tokens(&args.specials)?;
    // The output settings, checked before the cleaning, training and encoding they would follow.
    if !(0.0..1.0).contains(&args.val_fraction) {
        bail!("--val-fraction {} is outside [0, 1)", args.val_fraction);
    }
    if !(1..=MAX_SHARD_TOKENS).contains(&args.shard_tokens) {
        bail!(
            "--shard-tokens {} is outside 1 ..= {MAX_SHARD_TOKENS}",
            args.shard_tokens
        );
    }
    if args.out.exists() && !args.out.is_dir() {
        bail!(
            "--out {} is not a directory; name a new or existing directory",
            args.out.display()
        );
    }
    let (tree, warnings, _) = cllm_drivers::threads_plan(args.threads)?;
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    let spheres = Spheres::new(&tree).context("starting the sphere workers")?;

    let opts = if args.raw {
        CleanOptions::raw()
    } else {
        CleanOptions {
            nfkc: args.nfkc,
            lowercase: args.lowercase,
            strict: args.strict,
            min_chars: args.min_chars,
            ..CleanOptions::default()
        }
    };
    let format = match &args.jsonl_field {
        Some(field) => InputFormat::Jsonl {
            field: field.clone(),
        },
        None => InputFormat::Text,
    };
    // --out may lie inside an input directory (or be one): `corpus --out corpus/shards` is a
    // natural layout, and a second run would read the first run's shards, tokenizer file and
    // staging directory as text. Rather than refuse that layout, the input walk leaves out
    // exactly what this run replaces in --out; any other file there is the user's and is read.
    let mut skip = shard_set_files(&args.out)?;
    skip.push(args.out.join(TOKENIZER_FILE));
    let (docs, report) = clean_inputs(&args.inputs, &skip, &format, &opts)?;
    eprintln!("{report}");
    let texts: Vec<&str> = docs
        .iter()
        .map(|d| d.text.as_str())
        .filter(|t| !t.is_empty())
        .collect();
    let total_bytes: usize = texts.iter().map(|t| t.len()).sum();

    let tokenizer = match (&args.tokenizer, args.vocab_size) {
        (Some(name), _) if name == "gpt2" => Tokenizer::gpt2_builtin(),
        (Some(path), _) => Tokenizer::load(path.as_ref())?,
        (None, Some(vocab)) => {
            let t = Instant::now();
            let tok = count_words(&spheres, &texts)?.train(vocab, &specials)?;
            eprintln!(
                "trained a {}-token BPE in {:.1} s",
                tok.vocab_size(),
                t.elapsed().as_secs_f64()
            );
            if tok.vocab_size() < vocab {
                eprintln!(
                    "note: the input has no more merges to learn: {} tokens, not the {vocab} asked for",
                    tok.vocab_size()
                );
            }
            tok
        }
        (None, None) => unreachable!("checked above"),
    };

    let bar = ProgressBar::new(total_bytes as u64);
    bar.set_style(ProgressStyle::with_template("encoding {bar:30} {bytes}/{total_bytes} [{elapsed_precise} < {eta_precise}] {bytes_per_sec}").expect("a valid template"));
    let t = Instant::now();
    let encoded = encode_documents(&spheres, &tokenizer, &texts, &|done| {
        bar.set_position(done as u64)
    })?;
    bar.finish_and_clear();
    let secs = t.elapsed().as_secs_f64();
    eprintln!(
        "encoded {} documents, {:.1} MB in {secs:.2} s ({:.1} MB/s) on {} workers",
        texts.len(),
        total_bytes as f64 / 1e6,
        total_bytes as f64 / 1e6 / secs,
        spheres.count()
    );

    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let cfg = ShardSetConfig {
        vocab_size: tokenizer.vocab_size(),
        shard_tokens: args.shard_tokens,
        eot: tokenizer.eot_token(),
        val_fraction: args.val_fraction,
    };
    // The tokenizer is published with the shards (see `write_shard_set`), so the directory never
    // pairs shards with another set's tokenizer.
    let tokenizer_json = tokenizer.to_json();
    let files = [(TOKENIZER_FILE, tokenizer_json.as_bytes())];
    let summary = write_shard_set(&args.out, &encoded, &cfg, &files)?;
    if summary.replaced + summary.removed > 0 {
        eprintln!(
            "{}: replaced {} and removed {} shard file(s) of the earlier shard set there",
            args.out.display(),
            summary.replaced,
            summary.removed
        );
    }
    for (path, n) in summary.train.iter().chain(&summary.val) {
        println!("{}: {n} tokens", path.display());
    }
    println!(
        "{}: {} tokens, vocabulary {}, in {:.1} s",
        args.out.display(),
        summary
            .train
            .iter()
            .chain(&summary.val)
            .map(|(_, n)| n)
            .sum::<usize>(),
        tokenizer.vocab_size(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
