//! Optimizers: [`Adam`] and [`Sgd`], PyTorch's `torch.optim.Adam` and `torch.optim.SGD`.

use std::collections::BTreeMap;

use nalgebra::DMatrix;

use super::{Grads, TrainError};
use crate::alloc::try_zeros;
use crate::init::Dims;
use crate::list::Layers;
use crate::net::Net;
use crate::state::{Bound, Param};
use crate::weights::Weights;

/// The methods an optimizer implements, out of users' reach: they skip the checks
/// [`Optimizer::step`] makes.
pub(crate) mod sealed {
    use nalgebra::DMatrix;

    use super::{NotFinite, StateTensor, TrainError};
    use crate::state::Param;
    use crate::weights::Weights;

    pub trait Sealed {
        /// Checks the hyper-parameters, as the `f32` values the update uses.
        fn check_hyper(&self) -> Result<(), TrainError>;

        /// Checks that the state kept for `params` has their shapes, and allocates the state
        /// of new ones, changing nothing.
        fn prepare(&self, params: &[&mut Param]) -> Result<Box<dyn core::any::Any>, TrainError>;

        /// Applies checked gradients with the state `prepare` made: first computes every new
        /// value without writing it, and refuses the step, changing nothing, when one would
        /// not be finite (a parameter, a moment, a buffer); then writes them, computed again
        /// by the same code, so the values written are those checked.
        fn apply(
            &mut self,
            fresh: Box<dyn core::any::Any>,
            params: &mut [&mut Param],
            grads: &[DMatrix<f32>],
        ) -> Result<(), NotFinite>;

        /// The state, as tensors named `optim.{param}.{what}`, for a checkpoint.
        fn state_tensors(&self) -> Vec<StateTensor<'_>>;

        /// Reads the state of `params` from a checkpoint, without changing `self`.
        fn read_state(
            &self,
            params: &[&Param],
            weights: &Weights<'_>,
        ) -> Result<Box<dyn core::any::Any>, TrainError>;

        /// Takes a state `read_state` returned.
        fn set_state(&mut self, state: Box<dyn core::any::Any>);

        /// The optimizer's name (`"Adam"`, `"SGD"`) and hyper-parameters, named as PyTorch's
        /// `param_groups` name them, for a checkpoint.
        fn hyper(&self) -> (&'static str, Vec<(&'static str, f64)>);

        /// Sets the hyper-parameters `hyper` named (those it does not name stay).
        fn set_hyper(&mut self, hyper: &[(&'static str, f64)]);
    }
}

/// The first parameter whose update would not be finite.
pub struct NotFinite {
    pub(crate) param: String,
}

/// One tensor of an optimizer's state, for a checkpoint: the parameter it belongs to, its
/// name's suffix, its PyTorch shape and its values.
pub struct StateTensor<'a> {
    pub(crate) param: &'a str,
    pub(crate) what: &'static str,
    pub(crate) shape: &'a [usize],
    pub(crate) value: ValueRef<'a>,
}

/// A state tensor's values: a matrix laid out as its parameter, or the step count.
pub enum ValueRef<'a> {
    Matrix(&'a DMatrix<f32>),
    Step(u64),
}

/// An optimizer: it updates a bound net's parameters from their gradients, keeping its state
/// (moments, momentum buffers) per parameter name. Implemented by [`Adam`] and [`Sgd`].
///
/// Only a bound net has parameters, so only a bound net can be stepped: stepping a
/// declaration is a compile error.
pub trait Optimizer: sealed::Sealed {
    /// The learning rate.
    fn learning_rate(&self) -> f64;

    /// Sets the learning rate, keeping the state: what a [`Schedule`](super::Schedule) does
    /// before every epoch of a fit.
    fn set_learning_rate(&mut self, lr: f64);

