//! What cllm-generate and `cllm-eval generate-and-score` share: the generation options (one clap
//! definition flattened into both), how token ids become text and back, and the batched text
//! generation loop with its stop strings.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use cllm_engine::checkpoint::{self, HfConfig};
use cllm_engine::generate::{
    self, BeamConfig, BeamHypothesis, Control, GenerateConfig, GenerateError, Generation,
    SampleConfig,
};
use cllm_engine::model::Gpt;
use cllm_engine::spheres::Spheres;
use cllm_engine::tokenizer::Tokenizer;

/// How to continue a prompt: decoding, length, seed and where to stop.
#[derive(Args, Debug, Clone)]
pub struct GenOptions {
    /// Always take the most likely token (the default when no sampling option is given).
    #[arg(long)]
    pub greedy: bool,
    #[arg(long)]
    pub temperature: Option<f32>,
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Nucleus sampling mass, in (0, 1].
    #[arg(long)]
    pub top_p: Option<f32>,
    #[arg(long)]
    pub min_p: Option<f32>,
    /// Hugging Face's repetition penalty (1 = none).
    #[arg(long)]
    pub repetition_penalty: Option<f32>,
    /// Beam search with this many beams (deterministic: no sampling options).
    #[arg(long)]
    pub beams: Option<usize>,
    /// Beam search ranks by summed log-probability / length^this (length: new tokens, the EOS
    /// included), as transformers' length_penalty (default 1; 0 ranks by the plain sum).
    #[arg(long, allow_negative_numbers = true)]
    pub length_penalty: Option<f64>,
    /// Beam search stops once --beams hypotheses have ended (transformers' early_stopping=True);
    /// without it, once no running beam can beat the worst of them at its current length.
    #[arg(long)]
    pub early_stopping: bool,
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop a row when its text contains this string (repeatable). The text printed ends with
    /// the first stop string, which is kept (the rest of the token it ends in is not printed;
    /// --print-ids prints that token's id).
    #[arg(long)]
    pub stop: Vec<String>,
    /// Stop a row after this token id (repeatable); the model's EOS is one unless --ignore-eos.
    #[arg(long)]
    pub stop_id: Vec<u32>,
    /// Do not stop at the model's end-of-sequence token.
    #[arg(long)]
    pub ignore_eos: bool,
}

impl GenOptions {
    /// The sampler's settings: greedy unless a sampling option is given (temperature 1 then).
    /// The beam-search options are refused without --beams rather than ignored, and so are the
    /// filters with --temperature 0 (greedy, which has nothing to filter: `SampleConfig::validate`).
    pub fn sample_config(&self) -> Result<SampleConfig> {
        let sampling = self.temperature.is_some()
            || self.top_k.is_some()
            || self.top_p.is_some()
            || self.min_p.is_some();
        if self.greedy && sampling {
            bail!("--greedy cannot be combined with --temperature, --top-k, --top-p or --min-p");
        }
        if self.beams.is_none() {
            let beam_only = [
                (self.length_penalty.is_some(), "--length-penalty"),
                (self.early_stopping, "--early-stopping"),
            ];
            if let Some((_, flag)) = beam_only.iter().find(|(given, _)| *given) {
                bail!("{flag} applies only to beam search: add --beams N, or leave {flag} out");
            }
        }
        let sample = SampleConfig {
            temperature: if sampling {
                self.temperature.unwrap_or(1.0)
            } else {
                0.0
            },
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repetition_penalty: self.repetition_penalty,
        };
        sample.validate()?;
        Ok(sample)
    }

    /// The stop tokens: every --stop-id (each must be one of the model's `vocab` ids), then the
    /// model's EOS unless --ignore-eos (an EOS id beyond u32 names no token and is left out).
    pub fn stop_tokens(&self, eos: Option<u64>, vocab: usize) -> Result<Vec<u32>> {
        if let Some(id) = self.stop_id.iter().find(|&&id| id as usize >= vocab) {
            bail!("--stop-id {id} is outside the model's vocabulary (V = {vocab}), so it could never be generated");
        }
        let mut stop = self.stop_id.clone();
        if let (Some(eos), false) = (eos, self.ignore_eos) {
            stop.extend(u32::try_from(eos).ok());
        }
        Ok(stop)
    }

