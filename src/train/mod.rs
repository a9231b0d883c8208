//! Training: losses, gradients, optimizers and a fit loop.
//!
//! [`Net::loss_and_grads`](crate::Net::loss_and_grads) runs a batch forward and backward and
//! returns the loss and the gradient of every parameter; an [`Optimizer`] ([`Adam`], [`Sgd`])
//! applies them; [`Net::fit`](crate::Net::fit) loops over epochs and batches. The semantics
//! are PyTorch's, so the numbers agree with it.
//!
//! # Example
//! ```
//! use lazynet::prelude::*;
//!
//! let mut net = Net::new()
//!     .push(Dense::<U64>::new())
//!     .push(Relu)
//!     .push(Dense::<U10>::new())
//!     .initialize(KaimingUniform::default())
//!     .seed(0)
//!     .bind::<U20>();
//!
//! let x = Batch::<U20>::from_fn(4, |f, s| (f * s) as f32 / 80.0);
//! let labels = Labels::<U10>::try_new(vec![3, 0, 9, 1])?;
//! let mut adam = Adam::new(1e-2);
//! let (first, grads) = net.loss_and_grads(&x, &labels, CrossEntropy)?;
//! assert_eq!(grads.named_grads().next().map(|(n, g)| (n, g.shape())), Some(("0.weight", (64, 20))));
//! adam.step(&mut net, &grads)?;
//! for _ in 0..50 {
//!     let (_, grads) = net.loss_and_grads(&x, &labels, CrossEntropy)?;
//!     adam.step(&mut net, &grads)?;
//! }
//! let (last, _) = net.loss_and_grads(&x, &labels, CrossEntropy)?;
//! assert!(last < first / 2.0, "{first} → {last}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod checkpoint;
mod early_stopping;
mod fit;
mod grads;
mod labels;
mod loss;
mod optim;
mod schedule;

use thiserror::Error;

pub use checkpoint::{Hyper, Progress};
pub use early_stopping::{EarlyStopping, Monitor};
pub use fit::{Control, EpochMetrics, Fit, History};
pub use grads::Grads;
pub use labels::Labels;
pub use loss::{CrossEntropy, Loss, Mse, Target, TargetFor};
pub use optim::{Adam, Optimizer, Sgd};
pub use schedule::Schedule;

use crate::batch::Batch;
use crate::error::ShapeError;
use crate::exec;
use crate::list::Chain;
use crate::net::Net;
use crate::shape::Shape;
use crate::state::{Bound, Init};
use crate::weights::{LoadError, SaveError};

