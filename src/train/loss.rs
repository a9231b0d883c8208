//! Losses: [`CrossEntropy`] over [`Labels`], [`Mse`] over target batches.

use nalgebra::DMatrix;

use super::Labels;
use crate::alloc::try_zeros;
use crate::batch::Batch;
use crate::dim::Dim;
use crate::error::ShapeError;
use crate::rules::{
    ClassesMatch, CrossEntropyTakesLabels, Kind, MseTakesTargets, TargetWidthMatches, Width,
};
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

    /// The targets of `self`'s samples, then those of `other`'s: what
    /// [`Batch::concat`] does to the samples they belong to.
    ///
    /// # Errors
    /// * [`ShapeError::ConcatShape`] for target batches whose samples have different shapes;
    /// * [`ShapeError::ConcatClasses`] for labels of different numbers of classes;
    /// * [`ShapeError::OutOfMemory`] when memory for them cannot be had.
    ///
    /// ```
    /// use lazynet::prelude::*;
    /// use lazynet::train::Target;
    ///
    /// /// Two data sets, samples and targets, joined into one.
    /// fn join<T: Target>(a: (&Batch<U2>, &T), b: (&Batch<U2>, &T)) -> Result<(Batch<U2>, T), ShapeError> {
    ///     Ok((a.0.concat(b.0)?, Target::concat(a.1, b.1)?))
    /// }
    /// let x = Batch::<U2>::from_rows([0.0, 1.0, 2.0, 3.0])?;
    /// let labels = Labels::<U3>::try_new(vec![2, 0])?;
    /// let (x2, labels2) = join((&x, &labels), (&x, &labels))?;
    /// assert_eq!((x2.samples(), labels2.as_slice()), (4, &[2, 0, 2, 0][..]));
    /// # Ok::<(), ShapeError>(())
    /// ```
    fn concat(&self, other: &Self) -> Result<Self, ShapeError>;

    /// The class of sample `sample` for targets that are classes ([`Labels`]); `None` for
    /// others, and past the end. A [stratified split](crate::data::stratified_split) keeps
    /// the proportion of every class, so it needs this.
    ///
    /// ```
    /// use lazynet::prelude::*;
    /// use lazynet::train::Target;
    ///
    /// let labels = Labels::<U3>::try_new(vec![2, 0])?;
    /// assert_eq!((labels.class_of(0), labels.class_of(2)), (Some(2), None));
    /// assert_eq!(Batch::<U3>::zeros(2).class_of(0), None);
    /// # Ok::<(), ShapeError>(())
    /// ```
    fn class_of(&self, _sample: usize) -> Option<usize> {
        None
    }

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

    fn concat(&self, other: &Self) -> Result<Self, ShapeError> {
        Labels::concat(self, other)
    }

    fn class_of(&self, sample: usize) -> Option<usize> {
        self.as_slice().get(sample).copied()
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
        Batch::select(self, indices)
    }

    fn concat(&self, other: &Self) -> Result<Self, ShapeError> {
        Batch::concat(self, other)
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
///
/// A loss implements `Loss<T>` for each kind of targets `T` it compares the output with;
/// given other targets, a call to [`fit`](crate::Net::fit),
/// [`loss_and_grads`](crate::Net::loss_and_grads) or [`evaluate`](crate::Net::evaluate) does
/// not compile. The built-in losses state their rule in the error, with no size in it:
/// [`Mse`] takes a [`Batch`] of targets ([`MseTakesTargets`]), [`CrossEntropy`] takes
/// [`Labels`] ([`CrossEntropyTakesLabels`]).
///
/// # Implementing a loss
/// The trait is open: implement it for the targets your loss compares the output with. The
/// net checks the targets' count and width before calling it, and the gradient's shape after.
///
/// ```
/// use lazynet::nalgebra::DMatrix;
/// use lazynet::prelude::*;
/// use lazynet::train::Loss;
///
/// /// The mean absolute error over every value: PyTorch's `nn.L1Loss()`.
/// #[derive(Clone, Copy)]
/// struct L1;
///
/// impl<S: Shape> Loss<Batch<S>> for L1 {
///     fn name(&self) -> &'static str {
///         "mean absolute error"
///     }
///
///     fn loss_and_grad(
///         &self,
///         y: &DMatrix<f32>,
///         targets: &Batch<S>,
///     ) -> Result<(f32, DMatrix<f32>), ShapeError> {
///         let d = y - targets.as_matrix();
///         let n = d.len().max(1) as f32;
///         let sign = |v: f32| if v == 0.0 { 0.0 } else { v.signum() };
///         Ok((d.iter().map(|v| v.abs()).sum::<f32>() / n, d.map(|v| sign(v) / n)))
///     }
/// }
///
/// let net = Net::new().push(Dense::<U2>::new()).seed(0).bind::<U3>();
/// let x = Batch::<U3>::from_fn(4, |f, s| (f + s) as f32 / 4.0);
/// let targets = Batch::<U2>::zeros(4);
/// let (loss, grads) = net.loss_and_grads(&x, &targets, L1)?;
/// assert!(loss >= 0.0 && grads.len() == 2);
/// # Ok::<(), ShapeError>(())
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a loss for the targets it is given",
    label = "`{Self}` does not implement `Loss` for these targets",
    note = "a loss implements `Loss<T>` for each kind of targets `T` it compares the output with: `Loss<Labels<C>>` for classes, `Loss<Batch<S>>` for a batch of targets"
)]
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

/// Cross-entropy given a batch of targets: an implementation whose condition never holds, so
/// that the error states the [`CrossEntropyTakesLabels`] rule, which prints no size, instead
/// of rustc's "`Loss<Batch<UInt<…>>>` is not implemented for `CrossEntropy`".
impl<S: Shape> Loss<Batch<S>> for CrossEntropy
where
    <Batch<S> as Kind>::Output: CrossEntropyTakesLabels,
{
    fn name(&self) -> &'static str {
        "cross-entropy"
    }

    /// Never runs: no batch of targets is of the labels' kind.
    fn loss_and_grad(
        &self,
        _y: &DMatrix<f32>,
        _targets: &Batch<S>,
    ) -> Result<(f32, DMatrix<f32>), ShapeError> {
        Err(not_comparable(
            "cross-entropy",
            "labels",
            "a batch of targets",
        ))
    }
}

/// The error of a loss implementation that cannot run (its condition never holds).
fn not_comparable(loss: &str, takes: &str, given: &str) -> ShapeError {
    ShapeError::Contract {
        what: format!("the loss {loss}"),
        detail: format!("it compares the output with {takes}, not with {given}"),
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

/// Mean squared error given labels: an implementation whose condition never holds, so that the
/// error states the [`MseTakesTargets`] rule, which prints no size, instead of rustc's
/// "`Loss<Labels<UInt<…>>>` is not implemented for `Mse`".
impl<C: Dim> Loss<Labels<C>> for Mse
where
    <Labels<C> as Kind>::Output: MseTakesTargets,
{
    fn name(&self) -> &'static str {
        "mean squared error"
    }

    /// Never runs: no labels are of the targets' kind.
    fn loss_and_grad(
        &self,
        _y: &DMatrix<f32>,
        _labels: &Labels<C>,
    ) -> Result<(f32, DMatrix<f32>), ShapeError> {
        Err(not_comparable(
            "mean squared error",
            "a batch of targets",
            "labels",
        ))
    }
}
