//! The machine the engine runs on: NUMA nodes, packages, L3 domains, cores and their SMT siblings,
//! cache sizes and memory, restricted to the CPUs this process may use.
//!
//! [`Topology::detect`] reads Linux sysfs (see `README.md` beside this file for what comes from
//! where); with the cargo feature `hwloc`, `Topology::from_hwloc` reads the same through hwloc.
//! [`Topology::plan`] lays the sphere-worker tree over it ([`crate::sphere_tree`]).
//!
//! Nothing here prints or panics on odd input: readers return a [`Detected`] carrying every
//! [`TopologyWarning`] met on the way, and when sysfs cannot be used at all the topology falls back
//! to a flat one over the allowed CPUs.

#[cfg(feature = "hwloc")]
mod hwloc;
mod plan;
mod render;
mod sysfs;

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

pub use plan::Plan;

/// The environment variable that caps the number of sphere workers.
pub const THREADS_ENV: &str = "CLLM_THREADS";

/// A reason the topology could not be read. Each message is complete (it names the cause), so
/// print it with `{}`; none is chained through `Error::source`.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// A file that must exist could not be read.
    #[error("cannot read {}: {error}", path.display())]
    Io { path: PathBuf, error: io::Error },
    /// A file held something other than what the kernel writes there.
    #[error("cannot parse {} ({text:?}): expected {expected}", path.display())]
    Parse {
        path: PathBuf,
        text: String,
        expected: &'static str,
    },
    /// None of the allowed CPUs is online and known to the reader.
    #[error("no usable CPU: none of the allowed CPUs [{allowed}] is online")]
    NoUsableCpu { allowed: String },
    /// The allowed-CPU set was empty.
    #[error("the allowed CPU set is empty")]
    NoAllowedCpu,
    /// `sched_getaffinity` failed.
    #[error("cannot read the process's allowed CPUs (sched_getaffinity): {0}")]
    Affinity(io::Error),
    /// `CLLM_THREADS` held something other than a positive whole number, or one too large to
    /// hold; `problem` says which ("is not a positive whole number", ...).
    #[error("{THREADS_ENV}={value:?} {problem}")]
    BadThreads {
        value: String,
        problem: &'static str,
    },
    /// hwloc could not build its topology.
    #[cfg(feature = "hwloc")]
    #[error("hwloc could not load the topology")]
    Hwloc,
}

/// Something odd met while reading or planning; the result is still usable. The message says
/// what was wrong and what was done instead.
#[derive(Debug, thiserror::Error)]
pub enum TopologyWarning {
    /// The reader failed; the topology is a flat one over the allowed CPUs.
    #[error("topology unreadable ({0}); using a flat tree over the allowed CPUs")]
    Fallback(TopologyError),
    /// The allowed-CPU set could not be read; every online CPU is used.
    #[error("{0}; using every online CPU")]
    AffinityUnavailable(TopologyError),
    /// Allowed CPUs that are offline or unknown were left out.
    #[error(
        "allowed CPUs [{}] are offline or unknown; left out",
        format_cpulist(cpus)
    )]
    CpusLeftOut { cpus: Vec<usize> },
    /// Part of the per-CPU information was missing or unreadable for these CPUs.
    #[error(
        "no {what} information for CPUs [{}]; {consequence}",
        format_cpulist(cpus)
    )]
    MissingCpuInfo {
        what: &'static str,
        consequence: &'static str,
        cpus: Vec<usize>,
    },
    /// No NUMA information; all CPUs form one node.
    #[error("no NUMA node information ({0}); treating the machine as one node")]
    NoNumaInfo(TopologyError),
    /// The machine's memory size could not be read.
    #[error("memory size unknown ({0})")]
    NoMemoryInfo(TopologyError),
    /// `CLLM_THREADS` was not a positive whole number; it is ignored.
    #[error("{0}; ignoring it")]
    BadThreads(TopologyError),
    /// More workers were asked for than there are allowed CPUs.
    #[error(
        "{requested} threads asked for but only {available} {} allowed; using {available}",
        if *available == 1 { "CPU is" } else { "CPUs are" }
    )]
    TooManyThreads { requested: usize, available: usize },
}