    /// Updates every parameter of `net` from `grads`, made by
    /// [`Net::loss_and_grads`](crate::Net::loss_and_grads) on that net.
    ///
    /// All or nothing: on an error no parameter and no state changed. A step never writes NaN
    /// or an infinity: every new value is computed and checked before any is written.
    ///
    /// # Errors
    /// * [`TrainError::GradientNotFinite`] when a gradient holds NaN or an infinity;
    /// * [`TrainError::StepNotFinite`] when the gradients are finite but the update would make
    ///   a parameter or the optimizer's state NaN or infinite (a learning rate of 3e38, a
    ///   gradient whose square overflows `f32`, `eps` 0 with gradients that are all 0);
    /// * [`TrainError::GradsMismatch`] when `grads` belong to another net, or the state
    ///   kept under a parameter's name has another shape (the optimizer stepped another net);
    /// * [`TrainError::Hyper`] for a hyper-parameter out of range (a negative learning rate);
    /// * [`ShapeError::OutOfMemory`](crate::ShapeError::OutOfMemory) (as
    ///   [`TrainError::Shape`]) when memory for new state cannot be had.
    fn step<S: Bound, L: Layers>(
        &mut self,
        net: &mut Net<S, L>,
        grads: &Grads,
    ) -> Result<(), TrainError>
    where
        Self: Sized,
    {
        let layers = net.state_mut().bound_layers_mut();
        let mut params: Vec<&mut Param> = layers.iter_mut().flat_map(|l| &mut l.params).collect();
        check_grads(&params, grads)?;
        self.check_hyper()?;
        let fresh = self.prepare(&params)?;
        // A non-finite gradient makes its update non-finite, so the check is made once, on
        // the results; the error then names the cause.
        self.apply(fresh, &mut params, &grads.values)
            .map_err(|NotFinite { param }| match grads.first_not_finite() {
                Some(name) => TrainError::GradientNotFinite {
                    name: name.to_owned(),
                },
                None => TrainError::StepNotFinite { name: param },
            })
    }
}

/// Checks that `grads` belong to `params` (their finiteness is checked with the update's).
fn check_grads(params: &[&mut Param], grads: &Grads) -> Result<(), TrainError> {
    if params.len() != grads.len() {
        return Err(TrainError::GradsMismatch {
            reason: format!(
                "the net has {} parameters but there are {} gradients",
                params.len(),
                grads.len()
            ),
        });
    }
    for (p, (name, g)) in params.iter().zip(grads.named_grads()) {
        if p.name != name || p.value.shape() != g.shape() {
            return Err(TrainError::GradsMismatch {
                reason: format!(
                    "parameter `{}` of shape {} meets the gradient of `{name}`, {} × {}",
                    p.name,
                    Dims(&p.shape),
                    g.nrows(),
                    g.ncols()
                ),
            });
        }
    }
    Ok(())
}

/// Reads `optim.{p}.{what}`, shaped like `p`; `None` when absent. Every value must be finite
/// and, for a `nonnegative` state (Adam's second moment, a mean of squares), at least 0: a
/// crafted file cannot put a value into the state that a step would turn into NaN.
fn read_like(
    weights: &Weights<'_>,
    p: &Param,
    what: &str,
    nonnegative: bool,
) -> Result<Option<DMatrix<f32>>, TrainError> {
    let name = format!("optim.{}.{what}", p.name);
    let value = weights.matrix_for(&name, &p.shape, p.value.nrows(), p.value.ncols())?;
    if let Some(m) = &value {
        // The file's order is row-major; report the index PyTorch would show.
        let (rows, cols) = m.shape();
        let bad = (0..rows)
            .flat_map(|r| (0..cols).map(move |c| (r, c)))
            .map(|(r, c)| (r * cols + c, m[(r, c)]))
            .find(|(_, v)| !v.is_finite() || (nonnegative && *v < 0.0));
        if let Some((index, v)) = bad {
            let rule = if nonnegative {
                "finite and at least 0 (a mean of squared gradients)"
            } else {
                "finite"
            };
            return Err(TrainError::Checkpoint {
                reason: format!(
                    "tensor `{name}` holds {v} at flat index {index}; its values must be {rule}"
                ),
            });
        }
    }
    Ok(value)
}

/// Reads the step count `optim.{p}.step`, a 1-element tensor holding a whole number of at
/// most 2^24 (as PyTorch stores it, in `f32`); `None` when absent.
fn read_step(weights: &Weights<'_>, p: &Param) -> Result<Option<u64>, TrainError> {
    let name = format!("optim.{}.step", p.name);
    let Some(step) = weights.matrix_for(&name, &[1], 1, 1)? else {
        return Ok(None);
    };
    let value = step.get(0).copied().unwrap_or(f32::NAN);
    // Past 2^24 an `f32` holds only some whole numbers; each is a count (PyTorch's own
    // `f32` count stops growing there).
    if value >= 0.0 && value.fract() == 0.0 && value < MAX_STEP {
        Ok(Some(value as u64))
    } else {
        Err(TrainError::Checkpoint {
            reason: format!(
                "tensor `{name}` holds {value}; a step count is a whole number from 0 up"
            ),
        })
    }
}

/// Past the largest `u64`: no step count reaches it.
const MAX_STEP: f32 = 18_446_744_073_709_551_616.0;

/// Checks that every `optim.` tensor of a checkpoint was read.
fn no_other_state(weights: &Weights<'_>, read: &[String]) -> Result<(), TrainError> {
    let extra: Vec<&str> = weights
        .names()
        .filter(|n| n.starts_with("optim.") && !read.iter().any(|r| r == n))
        .collect();
    if extra.is_empty() {
        return Ok(());
    }
    Err(TrainError::Checkpoint {
        reason: format!(
            "optimizer state this optimizer does not keep for this net: {}",
            extra.join(", ")
        ),
    })
}

/// A zeroed matrix like `p`'s value, allocated fallibly.
fn zeros_like(p: &Param, what: &str) -> Result<DMatrix<f32>, TrainError> {
    Ok(try_zeros(p.value.nrows(), p.value.ncols(), || {
        format!("the {what} of `{}`, shape {}", p.name, Dims(&p.shape))
    })?)
}

/// Checks that `value` lies in `range`, for [`TrainError::Hyper`].
fn hyper(
    optimizer: &'static str,
    name: &'static str,
    value: f64,
    ok: bool,
    range: &'static str,
) -> Result<(), TrainError> {
    if ok {
        Ok(())
    } else {
        Err(TrainError::Hyper {
            optimizer,
            name,
            range,
            value,
        })
    }
}

/// Checks that a state kept under `p`'s name has its shape.
fn same_shape(p: &Param, shape: &[usize], state: &DMatrix<f32>) -> Result<(), TrainError> {
    if shape == p.shape.as_slice() && state.shape() == p.value.shape() {
        return Ok(());
    }
    Err(TrainError::GradsMismatch {
        reason: format!(
            "the state kept for `{}` has shape {} but the parameter has {}: was the optimizer used on another net?",
            p.name,
            Dims(shape),
            Dims(&p.shape)
        ),
    })
}

/// Whether a hyper-parameter is at least 0 and finite as the `f32` the update uses.
fn nonnegative(v: f64) -> bool {
    v >= 0.0 && (v as f32).is_finite()
}

/// Adam, as PyTorch's `torch.optim.Adam`: bias-corrected first and second moments, betas
/// (0.9, 0.999) and eps 1e-8 unless set, and `weight_decay` added to the gradient (`wd·w`,
/// L2, not AdamW's decoupled decay).
///
/// # Example
/// ```
/// use lazynet::prelude::*;
///
/// let mut net = Net::new().push(Dense::<U1>::new()).bind::<U1>();
/// let x = Batch::<U1>::from_fn(8, |_, s| s as f32 / 8.0);
/// let y = Batch::<U1>::from_fn(8, |_, s| 2.0 * s as f32 / 8.0 + 1.0);
/// let mut adam = Adam::new(0.1);
/// for _ in 0..500 {
///     let (_, grads) = net.loss_and_grads(&x, &y, Mse)?;
///     adam.step(&mut net, &grads)?;
/// }
/// let (loss, _) = net.loss_and_grads(&x, &y, Mse)?;
/// assert!(loss < 1e-4, "{loss}");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Adam {
    lr: f64,
    betas: (f64, f64),
    eps: f64,
    weight_decay: f64,
    state: BTreeMap<String, AdamState>,
}

