//! Matrix-vector products for decoding: a few rows of activations times a weight matrix.
//!
//! Decoding one token per row is memory-bound: every weight byte is read once per step and used
//! for only `m` (≤ [`GEMV_MAX_ROWS`]) multiply-adds. These kernels stream the weights once for all
//! `m` rows, with no packing. The caller splits the output columns (or, for [`gemv_nt`], the
//! weight rows) across threads, so each thread streams its own part of the matrix.

use crate::dispatch::dispatch;
use crate::error::ShapeError;
use crate::simd::Simd;

/// The most activation rows one call takes.
pub const GEMV_MAX_ROWS: usize = 8;

/// `Ok` when `ok`; the message is only formatted on failure (the checks run every decode step).
fn check(
    kernel: &'static str,
    what: &'static str,
    ok: bool,
    detail: impl FnOnce() -> String,
) -> Result<(), ShapeError> {
    if ok {
        Ok(())
    } else {
        Err(ShapeError {
            kernel,
            detail: format!("`{what}`: {}", detail()),
        })
    }
}

/// `y[i][j] (+)= bias[j] + Σ_p x[i][p] · w[p*ldw + j]`: `m = y.len()` rows of x (each K long)
/// times the first `n = y[i].len()` columns of the (K, ldw) matrix `w`. With `accumulate` the
/// product (and bias) is added to `y`; an empty `bias` means none.
pub fn gemv_nn(
    y: &mut [&mut [f32]],
    x: &[&[f32]],
    w: &[f32],
    ldw: usize,
    bias: &[f32],
    accumulate: bool,
) -> Result<(), ShapeError> {
    const K: &str = "gemv_nn";
    let m = y.len();
    check(K, "rows", m == x.len() && m <= GEMV_MAX_ROWS, || {
        format!("y has {m} rows, x {}, at most {GEMV_MAX_ROWS}", x.len())
    })?;
    let n = y.first().map_or(0, |r| r.len());
    let k = x.first().map_or(0, |r| r.len());
    check(K, "y", y.iter().all(|r| r.len() == n), || {
        format!("rows differ in length (n = {n})")
    })?;
    check(K, "x", x.iter().all(|r| r.len() == k), || {
        format!("rows differ in length (k = {k})")
    })?;
    check(K, "ldw", n <= ldw || k == 0, || {
        format!("ldw {ldw} is below n {n}")
    })?;
    check(K, "w", k == 0 || w.len() >= (k - 1) * ldw + n, || {
        format!(
            "has {} elements, K={k} rows of stride {ldw} need {}",
            w.len(),
            (k.max(1) - 1) * ldw + n
        )
    })?;
    check(K, "bias", bias.is_empty() || bias.len() == n, || {
        format!("has {} elements, n = {n}", bias.len())
    })?;
    if m > 0 {
        gemv_nn_unchecked(y, x, w, ldw, bias, accumulate);
    }
    Ok(())
}

dispatch! {
    /// [`gemv_nn`] without the checks (the generic body still asserts what memory safety needs).
    pub fn gemv_nn_unchecked(y: &mut [&mut [f32]], x: &[&[f32]], w: &[f32], ldw: usize, bias: &[f32], accumulate: bool) = gemv_nn_generic;
}

#[inline(always)]
fn gemv_nn_generic<S: Simd>(
    s: S,
    y: &mut [&mut [f32]],
    x: &[&[f32]],
    w: &[f32],
    ldw: usize,
    bias: &[f32],
    accumulate: bool,
) {
    let m = y.len();
    assert!(m == x.len() && m <= GEMV_MAX_ROWS);
    if m == 0 {
        return;
    }
    let n = y[0].len();
    let k = x[0].len();
    assert!(y.iter().all(|r| r.len() == n) && x.iter().all(|r| r.len() == k));
    assert!(k == 0 || (n <= ldw && w.len() >= (k - 1) * ldw + n));
    assert!(bias.is_empty() || bias.len() == n);
    for row in y.iter_mut() {
        match (accumulate, bias.is_empty()) {
            (false, true) => row.fill(0.0),
            (false, false) => row.copy_from_slice(bias),
            (true, true) => {}
            (true, false) => row.iter_mut().zip(bias).for_each(|(o, b)| *o += b),
        }
    }
    let mut yp = [core::ptr::null_mut::<f32>(); GEMV_MAX_ROWS];
    for (p, row) in yp.iter_mut().zip(y.iter_mut()) {
        *p = row.as_mut_ptr();
    }
    let wp = w.as_ptr();
    // Columns in tiles small enough that the tile of y (m rows, ≤ 16 KiB) stays in L1 while the
    // rows of w stream past it; y is read and written once per four rows of w.
    let tile = ((4096 / m) / S::LANES).max(1) * S::LANES;
    let mut j0 = 0;
    while j0 < n {
        let nt = (n - j0).min(tile);
        let mut ys = [core::ptr::null_mut::<f32>(); GEMV_MAX_ROWS];
        for i in 0..m {
            // SAFETY: j0 < n, inside every y row.
            ys[i] = unsafe { yp[i].add(j0) };
        }
        // SAFETY: columns j0..j0+nt ≤ n of every y row and of rows 0..k of w (asserted above).
        unsafe { nn_tile(s, &ys[..m], x, wp.add(j0), ldw, k, nt) };
        j0 += nt;
    }
}

