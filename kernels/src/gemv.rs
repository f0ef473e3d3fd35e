//! Matrix-vector products for decoding: a few rows of activations times a weight matrix.
//!
//! Decoding one token per row is memory-bound: every weight byte is read once per step and used
//! for only `m` (≤ [`GEMV_MAX_ROWS`]) multiply-adds. These kernels stream the weights once for all
//! `m` rows, with no packing, and keep their partial sums in registers.
//!
//! Memory gives a core its bandwidth for a few long sequential streams, not for many short ones:
//! measured on an AVX2 core (Zen), reading a 340 MB set of weight matrices as four streams, each
//! a contiguous quarter walked front to back, ran at 88–98 % of the read probe; reading the same
//! bytes as eight or four streams that each restart every few KiB (eight neighbouring rows of w
//! across all columns, or four neighbouring rows of a transposed w) ran at 60–83 %. So both
//! kernels split w into [`NN_STREAMS`] (or [`NT_STREAMS`]) contiguous parts of rows and take one
//! row of each part in turn:
//!
//! - [`gemv_nn`] adds the rows of `w` in the order of [`nn_row`]: row `t` of each quarter, then
//!   row `t + 1` of each. With one row of x, a sweep takes the four rows of one `t` across all
//!   columns, each stream continuing where it stopped; a register tile of [`NN_VECS`] vectors of
//!   y is loaded once per sweep, takes four multiply-adds per element and is stored back. With
//!   several rows of x the kernel is compute-bound rather than memory-bound, and it changes three
//!   things: sweeps take [`NN_KC_BATCH`] rows of that order (the y tile's loads and stores are
//!   spread over more multiply-adds), the columns are taken in blocks of [`NN_NB`] (so the y rows
//!   of a block stay in L1 across the sweeps), and each tile prefetches its columns of the next
//!   sweep's rows (the hardware prefetcher does not follow that many streams while the core is
//!   busy computing). Tiles there hold up to [`TILE_ROWS`] rows of x times [`NN_VECS_BATCH`]
//!   vectors, which leaves AVX2's registers free for the loads in flight; on AVX-512, with twice
//!   the registers, one tile takes all the rows (up to 8, one pass over each line of w).
//! - [`gemv_nn_panels`] computes what [`gemv_nn`] does, bit for bit, from a copy of `w` in panel
//!   form ([`pack_nn_panels`]): the rows in the order of [`nn_row`], cut into chunks of
//!   [`PANEL_KC`] rows, each chunk stored as (kc, [`PANEL_COLS`]) panels one after the other. The
//!   kernel reads the copy front to back as one stream, so with several rows of x none of the
//!   sixteen-row sweeps above is needed: rows of 2,304 or 3,072 floats are 9 or 12 KiB apart,
//!   and a sweep's sixteen lines of one tile land in one or four of L1's 64 sets (eight ways),
//!   evicting each other and the lines prefetched for the next tiles. Measured on GPT-2's four
//!   matrix shapes with 8 rows of x (Zen, 340 MB, alternated three times): `gemv_nn` 24.3–26.0
//!   GFLOP/s on one core, the panel form 27.1–31.6; on two cores 44.4–50.6 against 48.3–56.5.
//!   With one row of x the panel form is the slower (10.8–11.7 GB/s against 17.5–19.0).
//! - [`gemv_nt`] takes one row of `w` (vocabulary rows of a tied LM head) from each of its
//!   [`NT_STREAMS`] parts at a time; they stay in L1 while each group of x rows is dotted with
//!   them, one accumulator per pair (a group of two to four rows takes them two at a time on the
//!   paths with 16 vector registers; the 16-lane paths, AVX-512 and its emulation, take all four
//!   against a group of four: `simd::wide_register_file`).
//!
//! Every output element is computed by the same sequence of operations whatever `m`, the tile it
//! falls in or the group its row is in, so a row's result does not depend on which other rows
//! share the call (a batch row equals the same row alone, bit for bit).
//!
//! The caller splits the work across threads: [`gemv_nn`] by rows of `w` (each thread streams a
//! contiguous block and produces a partial sum) or by output columns, [`gemv_nt`] by rows of `w`.
//! The order of [`nn_row`] depends on each call's K, so with a row split a result is the same for
//! every `m` given the same split, not across different splits.

use crate::dispatch::dispatch;
use crate::error::{elems, strided, ShapeError};
use crate::simd::{prefetch_read, wide_register_file, Simd, LINE_FLOATS};

/// The most activation rows one call takes.
pub const GEMV_MAX_ROWS: usize = 8;

/// Contiguous parts of the rows of `w` that [`gemv_nn`] streams side by side; also the rows one
/// sweep takes with one row of x.
pub const NN_STREAMS: usize = 4;

/// Vectors of columns in one register tile of [`gemv_nn`] with one row of x.
pub const NN_VECS: usize = 3;

/// Rows of `w` one sweep of [`gemv_nn`] takes with several rows of x.
pub const NN_KC_BATCH: usize = 16;