#[derive(Clone, Debug, PartialEq)]
struct AdamState {
    shape: Vec<usize>,
    step: u64,
    exp_avg: DMatrix<f32>,
    exp_avg_sq: DMatrix<f32>,
}

impl Adam {
    /// Adam with learning rate `lr` and PyTorch's defaults otherwise.
    pub fn new(lr: f64) -> Self {
        Adam {
            lr,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            state: BTreeMap::new(),
        }
    }

    /// The moments' decay rates, each in `[0, 1)`.
    pub fn betas(mut self, beta1: f64, beta2: f64) -> Self {
        self.betas = (beta1, beta2);
        self
    }

    /// The term added to the denominator, at least 0. With 0, a parameter whose gradients have
    /// all been 0 gets NaN (0 / 0), as in PyTorch.
    pub fn eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }

    /// L2 weight decay, at least 0: `wd·w` is added to every gradient.
    pub fn weight_decay(mut self, weight_decay: f64) -> Self {
        self.weight_decay = weight_decay;
        self
    }

    /// The learning rate.
    pub fn lr(&self) -> f64 {
        self.lr
    }

    /// Sets the learning rate, keeping the state (for a schedule).
    pub fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    /// The number of steps taken on parameter `name`.
    pub fn steps(&self, name: &str) -> u64 {
        self.state.get(name).map_or(0, |s| s.step)
    }

    /// The update's constants at step `step` (counting from 1).
    fn constants(&self, step: u64) -> [f32; 6] {
        Self::constants_of(self.lr, self.betas, self.eps, step)
    }

    /// `[1 − β1, β2, 1 − β2, 1/√(1 − β2^t), eps, lr/(1 − β1^t)]` at step `t`.
    fn constants_of(lr: f64, (beta1, beta2): (f64, f64), eps: f64, step: u64) -> [f32; 6] {
        let t = step as f64;
        let bias1 = 1.0 - beta1.powf(t);
        let bias2 = 1.0 - beta2.powf(t);
        [
            (1.0 - beta1) as f32,
            beta2 as f32,
            (1.0 - beta2) as f32,
            (1.0 / bias2.sqrt()) as f32,
            eps as f32,
            (lr / bias1) as f32,
        ]
    }
}

