//! The optimizer kernels: one AdamW step as `torch.optim.AdamW` takes it, and the two kernels of
//! global-norm gradient clipping (`clip_grad_norm_`): a sum of squares and an in-place scale.
//!
//! Shapes: one flat tensor of N parameters, with its gradient and two moment buffers of N each.

use crate::dispatch::dispatch;
use crate::error::{check_len, ShapeError};
use crate::simd::Simd;

/// AdamW's hyperparameters for one step, in f64 as PyTorch holds them (Python floats).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWHparams {
    /// Learning rate.
    pub lr: f64,
    /// Decay of the first moment.
    pub beta1: f64,
    /// Decay of the second moment.
    pub beta2: f64,
    /// Added to the bias-corrected root second moment.
    pub eps: f64,
    /// Decoupled weight decay (0 for tensors that take none, such as biases and LayerNorm).
    pub weight_decay: f64,
    /// The step being taken, counted from 1.
    pub step: u64,
}

/// The f32 scalars of one step, computed from [`AdamWHparams`] in f64 and rounded once, as
/// PyTorch computes them in Python and hands them to its f32 tensor ops.
#[derive(Clone, Copy, Debug)]
struct Coeffs {
    /// `1 - lr * weight_decay`.
    decay: f32,
    /// `1 - beta1`, the weight of `lerp(m, g, 1 - beta1)`.
    lerp_w: f32,
    /// Whether `lerp_w < 0.5`, which selects PyTorch's lerp formula.
    lerp_small: bool,
    beta2: f32,
    one_minus_beta2: f32,
    /// `sqrt(1 - beta2^t)`.
    bc2_sqrt: f32,
    /// `-lr / (1 - beta1^t)`.
    neg_step_size: f32,
    eps: f32,
}

impl Coeffs {
    fn new(h: &AdamWHparams) -> Coeffs {
        let t = h.step as f64;
        let lerp_w = 1.0 - h.beta1;
        Coeffs {
            decay: (1.0 - h.lr * h.weight_decay) as f32,
            lerp_w: lerp_w as f32,
            lerp_small: lerp_w.abs() < 0.5,
            beta2: h.beta2 as f32,
            one_minus_beta2: (1.0 - h.beta2) as f32,
            bc2_sqrt: (1.0 - h.beta2.powf(t)).sqrt() as f32,
            neg_step_size: (-h.lr / (1.0 - h.beta1.powf(t))) as f32,
            eps: h.eps as f32,
        }
    }
}

/// One AdamW step on N parameters, in PyTorch's order of operations (its single-tensor path):
///
/// ```text
/// p = p * (1 - lr * wd)
/// m = lerp(m, g, 1 - beta1)                  // m + (1 - beta1) (g - m)
/// v = v * beta2 + (1 - beta2) * g * g
/// denom = sqrt(v) / sqrt(1 - beta2^t) + eps
/// p = p + (-lr / (1 - beta1^t)) * m / denom
/// ```
///
/// params (N), grads (N), m (N), v (N). `h.step` must be at least 1.
pub fn adamw_step(
    params: &mut [f32],
    grads: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    n: usize,
    h: &AdamWHparams,
) -> Result<(), ShapeError> {
    const K: &str = "adamw_step";
    check_len(K, "params", params.len(), n, "N")?;
    check_len(K, "grads", grads.len(), n, "N")?;
    check_len(K, "m", m.len(), n, "N")?;
    check_len(K, "v", v.len(), n, "N")?;
    if h.step == 0 {
        return Err(ShapeError {
            kernel: K,
            detail:
                "step is 0, but steps count from 1 (the bias corrections divide by 1 - beta^step)"
                    .to_string(),
        });
    }
    adamw_step_unchecked(&mut params[..n], &grads[..n], &mut m[..n], &mut v[..n], h);
    Ok(())
}

dispatch! {
    /// [`adamw_step`] without the checks: all four slices must have the same length.
    pub fn adamw_step_unchecked(
        params: &mut [f32],
        grads: &[f32],
        m: &mut [f32],
        v: &mut [f32],
        h: &AdamWHparams,
    ) = adamw_step_generic;
}

