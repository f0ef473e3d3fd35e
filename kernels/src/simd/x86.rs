//! The x86-64 tokens: AVX2+FMA (8 lanes) and AVX-512F (16 lanes).
//!
//! Every method calls intrinsics that need the token's features. That is sound because a token can
//! only be made by `new_unchecked`, whose caller promises the CPU has them (the dispatcher makes
//! tokens only for the path `isa::active()` chose after detection).

use super::Simd;
use std::arch::x86_64::*;

const ROUND_NEAREST: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;

/// AVX2 with FMA3.
#[derive(Clone, Copy, Debug)]
pub struct Avx2(());

impl Avx2 {
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[inline(always)]
    pub unsafe fn new_unchecked() -> Avx2 {
        Avx2(())
    }
}

impl Simd for Avx2 {
    const LANES: usize = 8;
    type V = __m256;

    #[inline(always)]
    fn splat(self, x: f32) -> __m256 {
        // SAFETY: the token proves AVX2+FMA are present (so for every block below).
        unsafe { _mm256_set1_ps(x) }
    }
    #[inline(always)]
    unsafe fn load(self, p: *const f32) -> __m256 {
        // SAFETY: the caller guarantees 8 readable floats; loadu needs no alignment.
        unsafe { _mm256_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32, v: __m256) {
        // SAFETY: the caller guarantees 8 writable floats; storeu needs no alignment.
        unsafe { _mm256_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn store_stream(self, p: *mut f32, v: __m256) {
        // SAFETY: the caller guarantees 8 writable floats at `p`, aligned to 32 bytes as
        // `_mm256_stream_ps` requires.
        unsafe { _mm256_stream_ps(p, v) }
    }
    #[inline(always)]
    fn stream_fence(self) {
        // SAFETY: sfence is SSE, part of the x86-64 baseline.
        unsafe { _mm_sfence() }
    }
    #[inline(always)]
    fn add(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: token.
        unsafe { _mm256_add_ps(a, b) }
    }
    #[inline(always)]
    fn sub(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: token.
        unsafe { _mm256_sub_ps(a, b) }
    }
    #[inline(always)]
    fn mul(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: token.
        unsafe { _mm256_mul_ps(a, b) }
    }
    #[inline(always)]
    fn div(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: token.
        unsafe { _mm256_div_ps(a, b) }
    }
    #[inline(always)]
    fn sqrt(self, a: __m256) -> __m256 {
        // SAFETY: token.
        unsafe { _mm256_sqrt_ps(a) }
    }
    #[inline(always)]
    fn fma(self, a: __m256, b: __m256, c: __m256) -> __m256 {
        // SAFETY: token.
        unsafe { _mm256_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    fn max(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: token.
        unsafe { _mm256_max_ps(a, b) }
    }
    #[inline(always)]
    fn min(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: token.
        unsafe { _mm256_min_ps(a, b) }
    }
    #[inline(always)]
    fn round(self, a: __m256) -> __m256 {
        // SAFETY: token.
        unsafe { _mm256_round_ps::<ROUND_NEAREST>(a) }
    }
    #[inline(always)]
    fn pow2i(self, n: __m256) -> __m256 {
        // SAFETY: token.
        unsafe {
            let biased = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
            _mm256_castsi256_ps(_mm256_slli_epi32::<23>(biased))
        }
    }
    #[inline(always)]
    fn shl_bits<const N: i32>(self, a: __m256) -> __m256 {
        // SAFETY: token.
        unsafe { _mm256_castsi256_ps(_mm256_slli_epi32::<N>(_mm256_castps_si256(a))) }
    }
    #[inline(always)]
    fn add_bits(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: token.
        unsafe {
            _mm256_castsi256_ps(_mm256_add_epi32(
                _mm256_castps_si256(a),
                _mm256_castps_si256(b),
            ))
        }
    }
    #[inline(always)]
    fn lookup8(self, table: &[f32; 8], i: __m256) -> __m256 {
        // SAFETY: token; `table` holds the 8 floats loaded. vpermps reads the low three bits of
        // each index lane.
        unsafe { _mm256_permutevar8x32_ps(_mm256_loadu_ps(table.as_ptr()), _mm256_castps_si256(i)) }
    }
    #[inline(always)]
    fn reduce_add(self, a: __m256) -> f32 {
        // SAFETY: token.
        unsafe {
            let s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps::<1>(a));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s));
            _mm_cvtss_f32(s)
        }
    }
    #[inline(always)]
    fn reduce_max(self, a: __m256) -> f32 {
        // SAFETY: token.
        unsafe {
            let s = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps::<1>(a));
            let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_max_ss(s, _mm_shuffle_ps::<0b01>(s, s));
            _mm_cvtss_f32(s)
        }
    }
}

/// AVX-512F.
#[derive(Clone, Copy, Debug)]
pub struct Avx512(());

impl Avx512 {
    /// # Safety
    /// The CPU must support AVX-512F.
    #[inline(always)]
    pub unsafe fn new_unchecked() -> Avx512 {
        Avx512(())
    }
}

impl Simd for Avx512 {
    const LANES: usize = 16;
    type V = __m512;