/// Vectors of columns in one register tile of [`gemv_nn`] with several rows of x.
pub const NN_VECS_BATCH: usize = 2;

/// Columns per block of [`gemv_nn`] with several rows of x: 8 rows of y of one block take 24 KiB.
pub const NN_NB: usize = 768;

/// Rows of x in one register tile (both kernels; `gemv_nn` on AVX-512 takes all 8 rows in one):
/// 4 rows × 2 vectors of accumulators, plus the vectors they share, leave AVX2's 16 registers
/// room for the loads in flight.
pub const TILE_ROWS: usize = 4;

/// Contiguous parts of the rows of `w` that [`gemv_nt`] streams side by side; also the rows of
/// `w` in one of its blocks.
pub const NT_STREAMS: usize = 4;

/// Columns in one panel of a matrix in the panel form of [`pack_nn_panels`]: a cache line.
pub const PANEL_COLS: usize = 16;

/// Rows of `w` (in the order of [`nn_row`]) in one chunk of the panel form.
pub const PANEL_KC: usize = 128;

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

/// The row counts of y and x (equal, at most [`GEMV_MAX_ROWS`]) and their common lengths:
/// `(m, n, k)`.
fn check_rows(
    kernel: &'static str,
    y: &[&mut [f32]],
    x: &[&[f32]],
) -> Result<(usize, usize, usize), ShapeError> {
    let m = y.len();
    check(kernel, "rows", m == x.len() && m <= GEMV_MAX_ROWS, || {
        format!("y has {m} rows, x {}, at most {GEMV_MAX_ROWS}", x.len())
    })?;
    let n = y.first().map_or(0, |r| r.len());
    let k = x.first().map_or(0, |r| r.len());
    check(kernel, "y", y.iter().all(|r| r.len() == n), || {
        format!("rows differ in length (n = {n})")
    })?;
    check(kernel, "x", x.iter().all(|r| r.len() == k), || {
        format!("rows differ in length (k = {k})")
    })?;
    Ok((m, n, k))
}

/// That `w` holds a (k, n) matrix with row stride `ldw`.
fn check_w(
    kernel: &'static str,
    w: &[f32],
    ldw: usize,
    k: usize,
    n: usize,
) -> Result<(), ShapeError> {
    check(kernel, "ldw", n <= ldw || k == 0, || {
        format!("ldw {ldw} is below n {n}")
    })?;
    check(kernel, "w", k == 0 || w.len() >= strided(k, n, ldw), || {
        format!(
            "has {} elements, K={k} rows of stride {ldw} need {}",
            w.len(),
            strided(k, n, ldw)
        )
    })
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
    let (m, n, k) = check_rows(K, y, x)?;
    check_w(K, w, ldw, k, n)?;
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
    let Some((n, k, yp)) = start_rows(y, x, bias, accumulate) else {
        return;
    };
    assert!(k == 0 || (n <= ldw && w.len() >= strided(k, n, ldw)));
    let m = y.len();
    let mut xp = [core::ptr::null::<f32>(); GEMV_MAX_ROWS];
    for (q, xr) in xp.iter_mut().zip(x) {
        *q = xr.as_ptr();
    }
    let (yp, xp, wp) = (&yp[..m], &xp[..m], w.as_ptr());
    let (kc_max, nb) = if m == 1 {
        (NN_STREAMS, n.max(1))
    } else {
        (NN_KC_BATCH, NN_NB)
    };
    for j0 in (0..n).step_by(nb) {
        let j1 = (j0 + nb).min(n);
        let mut t0 = 0;
        while t0 < k {
            let kc = (k - t0).min(kc_max);
            let next = if m == 1 { 0 } else { (k - t0 - kc).min(kc) };
            // The sweep's rows and then the next sweep's (to prefetch), in the order of nn_row.
            let mut rows = [0usize; 2 * NN_KC_BATCH];
            for (i, r) in rows[..kc + next].iter_mut().enumerate() {
                *r = nn_row(k, t0 + i);
            }
            let (rows, next) = rows[..kc + next].split_at(kc);
            // SAFETY: every row index is below k (nn_row is a permutation of 0..k), so rows of w
            // hold columns j0..j1 ≤ n (asserted above); every y row has n elements and every x
            // row k.
            unsafe {
                if m == 1 && kc == NN_STREAMS {
                    nn_sweep_one(s, yp[0], xp[0], rows, wp, ldw, j0, j1)
                } else if m == 1 {
                    nn_sweep::<S, NN_VECS>(s, yp, xp, rows, next, wp, ldw, j0, j1)
                } else {
                    nn_sweep::<S, NN_VECS_BATCH>(s, yp, xp, rows, next, wp, ldw, j0, j1)
                }
            };
            t0 += kc;
        }
    }
}

