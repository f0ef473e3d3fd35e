//! Saving and resuming the whole training state.
//!
//! A checkpoint directory (`step-NNNNNNNN`, written atomically by
//! [`write_checkpoint_dir`]) holds what `transformers` loads as-is, `config.json` and
//! `model.safetensors`, plus:
//! - `optimizer.safetensors`: the moments under PyTorch's state names prefixed to the tensor
//!   name, `exp_avg.h.0.attn.c_attn.weight` and `exp_avg_sq.…` (AdamW) or
//!   `momentum_buffer.…` (SGD), same shapes as the parameters;
//! - `trainer_state.json`: step, optimizer kind, hyperparameters and step count, schedule,
//!   clipping, batch shape, seed, RNG state, best validation loss, model shape, the caller's data
//!   position (an opaque JSON value) and the tokenizer file's name;
//! - optionally the caller's tokenizer file (opaque bytes);
//! - `manifest.json` with every file's size and SHA-256.
//!
//! Resuming verifies the manifest first, so a truncated, corrupted or swapped file is refused
//! with its name before anything is loaded.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::trainer::{TrainError, Trainer};
use super::{OptimizerKind, Schedule, TrainConfig};
use crate::checkpoint::{
    self as ckpt, read_pointer, read_tensors_into, rotate, step_dir_name, verify_checkpoint_dir,
    write_checkpoint_dir, write_pointer, FileSource, HfConfig, Rotation, SafetensorsWriter,
    TensorRef, TensorSink, WriteWith, BEST, LATEST,
};
use crate::model::{Gpt, GptConfig};
use crate::rng::Rng;
use crate::spheres::Spheres;

/// The optimizer moments' file.
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";

/// The training state's file.
pub const TRAINER_STATE_FILE: &str = "trainer_state.json";

const STATE_FORMAT: &str = "cllm-trainer-state";
const STATE_VERSION: u64 = 1;

/// What the caller adds to a checkpoint.
#[derive(Debug, Clone, Default)]
pub struct SaveOptions<'a> {
    /// Where the data loader is (any JSON value); handed back by resume.
    pub data_position: Value,
    /// The steps the run means to take in all; handed back by resume, so that a resumed run
    /// stops where the original would have (a constant schedule does not record it).
    pub total_steps: Option<u64>,
    /// A tokenizer file to store beside the model: (file name, contents).
    pub tokenizer: Option<(&'a str, &'a [u8])>,
    /// The tokenizer's end-of-text id, written as config.json's `bos_token_id` and
    /// `eos_token_id` (as GPT-2's says 50256), so that transformers' `generate` stops there.
    pub eot_token: Option<u32>,
    /// The validation loss at this step, if measured: the best one's checkpoint is never rotated
    /// away and the `best` pointer names it.
    pub val_loss: Option<f32>,
    /// How many of the newest step directories to keep (the latest and the best are kept anyway).
    pub keep: usize,
}

/// What `save` wrote.
#[derive(Debug, Clone)]
pub struct Saved {
    /// The checkpoint directory.
    pub dir: PathBuf,
    /// The best checkpoint's directory name so far, if any validation loss was given.
    pub best: Option<String>,
    pub rotation: Rotation,
}

/// A trainer restored from a checkpoint, with what the caller stored in it.
pub struct Resumed {
    pub trainer: Trainer,
    /// The checkpoint directory it came from.
    pub dir: PathBuf,
    /// The data position given to `save`.
    pub data_position: Value,
    /// The total steps given to `save` (`None` from checkpoints written without it).
    pub total_steps: Option<u64>,
    /// The tokenizer file given to `save`: (file name, contents).
    pub tokenizer: Option<(String, Vec<u8>)>,
}

/// Routes the moments' tensors into the optimizer arenas.
struct MomentSink<'a> {
    ranges: Vec<std::ops::Range<usize>>,
    /// Which arena each expected tensor goes to: 0 = m, 1 = v.
    which: Vec<usize>,
    m: &'a mut [f32],
    v: &'a mut [f32],
}

impl TensorSink for MomentSink<'_> {
    fn dst(&mut self, index: usize, _name: &str, _shape: &[usize]) -> &mut [f32] {
        let r = self.ranges[index].clone();
        if self.which[index] == 0 {
            &mut self.m[r]
        } else {
            &mut self.v[r]
        }
    }
}

