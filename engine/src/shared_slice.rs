//! A mutable buffer handed to the workers of one pool job by pointer: the decoder's activations
//! and partial sums, the parallel GEMM's shared packed B block. Its accessors are `unsafe`; each
//! caller states why the ranges its workers touch between two barriers do not overlap.

use std::ops::Range;

/// A mutable buffer shared by the workers of one job, each writing only ranges no other worker
/// touches between two barriers.
#[derive(Clone, Copy)]
pub(crate) struct SharedSlice {
    ptr: *mut f32,
    len: usize,
}

// SAFETY: `SharedSlice` is only a pointer; the disjointness rule of its accessors makes the
// accesses from different threads race-free.
unsafe impl Send for SharedSlice {}
// SAFETY: as above.
unsafe impl Sync for SharedSlice {}

impl SharedSlice {
    pub(crate) fn new(buf: &mut [f32]) -> SharedSlice {
        SharedSlice {
            ptr: buf.as_mut_ptr(),
            len: buf.len(),
        }
    }

    /// # Safety
    /// No other live reference may cover `r` while the result lives (the workers write disjoint
    /// ranges between barriers), and the buffer must outlive it.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn mut_at(&self, r: Range<usize>) -> &mut [f32] {
        assert!(r.start <= r.end && r.end <= self.len);
        // SAFETY: in bounds (asserted); exclusivity is the caller's promise.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(r.start), r.len()) }
    }

    /// # Safety
    /// No live mutable reference may cover `r` while the result lives.
    pub(crate) unsafe fn at(&self, r: Range<usize>) -> &[f32] {
        assert!(r.start <= r.end && r.end <= self.len);
        // SAFETY: in bounds (asserted); no writer is the caller's promise.
        unsafe { std::slice::from_raw_parts(self.ptr.add(r.start), r.len()) }
    }
}
