//! Sphere workers: one long-lived, pinned worker thread per leaf of a [`SphereTree`].
//!
//! [`Spheres::new`] starts a thread per leaf, pinned to the leaf's CPU and named `sphere-<path>`
//! (the leaf's child indices from the root joined by '.', e.g. `sphere-1.3`, as
//! [`crate::sphere_tree::leaf_paths`] computes them), so `top -H`, `ps -L` and `perf` show who is who. The calling
//! thread is not a worker: it publishes a job, the workers run it, and the caller waits (yield,
//! then park) until all are done. Keeping every worker on a dedicated pinned thread means the
//! caller's own affinity is never touched and worker 0's buffers are first touched on worker
//! 0's CPU like everyone else's.
//!
//! - [`Spheres::run`] runs a closure once on every worker. It borrows from the caller's stack
//!   (no `'static` bound) and returns only when every worker has finished it. Inside,
//!   [`WorkerCtx`] gives the worker's index and the tree [barrier](WorkerCtx::barrier).
//! - [`Spheres::par_for`] splits an index range with a [`Schedule`]: static shares, or shares
//!   with work stealing (siblings first, then cousins) for uneven work.
//! - [`PerWorker`] holds one value per worker, created on that worker ([`Spheres::per_worker`])
//!   and lent to it mutably in [`Spheres::run_with`] / [`Spheres::par_for_with`].
//! - [`ReduceBuffers`] are per-worker f32 buffers, first touched by their worker;
//!   [`Spheres::reduce_sum`] sums them up the tree into worker 0's, deterministically.
//!
//! Idle workers spin briefly, yield until about 50 µs have passed, then park: an idle pool uses
//! no CPU. Nothing here
//! allocates after start-up (`run`, `par_for`, the barrier and `reduce_sum` allocate nothing).
//! A panic in a worker aborts the job and comes back as [`SpheresError::WorkerPanicked`]; the
//! pool stays usable (the next job starts from a clean state). Dropping the pool ends and joins
//! every thread. The synchronisation design is described in README.md beside this file.

mod affinity;
mod barrier;
mod bench;
mod plan;
mod pool;
mod reduce;
mod steal;
mod sync;

use std::fmt;
use std::ops::Range;
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};

use crate::sphere_tree::SphereTree;
use plan::Plan;
use pool::Shared;
pub use pool::WorkerCtx;
pub use reduce::ReduceBuffers;
pub use steal::Schedule;
use sync::CachePadded;

/// What can go wrong starting or using the pool.
#[derive(Debug, thiserror::Error)]
pub enum SpheresError {
    /// A group node of the tree has no children (no leaf below it to run a worker).
    #[error("sphere group {label:?} has no children")]
    EmptyGroup { label: String },
    /// The OS refused to start a worker thread.
    #[error("could not start worker thread {name}: {source}")]
    Spawn {
        name: String,
        #[source]
        source: std::io::Error,
    },
    /// A worker thread died before it reported ready.
    #[error("worker thread {name} stopped during start-up")]
    Startup { name: String },
    /// A worker panicked while running a job; the job was abandoned.
    #[error("sphere worker {worker} panicked: {message}")]
    WorkerPanicked { worker: usize, message: String },
    /// A worker finished a job while others waited in a barrier: the workers called
    /// [`WorkerCtx::barrier`] different numbers of times.
    #[error("the workers of one job called the barrier different numbers of times")]
    BarrierMismatch,
    /// A job was submitted from inside one of the same pool's workers (it would wait on itself).
    #[error("a job was submitted to a sphere pool from inside one of its own workers")]
    Nested,
    /// Per-worker state made for a pool of a different size.
    #[error("per-worker state for {got} workers given to a pool of {expected}")]
    WrongWorkerCount { expected: usize, got: usize },
}

/// Something that did not stop the pool from starting but that its user should hear about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpheresWarning {
    /// The worker runs unpinned: the OS refused to restrict it to `cpu`.
    NotPinned {
        worker: usize,
        cpu: usize,
        reason: String,
    },
}

impl fmt::Display for SpheresWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpheresWarning::NotPinned {
                worker,
                cpu,
                reason,
            } => write!(
                f,
                "sphere worker {worker} not pinned to CPU {cpu}: {reason}"
            ),
        }
    }
}

/// A pool of pinned worker threads laid over a sphere tree.
pub struct Spheres {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    names: Vec<String>,
    tids: Vec<Option<u32>>,
    warnings: Vec<SpheresWarning>,
}

