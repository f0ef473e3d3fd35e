//! Human (`hwloc-ls`-like) and JSON renderings of a topology and its sphere tree.

use std::fmt::{self, Write};

use super::{format_cpulist, Bytes, Core, Topology};
use crate::sphere_tree::{self, SphereNode, SphereTree};

/// Lines of core lists wrap after this many characters.
const WRAP: usize = 96;

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn opt_bytes(b: Option<u64>) -> String {
    b.map_or_else(|| "?".to_string(), |b| Bytes(b).to_string())
}

/// "0" for a core with one thread, "0,64" for one with two.
fn core_cpus(core: &Core) -> String {
    core.cpus
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Write `items` separated by spaces after `head`, wrapping with `indent`.
fn write_wrapped(f: &mut impl Write, indent: &str, head: &str, items: &[String]) -> fmt::Result {
    let mut line = format!("{indent}{head}");
    for item in items {
        if line.len() + 1 + item.len() > WRAP && line.len() > indent.len() + head.len() {
            writeln!(f, "{line}")?;
            line = format!("{indent}{}", " ".repeat(head.len()));
        }
        line.push(' ');
        line.push_str(item);
    }
    writeln!(f, "{line}")
}

/// The cores' L1d/L2 sizes, if the same for all of them.
fn uniform_core_caches(cores: &[&Core]) -> Option<(Option<u64>, Option<u64>)> {
    let first = cores.first()?;
    let sizes = (first.l1d_bytes, first.l2_bytes);
    cores
        .iter()
        .all(|c| (c.l1d_bytes, c.l2_bytes) == sizes)
        .then_some(sizes)
}

fn write_cores(f: &mut impl Write, indent: &str, cores: &[&Core]) -> fmt::Result {
    let items: Vec<String> = match uniform_core_caches(cores) {
        Some(_) => cores.iter().map(|c| core_cpus(c)).collect(),
        None => cores
            .iter()
            .map(|c| {
                format!(
                    "{}(L1d {} L2 {})",
                    core_cpus(c),
                    opt_bytes(c.l1d_bytes),
                    opt_bytes(c.l2_bytes)
                )
            })
            .collect(),
    };
    let head = match uniform_core_caches(cores) {
        Some((l1d, l2)) if l1d.is_some() || l2.is_some() => format!(
            "{} (L1d {}, L2 {} each):",
            plural(cores.len(), "core", "cores"),
            opt_bytes(l1d),
            opt_bytes(l2)
        ),
        _ => format!("{}:", plural(cores.len(), "core", "cores")),
    };
    write_wrapped(f, indent, &head, &items)
}

/// The machine: memory, packages, NUMA nodes with their L3 domains and cores.
impl fmt::Display for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let smt = self.smt();
        writeln!(
            f,
            "machine: {} memory, {}, {}, {}, {}, {} per core; CPUs {} ({} of {} online) [{}]",
            opt_bytes(self.memory_bytes),
            plural(self.packages.len(), "package", "packages"),
            plural(self.numa_nodes.len(), "NUMA node", "NUMA nodes"),
            plural(self.l3_domains.len(), "L3 domain", "L3 domains"),
            plural(self.cores.len(), "core", "cores"),
            plural(smt, "thread", "threads"),
            format_cpulist(&self.cpus),
            self.cpus.len(),
            self.online.len(),
            self.source.name(),
        )?;
        for node in &self.numa_nodes {
            writeln!(
                f,
                "  numa{}: CPUs {}, memory {}",
                node.id,
                format_cpulist(&node.cpus),
                opt_bytes(node.memory_bytes)
            )?;
            let cores: Vec<&Core> = self.cores.iter().filter(|c| c.node == node.id).collect();
            let mut rest = cores.as_slice();
            while let Some(first) = rest.first() {
                let n = rest.iter().take_while(|c| c.l3 == first.l3).count();
                let (run, tail) = rest.split_at(n);
                match first
                    .l3
                    .and_then(|i| self.l3_domains.get(i).map(|d| (i, d)))
                {
                    Some((i, domain)) => {
                        writeln!(
                            f,
                            "    l3-{i}: {}, CPUs {}",
                            opt_bytes(domain.size_bytes),
                            format_cpulist(&domain.cpus)
                        )?;
                        write_cores(f, "      ", run)?;
                    }
                    None => write_cores(f, "    ", run)?,
                }
                rest = tail;
            }
        }
        Ok(())
    }
}

fn json_list(cpus: &[usize]) -> String {
    let items: Vec<String> = cpus.iter().map(usize::to_string).collect();
    format!("[{}]", items.join(","))
}

fn json_opt(v: Option<impl fmt::Display>) -> String {
    v.map_or_else(|| "null".to_string(), |v| v.to_string())
}

