//! Causal multi-head self-attention, forward and backward, tiled with an online softmax
//! (flash-attention style): no (T, T) matrix is ever formed, only tiles of `BR` query rows by
//! `BC` keys.
//!
//! Shapes (llm.c's legend): B batch, T sequence, C channels, NH heads, HS = C / NH head size.
//! - `qkv` (B, T, 3C): per position q | k | v along the last dim, head h at offset h·HS in each.
//! - `out` (B, T, C): head h at offset h·HS.
//! - `lse` (B, NH, T): per query row, the log-sum-exp of its scaled scores `s_ij = q_i·k_j / √HS`
//!   over the keys j ≤ i. The backward recomputes `p_ij = exp(s_ij − lse_i)` from it.
//!
//! [`attention_bwd`] writes the gradient into `dqkv`, or adds it (`+=`, as llm.c's backward does)
//! with `accumulate`: no element of `dqkv` is read before the kernel has written it, so writing
//! spares the caller a pass zeroing `dqkv` and the kernel the reads of those zeros.
//!
//! Both directions work per (b, h) on a caller-provided scratch slice of
//! [`attention_scratch_len`] floats. Kᵀ (and in the backward Vᵀ) is packed as contiguous (HS, BC)
//! panels, one per key block, so that each score tile is a small GEMM: a query (or dout) element
//! is broadcast and multiplied with a vector of keys, `BR`×2 vector accumulators in registers.
//! V (forward) and Q, dout, dQ (backward) are copied to contiguous (T, HS) rows: the strided rows
//! of `qkv` are one page apart and would cost a TLB miss each. Keys are padded to Tp, T rounded
//! up to [`KEY_PAD`]; the padded keys are zero and always masked.
//!
//! Forward, per query block of `BR` rows, for each chunk of `KEY_CHUNK` keys j ≤ i: scores
//! S = Q·Kᵀ, one register tile of `BC = 2·LANES` keys at a time, kept in a (BR, KEY_CHUNK) tile;
//! running max m and sum l per row, P = exp(S − m), out = α·out + P·V (α rescales the earlier
//! chunks when the max grows); then out /= l and lse = m + ln l. The output rows are rescaled
//! and updated, and each row's max and sum reduced across lanes, once per chunk rather than once
//! per key block (figures in docs/PERFORMANCE.md).
//!
//! Backward, per key block (a column panel of the causal triangle), over the query rows i ≥ j0:
//! P = exp(S − lse), dP = dout·Vᵀ, dS = P ∘ (dP − D) / √HS with D_i = dout_i·out_i, stored as two
//! (T, BC) panels; then dQ += dS·K (rows), and dV = Pᵀ·dout, dK = dSᵀ·Q (keys, summed in
//! registers over blocks of the panel's rows, stored after each block and reloaded for the next;
//! the first block writes, or adds with `accumulate`). dQ collects in scratch and is written (or
//! added) to `dqkv` per head.
//!
//! Masked keys get probability exactly 0 (see `MASK_KEEP`). `exp` is [`crate::math::exp`].

use crate::dispatch::dispatch;
use crate::error::{check_len, elems, ShapeError};
use crate::gemm::GemmKernel;
use crate::math::{exp, exp_f32};
use crate::simd::{wide_register_file, Scalar, Simd, MAX_LANES};

/// Query rows per register tile.
const BR: usize = 6;
/// Keys per dK/dV register tile in the backward.
const KB: usize = 6;
/// Query rows per block of the backward's dK/dV sums.
const KEY_ROWS: usize = 64;
/// The widest key block of any path (2 vectors of 16 lanes); the panels' row stride.
const BC_MAX: usize = 2 * MAX_LANES;
/// Keys per softmax step of the forward (a multiple of every path's key block): the output rows
/// are rescaled and updated once per chunk, not once per block.
const KEY_CHUNK: usize = 64;
/// The packed Kᵀ and Vᵀ rows are padded to a multiple of this many keys.
pub const KEY_PAD: usize = BC_MAX;

/// Score masks for the diagonal tiles, indexed so that lane `jj` of a row `t = i − j0` reads
/// index `MASK_ZEROS − 1 − t + jj`: 0 (keep) while `jj ≤ t`, −∞ (masked) after.
const MASK_ZEROS: usize = 64;
static MASK_NEG: [f32; 2 * MASK_ZEROS] = mask_table(0.0, f32::NEG_INFINITY);
/// The same positions as 1.0 (keep) and 0.0 (masked): multiplied into the probabilities so masked
/// keys contribute exactly zero (the vector `exp` clamps its input and never returns 0).
static MASK_KEEP: [f32; 2 * MASK_ZEROS] = mask_table(1.0, 0.0);

const fn mask_table(keep: f32, masked: f32) -> [f32; 2 * MASK_ZEROS] {
    let mut a = [masked; 2 * MASK_ZEROS];
    let mut i = 0;
    while i < MASK_ZEROS {
        a[i] = keep;
        i += 1;
    }
    a
}

fn round_up(x: usize, m: usize) -> usize {
    elems(&[x.div_ceil(m), m])
}

