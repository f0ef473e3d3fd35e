//! Per-worker f32 buffers and their deterministic tree reduction.
//!
//! Every group's sum is accumulated into its first worker's buffer: for a group with children
//! c0, c1, ..., ck (in tree order), element i becomes `((x0[i] + x1[i]) + x2[i]) + ... + xk[i]`,
//! where xj is child j's sum (its first worker's buffer). Groups are processed bottom-up by
//! height, with a barrier between heights, so a child's sum is complete before its parent reads
//! it; all groups of one height run at once. Each group's work is split into cache-line-aligned
//! chunks across the group's own workers, so a NUMA node's workers sum the node's buffers before
//! anything crosses nodes. Which worker adds which chunk never changes the order of the
//! additions for an element, so the result depends only on the tree: bit-identical run to run.

use crate::huge_pages;
use std::ops::Range;
use std::ptr::{self, NonNull};
use std::slice;
use std::sync::atomic::{AtomicPtr, Ordering};

use super::plan::{Plan, PlanNode};
use super::pool::{Shared, WorkerCtx};
use super::SpheresError;

/// Floats summed per block: the destination block (8 KiB) stays in L1 while each child's
/// block streams past it, so memory sees one read of every input and one write.
const BLOCK: usize = 2048;

/// Chunk boundaries fall on multiples of 16 floats (64 bytes), so no cache line is written by
/// two workers.
const LINE: usize = 16;

/// One f32 buffer per worker, all of the same length, each allocated and first written (zeroed)
/// by its own worker thread, so its pages live on that worker's NUMA node.
pub struct ReduceBuffers {
    /// Worker i's buffer: `len` floats, from `Box<[f32]>::into_raw`, owned by this value.
    ptrs: Box<[NonNull<f32>]>,
    len: usize,
}

// SAFETY: `ReduceBuffers` owns its buffers exactly as a `Vec<Box<[f32]>>` would: moving it to
// another thread moves the ownership, and `&ReduceBuffers` only gives out `&[f32]`.
unsafe impl Send for ReduceBuffers {}
// SAFETY: see Send: shared access is read-only.
unsafe impl Sync for ReduceBuffers {}

impl ReduceBuffers {
    /// Floats per buffer.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffers hold no floats.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many buffers (workers) there are.
    pub fn workers(&self) -> usize {
        self.ptrs.len()
    }

    /// Worker `worker`'s buffer. Panics if `worker` is out of range.
    pub fn buffer(&self, worker: usize) -> &[f32] {
        // SAFETY: the pointer owns `len` initialised floats; `&self` allows shared reads.
        unsafe { slice::from_raw_parts(self.ptrs[worker].as_ptr(), self.len) }
    }

    /// Worker `worker`'s buffer, writable. Panics if `worker` is out of range.
    pub fn buffer_mut(&mut self, worker: usize) -> &mut [f32] {
        // SAFETY: as in `buffer`; `&mut self` makes this the only access.
        unsafe { slice::from_raw_parts_mut(self.ptrs[worker].as_ptr(), self.len) }
    }

    /// Where [`Spheres::reduce_sum`](super::Spheres::reduce_sum) leaves the total: worker 0's
    /// buffer (the root's first worker).
    pub fn output(&self) -> &[f32] {
        self.buffer(0)
    }

    /// # Safety
    /// The caller must have exclusive access to worker `worker`'s buffer for the lifetime it
    /// picks (e.g. each worker of one job taking its own index while `self` is borrowed mutably).
    unsafe fn buffer_unchecked<'a>(&self, worker: usize) -> &'a mut [f32] {
        // SAFETY: the pointer owns `len` initialised floats; exclusivity is the caller's.
        unsafe { slice::from_raw_parts_mut(self.ptrs[worker].as_ptr(), self.len) }
    }
}

impl Drop for ReduceBuffers {
    fn drop(&mut self) {
        for p in self.ptrs.iter() {
            // SAFETY: each pointer came from `Box::<[f32]>::into_raw` with length `len` and is
            // freed once, here.
            drop(unsafe { Box::from_raw(ptr::slice_from_raw_parts_mut(p.as_ptr(), self.len)) });
        }
    }
}

/// Each worker allocates and zeroes its own buffer of `len` floats.
pub(crate) fn allocate(shared: &Shared, len: usize) -> Result<ReduceBuffers, SpheresError> {
    let slots: Vec<AtomicPtr<f32>> = (0..shared.count())
        .map(|_| AtomicPtr::new(ptr::null_mut()))
        .collect();
    let result = shared.run(|_| {}, &|ctx: &WorkerCtx<'_>| {
        // Written, not just reserved (`vec![0.0; len]` would get untouched zero pages from the
        // allocator): the first write decides which NUMA node backs each page.
        let mut buffer = Vec::<f32>::with_capacity(len);
        huge_pages::advise(buffer.as_ptr().cast(), len * size_of::<f32>());
        buffer.resize(len, 0.0);
        let raw = Box::into_raw(buffer.into_boxed_slice()).cast::<f32>();
        // Relaxed: the job's completion (Release/Acquire) publishes it to the caller.
        slots[ctx.index()].store(raw, Ordering::Relaxed);
    });
    // Relaxed: the job has completed (see above). On error some workers may not have run:
    // the wrapper takes whatever was allocated, and dropping it frees that.
    let buffers = ReduceBuffers {
        ptrs: slots
            .iter()
            .filter_map(|s| NonNull::new(s.load(Ordering::Relaxed)))
            .collect(),
        len,
    };
    result?;
    Ok(buffers)
}

