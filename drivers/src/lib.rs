//! cllm-drivers: the thin binaries (cllm-train, cllm-generate, cllm-eval) and the few helpers they
//! share: the embedded corpus, the generation options and text loop ([`generation`]), the training
//! report ([`report`]), the worker plan, the progress bar and the memory report. They parse
//! arguments and call the engine.

pub mod corpus;
pub mod generation;
pub mod report;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use cllm_engine::sphere_tree::SphereTree;
use cllm_engine::tokenizer::Tokenizer;
use cllm_engine::topology::{Topology, TopologyWarning};
use indicatif::{ProgressBar, ProgressStyle};

/// Starts a binary's `main`: a closed output pipe (`cllm-bench gemm | head -1`) then ends the
/// process quietly, as it does other command-line tools. Rust starts programs with SIGPIPE
/// ignored, so every print after the reader left would panic instead.
pub fn restore_sigpipe() {
    // SAFETY: `signal` only sets the disposition of SIGPIPE back to the default; it touches no
    // memory of this program, and main calls it before starting any thread.
    #[cfg(unix)]
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Ends a binary's `main`: nothing when `result` is Ok; else `error: …` and each cause on stderr
/// (a cause whose text the line before already holds, such as an I/O error its wrapper quotes, is
/// not repeated) and exit status 1.
pub fn exit_on_error(result: Result<()>) {
    let Err(e) = result else { return };
    let mut last = e.to_string();
    eprintln!("error: {last}");
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !last.contains(&text) {
            eprintln!("  caused by: {text}");
        }
        last = text;
    }
    std::process::exit(1);
}

/// The tokenizer cllm-prepare wrote beside a set of shards: the shards are its ids.
pub struct ShardsTokenizer {
    /// Its file.
    pub file: PathBuf,
    pub tokenizer: Tokenizer,
}

impl ShardsTokenizer {
    /// The one beside the shards `data` names (a directory, a shard file, or a glob whose
    /// directory part has no wildcard), if there is one. A Hugging Face tokenizer.json there is
    /// not one.
    pub fn find(data: &str) -> Result<Option<ShardsTokenizer>> {
        let path = Path::new(data);
        let Some(dir) = (if path.is_dir() {
            Some(path)
        } else {
            path.parent()
        }) else {
            return Ok(None);
        };
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        let file = dir.join(cllm_engine::checkpoint::TOKENIZER_FILE);
        if dir.to_string_lossy().contains(['*', '?', '['])
            || !file.is_file()
            || generation::is_hf_tokenizer(&file)
        {
            return Ok(None);
        }
        let tokenizer =
            Tokenizer::load(&file).with_context(|| format!("loading {}", file.display()))?;
        Ok(Some(ShardsTokenizer { file, tokenizer }))
    }

    /// Refuses `tokenizer` (`what` names it) unless it is this one: it would read the shards' ids
    /// as its own. `fix` says what to do instead.
    pub fn check(&self, tokenizer: &Tokenizer, what: &str, fix: &str) -> Result<()> {
        if tokenizer.to_json() != self.tokenizer.to_json() {
            anyhow::bail!(
                "{} (written with the shards) differs from {what}: the shards' ids would be read as another tokenizer's; {fix}",
                self.file.display()
            );
        }
        Ok(())
    }
}

/// Whether `a` and `b` name the same file, however spelled (`./gp.txt` and `gp.txt`, a symbolic
/// or hard link). Where both exist they are compared as files (device and inode); otherwise as
/// canonical paths, a path that does not exist yet by its canonical parent directory and name.
pub fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    if let (Ok(ma), Ok(mb)) = (std::fs::metadata(a), std::fs::metadata(b)) {
        use std::os::unix::fs::MetadataExt;
        return (ma.dev(), ma.ino()) == (mb.dev(), mb.ino());
    }
    /// The canonical path of `p`, or of its parent joined with its name when `p` does not exist.
    fn identity(p: &Path) -> Option<PathBuf> {
        if let Ok(c) = std::fs::canonicalize(p) {
            return Some(c);
        }
        let name = p.file_name()?;
        let parent = p.parent().filter(|d| !d.as_os_str().is_empty());
        let parent = std::fs::canonicalize(parent.unwrap_or(Path::new("."))).ok()?;
        Some(parent.join(name))
    }
    matches!((identity(a), identity(b)), (Some(x), Some(y)) if x == y)
}

/// Refuses, before any work, an output file that is one of the inputs, which writing it would
/// destroy (`--prompts gp.txt --out gp.txt`). `out_flag` names the output's flag; each input comes
/// with what names it in the error (its flag, or what it is).
pub fn refuse_output_over_input(
    out_flag: &str,
    out: &Path,
    inputs: &[(String, PathBuf)],
) -> Result<()> {
    if let Some((what, input)) = inputs.iter().find(|(_, input)| same_file(out, input)) {
        anyhow::bail!(
            "{out_flag} {} is the same file as {what} {}: writing it would destroy that input; \
             name another file for {out_flag}",
            out.display(),
            input.display()
        );
    }
    Ok(())
}

/// The sphere tree for `threads` workers (or `CLLM_THREADS`, or one per allowed core), the
/// warnings met on the way, and the machine and tree rendered for the start-up print.
pub fn threads_plan(threads: Option<usize>) -> Result<(SphereTree, Vec<TopologyWarning>, String)> {
    if threads == Some(0) {
        anyhow::bail!("--threads must be at least 1 (leave it out for one worker per core)");
    }
    let detected = Topology::detect();
    let plan = detected.topology.plan_for(threads, false);
    let text = detected.topology.render(&plan.tree);
    let mut warnings = detected.warnings;
    warnings.extend(plan.warnings);
    Ok((plan.tree, warnings, text))
}

/// A progress bar over `total` steps starting at `done`, with ETA and a free-form message.
pub fn progress(total: u64, done: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} [{elapsed_precise} < {eta_precise}] {msg}",
        )
        .expect("a valid template"),
    );
    bar.set_position(done);
    bar
}

/// Peak resident memory of this process (VmHWM), for the end-of-run summary.
pub fn memory_report() -> String {
    match cllm_engine::train::bench::peak_rss_bytes() {
        Some(bytes) => format!("peak RSS {:.1} MiB", bytes as f64 / (1u64 << 20) as f64),
        None => "peak RSS unknown (no /proc/self/status)".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::same_file;

    #[test]
    fn same_file_sees_through_spellings_and_links() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("sub")).unwrap();
        // Files that do not exist yet, by their parent directory.
        assert!(same_file(&d.join("new.txt"), &d.join("sub/../new.txt")));
        assert!(same_file(&d.join("new.txt"), &d.join("./new.txt")));
        assert!(!same_file(&d.join("new.txt"), &d.join("sub/new.txt")));
        // Files that exist, as files.
        std::fs::write(d.join("a.txt"), "a").unwrap();
        std::fs::hard_link(d.join("a.txt"), d.join("b.txt")).unwrap();
        assert!(same_file(&d.join("a.txt"), &d.join("sub/../b.txt")));
        assert!(!same_file(&d.join("a.txt"), &d.join("new.txt")));
    }
}
