//! The one error type of the checkpoint layer. Every variant names the file (or directory) it is
//! about, and where it helps, the tensor or key and what to do.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Why a checkpoint, config or tensor file could not be read, written or trusted.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// Opening, reading, listing, renaming or removing failed.
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        /// What was being done ("open", "read", "rename", ...).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },

    /// Writing or syncing a file failed; [`CheckpointError::is_disk_full`] tells a full disk apart.
    /// Whatever was already saved under the final name is untouched.
    #[error("cannot write {}: {source}{}", path.display(), disk_full_hint(source))]
    Write {
        /// The file being written (inside the temporary directory when writing a checkpoint).
        path: PathBuf,
        /// The operating system's error (ENOSPC / EDQUOT for a full disk or quota).
        #[source]
        source: io::Error,
    },

    /// A JSON file (config.json, manifest.json) does not parse.
    #[error("{}: not valid JSON: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's error (with line and column).
        #[source]
        source: serde_json::Error,
    },

    /// A config.json key that cllm cannot run with, or whose value has the wrong type.
    #[error("{}: `{key}` {problem}; {fix}", path.display())]
    ConfigKey {
        /// The config file.
        path: PathBuf,
        /// The offending key.
        key: String,
        /// What is wrong with its value.
        problem: String,
        /// What to do about it.
        fix: String,
    },

    /// A model directory without `model.safetensors` whose weights are in a form cllm does not
    /// read (sharded, or a PyTorch pickle).
    #[error("{}: no model.safetensors; {problem}", dir.display())]
    WeightsForm {
        /// The model directory.
        dir: PathBuf,
        /// The form found, and how to convert it.
        problem: String,
    },

    /// The sizes in a config.json describe no buildable model (e.g. n_embd not divisible by n_head).
    #[error("{}: {problem}", path.display())]
    ConfigInvalid {
        /// The config file.
        path: PathBuf,
        /// What is inconsistent.
        problem: String,
    },

    /// The file is not a readable safetensors file (bad header length, header JSON, offsets).
    #[error("{}: not a valid safetensors file: {problem}", path.display())]
    SafetensorsHeader {
        /// The file.
        path: PathBuf,
        /// What is wrong with the header.
        problem: String,
    },

    /// The file's size differs from what its header describes: truncated, or with trailing bytes.
    #[error(
        "{}: the file is {size} bytes but its header describes {expected} bytes ({})",
        path.display(),
        if size < expected { "truncated" } else { "trailing bytes after the data" }
    )]
    SafetensorsSize {
        /// The file.
        path: PathBuf,
        /// Its size on disk.
        size: u64,
        /// The size its header implies.
        expected: u64,
    },

    /// A tensor's element type is not one cllm converts to f32.
    #[error("{}: tensor `{tensor}` has dtype {dtype}; cllm reads F32, F64, F16 and BF16", path.display())]
    Dtype {
        /// The file.
        path: PathBuf,
        /// The tensor's name as stored in the file.
        tensor: String,
        /// The stored dtype.
        dtype: String,
    },

    /// A tensor's shape differs from the expected one.
    #[error(
        "{}: tensor `{tensor}` has shape {found:?}, expected {expected:?}{}",
        path.display(),
        shape_hint(expected, found)
    )]
    Shape {
        /// The file.
        path: PathBuf,
        /// The tensor's name as stored in the file.
        tensor: String,
        /// The shape the caller expects.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },

    /// Expected tensors are absent from the file.
    #[error("{}: missing tensor(s) {}", path.display(), tensors.join(", "))]
    MissingTensors {
        /// The file.
        path: PathBuf,
        /// Every missing name (without the `transformer.` prefix).
        tensors: Vec<String>,
    },

    /// The file holds tensors the caller did not ask for (a different architecture or size).
    #[error(
        "{}: unexpected tensor(s) {} (not in the expected table: a different model size or architecture?)",
        path.display(),
        tensors.join(", ")
    )]
    UnexpectedTensors {
        /// The file.
        path: PathBuf,
        /// Every unexpected name as stored in the file.
        tensors: Vec<String>,
    },

    /// The same tensor is stored twice, once with and once without the `transformer.` prefix.
    #[error("{}: tensor `{tensor}` is stored twice, with and without the `transformer.` prefix", path.display())]
    DuplicateTensor {
        /// The file.
        path: PathBuf,
        /// The name without the prefix.
        tensor: String,
    },

    /// `lm_head.weight` is present and differs from `wte.weight`.
    #[error(
        "{}: `lm_head.weight` differs from `wte.weight`; cllm ties the LM head to the token \
         embedding and cannot run an untied head",
        path.display()
    )]
    UntiedHead {
        /// The file.
        path: PathBuf,
    },

    /// A loaded tensor holds NaN or an infinity (also what an F64 value beyond f32's range becomes).
    #[error("{}: tensor `{tensor}` holds {value} at flat index {index}", path.display())]
    NonFinite {
        /// The file.
        path: PathBuf,
        /// The tensor (without prefix).
        tensor: String,
        /// The first bad element's flat index.
        index: usize,
        /// Its value after conversion to f32.
        value: f32,
    },

    /// A tensor given to the writer, or a destination given by a [`super::TensorSink`], is
    /// inconsistent (length vs shape, duplicate or reserved name).
    #[error("tensor `{tensor}`: {problem}")]
    InvalidTensor {
        /// The tensor.
        tensor: String,
        /// What is wrong.
        problem: String,
    },

    /// Safetensors metadata given to the writer that cannot be stored.
    #[error("safetensors metadata `{key}`: {problem}")]
    InvalidMetadata {
        /// The metadata key.
        key: String,
        /// What is wrong.
        problem: String,
    },

    /// A checkpoint, file or pointer name that is not a plain file name.
    #[error("invalid name {name:?}: {problem}")]
    InvalidName {
        /// The name.
        name: String,
        /// Why it is refused.
        problem: &'static str,
    },

    /// manifest.json is missing required fields or names files outside the directory.
    #[error("{}: invalid manifest: {problem}", path.display())]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },

    /// Files of a checkpoint directory do not match its manifest.
    #[error(
        "checkpoint {} failed verification: {}",
        dir.display(),
        problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    )]
    Verify {
        /// The checkpoint directory.
        dir: PathBuf,
        /// One entry per bad file.
        problems: Vec<FileProblem>,
    },

    /// A pointer file (`latest`, `best`) is malformed or points at no checkpoint directory.
    #[error("{}: {problem}", path.display())]
    Pointer {
        /// The pointer file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
}