/// Floats of scratch [`attention_fwd`] and [`attention_bwd`] need for sequence length `t` and head
/// size `hs` (the same for every path): packed Kᵀ and Vᵀ (HS, Tp), the backward's contiguous Q,
/// dout and dQ (Tp, HS), D (Tp) and two (Tp + BR, 32) probability panels, with Tp = `t` rounded
/// up to [`KEY_PAD`].
pub fn attention_scratch_len(t: usize, hs: usize) -> usize {
    let tp = round_up(t, KEY_PAD);
    elems(&[5, hs, tp])
        .saturating_add(tp)
        .saturating_add(elems(&[2, tp.saturating_add(BR), BC_MAX]))
}

// `is_multiple_of` is newer than the workspace's rust-version (1.80).
#[allow(clippy::manual_is_multiple_of)]
fn check_heads(kernel: &'static str, c: usize, nh: usize) -> Result<usize, ShapeError> {
    if nh == 0 || c % nh != 0 {
        return Err(ShapeError {
            kernel,
            detail: format!("C = {c} is not a positive multiple of NH = {nh}"),
        });
    }
    Ok(c / nh)
}

/// Causal self-attention forward: `out` (B, T, C) and `lse` (B, NH, T) from `qkv` (B, T, 3C).
/// `scratch` holds at least [`attention_scratch_len`]`(t, C / NH)` floats; its contents on entry
/// do not matter.
#[allow(clippy::too_many_arguments)]
pub fn attention_fwd(
    out: &mut [f32],
    lse: &mut [f32],
    qkv: &[f32],
    scratch: &mut [f32],
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
) -> Result<(), ShapeError> {
    const K: &str = "attention_fwd";
    let hs = check_heads(K, c, nh)?;
    check_len(K, "out", out.len(), elems(&[b, t, c]), "B*T*C")?;
    check_len(K, "lse", lse.len(), elems(&[b, nh, t]), "B*NH*T")?;
    check_len(K, "qkv", qkv.len(), elems(&[b, t, 3, c]), "B*T*3C")?;
    let need = attention_scratch_len(t, hs);
    check_len(
        K,
        "scratch",
        scratch.len(),
        need,
        "attention_scratch_len(T, HS)",
    )?;
    attention_fwd_unchecked(
        &mut out[..b * t * c],
        &mut lse[..b * nh * t],
        &qkv[..b * t * 3 * c],
        &mut scratch[..need],
        b,
        t,
        c,
        nh,
    );
    Ok(())
}

/// Causal self-attention backward: writes the gradient with respect to `qkv` into `dqkv`
/// (B, T, 3C), or adds it there with `accumulate`, given `dout` (B, T, C) and the forward's
/// `qkv`, `out` and `lse`. `scratch` as for [`attention_fwd`].
#[allow(clippy::too_many_arguments)]
pub fn attention_bwd(
    dqkv: &mut [f32],
    dout: &[f32],
    qkv: &[f32],
    out: &[f32],
    lse: &[f32],
    scratch: &mut [f32],
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
    accumulate: bool,
) -> Result<(), ShapeError> {
    const K: &str = "attention_bwd";
    let hs = check_heads(K, c, nh)?;
    check_len(K, "dqkv", dqkv.len(), elems(&[b, t, 3, c]), "B*T*3C")?;
    check_len(K, "dout", dout.len(), elems(&[b, t, c]), "B*T*C")?;
    check_len(K, "qkv", qkv.len(), elems(&[b, t, 3, c]), "B*T*3C")?;
    check_len(K, "out", out.len(), elems(&[b, t, c]), "B*T*C")?;
    check_len(K, "lse", lse.len(), elems(&[b, nh, t]), "B*NH*T")?;
    let need = attention_scratch_len(t, hs);
    check_len(
        K,
        "scratch",
        scratch.len(),
        need,
        "attention_scratch_len(T, HS)",
    )?;
    attention_bwd_unchecked(
        &mut dqkv[..b * t * 3 * c],
        &dout[..b * t * c],
        &qkv[..b * t * 3 * c],
        &out[..b * t * c],
        &lse[..b * nh * t],
        &mut scratch[..need],
        b,
        t,
        c,
        nh,
        accumulate,
    );
    Ok(())
}

dispatch! {
    /// [`attention_fwd`] without the `Result`: panics if a slice is shorter than its shape or
    /// `C` is not a multiple of `NH`.
    #[allow(clippy::too_many_arguments)]
    pub fn attention_fwd_unchecked(
        out: &mut [f32],
        lse: &mut [f32],
        qkv: &[f32],
        scratch: &mut [f32],
        b: usize,
        t: usize,
        c: usize,
        nh: usize,
    ) = attention_fwd_generic;
}

dispatch! {
    /// [`attention_bwd`] without the `Result`: panics if a slice is shorter than its shape or
    /// `C` is not a multiple of `NH`.
    #[allow(clippy::too_many_arguments)]
    pub fn attention_bwd_unchecked(
        dqkv: &mut [f32],
        dout: &[f32],
        qkv: &[f32],
        out: &[f32],
        lse: &[f32],
        scratch: &mut [f32],
        b: usize,
        t: usize,
        c: usize,
        nh: usize,
        accumulate: bool,
    ) = attention_bwd_generic;
}

