//! Checkpoint directories written atomically, with a manifest of SHA-256 checksums.
//!
//! `write_checkpoint_dir(parent, name, files)`:
//! 1. creates `parent/.<name>.tmp-<pid>` and writes every file there through a hashing writer,
//!    then `manifest.json` (size and SHA-256 of every file); each file is fsynced, then the
//!    temporary directory;
//! 2. if `parent/<name>` exists, renames it to `parent/.<name>.old-<pid>`; renames the temporary
//!    directory to `parent/<name>`; fsyncs `parent`; removes the old directory.
//!
//! A crash or a write error (full disk) at any point leaves under `parent/<name>` either the
//! previous complete checkpoint or the new complete one, never a partial one: at worst the name
//! is briefly absent while both complete copies exist under dot-names (a crash in that window
//! leaves the previous checkpoint at `.<name>.old-<pid>`). [`super::rotate`] removes such
//! leftovers. A failed write removes its temporary directory before returning the error.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::{CheckpointError, FileProblem, ProblemKind};
use crate::atomic_file::sync_dir;

/// The manifest's file name inside every checkpoint directory.
pub const MANIFEST_FILE: &str = "manifest.json";

/// The `format` field of manifest.json.
const MANIFEST_FORMAT: &str = "cllm-checkpoint-manifest";

/// Buffer size for writing and hashing files.
const IO_BUF: usize = 1 << 20;

/// The contents of one file of a checkpoint, produced on demand into a writer.
///
/// Implemented for byte slices and strings, for [`super::SafetensorsWriter`], and for any
/// closure through [`WriteWith`]. A failing `write_to` (e.g. a full disk) aborts the checkpoint.
pub trait FileSource {
    /// Writes the whole file into `w`.
    fn write_to(&self, w: &mut dyn Write) -> io::Result<()>;
}

impl FileSource for [u8] {
    fn write_to(&self, w: &mut dyn Write) -> io::Result<()> {
        w.write_all(self)
    }
}

impl FileSource for Vec<u8> {
    fn write_to(&self, w: &mut dyn Write) -> io::Result<()> {
        w.write_all(self)
    }
}

impl FileSource for str {
    fn write_to(&self, w: &mut dyn Write) -> io::Result<()> {
        w.write_all(self.as_bytes())
    }
}

impl FileSource for String {
    fn write_to(&self, w: &mut dyn Write) -> io::Result<()> {
        w.write_all(self.as_bytes())
    }
}

/// A file written by a closure, e.g. `WriteWith(|w| serialize_state(&state, w))`.
pub struct WriteWith<F>(pub F);

impl<F: Fn(&mut dyn Write) -> io::Result<()>> FileSource for WriteWith<F> {
    fn write_to(&self, w: &mut dyn Write) -> io::Result<()> {
        (self.0)(w)
    }
}

/// One file as recorded in manifest.json.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestEntry {
    /// File name inside the checkpoint directory.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the contents, lowercase hex.
    pub sha256: String,
}

/// The manifest of a checkpoint directory: every file except manifest.json itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// In the order the files were written.
    pub files: Vec<ManifestEntry>,
}

impl Manifest {
    /// The manifest.json text.
    pub fn to_json(&self) -> String {
        let files: Vec<Value> = self
            .files
            .iter()
            .map(|f| json!({ "name": f.name, "size": f.size, "sha256": f.sha256 }))
            .collect();
        let v = json!({ "format": MANIFEST_FORMAT, "version": 1, "checksum": "sha256", "files": files });
        let mut text = serde_json::to_string_pretty(&v).expect("a JSON value always serializes");
        text.push('\n');
        text
    }

