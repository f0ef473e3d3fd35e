//! Checkpoint formats: what crosses the disk boundary between cllm and Hugging Face.
//!
//! A checkpoint is a directory that `transformers` loads as-is
//! (`GPT2LMHeadModel.from_pretrained(dir)`):
//! - `config.json`: GPT-2 keys ([`HfConfig`]);
//! - `model.safetensors`: GPT-2 tensor names without the `transformer.` prefix
//!   (`h.0.attn.c_attn.weight`, …; [`gpt2_tensor_table`]), Conv1D layout (in, out), F32, the LM
//!   head tied to `wte` and not stored; written by [`SafetensorsWriter`] from borrowed slices and
//!   read by [`read_tensors_into`] straight into the caller's memory. The reader also accepts the
//!   `transformer.` prefix that `save_pretrained` writes, F64/F16/BF16 data, and a stored
//!   `lm_head.weight` equal to `wte.weight`;
//! - any further files the caller adds (training state: optimizer moments, step, data position,
//!   RNG state, tokenizer), and `manifest.json` with the size and SHA-256 of every file.
//!
//! [`write_checkpoint_dir`] writes such a directory atomically (temporary directory, fsync,
//! rename); [`verify_checkpoint_dir`] re-checks it against its manifest. A training run keeps its
//! checkpoints as `step-NNNNNNNN` directories beside a [`LATEST`] pointer file; the usual sequence
//! after step `s` is
//!
//! ```text
//! write_checkpoint_dir(run, &step_dir_name(s), &files)?;
//! write_pointer(run, LATEST, &step_dir_name(s))?;
//! rotate(run, keep, best.as_deref())?;
//! ```
//!
//! and resuming is `read_pointer(run, LATEST)`, then [`verify_checkpoint_dir`], then the loads.
//! Every function returns a [`CheckpointError`] naming the file (and tensor or key) concerned;
//! nothing prints.

mod atomic;
mod error;
mod hf_config;
mod rotate;
mod tensors;

pub use atomic::{
    sha256_file, verify_checkpoint_dir, verify_checkpoint_files, write_checkpoint_dir, FileSource,
    Manifest, ManifestEntry, WriteWith, MANIFEST_FILE,
};
pub use error::{CheckpointError, FileProblem, ProblemKind};
pub use hf_config::HfConfig;
pub use rotate::{
    list_step_dirs, parse_step_dir, read_pointer, rotate, step_dir_name, write_pointer, Rotation,
    BEST, LATEST,
};
pub(crate) use tensors::stored_shapes;
pub use tensors::{
    for_each_tensor, gpt2_tensor_table, load_tensors, read_tensors_into, Expected, LoadedTensors,
    SafetensorsWriter, Tensor, TensorRef, TensorSink, HF_PREFIX,
};

/// The config file name `transformers` looks for.
pub const CONFIG_FILE: &str = "config.json";

/// The weights file name `transformers` looks for.
pub const MODEL_FILE: &str = "model.safetensors";

/// The file a cllm checkpoint keeps its tokenizer in (the one `cllm-train` trained or loaded);
/// listed in the manifest, so it is verified with the weights.
pub const TOKENIZER_FILE: &str = "tokenizer.json";
