//! The GPT-2 encoder: token plus position embedding, forward and backward (llm.c's
//! `encoder_forward`, `encoder_backward`).
//!
//! Shapes: B sequences of T tokens, C channels, V vocabulary entries; `wpe` may hold more positions
//! than T (n_positions), only its first T rows are used.

// The signatures follow llm.c: every buffer and dimension is its own argument.
#![allow(clippy::too_many_arguments)]

use crate::dispatch::dispatch;
use crate::error::{check_len, elems, ShapeError};
use crate::simd::{prefetch_read, Simd, LINE_FLOATS};

/// Refuse a token that does not index a row of `wte`, naming it, where it is and V.
fn check_tokens(
    kernel: &'static str,
    tokens: &[u32],
    t: usize,
    v: usize,
) -> Result<(), ShapeError> {
    match tokens.iter().position(|&tok| tok as usize >= v) {
        None => Ok(()),
        Some(i) => Err(ShapeError {
            kernel,
            detail: format!(
                "token {} at (b={}, t={}) is out of the vocabulary: it must be below V = {v}",
                tokens[i],
                i / t,
                i % t
            ),
        }),
    }
}

/// `out[b, t] = wte[tokens[b, t]] + wpe[t]`.
///
/// out (B, T, C), tokens (B, T), wte (V, C), wpe (>= T, C). A token `>= V` is an error, reported
/// before anything is written.
pub fn encoder_fwd(
    out: &mut [f32],
    tokens: &[u32],
    wte: &[f32],
    wpe: &[f32],
    b: usize,
    t: usize,
    c: usize,
    v: usize,
) -> Result<(), ShapeError> {
    const K: &str = "encoder_fwd";
    check_len(K, "out", out.len(), elems(&[b, t, c]), "B*T*C")?;
    check_len(K, "tokens", tokens.len(), elems(&[b, t]), "B*T")?;
    check_len(K, "wte", wte.len(), elems(&[v, c]), "V*C")?;
    check_len(K, "wpe", wpe.len(), elems(&[t, c]), "T*C")?;
    check_tokens(K, &tokens[..b * t], t, v)?;
    encoder_fwd_unchecked(
        &mut out[..b * t * c],
        &tokens[..b * t],
        &wte[..v * c],
        &wpe[..t * c],
        t,
        c,
    );
    Ok(())
}

dispatch! {
    /// [`encoder_fwd`] without the checks: B*T = `tokens.len()`, `out` holds B*T*C, `wpe` T*C.
    /// A token past the end of `wte` panics (a bounds check per row, never unchecked memory).
    pub fn encoder_fwd_unchecked(
        out: &mut [f32],
        tokens: &[u32],
        wte: &[f32],
        wpe: &[f32],
        t: usize,
        c: usize,
    ) = encoder_fwd_generic;
}

/// `out[r][j] = a[r][j] + b[r][j]` for R rows side by side, one cache line of every row per step,
/// prefetching the rows at `next` line by line as it goes.
///
/// # Safety
/// Each `out[r]` must be valid for writing as many floats as `a[r]` holds, and must overlap no
/// other `out` row and no `a` or `b` row.
#[inline(always)]
unsafe fn add_rows_k<S: Simd, const R: usize>(
    s: S,
    out: [*mut f32; R],
    a: [&[f32]; R],
    b: [&[f32]; R],
    next: [*const f32; R],
) {
    let c = a[0].len();
    assert!(a.iter().chain(&b).all(|row| row.len() == c));
    let (a, b) = (a.map(<[f32]>::as_ptr), b.map(<[f32]>::as_ptr));
    let mut j = 0;
    // SAFETY: every access is below `c`, the common length of the rows asserted above, which the
    // caller guarantees for `out`.
    unsafe {
        while j + LINE <= c {
            for next in next {
                prefetch_read(next.wrapping_add(j));
            }
            for r in 0..R {
                for v in (0..LINE / S::LANES).map(|q| j + q * S::LANES) {
                    s.store(
                        out[r].add(v),
                        s.add(s.load(a[r].add(v)), s.load(b[r].add(v))),
                    );
                }
            }
            j += LINE;
        }
        if j < c {
            for next in next {
                prefetch_read(next.wrapping_add(j));
            }
        }
        while j + S::LANES <= c {
            for r in 0..R {
                s.store(
                    out[r].add(j),
                    s.add(s.load(a[r].add(j)), s.load(b[r].add(j))),
                );
            }
            j += S::LANES;
        }
        if j < c {
            let rest = c - j;
            for r in 0..R {
                let v = s.add(
                    s.load_partial(a[r].add(j), rest, 0.0),
                    s.load_partial(b[r].add(j), rest, 0.0),
                );
                s.store_partial(out[r].add(j), rest, v);
            }
        }
    }
}

