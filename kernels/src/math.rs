//! Transcendental functions on vectors, written once over [`Simd`].
//!
//! Both exponentials split the argument into an integer `n` and a remainder, evaluate a minimax
//! polynomial of the remainder, and scale by `2^n` ([`Simd::pow2i`]). The polynomials were fitted
//! by the Remez exchange on the reduced range, with the coefficients then rounded to f32; the
//! errors quoted are measured against f64 over dense grids (the tests below check them).
//!
//! - [`exp`]: `e^x`, reduced by ln 2 in two parts (Cody–Waite) to r in [-ln2/2, ln2/2], then
//!   `1 + r + c2 r^2 + ... + c6 r^6` (the constant and linear terms exact): relative error below
//!   1.1e-7 (< 1 ulp) over its range. Inputs are clamped to [-87, 88] so that `2^n` stays a normal
//!   float: below -87 it returns exp(-87) ~ 1.6e-38 instead of a smaller number, which no kernel
//!   here can tell from zero (softmax sums are >= 1).
//! - [`exp2`]: `2^x`, by way of [`exp2_eighths_parts_k`], which takes `y = 8x`: `m = round(y)`
//!   and `f = y - m` in [-0.5, 0.5] (both exact), then `2^(y/8) = 2^(m/8) 2^(f/8)`. `2^(m/8)` is
//!   `2^floor(m/8)` times one of eight table entries `2^(j/8)`, `j = m mod 8`, and `2^(f/8)` a
//!   degree-3 polynomial: relative error below 1.7e-7 (< 2 ulp; was 2.2e-7 with the degree-5
//!   polynomial over a whole octave). The table saves two of that polynomial's five
//!   multiply-adds, which is what GELU pays for on an AVX2 core (Zen: about two cycles each per
//!   vector there). The rounding is the `1.5 * 2^23` addition, whose result carries `m` in its low
//!   mantissa bits, so the table index and the exponent come from its bits without a conversion.
//!   For callers that fold `8 log2 e` into their own coefficients (GELU), which costs no precision
//!   there and saves the reduction by ln 2. Inputs are clamped to [-126, 127].

use crate::simd::Simd;

const EXP_LO: f32 = -87.0;
const EXP_HI: f32 = 88.0;
const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// `e^r ~ 1 + r + E2 r^2 + ... + E6 r^6` on [-ln2/2, ln2/2] (minimax relative error 2.6e-9
/// before rounding to f32).
const E2: f32 = 0.500_000_06;
const E3: f32 = 0.166_663_66;
const E4: f32 = 4.166_477_5e-2;
const E5: f32 = 8.379_011e-3;
const E6: f32 = 1.406_124_1e-3;

/// The clamp of [`exp2_eighths_parts_k`]'s `y = 8x`: `2^(y/8)` stays a normal float.
const EXP2_8_LO: f32 = -126.0 * 8.0;
const EXP2_8_HI: f32 = 127.0 * 8.0;
/// `1.5 * 2^23`: adding it to `|y| < 2^22` rounds y to the nearest integer m (ties to even) and
/// leaves the sum's bit pattern equal to `0x4B40_0000 + m`.
const ROUND_MAGIC: f32 = 12_582_912.0;
/// `2^(f/8) ~ 1 + Q1 f + Q2 f^2 + Q3 f^3` on [-0.5, 0.5] (minimax relative error 1.8e-8 before
/// rounding to f32, 3.8e-8 after).
const Q1: f32 = 8.664_34e-2;
const Q2: f32 = 3.754_126_1e-3;
const Q3: f32 = 1.083_963e-4;
/// The bit patterns of `2^(j/8)` (f32, correctly rounded) for j = 0..8.
const EXP2_8THS_BITS: [u32; 8] = [
    0x3f80_0000,
    0x3f8b_95c2,
    0x3f98_37f0,
    0x3fa5_fed7,
    0x3fb5_04f3,
    0x3fc5_672a,
    0x3fd7_44fd,
    0x3fea_c0c7,
];

/// `e^x` lane-wise.
#[inline(always)]
pub fn exp<S: Simd>(s: S, x: S::V) -> S::V {
    let x = s.min(s.max(x, s.splat(EXP_LO)), s.splat(EXP_HI));
    let n = s.round(s.mul(x, s.splat(LOG2E)));
    let r = s.fma(n, s.splat(-LN2_HI), x);
    let r = s.fma(n, s.splat(-LN2_LO), r);
    let mut p = s.splat(E6);
    p = s.fma(p, r, s.splat(E5));
    p = s.fma(p, r, s.splat(E4));
    p = s.fma(p, r, s.splat(E3));
    p = s.fma(p, r, s.splat(E2));
    p = s.fma(p, r, s.splat(1.0));
    p = s.fma(p, r, s.splat(1.0));
    s.mul(p, s.pow2i(n))
}

