//! No allocation after start-up: `run`, `run_with`, `par_for` (both schedules), the barrier and
//! `reduce_sum` allocate nothing once warm. A counting global allocator sees every thread, so
//! this file holds a single test (nothing else runs while it counts).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use cllm_engine::sphere_tree::{SphereNode, SphereTree};
use cllm_engine::spheres::{Schedule, Spheres};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts on the side.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: the caller's contract is passed on as it is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// One round of everything that must not allocate.
fn workload(
    spheres: &Spheres,
    state: &mut cllm_engine::spheres::PerWorker<u64>,
    bufs: &mut cllm_engine::spheres::ReduceBuffers,
) {
    spheres
        .run(|ctx| {
            for _ in 0..3 {
                ctx.barrier();
            }
        })
        .unwrap();
    spheres
        .run_with(state, |ctx, s| *s += ctx.index() as u64)
        .unwrap();
    spheres
        .par_for(0..1000, Schedule::Static, |r| {
            std::hint::black_box(r);
        })
        .unwrap();
    spheres
        .par_for_with(state, 0..1000, Schedule::Stealing { chunk: 3 }, |s, r| {
            *s += r.len() as u64;
        })
        .unwrap();
    spheres
        .run_with_buffers(bufs, |ctx, b| b.fill(ctx.index() as f32))
        .unwrap();
    spheres.reduce_sum(bufs).unwrap();
}

#[test]
fn no_allocation_after_start_up() {
    let leaf = |cpu| SphereNode::Leaf { cpu };
    let nested = SphereTree {
        root: SphereNode::Group {
            label: "root".into(),
            children: vec![
                SphereNode::Group {
                    label: "a".into(),
                    children: vec![leaf(0), leaf(1)],
                },
                leaf(0),
                SphereNode::Group {
                    label: "b".into(),
                    children: vec![leaf(1), leaf(0)],
                },
            ],
        },
    };
    for tree in [SphereTree::flat(&[0, 1]), nested] {
        let spheres = Spheres::new(&tree).unwrap();
        let mut state = spheres.per_worker(|_| 0u64).unwrap();
        let mut bufs = spheres.reduce_buffers(10_000).unwrap();
        // Warm-up: first-call lazies (e.g. the caller's thread handle) happen here.
        workload(&spheres, &mut state, &mut bufs);
        ALLOCATIONS.store(0, Ordering::SeqCst);
        COUNTING.store(true, Ordering::SeqCst);
        for _ in 0..20 {
            workload(&spheres, &mut state, &mut bufs);
        }
        COUNTING.store(false, Ordering::SeqCst);
        assert_eq!(
            ALLOCATIONS.load(Ordering::SeqCst),
            0,
            "allocations after start-up"
        );
        let n = spheres.count() as f32;
        assert_eq!(bufs.output()[0], n * (n - 1.0) / 2.0);
    }
}