/// Pack the rows `src + j·stride` (j < t, HS floats each) as Xᵀ in key blocks of `bc`: block
/// `jb` is the contiguous (HS, bc) panel at `dst + jb·HS·bc`, element (d, jj) = X[jb·bc + jj][d].
/// Keys t..tp are zero. One key block's tile is then one contiguous run of HS·bc floats. Eight
/// keys by eight dimensions at a time go through the GEMM's register transpose; a head size that
/// is not a multiple of 8 leaves its last dimensions to a scalar loop.
///
/// # Safety
/// `dst` must be valid for `hs·tp` writes, `tp` a multiple of `bc`, and every source row valid for
/// `hs` reads.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn pack_transposed<S: GemmKernel>(
    s: S,
    dst: *mut f32,
    src: *const f32,
    stride: usize,
    t: usize,
    tp: usize,
    hs: usize,
    bc: usize,
) {
    let hs8 = hs / 8 * 8;
    // SAFETY: j0·hs + d·bc + jj < tp·hs for j0 + jj < tp, d < hs; rows j < t are readable; each
    // transpose reads `lines` ≤ live − jj0 rows of 8 floats at d0 + 8 ≤ hs and writes 8 rows of
    // `lines` floats at stride bc, jj0 + lines ≤ bc, inside the block's panel.
    unsafe {
        let mut j0 = 0;
        while j0 < tp {
            let panel = dst.add(j0 * hs);
            let live = bc.min(t.saturating_sub(j0));
            for jj0 in (0..live).step_by(8) {
                let lines = 8.min(live - jj0);
                let from = src.add((j0 + jj0) * stride);
                for d0 in (0..hs8).step_by(8) {
                    s.transpose8(from.add(d0), stride, lines, panel.add(d0 * bc + jj0), bc);
                }
            }
            for d in hs8..hs {
                let out = panel.add(d * bc);
                for jj in 0..live {
                    *out.add(jj) = *src.add((j0 + jj) * stride + d);
                }
            }
            if live < bc {
                for d in 0..hs {
                    std::ptr::write_bytes(panel.add(d * bc + live), 0, bc - live);
                }
            }
            j0 += bc;
        }
    }
}

/// Copy `t` rows of `hs` floats from `src + i·stride` to the contiguous (t, hs) `dst`.
///
/// # Safety
/// `dst` must be valid for `t·hs` writes and every source row for `hs` reads.
#[inline(always)]
unsafe fn pack_rows(dst: *mut f32, src: *const f32, stride: usize, t: usize, hs: usize) {
    // SAFETY: the caller's contract; the two ranges do not overlap (dst is scratch).
    unsafe {
        for i in 0..t {
            std::ptr::copy_nonoverlapping(src.add(i * stride), dst.add(i * hs), hs);
        }
    }
}

/// The register tile `acc[r][v] = Σ_d a_r[d] · bt[d·bt_stride + v·LANES ..]` for `BR` rows of `a`
/// (each `k` floats) against `2·LANES` packed columns of `bt`.
///
/// # Safety
/// Each `a[r]` must be valid for `k` reads and `bt` for reading `2·LANES` floats at every
/// `d·bt_stride`, d < k.
#[inline(always)]
unsafe fn dot_tile<S: Simd>(
    s: S,
    a: [*const f32; BR],
    bt: *const f32,
    bt_stride: usize,
    k: usize,
) -> [[S::V; 2]; BR] {
    let mut acc = [[s.zero(); 2]; BR];
    // SAFETY: the caller's contract covers every read below.
    unsafe {
        for d in 0..k {
            let col = bt.add(d * bt_stride);
            let b0 = s.load(col);
            let b1 = s.load(col.add(S::LANES));
            for r in 0..BR {
                let x = s.splat(*a[r].add(d));
                acc[r][0] = s.fma(x, b0, acc[r][0]);
                acc[r][1] = s.fma(x, b1, acc[r][1]);
            }
        }
    }
    acc
}

/// For the first `nrows` of `BR` rows: `dst_r[d] = alpha_r · dst_r[d] + Σ_{j<nk} w[r·w_stride + j]
/// · src[j·src_stride + d]` for d < n. The rows accumulate over keys: fwd `out += P·V`, bwd
/// `dQ += dS·K`.
///
/// # Safety
/// All `BR` `dst` pointers must be valid for reading `n` floats (rows ≥ `nrows` may repeat a valid
/// row: they are read, never written), the first `nrows` for writing; `w` for reading `nk` floats
/// at each `r·w_stride`; `src` for reading `n` floats at each `j·src_stride`, j < nk.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn rows_axpy<S: Simd>(
    s: S,
    dst: [*mut f32; BR],
    nrows: usize,
    alpha: [f32; BR],
    w: *const f32,
    w_stride: usize,
    src: *const f32,
    src_stride: usize,
    nk: usize,
    n: usize,
) {
    let l = S::LANES;
    let mut d = 0;
    // SAFETY: every chunk below stays at d + width <= n, inside the caller's ranges.
    unsafe {
        // Four vectors of columns at a time (a 64-float head row in one pass, 24 accumulators)
        // where 32 registers hold them, then two.
        while wide_register_file::<S>() && d + 4 * l <= n {
            rows_axpy_chunk::<S, 4>(s, dst, nrows, alpha, w, w_stride, src, src_stride, nk, d);
            d += 4 * l;
        }
        while d + 2 * l <= n {
            rows_axpy_chunk::<S, 2>(s, dst, nrows, alpha, w, w_stride, src, src_stride, nk, d);
            d += 2 * l;
        }
        if d + l <= n {
            rows_axpy_chunk::<S, 1>(s, dst, nrows, alpha, w, w_stride, src, src_stride, nk, d);
            d += l;
        }
        while d < n {
            rows_axpy_chunk::<Scalar, 1>(
                Scalar, dst, nrows, alpha, w, w_stride, src, src_stride, nk, d,
            );
            d += 1;
        }
    }
}