impl Optimizer for Adam {
    fn learning_rate(&self) -> f64 {
        self.lr
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.lr = lr;
    }
}

impl sealed::Sealed for Adam {
    fn check_hyper(&self) -> Result<(), TrainError> {
        let (b1, b2) = self.betas;
        let n = "Adam";
        let finite = "at least 0 and finite in f32";
        hyper(n, "learning rate", self.lr, nonnegative(self.lr), finite)?;
        hyper(n, "beta1", b1, (0.0..1.0).contains(&b1), "in [0, 1)")?;
        hyper(n, "beta2", b2, (0.0..1.0).contains(&b2), "in [0, 1)")?;
        hyper(n, "eps", self.eps, nonnegative(self.eps), finite)?;
        let wd = self.weight_decay;
        hyper(n, "weight decay", wd, nonnegative(wd), finite)
    }

    fn prepare(&self, params: &[&mut Param]) -> Result<Box<dyn core::any::Any>, TrainError> {
        let mut fresh: Vec<(String, AdamState)> = Vec::new();
        for p in params {
            match self.state.get(&p.name) {
                Some(s) => same_shape(p, &s.shape, &s.exp_avg)?,
                None => fresh.push((
                    p.name.clone(),
                    AdamState {
                        shape: p.shape.clone(),
                        step: 0,
                        exp_avg: zeros_like(p, "first moment")?,
                        exp_avg_sq: zeros_like(p, "second moment")?,
                    },
                )),
            }
        }
        Ok(Box::new(fresh))
    }

    fn apply(
        &mut self,
        fresh: Box<dyn core::any::Any>,
        params: &mut [&mut Param],
        grads: &[DMatrix<f32>],
    ) -> Result<(), NotFinite> {
        let fresh: BTreeMap<String, AdamState> = fresh
            .downcast::<Vec<(String, AdamState)>>()
            .map(|f| f.into_iter().collect())
            .unwrap_or_default();
        let wd = self.weight_decay as f32;
        // Every new value computed and checked, nothing written.
        for (p, g) in params.iter().zip(grads) {
            let state = self.state.get(&p.name).or_else(|| fresh.get(&p.name));
            let Some(s) = state else {
                continue;
            };
            let k = self.constants(s.step.saturating_add(1));
            let (m, v) = (s.exp_avg.as_slice(), s.exp_avg_sq.as_slice());
            if !adam_stays_finite(p.value.as_slice(), g.as_slice(), m, v, wd, k) {
                return Err(NotFinite {
                    param: p.name.clone(),
                });
            }
        }
        self.state.extend(fresh);
        for (p, g) in params.iter_mut().zip(grads) {
            let Some(s) = self.state.get_mut(&p.name) else {
                continue;
            };
            s.step = s.step.saturating_add(1);
            let k = Self::constants_of(self.lr, self.betas, self.eps, s.step);
            let (m, v) = (s.exp_avg.as_mut_slice(), s.exp_avg_sq.as_mut_slice());
            adam_update(p.value.as_mut_slice(), g.as_slice(), m, v, wd, k);
        }
        Ok(())
    }

