//! GELU in GPT-2's tanh form, forward and backward (llm.c's `gelu_forward`, `gelu_backward`):
//! `gelu(x) = 0.5 x (1 + tanh(u))`, `u = sqrt(2/pi) (x + 0.044715 x^3)`.
//!
//! Both directions go through one `e = e^(-2u)`, so that `0.5 (1 + tanh u) = 1 / (1 + e)` (the
//! logistic of 2u) and `gelu(x) = x / (1 + e)`: one exponential and one division, and no
//! cancellation where `1 + tanh u` is tiny (negative x), so the result keeps its relative precision
//! there. `e` is computed as `2^(y/8)` with `y = -16u log2(e) = x (Y1 + Y3 x^2)`: the `8 log2 e` is
//! folded into the cubic's coefficients, so [`crate::math::exp2_eighths_parts_k`] needs no
//! reduction by ln 2.
//!
//! Both loops take four vectors per iteration and compute their exponentials in lockstep, one
//! step of the chain for all four before the next: one vector's exp is a long chain of dependent
//! operations, and a core with a small scheduler overlaps several chains only when their
//! operations come interleaved. Only three values per vector stay live across the exponential
//! (`x` is loaded again afterwards for the division and the derivative), so four vectors fit
//! AVX2's sixteen registers. Measured on an AVX2 core (Zen): two, three or eight vectors per
//! iteration, or keeping `x` in registers, made the backward up to a fifth slower; the forward,
//! since its exponential by eighths, is level within 2 % from two to six vectors (below).
//!
//! The forward is bound by issue on that core, not by memory: about 1.0 ns per element with the
//! data in L1 and 1.1 out of cache, some 20 instructions and 20 cycles per 8-element vector
//! (2 loads, a store, 2 clamps, 3 for the cubic, 3 for the rounding, 3 multiply-adds of the
//! polynomial, 3 integer steps for the scale, the multiply-add for `1 + e` and the division).
//! Tried there and not kept, each timed against the kernel in one process: a reciprocal estimate
//! with one Newton step instead of the division (10 % slower: three more multiply-adds on the
//! pipes the division leaves free), streaming stores for `out` (10 % slower), shorter dependency
//! chains (Estrin's scheme, the cubic as one multiply-add of two products: no change), two to
//! six vectors per iteration or a software-pipelined loop (within 2 %). Dropping the division
//! altogether saves only 2 cycles per vector, and each multiply-add of the polynomial ~2: the
//! eighths table of [`crate::math::exp2_eighths_parts_k`] took two of them out (backward 4 %
//! faster, forward level).
//!
//! On an AVX-512 core (Sapphire Rapids class) the same loop takes 0.25 ns per element in L1 (0.265
//! on its AVX2 path: a 512-bit division costs twice a 256-bit one), and out of cache it keeps up
//! with memory. Both loops prefetch each input 16 KiB ahead (Intel's prefetchers stop at each 4 KiB
//! page; criterion's forward 7.2–8.1 → 6.0–6.9 ms), and the forward writes an output longer than
//! [`stream_threshold`] with streaming stores: a plain store first reads its line for ownership, a
//! third memory stream beside the input and the output. Criterion's forward on 4096×3072 and
//! 8192×1536 (every buffer on huge pages), the binaries alternated twice: 5.4–7.3 ms with plain
//! stores, 3.9–4.2 with streaming ones, where a copy of the same bytes at the memory's rate takes
//! 4.5–4.8 (its AVX2 path: 6.4–6.6 against 3.9–4.3). The GEMM that reads the output next then
//! finds none of it in the last-level cache; training steps at GPT-2 small's width (C = 768, 4096
//! tokens, 2 threads) and of the default bench model (1 thread) came out level, three alternated
//! pairs each. (The 10 % loss of streaming stores
//! on the Zen core above was measured with the input on 4 KiB pages, and not since.)

