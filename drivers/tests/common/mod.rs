//! What the drivers' CLI tests share: where the golden references live.

use std::path::PathBuf;

/// `../shared/golden/<name>` beside the repository: the first ancestor of this crate that holds
/// `shared/golden` (a checkout in a worktree sits one level deeper than the main one).
/// `CLLM_GOLDEN` overrides it.
pub fn golden(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("CLLM_GOLDEN") {
        return PathBuf::from(dir).join(name);
    }
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.ancestors()
        .map(|a| a.join("shared/golden"))
        .find(|g| g.is_dir())
        .unwrap_or_else(|| panic!("no shared/golden above {}; set CLLM_GOLDEN", here.display()))
        .join(name)
}
