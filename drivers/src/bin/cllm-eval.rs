//! cllm-eval: score hypotheses against references, one segment per line, and models on text.
//!
//! `bleu` is sacrebleu 2.6.0 with its defaults (`sacrebleu REF... -i HYP`); `rouge` is rouge-score
//! 0.1.2's ROUGE-1/2/L/Lsum, averaged over lines. Both read UTF-8 text, split on `\n` (a `\r` before
//! it is dropped), and pair hypothesis line i with reference line i. `generate-and-score` makes the
//! hypotheses: it continues each line of a prompt file with cllm-generate's options and scores the
//! continuations with both. `ppl` is a model's perplexity over token shards.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use cllm_drivers::generation::{
    beam_best, generate_text, load_model, model_files, Codec, GenOptions,
};
use cllm_drivers::{refuse_output_over_input, threads_plan, ShardsTokenizer};
use cllm_engine::eval::{bleu, rouge};
use serde_json::{json, Value};

#[derive(Parser, Debug)]
#[command(
    name = "cllm-eval",
    about = "Score text and models: BLEU (as sacrebleu) and ROUGE (as rouge-score) of hypotheses \
             against references, a model's perplexity over token shards, and BLEU and ROUGE of a \
             model's continuations of prompts"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Corpus BLEU as sacrebleu 2.6.0 computes it by default (13a tokens, case-sensitive, exp smoothing).
    Bleu(BleuArgs),
    /// ROUGE-1, ROUGE-2, ROUGE-L and ROUGE-Lsum as rouge-score 0.1.2 computes them, averaged over lines.
    Rouge(RougeArgs),
    /// Perplexity of a model over token shards: mean next-token NLL over every predicted token.
    Ppl(PplArgs),
    /// Continue each prompt of a file (cllm-generate's options), then score the continuations
    /// against references with BLEU and ROUGE.
    GenerateAndScore(GenScoreArgs),
}

#[derive(Args, Debug)]
struct GenScoreArgs {
    /// A cllm checkpoint, a cllm run directory (its latest checkpoint), or a Hugging Face GPT-2
    /// directory (config.json + model.safetensors).
    #[arg(long)]
    model: PathBuf,
    /// Prompts, one per line (text, encoded with the model's tokenizer).
    #[arg(long)]
    prompts: PathBuf,
    /// References, one per prompt line; repeat for several references per prompt (BLEU uses them
    /// all; ROUGE takes, per kind, the one of highest F, as rouge-score's score_multi).
    #[arg(long = "ref", required = true)]
    refs: Vec<PathBuf>,
    /// A tokenizer file saved by cllm, or `gpt2` for GPT-2's own (default: the checkpoint's
    /// tokenizer.json, or the directory's vocab.json + merges.txt).
    #[arg(long)]
    tokenizer: Option<String>,
    #[command(flatten)]
    gen: GenOptions,
    /// Let a continuation run past a newline (newlines then become spaces); by default a row
    /// stops at its first newline, since continuations and references are one per line.
    #[arg(long)]
    multiline: bool,
    /// Prompts generated together as one left-padded batch (a row's text does not depend on it).
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// Porter-stem tokens longer than 3 characters for ROUGE (rouge-score's use_stemmer=True).
    #[arg(long)]
    stem: bool,
    /// Write the continuations to this file, one per line (atomically); it may not be one of the
    /// input files.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Also report sentence BLEU and ROUGE of every line.
    #[arg(long)]
    per_line: bool,
    /// Print one JSON object instead of a table: `bleu` and `rouge` (the keys of the `bleu` and
    /// `rouge` commands), `continuations` and `generation`.
    #[arg(long)]
    json: bool,
    /// Worker threads (default: CLLM_THREADS, or one per allowed core).
    #[arg(long)]
    threads: Option<usize>,
}