/// One chunk of `NV` vectors at column `d` of [`rows_axpy`].
///
/// # Safety
/// As [`rows_axpy`], for the columns d..d + NV·LANES.
// The register tile reads clearest indexed by row and vector.
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
#[inline(always)]
unsafe fn rows_axpy_chunk<S: Simd, const NV: usize>(
    s: S,
    dst: [*mut f32; BR],
    nrows: usize,
    alpha: [f32; BR],
    w: *const f32,
    w_stride: usize,
    src: *const f32,
    src_stride: usize,
    nk: usize,
    d: usize,
) {
    let l = S::LANES;
    // SAFETY: the caller's contract covers every access.
    unsafe {
        let mut acc = [[s.zero(); NV]; BR];
        for r in 0..BR {
            let a = s.splat(alpha[r]);
            for v in 0..NV {
                acc[r][v] = s.mul(a, s.load(dst[r].add(d + v * l)));
            }
        }
        for j in 0..nk {
            let row = src.add(j * src_stride + d);
            let mut x = [s.zero(); NV];
            for (v, x) in x.iter_mut().enumerate() {
                *x = s.load(row.add(v * l));
            }
            for r in 0..BR {
                let wr = s.splat(*w.add(r * w_stride + j));
                for v in 0..NV {
                    acc[r][v] = s.fma(wr, x[v], acc[r][v]);
                }
            }
        }
        for r in 0..BR {
            if r < nrows {
                for v in 0..NV {
                    s.store(dst[r].add(d + v * l), acc[r][v]);
                }
            }
        }
    }
}

/// For the first `nk` of `KB` keys: `dst_k[d] (+)= Σ_{i<nrows} w[i·w_stride + k] ·
/// src[i·src_stride + d]` for d < n (`+=` with `accumulate`, else `=`). The keys accumulate over
/// rows: bwd `dV = Pᵀ·dout`, `dK = dSᵀ·Q`.
///
/// # Safety
/// All `KB` `dst` pointers must be valid for reading `n` floats when accumulating (keys ≥ `nk`
/// may repeat a valid key: read, never written), the first `nk` for writing; `w` for reading
/// `KB` floats at each `i·w_stride`; `src` for reading `n` floats at each `i·src_stride`,
/// i < nrows.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn keys_axpy<S: Simd>(
    s: S,
    dst: [*mut f32; KB],
    nk: usize,
    w: *const f32,
    w_stride: usize,
    src: *const f32,
    src_stride: usize,
    nrows: usize,
    n: usize,
    accumulate: bool,
) {
    let l = S::LANES;
    let mut d = 0;
    let rows = (src, src_stride, nrows);
    // SAFETY: every chunk below stays at d + width <= n, inside the caller's ranges.
    unsafe {
        // As in `rows_axpy`: four vectors at a time where 32 registers hold them.
        while wide_register_file::<S>() && d + 4 * l <= n {
            keys_axpy_chunk::<S, 4>(s, dst, nk, (w, w_stride), rows, d, accumulate);
            d += 4 * l;
        }
        while d + 2 * l <= n {
            keys_axpy_chunk::<S, 2>(s, dst, nk, (w, w_stride), rows, d, accumulate);
            d += 2 * l;
        }
        if d + l <= n {
            keys_axpy_chunk::<S, 1>(s, dst, nk, (w, w_stride), rows, d, accumulate);
            d += l;
        }
        while d < n {
            keys_axpy_chunk::<Scalar, 1>(Scalar, dst, nk, (w, w_stride), rows, d, accumulate);
            d += 1;
        }
    }
}

/// One chunk of `NV` vectors at column `d` of [`keys_axpy`].
///
/// # Safety
/// As [`keys_axpy`], for the columns d..d + NV·LANES.
// The register tile reads clearest indexed by row and vector.
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
#[inline(always)]
unsafe fn keys_axpy_chunk<S: Simd, const NV: usize>(
    s: S,
    dst: [*mut f32; KB],
    nk: usize,
    (w, w_stride): (*const f32, usize),
    (src, src_stride, nrows): (*const f32, usize, usize),
    d: usize,
    accumulate: bool,
) {
    let l = S::LANES;
    // SAFETY: the caller's contract covers every access.
    unsafe {
        let mut acc = [[s.zero(); NV]; KB];
        if accumulate {
            for k in 0..KB {
                for v in 0..NV {
                    acc[k][v] = s.load(dst[k].add(d + v * l));
                }
            }
        }
        for i in 0..nrows {
            let row = src.add(i * src_stride + d);
            let mut x = [s.zero(); NV];
            for (v, x) in x.iter_mut().enumerate() {
                *x = s.load(row.add(v * l));
            }
            let wi = w.add(i * w_stride);
            for k in 0..KB {
                let wk = s.splat(*wi.add(k));
                for v in 0..NV {
                    acc[k][v] = s.fma(wk, x[v], acc[k][v]);
                }
            }
        }
        for k in 0..KB {
            if k < nk {
                for v in 0..NV {
                    s.store(dst[k].add(d + v * l), acc[k][v]);
                }
            }
        }
    }
}