impl Spheres {
    /// Starts one worker per leaf of `tree` (worker i is the i-th leaf in tree order, pinned to
    /// its CPU) and waits until all are running. A CPU that cannot be pinned (offline, outside
    /// the allowed set) leaves that worker unpinned and is reported in [`Spheres::warnings`].
    pub fn new(tree: &SphereTree) -> Result<Spheres, SpheresError> {
        let plan = Plan::new(tree)?;
        let n = plan.workers.len();
        let names: Vec<String> = plan
            .workers
            .iter()
            .map(|w| crate::sphere_tree::sphere_name(&w.path))
            .collect();
        let mut spheres = Spheres {
            shared: Arc::new(Shared::new(plan)),
            threads: Vec::with_capacity(n),
            names,
            tids: vec![None; n],
            warnings: Vec::new(),
        };
        let (ready, started) = mpsc::channel();
        for worker in 0..n {
            let shared = Arc::clone(&spheres.shared);
            let ready = ready.clone();
            let name = spheres.names[worker].clone();
            // On failure, dropping `spheres` shuts down and joins the workers already started.
            let handle = thread::Builder::new()
                .name(name.clone())
                .spawn(move || pool::worker_main(shared, worker, ready))
                .map_err(|source| SpheresError::Spawn { name, source })?;
            spheres.threads.push(handle);
        }
        drop(ready);
        let mut reported = vec![false; n];
        let mut pins: Vec<Option<String>> = vec![None; n];
        for _ in 0..n {
            let Ok(startup) = started.recv() else {
                let missing = reported.iter().position(|r| !r).unwrap_or(0);
                return Err(SpheresError::Startup {
                    name: spheres.names[missing].clone(),
                });
            };
            reported[startup.worker] = true;
            spheres.tids[startup.worker] = startup.tid;
            pins[startup.worker] = startup.pinned.err();
        }
        spheres.warnings = pins
            .into_iter()
            .enumerate()
            .filter_map(|(worker, failure)| {
                failure.map(|reason| SpheresWarning::NotPinned {
                    worker,
                    cpu: spheres.cpu(worker),
                    reason,
                })
            })
            .collect();
        Ok(spheres)
    }

    /// How many workers (leaves) the pool has.
    pub fn count(&self) -> usize {
        self.shared.count()
    }

    /// The CPU worker `worker` was asked to run on. Panics if `worker` is out of range.
    pub fn cpu(&self, worker: usize) -> usize {
        self.shared.plan.workers[worker].cpu
    }

    /// Worker `worker`'s path in the tree ("" when the root is the only leaf).
    pub fn path(&self, worker: usize) -> &str {
        &self.shared.plan.workers[worker].path
    }

    /// Worker `worker`'s thread name, `sphere-<path>` (the kernel shows its first 15 bytes).
    pub fn thread_name(&self, worker: usize) -> &str {
        &self.names[worker]
    }

    /// Worker `worker`'s kernel thread id (Linux; `None` elsewhere), as `ps -L` shows it.
    pub fn thread_id(&self, worker: usize) -> Option<u32> {
        self.tids[worker]
    }

    /// What went wrong at start-up without stopping it (workers left unpinned).
    pub fn warnings(&self) -> &[SpheresWarning] {
        &self.warnings
    }

