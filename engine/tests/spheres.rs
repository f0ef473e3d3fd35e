//! Sphere workers: jobs, barrier, parallel-for, reduction, panics, idling, pinning, shutdown.
//!
//! The pools here are often larger than the machine (30 workers on 2 cores): the waits yield and
//! park, so oversubscribed tests stay quick; iteration counts are kept small for debug builds.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use cllm_engine::sphere_tree::{SphereNode, SphereTree};
use cllm_engine::spheres::{Schedule, Spheres, SpheresError, SpheresWarning};

/// The CPUs this process may run on.
fn allowed_cpus() -> Vec<usize> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(str::trim)
        .unwrap_or("0");
    let mut cpus = Vec::new();
    for part in list.split(',') {
        match part.split_once('-') {
            Some((a, b)) => cpus.extend(a.parse::<usize>().unwrap()..=b.parse().unwrap()),
            None => cpus.push(part.parse().unwrap()),
        }
    }
    cpus
}

/// A flat tree of `n` leaves cycling over the allowed CPUs.
fn flat(n: usize) -> SphereTree {
    let allowed = allowed_cpus();
    let cpus: Vec<usize> = (0..n).map(|i| allowed[i % allowed.len()]).collect();
    SphereTree::flat(&cpus)
}

fn leaf(i: usize) -> SphereNode {
    let allowed = allowed_cpus();
    SphereNode::Leaf {
        cpu: allowed[i % allowed.len()],
    }
}

fn group(children: Vec<SphereNode>) -> SphereNode {
    SphereNode::Group {
        label: "g".into(),
        children,
    }
}

/// Lopsided trees: leaves at several depths, groups of one, uneven fan-outs.
fn nested_trees() -> Vec<SphereTree> {
    vec![
        // root ─ [g(0,1,2), 3, g(g(4,5), 6)]
        SphereTree {
            root: group(vec![
                group(vec![leaf(0), leaf(1), leaf(2)]),
                leaf(3),
                group(vec![group(vec![leaf(4), leaf(5)]), leaf(6)]),
            ]),
        },
        // root ─ [g(0), g(1, g(2, 3))]
        SphereTree {
            root: group(vec![
                group(vec![leaf(0)]),
                group(vec![leaf(1), group(vec![leaf(2), leaf(3)])]),
            ]),
        },
    ]
}

/// Every tree the tests run on: flat ones of 1, 2, 3, 5, 13 and 30 workers, and nested ones.
/// Under Miri (`scripts/ub_check.sh`), which runs every thread in one interpreter, flat ones of
/// 1, 2 and 5 workers.
fn trees() -> Vec<SphereTree> {
    let sizes: &[usize] = if cfg!(miri) {
        &[1, 2, 5]
    } else {
        &[1, 2, 3, 5, 13, 30]
    };
    let mut trees: Vec<SphereTree> = sizes.iter().copied().map(flat).collect();
    trees.extend(nested_trees());
    trees
}

#[test]
fn every_worker_runs_every_job_once_with_borrowed_state() {
    for tree in trees() {
        let spheres = Spheres::new(&tree).unwrap();
        let n = spheres.count();
        assert_eq!(n, tree.cpus().len());
        let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
        let names: Vec<std::sync::Mutex<String>> = (0..n).map(|_| Default::default()).collect();
        for _ in 0..3 {
            spheres
                .run(|ctx| {
                    assert_eq!(ctx.count(), n);
                    hits[ctx.index()].fetch_add(1, Ordering::Relaxed);
                    *names[ctx.index()].lock().unwrap() =
                        thread::current().name().unwrap_or("").to_string();
                })
                .unwrap();
        }
        for w in 0..n {
            assert_eq!(hits[w].load(Ordering::Relaxed), 3, "n={n} worker {w}");
            assert_eq!(*names[w].lock().unwrap(), spheres.thread_name(w));
            assert!(spheres.thread_name(w).starts_with("sphere-"));
        }
        let unique: HashSet<&str> = (0..n).map(|w| spheres.thread_name(w)).collect();
        assert_eq!(unique.len(), n, "thread names are unique");
    }
}