#[derive(Args, Debug)]
struct PplArgs {
    /// A cllm checkpoint, a cllm run directory (its latest checkpoint), or a Hugging Face GPT-2
    /// directory (config.json + model.safetensors).
    #[arg(long)]
    model: PathBuf,
    /// Token shards (llm.c format): a glob such as 'data/val_*.bin', or a directory (its
    /// val_*.bin). Each shard is one stream.
    #[arg(long)]
    data: String,
    /// Window length T (default: the model's n_positions).
    #[arg(long)]
    seq: Option<usize>,
    /// Window stride, 1 to T (default: T, non-overlapping); smaller gives each target more
    /// context.
    #[arg(long)]
    stride: Option<usize>,
    /// The shards' tokenizer (a cllm tokenizer file or `gpt2`), for bits per byte; default: the
    /// checkpoint's tokenizer.json, or the directory's vocab.json + merges.txt, when it has one.
    #[arg(long)]
    tokenizer: Option<String>,
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct BleuArgs {
    /// Hypotheses, one segment per line.
    #[arg(long)]
    hyp: PathBuf,
    /// References, one segment per line; repeat for several references per segment.
    #[arg(long = "ref", required = true)]
    refs: Vec<PathBuf>,
    /// Also report sentence BLEU (effective order) for every line.
    #[arg(long)]
    per_line: bool,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct RougeArgs {
    /// Hypotheses, one segment per line.
    #[arg(long)]
    hyp: PathBuf,
    /// References, one segment per line.
    #[arg(long = "ref")]
    reference: PathBuf,
    /// Porter-stem tokens longer than 3 characters (rouge-score's use_stemmer=True).
    #[arg(long)]
    stem: bool,
    /// Also report the scores of every line.
    #[arg(long)]
    per_line: bool,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

fn main() {
    cllm_drivers::restore_sigpipe();
    cllm_drivers::exit_on_error(run(Cli::parse()));
}

fn run(cli: Cli) -> Result<()> {
    let out = match cli.command {
        Command::Bleu(args) => run_bleu(&args)?,
        Command::Rouge(args) => run_rouge(&args)?,
        Command::Ppl(args) => run_ppl(&args)?,
        Command::GenerateAndScore(args) => run_generate_and_score(&args)?,
    };
    std::io::stdout()
        .lock()
        .write_all(out.as_bytes())
        .context("writing to stdout")?;
    Ok(())
}

/// The segments of a text file: its lines, split on `\n`. A final newline ends the last line rather
/// than starting an empty one, and a `\r` before a newline is dropped. An empty file, or a line that
/// is not UTF-8, is an error naming the file (and line).
fn read_segments(path: &Path) -> Result<Vec<String>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    if bytes.is_empty() {
        bail!(
            "{}: empty file; expected one segment per line",
            path.display()
        );
    }
    let body = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
    body.split(|&b| b == b'\n')
        .enumerate()
        .map(|(i, line)| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            std::str::from_utf8(line).map(str::to_owned).map_err(|e| {
                anyhow!(
                    "{}:{}: not valid UTF-8 (bad byte at column {})",
                    path.display(),
                    i + 1,
                    e.valid_up_to() + 1
                )
            })
        })
        .collect()
}

/// Reads a reference file and checks it pairs up line by line with the hypotheses.
fn read_paired(path: &Path, hyp_path: &Path, hyp_lines: usize) -> Result<Vec<String>> {
    let lines = read_segments(path)?;
    if lines.len() != hyp_lines {
        bail!(
            "{} has {} lines but {} has {}; hypotheses and references pair up line by line",
            path.display(),
            lines.len(),
            hyp_path.display(),
            hyp_lines
        );
    }
    Ok(lines)
}

/// Corpus BLEU of `hyps` against the reference streams, and sentence BLEU per line when asked.
struct Bleu {
    score: bleu::BleuScore,
    lines: Option<Vec<f64>>,
    segments: usize,
    references: usize,
}

impl Bleu {
    fn new(hyps: &[String], streams: &[Vec<String>], per_line: bool) -> Result<Bleu> {
        let score = bleu::corpus_bleu(hyps, streams).context("computing corpus BLEU")?;
        let lines = per_line.then(|| {
            (0..hyps.len())
                .map(|i| {
                    let refs: Vec<&str> = streams.iter().map(|s| s[i].as_str()).collect();
                    bleu::sentence_bleu(&hyps[i], &refs).score
                })
                .collect()
        });
        Ok(Bleu {
            score,
            lines,
            segments: hyps.len(),
            references: streams.len(),
        })
    }