/// `2^x` lane-wise.
#[inline(always)]
pub fn exp2<S: Simd>(s: S, x: S::V) -> S::V {
    let ([p], [scale]) = exp2_eighths_parts_k(s, [s.mul(x, s.splat(8.0))]);
    s.mul(p, scale)
}

/// `2^(y/8)` of K independent vectors, each as two factors `(p, scale)` with
/// `2^(y/8) = p * scale`, p in [0.95, 1.05], for callers that fuse the final product into their
/// next operation (`1 + 2^(y/8)` as one `fma(p, scale, 1)`). Inputs are clamped to
/// [-1008, 1016], so `scale` is a normal float. Evaluated step by step across all K (each step's
/// K operations are independent, so a core with a small scheduler still overlaps the K dependency
/// chains; one vector after the other, it can run out of window before the second starts).
#[inline(always)]
pub fn exp2_eighths_parts_k<S: Simd, const K: usize>(s: S, y: [S::V; K]) -> ([S::V; K], [S::V; K]) {
    // The shifted bits of t, `(0x4B40_0000 + m) << 20`, are `(floor(m/8) << 23) + (j << 20)` with
    // j = m mod 8: less `j << 20`, entry j added to them as an integer gives the bits of
    // `2^floor(m/8) * 2^(j/8)`.
    let table: [f32; 8] =
        std::array::from_fn(|j| f32::from_bits(EXP2_8THS_BITS[j] - ((j as u32) << 20)));
    // Loops, not closures, for the vector steps: a closure would not inherit the caller's
    // `#[target_feature]`.
    let (mut y, mut t, mut p) = (y, y, [s.splat(Q3); K]);
    for y in &mut y {
        *y = s.min(s.max(*y, s.splat(EXP2_8_LO)), s.splat(EXP2_8_HI));
    }
    // t = MAGIC + m; f = y - m, exact (m is t - MAGIC exactly, and |y - m| <= 0.5).
    for (t, y) in t.iter_mut().zip(&y) {
        *t = s.add(*y, s.splat(ROUND_MAGIC));
    }
    for k in 0..K {
        y[k] = s.sub(y[k], s.sub(t[k], s.splat(ROUND_MAGIC)));
    }
    for c in [Q2, Q1, 1.0] {
        for k in 0..K {
            p[k] = s.fma(p[k], y[k], s.splat(c));
        }
    }
    for t in &mut t {
        *t = s.add_bits(s.shl_bits::<20>(*t), s.lookup8(&table, *t));
    }
    (p, t)
}

/// `tanh(x) = 1 - 2 / (e^(2x) + 1)` lane-wise: absolute error below 3e-7 everywhere (a few ulp of 1) (relative
/// error grows near 0, where tanh(x) ~ x; GELU multiplies it by x, so that costs nothing there).
#[inline(always)]
pub fn tanh<S: Simd>(s: S, x: S::V) -> S::V {
    let e = exp(s, s.add(x, x));
    s.sub(s.splat(1.0), s.div(s.splat(2.0), s.add(e, s.splat(1.0))))
}

