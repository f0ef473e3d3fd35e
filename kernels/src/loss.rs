//! Fused softmax + cross-entropy over the LM head's logits, forward and backward, without a
//! second (N, V) buffer.
//!
//! Shapes: N rows (B·T positions), V classes, Vp ≥ V the row stride (llm.c pads the vocabulary,
//! e.g. 50257 to 50304; the pad columns are never read and the backward writes them as 0).
//! - `logits` (N, Vp), `targets` (N) in 0..V, `losses` (N), `dloss` (N): the gradient of the
//!   total loss with respect to each row's loss, e.g. 1/N everywhere for a mean.
//! - forward: `losses[n] = −log softmax(logits[n, ..V])[targets[n]]`.
//! - backward: `dlogits[n, j] = (softmax(logits[n])[j] − [j = targets[n]]) · dloss[n]`, overwritten.
//!
//! Each row takes a pass for its max and one for Σ exp(x − max) (the row, 200 KB for GPT-2, stays
//! in L2 between them): one exp per element. The backward writes exp(x − max) to the gradient row
//! during the sum pass and scales it by dloss / sum in a third, so it too costs one exp per
//! element. [`softmax_xent_fwd_bwd_inplace`] does both for the training step: the loss and, in
//! place of the logits, their gradient, reading the logits from memory once.

use crate::dispatch::dispatch;
use crate::error::{check_len, elems, ShapeError};
use crate::math::exp;
use crate::simd::{Simd, MAX_LANES};

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
    check_len(kernel, "logits", logits_len, elems(&[n, vp]), "N*Vp")?;
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
    check_len(
        KERNEL_BWD,
        "dlogits",
        dlogits.len(),
        elems(&[n, vp]),
        "N*Vp",
    )?;
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

/// Vectors per block: independent accumulators for the max and the sum.
const U: usize = 4;
/// Blocks per partial sum: every FOLD blocks the U sums move into an outer one, so that no f32
/// accumulator adds up more than U·FOLD terms (the scalar path has one lane per accumulator).
const FOLD: usize = 64;

/// The largest of the `v >= 1` floats at `x`.
///
/// # Safety
/// `x` must be valid for `v` reads.
#[inline(always)]
unsafe fn row_max<S: Simd>(s: S, x: *const f32, v: usize) -> f32 {
    let l = S::LANES;
    let mut m = [s.splat(f32::NEG_INFINITY); U];
    let mut j = 0;
    // SAFETY: all reads are at j + width <= v.
    unsafe {
        while j + U * l <= v {
            for (u, mu) in m.iter_mut().enumerate() {
                *mu = s.max(*mu, s.load(x.add(j + u * l)));
            }
            j += U * l;
        }
        while j + l <= v {
            m[0] = s.max(m[0], s.load(x.add(j)));
            j += l;
        }
        if j < v {
            m[0] = s.max(m[0], s.load_partial(x.add(j), v - j, f32::NEG_INFINITY));
        }
    }
    s.reduce_max(s.max(s.max(m[0], m[1]), s.max(m[2], m[3])))
}

/// `Σ_j exp(x[j] − m)` over the `v` floats at `x`; with `WRITE`, each `exp(x[j] − m)` is also
/// stored to `dst[j]`. `dst` may be `x` itself: each vector is read before it is written.
///
/// # Safety
/// `x` must be valid for `v` reads and, with `WRITE`, `dst` for `v` writes.
#[inline(always)]
unsafe fn row_exp_sum<S: Simd, const WRITE: bool>(
    s: S,
    dst: *mut f32,
    x: *const f32,
    v: usize,
    m: f32,
) -> f32 {
    let l = S::LANES;
    let mv = s.splat(m);
    let mut sum = [s.zero(); U];
    let mut outer = s.zero();
    let mut blocks = 0;
    let mut j = 0;
    // SAFETY: all accesses are at j + width <= v.
    unsafe {
        while j + U * l <= v {
            for (u, su) in sum.iter_mut().enumerate() {
                let e = exp(s, s.sub(s.load(x.add(j + u * l)), mv));
                if WRITE {
                    s.store(dst.add(j + u * l), e);
                }
                *su = s.add(*su, e);
            }
            j += U * l;
            blocks += 1;
            if blocks % FOLD == 0 {
                outer = s.add(outer, s.add(s.add(sum[0], sum[1]), s.add(sum[2], sum[3])));
                sum = [s.zero(); U];
            }
        }
        while j + l <= v {
            let e = exp(s, s.sub(s.load(x.add(j)), mv));
            if WRITE {
                s.store(dst.add(j), e);
            }
            sum[0] = s.add(sum[0], e);
            j += l;
        }
        if j < v {
            // The lanes past the end load −∞: exp gives its clamp, ~1e-38, which the
            // multiplication by 0 below removes.
            let e = exp(
                s,
                s.sub(s.load_partial(x.add(j), v - j, f32::NEG_INFINITY), mv),
            );
            let e = s.mul(e, s.load_partial(ONES.as_ptr(), v - j, 0.0));
            if WRITE {
                s.store_partial(dst.add(j), v - j, e);
            }
            sum[0] = s.add(sum[0], e);
        }
    }
    s.reduce_add(s.add(outer, s.add(s.add(sum[0], sum[1]), s.add(sum[2], sum[3]))))
}