    fn state_tensors(&self) -> Vec<StateTensor<'_>> {
        let mut out = Vec::new();
        for (name, s) in &self.state {
            let tensor = |what, shape, value| StateTensor {
                param: name,
                what,
                shape,
                value,
            };
            out.push(tensor("exp_avg", &s.shape, ValueRef::Matrix(&s.exp_avg)));
            out.push(tensor(
                "exp_avg_sq",
                &s.shape,
                ValueRef::Matrix(&s.exp_avg_sq),
            ));
            out.push(tensor("step", &[1], ValueRef::Step(s.step)));
        }
        out
    }

    fn read_state(
        &self,
        params: &[&Param],
        weights: &Weights<'_>,
    ) -> Result<Box<dyn core::any::Any>, TrainError> {
        let mut state = BTreeMap::new();
        let mut read = Vec::new();
        for p in params {
            let exp_avg = read_like(weights, p, "exp_avg", false)?;
            let exp_avg_sq = read_like(weights, p, "exp_avg_sq", true)?;
            let step = read_step(weights, p)?;
            let (Some(exp_avg), Some(exp_avg_sq), Some(step)) = (exp_avg, exp_avg_sq, step) else {
                let present = ["exp_avg", "exp_avg_sq", "step"]
                    .map(|what| format!("optim.{}.{what}", p.name));
                let (have, lack): (Vec<&String>, Vec<&String>) = present
                    .iter()
                    .partition(|n| weights.get(n.as_str()).is_some());
                if have.is_empty() {
                    continue;
                }
                return Err(TrainError::Checkpoint {
                    reason: format!(
                        "the Adam state of `{}` is incomplete: the file has {} but not {}",
                        p.name,
                        have.iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                        lack.iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                });
            };
            read.extend(["exp_avg", "exp_avg_sq", "step"].map(|w| format!("optim.{}.{w}", p.name)));
            let shape = p.shape.clone();
            state.insert(
                p.name.clone(),
                AdamState {
                    shape,
                    step,
                    exp_avg,
                    exp_avg_sq,
                },
            );
        }
        no_other_state(weights, &read)?;
        Ok(Box::new(state))
    }

    fn set_state(&mut self, state: Box<dyn core::any::Any>) {
        if let Ok(state) = state.downcast::<BTreeMap<String, AdamState>>() {
            self.state = *state;
        }
    }

    fn hyper(&self) -> (&'static str, Vec<(&'static str, f64)>) {
        let (beta1, beta2) = self.betas;
        let values = vec![
            ("lr", self.lr),
            ("beta1", beta1),
            ("beta2", beta2),
            ("eps", self.eps),
            ("weight_decay", self.weight_decay),
        ];
        ("Adam", values)
    }

    fn set_hyper(&mut self, hyper: &[(&'static str, f64)]) {
        for &(name, value) in hyper {
            match name {
                "lr" => self.lr = value,
                "beta1" => self.betas.0 = value,
                "beta2" => self.betas.1 = value,
                "eps" => self.eps = value,
                "weight_decay" => self.weight_decay = value,
                _ => {}
            }
        }
    }
}

/// One Adam update of a parameter, its gradient and moments (slices of one length), with the
/// weight decay `wd` added to the gradient.
fn adam_update(w: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], wd: f32, k: [f32; 6]) {
    // As PyTorch: no decay term at all when the decay is 0 (an infinite weight stays finite
    // in the gradient).
    if wd == 0.0 {
        adam_loop::<false>(w, g, m, v, wd, k);
    } else {
        adam_loop::<true>(w, g, m, v, wd, k);
    }
}

/// [`adam_update`]'s loop, compiled with and without decay.
#[inline(always)]
fn adam_loop<const DECAY: bool>(
    w: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    wd: f32,
    k: [f32; 6],
) {
    let n = w.len().min(g.len()).min(m.len()).min(v.len());
    let (w, g, m, v) = (&mut w[..n], &g[..n], &mut m[..n], &mut v[..n]);
    for i in 0..n {
        (w[i], m[i], v[i]) = adam_at::<DECAY>(w[i], g[i], m[i], v[i], wd, &k);
    }
}

