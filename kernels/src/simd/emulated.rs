//! The AVX-512 path's shape in plain Rust, for machines without AVX-512F (feature
//! `emulate-avx512`, for tests only).
//!
//! Every generic kernel branches on its token's lane count and tile (16 lanes and the 9 × 48
//! GEMM tile on AVX-512: other loop bounds, tails, tiles and prefetch distances than the 8-lane
//! paths). With this feature, `CLLM_ISA=avx512` on a CPU that lacks AVX-512F runs those same
//! instantiations with this token, so the kernel tests check the AVX-512 path's logic on any
//! machine. Each operation has the AVX-512 instruction's semantics: fused multiply-add, `max` and
//! `min` that return the second operand when either is NaN, round-to-nearest-even conversions,
//! `vpermps` indexing, and `_mm512_reduce_add_ps`'s pairwise order. What it cannot check is the
//! intrinsics of [`super::Avx512`] themselves; those run only on AVX-512 hardware.

use super::Simd;

/// Sixteen f32 lanes in an array.
#[derive(Clone, Copy, Debug, Default)]
pub struct Emulated512;

type V16 = [f32; 16];

#[inline(always)]
fn zip(a: V16, b: V16, f: impl Fn(f32, f32) -> f32) -> V16 {
    std::array::from_fn(|k| f(a[k], b[k]))
}

/// `_mm512_reduce_add_ps`'s order: the upper half added to the lower, then again on the half
/// left, down to one lane.
#[inline(always)]
fn reduce(mut a: V16, f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut n = 16;
    while n > 1 {
        n /= 2;
        for k in 0..n {
            a[k] = f(a[k], a[k + n]);
        }
    }
    a[0]
}

impl Simd for Emulated512 {
    const LANES: usize = 16;
    type V = V16;

    #[inline(always)]
    fn splat(self, x: f32) -> V16 {
        [x; 16]
    }
    #[inline(always)]
    unsafe fn load(self, p: *const f32) -> V16 {
        // SAFETY: the caller guarantees 16 readable floats at `p`; read_unaligned needs no
        // alignment.
        unsafe { p.cast::<V16>().read_unaligned() }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32, v: V16) {
        // SAFETY: the caller guarantees 16 writable floats at `p`.
        unsafe { p.cast::<V16>().write_unaligned(v) }
    }
    #[inline(always)]
    fn add(self, a: V16, b: V16) -> V16 {
        zip(a, b, |x, y| x + y)
    }
    #[inline(always)]
    fn sub(self, a: V16, b: V16) -> V16 {
        zip(a, b, |x, y| x - y)
    }
    #[inline(always)]
    fn mul(self, a: V16, b: V16) -> V16 {
        zip(a, b, |x, y| x * y)
    }
    #[inline(always)]
    fn div(self, a: V16, b: V16) -> V16 {
        zip(a, b, |x, y| x / y)
    }
    #[inline(always)]
    fn sqrt(self, a: V16) -> V16 {
        a.map(f32::sqrt)
    }
    #[inline(always)]
    fn fma(self, a: V16, b: V16, c: V16) -> V16 {
        std::array::from_fn(|k| a[k].mul_add(b[k], c[k]))
    }
    #[inline(always)]
    fn max(self, a: V16, b: V16) -> V16 {
        zip(a, b, |x, y| if x > y { x } else { y })
    }
    #[inline(always)]
    fn min(self, a: V16, b: V16) -> V16 {
        zip(a, b, |x, y| if x < y { x } else { y })
    }
    #[inline(always)]
    fn round(self, a: V16) -> V16 {
        a.map(f32::round_ties_even)
    }
    #[inline(always)]
    fn pow2i(self, n: V16) -> V16 {
        n.map(|x| f32::from_bits(((x.round_ties_even() as i32).wrapping_add(127) as u32) << 23))
    }
    #[inline(always)]
    fn shl_bits<const N: i32>(self, a: V16) -> V16 {
        a.map(|x| f32::from_bits(x.to_bits() << N))
    }
    #[inline(always)]
    fn add_bits(self, a: V16, b: V16) -> V16 {
        zip(a, b, |x, y| {
            f32::from_bits(x.to_bits().wrapping_add(y.to_bits()))
        })
    }
    #[inline(always)]
    fn lookup8(self, table: &[f32; 8], i: V16) -> V16 {
        i.map(|x| table[(x.to_bits() & 7) as usize])
    }
    #[inline(always)]
    fn reduce_add(self, a: V16) -> f32 {
        reduce(a, |x, y| x + y)
    }
    #[inline(always)]
    fn reduce_max(self, a: V16) -> f32 {
        reduce(a, |x, y| if x > y { x } else { y })
    }
}