/// Which reader produced a [`Topology`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Linux sysfs and procfs.
    Sysfs,
    /// hwloc (cargo feature `hwloc`).
    Hwloc,
    /// Nothing could be read: every allowed CPU is its own core, all in one node.
    Flat,
}

impl Source {
    /// A short lower-case name ("sysfs", "hwloc", "flat").
    pub fn name(self) -> &'static str {
        match self {
            Source::Sysfs => "sysfs",
            Source::Hwloc => "hwloc",
            Source::Flat => "flat",
        }
    }
}

/// A physical package (socket), restricted to the usable CPUs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    /// The OS's package id (`physical_package_id`).
    pub id: usize,
    /// Usable CPUs in it, ascending.
    pub cpus: Vec<usize>,
}

/// A NUMA node with usable CPUs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumaNode {
    /// The OS's node number.
    pub id: usize,
    /// Usable CPUs local to it, ascending.
    pub cpus: Vec<usize>,
    /// Memory attached to it, in bytes, as the node reports it (VMs may understate it).
    pub memory_bytes: Option<u64>,
}

/// A set of CPUs sharing one L3 cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct L3Domain {
    /// Usable CPUs sharing it, ascending.
    pub cpus: Vec<usize>,
    /// Its size in bytes.
    pub size_bytes: Option<u64>,
}

/// A physical core and its usable SMT siblings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Core {
    /// The package it sits in.
    pub package: usize,
    /// The OS's `core_id` (unique within its package on x86).
    pub core_id: usize,
    /// The NUMA node it is local to.
    pub node: usize,
    /// Index into [`Topology::l3_domains`], if the L3 is known.
    pub l3: Option<usize>,
    /// Usable hardware threads (SMT siblings), ascending; a worker on this core is pinned to
    /// `cpus[0]`.
    pub cpus: Vec<usize>,
    /// L1 data cache size in bytes.
    pub l1d_bytes: Option<u64>,
    /// L2 cache size in bytes.
    pub l2_bytes: Option<u64>,
}

/// The machine as far as this process may use it.
///
/// Every list holds only usable CPUs: online, and in the allowed set the reader was given.
/// Cores are in plan order: by NUMA node, then package, then L3 domain, then first CPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// Which reader produced it.
    pub source: Source,
    /// Usable CPUs, ascending.
    pub cpus: Vec<usize>,
    /// Online CPUs, ascending (usable or not).
    pub online: Vec<usize>,
    /// Total memory from /proc/meminfo (`MemTotal`), in bytes.
    pub memory_bytes: Option<u64>,
    /// Packages with usable CPUs, by id.
    pub packages: Vec<Package>,
    /// NUMA nodes with usable CPUs, by id.
    pub numa_nodes: Vec<NumaNode>,
    /// L3 domains with usable CPUs, by first CPU.
    pub l3_domains: Vec<L3Domain>,
    /// Cores with usable CPUs, in plan order.
    pub cores: Vec<Core>,
}

/// A reader's result: the topology and every warning met on the way.
#[derive(Debug)]
pub struct Detected {
    pub topology: Topology,
    pub warnings: Vec<TopologyWarning>,
}

/// What a reader knows about one usable CPU, before the CPUs are grouped.
#[derive(Debug, Clone)]
pub(crate) struct RawCpu {
    pub cpu: usize,
    pub package: usize,
    pub core_id: usize,
    /// All hardware threads of its core (usable or not); identifies the core.
    pub siblings: Vec<usize>,
    pub node: usize,
    pub l1d_bytes: Option<u64>,
    pub l2_bytes: Option<u64>,
    /// All CPUs sharing its L3 (usable or not), and the L3's size.
    pub l3: Option<(Vec<usize>, Option<u64>)>,
}

