//! Serves (B, T) training windows with next-token targets from shards or from memory.
//!
//! The data is cut into *windows* of T + 1 consecutive tokens with stride T: window `w` of a shard
//! of N tokens covers tokens `w·T ..= w·T + T`, and a shard holds `(N − 1) / T` of them (the tail
//! that does not fill a window is not served). A window gives one row of a batch: inputs are its
//! first T tokens, targets its last T (the inputs shifted by one, as in llm.c's DataLoader).
//! Windows never cross shard boundaries.
//!
//! An *epoch* serves every window of every shard exactly once: in file order without shuffling,
//! or in a permutation drawn from (seed, epoch) with shuffling. Batches run on across epoch
//! boundaries (the last batch of an epoch may end with the first windows of the next), so every
//! window is served once per epoch whatever B is. Because the permutation is a pure function of
//! (seed, epoch), the loader's whole state is [`DataPosition`]: epoch and cursor (windows served
//! in this epoch), plus the seed and window count it was made with so that restoring on other data
//! is refused.
//!
//! Shards are mapped, not read: a batch costs one widening copy of its tokens into the caller's
//! buffers and nothing else; [`Loader::next_batch_into`] allocates nothing (the permutation is
//! redrawn in place at epoch boundaries).

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::shard::{Shard, Tokens};
use super::DataError;
use crate::rng::Rng;

/// Name used in errors about an in-memory token source.
const MEMORY_NAME: &str = "<memory>";

/// Where the tokens come from.
#[derive(Clone, Debug)]
pub enum TokenSource {
    /// Shard files, served in this order (before shuffling).
    Shards(Vec<PathBuf>),
    /// A glob pattern for shard files (`data/train_*.bin`); matches are sorted by path.
    Glob(String),
    /// Tokens already in memory (the embedded default corpus).
    Memory(Vec<u32>),
}

impl TokenSource {
    /// Splits into a training and an optional validation source.
    ///
    /// - `Memory`: the last `val_fraction` of the tokens (rounded to whole tokens) is validation;
    ///   `val_fraction = 0` gives none.
    /// - `Glob` naming a directory: `DIR/train_*.bin` and, if any exist, `DIR/val_*.bin`.
    /// - `Glob` whose file-name part contains `train_`: the same pattern with `val_` in its
    ///   place is validation when it matches a file.
    /// - `Shards`: files whose names start with `val_` are validation, the others training.
    ///
    /// For shards the split was made by cllm-prepare, so `val_fraction` is not used.
    pub fn train_val(
        self,
        val_fraction: f64,
    ) -> Result<(TokenSource, Option<TokenSource>), DataError> {
        match self {
            TokenSource::Memory(mut tokens) => {
                if !(0.0..1.0).contains(&val_fraction) {
                    return Err(DataError::Invalid(format!(
                        "validation fraction {val_fraction} is outside [0, 1)"
                    )));
                }
                let n_val = (tokens.len() as f64 * val_fraction).round() as usize;
                if n_val == 0 {
                    return Ok((TokenSource::Memory(tokens), None));
                }
                let val = tokens.split_off(tokens.len() - n_val);
                Ok((TokenSource::Memory(tokens), Some(TokenSource::Memory(val))))
            }
            TokenSource::Glob(pattern) => {
                let p = Path::new(&pattern);
                if p.is_dir() {
                    let train = p.join("train_*.bin").to_string_lossy().into_owned();
                    let val = p.join("val_*.bin").to_string_lossy().into_owned();
                    let val = (!glob_paths(&val)?.is_empty()).then_some(TokenSource::Glob(val));
                    return Ok((TokenSource::Glob(train), val));
                }
                let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
                let val = match name {
                    Some(name) if name.contains("train_") => {
                        let val = p
                            .with_file_name(name.replacen("train_", "val_", 1))
                            .to_string_lossy()
                            .into_owned();
                        (!glob_paths(&val)?.is_empty()).then_some(TokenSource::Glob(val))
                    }
                    _ => None,
                };
                Ok((TokenSource::Glob(pattern), val))
            }
            TokenSource::Shards(paths) => {
                let (val, train): (Vec<PathBuf>, Vec<PathBuf>) = paths.into_iter().partition(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("val_"))
                });
                let val = (!val.is_empty()).then_some(TokenSource::Shards(val));
                Ok((TokenSource::Shards(train), val))
            }
        }
    }
}

