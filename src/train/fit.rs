//! The fit loop: epochs of shuffled mini-batches, validation, a learning-rate schedule, early
//! stopping, a per-epoch callback and checkpoints; the history of every epoch.

use std::cell::RefCell;
use std::io::IsTerminal;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

use nalgebra::DMatrix;

use crate::layer::BufferValue;

use super::{EarlyStopping, Loss, Optimizer, Progress, Schedule, Target, TargetFor, TrainError};
use crate::alloc::try_clone;
use crate::batch::Batch;
use crate::data::order;
use crate::error::ShapeError;
use crate::list::Chain;
use crate::net::Net;
use crate::rules::{ValidationWidthMatches, Width};
use crate::shape::Shape;
use crate::state::{Bound, Init};

/// What a per-epoch callback ([`Fit::on_epoch_end`]) tells the fit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Control {
    /// Go on with the next epoch.
    Continue,
    /// Stop after this epoch, as if it were the last.
    Stop,
}

/// A per-epoch callback.
type Callback<'a> = Rc<RefCell<dyn FnMut(&EpochMetrics) -> Control + 'a>>;

/// How [`Net::fit`] trains: epochs, batch size, shuffling seed, validation data (given, or
/// split off as Keras's `validation_split`), a learning-rate [`Schedule`], [`EarlyStopping`],
/// a per-epoch callback, a checkpoint after every epoch, progress.
///
/// # Type parameters
/// * `M`: the training batch's shape (`Batch<M>`); validation data must be as wide.
/// * `T`: the training targets: [`Labels`](super::Labels) or a [`Batch`] of targets.
///
/// # Example
/// ```
/// use lazynet::prelude::*;
///
/// let mut net = Net::new()
///     .push(Dense::<U16>::new())
///     .push(Relu)
///     .push(Dense::<U2>::new())
///     .seed(1)
///     .bind::<U2>();
/// // Two classes: is the first feature larger than the second?
/// let x = Batch::<U2>::from_fn(64, |f, s| ((s * 7 + f * 13) % 17) as f32 / 17.0);
/// let labels: Vec<usize> = (0..64)
///     .map(|s| usize::from(x.sample(s).is_some_and(|v| v[0] > v[1])))
///     .collect();
/// let labels = Labels::<U2>::try_new(labels)?;
/// let fit = Fit::new(40).batch_size(16).seed(0).quiet();
/// let history = net.fit(&x, &labels, CrossEntropy, &mut Adam::new(0.05), &fit)?;
/// let last = history.last().map(|e| e.accuracy);
/// assert!(last.flatten().is_some_and(|a| a > 0.9), "{last:?}");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Fit<'a, M: Shape, T> {
    epochs: usize,
    batch_size: usize,
    seed: u64,
    first_epoch: usize,
    shuffle: bool,
    progress: bool,
    validation: Option<Validation<'a, T>>,
    validation_split: Option<f64>,
    schedule: Option<Schedule>,
    early_stopping: Option<EarlyStopping>,
    on_epoch_end: Option<Callback<'a>>,
    checkpoint: Option<PathBuf>,
    batch: PhantomData<fn() -> M>,
}

/// Validation data: a batch (its sample shape and values) and its labels or targets,
/// evaluated after every epoch.
#[derive(Debug)]
struct Validation<'a, T> {
    dims: Vec<usize>,
    x: &'a DMatrix<f32>,
    target: &'a T,
}

impl<T> Clone for Validation<'_, T> {
    fn clone(&self) -> Self {
        Validation {
            dims: self.dims.clone(),
            x: self.x,
            target: self.target,
        }
    }
}

impl<M: Shape, T> core::fmt::Debug for Fit<'_, M, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Fit")
            .field("epochs", &self.epochs)
            .field("batch_size", &self.batch_size)
            .field("seed", &self.seed)
            .field("first_epoch", &self.first_epoch)
            .field("shuffle", &self.shuffle)
            .field("progress", &self.progress)
            .field("validation", &self.validation.as_ref().map(|v| v.x.ncols()))
            .field("validation_split", &self.validation_split)
            .field("schedule", &self.schedule)
            .field("early_stopping", &self.early_stopping)
            .field("on_epoch_end", &self.on_epoch_end.is_some())
            .field("checkpoint", &self.checkpoint)
            .finish()
    }
}

