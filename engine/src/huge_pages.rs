//! Large buffers on transparent huge pages.
//!
//! The arenas (parameters, activations, gradients, optimizer state, the KV cache) are hundreds of
//! megabytes read in strided and gathered patterns: GEMM packing walks rows a page or more apart,
//! the embedding gathers random rows of wte, decoding streams every weight once per step. With 4 KiB
//! pages nearly every such access needs its own TLB entry. Linux backs a range with 2 MiB pages
//! when asked (`MADV_HUGEPAGE`; many systems, this development machine among them, run
//! transparent huge pages in "madvise" mode, where nothing is huge unless asked), so big buffers
//! ask, before their pages are first touched.

/// Huge-page size on x86-64 and most aarch64 kernels.
const HUGE: usize = 2 << 20;

/// `n` zeros, on huge pages where the kernel allows.
///
/// The zeros come from `alloc_zeroed`, which for large sizes maps fresh zero pages without
/// touching them, so the advice takes effect when each page is first written.
pub fn zeroed(n: usize) -> Vec<f32> {
    let v = vec![0.0f32; n];
    advise(v.as_ptr().cast(), v.len() * size_of::<f32>());
    v
}

/// `n` zeros that begin on a huge-page boundary, so that every page under them can be a huge
/// page ([`zeroed`] leaves the partial 2 MiB pages at its two ends on small pages, most of a buffer
/// of a few MiB). One allocation a huge page longer than asked, used from its first boundary.
/// The whole allocation is advised, so this holds when it is a fresh mapping, which glibc makes
/// for requests above its mmap threshold (128 KiB, raised to the size of the largest mapped block
/// freed so far, at most 32 MiB); below that, calloc may hand back heap pages already mapped small.
///
/// For benchmarks that lay their buffers out back to back as the engine's activations are: the
/// time of a kernel whose operands fit in L2 depends on which L2 sets their lines fall in, which
/// on small pages changes with the physical pages each run gets (docs/PERFORMANCE.md, "The
/// attention benchmarks run on huge pages").
pub struct HugeBuf {
    buf: Vec<f32>,
    start: usize,
    len: usize,
}

impl HugeBuf {
    /// `n` zeros from a huge-page boundary.
    pub fn zeroed(n: usize) -> HugeBuf {
        let buf = zeroed(n + HUGE / size_of::<f32>());
        let at = buf.as_ptr() as usize;
        // `at` is a multiple of 4 (an f32's alignment), and so is HUGE.
        let start = (at.next_multiple_of(HUGE) - at) / size_of::<f32>();
        HugeBuf { buf, start, len: n }
    }

    /// The first `lens.iter().sum()` floats as `N` slices back to back, of lengths `lens`.
    /// Panics if they sum to more than the buffer holds.
    pub fn split_into<const N: usize>(&mut self, lens: [usize; N]) -> [&mut [f32]; N] {
        let mut rest: &mut [f32] = self;
        lens.map(|n| {
            let (part, tail) = std::mem::take(&mut rest).split_at_mut(n);
            rest = tail;
            part
        })
    }
}

impl std::fmt::Debug for HugeBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HugeBuf").field("len", &self.len).finish()
    }
}

impl std::ops::Deref for HugeBuf {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.buf[self.start..self.start + self.len]
    }
}

impl std::ops::DerefMut for HugeBuf {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.buf[self.start..self.start + self.len]
    }
}

/// Ask the kernel to back the whole 2 MiB pages inside `[ptr, ptr + bytes)` with huge pages.
///
/// Advice only: it never changes the contents, and it is silently ignored where the kernel lacks
/// or disables transparent huge pages (the call then fails with EINVAL, which changes nothing).
pub fn advise(ptr: *const u8, bytes: usize) {
    let start = ptr as usize;
    let (lo, hi) = (start.next_multiple_of(HUGE), (start + bytes) / HUGE * HUGE);
    if hi <= lo {
        return;
    }
    #[cfg(target_os = "linux")]
    // SAFETY: [lo, hi) lies inside the caller's allocation; MADV_HUGEPAGE changes only how the
    // kernel backs those pages, never what they hold, and touches no memory itself.
    unsafe {
        libc::madvise(lo as *mut libc::c_void, hi - lo, libc::MADV_HUGEPAGE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeroed_buffers_are_zero_whatever_their_size() {
        // Below one huge page (no advice), and spanning several (advised, then written).
        for n in [0, 1, 1000, 3 * HUGE / 4 + 5] {
            let mut v = zeroed(n);
            assert_eq!(v.len(), n);
            assert!(v.iter().all(|&x| x == 0.0));
            v.iter_mut().for_each(|x| *x = 1.0);
            assert!(v.iter().all(|&x| x == 1.0));
        }
    }

    #[test]
    fn huge_bufs_begin_on_a_huge_page_boundary() {
        for n in [0, 1, 3 * HUGE / 4 + 5] {
            let mut v = HugeBuf::zeroed(n);
            assert_eq!(v.len(), n);
            assert_eq!(v.as_ptr() as usize % HUGE, 0);
            assert!(v.iter().all(|&x| x == 0.0));
            v.iter_mut().for_each(|x| *x = 1.0);
            assert!(v.iter().all(|&x| x == 1.0));
        }
    }

    #[test]
    fn a_huge_buf_splits_into_slices_back_to_back() {
        let mut v = HugeBuf::zeroed(10);
        let base = v.as_ptr();
        let [a, b, c] = v.split_into([3, 0, 5]);
        assert_eq!((a.len(), b.len(), c.len()), (3, 0, 5));
        assert_eq!((a.as_ptr(), c.as_ptr()), (base, base.wrapping_add(3)));
    }

    #[test]
    fn advice_on_a_range_without_a_whole_huge_page_does_nothing() {
        let v = [7u8; 100];
        advise(v.as_ptr(), v.len());
        advise(v.as_ptr(), 0);
        assert!(v.iter().all(|&x| x == 7));
    }
}