/// The moment tensors' name prefixes (PyTorch's state keys) for an optimizer kind.
fn moment_names(kind: &OptimizerKind) -> &'static [&'static str] {
    match kind {
        OptimizerKind::AdamW { .. } => &["exp_avg", "exp_avg_sq"],
        OptimizerKind::Sgd { .. } => &["momentum_buffer"],
    }
}

fn optimizer_json(kind: &OptimizerKind, step: u64) -> Value {
    match *kind {
        OptimizerKind::AdamW {
            beta1,
            beta2,
            eps,
            weight_decay,
        } => json!({ "kind": "adamw", "beta1": beta1, "beta2": beta2, "eps": eps,
                     "weight_decay": weight_decay, "step": step }),
        OptimizerKind::Sgd {
            momentum,
            dampening,
            nesterov,
            weight_decay,
        } => json!({ "kind": "sgd", "momentum": momentum, "dampening": dampening,
                     "nesterov": nesterov, "weight_decay": weight_decay, "step": step }),
    }
}

fn schedule_json(s: &Schedule) -> Value {
    match *s {
        Schedule::Constant { lr } => json!({ "kind": "constant", "lr": lr }),
        Schedule::Cosine {
            lr,
            min_lr,
            warmup,
            total,
        } => {
            json!({ "kind": "cosine", "lr": lr, "min_lr": min_lr, "warmup": warmup, "total": total })
        }
        Schedule::Linear {
            lr,
            min_lr,
            warmup,
            total,
        } => {
            json!({ "kind": "linear", "lr": lr, "min_lr": min_lr, "warmup": warmup, "total": total })
        }
    }
}

fn model_json(c: &GptConfig) -> Value {
    json!({ "vocab_size": c.vocab_size, "n_positions": c.n_positions, "n_embd": c.n_embd,
            "n_layer": c.n_layer, "n_head": c.n_head })
}

/// Typed reads from trainer_state.json, each failure naming the key.
struct StateReader<'a> {
    file: String,
    v: &'a Value,
}

impl<'a> StateReader<'a> {
    fn err(&self, problem: String) -> TrainError {
        TrainError::State {
            file: self.file.clone(),
            problem,
        }
    }
    fn at(&self, key: &str) -> Result<StateReader<'a>, TrainError> {
        match self.v.get(key) {
            Some(v) => Ok(StateReader {
                file: self.file.clone(),
                v,
            }),
            None => Err(self.err(format!("missing key `{key}`"))),
        }
    }
    fn f64(&self, key: &str) -> Result<f64, TrainError> {
        self.at(key)?
            .v
            .as_f64()
            .ok_or_else(|| self.err(format!("`{key}` is not a number")))
    }
    fn f32(&self, key: &str) -> Result<f32, TrainError> {
        Ok(self.f64(key)? as f32)
    }
    fn u64(&self, key: &str) -> Result<u64, TrainError> {
        self.at(key)?
            .v
            .as_u64()
            .ok_or_else(|| self.err(format!("`{key}` is not a non-negative integer")))
    }
    fn usize(&self, key: &str) -> Result<usize, TrainError> {
        Ok(self.u64(key)? as usize)
    }
    fn bool(&self, key: &str) -> Result<bool, TrainError> {
        self.at(key)?
            .v
            .as_bool()
            .ok_or_else(|| self.err(format!("`{key}` is not a boolean")))
    }
    fn str(&self, key: &str) -> Result<&'a str, TrainError> {
        self.at(key)?
            .v
            .as_str()
            .ok_or_else(|| self.err(format!("`{key}` is not a string")))
    }
}

/// The checkpoint directory `path` names: itself when it holds a training state, else a run
/// directory's `latest` checkpoint.
pub fn checkpoint_dir(path: &Path) -> Result<PathBuf, TrainError> {
    if path.join(TRAINER_STATE_FILE).exists() {
        return Ok(path.to_path_buf());
    }
    if !path.exists() {
        return Err(TrainError::State {
            file: path.display().to_string(),
            problem: "does not exist".into(),
        });
    }
    match read_pointer(path, LATEST)? {
        Some(name) => Ok(path.join(name)),
        None => Err(TrainError::State {
            file: path.display().to_string(),
            problem: format!(
                "neither a checkpoint (no {TRAINER_STATE_FILE}) nor a run directory (no `{LATEST}` pointer)"
            ),
        }),
    }
}