impl<'a, M: Shape, T> Fit<'a, M, T> {
    /// `epochs` epochs of batches of 32, shuffled from seed 0, with a progress display.
    pub fn new(epochs: usize) -> Self {
        Fit {
            epochs,
            batch_size: 32,
            seed: 0,
            first_epoch: 0,
            shuffle: true,
            progress: true,
            validation: None,
            validation_split: None,
            schedule: None,
            early_stopping: None,
            on_epoch_end: None,
            checkpoint: None,
            batch: PhantomData,
        }
    }

    /// The number of samples per step (the last batch of an epoch may be smaller).
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size;
        self
    }

    /// The seed of the shuffling: epoch `e` is shuffled from `(seed, e)`, so a run resumed at
    /// epoch `e` (see [`first_epoch`](Fit::first_epoch)) sees the batches an uninterrupted
    /// run sees.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Whether to shuffle the samples every epoch (`true` unless set).
    pub fn shuffle(mut self, shuffle: bool) -> Self {
        self.shuffle = shuffle;
        self
    }

    /// The number of epochs already trained, when resuming from a checkpoint: epochs are
    /// numbered, shuffled and scheduled from there. 0 unless set.
    pub fn first_epoch(mut self, first_epoch: usize) -> Self {
        self.first_epoch = first_epoch;
        self
    }

    /// Resumes where a checkpoint [`load_checkpoint`](Net::load_checkpoint) read left off:
    /// its epoch becomes the [`first_epoch`](Fit::first_epoch) and its seed the
    /// [`seed`](Fit::seed), so the epochs that follow see the batches and learning rates an
    /// uninterrupted run sees.
    pub fn resume(self, progress: Progress) -> Self {
        self.first_epoch(progress.epoch).seed(progress.seed)
    }

    /// No progress display and no per-epoch lines.
    pub fn quiet(mut self) -> Self {
        self.progress = false;
        self
    }

    /// Data to evaluate after every epoch: its loss and, for labels, its accuracy go into the
    /// history. Its batch must be as wide as the training batch: checked by the compiler when
    /// both widths are static, by `fit` otherwise.
    pub fn validation<V>(mut self, x: &'a Batch<V>, target: &'a T) -> Self
    where
        V: Shape,
        V::Flat: Width,
        M::Flat: Width,
        <V::Flat as Width>::Output: ValidationWidthMatches<<M::Flat as Width>::Output>,
    {
        self.validation = Some(Validation {
            dims: x.features().dims(),
            x: x.as_matrix(),
            target,
        });
        self
    }

    /// Holds out the last `fraction` of the samples (before any shuffling) as validation
    /// data, as Keras's `validation_split`: the first `⌊n·(1 − fraction)⌋` are trained on, the
    /// rest validated on; with 150 samples and 0.2, samples 120 to 149 are validated on and
    /// never trained on. Data given with [`validation`](Fit::validation)
    /// takes precedence. `fit` refuses a fraction outside (0, 1), or one that leaves either
    /// part empty.
    pub fn validation_split(mut self, fraction: f64) -> Self {
        self.validation_split = Some(fraction);
        self
    }

    /// The learning rate of every epoch: set on the optimizer before the epoch's first step.
    /// Without one, the optimizer's rate is left as it is.
    pub fn schedule(mut self, schedule: Schedule) -> Self {
        self.schedule = Some(schedule);
        self
    }

    /// Stops when a metric stops improving, optionally ending with the best epoch's weights.
    pub fn early_stopping(mut self, early_stopping: EarlyStopping) -> Self {
        self.early_stopping = Some(early_stopping);
        self
    }

    /// Calls `f` with every epoch's metrics once the epoch is recorded; [`Control::Stop`] ends
    /// the fit after that epoch (Keras's callbacks' `on_epoch_end`, with
    /// `model.stop_training`).
    ///
    /// ```
    /// use lazynet::prelude::*;
    ///
    /// let mut net = Net::new().push(Dense::<U1>::new()).seed(3).bind::<U1>();
    /// let x = Batch::<U1>::from_fn(16, |_, s| s as f32 / 16.0);
    /// let y = Batch::<U1>::from_fn(16, |_, s| 1.0 - s as f32 / 16.0);
    /// let mut seen = Vec::new();
    /// let fit = Fit::new(100).quiet().on_epoch_end(|m| {
    ///     seen.push(m.loss);
    ///     if m.loss < 0.01 { Control::Stop } else { Control::Continue }
    /// });
    /// let history = net.fit(&x, &y, Mse, &mut Adam::new(0.1), &fit)?;
    /// drop(fit);
    /// assert_eq!(seen.len(), history.epochs().len());
    /// assert!(seen.len() < 100 && history.last().is_some_and(|m| m.loss < 0.01));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn on_epoch_end(mut self, f: impl FnMut(&EpochMetrics) -> Control + 'a) -> Self {
        self.on_epoch_end = Some(Rc::new(RefCell::new(f)));
        self
    }

    /// Saves a checkpoint to `path` after every epoch: the parameters, the optimizer's state
    /// and hyper-parameters, and the epoch and seed, so that
    /// [`load_checkpoint`](Net::load_checkpoint) and [`resume`](Fit::resume) go on from there
    /// (Keras's `ModelCheckpoint`). Each save replaces the file whole.
    pub fn checkpoint(mut self, path: impl AsRef<Path>) -> Self {
        self.checkpoint = Some(path.as_ref().to_path_buf());
        self
    }
}

