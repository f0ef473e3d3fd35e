//! The worker threads: job publication, completion, sleeping and waking, panics and aborts.
//!
//! Who waits on what (README.md has the whole picture):
//! - an idle worker waits for `job_epoch` to move past the last job it ran;
//! - the submitting thread waits for `done_epoch` to reach the job it published;
//! - a worker in a barrier waits for the barrier generation to move, or for the job to abort.
//!
//! Every wait spins, then yields, then parks ([`Backoff`]). A waiter that parks first announces
//! itself (its slot's `asleep` state and a sleeper counter), then re-checks its condition; a
//! waker first makes the condition true, then checks the announcements. Both sides use SeqCst
//! for these four accesses, so at least one of them sees the other: either the waiter sees the
//! condition and does not park, or the waker sees the announcement and unparks it (a Dekker
//! handshake; Acquire/Release alone would allow both to miss). `Thread::unpark` before `park`
//! leaves a token, so an unpark that lands between the re-check and the park is not lost.

use std::any::Any;
use std::cell::{Cell, UnsafeCell};
use std::marker::PhantomData;
use std::ops::Range;
use std::panic::{self, AssertUnwindSafe};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock, PoisonError};
use std::thread::{self, Thread};

use super::affinity;
use super::barrier::{Arrival, TreeBarrier};
use super::plan::{share, Plan};
use super::steal::Cursor;
use super::sync::{Backoff, CachePadded};
use super::SpheresError;

