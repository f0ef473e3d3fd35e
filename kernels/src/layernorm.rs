//! LayerNorm over the channels of each row, forward and backward, as llm.c's `layernorm_forward`
//! and `layernorm_backward` (GPT-2 uses eps = 1e-5).
//!
//! Shapes: N rows (N = B*T) of C channels, row-major. The forward keeps each row's mean and
//! reciprocal standard deviation for the backward.
//!
//! Sums over a row are taken in f32 in vector accumulators, then across lanes; the mean and
//! variance are two-pass (the variance sums `(x - mean)^2`), so there is no cancellation.
//!
//! Both directions need a row's sums before they can write it, so each sweep over the channels
//! writes row r while it sums row r + 1: every stream from memory (input, output, gradients)
//! advances in the same sweep, which keeps the hardware prefetchers busy. A second pass per row
//! that only re-reads cached data would instead leave the next row's first pass waiting on memory.

// The signatures follow llm.c: every buffer and dimension is its own argument.
#![allow(clippy::too_many_arguments)]

use crate::dispatch::dispatch;
use crate::error::{check_len, elems, ShapeError};
use crate::simd::Simd;
use std::ptr;

/// The LayerNorm eps of GPT-2 (Hugging Face `layer_norm_epsilon`).
pub const GPT2_EPS: f32 = 1e-5;

/// `out[r] = (inp[r] - mean[r]) * rstd[r] * weight + bias`, with `mean[r]` the mean of row `r` and
/// `rstd[r] = 1 / sqrt(var[r] + eps)` (biased variance), both stored.
///
/// out (N, C), mean (N), rstd (N), inp (N, C), weight (C), bias (C).
pub fn layernorm_fwd(
    out: &mut [f32],
    mean: &mut [f32],
    rstd: &mut [f32],
    inp: &[f32],
    weight: &[f32],
    bias: &[f32],
    n: usize,
    c: usize,
    eps: f32,
) -> Result<(), ShapeError> {
    const K: &str = "layernorm_fwd";
    check_len(K, "out", out.len(), elems(&[n, c]), "N*C")?;
    check_len(K, "mean", mean.len(), n, "N")?;
    check_len(K, "rstd", rstd.len(), n, "N")?;
    check_len(K, "inp", inp.len(), elems(&[n, c]), "N*C")?;
    check_len(K, "weight", weight.len(), c, "C")?;
    check_len(K, "bias", bias.len(), c, "C")?;
    layernorm_fwd_unchecked(
        &mut out[..n * c],
        &mut mean[..n],
        &mut rstd[..n],
        &inp[..n * c],
        &weight[..c],
        &bias[..c],
        eps,
    );
    Ok(())
}

dispatch! {
    /// [`layernorm_fwd`] without the checks: N = `mean.len()` = `rstd.len()`, C = `weight.len()` =
    /// `bias.len()`, and `out`, `inp` hold N*C.
    pub fn layernorm_fwd_unchecked(
        out: &mut [f32],
        mean: &mut [f32],
        rstd: &mut [f32],
        inp: &[f32],
        weight: &[f32],
        bias: &[f32],
        eps: f32,
    ) = layernorm_fwd_generic;
}

/// [`fwd_sweep`] on floats `j .. j + rest` (`rest <= LANES`; the full-vector calls pass
/// `rest = LANES`, a constant, so the partial-load branches fold away).
///
/// # Safety
/// As [`fwd_sweep`], for floats `j .. j + rest`.
#[inline(always)]
unsafe fn fwd_sweep_at<S: Simd, const OUT: bool, const SUM: bool>(
    s: S,
    j: usize,
    rest: usize,
    cur: (*const f32, *mut f32, S::V, S::V),
    wb: (*const f32, *const f32),
    next: *const f32,
    acc: &mut S::V,
) {
    let (x, o, m, rs) = cur;
    // SAFETY: the caller guarantees floats j .. j + rest of every pointer in use.
    unsafe {
        if SUM {
            *acc = s.add(*acc, s.load_upto(next.add(j), rest));
        }
        if OUT {
            let norm = s.mul(s.sub(s.load_upto(x.add(j), rest), m), rs);
            let y = s.fma(
                norm,
                s.load_upto(wb.0.add(j), rest),
                s.load_upto(wb.1.add(j), rest),
            );
            s.store_upto(o.add(j), rest, y);
        }
    }
}