    /// Reads `dir/manifest.json`.
    pub fn read(dir: &Path) -> Result<Manifest, CheckpointError> {
        let path = dir.join(MANIFEST_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(CheckpointError::Manifest {
                    path,
                    problem: "the file is missing, so the checkpoint's files cannot be checked \
                              (it was not copied along, or this directory is not a checkpoint \
                              cllm wrote); copy the whole checkpoint directory, or load only its \
                              weights, as a Hugging Face directory (cllm-train --init-from, \
                              cllm-generate --model)"
                        .into(),
                });
            }
            Err(e) => return Err(CheckpointError::io("read", &path)(e)),
        };
        let v: Value = serde_json::from_str(&text).map_err(|source| CheckpointError::Json {
            path: path.clone(),
            source,
        })?;
        let bad = |problem: &str| CheckpointError::Manifest {
            path: path.clone(),
            problem: problem.to_owned(),
        };
        if v["format"] != MANIFEST_FORMAT || v["version"] != 1 || v["checksum"] != "sha256" {
            return Err(bad(
                "expected format \"cllm-checkpoint-manifest\", version 1, checksum \"sha256\"",
            ));
        }
        let list = v["files"]
            .as_array()
            .ok_or_else(|| bad("`files` is not a list"))?;
        let mut files = Vec::with_capacity(list.len());
        for f in list {
            let (Some(name), Some(size), Some(sha256)) =
                (f["name"].as_str(), f["size"].as_u64(), f["sha256"].as_str())
            else {
                return Err(bad("every file needs `name`, `size` and `sha256`"));
            };
            check_file_name(name)
                .map_err(|_| bad(&format!("file name {name:?} is not a plain file name")))?;
            if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad(&format!("`sha256` of {name} is not 64 hex digits")));
            }
            files.push(ManifestEntry {
                name: name.to_owned(),
                size,
                sha256: sha256.to_ascii_lowercase(),
            });
        }
        Ok(Manifest { files })
    }
}