    #[inline(always)]
    fn splat(self, x: f32) -> __m512 {
        // SAFETY: the token proves AVX-512F is present (so for every block below).
        unsafe { _mm512_set1_ps(x) }
    }
    #[inline(always)]
    unsafe fn load(self, p: *const f32) -> __m512 {
        // SAFETY: the caller guarantees 16 readable floats; loadu needs no alignment.
        unsafe { _mm512_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32, v: __m512) {
        // SAFETY: the caller guarantees 16 writable floats; storeu needs no alignment.
        unsafe { _mm512_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn store_stream(self, p: *mut f32, v: __m512) {
        // SAFETY: the caller guarantees 16 writable floats at `p`, aligned to 64 bytes as
        // `_mm512_stream_ps` requires.
        unsafe { _mm512_stream_ps(p, v) }
    }
    #[inline(always)]
    fn stream_fence(self) {
        // SAFETY: sfence is SSE, part of the x86-64 baseline.
        unsafe { _mm_sfence() }
    }
    #[inline(always)]
    unsafe fn load_partial(self, p: *const f32, n: usize, fill: f32) -> __m512 {
        // SAFETY: the caller guarantees `n <= 16` readable floats; masked-off lanes are not read.
        unsafe {
            let mask: __mmask16 = ((1u32 << n) - 1) as __mmask16;
            _mm512_mask_loadu_ps(_mm512_set1_ps(fill), mask, p)
        }
    }
    #[inline(always)]
    unsafe fn store_partial(self, p: *mut f32, n: usize, v: __m512) {
        // SAFETY: the caller guarantees `n <= 16` writable floats; masked-off lanes are not written.
        unsafe {
            let mask: __mmask16 = ((1u32 << n) - 1) as __mmask16;
            _mm512_mask_storeu_ps(p, mask, v)
        }
    }
    #[inline(always)]
    fn add(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: token.
        unsafe { _mm512_add_ps(a, b) }
    }
    #[inline(always)]
    fn sub(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: token.
        unsafe { _mm512_sub_ps(a, b) }
    }
    #[inline(always)]
    fn mul(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: token.
        unsafe { _mm512_mul_ps(a, b) }
    }
    #[inline(always)]
    fn div(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: token.
        unsafe { _mm512_div_ps(a, b) }
    }
    #[inline(always)]
    fn sqrt(self, a: __m512) -> __m512 {
        // SAFETY: token.
        unsafe { _mm512_sqrt_ps(a) }
    }
    #[inline(always)]
    fn fma(self, a: __m512, b: __m512, c: __m512) -> __m512 {
        // SAFETY: token.
        unsafe { _mm512_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    fn max(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: token.
        unsafe { _mm512_max_ps(a, b) }
    }
    #[inline(always)]
    fn min(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: token.
        unsafe { _mm512_min_ps(a, b) }
    }
    #[inline(always)]
    fn round(self, a: __m512) -> __m512 {
        // SAFETY: token.
        unsafe { _mm512_roundscale_ps::<ROUND_NEAREST>(a) }
    }
    #[inline(always)]
    fn pow2i(self, n: __m512) -> __m512 {
        // SAFETY: token.
        unsafe {
            let biased = _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127));
            _mm512_castsi512_ps(_mm512_slli_epi32::<23>(biased))
        }
    }
    #[inline(always)]
    fn shl_bits<const N: i32>(self, a: __m512) -> __m512 {
        // SAFETY: token. The count goes in a register because this intrinsic's immediate is
        // unsigned while `N` is not; being a constant, it still compiles to the immediate form.
        unsafe {
            _mm512_castsi512_ps(_mm512_sll_epi32(
                _mm512_castps_si512(a),
                _mm_cvtsi32_si128(N),
            ))
        }
    }
    #[inline(always)]
    fn add_bits(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: token.
        unsafe {
            _mm512_castsi512_ps(_mm512_add_epi32(
                _mm512_castps_si512(a),
                _mm512_castps_si512(b),
            ))
        }
    }
    #[inline(always)]
    fn lookup8(self, table: &[f32; 8], i: __m512) -> __m512 {
        // vpermps over 16 entries reads the low four bits of each index lane: with the table
        // written twice, entry `j + 8` equals entry `j`, so only the low three bits matter.
        let twice: [f32; 16] = std::array::from_fn(|k| table[k % 8]);
        // SAFETY: token; `twice` holds the 16 floats loaded.
        unsafe { _mm512_permutexvar_ps(_mm512_castps_si512(i), _mm512_loadu_ps(twice.as_ptr())) }
    }
    #[inline(always)]
    fn reduce_add(self, a: __m512) -> f32 {
        // SAFETY: token.
        unsafe { _mm512_reduce_add_ps(a) }
    }
    #[inline(always)]
    fn reduce_max(self, a: __m512) -> f32 {
        // SAFETY: token.
        unsafe { _mm512_reduce_max_ps(a) }
    }
}