/// What one epoch measured.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct EpochMetrics {
    /// The epoch, counting from 1 (and from [`Fit::first_epoch`] + 1 when resuming).
    pub epoch: usize,
    /// The mean training loss over the epoch's samples, as the steps saw them.
    pub loss: f32,
    /// The training accuracy over the epoch, as the steps saw it; `None` without labels.
    pub accuracy: Option<f32>,
    /// The validation loss after the epoch.
    pub val_loss: Option<f32>,
    /// The validation accuracy after the epoch; `None` without validation labels.
    pub val_accuracy: Option<f32>,
    /// The learning rate of the epoch's steps.
    pub lr: f64,
    /// The epoch's wall-clock time in seconds, validation included.
    pub seconds: f64,
}

/// Every epoch's metrics, in order: what [`Net::fit`] returns.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    epochs: Vec<EpochMetrics>,
    stopped_early: Option<usize>,
    best_epoch: Option<usize>,
    restored_best: bool,
}

impl History {
    /// The epochs' metrics.
    pub fn epochs(&self) -> &[EpochMetrics] {
        &self.epochs
    }

    /// The last epoch's metrics.
    pub fn last(&self) -> Option<&EpochMetrics> {
        self.epochs.last()
    }

    /// The epoch after which [`EarlyStopping`] or a callback stopped the fit, if one did.
    pub fn stopped_early(&self) -> Option<usize> {
        self.stopped_early
    }

    /// The best epoch by the [`EarlyStopping`] metric, when the fit had one.
    pub fn best_epoch(&self) -> Option<usize> {
        self.best_epoch
    }

    /// The metrics of the [`best_epoch`](History::best_epoch).
    pub fn best(&self) -> Option<&EpochMetrics> {
        let best = self.best_epoch?;
        self.epochs.iter().find(|m| m.epoch == best)
    }

    /// Whether the fit ended with the best epoch's weights restored.
    pub fn restored_best(&self) -> bool {
        self.restored_best
    }
}

impl core::fmt::Display for EpochMetrics {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "epoch {:>3}: loss {:.4}", self.epoch, self.loss)?;
        if let Some(a) = self.accuracy {
            write!(f, ", accuracy {:.2}%", 100.0 * a)?;
        }
        if let Some(l) = self.val_loss {
            write!(f, ", val loss {l:.4}")?;
        }
        if let Some(a) = self.val_accuracy {
            write!(f, ", val accuracy {:.2}%", 100.0 * a)?;
        }
        write!(f, ", lr {}", Rate(self.lr))?;
        if self.seconds < 0.01 {
            write!(f, " ({:.2} ms)", self.seconds * 1e3)
        } else {
            write!(f, " ({:.2} s)", self.seconds)
        }
    }
}

/// A learning rate printed short: `0.001`, `0.0009755`, `4e-6`.
struct Rate(f64);

impl core::fmt::Display for Rate {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let lr = self.0;
        if lr == 0.0 || !lr.is_finite() {
            write!(f, "{lr}")
        } else if (1e-4..1e4).contains(&lr.abs()) {
            // Four significant digits, trailing zeros dropped. The logarithm's floor is in
            // −4..=3 here, so the digits are 0 to 7.
            let exponent = lr.abs().log10().floor().clamp(-5.0, 4.0);
            // Exact: a whole number in −5..=4, so 3 − exponent is a whole number in −1..=8.
            let digits = (0u8..=8)
                .find(|&d| f64::from(d) == 3.0 - exponent)
                .map_or(0, usize::from);
            let text = format!("{lr:.digits$}");
            let text = if text.contains('.') {
                text.trim_end_matches('0').trim_end_matches('.')
            } else {
                &text
            };
            f.write_str(text)
        } else {
            write!(f, "{lr:.3e}")
        }
    }
}