/// Runs `f` on every worker with that worker's own buffer.
pub(crate) fn run_with_buffers<F>(
    shared: &Shared,
    buffers: &mut ReduceBuffers,
    f: F,
) -> Result<(), SpheresError>
where
    F: Fn(&WorkerCtx<'_>, &mut [f32]) + Sync,
{
    check_count(shared, buffers)?;
    let buffers = &*buffers;
    shared.run(|_| {}, &|ctx: &WorkerCtx<'_>| {
        // SAFETY: the caller lent the buffers mutably for this call; each worker index occurs
        // once per job, so each buffer is borrowed by exactly one worker.
        let mine = unsafe { buffers.buffer_unchecked(ctx.index()) };
        f(ctx, mine);
    })
}

/// Sums every worker's buffer into worker 0's (see the module comment for the order).
pub(crate) fn reduce_sum(shared: &Shared, buffers: &mut ReduceBuffers) -> Result<(), SpheresError> {
    check_count(shared, buffers)?;
    let buffers = &*buffers;
    shared.run(|_| {}, &|ctx: &WorkerCtx<'_>| {
        let plan = &ctx.shared().plan;
        let me = ctx.index();
        for (level, step) in plan.workers[me].reduce_steps.iter().enumerate() {
            if let Some(g) = *step {
                let node = &plan.nodes[g];
                let part = chunk(buffers.len, node.workers.len(), me - node.workers.start);
                if !part.is_empty() {
                    // SAFETY: see `sum_children`: at this level, chunk `part` of this group's
                    // destination is written by this worker only, and the children's buffers
                    // it reads are written by no one.
                    unsafe { sum_children(buffers, plan, node, part) };
                }
            }
            if level + 1 < plan.levels {
                // Every buffer written at this level is complete before the next one reads it.
                ctx.barrier();
            }
        }
    })
}

fn check_count(shared: &Shared, buffers: &ReduceBuffers) -> Result<(), SpheresError> {
    if buffers.workers() == shared.count() {
        Ok(())
    } else {
        Err(SpheresError::WrongWorkerCount {
            expected: shared.count(),
            got: buffers.workers(),
        })
    }
}

/// Part `index` of `0..len` split into `parts` pieces whose boundaries are multiples of LINE.
fn chunk(len: usize, parts: usize, index: usize) -> Range<usize> {
    let per = len.div_ceil(parts).div_ceil(LINE) * LINE;
    let start = (index * per).min(len);
    start..(start + per).min(len)
}

/// Adds children 1..k of `node` into child 0's (= the node's) buffer over `part`, block by
/// block, children in tree order.
///
/// # Safety
/// During the call no other thread may access `part` of the node's first worker's buffer, and
/// no thread may write `part` of the other children's first workers' buffers.
unsafe fn sum_children(buffers: &ReduceBuffers, plan: &Plan, node: &PlanNode, part: Range<usize>) {
    // SAFETY: the pointer owns `len` floats and `part` lies within them; exclusive access to
    // this range is the caller's promise. Only `part` is borrowed: the group's other workers
    // borrow their own parts of the same buffer at the same time.
    let dst = unsafe {
        slice::from_raw_parts_mut(
            buffers.ptrs[node.workers.start].as_ptr().add(part.start),
            part.len(),
        )
    };
    let mut block = 0;
    while block < dst.len() {
        let end = (block + BLOCK).min(dst.len());
        let d = &mut dst[block..end];
        for &child in &node.children[1..] {
            let source = plan.nodes[child].workers.start;
            // SAFETY: the pointer owns `len` floats and `part.start + end <= len`; nobody
            // writes this range of the child's buffer during the call (caller's promise), and
            // it is a different allocation from `dst`.
            let s = unsafe {
                slice::from_raw_parts(
                    buffers.ptrs[source].as_ptr().add(part.start + block),
                    end - block,
                )
            };
            for (d, s) in d.iter_mut().zip(s) {
                *d += *s;
            }
        }
        block = end;
    }
}

#[cfg(test)]
mod tests {
    use super::chunk;

    #[test]
    fn chunks_are_line_aligned_and_cover_everything() {
        for len in [0, 1, 15, 16, 17, 100, 1000] {
            for parts in 1..8 {
                let mut next = 0;
                for i in 0..parts {
                    let r = chunk(len, parts, i);
                    assert_eq!(r.start, next, "len={len} parts={parts} i={i}");
                    if r.start < len {
                        assert_eq!(r.start % 16, 0);
                    }
                    next = r.end;
                }
                assert_eq!(next, len);
            }
        }
    }
}