/// A JSON string literal.
fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The tree as nested JSON objects, from [`sphere_tree::paths`]' pre-order walk.
fn json_spheres(tree: &SphereTree, out: &mut String) {
    let mut open = 0; // groups whose children list is still open
    let mut need_comma = false;
    for (path, depth, node) in sphere_tree::paths(tree) {
        while open > depth {
            out.push_str("]}");
            open -= 1;
            need_comma = true;
        }
        if need_comma {
            out.push(',');
        }
        match node {
            SphereNode::Leaf { cpu } => {
                let _ = write!(
                    out,
                    "{{\"name\":{},\"cpu\":{cpu}}}",
                    json_str(&sphere_tree::sphere_name(&path))
                );
                need_comma = true;
            }
            SphereNode::Group { label, .. } => {
                let _ = write!(
                    out,
                    "{{\"label\":{},\"path\":{},\"cpus\":{},\"children\":[",
                    json_str(label),
                    json_str(&path),
                    json_list(&node.cpus())
                );
                open += 1;
                need_comma = false;
            }
        }
    }
    for _ in 0..open {
        out.push_str("]}");
    }
}

impl Topology {
    /// The machine (as [`fmt::Display`] shows it) followed by the sphere tree: each group with
    /// its label and CPUs, each worker with its thread name and the CPU it is pinned to.
    pub fn render(&self, tree: &SphereTree) -> String {
        let mut out = self.to_string();
        let workers = sphere_tree::leaf_paths(tree);
        let _ = writeln!(
            out,
            "spheres: {}, max fan-out {}",
            plural(workers.len(), "worker", "workers"),
            tree.root.max_fanout()
        );
        for (path, depth, node) in sphere_tree::paths(tree) {
            let indent = "  ".repeat(depth + 1);
            let _ = match node {
                SphereNode::Leaf { cpu } => {
                    writeln!(
                        out,
                        "{indent}{} -> CPU {cpu}",
                        sphere_tree::sphere_name(&path)
                    )
                }
                SphereNode::Group { label, children } => writeln!(
                    out,
                    "{indent}{label}{}: {}, CPUs {}",
                    if path.is_empty() {
                        String::new()
                    } else {
                        format!(" [{path}]")
                    },
                    plural(children.len(), "child", "children"),
                    format_cpulist(&sorted(node.cpus()))
                ),
            };
        }
        out
    }

    /// The machine and its sphere tree as one JSON object (keys: source, memory_bytes, cpus,
    /// online, smt, packages, numa_nodes, l3_domains, cores, spheres, workers).
    pub fn to_json(&self, tree: &SphereTree) -> String {
        let mut out = String::new();
        let _ = write!(
            out,
            "{{\"source\":{},\"memory_bytes\":{},\"cpus\":{},\"online\":{},\"smt\":{}",
            json_str(self.source.name()),
            json_opt(self.memory_bytes),
            json_list(&self.cpus),
            json_list(&self.online),
            self.smt()
        );
        let packages: Vec<String> = self
            .packages
            .iter()
            .map(|p| format!("{{\"id\":{},\"cpus\":{}}}", p.id, json_list(&p.cpus)))
            .collect();
        let nodes: Vec<String> = self
            .numa_nodes
            .iter()
            .map(|n| {
                format!(
                    "{{\"id\":{},\"cpus\":{},\"memory_bytes\":{}}}",
                    n.id,
                    json_list(&n.cpus),
                    json_opt(n.memory_bytes)
                )
            })
            .collect();
        let l3s: Vec<String> = self
            .l3_domains
            .iter()
            .enumerate()
            .map(|(i, d)| {
                format!(
                    "{{\"index\":{i},\"cpus\":{},\"size_bytes\":{}}}",
                    json_list(&d.cpus),
                    json_opt(d.size_bytes)
                )
            })
            .collect();
        let cores: Vec<String> = self
            .cores
            .iter()
            .map(|c| {
                format!(
                    "{{\"package\":{},\"core_id\":{},\"node\":{},\"l3\":{},\"cpus\":{},\"l1d_bytes\":{},\"l2_bytes\":{}}}",
                    c.package,
                    c.core_id,
                    c.node,
                    json_opt(c.l3),
                    json_list(&c.cpus),
                    json_opt(c.l1d_bytes),
                    json_opt(c.l2_bytes)
                )
            })
            .collect();
        let _ = write!(
            out,
            ",\"packages\":[{}],\"numa_nodes\":[{}],\"l3_domains\":[{}],\"cores\":[{}],\"spheres\":",
            packages.join(","),
            nodes.join(","),
            l3s.join(","),
            cores.join(",")
        );
        json_spheres(tree, &mut out);
        let workers: Vec<String> = sphere_tree::leaf_paths(tree)
            .iter()
            .map(|(path, cpu)| {
                format!(
                    "{{\"name\":{},\"cpu\":{cpu}}}",
                    json_str(&sphere_tree::sphere_name(path))
                )
            })
            .collect();
        let _ = write!(out, ",\"workers\":[{}]}}", workers.join(","));
        out
    }
}

fn sorted(mut v: Vec<usize>) -> Vec<usize> {
    v.sort_unstable();
    v
}