/// Whether [`adam_update`] of these values would leave every weight and moment finite; reads
/// only.
fn adam_stays_finite(w: &[f32], g: &[f32], m: &[f32], v: &[f32], wd: f32, k: [f32; 6]) -> bool {
    if wd == 0.0 {
        adam_check::<false>(w, g, m, v, wd, k)
    } else {
        adam_check::<true>(w, g, m, v, wd, k)
    }
}

/// [`adam_stays_finite`]'s loop, compiled with and without decay.
#[inline(always)]
fn adam_check<const DECAY: bool>(
    w: &[f32],
    g: &[f32],
    m: &[f32],
    v: &[f32],
    wd: f32,
    k: [f32; 6],
) -> bool {
    let n = w.len().min(g.len()).min(m.len()).min(v.len());
    let (w, g, m, v) = (&w[..n], &g[..n], &m[..n], &v[..n]);
    let mut bad = 0u32;
    for i in 0..n {
        let (w, m, v) = adam_at::<DECAY>(w[i], g[i], m[i], v[i], wd, &k);
        bad |= not_finite3(w, m, v);
    }
    bad == 0
}

/// One value's Adam update: the new weight, first and second moment. The check and the
/// update both call it, so what is written is what was checked.
#[inline(always)]
fn adam_at<const DECAY: bool>(
    w: f32,
    g: f32,
    m: f32,
    v: f32,
    wd: f32,
    k: &[f32; 6],
) -> (f32, f32, f32) {
    let [one_minus_b1, b2, one_minus_b2, inv_bias2_sqrt, eps, step_size] = *k;
    let g = if DECAY { g + wd * w } else { g };
    let m = m + one_minus_b1 * (g - m);
    let v = v * b2 + one_minus_b2 * g * g;
    let denom = v.sqrt() * inv_bias2_sqrt + eps;
    (w - step_size * m / denom, m, v)
}

/// 1 when one of three values is NaN or infinite, else 0: `x − x` is 0 for a finite `x` and
/// NaN otherwise, and a NaN has every exponent bit set. Integer operations, vectorized.
#[inline(always)]
#[allow(clippy::eq_op)] // `x − x` is the probe, on purpose.
fn not_finite3(a: f32, b: f32, c: f32) -> u32 {
    const EXPONENT: u32 = 0x7f80_0000;
    let probe = (a - a) + (b - b) + (c - c);
    u32::from(probe.to_bits() & EXPONENT == EXPONENT)
}

/// Stochastic gradient descent, as PyTorch's `torch.optim.SGD`: `weight_decay` added to the
/// gradient, then momentum (its buffer starts at the first gradient; dampening 0 unless set),
/// optionally Nesterov's.
///
/// # Example
/// ```
/// use lazynet::prelude::*;
///
/// let sgd = Sgd::new(0.1).momentum(0.9).weight_decay(1e-4);
/// assert_eq!(sgd.lr(), 0.1);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Sgd {
    lr: f64,
    momentum: f64,
    dampening: f64,
    weight_decay: f64,
    nesterov: bool,
    buffers: BTreeMap<String, Buffer>,
}

impl Sgd {
    /// Plain gradient descent with learning rate `lr`.
    pub fn new(lr: f64) -> Self {
        Sgd {
            lr,
            momentum: 0.0,
            dampening: 0.0,
            weight_decay: 0.0,
            nesterov: false,
            buffers: BTreeMap::new(),
        }
    }

    /// The momentum factor, at least 0.
    pub fn momentum(mut self, momentum: f64) -> Self {
        self.momentum = momentum;
        self
    }

    /// The dampening of the momentum, at least 0.
    pub fn dampening(mut self, dampening: f64) -> Self {
        self.dampening = dampening;
        self
    }

    /// L2 weight decay, at least 0: `wd·w` is added to every gradient.
    pub fn weight_decay(mut self, weight_decay: f64) -> Self {
        self.weight_decay = weight_decay;
        self
    }

