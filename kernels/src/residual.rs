//! Residual add: `out = a + b`, element-wise.

use crate::dispatch::dispatch;
use crate::error::{check_len, ShapeError};
use crate::simd::Simd;

/// `out[i] = a[i] + b[i]` for `i < n`.
pub fn residual_fwd(out: &mut [f32], a: &[f32], b: &[f32], n: usize) -> Result<(), ShapeError> {
    const K: &str = "residual_fwd";
    check_len(K, "out", out.len(), n, "n")?;
    check_len(K, "a", a.len(), n, "n")?;
    check_len(K, "b", b.len(), n, "n")?;
    residual_fwd_unchecked(&mut out[..n], &a[..n], &b[..n]);
    Ok(())
}

dispatch! {
    /// [`residual_fwd`] without the checks: all three slices must have the same length.
    pub fn residual_fwd_unchecked(out: &mut [f32], a: &[f32], b: &[f32]) = residual_fwd_generic;
}

#[inline(always)]
fn residual_fwd_generic<S: Simd>(s: S, out: &mut [f32], a: &[f32], b: &[f32]) {
    let n = out.len();
    assert!(a.len() == n && b.len() == n);
    let (o, a, b) = (out.as_mut_ptr(), a.as_ptr(), b.as_ptr());
    let mut i = 0;
    // SAFETY: every access is below `n`, the common length asserted above.
    unsafe {
        while i + S::LANES <= n {
            s.store(o.add(i), s.add(s.load(a.add(i)), s.load(b.add(i))));
            i += S::LANES;
        }
        if i < n {
            let rest = n - i;
            let v = s.add(
                s.load_partial(a.add(i), rest, 0.0),
                s.load_partial(b.add(i), rest, 0.0),
            );
            s.store_partial(o.add(i), rest, v);
        }
    }
}

/// The reference.
pub mod oracle {
    /// `out[i] = a[i] + b[i]`.
    pub fn residual_fwd(out: &mut [f32], a: &[f32], b: &[f32]) {
        for ((o, x), y) in out.iter_mut().zip(a).zip(b) {
            *o = x + y;
        }
    }
}
