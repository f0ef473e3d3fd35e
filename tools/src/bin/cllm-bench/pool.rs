//! The sphere pool the parallel benchmarks run on, and how it is described to the reader.

use anyhow::{bail, Context, Result};
use cllm_engine::sphere_tree::{SphereNode, SphereTree};
use cllm_engine::spheres::Spheres;
use cllm_engine::topology::Topology;

/// A started pool and the tree it was built from.
pub struct Pool {
    pub spheres: Spheres,
    pub tree: SphereTree,
}

/// The detected machine's sphere tree for `threads` workers (as `CLLM_THREADS` says when
/// `None`), with the detection's and the plan's warnings on stderr.
fn plan(threads: Option<usize>) -> SphereTree {
    let detected = Topology::detect();
    let plan = detected.topology.plan_for(threads, false);
    for w in detected.warnings.iter().chain(&plan.warnings) {
        eprintln!("warning: {w}");
    }
    plan.tree
}

impl Pool {
    /// The detected machine's sphere tree: the first `threads` workers of the plan when given,
    /// else as many as `CLLM_THREADS` says (all cores when unset). Warnings go to stderr.
    pub fn start(threads: Option<usize>) -> Result<Pool> {
        if threads == Some(0) {
            bail!("--threads 0: at least one worker is needed");
        }
        let tree = plan(threads);
        let spheres = Spheres::new(&tree).context("starting the sphere workers")?;
        for w in spheres.warnings() {
            eprintln!("warning: {w}");
        }
        Ok(Pool { spheres, tree })
    }

    /// How many workers [`Pool::start`] gives for `threads`: capped at the allowed CPUs, with
    /// the warnings on stderr.
    pub fn workers_for(threads: usize) -> usize {
        plan(Some(threads)).cpus().len()
    }

    /// How many workers.
    pub fn count(&self) -> usize {
        self.spheres.count()
    }

    /// Every worker's CPU, in worker order.
    pub fn cpus(&self) -> Vec<usize> {
        (0..self.count()).map(|w| self.spheres.cpu(w)).collect()
    }

    /// One line: the tree's size and fan-out, then each worker's thread name and CPU.
    pub fn summary(&self) -> String {
        let pins: Vec<String> = (0..self.count())
            .map(|w| {
                format!(
                    "{} -> CPU {}",
                    self.spheres.thread_name(w),
                    self.spheres.cpu(w)
                )
            })
            .collect();
        format!(
            "spheres: {} worker{}, {} group{}, max fan-out {}; pinned {}",
            self.count(),
            if self.count() == 1 { "" } else { "s" },
            groups(&self.tree.root).len(),
            if groups(&self.tree.root).len() == 1 {
                ""
            } else {
                "s"
            },
            self.tree.root.max_fanout(),
            pins.join(", ")
        )
    }
}

/// The number of children of every group of the tree (the root included), in pre-order.
pub fn groups(node: &SphereNode) -> Vec<usize> {
    let mut out = Vec::new();
    fn walk(node: &SphereNode, out: &mut Vec<usize>) {
        if let SphereNode::Group { children, .. } = node {
            out.push(children.len());
            children.iter().for_each(|c| walk(c, out));
        }
    }
    walk(node, &mut out);
    out
}
