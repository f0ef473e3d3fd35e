//! cllm-generate: continue prompts with a cllm checkpoint or a Hugging Face GPT-2 directory.
//!
//! Prompts come from an argument, `--prompt-file`, `--prompt-ids`, `--batch FILE` (one per line)
//! or stdin; on a terminal with none of these it asks for prompts interactively. Text goes through
//! the tokenizer (`--tokenizer FILE|gpt2`, the `tokenizer.json` a cllm checkpoint stores, the
//! directory's `vocab.json` + `merges.txt`, or bytes for byte-level models of at most 257 tokens); `--print-ids` prints token ids instead. A single
//! prompt streams its text as it is produced. `--batch` prints one line per prompt line, its
//! continuation escaped (`\\`, `\n`, `\r`) so that a generated newline cannot split a row. Prefill
//! and decode speeds go to stderr.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Parser;
use cllm_drivers::generation::{
    beam_best, escape_line, generate_text, load_model, Codec, GenOptions,
};
use cllm_drivers::threads_plan;
use cllm_engine::generate::SampleConfig;
use cllm_engine::model::Gpt;
use cllm_engine::spheres::Spheres;

#[derive(Parser, Debug)]
#[command(
    name = "cllm-generate",
    about = "Generate text with a GPT-2 model on the CPU"
)]
struct Cli {
    /// A cllm checkpoint, a cllm run directory (its latest checkpoint), or a Hugging Face GPT-2
    /// directory (config.json + model.safetensors).
    #[arg(long)]
    model: PathBuf,
    /// The prompt text. Without it (and without --prompt-file, --prompt-ids or --batch) the
    /// prompt is read from stdin, less one trailing newline (`\n` or `\r\n`).
    prompt: Option<String>,
    /// Read the prompt text from this file, less one trailing newline (`\n` or `\r\n`), which an
    /// editor or `echo` adds.
    #[arg(long, conflicts_with = "prompt")]
    prompt_file: Option<PathBuf>,
    /// The prompt as token ids, comma-separated (repeat to append more).
    #[arg(long, conflicts_with_all = ["prompt", "prompt_file"])]
    prompt_ids: Vec<String>,
    /// A file of prompts, one per line, generated as one batch. The output has one line per
    /// prompt line, in order: its continuation with backslash, newline and carriage return
    /// written as `\\`, `\n` and `\r` (tabs and all else as generated), or its new token ids
    /// with --print-ids. With 2 to 8 prompts (or beams) and room for 32 or more new tokens, the
    /// session makes its own copy of the layer weights, laid out for decoding several rows.
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
    #[command(flatten)]
    gen: GenOptions,
    /// Worker threads (default: CLLM_THREADS, or one per allowed core).
    #[arg(long)]
    threads: Option<usize>,
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

/// `text` less one trailing `\n` or `\r\n`: the end of its last line, not part of the prompt.
fn without_final_newline(mut text: String) -> String {
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    text
}

fn main() {
    cllm_drivers::restore_sigpipe();
    cllm_drivers::exit_on_error(run_cli(Cli::parse()));
}

fn run_cli(cli: Cli) -> Result<()> {
    cllm_engine::kernels::isa::init()?;
    let sample = cli.gen.sample_config()?;
    let (model, hf, dir) = load_model(&cli.model)?;
    let cfg = *model.config();
    let codec = Codec::for_model(&dir, cli.tokenizer.as_deref(), &hf)?;
    let stop_tokens = cli.gen.stop_tokens(hf.eos_token_id, cfg.vocab_size)?;
    if let Some(beams) = cli.gen.beams {
        cli.gen.beam_config(beams, &stop_tokens, false)?;
    }
    let (tree, warnings, _) = threads_plan(cli.threads)?;
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    let pool = Spheres::new(&tree).context("starting the worker threads")?;
    for w in pool.warnings() {
        eprintln!("warning: {w}");
    }

    let interactive = cli.prompt.is_none()
        && cli.prompt_file.is_none()
        && cli.prompt_ids.is_empty()
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
    let prompts: Vec<Vec<u32>> = if !cli.prompt_ids.is_empty() {
        let mut ids = Vec::new();
        for list in &cli.prompt_ids {
            ids.extend(parse_ids(list).context("--prompt-ids")?);
        }
        vec![ids]
    } else if let Some(file) = &cli.batch {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        // Every line is a prompt, so the output rows line up with the file's lines (blank lines
        // at the end are not lines of prompts).
        let lines: Vec<&str> = text.lines().collect();
        let n = lines
            .iter()
            .rposition(|l| !l.trim().is_empty())
            .map_or(0, |i| i + 1);
        lines[..n]
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let at = || format!("{}:{}", file.display(), i + 1);
                if l.trim().is_empty() {
                    bail!("{}: empty prompt; every line of --batch needs one", at());
                }
                if cli.batch_ids {
                    parse_ids(l).with_context(at)
                } else {
                    codec.encode(l).with_context(at)
                }
            })
            .collect::<Result<_>>()?
    } else {
        let text = match (&cli.prompt, &cli.prompt_file) {
            (Some(p), _) => p.clone(),
            (None, Some(f)) => without_final_newline(
                std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?,
            ),
            (None, None) => {
                let mut s = String::new();
                std::io::stdin()
                    .read_to_string(&mut s)
                    .context("reading the prompt from stdin")?;
                without_final_newline(s)
            }
        };
        vec![codec.encode(&text)?]
    };
    if prompts.is_empty() {
        match &cli.batch {
            Some(file) => bail!("{} holds no prompts", file.display()),
            None => bail!("no prompts"),
        }
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
    let gen = &cli.gen;
    gen.check_prompts(model, prompts, |i| format!("prompt {}", i + 1))?;
    let mut stdout = std::io::stdout().lock();
    if let Some(beams) = gen.beams {
        if prompts.len() != 1 {
            bail!("--beams takes a single prompt");
        }
        let (best, time) = beam_best(
            model,
            pool,
            &prompts[0],
            &gen.beam_config(beams, stop_tokens, false)?,
        )?;
        let secs = time.as_secs_f64();
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
    // --batch output is one escaped line per prompt line, even for a file of one line.
    let stream = prompts.len() == 1 && !cli.print_ids && cli.batch.is_none();
    let gcfg = gen.generate_config(sample, stop_tokens);
    // Each row's text as generate_text passes it on: cut after the first stop string.
    let mut texts: Vec<Vec<u8>> = vec![Vec::new(); prompts.len()];
    let g = generate_text(
        model,
        pool,
        codec,
        &gcfg,
        &gen.stop_strings(),
        prompts,
        |row, bytes| {
            if stream {
                stdout.write_all(bytes)?;
                stdout.flush()?;
            } else if !cli.print_ids {
                texts[row].extend_from_slice(bytes);
            }
            Ok(())
        },
    )?;
    if stream {
        writeln!(stdout)?;
    } else if cli.print_ids {
        for row in &g.tokens {
            print_row(&mut stdout, cli, codec, row)?;
        }
    } else {
        for text in &texts {
            stdout.write_all(&escape_line(text))?;
            writeln!(stdout)?;
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
        if cli.batch.is_some() {
            bytes = escape_line(&bytes);
        }
        out.write_all(&bytes)?;
        writeln!(out)?;
    }
    Ok(())
}
