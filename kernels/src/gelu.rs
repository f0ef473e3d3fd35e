//! GELU in GPT-2's tanh form, forward and backward (llm.c's `gelu_forward`, `gelu_backward`):
//! `gelu(x) = 0.5 x (1 + tanh(u))`, `u = sqrt(2/pi) (x + 0.044715 x^3)`.
//!
//! Both directions evaluate it through one `e = exp(2u)` ([`crate::math::exp`], the same
//! exponential [`crate::math::tanh`] is built on), using
//! `0.5 (1 + tanh u) = e / (e + 1)` and `sech^2 u = 4 e / (e + 1)^2`. This is the same function as
//! `tanh(u) = 1 - 2 / (e + 1)` but without its cancellation: for negative x, where `1 + tanh u` is
//! tiny, the result keeps its relative precision.
//!
//! Both loops take four vectors per iteration: one vector's exp and division are a long chain of
//! dependent operations, and four independent chains keep the FMA pipes busy (GELU is the one
//! kernel here whose arithmetic, not memory, sets the pace on an AVX2 core).

use crate::dispatch::dispatch;
use crate::error::{check_len, ShapeError};
use crate::math::exp;
use crate::simd::Simd;

/// sqrt(2 / pi).
const SCALE: f32 = 0.797_884_6;
/// The cubic coefficient.
const CUBE: f32 = 0.044_715;

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

/// `e^(2u)` for GELU's tanh argument `u`.
#[inline(always)]
fn exp_2u<S: Simd>(s: S, x: S::V) -> S::V {
    let x2 = s.mul(x, x);
    let u2 = s.mul(
        s.mul(x, s.splat(2.0 * SCALE)),
        s.fma(x2, s.splat(CUBE), s.splat(1.0)),
    );
    exp(s, u2)
}

/// `gelu(x) = x * e / (e + 1)`.
#[inline(always)]
fn gelu_v<S: Simd>(s: S, x: S::V) -> S::V {
    let e = exp_2u(s, x);
    s.mul(x, s.div(e, s.add(e, s.splat(1.0))))
}

#[inline(always)]
fn gelu_fwd_generic<S: Simd>(s: S, out: &mut [f32], inp: &[f32]) {
    let n = out.len();
    assert!(inp.len() == n);
    let (o, x) = (out.as_mut_ptr(), inp.as_ptr());
    let mut i = 0;
    // SAFETY: every access is below `n`, the common length asserted above.
    unsafe {
        while i + 4 * S::LANES <= n {
            let l = S::LANES;
            let (a, b) = (s.load(x.add(i)), s.load(x.add(i + l)));
            let (c, d) = (s.load(x.add(i + 2 * l)), s.load(x.add(i + 3 * l)));
            let y = [gelu_v(s, a), gelu_v(s, b), gelu_v(s, c), gelu_v(s, d)];
            for (k, y) in y.into_iter().enumerate() {
                s.store(o.add(i + k * l), y);
            }
            i += 4 * l;
        }
        while i + S::LANES <= n {
            s.store(o.add(i), gelu_v(s, s.load(x.add(i))));
            i += S::LANES;
        }
        if i < n {
            let rest = n - i;
            s.store_partial(
                o.add(i),
                rest,
                gelu_v(s, s.load_partial(x.add(i), rest, 0.0)),
            );
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

/// `gelu'(x)`. With r = 1 / (e + 1): 0.5 (1 + tanh u) = e r, and the second term is
/// 0.5 x * 4 e r^2 * SCALE (1 + 3 CUBE x^2) = e r * (2 SCALE x r (1 + 3 CUBE x^2)).
#[inline(always)]
fn gelu_grad_v<S: Simd>(s: S, x: S::V) -> S::V {
    let one = s.splat(1.0);
    let e = exp_2u(s, x);
    let r = s.div(one, s.add(e, one));
    let sig = s.mul(e, r);
    let poly = s.fma(s.mul(x, x), s.splat(3.0 * CUBE), one);
    let t = s.mul(s.mul(s.mul(x, s.splat(2.0 * SCALE)), r), poly);
    s.fma(sig, t, sig)
}

// The per-vector helpers here and in the other kernels are `#[inline(always)]` functions, not
// closures: a closure is a function of its own that does not inherit the `#[target_feature]` of
// the dispatched entry point, so its intrinsics would not inline.
#[inline(always)]
fn gelu_bwd_generic<S: Simd>(s: S, dinp: &mut [f32], inp: &[f32], dout: &[f32]) {
    let n = dinp.len();
    assert!(inp.len() == n && dout.len() == n);
    let (dx, x, dy) = (dinp.as_mut_ptr(), inp.as_ptr(), dout.as_ptr());
    let mut i = 0;
    // SAFETY: every access is below `n`, the common length asserted above.
    unsafe {
        while i + 4 * S::LANES <= n {
            let l = S::LANES;
            let (a, b) = (s.load(x.add(i)), s.load(x.add(i + l)));
            let (c, d) = (s.load(x.add(i + 2 * l)), s.load(x.add(i + 3 * l)));
            let g = [
                gelu_grad_v(s, a),
                gelu_grad_v(s, b),
                gelu_grad_v(s, c),
                gelu_grad_v(s, d),
            ];
            for (k, g) in g.into_iter().enumerate() {
                let j = i + k * l;
                s.store(dx.add(j), s.fma(g, s.load(dy.add(j)), s.load(dx.add(j))));
            }
            i += 4 * l;
        }
        while i + S::LANES <= n {
            let d = s.fma(
                gelu_grad_v(s, s.load(x.add(i))),
                s.load(dy.add(i)),
                s.load(dx.add(i)),
            );
            s.store(dx.add(i), d);
            i += S::LANES;
        }
        if i < n {
            let rest = n - i;
            let d = s.fma(
                gelu_grad_v(s, s.load_partial(x.add(i), rest, 0.0)),
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