impl Topology {
    /// Read the running machine: the allowed CPUs from `sched_getaffinity` (so cgroup cpusets and
    /// `taskset` apply), the rest from sysfs under `/`. Never fails: when sysfs cannot be used
    /// the result is [`Topology::flat`] over the allowed CPUs, with a warning saying why.
    pub fn detect() -> Detected {
        let root = std::path::Path::new("/");
        let mut warnings = Vec::new();
        let allowed = match allowed_cpus() {
            Ok(cpus) => cpus,
            Err(e) => {
                warnings.push(TopologyWarning::AffinityUnavailable(e));
                sysfs::online_cpus(root).unwrap_or_else(|_| {
                    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
                    (0..n).collect()
                })
            }
        };
        let mut detected = Topology::from_sysfs_or_flat(root, &allowed);
        warnings.append(&mut detected.warnings);
        detected.warnings = warnings;
        detected
    }

    /// Read a sysfs tree under `root` (`root/sys/devices/system/...`, `root/proc/meminfo`),
    /// keeping only the CPUs in `allowed` that are online.
    ///
    /// Fails only when nothing usable can be read (no CPU directory, no allowed CPU online);
    /// missing per-CPU details become warnings.
    pub fn from_sysfs(
        root: &std::path::Path,
        allowed: &[usize],
    ) -> Result<Detected, TopologyError> {
        sysfs::read(root, allowed)
    }

    /// [`Topology::from_sysfs`], or on failure [`Topology::flat`] over `allowed` with a
    /// [`TopologyWarning::Fallback`].
    pub fn from_sysfs_or_flat(root: &std::path::Path, allowed: &[usize]) -> Detected {
        match sysfs::read(root, allowed) {
            Ok(d) => d,
            Err(e) => {
                let mut cpus = allowed.to_vec();
                cpus.sort_unstable();
                cpus.dedup();
                if cpus.is_empty() {
                    cpus.push(0);
                }
                let mut topology = Topology::flat(&cpus);
                topology.memory_bytes = sysfs::mem_total(root).ok();
                Detected {
                    topology,
                    warnings: vec![TopologyWarning::Fallback(e)],
                }
            }
        }
    }

    /// Read the running machine through hwloc, keeping only the CPUs in `allowed`.
    #[cfg(feature = "hwloc")]
    pub fn from_hwloc(allowed: &[usize]) -> Result<Detected, TopologyError> {
        hwloc::read(allowed)
    }

    /// A topology that knows nothing: each CPU its own core, all in package 0 and node 0.
    pub fn flat(cpus: &[usize]) -> Topology {
        let raw = cpus
            .iter()
            .map(|&cpu| RawCpu {
                cpu,
                package: 0,
                core_id: cpu,
                siblings: vec![cpu],
                node: 0,
                l1d_bytes: None,
                l2_bytes: None,
                l3: None,
            })
            .collect();
        Topology::assemble(Source::Flat, raw, cpus.to_vec(), None, &BTreeMap::new())
    }

