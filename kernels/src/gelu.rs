//! GELU in GPT-2's tanh form, forward and backward (llm.c's `gelu_forward`, `gelu_backward`):
//! `gelu(x) = 0.5 x (1 + tanh(u))`, `u = sqrt(2/pi) (x + 0.044715 x^3)`.
//!
//! Both directions go through one `e = e^(-2u)`, so that `0.5 (1 + tanh u) = 1 / (1 + e)` (the
//! logistic of 2u) and `gelu(x) = x / (1 + e)`: one exponential and one division, and no
//! cancellation where `1 + tanh u` is tiny (negative x), so the result keeps its relative precision
//! there. `e` is computed as `2^z` with `z = -2u log2(e) = x (Z1 + Z3 x^2)`: the `log2 e` is folded
//! into the cubic's coefficients, so [`crate::math::exp2`] needs no reduction by ln 2.
//!
//! Both loops take two vectors per iteration and advance them in lockstep, one step of the chain
//! for both before the next: one vector's exp and division are a long chain of dependent
//! operations, and a core with a small scheduler overlaps two chains only when their operations
//! come interleaved (one, three or four vectors per iteration measured slower on an AVX2 core).

use crate::dispatch::dispatch;
use crate::error::{check_len, ShapeError};
use crate::math::exp2_parts_k;
use crate::simd::Simd;

// With S = sqrt(2 / pi) and the cubic coefficient K = 0.044715, u = S (x + K x^3):
/// `-2 S log2(e)`: `z = x (Z1 + Z3 x^2) = -2u log2(e)`.
const Z1: f32 = -2.302_208_2;
/// `-2 S K log2(e)`.
const Z3: f32 = -0.102_943_24;
/// `2 S`: `d(2u)/dx = Q1 + Q3 x^2`.
const Q1: f32 = 1.595_769_2;
/// `6 S K`.
const Q3: f32 = 0.214_064_45;

/// `out[i] = gelu(inp[i])` for `i < n`.
///
/// out (N), inp (N).
pub fn gelu_fwd(out: &mut [f32], inp: &[f32], n: usize) -> Result<(), ShapeError> {
    const K: &str = "gelu_fwd";
    check_len(K, "out", out.len(), n, "N")?;
    check_len(K, "inp", inp.len(), n, "N")?;
    gelu_fwd_unchecked(&mut out[..n], &inp[..n]);
    Ok(())
}

dispatch! {
    /// [`gelu_fwd`] without the checks: both slices must have the same length.
    pub fn gelu_fwd_unchecked(out: &mut [f32], inp: &[f32]) = gelu_fwd_generic;
}

/// Vectors per iteration of the main loops.
const STEP: usize = 2;

/// `gelu(x) = x / (1 + e^(-2u))` for K vectors, step by step across them.
#[inline(always)]
fn gelu_k<S: Simd, const K: usize>(s: S, x: [S::V; K]) -> [S::V; K] {
    let mut z = x;
    for k in 0..K {
        let x2 = s.mul(x[k], x[k]);
        z[k] = s.mul(x[k], s.fma(x2, s.splat(Z3), s.splat(Z1)));
    }
    let (p, scale) = exp2_parts_k(s, z);
    for k in 0..K {
        z[k] = s.div(x[k], s.fma(p[k], scale[k], s.splat(1.0)));
    }
    z
}

#[inline(always)]
fn gelu_fwd_generic<S: Simd>(s: S, out: &mut [f32], inp: &[f32]) {
    let n = out.len();
    assert!(inp.len() == n);
    let (o, x, l) = (out.as_mut_ptr(), inp.as_ptr(), S::LANES);
    let mut i = 0;
    // SAFETY: every access is below `n`, the common length asserted above.
    unsafe {
        while i + STEP * l <= n {
            let mut v = [s.zero(); STEP];
            for (k, v) in v.iter_mut().enumerate() {
                *v = s.load(x.add(i + k * l));
            }
            for (k, y) in gelu_k(s, v).into_iter().enumerate() {
                s.store(o.add(i + k * l), y);
            }
            i += STEP * l;
        }
        while i + l <= n {
            let [y] = gelu_k(s, [s.load(x.add(i))]);
            s.store(o.add(i), y);
            i += l;
        }
        if i < n {
            let rest = n - i;
            let [y] = gelu_k(s, [s.load_partial(x.add(i), rest, 0.0)]);
            s.store_partial(o.add(i), rest, y);
        }
    }
}

/// `dinp[i] += dout[i] * gelu'(inp[i])` for `i < n`, where
/// `gelu'(x) = 0.5 (1 + tanh u) + 0.5 x sech^2(u) sqrt(2/pi) (1 + 3 * 0.044715 x^2)`.
///
/// dinp (N), inp (N), dout (N).
pub fn gelu_bwd(dinp: &mut [f32], inp: &[f32], dout: &[f32], n: usize) -> Result<(), ShapeError> {
    const K: &str = "gelu_bwd";
    check_len(K, "dinp", dinp.len(), n, "N")?;
    check_len(K, "inp", inp.len(), n, "N")?;
    check_len(K, "dout", dout.len(), n, "N")?;
    gelu_bwd_unchecked(&mut dinp[..n], &inp[..n], &dout[..n]);
    Ok(())
}