/// The start of both forms of `gemv_nn`: asserts what memory safety needs of y, x and bias, sets
/// `y = bias` (zeros when empty) or `y += bias` with `accumulate`, and returns `(n, k, the y row
/// pointers)`, or `None` without rows.
fn start_rows(
    y: &mut [&mut [f32]],
    x: &[&[f32]],
    bias: &[f32],
    accumulate: bool,
) -> Option<(usize, usize, [*mut f32; GEMV_MAX_ROWS])> {
    let m = y.len();
    assert!(m == x.len() && m <= GEMV_MAX_ROWS);
    if m == 0 {
        return None;
    }
    let (n, k) = (y[0].len(), x[0].len());
    assert!(y.iter().all(|r| r.len() == n) && x.iter().all(|r| r.len() == k));
    assert!(bias.is_empty() || bias.len() == n);
    let mut yp = [core::ptr::null_mut::<f32>(); GEMV_MAX_ROWS];
    for (p, row) in yp.iter_mut().zip(y.iter_mut()) {
        match (accumulate, bias.is_empty()) {
            (false, true) => row.fill(0.0),
            (false, false) => row.copy_from_slice(bias),
            (true, true) => {}
            (true, false) => row.iter_mut().zip(bias).for_each(|(o, b)| *o += b),
        }
        *p = row.as_mut_ptr();
    }
    Some((n, k, yp))
}

/// The row of `w` that [`gemv_nn`] adds `t`-th (`t < k`): the rows are split into
/// [`NN_STREAMS`] contiguous parts of `k / NN_STREAMS` rows, taken one row of each part in turn,
/// and the `k % NN_STREAMS` rows left over come last, in order.
pub fn nn_row(k: usize, t: usize) -> usize {
    let part = k / NN_STREAMS;
    if t < NN_STREAMS * part {
        t % NN_STREAMS * part + t / NN_STREAMS
    } else {
        t
    }
}

/// `y[i][j0..j1] += Σ_q x[i][rows[q]] · w[rows[q]*ldw..][j0..j1]`, the rows added in the order
/// given: one sweep over a block of columns, each full tile `V` vectors wide; each tile first
/// prefetches its columns of the `next` rows.
///
/// # Safety
/// Each `yp[i]` must be valid for reads and writes of `j1` floats, each `xp[i]` for reads at
/// every index in `rows`, and `w` for reads of `j1` floats at each row start `r*ldw` of `rows`
/// and `next`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn nn_sweep<S: Simd, const V: usize>(
    s: S,
    yp: &[*mut f32],
    xp: &[*const f32],
    rows: &[usize],
    next: &[usize],
    w: *const f32,
    ldw: usize,
    j0: usize,
    j1: usize,
) {
    let m = yp.len();
    let step = V * S::LANES;
    // The sweep's row starts and each x row's values for them, gathered once for all its tiles.
    let mut wrows = [core::ptr::null::<f32>(); NN_KC_BATCH];
    let mut wnext = [core::ptr::null::<f32>(); NN_KC_BATCH];
    let mut xs = [[0.0f32; NN_KC_BATCH]; GEMV_MAX_ROWS];
    for (q, &r) in rows.iter().enumerate() {
        wrows[q] = w.wrapping_add(r * ldw);
        for (xs, &x) in xs.iter_mut().zip(xp) {
            // SAFETY: x rows hold every index in `rows` (the caller's promise).
            xs[q] = unsafe { *x.add(r) };
        }
    }
    for (p, &r) in wnext.iter_mut().zip(next) {
        *p = w.wrapping_add(r * ldw);
    }
    let (wrows, wnext) = (&wrows[..rows.len()], &wnext[..next.len()]);
    let mut j = j0;
    // SAFETY: for every call below, columns j..j+width ≤ j1, rows i0..i0+R ≤ m; the caller's
    // promise covers them, and the prefetched columns j..j+step ≤ j1 of the `next` rows.
    unsafe {
        while j + step <= j1 {
            for &r in wnext {
                for c in (0..step).step_by(LINE_FLOATS) {
                    prefetch_read(r.add(j + c));
                }
            }
            nn_tiles::<S, V>(s, &yp[..m], &xs, wrows, j, S::LANES);
            j += step;
        }
        while j < j1 {
            let width = (j1 - j).min(S::LANES);
            nn_tiles::<S, 1>(s, &yp[..m], &xs, wrows, j, width);
            j += width;
        }
    }
}

