//! cllm-generate: continue prompts with a cllm checkpoint or a Hugging Face GPT-2 directory.
//!
//! Prompts come from an argument, `--prompt-file`, `--prompt-ids`, `--batch FILE` (one per line)
//! or stdin; on a terminal with none of these it asks for prompts interactively. Text goes through
//! the tokenizer (`--tokenizer FILE|gpt2`, the `tokenizer.json` a cllm checkpoint stores, the
//! directory's `vocab.json` + `merges.txt`, or bytes for byte-level models of at most 257 tokens); `--print-ids` prints token ids instead. A single
//! prompt streams its text as it is produced. Prefill and decode speeds go to stderr.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Parser;
use cllm_drivers::threads_plan;
use cllm_engine::generate::{self, BeamConfig, Control, GenerateConfig, SampleConfig};
use cllm_engine::model::Gpt;
use cllm_engine::spheres::Spheres;
use cllm_engine::tokenizer::Tokenizer;

/// The tokenizer file cllm-train stores in its checkpoints.
const CHECKPOINT_TOKENIZER: &str = "tokenizer.json";

#[derive(Parser, Debug)]
#[command(
    name = "cllm-generate",
    about = "Generate text with a GPT-2 model on the CPU"
)]
struct Cli {
    /// A cllm checkpoint or a Hugging Face GPT-2 directory (config.json + model.safetensors).
    #[arg(long)]
    model: PathBuf,
    /// The prompt text.
    prompt: Option<String>,
    /// Read the prompt text from this file.
    #[arg(long, conflicts_with = "prompt")]
    prompt_file: Option<PathBuf>,
    /// The prompt as token ids, comma-separated.
    #[arg(long, value_delimiter = ',', conflicts_with_all = ["prompt", "prompt_file"])]
    prompt_ids: Option<Vec<u32>>,
    /// A file of prompts, one per line, generated as one batch.
    #[arg(long, conflicts_with_all = ["prompt", "prompt_file", "prompt_ids"])]
    batch: Option<PathBuf>,
    /// The lines of --batch are comma-separated token ids.
    #[arg(long, requires = "batch")]
    batch_ids: bool,
    /// Print the new token ids (comma-separated, a line per prompt) instead of text.
    #[arg(long)]
    print_ids: bool,
    /// A tokenizer file saved by cllm, or `gpt2` for GPT-2's own.
    #[arg(long)]
    tokenizer: Option<String>,
    /// Always take the most likely token (the default when no sampling option is given).
    #[arg(long)]
    greedy: bool,
    #[arg(long)]
    temperature: Option<f32>,
    #[arg(long)]
    top_k: Option<usize>,
    /// Nucleus sampling mass, in (0, 1].
    #[arg(long)]
    top_p: Option<f32>,
    #[arg(long)]
    min_p: Option<f32>,
    /// Hugging Face's repetition penalty (1 = none).
    #[arg(long)]
    repetition_penalty: Option<f32>,
    /// Beam search with this many beams (greedy scoring, no sampling).
    #[arg(long)]
    beams: Option<usize>,
    /// Beam search ranks by summed log-probability / length^this.
    #[arg(long, default_value_t = 1.0)]
    length_penalty: f64,
    #[arg(long, default_value_t = 64)]
    max_new_tokens: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Stop a row when its text contains this string (repeatable).
    #[arg(long)]
    stop: Vec<String>,
    /// Stop a row after this token id (repeatable); the model's EOS is one unless --ignore-eos.
    #[arg(long)]
    stop_id: Vec<u32>,
    /// Do not stop at the model's end-of-sequence token.
    #[arg(long)]
    ignore_eos: bool,
    /// Worker threads (default: CLLM_THREADS, or one per allowed core).
    #[arg(long)]
    threads: Option<usize>,
}

/// How token ids become text and back.
enum Codec {
    Bpe(Box<Tokenizer>),
    /// Ids below 256 are bytes.
    Bytes,
    /// No tokenizer: ids only.
    None,
}

impl Codec {
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        match self {
            Codec::Bpe(t) => Ok(t.encode_ordinary(text)),
            Codec::Bytes => Ok(text.bytes().map(u32::from).collect()),
            Codec::None => bail!(
                "this model has no tokenizer: pass --tokenizer FILE|gpt2, or use --prompt-ids and --print-ids"
            ),
        }
    }

    fn bytes(&self, id: u32, out: &mut Vec<u8>) {
        match self {
            Codec::Bpe(t) => out.extend_from_slice(t.token_bytes(id).unwrap_or(b"\xEF\xBF\xBD")),
            Codec::Bytes if id < 256 => out.push(id as u8),
            _ => out.extend_from_slice(format!("<|{id}|>").as_bytes()),
        }
    }
}