impl<N: Shape, L: Chain<N>> Net<Init<N>, L> {
    /// Trains the net: for every epoch, the learning rate set by the schedule (if any), the
    /// samples shuffled (from the fit's seed and the epoch), one optimizer step per batch, then
    /// the validation data evaluated, the epoch recorded, early stopping and the callback
    /// consulted, and the checkpoint saved. Returns every epoch's metrics. The same seed and
    /// data give bit-identical weights, run after run.
    ///
    /// With progress on, a progress bar shows on standard error when it is a terminal, and a
    /// plain line per epoch otherwise.
    ///
    /// # Errors
    /// Every error raised once training started says where, and carries the
    /// [`history`](TrainError::history) of the epochs finished before; the weights are those
    /// after the last step that succeeded:
    /// * [`TrainError::LossNotFinite`] naming the epoch and step where the loss stopped being
    ///   finite;
    /// * [`TrainError::Step`] naming the epoch and step that failed, with the cause: the
    ///   optimizer refused the step (gradients or an update that are not finite, a learning
    ///   rate out of range from a schedule), or a layer's kernel or the loss returned an
    ///   error;
    /// * [`TrainError::EpochEnd`] naming the epoch whose end failed: the validation data, the
    ///   checkpoint, the best weights' copy, or the callback.
    ///
    /// Before the first step, with nothing changed:
    /// * [`TrainError::Setting`] for a batch size of 0, a first epoch so large that the epoch
    ///   numbers overflow, a validation split outside (0, 1) or leaving a part empty, or early
    ///   stopping on a metric the fit does not measure (validation metrics without validation
    ///   data, an accuracy without labels);
    /// * the errors of [`loss_and_grads`](Net::loss_and_grads), checked on the whole data
    ///   and the validation data: labels that do not fit fail at once.
    pub fn fit<M, T, F, O>(
        &mut self,
        x: &Batch<M>,
        target: &T,
        loss: F,
        optimizer: &mut O,
        fit: &Fit<'_, M, T>,
    ) -> Result<History, TrainError>
    where
        M: Shape,
        T: TargetFor<<<L as Chain<N>>::Out as Shape>::Flat>,
        F: Loss<T>,
        O: Optimizer,
    {
        if fit.batch_size == 0 {
            return Err(TrainError::Setting(
                "the batch size must be at least 1".into(),
            ));
        }
        if fit.first_epoch.checked_add(fit.epochs).is_none() {
            return Err(TrainError::Setting(format!(
                "first epoch {} plus {} epochs is past the largest epoch number",
                fit.first_epoch, fit.epochs
            )));
        }
        self.check_batch(x)?;
        super::check_target(&self.output_dims(), x.samples(), target)?;
        // Keras's `validation_split`: the last samples, before shuffling.
        let split = match (&fit.validation, fit.validation_split) {
            (None, Some(fraction)) => Some(split_off(x, target, fraction)?),
            _ => None,
        };
        let (x, target, validation) = match &split {
            Some((train_x, train_t, val_x, val_t)) => (
                train_x,
                train_t,
                Some(Validation {
                    dims: val_x.features().dims(),
                    x: val_x.as_matrix(),
                    target: val_t,
                }),
            ),
            None => (x, target, fit.validation.clone()),
        };
        if let Some(v) = &validation {
            self.check_parts(&v.dims, v.x)?;
            super::check_target(&self.output_dims(), v.x.ncols(), v.target)?;
        }
        if let Some(stop) = &fit.early_stopping {
            check_monitor(stop, validation.is_some(), target)?;
        }
        self.check_last_batch(x, target, loss, fit.batch_size)?;
        let steps = x.samples().div_ceil(fit.batch_size);
        let bar = progress_bar(fit.progress, steps);
        let mut history = History::default();
        let run = Run {
            x,
            target,
            validation: validation.as_ref(),
            loss,
            bar: &bar,
        };
        let result = self.epochs(&run, optimizer, fit, &mut history);
        if let Some(bar) = bar {
            match result {
                Ok(()) => bar.finish_and_clear(),
                Err(_) => bar.abandon(),
            }
        }
        match result {
            Ok(()) => Ok(history),
            Err(e) => Err(e.with_history(history)),
        }
    }