/// One sweep's columns `j..` (`V` vectors, or with `V = 1` `width ≤ LANES` floats) for every
/// row of y: in tiles of [`TILE_ROWS`] rows, or of all of them (at most [`GEMV_MAX_ROWS`]) on
/// a 16-lane path, whose 32 vector registers hold 8 rows of two vectors with room for the
/// loads. Each element of y takes the same multiply-adds in the same order either way.
///
/// # Safety
/// As [`nn_tile`] for every row of `yp`.
#[inline(always)]
unsafe fn nn_tiles<S: Simd, const V: usize>(
    s: S,
    yp: &[*mut f32],
    xs: &[[f32; NN_KC_BATCH]],
    wrows: &[*const f32],
    j: usize,
    width: usize,
) {
    let per = if wide_register_file::<S>() {
        GEMV_MAX_ROWS
    } else {
        TILE_ROWS
    };
    for i0 in (0..yp.len()).step_by(per) {
        let (y, x) = (&yp[i0..], &xs[i0..]);
        // SAFETY: the caller's promise, for rows i0.. of the tile.
        unsafe {
            match (yp.len() - i0).min(per) {
                1 => nn_tile::<S, 1, V>(s, y, x, wrows, j, width),
                2 => nn_tile::<S, 2, V>(s, y, x, wrows, j, width),
                3 => nn_tile::<S, 3, V>(s, y, x, wrows, j, width),
                4 => nn_tile::<S, 4, V>(s, y, x, wrows, j, width),
                5 => nn_tile::<S, 5, V>(s, y, x, wrows, j, width),
                6 => nn_tile::<S, 6, V>(s, y, x, wrows, j, width),
                7 => nn_tile::<S, 7, V>(s, y, x, wrows, j, width),
                _ => nn_tile::<S, 8, V>(s, y, x, wrows, j, width),
            }
        }
    }
}

/// [`nn_sweep`] for one row of x and a full sweep of [`NN_STREAMS`] rows: the rows' x values
/// (broadcast) and starts stay in registers across all the columns, and each tile takes the same
/// multiply-adds in the same order as [`nn_tile`] would.
///
/// # Safety
/// As [`nn_sweep`] with one row of x.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn nn_sweep_one<S: Simd>(
    s: S,
    y: *mut f32,
    x: *const f32,
    rows: &[usize],
    w: *const f32,
    ldw: usize,
    j0: usize,
    j1: usize,
) {
    // SAFETY: x holds every index in `rows` (the caller's promise).
    let xb: [S::V; NN_STREAMS] = core::array::from_fn(|q| s.splat(unsafe { *x.add(rows[q]) }));
    let wr: [*const f32; NN_STREAMS] = core::array::from_fn(|q| w.wrapping_add(rows[q] * ldw));
    let step = NN_VECS * S::LANES;
    let mut j = j0;
    // SAFETY: columns j..j+step (then j..j+width) ≤ j1 of y and of each row (the caller's
    // promise); a partial vector reads and writes only its `width` floats.
    unsafe {
        while j + step <= j1 {
            let mut acc: [S::V; NN_VECS] =
                core::array::from_fn(|v| s.load(y.add(j + v * S::LANES)));
            for (&wq, &xb) in wr.iter().zip(&xb) {
                for (v, a) in acc.iter_mut().enumerate() {
                    *a = s.fma(s.load(wq.add(j + v * S::LANES)), xb, *a);
                }
            }
            for (v, &a) in acc.iter().enumerate() {
                s.store(y.add(j + v * S::LANES), a);
            }
            j += step;
        }
        while j < j1 {
            let width = (j1 - j).min(S::LANES);
            let mut a = s.load_upto(y.add(j), width);
            for (&wq, &xb) in wr.iter().zip(&xb) {
                a = s.fma(s.load_upto(wq.add(j), width), xb, a);
            }
            s.store_upto(y.add(j), width, a);
            j += width;
        }
    }
}

/// One register tile: rows 0..R of y, columns `j..j + V*LANES` (or, with `V = 1`, `j..j+width`
/// for `width ≤ LANES`), plus `Σ_q xs[i][q] · wrows[q][col]` in the order of `wrows`.
///
/// # Safety
/// As [`nn_sweep`], for the tile's rows and columns; `wrows[q]` is the start of a row of w and
/// `xs[i][q]` row i's x value for it.
#[inline(always)]
unsafe fn nn_tile<S: Simd, const R: usize, const V: usize>(
    s: S,
    yp: &[*mut f32],
    xs: &[[f32; NN_KC_BATCH]],
    wrows: &[*const f32],
    j: usize,
    width: usize,
) {
    // The x value pointers live in registers, not in the caller's array.
    let xr: [*const f32; R] = core::array::from_fn(|i| xs[i].as_ptr());
    let wp = wrows.as_ptr();
    let mut acc = [[s.zero(); V]; R];
    for (i, row) in acc.iter_mut().enumerate() {
        for (v, a) in row.iter_mut().enumerate() {
            // SAFETY: row i < R of the tile, column j + v*LANES inside it (a partial vector
            // reads only `width` floats).
            *a = unsafe { s.load_upto(yp[i].add(j + v * S::LANES), width) };
        }
    }
    // The trip count goes through `black_box`: with one the compiler can bound, it unrolls the
    // loop fully and hoists every load of w to the top, and the tile's accumulators no longer fit
    // the registers (measured: spills in every iteration and a fifth slower with 8 rows of x).
    for q in 0..core::hint::black_box(wrows.len()) {
        // SAFETY: q < wrows.len() ≤ NN_KC_BATCH.
        let wq = unsafe { *wp.add(q) };
        let mut wv = [s.zero(); V];
        for (v, wv) in wv.iter_mut().enumerate() {
            // SAFETY: a row of w the caller vouches for, columns inside the tile.
            *wv = unsafe { s.load_upto(wq.add(j + v * S::LANES), width) };
        }
        for (row, &x) in acc.iter_mut().zip(&xr) {
            // SAFETY: q < NN_KC_BATCH, inside the row's array.
            let xb = s.splat(unsafe { *x.add(q) });
            for (a, &wv) in row.iter_mut().zip(&wv) {
                *a = s.fma(wv, xb, *a);
            }
        }
    }
    for (i, row) in acc.iter().enumerate() {
        for (v, &a) in row.iter().enumerate() {
            // SAFETY: as for the loads.
            unsafe { s.store_upto(yp[i].add(j + v * S::LANES), width, a) };
        }
    }
}