/// One sweep over the C channels that writes, when `OUT`, row `cur` of the output
/// (`(x - mean) * rstd * w + b`, given `cur = (inp row, out row, mean, rstd)`) and, when `SUM`,
/// sums row `next` of the input (returned).
///
/// # Safety
/// `cur.0` (and `cur.1` for writing) when `OUT`, `next` when `SUM`, and `wb` (weight, bias) must
/// be valid for `c` floats.
#[inline(always)]
unsafe fn fwd_sweep<S: Simd, const OUT: bool, const SUM: bool>(
    s: S,
    c: usize,
    cur: (*const f32, *mut f32, S::V, S::V),
    wb: (*const f32, *const f32),
    next: *const f32,
) -> f32 {
    let mut acc = s.zero();
    let mut j = 0;
    // SAFETY: every call covers floats j .. j + rest with j + rest <= c.
    unsafe {
        while j + S::LANES <= c {
            fwd_sweep_at::<S, OUT, SUM>(s, j, S::LANES, cur, wb, next, &mut acc);
            j += S::LANES;
        }
        if j < c {
            fwd_sweep_at::<S, OUT, SUM>(s, j, c - j, cur, wb, next, &mut acc);
        }
    }
    s.reduce_add(acc)
}

/// Σ (x - m)^2 over a row of `c` floats at `x` (in L1 by now): four vector accumulators; the tail
/// is loaded with fill `m`, so its lanes past the row end add (m - m)^2 = 0.
///
/// # Safety
/// `x` must be valid for reading `c` floats.
#[inline(always)]
unsafe fn row_sq_dev<S: Simd>(s: S, x: *const f32, c: usize, m: f32) -> f32 {
    let (l, mv) = (S::LANES, s.splat(m));
    let mut acc = [s.zero(); 4];
    let mut j = 0;
    // SAFETY: every load is below `c`; the caller guarantees `c` readable floats.
    unsafe {
        while j + 4 * l <= c {
            for (k, a) in acc.iter_mut().enumerate() {
                let d = s.sub(s.load(x.add(j + k * l)), mv);
                *a = s.fma(d, d, *a);
            }
            j += 4 * l;
        }
        while j + l <= c {
            let d = s.sub(s.load(x.add(j)), mv);
            acc[0] = s.fma(d, d, acc[0]);
            j += l;
        }
        if j < c {
            let d = s.sub(s.load_partial(x.add(j), c - j, m), mv);
            acc[1] = s.fma(d, d, acc[1]);
        }
    }
    s.reduce_add(s.add(s.add(acc[0], acc[1]), s.add(acc[2], acc[3])))
}

#[inline(always)]
fn layernorm_fwd_generic<S: Simd>(
    s: S,
    out: &mut [f32],
    mean: &mut [f32],
    rstd: &mut [f32],
    inp: &[f32],
    weight: &[f32],
    bias: &[f32],
    eps: f32,
) {
    let (n, c) = (mean.len(), weight.len());
    assert!(
        rstd.len() == n
            && bias.len() == c
            && out.len() == elems(&[n, c])
            && inp.len() == elems(&[n, c])
    );
    if c == 0 {
        // No channels: the mean of nothing is taken as 0 and the variance as 0.
        mean.fill(0.0);
        rstd.fill(1.0 / eps.sqrt());
        return;
    }
    if n == 0 {
        return;
    }
    let wb = (weight.as_ptr(), bias.as_ptr());
    let idle = (ptr::null(), ptr::null_mut(), s.zero(), s.zero());
    // SAFETY: row r < n of `inp` and `out` spans r*c .. r*c + c, inside their n*c floats, and
    // `weight`, `bias` hold c (this covers the loop's block too). With OUT or SUM off, the
    // corresponding (null) pointers are never read.
    let mut sum = unsafe { fwd_sweep::<S, false, true>(s, c, idle, wb, inp.as_ptr()) };
    for r in 0..n {
        // SAFETY: see above; r < n.
        unsafe {
            let x = inp.as_ptr().add(r * c);
            let m = sum / c as f32;
            let rs = 1.0 / (row_sq_dev(s, x, c, m) / c as f32 + eps).sqrt();
            let cur = (x, out.as_mut_ptr().add(r * c), s.splat(m), s.splat(rs));
            sum = if r + 1 < n {
                fwd_sweep::<S, true, true>(s, c, cur, wb, x.add(c))
            } else {
                fwd_sweep::<S, true, false>(s, c, cur, wb, ptr::null())
            };
            mean[r] = m;
            rstd[r] = rs;
        }
    }
}

