//! A small vector trait that every kernel is written against once, and its four ISA tokens.
//!
//! A token (`Scalar`, `Portable`, `Avx2`, `Avx512`; `Emulated512` in test builds with the feature
//! `emulate-avx512`) is a zero-sized proof that the CPU can run its instructions: the x86 tokens are only made by `new_unchecked`, whose caller promises the feature
//! was detected. Generic kernels take a token by value and are `#[inline(always)]`, so that inside a
//! `#[target_feature]` entry point (see the crate's `dispatch` module) every intrinsic inlines with
//! the right features enabled, as memchr's `arch/` does.

#[cfg(feature = "emulate-avx512")]
mod emulated;
mod portable;
mod scalar;
#[cfg(target_arch = "x86_64")]
mod x86;

#[cfg(feature = "emulate-avx512")]
pub use emulated::Emulated512;
pub use portable::Portable;
pub use scalar::Scalar;
#[cfg(target_arch = "x86_64")]
pub use x86::{Avx2, Avx512};

/// Floats in one 64-byte cache line.
pub const LINE_FLOATS: usize = 16;

/// Hint that the cache line holding `p` will be read soon (a no-op off x86-64).
#[inline(always)]
pub fn prefetch_read(p: *const f32) {
    prefetch::<3>(p) // _MM_HINT_T0: into every level
}

/// Hint that the cache line holding `p` will be read soon, into L2 but not L1 on Intel cores
/// (`prefetcht1`, whose meaning each core defines; a no-op off x86-64): for lines wanted a few
/// thousand cycles from now, which would only crowd the lines wanted sooner out of L1.
#[inline(always)]
pub fn prefetch_l2(p: *const f32) {
    prefetch::<2>(p) // _MM_HINT_T1
}