    /// The epochs of [`fit`](Net::fit), recording each into `history`.
    fn epochs<M, T, F, O>(
        &mut self,
        run: &Run<'_, M, T, F>,
        optimizer: &mut O,
        fit: &Fit<'_, M, T>,
        history: &mut History,
    ) -> Result<(), TrainError>
    where
        M: Shape,
        T: Target,
        F: Loss<T>,
        O: Optimizer,
    {
        let samples = run.x.samples();
        #[allow(clippy::type_complexity)]
        let mut best: Option<(f32, usize, Option<(Vec<DMatrix<f32>>, Vec<BufferValue>)>)> = None;
        let mut waited = 0usize;
        // `first_epoch + epochs` was checked, so no epoch number overflows.
        for epoch in (1..=fit.epochs).map(|e| fit.first_epoch + e) {
            let start = Instant::now();
            if let Some(schedule) = &fit.schedule {
                optimizer.set_learning_rate(schedule.lr(epoch));
            }
            let lr = optimizer.learning_rate();
            let step_error = |step: usize| {
                move |source: TrainError| TrainError::Step {
                    epoch,
                    step,
                    history: History::default(),
                    source: Box::new(source),
                }
            };
            let order = order(samples, fit.seed, epoch - 1, fit.shuffle)
                .map_err(|e| step_error(1)(e.into()))?;
            let (mut total, mut correct, mut counted) = (0.0f64, 0usize, false);
            if let Some(bar) = run.bar {
                bar.reset();
                bar.set_prefix(format!("epoch {epoch}"));
            }
            for (s, indices) in order.chunks(fit.batch_size).enumerate() {
                let at = step_error(s + 1);
                let xb = run.x.select(indices).map_err(|e| at(e.into()))?;
                let tb = run.target.select(indices).map_err(|e| at(e.into()))?;
                let (value, grads, hits) = self
                    .loss_grads_correct(&xb, &tb, run.loss)
                    .map_err(|e| at(e.into()))?;
                if !value.is_finite() {
                    return Err(TrainError::LossNotFinite {
                        epoch,
                        step: s + 1,
                        loss: value,
                        history: History::default(),
                    });
                }
                optimizer.step(self, &grads).map_err(at)?;
                total += f64::from(value) * indices.len() as f64;
                if let Some(h) = hits {
                    correct += h;
                    counted = true;
                }
                if let Some(bar) = run.bar {
                    bar.inc(1);
                    bar.set_message(format!("loss {value:.4}"));
                }
            }
            let end_error = |source: TrainError| TrainError::EpochEnd {
                epoch,
                history: History::default(),
                source: Box::new(source),
            };
            let (val_loss, val_accuracy) = match run.validation {
                Some(v) => {
                    let (l, a) = self
                        .evaluate_parts(v.x, v.target, run.loss)
                        .map_err(|e| end_error(e.into()))?;
                    (Some(l), a)
                }
                None => (None, None),
            };
            let metrics = EpochMetrics {
                epoch,
                loss: (total / samples.max(1) as f64) as f32,
                accuracy: counted.then(|| correct as f32 / samples.max(1) as f32),
                val_loss,
                val_accuracy,
                lr,
                seconds: start.elapsed().as_secs_f64(),
            };
            match run.bar {
                Some(bar) => bar.println(metrics.to_string()),
                None if fit.progress => eprintln!("{metrics}"),
                None => {}
            }
            history.epochs.push(metrics);
            let mut stop = false;
            if let Some(rule) = &fit.early_stopping {
                let value = rule.monitor.of(&metrics).unwrap_or(f32::NAN);
                let first = epoch == fit.first_epoch + 1;
                // As Keras: the first epoch is the best until one improves on it, even when
                // its metric is NaN, and the fit never stops after its first epoch.
                let so_far = best.as_ref().map(|b| b.0).filter(|b| !b.is_nan());
                if rule.improves(value, so_far) || first {
                    let weights = if rule.restore_best_weights {
                        let params = self.copy_params().map_err(|e| end_error(e.into()))?;
                        let buffers = self.named_buffers().map(|b| b.value().clone()).collect();
                        Some((params, buffers))
                    } else {
                        None
                    };
                    best = Some((value, epoch, weights));
                    waited = 0;
                } else {
                    waited += 1;
                    // Keras: the `patience`-th epoch in a row without improvement stops.
                    stop = waited >= rule.patience;
                }
                if first && value.is_nan() {
                    // Not an improvement to wait from: the next epoch with a number is one.
                    waited = 1;
                }
                history.best_epoch = best.as_ref().map(|b| b.1);
            }
            if let Some(callback) = &fit.on_epoch_end {
                let mut f = callback.try_borrow_mut().map_err(|_| {
                    end_error(TrainError::Setting(
                        "the epoch callback is already running (a fit inside the callback with the same `Fit`)"
                            .into(),
                    ))
                })?;
                stop |= f(&metrics) == Control::Stop;
            }
            if let Some(path) = &fit.checkpoint {
                let progress = Progress {
                    epoch,
                    seed: fit.seed,
                };
                self.save_checkpoint_at(path, optimizer, progress)
                    .map_err(end_error)?;
            }
            if stop {
                history.stopped_early = Some(epoch);
                break;
            }
        }
        if let Some((_, _, Some((weights, buffers)))) = best {
            self.set_values(weights);
            self.set_buffers(buffers);
            history.restored_best = true;
        }
        Ok(())
    }