/// `best` when it names a step directory present in `parent`, else `None`.
fn existing_best(parent: &Path, best: Option<(f32, String)>) -> Option<(f32, String)> {
    best.filter(|(_, name)| ckpt::parse_step_dir(name).is_some() && parent.join(name).is_dir())
}

impl Trainer {
    /// Writes the checkpoint `parent/step-NNNNNNNN` for the steps taken so far (atomically: on
    /// any error, a full disk included, nothing already saved changes), then points `latest` at
    /// it, updates `best` when `opts.val_loss` is the lowest yet, and rotates to `opts.keep`.
    /// Parameters holding a NaN or an infinity are refused ([`TrainError::NonFiniteParams`]):
    /// such a checkpoint could not be loaded, and it would become `latest`.
    pub fn save(&mut self, parent: &Path, opts: &SaveOptions<'_>) -> Result<Saved, TrainError> {
        if let Some(index) = self.model.params.iter().position(|p| !p.is_finite()) {
            return Err(TrainError::NonFiniteParams {
                step: self.step,
                index,
                value: self.model.params[index],
            });
        }
        fs::create_dir_all(parent)
            .map_err(ckpt::CheckpointError::io("create directory", parent))?;
        let name = step_dir_name(self.step);
        let cfg = *self.model.config();
        let mut meta = BTreeMap::new();
        meta.insert("step".to_owned(), self.step.to_string());
        let model_file = SafetensorsWriter::new(&self.model.tensor_refs(), &meta)?;

        let prefixes = moment_names(&self.optimizer.kind);
        let names: Vec<Vec<String>> = prefixes
            .iter()
            .map(|p| {
                self.model
                    .layout
                    .tensors
                    .iter()
                    .map(|t| format!("{p}.{}", t.name))
                    .collect()
            })
            .collect();
        let mut moment_refs = Vec::new();
        for (k, arena) in [&self.optimizer.m, &self.optimizer.v]
            .into_iter()
            .take(prefixes.len())
            .enumerate()
        {
            for (t, n) in self.model.layout.tensors.iter().zip(&names[k]) {
                moment_refs.push(TensorRef {
                    name: n,
                    shape: &t.shape,
                    data: &arena[t.range.clone()],
                });
            }
        }
        let optimizer_file = SafetensorsWriter::new(&moment_refs, &meta)?;

        // A best whose directory is gone from `parent` (removed by hand, or this run saves where
        // it did not resume) is forgotten: the `best` pointer cannot name it.
        let recorded = existing_best(parent, self.best.clone());
        let best = match (opts.val_loss, &recorded) {
            (Some(v), Some((b, _))) if v >= *b => recorded,
            (Some(v), _) if v.is_finite() => Some((v, name.clone())),
            _ => recorded,
        };
        let c = &self.config;
        let state = json!({
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "step": self.step,
            "model": model_json(&cfg),
            "optimizer": optimizer_json(&self.optimizer.kind, self.optimizer.step),
            "schedule": schedule_json(&c.schedule),
            "clip": c.clip,
            "batch": c.batch,
            "seq_len": c.seq_len,
            "grad_accum": c.grad_accum,
            "workers": self.spheres.count(),
            "seed": c.seed,
            "rng_state": self.rng.state(),
            "val_loss": opts.val_loss,
            "best": best.as_ref().map(|(v, n)| json!({ "val_loss": v, "dir": n })),
            "tokenizer": opts.tokenizer.map(|(n, _)| n),
            "data_position": opts.data_position,
            "total_steps": opts.total_steps,
        });
        let state_text = serde_json::to_string_pretty(&state).expect("JSON values serialize");
        let mut hf = HfConfig::new(cfg);
        hf.bos_token_id = opts.eot_token.map(u64::from);
        hf.eos_token_id = hf.bos_token_id;
        let config_text = hf.to_json();

        let mut files: Vec<(&str, &dyn FileSource)> = vec![
            (ckpt::CONFIG_FILE, &config_text),
            (ckpt::MODEL_FILE, &model_file),
            (OPTIMIZER_FILE, &optimizer_file),
            (TRAINER_STATE_FILE, &state_text),
        ];
        let tokenizer_file = opts
            .tokenizer
            .map(|(n, bytes)| (n, WriteWith(move |w: &mut dyn Write| w.write_all(bytes))));
        if let Some((n, file)) = &tokenizer_file {
            files.push((n, file));
        }
        write_checkpoint_dir(parent, &name, &files)?;
        write_pointer(parent, LATEST, &name)?;
        match &best {
            Some((_, b)) => write_pointer(parent, BEST, b)?,
            // A pointer left from a best that is gone would name a missing directory.
            None => {
                let stale = parent.join(BEST);
                if stale.exists() {
                    std::fs::remove_file(&stale)
                        .map_err(ckpt::CheckpointError::io("remove", &stale))?;
                }
            }
        }
        self.best = best;
        let best_name = self.best.as_ref().map(|(_, n)| n.clone());
        let rotation = rotate(parent, opts.keep.max(1), best_name.as_deref())?;
        Ok(Saved {
            dir: parent.join(&name),
            best: best_name,
            rotation,
        })
    }