use crate::dispatch::dispatch;
use crate::error::{check_len, ShapeError};
use crate::gemm::blocking::CacheSizes;
use crate::math::exp2_eighths_parts_k;
use crate::simd::{prefetch_read, Simd, LINE_FLOATS};

// With S = sqrt(2 / pi) and the cubic coefficient K = 0.044715, u = S (x + K x^3):
/// `-16 S log2(e)`: `y = x (Y1 + Y3 x^2) = -16u log2(e)`, so `e^(-2u) = 2^(y/8)`.
const Y1: f32 = 8.0 * -2.302_208_2;
/// `-16 S K log2(e)`.
const Y3: f32 = 8.0 * -0.102_943_24;
/// `2 S`: `d(2u)/dx = Q1 + Q3 x^2`.
const Q1: f32 = 1.595_769_2;
/// `6 S K`.
const Q3: f32 = 0.214_064_45;

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

/// Vectors per iteration of the main loops.
const STEP: usize = 4;

/// How far ahead of the main loops (in floats, 16 KiB) each input is prefetched, a cache line
/// at a time. The loops are long chains of arithmetic per line, so the out-of-order window
/// reaches only a few iterations ahead, and Intel's prefetchers stop at each 4 KiB page.
const PREFETCH_AHEAD: usize = 4096;

/// Prefetch the lines of `p[i + PREFETCH_AHEAD ..]` that one main-loop iteration of `lanes`-wide
/// vectors will read.
#[inline(always)]
fn prefetch_ahead(p: *const f32, i: usize, lanes: usize) {
    for c in (0..STEP * lanes).step_by(LINE_FLOATS) {
        // A hint: the address may lie past the slice (wrapping_add never dereferences it).
        prefetch_read(p.wrapping_add(i + c + PREFETCH_AHEAD));
    }
}

/// Outputs of more floats than this are written with streaming stores: the size of this core's
/// L2 (detected once; [`crate::gemm::blocking::CacheSizes`]). An output that large is not all in
/// the core's own caches when the next kernel reads it, whatever the stores, and a plain store
/// first reads its line for ownership: out of cache that is a third read stream on top of the
/// input and the output. Below it the output stays where its reader finds it. Between L2 and
/// the last-level cache (a VM's reported L3 says little about its share) streaming is a
/// trade: on the Xeon guest, 2–12 MB outputs took 0–7 % longer with the input in the cache and
/// 10–25 % less with it in memory (one process, alternated, best of 12).
pub fn stream_threshold() -> usize {
    CacheSizes::detect().l2 / std::mem::size_of::<f32>()
}

#[inline(always)]
fn gelu_fwd_generic<S: Simd>(s: S, out: &mut [f32], inp: &[f32]) {
    let n = out.len();
    assert!(inp.len() == n);
    if n > stream_threshold() {
        // Plain stores up to the first cache line of `out`, streaming stores of whole aligned
        // vectors from there, then the fence that orders them before whatever hands `out` on.
        let head = out.as_ptr().align_offset(4 * LINE_FLOATS).min(n);
        let (out_head, out_rest) = out.split_at_mut(head);
        let (inp_head, inp_rest) = inp.split_at(head);
        gelu_fwd_run::<S, false>(s, out_head, inp_head);
        gelu_fwd_run::<S, true>(s, out_rest, inp_rest);
        s.stream_fence();
    } else {
        gelu_fwd_run::<S, false>(s, out, inp);
    }
}

/// A plain store, or with `STREAM` a streaming one.
///
/// # Safety
/// As [`Simd::store`]; with `STREAM`, as [`Simd::store_stream`] (`p` aligned to the vector).
#[inline(always)]
unsafe fn put<S: Simd, const STREAM: bool>(s: S, p: *mut f32, v: S::V) {
    // SAFETY: the caller's promise.
    unsafe {
        if STREAM {
            s.store_stream(p, v)
        } else {
            s.store(p, v)
        }
    }
}

