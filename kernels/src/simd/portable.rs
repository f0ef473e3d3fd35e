//! Eight lanes through the `wide` crate: SSE2 pairs on x86-64 baseline, NEON on aarch64.

use super::Simd;
use wide::f32x8;

/// `wide::f32x8`; always available.
#[derive(Clone, Copy, Debug, Default)]
pub struct Portable;

impl Simd for Portable {
    const LANES: usize = 8;
    type V = f32x8;

    #[inline(always)]
    fn splat(self, x: f32) -> f32x8 {
        f32x8::splat(x)
    }
    #[inline(always)]
    unsafe fn load(self, p: *const f32) -> f32x8 {
        // SAFETY: the caller guarantees 8 readable floats at `p`; `[f32; 8]` has alignment 4,
        // and read_unaligned needs none.
        f32x8::from(unsafe { p.cast::<[f32; 8]>().read_unaligned() })
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32, v: f32x8) {
        // SAFETY: the caller guarantees 8 writable floats at `p`.
        unsafe { p.cast::<[f32; 8]>().write_unaligned(v.to_array()) }
    }
    #[inline(always)]
    fn add(self, a: f32x8, b: f32x8) -> f32x8 {
        a + b
    }
    #[inline(always)]
    fn sub(self, a: f32x8, b: f32x8) -> f32x8 {
        a - b
    }
    #[inline(always)]
    fn mul(self, a: f32x8, b: f32x8) -> f32x8 {
        a * b
    }
    #[inline(always)]
    fn div(self, a: f32x8, b: f32x8) -> f32x8 {
        a / b
    }
    #[inline(always)]
    fn sqrt(self, a: f32x8) -> f32x8 {
        a.sqrt()
    }
    #[inline(always)]
    fn fma(self, a: f32x8, b: f32x8, c: f32x8) -> f32x8 {
        a.mul_add(b, c)
    }
    #[inline(always)]
    fn max(self, a: f32x8, b: f32x8) -> f32x8 {
        a.fast_max(b)
    }
    #[inline(always)]
    fn min(self, a: f32x8, b: f32x8) -> f32x8 {
        a.fast_min(b)
    }
    #[inline(always)]
    fn round(self, a: f32x8) -> f32x8 {
        a.round()
    }
    #[inline(always)]
    fn pow2i(self, n: f32x8) -> f32x8 {
        f32x8::from(
            n.to_array()
                .map(|x| f32::from_bits(((x as i32 + 127) as u32) << 23)),
        )
    }
    #[inline(always)]
    fn shl_bits<const N: i32>(self, a: f32x8) -> f32x8 {
        f32x8::from(a.to_array().map(|x| f32::from_bits(x.to_bits() << N)))
    }
    #[inline(always)]
    fn add_bits(self, a: f32x8, b: f32x8) -> f32x8 {
        let (a, b) = (a.to_array(), b.to_array());
        f32x8::from(std::array::from_fn(|k| {
            f32::from_bits(a[k].to_bits().wrapping_add(b[k].to_bits()))
        }))
    }
    #[inline(always)]
    fn lookup8(self, table: &[f32; 8], i: f32x8) -> f32x8 {
        f32x8::from(i.to_array().map(|x| table[(x.to_bits() & 7) as usize]))
    }
    #[inline(always)]
    fn reduce_add(self, a: f32x8) -> f32 {
        a.reduce_add()
    }
    #[inline(always)]
    fn reduce_max(self, a: f32x8) -> f32 {
        a.to_array().into_iter().fold(f32::NEG_INFINITY, f32::max)
    }
}