    fn json(&self) -> Value {
        let score = &self.score;
        let mut doc = json!({
            "score": score.score,
            "bp": score.bp,
            "precisions": score.precisions,
            "counts": score.counts,
            "totals": score.totals,
            "sys_len": score.sys_len,
            "ref_len": score.ref_len,
            "ratio": score.ratio(),
            "segments": self.segments,
            "references": self.references,
        });
        if let Some(lines) = &self.lines {
            doc["lines"] = json!(lines);
        }
        doc
    }

    fn table(&self) -> Result<String> {
        let score = &self.score;
        let mut out = String::new();
        if let Some(lines) = &self.lines {
            writeln!(out, "{:>6}  {:>6}", "line", "BLEU")?;
            for (i, s) in lines.iter().enumerate() {
                writeln!(out, "{:>6}  {:>6.2}", i + 1, s)?;
            }
            writeln!(out)?;
        }
        let p = score.precisions;
        writeln!(
            out,
            "BLEU = {:.2} {:.1}/{:.1}/{:.1}/{:.1} (BP = {:.3} ratio = {:.3} hyp_len = {} ref_len = {})",
            score.score,
            p[0],
            p[1],
            p[2],
            p[3],
            score.bp,
            score.ratio(),
            score.sys_len,
            score.ref_len
        )?;
        writeln!(out, "{} segments, {} reference(s) each; sacrebleu 2.6.0 defaults (13a, mixed case, exp smoothing)", self.segments, self.references)?;
        Ok(out)
    }
}

fn run_bleu(args: &BleuArgs) -> Result<String> {
    let hyps = read_segments(&args.hyp)?;
    let streams = args
        .refs
        .iter()
        .map(|r| read_paired(r, &args.hyp, hyps.len()))
        .collect::<Result<Vec<_>>>()?;
    let bleu = Bleu::new(&hyps, &streams, args.per_line)?;
    if args.json {
        return Ok(format!("{}\n", serde_json::to_string_pretty(&bleu.json())?));
    }
    bleu.table()
}

/// The JSON of one score: `p`, `r`, `f`.
fn prf(s: &rouge::RougeScore) -> Value {
    json!({ "p": s.precision, "r": s.recall, "f": s.fmeasure })
}

type Pick = fn(&rouge::RougeScores) -> rouge::RougeScore;

/// The four ROUGE kinds: their JSON names and where each lives in a [`rouge::RougeScores`].
const ROUGE_KINDS: [(&str, Pick); 4] = [
    ("rouge1", |s| s.rouge1),
    ("rouge2", |s| s.rouge2),
    ("rougeL", |s| s.rouge_l),
    ("rougeLsum", |s| s.rouge_lsum),
];

/// ROUGE of every line and the means over lines.
struct Rouge {
    lines: Vec<rouge::RougeScores>,
    stem: bool,
    per_line: bool,
}

impl Rouge {
    /// Scores line i of `hyps` against line i of every reference stream; with several streams each
    /// kind takes the reference of highest F (the first on a tie), as rouge-score's `score_multi`.
    fn new(hyps: &[String], streams: &[Vec<String>], stem: bool, per_line: bool) -> Rouge {
        let lines = hyps
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let each: Vec<rouge::RougeScores> = streams
                    .iter()
                    .map(|s| rouge::score(h, &s[i], stem))
                    .collect();
                let best = |pick: Pick| {
                    each.iter()
                        .map(pick)
                        .fold(None, |best: Option<rouge::RougeScore>, s| match best {
                            Some(b) if b.fmeasure >= s.fmeasure => Some(b),
                            _ => Some(s),
                        })
                        .unwrap_or_default()
                };
                rouge::RougeScores {
                    rouge1: best(|s| s.rouge1),
                    rouge2: best(|s| s.rouge2),
                    rouge_l: best(|s| s.rouge_l),
                    rouge_lsum: best(|s| s.rouge_lsum),
                }
            })
            .collect();
        Rouge {
            lines,
            stem,
            per_line,
        }
    }

    /// The mean P, R and F of each kind over the lines.
    fn means(&self) -> Vec<(&'static str, rouge::RougeScore)> {
        let n = self.lines.len() as f64;
        ROUGE_KINDS
            .iter()
            .map(|&(name, pick)| {
                let mut sum = rouge::RougeScore::default();
                for s in &self.lines {
                    let s = pick(s);
                    sum.precision += s.precision;
                    sum.recall += s.recall;
                    sum.fmeasure += s.fmeasure;
                }
                let mean = rouge::RougeScore {
                    precision: sum.precision / n,
                    recall: sum.recall / n,
                    fmeasure: sum.fmeasure / n,
                };
                (name, mean)
            })
            .collect()
    }

    fn json(&self) -> Value {
        let mut doc = serde_json::Map::new();
        for (&(name, pick), (_, mean)) in ROUGE_KINDS.iter().zip(self.means()) {
            let mut entry = prf(&mean);
            if self.per_line {
                entry["lines"] = Value::Array(self.lines.iter().map(|s| prf(&pick(s))).collect());
            }
            doc.insert(name.to_string(), entry);
        }
        doc.insert("segments".into(), json!(self.lines.len()));
        doc.insert("stem".into(), json!(self.stem));
        Value::Object(doc)
    }

    fn table(&self) -> Result<String> {
        let mut out = String::new();
        if self.per_line {
            writeln!(
                out,
                "{:>6}  {:>8}  {:>8}  {:>8}  {:>9}",
                "line", "rouge1 F", "rouge2 F", "rougeL F", "rougeLsum F"
            )?;
            for (i, s) in self.lines.iter().enumerate() {
                writeln!(
                    out,
                    "{:>6}  {:>8.4}  {:>8.4}  {:>8.4}  {:>11.4}",
                    i + 1,
                    s.rouge1.fmeasure,
                    s.rouge2.fmeasure,
                    s.rouge_l.fmeasure,
                    s.rouge_lsum.fmeasure
                )?;
            }
            writeln!(out)?;
        }
        writeln!(out, "{:<10}  {:>7}  {:>7}  {:>7}", "", "P", "R", "F")?;
        for (name, m) in self.means() {
            writeln!(
                out,
                "{:<10}  {:>7.4}  {:>7.4}  {:>7.4}",
                name, m.precision, m.recall, m.fmeasure
            )?;
        }
        writeln!(
            out,
            "means over {} lines; rouge-score 0.1.2 tokens, Porter stemmer {}",
            self.lines.len(),
            if self.stem { "on" } else { "off" }
        )?;
        Ok(out)
    }
}

