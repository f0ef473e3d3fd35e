//! The Linux sysfs/procfs reader. Every path is taken relative to a root so tests can point it at
//! a synthetic tree.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use super::{parse_cpulist, Detected, RawCpu, Source, Topology, TopologyError, TopologyWarning};

fn read_text(path: &Path) -> Result<String, TopologyError> {
    fs::read_to_string(path).map_err(|error| TopologyError::Io {
        path: path.to_path_buf(),
        error,
    })
}

fn parse_error(path: &Path, text: &str, expected: &'static str) -> TopologyError {
    TopologyError::Parse {
        path: path.to_path_buf(),
        text: text.trim().to_string(),
        expected,
    }
}

fn read_cpulist(path: &Path) -> Result<Vec<usize>, TopologyError> {
    let text = read_text(path)?;
    parse_cpulist(&text).ok_or_else(|| parse_error(path, &text, "a CPU list such as 0-3,8"))
}

/// A signed number (package ids may be -1 where the platform does not say).
fn read_number(path: &Path) -> Result<i64, TopologyError> {
    let text = read_text(path)?;
    text.trim()
        .parse()
        .map_err(|_| parse_error(path, &text, "a whole number"))
}

/// A cache size such as "32K" (sysfs writes kibibytes with a K suffix).
fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let (digits, scale) = match t.as_bytes().last()? {
        b'K' | b'k' => (&t[..t.len() - 1], 1u64 << 10),
        b'M' | b'm' => (&t[..t.len() - 1], 1 << 20),
        b'G' | b'g' => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    digits.parse::<u64>().ok()?.checked_mul(scale)
}

fn cpu_dir(root: &Path) -> PathBuf {
    root.join("sys/devices/system/cpu")
}

/// The numbers N of the `prefixN` entries of `dir`, ascending.
fn numbered_entries(dir: &Path, prefix: &str) -> Result<Vec<usize>, TopologyError> {
    let entries = fs::read_dir(dir).map_err(|error| TopologyError::Io {
        path: dir.to_path_buf(),
        error,
    })?;
    let mut ids: Vec<usize> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.strip_prefix(prefix)?.parse().ok())
        .collect();
    ids.sort_unstable();
    Ok(ids)
}

/// Online CPUs: `cpu/online` if present, else every `cpuN` directory; either way without
/// those whose own `cpuN/online` says 0.
pub(crate) fn online_cpus(root: &Path) -> Result<Vec<usize>, TopologyError> {
    let dir = cpu_dir(root);
    let listed = match read_cpulist(&dir.join("online")) {
        Ok(cpus) => cpus,
        Err(TopologyError::Io { .. }) => numbered_entries(&dir, "cpu")?,
        Err(e) => return Err(e),
    };
    Ok(listed
        .into_iter()
        .filter(|cpu| {
            // cpu0 often has no `online` file: it cannot be taken offline.
            fs::read_to_string(dir.join(format!("cpu{cpu}/online")))
                .map_or(true, |t| t.trim() != "0")
        })
        .collect())
}

/// `MemTotal` from `root/proc/meminfo`, in bytes.
pub(crate) fn mem_total(root: &Path) -> Result<u64, TopologyError> {
    let path = root.join("proc/meminfo");
    let text = read_text(&path)?;
    meminfo_total(&text).ok_or_else(|| parse_error(&path, &text, "a `MemTotal: N kB` line"))
}

/// The `MemTotal` of a meminfo file (also the `Node N MemTotal:` form of a node's), in bytes.
fn meminfo_total(text: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (_, rest) = line.split_once("MemTotal:")?;
        let kb = rest.trim().strip_suffix("kB")?.trim().parse::<u64>().ok()?;
        kb.checked_mul(1024)
    })
}

/// What the `cache/` directory says about one CPU.
#[derive(Default)]
struct Caches {
    l1d: Option<u64>,
    l2: Option<u64>,
    l3: Option<(Vec<usize>, Option<u64>)>,
}

fn read_caches(dir: &Path, cpu: usize) -> Result<Caches, TopologyError> {
    let mut caches = Caches::default();
    for index in numbered_entries(dir, "index")? {
        let idx = dir.join(format!("index{index}"));
        let level = read_number(&idx.join("level"))?;
        let kind = read_text(&idx.join("type"))?;
        let size = read_text(&idx.join("size"))
            .ok()
            .and_then(|t| parse_size(&t));
        match (level, kind.trim()) {
            (1, "Data" | "Unified") => caches.l1d = size,
            (2, "Data" | "Unified") => caches.l2 = size,
            (3, "Data" | "Unified") => {
                let mut shared = read_cpulist(&idx.join("shared_cpu_list"))?;
                if !shared.contains(&cpu) {
                    shared.push(cpu);
                    shared.sort_unstable();
                }
                caches.l3 = Some((shared, size));
            }
            _ => {}
        }
    }
    Ok(caches)
}

/// Node of each CPU and memory of each node, from `root/sys/devices/system/node`.
type NodeMap = (BTreeMap<usize, usize>, BTreeMap<usize, u64>);