/// `Σ_d a[d]·b[d]` for d < n.
///
/// # Safety
/// `a` and `b` must be valid for `n` reads.
#[inline(always)]
unsafe fn dot<S: Simd>(s: S, a: *const f32, b: *const f32, n: usize) -> f32 {
    let l = S::LANES;
    let mut acc = s.zero();
    let mut d = 0;
    // SAFETY: all reads are below n.
    unsafe {
        while d + l <= n {
            acc = s.fma(s.load(a.add(d)), s.load(b.add(d)), acc);
            d += l;
        }
        if d < n {
            let x = s.load_partial(a.add(d), n - d, 0.0);
            let y = s.load_partial(b.add(d), n - d, 0.0);
            acc = s.fma(x, y, acc);
        }
    }
    s.reduce_add(acc)
}

/// `dst[d] += src[d]` for d < n.
///
/// # Safety
/// `dst` must be valid for `n` reads and writes, `src` for `n` reads.
#[inline(always)]
unsafe fn add_row<S: Simd>(s: S, dst: *mut f32, src: *const f32, n: usize) {
    let l = S::LANES;
    let mut d = 0;
    // SAFETY: all accesses are below n.
    unsafe {
        while d + l <= n {
            s.store(dst.add(d), s.add(s.load(dst.add(d)), s.load(src.add(d))));
            d += l;
        }
        if d < n {
            let x = s.add(
                s.load_partial(dst.add(d), n - d, 0.0),
                s.load_partial(src.add(d), n - d, 0.0),
            );
            s.store_partial(dst.add(d), n - d, x);
        }
    }
}

