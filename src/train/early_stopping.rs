//! Early stopping: end a fit when a metric stops improving, as Keras's `EarlyStopping`.

use super::EpochMetrics;

/// The metric of an epoch that [`EarlyStopping`] watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Monitor {
    /// The training loss: lower is better.
    Loss,
    /// The training accuracy (labels only): higher is better.
    Accuracy,
    /// The validation loss: lower is better. Needs validation data.
    ValLoss,
    /// The validation accuracy: higher is better. Needs validation labels.
    ValAccuracy,
}

impl Monitor {
    /// The metric's value in an epoch's metrics, `None` when the fit does not measure it.
    pub fn of(self, m: &EpochMetrics) -> Option<f32> {
        match self {
            Monitor::Loss => Some(m.loss),
            Monitor::Accuracy => m.accuracy,
            Monitor::ValLoss => m.val_loss,
            Monitor::ValAccuracy => m.val_accuracy,
        }
    }

    /// Whether higher values are better.
    pub fn higher_is_better(self) -> bool {
        matches!(self, Monitor::Accuracy | Monitor::ValAccuracy)
    }

    /// The metric's name as the history prints it: `val loss`.
    pub fn name(self) -> &'static str {
        match self {
            Monitor::Loss => "loss",
            Monitor::Accuracy => "accuracy",
            Monitor::ValLoss => "val loss",
            Monitor::ValAccuracy => "val accuracy",
        }
    }

    /// Whether the metric needs validation data.
    pub(crate) fn needs_validation(self) -> bool {
        matches!(self, Monitor::ValLoss | Monitor::ValAccuracy)
    }

    /// Whether the metric needs labels (an accuracy).
    pub(crate) fn needs_labels(self) -> bool {
        self.higher_is_better()
    }
}

/// Stops a [`fit`](crate::Net::fit) when the monitored metric has not improved for
/// `patience` epochs, and optionally restores the weights of its best epoch (Keras's
/// `EarlyStopping(monitor, patience, min_delta, restore_best_weights)`).
///
/// An epoch improves on the best so far when its metric is lower by more than `min_delta`
/// (higher, for an accuracy). NaN never improves. The `patience`-th epoch in a row without an
/// improvement is the last (as in Keras; a patience of 0 or 1 stops at the first). With
/// `restore_best_weights`, the fit ends (stopped early or not) with the parameters of the best
/// epoch; the optimizer's state stays that of the last step.
///
/// # Example
/// ```
/// use lazynet::prelude::*;
///
/// let stop = EarlyStopping::new(Monitor::ValLoss).patience(5).restore_best_weights(true);
/// # let _ = stop;
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EarlyStopping {
    pub(crate) monitor: Monitor,
    pub(crate) patience: usize,
    pub(crate) min_delta: f32,
    pub(crate) restore_best_weights: bool,
}

impl EarlyStopping {
    /// Watches `monitor`, with a patience of 0, a `min_delta` of 0 and the last epoch's
    /// weights kept (Keras's defaults).
    pub fn new(monitor: Monitor) -> Self {
        EarlyStopping {
            monitor,
            patience: 0,
            min_delta: 0.0,
            restore_best_weights: false,
        }
    }

    /// The number of epochs without improvement to wait before stopping.
    pub fn patience(mut self, patience: usize) -> Self {
        self.patience = patience;
        self
    }

    /// The least change that counts as an improvement (its absolute value is used, as Keras
    /// does).
    pub fn min_delta(mut self, min_delta: f32) -> Self {
        self.min_delta = min_delta.abs();
        self
    }

    /// Whether the fit ends with the weights of the best epoch.
    pub fn restore_best_weights(mut self, restore: bool) -> Self {
        self.restore_best_weights = restore;
        self
    }

    /// Whether `value` improves on `best` (`None`: no epoch measured yet).
    pub(crate) fn improves(&self, value: f32, best: Option<f32>) -> bool {
        if value.is_nan() {
            return false;
        }
        match best {
            None => true,
            Some(best) if self.monitor.higher_is_better() => value > best + self.min_delta,
            Some(best) => value < best - self.min_delta,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn improvement_depends_on_the_direction_and_min_delta() {
        let loss = EarlyStopping::new(Monitor::ValLoss).min_delta(-0.1);
        assert!(loss.improves(1.0, None));
        assert!(loss.improves(0.85, Some(1.0)));
        assert!(!loss.improves(0.95, Some(1.0)));
        assert!(!loss.improves(f32::NAN, None));
        let acc = EarlyStopping::new(Monitor::ValAccuracy);
        assert!(acc.improves(0.9, Some(0.8)));
        assert!(!acc.improves(0.8, Some(0.8)));
    }
}
