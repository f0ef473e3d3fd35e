//! Parallel-for schedules: a static split, and per-worker ranges with work stealing.
//!
//! Under [`Schedule::Stealing`] each worker starts with its static share of the range behind an
//! atomic cursor. Workers claim `chunk` indices at a time from their own cursor; a worker whose
//! range is used up claims chunks from other workers' cursors, siblings first, then cousins
//! (the victim order of `plan.rs`), so stolen work stays as close in the machine as it can.
//! Owner and thieves claim through the same compare-exchange, so every index is handed out
//! exactly once.

use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::plan::share;
use super::pool::{Shared, WorkerCtx};

/// How a parallel-for splits its index range among workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// Each worker takes one contiguous share (sizes differ by at most one), in a single call.
    Static,
    /// Each worker starts on its static share, `chunk` indices per call, and steals chunks from
    /// the others when its own run out. For uneven work. A `chunk` of 0 is taken as 1.
    Stealing { chunk: usize },
}

/// One worker's remaining range: `next..end`.
#[derive(Default)]
pub(crate) struct Cursor {
    next: AtomicUsize,
    end: AtomicUsize,
}

/// Sets every worker's cursor to its static share of `range`. Called by the submitter before it
/// publishes the job. Relaxed: the job's publication (Release/Acquire on the epoch) orders these
/// stores before any worker's claim.
pub(crate) fn prepare(shared: &Shared, range: Range<usize>) {
    let n = shared.count();
    for (i, cursor) in shared.cursors.iter().enumerate() {
        let mine = share(range.clone(), n, i);
        cursor.next.store(mine.start, Ordering::Relaxed);
        cursor.end.store(mine.end, Ordering::Relaxed);
    }
}

/// Runs worker `ctx`'s part of a parallel-for over `range`, calling `body` on sub-ranges.
pub(crate) fn for_each(
    ctx: &WorkerCtx<'_>,
    range: Range<usize>,
    schedule: Schedule,
    body: &mut impl FnMut(Range<usize>),
) {
    match schedule {
        Schedule::Static => {
            let mine = ctx.share(range);
            if !mine.is_empty() {
                body(mine);
            }
        }
        Schedule::Stealing { chunk } => {
            let shared = ctx.shared();
            let chunk = chunk.max(1);
            drain(shared, &shared.cursors[ctx.index()], chunk, body);
            for &victim in shared.plan.workers[ctx.index()].victims.iter() {
                drain(shared, &shared.cursors[victim], chunk, body);
            }
        }
    }
}

/// Claims and runs chunks from `cursor` until it is used up (or the job aborted).
fn drain(shared: &Shared, cursor: &Cursor, chunk: usize, body: &mut impl FnMut(Range<usize>)) {
    // Relaxed: `end` is fixed for the whole job (published with it).
    let end = cursor.end.load(Ordering::Relaxed);
    loop {
        // Relaxed: a claim needs only the atomicity of the compare-exchange (each index range
        // is handed to whoever's exchange succeeds, once); no data travels through the cursor.
        // What the bodies write reaches the caller through the job's completion, whose
        // Release/Acquire chain covers every worker.
        let claim = cursor
            .next
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |next| {
                (next < end).then(|| next + chunk.min(end - next))
            });
        let Ok(start) = claim else { return };
        body(start..start + chunk.min(end - start));
        if shared.aborted() {
            return;
        }
    }
}
