//! Batches: one column per sample, the feature count in the type.

use generic_array::{ArrayLength, GenericArray};
use nalgebra::DMatrix;

use crate::dim::{Dim, Dyn, StaticDim};
use crate::error::ShapeError;

/// A batch of samples, stored as a `features × samples` matrix: one column per sample.
///
/// The feature count is part of the type (`Batch<U20>`) or known at run time (`Batch<Dyn>`),
/// so a net bound to `U20` accepts a `Batch<U20>` without any run-time check. The column
/// layout lets a dense layer compute `W · X` with the fast GEMM kernel at every batch size.
///
/// # Type parameters
/// * `N`: the number of features per sample.
///
/// # Example
/// ```
/// use lazynet::prelude::*;
/// use lazynet::nalgebra::DMatrix;
///
/// let x = Batch::<U3>::from_fn(2, |feature, sample| (feature + 10 * sample) as f32);
/// assert_eq!(x.as_matrix()[(2, 1)], 12.0);
///
/// let m = DMatrix::<f32>::zeros(3, 5);
/// let y = Batch::<U3>::try_from_matrix(m.clone())?;
/// assert_eq!(y.samples(), 5);
/// assert!(Batch::<U4>::try_from_matrix(m).is_err());
/// # Ok::<(), ShapeError>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Batch<N: Dim> {
    data: DMatrix<f32>,
    features: N,
}

impl<N: Dim> Batch<N> {
    /// Wraps a `features × samples` matrix; `Err` when its row count is not `N`.
    ///
    /// For `Batch<Dyn>` any row count is accepted.
    pub fn try_from_matrix(data: DMatrix<f32>) -> Result<Self, ShapeError> {
        match N::from_size(data.nrows()) {
            Some(features) => Ok(Batch { data, features }),
            None => Err(ShapeError::Features {
                expected: N::default().size(),
                actual: data.nrows(),
            }),
        }
    }

    /// The `features × samples` matrix.
    pub fn as_matrix(&self) -> &DMatrix<f32> {
        &self.data
    }

    /// Gives the matrix back.
    pub fn into_matrix(self) -> DMatrix<f32> {
        self.data
    }

    /// The feature dimension.
    pub fn features(&self) -> N {
        self.features
    }

    /// The number of samples (columns).
    pub fn samples(&self) -> usize {
        self.data.ncols()
    }

    /// Sample `j` as a slice of its features; `None` past the end.
    pub fn sample(&self, j: usize) -> Option<&[f32]> {
        let rows = self.data.nrows();
        let start = j.checked_mul(rows)?;
        self.data.as_slice().get(start..start.checked_add(rows)?)
    }

    /// Forgets the static feature count.
    pub fn into_dyn(self) -> Batch<Dyn> {
        Batch {
            features: Dyn(self.features.size()),
            data: self.data,
        }
    }

    pub(crate) fn from_parts(data: DMatrix<f32>, features: N) -> Self {
        Batch { data, features }
    }
}

impl<N: StaticDim> Batch<N> {
    /// A batch of `samples` samples whose value at (`feature`, `sample`) is `f(feature, sample)`.
    pub fn from_fn(samples: usize, f: impl FnMut(usize, usize) -> f32) -> Self {
        Batch {
            data: DMatrix::from_fn(N::USIZE, samples, f),
            features: N::default(),
        }
    }

    /// A batch of `samples` samples of zeros.
    pub fn zeros(samples: usize) -> Self {
        Batch {
            data: DMatrix::zeros(N::USIZE, samples),
            features: N::default(),
        }
    }
}

impl<N: StaticDim + ArrayLength> Batch<N> {
    /// Stacks samples into a batch, one column each.
    ///
    /// ```
    /// use lazynet::prelude::*;
    ///
    /// let s: GenericArray<f32, U2> = GenericArray::from_array([1.0, 2.0]);
    /// let x = Batch::<U2>::from_samples(&[s, s]);
    /// assert_eq!(x.samples(), 2);
    /// assert_eq!(x.sample(1), Some(&[1.0, 2.0][..]));
    /// ```
    pub fn from_samples(samples: &[GenericArray<f32, N>]) -> Self {
        let data = DMatrix::from_iterator(
            N::USIZE,
            samples.len(),
            samples.iter().flat_map(|s| s.iter().copied()),
        );
        Batch {
            data,
            features: N::default(),
        }
    }
}

impl Batch<Dyn> {
    /// A batch of `features` features and `samples` samples whose value at (`feature`,
    /// `sample`) is `f(feature, sample)`.
    pub fn from_fn_dyn(
        features: usize,
        samples: usize,
        f: impl FnMut(usize, usize) -> f32,
    ) -> Self {
        Batch {
            data: DMatrix::from_fn(features, samples, f),
            features: Dyn(features),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use typenum::{U2, U3};

    #[test]
    fn columns_are_samples() {
        let x = Batch::<U2>::from_fn(3, |f, s| (10 * s + f) as f32);
        assert_eq!(x.sample(0), Some(&[0.0, 1.0][..]));
        assert_eq!(x.sample(2), Some(&[20.0, 21.0][..]));
        assert_eq!(x.sample(3), None);
        assert_eq!(x.sample(usize::MAX), None);
        assert_eq!(x.features().size(), 2);
    }

    #[test]
    fn wrong_row_count_is_an_error_not_a_panic() {
        let err = Batch::<U3>::try_from_matrix(DMatrix::zeros(2, 4)).unwrap_err();
        assert_eq!(
            err,
            ShapeError::Features {
                expected: 3,
                actual: 2
            }
        );
        assert_eq!(
            Batch::<Dyn>::try_from_matrix(DMatrix::zeros(2, 4)).map(|b| b.features()),
            Ok(Dyn(2))
        );
    }

    #[test]
    fn empty_batches_are_allowed() {
        let x = Batch::<U3>::from_samples(&[]);
        assert_eq!(x.samples(), 0);
        assert_eq!(x.sample(0), None);
    }
}