/// The LayerNorm backward, accumulating into all three gradients (llm.c's `layernorm_backward`):
/// with `norm = (inp - mean) * rstd` and `g = weight * dout` per row,
/// `dbias += dout`, `dweight += norm * dout`,
/// `dinp += rstd * (g - mean(g) - norm * mean(g * norm))`.
///
/// dinp (N, C), dweight (C), dbias (C), dout (N, C), inp (N, C), weight (C), mean (N), rstd (N).
pub fn layernorm_bwd(
    dinp: &mut [f32],
    dweight: &mut [f32],
    dbias: &mut [f32],
    dout: &[f32],
    inp: &[f32],
    weight: &[f32],
    mean: &[f32],
    rstd: &[f32],
    n: usize,
    c: usize,
) -> Result<(), ShapeError> {
    const K: &str = "layernorm_bwd";
    check_len(K, "dinp", dinp.len(), elems(&[n, c]), "N*C")?;
    check_len(K, "dweight", dweight.len(), c, "C")?;
    check_len(K, "dbias", dbias.len(), c, "C")?;
    check_len(K, "dout", dout.len(), elems(&[n, c]), "N*C")?;
    check_len(K, "inp", inp.len(), elems(&[n, c]), "N*C")?;
    check_len(K, "weight", weight.len(), c, "C")?;
    check_len(K, "mean", mean.len(), n, "N")?;
    check_len(K, "rstd", rstd.len(), n, "N")?;
    layernorm_bwd_unchecked(
        &mut dinp[..n * c],
        &mut dweight[..c],
        &mut dbias[..c],
        &dout[..n * c],
        &inp[..n * c],
        &weight[..c],
        &mean[..n],
        &rstd[..n],
    );
    Ok(())
}

dispatch! {
    /// [`layernorm_bwd`] without the checks: N = `mean.len()` = `rstd.len()`, C = `weight.len()` =
    /// `dweight.len()` = `dbias.len()`, and `dinp`, `dout`, `inp` hold N*C.
    pub fn layernorm_bwd_unchecked(
        dinp: &mut [f32],
        dweight: &mut [f32],
        dbias: &mut [f32],
        dout: &[f32],
        inp: &[f32],
        weight: &[f32],
        mean: &[f32],
        rstd: &[f32],
    ) = layernorm_bwd_generic;
}

/// The backward's per-row state, splatted: `[mean, rstd, mean(g), mean(g * norm)]`.
type RowStats<S> = [<S as Simd>::V; 4];
/// The row a sweep applies the gradients to: dout, inp, dinp and its [`RowStats`].
type CurRow<S> = (*const f32, *const f32, *mut f32, RowStats<S>);
/// The row a sweep sums: dout, inp, and its mean and rstd splatted.
type NextRow<S> = (*const f32, *const f32, <S as Simd>::V, <S as Simd>::V);

/// Pass 2 of the backward on one vector: the new (dbias, dweight, dinp) from dout, inp, weight and
/// the old three.
#[inline(always)]
fn bwd_v<S: Simd>(
    s: S,
    row: RowStats<S>,
    dy: S::V,
    x: S::V,
    w: S::V,
    db: S::V,
    dw: S::V,
    dx: S::V,
) -> (S::V, S::V, S::V) {
    let [m, rs, g_mean, gn_mean] = row;
    let norm = s.mul(s.sub(x, m), rs);
    let g = s.mul(w, dy);
    let dval = s.sub(s.sub(g, g_mean), s.mul(norm, gn_mean));
    (s.add(db, dy), s.fma(norm, dy, dw), s.fma(dval, rs, dx))
}

/// Row `r` of dout and inp, with its mean and rstd splatted.
///
/// # Safety
/// `r * c + c` must not exceed the lengths of `dout` and `inp`, and `r` must index `mean`, `rstd`.
#[inline(always)]
unsafe fn bwd_row<S: Simd>(
    s: S,
    dout: &[f32],
    inp: &[f32],
    mean: &[f32],
    rstd: &[f32],
    r: usize,
    c: usize,
) -> NextRow<S> {
    // SAFETY: the caller guarantees row r lies inside both buffers.
    unsafe {
        (
            dout.as_ptr().add(r * c),
            inp.as_ptr().add(r * c),
            s.splat(mean[r]),
            s.splat(rstd[r]),
        )
    }
}