fn codec(cli: &Cli, vocab: usize) -> Result<Codec> {
    let tok = match cli.tokenizer.as_deref() {
        Some("gpt2") => Some(Tokenizer::gpt2_builtin()),
        Some(file) => Some(
            Tokenizer::load(Path::new(file))
                .with_context(|| format!("loading the tokenizer {file}"))?,
        ),
        None => {
            let (enc, merges) = (cli.model.join("vocab.json"), cli.model.join("merges.txt"));
            let own = cli.model.join(CHECKPOINT_TOKENIZER);
            if own.is_file() {
                Some(Tokenizer::load(&own).with_context(|| format!("loading {}", own.display()))?)
            } else if enc.is_file() && merges.is_file() {
                Some(
                    Tokenizer::gpt2(&enc, &merges).with_context(|| {
                        format!("loading the tokenizer of {}", cli.model.display())
                    })?,
                )
            } else {
                None
            }
        }
    };
    match tok {
        Some(t) if t.vocab_size() != vocab => bail!(
            "the tokenizer has {} tokens but the model's vocabulary is {vocab}: they do not belong together",
            t.vocab_size()
        ),
        Some(t) => Ok(Codec::Bpe(Box::new(t))),
        None if vocab <= 257 => Ok(Codec::Bytes),
        None => Ok(Codec::None),
    }
}

fn parse_ids(line: &str) -> Result<Vec<u32>> {
    line.split(',')
        .map(|s| {
            s.trim()
                .parse::<u32>()
                .with_context(|| format!("not a token id: {s:?}"))
        })
        .collect()
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let (model, hf) = Gpt::from_hf_dir(&cli.model)
        .with_context(|| format!("loading the model {}", cli.model.display()))?;
    let cfg = *model.config();
    let codec = codec(&cli, cfg.vocab_size)?;
    let (tree, _, _) = threads_plan(cli.threads)?;
    let pool = Spheres::new(&tree).context("starting the worker threads")?;

    let sampling = cli.temperature.is_some()
        || cli.top_k.is_some()
        || cli.top_p.is_some()
        || cli.min_p.is_some();
    if cli.greedy && sampling {
        bail!("--greedy cannot be combined with --temperature, --top-k, --top-p or --min-p");
    }
    let sample = SampleConfig {
        temperature: if sampling {
            cli.temperature.unwrap_or(1.0)
        } else {
            0.0
        },
        top_k: cli.top_k,
        top_p: cli.top_p,
        min_p: cli.min_p,
        repetition_penalty: cli.repetition_penalty,
    };
    sample.validate()?;
    let mut stop_tokens = cli.stop_id.clone();
    if let (Some(eos), false) = (hf.eos_token_id, cli.ignore_eos) {
        stop_tokens.push(eos as u32);
    }

    let interactive = cli.prompt.is_none()
        && cli.prompt_file.is_none()
        && cli.prompt_ids.is_none()
        && cli.batch.is_none()
        && std::io::stdin().is_terminal();
    if interactive {
        let stdin = std::io::stdin();
        loop {
            eprint!("> ");
            std::io::stderr().flush()?;
            let mut line = String::new();
            if stdin.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                continue;
            }
            let prompt = codec.encode(line)?;
            if let Err(e) = run(
                &cli,
                &model,
                &pool,
                &codec,
                &sample,
                &stop_tokens,
                &[prompt],
            ) {
                eprintln!("error: {e:#}");
            }
        }
    }
    let prompts: Vec<Vec<u32>> = if let Some(ids) = &cli.prompt_ids {
        vec![ids.clone()]
    } else if let Some(file) = &cli.batch {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                if cli.batch_ids {
                    parse_ids(l)
                } else {
                    codec.encode(l)
                }
            })
            .collect::<Result<_>>()?
    } else {
        let text = match (&cli.prompt, &cli.prompt_file) {
            (Some(p), _) => p.clone(),
            (None, Some(f)) => {
                std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?
            }
            (None, None) => {
                let mut s = String::new();
                std::io::stdin()
                    .read_to_string(&mut s)
                    .context("reading the prompt from stdin")?;
                s
            }
        };
        vec![codec.encode(&text)?]
    };
    if prompts.is_empty() {
        bail!("no prompts");
    }
    run(&cli, &model, &pool, &codec, &sample, &stop_tokens, &prompts)
}