fn read_nodes(root: &Path) -> Result<NodeMap, TopologyError> {
    let dir = root.join("sys/devices/system/node");
    let mut node_of = BTreeMap::new();
    let mut memory = BTreeMap::new();
    let ids = numbered_entries(&dir, "node")?;
    if ids.is_empty() {
        return Err(TopologyError::Io {
            path: dir,
            error: std::io::Error::new(std::io::ErrorKind::NotFound, "no nodeN directory"),
        });
    }
    for id in ids {
        let node = dir.join(format!("node{id}"));
        for cpu in read_cpulist(&node.join("cpulist"))? {
            node_of.entry(cpu).or_insert(id);
        }
        if let Some(bytes) = fs::read_to_string(node.join("meminfo"))
            .ok()
            .and_then(|t| meminfo_total(&t))
        {
            memory.insert(id, bytes);
        }
    }
    Ok((node_of, memory))
}

/// One CPU's package, core id and siblings from its `topology/` directory.
fn read_cpu_topology(dir: &Path, cpu: usize) -> Result<(usize, usize, Vec<usize>), TopologyError> {
    let package = read_number(&dir.join("physical_package_id"))?.max(0) as usize;
    let core_id = read_number(&dir.join("core_id"))?;
    let core_id = usize::try_from(core_id).unwrap_or(cpu);
    // `core_cpus_list` is the current name; `thread_siblings_list` the older one.
    let mut siblings = match read_cpulist(&dir.join("core_cpus_list")) {
        Ok(s) => s,
        Err(TopologyError::Io { .. }) => read_cpulist(&dir.join("thread_siblings_list"))?,
        Err(e) => return Err(e),
    };
    if !siblings.contains(&cpu) {
        siblings.push(cpu);
        siblings.sort_unstable();
    }
    Ok((package, core_id, siblings))
}

pub(crate) fn read(root: &Path, allowed: &[usize]) -> Result<Detected, TopologyError> {
    let mut warnings = Vec::new();
    let mut allowed = allowed.to_vec();
    allowed.sort_unstable();
    allowed.dedup();
    if allowed.is_empty() {
        return Err(TopologyError::NoAllowedCpu);
    }
    let online = online_cpus(root)?;
    let (usable, left_out): (Vec<usize>, Vec<usize>) = allowed
        .iter()
        .partition(|cpu| online.binary_search(cpu).is_ok());
    if usable.is_empty() {
        return Err(TopologyError::NoUsableCpu {
            allowed: super::format_cpulist(&allowed),
        });
    }
    if !left_out.is_empty() {
        warnings.push(TopologyWarning::CpusLeftOut { cpus: left_out });
    }

    let (node_of, node_memory) = match read_nodes(root) {
        Ok(nodes) => nodes,
        Err(e) => {
            warnings.push(TopologyWarning::NoNumaInfo(e));
            (BTreeMap::new(), BTreeMap::new())
        }
    };
    let first_node = node_of.values().min().copied().unwrap_or(0);

    let dir = cpu_dir(root);
    let (mut no_topology, mut no_cache, mut no_node) = (Vec::new(), Vec::new(), Vec::new());
    let mut raw = Vec::with_capacity(usable.len());
    for &cpu in &usable {
        let cpu_path = dir.join(format!("cpu{cpu}"));
        let (package, core_id, siblings) = read_cpu_topology(&cpu_path.join("topology"), cpu)
            .unwrap_or_else(|_| {
                no_topology.push(cpu);
                (0, cpu, vec![cpu])
            });
        let caches = read_caches(&cpu_path.join("cache"), cpu).unwrap_or_else(|_| {
            no_cache.push(cpu);
            Caches::default()
        });
        let node = match node_of.get(&cpu) {
            Some(&n) => n,
            None => {
                if !node_of.is_empty() {
                    no_node.push(cpu);
                }
                first_node
            }
        };
        raw.push(RawCpu {
            cpu,
            package,
            core_id,
            siblings,
            node,
            l1d_bytes: caches.l1d,
            l2_bytes: caches.l2,
            l3: caches.l3,
        });
    }
    for (what, consequence, cpus) in [
        ("core/package", "each is taken as its own core", no_topology),
        (
            "cache",
            "L3 domains and cache sizes unknown there",
            no_cache,
        ),
        ("NUMA", "placed in the first node", no_node),
    ] {
        if !cpus.is_empty() {
            warnings.push(TopologyWarning::MissingCpuInfo {
                what,
                consequence,
                cpus,
            });
        }
    }

    let memory_bytes = match mem_total(root) {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            warnings.push(TopologyWarning::NoMemoryInfo(e));
            None
        }
    };
    Ok(Detected {
        topology: Topology::assemble(Source::Sysfs, raw, online, memory_bytes, &node_memory),
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_meminfo_parse() {
        assert_eq!(parse_size("32K\n"), Some(32 << 10));
        assert_eq!(parse_size("8192K"), Some(8 << 20));
        assert_eq!(parse_size("1M"), Some(1 << 20));
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("K"), None);
        assert_eq!(parse_size(""), None);
        assert_eq!(
            meminfo_total("MemTotal:       24683656 kB\nMemFree: 1 kB\n"),
            Some(24683656 * 1024)
        );
        assert_eq!(
            meminfo_total("Node 0 MemTotal:        4286240 kB\n"),
            Some(4286240 * 1024)
        );
        assert_eq!(meminfo_total("MemFree: 1 kB\n"), None);
    }
}
