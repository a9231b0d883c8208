//! Learning-rate schedules: the learning rate of every epoch of a fit.

use core::f64::consts::PI;
use core::fmt;
use std::sync::Arc;

/// The learning rate of every epoch of a [`fit`](crate::Net::fit), set on the optimizer
/// before the epoch's first step and recorded in the [`History`](super::History).
///
/// A schedule is a function of the epoch alone (counting from 1, as the history does), so a
/// fit resumed at epoch 11 ([`Fit::first_epoch`](super::Fit::first_epoch)) uses the rates an
/// uninterrupted run uses. The formulas are PyTorch's schedulers stepped once per epoch.
///
/// # Example
/// ```
/// use lazynet::prelude::*;
///
/// let decay = Schedule::step_decay(0.1, 10, 0.5);
/// assert_eq!(decay.lr(1), 0.1);
/// assert_eq!(decay.lr(11), 0.05);
/// let cosine = Schedule::cosine(0.1, 0.0, 50);
/// assert!((cosine.lr(26) - 0.05).abs() < 1e-12);
/// let warm = Schedule::from_fn(|epoch| if epoch <= 5 { 0.01 * epoch as f64 } else { 0.05 });
/// assert_eq!(warm.lr(2), 0.02);
/// ```
#[derive(Clone)]
pub struct Schedule(Kind);

#[derive(Clone)]
enum Kind {
    StepDecay { lr: f64, every: usize, factor: f64 },
    Cosine { lr: f64, min_lr: f64, epochs: usize },
    OneCycle { max_lr: f64, epochs: usize },
    Fn(Arc<dyn Fn(usize) -> f64 + Send + Sync>),
}

impl Schedule {
    /// `lr`, multiplied by `factor` every `every` epochs (PyTorch's `StepLR(step_size=every,
    /// gamma=factor)`): `lr · factor^⌊(epoch − 1) / every⌋`. An `every` of 0 keeps `lr`.
    pub fn step_decay(lr: f64, every: usize, factor: f64) -> Self {
        Schedule(Kind::StepDecay { lr, every, factor })
    }

    /// From `lr` down to `min_lr` along half a cosine over `epochs` epochs, then `min_lr`
    /// (PyTorch's `CosineAnnealingLR(T_max=epochs, eta_min=min_lr)`).
    pub fn cosine(lr: f64, min_lr: f64, epochs: usize) -> Self {
        Schedule(Kind::Cosine { lr, min_lr, epochs })
    }

    /// The one-cycle policy over `epochs` epochs (PyTorch's `OneCycleLR(max_lr, total_steps=
    /// epochs)` with its defaults): from `max_lr / 25` up to `max_lr` over the first 30 % of the
    /// epochs, then down to `max_lr / 25 / 10⁴`, both along a cosine.
    pub fn one_cycle(max_lr: f64, epochs: usize) -> Self {
        Schedule(Kind::OneCycle { max_lr, epochs })
    }

    /// The rate `f(epoch)`, epochs counting from 1.
    pub fn from_fn(f: impl Fn(usize) -> f64 + Send + Sync + 'static) -> Self {
        Schedule(Kind::Fn(Arc::new(f)))
    }

    /// The learning rate of epoch `epoch` (counting from 1; 0, which no fit passes, is read
    /// as 1). A rate that is not finite or is negative is refused by the optimizer's step,
    /// naming the epoch.
    pub fn lr(&self, epoch: usize) -> f64 {
        // Steps taken before the epoch: none for epoch 1 (and for 0).
        let t = match epoch {
            0 => 0,
            e => e - 1,
        };
        match &self.0 {
            Kind::StepDecay { lr, every, factor } => match t.checked_div(*every) {
                Some(k) => lr * factor.powf(k as f64),
                None => *lr,
            },
            Kind::Cosine { lr, min_lr, epochs } => {
                let progress = if *epochs == 0 {
                    1.0
                } else {
                    t.min(*epochs) as f64 / *epochs as f64
                };
                min_lr + (lr - min_lr) * (1.0 + (PI * progress).cos()) / 2.0
            }
            Kind::OneCycle { max_lr, epochs } => one_cycle(*max_lr, *epochs, t),
            Kind::Fn(f) => f(epoch),
        }
    }
}

