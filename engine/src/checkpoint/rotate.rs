//! Step-numbered checkpoint directories, the `latest` / `best` pointers, and `--keep N` rotation.
//!
//! A run's checkpoint directory holds `step-00000100/`, `step-00000200/`, … (each one written by
//! [`super::write_checkpoint_dir`]) and pointer files. A pointer is a small text file holding the
//! name of one checkpoint directory and a newline, replaced atomically
//! ([`crate::atomic_file::write_atomic`]). Files rather than symlinks: they survive copying to
//! file systems and object stores without symlinks, and their contents are checked on reading.

use std::fs;
use std::path::Path;

use super::atomic::check_file_name;
use super::CheckpointError;
use crate::atomic_file::{sync_dir, write_atomic};

/// The pointer to the newest complete checkpoint.
pub const LATEST: &str = "latest";

/// The pointer a trainer may keep to its best checkpoint by validation loss.
pub const BEST: &str = "best";

/// The prefix of step-numbered checkpoint directories.
const STEP_PREFIX: &str = "step-";

/// The directory name for the checkpoint after `step` optimizer steps: `step-00000100`
/// (zero-padded to 8 digits so names sort by step; larger steps just get more digits).
pub fn step_dir_name(step: u64) -> String {
    format!("{STEP_PREFIX}{step:08}")
}

/// The step of a directory named by [`step_dir_name`], or `None` for any other name.
pub fn parse_step_dir(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(STEP_PREFIX)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The step-numbered checkpoint directories in `parent`, oldest first.
pub fn list_step_dirs(parent: &Path) -> Result<Vec<(u64, String)>, CheckpointError> {
    let mut steps = Vec::new();
    for entry in fs::read_dir(parent).map_err(CheckpointError::io("list", parent))? {
        let entry = entry.map_err(CheckpointError::io("list", parent))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let Some(step) = parse_step_dir(&name) else {
            continue;
        };
        if entry
            .file_type()
            .map_err(CheckpointError::io("stat", entry.path()))?
            .is_dir()
        {
            steps.push((step, name));
        }
    }
    steps.sort();
    Ok(steps)
}

/// Points `parent/pointer` (e.g. [`LATEST`]) at the existing directory `parent/target`, atomically.
pub fn write_pointer(parent: &Path, pointer: &str, target: &str) -> Result<(), CheckpointError> {
    check_file_name(pointer)?;
    check_file_name(target)?;
    let path = parent.join(pointer);
    if !parent.join(target).is_dir() {
        return Err(CheckpointError::Pointer {
            path,
            problem: format!("cannot point at {target}: no such checkpoint directory"),
        });
    }
    write_atomic(&path, format!("{target}\n").as_bytes()).map_err(CheckpointError::write(&path))
}

/// The directory name `parent/pointer` holds, `None` when there is no such pointer. A pointer that
/// is malformed or names a directory that does not exist is an error.
pub fn read_pointer(parent: &Path, pointer: &str) -> Result<Option<String>, CheckpointError> {
    check_file_name(pointer)?;
    let path = parent.join(pointer);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(CheckpointError::Io {
                op: "read",
                path,
                source: e,
            })
        }
    };
    let target = text.strip_suffix('\n').unwrap_or(&text);
    if check_file_name(target).is_err() {
        return Err(CheckpointError::Pointer {
            path,
            problem: format!("holds {text:?}, not a directory name"),
        });
    }
    if !parent.join(target).is_dir() {
        return Err(CheckpointError::Pointer {
            path,
            problem: format!("points at {target}, which does not exist"),
        });
    }
    Ok(Some(target.to_owned()))
}

/// What [`rotate`] kept and removed (step directory names, oldest first).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rotation {
    /// Step directories still present.
    pub kept: Vec<String>,
    /// Step directories removed.
    pub removed: Vec<String>,
}

/// Removes step directories of `parent` except the newest `keep`, `best` (the best by validation
/// loss, never removed) and the target of the [`LATEST`] pointer. Also clears what interrupted
/// writes left: `.<step dir>.old-<pid>` and `.<step dir>.del-<pid>` directories, and
/// `.<step dir>.tmp-<pid>` directories and `.latest.tmp-<pid>-<n>` / `.best.tmp-<pid>-<n>` files
/// whose process is gone (on Linux, where that can be checked). Other dot-names are the user's
/// and stay.
///
/// A directory is first renamed to a dot-name and then deleted, so a crash midway never leaves a
/// half-deleted directory under a step name.
pub fn rotate(parent: &Path, keep: usize, best: Option<&str>) -> Result<Rotation, CheckpointError> {
    let latest = read_pointer(parent, LATEST)?;
    let steps = list_step_dirs(parent)?;
    let first_kept = steps.len().saturating_sub(keep);
    let pid = std::process::id();
    let mut rotation = Rotation::default();
    let mut doomed = Vec::new();
    for (i, (_, name)) in steps.iter().enumerate() {
        let protected =
            i >= first_kept || Some(name.as_str()) == best || latest.as_deref() == Some(name);
        if protected {
            rotation.kept.push(name.clone());
        } else {
            let from = parent.join(name);
            let to = parent.join(format!(".{name}.del-{pid}"));
            fs::rename(&from, &to).map_err(CheckpointError::io("rename", &from))?;
            doomed.push(to);
            rotation.removed.push(name.clone());
        }
    }
    if !doomed.is_empty() {
        sync_dir(parent).map_err(CheckpointError::write(parent))?;
    }
    for entry in fs::read_dir(parent).map_err(CheckpointError::io("list", parent))? {
        let entry = entry.map_err(CheckpointError::io("list", parent))?;
        if let Ok(name) = entry.file_name().into_string() {
            if is_leftover(&name, pid) && !doomed.contains(&entry.path()) {
                doomed.push(entry.path());
            }
        }
    }
    for path in doomed {
        // Interrupted pointer writes leave files, everything else directories.
        let removed = if path.is_dir() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        removed.map_err(CheckpointError::io("remove", &path))?;
    }
    Ok(rotation)
}

/// Whether a dot-name in a checkpoint parent is debris of an interrupted write or rotation: one
/// of the names [`super::write_checkpoint_dir`] and [`rotate`] give step directories, or a
/// [`write_pointer`] temporary of [`LATEST`] or [`BEST`]. Only those: any other name may be a
/// user's file.
fn is_leftover(name: &str, own_pid: u32) -> bool {
    let Some(rest) = name.strip_prefix('.') else {
        return false;
    };
    let Some((target, tail)) = rest.rsplit_once('.') else {
        return false;
    };
    let Some((kind, owner)) = tail.split_once('-') else {
        return false;
    };
    let gone = |pid: &str| {
        pid.parse::<u32>()
            .is_ok_and(|pid| pid != own_pid && process_gone(pid))
    };
    if parse_step_dir(target).is_some() {
        // Directories end in `-<pid>`.
        if owner.parse::<u32>().is_err() {
            return false;
        }
        match kind {
            "old" | "del" => true,
            "tmp" => gone(owner),
            _ => false,
        }
    } else if target == LATEST || target == BEST {
        // Pointer temporaries (from `AtomicFile`) end in `-<pid>-<n>`.
        let Some((pid, n)) = owner.split_once('-') else {
            return false;
        };
        kind == "tmp" && n.parse::<u64>().is_ok() && gone(pid)
    } else {
        false
    }
}

#[cfg(target_os = "linux")]
fn process_gone(pid: u32) -> bool {
    !Path::new("/proc").join(pid.to_string()).exists()
}

#[cfg(not(target_os = "linux"))]
fn process_gone(_pid: u32) -> bool {
    false
}