/// `_mm_prefetch` with the hint `HINT` (one of x86's `_MM_HINT_*` values); a no-op off x86-64.
#[inline(always)]
fn prefetch<const HINT: i32>(p: *const f32) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetch is a hint (SSE, part of the x86-64 baseline); it never faults, whatever `p`.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<HINT>(p.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Whether the path has 32 vector registers: the 16-lane paths (AVX-512, and its emulation) do;
/// kernels size their tiles for 16 on the others. The kernels that take wider register tiles
/// there ask this one question.
#[inline(always)]
pub fn wide_register_file<S: Simd>() -> bool {
    S::LANES == 16
}

/// The widest vector any token has, in f32 lanes (used to size stack tails).
pub const MAX_LANES: usize = 16;

/// f32 vector operations on one ISA. All arithmetic is lane-wise.
pub trait Simd: Copy {
    /// Lanes per vector.
    const LANES: usize;
    /// The vector type.
    type V: Copy;

    fn splat(self, x: f32) -> Self::V;
    /// Load `LANES` floats.
    ///
    /// # Safety
    /// `p` must be valid for reading `LANES` floats (no alignment needed).
    unsafe fn load(self, p: *const f32) -> Self::V;
    /// Store `LANES` floats.
    ///
    /// # Safety
    /// `p` must be valid for writing `LANES` floats (no alignment needed).
    unsafe fn store(self, p: *mut f32, v: Self::V);
    fn add(self, a: Self::V, b: Self::V) -> Self::V;
    fn sub(self, a: Self::V, b: Self::V) -> Self::V;
    fn mul(self, a: Self::V, b: Self::V) -> Self::V;
    fn div(self, a: Self::V, b: Self::V) -> Self::V;
    /// Square root, correctly rounded (IEEE `sqrt`) on every path.
    fn sqrt(self, a: Self::V) -> Self::V;
    /// `a * b + c`, fused where the ISA has FMA.
    fn fma(self, a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    fn max(self, a: Self::V, b: Self::V) -> Self::V;
    fn min(self, a: Self::V, b: Self::V) -> Self::V;
    /// Round to the nearest integer (ties to even).
    fn round(self, a: Self::V) -> Self::V;
    /// `2^n` for lanes holding integral values in [-126, 127].
    fn pow2i(self, n: Self::V) -> Self::V;
    /// Each lane's bit pattern shifted left by `N` bits as a 32-bit integer (bits shifted out are
    /// lost), reinterpreted as f32.
    fn shl_bits<const N: i32>(self, a: Self::V) -> Self::V;
    /// The lane-wise wrapping sum of the bit patterns of `a` and `b` as 32-bit integers,
    /// reinterpreted as f32.
    fn add_bits(self, a: Self::V, b: Self::V) -> Self::V;
    /// `table[j]` in each lane, where `j` is the low three bits of that lane's bit pattern in `i`.
    fn lookup8(self, table: &[f32; 8], i: Self::V) -> Self::V;
    /// Sum of all lanes.
    fn reduce_add(self, a: Self::V) -> f32;
    /// Maximum of all lanes.
    fn reduce_max(self, a: Self::V) -> f32;

    fn zero(self) -> Self::V {
        self.splat(0.0)
    }

    /// Load the first `n < LANES` floats of `p`, the other lanes filled with `fill`.
    ///
    /// # Safety
    /// `p` must be valid for reading `n` floats.
    #[inline(always)]
    unsafe fn load_partial(self, p: *const f32, n: usize, fill: f32) -> Self::V {
        debug_assert!(n <= Self::LANES);
        let mut buf = [fill; MAX_LANES];
        // SAFETY: the caller guarantees `n` readable floats at `p`; `buf` holds MAX_LANES >= n.
        unsafe {
            std::ptr::copy_nonoverlapping(p, buf.as_mut_ptr(), n);
            self.load(buf.as_ptr())
        }
    }

    /// A full vector at `p` when `n` is the lane count, else the first `n` floats and zeros.
    ///
    /// # Safety
    /// `p` must be valid for reading `n ≤ LANES` floats.
    #[inline(always)]
    unsafe fn load_upto(self, p: *const f32, n: usize) -> Self::V {
        // SAFETY: the caller's promise.
        unsafe {
            if n == Self::LANES {
                self.load(p)
            } else {
                self.load_partial(p, n, 0.0)
            }
        }
    }

    /// All of `v` to `p` when `n` is the lane count, else its first `n` lanes.
    ///
    /// # Safety
    /// `p` must be valid for writing `n ≤ LANES` floats.
    #[inline(always)]
    unsafe fn store_upto(self, p: *mut f32, n: usize, v: Self::V) {
        // SAFETY: the caller's promise.
        unsafe {
            if n == Self::LANES {
                self.store(p, v)
            } else {
                self.store_partial(p, n, v)
            }
        }
    }

    /// Store `LANES` floats around the caches: a non-temporal store where the ISA has one, which
    /// writes the line without first reading it for ownership; a plain store elsewhere. A run of
    /// them must end with [`Simd::stream_fence`] before the stored data is read again, by this
    /// thread or another, or handed on.
    ///
    /// # Safety
    /// `p` must be valid for writing `LANES` floats and aligned to `4 * LANES` bytes.
    #[inline(always)]
    unsafe fn store_stream(self, p: *mut f32, v: Self::V) {
        // SAFETY: the caller's promise covers the plain store's.
        unsafe { self.store(p, v) }
    }

    /// Order every earlier [`Simd::store_stream`] before the stores that follow (x86's `sfence`:
    /// non-temporal stores are weakly ordered, and a Release store alone does not publish them).
    #[inline(always)]
    fn stream_fence(self) {}

    /// Store the first `n < LANES` lanes of `v` to `p`.
    ///
    /// # Safety
    /// `p` must be valid for writing `n` floats.
    #[inline(always)]
    unsafe fn store_partial(self, p: *mut f32, n: usize, v: Self::V) {
        debug_assert!(n <= Self::LANES);
        let mut buf = [0.0f32; MAX_LANES];
        // SAFETY: `buf` holds MAX_LANES >= LANES floats; the caller guarantees `n` writable floats at `p`.
        unsafe {
            self.store(buf.as_mut_ptr(), v);
            std::ptr::copy_nonoverlapping(buf.as_ptr(), p, n);
        }
    }
}