impl CheckpointError {
    /// True when the error is a write that failed because the disk (or the user's quota) is full.
    pub fn is_disk_full(&self) -> bool {
        match self {
            CheckpointError::Write { source, .. } => is_disk_full(source),
            _ => false,
        }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| CheckpointError::Io { op, path, source }
    }

    pub(crate) fn write(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| CheckpointError::Write { path, source }
    }
}

fn is_disk_full(e: &io::Error) -> bool {
    // `atomic_file` names the path in some errors; the OS error is then their source.
    let code = e.raw_os_error().or_else(|| {
        std::error::Error::source(e)?
            .downcast_ref::<io::Error>()?
            .raw_os_error()
    });
    matches!(code, Some(code) if code == libc::ENOSPC || code == libc::EDQUOT)
}

fn disk_full_hint(e: &io::Error) -> &'static str {
    if is_disk_full(e) {
        " (the disk is full: free space and save again; the previous checkpoint is intact)"
    } else {
        ""
    }
}

fn shape_hint(expected: &[usize], found: &[usize]) -> &'static str {
    let transposed = expected.len() == 2
        && found.len() == 2
        && expected[0] == found[1]
        && expected[1] == found[0]
        && expected[0] != expected[1];
    if transposed {
        " (transposed: GPT-2 stores Conv1D weights as (in, out), not nn.Linear's (out, in))"
    } else {
        ""
    }
}

/// What is wrong with one file of a checkpoint directory, as found by
/// [`super::verify_checkpoint_dir`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProblem {
    /// The file name inside the checkpoint directory.
    pub file: String,
    /// What is wrong.
    pub kind: ProblemKind,
}

/// The ways a checkpoint file can fail its manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProblemKind {
    /// The file is absent.
    Missing,
    /// The file is shorter than recorded.
    Truncated {
        /// The recorded size.
        expected: u64,
        /// The size on disk.
        found: u64,
    },
    /// The file is longer than recorded.
    Grown {
        /// The recorded size.
        expected: u64,
        /// The size on disk.
        found: u64,
    },
    /// The size matches but the SHA-256 does not.
    Corrupted,
    /// The file exists but cannot be read.
    Unreadable(String),
}

impl fmt::Display for FileProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = &self.file;
        match &self.kind {
            ProblemKind::Missing => write!(f, "{file} is missing"),
            ProblemKind::Truncated { expected, found } => {
                write!(f, "{file} is truncated ({found} of {expected} bytes)")
            }
            ProblemKind::Grown { expected, found } => {
                write!(f, "{file} is {found} bytes, the manifest says {expected}")
            }
            ProblemKind::Corrupted => write!(f, "{file} is corrupted (SHA-256 mismatch)"),
            ProblemKind::Unreadable(e) => write!(f, "{file} cannot be read: {e}"),
        }
    }
}
