//! The hwloc reader (cargo feature `hwloc`), through the `hwloc2` crate.
//!
//! hwloc2 2.2.0 maps type depths the hwloc 1.x way: for NUMA nodes hwloc 2.x answers the virtual
//! depth -3, which the crate takes for "bridge" and then indexes a level with it, which panics. So
//! this reader never asks for objects by type or depth. It walks the normal tree from the root
//! through `children()` and reads only fields whose layout matches hwloc 2.x's `struct hwloc_obj`
//! (type, os_index, total_memory, cpuset, nodeset, parent, children, cache attributes); in hwloc
//! 2.x NUMA nodes are memory children, which the crate does not expose, so NUMA membership comes
//! from each PU's nodeset (the nodes local to it; the lowest-numbered one when several are, as
//! with high-bandwidth memory) and a node's memory from the largest `total_memory` of an object
//! whose nodeset is exactly that node. Also avoided: `TopologyObject::name()`, which frees a
//! string it does not own, and its `Display`, which overruns a buffer.

use std::collections::BTreeMap;
use std::path::PathBuf;

use hwloc2::{Bitmap, ObjectType, TopologyObject};

use super::{sysfs, Detected, RawCpu, Source, Topology, TopologyError, TopologyWarning};

/// The members of an hwloc bitmap, ascending; an infinite one (a "full" set) gives none.
fn members(bitmap: Option<Bitmap>) -> Vec<usize> {
    match bitmap {
        Some(b) if b.weight() > 0 => b.into_iter().map(|i| i as usize).collect(),
        _ => Vec::new(),
    }
}

/// What the walk collects.
#[derive(Default)]
struct Walk {
    raw: Vec<RawCpu>,
    node_memory: BTreeMap<usize, u64>,
}

fn cache_size(obj: &TopologyObject) -> Option<u64> {
    obj.cache_attributes().map(|c| c.size()).filter(|&s| s > 0)
}

/// The PU's facts from its ancestors: core, package, caches.
fn describe_pu(pu: &TopologyObject) -> RawCpu {
    let cpu = pu.os_index() as usize;
    let mut raw = RawCpu {
        cpu,
        package: 0,
        core_id: cpu,
        siblings: vec![cpu],
        node: members(pu.nodeset()).first().copied().unwrap_or(0),
        l1d_bytes: None,
        l2_bytes: None,
        l3: None,
    };
    let mut up = pu.parent();
    while let Some(obj) = up {
        match obj.object_type() {
            ObjectType::Core => {
                raw.core_id = obj.os_index() as usize;
                let siblings = members(obj.cpuset());
                if siblings.contains(&cpu) {
                    raw.siblings = siblings;
                }
            }
            ObjectType::Package => raw.package = obj.os_index() as usize,
            ObjectType::L1Cache => raw.l1d_bytes = cache_size(obj),
            ObjectType::L2Cache => raw.l2_bytes = cache_size(obj),
            ObjectType::L3Cache => {
                let mut shared = members(obj.cpuset());
                if !shared.contains(&cpu) {
                    shared.push(cpu);
                    shared.sort_unstable();
                }
                raw.l3 = Some((shared, cache_size(obj)));
            }
            _ => {}
        }
        up = obj.parent();
    }
    raw
}

fn walk(obj: &TopologyObject, out: &mut Walk) {
    if let ObjectType::PU = obj.object_type() {
        out.raw.push(describe_pu(obj));
        return;
    }
    if let [node] = members(obj.nodeset())[..] {
        let memory = out.node_memory.entry(node).or_insert(0);
        *memory = (*memory).max(obj.total_memory());
    }
    for child in obj.children() {
        walk(child, out);
    }
}

pub(crate) fn read(allowed: &[usize]) -> Result<Detected, TopologyError> {
    let mut allowed = allowed.to_vec();
    allowed.sort_unstable();
    allowed.dedup();
    if allowed.is_empty() {
        return Err(TopologyError::NoAllowedCpu);
    }
    let topo = hwloc2::Topology::new().ok_or(TopologyError::Hwloc)?;
    let mut found = Walk::default();
    walk(topo.object_at_root(), &mut found);
    let root_cpus = members(topo.object_at_root().cpuset());
    drop(topo);

    let mut warnings = Vec::new();
    let known: Vec<usize> = found.raw.iter().map(|r| r.cpu).collect();
    let left_out: Vec<usize> = allowed
        .iter()
        .copied()
        .filter(|cpu| !known.contains(cpu))
        .collect();
    found.raw.retain(|r| allowed.binary_search(&r.cpu).is_ok());
    if found.raw.is_empty() {
        return Err(TopologyError::NoUsableCpu {
            allowed: super::format_cpulist(&allowed),
        });
    }
    if !left_out.is_empty() {
        warnings.push(TopologyWarning::CpusLeftOut { cpus: left_out });
    }
    found.node_memory.retain(|_, m| *m > 0);

    // hwloc lists only the online CPUs it may use; sysfs says which are online at all, and
    // /proc/meminfo the memory size. Both are read under the root hwloc read (`HWLOC_FSROOT`,
    // which points hwloc's Linux backend at another file-system tree, as the tests do).
    let root = std::env::var_os("HWLOC_FSROOT").map_or_else(|| PathBuf::from("/"), PathBuf::from);
    let online = sysfs::online_cpus(&root).unwrap_or(root_cpus);
    let memory_bytes = match sysfs::mem_total(&root) {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            warnings.push(TopologyWarning::NoMemoryInfo(e));
            None
        }
    };
    Ok(Detected {
        topology: Topology::assemble(
            Source::Hwloc,
            found.raw,
            online,
            memory_bytes,
            &found.node_memory,
        ),
        warnings,
    })
}
