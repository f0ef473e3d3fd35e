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
