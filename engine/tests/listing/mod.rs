//! What the tests of files written atomically share: the names a directory holds.

use std::fs;
use std::path::Path;

/// The names in `dir` (temporary dot-names included), sorted.
pub fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