    /// A copy of every parameter's values, in order, allocated fallibly.
    /// Checks, before the first step, that the last batch of each epoch trains when it holds
    /// a single sample: a batch normalization on a flat input refuses one value per feature
    /// ([`ShapeError::BatchTooSmall`]), which would stop the fit midway with some steps
    /// taken. One training pass on one sample, which changes nothing.
    fn check_last_batch<M: Shape, T: Target, F: Loss<T>>(
        &self,
        x: &Batch<M>,
        target: &T,
        loss: F,
        batch_size: usize,
    ) -> Result<(), TrainError> {
        let samples = x.samples();
        if batch_size < 2 || samples % batch_size != 1 {
            return Ok(());
        }
        let last = [samples - 1];
        let (xb, tb) = (x.select(&last)?, target.select(&last)?);
        match self.loss_grads_correct(&xb, &tb, loss) {
            Err(err) if too_small(&err) => Err(TrainError::Setting(format!(
                "{samples} samples in batches of {batch_size} leave a last batch of 1 sample in every epoch, which cannot train ({err}); pick a batch size that leaves none or more than 1"
            ))),
            _ => Ok(()),
        }
    }

    fn copy_params(&self) -> Result<Vec<DMatrix<f32>>, ShapeError> {
        self.named_params()
            .map(|(name, value)| try_clone(value, || format!("a copy of `{name}`")))
            .collect()
    }

    /// The loss of a batch and, for labels, the fraction of samples classified right, from one
    /// forward pass.
    ///
    /// # Errors
    /// As [`loss_and_grads`](Net::loss_and_grads).
    ///
    /// # Example
    /// ```
    /// use lazynet::prelude::*;
    ///
    /// let net = Net::new().push(Dense::<U3>::new()).seed(0).bind::<U4>();
    /// let x = Batch::<U4>::from_fn(5, |f, s| (f + s) as f32 / 10.0);
    /// let labels = Labels::<U3>::try_new(vec![0, 1, 2, 1, 0])?;
    /// let (loss, accuracy) = net.evaluate(&x, &labels, CrossEntropy)?;
    /// assert!(loss > 0.0 && accuracy.is_some_and(|a| (0.0..=1.0).contains(&a)));
    /// // The classes the net predicts, one per sample.
    /// assert_eq!(net.try_forward(&x)?.argmax()?.len(), 5);
    /// # Ok::<(), ShapeError>(())
    /// ```
    pub fn evaluate<M, T, F>(
        &self,
        x: &Batch<M>,
        target: &T,
        loss: F,
    ) -> Result<(f32, Option<f32>), ShapeError>
    where
        M: Shape,
        T: TargetFor<<<L as Chain<N>>::Out as Shape>::Flat>,
        F: Loss<T>,
    {
        self.check_batch(x)?;
        super::check_target(&self.output_dims(), x.samples(), target)?;
        self.evaluate_parts(x.as_matrix(), target, loss)
    }

    /// [`evaluate`](Net::evaluate) of a checked batch's matrix.
    fn evaluate_parts<T: Target, F: Loss<T>>(
        &self,
        x: &DMatrix<f32>,
        target: &T,
        loss: F,
    ) -> Result<(f32, Option<f32>), ShapeError> {
        let y = crate::exec::forward(self.state().bound_layers(), x)?;
        let (value, _) = loss.loss_and_grad(&y, target)?;
        let accuracy = target
            .correct(&y)
            .map(|c| c as f32 / x.ncols().max(1) as f32);
        Ok((value, accuracy))
    }
}

