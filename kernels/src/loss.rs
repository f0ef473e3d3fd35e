//! Fused softmax + cross-entropy over the LM head's logits, forward and backward, without a
//! second (N, V) buffer.
//!
//! Shapes: N rows (B·T positions), V classes, Vp ≥ V the row stride (llm.c pads the vocabulary,
//! e.g. 50257 to 50304; the pad columns are never read and the backward writes them as 0).
//! - `logits` (N, Vp), `targets` (N) in 0..V, `losses` (N), `dloss` (N): d(loss)/d(losses[n]),
//!   e.g. 1/N everywhere for a mean.
//! - forward: `losses[n] = −log softmax(logits[n, ..V])[targets[n]]`.
//! - backward: `dlogits[n, j] = (softmax(logits[n])[j] − [j = targets[n]]) · dloss[n]`, overwritten.
//!
//! Each row takes one pass for its statistics (a running max and a sum of exponentials rescaled to
//! it, per lane, in blocks of four vectors so that the rescaling costs a quarter exp per element),
//! and the backward one more pass that writes the gradient over the row while it is still in
//! cache. [`softmax_xent_fwd_bwd_inplace`] does both for the training step: the loss and, in place
//! of the logits, their gradient, reading the logits from memory once.

use crate::dispatch::dispatch;
use crate::error::{check_len, ShapeError};
use crate::math::exp;
use crate::simd::Simd;

const KERNEL_FWD: &str = "softmax_xent_fwd";
const KERNEL_BWD: &str = "softmax_xent_bwd";
const KERNEL_FWD_BWD: &str = "softmax_xent_fwd_bwd_inplace";

fn check_common(
    kernel: &'static str,
    logits_len: usize,
    targets: &[u32],
    n: usize,
    v: usize,
    vp: usize,
) -> Result<(), ShapeError> {
    if n > 0 && (v == 0 || vp < v) {
        return Err(ShapeError {
            kernel,
            detail: format!("need 1 <= V <= Vp, got V = {v}, Vp = {vp}"),
        });
    }
    check_len(kernel, "logits", logits_len, n * vp, "N*Vp")?;
    check_len(kernel, "targets", targets.len(), n, "N")?;
    if let Some((row, &t)) = targets[..n]
        .iter()
        .enumerate()
        .find(|&(_, &t)| t as usize >= v)
    {
        return Err(ShapeError {
            kernel,
            detail: format!("row {row}: target {t} is out of range for V = {v}"),
        });
    }
    Ok(())
}

/// `losses[n] = −log softmax(logits[n, ..v])[targets[n]]` for n < `n`; `logits` (N, Vp).
pub fn softmax_xent_fwd(
    losses: &mut [f32],
    logits: &[f32],
    targets: &[u32],
    n: usize,
    v: usize,
    vp: usize,
) -> Result<(), ShapeError> {
    check_common(KERNEL_FWD, logits.len(), targets, n, v, vp)?;
    check_len(KERNEL_FWD, "losses", losses.len(), n, "N")?;
    softmax_xent_fwd_unchecked(&mut losses[..n], &logits[..n * vp], &targets[..n], v, vp);
    Ok(())
}

/// `dlogits` (N, Vp) = (softmax(logits) − onehot(targets))·dloss per row, pad columns 0.
pub fn softmax_xent_bwd(
    dlogits: &mut [f32],
    logits: &[f32],
    targets: &[u32],
    dloss: &[f32],
    n: usize,
    v: usize,
    vp: usize,
) -> Result<(), ShapeError> {
    check_common(KERNEL_BWD, logits.len(), targets, n, v, vp)?;
    check_len(KERNEL_BWD, "dlogits", dlogits.len(), n * vp, "N*Vp")?;
    check_len(KERNEL_BWD, "dloss", dloss.len(), n, "N")?;
    softmax_xent_bwd_unchecked(
        &mut dlogits[..n * vp],
        &logits[..n * vp],
        &targets[..n],
        &dloss[..n],
        v,
        vp,
    );
    Ok(())
}

