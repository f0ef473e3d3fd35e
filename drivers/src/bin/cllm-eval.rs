//! cllm-eval: score hypotheses against references, one segment per line.
//!
//! `bleu` is sacrebleu 2.6.0 with its defaults (`sacrebleu REF... -i HYP`); `rouge` is rouge-score
//! 0.1.2's ROUGE-1/2/L/Lsum, averaged over lines. Both read UTF-8 text, split on `\n` (a `\r` before
//! it is dropped), and pair hypothesis line i with reference line i.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use cllm_engine::eval::{bleu, rouge};
use serde_json::{json, Value};

#[derive(Parser, Debug)]
#[command(
    name = "cllm-eval",
    about = "Score text against references: BLEU (as sacrebleu) and ROUGE (as rouge-score)"
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
}

#[derive(Args, Debug)]
struct PplArgs {
    /// A cllm checkpoint or a Hugging Face GPT-2 directory (config.json + model.safetensors).
    #[arg(long)]
    model: PathBuf,
    /// Token shards (llm.c format): a glob such as 'data/val_*.bin'. Each shard is one stream.
    #[arg(long)]
    data: String,
    /// Window length T (default: the model's n_positions).
    #[arg(long)]
    seq: Option<usize>,
    /// Window stride (default: T, non-overlapping); smaller gives each target more context.
    #[arg(long)]
    stride: Option<usize>,
    /// The shards' tokenizer (a cllm tokenizer file or `gpt2`), for bits per byte; default: the
    /// model directory's tokenizer.json when it has one.
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
    if let Err(e) = run(Cli::parse()) {
        eprintln!("error: {e}");
        for cause in e.chain().skip(1) {
            eprintln!("  caused by: {cause}");
        }
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    let out = match cli.command {
        Command::Bleu(args) => run_bleu(&args)?,
        Command::Rouge(args) => run_rouge(&args)?,
        Command::Ppl(args) => run_ppl(&args)?,
    };
    print!("{out}");
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

fn run_bleu(args: &BleuArgs) -> Result<String> {
    let hyps = read_segments(&args.hyp)?;
    let streams = args
        .refs
        .iter()
        .map(|r| read_paired(r, &args.hyp, hyps.len()))
        .collect::<Result<Vec<_>>>()?;
    let score = bleu::corpus_bleu(&hyps, &streams).context("computing corpus BLEU")?;
    let lines: Option<Vec<f64>> = args.per_line.then(|| {
        (0..hyps.len())
            .map(|i| {
                let refs: Vec<&str> = streams.iter().map(|s| s[i].as_str()).collect();
                bleu::sentence_bleu(&hyps[i], &refs).score
            })
            .collect()
    });

    if args.json {
        let mut doc = json!({
            "score": score.score,
            "bp": score.bp,
            "precisions": score.precisions,
            "counts": score.counts,
            "totals": score.totals,
            "sys_len": score.sys_len,
            "ref_len": score.ref_len,
            "ratio": score.ratio(),
            "segments": hyps.len(),
            "references": streams.len(),
        });
        if let Some(lines) = lines {
            doc["lines"] = json!(lines);
        }
        return Ok(format!("{}\n", serde_json::to_string_pretty(&doc)?));
    }

    let mut out = String::new();
    if let Some(lines) = lines {
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
    writeln!(out, "{} segments, {} reference(s) each; sacrebleu 2.6.0 defaults (13a, mixed case, exp smoothing)", hyps.len(), streams.len())?;
    Ok(out)
}

/// The JSON of one score: `p`, `r`, `f`.
fn prf(s: &rouge::RougeScore) -> Value {
    json!({ "p": s.precision, "r": s.recall, "f": s.fmeasure })
}

fn run_rouge(args: &RougeArgs) -> Result<String> {
    let hyps = read_segments(&args.hyp)?;
    let refs = read_paired(&args.reference, &args.hyp, hyps.len())?;
    let scores: Vec<rouge::RougeScores> = hyps
        .iter()
        .zip(&refs)
        .map(|(h, r)| rouge::score(h, r, args.stem))
        .collect();

    type Pick = fn(&rouge::RougeScores) -> rouge::RougeScore;
    let kinds: [(&str, Pick); 4] = [
        ("rouge1", |s| s.rouge1),
        ("rouge2", |s| s.rouge2),
        ("rougeL", |s| s.rouge_l),
        ("rougeLsum", |s| s.rouge_lsum),
    ];
    let n = scores.len() as f64;
    let means: Vec<(&str, rouge::RougeScore)> = kinds
        .iter()
        .map(|&(name, pick)| {
            let mut sum = rouge::RougeScore::default();
            for s in &scores {
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
        .collect();

    if args.json {
        let mut doc = serde_json::Map::new();
        for (&(name, pick), (_, mean)) in kinds.iter().zip(&means) {
            let mut entry = prf(mean);
            if args.per_line {
                entry["lines"] = Value::Array(scores.iter().map(|s| prf(&pick(s))).collect());
            }
            doc.insert(name.to_string(), entry);
        }
        doc.insert("segments".into(), json!(scores.len()));
        doc.insert("stem".into(), json!(args.stem));
        return Ok(format!(
            "{}\n",
            serde_json::to_string_pretty(&Value::Object(doc))?
        ));
    }

    let mut out = String::new();
    if args.per_line {
        writeln!(
            out,
            "{:>6}  {:>8}  {:>8}  {:>8}  {:>9}",
            "line", "rouge1 F", "rouge2 F", "rougeL F", "rougeLsum F"
        )?;
        for (i, s) in scores.iter().enumerate() {
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
    for (name, m) in &means {
        writeln!(
            out,
            "{:<10}  {:>7.4}  {:>7.4}  {:>7.4}",
            name, m.precision, m.recall, m.fmeasure
        )?;
    }
    writeln!(
        out,
        "means over {} lines; rouge-score 0.1.2 tokens, Porter stemmer {}",
        scores.len(),
        if args.stem { "on" } else { "off" }
    )?;
    Ok(out)
}

fn run_ppl(args: &PplArgs) -> Result<String> {
    use cllm_engine::data::{shard_paths, Shard};
    use cllm_engine::eval::perplexity::PerplexityMeter;
    use cllm_engine::model::Gpt;
    use cllm_engine::tokenizer::Tokenizer;

    cllm_engine::kernels::isa::init()?;
    let (model, _) = Gpt::from_hf_dir(&args.model)
        .with_context(|| format!("loading {}", args.model.display()))?;
    let vocab = model.config().vocab_size;
    let tokenizer = match args.tokenizer.as_deref() {
        Some("gpt2") => Some(Tokenizer::gpt2_builtin()),
        Some(file) => {
            Some(Tokenizer::load(file.as_ref()).with_context(|| format!("loading {file}"))?)
        }
        None => {
            let own = args.model.join("tokenizer.json");
            own.is_file()
                .then(|| Tokenizer::load(&own))
                .transpose()
                .with_context(|| format!("loading {}", own.display()))?
        }
    };
    let seq = args.seq.unwrap_or(model.config().n_positions);
    let mut meter = PerplexityMeter::new(&model, seq, args.stride.unwrap_or(seq))?;
    let mut bytes = 0usize;
    for path in shard_paths(&args.data)? {
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