/// `y[i][0..n] += Σ_p x[i][p] · w[p*ldw..][..n]`, four rows of w per sweep over y.
///
/// # Safety
/// Each `yp[i]` must be valid for reads and writes of `n` floats, `wp` for reads of `n` floats at
/// each row start `p*ldw` for `p < k`, and every `x[i]` must have `k` elements.
#[inline(always)]
unsafe fn nn_tile<S: Simd>(
    s: S,
    yp: &[*mut f32],
    x: &[&[f32]],
    wp: *const f32,
    ldw: usize,
    k: usize,
    n: usize,
) {
    let m = yp.len();
    let mut p = 0;
    while p + 4 <= k {
        let mut xs = [[s.zero(); 4]; GEMV_MAX_ROWS];
        for i in 0..m {
            for q in 0..4 {
                xs[i][q] = s.splat(x[i][p + q]);
            }
        }
        // SAFETY: rows p..p+4 < k of w hold columns 0..n and each y row has n elements (the
        // caller's promise); every access below is at a column j < n.
        unsafe {
            let w0 = wp.add(p * ldw);
            let (w1, w2, w3) = (w0.add(ldw), w0.add(2 * ldw), w0.add(3 * ldw));
            let mut j = 0;
            while j + S::LANES <= n {
                let (a, b, c, d) = (
                    s.load(w0.add(j)),
                    s.load(w1.add(j)),
                    s.load(w2.add(j)),
                    s.load(w3.add(j)),
                );
                for i in 0..m {
                    let o = yp[i].add(j);
                    let mut acc = s.load(o);
                    acc = s.fma(a, xs[i][0], acc);
                    acc = s.fma(b, xs[i][1], acc);
                    acc = s.fma(c, xs[i][2], acc);
                    acc = s.fma(d, xs[i][3], acc);
                    s.store(o, acc);
                }
                j += S::LANES;
            }
            if j < n {
                let r = n - j;
                let (a, b, c, d) = (
                    s.load_partial(w0.add(j), r, 0.0),
                    s.load_partial(w1.add(j), r, 0.0),
                    s.load_partial(w2.add(j), r, 0.0),
                    s.load_partial(w3.add(j), r, 0.0),
                );
                for i in 0..m {
                    let o = yp[i].add(j);
                    let mut acc = s.load_partial(o, r, 0.0);
                    acc = s.fma(a, xs[i][0], acc);
                    acc = s.fma(b, xs[i][1], acc);
                    acc = s.fma(c, xs[i][2], acc);
                    acc = s.fma(d, xs[i][3], acc);
                    s.store_partial(o, r, acc);
                }
            }
        }
        p += 4;
    }
    while p < k {
        // SAFETY: as above, for the single row p < k.
        unsafe {
            let w0 = wp.add(p * ldw);
            let mut j = 0;
            while j < n {
                let r = (n - j).min(S::LANES);
                let a = s.load_partial(w0.add(j), r, 0.0);
                for i in 0..m {
                    let o = yp[i].add(j);
                    let acc = s.fma(a, s.splat(x[i][p]), s.load_partial(o, r, 0.0));
                    s.store_partial(o, r, acc);
                }
                j += r;
            }
        }
        p += 1;
    }
}

/// `y[i][r] = Σ_p x[i][p] · w[r*ldw + p]`: `m = y.len()` rows of x (each K long) dotted with the
/// first `n = y[i].len()` rows of the (n, ldw) matrix `w` (a weight stored transposed, like a
/// tied embedding used as the LM head).
pub fn gemv_nt(
    y: &mut [&mut [f32]],
    x: &[&[f32]],
    w: &[f32],
    ldw: usize,
) -> Result<(), ShapeError> {
    const K: &str = "gemv_nt";
    let m = y.len();
    check(K, "rows", m == x.len() && m <= GEMV_MAX_ROWS, || {
        format!("y has {m} rows, x {}, at most {GEMV_MAX_ROWS}", x.len())
    })?;
    let n = y.first().map_or(0, |r| r.len());
    let k = x.first().map_or(0, |r| r.len());
    check(K, "y", y.iter().all(|r| r.len() == n), || {
        format!("rows differ in length (n = {n})")
    })?;
    check(K, "x", x.iter().all(|r| r.len() == k), || {
        format!("rows differ in length (k = {k})")
    })?;
    check(K, "ldw", k <= ldw || n == 0, || {
        format!("ldw {ldw} is below k {k}")
    })?;
    check(K, "w", n == 0 || w.len() >= (n - 1) * ldw + k, || {
        format!(
            "has {} elements, {n} rows of stride {ldw} need {}",
            w.len(),
            (n.max(1) - 1) * ldw + k
        )
    })?;
    if m > 0 {
        gemv_nt_unchecked(y, x, w, ldw);
    }
    Ok(())
}