    /// The --stop strings that can match (empty ones never stop a row).
    pub fn stop_strings(&self) -> Vec<Vec<u8>> {
        self.stop
            .iter()
            .filter(|s| !s.is_empty())
            .map(|s| s.as_bytes().to_vec())
            .collect()
    }

    /// Checks every prompt against the model: ids in the vocabulary, and room in the context for
    /// --max-new-tokens (the prompt and every new token but the last, which is never fed back).
    /// `name(i)` says which prompt `i` is in an error.
    pub fn check_prompts(
        &self,
        model: &Gpt,
        prompts: &[Vec<u32>],
        name: impl Fn(usize) -> String,
    ) -> Result<()> {
        for (i, p) in prompts.iter().enumerate() {
            generate::check_prompt(model, p).with_context(|| name(i))?;
            // The engine's rule (`session_ctx`), told in the flags' words.
            match generate::session_ctx(model, p.len(), self.max_new_tokens) {
                Ok(_) => {}
                Err(GenerateError::PromptTooLong { len, ctx }) => bail!(
                    "{} has {len} tokens, more than the model's context of {ctx} positions: shorten it",
                    name(i),
                ),
                Err(GenerateError::TooLong { ctx, .. }) => bail!(
                    "{} has {} tokens: with --max-new-tokens {} that exceeds the model's context of {ctx} positions (at most {} new tokens fit)",
                    name(i),
                    p.len(),
                    self.max_new_tokens,
                    ctx + 1 - p.len(),
                ),
                Err(e) => return Err(e).with_context(|| name(i)),
            }
        }
        Ok(())
    }

    /// Beam search with `beams` beams; any of the stop tokens ends a beam. Beam search is
    /// deterministic, so the sampling options are refused with it rather than ignored, and so
    /// are --stop strings unless the caller cuts the best hypothesis at them
    /// (`cuts_stop_strings`, as `cllm-eval generate-and-score` does).
    pub fn beam_config(
        &self,
        beams: usize,
        stop_tokens: &[u32],
        cuts_stop_strings: bool,
    ) -> Result<BeamConfig> {
        let ignored = [
            (self.temperature.is_some(), "--temperature"),
            (self.top_k.is_some(), "--top-k"),
            (self.top_p.is_some(), "--top-p"),
            (self.min_p.is_some(), "--min-p"),
            (self.repetition_penalty.is_some(), "--repetition-penalty"),
            (self.greedy, "--greedy"),
            (!cuts_stop_strings && !self.stop.is_empty(), "--stop"),
        ];
        if let Some((_, flag)) = ignored.iter().find(|(given, _)| *given) {
            bail!("{flag} does not apply to beam search (--beams), which ranks beams by their summed log-probability and stops on tokens (--stop-id)");
        }
        let length_penalty = self.length_penalty.unwrap_or(1.0);
        if !length_penalty.is_finite() {
            bail!("--length-penalty {length_penalty} is not a finite number");
        }
        Ok(BeamConfig {
            beams,
            max_new_tokens: self.max_new_tokens,
            length_penalty,
            eos: stop_tokens.to_vec(),
            early_stopping: self.early_stopping,
        })
    }

    /// Sampled or greedy generation (stop strings are matched on text, by [`generate_text`]).
    pub fn generate_config(&self, sample: &SampleConfig, stop_tokens: &[u32]) -> GenerateConfig {
        GenerateConfig {
            sample: sample.clone(),
            max_new_tokens: self.max_new_tokens,
            stop_tokens: stop_tokens.to_vec(),
            stop_sequences: Vec::new(),
            seed: self.seed,
        }
    }
}

/// The directory the model of `path` is read from: `path` itself (a Hugging Face GPT-2 directory
/// or a cllm checkpoint), or the checkpoint a cllm run directory's `latest` names.
pub fn model_dir(path: &Path) -> Result<PathBuf> {
    Ok(match path.join(checkpoint::CONFIG_FILE).exists() {
        true => path.to_path_buf(),
        false => match checkpoint::read_pointer(path, checkpoint::LATEST)? {
            Some(name) => path.join(name),
            None => path.to_path_buf(),
        },
    })
}