/// The files matching a glob pattern, sorted; empty when none match.
fn glob_paths(pattern: &str) -> Result<Vec<PathBuf>, DataError> {
    let paths = glob::glob(pattern).map_err(|e| DataError::Pattern {
        pattern: pattern.to_string(),
        problem: e.to_string(),
    })?;
    let mut out = Vec::new();
    for entry in paths {
        let path = entry.map_err(|e| DataError::Io {
            op: "list",
            path: e.path().to_path_buf(),
            source: e.into(),
        })?;
        if path.is_file() {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// The shard files matching `pattern`, sorted by path; an error when none match.
pub fn shard_paths(pattern: &str) -> Result<Vec<PathBuf>, DataError> {
    let out = glob_paths(pattern)?;
    if out.is_empty() {
        return Err(DataError::Empty {
            what: format!("pattern {pattern:?}"),
            problem: "no file matches".into(),
            fix: "check the path, quote the pattern so the shell does not expand it, or run \
                  cllm-prepare to write shards",
        });
    }
    Ok(out)
}

/// How batches are cut and ordered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoaderConfig {
    /// B: rows per batch.
    pub batch: usize,
    /// T: tokens per row.
    pub seq: usize,
    /// Seed of the per-epoch permutations.
    pub seed: u64,
    /// Serve windows in a fresh random order each epoch (false: file order, e.g. validation).
    pub shuffle: bool,
    /// When set, every token is checked to be below it when the loader is made.
    pub vocab_size: Option<usize>,
}

/// Where a loader is in its data: all a checkpoint needs to resume the exact batch sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DataPosition {
    /// Completed epochs.
    pub epoch: u64,
    /// Windows served in the current epoch (the index of the next one in its order).
    pub cursor: u64,
    /// The loader's seed; with `epoch` it fixes the permutation, which is the whole random state.
    pub seed: u64,
    /// Windows per epoch of the data the position was taken on.
    pub windows: u64,
}

impl DataPosition {
    /// As a JSON object `{"epoch", "cursor", "seed", "windows"}` (the seed as a string: JSON
    /// numbers lose u64 precision in many readers).
    pub fn to_json(&self) -> Value {
        json!({
            "epoch": self.epoch,
            "cursor": self.cursor,
            "seed": self.seed.to_string(),
            "windows": self.windows,
        })
    }

    /// Parses [`DataPosition::to_json`]'s output.
    pub fn from_json(v: &Value) -> Result<DataPosition, DataError> {
        let num = |key: &str| {
            v.get(key).and_then(Value::as_u64).ok_or_else(|| {
                DataError::Invalid(format!("data position: `{key}` missing or not an integer"))
            })
        };
        let seed = v
            .get("seed")
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| {
                DataError::Invalid("data position: `seed` missing or not an integer string".into())
            })?;
        Ok(DataPosition {
            epoch: num("epoch")?,
            cursor: num("cursor")?,
            seed,
            windows: num("windows")?,
        })
    }
}

/// The tokens behind a loader.
enum Store {
    /// Mapped shards, with `starts[s]` the first global window of shard `s` (`starts.len()` =
    /// shards + 1; the last entry is the window count).
    Shards {
        shards: Vec<Shard>,
        starts: Vec<usize>,
    },
    /// In-memory tokens.
    Memory(Vec<u32>),
}

/// Serves batches of windows; see the module documentation.
pub struct Loader {
    store: Store,
    cfg: LoaderConfig,
    /// Windows per epoch.
    windows: usize,
    /// The current epoch's window order (empty when not shuffling: identity).
    order: Vec<u32>,
    epoch: u64,
    cursor: usize,
}

