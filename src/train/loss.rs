//! Losses: [`CrossEntropy`] over [`Labels`], [`Mse`] over target batches.

use nalgebra::DMatrix;

use super::Labels;
use crate::alloc::try_zeros;
use crate::batch::Batch;
use crate::dim::Dim;
use crate::error::ShapeError;
use crate::rules::{ClassesMatch, TargetWidthMatches, Width};
use crate::shape::Shape;

/// What a loss compares a net's output with: [`Labels`] or a [`Batch`] of targets.
pub trait Target: Sized {
    /// `"labels"` or `"targets"`, for error messages.
    const WHAT: &'static str;

    /// The number of samples it holds.
    fn samples(&self) -> usize;

    /// Its values per sample: the number of classes of labels, the width of targets.
    fn width(&self) -> usize;

    /// The shape of one sample's targets when they are images (`[c, h, w]`), checked against
    /// an image output's shape; `None` for labels and flat targets.
    fn image_dims(&self) -> Option<Vec<usize>> {
        None
    }

    /// The targets of the samples at `indices`, in that order.
    ///
    /// # Errors
    /// [`ShapeError::SampleIndex`] for an index past the end; [`ShapeError::OutOfMemory`]
    /// when memory for them cannot be had.
    fn select(&self, indices: &[usize]) -> Result<Self, ShapeError>;

    /// How many samples of the output `y` (`width × samples`) are classified right, for
    /// targets that are classes; `None` for others.
    fn correct(&self, _y: &DMatrix<f32>) -> Option<usize> {
        None
    }
}

impl<C: Dim> Target for Labels<C> {
    const WHAT: &'static str = "labels";

    fn samples(&self) -> usize {
        self.len()
    }

    fn width(&self) -> usize {
        self.classes()
    }

    fn select(&self, indices: &[usize]) -> Result<Self, ShapeError> {
        Labels::select(self, indices)
    }

    fn correct(&self, y: &DMatrix<f32>) -> Option<usize> {
        let rows = y.nrows().max(1);
        let hits = y
            .as_slice()
            .chunks_exact(rows)
            .zip(self.as_slice())
            .filter(|(column, &label)| argmax(column) == Some(label))
            .count();
        Some(hits)
    }
}

/// The index of the largest value, the first on ties, NaN counting as the largest (as
/// PyTorch's `argmax`).
pub(crate) fn argmax(values: &[f32]) -> Option<usize> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &v) in values.iter().enumerate() {
        match best {
            Some((_, b)) if b.is_nan() || !(v > b || v.is_nan()) => {}
            _ => best = Some((i, v)),
        }
    }
    best.map(|(i, _)| i)
}

impl<S: Shape> Target for Batch<S> {
    const WHAT: &'static str = "targets";

    fn samples(&self) -> usize {
        Batch::samples(self)
    }

    fn width(&self) -> usize {
        self.as_matrix().nrows()
    }

    fn image_dims(&self) -> Option<Vec<usize>> {
        let dims = self.features().dims();
        (dims.len() > 1).then_some(dims)
    }

    fn select(&self, indices: &[usize]) -> Result<Self, ShapeError> {
        let rows = self.as_matrix().nrows();
        let mut data = try_zeros(rows, indices.len(), || {
            format!("{rows} values × {} samples of targets", indices.len())
        })?;
        let samples = Batch::samples(self);
        for (j, &index) in indices.iter().enumerate() {
            if index >= samples {
                return Err(ShapeError::SampleIndex { index, samples });
            }
            data.column_mut(j)
                .copy_from(&self.as_matrix().column(index));
        }
        Ok(Batch::from_parts(data, self.features()))
    }
}

/// A target whose width the compiler compares with a net's output width `W` (a typenum
/// number, or [`Dyn`](crate::Dyn) when it is known only at run time): the bound of
/// [`Net::loss_and_grads`](crate::Net::loss_and_grads). Labels of another number of classes,
/// or targets of another width, break the [`ClassesMatch`] or [`TargetWidthMatches`] rule.
pub trait TargetFor<W>: Target {}

impl<C: Dim + Width, W: Width> TargetFor<W> for Labels<C> where C::Output: ClassesMatch<W::Output> {}

