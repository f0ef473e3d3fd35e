//! Transcendental functions on vectors, written once over [`Simd`].
//!
//! `exp` is Cephes' `expf` (range reduction by ln 2 in two parts, a degree-6 polynomial): within
//! 2 ulp of the true value over its range. Inputs are clamped to [-87, 88] so that `2^n` stays a
//! normal float: below -87 it returns exp(-87) ~ 1.6e-38 instead of a smaller number, which no
//! kernel here can tell from zero (softmax sums are >= 1).

use crate::simd::Simd;

const EXP_LO: f32 = -87.0;
const EXP_HI: f32 = 88.0;
const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
const P0: f32 = 1.987_569_1e-4;
const P1: f32 = 1.398_199_9e-3;
const P2: f32 = 8.333_452e-3;
const P3: f32 = 4.166_579_6e-2;
const P4: f32 = 1.666_666_5e-1;
const P5: f32 = 5.000_000_1e-1;

/// `e^x` lane-wise.
#[inline(always)]
pub fn exp<S: Simd>(s: S, x: S::V) -> S::V {
    let x = s.min(s.max(x, s.splat(EXP_LO)), s.splat(EXP_HI));
    let n = s.round(s.mul(x, s.splat(LOG2E)));
    let r = s.fma(n, s.splat(-LN2_HI), x);
    let r = s.fma(n, s.splat(-LN2_LO), r);
    let mut p = s.splat(P0);
    p = s.fma(p, r, s.splat(P1));
    p = s.fma(p, r, s.splat(P2));
    p = s.fma(p, r, s.splat(P3));
    p = s.fma(p, r, s.splat(P4));
    p = s.fma(p, r, s.splat(P5));
    let r2 = s.mul(r, r);
    let y = s.add(s.fma(p, r2, r), s.splat(1.0));
    s.mul(y, s.pow2i(n))
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

    #[test]
    fn exp_is_within_two_ulp_over_its_range() {
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = (x as f64).exp();
            let got = exp(Scalar, x) as f64;
            assert!(
                ((got - want) / want).abs() < 2.5e-7,
                "exp({x}) = {got}, want {want}"
            );
            x += 0.0137;
        }
        assert!(exp(Scalar, -1e4) < 2e-38 && exp(Scalar, 1e4).is_finite());
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
