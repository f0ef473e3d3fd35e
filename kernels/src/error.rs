//! The kernels' typed errors.

/// A checked kernel entry point was given slices that disagree with its declared dimensions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kernel}: {detail}")]
pub struct ShapeError {
    /// The kernel that refused the call.
    pub kernel: &'static str,
    /// Which argument, its length and the length the dimensions call for.
    pub detail: String,
}

/// Require `len >= need` for argument `arg` of `kernel` (`shape` names the dimensions, e.g. "B*T*C").
#[inline]
pub(crate) fn check_len(
    kernel: &'static str,
    arg: &str,
    len: usize,
    need: usize,
    shape: &str,
) -> Result<(), ShapeError> {
    if len >= need {
        Ok(())
    } else {
        Err(ShapeError {
            kernel,
            detail: format!("`{arg}` has {len} elements but {shape} = {need} are needed"),
        })
    }
}

/// The product of shape values, saturating at `usize::MAX` instead of wrapping. Every length a
/// check or an unchecked kernel's assert compares with is computed this way: a wrapped product
/// could pass the comparison and send the unchecked loops, which use the dimensions themselves,
/// far outside the slices; a saturated one fails it, since no `f32` slice is that long.
#[inline]
pub(crate) fn elems(dims: &[usize]) -> usize {
    if dims.contains(&0) {
        return 0;
    }
    dims.iter()
        .try_fold(1usize, |p, &d| p.checked_mul(d))
        .unwrap_or(usize::MAX)
}

/// Elements `rows` rows of `cols` floats at row stride `ld` span (0 without rows), saturating
/// like [`elems`].
#[inline]
pub(crate) fn strided(rows: usize, cols: usize, ld: usize) -> usize {
    match rows {
        0 => 0,
        _ => elems(&[rows - 1, ld]).saturating_add(cols),
    }
}