/// Floats [`pack_nn_panels`] writes for a (k, n) matrix: n rounded up to whole panels.
pub fn nn_panels_len(k: usize, n: usize) -> usize {
    elems(&[k, n.div_ceil(PANEL_COLS), PANEL_COLS])
}

/// Copy the (k, n) matrix `w` (row stride `ldw`) into the panel form [`gemv_nn_panels`] reads:
/// its rows in the order of [`nn_row`], cut into chunks of [`PANEL_KC`]; within a chunk, one
/// (kc, [`PANEL_COLS`]) panel after the other, the last one's missing columns zero.
///
/// out (nn_panels_len(k, n)), w (k, ldw).
pub fn pack_nn_panels(
    out: &mut [f32],
    w: &[f32],
    ldw: usize,
    k: usize,
    n: usize,
) -> Result<(), ShapeError> {
    const K: &str = "pack_nn_panels";
    check_w(K, w, ldw, k, n)?;
    check(K, "out", out.len() == nn_panels_len(k, n), || {
        format!(
            "has {} elements, the panels of a ({k}, {n}) matrix take {}",
            out.len(),
            nn_panels_len(k, n)
        )
    })?;
    let mut dst = out.chunks_exact_mut(PANEL_COLS);
    for t0 in (0..k).step_by(PANEL_KC) {
        let kc = (k - t0).min(PANEL_KC);
        for j0 in (0..n).step_by(PANEL_COLS) {
            let width = (n - j0).min(PANEL_COLS);
            for t in t0..t0 + kc {
                let r = nn_row(k, t);
                // One panel row per (t, panel): the chunks are exactly enough (checked above).
                let d = dst.next().expect("out holds every panel row");
                d[..width].copy_from_slice(&w[r * ldw + j0..r * ldw + j0 + width]);
                d[width..].fill(0.0);
            }
        }
    }
    Ok(())
}

/// [`gemv_nn`] on a matrix in panel form ([`pack_nn_panels`] of the (K, n) matrix): `y[i][j]
/// (+)= bias[j] + Σ_p x[i][p] · w[p][j]`, each element equal bit for bit to what [`gemv_nn`]
/// gives on the unpacked matrix (the same multiply-adds in the same order).
pub fn gemv_nn_panels(
    y: &mut [&mut [f32]],
    x: &[&[f32]],
    panels: &[f32],
    bias: &[f32],
    accumulate: bool,
) -> Result<(), ShapeError> {
    const K: &str = "gemv_nn_panels";
    let (m, n, k) = check_rows(K, y, x)?;
    check(K, "panels", panels.len() == nn_panels_len(k, n), || {
        format!(
            "has {} elements, the panels of a ({k}, {n}) matrix take {}",
            panels.len(),
            nn_panels_len(k, n)
        )
    })?;
    check(K, "bias", bias.is_empty() || bias.len() == n, || {
        format!("has {} elements, n = {n}", bias.len())
    })?;
    if m > 0 {
        gemv_nn_panels_unchecked(y, x, panels, bias, accumulate);
    }
    Ok(())
}

dispatch! {
    /// [`gemv_nn_panels`] without the checks (the generic body still asserts what memory safety
    /// needs).
    pub fn gemv_nn_panels_unchecked(y: &mut [&mut [f32]], x: &[&[f32]], panels: &[f32], bias: &[f32], accumulate: bool) = gemv_nn_panels_generic;
}

#[inline(always)]
fn gemv_nn_panels_generic<S: Simd>(
    s: S,
    y: &mut [&mut [f32]],
    x: &[&[f32]],
    panels: &[f32],
    bias: &[f32],
    accumulate: bool,
) {
    let Some((n, k, yp)) = start_rows(y, x, bias, accumulate) else {
        return;
    };
    assert!(panels.len() >= nn_panels_len(k, n));
    let m = y.len();
    // SAFETY: y rows hold n floats, x rows k, and panels the whole panel form (asserted above).
    unsafe {
        match PANEL_COLS / S::LANES {
            1 => panel_chunks::<S, 1>(s, &yp[..m], x, panels.as_ptr(), k, n),
            2 => panel_chunks::<S, 2>(s, &yp[..m], x, panels.as_ptr(), k, n),
            4 => panel_chunks::<S, 4>(s, &yp[..m], x, panels.as_ptr(), k, n),
            _ => panel_chunks::<S, PANEL_COLS>(s, &yp[..m], x, panels.as_ptr(), k, n),
        }
    }
}

