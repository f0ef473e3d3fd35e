//! A set of shards for a data directory: `train_NNNNNN.bin` and `val_NNNNNN.bin`, as
//! cllm-prepare writes them.
//!
//! The token stream is the documents in order, each preceded by the end-of-text token (as llm.c's
//! data scripts do). Its last `round(val_fraction × total)` tokens are the validation split, the
//! rest the training split (a token-level split, so one long document splits too). Each split is
//! cut into shards of `shard_tokens` tokens (the last one shorter), numbered from 000000.
//!
//! The set is written into a staging directory inside the target first (every shard atomically,
//! [`ShardWriter`]), with the files that belong to it (cllm-prepare's `tokenizer.json`). If
//! writing fails (a full disk), the staging directory is removed and an earlier set in the
//! directory is left whole, its shards beside their own tokenizer; so replacing a set needs room
//! for both at once. Only when all of it is on disk is it published: the old set's files (its
//! tokenizer) removed, the shards renamed into place, stale `train_*.bin` / `val_*.bin` shards of
//! an earlier, larger set removed (a glob over the directory then sees exactly this set), and the
//! new files renamed in last. The summary says how many earlier shards were replaced and removed. A crash while publishing leaves shards without a tokenizer, which
//! fails loudly, never shards beside another set's tokenizer.

use std::fs;
use std::path::{Path, PathBuf};

use super::shard::ShardWriter;
use super::DataError;
use crate::atomic_file::{sync_dir, write_atomic};

/// How a set of shards is cut.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ShardSetConfig {
    /// The tokenizer's vocabulary size (picks u16 or u32 shards; every token must be below it).
    pub vocab_size: usize,
    /// Tokens per shard (the last shard of each split may hold fewer).
    pub shard_tokens: usize,
    /// The end-of-text token written before each document.
    pub eot: u32,
    /// Fraction of the token stream, at its end, that goes to `val_*.bin`.
    pub val_fraction: f64,
}

/// The shards written, with their token counts, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardSetSummary {
    /// `train_NNNNNN.bin` files.
    pub train: Vec<(PathBuf, usize)>,
    /// `val_NNNNNN.bin` files.
    pub val: Vec<(PathBuf, usize)>,
    /// Shards of an earlier set in the directory that a shard of this set replaced (same name).
    pub replaced: usize,
    /// Shards of an earlier, larger set that were removed (no shard of this set has their name).
    pub removed: usize,
}

impl ShardSetSummary {
    /// Tokens written in all shards.
    pub fn tokens(&self) -> usize {
        self.train.iter().chain(&self.val).map(|(_, n)| n).sum()
    }
}

/// The file name of shard `index` of `split` ("train" or "val").
pub fn shard_name(split: &str, index: usize) -> String {
    format!("{split}_{index:06}.bin")
}

/// The index NNNNNN of a file named `<split>_NNNNNN.bin`.
fn shard_index(name: &str, split: &str) -> Option<usize> {
    name.strip_prefix(split)
        .and_then(|r| r.strip_prefix('_'))
        .and_then(|r| r.strip_suffix(".bin"))
        .filter(|n| n.len() == 6 && n.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|n| n.parse::<usize>().ok())
}

/// What a shard set in `dir` consists of now: its `train_NNNNNN.bin` and `val_NNNNNN.bin` files
/// and the staging directory an interrupted write left (not the files written beside the shards,
/// which the caller names). Writing a new set replaces or removes all of them, so a caller that
/// reads input from under `dir` leaves them out. Empty when `dir` does not exist.
pub fn shard_set_files(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut files = Vec::new();
    for e in fs::read_dir(dir).map_err(DataError::io("list", dir))? {
        let e = e.map_err(DataError::io("list", dir))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if ["train", "val"]
            .iter()
            .any(|s| shard_index(&name, s).is_some())
        {
            files.push(e.path());
        }
    }
    files.sort();
    files.push(dir.join(STAGING));
    Ok(files)
}

/// Writes one split as consecutive shards `DIR/<split>_NNNNNN.bin`, rolling over to the next file
/// every `shard_tokens` tokens.
pub struct ShardSetWriter {
    dir: PathBuf,
    split: &'static str,
    vocab_size: usize,
    shard_tokens: usize,
    current: Option<ShardWriter>,
    done: Vec<(PathBuf, usize)>,
}

impl ShardSetWriter {
    /// Starts split `split` ("train" or "val") in `dir` (which must exist).
    pub fn new(
        dir: impl AsRef<Path>,
        split: &'static str,
        vocab_size: usize,
        shard_tokens: usize,
    ) -> Result<ShardSetWriter, DataError> {
        if shard_tokens == 0 || shard_tokens > super::shard::MAX_SHARD_TOKENS {
            return Err(DataError::Invalid(format!(
                "shard size {shard_tokens} tokens is outside 1 ..= {}",
                super::shard::MAX_SHARD_TOKENS
            )));
        }
        Ok(ShardSetWriter {
            dir: dir.as_ref().to_path_buf(),
            split,
            vocab_size,
            shard_tokens,
            current: None,
            done: Vec::new(),
        })
    }

    /// Appends tokens, starting new shards as they fill.
    pub fn push(&mut self, mut tokens: &[u32]) -> Result<(), DataError> {
        while !tokens.is_empty() {
            if self.current.is_none() {
                let path = self.dir.join(shard_name(self.split, self.done.len()));
                self.current = Some(ShardWriter::create(path, self.vocab_size)?);
            }
            let w = self.current.as_mut().expect("created above");
            let n = (self.shard_tokens - w.len()).min(tokens.len());
            w.push(&tokens[..n])?;
            tokens = &tokens[n..];
            if w.len() == self.shard_tokens {
                self.close_current()?;
            }
        }
        Ok(())
    }

