//! cllm-drivers: the thin binaries (cllm-train, cllm-generate, cllm-eval) and the few helpers they
//! share: the embedded corpus, the generation options and text loop ([`generation`]), the training
//! report ([`report`]), the worker plan, the progress bar and the memory report. They parse
//! arguments and call the engine.

pub mod corpus;
pub mod generation;
pub mod report;

use anyhow::Result;
use cllm_engine::sphere_tree::SphereTree;
use cllm_engine::topology::{Topology, TopologyWarning};
use indicatif::{ProgressBar, ProgressStyle};

/// Ends a binary's `main`: nothing when `result` is Ok; else `error: …` and each cause on stderr
/// (a cause whose text the line before already holds, such as an I/O error its wrapper quotes, is
/// not repeated) and exit status 1. A closed stdout (`… | head`) ends the program quietly with
/// status 0, as it does other command-line tools.
pub fn exit_on_error(result: Result<()>) {
    let Err(e) = result else { return };
    let broken_pipe = e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    });
    if broken_pipe {
        std::process::exit(0);
    }
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