/// The chunks of a panel-form matrix in memory order, `V` vectors per panel row: each chunk's x
/// values are gathered once (in the order of [`nn_row`]), then each panel passes under every
/// group of x rows while it is in L1.
///
/// # Safety
/// Each `yp[i]` must be valid for reads and writes of `n` floats, and `panels` for reads of
/// `nn_panels_len(k, n)` floats; x rows hold `k` floats.
#[inline(always)]
unsafe fn panel_chunks<S: Simd, const V: usize>(
    s: S,
    yp: &[*mut f32],
    x: &[&[f32]],
    panels: *const f32,
    k: usize,
    n: usize,
) {
    let m = yp.len();
    // Tiles of at most 8 accumulators: TILE_ROWS rows of two vectors or more, or all the rows
    // of one vector (AVX-512, where a panel row is one vector).
    let rows_max = if V == 1 { GEMV_MAX_ROWS } else { TILE_ROWS };
    let mut xs = [[0.0f32; GEMV_MAX_ROWS]; PANEL_KC];
    let mut rows = [0usize; PANEL_KC];
    let mut at = 0;
    for t0 in (0..k).step_by(PANEL_KC) {
        let kc = (k - t0).min(PANEL_KC);
        for (q, r) in rows[..kc].iter_mut().enumerate() {
            *r = nn_row(k, t0 + q);
        }
        for (xq, &r) in xs[..kc].iter_mut().zip(&rows[..kc]) {
            for (v, xr) in xq.iter_mut().zip(x) {
                *v = xr[r];
            }
        }
        for j in (0..n).step_by(PANEL_COLS) {
            let width = (n - j).min(PANEL_COLS);
            // SAFETY: the panel's kc rows of PANEL_COLS floats lie inside the panel form
            // (the caller's promise); columns j..j+width of every y row are inside it.
            unsafe {
                let panel = panels.add(at);
                for i0 in (0..m).step_by(rows_max) {
                    let y = &yp[i0..];
                    // Only the first group streams the panel in; it prefetches for all.
                    if i0 == 0 {
                        panel_group::<S, V, true>(s, y, &xs, i0, panel, kc, j, width, rows_max);
                    } else {
                        panel_group::<S, V, false>(s, y, &xs, i0, panel, kc, j, width, rows_max);
                    }
                }
            }
            at += kc * PANEL_COLS;
        }
    }
}

/// One group of up to `rows_max` x rows, from row `i0`, over one panel: [`panel_tile`] for the
/// group's size.
///
/// # Safety
/// As [`panel_tile`], for `R = min(y.len(), rows_max)` rows.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn panel_group<S: Simd, const V: usize, const PF: bool>(
    s: S,
    y: &[*mut f32],
    xs: &[[f32; GEMV_MAX_ROWS]; PANEL_KC],
    i0: usize,
    panel: *const f32,
    kc: usize,
    j: usize,
    width: usize,
    rows_max: usize,
) {
    // SAFETY: the caller's promise.
    unsafe {
        match y.len().min(rows_max) {
            1 => panel_tile::<S, 1, V, PF>(s, y, xs, i0, panel, kc, j, width),
            2 => panel_tile::<S, 2, V, PF>(s, y, xs, i0, panel, kc, j, width),
            3 => panel_tile::<S, 3, V, PF>(s, y, xs, i0, panel, kc, j, width),
            4 => panel_tile::<S, 4, V, PF>(s, y, xs, i0, panel, kc, j, width),
            5 => panel_tile::<S, 5, V, PF>(s, y, xs, i0, panel, kc, j, width),
            6 => panel_tile::<S, 6, V, PF>(s, y, xs, i0, panel, kc, j, width),
            7 => panel_tile::<S, 7, V, PF>(s, y, xs, i0, panel, kc, j, width),
            _ => panel_tile::<S, 8, V, PF>(s, y, xs, i0, panel, kc, j, width),
        }
    }
}

/// Panel rows (lines) ahead of the one being read that a panel's first pass prefetches: a whole
/// panel of [`PANEL_KC`] rows, 8 KiB. Measured on GPT-2's four matrix shapes (Zen, one core,
/// alternated): 8 rows of x 32.0–33.9 GFLOP/s with 32 lines, 34.2–36.0 with 128; 4 rows 29.0 →
/// 30.6, 2 rows 14.0 → 14.8; 256 and 512 lines were no better than 128.
const PANEL_PREFETCH: usize = 128;

