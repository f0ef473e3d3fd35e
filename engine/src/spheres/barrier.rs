//! The tree barrier's arrival half: combining counters up the tree, one global release generation.
//!
//! Each group node has an arrival counter. A worker arriving increments its parent's counter;
//! the last of the parent's children to arrive resets that counter and carries the arrival one
//! level up, so each counter is touched only by the workers (or sub-group winners) of one group,
//! NUMA-local where the tree follows NUMA nodes. The worker that completes the root bumps the
//! release generation, which every other worker waits on (the waiting half, spin then park, is
//! in `pool.rs` because it also watches for aborted jobs).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::plan::Plan;
use super::sync::CachePadded;

pub(crate) struct TreeBarrier {
    /// One arrival counter per plan node (leaves' counters are unused; keeping the indices equal
    /// to node indices keeps the walk simple).
    arrived: Box<[CachePadded<AtomicUsize>]>,
    /// Bumped once per completed barrier by the worker that completed the root.
    generation: CachePadded<AtomicU64>,
}

/// What an arriving worker must do next.
pub(crate) enum Arrival {
    /// This worker completed the barrier and released everyone; it should wake sleepers.
    Released,
    /// Wait until the generation differs from this value.
    Wait(u64),
}

impl TreeBarrier {
    pub(crate) fn new(plan: &Plan) -> TreeBarrier {
        TreeBarrier {
            arrived: plan.nodes.iter().map(|_| CachePadded::default()).collect(),
            generation: CachePadded(AtomicU64::new(0)),
        }
    }

    pub(crate) fn arrive(&self, plan: &Plan, worker: usize) -> Arrival {
        // Relaxed: the generation only changes once every worker has arrived, and this worker
        // has not yet; and this thread has already observed every earlier change (it waited for
        // each one, or made it), so coherence guarantees this load returns the current value.
        // The read must come before the arrival below: after it, the barrier may complete.
        let generation = self.generation.load(Ordering::Relaxed);
        let mut node = plan.nodes[plan.workers[worker].leaf].parent;
        while let Some(g) = node {
            let expected = plan.nodes[g].children.len();
            // AcqRel: Release publishes everything this worker (and, through the earlier links
            // of the chain, every sub-group it won) wrote before the barrier; Acquire lets the
            // last arriver, which carries the arrival upwards, see all of it. All operations on
            // a counter within one phase are RMWs, so they form one release sequence and the
            // last arriver synchronises with every earlier arriver, not just the previous one.
            if self.arrived[g].fetch_add(1, Ordering::AcqRel) + 1 < expected {
                return Arrival::Wait(generation);
            }
            // Relaxed: the next phase's arrivers at this node first see the release below
            // (they wait for it with Acquire), and this reset happens-before that release
            // (program order here, then the AcqRel chain up to the root winner).
            self.arrived[g].store(0, Ordering::Relaxed);
            node = plan.nodes[g].parent;
        }
        // SeqCst: a Release store (pairs with the waiters' Acquire loads, so they see every
        // worker's pre-barrier writes, gathered here by the AcqRel chain) that is also ordered
        // before the sleeper check that follows it (the Dekker handshake in `pool.rs`).
        self.generation.store(generation + 1, Ordering::SeqCst);
        Arrival::Released
    }

    /// The current generation, for waiters. SeqCst for the sleep handshake; its Acquire half
    /// pairs with the Release of the store in `arrive`.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Clears every arrival counter after an aborted job, while no worker is inside a job.
    /// Relaxed: the next job's publication (a Release store the workers Acquire) orders it.
    pub(crate) fn reset(&self) {
        for counter in self.arrived.iter() {
            counter.store(0, Ordering::Relaxed);
        }
    }
}
