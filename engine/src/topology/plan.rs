//! Laying the sphere-worker tree over a [`Topology`].
//!
//! Levels from the root: NUMA nodes, packages within a node, L3 domains within a package, cores
//! within an L3 domain, and (only when a core gets more than one worker) its SMT threads.
//! [`SphereNode::group`] splits any level wider than [`crate::sphere_tree::MAX_CHILDREN`]. A level
//! with one child collapses: the parent keeps its label and takes the child's children, so the
//! root stays "root", its children on a two-node machine are "numa0" and "numa1", and on a
//! one-node machine with several L3s the first level is the L3 domains.

use super::{parse_threads, Core, Topology, TopologyWarning, THREADS_ENV};
use crate::sphere_tree::{SphereNode, SphereTree};

/// A worker tree and the warnings met while choosing its CPUs.
#[derive(Debug)]
pub struct Plan {
    pub tree: SphereTree,
    pub warnings: Vec<TopologyWarning>,
}

impl Topology {
    /// The sphere tree for `threads` workers (all cores when `None`).
    ///
    /// Without `use_smt`, each core gets one worker, pinned to its first usable thread, and SMT
    /// siblings are added (second threads first, core by core) only when `threads` exceeds the
    /// number of cores. With `use_smt`, every usable thread is a worker. Either way the first
    /// `threads` workers in tree order are kept. Asking for more workers than usable CPUs gives
    /// one per CPU and a [`TopologyWarning::TooManyThreads`]; `Some(0)` counts as one worker
    /// (the `CLLM_THREADS` parser refuses 0 before it gets here).
    pub fn plan(&self, threads: Option<usize>, use_smt: bool) -> Plan {
        let mut warnings = Vec::new();
        let available = self.cpus.len();
        let wanted = match threads {
            Some(n) if n > available => {
                warnings.push(TopologyWarning::TooManyThreads {
                    requested: n,
                    available,
                });
                available
            }
            Some(n) => n.max(1),
            None if use_smt => available,
            None => self.cores.len(),
        };

        // How many of each core's threads get a worker.
        let mut take = vec![0usize; self.cores.len()];
        let mut left = wanted;
        if use_smt {
            for (t, core) in take.iter_mut().zip(&self.cores) {
                *t = core.cpus.len().min(left);
                left -= *t;
            }
        } else {
            // Round r gives the r-th thread of each core that has one, in core order.
            let mut round = 0;
            while left > 0 && round < self.smt() {
                for (t, core) in take.iter_mut().zip(&self.cores) {
                    if left > 0 && core.cpus.len() > round {
                        *t += 1;
                        left -= 1;
                    }
                }
                round += 1;
            }
        }

        let chosen: Vec<(&Core, &[usize])> = self
            .cores
            .iter()
            .zip(&take)
            .filter(|(_, &t)| t > 0)
            .map(|(core, &t)| (core, &core.cpus[..t]))
            .collect();
        let tree = if chosen.is_empty() {
            SphereTree::flat(&self.cpus[..1.min(self.cpus.len())])
        } else {
            SphereTree {
                root: sphere("root", build(&chosen, Level::Node)),
            }
        };
        Plan { tree, warnings }
    }

    /// [`Topology::plan`]'s tree alone.
    pub fn sphere_tree(&self, threads: Option<usize>, use_smt: bool) -> SphereTree {
        self.plan(threads, use_smt).tree
    }

    /// [`Topology::plan`] with the worker count taken from the `CLLM_THREADS` environment
    /// variable (unset: all cores). A value that is not a positive whole number is ignored with
    /// a [`TopologyWarning::BadThreads`].
    pub fn plan_from_env(&self, use_smt: bool) -> Plan {
        let value = std::env::var_os(THREADS_ENV).map(|v| v.to_string_lossy().into_owned());
        self.plan_with_threads_value(value.as_deref(), use_smt)
    }

    /// The plan for a `--threads` flag: an explicit count wins, else `CLLM_THREADS`, else one
    /// worker per allowed core (or hardware thread with `use_smt`).
    pub fn plan_for(&self, threads: Option<usize>, use_smt: bool) -> Plan {
        match threads {
            Some(n) => self.plan(Some(n), use_smt),
            None => self.plan_from_env(use_smt),
        }
    }

    /// [`Topology::plan_from_env`] with the variable's value given (`None` when unset).
    pub fn plan_with_threads_value(&self, value: Option<&str>, use_smt: bool) -> Plan {
        match parse_threads(value) {
            Ok(threads) => self.plan(threads, use_smt),
            Err(e) => {
                let mut plan = self.plan(None, use_smt);
                plan.warnings.insert(0, TopologyWarning::BadThreads(e));
                plan
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Level {
    Node,
    Package,
    L3,
    Core,
}

/// The spheres for `cores` (sorted by node, package, L3, first CPU) from `level` down.
fn build(cores: &[(&Core, &[usize])], level: Level) -> Vec<SphereNode> {
    let (key, next): (fn(&Core) -> Option<usize>, Level) = match level {
        Level::Node => (|c| Some(c.node), Level::Package),
        Level::Package => (|c| Some(c.package), Level::L3),
        Level::L3 => (|c| c.l3, Level::Core),
        Level::Core => {
            return cores
                .iter()
                .map(|(core, cpus)| {
                    let leaves = cpus.iter().map(|&cpu| SphereNode::Leaf { cpu }).collect();
                    sphere(&format!("core{}:{}", core.package, core.core_id), leaves)
                })
                .collect()
        }
    };
    let mut out = Vec::new();
    for run in cores.chunk_by(|a, b| key(a.0) == key(b.0)) {
        let children = build(run, next);
        match key(run[0].0) {
            Some(id) => {
                let label = match level {
                    Level::Node => format!("numa{id}"),
                    Level::Package => format!("pkg{id}"),
                    _ => format!("l3-{id}"),
                };
                out.push(sphere(&label, children));
            }
            None => out.extend(children),
        }
    }
    out
}

/// A sphere labelled `label` over `children`; a single child that is a group is absorbed (its
/// children become this sphere's), a single leaf is returned as it is.
fn sphere(label: &str, children: Vec<SphereNode>) -> SphereNode {
    match <[SphereNode; 1]>::try_from(children) {
        Ok(
            [SphereNode::Group {
                children: inner, ..
            }],
        ) => SphereNode::group(label, inner),
        Ok([leaf]) => leaf,
        Err(children) => SphereNode::group(label, children),
    }
}