/// Rows 0..R of y, columns `j..j + width` (`width ≤ PANEL_COLS`, `V` vectors), plus
/// `Σ_q xs[q][i0 + i] · panel[q][..]` for `q < kc`, in order; with `PF`, each panel row's line
/// [`PANEL_PREFETCH`] rows further on is prefetched.
///
/// # Safety
/// `panel` valid for reads of `kc * PANEL_COLS` floats (`kc ≤ PANEL_KC`); `yp[i]` for reads and
/// writes of columns `j..j + width` (`i < R`); `i0 + R ≤ GEMV_MAX_ROWS`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn panel_tile<S: Simd, const R: usize, const V: usize, const PF: bool>(
    s: S,
    yp: &[*mut f32],
    xs: &[[f32; GEMV_MAX_ROWS]; PANEL_KC],
    i0: usize,
    panel: *const f32,
    kc: usize,
    j: usize,
    width: usize,
) {
    // Row i's x value for panel row q is at xr[q * GEMV_MAX_ROWS + i].
    let xr = xs.as_ptr().cast::<f32>().wrapping_add(i0);
    // Floats of each vector inside the tile's columns (a vector past them reads and writes none).
    let vw: [usize; V] = core::array::from_fn(|v| width.saturating_sub(v * S::LANES).min(S::LANES));
    let mut acc = [[s.zero(); V]; R];
    for (i, row) in acc.iter_mut().enumerate() {
        for (v, a) in row.iter_mut().enumerate() {
            if vw[v] > 0 {
                // SAFETY: columns inside the tile of row i < R (the caller's promise).
                *a = unsafe { s.load_upto(yp[i].add(j + v * S::LANES), vw[v]) };
            }
        }
    }
    // As in nn_tile, the trip count goes through `black_box` so that the loop stays rolled and
    // the accumulators stay in registers.
    for q in 0..core::hint::black_box(kc) {
        // SAFETY: q < kc, a row of the panel; a prefetch never faults, so the address may run
        // past the panel form's end.
        let line = unsafe { panel.add(q * PANEL_COLS) };
        if PF {
            prefetch_read(line.wrapping_add(PANEL_PREFETCH * PANEL_COLS));
        }
        let wv: [S::V; V] = core::array::from_fn(|v| {
            // SAFETY: the panel row holds PANEL_COLS = V * LANES floats.
            unsafe { s.load(line.add(v * S::LANES)) }
        });
        for (i, row) in acc.iter_mut().enumerate() {
            // SAFETY: q < kc ≤ PANEL_KC and i0 + i < GEMV_MAX_ROWS, inside xs.
            let xb = s.splat(unsafe { *xr.add(q * GEMV_MAX_ROWS + i) });
            for (a, &wv) in row.iter_mut().zip(&wv) {
                *a = s.fma(wv, xb, *a);
            }
        }
    }
    for (i, row) in acc.iter().enumerate() {
        for (v, &a) in row.iter().enumerate() {
            if vw[v] > 0 {
                // SAFETY: as for the loads.
                unsafe { s.store_upto(yp[i].add(j + v * S::LANES), vw[v], a) };
            }
        }
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
    let (m, n, k) = check_rows(K, y, x)?;
    check(K, "ldw", k <= ldw || n == 0, || {
        format!("ldw {ldw} is below k {k}")
    })?;
    check(K, "w", n == 0 || w.len() >= strided(n, k, ldw), || {
        format!(
            "has {} elements, {n} rows of stride {ldw} need {}",
            w.len(),
            strided(n, k, ldw)
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
    assert!(n == 0 || (k <= ldw && w.len() >= strided(n, k, ldw)));
    let mut yp = [core::ptr::null_mut::<f32>(); GEMV_MAX_ROWS];
    let mut xp = [core::ptr::null::<f32>(); GEMV_MAX_ROWS];
    for ((p, q), (yr, xr)) in yp.iter_mut().zip(xp.iter_mut()).zip(y.iter_mut().zip(x)) {
        *p = yr.as_mut_ptr();
        *q = xr.as_ptr();
    }
    let (yp, xp) = (&yp[..m], &xp[..m]);
    let wp = w.as_ptr();
    let part = n / NT_STREAMS;
    // SAFETY: for every call below, the rows named are below n, so each has k floats from
    // row*ldw (asserted above); x rows have k floats and y rows n.
    unsafe {
        for r in 0..part {
            // Row r of each part; each group of x rows passes over them while they are in L1.
            let b: [usize; NT_STREAMS] = core::array::from_fn(|i| i * part + r);
            for i0 in (0..m).step_by(TILE_ROWS) {
                let (y, x) = (&yp[i0..], &xp[i0..]);
                // With several rows of x the block is compute-bound and the next row of each
                // part is prefetched during the first group's pass (alone, one row of x streams
                // at full speed without).
                let pf = if i0 == 0 && m > 1 && r + 1 < part {
                    ldw
                } else {
                    0
                };
                match m - i0 {
                    1 => nt_tile::<S, 1, NT_STREAMS>(s, y, x, wp, ldw, k, b, pf),
                    2 => {
                        nt_tile::<S, 2, 2>(s, y, x, wp, ldw, k, [b[0], b[1]], pf);
                        nt_tile::<S, 2, 2>(s, y, x, wp, ldw, k, [b[2], b[3]], pf);
                    }
                    3 => {
                        nt_tile::<S, 3, 2>(s, y, x, wp, ldw, k, [b[0], b[1]], pf);
                        nt_tile::<S, 3, 2>(s, y, x, wp, ldw, k, [b[2], b[3]], pf);
                    }
                    // All NT_STREAMS rows of w against the group in one tile (16 accumulators,
                    // each x vector loaded once per step) where 32 registers hold it.
                    _ if wide_register_file::<S>() => {
                        nt_tile::<S, TILE_ROWS, NT_STREAMS>(s, y, x, wp, ldw, k, b, pf);
                    }
                    _ => {
                        nt_tile::<S, TILE_ROWS, 2>(s, y, x, wp, ldw, k, [b[0], b[1]], pf);
                        nt_tile::<S, TILE_ROWS, 2>(s, y, x, wp, ldw, k, [b[2], b[3]], pf);
                    }
                }
            }
        }
        for r in NT_STREAMS * part..n {
            for i0 in (0..m).step_by(TILE_ROWS) {
                let (y, x) = (&yp[i0..], &xp[i0..]);
                match m - i0 {
                    1 => nt_tile::<S, 1, 1>(s, y, x, wp, ldw, k, [r], 0),
                    2 => nt_tile::<S, 2, 1>(s, y, x, wp, ldw, k, [r], 0),
                    3 => nt_tile::<S, 3, 1>(s, y, x, wp, ldw, k, [r], 0),
                    _ => nt_tile::<S, TILE_ROWS, 1>(s, y, x, wp, ldw, k, [r], 0),
                }
            }
        }
    }
}

/// `y[i][rows[b]] = Σ_p x[i][p] · w[rows[b]*ldw + p]` for x rows `i < R` and `b < B`: one
/// accumulator per pair over whole vectors of p, then the zero-filled tail, then a lane sum.
/// Unless `pf` is 0, each row's line `pf` floats further on is prefetched as the row is read.
///
/// # Safety
/// `yp[i]` valid for writes at each index in `rows`, `xp[i]` for reads of `k` floats (`i < R`),
/// and `w` for reads of `k` floats at each row start `rows[b]*ldw` (and `pf` floats further, when
/// `pf` is not 0).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn nt_tile<S: Simd, const R: usize, const B: usize>(
    s: S,
    yp: &[*mut f32],
    xp: &[*const f32],
    w: *const f32,
    ldw: usize,
    k: usize,
    rows: [usize; B],
    pf: usize,
) {
    // The row pointers live in registers, not in the callers' arrays.
    let xr: [*const f32; R] = core::array::from_fn(|i| xp[i]);
    let wr: [*const f32; B] = core::array::from_fn(|b| w.wrapping_add(rows[b] * ldw));
    let mut acc = [[s.zero(); B]; R];
    let full = k - k % S::LANES;
    let mut p = 0;
    // SAFETY: columns p..p+LANES ≤ k of every x row and w row (the caller's promise).
    unsafe {
        // Two loops rather than one with the test inside: one loop holding both paths kept an
        // accumulator on the stack (AVX-512, four rows by four).
        if pf != 0 {
            while p < full {
                if p % LINE_FLOATS == 0 {
                    for &w in &wr {
                        prefetch_read(w.wrapping_add(pf + p));
                    }
                }
                nt_step(s, &mut acc, &xr, &wr, p, S::LANES);
                p += S::LANES;
            }
        } else {
            while p < full {
                nt_step(s, &mut acc, &xr, &wr, p, S::LANES);
                p += S::LANES;
            }
        }
        if p < k {
            nt_step(s, &mut acc, &xr, &wr, p, k - p);
        }
    }
    for (i, row) in acc.iter().enumerate() {
        for (b, &a) in row.iter().enumerate() {
            // SAFETY: y row i, column rows[b] (the caller's promise).
            unsafe { *yp[i].add(rows[b]) = s.reduce_add(a) };
        }
    }
}

/// `acc[i][b] += x_i[p..p+width] · w_b[p..p+width]` lane-wise, zeros past `width`.
///
/// # Safety
/// Every `xr[i]` and `wr[b]` must be valid for reading `p + width` floats, `width ≤ LANES`.
#[inline(always)]
unsafe fn nt_step<S: Simd, const R: usize, const B: usize>(
    s: S,
    acc: &mut [[S::V; B]; R],
    xr: &[*const f32; R],
    wr: &[*const f32; B],
    p: usize,
    width: usize,
) {
    let wv: [S::V; B] = core::array::from_fn(|b| {
        // SAFETY: the caller's promise for columns p..p+width of w's row b.
        unsafe { s.load_upto(wr[b].add(p), width) }
    });
    for (row, &x) in acc.iter_mut().zip(xr) {
        // SAFETY: the caller's promise for columns p..p+width of the x row.
        let xv = unsafe { s.load_upto(x.add(p), width) };
        for (a, &wv) in row.iter_mut().zip(&wv) {
            *a = s.fma(wv, xv, *a);
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
