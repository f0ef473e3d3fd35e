//! The topology readers and the sphere plan, on synthetic sysfs trees (see fixtures/mod.rs), on a
//! copy of a real one, and on this machine.

mod fixtures;

use std::fs;
use std::path::Path;

use cllm_engine::sphere_tree::{leaf_paths, SphereNode, SphereTree, MAX_CHILDREN};
use cllm_engine::topology::{
    allowed_cpus, parse_threads, Detected, Source, Topology, TopologyError, TopologyWarning,
};

const GIB: u64 = 1 << 30;

/// A tree in one line: a leaf is its CPU, a group `label(children...)`.
fn shape(node: &SphereNode) -> String {
    match node {
        SphereNode::Leaf { cpu } => cpu.to_string(),
        SphereNode::Group { label, children } => {
            let inner: Vec<String> = children.iter().map(shape).collect();
            format!("{label}({})", inner.join(" "))
        }
    }
}

fn leaves(cpus: impl IntoIterator<Item = usize>) -> String {
    cpus.into_iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

fn read(name: &str, allowed: impl IntoIterator<Item = usize>) -> Detected {
    let allowed: Vec<usize> = allowed.into_iter().collect();
    Topology::from_sysfs(&fixtures::sysfs(name), &allowed)
        .unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

/// Invariants every plan keeps: fan-out ≤ 12, distinct CPUs, all of them usable, no empty group.
fn check_tree(topo: &Topology, tree: &SphereTree) {
    assert!(
        tree.root.max_fanout() <= MAX_CHILDREN,
        "{}",
        shape(&tree.root)
    );
    let mut cpus = tree.cpus();
    let n = cpus.len();
    cpus.sort_unstable();
    cpus.dedup();
    assert_eq!(
        cpus.len(),
        n,
        "a CPU has two workers: {}",
        shape(&tree.root)
    );
    assert!(cpus.iter().all(|c| topo.cpus.contains(c)));
    fn no_empty(node: &SphereNode) -> bool {
        match node {
            SphereNode::Leaf { .. } => true,
            SphereNode::Group { children, .. } => {
                children.len() >= 2 && children.iter().all(no_empty)
            }
        }
    }
    assert!(no_empty(&tree.root), "{}", shape(&tree.root));
}

fn check_all_plans(topo: &Topology) {
    for use_smt in [false, true] {
        let n = topo.cpus.len();
        for threads in [None, Some(1), Some(2.min(n)), Some(13.min(n)), Some(n)] {
            let plan = topo.plan(threads, use_smt);
            assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
            check_tree(topo, &plan.tree);
            let want = threads.unwrap_or(if use_smt {
                topo.cpus.len()
            } else {
                topo.cores.len()
            });
            assert_eq!(plan.tree.cpus().len(), want.min(topo.cpus.len()));
        }
    }
}

#[test]
fn two_socket_smt_machine_gets_one_worker_per_core_split_under_its_nodes() {
    let d = read("2s-64c-smt", 0..128);
    assert!(d.warnings.is_empty(), "{:?}", d.warnings);
    let t = &d.topology;
    assert_eq!(t.source, Source::Sysfs);
    assert_eq!(t.cpus, (0..128).collect::<Vec<_>>());
    assert_eq!(t.packages.len(), 2);
    assert_eq!(t.numa_nodes.len(), 2);
    assert_eq!(t.l3_domains.len(), 2);
    assert_eq!(t.cores.len(), 64);
    assert_eq!(t.smt(), 2);
    assert_eq!(t.memory_bytes, Some(32 * GIB));
    assert_eq!(
        t.numa_nodes[1].cpus,
        (32..64).chain(96..128).collect::<Vec<_>>()
    );
    assert_eq!(t.numa_nodes[1].memory_bytes, Some(16 * GIB));
    assert_eq!(t.l3_domains[0].size_bytes, Some(32 << 20));
    let core = &t.cores[33];
    assert_eq!((core.package, core.core_id, core.node), (1, 1, 1));
    assert_eq!(core.cpus, vec![33, 97]);
    assert_eq!(
        (core.l1d_bytes, core.l2_bytes),
        (Some(48 << 10), Some(2 << 20))
    );

    // 32 cores per node: three groups of 11, 11 and 10 under each node, SMT siblings unused.
    let node = |n: usize| {
        let b = 32 * n;
        format!(
            "numa{n}(l3-{n}.0({}) l3-{n}.1({}) l3-{n}.2({}))",
            leaves(b..b + 11),
            leaves(b + 11..b + 22),
            leaves(b + 22..b + 32)
        )
    };
    let tree = t.sphere_tree(None, false);
    assert_eq!(shape(&tree.root), format!("root({} {})", node(0), node(1)));
    assert_eq!(leaf_paths(&tree)[11], ("0.1.0".to_string(), 11));
    assert_eq!(leaf_paths(&tree)[63], ("1.2.9".to_string(), 63));

    // With SMT each core is a sphere of its two threads.
    let tree = t.sphere_tree(None, true);
    assert_eq!(tree.cpus().len(), 128);
    let SphereNode::Group { children, .. } = &tree.root else {
        panic!("root is a group")
    };
    let SphereNode::Group {
        children: parts, ..
    } = &children[0]
    else {
        panic!("numa0")
    };
    assert_eq!(
        shape(&parts[0]),
        format!(
            "l3-0.0({})",
            (0..11)
                .map(|c| format!("core0:{c}({c} {})", c + 64))
                .collect::<Vec<_>>()
                .join(" ")
        )
    );

    // 70 workers: one per core, then the second threads of the first six cores.
    let tree = t.sphere_tree(Some(70), false);
    let mut cpus = tree.cpus();
    cpus.sort_unstable();
    assert_eq!(
        cpus,
        [(0..64).collect::<Vec<_>>(), (64..70).collect()].concat()
    );
    assert!(shape(&tree.root).starts_with("root(numa0(l3-0.0(core0:0(0 64) core0:1(1 65)"));

    // The first 8 workers fill node 0's first cores; single-child levels collapse into the root.
    assert_eq!(
        shape(&t.sphere_tree(Some(8), false).root),
        format!("root({})", leaves(0..8))
    );
    check_all_plans(t);
}

#[test]
fn four_node_machine_has_nodes_then_l3_domains_then_cores() {
    let d = read("4node", 0..48);
    assert!(d.warnings.is_empty(), "{:?}", d.warnings);
    let t = &d.topology;
    assert_eq!(
        t.numa_nodes.iter().map(|n| n.id).collect::<Vec<_>>(),
        [0, 1, 2, 3]
    );
    assert_eq!(t.packages.len(), 2);
    assert_eq!(t.l3_domains.len(), 8);
    assert_eq!(t.smt(), 1);
    let node = |n: usize| {
        let b = 12 * n;
        format!(
            "numa{n}(l3-{}({}) l3-{}({}))",
            2 * n,
            leaves(b..b + 6),
            2 * n + 1,
            leaves(b + 6..b + 12)
        )
    };
    let want = format!("root({})", (0..4).map(node).collect::<Vec<_>>().join(" "));
    assert_eq!(shape(&t.sphere_tree(None, false).root), want);
    // No SMT: asking for it changes nothing.
    assert_eq!(shape(&t.sphere_tree(None, true).root), want);
    check_all_plans(t);
}

#[test]
fn offline_cpus_are_left_out() {
    let d = read("offline", 0..8);
    assert!(
        matches!(&d.warnings[..], [TopologyWarning::CpusLeftOut { cpus }] if *cpus == [2, 7]),
        "{:?}",
        d.warnings
    );
    let t = &d.topology;
    assert_eq!(t.online, [0, 1, 3, 4, 5, 6]);
    assert_eq!(t.cpus, t.online);
    let cores: Vec<Vec<usize>> = t.cores.iter().map(|c| c.cpus.clone()).collect();
    assert_eq!(cores, [vec![0, 4], vec![1, 5], vec![3], vec![6]]);
    // Core 2's worker goes to its second thread, the only one online.
    assert_eq!(shape(&t.sphere_tree(None, false).root), "root(0 1 3 6)");
    assert_eq!(
        shape(&t.sphere_tree(None, true).root),
        "root(core0:0(0 4) core0:1(1 5) 3 6)"
    );
    check_all_plans(t);

    // Without the `cpu/online` list the per-CPU `online` files decide.
    let mut machine = fixtures::machine("offline");
    machine.write_online_list = false;
    let root = fixtures::write_once("offline-no-list", &machine);
    let again = Topology::from_sysfs(&root, &[0, 1, 2, 3, 4, 5, 6, 7]).expect("readable");
    assert_eq!(again.topology, d.topology);
}

#[test]
fn cgroup_cpuset_limits_the_plan_to_the_allowed_cpus() {
    let allowed = [0, 1, 2, 5, 8, 9];
    let d = read("cgroup", allowed);
    assert!(d.warnings.is_empty(), "{:?}", d.warnings);
    let t = &d.topology;
    assert_eq!(t.online.len(), 16);
    assert_eq!(t.cpus, allowed);
    assert_eq!(t.l3_domains.len(), 2);
    assert_eq!(t.l3_domains[0].cpus, [0, 1, 2, 8, 9]);
    assert_eq!(t.l3_domains[1].cpus, [5]);
    assert_eq!(
        shape(&t.sphere_tree(None, false).root),
        "root(l3-0(0 1 2) 5)"
    );
    assert_eq!(
        shape(&t.sphere_tree(None, true).root),
        "root(l3-0(core0:0(0 8) core0:1(1 9) 2) 5)"
    );
    assert_eq!(shape(&t.sphere_tree(Some(2), false).root), "root(0 1)");
    assert_eq!(
        shape(&t.sphere_tree(Some(5), false).root),
        "root(l3-0(core0:0(0 8) 1 2) 5)"
    );

    let plan = t.plan(Some(7), false);
    assert!(matches!(
        plan.warnings[..],
        [TopologyWarning::TooManyThreads {
            requested: 7,
            available: 6
        }]
    ));
    assert_eq!(plan.tree.cpus().len(), 6);
    check_all_plans(t);
}

#[test]
fn single_core_machine_is_one_leaf() {
    let d = read("single", [0]);
    assert!(d.warnings.is_empty(), "{:?}", d.warnings);
    let tree = d.topology.sphere_tree(None, false);
    assert_eq!(tree.root, SphereNode::Leaf { cpu: 0 });
    assert_eq!(leaf_paths(&tree), [("0".to_string(), 0)]);
    let plan = d.topology.plan(Some(3), true);
    assert_eq!(plan.tree.root, SphereNode::Leaf { cpu: 0 });
    assert_eq!(plan.warnings.len(), 1);
    check_all_plans(&d.topology);
}

#[test]
fn real_two_core_vm_snapshot() {
    let d = read("epyc-2core-vm", [0, 1]);
    assert!(d.warnings.is_empty(), "{:?}", d.warnings);
    let t = &d.topology;
    // The node's meminfo understates the guest's memory; the total comes from /proc/meminfo.
    assert_eq!(t.memory_bytes, Some(24_683_656 * 1024));
    assert_eq!(t.numa_nodes[0].memory_bytes, Some(12_805_920 * 1024));
    assert_eq!(t.l3_domains.len(), 1);
    assert_eq!(t.l3_domains[0].size_bytes, Some(8 << 20));
    assert_eq!(t.cores[1].l1d_bytes, Some(32 << 10));
    assert_eq!(t.cores[1].l2_bytes, Some(512 << 10));
    let tree = t.sphere_tree(None, false);
    assert_eq!(tree, SphereTree::flat(&[0, 1]));

    let text = t.render(&tree);
    assert!(text.starts_with("machine: 23.5 GiB memory, 1 package, 1 NUMA node, 1 L3 domain, 2 cores, 1 thread per core; CPUs 0-1 (2 of 2 online) [sysfs]\n"), "{text}");
    assert!(
        text.contains("  numa0: CPUs 0-1, memory 12.2 GiB\n"),
        "{text}"
    );
    assert!(text.contains("    l3-0: 8 MiB, CPUs 0-1\n"), "{text}");
    assert!(
        text.contains("      2 cores (L1d 32 KiB, L2 512 KiB each): 0 1\n"),
        "{text}"
    );
    assert!(text.contains("spheres: 2 workers, max fan-out 2\n  root: 2 children, CPUs 0-1\n    sphere-0 -> CPU 0\n    sphere-1 -> CPU 1\n"), "{text}");
}

#[test]
fn render_and_json_name_every_worker_and_its_cpu() {
    let t = read("2s-64c-smt", 0..128).topology;
    let tree = t.sphere_tree(None, false);
    let text = t.render(&tree);
    for (path, cpu) in leaf_paths(&tree) {
        assert!(
            text.contains(&format!("sphere-{path} -> CPU {cpu}\n")),
            "{path}"
        );
    }
    assert!(
        text.contains("numa1 [1]: 3 children, CPUs 32-63\n"),
        "{text}"
    );
    assert!(
        text.contains("l3-1.2 [1.2]: 10 children, CPUs 54-63\n"),
        "{text}"
    );

    let json: serde_json::Value = serde_json::from_str(&t.to_json(&tree)).expect("valid JSON");
    assert_eq!(json["source"], "sysfs");
    assert_eq!(json["memory_bytes"], 32 * GIB);
    assert_eq!(json["smt"], 2);
    assert_eq!(json["cores"].as_array().map(Vec::len), Some(64));
    assert_eq!(json["numa_nodes"][1]["memory_bytes"], 16 * GIB);
    let workers = json["workers"].as_array().expect("workers");
    assert_eq!(workers.len(), 64);
    for ((path, cpu), w) in leaf_paths(&tree).iter().zip(workers) {
        assert_eq!(w["name"], format!("sphere-{path}"));
        assert_eq!(w["cpu"], *cpu);
    }
    let first_part = &json["spheres"]["children"][0]["children"][0];
    assert_eq!(first_part["label"], "l3-0.0");
    assert_eq!(first_part["path"], "0.0");
    assert_eq!(first_part["children"][10]["name"], "sphere-0.0.10");

    // A one-leaf tree.
    let single = read("single", [0]).topology;
    let json: serde_json::Value =
        serde_json::from_str(&single.to_json(&single.sphere_tree(None, false))).expect("JSON");
    assert_eq!(json["spheres"]["name"], "sphere-0");
}

#[test]
fn threads_setting_is_checked() {
    assert_eq!(parse_threads(None).unwrap(), None);
    assert_eq!(parse_threads(Some("")).unwrap(), None);
    assert_eq!(parse_threads(Some(" 4\n")).unwrap(), Some(4));
    for bad in ["0", "-1", "four", "2.5", "1e3", "99999999999999999999999"] {
        let err = parse_threads(Some(bad)).unwrap_err();
        assert!(matches!(err, TopologyError::BadThreads { .. }), "{bad}");
        assert!(err.to_string().contains("CLLM_THREADS"), "{err}");
    }
    // A number too large for a usize is a whole number all the same: say what is wrong with it.
    assert_eq!(
        parse_threads(Some("1000000000000000000000000000000"))
            .unwrap_err()
            .to_string(),
        "CLLM_THREADS=\"1000000000000000000000000000000\" is too large to be a worker count"
    );
    assert_eq!(
        parse_threads(Some("2x")).unwrap_err().to_string(),
        "CLLM_THREADS=\"2x\" is not a positive whole number"
    );

    let t = read("4node", 0..48).topology;
    let plan = t.plan_with_threads_value(Some("0"), false);
    assert!(matches!(
        plan.warnings[..],
        [TopologyWarning::BadThreads(_)]
    ));
    assert_eq!(plan.tree, t.sphere_tree(None, false));
    let plan = t.plan_with_threads_value(Some("3"), false);
    assert!(plan.warnings.is_empty());
    assert_eq!(shape(&plan.tree.root), "root(0 1 2)");
    let plan = t.plan_with_threads_value(Some("1000"), false);
    assert_eq!(plan.tree.cpus().len(), 48);
    assert_eq!(
        plan.warnings[0].to_string(),
        "1000 threads asked for but only 48 CPUs are allowed; using 48"
    );
    // `taskset -c 1` with CLLM_THREADS=4: one CPU.
    let single = read("single", [0]).topology;
    assert_eq!(
        single.plan(Some(4), false).warnings[0].to_string(),
        "4 threads asked for but only 1 CPU is allowed; using 1"
    );
}

/// Remove `rel` under `root`, file or directory.
fn remove(root: &Path, rel: &str) {
    let p = root.join(rel);
    if p.is_dir() {
        fs::remove_dir_all(&p).expect("remove dir");
    } else {
        fs::remove_file(&p).expect("remove file");
    }
}

#[test]
fn unreadable_sysfs_falls_back_to_a_flat_tree() {
    let empty = Path::new(env!("CARGO_TARGET_TMPDIR")).join("sysfs/empty");
    fs::create_dir_all(&empty).expect("mkdir");
    let err = Topology::from_sysfs(&empty, &[3, 5]).unwrap_err();
    assert!(matches!(err, TopologyError::Io { .. }), "{err}");
    let d = Topology::from_sysfs_or_flat(&empty, &[5, 3]);
    assert!(matches!(d.warnings[..], [TopologyWarning::Fallback(_)]));
    assert!(
        d.warnings[0].to_string().contains("flat tree"),
        "{}",
        d.warnings[0]
    );
    assert_eq!(d.topology.source, Source::Flat);
    assert_eq!(
        d.topology.sphere_tree(None, false),
        SphereTree::flat(&[3, 5])
    );
    assert_eq!(
        d.topology.sphere_tree(None, true),
        SphereTree::flat(&[3, 5])
    );

    // An empty allowed set is an error; the fallback still gives one worker.
    let four = fixtures::sysfs("4node");
    assert!(matches!(
        Topology::from_sysfs(&four, &[]),
        Err(TopologyError::NoAllowedCpu)
    ));
    assert_eq!(Topology::from_sysfs_or_flat(&four, &[]).topology.cpus, [0]);
    // Allowed CPUs that do not exist.
    let err = Topology::from_sysfs(&four, &[200, 201]).unwrap_err();
    assert!(matches!(err, TopologyError::NoUsableCpu { .. }));
    assert_eq!(
        err.to_string(),
        "no usable CPU: none of the allowed CPUs [200-201] is online"
    );

    // Garbage in the online list.
    let root = fixtures::write_fresh("garbage-online", &fixtures::machine("single"));
    fs::write(root.join("sys/devices/system/cpu/online"), "zero\n").expect("write");
    let err = Topology::from_sysfs(&root, &[0]).unwrap_err();
    assert!(matches!(err, TopologyError::Parse { .. }), "{err}");
    assert!(err.to_string().contains("\"zero\""), "{err}");
}

#[test]
fn container_like_sysfs_without_details_gives_warnings_and_a_flat_tree() {
    let root = fixtures::write_fresh("container", &fixtures::Machine::regular(1, 1, 1, 4, 1));
    for cpu in 0..4 {
        remove(&root, &format!("sys/devices/system/cpu/cpu{cpu}/topology"));
        remove(&root, &format!("sys/devices/system/cpu/cpu{cpu}/cache"));
    }
    remove(&root, "sys/devices/system/node");
    remove(&root, "proc");
    let d = Topology::from_sysfs(&root, &[0, 1, 2, 3]).expect("still readable");
    let kinds: Vec<&str> = d
        .warnings
        .iter()
        .map(|w| match w {
            TopologyWarning::NoNumaInfo(_) => "numa",
            TopologyWarning::MissingCpuInfo { what, .. } => what,
            TopologyWarning::NoMemoryInfo(_) => "memory",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["numa", "core/package", "cache", "memory"]);
    assert_eq!(d.topology.cores.len(), 4);
    assert_eq!(d.topology.memory_bytes, None);
    assert_eq!(
        d.topology.sphere_tree(None, false),
        SphereTree::flat(&[0, 1, 2, 3])
    );
    // Rendering copes with unknowns.
    let text = d.topology.render(&d.topology.sphere_tree(None, false));
    assert!(text.starts_with("machine: ? memory"), "{text}");
}

#[test]
fn odd_values_in_single_files() {
    let mut machine = fixtures::Machine::regular(1, 1, 1, 4, 1);
    machine.l3_kib = 16384;
    let root = fixtures::write_fresh("odd-values", &machine);
    let cpu = |n: usize, rel: &str| root.join(format!("sys/devices/system/cpu/cpu{n}/{rel}"));
    // Some platforms say -1 for an unknown package.
    for n in 0..4 {
        fs::write(cpu(n, "topology/physical_package_id"), "-1\n").expect("write");
    }
    fs::write(cpu(2, "topology/core_id"), "two\n").expect("write");
    fs::write(cpu(3, "cache/index3/size"), "big\n").expect("write");
    let d = Topology::from_sysfs(&root, &[0, 1, 2, 3]).expect("readable");
    assert!(
        matches!(&d.warnings[..], [TopologyWarning::MissingCpuInfo { what: "core/package", cpus, .. }] if *cpus == [2]),
        "{:?}",
        d.warnings
    );
    let t = &d.topology;
    assert!(t.cores.iter().all(|c| c.package == 0));
    assert_eq!(t.l3_domains.len(), 1);
    assert_eq!(t.l3_domains[0].size_bytes, Some(16 << 20));
    assert_eq!(shape(&t.sphere_tree(None, false).root), "root(0 1 2 3)");
}

#[test]
fn this_machine_is_detected_without_panicking() {
    let d = Topology::detect();
    let allowed = allowed_cpus().expect("sched_getaffinity");
    assert_eq!(d.topology.cpus, allowed);
    let tree = d.topology.sphere_tree(None, false);
    check_tree(&d.topology, &tree);
    assert_eq!(tree.cpus().len(), d.topology.cores.len());
    let text = d.topology.render(&tree);
    assert!(text.contains("sphere-"), "{text}");
    serde_json::from_str::<serde_json::Value>(&d.topology.to_json(&tree)).expect("valid JSON");
}

/// The sysfs and hwloc readers agree on this machine.
#[cfg(feature = "hwloc")]
#[test]
fn sysfs_and_hwloc_agree_here() {
    let allowed = allowed_cpus().expect("sched_getaffinity");
    let s = Topology::from_sysfs(Path::new("/"), &allowed).expect("sysfs");
    let h = Topology::from_hwloc(&allowed).expect("hwloc");
    assert!(h.warnings.is_empty(), "{:?}", h.warnings);
    let (s, h) = (s.topology, h.topology);
    assert_eq!(h.source, Source::Hwloc);
    assert_eq!(s.cpus, h.cpus, "CPU set");
    assert_eq!(s.online, h.online, "online CPUs");
    assert_eq!(s.packages, h.packages, "packages");
    assert_eq!(s.memory_bytes, h.memory_bytes, "memory");
    let nodes = |t: &Topology| -> Vec<(usize, Vec<usize>)> {
        t.numa_nodes
            .iter()
            .map(|n| (n.id, n.cpus.clone()))
            .collect()
    };
    assert_eq!(nodes(&s), nodes(&h), "NUMA nodes");
    for (a, b) in s.numa_nodes.iter().zip(&h.numa_nodes) {
        if let (Some(x), Some(y)) = (a.memory_bytes, b.memory_bytes) {
            assert_eq!(x, y, "memory of node {}", a.id);
        }
    }
    let l3 =
        |t: &Topology| -> Vec<Vec<usize>> { t.l3_domains.iter().map(|d| d.cpus.clone()).collect() };
    assert_eq!(l3(&s), l3(&h), "L3 domains");
    for (a, b) in s.l3_domains.iter().zip(&h.l3_domains) {
        if let (Some(x), Some(y)) = (a.size_bytes, b.size_bytes) {
            assert_eq!(x, y, "L3 size");
        }
    }
    assert_eq!(s.cores.len(), h.cores.len(), "cores");
    for (a, b) in s.cores.iter().zip(&h.cores) {
        assert_eq!(
            (a.package, a.core_id, a.node, a.l3, &a.cpus),
            (b.package, b.core_id, b.node, b.l3, &b.cpus),
            "core"
        );
        for (x, y, what) in [
            (a.l1d_bytes, b.l1d_bytes, "L1d"),
            (a.l2_bytes, b.l2_bytes, "L2"),
        ] {
            if let (Some(x), Some(y)) = (x, y) {
                assert_eq!(x, y, "{what} of core {:?}", a.cpus);
            }
        }
    }
    assert_eq!(s.sphere_tree(None, false), h.sphere_tree(None, false));
    assert_eq!(s.sphere_tree(None, true), h.sphere_tree(None, true));
}

#[cfg(feature = "hwloc")]
fn warning_text(warnings: &[TopologyWarning]) -> String {
    warnings
        .iter()
        .map(|w| w.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// The fixtures each test reads with hwloc, and the allowed CPUs it passes.
#[cfg(feature = "hwloc")]
fn hwloc_fixtures() -> Vec<(&'static str, Vec<usize>)> {
    vec![
        ("2s-64c-smt", (0..128).collect()),
        ("4node", (0..48).collect()),
        ("offline", (0..8).collect()),
        ("cgroup", vec![0, 1, 2, 5, 8, 9]),
        ("single", vec![0]),
        ("epyc-2core-vm", vec![0, 1]),
    ]
}

/// hwloc, pointed at each fixture with `HWLOC_FSROOT`, reads what the sysfs reader reads. The
/// variable is process-wide, so each fixture is read in a child process running
/// `hwloc_fixture_child`. The multi-node fixtures are where hwloc2's NUMA-depth trap would bite.
#[cfg(feature = "hwloc")]
#[test]
fn hwloc_reads_the_fixtures_like_sysfs() {
    use cllm_engine::topology::format_cpulist;
    for (name, allowed) in hwloc_fixtures() {
        let root = fixtures::sysfs(name);
        let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
            .args(["hwloc_fixture_child", "--exact", "--ignored", "--nocapture"])
            .args(["--test-threads=1", "-q"])
            .env("HWLOC_FSROOT", &root)
            .env("CLLM_TEST_ALLOWED", format_cpulist(&allowed))
            .output()
            .expect("run the child");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{name}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = |tag: &str| {
            stdout
                .lines()
                .find_map(|l| l.strip_prefix(tag))
                .unwrap_or_else(|| panic!("{name}: no {tag} line in {stdout}"))
                .replace("\"source\":\"hwloc\"", "\"source\":\"sysfs\"")
        };
        let d = Topology::from_sysfs(&root, &allowed).expect("sysfs");
        assert_eq!(line("WARNINGS "), warning_text(&d.warnings), "{name}");
        let t = d.topology;
        assert_eq!(
            line("CORES "),
            t.to_json(&t.sphere_tree(None, false)),
            "{name}"
        );
        assert_eq!(
            line("THREADS "),
            t.to_json(&t.sphere_tree(None, true)),
            "{name}"
        );
    }
}

/// Run by `hwloc_reads_the_fixtures_like_sysfs` with `HWLOC_FSROOT` set; prints what hwloc read.
#[cfg(feature = "hwloc")]
#[test]
#[ignore = "a helper process of hwloc_reads_the_fixtures_like_sysfs"]
fn hwloc_fixture_child() {
    use cllm_engine::topology::parse_cpulist;
    let Ok(allowed) = std::env::var("CLLM_TEST_ALLOWED") else {
        return;
    };
    let allowed = parse_cpulist(&allowed).expect("a CPU list");
    let d = Topology::from_hwloc(&allowed).expect("hwloc reads the fixture");
    println!("WARNINGS {}", warning_text(&d.warnings));
    let t = d.topology;
    println!("CORES {}", t.to_json(&t.sphere_tree(None, false)));
    println!("THREADS {}", t.to_json(&t.sphere_tree(None, true)));
}
