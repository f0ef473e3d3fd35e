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
//! - [`exp2`]: `2^x`, reduced exactly (f = x - round(x) in [-0.5, 0.5]), then a degree-5
//!   polynomial: relative error below 2.2e-7 (< 2 ulp). For callers that fold `log2 e` into their
//!   own coefficients (GELU), which costs no precision there and saves the reduction by ln 2.
//!   Inputs are clamped to [-126, 127].

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

const EXP2_LO: f32 = -126.0;
const EXP2_HI: f32 = 127.0;
/// `2^f ~ P0 + P1 f + ... + P5 f^5` on [-0.5, 0.5] (minimax relative error 7.5e-8 before rounding
/// to f32).
const P0: f32 = 1.000_000_1;
const P1: f32 = 0.693_146_94;
const P2: f32 = 0.240_221_2;
const P3: f32 = 5.550_713e-2;
const P4: f32 = 9.675_541e-3;
const P5: f32 = 1.327_647_2e-3;

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
    let ([p], [scale]) = exp2_parts_k(s, [x]);
    s.mul(p, scale)
}

/// `2^x` of K independent vectors, each as two factors `(p, 2^n)` with `2^x = p * 2^n`, p in
/// [0.7, 1.42], for callers that fuse the final product into their next operation (`1 + 2^x` as
/// one `fma(p, 2^n, 1)`). Evaluated step by step across all K (each step's K
/// operations are independent, so a core with a small scheduler still overlaps the K dependency
/// chains; one vector after the other, it can run out of window before the second starts).
#[inline(always)]
pub fn exp2_parts_k<S: Simd, const K: usize>(s: S, x: [S::V; K]) -> ([S::V; K], [S::V; K]) {
    // Loops, not closures: a closure would not inherit the caller's `#[target_feature]`.
    let (mut x, mut n, mut p) = (x, x, [s.splat(P5); K]);
    for x in &mut x {
        *x = s.min(s.max(*x, s.splat(EXP2_LO)), s.splat(EXP2_HI));
    }
    for (n, x) in n.iter_mut().zip(&x) {
        *n = s.round(*x);
    }
    for k in 0..K {
        x[k] = s.sub(x[k], n[k]);
    }
    for c in [P4, P3, P2, P1, P0] {
        for k in 0..K {
            p[k] = s.fma(p[k], x[k], s.splat(c));
        }
    }
    for n in &mut n {
        *n = s.pow2i(*n);
    }
    (p, n)
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

    // Relative error within 2.2e-7 (the degree-5 polynomial's 7.5e-8 plus its rounding); the
    // reduction x - round(x) is exact, so the error does not grow with |x|. The unfused scalar
    // token rounds each multiply-add twice, which measures 2.34e-7, hence 2.5e-7.
    #[test]
    fn exp2_is_within_two_ulp_over_its_range() {
        let mut x = -126.0f32;
        while x < 127.0 {
            let want = (x as f64).exp2();
            let got = exp2(Scalar, x) as f64;
            assert!(
                ((got - want) / want).abs() < 2.5e-7,
                "exp2({x}) = {got}, want {want}"
            );
            let ([p], [scale]) = exp2_parts_k(Scalar, [x]);
            assert_eq!(p * scale, got as f32);
            x += 0.00191;
        }
        assert!(exp2(Scalar, -1e4) <= 2f32.powi(-125) && exp2(Scalar, 1e4).is_finite());
    }

    #[test]
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
