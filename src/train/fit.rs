//! The fit loop: epochs of shuffled mini-batches, validation, history, progress.

use std::io::IsTerminal;
use std::time::Instant;

use super::{Loss, Optimizer, TargetFor, TrainError};
use crate::batch::Batch;
use crate::data::order;
use crate::error::ShapeError;
use crate::list::Chain;
use crate::net::Net;
use crate::shape::Shape;
use crate::state::{Bound, Init};

/// How [`Net::fit`] trains: epochs, batch size, shuffling seed, validation data, progress.
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
#[derive(Clone, Debug)]
pub struct Fit<'a, M: Shape, T> {
    epochs: usize,
    batch_size: usize,
    seed: u64,
    first_epoch: usize,
    shuffle: bool,
    progress: bool,
    validation: Option<Validation<'a, M, T>>,
}

/// Validation data: a batch and its labels or targets, evaluated after every epoch.
#[derive(Clone, Debug)]
struct Validation<'a, M: Shape, T> {
    x: &'a Batch<M>,
    target: &'a T,
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
    /// numbered, and shuffled, from there. 0 unless set.
    pub fn first_epoch(mut self, first_epoch: usize) -> Self {
        self.first_epoch = first_epoch;
        self
    }

    /// No progress display and no per-epoch lines.
    pub fn quiet(mut self) -> Self {
        self.progress = false;
        self
    }

    /// Data to evaluate after every epoch: its loss and, for labels, its accuracy go into the
    /// history.
    pub fn validation(mut self, x: &'a Batch<M>, target: &'a T) -> Self {
        self.validation = Some(Validation { x, target });
        self
    }
}

/// What one epoch measured.
#[derive(Clone, Copy, Debug, PartialEq)]
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
    /// The epoch's wall-clock time in seconds, validation included.
    pub seconds: f64,
}

/// Every epoch's metrics, in order: what [`Net::fit`] returns.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    epochs: Vec<EpochMetrics>,
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
        write!(f, " ({:.2} s)", self.seconds)
    }
}

impl<N: Shape, L: Chain<N>> Net<Init<N>, L> {
    /// Trains the net: for every epoch, the samples shuffled (from the fit's seed and the
    /// epoch), one optimizer step per batch, then the validation data evaluated. Returns every
    /// epoch's metrics. The same seed and data give bit-identical weights, run after run.
    ///
    /// With progress on, a progress bar shows on standard error when it is a terminal, and a
    /// plain line per epoch otherwise.
    ///
    /// # Errors
    /// * [`TrainError::LossNotFinite`] naming the epoch and step where the loss stopped being
    ///   finite, with the history of the epochs before; the weights are those after the step
    ///   before;
    /// * [`TrainError::Setting`] for a batch size of 0, or a first epoch so large that the
    ///   epoch numbers overflow;
    /// * [`TrainError::Step`] naming the epoch and step whose optimizer step was refused
    ///   (gradients that are not finite though the loss is, a bad hyper-parameter), with the
    ///   history of the epochs before;
    /// * the errors of [`loss_and_grads`](Net::loss_and_grads) (checked on the whole data
    ///   before the first step: labels that do not fit fail at once).
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
        self.check_batch(x)?;
        let samples = x.samples();
        super::check_target(&self.output_dims(), samples, target)?;
        if let Some(v) = &fit.validation {
            self.check_batch(v.x)?;
            super::check_target(&self.output_dims(), v.x.samples(), v.target)?;
        }
        if fit.first_epoch.checked_add(fit.epochs).is_none() {
            return Err(TrainError::Setting(format!(
                "first epoch {} plus {} epochs is past the largest epoch number",
                fit.first_epoch, fit.epochs
            )));
        }
        let steps = samples.div_ceil(fit.batch_size);
        let bar = progress_bar(fit.progress, steps);
        let mut history = History::default();
        let result = self.epochs(x, target, loss, optimizer, fit, &bar, &mut history);
        if let Some(bar) = bar {
            match result {
                Ok(()) => bar.finish_and_clear(),
                Err(_) => bar.abandon(),
            }
        }
        match result {
            Ok(()) => Ok(history),
            Err(TrainError::LossNotFinite {
                epoch, step, loss, ..
            }) => Err(TrainError::LossNotFinite {
                epoch,
                step,
                loss,
                history,
            }),
            Err(TrainError::Step {
                epoch,
                step,
                source,
                ..
            }) => Err(TrainError::Step {
                epoch,
                step,
                history,
                source,
            }),
            Err(e) => Err(e),
        }
    }

    /// The epochs of [`fit`](Net::fit), recording each into `history`.
    #[allow(clippy::too_many_arguments)]
    fn epochs<M, T, F, O>(
        &mut self,
        x: &Batch<M>,
        target: &T,
        loss: F,
        optimizer: &mut O,
        fit: &Fit<'_, M, T>,
        bar: &Option<indicatif::ProgressBar>,
        history: &mut History,
    ) -> Result<(), TrainError>
    where
        M: Shape,
        T: TargetFor<<<L as Chain<N>>::Out as Shape>::Flat>,
        F: Loss<T>,
        O: Optimizer,
    {
        let samples = x.samples();
        // `first_epoch + epochs` was checked, so no epoch number overflows.
        for epoch in (1..=fit.epochs).map(|e| fit.first_epoch + e) {
            let start = Instant::now();
            let order = order(samples, fit.seed, epoch - 1, fit.shuffle)?;
            let (mut total, mut correct, mut counted) = (0.0f64, 0usize, false);
            if let Some(bar) = bar {
                bar.reset();
                bar.set_prefix(format!("epoch {epoch}"));
            }
            for (s, indices) in order.chunks(fit.batch_size).enumerate() {
                let xb = x.select(indices)?;
                let tb = target.select(indices)?;
                let (value, grads, hits) = self.loss_grads_correct(&xb, &tb, loss)?;
                if !value.is_finite() {
                    return Err(TrainError::LossNotFinite {
                        epoch,
                        step: s + 1,
                        loss: value,
                        history: History::default(),
                    });
                }
                optimizer
                    .step(self, &grads)
                    .map_err(|source| TrainError::Step {
                        epoch,
                        step: s + 1,
                        history: History::default(),
                        source: Box::new(source),
                    })?;
                total += f64::from(value) * indices.len() as f64;
                if let Some(h) = hits {
                    correct += h;
                    counted = true;
                }
                if let Some(bar) = bar {
                    bar.inc(1);
                    bar.set_message(format!("loss {value:.4}"));
                }
            }
            let (val_loss, val_accuracy) = match &fit.validation {
                Some(v) => {
                    let (l, a) = self.evaluate(v.x, v.target, loss)?;
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
                seconds: start.elapsed().as_secs_f64(),
            };
            match bar {
                Some(bar) => bar.println(metrics.to_string()),
                None if fit.progress => eprintln!("{metrics}"),
                None => {}
            }
            history.epochs.push(metrics);
        }
        Ok(())
    }

    /// The loss of a batch and, for labels, the fraction of samples classified right, from one
    /// forward pass.
    ///
    /// # Errors
    /// As [`loss_and_grads`](Net::loss_and_grads).
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
        let y = crate::exec::forward(self.state().bound_layers(), x.as_matrix())?;
        let (value, _) = loss.loss_and_grad(&y, target)?;
        let accuracy = target
            .correct(&y)
            .map(|c| c as f32 / x.samples().max(1) as f32);
        Ok((value, accuracy))
    }
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
