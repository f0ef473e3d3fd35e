//! Attention of one query over a key/value cache: the inner step of decoding.
//!
//! A decode step has one new position per sequence and head; its query attends to every cached
//! key of that head, stored contiguously as (t, HS) rows, as are the values. There is no causal
//! tile to skip and no query block to share the keys with, so this is not the tiled kernel of
//! [`crate::attention`] but three passes over the head's cache:
//!
//! 1. `scores[j] = scale · q·k_j`, four keys at a time (four independent FMA chains, each reduced
//!    across lanes at the end),
//! 2. `p_j = exp(scores[j] − max)` in vectors, and their sum,
//! 3. `out = (Σ_j p_j v_j) / Σ_j p_j`, with up to [`OUT_VECS`] vectors of `out` held in registers
//!    while the values stream past, once per chunk of columns (once for a 64-float head on both
//!    x86 paths).
//!
//! `exp` is [`crate::math::exp`].

use crate::dispatch::dispatch;
use crate::error::{check_len, elems, ShapeError};
use crate::math::exp;
use crate::simd::Simd;

/// Keys whose dot products with the query run side by side in pass 1.
const KEYS: usize = 4;

/// Vectors of `out` accumulated at once in pass 3 (eight accumulators, a broadcast probability
/// and the value loads fit AVX2's sixteen registers).
pub const OUT_VECS: usize = 8;

/// The next width down: a 64-float head is four vectors of AVX-512, one sweep of the values
/// rather than four one-vector sweeps, each a single dependent chain of FMAs.
const HALF_VECS: usize = OUT_VECS / 2;

/// `out = softmax(scale · K q) · V` over the `t = scores.len()` cached positions.
///
/// out (HS), q (HS), keys (t, HS), values (t, HS), scores (t) scratch (left holding the
/// probabilities, unnormalised). With `t = 0`, `out` is zero.
pub fn attend_cached(
    out: &mut [f32],
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    scale: f32,
    scores: &mut [f32],
) -> Result<(), ShapeError> {
    const K: &str = "attend_cached";
    let (hs, t) = (out.len(), scores.len());
    check_len(K, "q", q.len(), hs, "HS")?;
    check_len(K, "keys", keys.len(), elems(&[t, hs]), "t * HS")?;
    check_len(K, "values", values.len(), elems(&[t, hs]), "t * HS")?;
    attend_cached_unchecked(
        out,
        &q[..hs],
        &keys[..t * hs],
        &values[..t * hs],
        scale,
        scores,
    );
    Ok(())
}

dispatch! {
    /// [`attend_cached`] without the checks: `q` has `out.len()` floats, `keys` and `values`
    /// `scores.len() * out.len()`.
    pub fn attend_cached_unchecked(out: &mut [f32], q: &[f32], keys: &[f32], values: &[f32], scale: f32, scores: &mut [f32]) = attend_generic;
}

#[inline(always)]
fn attend_generic<S: Simd>(
    s: S,
    out: &mut [f32],
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    scale: f32,
    scores: &mut [f32],
) {
    let (hs, t) = (out.len(), scores.len());
    assert!(q.len() == hs && keys.len() == elems(&[t, hs]) && values.len() == elems(&[t, hs]));
    if t == 0 {
        out.fill(0.0);
        return;
    }
    let l = S::LANES;
    let (qp, kp, vp) = (q.as_ptr(), keys.as_ptr(), values.as_ptr());

    // Pass 1: scores, KEYS keys at a time, then one at a time.
    let mut j = 0;
    // SAFETY: keys j..j+N < t have HS floats each from j·HS; q has HS.
    unsafe {
        while j + KEYS <= t {
            score_keys::<S, KEYS>(s, qp, kp.add(j * hs), hs, scale, &mut scores[j..j + KEYS]);
            j += KEYS;
        }
        while j < t {
            score_keys::<S, 1>(s, qp, kp.add(j * hs), hs, scale, &mut scores[j..j + 1]);
            j += 1;
        }
    }

    // Pass 2: probabilities and their sum.
    let max = scores.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    let (mut sum, mut j) = (s.zero(), 0);
    let sp = scores.as_mut_ptr();
    while j < t {
        let width = (t - j).min(l);
        // SAFETY: scores j..j+width are in bounds.
        unsafe {
            let p = exp(s, s.sub(s.load_upto(sp.add(j), width), s.splat(max)));
            s.store_upto(sp.add(j), width, p);
            // Past `width` the lanes of `p` hold exp(-max), not zero: sum what was stored.
            sum = s.add(sum, s.load_upto(sp.add(j), width));
        }
        j += width;
    }
    let inv = s.splat(1.0 / s.reduce_add(sum));

    // Pass 3: out = Σ p_j v_j / Σ p_j: OUT_VECS full vectors of out at a time, then HALF_VECS,
    // then the rest one vector (the last one partial) at a time.
    let (op, mut c) = (out.as_mut_ptr(), 0);
    // SAFETY: every call covers columns c..c+width ≤ HS of out and of each value row.
    unsafe {
        while c + OUT_VECS * l <= hs {
            weigh_values::<S, OUT_VECS>(s, scores, vp.add(c), hs, l, inv, op.add(c));
            c += OUT_VECS * l;
        }
        if c + HALF_VECS * l <= hs {
            weigh_values::<S, HALF_VECS>(s, scores, vp.add(c), hs, l, inv, op.add(c));
            c += HALF_VECS * l;
        }
        while c < hs {
            let width = (hs - c).min(l);
            weigh_values::<S, 1>(s, scores, vp.add(c), hs, width, inv, op.add(c));
            c += width;
        }
    }
}