/// `acc[j] += x[j]` over one row, one cache line per step, prefetching the row at `next` line by
/// line as it goes.
#[inline(always)]
fn acc_row<S: Simd>(s: S, acc: &mut [f32], x: &[f32], next: *const f32) {
    let c = acc.len();
    assert!(x.len() == c);
    let (a, x) = (acc.as_mut_ptr(), x.as_ptr());
    let mut j = 0;
    // SAFETY: every access is below `c`, the common length asserted above.
    unsafe {
        while j + LINE <= c {
            prefetch_read(next.wrapping_add(j));
            for v in (0..LINE / S::LANES).map(|k| j + k * S::LANES) {
                s.store(a.add(v), s.add(s.load(a.add(v)), s.load(x.add(v))));
            }
            j += LINE;
        }
        if j < c {
            prefetch_read(next.wrapping_add(j));
        }
        while j + S::LANES <= c {
            s.store(a.add(j), s.add(s.load(a.add(j)), s.load(x.add(j))));
            j += S::LANES;
        }
        if j < c {
            let rest = c - j;
            let v = s.add(
                s.load_partial(a.add(j), rest, 0.0),
                s.load_partial(x.add(j), rest, 0.0),
            );
            s.store_partial(a.add(j), rest, v);
        }
    }
}

/// The step of the row loops is one cache line ([`LINE_FLOATS`]): one prefetch per line, and the
/// line's vectors (16 / LANES of them) in one straight run. Checking `j % 16` for every vector
/// instead measured 3–10 % slower in the encoder forward (AVX2, C = 768 and 384).
const LINE: usize = LINE_FLOATS;

/// How many rows ahead the backward's row loop prefetches. A row of wte (or dwte) sits at a random
/// place in a table far larger than the caches and the TLB's reach, and the hardware prefetchers
/// cannot guess where the next one is: without a hint every row starts with a miss and a page walk
/// that nothing overlaps. Each row's lines are requested while the row `AHEAD` places before it is
/// processed, one per line (not all at once, which would overflow the core's miss buffers).
const AHEAD: usize = 2;

/// Rows the encoder forward adds side by side (a line of each per step), prefetching the next
/// `FWD_ROWS` rows meanwhile. Four rows' misses in flight instead of one row's measured 15–20 %
/// faster at C = 768 and 8–12 % at C = 384 (AVX2, Zen; two rows took half of that, six or eight
/// no more than four). Also measured there and not kept: streaming stores for `out` (5–8 %
/// slower with four rows, 20 % with one, even with `out` line-aligned), prefetching further ahead
/// into L2 or touching each row's page earlier (no change). What remains is mostly the gather of
/// random rows: with wte on 2 MB pages (an allocation choice, outside the kernel) the forward ran
/// 10–25 % faster at C = 768 (the TLB misses of 4 KB pages), and gathering rows that stay in
/// cache brings it to the time of a plain stream.
const FWD_ROWS: usize = 4;

/// The row index `b * T + t` of the `k`-th row in position-major order (t = 0 for every b, then
/// t = 1, ...), for B sequences of T tokens.
#[inline(always)]
fn pos_major(k: usize, b: usize, t: usize) -> usize {
    (k % b) * t + k / b
}

#[inline(always)]
fn encoder_fwd_generic<S: Simd>(
    s: S,
    out: &mut [f32],
    tokens: &[u32],
    wte: &[f32],
    wpe: &[f32],
    t: usize,
    c: usize,
) {
    assert!(
        out.len() == elems(&[tokens.len(), c])
            && (tokens.is_empty() || wpe.len() >= elems(&[t, c]))
    );
    if c == 0 || tokens.is_empty() {
        return;
    }
    // Position-major: the B rows that share wpe[pos] are done together, so it is read from
    // memory once rather than B times. Each group of FWD_ROWS rows prefetches the next group's wte
    // rows; the last rows (fewer than a group) go one by one.
    let b = tokens.len() / t;
    let n = b * t;
    let wte_row = |k: usize| {
        let tok = tokens[pos_major(k.min(n - 1), b, t)] as usize;
        &wte[tok * c..tok * c + c]
    };
    let wpe_row = |k: usize| &wpe[k / b * c..k / b * c + c];
    let o = out.as_mut_ptr();
    let mut k = 0;
    while k + FWD_ROWS <= n {
        let next = std::array::from_fn(|r| wte_row(k + FWD_ROWS + r).as_ptr());
        // SAFETY: the rows pos_major(k + r) are distinct (pos_major is a bijection of 0..n) and
        // below n, so each is C floats inside `out` (whose length n*C is asserted above), apart
        // from each other and from the tables.
        unsafe {
            add_rows_k::<S, FWD_ROWS>(
                s,
                std::array::from_fn(|r| o.add(pos_major(k + r, b, t) * c)),
                std::array::from_fn(|r| wte_row(k + r)),
                std::array::from_fn(|r| wpe_row(k + r)),
                next,
            );
        }
        k += FWD_ROWS;
    }
    for k in k..n {
        // SAFETY: as above, for one row.
        unsafe {
            add_rows_k::<S, 1>(
                s,
                [o.add(pos_major(k, b, t) * c)],
                [wte_row(k)],
                [wpe_row(k)],
                [wte_row(k + 1).as_ptr()],
            );
        }
    }
}