dispatch! {
    /// [`gemv_nt`] without the checks (the generic body still asserts what memory safety needs).
    pub fn gemv_nt_unchecked(y: &mut [&mut [f32]], x: &[&[f32]], w: &[f32], ldw: usize) = gemv_nt_generic;
}

#[inline(always)]
fn gemv_nt_generic<S: Simd>(s: S, y: &mut [&mut [f32]], x: &[&[f32]], w: &[f32], ldw: usize) {
    let m = y.len();
    assert!(m == x.len() && m <= GEMV_MAX_ROWS);
    if m == 0 {
        return;
    }
    let n = y[0].len();
    let k = x[0].len();
    assert!(y.iter().all(|r| r.len() == n) && x.iter().all(|r| r.len() == k));
    assert!(n == 0 || (k <= ldw && w.len() >= (n - 1) * ldw + k));
    let mut xp = [core::ptr::null::<f32>(); GEMV_MAX_ROWS];
    for (p, row) in xp.iter_mut().zip(x) {
        *p = row.as_ptr();
    }
    for r in 0..n {
        // Rows of x in groups of four with two accumulators each (eight registers, no spills);
        // a second group re-reads the weight row from L1.
        let mut i0 = 0;
        while i0 < m {
            let i1 = (i0 + 4).min(m);
            let mut acc = [[s.zero(); 2]; 4];
            // SAFETY: row r < n of w has k elements from r*ldw (asserted above); x rows have k.
            unsafe {
                let wr = w.as_ptr().add(r * ldw);
                let mut p = 0;
                while p + 2 * S::LANES <= k {
                    let (a, b) = (s.load(wr.add(p)), s.load(wr.add(p + S::LANES)));
                    for (i, acc) in (i0..i1).zip(acc.iter_mut()) {
                        acc[0] = s.fma(a, s.load(xp[i].add(p)), acc[0]);
                        acc[1] = s.fma(b, s.load(xp[i].add(p + S::LANES)), acc[1]);
                    }
                    p += 2 * S::LANES;
                }
                while p < k {
                    let rest = (k - p).min(S::LANES);
                    let a = s.load_partial(wr.add(p), rest, 0.0);
                    for (i, acc) in (i0..i1).zip(acc.iter_mut()) {
                        acc[0] = s.fma(a, s.load_partial(xp[i].add(p), rest, 0.0), acc[0]);
                    }
                    p += rest;
                }
            }
            for (i, acc) in (i0..i1).zip(acc.iter()) {
                y[i][r] = s.reduce_add(s.add(acc[0], acc[1]));
            }
            i0 = i1;
        }
    }
}

/// The references, accumulating in f64.
pub mod oracle {
    /// See [`super::gemv_nn`].
    pub fn gemv_nn(
        y: &mut [&mut [f32]],
        x: &[&[f32]],
        w: &[f32],
        ldw: usize,
        bias: &[f32],
        accumulate: bool,
    ) {
        for (yr, xr) in y.iter_mut().zip(x) {
            for (j, o) in yr.iter_mut().enumerate() {
                let mut acc = if accumulate { *o as f64 } else { 0.0 };
                if !bias.is_empty() {
                    acc += bias[j] as f64;
                }
                for (p, &xv) in xr.iter().enumerate() {
                    acc += xv as f64 * w[p * ldw + j] as f64;
                }
                *o = acc as f32;
            }
        }
    }

    /// See [`super::gemv_nt`].
    pub fn gemv_nt(y: &mut [&mut [f32]], x: &[&[f32]], w: &[f32], ldw: usize) {
        for (yr, xr) in y.iter_mut().zip(x) {
            for (r, o) in yr.iter_mut().enumerate() {
                let row = &w[r * ldw..r * ldw + xr.len()];
                *o = row
                    .iter()
                    .zip(xr.iter())
                    .map(|(&a, &b)| a as f64 * b as f64)
                    .sum::<f64>() as f32;
            }
        }
    }
}