/// The files that loading the model of `path` and its own tokenizer may read ([`load_model`],
/// [`Codec::for_model`]): the run directory's `latest` when it leads there, and the model
/// directory's config, weights, manifest and tokenizer files. Some may not exist.
pub fn model_files(path: &Path) -> Result<Vec<PathBuf>> {
    let dir = model_dir(path)?;
    let mut files = Vec::new();
    if dir != path {
        files.push(path.join(checkpoint::LATEST));
    }
    for name in [
        checkpoint::CONFIG_FILE,
        checkpoint::MODEL_FILE,
        checkpoint::MANIFEST_FILE,
        checkpoint::TOKENIZER_FILE,
        "vocab.json",
        "merges.txt",
    ] {
        files.push(dir.join(name));
    }
    Ok(files)
}

/// Loads the model of `path`: a Hugging Face GPT-2 directory, a cllm checkpoint, or a cllm run
/// directory (its `latest` checkpoint). Returns the model, its config and the directory read.
pub fn load_model(path: &Path) -> Result<(Gpt, HfConfig, PathBuf)> {
    let dir = model_dir(path)?;
    let (model, hf) =
        Gpt::from_hf_dir(&dir).with_context(|| format!("loading the model {}", dir.display()))?;
    Ok((model, hf, dir))
}

/// How token ids become text and back.
pub enum Codec {
    Bpe(Box<Tokenizer>),
    /// Ids below 256 are bytes.
    Bytes,
    /// No tokenizer: ids only.
    None,
}

impl Codec {
    /// The tokenizer for the model of `model_dir` (its `config.json` is `hf`): `tokenizer` (a
    /// cllm tokenizer file or `gpt2`), else the `tokenizer.json` a cllm checkpoint stores in
    /// `model_dir`, else the directory's `vocab.json` + `merges.txt`, else bytes for models of
    /// at most 257 tokens. A Hugging Face `tokenizer.json` (same name, another format) is passed
    /// over: its directory has `vocab.json` + `merges.txt` beside it, or no tokenizer here.
    ///
    /// A tokenizer that cannot be the model's is refused: one with more tokens than the model
    /// has ids, or whose `<|endoftext|>` is not the model's `eos_token_id` (a GPT-2 directory
    /// with a small BPE of one's own read every id as other text).
    pub fn for_model(model_dir: &Path, tokenizer: Option<&str>, hf: &HfConfig) -> Result<Codec> {
        let vocab = hf.gpt.vocab_size;
        let tok = match tokenizer {
            Some("gpt2") => Some(Tokenizer::gpt2_builtin()),
            Some(file) => Some(
                Tokenizer::load(Path::new(file))
                    .with_context(|| format!("loading the tokenizer {file}"))?,
            ),
            None => {
                let (enc, merges) = (model_dir.join("vocab.json"), model_dir.join("merges.txt"));
                let own = model_dir.join(checkpoint::TOKENIZER_FILE);
                if own.is_file() && !is_hf_tokenizer(&own) {
                    Some(
                        Tokenizer::load(&own)
                            .with_context(|| format!("loading {}", own.display()))?,
                    )
                } else if enc.is_file() && merges.is_file() {
                    Some(Tokenizer::gpt2(&enc, &merges).with_context(|| {
                        format!("loading the tokenizer of {}", model_dir.display())
                    })?)
                } else {
                    None
                }
            }
        };
        // A model may have more ids than its tokenizer (a vocabulary padded or grown for
        // training); ids past the tokenizer print as U+FFFD. Fewer cannot work: the prompt's
        // ids would fall outside the model.
        match tok {
            Some(t) if t.vocab_size() > vocab => bail!(
                "the tokenizer has {} tokens but the model {} only {vocab}: they do not belong together; pass the model's own --tokenizer",
                t.vocab_size(),
                model_dir.display()
            ),
            Some(t) if hf.eos_token_id.is_some_and(|eos| eos != u64::from(t.eot_token())) => bail!(
                "the tokenizer's <|endoftext|> is token {} but {} names {} (eos_token_id): they do not belong together; pass the model's own --tokenizer",
                t.eot_token(),
                model_dir.join(checkpoint::CONFIG_FILE).display(),
                hf.eos_token_id.unwrap_or_default()
            ),
            Some(t) => Ok(Codec::Bpe(Box::new(t))),
            None if vocab <= 257 => Ok(Codec::Bytes),
            None => Ok(Codec::None),
        }
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        match self {
            Codec::Bpe(t) => Ok(t.encode_ordinary(text)),
            Codec::Bytes => Ok(text.bytes().map(u32::from).collect()),
            Codec::None => bail!(
                "no tokenizer cllm reads came with this model (a cllm tokenizer.json, or vocab.json + merges.txt): pass --tokenizer FILE|gpt2, or use --prompt-ids and --print-ids"
            ),
        }
    }