#[test]
fn names_follow_tree_paths() {
    let spheres = Spheres::new(&nested_trees()[0]).unwrap();
    let names: Vec<&str> = (0..spheres.count())
        .map(|w| spheres.thread_name(w))
        .collect();
    assert_eq!(
        names,
        [
            "sphere-0.0",
            "sphere-0.1",
            "sphere-0.2",
            "sphere-1",
            "sphere-2.0.0",
            "sphere-2.0.1",
            "sphere-2.1"
        ]
    );
    let one = Spheres::new(&flat(1)).unwrap();
    assert_eq!(one.thread_name(0), "sphere-0");
    assert_eq!(one.path(0), "0");
}

#[test]
fn barrier_separates_phases() {
    const PHASES: usize = 12;
    for tree in trees() {
        let spheres = Spheres::new(&tree).unwrap();
        let n = spheres.count();
        let marks: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
        let errors = AtomicUsize::new(0);
        spheres
            .run(|ctx| {
                for phase in 1..=PHASES {
                    // Relaxed everywhere: the barrier alone must order these.
                    marks[ctx.index()].store(phase, Ordering::Relaxed);
                    ctx.barrier();
                    for mark in &marks {
                        if mark.load(Ordering::Relaxed) != phase {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    ctx.barrier();
                }
            })
            .unwrap();
        assert_eq!(errors.load(Ordering::Relaxed), 0, "n={n}");
    }
}

#[test]
fn barrier_makes_plain_writes_visible() {
    // Each worker writes its own slot without atomics; after the barrier everyone reads all.
    let spheres = Spheres::new(&flat(5)).unwrap();
    let mut state = spheres
        .per_worker(|ctx| vec![0u64; 4 * ctx.count()])
        .unwrap();
    let shared: Vec<std::sync::RwLock<u64>> = (0..5).map(|_| Default::default()).collect();
    spheres
        .run_with(&mut state, |ctx, mine| {
            for round in 1..=4u64 {
                *shared[ctx.index()].write().unwrap() = round * 100 + ctx.index() as u64;
                ctx.barrier();
                for (w, cell) in shared.iter().enumerate() {
                    mine[(round as usize - 1) * ctx.count() + w] = *cell.read().unwrap();
                }
                ctx.barrier();
            }
        })
        .unwrap();
    for v in state.iter() {
        for round in 1..=4u64 {
            for w in 0..5 {
                assert_eq!(v[(round as usize - 1) * 5 + w], round * 100 + w as u64);
            }
        }
    }
}

/// Work that takes noticeably longer for some indices than for others.
fn uneven(i: usize) {
    if i % 97 < 1 {
        thread::sleep(Duration::from_micros(200));
    }
}

#[test]
fn par_for_covers_every_index_exactly_once() {
    let schedules = [
        Schedule::Static,
        Schedule::Stealing { chunk: 1 },
        Schedule::Stealing { chunk: 7 },
        Schedule::Stealing { chunk: 0 },
    ];
    for tree in trees() {
        let spheres = Spheres::new(&tree).unwrap();
        for schedule in schedules {
            // Under Miri, a tenth of the long range.
            let long = if cfg!(miri) { 100 } else { 1000 };
            for (start, len) in [(0, 0), (5, 1), (3, 7), (0, 29), (11, long)] {
                let seen: Vec<AtomicU8> = (0..start + len).map(|_| AtomicU8::new(0)).collect();
                spheres
                    .par_for(start..start + len, schedule, |range| {
                        for i in range {
                            uneven(i);
                            seen[i].fetch_add(1, Ordering::Relaxed);
                        }
                    })
                    .unwrap();
                for (i, s) in seen.iter().enumerate() {
                    let expected = u8::from(i >= start);
                    assert_eq!(
                        s.load(Ordering::Relaxed),
                        expected,
                        "n={} {schedule:?} {start}+{len} index {i}",
                        spheres.count()
                    );
                }
            }
        }
    }
}

#[test]
fn par_for_with_lends_each_worker_its_state() {
    for tree in trees() {
        let spheres = Spheres::new(&tree).unwrap();
        let mut sums = spheres.per_worker(|_| 0u64).unwrap();
        for schedule in [Schedule::Static, Schedule::Stealing { chunk: 3 }] {
            for s in 0..sums.len() {
                *sums.get_mut(s) = 0;
            }
            spheres
                .par_for_with(&mut sums, 0..500, schedule, |sum, range| {
                    *sum += range.map(|i| i as u64).sum::<u64>();
                })
                .unwrap();
            assert_eq!(sums.iter().sum::<u64>(), 499 * 500 / 2, "{schedule:?}");
        }
    }
}

#[test]
fn idle_workers_steal_from_a_slow_one() {
    // Two workers; the first half of the range (worker 0's share) is slow. With stealing,
    // worker 1 finishes its own half quickly and must take some of worker 0's.
    let spheres = Spheres::new(&flat(2)).unwrap();
    let mut done_by = spheres.per_worker(|ctx| (ctx.index(), Vec::new())).unwrap();
    spheres
        .par_for_with(
            &mut done_by,
            0..40,
            Schedule::Stealing { chunk: 1 },
            |(_, mine), range| {
                for i in range {
                    if i < 20 {
                        thread::sleep(Duration::from_millis(2));
                    }
                    mine.push(i);
                }
            },
        )
        .unwrap();
    let stolen = done_by.get(1).1.iter().filter(|&&i| i < 20).count();
    assert!(stolen > 0, "worker 1 took none of worker 0's work");
    let mut all: Vec<usize> = done_by
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .collect();
    all.sort_unstable();
    assert_eq!(all, (0..40).collect::<Vec<_>>());
}

/// A fixed pseudo-random value in [-1, 1) for (worker, index), with varied magnitudes so that
/// the order of additions shows in the rounding.
fn value(worker: usize, i: usize) -> f32 {
    let mut x = (worker as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (i as u64);
    x ^= x >> 31;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 29;
    let unit = (x >> 40) as f32 / (1u64 << 24) as f32;
    (unit * 2.0 - 1.0) * [1.0, 1e-3, 1e3][i % 3]
}

/// The documented order, computed sequentially: a group's value is its children's values added
/// left to right, in f32.
fn tree_order_sum(node: &SphereNode, next_worker: &mut usize, i: usize) -> f32 {
    match node {
        SphereNode::Leaf { .. } => {
            *next_worker += 1;
            value(*next_worker - 1, i)
        }
        SphereNode::Group { children, .. } => {
            let mut children = children.iter();
            let mut acc = tree_order_sum(children.next().unwrap(), next_worker, i);
            for child in children {
                acc += tree_order_sum(child, next_worker, i);
            }
            acc
        }
    }
}

#[test]
fn reduction_is_exact_in_tree_order_and_repeatable() {
    for tree in trees() {
        let spheres = Spheres::new(&tree).unwrap();
        let n = spheres.count();
        // Under Miri, one past a 2048-float block instead of several blocks.
        let long = if cfg!(miri) { 2049 } else { 5000 };
        for len in [0, 1, 17, long] {
            let mut buffers = spheres.reduce_buffers(len).unwrap();
            assert_eq!((buffers.len(), buffers.workers()), (len, n));
            assert!(buffers.buffer(n - 1).iter().all(|&x| x == 0.0));
            let mut first: Option<Vec<u32>> = None;
            for _ in 0..3 {
                spheres
                    .run_with_buffers(&mut buffers, |ctx, mine| {
                        for (i, x) in mine.iter_mut().enumerate() {
                            *x = value(ctx.index(), i);
                        }
                    })
                    .unwrap();
                spheres.reduce_sum(&mut buffers).unwrap();
                let bits: Vec<u32> = buffers.output().iter().map(|x| x.to_bits()).collect();
                match &first {
                    None => first = Some(bits),
                    Some(first) => assert_eq!(first, &bits, "n={n} len={len}: not repeatable"),
                }
            }
            for i in 0..len {
                let got = buffers.output()[i];
                assert_eq!(
                    got.to_bits(),
                    tree_order_sum(&tree.root, &mut 0, i).to_bits(),
                    "n={n} len={len} index {i}"
                );
                // And close to the exact sum: n terms of magnitude ≤ m, each addition rounding
                // by at most half an ulp of a partial sum ≤ n·m, so |error| ≤ n²·m·2⁻²⁴.
                let exact: f64 = (0..n).map(|w| f64::from(value(w, i))).sum();
                let m = [1.0, 1e-3, 1e3][i % 3];
                let bound = (n * n) as f64 * m * f64::from(f32::EPSILON) / 2.0;
                assert!((f64::from(got) - exact).abs() <= bound, "n={n} index {i}");
            }
        }
    }
}

#[test]
fn a_panic_reaches_the_caller_and_the_pool_stays_usable() {
    for n in [1, 3, 13] {
        let spheres = Spheres::new(&flat(n)).unwrap();
        let culprit = n - 1;
        let err = spheres
            .run(|ctx| {
                if ctx.index() == culprit {
                    panic!("boom in {}", ctx.index());
                }
            })
            .unwrap_err();
        match err {
            SpheresError::WorkerPanicked { worker, message } => {
                assert_eq!(worker, culprit);
                assert_eq!(message, format!("boom in {culprit}"));
            }
            other => panic!("unexpected error {other}"),
        }
        // A panic while the others wait in a barrier: they are released, not left hanging.
        let err = spheres
            .run(|ctx| {
                if ctx.index() == 0 {
                    thread::sleep(Duration::from_millis(5));
                    panic!("late");
                }
                ctx.barrier();
                ctx.barrier();
            })
            .unwrap_err();
        assert!(matches!(
            err,
            SpheresError::WorkerPanicked { worker: 0, .. }
        ));
        // Afterwards jobs and barriers work as before.
        let passed = AtomicUsize::new(0);
        spheres
            .run(|ctx| {
                for _ in 0..5 {
                    ctx.barrier();
                }
                passed.fetch_add(1, Ordering::Relaxed);
            })
            .unwrap();
        assert_eq!(passed.load(Ordering::Relaxed), n);
        let err = spheres
            .par_for(0..100, Schedule::Stealing { chunk: 2 }, |r| {
                if r.contains(&50) {
                    panic!("in par_for");
                }
            })
            .unwrap_err();
        assert!(matches!(err, SpheresError::WorkerPanicked { .. }));
    }
}

#[test]
fn unequal_barrier_counts_fail_instead_of_hanging() {
    for n in [2, 5, 13] {
        let spheres = Spheres::new(&flat(n)).unwrap();
        let err = spheres
            .run(|ctx| {
                if ctx.index() != 1 {
                    ctx.barrier();
                }
            })
            .unwrap_err();
        assert!(matches!(err, SpheresError::BarrierMismatch), "n={n}: {err}");
        spheres.run(|ctx| ctx.barrier()).unwrap();
    }
}

#[test]
fn nested_jobs_and_mismatched_state_are_refused() {
    let spheres = Spheres::new(&flat(2)).unwrap();
    let nested = std::sync::Mutex::new(None);
    spheres
        .run(|ctx| {
            if ctx.index() == 0 {
                *nested.lock().unwrap() = Some(spheres.run(|_| {}));
            }
        })
        .unwrap();
    assert!(matches!(
        nested.into_inner().unwrap(),
        Some(Err(SpheresError::Nested))
    ));
    let other = Spheres::new(&flat(3)).unwrap();
    let mut buffers = other.reduce_buffers(4).unwrap();
    assert!(matches!(
        spheres.reduce_sum(&mut buffers),
        Err(SpheresError::WrongWorkerCount {
            expected: 2,
            got: 3
        })
    ));
    let empty = SphereTree {
        root: group(vec![leaf(0), group(vec![])]),
    };
    assert!(matches!(
        Spheres::new(&empty),
        Err(SpheresError::EmptyGroup { .. })
    ));
}

/// utime + stime of one thread of this process, in clock ticks, and its state letter.
fn thread_cpu(tid: u32) -> (u64, char) {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
    // Fields after the parenthesised name: state is the 1st, utime the 12th, stime the 13th.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields[0].chars().next().unwrap();
    (
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap(),
        state,
    )
}

#[cfg(target_os = "linux")]
#[test]
fn idle_workers_park_and_use_no_cpu() {
    let spheres = Spheres::new(&flat(3)).unwrap();
    spheres.run(|ctx| ctx.barrier()).unwrap();
    thread::sleep(Duration::from_millis(100));
    let tids: Vec<u32> = (0..3).map(|w| spheres.thread_id(w).unwrap()).collect();
    let before: Vec<(u64, char)> = tids.iter().map(|&t| thread_cpu(t)).collect();
    thread::sleep(Duration::from_millis(400));
    let after: Vec<(u64, char)> = tids.iter().map(|&t| thread_cpu(t)).collect();
    for w in 0..3 {
        assert_eq!(after[w].1, 'S', "worker {w} is not sleeping");
        assert_eq!(before[w].0, after[w].0, "worker {w} used CPU while idle");
    }
    // And they wake up for the next job.
    spheres.run(|ctx| ctx.barrier()).unwrap();
}

#[cfg(target_os = "linux")]
#[test]
fn workers_are_pinned_and_named_in_the_kernel() {
    let allowed = allowed_cpus();
    let spheres = Spheres::new(&SphereTree::flat(&allowed)).unwrap();
    assert!(spheres.warnings().is_empty(), "{:?}", spheres.warnings());
    for (w, &cpu) in allowed.iter().enumerate() {
        let tid = spheres.thread_id(w).unwrap();
        let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).unwrap();
        let cpus = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap()
            .trim();
        assert_eq!(cpus, cpu.to_string(), "worker {w}");
        let comm = std::fs::read_to_string(format!("/proc/self/task/{tid}/comm")).unwrap();
        assert_eq!(comm.trim_end(), spheres.thread_name(w));
    }
}

#[test]
fn an_unpinnable_cpu_is_a_warning_not_a_failure() {
    let spheres = Spheres::new(&SphereTree::flat(&[allowed_cpus()[0], 100_000])).unwrap();
    assert!(matches!(
        spheres.warnings(),
        [SpheresWarning::NotPinned {
            worker: 1,
            cpu: 100_000,
            ..
        }]
    ));
    spheres.run(|ctx| ctx.barrier()).unwrap();
}

/// A leaf on an absurd CPU number (as a hand-made tree or a bogus allowed set can give) used to
/// size the affinity mask after it: an allocation of 2^61 bytes, which aborts the process.
#[test]
fn a_huge_cpu_number_is_a_warning_not_an_abort() {
    let spheres = Spheres::new(&SphereTree::flat(&[allowed_cpus()[0], usize::MAX])).unwrap();
    match spheres.warnings() {
        [SpheresWarning::NotPinned {
            worker: 1, reason, ..
        }] => assert!(reason.contains("beyond"), "{reason}"),
        other => panic!("{other:?}"),
    }
    spheres.run(|ctx| ctx.barrier()).unwrap();
}

#[cfg(target_os = "linux")]
#[test]
fn drop_joins_every_worker() {
    for tree in [flat(5), nested_trees().remove(0)] {
        let spheres = Spheres::new(&tree).unwrap();
        spheres.run(|ctx| ctx.barrier()).unwrap();
        let tids: Vec<u32> = (0..spheres.count())
            .map(|w| spheres.thread_id(w).unwrap())
            .collect();
        // Let some of them park, so shutdown has to wake parked workers too.
        thread::sleep(Duration::from_millis(20));
        drop(spheres);
        // A joined thread may linger in /proc for a moment while the kernel finishes its exit
        // (the join returns when the thread clears its tid, slightly before it is reaped).
        let gone = |tid: u32| !std::path::Path::new(&format!("/proc/self/task/{tid}")).exists();
        for tid in tids {
            let deadline = std::time::Instant::now() + Duration::from_secs(2);
            while !gone(tid) && std::time::Instant::now() < deadline {
                thread::sleep(Duration::from_millis(1));
            }
            assert!(gone(tid), "thread {tid} still alive after drop");
        }
    }
}

#[test]
fn barrier_timing_helper_returns_a_duration() {
    let spheres = Spheres::new(&flat(2)).unwrap();
    let t = spheres.time_barrier(50).unwrap();
    assert!(t < Duration::from_secs(1));
}

#[test]
fn per_worker_values_are_made_on_their_own_worker() {
    let spheres = Spheres::new(&nested_trees().remove(0)).unwrap();
    let made_on = spheres
        .per_worker(|_| thread::current().name().map(String::from))
        .unwrap();
    for w in 0..spheres.count() {
        assert_eq!(made_on.get(w).as_deref(), Some(spheres.thread_name(w)));
    }
}

#[test]
fn concurrent_callers_take_turns() {
    // Jobs per caller; fewer under Miri.
    const JOBS: usize = if cfg!(miri) { 5 } else { 30 };
    let spheres = Spheres::new(&flat(3)).unwrap();
    let total = AtomicUsize::new(0);
    thread::scope(|scope| {
        for _ in 0..3 {
            scope.spawn(|| {
                for _ in 0..JOBS {
                    spheres
                        .run(|ctx| {
                            ctx.barrier();
                            total.fetch_add(1, Ordering::Relaxed);
                        })
                        .unwrap();
                }
            });
        }
    });
    assert_eq!(total.load(Ordering::Relaxed), 3 * JOBS * 3);
}

#[test]
fn the_pool_and_its_buffers_can_be_shared_across_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Spheres>();
    send_sync::<cllm_engine::spheres::ReduceBuffers>();
    send_sync::<cllm_engine::spheres::PerWorker<Vec<f32>>>();
}