/// [`softmax_xent_bwd`] writing the gradient over the logits it reads.
pub fn softmax_xent_bwd_inplace(
    logits: &mut [f32],
    targets: &[u32],
    dloss: &[f32],
    n: usize,
    v: usize,
    vp: usize,
) -> Result<(), ShapeError> {
    check_common(KERNEL_BWD, logits.len(), targets, n, v, vp)?;
    check_len(KERNEL_BWD, "dloss", dloss.len(), n, "N")?;
    softmax_xent_bwd_inplace_unchecked(&mut logits[..n * vp], &targets[..n], &dloss[..n], v, vp);
    Ok(())
}

/// The training step's call: `losses` as [`softmax_xent_fwd`], then the logits overwritten by
/// their gradient as [`softmax_xent_bwd`], row by row while each row is in cache.
pub fn softmax_xent_fwd_bwd_inplace(
    logits: &mut [f32],
    losses: &mut [f32],
    targets: &[u32],
    dloss: &[f32],
    n: usize,
    v: usize,
    vp: usize,
) -> Result<(), ShapeError> {
    check_common(KERNEL_FWD_BWD, logits.len(), targets, n, v, vp)?;
    check_len(KERNEL_FWD_BWD, "losses", losses.len(), n, "N")?;
    check_len(KERNEL_FWD_BWD, "dloss", dloss.len(), n, "N")?;
    softmax_xent_fwd_bwd_inplace_unchecked(
        &mut logits[..n * vp],
        &mut losses[..n],
        &targets[..n],
        &dloss[..n],
        v,
        vp,
    );
    Ok(())
}

dispatch! {
    /// [`softmax_xent_fwd`] without the `Result`: N = `losses.len()`; panics on a short slice or a
    /// target ≥ V.
    pub fn softmax_xent_fwd_unchecked(
        losses: &mut [f32],
        logits: &[f32],
        targets: &[u32],
        v: usize,
        vp: usize,
    ) = fwd_generic;
}

dispatch! {
    /// [`softmax_xent_bwd`] without the `Result`: N = `targets.len()`; panics on a short slice or
    /// a target ≥ V.
    pub fn softmax_xent_bwd_unchecked(
        dlogits: &mut [f32],
        logits: &[f32],
        targets: &[u32],
        dloss: &[f32],
        v: usize,
        vp: usize,
    ) = bwd_generic;
}

dispatch! {
    /// [`softmax_xent_bwd_inplace`] without the `Result`: N = `targets.len()`; panics on a short
    /// slice or a target ≥ V.
    pub fn softmax_xent_bwd_inplace_unchecked(
        logits: &mut [f32],
        targets: &[u32],
        dloss: &[f32],
        v: usize,
        vp: usize,
    ) = bwd_inplace_generic;
}

dispatch! {
    /// [`softmax_xent_fwd_bwd_inplace`] without the `Result`: N = `targets.len()`; panics on a
    /// short slice or a target ≥ V.
    pub fn softmax_xent_fwd_bwd_inplace_unchecked(
        logits: &mut [f32],
        losses: &mut [f32],
        targets: &[u32],
        dloss: &[f32],
        v: usize,
        vp: usize,
    ) = fwd_bwd_inplace_generic;
}

/// Vectors per block of the statistics pass.
const U: usize = 4;
/// The lanes past the row's end in its last partial vector. Finite, so that no lane ever computes
/// −∞ − (−∞); each such lane adds exp's clamp (~1e-38) to a sum that is at least 1: nothing.
const PAD: f32 = -1e30;
/// Blocks per partial sum of the statistics pass.
const FOLD: usize = 64;