/// [`Coeffs`] splatted, and PyTorch's lerp `m + w (g - m)` (|w| < 0.5) or `g - (1 - w) (g - m)`
/// written as one FMA `coeff * (g - m) + base`.
struct VCoeffs<S: Simd> {
    decay: S::V,
    lerp_coeff: S::V,
    lerp_base_is_m: bool,
    beta2: S::V,
    one_minus_beta2: S::V,
    bc2_sqrt: S::V,
    eps: S::V,
    neg_step_size: S::V,
}

impl<S: Simd> VCoeffs<S> {
    #[inline(always)]
    fn new(s: S, k: &Coeffs) -> VCoeffs<S> {
        VCoeffs {
            decay: s.splat(k.decay),
            lerp_coeff: s.splat(if k.lerp_small {
                k.lerp_w
            } else {
                k.lerp_w - 1.0
            }),
            lerp_base_is_m: k.lerp_small,
            beta2: s.splat(k.beta2),
            one_minus_beta2: s.splat(k.one_minus_beta2),
            bc2_sqrt: s.splat(k.bc2_sqrt),
            eps: s.splat(k.eps),
            neg_step_size: s.splat(k.neg_step_size),
        }
    }
}

/// One vector of the step: the new (param, m, v).
#[inline(always)]
fn adamw_v<S: Simd>(
    s: S,
    k: &VCoeffs<S>,
    p: S::V,
    g: S::V,
    m: S::V,
    v: S::V,
) -> (S::V, S::V, S::V) {
    let p = s.mul(p, k.decay);
    let base = if k.lerp_base_is_m { m } else { g };
    let m = s.fma(k.lerp_coeff, s.sub(g, m), base);
    let v = s.add(s.mul(v, k.beta2), s.mul(s.mul(k.one_minus_beta2, g), g));
    let denom = s.add(s.div(s.sqrt(v), k.bc2_sqrt), k.eps);
    let p = s.add(p, s.div(s.mul(k.neg_step_size, m), denom));
    (p, m, v)
}

#[inline(always)]
fn adamw_step_generic<S: Simd>(
    s: S,
    params: &mut [f32],
    grads: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    h: &AdamWHparams,
) {
    let n = params.len();
    assert!(grads.len() == n && m.len() == n && v.len() == n);
    let k = VCoeffs::new(s, &Coeffs::new(h));
    let (pp, gp, mp, vp) = (
        params.as_mut_ptr(),
        grads.as_ptr(),
        m.as_mut_ptr(),
        v.as_mut_ptr(),
    );
    let mut i = 0;
    // SAFETY: every access is below `n`, the common length asserted above.
    unsafe {
        while i + S::LANES <= n {
            let (p, mv, vv) = adamw_v(
                s,
                &k,
                s.load(pp.add(i)),
                s.load(gp.add(i)),
                s.load(mp.add(i)),
                s.load(vp.add(i)),
            );
            s.store(pp.add(i), p);
            s.store(mp.add(i), mv);
            s.store(vp.add(i), vv);
            i += S::LANES;
        }
        if i < n {
            let rest = n - i;
            let (p, mv, vv) = adamw_v(
                s,
                &k,
                s.load_partial(pp.add(i), rest, 0.0),
                s.load_partial(gp.add(i), rest, 0.0),
                s.load_partial(mp.add(i), rest, 0.0),
                s.load_partial(vp.add(i), rest, 0.0),
            );
            s.store_partial(pp.add(i), rest, p);
            s.store_partial(mp.add(i), rest, mv);
            s.store_partial(vp.add(i), rest, vv);
        }
    }
}

/// `x[i] *= scale` for `i < n` (gradient clipping multiplies every gradient by `max_norm / norm`).
///
/// x (N).
pub fn scale(x: &mut [f32], scale: f32, n: usize) -> Result<(), ShapeError> {
    check_len("scale", "x", x.len(), n, "N")?;
    scale_unchecked(&mut x[..n], scale);
    Ok(())
}

dispatch! {
    /// [`scale`] on the whole slice.
    pub fn scale_unchecked(x: &mut [f32], scale: f32) = scale_generic;
}