/// The data a fit runs on, checked.
struct Run<'r, M: Shape, T, F> {
    x: &'r Batch<M>,
    target: &'r T,
    validation: Option<&'r Validation<'r, T>>,
    loss: F,
    bar: &'r Option<indicatif::ProgressBar>,
}

/// Splits off the last `fraction` of the samples, as Keras's `validation_split`: the training
/// part is the first `⌊n·(1 − fraction)⌋` samples.
#[allow(clippy::type_complexity)]
fn split_off<M: Shape, T: Target>(
    x: &Batch<M>,
    target: &T,
    fraction: f64,
) -> Result<(Batch<M>, T, Batch<M>, T), TrainError> {
    let n = x.samples();
    let train = (n as f64 * (1.0 - fraction)).floor();
    let ok = fraction > 0.0 && fraction < 1.0 && train >= 1.0 && train < n as f64;
    if !ok {
        let samples = if n == 1 { "sample" } else { "samples" };
        return Err(TrainError::Setting(format!(
            "a validation split of {fraction} of {n} {samples} leaves a part empty: it must be in (0, 1) and leave at least one sample for training and one for validation"
        )));
    }
    // `train` is in 1..n, so it converts exactly.
    let train = train as usize;
    let first: Vec<usize> = (0..train).collect();
    let last: Vec<usize> = (train..n).collect();
    Ok((
        x.select(&first)?,
        target.select(&first)?,
        x.select(&last)?,
        target.select(&last)?,
    ))
}

/// Checks that the fit measures the metric early stopping watches.
fn check_monitor<T: Target>(
    stop: &EarlyStopping,
    validation: bool,
    target: &T,
) -> Result<(), TrainError> {
    let monitor = stop.monitor;
    // Labels count classified samples (0 of none); other targets count nothing.
    let labels = target.correct(&DMatrix::zeros(0, 0)).is_some();
    if monitor.needs_validation() && !validation {
        return Err(TrainError::Setting(format!(
            "early stopping watches the {}, but the fit has no validation data: give it with `Fit::validation` or `Fit::validation_split`",
            monitor.name()
        )));
    }
    if monitor.needs_labels() && !labels {
        return Err(TrainError::Setting(format!(
            "early stopping watches the {}, but the targets are not labels, so no accuracy is measured",
            monitor.name()
        )));
    }
    Ok(())
}

/// A progress bar of `steps` steps when asked for and standard error is a terminal.
fn progress_bar(progress: bool, steps: usize) -> Option<indicatif::ProgressBar> {
    if !progress || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(steps as u64);
    let style = indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg}")
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    Some(bar)
}

/// Whether `err` is a batch normalization refusing a batch too small to train on, in a block
/// or not.
fn too_small(err: &ShapeError) -> bool {
    match err {
        ShapeError::BatchTooSmall { .. } => true,
        ShapeError::InBlock { source, .. } => too_small(source),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(seconds: f64, lr: f64) -> EpochMetrics {
        EpochMetrics {
            epoch: 7,
            loss: 0.5,
            accuracy: Some(0.75),
            val_loss: None,
            val_accuracy: None,
            lr,
            seconds,
        }
    }

    #[test]
    fn short_epochs_print_in_milliseconds() {
        assert_eq!(
            metrics(0.0042, 0.001).to_string(),
            "epoch   7: loss 0.5000, accuracy 75.00%, lr 0.001 (4.20 ms)"
        );
        assert!(metrics(0.0, 0.001).to_string().ends_with("(0.00 ms)"));
        assert!(metrics(0.25, 0.001).to_string().ends_with("(0.25 s)"));
    }

    #[test]
    fn rates_print_short() {
        let rate = |lr: f64| Rate(lr).to_string();
        assert_eq!(rate(0.001), "0.001");
        assert_eq!(rate(0.1), "0.1");
        assert_eq!(rate(0.000_975_528), "0.0009755");
        assert_eq!(rate(4e-6), "4.000e-6");
        assert_eq!(rate(3.0), "3");
        assert_eq!(rate(0.0), "0");
        assert_eq!(rate(f64::NAN), "NaN");
    }
}