    /// Restores a trainer from a checkpoint directory, or from a run directory's `latest`
    /// checkpoint, on `spheres`' workers. Every file is checked against the manifest first.
    /// With the same worker count and data, training continues bit for bit as if never stopped.
    pub fn resume(path: &Path, spheres: Spheres) -> Result<Resumed, TrainError> {
        let dir = checkpoint_dir(path)?;
        let manifest = verify_checkpoint_dir(&dir)?;
        let state_path = dir.join(TRAINER_STATE_FILE);
        let text = fs::read_to_string(&state_path)
            .map_err(ckpt::CheckpointError::io("read", &state_path))?;
        let value: Value =
            serde_json::from_str(&text).map_err(|source| ckpt::CheckpointError::Json {
                path: state_path.clone(),
                source,
            })?;
        let st = StateReader {
            file: state_path.display().to_string(),
            v: &value,
        };
        if st.str("format")? != STATE_FORMAT || st.u64("version")? != STATE_VERSION {
            return Err(st.err(format!(
                "not a {STATE_FORMAT} file of version {STATE_VERSION}"
            )));
        }
        let step = st.u64("step")?;
        // A state copied into another step's directory (or a directory renamed) would resume at
        // one step and save over the checkpoints of another.
        let named = dir
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(ckpt::parse_step_dir);
        if let Some(named) = named.filter(|&n| n != step) {
            return Err(st.err(format!(
                "`step` is {}, but the directory is named for step {named}: the state belongs \
                 to another checkpoint, or the directory was renamed; rename it {} (or resume \
                 from the checkpoint this state was saved with)",
                step,
                step_dir_name(step)
            )));
        }
        // Verified with the whole checkpoint above.
        let (model, hf) = Gpt::from_verified_dir(&dir)?;
        let m = st.at("model")?;
        let shape = GptConfig {
            vocab_size: m.usize("vocab_size")?,
            n_positions: m.usize("n_positions")?,
            n_embd: m.usize("n_embd")?,
            n_layer: m.usize("n_layer")?,
            n_head: m.usize("n_head")?,
        };
        if shape != hf.gpt {
            return Err(st.err(format!(
                "model shape {shape:?} differs from config.json's {:?}",
                hf.gpt
            )));
        }
        let o = st.at("optimizer")?;
        let kind = match o.str("kind")? {
            "adamw" => OptimizerKind::AdamW {
                beta1: o.f64("beta1")?,
                beta2: o.f64("beta2")?,
                eps: o.f64("eps")?,
                weight_decay: o.f64("weight_decay")?,
            },
            "sgd" => OptimizerKind::Sgd {
                momentum: o.f32("momentum")?,
                dampening: o.f32("dampening")?,
                nesterov: o.bool("nesterov")?,
                weight_decay: o.f32("weight_decay")?,
            },
            other => return Err(st.err(format!("unknown optimizer kind {other:?}"))),
        };
        let s = st.at("schedule")?;
        let schedule = match s.str("kind")? {
            "constant" => Schedule::Constant { lr: s.f32("lr")? },
            k @ ("cosine" | "linear") => {
                let (lr, min_lr, warmup, total) = (
                    s.f32("lr")?,
                    s.f32("min_lr")?,
                    s.usize("warmup")?,
                    s.usize("total")?,
                );
                if k == "cosine" {
                    Schedule::Cosine {
                        lr,
                        min_lr,
                        warmup,
                        total,
                    }
                } else {
                    Schedule::Linear {
                        lr,
                        min_lr,
                        warmup,
                        total,
                    }
                }
            }
            other => return Err(st.err(format!("unknown schedule kind {other:?}"))),
        };
        let clip = match value.get("clip") {
            None | Some(Value::Null) => None,
            Some(_) => Some(st.f32("clip")?),
        };
        let config = TrainConfig {
            batch: st.usize("batch")?,
            seq_len: st.usize("seq_len")?,
            grad_accum: st.usize("grad_accum")?,
            optimizer: kind,
            schedule,
            clip,
            seed: st.u64("seed")?,
        };
        // The batch shape and hyperparameters are this file's: say so when they are refused.
        let mut trainer = Trainer::new(model, config, spheres).map_err(|e| match e {
            TrainError::Config(problem) => st.err(problem),
            other => other,
        })?;

        let layout = &trainer.model.layout;
        let prefixes = moment_names(&kind);
        let mut expected = Vec::new();
        let mut ranges = Vec::new();
        let mut which = Vec::new();
        for (k, p) in prefixes.iter().enumerate() {
            for t in &layout.tensors {
                expected.push((format!("{p}.{}", t.name), t.shape.clone()));
                ranges.push(t.range.clone());
                which.push(k);
            }
        }
        let opt = &mut trainer.optimizer;
        read_tensors_into(
            &dir.join(OPTIMIZER_FILE),
            &expected,
            &mut MomentSink {
                ranges,
                which,
                m: &mut opt.m,
                v: &mut opt.v,
            },
        )?;
        // AdamW's second moments are never negative; one that is would turn the next update
        // into NaN, reported then as a NaN loss rather than as this file.
        if let OptimizerKind::AdamW { .. } = kind {
            if let Some(i) = opt.v.iter().position(|&x| x < 0.0) {
                let tensor = layout
                    .tensors
                    .iter()
                    .find(|t| t.range.contains(&i))
                    .map_or("?", |t| t.name.as_str());
                return Err(TrainError::State {
                    file: dir.join(OPTIMIZER_FILE).display().to_string(),
                    problem: format!(
                        "`exp_avg_sq.{tensor}` holds {} (AdamW's second moments are never \
                         negative): the file is damaged; resume from an earlier checkpoint",
                        opt.v[i]
                    ),
                });
            }
        }
        opt.step = o.u64("step")?;
        trainer.step = step;
        trainer.rng = Rng::from_state(st.u64("rng_state")?);
        let recorded = match value.get("best") {
            None | Some(Value::Null) => None,
            Some(_) => {
                let b = st.at("best")?;
                Some((b.f32("val_loss")?, b.str("dir")?.to_owned()))
            }
        };
        // The best checkpoint may have been rotated away or left behind (a lone checkpoint moved
        // into a new run directory): then none is best yet. `..` rather than `dir.parent()`: the
        // directory `dir` lies in even when it is `.` or a symbolic link.
        trainer.best = existing_best(&dir.join(".."), recorded);
        let tokenizer = match value.get("tokenizer") {
            None | Some(Value::Null) => None,
            Some(_) => {
                let name = st.str("tokenizer")?.to_owned();
                // Only a file of this checkpoint, checked against its manifest above.
                if !manifest.files.iter().any(|f| f.name == name) {
                    return Err(st.err(format!(
                        "`tokenizer` names {name:?}, which is not a file of this checkpoint \
                         (its manifest.json does not list it); resume from the checkpoint \
                         directory as cllm saved it"
                    )));
                }
                let p = dir.join(&name);
                let bytes = fs::read(&p).map_err(ckpt::CheckpointError::io("read", &p))?;
                Some((name, bytes))
            }
        };
        let data_position = value.get("data_position").cloned().unwrap_or(Value::Null);
        let total_steps = match value.get("total_steps") {
            None | Some(Value::Null) => None,
            Some(_) => Some(st.u64("total_steps")?),
        };
        Ok(Resumed {
            trainer,
            dir,
            data_position,
            total_steps,
            tokenizer,
        })
    }
}