fn run_rouge(args: &RougeArgs) -> Result<String> {
    let hyps = read_segments(&args.hyp)?;
    let refs = read_paired(&args.reference, &args.hyp, hyps.len())?;
    let rouge = Rouge::new(&hyps, &[refs], args.stem, args.per_line);
    if args.json {
        return Ok(format!(
            "{}\n",
            serde_json::to_string_pretty(&rouge.json())?
        ));
    }
    rouge.table()
}

fn run_ppl(args: &PplArgs) -> Result<String> {
    use cllm_engine::data::{shard_paths, Shard};
    use cllm_engine::eval::perplexity::PerplexityMeter;

    cllm_engine::kernels::isa::init()?;
    let (model, hf, dir) = load_model(&args.model)?;
    let vocab = model.config().vocab_size;
    // Bits per byte need each token's text: only a BPE tokenizer gives it here.
    let codec = Codec::for_model(&dir, args.tokenizer.as_deref(), &hf)?;
    let tokenizer = match &codec {
        Codec::Bpe(t) => Some(t),
        Codec::Bytes | Codec::None => None,
    };
    // The shards are ids of the tokenizer cllm-prepare wrote beside them: scored by a model of
    // another tokenizer, or counted in another's bytes, the figures would mean nothing.
    if let Some(shards) = ShardsTokenizer::find(&args.data)? {
        let fix = "prepare them with the model's tokenizer (cllm-prepare --tokenizer)";
        // Without --tokenizer, `codec` is the model's own.
        if args.tokenizer.is_some() {
            if let Codec::Bpe(t) = Codec::for_model(&dir, None, &hf)? {
                shards.check(&t, "the model's tokenizer", fix)?;
            }
        }
        if let Codec::Bpe(t) = &codec {
            let what = match args.tokenizer {
                Some(_) => "--tokenizer",
                None => "the model's tokenizer",
            };
            shards.check(t, what, fix)?;
        }
    }
    let seq = args.seq.unwrap_or(model.config().n_positions);
    if seq == 0 || args.stride == Some(0) {
        bail!("--seq and --stride must be at least 1");
    }
    // Windows move by at most their length (every target is scored once); the meter would clamp
    // a larger stride to T, silently measuring something other than what was asked.
    if let Some(stride) = args.stride.filter(|&s| s > seq) {
        bail!(
            "--stride {stride} is larger than the window of {seq} tokens (--seq, by default the \
             model's n_positions); give --stride 1 to {seq}"
        );
    }
    let mut meter = PerplexityMeter::new(&model, seq, args.stride.unwrap_or(seq))?;
    let mut bytes = 0usize;
    let pattern = if Path::new(&args.data).is_dir() {
        Path::new(&args.data)
            .join("val_*.bin")
            .to_string_lossy()
            .into_owned()
    } else {
        args.data.clone()
    };
    for path in shard_paths(&pattern)? {
        let shard = Shard::open(&path)?;
        shard
            .check_vocab(vocab)
            .with_context(|| format!("{}: the model's vocabulary is {vocab}", path.display()))?;
        let mut stream = vec![0u32; shard.len()];
        shard.tokens().copy_to(0, &mut stream);
        meter.add(&stream, |first, count| {
            if let Some(t) = &tokenizer {
                bytes += stream[first..first + count]
                    .iter()
                    .map(|&id| t.token_bytes(id).map_or(0, <[u8]>::len))
                    .sum::<usize>();
            }
        })?;
    }
    let r = meter.result();
    if r.tokens == 0 {
        bail!(
            "{pattern}: no token was scored; a shard needs at least two tokens (one to predict from)"
        );
    }
    let bpb = (tokenizer.is_some() && bytes > 0)
        .then(|| r.total_nll / std::f64::consts::LN_2 / bytes as f64);
    Ok(if args.json {
        format!(
            "{}\n",
            json!({"ppl": r.ppl, "nll": r.nll, "tokens": r.tokens, "bits_per_byte": bpb, "seq": seq})
        )
    } else {
        let bpb = bpb.map_or(String::new(), |b| format!(", {b:.4} bits per byte"));
        format!("perplexity {:.4} (mean NLL {:.6} nats over {} predicted tokens, windows of {seq}){bpb}\n", r.ppl, r.nll, r.tokens)
    })
}

