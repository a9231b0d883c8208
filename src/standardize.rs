//! [`Standardize`]: every feature shifted to mean 0 and scaled to standard deviation 1, as
//! scikit-learn's `StandardScaler`.

use crate::alloc::{try_clone, try_vec};
use crate::batch::Batch;
use crate::error::ShapeError;
use crate::shape::Shape;

/// Per-feature mean and standard deviation, measured on one batch (the training data) and
/// applied to others: `(x − mean) / std`, as scikit-learn's `StandardScaler` (the population
/// standard deviation; a feature that does not vary is only shifted). The batch it measures
/// must hold finite values: a NaN or an infinity is an error naming it, not a feature of NaN.
///
/// # Example
/// ```
/// use lazynet::prelude::*;
///
/// let train = Batch::<U2>::from_rows([1.0f32, 10.0, 3.0, 10.0])?;
/// let scale = Standardize::fit(&train)?;
/// assert_eq!((scale.mean(), scale.std()), (&[2.0, 10.0][..], &[1.0, 1.0][..]));
/// let test = scale.apply(&Batch::<U2>::from_rows([4.0f32, 11.0])?)?;
/// assert_eq!(test.sample(0), Some(&[2.0, 1.0][..]));
/// # Ok::<(), ShapeError>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Standardize {
    mean: Vec<f32>,
    std: Vec<f32>,
}

impl Standardize {
    /// Measures every feature's mean and standard deviation over the samples of `x`, in
    /// `f64`. A feature whose standard deviation is 0 (or not finite) gets 1, so it is only
    /// shifted.
    ///
    /// # Errors
    /// [`ShapeError::EmptyBatch`] for a batch of no samples; [`ShapeError::NotFinite`] naming
    /// the first value that is NaN or infinite; [`ShapeError::OutOfMemory`] when memory for
    /// the statistics cannot be had.
    pub fn fit<M: Shape>(x: &Batch<M>) -> Result<Self, ShapeError> {
        let m = x.as_matrix();
        let (features, samples) = m.shape();
        if samples == 0 {
            return Err(ShapeError::EmptyBatch);
        }
        // Column-major: one sample's features after another.
        if let Some(index) = m.as_slice().iter().position(|v| !v.is_finite()) {
            return Err(ShapeError::NotFinite {
                what: "standardizing",
                feature: index % features.max(1),
                sample: index / features.max(1),
            });
        }
        let memory = || ShapeError::OutOfMemory {
            what: format!("the statistics of {features} features"),
            values: 2 * features as u128,
        };
        let mut mean = try_vec(features).ok_or_else(memory)?;
        let mut std = try_vec(features).ok_or_else(memory)?;
        for row in m.row_iter() {
            let n = samples as f64;
            let mu = row.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
            let var = row
                .iter()
                .map(|&v| (f64::from(v) - mu).powi(2))
                .sum::<f64>()
                / n;
            let sigma = var.sqrt() as f32;
            mean.push(mu as f32);
            std.push(if sigma > 0.0 && sigma.is_finite() {
                sigma
            } else {
                1.0
            });
        }
        Ok(Standardize { mean, std })
    }

    /// `(x − mean) / std` for every value of `x`, feature by feature.
    ///
    /// # Errors
    /// [`ShapeError::Features`] when `x` has another number of features than the batch the
    /// statistics were measured on; [`ShapeError::OutOfMemory`] when memory for the result
    /// cannot be had.
    pub fn apply<M: Shape>(&self, x: &Batch<M>) -> Result<Batch<M>, ShapeError> {
        let rows = x.as_matrix().nrows();
        if rows != self.mean.len() {
            return Err(ShapeError::Features {
                expected: self.mean.len(),
                actual: rows,
            });
        }
        let mut out = try_clone(x.as_matrix(), || {
            format!("{rows} features × {} standardized samples", x.samples())
        })?;
        for mut column in out.column_iter_mut() {
            for ((v, mu), sigma) in column.iter_mut().zip(&self.mean).zip(&self.std) {
                *v = (*v - mu) / sigma;
            }
        }
        Ok(Batch::from_parts(out, x.features()))
    }

    /// Every feature's mean.
    pub fn mean(&self) -> &[f32] {
        &self.mean
    }

    /// Every feature's standard deviation (1 for a feature that does not vary).
    pub fn std(&self) -> &[f32] {
        &self.std
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use typenum::U2;

    #[test]
    fn standardized_training_data_has_mean_0_and_std_1() -> Result<(), ShapeError> {
        let x = Batch::<U2>::from_rows([1.0f32, 5.0, 2.0, 5.0, 6.0, 5.0])?;
        let s = Standardize::fit(&x)?;
        let y = s.apply(&x)?;
        let first: Vec<f32> = y.as_matrix().row(0).iter().copied().collect();
        let mean: f32 = first.iter().sum::<f32>() / 3.0;
        let var: f32 = first.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / 3.0;
        assert!(mean.abs() < 1e-6 && (var - 1.0).abs() < 1e-5, "{first:?}");
        // The constant feature is only shifted.
        assert!(y.as_matrix().row(1).iter().all(|&v| v == 0.0));
        Ok(())
    }

    #[test]
    fn values_that_are_not_finite_are_errors_naming_them() -> Result<(), ShapeError> {
        for bad in [f32::NAN, f32::INFINITY] {
            let x = Batch::<U2>::from_rows([1.0f32, 1.0, 2.0, bad, 3.0, 3.0])?;
            assert_eq!(
                Standardize::fit(&x),
                Err(ShapeError::NotFinite {
                    what: "standardizing",
                    feature: 1,
                    sample: 1
                })
            );
        }
        Ok(())
    }

    #[test]
    fn empty_and_mismatched_batches_are_errors() -> Result<(), ShapeError> {
        assert_eq!(
            Standardize::fit(&Batch::<U2>::zeros(0)),
            Err(ShapeError::EmptyBatch)
        );
        let s = Standardize::fit(&Batch::<U2>::zeros(2))?;
        let wide = Batch::from_fn_dyn(3, 1, |_, _| 0.0);
        assert!(matches!(
            s.apply(&wide),
            Err(ShapeError::Features {
                expected: 2,
                actual: 3
            })
        ));
        Ok(())
    }
}
