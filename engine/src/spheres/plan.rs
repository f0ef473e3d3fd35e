//! The sphere tree flattened into index tables the workers walk without allocating.
//!
//! Nodes are numbered in depth-first pre-order (root = 0); workers are the leaves in the same
//! order, so the workers under any node form a contiguous index range and worker 0 is the
//! leftmost leaf. A node's *representative* is its first worker: the one whose reduction buffer
//! ends up holding the node's sum.

use std::ops::Range;

use super::SpheresError;
use crate::sphere_tree::{leaf_paths, SphereNode, SphereTree};

pub(crate) struct PlanNode {
    pub parent: Option<usize>,
    /// Child node indices in tree order (empty for a leaf).
    pub children: Vec<usize>,
    /// The workers under this node.
    pub workers: Range<usize>,
    /// 0 for a leaf, 1 + the tallest child for a group.
    pub height: usize,
}

pub(crate) struct WorkerPlan {
    pub cpu: usize,
    /// Child indices from the root joined by '.', e.g. "1.0.3" (from [`leaf_paths`]).
    pub path: String,
    /// This worker's leaf node.
    pub leaf: usize,
    /// The other workers in the order this one steals from them: siblings first (cyclically
    /// after itself), then the rest of the parent's parent's subtree, and so on up to the root.
    pub victims: Box<[usize]>,
    /// `reduce_steps[h - 1]` is the group of height `h` this worker helps reduce, if any
    /// (its ancestor of that height; an ancestor chain may skip heights in a lopsided tree).
    pub reduce_steps: Box<[Option<usize>]>,
}

pub(crate) struct Plan {
    pub nodes: Vec<PlanNode>,
    pub workers: Vec<WorkerPlan>,
    /// The root's height: how many reduction levels there are.
    pub levels: usize,
}

impl Plan {
    pub(crate) fn new(tree: &SphereTree) -> Result<Plan, SpheresError> {
        let mut plan = Plan {
            nodes: Vec::new(),
            workers: Vec::new(),
            levels: 0,
        };
        plan.add(&tree.root, None)?;
        plan.levels = plan.nodes[0].height;
        // Workers are the leaves in tree order, as `leaf_paths` lists them.
        for (worker, (path, _cpu)) in plan.workers.iter_mut().zip(leaf_paths(tree)) {
            worker.path = path;
        }
        for w in 0..plan.workers.len() {
            plan.workers[w].victims = plan.victims_of(w);
            plan.workers[w].reduce_steps = plan.reduce_steps_of(w);
        }
        Ok(plan)
    }

    fn add(&mut self, node: &SphereNode, parent: Option<usize>) -> Result<usize, SpheresError> {
        let index = self.nodes.len();
        let first = self.workers.len();
        self.nodes.push(PlanNode {
            parent,
            children: Vec::new(),
            workers: first..first,
            height: 0,
        });
        match node {
            SphereNode::Leaf { cpu } => self.workers.push(WorkerPlan {
                cpu: *cpu,
                path: String::new(),
                leaf: index,
                victims: Box::new([]),
                reduce_steps: Box::new([]),
            }),
            SphereNode::Group { label, children } => {
                if children.is_empty() {
                    return Err(SpheresError::EmptyGroup {
                        label: label.clone(),
                    });
                }
                let mut height = 0;
                for child in children {
                    let c = self.add(child, Some(index))?;
                    self.nodes[index].children.push(c);
                    height = height.max(self.nodes[c].height + 1);
                }
                self.nodes[index].height = height;
            }
        }
        self.nodes[index].workers = first..self.workers.len();
        Ok(index)
    }