/// `p[d] *= f` for d < n.
///
/// # Safety
/// `p` must be valid for `n` reads and writes.
#[inline(always)]
unsafe fn scale_row<S: Simd>(s: S, p: *mut f32, n: usize, f: f32) {
    let l = S::LANES;
    let fv = s.splat(f);
    let mut d = 0;
    // SAFETY: all accesses are below n.
    unsafe {
        while d + l <= n {
            s.store(p.add(d), s.mul(fv, s.load(p.add(d))));
            d += l;
        }
        if d < n {
            let x = s.load_partial(p.add(d), n - d, 0.0);
            s.store_partial(p.add(d), n - d, s.mul(fv, x));
        }
    }
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn attention_fwd_generic<S: GemmKernel>(
    s: S,
    out: &mut [f32],
    lse: &mut [f32],
    qkv: &[f32],
    scratch: &mut [f32],
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
) {
    assert!(
        nh > 0 && c == c / nh * nh,
        "attention_fwd: C = {c}, NH = {nh}"
    );
    let hs = c / nh;
    let tp = round_up(t, KEY_PAD);
    assert!(
        out.len() == elems(&[b, t, c])
            && lse.len() == elems(&[b, nh, t])
            && qkv.len() == elems(&[b, t, 3, c])
    );
    assert!(scratch.len() >= elems(&[2, hs, tp]));
    if t == 0 {
        // No tokens, nothing to compute; and with B > 0 the head pointers below would be
        // offset past the end of the empty slices, which is undefined even with no access.
        return;
    }
    let l = S::LANES;
    let bc = 2 * l;
    let scale = 1.0 / (hs as f32).sqrt();
    // Scratch: Kᵀ (HS, Tp) blocked by key tile | V (Tp, HS) contiguous.
    let c3 = 3 * c;
    let kt = scratch.as_mut_ptr();
    // SAFETY: 2·HS·Tp floats, asserted above.
    let vp = unsafe { kt.add(hs * tp) };
    // Scores, then probabilities, of one key chunk: (BR, KEY_CHUNK).
    let mut ptile = [0.0f32; BR * KEY_CHUNK];
    let pt = ptile.as_mut_ptr();
    for bi in 0..b {
        for h in 0..nh {
            // SAFETY: the asserts above bound every pointer: rows (bi·T + i)·3C + offset + d with
            // i < T, offset + d < 3C; out rows (bi·T + i)·C + h·HS + d < B·T·C; lse index
            // (bi·NH + h)·T + i; the Kᵀ tile of block jb / BC is HS·BC floats at jb·HS, and
            // jb + BC ≤ Tp (jb ≤ i_last < T, both multiples of BC, Tp a multiple of KEY_PAD);
            // the chunk's tile columns jb − j0 + BC ≤ KEY_CHUNK (a multiple of BC). The mask
            // tables are read on diagonal tiles only (jb + BC > i0 + 1, jb ≤ i_last < i0 + BR)
            // at MASK_ZEROS − 1 + jb − i for a row i in i0 .. i0 + BR: at least
            // MASK_ZEROS + 2 − BC − BR ≥ 0, and its BC floats end by MASK_ZEROS + BR + BC − 2
            // ≤ 2·MASK_ZEROS, the tables' length.
            unsafe {
                let base = qkv.as_ptr().add(bi * t * c3);
                let q = base.add(h * hs);
                let k = base.add(c + h * hs);
                let o = out.as_mut_ptr().add(bi * t * c + h * hs);
                let lse_h = lse.as_mut_ptr().add((bi * nh + h) * t);
                pack_transposed(s, kt, k, c3, t, tp, hs, bc);
                pack_rows(vp, base.add(2 * c + h * hs), c3, t, hs);
                let mut i0 = 0;
                while i0 < t {
                    let nrows = BR.min(t - i0);
                    let rows: [usize; BR] = std::array::from_fn(|r| (i0 + r).min(t - 1));
                    let qp = rows.map(|i| q.add(i * c3));
                    let op = rows.map(|i| o.add(i * c));
                    for &p in &op[..nrows] {
                        std::ptr::write_bytes(p, 0, hs);
                    }
                    let mut m = [f32::NEG_INFINITY; BR];
                    let mut sum = [0.0f32; BR];
                    let i_last = i0 + nrows - 1;
                    let mut j0 = 0;
                    while j0 <= i_last {
                        // The chunk's key blocks that some row of the tile sees.
                        let j_end = (j0 + KEY_CHUNK).min(i_last + 1);
                        // Scaled, masked scores into the tile; each row's running vector max.
                        let mut vmax = [s.splat(f32::NEG_INFINITY); BR];
                        let mut jb = j0;
                        while jb < j_end {
                            let acc = dot_tile(s, qp, kt.add(jb * hs), bc, hs);
                            let diag = jb + bc > i0 + 1;
                            for r in 0..BR {
                                let mut s0 = s.mul(acc[r][0], s.splat(scale));
                                let mut s1 = s.mul(acc[r][1], s.splat(scale));
                                if diag {
                                    // Lane jj is key jb + jj; masked after row i (or past T).
                                    let mi = (MASK_ZEROS - 1 + jb).wrapping_sub(rows[r]);
                                    let neg = MASK_NEG.as_ptr().add(mi);
                                    s0 = s.add(s0, s.load(neg));
                                    s1 = s.add(s1, s.load(neg.add(l)));
                                }
                                vmax[r] = s.max(vmax[r], s.max(s0, s1));
                                let row = pt.add(r * KEY_CHUNK + jb - j0);
                                s.store(row, s0);
                                s.store(row.add(l), s1);
                            }
                            jb += bc;
                        }
                        let mut alpha = [0.0f32; BR];
                        for r in 0..BR {
                            let m_new = m[r].max(s.reduce_max(vmax[r]));
                            // The running max settles after a few chunks: skip exp(0) = 1.
                            alpha[r] = if m[r] == m_new {
                                1.0
                            } else if m[r] == f32::NEG_INFINITY {
                                0.0
                            } else {
                                exp_f32(m[r] - m_new)
                            };
                            let mv = s.splat(m_new);
                            let mut psum = s.zero();
                            let mut jb = j0;
                            while jb < j_end {
                                let row = pt.add(r * KEY_CHUNK + jb - j0);
                                let mut p0 = exp(s, s.sub(s.load(row), mv));
                                let mut p1 = exp(s, s.sub(s.load(row.add(l)), mv));
                                if jb + bc > i0 + 1 {
                                    let keep = MASK_KEEP
                                        .as_ptr()
                                        .add((MASK_ZEROS - 1 + jb).wrapping_sub(rows[r]));
                                    p0 = s.mul(p0, s.load(keep));
                                    p1 = s.mul(p1, s.load(keep.add(l)));
                                }
                                psum = s.add(psum, s.add(p0, p1));
                                s.store(row, p0);
                                s.store(row.add(l), p1);
                                jb += bc;
                            }
                            sum[r] = sum[r] * alpha[r] + s.reduce_add(psum);
                            m[r] = m_new;
                        }
                        // Keys after the tile's last row are masked for every row.
                        rows_axpy(
                            s,
                            op,
                            nrows,
                            alpha,
                            pt,
                            KEY_CHUNK,
                            vp.add(j0 * hs),
                            hs,
                            j_end - j0,
                            hs,
                        );
                        j0 += KEY_CHUNK;
                    }
                    for r in 0..nrows {
                        scale_row(s, op[r], hs, 1.0 / sum[r]);
                        *lse_h.add(i0 + r) = m[r] + sum[r].ln();
                    }
                    i0 += BR;
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn attention_bwd_generic<S: GemmKernel>(
    s: S,
    dqkv: &mut [f32],
    dout: &[f32],
    qkv: &[f32],
    out: &[f32],
    lse: &[f32],
    scratch: &mut [f32],
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
    accumulate: bool,
) {
    assert!(
        nh > 0 && c == c / nh * nh,
        "attention_bwd: C = {c}, NH = {nh}"
    );
    let hs = c / nh;
    let tp = round_up(t, KEY_PAD);
    assert!(dqkv.len() == elems(&[b, t, 3, c]) && qkv.len() == elems(&[b, t, 3, c]));
    assert!(
        dout.len() == elems(&[b, t, c])
            && out.len() == elems(&[b, t, c])
            && lse.len() == elems(&[b, nh, t])
    );
    assert!(scratch.len() >= attention_scratch_len(t, hs));
    if t == 0 {
        // No tokens, nothing to compute; and with B > 0 the head pointers below would be
        // offset past the end of the empty slices, which is undefined even with no access.
        return;
    }
    let l = S::LANES;
    let bc = 2 * l;
    let scale = 1.0 / (hs as f32).sqrt();
    let c3 = 3 * c;
    // Scratch: Kᵀ, Vᵀ (HS, Tp) blocked as in the forward | Q, dout, dQ (Tp, HS) contiguous |
    // D (Tp) | P panel (Tp + BR, BC_MAX) | dS panel (same). The BR spare panel rows are read
    // (never used) by the last, partial row tile.
    let kt = scratch.as_mut_ptr();
    // SAFETY: the offsets add up to attention_scratch_len(t, hs), asserted above.
    let (vt, qp, gp, dqp, dd, pp, dsp) = unsafe {
        let vt = kt.add(hs * tp);
        let qp = vt.add(hs * tp);
        let gp = qp.add(hs * tp);
        let dqp = gp.add(hs * tp);
        let dd = dqp.add(hs * tp);
        let pp = dd.add(tp);
        (vt, qp, gp, dqp, dd, pp, pp.add((tp + BR) * BC_MAX))
    };
    for bi in 0..b {
        for h in 0..nh {
            // SAFETY: the asserts above bound every pointer: rows i, j < T of the (B, T, 3C) and
            // (B, T, C) buffers at offsets + d < their row width; lse index (bi·NH + h)·T + i;
            // packed rows i < T of HS floats; Kᵀ/Vᵀ tiles of HS·BC floats at j0·HS, j0 + BC ≤ Tp;
            // panel rows i − j0 < Tp + BR. keys_axpy reads KB weights from column k0 < BC of
            // each panel row i − j0 < T − j0, which may run KB − 1 floats into the next row: that
            // row exists (T − j0 ≤ Tp of the Tp + BR), and those weights belong to keys ≥ nk,
            // which are never stored. The mask table is read on diagonal tiles only
            // (j0 + BC > i0 + 1) at MASK_ZEROS − 1 + j0 − i for a row i in i0 .. i0 + BR, i ≥ j0:
            // at least MASK_ZEROS + 2 − BC − BR ≥ 0, and its BC floats end by MASK_ZEROS − 1 + BC
            // ≤ 2·MASK_ZEROS, the table's length.
            unsafe {
                let base = qkv.as_ptr().add(bi * t * c3);
                let k = base.add(c + h * hs);
                let dbase = dqkv.as_mut_ptr().add(bi * t * c3);
                let dk = dbase.add(c + h * hs);
                let dv = dbase.add(2 * c + h * hs);
                let o = out.as_ptr().add(bi * t * c + h * hs);
                let g = dout.as_ptr().add(bi * t * c + h * hs);
                let lse_h = lse.as_ptr().add((bi * nh + h) * t);
                pack_transposed(s, kt, k, c3, t, tp, hs, bc);
                pack_transposed(s, vt, base.add(2 * c + h * hs), c3, t, tp, hs, bc);
                pack_rows(qp, base.add(h * hs), c3, t, hs);
                pack_rows(gp, g, c, t, hs);
                std::ptr::write_bytes(dqp, 0, t * hs);
                for i in 0..t {
                    *dd.add(i) = dot(s, g.add(i * c), o.add(i * c), hs);
                }
                let mut j0 = 0;
                while j0 < t {
                    let nk = bc.min(t - j0);
                    // The panel: query rows i in j0..T (earlier rows see none of these keys).
                    let mut i0 = j0;
                    while i0 < t {
                        let nrows = BR.min(t - i0);
                        let rows: [usize; BR] = std::array::from_fn(|r| (i0 + r).min(t - 1));
                        let ktile = kt.add(j0 * hs);
                        let vtile = vt.add(j0 * hs);
                        let sacc =
                            dot_tile(s, rows.map(|i| qp.add(i * hs).cast_const()), ktile, bc, hs);
                        let dpacc =
                            dot_tile(s, rows.map(|i| gp.add(i * hs).cast_const()), vtile, bc, hs);
                        let diag = j0 + bc > i0 + 1;
                        let sc = s.splat(scale);
                        for r in 0..nrows {
                            let i = rows[r];
                            let lv = s.splat(*lse_h.add(i));
                            let dvec = s.splat(*dd.add(i));
                            let mut p0 = exp(s, s.sub(s.mul(sacc[r][0], sc), lv));
                            let mut p1 = exp(s, s.sub(s.mul(sacc[r][1], sc), lv));
                            if diag {
                                let keep = MASK_KEEP.as_ptr().add(MASK_ZEROS - 1 + j0 - i);
                                p0 = s.mul(p0, s.load(keep));
                                p1 = s.mul(p1, s.load(keep.add(l)));
                            }
                            let ds0 = s.mul(s.mul(p0, s.sub(dpacc[r][0], dvec)), sc);
                            let ds1 = s.mul(s.mul(p1, s.sub(dpacc[r][1], dvec)), sc);
                            let row = (i - j0) * BC_MAX;
                            s.store(pp.add(row), p0);
                            s.store(pp.add(row + l), p1);
                            s.store(dsp.add(row), ds0);
                            s.store(dsp.add(row + l), ds1);
                        }
                        // dQ_i += Σ_j dS_ij K_j.
                        rows_axpy(
                            s,
                            rows.map(|i| dqp.add(i * hs)),
                            nrows,
                            [1.0; BR],
                            dsp.add((i0 - j0) * BC_MAX),
                            BC_MAX,
                            k.add(j0 * c3),
                            c3,
                            nk,
                            hs,
                        );
                        i0 += BR;
                    }
                    // dV_j += Σ_i P_ij dout_i and dK_j += Σ_i dS_ij Q_i over the panel's rows.
                    // Rows i < j0 + k0 see none of the keys from j0 + k0 on (their P and dS are
                    // exactly 0), so each group of keys starts at its first key's row. The rows
                    // go in blocks of KEY_ROWS, every group of keys over one block before the
                    // next, so the block's dout and Q rows stay in L1 across the groups; a group's
                    // sums are stored after each block and reloaded for the next, which adds
                    // the rows in the same order (same bits).
                    let mut lo = j0;
                    while lo < t {
                        let hi = (lo + KEY_ROWS).min(t);
                        let mut k0 = 0;
                        while k0 < nk {
                            let from = lo.max(j0 + k0);
                            if from < hi {
                                let keys: [usize; KB] =
                                    std::array::from_fn(|kk| j0 + (k0 + kk).min(nk - 1));
                                let nkk = KB.min(nk - k0);
                                // Past the group's first row the block adds to what the
                                // blocks before it stored.
                                let add = accumulate || from > j0 + k0;
                                // dV from the P panel and dout's rows, dK from dS and Q's.
                                for (dst, panel, src) in [(dv, pp, gp), (dk, dsp, qp)] {
                                    keys_axpy(
                                        s,
                                        keys.map(|j| dst.add(j * c3)),
                                        nkk,
                                        panel.add((from - j0) * BC_MAX + k0),
                                        BC_MAX,
                                        src.add(from * hs),
                                        hs,
                                        hi - from,
                                        hs,
                                        add,
                                    );
                                }
                            }
                            k0 += KB;
                        }
                        lo = hi;
                    }
                    j0 += bc;
                }
                let dq = dbase.add(h * hs);
                for i in 0..t {
                    if accumulate {
                        add_row(s, dq.add(i * c3), dqp.add(i * hs), hs);
                    } else {
                        std::ptr::copy_nonoverlapping(dqp.add(i * hs), dq.add(i * c3), hs);
                    }
                }
            }
        }
    }
}

/// The reference: materialises each head's full (T, T) softmax, in f64.
pub mod oracle {
    /// Forward in f64: `out` (B, T, C) and `lse` (B, NH, T) from `qkv` (B, T, 3C).
    #[allow(clippy::too_many_arguments)]
    pub fn attention_fwd(
        out: &mut [f64],
        lse: &mut [f64],
        qkv: &[f64],
        b: usize,
        t: usize,
        c: usize,
        nh: usize,
    ) {
        let hs = c / nh;
        let scale = 1.0 / (hs as f64).sqrt();
        for bi in 0..b {
            for h in 0..nh {
                let q = |i: usize, d: usize| qkv[(bi * t + i) * 3 * c + h * hs + d];
                let k = |j: usize, d: usize| qkv[(bi * t + j) * 3 * c + c + h * hs + d];
                let v = |j: usize, d: usize| qkv[(bi * t + j) * 3 * c + 2 * c + h * hs + d];
                for i in 0..t {
                    let s: Vec<f64> = (0..=i)
                        .map(|j| scale * (0..hs).map(|d| q(i, d) * k(j, d)).sum::<f64>())
                        .collect();
                    let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let z: f64 = s.iter().map(|x| (x - m).exp()).sum();
                    lse[(bi * nh + h) * t + i] = m + z.ln();
                    for d in 0..hs {
                        out[(bi * t + i) * c + h * hs + d] =
                            (0..=i).map(|j| (s[j] - m).exp() / z * v(j, d)).sum();
                    }
                }
            }
        }
    }

    /// Backward in f64: adds d(loss)/d(qkv) into `dqkv` (B, T, 3C) given `dout` (B, T, C), from the
    /// full probability matrix `P` of each head: dV = Pᵀ·dout, dP = dout·Vᵀ,
    /// dS = P ∘ (dP − rowsum(P ∘ dP)), dQ = dS·K / √HS, dK = dSᵀ·Q / √HS.
    #[allow(clippy::too_many_arguments)]
    pub fn attention_bwd(
        dqkv: &mut [f64],
        dout: &[f64],
        qkv: &[f64],
        b: usize,
        t: usize,
        c: usize,
        nh: usize,
    ) {
        let hs = c / nh;
        let scale = 1.0 / (hs as f64).sqrt();
        let c3 = 3 * c;
        for bi in 0..b {
            for h in 0..nh {
                let at = |i: usize, off: usize, d: usize| (bi * t + i) * c3 + off + h * hs + d;
                let qkv_ = |i, off, d| qkv[at(i, off, d)];
                let g = |i: usize, d: usize| dout[(bi * t + i) * c + h * hs + d];
                // P (T, T), zero above the diagonal.
                let mut p = vec![0.0f64; t * t];
                for i in 0..t {
                    let s: Vec<f64> = (0..=i)
                        .map(|j| {
                            scale * (0..hs).map(|d| qkv_(i, 0, d) * qkv_(j, c, d)).sum::<f64>()
                        })
                        .collect();
                    let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let z: f64 = s.iter().map(|x| (x - m).exp()).sum();
                    for j in 0..=i {
                        p[i * t + j] = (s[j] - m).exp() / z;
                    }
                }
                for i in 0..t {
                    let dp: Vec<f64> = (0..=i)
                        .map(|j| (0..hs).map(|d| g(i, d) * qkv_(j, 2 * c, d)).sum::<f64>())
                        .collect();
                    let row: f64 = (0..=i).map(|j| p[i * t + j] * dp[j]).sum();
                    for j in 0..=i {
                        let ds = p[i * t + j] * (dp[j] - row) * scale;
                        for d in 0..hs {
                            dqkv[at(i, 0, d)] += ds * qkv_(j, c, d);
                            dqkv[at(j, c, d)] += ds * qkv_(i, 0, d);
                            dqkv[at(j, 2 * c, d)] += p[i * t + j] * g(i, d);
                        }
                    }
                }
            }
        }
    }
}
