//! The atomic-write primitive: a commit leaves exactly the target, an abandoned write leaves
//! nothing, an existing target is replaced whole, and failures name the path they concern.

use std::fs;
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use cllm_engine::atomic_file::{sync_dir, write_atomic, AtomicFile};
use listing::entries;

mod listing;

/// A new empty directory and the path `name` in it.
fn fresh(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join(name);
    (dir, target)
}

/// Asserts that `target` is all its directory holds, and holds `bytes`.
fn assert_only(target: &Path, bytes: &[u8]) {
    let name = target.file_name().unwrap().to_string_lossy();
    assert_eq!(entries(target.parent().unwrap()), [name]);
    assert_eq!(fs::read(target).unwrap(), bytes);
}

/// Starts replacing `target` with `bytes` and gives up: the `AtomicFile` is dropped uncommitted.
fn abandon(target: &Path, bytes: &[u8]) {
    let mut f = AtomicFile::create(target).unwrap();
    f.write_all(bytes).unwrap();
}

#[test]
fn commit_leaves_only_the_target() {
    let (dir, target) = fresh("report.json");
    let mut f = AtomicFile::create(&target).unwrap();
    assert_eq!(f.target(), target);
    f.write_all(b"{\"loss\": 1.5}\n").unwrap();
    // While writing, only the temporary file exists, beside the target and hidden.
    let during = entries(dir.path());
    assert_eq!(during.len(), 1);
    assert!(during[0].starts_with(".report.json.tmp-"), "{during:?}");
    f.commit().unwrap();
    assert_only(&target, b"{\"loss\": 1.5}\n");
}

#[test]
fn drop_without_commit_leaves_nothing() {
    let (dir, target) = fresh("shard.bin");
    // More than the buffer, so some of it reached the temporary file.
    abandon(&target, &[7u8; 100_000]);
    assert!(entries(dir.path()).is_empty());

    // An existing target is untouched by an abandoned replacement.
    fs::write(&target, b"old").unwrap();
    abandon(&target, b"new");
    assert_only(&target, b"old");
}

#[test]
fn overwriting_replaces_the_target_whole() {
    let (_dir, target) = fresh("latest");
    write_atomic(&target, b"step-00000100 and a long tail\n").unwrap();
    write_atomic(&target, b"step-00000200\n").unwrap();
    assert_only(&target, b"step-00000200\n");
}

#[test]
fn a_missing_directory_gives_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir");
    let e = write_atomic(missing.join("tokenizer.json"), b"{}").unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::NotFound);
    let text = e.to_string();
    assert!(text.contains(&missing.display().to_string()), "{text}");
    // The OS error stays reachable as the source (for disk-full checks and error chains).
    let os = std::error::Error::source(&e)
        .and_then(|s| s.downcast_ref::<io::Error>())
        .and_then(io::Error::raw_os_error);
    assert!(os.is_some(), "{e:?}");
    assert!(entries(dir.path()).is_empty());

    let e = sync_dir(&missing).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::NotFound);
}

#[test]
fn a_path_without_a_file_name_is_refused() {
    let e = AtomicFile::create(Path::new("/")).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
}

#[test]
fn a_failed_rename_leaves_the_target_and_no_temporary() {
    // A non-empty directory cannot be replaced by a file.
    let (dir, target) = fresh("out");
    fs::create_dir(&target).unwrap();
    fs::write(target.join("keep"), b"x").unwrap();
    let e = write_atomic(&target, b"data").unwrap_err();
    assert!(e.to_string().contains(&target.display().to_string()), "{e}");
    assert_eq!(entries(dir.path()), ["out"]);
    assert_eq!(entries(&target), ["keep"]);
}

#[test]
fn concurrent_writers_of_one_target_use_distinct_temporaries() {
    let (dir, target) = fresh("best");
    let mut a = AtomicFile::create(&target).unwrap();
    let mut b = AtomicFile::create(&target).unwrap();
    assert_eq!(entries(dir.path()).len(), 2);
    a.write_all(b"a").unwrap();
    b.write_all(b"b").unwrap();
    a.commit().unwrap();
    b.commit().unwrap();
    assert_only(&target, b"b");
}

#[test]
fn seek_patches_what_was_written() {
    let (_dir, target) = fresh("s.bin");
    let mut f = AtomicFile::with_capacity(4, &target).unwrap();
    f.write_all(&[0; 4]).unwrap();
    f.write_all(b"tokens").unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    f.write_all(&6u32.to_le_bytes()).unwrap();
    f.commit().unwrap();
    assert_only(&target, b"\x06\0\0\0tokens");
}