impl Loader {
    /// Opens (and checks) the source and positions the loader at the start of epoch 0.
    pub fn new(source: TokenSource, cfg: LoaderConfig) -> Result<Loader, DataError> {
        if cfg.batch == 0 || cfg.seq == 0 {
            return Err(DataError::Invalid(format!(
                "batch size {} and sequence length {} must both be at least 1",
                cfg.batch, cfg.seq
            )));
        }
        let t = cfg.seq;
        let (store, windows, what) = match source {
            TokenSource::Memory(tokens) => {
                if let Some(v) = cfg.vocab_size {
                    if let Some((position, token)) = Tokens::U32(&tokens).first_out_of_range(v) {
                        return Err(DataError::TokenOutOfRange {
                            source_name: PathBuf::from(MEMORY_NAME),
                            position,
                            token,
                            vocab_size: v,
                        });
                    }
                }
                let windows = tokens.len().saturating_sub(1) / t;
                let what = format!("{MEMORY_NAME} ({} tokens)", tokens.len());
                (Store::Memory(tokens), windows, what)
            }
            TokenSource::Glob(pattern) => {
                let paths = shard_paths(&pattern)?;
                let what = format!("pattern {pattern:?} ({} shards)", paths.len());
                let (store, windows) = open_shards(&paths, &cfg)?;
                (store, windows, what)
            }
            TokenSource::Shards(paths) => {
                if paths.is_empty() {
                    return Err(DataError::Empty {
                        what: "shard list".into(),
                        problem: "no shard files given".into(),
                        fix: "pass at least one shard file",
                    });
                }
                let what = format!("{} shards from {}", paths.len(), paths[0].display());
                let (store, windows) = open_shards(&paths, &cfg)?;
                (store, windows, what)
            }
        };
        if windows == 0 {
            return Err(DataError::Empty {
                what,
                problem: format!(
                    "no shard holds T + 1 = {} tokens, so there is not one training window",
                    t + 1
                ),
                fix: "give more text, or a shorter sequence length",
            });
        }
        if windows > u32::MAX as usize {
            return Err(DataError::Invalid(format!(
                "{what}: {windows} windows of {t} tokens are more than one epoch can order \
                 (2^32 − 1); use a longer sequence length or fewer shards"
            )));
        }
        let order = if cfg.shuffle {
            Vec::with_capacity(windows)
        } else {
            Vec::new()
        };
        let mut loader = Loader {
            store,
            cfg,
            windows,
            order,
            epoch: 0,
            cursor: 0,
        };
        loader.draw_order();
        Ok(loader)
    }

    /// The configuration it was made with.
    pub fn config(&self) -> &LoaderConfig {
        &self.cfg
    }

    /// Windows (rows) per epoch.
    pub fn windows(&self) -> usize {
        self.windows
    }

    /// Tokens in the source (including those in no window).
    pub fn tokens(&self) -> usize {
        match &self.store {
            Store::Shards { shards, .. } => shards.iter().map(Shard::len).sum(),
            Store::Memory(t) => t.len(),
        }
    }

    /// Whole batches per epoch (`windows / B`; see the module documentation for the remainder).
    pub fn batches_per_epoch(&self) -> usize {
        self.windows / self.cfg.batch
    }

    /// Where the loader is.
    pub fn position(&self) -> DataPosition {
        DataPosition {
            epoch: self.epoch,
            cursor: self.cursor as u64,
            seed: self.cfg.seed,
            windows: self.windows as u64,
        }
    }

    /// Moves to `pos` (taken with [`Loader::position`] from a loader on the same data and seed):
    /// the following batches are exactly those that followed it then.
    pub fn restore(&mut self, pos: DataPosition) -> Result<(), DataError> {
        if pos.seed != self.cfg.seed || pos.windows != self.windows as u64 {
            return Err(DataError::Invalid(format!(
                "data position was saved with seed {} on {} windows, but this loader has seed {} \
                 and {} windows: the data, sequence length or seed changed since the checkpoint; \
                 resume with the same data and settings",
                pos.seed, pos.windows, self.cfg.seed, self.windows
            )));
        }
        // cursor = windows: the epoch is fully served; the next batch starts the next epoch.
        if pos.cursor > self.windows as u64 {
            return Err(DataError::Invalid(format!(
                "data position cursor {} is past the {} windows of an epoch",
                pos.cursor, self.windows
            )));
        }
        self.epoch = pos.epoch;
        self.cursor = pos.cursor as usize;
        self.draw_order();
        Ok(())
    }