/// Writes the checkpoint directory `parent/name` atomically (see the module docs) with `files`
/// (file name, contents) and a manifest.json, and returns the manifest. `parent` must exist.
///
/// On error nothing under `parent/name` has changed; a full disk gives a
/// [`CheckpointError::Write`] for which [`CheckpointError::is_disk_full`] is true.
pub fn write_checkpoint_dir(
    parent: &Path,
    name: &str,
    files: &[(&str, &dyn FileSource)],
) -> Result<Manifest, CheckpointError> {
    check_file_name(name)?;
    for (i, (file, _)) in files.iter().enumerate() {
        check_file_name(file)?;
        if *file == MANIFEST_FILE || files[..i].iter().any(|(f, _)| f == file) {
            return Err(CheckpointError::InvalidName {
                name: (*file).to_owned(),
                problem: "given twice, or reserved for the manifest",
            });
        }
    }
    let pid = std::process::id();
    let tmp = parent.join(format!(".{name}.tmp-{pid}"));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(CheckpointError::io("remove stale", &tmp))?;
    }
    fs::create_dir(&tmp).map_err(CheckpointError::io("create directory", &tmp))?;
    let written = fill_dir(&tmp, files);
    let manifest = match written {
        Ok(m) => m,
        Err(e) => {
            // Best effort: the error that matters is `e`; a temporary directory that cannot be
            // removed is cleared by `rotate` later.
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };

    let dst = parent.join(name);
    let old = parent.join(format!(".{name}.old-{pid}"));
    let replaced = dst.exists();
    if replaced {
        if let Err(e) = move_aside(&dst, &old) {
            // Best effort, as above: `e` is the error to report.
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
    }
    if let Err(source) = fs::rename(&tmp, &dst) {
        if replaced {
            // Put the previous checkpoint back under its name; `source` is the error to report.
            let _ = fs::rename(&old, &dst);
        }
        let _ = fs::remove_dir_all(&tmp);
        return Err(CheckpointError::Io {
            op: "rename",
            path: tmp,
            source,
        });
    }
    sync_dir(parent).map_err(CheckpointError::write(parent))?;
    if replaced {
        // The new checkpoint is durable under its name; a leftover old copy is only disk space
        // and `rotate` removes it.
        let _ = fs::remove_dir_all(&old);
    }
    Ok(manifest)
}

/// Renames the checkpoint `dst` to `old`, first removing a stale `old` that a crash left.
fn move_aside(dst: &Path, old: &Path) -> Result<(), CheckpointError> {
    if old.exists() {
        fs::remove_dir_all(old).map_err(CheckpointError::io("remove stale", old))?;
    }
    fs::rename(dst, old).map_err(CheckpointError::io("rename", dst))
}

/// Writes every file and the manifest into `dir`, fsyncing each and then `dir`.
fn fill_dir(dir: &Path, files: &[(&str, &dyn FileSource)]) -> Result<Manifest, CheckpointError> {
    let mut entries = Vec::with_capacity(files.len());
    for (name, source) in files {
        let (size, sha256) = write_file(&dir.join(name), *source)?;
        entries.push(ManifestEntry {
            name: (*name).to_owned(),
            size,
            sha256,
        });
    }
    let manifest = Manifest { files: entries };
    write_file(&dir.join(MANIFEST_FILE), &manifest.to_json())?;
    sync_dir(dir).map_err(CheckpointError::write(dir))?;
    Ok(manifest)
}

/// Creates `path`, writes `source` into it, fsyncs it; returns its size and SHA-256.
fn write_file(path: &Path, source: &dyn FileSource) -> Result<(u64, String), CheckpointError> {
    let file = File::create(path).map_err(CheckpointError::write(path))?;
    let mut w = HashingWriter {
        inner: BufWriter::with_capacity(IO_BUF, file),
        hasher: Sha256::new(),
        size: 0,
    };
    source
        .write_to(&mut w)
        .map_err(CheckpointError::write(path))?;
    let file = w.inner.into_inner().map_err(|e| CheckpointError::Write {
        path: path.to_owned(),
        source: e.into_error(),
    })?;
    file.sync_all().map_err(CheckpointError::write(path))?;
    Ok((w.size, hex(&w.hasher.finalize())))
}

/// Hashes and counts exactly the bytes the inner writer accepted.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    size: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Re-reads every file of the checkpoint directory `dir` and checks its size and SHA-256 against
/// manifest.json. Returns the manifest, or [`CheckpointError::Verify`] listing every missing,
/// truncated, grown, corrupted or unreadable file by name. Files not in the manifest are ignored.
pub fn verify_checkpoint_dir(dir: &Path) -> Result<Manifest, CheckpointError> {
    verify(dir, |_| true)
}

/// As [`verify_checkpoint_dir`], for the manifest's entries among `names` only (a reader that
/// needs a few files of a checkpoint need not hash the rest, such as the optimizer state).
pub fn verify_checkpoint_files(dir: &Path, names: &[&str]) -> Result<Manifest, CheckpointError> {
    verify(dir, |name| names.contains(&name))
}

fn verify(dir: &Path, wanted: impl Fn(&str) -> bool) -> Result<Manifest, CheckpointError> {
    let manifest = Manifest::read(dir)?;
    let mut problems = Vec::new();
    for entry in manifest.files.iter().filter(|e| wanted(&e.name)) {
        let problem = |kind| FileProblem {
            file: entry.name.clone(),
            kind,
        };
        let path = dir.join(&entry.name);
        let found = match fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                problems.push(problem(ProblemKind::Missing));
                continue;
            }
            Err(e) => {
                problems.push(problem(ProblemKind::Unreadable(e.to_string())));
                continue;
            }
        };
        let expected = entry.size;
        if found < expected {
            problems.push(problem(ProblemKind::Truncated { expected, found }));
        } else if found > expected {
            problems.push(problem(ProblemKind::Grown { expected, found }));
        } else {
            match sha256_file(&path) {
                Ok(sum) if sum == entry.sha256 => {}
                Ok(_) => problems.push(problem(ProblemKind::Corrupted)),
                Err(e) => problems.push(problem(ProblemKind::Unreadable(e.to_string()))),
            }
        }
    }
    if problems.is_empty() {
        Ok(manifest)
    } else {
        Err(CheckpointError::Verify {
            dir: dir.to_owned(),
            problems,
        })
    }
}

/// SHA-256 of a file's contents, lowercase hex.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    let mut f = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; IO_BUF];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Refuses names that are not one plain path component, or that start with a dot (dot-names are
/// the writer's temporary and old directories).
pub(crate) fn check_file_name(name: &str) -> Result<(), CheckpointError> {
    let problem = if name.is_empty() {
        Some("empty")
    } else if name.starts_with('.') {
        Some("starts with a dot")
    } else if name.contains(['/', '\\', '\0']) {
        Some("contains a path separator or NUL")
    } else {
        None
    };
    match problem {
        Some(problem) => Err(CheckpointError::InvalidName {
            name: name.to_owned(),
            problem,
        }),
        None => Ok(()),
    }
}