/// The row's max `m` and `Σ_j exp(x_j − m)` over its `v` floats, in one pass.
///
/// # Safety
/// `x` must be valid for `v >= 1` reads.
#[inline(always)]
unsafe fn row_stats<S: Simd>(s: S, x: *const f32, v: usize) -> (f32, f32) {
    let l = S::LANES;
    // Per lane: the running max and the sum of exp(x − max) over the lane's elements so far.
    let mut m = s.splat(f32::NEG_INFINITY);
    let mut sum = [s.zero(); U];
    // Every FOLD blocks the U sums move into `outer`, so that no accumulator adds up more than
    // a few hundred terms (f32 rounding grows with the count; the scalar path has one lane).
    let mut outer = s.zero();
    let mut blocks = 0;
    let mut j = 0;
    // SAFETY: all reads below are at j + width <= v.
    unsafe {
        while j + U * l <= v {
            let mut xs = [s.zero(); U];
            for (u, xu) in xs.iter_mut().enumerate() {
                *xu = s.load(x.add(j + u * l));
            }
            let bm = s.max(s.max(xs[0], xs[1]), s.max(xs[2], xs[3]));
            let m_new = s.max(m, bm);
            // exp(−∞ − finite) is exp's clamp (~1e-38) times a zero sum: 0.
            let c = exp(s, s.sub(m, m_new));
            for (su, &xu) in sum.iter_mut().zip(&xs) {
                *su = s.fma(*su, c, exp(s, s.sub(xu, m_new)));
            }
            outer = s.mul(outer, c);
            m = m_new;
            j += U * l;
            blocks += 1;
            if blocks % FOLD == 0 {
                outer = s.add(outer, s.add(s.add(sum[0], sum[1]), s.add(sum[2], sum[3])));
                sum = [s.zero(); U];
            }
        }
        while j < v {
            let x1 = if j + l <= v {
                s.load(x.add(j))
            } else {
                s.load_partial(x.add(j), v - j, PAD)
            };
            let m_new = s.max(m, x1);
            let c = exp(s, s.sub(m, m_new));
            sum[0] = s.fma(sum[0], c, exp(s, s.sub(x1, m_new)));
            for w in sum.iter_mut().skip(1) {
                *w = s.mul(*w, c);
            }
            outer = s.mul(outer, c);
            m = m_new;
            j += l;
        }
    }
    // Every lane has been loaded at least once (v >= 1), so every lane's max is finite.
    let total = s.add(outer, s.add(s.add(sum[0], sum[1]), s.add(sum[2], sum[3])));
    let mx = s.reduce_max(m);
    let z = s.reduce_add(s.mul(total, exp(s, s.sub(m, s.splat(mx)))));
    (mx, z)
}

/// `dst[j] = exp(x[j] − m)·f` for j < v, then `dst[t] −= dl`, and `dst[v..vp] = 0`. `dst` may be
/// `x` itself: each vector is read before it is written.
///
/// # Safety
/// `x` must be valid for `v` reads, `dst` for `vp` writes, `t < v`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn grad_row<S: Simd>(
    s: S,
    dst: *mut f32,
    x: *const f32,
    v: usize,
    vp: usize,
    m: f32,
    f: f32,
    t: usize,
    dl: f32,
) {
    let l = S::LANES;
    let (mv, fv) = (s.splat(m), s.splat(f));
    let mut j = 0;
    // SAFETY: reads are below v, writes below vp, per the caller's contract.
    unsafe {
        while j + l <= v {
            let g = s.mul(exp(s, s.sub(s.load(x.add(j)), mv)), fv);
            s.store(dst.add(j), g);
            j += l;
        }
        if j < v {
            let g = s.mul(exp(s, s.sub(s.load_partial(x.add(j), v - j, 0.0), mv)), fv);
            s.store_partial(dst.add(j), v - j, g);
        }
        *dst.add(t) -= dl;
        std::ptr::write_bytes(dst.add(v), 0, vp - v);
    }
}

/// `(m − x_t) + ln z`, in f64 so the rounding is the f32 conversion's alone.
fn loss_of(m: f32, z: f32, xt: f32) -> f32 {
    ((m - xt) as f64 + (z as f64).ln()) as f32
}

#[inline(always)]
fn fwd_generic<S: Simd>(
    s: S,
    losses: &mut [f32],
    logits: &[f32],
    targets: &[u32],
    v: usize,
    vp: usize,
) {
    let n = losses.len();
    assert!(targets.len() == n && logits.len() == n * vp && vp >= v && (n == 0 || v > 0));
    for (r, (loss, &t)) in losses.iter_mut().zip(targets).enumerate() {
        let row = &logits[r * vp..r * vp + v];
        let t = t as usize;
        assert!(
            t < v,
            "{KERNEL_FWD}: row {r}: target {t} is out of range for V = {v}"
        );
        // SAFETY: `row` holds v >= 1 floats.
        let (m, z) = unsafe { row_stats(s, row.as_ptr(), v) };
        *loss = loss_of(m, z, row[t]);
    }
}