    /// Back to the first window of epoch 0 (for a validation pass).
    pub fn rewind(&mut self) {
        self.epoch = 0;
        self.cursor = 0;
        self.draw_order();
    }

    /// Fills `tokens` (B, T) with the next B windows' inputs and `targets` (B, T) with their
    /// next tokens. Allocates nothing.
    pub fn next_batch_into(
        &mut self,
        tokens: &mut [u32],
        targets: &mut [u32],
    ) -> Result<(), DataError> {
        let (b, t) = (self.cfg.batch, self.cfg.seq);
        if tokens.len() != b * t || targets.len() != b * t {
            return Err(DataError::Invalid(format!(
                "batch buffers hold {} and {} tokens, but B × T = {b} × {t} = {}",
                tokens.len(),
                targets.len(),
                b * t
            )));
        }
        for (row_in, row_tg) in tokens.chunks_exact_mut(t).zip(targets.chunks_exact_mut(t)) {
            if self.cursor == self.windows {
                self.epoch += 1;
                self.cursor = 0;
                self.draw_order();
            }
            let w = if self.cfg.shuffle {
                self.order[self.cursor] as usize
            } else {
                self.cursor
            };
            self.window_into(w, row_in, row_tg);
            self.cursor += 1;
        }
        Ok(())
    }

    /// Fills one row: `inputs` (T) and `targets` (T) of window `w` (`w < windows()`).
    pub fn window_into(&self, w: usize, inputs: &mut [u32], targets: &mut [u32]) {
        let t = self.cfg.seq;
        assert!(w < self.windows && inputs.len() == t && targets.len() == t);
        let (src, start) = match &self.store {
            Store::Memory(v) => (Tokens::U32(v), w * t),
            Store::Shards { shards, starts } => {
                // The shard whose window range holds w: the last start ≤ w.
                let s = starts.partition_point(|&x| x <= w) - 1;
                (shards[s].tokens(), (w - starts[s]) * t)
            }
        };
        // Targets are the inputs shifted by one: tokens start + 1 ..= start + T.
        src.copy_to(start, inputs);
        src.copy_to(start + 1, targets);
    }

    /// Redraws `order` for the current epoch in place (no allocation after the first).
    fn draw_order(&mut self) {
        if !self.cfg.shuffle {
            return;
        }
        self.order.clear();
        self.order.extend(0..self.windows as u32);
        let mut rng = Rng::new(epoch_seed(self.cfg.seed, self.epoch));
        rng.shuffle(&mut self.order);
    }
}

/// The permutation seed of `epoch`: the epoch mixed into the seed through one Rng step so
/// that neighbouring (seed, epoch) pairs give unrelated streams.
fn epoch_seed(seed: u64, epoch: u64) -> u64 {
    Rng::new(seed ^ epoch.wrapping_mul(0xD1B5_4A32_D192_ED03)).next_u64()
}

/// Opens and checks every shard; returns the store and the window count.
fn open_shards(paths: &[PathBuf], cfg: &LoaderConfig) -> Result<(Store, usize), DataError> {
    let mut shards = Vec::with_capacity(paths.len());
    let mut starts = Vec::with_capacity(paths.len() + 1);
    let mut windows = 0usize;
    for p in paths {
        let shard = Shard::open(p)?;
        if let Some(v) = cfg.vocab_size {
            shard.check_vocab(v)?;
        }
        starts.push(windows);
        windows += (shard.len() - 1) / cfg.seq;
        shards.push(shard);
    }
    starts.push(windows);
    Ok((Store::Shards { shards, starts }, windows))
}