#[inline(always)]
fn scale_generic<S: Simd>(s: S, x: &mut [f32], scale: f32) {
    let n = x.len();
    let (p, k) = (x.as_mut_ptr(), s.splat(scale));
    let mut i = 0;
    // SAFETY: every access is below `n = x.len()`.
    unsafe {
        while i + S::LANES <= n {
            s.store(p.add(i), s.mul(s.load(p.add(i)), k));
            i += S::LANES;
        }
        if i < n {
            let rest = n - i;
            s.store_partial(
                p.add(i),
                rest,
                s.mul(s.load_partial(p.add(i), rest, 0.0), k),
            );
        }
    }
}

/// Floats summed in f32 lanes before the block's sum joins the f64 total (see [`sumsq`]).
const SUMSQ_BLOCK: usize = 1024;

/// `Σ x[i]^2` over `i < n`, returned in f64 (the squared global gradient norm is the sum of these
/// over all tensors).
///
/// x (N).
///
/// Precision: the squares are summed in blocks of 1024 floats with four f32 vector accumulators,
/// so each lane adds at most 256 terms (16 on AVX-512, 32 on AVX2, 256 on the 1-lane scalar path)
/// and its relative error stays below ~256 ulp in the worst case (~16 ulp typically); each block
/// sum is then added in f64, so the error does not grow with N (124M parameters would otherwise
/// put it near 1e-3 for a plain f32 sum). Converting every float to f64 instead would double the
/// instructions of a kernel that should run at memory speed, and the vector trait is f32 only.
pub fn sumsq(x: &[f32], n: usize) -> Result<f64, ShapeError> {
    check_len("sumsq", "x", x.len(), n, "N")?;
    Ok(sumsq_unchecked(&x[..n]))
}

dispatch! {
    /// [`sumsq`] of the whole slice.
    pub fn sumsq_unchecked(x: &[f32]) -> f64 = sumsq_generic;
}

#[inline(always)]
fn sumsq_generic<S: Simd>(s: S, x: &[f32]) -> f64 {
    let l = S::LANES;
    let mut total = 0.0f64;
    for block in x.chunks(SUMSQ_BLOCK) {
        let (p, n) = (block.as_ptr(), block.len());
        let mut acc = [s.zero(); 4];
        let mut i = 0;
        // SAFETY: every access is below `n = block.len()`.
        unsafe {
            while i + 4 * l <= n {
                for (k, a) in acc.iter_mut().enumerate() {
                    let v = s.load(p.add(i + k * l));
                    *a = s.fma(v, v, *a);
                }
                i += 4 * l;
            }
            while i < n {
                let rest = (n - i).min(l);
                let v = s.load_partial(p.add(i), rest, 0.0);
                acc[0] = s.fma(v, v, acc[0]);
                i += rest;
            }
        }
        total += s.reduce_add(s.add(s.add(acc[0], acc[1]), s.add(acc[2], acc[3]))) as f64;
    }
    total
}

/// The reference: PyTorch's formulas evaluated in f64.
pub mod oracle {
    use super::AdamWHparams;

    /// One AdamW step; params (N), grads (N), m (N), v (N).
    pub fn adamw_step(
        params: &mut [f32],
        grads: &[f32],
        m: &mut [f32],
        v: &mut [f32],
        h: &AdamWHparams,
    ) {
        let t = h.step as f64;
        let bc1 = 1.0 - h.beta1.powf(t);
        let bc2 = 1.0 - h.beta2.powf(t);
        for i in 0..params.len() {
            let g = grads[i] as f64;
            let p = params[i] as f64 * (1.0 - h.lr * h.weight_decay);
            let mm = h.beta1 * m[i] as f64 + (1.0 - h.beta1) * g;
            let vv = h.beta2 * v[i] as f64 + (1.0 - h.beta2) * g * g;
            let denom = vv.sqrt() / bc2.sqrt() + h.eps;
            params[i] = (p - h.lr / bc1 * mm / denom) as f32;
            m[i] = mm as f32;
            v[i] = vv as f32;
        }
    }

    /// `x[i] *= scale`.
    pub fn scale(x: &mut [f32], scale: f32) {
        for v in x {
            *v *= scale;
        }
    }

    /// `Σ x[i]^2` in f64.
    pub fn sumsq(x: &[f32]) -> f64 {
        x.iter().map(|&v| (v as f64) * (v as f64)).sum()
    }
}
