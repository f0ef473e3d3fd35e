//! The shape of the worker tree, as the topology reader plans it and the sphere workers build it.
//!
//! Inner nodes group workers that share something (a NUMA node, an L3 domain, or just a fan-out
//! limit); leaves are workers, each pinned to one CPU. No node has more than [`MAX_CHILDREN`]
//! children (12, the kissing number in 3-D).

/// The most children any sphere may have.
pub const MAX_CHILDREN: usize = 12;

/// A node of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SphereNode {
    /// A group of spheres; `label` says what it stands for ("numa0", "l3-1", "group2").
    Group {
        label: String,
        children: Vec<SphereNode>,
    },
    /// One worker, pinned to logical CPU `cpu`.
    Leaf { cpu: usize },
}

/// A whole plan: the root is the process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SphereTree {
    pub root: SphereNode,
}

impl SphereNode {
    /// Group `children` under `label`, inserting intermediate groups so no node exceeds
    /// [`MAX_CHILDREN`] children. A single child is returned as it is (no one-child chains).
    pub fn group(label: &str, mut children: Vec<SphereNode>) -> SphereNode {
        if children.len() == 1 {
            return children.pop().expect("one child");
        }
        while children.len() > MAX_CHILDREN {
            // Split into the fewest chunks of at most MAX_CHILDREN, as even as possible.
            let chunks = children.len().div_ceil(MAX_CHILDREN);
            let per = children.len().div_ceil(chunks);
            let mut grouped = Vec::with_capacity(chunks);
            let mut rest = children.into_iter().peekable();
            let mut i = 0;
            while rest.peek().is_some() {
                let chunk: Vec<SphereNode> = rest.by_ref().take(per).collect();
                grouped.push(SphereNode::Group {
                    label: format!("{label}.{i}"),
                    children: chunk,
                });
                i += 1;
            }
            children = grouped;
        }
        SphereNode::Group {
            label: label.to_string(),
            children,
        }
    }

    /// The CPUs of the leaves under this node, in tree order.
    pub fn cpus(&self) -> Vec<usize> {
        let mut out = Vec::new();
        self.visit_leaves(&mut |cpu| out.push(cpu));
        out
    }

    fn visit_leaves(&self, f: &mut impl FnMut(usize)) {
        match self {
            SphereNode::Leaf { cpu } => f(*cpu),
            SphereNode::Group { children, .. } => children.iter().for_each(|c| c.visit_leaves(f)),
        }
    }

    /// The largest number of children of any node in this subtree.
    pub fn max_fanout(&self) -> usize {
        match self {
            SphereNode::Leaf { .. } => 0,
            SphereNode::Group { children, .. } => children
                .iter()
                .map(SphereNode::max_fanout)
                .max()
                .unwrap_or(0)
                .max(children.len()),
        }
    }
}

impl SphereTree {
    /// A plan with no structure beyond the fan-out limit: one leaf per CPU, in the order given.
    pub fn flat(cpus: &[usize]) -> SphereTree {
        let leaves = cpus.iter().map(|&cpu| SphereNode::Leaf { cpu }).collect();
        SphereTree {
            root: SphereNode::group("root", leaves),
        }
    }

    /// The workers' CPUs in tree order (worker i is pinned to `cpus()[i]`).
    pub fn cpus(&self) -> Vec<usize> {
        self.root.cpus()
    }
}

/// Every node of `tree` in pre-order with its path and depth (the root has depth 0).
///
/// A path is the child indices from the root joined by dots ("0.3" is the root's first child's
/// fourth child); the root's own path is empty, except that a root which is itself the only
/// worker has path "0". This is the one place paths are made: worker threads are named
/// [`sphere_name`] of their path.
pub fn paths(tree: &SphereTree) -> Vec<(String, usize, &SphereNode)> {
    fn walk<'t>(
        node: &'t SphereNode,
        path: &mut Vec<usize>,
        out: &mut Vec<(String, usize, &'t SphereNode)>,
    ) {
        let text = if path.is_empty() && matches!(node, SphereNode::Leaf { .. }) {
            "0".to_string()
        } else {
            path.iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(".")
        };
        out.push((text, path.len(), node));
        if let SphereNode::Group { children, .. } = node {
            for (i, child) in children.iter().enumerate() {
                path.push(i);
                walk(child, path, out);
                path.pop();
            }
        }
    }
    let mut out = Vec::new();
    walk(&tree.root, &mut Vec::new(), &mut out);
    out
}

/// The workers of `tree` in tree order: each leaf's path (see [`paths`]) and the CPU it is
/// pinned to. Worker `i` of the sphere workers is `leaf_paths(tree)[i]`.
pub fn leaf_paths(tree: &SphereTree) -> Vec<(String, usize)> {
    paths(tree)
        .into_iter()
        .filter_map(|(path, _, node)| match node {
            SphereNode::Leaf { cpu } => Some((path, *cpu)),
            SphereNode::Group { .. } => None,
        })
        .collect()
}

/// The thread name of the worker at `path`: `sphere-<path>`, e.g. "sphere-0.3".
pub fn sphere_name(path: &str) -> String {
    format!("sphere-{path}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_tree_respects_the_fanout_limit() {
        for n in [1, 2, 12, 13, 64, 144, 145, 300] {
            let cpus: Vec<usize> = (0..n).collect();
            let tree = SphereTree::flat(&cpus);
            assert_eq!(tree.cpus(), cpus, "n={n}");
            assert!(tree.root.max_fanout() <= MAX_CHILDREN, "n={n}");
        }
    }

    #[test]
    fn leaf_paths_follow_child_indices() {
        let leaf = |cpu| SphereNode::Leaf { cpu };
        let tree = SphereTree {
            root: SphereNode::Group {
                label: "root".into(),
                children: vec![
                    SphereNode::Group {
                        label: "numa0".into(),
                        children: vec![leaf(0), leaf(1)],
                    },
                    leaf(7),
                ],
            },
        };
        let want = [("0.0", 0), ("0.1", 1), ("1", 7)];
        let got = leaf_paths(&tree);
        assert_eq!(got.len(), want.len());
        for ((path, cpu), (want_path, want_cpu)) in got.iter().zip(want) {
            assert_eq!((path.as_str(), *cpu), (want_path, want_cpu));
        }
        assert_eq!(tree.cpus(), vec![0, 1, 7]);
        assert_eq!(sphere_name(&got[2].0), "sphere-1");

        let single = SphereTree::flat(&[3]);
        assert_eq!(leaf_paths(&single), vec![("0".to_string(), 3)]);
    }
}
