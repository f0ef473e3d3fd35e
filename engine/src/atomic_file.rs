//! Replacing a file atomically: the one way cllm writes a file that a user keeps.
//!
//! [`AtomicFile::create`] makes a temporary file `.<name>.tmp-<pid>-<n>` beside the target (same
//! directory, so the rename below never crosses file systems) and hands out a buffered writer.
//! [`AtomicFile::commit`] flushes it, fsyncs it, renames it over the target and fsyncs the
//! directory, so a crash at any point leaves the old file or the new one under the target's name,
//! never half of one. An `AtomicFile` dropped without `commit` (an error on the way, a panic)
//! removes its temporary file and leaves the target untouched.
//!
//! [`write_atomic`] does all of that for bytes already in memory; [`sync_dir`] is the directory
//! fsync on its own, for callers that rename directories (checkpoints).
//!
//! Errors are `io::Error`s of the operating system's kind. Writing and fsyncing the data return
//! the OS error itself (the caller names the target, and a full disk stays recognisable by its
//! code); creating the temporary file, renaming it and the directory fsync of `commit` concern
//! other paths than the target, so those errors say which path and step failed, with the OS error
//! as their [`source`](std::error::Error::source). [`sync_dir`] returns the OS error of the
//! directory its caller named.

use std::error::Error;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Numbers the temporary files of this process; with the pid it makes their names unique.
static NEXT_TEMP: AtomicU64 = AtomicU64::new(0);

/// A file being written under a temporary name, put in place by [`commit`](Self::commit).
///
/// Writes go through a `BufWriter`; `Seek` flushes the buffer first, as `BufWriter` does.
#[derive(Debug)]
pub struct AtomicFile {
    /// The file that `commit` replaces.
    target: PathBuf,
    /// The directory holding the target and the temporary file.
    dir: PathBuf,
    /// The temporary file.
    temp: PathBuf,
    /// Open until `commit` takes it; `None` only inside `commit` and `drop`.
    out: Option<BufWriter<File>>,
    /// Set once the temporary file has been renamed: nothing left for `drop` to remove.
    renamed: bool,
}

impl AtomicFile {
    /// Starts replacing `target`, buffering writes in 8 KiB.
    pub fn create(target: impl AsRef<Path>) -> io::Result<AtomicFile> {
        Self::with_capacity(8 << 10, target)
    }

    /// Starts replacing `target`, buffering writes in `capacity` bytes. The target's directory
    /// must exist; the target itself need not. A path without a file name (`/`, `..`) is refused
    /// with [`io::ErrorKind::InvalidInput`].
    pub fn with_capacity(capacity: usize, target: impl AsRef<Path>) -> io::Result<AtomicFile> {
        let target = target.as_ref().to_path_buf();
        let Some(name) = target.file_name() else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a file path", target.display()),
            ));
        };
        let dir = match target.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let pid = std::process::id();
        let (temp, file) = loop {
            // Relaxed: the counter only has to hand out distinct numbers.
            let n = NEXT_TEMP.fetch_add(1, Ordering::Relaxed);
            let temp = dir.join(format!(".{}.tmp-{pid}-{n}", name.to_string_lossy()));
            // `create_new`: never truncate a file that someone else is writing, whatever its name.
            match OpenOptions::new().write(true).create_new(true).open(&temp) {
                Ok(file) => break (temp, file),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(located("create a temporary file in directory", &dir, e)),
            }
        };
        Ok(AtomicFile {
            target,
            dir,
            temp,
            out: Some(BufWriter::with_capacity(capacity, file)),
            renamed: false,
        })
    }

    /// The file that [`commit`](Self::commit) replaces.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Flushes and fsyncs the temporary file, renames it over the target and fsyncs the
    /// directory. On error the target is untouched unless the rename already happened (then only
    /// the directory fsync failed, and the new file is in place but perhaps not yet durable).
    pub fn commit(mut self) -> io::Result<()> {
        let out = self.out.take().expect("the writer is open until commit");
        let file = out.into_inner().map_err(io::IntoInnerError::into_error)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&self.temp, &self.target)
            .map_err(|e| located("rename the temporary file into place as", &self.target, e))?;
        self.renamed = true;
        sync_dir(&self.dir).map_err(|e| located("fsync directory", &self.dir, e))
    }

    fn writer(&mut self) -> &mut BufWriter<File> {
        self.out.as_mut().expect("the writer is open until commit")
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writer().write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.writer().write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.writer().flush()
    }
}

impl Seek for AtomicFile {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.writer().seek(pos)
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if let Some(out) = self.out.take() {
            // Close without flushing: the data is being thrown away.
            drop(out.into_parts());
        }
        if !self.renamed {
            // Best effort: the error that ended the write early is the one to report.
            let _ = fs::remove_file(&self.temp);
        }
    }
}

/// Replaces `target` with `bytes` atomically (see [`AtomicFile`]).
pub fn write_atomic(target: impl AsRef<Path>, bytes: &[u8]) -> io::Result<()> {
    let mut f = AtomicFile::create(target)?;
    f.write_all(bytes)?;
    f.commit()
}

/// Fsyncs the directory `dir`, so that the entries created, renamed or removed in it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// An OS error with the step and the path it happened on.
#[derive(Debug)]
struct Located {
    step: &'static str,
    path: PathBuf,
    source: io::Error,
}

impl fmt::Display for Located {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot {} {}: {}",
            self.step,
            self.path.display(),
            self.source
        )
    }
}

impl Error for Located {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&self.source)
    }
}

/// `source` of the same kind, saying which step on which path failed.
fn located(step: &'static str, path: &Path, source: io::Error) -> io::Error {
    io::Error::new(
        source.kind(),
        Located {
            step,
            path: path.to_path_buf(),
            source,
        },
    )
}