    /// Nesterov momentum (needs a momentum and no dampening, as in PyTorch).
    pub fn nesterov(mut self, nesterov: bool) -> Self {
        self.nesterov = nesterov;
        self
    }

    /// The learning rate.
    pub fn lr(&self) -> f64 {
        self.lr
    }

    /// Sets the learning rate, keeping the momentum buffers (for a schedule).
    pub fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }
}

impl Optimizer for Sgd {
    fn learning_rate(&self) -> f64 {
        self.lr
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.lr = lr;
    }
}

impl sealed::Sealed for Sgd {
    fn check_hyper(&self) -> Result<(), TrainError> {
        let n = "SGD";
        let finite = "at least 0 and finite in f32";
        hyper(n, "learning rate", self.lr, nonnegative(self.lr), finite)?;
        hyper(
            n,
            "momentum",
            self.momentum,
            nonnegative(self.momentum),
            finite,
        )?;
        hyper(
            n,
            "dampening",
            self.dampening,
            nonnegative(self.dampening),
            finite,
        )?;
        let wd = self.weight_decay;
        hyper(n, "weight decay", wd, nonnegative(wd), finite)?;
        let nesterov = self.nesterov;
        hyper(
            n,
            "momentum for Nesterov",
            self.momentum,
            !nesterov || self.momentum > 0.0,
            "above 0",
        )?;
        hyper(
            n,
            "dampening for Nesterov",
            self.dampening,
            !nesterov || self.dampening == 0.0,
            "0",
        )
    }

    fn prepare(&self, params: &[&mut Param]) -> Result<Box<dyn core::any::Any>, TrainError> {
        let mut fresh: Vec<(String, Buffer)> = Vec::new();
        if self.momentum != 0.0 {
            for p in params {
                match self.buffers.get(&p.name) {
                    Some((shape, b)) => same_shape(p, shape, b)?,
                    None => fresh.push((
                        p.name.clone(),
                        (p.shape.clone(), zeros_like(p, "momentum buffer")?),
                    )),
                }
            }
        }
        Ok(Box::new(fresh))
    }

    fn apply(
        &mut self,
        fresh: Box<dyn core::any::Any>,
        params: &mut [&mut Param],
        grads: &[DMatrix<f32>],
    ) -> Result<(), NotFinite> {
        let fresh: BTreeMap<String, Buffer> = fresh
            .downcast::<Vec<(String, Buffer)>>()
            .map(|f| f.into_iter().collect())
            .unwrap_or_default();
        let k = [
            self.lr as f32,
            self.weight_decay as f32,
            self.momentum as f32,
            (1.0 - self.dampening) as f32,
        ];
        let momentum = self.momentum != 0.0;
        // Every new value computed and checked, nothing written.
        for (p, g) in params.iter().zip(grads) {
            let (buffer, first) = match (momentum, self.buffers.get(&p.name)) {
                (false, _) => (None, false),
                (true, Some((_, b))) => (Some(b.as_slice()), false),
                (true, None) => (fresh.get(&p.name).map(|(_, b)| b.as_slice()), true),
            };
            let (w, g) = (p.value.as_slice(), g.as_slice());
            if !sgd_stays_finite(w, g, buffer, first, k, self.nesterov) {
                return Err(NotFinite {
                    param: p.name.clone(),
                });
            }
        }
        let new: Vec<String> = fresh.keys().cloned().collect();
        self.buffers.extend(fresh);
        for (p, g) in params.iter_mut().zip(grads) {
            let (w, g) = (p.value.as_mut_slice(), g.as_slice());
            let buffer = if momentum {
                self.buffers.get_mut(&p.name).map(|(_, b)| b.as_mut_slice())
            } else {
                None
            };
            let first = new.contains(&p.name);
            sgd_update(w, g, buffer, first, k, self.nesterov);
        }
        Ok(())
    }