/// A job as the workers see it: the caller's closure with its lifetime erased.
type JobFn = dyn Fn(&WorkerCtx<'_>) + Sync;

#[derive(Clone, Copy)]
enum Job {
    /// Run this closure. The pointer is valid from the job's publication until its completion
    /// (see `Shared::run`), and dangling afterwards; it is only read in between.
    Run(*const JobFn),
    /// Leave the worker loop (shutdown).
    Exit,
}

/// The `asleep` states of a worker slot: awake, or parked in one of the two kinds of wait.
const AWAKE: u8 = 0;
const IDLE: u8 = 1;
const IN_BARRIER: u8 = 2;

/// Doubling spin steps of an idle worker before it yields (1 + 2 + 4 + 8 = 15 hints).
const IDLE_SPIN_STEPS: u32 = 4;

/// Why a job was aborted (ordered so that `fetch_max` keeps the more informative reason).
const NOT_ABORTED: u8 = 0;
const MISMATCH: u8 = 1;
const PANICKED: u8 = 2;

/// The payload a worker unwinds with when it leaves an aborted barrier. It is not a panic of
/// its own, so it is not reported. A zero-sized payload: boxing it does not allocate.
struct Aborted;

thread_local! {
    /// The pool whose worker this thread is (null on other threads), to refuse nested runs.
    static CURRENT_POOL: Cell<*const Shared> = const { Cell::new(ptr::null()) };
}

struct WorkerSlot {
    /// AWAKE, or the kind of wait this worker announced before parking.
    asleep: AtomicU8,
    /// Set by the worker itself at start-up, before it reports ready.
    thread: OnceLock<Thread>,
}

/// What a worker reports once it is running, before it takes any job.
pub(crate) struct Startup {
    pub worker: usize,
    pub pinned: Result<(), String>,
    pub tid: Option<u32>,
}

pub(crate) struct Shared {
    pub(crate) plan: Plan,
    slots: Box<[CachePadded<WorkerSlot>]>,
    /// Per-worker stealing cursors of the current parallel-for (see `steal.rs`).
    pub(crate) cursors: Box<[CachePadded<Cursor>]>,
    idle_sleepers: CachePadded<AtomicUsize>,
    barrier_sleepers: CachePadded<AtomicUsize>,
    /// The number of the latest job published; written only by the submitter (under `submit`).
    job_epoch: CachePadded<AtomicU64>,
    /// The latest job; written only by the submitter, between jobs.
    job: UnsafeCell<Job>,
    /// The thread waiting for the current job; written only by the submitter, between jobs.
    caller: UnsafeCell<Option<Thread>>,
    caller_asleep: CachePadded<AtomicBool>,
    /// Workers that have not yet finished the current job.
    remaining: CachePadded<AtomicUsize>,
    /// The number of the latest job every worker has finished.
    done_epoch: CachePadded<AtomicU64>,
    /// NOT_ABORTED, MISMATCH or PANICKED for the current job.
    abort: CachePadded<AtomicU8>,
    /// The first real panic of the current job: (worker, message).
    panic: Mutex<Option<(usize, String)>>,
    pub(crate) barrier: TreeBarrier,
    /// Serialises submitters: one job at a time.
    submit: Mutex<()>,
}

// SAFETY: the UnsafeCells (`job`, `caller`) are written only by the thread holding `submit`, and
// only while no worker is inside a job (before publication, after completion); workers read them
// only inside a job. Publication and completion are Release/Acquire pairs (`job_epoch`,
// `done_epoch`), so those writes and reads never race. A `Job::Run` pointer is only dereferenced
// by workers while the submitter keeps the closure alive, and the closure is `Sync`. Everything
// else in `Shared` is atomic or otherwise `Sync`.
unsafe impl Sync for Shared {}
// SAFETY: the raw job pointer is the only non-Send field; see above for how it is used.
unsafe impl Send for Shared {}

impl Shared {
    pub(crate) fn new(plan: Plan) -> Shared {
        let n = plan.workers.len();
        let barrier = TreeBarrier::new(&plan);
        Shared {
            slots: (0..n)
                .map(|_| {
                    CachePadded(WorkerSlot {
                        asleep: AtomicU8::new(AWAKE),
                        thread: OnceLock::new(),
                    })
                })
                .collect(),
            cursors: (0..n).map(|_| CachePadded::default()).collect(),
            plan,
            idle_sleepers: CachePadded::default(),
            barrier_sleepers: CachePadded::default(),
            job_epoch: CachePadded::default(),
            job: UnsafeCell::new(Job::Exit),
            caller: UnsafeCell::new(None),
            caller_asleep: CachePadded::default(),
            remaining: CachePadded::default(),
            done_epoch: CachePadded::default(),
            abort: CachePadded::default(),
            panic: Mutex::new(None),
            barrier,
            submit: Mutex::new(()),
        }
    }

    pub(crate) fn count(&self) -> usize {
        self.plan.workers.len()
    }

    /// Whether the current job has been aborted (a worker panicked). Relaxed: only a hint that
    /// lets loops stop early; the outcome itself is read after completion.
    pub(crate) fn aborted(&self) -> bool {
        self.abort.load(Ordering::Relaxed) != NOT_ABORTED
    }

    /// Runs `job` once on every worker and returns when all have finished it.
    /// `setup` runs first, under the submit lock, to prepare shared per-job state (cursors).
    pub(crate) fn run(
        &self,
        setup: impl FnOnce(&Shared),
        job: &(dyn Fn(&WorkerCtx<'_>) + Sync + '_),
    ) -> Result<(), SpheresError> {
        if CURRENT_POOL.with(Cell::get) == ptr::from_ref(self) {
            return Err(SpheresError::Nested);
        }
        let _submit = self.submit.lock().unwrap_or_else(PoisonError::into_inner);
        setup(self);
        let job: *const (dyn Fn(&WorkerCtx<'_>) + Sync + '_) = job;
        // SAFETY: only the lifetime bound changes (same fat-pointer layout). The erased pointer
        // is dereferenced only by workers running this job, and this function does not return
        // before every worker has finished it (`wait_caller` below: `done_epoch` is stored by
        // the last worker to finish, after all of them are done with the closure, panics
        // included since each job runs under `catch_unwind`), so the closure, borrowed for the
        // whole call, outlives every use.
        let job: *const JobFn = unsafe { std::mem::transmute(job) };
        // Relaxed: only submitters write `job_epoch`, and they are serialised by `submit`.
        let epoch = self.job_epoch.load(Ordering::Relaxed) + 1;
        // SAFETY: no worker reads `job` or `caller` now: all finished the previous job (its
        // submitter saw `done_epoch`, under the same lock) and none reads them before it sees
        // the epoch stored below.
        unsafe {
            *self.job.get() = Job::Run(job);
            *self.caller.get() = Some(thread::current());
        }
        // Relaxed: published by the epoch store below.
        self.remaining.store(self.count(), Ordering::Relaxed);
        // SeqCst: Release publishes the job, `caller` and `remaining` to the workers, which
        // load the epoch with Acquire; and it precedes the sleeper check in `wake` (handshake).
        self.job_epoch.store(epoch, Ordering::SeqCst);
        self.wake(IDLE);
        self.wait_caller(epoch);
        self.outcome()
    }

    /// Ends every worker loop (the threads are joined by the owner).
    pub(crate) fn shutdown(&self) {
        let _submit = self.submit.lock().unwrap_or_else(PoisonError::into_inner);
        // SAFETY: as in `run`: no job is in flight while we hold `submit`.
        unsafe { *self.job.get() = Job::Exit };
        let epoch = self.job_epoch.load(Ordering::Relaxed) + 1;
        // SeqCst: as in `run`.
        self.job_epoch.store(epoch, Ordering::SeqCst);
        self.wake(IDLE);
    }

    /// The result of the job that just completed; resets the abort state for the next one.
    fn outcome(&self) -> Result<(), SpheresError> {
        // Relaxed: any abort was stored before the aborting worker's `remaining` decrement,
        // which the Acquire of `done_epoch` in `wait_caller` has ordered before this load.
        let reason = self.abort.load(Ordering::Relaxed);
        if reason == NOT_ABORTED {
            return Ok(());
        }
        // Workers unwound out of barriers mid-way: clear the half-counted arrivals. Relaxed:
        // the next job's publication orders these stores before any worker's next arrival.
        self.barrier.reset();
        self.abort.store(NOT_ABORTED, Ordering::Relaxed);
        let panic = self
            .panic
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        Err(match panic {
            Some((worker, message)) => SpheresError::WorkerPanicked { worker, message },
            None => SpheresError::BarrierMismatch,
        })
    }

    fn sleepers(&self, kind: u8) -> &AtomicUsize {
        if kind == IDLE {
            &self.idle_sleepers
        } else {
            &self.barrier_sleepers
        }
    }

    /// Unparks every worker parked in a wait of `kind`. Call after making its condition true.
    fn wake(&self, kind: u8) {
        // SeqCst (both loads): the waker's half of the handshake described at the top.
        if self.sleepers(kind).load(Ordering::SeqCst) == 0 {
            return;
        }
        for slot in self.slots.iter() {
            if slot.asleep.load(Ordering::SeqCst) == kind {
                if let Some(thread) = slot.thread.get() {
                    thread.unpark();
                }
            }
        }
    }

    /// Worker `index` waits (spin, yield, park) until `done()`.
    fn wait_worker(&self, index: usize, kind: u8, done: impl Fn() -> bool) {
        // Between jobs the next step usually needs the submitter, which needs a CPU: idle
        // workers spin less before yielding than barrier waiters, whose peers are all workers.
        let mut backoff = if kind == IDLE {
            Backoff::with_spin_steps(IDLE_SPIN_STEPS)
        } else {
            Backoff::new()
        };
        while !done() {
            if !backoff.snooze() {
                self.park_worker(index, kind, &done);
                return;
            }
        }
    }

    fn park_worker(&self, index: usize, kind: u8, done: &impl Fn() -> bool) {
        let slot = &self.slots[index];
        let sleepers = self.sleepers(kind);
        loop {
            // SeqCst (both, and the condition's loads): the waiter's half of the handshake.
            slot.asleep.store(kind, Ordering::SeqCst);
            sleepers.fetch_add(1, Ordering::SeqCst);
            let finished = done();
            if !finished {
                thread::park();
            }
            // A waker that still sees the stale announcement only unparks a thread that is
            // awake, which leaves a token and a spurious return from a later `park` (every park
            // here sits in a loop that re-checks its condition). SeqCst although Relaxed would
            // do: with every access to these flags SeqCst, the handshake's argument needs only
            // the single total order (no rule about Relaxed stores before SeqCst ones), and
            // Miri's weak-memory emulation can check it (scripts/ub_check.sh). This runs only
            // after a park, so the cost is nil.
            sleepers.fetch_sub(1, Ordering::SeqCst);
            slot.asleep.store(AWAKE, Ordering::SeqCst);
            if finished || done() {
                return;
            }
        }
    }

    /// The submitter waits (spin, yield, park) until every worker finished job `epoch`.
    fn wait_caller(&self, epoch: u64) {
        // SeqCst: Acquire pairs with the last worker's Release store, which follows every
        // worker's `remaining` decrement (an RMW chain), so the caller sees all the job's
        // writes; Seq for the handshake with `caller_asleep`.
        let done = || self.done_epoch.load(Ordering::SeqCst) == epoch;
        // The caller is the one thread beyond the workers: it yields from the start instead of
        // spinning, so on a machine with no spare core it hands its core to a worker at once.
        let mut backoff = Backoff::with_spin_steps(0);
        while !done() {
            if backoff.snooze() {
                continue;
            }
            loop {
                // SeqCst: the waiter's half of the handshake (the last worker is the waker).
                self.caller_asleep.store(true, Ordering::SeqCst);
                let finished = done();
                if !finished {
                    thread::park();
                }
                // A stale `true` costs at most a spurious unpark (a token; callers of `park`
                // must tolerate spurious wake-ups anyway). SeqCst for the reason given in
                // `park_worker`.
                self.caller_asleep.store(false, Ordering::SeqCst);
                if finished || done() {
                    return;
                }
            }
        }
    }

    /// Called by each worker when it has finished job `epoch`.
    fn finish(&self, epoch: u64) {
        // SeqCst RMW. Its AcqRel part: Release publishes this worker's writes in the job, and
        // as all updates of `remaining` in a job are RMWs, the last worker's Acquire gathers
        // every worker's writes before it stores `done_epoch`. SeqCst because barrier waiters
        // watch this counter to detect workers that left (handshake with `wake(IN_BARRIER)`).
        if self.remaining.fetch_sub(1, Ordering::SeqCst) == 1 {
            // SAFETY: the submitter rewrites `caller` only after it sees `done_epoch` reach
            // this job, which is stored below, after this read.
            let caller = unsafe { (*self.caller.get()).clone() };
            // SeqCst: Release for the submitter's Acquire in `wait_caller`; ordered before
            // the `caller_asleep` load (handshake).
            self.done_epoch.store(epoch, Ordering::SeqCst);
            if self.caller_asleep.load(Ordering::SeqCst) {
                if let Some(caller) = caller {
                    caller.unpark();
                }
            }
        } else {
            // Others are still in the job: if any is parked in a barrier, this worker's leaving
            // means that barrier can never complete; wake it so it notices (see `barrier`).
            self.wake(IN_BARRIER);
        }
    }

    /// Records a worker's panic (not an abort unwind) and aborts the job.
    fn record_panic(&self, worker: usize, payload: Box<dyn Any + Send>) {
        if payload.is::<Aborted>() {
            return;
        }
        let message = if let Some(s) = payload.downcast_ref::<&str>() {
            (*s).to_string()
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.clone()
        } else {
            "a panic with a non-string payload".to_string()
        };
        {
            let mut slot = self.panic.lock().unwrap_or_else(PoisonError::into_inner);
            if slot.is_none() {
                *slot = Some((worker, message));
            }
        }
        self.abort_job(PANICKED);
    }

    fn abort_job(&self, reason: u8) {
        // SeqCst: the condition store of a wake-up (handshake with barrier waiters).
        self.abort.fetch_max(reason, Ordering::SeqCst);
        self.wake(IN_BARRIER);
    }
}

/// The body of every worker thread.
pub(crate) fn worker_main(shared: Arc<Shared>, index: usize, ready: mpsc::Sender<Startup>) {
    let pinned = affinity::pin_current_thread(shared.plan.workers[index].cpu);
    let tid = affinity::current_tid();
    // Ignoring the result: only this thread sets its own slot, once.
    let _ = shared.slots[index].thread.set(thread::current());
    CURRENT_POOL.with(|c| c.set(Arc::as_ptr(&shared)));
    // A send error means `Spheres::new` gave up; the shutdown that follows ends this thread.
    let _ = ready.send(Startup {
        worker: index,
        pinned,
        tid,
    });
    drop(ready);
    let ctx = WorkerCtx {
        shared: &shared,
        index,
        _not_send: PhantomData,
    };
    let mut seen = 0;
    loop {
        // SeqCst: Acquire pairs with the submitter's Release store of the epoch, making the
        // job, `caller` and `remaining` visible; Seq for the sleep handshake.
        shared.wait_worker(index, IDLE, || {
            shared.job_epoch.load(Ordering::SeqCst) != seen
        });
        // Acquire, as above. It cannot move again until this worker finishes the job.
        seen = shared.job_epoch.load(Ordering::Acquire);
        // SAFETY: the job was written before the epoch we just acquired and is not rewritten
        // before this worker finishes it (see `Shared`'s Sync note).
        let job = unsafe { *shared.job.get() };
        match job {
            Job::Exit => break,
            Job::Run(f) => {
                // AssertUnwindSafe: a panicking job is reported to the caller as failed; what it
                // left half-written is the caller's to discard, as with `thread::scope`.
                let result = panic::catch_unwind(AssertUnwindSafe(|| {
                    // SAFETY: valid until this job completes, which needs this worker's
                    // `finish` below (see `Shared::run`).
                    let f = unsafe { &*f };
                    f(&ctx);
                }));
                if let Err(payload) = result {
                    shared.record_panic(index, payload);
                }
                shared.finish(seen);
            }
        }
    }
}

/// A worker's view of the job it is running: who it is, and the barrier.
///
/// Not `Send` or `Sync`: it stands for the worker thread itself, and the barrier counts on each
/// worker arriving from its own thread.
pub struct WorkerCtx<'a> {
    shared: &'a Shared,
    index: usize,
    _not_send: PhantomData<*const ()>,
}

impl WorkerCtx<'_> {
    /// This worker's index, 0..count, in tree order.
    pub fn index(&self) -> usize {
        self.index
    }

    /// How many workers the pool has.
    pub fn count(&self) -> usize {
        self.shared.count()
    }

    /// The logical CPU this worker was asked to run on.
    pub fn cpu(&self) -> usize {
        self.shared.plan.workers[self.index].cpu
    }

    /// This worker's path in the tree (child indices from the root joined by '.').
    pub fn path(&self) -> &str {
        &self.shared.plan.workers[self.index].path
    }

    /// This worker's part of `range` under a static split (contiguous, sizes differ by ≤ 1).
    pub fn share(&self, range: Range<usize>) -> Range<usize> {
        share(range, self.count(), self.index)
    }

    /// Waits until every worker of the pool has called `barrier` as many times as this one.
    /// Everything any worker wrote before its call is visible to every worker after it.
    ///
    /// Every worker must call it the same number of times in a job. If a worker panics, or
    /// finishes the job while others wait here, the waiting workers unwind out of the job (a
    /// silent unwind, not a reported panic) and the job returns an error instead of hanging.
    pub fn barrier(&self) {
        let s = self.shared;
        if s.count() == 1 {
            return;
        }
        let generation = match s.barrier.arrive(&s.plan, self.index) {
            Arrival::Released => {
                s.wake(IN_BARRIER);
                return;
            }
            Arrival::Wait(generation) => generation,
        };
        let n = s.count();
        // SeqCst loads (in `generation()` too): Acquire pairs with the releasing store so this
        // worker sees everyone's pre-barrier writes; Seq for the sleep handshake with the
        // release, an abort, or a worker leaving.
        s.wait_worker(self.index, IN_BARRIER, || {
            s.barrier.generation() != generation
                || s.abort.load(Ordering::SeqCst) != NOT_ABORTED
                || s.remaining.load(Ordering::SeqCst) < n
        });
        if s.barrier.generation() != generation {
            return;
        }
        if s.abort.load(Ordering::SeqCst) == NOT_ABORTED {
            // A worker finished the job, yet the generation has not moved. Had that worker
            // passed this barrier, the release would be visible now: its decrement of
            // `remaining`, which we read, came after it saw the release, and our loads are
            // ordered after that read. So it never arrives here: the job is malformed.
            s.abort_job(MISMATCH);
        }
        panic::resume_unwind(Box::new(Aborted));
    }

    pub(crate) fn shared(&self) -> &Shared {
        self.shared
    }
}