/// The text a row generated, for scoring: without its final stop token, cut before the first
/// stop string, invalid UTF-8 replaced, newlines turned into spaces, and trimmed.
fn continuation(codec: &Codec, tokens: &[u32], stop_tokens: &[u32], stops: &[Vec<u8>]) -> String {
    let tokens = match tokens.split_last() {
        Some((last, head)) if stop_tokens.contains(last) => head,
        _ => tokens,
    };
    let mut bytes = Vec::new();
    for &id in tokens {
        codec.bytes(id, &mut bytes);
    }
    let cut = stops
        .iter()
        .filter_map(|s| bytes.windows(s.len()).position(|w| w == s.as_slice()))
        .min()
        .unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..cut])
        .replace(['\r', '\n'], " ")
        .trim()
        .to_string()
}

fn run_generate_and_score(args: &GenScoreArgs) -> Result<String> {
    use cllm_engine::spheres::Spheres;
    use std::time::Duration;

    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    // Before the generation it would follow: the continuations must have somewhere to go, and
    // that place must not be one of the files they are made from.
    if let Some(out) = &args.out {
        let parent = out.parent().filter(|p| !p.as_os_str().is_empty());
        if out.is_dir() || parent.is_some_and(|p| !p.is_dir()) {
            bail!(
                "--out {}: not a file in an existing directory",
                out.display()
            );
        }
        let mut inputs = vec![("--prompts".to_string(), args.prompts.clone())];
        inputs.extend(args.refs.iter().map(|r| ("--ref".to_string(), r.clone())));
        if let Some(t) = args.tokenizer.as_deref().filter(|&t| t != "gpt2") {
            inputs.push(("--tokenizer".to_string(), PathBuf::from(t)));
        }
        for file in model_files(&args.model)? {
            inputs.push(("the model's file".to_string(), file));
        }
        refuse_output_over_input("--out", out, &inputs)?;
    }
    let lines = read_segments(&args.prompts)?;
    let streams = args
        .refs
        .iter()
        .map(|r| read_paired(r, &args.prompts, lines.len()))
        .collect::<Result<Vec<_>>>()?;
    let gen = &args.gen;
    let sample = gen.sample_config()?;

    cllm_engine::kernels::isa::init()?;
    let (model, hf, dir) = load_model(&args.model)?;
    let codec = Codec::for_model(&dir, args.tokenizer.as_deref(), &hf)?;
    if matches!(codec, Codec::None) {
        bail!(
            "no tokenizer cllm reads came with {} (a cllm tokenizer.json, or vocab.json + merges.txt), and its vocabulary is too large for bytes: pass --tokenizer FILE|gpt2",
            args.model.display()
        );
    }
    let line_name = |i: usize| format!("{}:{}", args.prompts.display(), i + 1);
    let prompts = lines
        .iter()
        .enumerate()
        .map(|(i, line)| {
            let ids = codec.encode(line)?;
            if ids.is_empty() {
                bail!(
                    "{}: empty prompt; every line needs text to continue",
                    line_name(i)
                );
            }
            Ok(ids)
        })
        .collect::<Result<Vec<_>>>()?;
    gen.check_prompts(&model, &prompts, |i| format!("{}: prompt", line_name(i)))?;
    let stop_tokens = gen.stop_tokens(hf.eos_token_id, model.config().vocab_size)?;
    let mut stops = gen.stop_strings();
    if !args.multiline {
        stops.push(b"\n".to_vec());
    }

    let (tree, warnings, _) = threads_plan(args.threads)?;
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    let pool = Spheres::new(&tree).context("starting the worker threads")?;
    for w in pool.warnings() {
        eprintln!("warning: {w}");
    }
    let mut rows: Vec<Vec<u32>> = Vec::with_capacity(prompts.len());
    let mut time = Duration::ZERO;
    if let Some(beams) = gen.beams {
        let cfg = gen.beam_config(beams, &stop_tokens, true)?;
        for p in &prompts {
            let (best, t) = beam_best(&model, &pool, p, &cfg)?;
            rows.push(best.tokens);
            time += t;
        }
    } else {
        let cfg = gen.generate_config(&sample, &stop_tokens);
        for chunk in prompts.chunks(args.batch_size) {
            let g = generate_text(&model, &pool, &codec, &cfg, &stops, chunk, |_, _| Ok(()))?;
            time += g.prefill_time + g.decode_time;
            rows.extend(g.tokens);
        }
    }
    let new_tokens: usize = rows.iter().map(Vec::len).sum();
    eprintln!(
        "generated {new_tokens} tokens for {} prompts in {:.3} s ({:.1} tokens/s)",
        rows.len(),
        time.as_secs_f64(),
        new_tokens as f64 / time.as_secs_f64().max(1e-9)
    );
    let hyps: Vec<String> = rows
        .iter()
        .map(|r| continuation(&codec, r, &stop_tokens, &stops))
        .collect();
    if let Some(out) = &args.out {
        let mut text = hyps.join("\n");
        text.push('\n');
        cllm_engine::atomic_file::write_atomic(out, text.as_bytes())
            .with_context(|| format!("cannot write {}", out.display()))?;
    }

    let bleu = Bleu::new(&hyps, &streams, args.per_line)?;
    let rouge = Rouge::new(&hyps, &streams, args.stem, args.per_line);
    if args.json {
        let doc = json!({
            "bleu": bleu.json(),
            "rouge": rouge.json(),
            "continuations": hyps,
            "generation": {
                "prompts": rows.len(),
                "new_tokens": new_tokens,
                "seconds": time.as_secs_f64(),
                "max_new_tokens": gen.max_new_tokens,
                "seed": gen.seed,
            },
        });
        return Ok(format!("{}\n", serde_json::to_string_pretty(&doc)?));
    }
    let mut out = bleu.table()?;
    writeln!(out)?;
    out.push_str(&rouge.table()?);
    Ok(out)
}