static ONES: [f32; MAX_LANES] = [1.0; MAX_LANES];

/// `dst[j] *= f` for j < v, then `dst[t] −= dl` and `dst[v..vp] = 0`.
///
/// # Safety
/// `dst` must be valid for `vp` reads and writes, `t < v`.
#[inline(always)]
unsafe fn scale_onehot<S: Simd>(
    s: S,
    dst: *mut f32,
    v: usize,
    vp: usize,
    f: f32,
    t: usize,
    dl: f32,
) {
    let l = S::LANES;
    let fv = s.splat(f);
    let mut j = 0;
    // SAFETY: accesses are below v, the zeroing below vp, per the caller's contract.
    unsafe {
        while j + l <= v {
            s.store(dst.add(j), s.mul(s.load(dst.add(j)), fv));
            j += l;
        }
        if j < v {
            let g = s.mul(s.load_partial(dst.add(j), v - j, 0.0), fv);
            s.store_partial(dst.add(j), v - j, g);
        }
        *dst.add(t) -= dl;
        std::ptr::write_bytes(dst.add(v), 0, vp - v);
    }
}

/// The gradient of one row into `dst` (which may be `x`): max, exponentials written with their
/// sum, then scaled by `dl / z` with the one-hot subtracted. Returns (max, sum).
///
/// # Safety
/// `x` must be valid for `v >= 1` reads, `dst` for `vp` reads and writes, `t < v`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn grad_row<S: Simd>(
    s: S,
    dst: *mut f32,
    x: *const f32,
    v: usize,
    vp: usize,
    t: usize,
    dl: f32,
) -> (f32, f32) {
    // SAFETY: the caller's contract.
    unsafe {
        let m = row_max(s, x, v);
        let z = row_exp_sum::<S, true>(s, dst, x, v, m);
        scale_onehot(s, dst, v, vp, dl / z, t, dl);
        (m, z)
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
    assert!(targets.len() == n && logits.len() == elems(&[n, vp]) && vp >= v && (n == 0 || v > 0));
    for (r, (loss, &t)) in losses.iter_mut().zip(targets).enumerate() {
        let row = &logits[r * vp..r * vp + v];
        let t = t as usize;
        assert!(
            t < v,
            "{KERNEL_FWD}: row {r}: target {t} is out of range for V = {v}"
        );
        // SAFETY: `row` holds v >= 1 floats; nothing is written.
        let (m, z) = unsafe {
            let m = row_max(s, row.as_ptr(), v);
            (
                m,
                row_exp_sum::<S, false>(s, std::ptr::null_mut(), row.as_ptr(), v, m),
            )
        };
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
    assert!(
        dloss.len() == n && logits.len() == elems(&[n, vp]) && dlogits.len() == elems(&[n, vp])
    );
    assert!(vp >= v && (n == 0 || v > 0));
    for (r, (&t, &dl)) in targets.iter().zip(dloss).enumerate() {
        let t = t as usize;
        assert!(
            t < v,
            "{KERNEL_BWD}: row {r}: target {t} is out of range for V = {v}"
        );
        // SAFETY: both rows hold vp >= v >= 1 floats, and t < v.
        unsafe {
            let dst = dlogits.as_mut_ptr().add(r * vp);
            grad_row(s, dst, logits.as_ptr().add(r * vp), v, vp, t, dl);
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
    assert!(dloss.len() == n && logits.len() == elems(&[n, vp]) && vp >= v && (n == 0 || v > 0));
    for (r, (&t, &dl)) in targets.iter().zip(dloss).enumerate() {
        let t = t as usize;
        assert!(
            t < v,
            "{KERNEL_BWD}: row {r}: target {t} is out of range for V = {v}"
        );
        // SAFETY: the row holds vp >= v >= 1 floats, read and written through one pointer.
        unsafe {
            let row = logits.as_mut_ptr().add(r * vp);
            grad_row(s, row, row, v, vp, t, dl);
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
    assert!(losses.len() == n && dloss.len() == n && logits.len() == elems(&[n, vp]));
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
            let xt = *row.add(t);
            let (m, z) = grad_row(s, row, row, v, vp, t, dl);
            *loss = loss_of(m, z, xt);
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
