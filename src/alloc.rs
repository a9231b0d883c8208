//! Fallible allocation: every buffer whose size comes from a user (a run-time width, a batch's
//! sample count, a file) is reserved with `try_reserve_exact`, so memory that cannot be had is
//! an error, never an abort.

use nalgebra::DMatrix;

use crate::error::ShapeError;

/// The most `f32` values one allocation can hold (`isize::MAX` bytes).
pub(crate) const MAX_VALUES: usize = isize::MAX as usize / core::mem::size_of::<f32>();

/// A vector of `len` zeros, or `None` when the allocator refuses it (or `len` is more than one
/// allocation can hold).
pub(crate) fn try_zeroed_vec(len: usize) -> Option<Vec<f32>> {
    if len > MAX_VALUES {
        return None;
    }
    let mut v = Vec::new();
    v.try_reserve_exact(len).ok()?;
    v.resize(len, 0.0);
    Some(v)
}

/// A `rows × cols` matrix of zeros; [`ShapeError::OutOfMemory`] naming `what` (a noun phrase
/// with the shape, built only on failure) when it cannot be had.
pub(crate) fn try_zeros(
    rows: usize,
    cols: usize,
    what: impl FnOnce() -> String,
) -> Result<DMatrix<f32>, ShapeError> {
    // The product of two `usize`s always fits in a `u128`.
    let fail = |what: String| ShapeError::OutOfMemory {
        what,
        values: rows as u128 * cols as u128,
    };
    match rows.checked_mul(cols).and_then(try_zeroed_vec) {
        Some(v) => Ok(DMatrix::from_vec(rows, cols, v)),
        None => Err(fail(what())),
    }
}

/// A copy of `m`, allocated fallibly.
pub(crate) fn try_clone(
    m: &DMatrix<f32>,
    what: impl FnOnce() -> String,
) -> Result<DMatrix<f32>, ShapeError> {
    let mut v = Vec::new();
    if v.try_reserve_exact(m.len()).is_err() {
        return Err(ShapeError::OutOfMemory {
            what: what(),
            values: m.len() as u128,
        });
    }
    v.extend_from_slice(m.as_slice());
    Ok(DMatrix::from_vec(m.nrows(), m.ncols(), v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn impossible_sizes_are_errors() {
        assert!(try_zeroed_vec(usize::MAX).is_none());
        assert!(try_zeroed_vec(MAX_VALUES + 1).is_none());
        let err = try_zeros(usize::MAX, 3, || "a test matrix".into()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot allocate 55340232221128654845 f32 values for a test matrix"
        );
        // 2^62 values (16 EiB) is no more than a slice can index, but no allocator gives it.
        assert!(try_zeros(1 << 31, 1 << 31, || String::new()).is_err());
        assert_eq!(try_zeros(2, 3, String::new).map(|m| m.shape()), Ok((2, 3)));
    }
}