    /// Appends the bytes of token `id` (`<|id|>` for an id the codec cannot spell).
    pub fn bytes(&self, id: u32, out: &mut Vec<u8>) {
        match self {
            Codec::Bpe(t) => out.extend_from_slice(t.token_bytes(id).unwrap_or(b"\xEF\xBF\xBD")),
            Codec::Bytes if id < 256 => out.push(id as u8),
            _ => out.extend_from_slice(format!("<|{id}|>").as_bytes()),
        }
    }

    /// The text of `ids`, invalid UTF-8 replaced by U+FFFD.
    pub fn text(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            self.bytes(id, &mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// Whether `path` is a Hugging Face tokenizer file (JSON with a `model` object and no `format`
/// field), which a Hugging Face model directory may hold under cllm's tokenizer file name.
pub fn is_hf_tokenizer(path: &Path) -> bool {
    std::fs::read(path)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .is_some_and(|v| v.get("format").is_none() && v.get("model").is_some_and(|m| m.is_object()))
}

/// A row of cllm-generate's `--batch` output: `bytes` with backslash, newline and carriage return
/// written as `\\`, `\n` and `\r`, so that each row is one line and the original text comes back
/// by undoing exactly those three escapes. Everything else (tabs included) is left as generated.
pub fn escape_line(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    for &b in bytes {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(b),
        }
    }
    out
}

/// Continues every prompt as one left-padded batch. Each new token's bytes go to `on_bytes(row,
/// bytes)` as it is produced (an error stops generation and is returned); a row stops at a stop
/// token, at --max-new-tokens, or once its text contains one of `stop_strings` (empty ones never
/// match). The text a row passes to `on_bytes` ends with the first stop string it contains: the
/// rest of the token that completes it is left out.
pub fn generate_text(
    model: &Gpt,
    pool: &Spheres,
    codec: &Codec,
    cfg: &GenerateConfig,
    stop_strings: &[Vec<u8>],
    prompts: &[Vec<u32>],
    mut on_bytes: impl FnMut(usize, &[u8]) -> std::io::Result<()>,
) -> Result<Generation> {
    let longest = stop_strings.iter().map(Vec::len).max().unwrap_or(0);
    let mut text: Vec<Vec<u8>> = vec![Vec::new(); prompts.len()];
    let refs: Vec<&[u32]> = prompts.iter().map(Vec::as_slice).collect();
    let mut io_err = None;
    let g = generate::generate(model, Some(pool), &refs, cfg, |row, tok| {
        let before = text[row].len();
        codec.bytes(tok, &mut text[row]);
        // Where the first stop string ends: no match ended before this token's bytes (the row
        // would have stopped), so any match ends in them and starts at most `longest` back.
        let from = before.saturating_sub(longest);
        let window = &text[row][from..];
        let stop_end = stop_strings
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| {
                let at = window.windows(s.len()).position(|w| w == s.as_slice())?;
                Some(from + at + s.len())
            })
            .min();
        let end = stop_end.unwrap_or(text[row].len());
        if let Err(e) = on_bytes(row, &text[row][before..end]) {
            io_err = Some(e);
            return Control::Stop;
        }
        match stop_end {
            Some(_) => Control::Stop,
            None => Control::Continue,
        }
    })?;
    if let Some(e) = io_err {
        return Err(e).context("writing the generated text");
    }
    Ok(g)
}

/// The best hypothesis of a beam search from `prompt`, and the time it took.
pub fn beam_best(
    model: &Gpt,
    pool: &Spheres,
    prompt: &[u32],
    cfg: &BeamConfig,
) -> Result<(BeamHypothesis, Duration)> {
    let start = Instant::now();
    let mut hyps = generate::beam_search(model, Some(pool), prompt, cfg)?;
    let secs = start.elapsed();
    if hyps.is_empty() {
        bail!("beam search returned no hypothesis");
    }
    Ok((hyps.swap_remove(0), secs))
}

#[cfg(test)]
mod tests {
    use super::escape_line;

    #[test]
    fn batch_rows_escape_backslash_newline_and_carriage_return_only() {
        let row = b"a\\n\nb\r\n\tc\xff";
        assert_eq!(escape_line(row), b"a\\\\n\\nb\\r\\n\tc\xff");
        assert!(!escape_line(row).contains(&b'\n'));
    }
}