    /// Group per-CPU facts into packages, nodes, L3 domains and cores.
    pub(crate) fn assemble(
        source: Source,
        mut raw: Vec<RawCpu>,
        mut online: Vec<usize>,
        memory_bytes: Option<u64>,
        node_memory: &BTreeMap<usize, u64>,
    ) -> Topology {
        raw.sort_by_key(|r| r.cpu);
        raw.dedup_by_key(|r| r.cpu);
        online.sort_unstable();
        online.dedup();
        let cpus: Vec<usize> = raw.iter().map(|r| r.cpu).collect();

        let mut packages: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        let mut nodes: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for r in &raw {
            packages.entry(r.package).or_default().push(r.cpu);
            nodes.entry(r.node).or_default().push(r.cpu);
        }

        // L3 domains in order of their first usable CPU (raw is sorted by CPU).
        let mut l3_keys: Vec<&Vec<usize>> = Vec::new();
        let mut l3_domains: Vec<L3Domain> = Vec::new();
        let mut l3_of = Vec::with_capacity(raw.len());
        for r in &raw {
            l3_of.push(r.l3.as_ref().map(|(shared, size)| {
                match l3_keys.iter().position(|k| *k == shared) {
                    Some(i) => {
                        l3_domains[i].cpus.push(r.cpu);
                        i
                    }
                    None => {
                        l3_keys.push(shared);
                        l3_domains.push(L3Domain {
                            cpus: vec![r.cpu],
                            size_bytes: *size,
                        });
                        l3_domains.len() - 1
                    }
                }
            }));
        }

        // Cores, identified by their full sibling list; facts come from the first usable thread.
        let mut core_index: BTreeMap<&[usize], usize> = BTreeMap::new();
        let mut cores: Vec<Core> = Vec::new();
        for (r, l3) in raw.iter().zip(&l3_of) {
            match core_index.get(r.siblings.as_slice()) {
                Some(&i) => cores[i].cpus.push(r.cpu),
                None => {
                    core_index.insert(&r.siblings, cores.len());
                    cores.push(Core {
                        package: r.package,
                        core_id: r.core_id,
                        node: r.node,
                        l3: *l3,
                        cpus: vec![r.cpu],
                        l1d_bytes: r.l1d_bytes,
                        l2_bytes: r.l2_bytes,
                    });
                }
            }
        }
        cores.sort_by_key(|c| (c.node, c.package, c.l3, c.cpus[0]));

        Topology {
            source,
            cpus,
            online,
            memory_bytes,
            packages: packages
                .into_iter()
                .map(|(id, cpus)| Package { id, cpus })
                .collect(),
            numa_nodes: nodes
                .into_iter()
                .map(|(id, cpus)| NumaNode {
                    id,
                    cpus,
                    memory_bytes: node_memory.get(&id).copied(),
                })
                .collect(),
            l3_domains,
            cores,
        }
    }

    /// The most usable hardware threads any core has (1 without SMT).
    pub fn smt(&self) -> usize {
        self.cores.iter().map(|c| c.cpus.len()).max().unwrap_or(1)
    }
}

/// This machine's total memory in bytes (`MemTotal` in /proc/meminfo), when it can be read:
/// the figure [`Topology::detect`]'s sysfs reader records, without reading the rest of the machine.
pub fn memory_bytes() -> Option<u64> {
    sysfs::mem_total(Path::new("/")).ok()
}

/// The CPUs this process may run on, ascending: the affinity mask (`sched_getaffinity`) of the
/// process's main thread, which `taskset` and cgroup cpusets set. Asking for the main thread
/// rather than the calling one keeps the answer right when called from a thread already pinned.
pub fn allowed_cpus() -> Result<Vec<usize>, TopologyError> {
    // SAFETY: getpid has no preconditions and cannot fail.
    let pid = unsafe { libc::getpid() };
    // Start at glibc's 1024-CPU set and grow while the kernel says the mask is too small.
    let mut words = 1024 / 64;
    loop {
        let mut mask = vec![0u64; words];
        // SAFETY: `mask` is a writable buffer of exactly `words * 8` bytes, the size passed; the
        // kernel writes at most that many bytes of CPU bits and glibc zero-fills the rest.
        // `cpu_set_t` is a plain bit array, so a u64 buffer of any length is a valid target.
        let rc = unsafe {
            libc::sched_getaffinity(pid, words * 8, mask.as_mut_ptr().cast::<libc::cpu_set_t>())
        };
        if rc == 0 {
            let cpus: Vec<usize> = mask
                .iter()
                .enumerate()
                .flat_map(|(w, &bits)| {
                    (0..64)
                        .filter(move |b| bits >> b & 1 == 1)
                        .map(move |b| w * 64 + b)
                })
                .collect();
            return if cpus.is_empty() {
                Err(TopologyError::NoAllowedCpu)
            } else {
                Ok(cpus)
            };
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EINVAL) && words < (1 << 16) {
            words *= 2;
        } else {
            return Err(TopologyError::Affinity(err));
        }
    }
}