dispatch! {
    /// [`gelu_bwd`] without the checks: all three slices must have the same length.
    pub fn gelu_bwd_unchecked(dinp: &mut [f32], inp: &[f32], dout: &[f32]) = gelu_bwd_generic;
}

/// `gelu'(x)` for K vectors. With e = e^(-2u) and r = 1 / (1 + e) (the logistic of 2u, whose
/// derivative is r (1 - r) = r (e r)): gelu'(x) = r + x r (e r) d(2u)/dx. The product is taken as
/// (r x q) (e r) so that no factor overflows: e r <= 1 even where e is huge (x << 0).
#[inline(always)]
fn gelu_grad_k<S: Simd, const K: usize>(s: S, x: [S::V; K]) -> [S::V; K] {
    let (mut x2, mut xq) = (x, x);
    for k in 0..K {
        x2[k] = s.mul(x[k], x[k]);
    }
    let mut z = x;
    for k in 0..K {
        z[k] = s.mul(x[k], s.fma(x2[k], s.splat(Z3), s.splat(Z1)));
    }
    let (p, scale) = exp2_parts_k(s, z);
    for k in 0..K {
        xq[k] = s.mul(x[k], s.fma(x2[k], s.splat(Q3), s.splat(Q1)));
    }
    let mut r = z;
    for k in 0..K {
        r[k] = s.div(s.splat(1.0), s.fma(p[k], scale[k], s.splat(1.0)));
    }
    for k in 0..K {
        let er = s.mul(s.mul(p[k], scale[k]), r[k]);
        z[k] = s.fma(s.mul(r[k], xq[k]), er, r[k]);
    }
    z
}

// The per-vector helpers here and in the other kernels are `#[inline(always)]` functions, not
// closures: a closure is a function of its own that does not inherit the `#[target_feature]` of
// the dispatched entry point, so its intrinsics would not inline.
#[inline(always)]
fn gelu_bwd_generic<S: Simd>(s: S, dinp: &mut [f32], inp: &[f32], dout: &[f32]) {
    let n = dinp.len();
    assert!(inp.len() == n && dout.len() == n);
    let (dx, x, dy, l) = (dinp.as_mut_ptr(), inp.as_ptr(), dout.as_ptr(), S::LANES);
    let mut i = 0;
    // SAFETY: every access is below `n`, the common length asserted above.
    unsafe {
        while i + STEP * l <= n {
            let mut v = [s.zero(); STEP];
            for (k, v) in v.iter_mut().enumerate() {
                *v = s.load(x.add(i + k * l));
            }
            for (k, g) in gelu_grad_k(s, v).into_iter().enumerate() {
                let j = i + k * l;
                s.store(dx.add(j), s.fma(g, s.load(dy.add(j)), s.load(dx.add(j))));
            }
            i += STEP * l;
        }
        while i + l <= n {
            let [g] = gelu_grad_k(s, [s.load(x.add(i))]);
            s.store(dx.add(i), s.fma(g, s.load(dy.add(i)), s.load(dx.add(i))));
            i += l;
        }
        if i < n {
            let rest = n - i;
            let [g] = gelu_grad_k(s, [s.load_partial(x.add(i), rest, 0.0)]);
            let d = s.fma(
                g,
                s.load_partial(dy.add(i), rest, 0.0),
                s.load_partial(dx.add(i), rest, 0.0),
            );
            s.store_partial(dx.add(i), rest, d);
        }
    }
}

/// The reference, in f64. `0.5 (1 + tanh u)` is written `1 / (1 + e^(-2u))`, its exact equal,
/// because `1 + tanh u` cancels for u < -19 even in f64.
pub mod oracle {
    const SCALE: f64 = 0.797_884_560_802_865_4; // sqrt(2 / pi)
    const CUBE: f64 = 0.044715;

    /// `0.5 (1 + tanh u)` for GELU's `u`.
    fn half_one_plus_tanh(x: f64) -> f64 {
        let u = SCALE * (x + CUBE * x * x * x);
        1.0 / (1.0 + (-2.0 * u).exp())
    }

    /// `gelu(x)` in f64.
    pub fn gelu(x: f64) -> f64 {
        x * half_one_plus_tanh(x)
    }

    /// `gelu'(x)` in f64.
    pub fn gelu_grad(x: f64) -> f64 {
        let u = SCALE * (x + CUBE * x * x * x);
        let sech = 1.0 / u.cosh();
        half_one_plus_tanh(x) + 0.5 * x * sech * sech * SCALE * (1.0 + 3.0 * CUBE * x * x)
    }

    /// `out[i] = gelu(inp[i])`; out (N), inp (N).
    pub fn gelu_fwd(out: &mut [f32], inp: &[f32]) {
        for (o, &x) in out.iter_mut().zip(inp) {
            *o = gelu(x as f64) as f32;
        }
    }

    /// `dinp[i] += dout[i] * gelu'(inp[i])`; dinp (N), inp (N), dout (N).
    pub fn gelu_bwd(dinp: &mut [f32], inp: &[f32], dout: &[f32]) {
        for ((d, &x), &dy) in dinp.iter_mut().zip(inp).zip(dout) {
            *d = (*d as f64 + gelu_grad(x as f64) * dy as f64) as f32;
        }
    }
}