impl<S: Shape, W: Width> TargetFor<W> for Batch<S>
where
    S::Flat: Width,
    <S::Flat as Width>::Output: TargetWidthMatches<W::Output>,
{
}

/// A loss: a number for a batch's output and its targets, and its gradient with respect to
/// the output.
pub trait Loss<T: Target>: Copy {
    /// The loss's name, e.g. `"cross-entropy"`.
    fn name(&self) -> &'static str;

    /// The loss of the output `y` (`width × samples`, which the caller checked against
    /// `target`: as many samples, the same width) and its gradient `dL/dy`, shaped like `y`.
    ///
    /// # Errors
    /// [`ShapeError::OutOfMemory`] when memory for the gradient cannot be had.
    fn loss_and_grad(
        &self,
        y: &DMatrix<f32>,
        target: &T,
    ) -> Result<(f32, DMatrix<f32>), ShapeError>;
}

/// The cross-entropy of the softmax of the output and the labels, averaged over the batch:
/// PyTorch's `nn.CrossEntropyLoss()`. The output is the logits (no softmax layer before it);
/// the log-softmax is computed as PyTorch computes it, `z − max − ln Σ exp(z − max)`, so the
/// loss is as exact at logits of 1e7 as at logits of 1.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CrossEntropy;

impl<C: Dim> Loss<Labels<C>> for CrossEntropy {
    fn name(&self) -> &'static str {
        "cross-entropy"
    }

    fn loss_and_grad(
        &self,
        y: &DMatrix<f32>,
        labels: &Labels<C>,
    ) -> Result<(f32, DMatrix<f32>), ShapeError> {
        let (rows, samples) = y.shape();
        let mut grad = try_zeros(rows, samples, || {
            format!("the loss gradient, {rows} values × {samples} samples")
        })?;
        let n = samples as f32;
        let mut total = 0.0f64;
        let columns = y.as_slice().chunks_exact(rows.max(1));
        let grads = grad.as_mut_slice().chunks_exact_mut(rows.max(1));
        for ((z, g), &label) in columns.zip(grads).zip(labels.as_slice()) {
            let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            // A NaN logit makes the loss NaN, as in PyTorch: `f32::max` skips NaN, the sum
            // does not.
            let mut sum = 0.0f32;
            for (gi, &zi) in g.iter_mut().zip(z) {
                let e = (zi - max).exp();
                *gi = e;
                sum += e;
            }
            // `ln Σ exp(z − max) − (z[label] − max)`, as PyTorch's log-softmax: the logits
            // are shifted before anything is added to them, so a logit of 1e7 loses nothing
            // (`max + ln Σ` would round the sum's logarithm away at that magnitude).
            let picked = z.get(label).copied().unwrap_or(f32::NAN) - max;
            total += f64::from(sum.ln()) - f64::from(picked);
            for gi in g.iter_mut() {
                *gi /= sum * n;
            }
            if let Some(gl) = g.get_mut(label) {
                *gl -= 1.0 / n;
            }
        }
        Ok(((total / samples as f64) as f32, grad))
    }
}

/// The mean squared error over every value: PyTorch's `nn.MSELoss()`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mse;

impl<S: Shape> Loss<Batch<S>> for Mse {
    fn name(&self) -> &'static str {
        "mean squared error"
    }

    fn loss_and_grad(
        &self,
        y: &DMatrix<f32>,
        targets: &Batch<S>,
    ) -> Result<(f32, DMatrix<f32>), ShapeError> {
        let (rows, samples) = y.shape();
        let mut grad = try_zeros(rows, samples, || {
            format!("the loss gradient, {rows} values × {samples} samples")
        })?;
        let count = y.len() as f64;
        let scale = (2.0 / count) as f32;
        let mut total = 0.0f64;
        let pairs = y.as_slice().iter().zip(targets.as_matrix().as_slice());
        for ((yi, ti), g) in pairs.zip(grad.as_mut_slice()) {
            let d = yi - ti;
            total += f64::from(d * d);
            *g = scale * d;
        }
        Ok(((total / count) as f32, grad))
    }
}