/// Parse a worker-count request such as `CLLM_THREADS`'s value: `None` or an empty string means
/// "no limit"; anything else must be a positive whole number.
pub fn parse_threads(value: Option<&str>) -> Result<Option<usize>, TopologyError> {
    let Some(value) = value else { return Ok(None) };
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Ok(None);
    }
    let problem = match trimmed.parse::<usize>() {
        Ok(n) if n > 0 => return Ok(Some(n)),
        Err(e) if *e.kind() == std::num::IntErrorKind::PosOverflow => {
            "is too large to be a worker count"
        }
        _ => "is not a positive whole number",
    };
    Err(TopologyError::BadThreads {
        value: value.to_string(),
        problem,
    })
}

/// Parse a kernel CPU list ("0-3,8,10-11"; empty means no CPU) into ascending, distinct numbers.
pub fn parse_cpulist(text: &str) -> Option<Vec<usize>> {
    let mut cpus = Vec::new();
    let text = text.trim();
    if text.is_empty() {
        return Some(cpus);
    }
    for part in text.split(',') {
        let part = part.trim();
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.parse().ok()?, b.parse().ok()?);
                if a > b || b - a > 1 << 20 {
                    return None;
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(part.parse().ok()?),
        }
    }
    cpus.sort_unstable();
    cpus.dedup();
    Some(cpus)
}

/// Format ascending CPU numbers as a kernel CPU list ("0-3,8,10-11").
pub fn format_cpulist(cpus: &[usize]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < cpus.len() {
        let start = cpus[i];
        let mut end = start;
        while i + 1 < cpus.len() && cpus[i + 1] == end + 1 {
            i += 1;
            end = cpus[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if end == start {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}-{end}"));
        }
        i += 1;
    }
    out
}

/// Bytes in binary units: "512 B", "32 KiB", "8 MiB", "23.5 GiB".
pub(crate) struct Bytes(pub u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
        let mut value = self.0 as f64;
        let mut unit = 0;
        while value >= 1024.0 && unit + 1 < UNITS.len() {
            value /= 1024.0;
            unit += 1;
        }
        if value.fract() == 0.0 {
            write!(f, "{value:.0} {}", UNITS[unit])
        } else {
            write!(f, "{value:.1} {}", UNITS[unit])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpulists_round_trip() {
        assert_eq!(
            parse_cpulist("0-3,8,10-11\n"),
            Some(vec![0, 1, 2, 3, 8, 10, 11])
        );
        assert_eq!(parse_cpulist(""), Some(vec![]));
        assert_eq!(parse_cpulist("5"), Some(vec![5]));
        assert_eq!(parse_cpulist("3-1"), None);
        assert_eq!(parse_cpulist("a"), None);
        assert_eq!(parse_cpulist("1,,2"), None);
        assert_eq!(format_cpulist(&[0, 1, 2, 3, 8, 10, 11]), "0-3,8,10-11");
        assert_eq!(format_cpulist(&[]), "");
    }

    #[test]
    fn byte_sizes_read_well() {
        assert_eq!(Bytes(32 * 1024).to_string(), "32 KiB");
        assert_eq!(Bytes(8 << 20).to_string(), "8 MiB");
        assert_eq!(Bytes(3 << 29).to_string(), "1.5 GiB");
        assert_eq!(Bytes(100).to_string(), "100 B");
    }

    #[test]
    fn a_pinned_thread_still_sees_the_process_cpus() {
        let all = allowed_cpus().expect("sched_getaffinity");
        let first = all[0];
        let seen = std::thread::spawn(move || {
            // SAFETY: `set` is a zeroed cpu_set_t (a plain bit array) that CPU_SET writes within
            // its bounds (first < 1024 on any machine this test runs on); sched_setaffinity only
            // reads the `size_of::<cpu_set_t>()` bytes passed and pins the calling thread.
            let rc = unsafe {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(first, &mut set);
                libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
            };
            assert_eq!(rc, 0);
            allowed_cpus()
        })
        .join()
        .expect("thread")
        .expect("sched_getaffinity");
        assert_eq!(seen, all);
    }

    #[test]
    fn this_process_has_allowed_cpus() {
        let cpus = allowed_cpus().expect("sched_getaffinity works on Linux");
        assert!(!cpus.is_empty());
        assert!(cpus.windows(2).all(|w| w[0] < w[1]));
    }
}
