//! Batches: one column per sample, the feature count in the type.

use generic_array::{ArrayLength, GenericArray};
use nalgebra::DMatrix;

use crate::dim::{Dyn, StaticDim};
use crate::error::ShapeError;
use crate::shape::{FromRows, Shape, StaticShape};

/// A batch of samples, stored as a `features × samples` matrix: one column per sample.
///
/// The shape of a sample is part of the type (`Batch<U20>`, `Batch<Image<U1, U28, U28>>`) or
/// known at run time (`Batch<Dyn>`), so a net bound to `U20` accepts a `Batch<U20>` without
/// any run-time check. The column layout lets a dense layer compute `W · X` with the fast GEMM
/// kernel at every batch size. An image sample is stored in C, H, W order.
///
/// # Type parameters
/// * `N`: the shape of one sample: a flat dimension or an [`Image`](crate::Image).
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
pub struct Batch<N: Shape> {
    data: DMatrix<f32>,
    features: N,
}

impl<N: FromRows> Batch<N> {
    /// Wraps a `features × samples` matrix; `Err` when its row count is not the size of `N`.
    ///
    /// For `Batch<Dyn>` any row count is accepted. A batch of images whose size is known only
    /// at run time is made with [`try_with_shape`](Batch::try_with_shape).
    pub fn try_from_matrix(data: DMatrix<f32>) -> Result<Self, ShapeError> {
        match N::from_rows(data.nrows()) {
            Some(features) => Ok(Batch { data, features }),
            None => Err(ShapeError::Features {
                expected: N::default().flat_size(),
                actual: data.nrows(),
            }),
        }
    }
}

impl<N: Shape> Batch<N> {
    /// Wraps a `features × samples` matrix whose samples have shape `shape`; `Err` when its row
    /// count is not the size of `shape`.
    ///
    /// ```
    /// use lazynet::prelude::*;
    /// use lazynet::nalgebra::DMatrix;
    ///
    /// let images = Batch::try_with_shape(Image::dynamic(3, 4, 5), DMatrix::zeros(60, 2))?;
    /// assert_eq!(images.features().dims(), [3, 4, 5]);
    /// assert!(Batch::try_with_shape(Image::dynamic(3, 4, 5), DMatrix::zeros(61, 2)).is_err());
    /// # Ok::<(), ShapeError>(())
    /// ```
    pub fn try_with_shape(shape: N, data: DMatrix<f32>) -> Result<Self, ShapeError> {
        if data.nrows() != shape.flat_size() {
            return Err(ShapeError::Features {
                expected: shape.flat_size(),
                actual: data.nrows(),
            });
        }
        Ok(Batch {
            data,
            features: shape,
        })
    }

    /// The `features × samples` matrix.
    pub fn as_matrix(&self) -> &DMatrix<f32> {
        &self.data
    }

    /// Gives the matrix back.
    pub fn into_matrix(self) -> DMatrix<f32> {
        self.data
    }

    /// The shape of one sample: its feature dimension, or its image shape.
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

    /// Forgets the shape, keeping the feature count (known at run time).
    pub fn into_dyn(self) -> Batch<Dyn> {
        Batch {
            features: Dyn(self.features.flat_size()),
            data: self.data,
        }
    }

    pub(crate) fn from_parts(data: DMatrix<f32>, features: N) -> Self {
        Batch { data, features }
    }
}

impl<N: StaticShape> Batch<N> {
    /// A batch of `samples` samples whose value at (`feature`, `sample`) is `f(feature, sample)`.
    /// For an image, `feature` runs over C, H, W: `(c · height + y) · width + x`.
    pub fn from_fn(samples: usize, f: impl FnMut(usize, usize) -> f32) -> Self {
        let features = N::default();
        Batch {
            data: DMatrix::from_fn(features.flat_size(), samples, f),
            features,
        }
    }

    /// A batch of `samples` samples of zeros.
    pub fn zeros(samples: usize) -> Self {
        let features = N::default();
        Batch {
            data: DMatrix::zeros(features.flat_size(), samples),
            features,
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
        assert_eq!(x.features().flat_size(), 2);
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
