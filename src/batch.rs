//! Batches: one column per sample, the feature count in the type.

use generic_array::{ArrayLength, GenericArray};
use nalgebra::DMatrix;

use crate::alloc::{self, MAX_VALUES};
use crate::dim::{Dyn, StaticDim};
use crate::error::ShapeError;
use crate::init::Dims;
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
    ///
    /// ```
    /// use lazynet::prelude::*;
    /// use lazynet::nalgebra::DMatrix;
    ///
    /// let x = Batch::<U3>::try_from_matrix(DMatrix::zeros(3, 5))?;
    /// assert_eq!(x.samples(), 5);
    /// assert!(Batch::<U4>::try_from_matrix(DMatrix::zeros(3, 5)).is_err());
    /// # Ok::<(), ShapeError>(())
    /// ```
    pub fn try_from_matrix(data: DMatrix<f32>) -> Result<Self, ShapeError> {
        match N::from_rows(data.nrows()) {
            Some(features) => Ok(Batch { data, features }),
            None => Err(ShapeError::Features {
                expected: flat_size_of(&N::default())?,
                actual: data.nrows(),
            }),
        }
    }
}

impl<N: Shape> Batch<N> {
    /// Wraps a `features × samples` matrix whose samples have shape `shape`; `Err` when its row
    /// count is not the size of `shape`, or when one sample of `shape` would hold more values
    /// than a `usize` can count ([`ShapeError::InputTooLarge`] naming the shape).
    ///
    /// ```
    /// use lazynet::prelude::*;
    /// use lazynet::nalgebra::DMatrix;
    ///
    /// let images = Batch::try_with_shape(Image::dynamic(3, 4, 5), DMatrix::zeros(60, 2))?;
    /// assert_eq!(images.features().dims(), [3, 4, 5]);
    /// assert!(Batch::try_with_shape(Image::dynamic(3, 4, 5), DMatrix::zeros(61, 2)).is_err());
    /// assert!(Batch::try_with_shape(Image::dynamic(usize::MAX, 2, 1), DMatrix::zeros(2, 1)).is_err());
    /// # Ok::<(), ShapeError>(())
    /// ```
    pub fn try_with_shape(shape: N, data: DMatrix<f32>) -> Result<Self, ShapeError> {
        let expected = flat_size_of(&shape)?;
        if data.nrows() != expected {
            return Err(ShapeError::Features {
                expected,
                actual: data.nrows(),
            });
        }
        Ok(Batch {
            data,
            features: shape,
        })
    }