#[inline(always)]
fn bwd_generic<S: Simd>(
    s: S,
    dlogits: &mut [f32],
    logits: &[f32],
    targets: &[u32],
    dloss: &[f32],
    v: usize,
    vp: usize,
) {
    let n = targets.len();
    assert!(dloss.len() == n && logits.len() == n * vp && dlogits.len() == n * vp);
    assert!(vp >= v && (n == 0 || v > 0));
    for (r, (&t, &dl)) in targets.iter().zip(dloss).enumerate() {
        let row = &logits[r * vp..r * vp + v];
        let t = t as usize;
        assert!(
            t < v,
            "{KERNEL_BWD}: row {r}: target {t} is out of range for V = {v}"
        );
        // SAFETY: `row` holds v >= 1 floats, the dlogits row vp, and t < v.
        unsafe {
            let (m, z) = row_stats(s, row.as_ptr(), v);
            grad_row(
                s,
                dlogits.as_mut_ptr().add(r * vp),
                row.as_ptr(),
                v,
                vp,
                m,
                dl / z,
                t,
                dl,
            );
        }
    }
}

#[inline(always)]
fn bwd_inplace_generic<S: Simd>(
    s: S,
    logits: &mut [f32],
    targets: &[u32],
    dloss: &[f32],
    v: usize,
    vp: usize,
) {
    let n = targets.len();
    assert!(dloss.len() == n && logits.len() == n * vp && vp >= v && (n == 0 || v > 0));
    for (r, (&t, &dl)) in targets.iter().zip(dloss).enumerate() {
        let t = t as usize;
        assert!(
            t < v,
            "{KERNEL_BWD}: row {r}: target {t} is out of range for V = {v}"
        );
        // SAFETY: the row holds vp >= v >= 1 floats, read and written through one pointer.
        unsafe {
            let row = logits.as_mut_ptr().add(r * vp);
            let (m, z) = row_stats(s, row, v);
            grad_row(s, row, row, v, vp, m, dl / z, t, dl);
        }
    }
}

#[inline(always)]
fn fwd_bwd_inplace_generic<S: Simd>(
    s: S,
    logits: &mut [f32],
    losses: &mut [f32],
    targets: &[u32],
    dloss: &[f32],
    v: usize,
    vp: usize,
) {
    let n = targets.len();
    assert!(losses.len() == n && dloss.len() == n && logits.len() == n * vp);
    assert!(vp >= v && (n == 0 || v > 0));
    for (r, ((&t, &dl), loss)) in targets.iter().zip(dloss).zip(losses).enumerate() {
        let t = t as usize;
        assert!(
            t < v,
            "{KERNEL_FWD_BWD}: row {r}: target {t} is out of range for V = {v}"
        );
        // SAFETY: the row holds vp >= v >= 1 floats, read and written through one pointer; t < v.
        unsafe {
            let row = logits.as_mut_ptr().add(r * vp);
            let (m, z) = row_stats(s, row, v);
            *loss = loss_of(m, z, *row.add(t));
            grad_row(s, row, row, v, vp, m, dl / z, t, dl);
        }
    }
}

/// The reference, in f64 with a two-pass softmax.
pub mod oracle {
    /// `losses[n] = −log softmax(logits[n, ..v])[targets[n]]`; `logits` (N, Vp).
    pub fn softmax_xent_fwd(
        losses: &mut [f64],
        logits: &[f64],
        targets: &[u32],
        v: usize,
        vp: usize,
    ) {
        for (r, loss) in losses.iter_mut().enumerate() {
            let row = &logits[r * vp..r * vp + v];
            let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = row.iter().map(|x| (x - m).exp()).sum();
            *loss = m + z.ln() - row[targets[r] as usize];
        }
    }

    /// `dlogits` (N, Vp) = (softmax − onehot)·dloss per row, pad columns 0.
    pub fn softmax_xent_bwd(
        dlogits: &mut [f64],
        logits: &[f64],
        targets: &[u32],
        dloss: &[f64],
        v: usize,
        vp: usize,
    ) {
        for (r, &dl) in dloss.iter().enumerate() {
            let row = &logits[r * vp..r * vp + v];
            let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = row.iter().map(|x| (x - m).exp()).sum();
            for j in 0..vp {
                let p = if j < v { (row[j] - m).exp() / z } else { 0.0 };
                let hot = if j == targets[r] as usize { 1.0 } else { 0.0 };
                dlogits[r * vp + j] = (p - hot) * dl;
            }
        }
    }
}