/// `dwte[tokens[b, t]] += dout[b, t]` and `dwpe[t] += dout[b, t]`, rows taken position-major
/// (t = 0 for b = 0 .. B, then t = 1, ...; wpe's row is then read once for its B uses), so a
/// token seen twice accumulates in the same order on every path and run.
///
/// dwte (V, C), dwpe (>= T, C), dout (B, T, C), tokens (B, T). A token `>= V` is an error, reported
/// before anything is written.
pub fn encoder_bwd(
    dwte: &mut [f32],
    dwpe: &mut [f32],
    dout: &[f32],
    tokens: &[u32],
    b: usize,
    t: usize,
    c: usize,
    v: usize,
) -> Result<(), ShapeError> {
    const K: &str = "encoder_bwd";
    check_len(K, "dwte", dwte.len(), elems(&[v, c]), "V*C")?;
    check_len(K, "dwpe", dwpe.len(), elems(&[t, c]), "T*C")?;
    check_len(K, "dout", dout.len(), elems(&[b, t, c]), "B*T*C")?;
    check_len(K, "tokens", tokens.len(), elems(&[b, t]), "B*T")?;
    check_tokens(K, &tokens[..b * t], t, v)?;
    encoder_bwd_unchecked(
        &mut dwte[..v * c],
        &mut dwpe[..t * c],
        &dout[..b * t * c],
        &tokens[..b * t],
        t,
        c,
    );
    Ok(())
}

dispatch! {
    /// [`encoder_bwd`] without the checks: B*T = `tokens.len()`, `dout` holds B*T*C, `dwpe` T*C.
    /// A token past the end of `dwte` panics (a bounds check per row, never unchecked memory).
    pub fn encoder_bwd_unchecked(
        dwte: &mut [f32],
        dwpe: &mut [f32],
        dout: &[f32],
        tokens: &[u32],
        t: usize,
        c: usize,
    ) = encoder_bwd_generic;
}

#[inline(always)]
fn encoder_bwd_generic<S: Simd>(
    s: S,
    dwte: &mut [f32],
    dwpe: &mut [f32],
    dout: &[f32],
    tokens: &[u32],
    t: usize,
    c: usize,
) {
    assert!(
        dout.len() == elems(&[tokens.len(), c])
            && (tokens.is_empty() || dwpe.len() >= elems(&[t, c]))
    );
    if c == 0 || tokens.is_empty() {
        return;
    }
    let b = tokens.len() / t;
    let n = b * t;
    for k in 0..n {
        let ahead = pos_major((k + AHEAD).min(n - 1), b, t);
        let (i, pos) = (pos_major(k, b, t), k / b);
        let (tok, row) = (tokens[i] as usize, &dout[i * c..i * c + c]);
        // The first pass prefetches the dwte row AHEAD rows on, the second the dout row.
        let next_dwte = dwte[tokens[ahead] as usize * c..].as_ptr();
        acc_row(s, &mut dwte[tok * c..tok * c + c], row, next_dwte);
        acc_row(
            s,
            &mut dwpe[pos * c..pos * c + c],
            row,
            dout[ahead * c..].as_ptr(),
        );
    }
}

/// The reference. Each output is the same sequence of f32 additions as in the kernels (the
/// backward in the same position-major order).
pub mod oracle {
    /// out (B, T, C), tokens (B, T), wte (V, C), wpe (>= T, C).
    pub fn encoder_fwd(
        out: &mut [f32],
        tokens: &[u32],
        wte: &[f32],
        wpe: &[f32],
        t: usize,
        c: usize,
    ) {
        for (i, &tok) in tokens.iter().enumerate() {
            let (tok, pos) = (tok as usize, i % t);
            for j in 0..c {
                out[i * c + j] = wte[tok * c + j] + wpe[pos * c + j];
            }
        }
    }

    /// dwte (V, C), dwpe (>= T, C), dout (B, T, C), tokens (B, T).
    pub fn encoder_bwd(
        dwte: &mut [f32],
        dwpe: &mut [f32],
        dout: &[f32],
        tokens: &[u32],
        t: usize,
        c: usize,
    ) {
        let b = tokens.len().checked_div(t).unwrap_or(0);
        for pos in 0..t {
            for bi in 0..b {
                let i = bi * t + pos;
                let tok = tokens[i] as usize;
                for j in 0..c {
                    dwte[tok * c + j] += dout[i * c + j];
                    dwpe[pos * c + j] += dout[i * c + j];
                }
            }
        }
    }
}
