//! Bias add and its gradient, the column sum of a row-major matrix.
//!
//! Shapes: N rows (N = B*T in GPT-2) of C channels each, row-major.

use crate::dispatch::dispatch;
use crate::error::{check_len, elems, ShapeError};
use crate::simd::Simd;

/// Rows summed in registers before they join the accumulator (see [`bias_bwd`]).
const ROW_BLOCK: usize = 4;

/// `out[r, j] += bias[j]` for every row `r < n`.
///
/// out (N, C), bias (C).
pub fn bias_fwd(out: &mut [f32], bias: &[f32], n: usize, c: usize) -> Result<(), ShapeError> {
    const K: &str = "bias_fwd";
    check_len(K, "out", out.len(), elems(&[n, c]), "N*C")?;
    check_len(K, "bias", bias.len(), c, "C")?;
    bias_fwd_unchecked(&mut out[..n * c], &bias[..c]);
    Ok(())
}

dispatch! {
    /// [`bias_fwd`] without the checks: `out.len()` must be a multiple of `bias.len()` (C).
    pub fn bias_fwd_unchecked(out: &mut [f32], bias: &[f32]) = bias_fwd_generic;
}

#[inline(always)]
fn bias_fwd_generic<S: Simd>(s: S, out: &mut [f32], bias: &[f32]) {
    let c = bias.len();
    if c == 0 {
        return;
    }
    assert_eq!(out.len() % c, 0);
    let b = bias.as_ptr();
    for row in out.chunks_exact_mut(c) {
        let o = row.as_mut_ptr();
        let mut j = 0;
        // SAFETY: every access is below `c`, the length of both `row` and `bias`.
        unsafe {
            while j + S::LANES <= c {
                s.store(o.add(j), s.add(s.load(o.add(j)), s.load(b.add(j))));
                j += S::LANES;
            }
            if j < c {
                let rest = c - j;
                let v = s.add(
                    s.load_partial(o.add(j), rest, 0.0),
                    s.load_partial(b.add(j), rest, 0.0),
                );
                s.store_partial(o.add(j), rest, v);
            }
        }
    }
}

/// `dbias[j] += Σ_r dout[r, j]` over rows `r < n`: the bias gradient, and in general the column sum
/// of any row-major (N, C) matrix, accumulated into `dbias` as gradients accumulate.
///
/// dbias (C), dout (N, C).
///
/// Rows are added in blocks of four, `(r0 + r1) + (r2 + r3)`, and each block sum is added to
/// `dbias`; the tail rows are added one by one. Every operation is lane-wise, so the result is the
/// same bit for bit on every path, and the rounding error grows with N/4 rather than N.
pub fn bias_bwd(dbias: &mut [f32], dout: &[f32], n: usize, c: usize) -> Result<(), ShapeError> {
    const K: &str = "bias_bwd";
    check_len(K, "dbias", dbias.len(), c, "C")?;
    check_len(K, "dout", dout.len(), elems(&[n, c]), "N*C")?;
    bias_bwd_unchecked(&mut dbias[..c], &dout[..n * c]);
    Ok(())
}

dispatch! {
    /// [`bias_bwd`] without the checks: `dout.len()` must be a multiple of `dbias.len()` (C).
    pub fn bias_bwd_unchecked(dbias: &mut [f32], dout: &[f32]) = bias_bwd_generic;
}

#[inline(always)]
fn bias_bwd_generic<S: Simd>(s: S, dbias: &mut [f32], dout: &[f32]) {
    let c = dbias.len();
    if c == 0 {
        return;
    }
    assert_eq!(dout.len() % c, 0);
    let db = dbias.as_mut_ptr();
    let mut blocks = dout.chunks_exact(ROW_BLOCK * c);
    for block in &mut blocks {
        let r = block.as_ptr();
        let mut j = 0;
        // SAFETY: `block` holds 4*c floats; every access is `k*c + j` with k < 4 and j < c, and
        // `dbias` holds c.
        unsafe {
            while j + S::LANES <= c {
                let a = s.add(s.load(r.add(j)), s.load(r.add(c + j)));
                let b = s.add(s.load(r.add(2 * c + j)), s.load(r.add(3 * c + j)));
                s.store(db.add(j), s.add(s.load(db.add(j)), s.add(a, b)));
                j += S::LANES;
            }
            if j < c {
                let rest = c - j;
                let a = s.add(
                    s.load_partial(r.add(j), rest, 0.0),
                    s.load_partial(r.add(c + j), rest, 0.0),
                );
                let b = s.add(
                    s.load_partial(r.add(2 * c + j), rest, 0.0),
                    s.load_partial(r.add(3 * c + j), rest, 0.0),
                );
                let acc = s.load_partial(db.add(j), rest, 0.0);
                s.store_partial(db.add(j), rest, s.add(acc, s.add(a, b)));
            }
        }
    }
    for row in blocks.remainder().chunks_exact(c) {
        bias_fwd_generic(s, dbias, row);
    }
}

/// The reference.
pub mod oracle {
    /// `out[r, j] += bias[j]`; out (N, C), bias (C).
    pub fn bias_fwd(out: &mut [f32], bias: &[f32]) {
        if bias.is_empty() {
            return;
        }
        for row in out.chunks_exact_mut(bias.len()) {
            for (o, b) in row.iter_mut().zip(bias) {
                *o += b;
            }
        }
    }

    /// `dbias[j] += Σ_r dout[r, j]`, the sum taken in f64; dbias (C), dout (N, C).
    pub fn bias_bwd(dbias: &mut [f32], dout: &[f32]) {
        let c = dbias.len();
        for (j, db) in dbias.iter_mut().enumerate() {
            let mut sum = *db as f64;
            for row in dout.chunks_exact(c) {
                sum += row[j] as f64;
            }
            *db = sum as f32;
        }
    }
}
