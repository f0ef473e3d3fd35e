//! No allocation after start-up: `run`, `run_with`, `par_for` (both schedules), the barrier and
//! `reduce_sum` allocate nothing once warm. A counting global allocator sees every thread, so
//! this file holds a single test (nothing else runs while it counts).

use cllm_engine::sphere_tree::{SphereNode, SphereTree};
use cllm_engine::spheres::{Schedule, Spheres};

mod counting;

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
        counting::start();
        for _ in 0..20 {
            workload(&spheres, &mut state, &mut bufs);
        }
        counting::stop();
        assert_eq!(counting::allocations(), 0, "allocations after start-up");
        let n = spheres.count() as f32;
        assert_eq!(bufs.output()[0], n * (n - 1.0) / 2.0);
    }
}