    /// A batch of samples of shape `shape` from sample-major data: sample 0's features, then
    /// sample 1's, and so on (for an image, each sample in C, H, W order). The run-time-shape
    /// sibling of [`from_rows`](Batch::from_rows), for any shape: `Dyn(4)`,
    /// `Image::dynamic(1, 8, 8)`, or a static one.
    ///
    /// The number of samples is `data.len()` divided by the size of `shape`; empty data gives a
    /// batch of zero samples.
    ///
    /// # Errors
    /// * [`ShapeError::Features`] when `data.len()` is not a multiple of the size of `shape`:
    ///   `expected` is the size of one sample, `actual` the length of `data`.
    /// * [`ShapeError::InputTooLarge`] when one sample of `shape` holds more values than a
    ///   `usize` can count;
    /// * [`ShapeError::OutOfMemory`] when the copy of `data` cannot be allocated.
    ///
    /// ```
    /// use lazynet::prelude::*;
    ///
    /// let x = Batch::from_rows_with_shape(Dyn(2), [1.0, 2.0, 3.0, 4.0, 5.0, 6.0])?;
    /// assert_eq!(x.samples(), 3);
    /// assert_eq!(x.sample(2), Some(&[5.0, 6.0][..]));
    ///
    /// let images = Batch::from_rows_with_shape(Image::dynamic(1, 8, 8), vec![0.5; 2 * 64])?;
    /// assert_eq!(images.samples(), 2);
    ///
    /// let err = Batch::from_rows_with_shape(Dyn(4), [0.0; 6]).err();
    /// assert_eq!(err, Some(ShapeError::Features { expected: 4, actual: 6 }));
    /// # Ok::<(), ShapeError>(())
    /// ```
    pub fn from_rows_with_shape(shape: N, data: impl AsRef<[f32]>) -> Result<Self, ShapeError> {
        let data = data.as_ref();
        let rows = flat_size_of(&shape)?;
        let samples = match (rows, data.len()) {
            (_, 0) => 0,
            (0, len) => {
                return Err(ShapeError::Features {
                    expected: 0,
                    actual: len,
                })
            }
            (rows, len) if len % rows == 0 => len / rows,
            (rows, len) => {
                return Err(ShapeError::Features {
                    expected: rows,
                    actual: len,
                })
            }
        };
        let matrix = try_build(
            rows,
            samples,
            || describe(&shape.dims(), samples),
            |v| v.extend_from_slice(data),
        )?;
        Ok(Batch {
            data: matrix,
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
        if j >= self.data.ncols() {
            return None;
        }
        // `j` is a column, so `j · rows` is within the matrix.
        let rows = self.data.nrows();
        let start = j.checked_mul(rows)?;
        self.data.as_slice().get(start..start.checked_add(rows)?)
    }

    /// Forgets the shape, keeping the feature count (known at run time).
    ///
    /// ```
    /// use lazynet::prelude::*;
    ///
    /// let x = Batch::<Image<U1, U2, U3>>::try_zeros(4)?.into_dyn();
    /// assert_eq!((x.features(), x.samples()), (Dyn(6), 4));
    /// # Ok::<(), ShapeError>(())
    /// ```
    pub fn into_dyn(self) -> Batch<Dyn> {
        // Every constructor checks that the row count is the shape's size, so the row count is
        // that size, and reading it cannot overflow.
        Batch {
            features: Dyn(self.data.nrows()),
            data: self.data,
        }
    }

    /// The predicted class of each sample: the index of its largest feature.
    ///
    /// As `torch.argmax`: a NaN counts as the largest value (the index of the first NaN is
    /// returned), and among equal largest values the first index wins. A batch of zero samples
    /// gives an empty vector.
    ///
    /// # Errors
    /// * [`ShapeError::NoClasses`] when the batch has zero features per sample: there is no
    ///   class to pick (PyTorch raises an error there too).
    /// * [`ShapeError::OutOfMemory`] when the vector of classes cannot be allocated.
    ///
    /// ```
    /// use lazynet::prelude::*;
    ///
    /// let logits = Batch::<U3>::from_rows([
    ///     0.1, 2.0, -1.0, // sample 0: class 1
    ///     5.0, 5.0, 0.0, //  sample 1: a tie, the first index wins
    ///     1.0, f32::NAN, 9.0, // sample 2: NaN counts as the largest
    /// ])?;
    /// assert_eq!(logits.argmax()?, [1, 0, 1]);
    /// assert!(Batch::from_rows_with_shape(Dyn(0), []).and_then(|b| b.argmax()).is_err());
    /// # Ok::<(), ShapeError>(())
    /// ```
    pub fn argmax(&self) -> Result<Vec<usize>, ShapeError> {
        let rows = self.data.nrows();
        if rows == 0 {
            return Err(ShapeError::NoClasses);
        }
        let samples = self.data.ncols();
        let mut classes = Vec::new();
        if classes.try_reserve_exact(samples).is_err() {
            return Err(ShapeError::OutOfMemory {
                what: format!("the classes of {samples} samples"),
                values: samples as u128,
            });
        }
        classes.extend(self.data.as_slice().chunks_exact(rows).map(argmax_of));
        Ok(classes)
    }

    /// Replaces every sample's features by their softmax, `exp(x_i) / Σ exp(x_j)`: the
    /// probabilities of the classes. Works in place: no allocation, and it cannot fail.
    ///
    /// Numerically stable: the sample's largest value is subtracted before `exp`, and the sum
    /// is accumulated in `f64`. As `torch.softmax` does, a sample that holds a NaN or a `+inf`
    /// becomes all NaN (`inf − inf` is NaN), and so does a sample whose values are all `-inf`;
    /// a `-inf` among finite values gets probability 0. A batch of zero samples or zero
    /// features is returned unchanged.
    ///
    /// ```
    /// use lazynet::prelude::*;
    ///
    /// let p = Batch::<U2>::from_rows([0.0, 0.0, 1000.0, 0.0, f32::NEG_INFINITY, 1.0])?.softmax();
    /// assert_eq!(p.sample(0), Some(&[0.5, 0.5][..]));
    /// assert_eq!(p.sample(1), Some(&[1.0, 0.0][..])); // no overflow for large logits
    /// assert_eq!(p.sample(2), Some(&[0.0, 1.0][..]));
    /// let nan = Batch::<U2>::from_rows([1.0, f32::INFINITY])?.softmax();
    /// assert!(nan.as_matrix().iter().all(|p| p.is_nan())); // as PyTorch
    /// # Ok::<(), ShapeError>(())
    /// ```
    pub fn softmax(mut self) -> Self {
        let rows = self.data.nrows();
        if rows > 0 {
            self.data
                .as_mut_slice()
                .chunks_exact_mut(rows)
                .for_each(softmax_in_place);
        }
        self
    }

    /// The samples at `indices`, in that order: a new batch of `indices.len()` samples. An
    /// index may appear more than once (a bootstrap sample), or not at all.
    ///
    /// # Errors
    /// * [`ShapeError::SampleIndex`] naming the first index past the end;
    /// * [`ShapeError::OutOfMemory`] when the new batch cannot be allocated.
    ///
    /// ```
    /// use lazynet::prelude::*;
    ///
    /// let x = Batch::<U2>::from_rows([0.0, 0.5, 1.0, 1.5, 2.0, 2.5])?;
    /// let picked = x.select(&[2, 0, 2])?;
    /// assert_eq!(picked, Batch::<U2>::from_rows([2.0, 2.5, 0.0, 0.5, 2.0, 2.5])?);
    /// assert_eq!(x.select(&[3]), Err(ShapeError::SampleIndex { index: 3, samples: 3 }));
    /// # Ok::<(), ShapeError>(())
    /// ```
    pub fn select(&self, indices: &[usize]) -> Result<Self, ShapeError> {
        let samples = self.samples();
        if let Some(&index) = indices.iter().find(|&&index| index >= samples) {
            return Err(ShapeError::SampleIndex { index, samples });
        }
        let rows = self.data.nrows();
        let data = try_build(
            rows,
            indices.len(),
            || describe(&self.features.dims(), indices.len()),
            |values| {
                for &index in indices {
                    // Every index was checked against the sample count above.
                    values.extend_from_slice(self.sample(index).unwrap_or_default());
                }
            },
        )?;
        Ok(Batch {
            data,
            features: self.features,
        })
    }

    /// The samples of `self`, then those of `other`: a new batch of `self.samples() +
    /// other.samples()` samples (`np.concatenate`, `torch.cat` along the samples).
    ///
    /// # Errors
    /// * [`ShapeError::ConcatShape`] naming both shapes when the samples of the two batches
    ///   have different shapes (a `Batch<Dyn>` of 3 features and one of 4; images of the same
    ///   size but another shape);
    /// * [`ShapeError::OutOfMemory`] when the new batch cannot be allocated.
    ///
    /// ```
    /// use lazynet::prelude::*;
    ///
    /// let a = Batch::<U2>::from_rows([1.0, 2.0])?;
    /// let b = Batch::<U2>::from_rows([3.0, 4.0, 5.0, 6.0])?;
    /// assert_eq!(a.concat(&b)?, Batch::<U2>::from_rows([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])?);
    ///
    /// let three = Batch::from_rows_with_shape(Dyn(3), [0.0; 3])?;
    /// let four = Batch::from_rows_with_shape(Dyn(4), [0.0; 4])?;
    /// assert_eq!(
    ///     three.concat(&four).err().map(|e| e.to_string()).as_deref(),
    ///     Some("cannot concatenate a batch of samples of shape (3,) with one of samples of shape (4,)")
    /// );
    /// # Ok::<(), ShapeError>(())
    /// ```
    pub fn concat(&self, other: &Self) -> Result<Self, ShapeError> {
        let (first, second) = (self.features.dims(), other.features.dims());
        if first != second || self.data.nrows() != other.data.nrows() {
            return Err(ShapeError::ConcatShape { first, second });
        }
        let (a, b) = (self.samples(), other.samples());
        let rows = self.data.nrows();
        let Some(samples) = a.checked_add(b) else {
            return Err(ShapeError::OutOfMemory {
                what: format!(
                    "a batch of {a} + {b} samples of shape {}, more than a usize counts",
                    Dims(&first)
                ),
                values: rows as u128 * (a as u128 + b as u128),
            });
        };
        let data = try_build(
            rows,
            samples,
            || describe(&first, samples),
            |values| {
                values.extend_from_slice(self.data.as_slice());
                values.extend_from_slice(other.data.as_slice());
            },
        )?;
        Ok(Batch {
            data,
            features: self.features,
        })
    }

    pub(crate) fn from_parts(data: DMatrix<f32>, features: N) -> Self {
        Batch { data, features }
    }
}

impl<N: StaticShape> Batch<N> {
    /// A batch of samples of shape `N` from sample-major data: sample 0's features, then
    /// sample 1's, and so on (for an image, each sample in C, H, W order).
    ///
    /// This is the way to build a batch from your own rows. A batch is stored `features ×
    /// samples`, one *column* per sample, so `DMatrix::from_row_slice(features, samples, …)`
    /// of sample-major data is wrong: it fills *rows* with samples, and when the matrix is
    /// square nothing complains and every sample is silently transposed. `from_rows` takes
    /// the layout you have. [`from_rows_with_shape`](Batch::from_rows_with_shape) does the same
    /// for a shape known at run time.
    ///
    /// The number of samples is `data.len()` divided by the size of `N`; empty data gives a
    /// batch of zero samples.
    ///
    /// # Errors
    /// * [`ShapeError::Features`] when `data.len()` is not a multiple of the size of `N`:
    ///   `expected` is the size of one sample, `actual` the length of `data`.
    /// * [`ShapeError::OutOfMemory`] when the copy of `data` cannot be allocated.
    ///
    /// ```
    /// use lazynet::prelude::*;
    ///
    /// // Two samples of two features: (1, 2) and (3, 4).
    /// let x = Batch::<U2>::from_rows([1.0, 2.0, 3.0, 4.0])?;
    /// assert_eq!(x.sample(0), Some(&[1.0, 2.0][..])); // column 0 is sample 0
    /// assert_eq!(x.sample(1), Some(&[3.0, 4.0][..]));
    ///
    /// // The trap: from_row_slice puts sample 0 in *row* 0, so its column 0 is (1, 3).
    /// let wrong = lazynet::nalgebra::DMatrix::from_row_slice(2, 2, &[1.0, 2.0, 3.0, 4.0]);
    /// assert_eq!(wrong.column(0).as_slice(), [1.0, 3.0]);
    ///
    /// // Rows as arrays or vectors: flatten them first.
    /// let arrays: Vec<[f32; 2]> = vec![[1.0, 2.0], [3.0, 4.0]];
    /// assert_eq!(Batch::<U2>::from_rows(arrays.as_flattened())?, x);
    /// let vecs: Vec<Vec<f32>> = vec![vec![1.0, 2.0], vec![3.0, 4.0]];
    /// assert_eq!(Batch::<U2>::from_rows(vecs.concat())?, x);
    ///
    /// // A length that is not a whole number of samples is an error, not a guess.
    /// let err = Batch::<U2>::from_rows([1.0, 2.0, 3.0]).err();
    /// assert_eq!(err, Some(ShapeError::Features { expected: 2, actual: 3 }));
    /// assert_eq!(Batch::<U2>::from_rows([])?.samples(), 0);
    /// # Ok::<(), ShapeError>(())
    /// ```
    pub fn from_rows(data: impl AsRef<[f32]>) -> Result<Self, ShapeError> {
        Self::from_rows_with_shape(N::default(), data)
    }

    /// A batch of `samples` samples whose value at (`feature`, `sample`) is `f(feature, sample)`.
    /// For an image, `feature` runs over C, H, W: `(c · height + y) · width + x`. `f` is called
    /// sample by sample, each sample's features in order.
    ///
    /// # Panics
    /// When the batch cannot be allocated (`Batch::<U3>::from_fn(usize::MAX, …)`);
    /// [`try_from_fn`](Batch::try_from_fn) returns the error instead.
    ///
    /// ```
    /// use lazynet::prelude::*;
    ///
    /// let x = Batch::<U3>::from_fn(2, |feature, sample| (feature + 10 * sample) as f32);
    /// assert_eq!(x.sample(1), Some(&[10.0, 11.0, 12.0][..]));
    /// ```
    pub fn from_fn(samples: usize, f: impl FnMut(usize, usize) -> f32) -> Self {
        match Self::try_from_fn(samples, f) {
            Ok(batch) => batch,
            Err(err) => panic!(
                "Batch::from_fn({samples}, …): {err}; Batch::try_from_fn returns this as an Err"
            ),
        }
    }

    /// A batch of `samples` samples whose value at (`feature`, `sample`) is `f(feature,
    /// sample)`; [`ShapeError::OutOfMemory`] when it cannot be allocated (its size overflows,
    /// exceeds one allocation, or the allocator refuses it). `f` is called sample by sample,
    /// each sample's features in order, and not at all on error.
    ///
    /// ```
    /// use lazynet::prelude::*;
    ///
    /// let x = Batch::<U3>::try_from_fn(2, |feature, sample| (feature + 10 * sample) as f32)?;
    /// assert_eq!(x.sample(1), Some(&[10.0, 11.0, 12.0][..]));
    /// assert!(Batch::<U3>::try_from_fn(usize::MAX, |_, _| 0.0).is_err());
    /// assert!(Batch::<U3>::try_from_fn(1 << 40, |_, _| 0.0).is_err());
    /// # Ok::<(), ShapeError>(())
    /// ```
    pub fn try_from_fn(
        samples: usize,
        f: impl FnMut(usize, usize) -> f32,
    ) -> Result<Self, ShapeError> {
        let features = N::default();
        let data = try_from_fn_matrix(&features, samples, f)?;
        Ok(Batch { data, features })
    }

    /// A batch of `samples` samples of zeros.
    ///
    /// # Panics
    /// When the batch cannot be allocated (`Batch::<U3>::zeros(usize::MAX)`);
    /// [`try_zeros`](Batch::try_zeros) returns the error instead.
    ///
    /// ```
    /// use lazynet::prelude::*;
    ///
    /// assert_eq!(Batch::<U3>::zeros(2).as_matrix().shape(), (3, 2));
    /// ```
    pub fn zeros(samples: usize) -> Self {
        match Self::try_zeros(samples) {
            Ok(batch) => batch,
            Err(err) => {
                panic!("Batch::zeros({samples}): {err}; Batch::try_zeros returns this as an Err")
            }
        }
    }

    /// A batch of `samples` samples of zeros; [`ShapeError::OutOfMemory`] when it cannot be
    /// allocated (its size overflows, exceeds one allocation, or the allocator refuses it).
    ///
    /// ```
    /// use lazynet::prelude::*;
    ///
    /// assert_eq!(Batch::<U3>::try_zeros(2)?.as_matrix().shape(), (3, 2));
    /// let err = Batch::<U3>::try_zeros(usize::MAX).err().map(|e| e.to_string());
    /// assert_eq!(
    ///     err.as_deref(),
    ///     Some("cannot allocate 55340232221128654845 values for a batch of 18446744073709551615 samples of shape (3,)")
    /// );
    /// # Ok::<(), ShapeError>(())
    /// ```
    pub fn try_zeros(samples: usize) -> Result<Self, ShapeError> {
        let features = N::default();
        let rows = flat_size_of(&features)?;
        let data = alloc::try_zeros(rows, samples, || describe(&features.dims(), samples))?;
        Ok(Batch { data, features })
    }
}

impl<N: StaticDim + ArrayLength> Batch<N> {
    /// Stacks samples into a batch, one column each.
    ///
    /// # Panics
    /// When the copy cannot be allocated; [`try_from_samples`](Batch::try_from_samples)
    /// returns the error instead.
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
        match Self::try_from_samples(samples) {
            Ok(batch) => batch,
            Err(err) => {
                panic!("Batch::from_samples: {err}; Batch::try_from_samples returns this as an Err")
            }
        }
    }

    /// Stacks samples into a batch, one column each; [`ShapeError::OutOfMemory`] when the copy
    /// cannot be allocated.
    ///
    /// ```
    /// use lazynet::prelude::*;
    ///
    /// let s: GenericArray<f32, U2> = GenericArray::from_array([1.0, 2.0]);
    /// let x = Batch::<U2>::try_from_samples(&[s, s])?;
    /// assert_eq!(x.sample(1), Some(&[1.0, 2.0][..]));
    /// # Ok::<(), ShapeError>(())
    /// ```
    pub fn try_from_samples(samples: &[GenericArray<f32, N>]) -> Result<Self, ShapeError> {
        let features = N::default();
        let data = try_build(
            N::USIZE,
            samples.len(),
            || describe(&[N::USIZE], samples.len()),
            |v| v.extend(samples.iter().flat_map(|s| s.iter().copied())),
        )?;
        Ok(Batch { data, features })
    }
}

impl Batch<Dyn> {
    /// A batch of `features` features and `samples` samples whose value at (`feature`,
    /// `sample`) is `f(feature, sample)`.
    ///
    /// # Panics
    /// When the batch cannot be allocated (`Batch::from_fn_dyn(3, usize::MAX, …)`);
    /// [`try_from_fn_dyn`](Batch::try_from_fn_dyn) returns the error instead.
    ///
    /// ```
    /// use lazynet::prelude::*;
    ///
    /// let x = Batch::from_fn_dyn(3, 2, |feature, sample| (feature + 10 * sample) as f32);
    /// assert_eq!(x.features(), Dyn(3));
    /// assert_eq!(x.sample(1), Some(&[10.0, 11.0, 12.0][..]));
    /// ```
    pub fn from_fn_dyn(
        features: usize,
        samples: usize,
        f: impl FnMut(usize, usize) -> f32,
    ) -> Self {
        match Self::try_from_fn_dyn(features, samples, f) {
            Ok(batch) => batch,
            Err(err) => panic!(
                "Batch::from_fn_dyn({features}, {samples}, …): {err}; Batch::try_from_fn_dyn returns this as an Err"
            ),
        }
    }