    /// Runs `f` once on every worker and returns when all have finished. `f` may borrow from
    /// the caller's stack. One job runs at a time: concurrent callers take turns.
    pub fn run<F>(&self, f: F) -> Result<(), SpheresError>
    where
        F: Fn(&WorkerCtx<'_>) + Sync,
    {
        self.shared.run(|_| {}, &f)
    }

    /// Creates one value per worker, each made by `init` on its own worker thread (so memory
    /// it allocates and writes is first touched there).
    pub fn per_worker<T, I>(&self, init: I) -> Result<PerWorker<T>, SpheresError>
    where
        T: Send,
        I: Fn(&WorkerCtx<'_>) -> T + Sync,
    {
        let slots: Vec<Mutex<Option<T>>> = (0..self.count()).map(|_| Mutex::new(None)).collect();
        self.run(|ctx| {
            let value = init(ctx);
            *slots[ctx.index()]
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(value);
        })?;
        Ok(PerWorker {
            slots: slots
                .into_iter()
                .map(|slot| {
                    let value = slot.into_inner().unwrap_or_else(PoisonError::into_inner);
                    CachePadded(value.expect("every worker ran the job"))
                })
                .collect(),
        })
    }

    /// Like [`Spheres::run`], lending each worker its own value of `state` mutably.
    pub fn run_with<T, F>(&self, state: &mut PerWorker<T>, f: F) -> Result<(), SpheresError>
    where
        T: Send,
        F: Fn(&WorkerCtx<'_>, &mut T) + Sync,
    {
        self.check_count(state.len())?;
        let slots = SlotsPtr(state.slots.as_mut_ptr());
        self.run(|ctx| {
            // SAFETY: `state` is borrowed mutably for this call and each worker index occurs
            // once per job, so each element is borrowed by exactly one worker.
            let mine = unsafe { slots.get(ctx.index()) };
            f(ctx, mine);
        })
    }

    /// Calls `f` on sub-ranges that together cover `range` exactly once, spread over the
    /// workers by `schedule`. Returns when all are done.
    pub fn par_for<F>(
        &self,
        range: Range<usize>,
        schedule: Schedule,
        f: F,
    ) -> Result<(), SpheresError>
    where
        F: Fn(Range<usize>) + Sync,
    {
        self.shared.run(
            |shared| steal::prepare(shared, range.clone()),
            &|ctx: &WorkerCtx<'_>| steal::for_each(ctx, range.clone(), schedule, &mut |r| f(r)),
        )
    }

    /// Like [`Spheres::par_for`], lending each worker its own value of `state` mutably.
    pub fn par_for_with<T, F>(
        &self,
        state: &mut PerWorker<T>,
        range: Range<usize>,
        schedule: Schedule,
        f: F,
    ) -> Result<(), SpheresError>
    where
        T: Send,
        F: Fn(&mut T, Range<usize>) + Sync,
    {
        self.check_count(state.len())?;
        let slots = SlotsPtr(state.slots.as_mut_ptr());
        self.shared.run(
            |shared| steal::prepare(shared, range.clone()),
            &|ctx: &WorkerCtx<'_>| {
                // SAFETY: as in `run_with`.
                let mine = unsafe { slots.get(ctx.index()) };
                steal::for_each(ctx, range.clone(), schedule, &mut |r| f(mine, r));
            },
        )
    }

    /// One zeroed buffer of `len` floats per worker, each allocated and written by its worker.
    pub fn reduce_buffers(&self, len: usize) -> Result<ReduceBuffers, SpheresError> {
        reduce::allocate(&self.shared, len)
    }

    /// Like [`Spheres::run`], lending each worker its own buffer of `buffers` mutably.
    pub fn run_with_buffers<F>(&self, buffers: &mut ReduceBuffers, f: F) -> Result<(), SpheresError>
    where
        F: Fn(&WorkerCtx<'_>, &mut [f32]) + Sync,
    {
        reduce::run_with_buffers(&self.shared, buffers, f)
    }

    /// Sums all workers' buffers into worker 0's ([`ReduceBuffers::output`]), up the tree:
    /// each group's children in tree order, lowest groups (NUMA-local) first, each group's
    /// work split across its own workers. The other buffers are left holding partial sums.
    /// The result is bit-identical from run to run for the same tree.
    pub fn reduce_sum(&self, buffers: &mut ReduceBuffers) -> Result<(), SpheresError> {
        reduce::reduce_sum(&self.shared, buffers)
    }

    fn check_count(&self, got: usize) -> Result<(), SpheresError> {
        if got == self.count() {
            Ok(())
        } else {
            Err(SpheresError::WrongWorkerCount {
                expected: self.count(),
                got,
            })
        }
    }
}

impl Drop for Spheres {
    fn drop(&mut self) {
        self.shared.shutdown();
        for handle in self.threads.drain(..) {
            // A worker thread cannot panic outside a job (jobs run under catch_unwind); there
            // is nothing useful to do with such an error in a destructor anyway.
            let _ = handle.join();
        }
    }
}

impl fmt::Debug for Spheres {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Spheres")
            .field("workers", &self.names)
            .field("warnings", &self.warnings)
            .finish_non_exhaustive()
    }
}

/// One value per worker of a pool, each on its own cache lines. Made by
/// [`Spheres::per_worker`]; lent to the workers by [`Spheres::run_with`] and
/// [`Spheres::par_for_with`]; readable and writable by the owner between jobs.
pub struct PerWorker<T> {
    slots: Box<[CachePadded<T>]>,
}

impl<T> PerWorker<T> {
    /// How many values (workers) there are.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether there are none (never, for values made by a pool).
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Worker `worker`'s value. Panics if `worker` is out of range.
    pub fn get(&self, worker: usize) -> &T {
        &self.slots[worker]
    }

    /// Worker `worker`'s value, writable. Panics if `worker` is out of range.
    pub fn get_mut(&mut self, worker: usize) -> &mut T {
        &mut self.slots[worker]
    }

    /// The values in worker order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.slots.iter().map(|slot| &slot.0)
    }
}

/// The elements of a mutably borrowed `PerWorker`, shared with the workers of one job so that
/// each can take its own.
struct SlotsPtr<T>(*mut CachePadded<T>);

// SAFETY: the workers use it only through `get`, each with its own index, while the owner's
// `&mut PerWorker<T>` is held; that hands each `T` to one other thread, which needs `T: Send`.
unsafe impl<T: Send> Sync for SlotsPtr<T> {}

impl<T> SlotsPtr<T> {
    /// # Safety
    /// `index` must be in bounds, the `PerWorker` mutably borrowed for as long as the result
    /// lives, and no other live reference may exist to the same element.
    #[allow(clippy::mut_from_ref)]
    unsafe fn get<'a>(&self, index: usize) -> &'a mut T {
        // SAFETY: in bounds and exclusive, as the caller promises.
        unsafe { &mut (*self.0.add(index)).0 }
    }
}