/// PyTorch's `OneCycleLR` at step `t` of `total` (its defaults: `pct_start` 0.3,
/// `div_factor` 25, `final_div_factor` 1e4, cosine annealing, two phases).
fn one_cycle(max_lr: f64, total: usize, t: usize) -> f64 {
    let initial = max_lr / 25.0;
    let min = initial / 1e4;
    let anneal =
        |start: f64, end: f64, pct: f64| end + (start - end) / 2.0 * ((PI * pct).cos() + 1.0);
    let warm_end = 0.3 * total as f64 - 1.0;
    let last = total as f64 - 1.0;
    let t = (t as f64).min(last.max(0.0));
    if t <= warm_end {
        let pct = if warm_end > 0.0 { t / warm_end } else { 1.0 };
        anneal(initial, max_lr, pct)
    } else {
        let span = last - warm_end;
        let pct = if span > 0.0 {
            (t - warm_end) / span
        } else {
            1.0
        };
        anneal(max_lr, min, pct)
    }
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Kind::StepDecay { lr, every, factor } => f
                .debug_struct("StepDecay")
                .field("lr", lr)
                .field("every", every)
                .field("factor", factor)
                .finish(),
            Kind::Cosine { lr, min_lr, epochs } => f
                .debug_struct("Cosine")
                .field("lr", lr)
                .field("min_lr", min_lr)
                .field("epochs", epochs)
                .finish(),
            Kind::OneCycle { max_lr, epochs } => f
                .debug_struct("OneCycle")
                .field("max_lr", max_lr)
                .field("epochs", epochs)
                .finish(),
            Kind::Fn(_) => f.write_str("Schedule::from_fn(..)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_decay_halves_every_ten_epochs() {
        let s = Schedule::step_decay(0.1, 10, 0.5);
        assert_eq!(s.lr(1), 0.1);
        assert_eq!(s.lr(10), 0.1);
        assert_eq!(s.lr(11), 0.05);
        assert_eq!(s.lr(21), 0.025);
        assert_eq!(Schedule::step_decay(0.1, 0, 0.5).lr(100), 0.1);
    }

    #[test]
    fn cosine_goes_from_lr_to_min_and_stays() {
        let s = Schedule::cosine(1.0, 0.1, 10);
        assert_eq!(s.lr(1), 1.0);
        assert!((s.lr(6) - 0.55).abs() < 1e-12);
        assert!((s.lr(11) - 0.1).abs() < 1e-12);
        assert!((s.lr(50) - 0.1).abs() < 1e-12);
        assert!(Schedule::cosine(1.0, 0.0, 0).lr(1).abs() < 1e-12);
    }

    /// PyTorch 2.x `OneCycleLR(opt, max_lr=1.0, total_steps=10)`: the rates of its ten steps,
    /// from the formula in `torch/optim/lr_scheduler.py` (phase ends at 0.3·10 − 1 = 2 and 9).
    #[test]
    fn one_cycle_warms_up_then_anneals() {
        let s = Schedule::one_cycle(1.0, 10);
        assert!((s.lr(1) - 0.04).abs() < 1e-12);
        assert!((s.lr(2) - 0.52).abs() < 1e-12);
        assert!((s.lr(3) - 1.0).abs() < 1e-12);
        assert!((s.lr(10) - 4e-6).abs() < 1e-15);
        let rates: Vec<f64> = (1..=10).map(|e| s.lr(e)).collect();
        assert!(rates.windows(2).skip(2).all(|w| w[1] < w[0]), "{rates:?}");
        assert!(Schedule::one_cycle(1.0, 1).lr(1).is_finite());
        assert!(Schedule::one_cycle(1.0, 0).lr(1).is_finite());
    }
}