/// Scalar `e^x` with the same algorithm, for tails and scalar loops that must match vector lanes.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    exp(crate::simd::Scalar, x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::Scalar;

    // Relative error within 1.1e-7 (about 0.9 ulp); the unfused scalar token rounds each
    // multiply-add twice, which measures 1.24e-7, hence 1.3e-7.
    #[test]
    #[cfg_attr(miri, ignore = "a sweep of 130k points is too long to interpret")]
    fn exp_is_within_one_ulp_over_its_range() {
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = (x as f64).exp();
            let got = exp(Scalar, x) as f64;
            assert!(
                ((got - want) / want).abs() < 1.3e-7,
                "exp({x}) = {got}, want {want}"
            );
            x += 0.00137;
        }
        assert!(exp(Scalar, -1e4) < 2e-38 && exp(Scalar, 1e4).is_finite());
    }

    // Relative error within 2e-7: the polynomial's 3.8e-8, the roundings of the table entry
    // (<= 6e-8), of the polynomial's steps and of the final product (<= 6e-8 each, half an ulp
    // relative); the reduction y - round(y) is exact, so the error does not grow with |x|.
    // Measured 1.66e-7, the same on the unfused scalar token and on AVX2.
    #[test]
    #[cfg_attr(miri, ignore = "a sweep of 130k points is too long to interpret")]
    fn exp2_is_within_one_ulp_over_its_range() {
        let mut x = -126.0f32;
        while x < 127.0 {
            let want = (x as f64).exp2();
            let got = exp2(Scalar, x) as f64;
            assert!(
                ((got - want) / want).abs() < 2e-7,
                "exp2({x}) = {got}, want {want}"
            );
            let ([p], [scale]) = exp2_eighths_parts_k(Scalar, [8.0 * x]);
            assert_eq!(p * scale, got as f32);
            x += 0.00191;
        }
        assert!(exp2(Scalar, -1e4) <= 2f32.powi(-125) && exp2(Scalar, 1e4).is_finite());
    }

    /// The largest relative error of `exp2` on `s` over [-126, 127] and at the clamps, a vector
    /// at a time (so every lane of the wide tokens is checked).
    fn exp2_worst<S: Simd>(s: S) -> f64 {
        // Under Miri (`scripts/ub_check.sh`), which checks the loads and stores, a coarse sweep.
        let step = if cfg!(miri) { 1.91 } else { 0.00191 };
        let (mut worst, mut x) = (0.0f64, -126.0f32);
        let mut lanes = [0.0f32; crate::simd::MAX_LANES];
        while x < 127.0 {
            for (k, v) in lanes.iter_mut().enumerate() {
                *v = x + k as f32 * step;
            }
            let mut got = [0.0f32; crate::simd::MAX_LANES];
            // SAFETY: both arrays hold MAX_LANES >= S::LANES floats.
            unsafe { s.store(got.as_mut_ptr(), exp2(s, s.load(lanes.as_ptr()))) };
            for (&x, &got) in lanes.iter().zip(&got).take(S::LANES) {
                let want = (x.min(127.0) as f64).exp2();
                worst = worst.max(((got as f64 - want) / want).abs());
            }
            x += S::LANES as f32 * step;
        }
        // SAFETY: as above.
        let ends = unsafe {
            let mut e = [0.0f32; crate::simd::MAX_LANES];
            s.store(e.as_mut_ptr(), exp2(s, s.splat(-1e4)));
            let lo = e[0];
            s.store(e.as_mut_ptr(), exp2(s, s.splat(1e4)));
            (lo, e[0])
        };
        // The clamps' exact values 2^-126 and 2^127, as bit patterns: `powi`'s precision is
        // unspecified (Miri perturbs its result by an ulp or so, as a platform may).
        let (lo, hi) = (f32::from_bits(1 << 23), f32::from_bits(254 << 23));
        assert!(ends.0 == lo && ends.1 == hi, "{ends:?}");
        worst
    }

    // The same bound on every token this CPU has: the table lookup and the integer steps of the
    // scale are per-ISA code.
    #[test]
    fn exp2_is_within_its_bound_on_every_path() {
        assert!(exp2_worst(Scalar) < 2e-7);
        assert!(exp2_worst(crate::simd::Portable) < 2e-7);
        #[cfg(feature = "emulate-avx512")]
        assert!(exp2_worst(crate::simd::Emulated512) < 2e-7);
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                // SAFETY: AVX2 and FMA were just detected.
                assert!(exp2_worst(unsafe { crate::simd::Avx2::new_unchecked() }) < 2e-7);
            }
            if crate::isa::avx512_native() {
                // SAFETY: AVX-512F, AVX2 and FMA were just detected.
                assert!(exp2_worst(unsafe { crate::simd::Avx512::new_unchecked() }) < 2e-7);
            }
        }
    }

    // Every table index and both signs of m: each eighth from -2 to 2, exactly.
    #[test]
    fn exp2_is_exact_at_eighths() {
        for m in -16..=16 {
            let x = m as f32 / 8.0;
            let want = (x as f64).exp2();
            let got = exp2(Scalar, x) as f64;
            assert!(
                ((got - want) / want).abs() < 6e-8,
                "exp2({x}) = {got}, want {want}"
            );
        }
    }

    #[test]
    #[cfg_attr(miri, ignore = "a sweep of 5k points is too long to interpret")]
    fn tanh_absolute_error_is_small() {
        let mut x = -20.0f32;
        while x < 20.0 {
            let want = (x as f64).tanh();
            let got = tanh(Scalar, x) as f64;
            assert!((got - want).abs() < 3e-7, "tanh({x}) = {got}, want {want}");
            x += 0.00731;
        }
    }
}