/// Pass 1 of the backward on one vector: add `g = w * dout` and `g * norm` to `acc`.
#[inline(always)]
fn sums_v<S: Simd>(s: S, m: S::V, rs: S::V, dy: S::V, x: S::V, w: S::V, acc: &mut [S::V; 2]) {
    let g = s.mul(w, dy);
    let norm = s.mul(s.sub(x, m), rs);
    acc[0] = s.add(acc[0], g);
    acc[1] = s.fma(g, norm, acc[1]);
}

/// [`bwd_sweep`] on floats `j .. j + rest` (`rest <= LANES`; the full-vector calls pass
/// `rest = LANES`, a constant, so the partial-load branches fold away).
///
/// # Safety
/// As [`bwd_sweep`], for floats `j .. j + rest`.
#[inline(always)]
unsafe fn bwd_sweep_at<S: Simd, const APPLY: bool, const SUM: bool>(
    s: S,
    j: usize,
    rest: usize,
    w: *const f32,
    db: *mut f32,
    dw: *mut f32,
    cur: CurRow<S>,
    next: NextRow<S>,
    acc: &mut [S::V; 2],
) {
    let (dy, x, dx, stats) = cur;
    let (ny, nx, nm, nrs) = next;
    // SAFETY: the caller guarantees floats j .. j + rest of every pointer in use.
    unsafe {
        let wv = s.load_upto(w.add(j), rest);
        if SUM {
            let (dyv, xv) = (s.load_upto(ny.add(j), rest), s.load_upto(nx.add(j), rest));
            sums_v(s, nm, nrs, dyv, xv, wv, acc);
        }
        if APPLY {
            let (dbv, dwv, dxv) = bwd_v(
                s,
                stats,
                s.load_upto(dy.add(j), rest),
                s.load_upto(x.add(j), rest),
                wv,
                s.load_upto(db.add(j), rest),
                s.load_upto(dw.add(j), rest),
                s.load_upto(dx.add(j), rest),
            );
            s.store_upto(db.add(j), rest, dbv);
            s.store_upto(dw.add(j), rest, dwv);
            s.store_upto(dx.add(j), rest, dxv);
        }
    }
}

/// One sweep over the C channels that does, when `APPLY`, pass 2 of row `cur` (the gradients,
/// given its stats) and, when `SUM`, pass 1 of row `next` (its Σ g and Σ g * norm, returned).
///
/// # Safety
/// `cur.0`, `cur.1` (dout, inp) and `dx` (dinp) when `APPLY`, and `next.0`, `next.1` when `SUM`,
/// must be valid for reading (and `dx` for writing) `c` floats, as must `w`, `db` and `dw`.
#[inline(always)]
unsafe fn bwd_sweep<S: Simd, const APPLY: bool, const SUM: bool>(
    s: S,
    c: usize,
    w: *const f32,
    db: *mut f32,
    dw: *mut f32,
    cur: CurRow<S>,
    next: NextRow<S>,
) -> [f32; 2] {
    let mut acc = [s.zero(); 2];
    let mut j = 0;
    // SAFETY: every call covers floats j .. j + rest with j + rest <= c.
    unsafe {
        while j + S::LANES <= c {
            bwd_sweep_at::<S, APPLY, SUM>(s, j, S::LANES, w, db, dw, cur, next, &mut acc);
            j += S::LANES;
        }
        if j < c {
            bwd_sweep_at::<S, APPLY, SUM>(s, j, c - j, w, db, dw, cur, next, &mut acc);
        }
    }
    [s.reduce_add(acc[0]), s.reduce_add(acc[1])]
}