    fn close_current(&mut self) -> Result<(), DataError> {
        if let Some(w) = self.current.take() {
            let path = self.dir.join(shard_name(self.split, self.done.len()));
            let n = w.finish()?;
            self.done.push((path, n));
        }
        Ok(())
    }

    /// Finishes the last shard; returns every shard written with its token count.
    pub fn finish(mut self) -> Result<Vec<(PathBuf, usize)>, DataError> {
        self.close_current()?;
        Ok(std::mem::take(&mut self.done))
    }
}

/// The staging directory's name inside the target directory.
const STAGING: &str = ".cllm-staging";

/// Writes `docs` (each a document's tokens) as a train/validation shard set in `dir` (created if
/// missing), with `files` (name, contents) published beside the shards in the same step; see the
/// module documentation. An error when there are no documents.
pub fn write_shard_set<D: AsRef<[u32]>>(
    dir: impl AsRef<Path>,
    docs: &[D],
    cfg: &ShardSetConfig,
    files: &[(&str, &[u8])],
) -> Result<ShardSetSummary, DataError> {
    let dir = dir.as_ref();
    if docs.is_empty() {
        return Err(DataError::Empty {
            what: dir.display().to_string(),
            problem: "no documents to write".into(),
            fix: "give cllm-prepare some non-empty input",
        });
    }
    if !(0.0..1.0).contains(&cfg.val_fraction) {
        return Err(DataError::Invalid(format!(
            "validation fraction {} is outside [0, 1)",
            cfg.val_fraction
        )));
    }
    fs::create_dir_all(dir).map_err(DataError::io("create directory", dir))?;
    let total: usize = docs.iter().map(|d| d.as_ref().len() + 1).sum();
    let n_val = (total as f64 * cfg.val_fraction).round() as usize;
    let n_train = total - n_val;
    if n_train == 0 {
        return Err(DataError::Invalid(format!(
            "validation fraction {} of {total} tokens leaves none for training; lower \
             --val-fraction or give more input",
            cfg.val_fraction
        )));
    }

    let staging = dir.join(STAGING);
    // Left by an interrupted run (nothing in it was published), or something else by that name.
    match fs::symlink_metadata(&staging) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(&staging),
        Ok(_) => fs::remove_file(&staging),
        Err(_) => Ok(()),
    }
    .map_err(DataError::io("remove", &staging))?;
    fs::create_dir(&staging).map_err(DataError::io("create directory", &staging))?;
    let staged = (|| {
        let mut train = ShardSetWriter::new(&staging, "train", cfg.vocab_size, cfg.shard_tokens)?;
        let mut val = ShardSetWriter::new(&staging, "val", cfg.vocab_size, cfg.shard_tokens)?;
        let mut at = 0usize; // tokens of the stream pushed so far
        for d in docs {
            let eot = [cfg.eot];
            for part in [&eot[..], d.as_ref()] {
                let k = n_train.saturating_sub(at).min(part.len());
                train.push(&part[..k])?;
                val.push(&part[k..])?;
                at += part.len();
            }
        }
        let (train, val) = (train.finish()?, val.finish()?);
        for (name, bytes) in files {
            let path = staging.join(name);
            write_atomic(&path, bytes).map_err(DataError::io("write", &path))?;
        }
        Ok((train, val))
    })();
    let (train, val) = match staged {
        Ok(written) => written,
        Err(e) => {
            // Best effort: the write error is the one to report.
            let _ = fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    // Publish. The old set's own files (its tokenizer) go first, so that a crash part way
    // leaves a directory without them, which fails loudly, never new shards beside an old
    // tokenizer; then the shards, the stale ones' removal, and the new files last.
    for (name, _) in files {
        let old = dir.join(name);
        match fs::remove_file(&old) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(DataError::io("remove", &old)(e));
            }
            _ => {}
        }
    }
    // Durable before any new shard is: else a crash could persist the renames below, and not
    // these removals, leaving new shards beside the old set's tokenizer.
    sync_dir(dir).map_err(DataError::io("sync", dir))?;
    let mut replaced = 0;
    let mut publish = |written: Vec<(PathBuf, usize)>| -> Result<Vec<(PathBuf, usize)>, DataError> {
        written
            .into_iter()
            .map(|(from, n)| {
                let to = dir.join(from.file_name().expect("a shard path names a file"));
                replaced += fs::symlink_metadata(&to).is_ok() as usize;
                fs::rename(&from, &to).map_err(DataError::io("rename", &from))?;
                Ok((to, n))
            })
            .collect()
    };
    let (train, val) = (publish(train)?, publish(val)?);
    let removed = remove_stale(dir, "train", train.len())? + remove_stale(dir, "val", val.len())?;
    let summary = ShardSetSummary {
        train,
        val,
        replaced,
        removed,
    };
    for (name, _) in files {
        let from = staging.join(name);
        fs::rename(&from, dir.join(name)).map_err(DataError::io("rename", &from))?;
    }
    sync_dir(dir).map_err(DataError::io("sync", dir))?;
    fs::remove_dir(&staging).map_err(DataError::io("remove", &staging))?;
    Ok(summary)
}

/// Removes `<split>_NNNNNN.bin` in `dir` with NNNNNN ≥ `keep`; returns how many.
fn remove_stale(dir: &Path, split: &str, keep: usize) -> Result<usize, DataError> {
    let mut removed = 0;
    for e in fs::read_dir(dir).map_err(DataError::io("list", dir))? {
        let e = e.map_err(DataError::io("list", dir))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if shard_index(&name, split).is_some_and(|i| i >= keep) {
            fs::remove_file(e.path()).map_err(DataError::io("remove stale shard", e.path()))?;
            removed += 1;
        }
    }
    Ok(removed)
}