    /// A batch of `features` features and `samples` samples whose value at (`feature`,
    /// `sample`) is `f(feature, sample)`; [`ShapeError::OutOfMemory`] when it cannot be
    /// allocated (`features × samples` overflows, exceeds one allocation, or the allocator
    /// refuses it). `f` is called sample by sample, and not at all on error.
    ///
    /// ```
    /// use lazynet::prelude::*;
    ///
    /// let x = Batch::try_from_fn_dyn(3, 2, |feature, sample| (feature + 10 * sample) as f32)?;
    /// assert_eq!(x.sample(1), Some(&[10.0, 11.0, 12.0][..]));
    /// assert!(Batch::try_from_fn_dyn(1 << 40, 1 << 40, |_, _| 0.0).is_err());
    /// # Ok::<(), ShapeError>(())
    /// ```
    pub fn try_from_fn_dyn(
        features: usize,
        samples: usize,
        f: impl FnMut(usize, usize) -> f32,
    ) -> Result<Self, ShapeError> {
        let features = Dyn(features);
        let data = try_from_fn_matrix(&features, samples, f)?;
        Ok(Batch { data, features })
    }
}

/// The size of one sample of `shape`; [`ShapeError::InputTooLarge`] naming the shape when it
/// does not fit in a `usize`.
fn flat_size_of<N: Shape>(shape: &N) -> Result<usize, ShapeError> {
    shape
        .checked_flat_size()
        .ok_or_else(|| ShapeError::InputTooLarge {
            shape: shape.dims(),
        })
}

/// What a batch is, for [`ShapeError::OutOfMemory`]: `a batch of 5 samples of shape (3,)`.
fn describe(dims: &[usize], samples: usize) -> String {
    format!("a batch of {samples} samples of shape {}", Dims(dims))
}

/// A `rows × cols` matrix whose column-major values `fill` pushes onto an empty vector that has
/// room for them; [`ShapeError::OutOfMemory`] naming `what` when that room cannot be had.
fn try_build(
    rows: usize,
    cols: usize,
    what: impl FnOnce() -> String,
    fill: impl FnOnce(&mut Vec<f32>),
) -> Result<DMatrix<f32>, ShapeError> {
    let fail = |what: String| ShapeError::OutOfMemory {
        what,
        values: rows as u128 * cols as u128,
    };
    // Memory that the system does not have is refused before it is written (`alloc`).
    let len = rows.checked_mul(cols).filter(|&n| n <= MAX_VALUES);
    let Some(len) = len.filter(|&n| alloc::fits_in_memory(n as u128)) else {
        return Err(fail(what()));
    };
    let mut values = Vec::new();
    if values.try_reserve_exact(len).is_err() {
        return Err(fail(what()));
    }
    fill(&mut values);
    debug_assert_eq!(values.len(), len, "try_build: fill pushed a wrong count");
    // The callers push exactly `len` values; the resize only keeps `from_vec` from panicking
    // if one ever did not.
    values.resize(len, 0.0);
    Ok(DMatrix::from_vec(rows, cols, values))
}

/// The matrix of [`Batch::try_from_fn`] and [`Batch::try_from_fn_dyn`]: `f` called in
/// column-major order, as nalgebra's `from_fn` does.
fn try_from_fn_matrix<N: Shape>(
    shape: &N,
    samples: usize,
    mut f: impl FnMut(usize, usize) -> f32,
) -> Result<DMatrix<f32>, ShapeError> {
    let rows = flat_size_of(shape)?;
    try_build(
        rows,
        samples,
        || describe(&shape.dims(), samples),
        |values| {
            // With zero features there is nothing to call `f` for, whatever the sample count.
            if rows > 0 {
                for sample in 0..samples {
                    values.extend((0..rows).map(|feature| f(feature, sample)));
                }
            }
        },
    )
}

/// The index of the largest value of a non-empty sample; the first NaN counts as the largest,
/// and the first of equal values wins (`torch.argmax`).
fn argmax_of(sample: &[f32]) -> usize {
    let mut best = 0;
    let mut best_value = f32::NEG_INFINITY;
    for (i, &v) in sample.iter().enumerate() {
        if v.is_nan() {
            return i;
        }
        if v > best_value {
            best = i;
            best_value = v;
        }
    }
    best
}

/// The softmax of one sample, in place: the largest value (NaN if there is one) subtracted
/// before `exp`, the sum in `f64`. [`Batch::softmax`] and the [`Softmax`](crate::layer::Softmax)
/// layer both compute it, so they agree to the bit.
pub(crate) fn softmax_in_place(sample: &mut [f32]) {
    let max = sample.iter().fold(f32::NEG_INFINITY, |max, &v| {
        if v.is_nan() || v > max {
            v
        } else {
            max
        }
    });
    let mut sum = 0.0f64;
    for v in sample.iter_mut() {
        *v = (*v - max).exp();
        sum += f64::from(*v);
    }
    for v in sample.iter_mut() {
        *v = (f64::from(*v) / sum) as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shape::Image;
    use typenum::{U1, U2, U3};

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

    /// softmax computed directly in f64, without the max subtracted.
    fn softmax_f64(x: &[f32]) -> Vec<f64> {
        let e: Vec<f64> = x.iter().map(|&v| f64::from(v).exp()).collect();
        let sum: f64 = e.iter().sum();
        e.iter().map(|v| v / sum).collect()
    }

    #[test]
    fn overflowing_image_shapes_are_errors_not_panics() {
        let shape = Image::dynamic(usize::MAX, 2, 1);
        let err = Batch::try_with_shape(shape, DMatrix::zeros(2, 3)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the input shape (18446744073709551615, 2, 1) holds more values than one allocation can hold"
        );
        // Wrapping to a small product must not be accepted either: 2^63 · 2 · 2 wraps to 0.
        let wraps = Image::dynamic(1 << 63, 2, 2);
        assert!(Batch::try_with_shape(wraps, DMatrix::zeros(0, 3)).is_err());
        assert!(Batch::from_rows_with_shape(wraps, []).is_err());
        assert!(Batch::from_rows_with_shape(shape, [1.0]).is_err());
        let huge = Image::dynamic(usize::MAX, usize::MAX, usize::MAX);
        assert!(matches!(
            Batch::try_with_shape(huge, DMatrix::zeros(1, 1)),
            Err(ShapeError::InputTooLarge { .. })
        ));
    }

    #[test]
    fn absurd_sample_counts_are_errors() {
        for samples in [usize::MAX, 1 << 40, (1 << 62) / 3 + 1] {
            let mut calls = 0;
            assert!(Batch::<U3>::try_zeros(samples).is_err());
            let r = Batch::<U3>::try_from_fn(samples, |_, _| {
                calls += 1;
                0.0
            });
            assert!(matches!(r, Err(ShapeError::OutOfMemory { .. })));
            assert_eq!(calls, 0);
            assert!(Batch::try_from_fn_dyn(3, samples, |_, _| 0.0).is_err());
            assert!(Batch::try_from_fn_dyn(samples, 3, |_, _| 0.0).is_err());
        }
        let err = Batch::try_from_fn_dyn(1 << 40, 1 << 40, |_, _| 0.0).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot allocate 1208925819614629174706176 values for a batch of 1099511627776 samples of shape (1099511627776,)"
        );
        // Zero features: an empty matrix of any sample count, and `f` is never called.
        let x = Batch::try_from_fn_dyn(0, usize::MAX, |_, _| unreachable!()).unwrap();
        assert_eq!((x.samples(), x.as_matrix().len()), (usize::MAX, 0));
        assert_eq!(x.argmax(), Err(ShapeError::NoClasses));
    }

    #[test]
    #[should_panic(expected = "Batch::zeros(18446744073709551615): cannot allocate")]
    fn zeros_panics_with_a_message_pointing_at_try_zeros() {
        let _ = Batch::<U3>::zeros(usize::MAX);
    }

    #[test]
    #[should_panic(expected = "Batch::try_from_fn_dyn returns this as an Err")]
    fn from_fn_dyn_panics_with_a_message_pointing_at_its_sibling() {
        let _ = Batch::from_fn_dyn(usize::MAX, 2, |_, _| 0.0);
    }

    #[test]
    fn fallible_and_infallible_constructors_agree() {
        let f = |i: usize, s: usize| (i * 7 + s * 3) as f32;
        let a = Batch::<Image<U2, U3, U2>>::from_fn(4, f);
        let b = Batch::<Image<U2, U3, U2>>::try_from_fn(4, f).unwrap();
        assert_eq!(a.as_matrix(), &DMatrix::from_fn(12, 4, f));
        assert_eq!(a, b);
        let d = Batch::try_from_fn_dyn(12, 4, f).unwrap();
        assert_eq!(d.as_matrix(), a.as_matrix());
        assert_eq!(a.clone().into_dyn(), d);
        assert_eq!(Batch::<U3>::try_zeros(2).unwrap(), Batch::<U3>::zeros(2));
        // `f` is called in nalgebra's order: sample by sample.
        let mut order = Vec::new();
        let _ = Batch::<U2>::try_from_fn(2, |i, s| {
            order.push((i, s));
            0.0
        });
        assert_eq!(order, [(0, 0), (1, 0), (0, 1), (1, 1)]);
    }

    #[test]
    fn from_rows_is_sample_major() {
        let x = Batch::<U2>::from_rows([1.0, 2.0, 3.0, 4.0]).unwrap();
        assert_eq!(
            x.as_matrix(),
            &DMatrix::from_column_slice(2, 2, &[1.0, 2.0, 3.0, 4.0])
        );
        assert_ne!(
            x.as_matrix(),
            &DMatrix::from_row_slice(2, 2, &[1.0, 2.0, 3.0, 4.0])
        );
        let x = Batch::<U3>::from_rows(vec![0.0, 1.0, 2.0, 10.0, 11.0, 12.0]).unwrap();
        assert_eq!(x, Batch::<U3>::from_fn(2, |f, s| (f + 10 * s) as f32));
        assert_eq!(
            Batch::<U3>::from_rows([0.0; 7]),
            Err(ShapeError::Features {
                expected: 3,
                actual: 7
            })
        );
        assert_eq!(Batch::<U3>::from_rows([]).map(|b| b.samples()), Ok(0));
        let img = Batch::from_rows_with_shape(Image::dynamic(1, 2, 2), [1.0; 8]).unwrap();
        assert_eq!((img.features().dims(), img.samples()), (vec![1, 2, 2], 2));
        assert_eq!(
            Batch::from_rows_with_shape(Dyn(0), []).map(|b| b.samples()),
            Ok(0)
        );
        assert_eq!(
            Batch::from_rows_with_shape(Dyn(0), [1.0]),
            Err(ShapeError::Features {
                expected: 0,
                actual: 1
            })
        );
    }

    #[test]
    fn argmax_follows_pytorch() {
        let nan = f32::NAN;
        let inf = f32::INFINITY;
        let cases: [([f32; 3], usize); 10] = [
            ([0.1, 2.0, -1.0], 1),
            ([3.0, 3.0, 3.0], 0),    // ties: the first index
            ([1.0, 5.0, 5.0], 1),    // ties: the first index
            ([1.0, nan, 9.0], 1),    // NaN is the largest
            ([nan, nan, 9.0], 0),    // the first NaN
            ([1.0, inf, nan], 2),    // NaN beats +inf
            ([-inf, -inf, -inf], 0), // all -inf: the first
            ([-inf, -5.0, -inf], 1),
            ([1.0, inf, inf], 1),
            ([-0.0, 0.0, -1.0], 0), // -0 == 0: a tie
        ];
        let data: Vec<f32> = cases.iter().flat_map(|(x, _)| *x).collect();
        let x = Batch::<U3>::from_rows(data).unwrap();
        let expected: Vec<usize> = cases.iter().map(|(_, c)| *c).collect();
        assert_eq!(x.argmax().unwrap(), expected);
        assert_eq!(Batch::<U3>::zeros(0).argmax(), Ok(vec![]));
        assert_eq!(
            Batch::from_fn_dyn(0, 3, |_, _| 0.0).argmax(),
            Err(ShapeError::NoClasses)
        );
        assert_eq!(
            Batch::from_fn_dyn(1, 3, |_, _| 0.0).argmax(),
            Ok(vec![0; 3])
        );
    }

    #[test]
    fn softmax_agrees_with_f64_and_handles_special_values() {
        let rows: [[f32; 3]; 5] = [
            [0.0, 1.0, 2.0],
            [-3.5, 0.25, 10.0],
            [80.0, 81.0, 79.5], // exp overflows f32 without the max subtracted
            [1e-3, -1e-3, 0.0],
            [-20.0, -20.0, -19.0],
        ];
        let p = Batch::<U3>::from_rows(rows.as_flattened())
            .unwrap()
            .softmax();
        for (j, row) in rows.iter().enumerate() {
            let want = softmax_f64(row);
            let got = p.sample(j).unwrap();
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (f64::from(*g) - w).abs() <= 1e-6 * w.max(1e-30),
                    "{row:?}: {got:?} vs {want:?}"
                );
            }
            let total: f32 = got.iter().sum();
            assert!((total - 1.0).abs() < 1e-6);
        }
        let huge = Batch::<U2>::from_rows([1000.0, 999.0]).unwrap().softmax();
        assert!(huge.as_matrix().iter().all(|v| v.is_finite()));