#[inline(always)]
fn layernorm_bwd_generic<S: Simd>(
    s: S,
    dinp: &mut [f32],
    dweight: &mut [f32],
    dbias: &mut [f32],
    dout: &[f32],
    inp: &[f32],
    weight: &[f32],
    mean: &[f32],
    rstd: &[f32],
) {
    let (n, c) = (mean.len(), weight.len());
    assert!(rstd.len() == n && dweight.len() == c && dbias.len() == c);
    assert!(
        dinp.len() == elems(&[n, c]) && dout.len() == elems(&[n, c]) && inp.len() == elems(&[n, c])
    );
    if c == 0 || n == 0 {
        return;
    }
    let w = weight.as_ptr();
    let (dw, db) = (dweight.as_mut_ptr(), dbias.as_mut_ptr());
    let idle: CurRow<S> = (ptr::null(), ptr::null(), ptr::null_mut(), [s.zero(); 4]);
    let none: NextRow<S> = (ptr::null(), ptr::null(), s.zero(), s.zero());
    // SAFETY: rows 0 .. n of dout, inp and dinp span r*c .. r*c + c of their n*c floats, mean
    // and rstd hold n, and `weight`, `dweight`, `dbias` hold c (this covers the loop's block
    // too). With APPLY or SUM off, the corresponding (null) pointers are never read.
    let mut sums = unsafe {
        let first = bwd_row(s, dout, inp, mean, rstd, 0, c);
        bwd_sweep::<S, false, true>(s, c, w, db, dw, idle, first)
    };
    for r in 0..n {
        // SAFETY: see above; r < n.
        unsafe {
            let (dy, x, m, rs) = bwd_row(s, dout, inp, mean, rstd, r, c);
            let mean_g = s.splat(sums[0] / c as f32);
            let mean_gn = s.splat(sums[1] / c as f32);
            let cur = (
                dy,
                x,
                dinp.as_mut_ptr().add(r * c),
                [m, rs, mean_g, mean_gn],
            );
            sums = if r + 1 < n {
                let next = bwd_row(s, dout, inp, mean, rstd, r + 1, c);
                bwd_sweep::<S, true, true>(s, c, w, db, dw, cur, next)
            } else {
                bwd_sweep::<S, true, false>(s, c, w, db, dw, cur, none)
            };
        }
    }
}

/// The reference, with row statistics and sums in f64.
pub mod oracle {
    /// LayerNorm forward; out (N, C), mean (N), rstd (N), inp (N, C), weight (C), bias (C).
    pub fn layernorm_fwd(
        out: &mut [f32],
        mean: &mut [f32],
        rstd: &mut [f32],
        inp: &[f32],
        weight: &[f32],
        bias: &[f32],
        eps: f32,
    ) {
        let c = weight.len();
        for r in 0..mean.len() {
            let x = &inp[r * c..r * c + c];
            let m = x.iter().map(|&v| v as f64).sum::<f64>() / c.max(1) as f64;
            let var = x.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / c.max(1) as f64;
            let rs = 1.0 / (var + eps as f64).sqrt();
            for j in 0..c {
                let norm = (x[j] as f64 - m) * rs;
                out[r * c + j] = (norm * weight[j] as f64 + bias[j] as f64) as f32;
            }
            mean[r] = m as f32;
            rstd[r] = rs as f32;
        }
    }

    /// LayerNorm backward, accumulating; dinp (N, C), dweight (C), dbias (C), dout (N, C),
    /// inp (N, C), weight (C), mean (N), rstd (N).
    pub fn layernorm_bwd(
        dinp: &mut [f32],
        dweight: &mut [f32],
        dbias: &mut [f32],
        dout: &[f32],
        inp: &[f32],
        weight: &[f32],
        mean: &[f32],
        rstd: &[f32],
    ) {
        let c = weight.len();
        let mut dw: Vec<f64> = dweight.iter().map(|&v| v as f64).collect();
        let mut db: Vec<f64> = dbias.iter().map(|&v| v as f64).collect();
        for r in 0..mean.len() {
            let (m, rs) = (mean[r] as f64, rstd[r] as f64);
            let norm = |j: usize| (inp[r * c + j] as f64 - m) * rs;
            let g = |j: usize| weight[j] as f64 * dout[r * c + j] as f64;
            let g_mean = (0..c).map(g).sum::<f64>() / c as f64;
            let gn_mean = (0..c).map(|j| g(j) * norm(j)).sum::<f64>() / c as f64;
            for j in 0..c {
                let dy = dout[r * c + j] as f64;
                db[j] += dy;
                dw[j] += norm(j) * dy;
                let dx = &mut dinp[r * c + j];
                *dx = (*dx as f64 + rs * (g(j) - g_mean - norm(j) * gn_mean)) as f32;
            }
        }
        for (d, v) in dweight.iter_mut().zip(dw) {
            *d = v as f32;
        }
        for (d, v) in dbias.iter_mut().zip(db) {
            *d = v as f32;
        }
    }
}