    fn state_tensors(&self) -> Vec<StateTensor<'_>> {
        self.buffers
            .iter()
            .map(|(name, (shape, b))| StateTensor {
                param: name,
                what: "momentum_buffer",
                shape,
                value: ValueRef::Matrix(b),
            })
            .collect()
    }

    fn read_state(
        &self,
        params: &[&Param],
        weights: &Weights<'_>,
    ) -> Result<Box<dyn core::any::Any>, TrainError> {
        let mut buffers = BTreeMap::new();
        let mut read = Vec::new();
        for p in params {
            if let Some(b) = read_like(weights, p, "momentum_buffer", false)? {
                read.push(format!("optim.{}.momentum_buffer", p.name));
                buffers.insert(p.name.clone(), (p.shape.clone(), b));
            }
        }
        no_other_state(weights, &read)?;
        Ok(Box::new(buffers))
    }

    fn set_state(&mut self, state: Box<dyn core::any::Any>) {
        if let Ok(state) = state.downcast::<BTreeMap<String, Buffer>>() {
            self.buffers = *state;
        }
    }

    fn hyper(&self) -> (&'static str, Vec<(&'static str, f64)>) {
        let values = vec![
            ("lr", self.lr),
            ("momentum", self.momentum),
            ("dampening", self.dampening),
            ("weight_decay", self.weight_decay),
            ("nesterov", f64::from(u8::from(self.nesterov))),
        ];
        ("SGD", values)
    }

    fn set_hyper(&mut self, hyper: &[(&'static str, f64)]) {
        for &(name, value) in hyper {
            match name {
                "lr" => self.lr = value,
                "momentum" => self.momentum = value,
                "dampening" => self.dampening = value,
                "weight_decay" => self.weight_decay = value,
                "nesterov" => self.nesterov = value != 0.0,
                _ => {}
            }
        }
    }
}

/// A momentum buffer: its parameter's PyTorch shape and its values.
type Buffer = (Vec<usize>, DMatrix<f32>);

/// One SGD update of a parameter `w` from its gradient `g` (slices of one length): weight
/// decay, then momentum through `buffer` (set to the gradient on its `first` step), then
/// `w −= lr·d`. `k` is `[lr, weight decay, momentum, 1 − dampening]`.
fn sgd_update(
    w: &mut [f32],
    g: &[f32],
    buffer: Option<&mut [f32]>,
    first: bool,
    k: [f32; 4],
    nesterov: bool,
) {
    let n = w.len().min(g.len());
    let (w, g) = (&mut w[..n], &g[..n]);
    match buffer {
        None => {
            for (w, &g) in w.iter_mut().zip(g) {
                *w = sgd_at(*w, g, &k).0;
            }
        }
        Some(b) => {
            let len = n.min(b.len());
            let b = &mut b[..len];
            for i in 0..len {
                (w[i], b[i]) = sgd_momentum_at(w[i], g[i], b[i], first, &k, nesterov);
            }
        }
    }
}

/// Whether [`sgd_update`] of these values would leave every weight and buffer value finite;
/// reads only.
fn sgd_stays_finite(
    w: &[f32],
    g: &[f32],
    buffer: Option<&[f32]>,
    first: bool,
    k: [f32; 4],
    nesterov: bool,
) -> bool {
    let n = w.len().min(g.len());
    let (w, g) = (&w[..n], &g[..n]);
    let mut bad = 0u32;
    match buffer {
        None => {
            for (&w, &g) in w.iter().zip(g) {
                let (w, _) = sgd_at(w, g, &k);
                bad |= not_finite3(w, 0.0, 0.0);
            }
        }
        Some(b) => {
            let len = n.min(b.len());
            let b = &b[..len];
            for i in 0..len {
                let (w, b) = sgd_momentum_at(w[i], g[i], b[i], first, &k, nesterov);
                bad |= not_finite3(w, b, 0.0);
            }
        }
    }
    bad == 0
}

/// One value's plain SGD update: the new weight and the step taken. The check and the update
/// both call it, so what is written is what was checked.
#[inline(always)]
fn sgd_at(w: f32, g: f32, k: &[f32; 4]) -> (f32, f32) {
    let [lr, wd, _, _] = *k;
    let d = if wd != 0.0 { g + wd * w } else { g };
    (w - lr * d, d)
}

/// One value's SGD update with momentum: the new weight and buffer value.
#[inline(always)]
fn sgd_momentum_at(
    w: f32,
    g: f32,
    b: f32,
    first: bool,
    k: &[f32; 4],
    nesterov: bool,
) -> (f32, f32) {
    let [lr, wd, momentum, keep] = *k;
    let d = if wd != 0.0 { g + wd * w } else { g };
    let b = if first { d } else { b * momentum + keep * d };
    let d = if nesterov { d + momentum * b } else { b };
    (w - lr * d, b)
}
