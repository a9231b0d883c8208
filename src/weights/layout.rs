//! Between the file's row-major order and nalgebra's column-major one.

use nalgebra::DMatrix;

use crate::alloc::try_zeroed_vec;

/// Why [`column_major`] gave no matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Fault {
    /// The data does not hold `rows · cols` values.
    Length,
    /// The allocator refused the `rows · cols` values.
    Memory,
}

/// Decodes `data`, a `rows × cols` matrix stored row-major as little-endian values of `B` bytes,
/// into column-major order; [`Fault::Length`] when it does not hold `rows · cols` values,
/// [`Fault::Memory`] when they cannot be allocated.
pub(super) fn column_major<const B: usize>(
    data: &[u8],
    rows: usize,
    cols: usize,
    decode: impl Fn([u8; B]) -> f32,
) -> Result<Vec<f32>, Fault> {
    let (src, rest) = data.as_chunks::<B>();
    if !rest.is_empty() || Some(src.len()) != rows.checked_mul(cols) {
        return Err(Fault::Length);
    }
    let mut dst = try_zeroed_vec(src.len()).ok_or(Fault::Memory)?;
    transpose(src, rows, cols, &mut dst, |&b| decode(b));
    Ok(dst)
}

/// Writes `m`'s values in row-major order as little-endian `f32` bytes into `out`; `false`
/// (and `out` untouched) when `out` does not hold exactly `4 · m.len()` bytes.
#[must_use]
pub(super) fn write_row_major(m: &DMatrix<f32>, out: &mut [u8]) -> bool {
    let (rows, cols) = m.shape();
    let (dst, rest) = out.as_chunks_mut::<4>();
    if !rest.is_empty() || dst.len() != m.len() {
        return false;
    }
    // `m` is `rows × cols` column-major, that is `cols × rows` row-major.
    transpose(m.as_slice(), cols, rows, dst, |v| v.to_le_bytes());
    true
}

/// The side of the blocks [`transpose`] moves at a time.
const BLOCK: usize = 8;

/// Writes `map` of each value of `src`, a `rows × cols` row-major matrix, into `dst` in
/// column-major order (so `dst` is its transpose, row-major). Both slices hold `rows · cols`
/// values.
///
/// Block by block: the eight rows of an 8 × 8 block stay in L1 while its eight columns are
/// written as runs. For the 1024 × 1024 weight of `benches/weights.rs`, nalgebra's
/// `transpose()` after decoding made a load 49 times slower than decoding alone, and writing one
/// value at a time down each column (4 KB apart, all in one cache set) 26 times; this is about
/// 8 times (saving, about 2 times).
fn transpose<T, U>(src: &[T], rows: usize, cols: usize, dst: &mut [U], map: impl Fn(&T) -> U) {
    if rows <= 1 || cols <= 1 {
        // A vector: both orders are the same.
        for (d, s) in dst.iter_mut().zip(src) {
            *d = map(s);
        }
        return;
    }
    let full_rows = rows - rows % BLOCK;
    let full_cols = cols - cols % BLOCK;
    for r0 in (0..full_rows).step_by(BLOCK) {
        for c0 in (0..full_cols).step_by(BLOCK) {
            // The block's rows (eight runs of `src`) stay in L1 while its columns are written.
            let rows_of_block: [&[T]; BLOCK] = core::array::from_fn(|i| {
                let start = (r0 + i) * cols + c0;
                &src[start..start + BLOCK]
            });
            for j in 0..BLOCK {
                let start = (c0 + j) * rows + r0;
                for (d, row) in dst[start..start + BLOCK].iter_mut().zip(&rows_of_block) {
                    *d = map(&row[j]);
                }
            }
        }
    }
    // The ragged edges: the last `rows % 8` rows and `cols % 8` columns.
    for r in 0..rows {
        let from = if r < full_rows { full_cols } else { 0 };
        for c in from..cols {
            dst[c * rows + r] = map(&src[r * cols + c]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiled_layout_conversions_match_a_plain_transpose() {
        for (rows, cols) in [
            (0, 3),
            (3, 0),
            (1, 5),
            (5, 1),
            (2, 3),
            (32, 64),
            (37, 53),
            (70, 33),
        ] {
            let m = DMatrix::from_fn(rows, cols, |r, c| (r * 1000 + c) as f32);
            let expected: Vec<u8> = m
                .transpose()
                .as_slice()
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect();
            let mut bytes = vec![0; expected.len()];
            assert!(write_row_major(&m, &mut bytes));
            assert_eq!(bytes, expected, "{rows} × {cols}");
            let back = column_major(&bytes, rows, cols, f32::from_le_bytes);
            assert_eq!(back.as_deref(), Ok(m.as_slice()), "{rows} × {cols}");
            // A buffer of another length is refused, not indexed past its end.
            let mut longer = vec![7; expected.len() + 4];
            assert!(!write_row_major(&m, &mut longer));
            assert!(longer.iter().all(|&b| b == 7));
            if !expected.is_empty() {
                assert!(!write_row_major(&m, &mut bytes[1..]));
            }
        }
        // Data that does not fill the matrix is refused, not indexed past its end.
        let fault = Err(Fault::Length);
        assert_eq!(column_major(&[0; 20], 2, 3, f32::from_le_bytes), fault);
        assert_eq!(column_major(&[0; 25], 2, 3, f32::from_le_bytes), fault);
        assert_eq!(
            column_major(&[0; 4], usize::MAX, 2, f32::from_le_bytes),
            fault
        );
    }
}