#[inline(always)]
fn gelu_fwd_run<S: Simd, const STREAM: bool>(s: S, out: &mut [f32], inp: &[f32]) {
    let n = out.len();
    assert!(inp.len() == n);
    // Streaming stores need `out` aligned to the vector; every full vector below starts a whole
    // number of vectors past `out`.
    assert!(!STREAM || n < S::LANES || (out.as_ptr() as usize).is_multiple_of(4 * S::LANES));
    let (o, x, l) = (out.as_mut_ptr(), inp.as_ptr(), S::LANES);
    let mut i = 0;
    // SAFETY: every access is below `n`, the common length asserted above; with `STREAM`, every
    // full vector stored is aligned (asserted above).
    unsafe {
        while i + STEP * l <= n {
            prefetch_ahead(x, i, l);
            let mut v = [s.zero(); STEP];
            for (k, v) in v.iter_mut().enumerate() {
                *v = s.load(x.add(i + k * l));
            }
            // `x` is loaded again for the division rather than kept in a register across the
            // exponential.
            let (p, scale) = exp_m2u_k(s, v);
            for k in 0..STEP {
                let j = i + k * l;
                let d = s.fma(p[k], scale[k], s.splat(1.0));
                put::<S, STREAM>(s, o.add(j), s.div(s.load(x.add(j)), d));
            }
            i += STEP * l;
        }
        while i + l <= n {
            let v = s.load(x.add(i));
            let ([p], [scale]) = exp_m2u_k(s, [v]);
            put::<S, STREAM>(s, o.add(i), s.div(v, s.fma(p, scale, s.splat(1.0))));
            i += l;
        }
        if i < n {
            let rest = n - i;
            let v = s.load_partial(x.add(i), rest, 0.0);
            let ([p], [scale]) = exp_m2u_k(s, [v]);
            s.store_partial(o.add(i), rest, s.div(v, s.fma(p, scale, s.splat(1.0))));
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

/// `d[i] = d[i] * gelu'(inp[i])` for `i < n`: the gradient of GELU's output turned into that of
/// its input in place, the same bits as [`gelu_bwd`] into a zeroed buffer without the buffer,
/// its zeroing or the reads of its zeros.
///
/// d (N), inp (N).
pub fn gelu_bwd_inplace(d: &mut [f32], inp: &[f32], n: usize) -> Result<(), ShapeError> {
    const K: &str = "gelu_bwd_inplace";
    check_len(K, "d", d.len(), n, "N")?;
    check_len(K, "inp", inp.len(), n, "N")?;
    gelu_bwd_inplace_unchecked(&mut d[..n], &inp[..n]);
    Ok(())
}

dispatch! {
    /// [`gelu_bwd_inplace`] without the checks: both slices must have the same length.
    pub fn gelu_bwd_inplace_unchecked(d: &mut [f32], inp: &[f32]) = gelu_bwd_inplace_generic;
}

/// `e^(-2u)` for K vectors as the two factors of [`exp2_eighths_parts_k`], step by step across
/// them.
#[inline(always)]
fn exp_m2u_k<S: Simd, const K: usize>(s: S, x: [S::V; K]) -> ([S::V; K], [S::V; K]) {
    let mut y = x;
    for k in 0..K {
        let x2 = s.mul(x[k], x[k]);
        y[k] = s.mul(x[k], s.fma(x2, s.splat(Y3), s.splat(Y1)));
    }
    exp2_eighths_parts_k(s, y)
}

/// `gelu'(x)` given `e^(-2u) = p * scale`. With r = 1 / (1 + e) (the logistic of 2u, whose
/// derivative is r (1 - r) = r (e r)): gelu'(x) = r + x r (e r) d(2u)/dx. The product is taken as
/// (r x q) (e r) so that no factor overflows: e r <= 1 even where e is huge (x << 0).
#[inline(always)]
fn gelu_grad<S: Simd>(s: S, x: S::V, p: S::V, scale: S::V) -> S::V {
    let e = s.mul(p, scale);
    let r = s.div(s.splat(1.0), s.add(e, s.splat(1.0)));
    let xq = s.mul(x, s.fma(s.mul(x, x), s.splat(Q3), s.splat(Q1)));
    s.fma(s.mul(r, xq), s.mul(e, r), r)
}

// The per-vector helpers here and in the other kernels are `#[inline(always)]` functions, not
// closures: a closure is a function of its own that does not inherit the `#[target_feature]` of
// the dispatched entry point, so its intrinsics would not inline.
#[inline(always)]
fn gelu_bwd_generic<S: Simd>(s: S, dinp: &mut [f32], inp: &[f32], dout: &[f32]) {
    let n = dinp.len();
    assert!(inp.len() == n && dout.len() == n);
    // SAFETY: all three hold n floats (asserted above), and `dinp` is borrowed mutably, so it
    // overlaps neither input.
    unsafe { gelu_bwd_raw::<S, true>(s, dinp.as_mut_ptr(), inp.as_ptr(), dout.as_ptr(), n) }
}

#[inline(always)]
fn gelu_bwd_inplace_generic<S: Simd>(s: S, d: &mut [f32], inp: &[f32]) {
    let n = d.len();
    assert!(inp.len() == n);
    let dp = d.as_mut_ptr();
    // SAFETY: both hold n floats (asserted above); `dy` is `dx` itself, which the loops allow:
    // each element's gradient is read before the same element is written.
    unsafe { gelu_bwd_raw::<S, false>(s, dp, inp.as_ptr(), dp.cast_const(), n) }
}

/// `dx[i] = dy[i] · gelu'(x[i]) (+ dx[i] with `ACC`)` for `i < n`. Without `ACC` the product is
/// still taken as a multiply-add, onto zero, so the two give the same bits from a zeroed `dx`.
///
/// # Safety
/// `dx` valid for reads and writes of `n` floats, `x` and `dy` for reads; `x` must not overlap
/// `dx`, and `dy` may only overlap `dx` exactly (the same element at each index).
#[inline(always)]
unsafe fn gelu_bwd_raw<S: Simd, const ACC: bool>(
    s: S,
    dx: *mut f32,
    x: *const f32,
    dy: *const f32,
    n: usize,
) {
    let l = S::LANES;
    let mut i = 0;
    // SAFETY: every access is below `n` (the caller's promise); each index's `dy` is loaded
    // before its `dx` is stored.
    unsafe {
        while i + STEP * l <= n {
            prefetch_ahead(x, i, l);
            prefetch_ahead(dy, i, l);
            if ACC {
                prefetch_ahead(dx, i, l);
            }
            let mut v = [s.zero(); STEP];
            for (k, v) in v.iter_mut().enumerate() {
                *v = s.load(x.add(i + k * l));
            }
            // As in the forward, `x` is loaded again after the exponential.
            let (p, scale) = exp_m2u_k(s, v);
            for k in 0..STEP {
                let j = i + k * l;
                let g = gelu_grad(s, s.load(x.add(j)), p[k], scale[k]);
                let acc = if ACC { s.load(dx.add(j)) } else { s.zero() };
                s.store(dx.add(j), s.fma(g, s.load(dy.add(j)), acc));
            }
            i += STEP * l;
        }
        while i + l <= n {
            let v = s.load(x.add(i));
            let ([p], [scale]) = exp_m2u_k(s, [v]);
            let g = gelu_grad(s, v, p, scale);
            let acc = if ACC { s.load(dx.add(i)) } else { s.zero() };
            s.store(dx.add(i), s.fma(g, s.load(dy.add(i)), acc));
            i += l;
        }
        if i < n {
            let rest = n - i;
            let v = s.load_partial(x.add(i), rest, 0.0);
            let ([p], [scale]) = exp_m2u_k(s, [v]);
            let g = gelu_grad(s, v, p, scale);
            let acc = if ACC {
                s.load_partial(dx.add(i), rest, 0.0)
            } else {
                s.zero()
            };
            let d = s.fma(g, s.load_partial(dy.add(i), rest, 0.0), acc);
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