        let (nan, inf) = (f32::NAN, f32::INFINITY);
        let special = Batch::<U3>::from_rows([
            1.0, nan, 2.0, // NaN: the whole sample NaN
            1.0, inf, 2.0, // +inf: inf - inf, NaN (PyTorch)
            -inf, -inf, -inf, // all -inf: NaN (PyTorch)
            -inf, 0.0, -inf, // -inf among finite values: probability 0
            0.0, 0.0, 0.0, // a clean sample after bad ones is untouched by them
        ])
        .unwrap()
        .softmax();
        for j in 0..3 {
            assert!(
                special.sample(j).unwrap().iter().all(|v| v.is_nan()),
                "sample {j}"
            );
        }
        assert_eq!(special.sample(3), Some(&[0.0, 1.0, 0.0][..]));
        let third = 1.0 / 3.0;
        assert_eq!(special.sample(4), Some(&[third, third, third][..]));

        assert_eq!(Batch::<U3>::zeros(0).softmax().samples(), 0);
        let empty = Batch::from_fn_dyn(0, 2, |_, _| 0.0).softmax();
        assert_eq!(empty.as_matrix().shape(), (0, 2));
        assert_eq!(
            Batch::<U1>::from_rows([-7.0, 3.0])
                .unwrap()
                .softmax()
                .as_matrix()
                .as_slice(),
            [1.0, 1.0]
        );
    }

    #[test]
    fn empty_batches_are_allowed() {
        let x = Batch::<U3>::from_samples(&[]);
        assert_eq!(x.samples(), 0);
        assert_eq!(x.sample(0), None);
    }
}