    fn victims_of(&self, worker: usize) -> Box<[usize]> {
        let mut victims = Vec::with_capacity(self.workers.len().saturating_sub(1));
        let mut seen = self.nodes[self.workers[worker].leaf].workers.clone();
        let mut node = self.nodes[self.workers[worker].leaf].parent;
        while let Some(g) = node {
            let all = self.nodes[g].workers.clone();
            // Cyclically from just after `worker`, skipping the subtree already listed.
            for k in 1..all.len() {
                let v = all.start + (worker - all.start + k) % all.len();
                if !seen.contains(&v) {
                    victims.push(v);
                }
            }
            seen = all;
            node = self.nodes[g].parent;
        }
        victims.into_boxed_slice()
    }

    fn reduce_steps_of(&self, worker: usize) -> Box<[Option<usize>]> {
        let mut steps = vec![None; self.levels];
        let mut node = self.nodes[self.workers[worker].leaf].parent;
        while let Some(g) = node {
            steps[self.nodes[g].height - 1] = Some(g);
            node = self.nodes[g].parent;
        }
        steps.into_boxed_slice()
    }
}

/// Part `index` of `range` split into `parts` contiguous pieces whose sizes differ by at most
/// one (the first `len % parts` pieces get the extra element).
pub(crate) fn share(range: Range<usize>, parts: usize, index: usize) -> Range<usize> {
    let len = range.end.saturating_sub(range.start);
    let base = len / parts;
    let extra = len % parts;
    let start = range.start + index * base + index.min(extra);
    start..start + base + usize::from(index < extra)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(cpu: usize) -> SphereNode {
        SphereNode::Leaf { cpu }
    }

    fn group(children: Vec<SphereNode>) -> SphereNode {
        SphereNode::Group {
            label: "g".into(),
            children,
        }
    }

    #[test]
    fn paths_victims_and_levels_follow_the_tree() {
        // root ─┬─ g0 ─┬─ 0
        //       │      └─ 1
        //       ├─ 2
        //       └─ g2 ─┬─ 3
        //              ├─ 4
        //              └─ 5
        let tree = SphereTree {
            root: group(vec![
                group(vec![leaf(0), leaf(1)]),
                leaf(2),
                group(vec![leaf(3), leaf(4), leaf(5)]),
            ]),
        };
        let plan = Plan::new(&tree).unwrap();
        let paths: Vec<&str> = plan.workers.iter().map(|w| w.path.as_str()).collect();
        assert_eq!(paths, ["0.0", "0.1", "1", "2.0", "2.1", "2.2"]);
        assert_eq!(plan.levels, 2);
        assert_eq!(&*plan.workers[4].victims, &[5, 3, 0, 1, 2]);
        assert_eq!(&*plan.workers[2].victims, &[3, 4, 5, 0, 1]);
        assert_eq!(&*plan.workers[1].victims, &[0, 2, 3, 4, 5]);
        // Worker 2 sits directly under the root: it only takes part in the top level.
        assert_eq!(&*plan.workers[2].reduce_steps, &[None, Some(0)]);
        assert_eq!(
            plan.workers[3].reduce_steps[0],
            Some(plan.nodes[0].children[2])
        );
    }

    #[test]
    fn a_single_leaf_is_a_plan_of_one() {
        let plan = Plan::new(&SphereTree { root: leaf(7) }).unwrap();
        assert_eq!(plan.workers.len(), 1);
        assert_eq!(plan.workers[0].path, "0");
        assert_eq!(plan.levels, 0);
        assert!(plan.workers[0].victims.is_empty());
    }

    #[test]
    fn empty_groups_are_refused() {
        let tree = SphereTree {
            root: group(vec![leaf(0), group(vec![])]),
        };
        assert!(matches!(
            Plan::new(&tree),
            Err(SpheresError::EmptyGroup { .. })
        ));
    }

    #[test]
    fn shares_cover_the_range_evenly() {
        for len in [0, 1, 5, 12, 13] {
            for parts in 1..6 {
                let mut next = 3;
                for i in 0..parts {
                    let r = share(3..3 + len, parts, i);
                    assert_eq!(r.start, next);
                    assert!(r.len() == len / parts || r.len() == len / parts + 1);
                    next = r.end;
                }
                assert_eq!(next, 3 + len);
            }
        }
    }
}