/// `scores[r] = scale · q·k_r` for the `N` keys at `k` (row stride HS).
///
/// # Safety
/// `q` must be valid for reading `hs` floats, `k` for `N · hs`.
#[inline(always)]
unsafe fn score_keys<S: Simd, const N: usize>(
    s: S,
    q: *const f32,
    k: *const f32,
    hs: usize,
    scale: f32,
    scores: &mut [f32],
) {
    let mut acc = [s.zero(); N];
    let mut c = 0;
    while c < hs {
        let width = (hs - c).min(S::LANES);
        // SAFETY: columns c..c+width ≤ HS of q and of each key row.
        unsafe {
            let qv = s.load_upto(q.add(c), width);
            for (r, a) in acc.iter_mut().enumerate() {
                *a = s.fma(qv, s.load_upto(k.add(r * hs + c), width), *a);
            }
        }
        c += width;
    }
    for (o, a) in scores.iter_mut().zip(acc) {
        *o = s.reduce_add(a) * scale;
    }
}

/// `out[0..]` = `inv · Σ_j p_j v_j` over `NV` vectors of columns starting at `v` (value j's
/// columns at `v + j·HS`), each vector full except that the last has `last` lanes.
///
/// # Safety
/// `v` must be valid for reading `(NV - 1)·LANES + last` floats at each `j·hs`, `j <
/// p.len()`, and `out` for writing as many.
#[inline(always)]
unsafe fn weigh_values<S: Simd, const NV: usize>(
    s: S,
    p: &[f32],
    v: *const f32,
    hs: usize,
    last: usize,
    inv: S::V,
    out: *mut f32,
) {
    let l = S::LANES;
    let mut acc = [s.zero(); NV];
    for (j, &pj) in p.iter().enumerate() {
        let pv = s.splat(pj);
        let row = v.wrapping_add(j * hs);
        for (i, a) in acc.iter_mut().enumerate() {
            let width = if i + 1 == NV { last } else { l };
            // SAFETY: the caller's promise for vector i of value j.
            *a = s.fma(pv, unsafe { s.load_upto(row.add(i * l), width) }, *a);
        }
    }
    for (i, a) in acc.iter().enumerate() {
        let width = if i + 1 == NV { last } else { l };
        // SAFETY: the caller's promise.
        unsafe { s.store_upto(out.add(i * l), width, s.mul(*a, inv)) };
    }
}

/// The reference, in f64.
pub mod oracle {
    /// See [`super::attend_cached`].
    pub fn attend_cached(
        out: &mut [f32],
        q: &[f32],
        keys: &[f32],
        values: &[f32],
        scale: f32,
        t: usize,
    ) {
        let hs = out.len();
        let s: Vec<f64> = (0..t)
            .map(|j| {
                let k = &keys[j * hs..j * hs + hs];
                scale as f64
                    * q.iter()
                        .zip(k)
                        .map(|(&a, &b)| a as f64 * b as f64)
                        .sum::<f64>()
            })
            .collect();
        let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let p: Vec<f64> = s.iter().map(|&x| (x - max).exp()).collect();
        let sum: f64 = p.iter().sum();
        for (c, o) in out.iter_mut().enumerate() {
            let acc: f64 = (0..t).map(|j| p[j] * values[j * hs + c] as f64).sum();
            *o = if t == 0 { 0.0 } else { (acc / sum) as f32 };
        }
    }
}