fn run(
    cli: &Cli,
    model: &Gpt,
    pool: &Spheres,
    codec: &Codec,
    sample: &SampleConfig,
    stop_tokens: &[u32],
    prompts: &[Vec<u32>],
) -> Result<()> {
    let cfg = model.config();
    for (i, p) in prompts.iter().enumerate() {
        generate::check_prompt(model, p).with_context(|| format!("prompt {}", i + 1))?;
        if p.len() + cli.max_new_tokens > cfg.n_positions {
            bail!(
                "prompt {} has {} tokens: with --max-new-tokens {} that exceeds the model's context of {} positions",
                i + 1,
                p.len(),
                cli.max_new_tokens,
                cfg.n_positions
            );
        }
    }
    let mut stdout = std::io::stdout().lock();
    if let Some(beams) = cli.beams {
        if prompts.len() != 1 {
            bail!("--beams takes a single prompt");
        }
        let bc = BeamConfig {
            beams,
            max_new_tokens: cli.max_new_tokens,
            length_penalty: cli.length_penalty,
            eos: stop_tokens.first().copied(),
            early_stopping: false,
        };
        let start = Instant::now();
        let hyps = generate::beam_search(model, Some(pool), &prompts[0], &bc)?;
        let secs = start.elapsed().as_secs_f64();
        let best = hyps.first().context("beam search returned no hypothesis")?;
        print_row(&mut stdout, cli, codec, &best.tokens)?;
        eprintln!(
            "beam search: {beams} beams, {} new tokens, summed log-probability {:.6}, score {:.6}, {:.2} s ({:.1} beam tokens/s)",
            best.tokens.len(),
            best.sum_logprob,
            best.score,
            secs,
            (beams * best.tokens.len()) as f64 / secs
        );
        return Ok(());
    }
    let stop_strings: Vec<&[u8]> = cli
        .stop
        .iter()
        .map(|s| s.as_bytes())
        .filter(|s| !s.is_empty())
        .collect();
    let stream = prompts.len() == 1 && !cli.print_ids;
    let mut text: Vec<Vec<u8>> = vec![Vec::new(); prompts.len()];
    let gcfg = GenerateConfig {
        sample: sample.clone(),
        max_new_tokens: cli.max_new_tokens,
        stop_tokens: stop_tokens.to_vec(),
        stop_sequences: Vec::new(),
        seed: cli.seed,
    };
    let refs: Vec<&[u32]> = prompts.iter().map(|p| p.as_slice()).collect();
    let mut io_err = None;
    let g = generate::generate(model, Some(pool), &refs, &gcfg, |row, tok| {
        let before = text[row].len();
        codec.bytes(tok, &mut text[row]);
        if stream {
            if let Err(e) = stdout
                .write_all(&text[row][before..])
                .and_then(|_| stdout.flush())
            {
                io_err = Some(e);
                return Control::Stop;
            }
        }
        let window = before.saturating_sub(stop_strings.iter().map(|s| s.len()).max().unwrap_or(0));
        let hit = stop_strings
            .iter()
            .any(|s| text[row][window..].windows(s.len()).any(|w| w == *s));
        if hit {
            Control::Stop
        } else {
            Control::Continue
        }
    })?;
    if let Some(e) = io_err {
        return Err(e).context("writing to stdout");
    }
    if stream {
        writeln!(stdout)?;
    } else {
        for row in &g.tokens {
            print_row(&mut stdout, cli, codec, row)?;
        }
    }
    let rate = |n: usize, d: std::time::Duration| n as f64 / d.as_secs_f64().max(1e-9);
    eprintln!(
        "prefill: {} tokens in {:.3} s ({:.1} tokens/s); decode: {} tokens in {:.3} s ({:.1} tokens/s)",
        g.prefill_tokens,
        g.prefill_time.as_secs_f64(),
        rate(g.prefill_tokens, g.prefill_time),
        g.decode_tokens,
        g.decode_time.as_secs_f64(),
        rate(g.decode_tokens, g.decode_time)
    );
    Ok(())
}

fn print_row(out: &mut impl Write, cli: &Cli, codec: &Codec, ids: &[u32]) -> Result<()> {
    if cli.print_ids {
        let s: Vec<String> = ids.iter().map(u32::to_string).collect();
        writeln!(out, "{}", s.join(","))?;
    } else {
        let mut bytes = Vec::new();
        for &id in ids {
            codec.bytes(id, &mut bytes);
        }
        out.write_all(&bytes)?;
        writeln!(out)?;
    }
    Ok(())
}
