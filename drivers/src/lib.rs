//! cllm-drivers: the thin binaries (cllm-train, cllm-generate, cllm-eval) and the few helpers they
//! share: the embedded corpus, the worker plan, the progress bar and the memory report. They parse
//! arguments and call the engine.

pub mod corpus;

use anyhow::Result;
use cllm_engine::sphere_tree::SphereTree;
use cllm_engine::topology::{Topology, TopologyWarning};
use indicatif::{ProgressBar, ProgressStyle};

/// The sphere tree for `threads` workers (or `CLLM_THREADS`, or one per allowed core), the
/// warnings met on the way, and the machine and tree rendered for the start-up print.
pub fn threads_plan(threads: Option<usize>) -> Result<(SphereTree, Vec<TopologyWarning>, String)> {
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

/// Peak and current resident memory of this process, from /proc/self/status.
pub fn memory_report() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map(|kb| format!("{:.1} MiB", kb / 1024.0))
            .unwrap_or_else(|| "unknown".into())
    };
    format!("peak RSS {} (now {})", field("VmHWM:"), field("VmRSS:"))
}