/// Why a training step, a fit or a checkpoint failed. Whatever failed changed nothing: the
/// parameters and the optimizer's state are as they were before the call (for a fit, as they
/// were after the last step that succeeded).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TrainError {
    /// A shape or size error: labels, targets or a batch that do not fit the net.
    #[error(transparent)]
    Shape(#[from] ShapeError),

    /// A gradient holds NaN or an infinity; the step is refused.
    #[error("the gradient of `{name}` is not finite (NaN or infinite): the step is refused and nothing changed")]
    GradientNotFinite {
        /// The first parameter whose gradient is not finite.
        name: String,
    },

    /// The loss stopped being finite during a fit.
    #[error("the loss is {loss} at epoch {epoch}, step {step}: training stopped; the weights are those after the step before")]
    LossNotFinite {
        /// The epoch, counting from 1.
        epoch: usize,
        /// The step within the epoch, counting from 1.
        step: usize,
        /// The loss.
        loss: f32,
        /// The metrics of the epochs finished before.
        history: History,
    },

    /// A step of a fit failed: its batch could not be made, a layer's kernel or the loss
    /// returned an error in the forward or backward pass, or the optimizer refused the step
    /// (gradients that are not finite though the loss is, a bad hyper-parameter).
    #[error("epoch {epoch}, step {step}: {source}; training stopped, the weights are those after the step before")]
    Step {
        /// The epoch, counting from 1.
        epoch: usize,
        /// The step within the epoch, counting from 1.
        step: usize,
        /// The metrics of the epochs finished before.
        history: History,
        /// Why the step failed.
        source: Box<TrainError>,
    },

    /// The end of an epoch of a fit failed: evaluating the validation data, saving the
    /// epoch's checkpoint, or copying the best weights; or the per-epoch callback could not
    /// run. The history holds the epochs recorded: those before, and this one once its
    /// metrics were measured (a checkpoint or callback that failed after them).
    #[error("epoch {epoch}, after its last step: {source}; training stopped, the weights are those after that step")]
    EpochEnd {
        /// The epoch, counting from 1.
        epoch: usize,
        /// The metrics of the epochs recorded (see above).
        history: History,
        /// What failed.
        source: Box<TrainError>,
    },

    /// The gradients are finite, but the optimizer's update would make a parameter or the
    /// optimizer's own state NaN or infinite (a learning rate of 3e38, a gradient whose square
    /// overflows `f32`): the step is refused.
    #[error("the update of `{name}` would not be finite (NaN or infinite) though its gradient is: the step is refused and nothing changed; is the learning rate too large, or are the weights or the optimizer's state already not finite?")]
    StepNotFinite {
        /// The first parameter whose update would not be finite.
        name: String,
    },

    /// The training pass computed a value a buffer cannot hold: a running variance that is
    /// NaN (from a NaN or infinite input) or below 0. The step is refused, and nothing changed.
    #[error("the training pass computed a value buffer `{name}` cannot hold ({reason}): the step is refused and nothing changed; does the batch hold NaN or infinities?")]
    BufferOutOfRange {
        /// The buffer.
        name: String,
        /// What was found.
        reason: String,
    },

    /// Gradients that do not belong to the net: another number of parameters, another name or
    /// shape.
    #[error("the gradients do not fit the net: {reason}")]
    GradsMismatch {
        /// What differs.
        reason: String,
    },

    /// An optimizer hyper-parameter out of its range.
    #[error("the {optimizer} {name} must be {range}, got {value}")]
    Hyper {
        /// `"Adam"` or `"SGD"`.
        optimizer: &'static str,
        /// The hyper-parameter.
        name: &'static str,
        /// Its range.
        range: &'static str,
        /// Its value.
        value: f64,
    },

    /// A fit setting that cannot work: a batch size of 0, say.
    #[error("{0}")]
    Setting(String),

    /// A checkpoint whose optimizer state does not fit: a step count that is not a whole
    /// number, a state of another shape, a tensor of neither the net nor the optimizer, or an
    /// optimizer whose state belongs to another net.
    #[error("checkpoint: {reason}")]
    Checkpoint {
        /// What does not fit.
        reason: String,
    },

    /// A checkpoint's optimizer hyper-parameters differ from the optimizer's it is loaded into
    /// (PyTorch keeps them in the optimizer's `state_dict` too). Load with [`Hyper::KeepOwn`] or
    /// [`Hyper::FromFile`] to say which to use.
    #[error("the checkpoint was saved by {saved} but is loaded into {current}; load with `Hyper::KeepOwn` to keep the optimizer's, or `Hyper::FromFile` to take the file's")]
    HyperMismatch {
        /// The file's optimizer and the hyper-parameters that differ, e.g. `Adam with
        /// initial_lr 0.01`.
        saved: String,
        /// The optimizer's, e.g. `Adam with initial_lr 0.02`.
        current: String,
    },

    /// A checkpoint could not be written.
    #[error("cannot save the checkpoint: {0}")]
    Save(#[from] SaveError),

    /// A checkpoint could not be read or does not fit the net or the optimizer.
    #[error("cannot load the checkpoint: {0}")]
    Load(#[from] LoadError),
}

impl TrainError {
    /// The error with `history` as the history of the epochs finished before it, for the
    /// variants that carry one.
    fn with_history(self, history: History) -> Self {
        match self {
            TrainError::LossNotFinite {
                epoch, step, loss, ..
            } => TrainError::LossNotFinite {
                epoch,
                step,
                loss,
                history,
            },
            TrainError::Step {
                epoch,
                step,
                source,
                ..
            } => TrainError::Step {
                epoch,
                step,
                history,
                source,
            },
            TrainError::EpochEnd { epoch, source, .. } => TrainError::EpochEnd {
                epoch,
                history,
                source,
            },
            other => other,
        }
    }

    /// The history of the epochs finished before a fit failed, for the errors that stop a fit
    /// midway ([`LossNotFinite`](TrainError::LossNotFinite), [`Step`](TrainError::Step),
    /// [`EpochEnd`](TrainError::EpochEnd)).
    pub fn history(&self) -> Option<&History> {
        match self {
            TrainError::LossNotFinite { history, .. }
            | TrainError::Step { history, .. }
            | TrainError::EpochEnd { history, .. } => Some(history),
            _ => None,
        }
    }
}

impl<N: Shape, L: Chain<N>> Net<Init<N>, L> {
    /// The loss of a batch and the gradient of every parameter, by a forward and a backward
    /// pass. The net does not change.
    ///
    /// `target` is [`Labels`] for [`CrossEntropy`] or a [`Batch`] of targets for [`Mse`]. Its
    /// width is checked against the net's output by the compiler when both are static
    /// (`Labels<U5>` for a net with 10 outputs does not compile), at run time otherwise. The
    /// batch is checked at run time, as by [`try_forward`](Net::try_forward).
    ///
    /// # Errors
    /// * [`ShapeError::Features`] or [`ShapeError::ImageShape`] when the batch does not fit
    ///   the net;
    /// * [`ShapeError::TargetCount`] when there are not as many labels or targets as samples;
    /// * [`ShapeError::TargetWidth`] when a run-time width differs;
    /// * [`ShapeError::EmptyBatch`] for a batch of no samples;
    /// * [`ShapeError::OutOfMemory`] when a buffer cannot be allocated.
    ///
    /// # Example
    /// ```
    /// use lazynet::prelude::*;
    ///
    /// let net = Net::new().push(Dense::<U3>::new()).bind::<U2>();
    /// let x = Batch::<U2>::from_fn(2, |f, s| (f + s) as f32);
    /// let targets = Batch::<U3>::zeros(2);
    /// let (loss, grads) = net.loss_and_grads(&x, &targets, Mse)?;
    /// assert!(loss >= 0.0);
    /// assert_eq!(grads.len(), 2);
    /// # Ok::<(), ShapeError>(())
    /// ```
    pub fn loss_and_grads<M, T, F>(
        &self,
        x: &Batch<M>,
        target: &T,
        loss: F,
    ) -> Result<(f32, Grads), ShapeError>
    where
        M: Shape,
        T: TargetFor<<<L as Chain<N>>::Out as Shape>::Flat>,
        F: Loss<T>,
    {
        self.check_batch(x)?;
        check_target(&self.output_dims(), x.samples(), target)?;
        let (value, grads, _) = self.loss_grads_correct(x, target, loss)?;
        Ok((value, grads))
    }

    /// [`loss_and_grads`](Net::loss_and_grads) of a checked batch and target, with the number
    /// of samples classified right for labels.
    pub(crate) fn loss_grads_correct<M: Shape, T: Target, F: Loss<T>>(
        &self,
        x: &Batch<M>,
        target: &T,
        loss: F,
    ) -> Result<(f32, Grads, Option<usize>), ShapeError> {
        let state = self.state();
        let ctx = exec::RunCtx::train(state.seed(), state.steps());
        let layers = state.bound_layers();
        loss_grads_at(layers, 0..layers.len(), x.as_matrix(), target, loss, ctx)
    }
}

/// The loss, the gradients and the number of samples classified right (for labels) of the
/// nodes `nodes` of `layers` (a net, or one entry of a net with several stems) on a checked
/// batch `x` and target.
pub(crate) fn loss_grads_at<T: Target, F: Loss<T>>(
    layers: &[crate::state::BoundLayer],
    nodes: core::ops::Range<usize>,
    x: &nalgebra::DMatrix<f32>,
    target: &T,
    loss: F,
    ctx: exec::RunCtx,
) -> Result<(f32, Grads, Option<usize>), ShapeError> {
    let trace = exec::forward_trace(layers, nodes, x, ctx)?;
    let y = trace.output(x);
    let correct = target.correct(y);
    let (value, dy) = loss.loss_and_grad(y, target)?;
    if dy.shape() != y.shape() {
        return Err(ShapeError::Contract {
            what: format!("the loss {}", loss.name()),
            detail: format!(
                "its gradient is {} × {} but the output is {} × {}",
                dy.nrows(),
                dy.ncols(),
                y.nrows(),
                y.ncols()
            ),
        });
    }
    let (values, buffers) = exec::backward(layers, x, trace, dy)?;
    let names = layers
        .iter()
        .flat_map(|l| &l.params)
        .map(|p| p.name.clone())
        .collect();
    Ok((
        value,
        Grads {
            names,
            values,
            reached: None,
            buffers,
        },
        correct,
    ))
}

/// Checks labels or targets against the net's output width and the batch's sample count.
pub(crate) fn check_target<T: Target>(
    output: &[usize],
    samples: usize,
    target: &T,
) -> Result<(), ShapeError> {
    let width = output.iter().product();
    if samples == 0 {
        return Err(ShapeError::EmptyBatch);
    }
    if target.samples() != samples {
        return Err(ShapeError::TargetCount {
            what: T::WHAT,
            samples,
            targets: target.samples(),
        });
    }
    if target.width() != width {
        return Err(ShapeError::TargetWidth {
            what: T::WHAT,
            expected: width,
            found: target.width(),
        });
    }
    // Image targets for an image output must line up value for value, as an image batch
    // must fit an image net.
    if let Some(found) = target.image_dims() {
        if output.len() > 1 && found != output {
            return Err(ShapeError::TargetImageShape {
                expected: output.to_vec(),
                found,
            });
        }
    }
    Ok(())
}
