//! Records the git commit the binaries are built from and whether tracked files differed from it
//! (`CLLM_GIT_COMMIT`, `CLLM_GIT_DIRTY`; empty where git or the checkout is missing), so that a
//! `cllm-bench suite` document names the code that was measured even when the binary is run from
//! another checkout.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    let commit = git(&["rev-parse", "HEAD"]).unwrap_or_default();
    let dirty = if commit.is_empty() {
        String::new()
    } else {
        git(&["status", "--porcelain", "--untracked-files=no"])
            .map(|s| (!s.is_empty()).to_string())
            .unwrap_or_default()
    };
    println!("cargo:rustc-env=CLLM_GIT_COMMIT={commit}");
    println!("cargo:rustc-env=CLLM_GIT_DIRTY={dirty}");
    // Again when HEAD moves, the index changes (a commit, an add) or any source of the workspace
    // changes (directories are scanned recursively).
    let mut watched = vec![
        "../Cargo.toml".to_string(),
        "../Cargo.lock".to_string(),
        "../kernels/src".to_string(),
        "../engine/src".to_string(),
        "../drivers/src".to_string(),
        "src".to_string(),
    ];
    for p in ["HEAD", "index"] {
        watched.extend(git(&["rev-parse", "--git-path", p]));
    }
    if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.extend(git(&["rev-parse", "--git-path", &r]));
    }
    for w in watched {
        println!("cargo:rerun-if-changed={w}");
    }
}
