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

    use super::{StateTensor, TrainError};
    use crate::state::Param;
    use crate::weights::Weights;

    pub trait Sealed {
        /// Checks the hyper-parameters, as the `f32` values the update uses.
        fn check_hyper(&self) -> Result<(), TrainError>;

        /// Checks that the state kept for `params` has their shapes, and allocates the state
        /// of new ones, changing nothing.
        fn prepare(&self, params: &[&mut Param]) -> Result<Box<dyn core::any::Any>, TrainError>;

        /// Applies checked gradients with the state `prepare` made: computes every new value
        /// into spare buffers, and refuses the step, changing nothing, when one is not finite
        /// (a parameter, a moment, a buffer) or memory for the spares cannot be had; otherwise
        /// each spare is swapped with the buffer it replaces (the old values become the next
        /// step's spares).
        fn apply(
            &mut self,
            fresh: Box<dyn core::any::Any>,
            params: &mut [&mut Param],
            grads: &[&DMatrix<f32>],
        ) -> Result<(), TrainError>;

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
        /// `param_groups` name them, for a checkpoint: `lr` is the learning rate now (a
        /// schedule changes it), `initial_lr` the one it was built with.
        fn hyper(&self) -> (&'static str, Vec<(&'static str, f64)>);

        /// Sets the hyper-parameters `hyper` named (those it does not name stay).
        fn set_hyper(&mut self, hyper: &[(&'static str, f64)]);

        /// Checks that the optimizer would be valid with the hyper-parameters `hyper` named,
        /// changing nothing.
        fn check_with(&self, hyper: &[(&'static str, f64)]) -> Result<(), TrainError>;
    }
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
    /// [`Net::loss_and_grads`](crate::Net::loss_and_grads) on that net, and writes the buffers
    /// that training pass computed (a [`BatchNorm`](crate::layer::BatchNorm)'s running
    /// statistics, as PyTorch's training-mode forward writes them). A parameter the batch
    /// did not reach (a stem of a net with [stems](crate::stems) that the batch did not run
    /// through) is left alone, with its state, as PyTorch skips a parameter whose `.grad` is
    /// `None`.
    ///
    /// All or nothing: on an error no parameter and no state changed. A step never writes NaN
    /// or an infinity: every new value is computed and checked before any is written.
    ///
    /// # Errors
    /// * [`TrainError::GradientNotFinite`] when a gradient holds NaN or an infinity;
    /// * [`TrainError::StepNotFinite`] when the gradients are finite but the update would make
    ///   a parameter or the optimizer's state NaN or infinite (a learning rate of 3e38, a
    ///   gradient whose square overflows `f32`, `eps` 0 with gradients that are all 0);
    /// * [`TrainError::BufferOutOfRange`] when the training pass computed a buffer value the
    ///   buffer cannot hold (a NaN running variance) while every gradient is finite;
    /// * [`TrainError::GradsMismatch`] when `grads` belong to another net, or the state
    ///   kept under a parameter's name has another shape (the optimizer stepped another net),
    ///   or the buffers they carry are not the net's;
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
        check_buffers(net.state().bound_layers(), grads)?;
        let bad_buffer = buffer_out_of_range(net.state().bound_layers(), grads);
        let layers = net.state_mut().bound_layers_mut();
        let params: Vec<&mut Param> = layers.iter_mut().flat_map(|l| &mut l.params).collect();
        check_grads(&params, grads)?;
        self.check_hyper()?;
        // A parameter the batch did not reach (a stem it did not run through) has no
        // gradient: the step leaves it and its state alone, as PyTorch skips a `None` grad.
        let reached = |i: usize| {
            grads
                .reached
                .as_ref()
                .is_none_or(|r| r.get(i) == Some(&true))
        };
        let (mut params, values): (Vec<&mut Param>, Vec<&DMatrix<f32>>) = params
            .into_iter()
            .zip(&grads.values)
            .enumerate()
            .filter(|(i, _)| reached(*i))
            .map(|(_, pair)| pair)
            .unzip();
        let fresh = self.prepare(&params)?;
        // New running statistics a buffer cannot hold (a NaN variance) are refused, before
        // anything is written; a non-finite gradient, their usual cause, is named first.
        if let Some((name, reason)) = bad_buffer {
            return Err(match grads.first_not_finite() {
                Some(grad) => TrainError::GradientNotFinite {
                    name: grad.to_owned(),
                },
                None => TrainError::BufferOutOfRange { name, reason },
            });
        }
        // A non-finite gradient makes its update non-finite, so the check is made once, on
        // the results; the error then names the cause.
        self.apply(fresh, &mut params, &values).map_err(|err| {
            match (err, grads.first_not_finite()) {
                (TrainError::StepNotFinite { .. }, Some(name)) => TrainError::GradientNotFinite {
                    name: name.to_owned(),
                },
                (err, _) => err,
            }
        })?;
        // The step was taken: the training pass's new buffers (running statistics) are
        // written, as PyTorch's training-mode forward writes them, and the next pass draws
        // other random numbers.
        let layers = net.state_mut().bound_layers_mut();
        for (node, buffers) in &grads.buffers {
            if let Some(layer) = layers.get_mut(*node) {
                layer.buffers.clone_from(buffers);
            }
        }
        let steps = net.state_mut().steps_mut();
        *steps = steps.wrapping_add(1);
        Ok(())
    }
}

/// Checks that the new buffers `grads` carry belong to the net's layers: each node's buffers,
/// by name and kind, with values that fit.
fn check_buffers(layers: &[crate::state::BoundLayer], grads: &Grads) -> Result<(), TrainError> {
    for (node, buffers) in &grads.buffers {
        let mismatch = |reason: String| TrainError::GradsMismatch { reason };
        let Some(layer) = layers.get(*node) else {
            return Err(mismatch(format!(
                "the gradients carry buffers of node {node} but the net has {} nodes",
                layers.len()
            )));
        };
        if layer.buffers.len() != buffers.len() {
            return Err(mismatch(format!(
                "layer {} has {} buffers but the gradients carry {}",
                layer.path,
                layer.buffers.len(),
                buffers.len()
            )));
        }
        for (own, new) in layer.buffers.iter().zip(buffers) {
            if own.name != new.name || own.shape != new.shape {
                return Err(mismatch(format!(
                    "buffer `{}` meets `{}` of the gradients",
                    own.name, new.name
                )));
            }
            own.check_values(&new.value, false)
                .map_err(|e| mismatch(format!("buffer `{}`: {e}", own.name)))?;
        }
    }
    Ok(())
}

/// The first new buffer value a step would write that its buffer cannot hold (a running
/// variance the training pass computed as NaN, from a NaN input, or below 0): its name and
/// what was found.
fn buffer_out_of_range(
    layers: &[crate::state::BoundLayer],
    grads: &Grads,
) -> Option<(String, String)> {
    grads.buffers.iter().find_map(|(node, buffers)| {
        let layer = layers.get(*node)?;
        layer.buffers.iter().zip(buffers).find_map(|(own, new)| {
            let reason = own.check(&new.value).err()?;
            Some((own.name.clone(), reason))
        })
    })
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
    initial_lr: f64,
    betas: (f64, f64),
    eps: f64,
    weight_decay: f64,
    state: BTreeMap<String, AdamState>,
    spares: Spares,
}

#[derive(Clone, Debug, PartialEq)]
struct AdamState {
    shape: Vec<usize>,
    step: u64,
    exp_avg: DMatrix<f32>,
    exp_avg_sq: DMatrix<f32>,
    /// Bounds on `|exp_avg|` and `exp_avg_sq`, kept with them by the steps ([`adam_bounds`]):
    /// what decides whether the next step can run in place.
    maxima: Cached<(f32, f32)>,
}

impl Adam {
    /// Adam with learning rate `lr` and PyTorch's defaults otherwise.
    pub fn new(lr: f64) -> Self {
        Adam {
            lr,
            initial_lr: lr,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            state: BTreeMap::new(),
            spares: Spares::default(),
        }
    }

    /// The moments' decay rates, each in `[0, 1)`.
    pub fn betas(mut self, beta1: f64, beta2: f64) -> Self {
        self.betas = (beta1, beta2);
        self
    }

    /// The term added to the denominator, at least 0. With 0, a parameter whose gradients have
    /// all been 0 would get NaN (0 / 0), as in PyTorch; the step is refused instead
    /// ([`TrainError::StepNotFinite`]).
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

    /// Sets the learning rate, keeping the state (for a schedule). The rate it was built with
    /// stays its `initial_lr`, which a checkpoint compares.
    pub fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    /// The number of steps taken on parameter `name`.
    pub fn steps(&self, name: &str) -> u64 {
        self.state.get(name).map_or(0, |s| s.step)
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
                        maxima: Cached((0.0, 0.0)),
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
        grads: &[&DMatrix<f32>],
    ) -> Result<(), TrainError> {
        let fresh: BTreeMap<String, AdamState> = fresh
            .downcast::<Vec<(String, AdamState)>>()
            .map(|f| f.into_iter().collect())
            .unwrap_or_default();
        let wd = self.weight_decay as f32;
        // When bounds on the inputs prove every new value finite (as in all but absurd cases),
        // the step runs in place, in one pass.
        //
        // Bounds on the inputs: the gradient's from a pass over it; the weight's and moments'
        // as the last step left them, or, when those do not prove the step finite (they only
        // grow), from a pass over the values.
        let mut bounds = Vec::with_capacity(params.len());
        for (p, g) in params.iter().zip(grads) {
            let Some(s) = self.state.get(&p.name).or_else(|| fresh.get(&p.name)) else {
                bounds.push(None);
                continue;
            };
            let step = next_step(s.step, &p.name)?;
            let k = Self::constants_of(self.lr, self.betas, self.eps, step);
            let g = max_abs(g.as_slice());
            let kept = p
                .magnitude
                .and_then(|w| adam_bounds(w, g, s.maxima.0, wd, k));
            let bound = kept.or_else(|| {
                let w = max_abs(p.value.as_slice());
                let moments = (
                    max_abs(s.exp_avg.as_slice()),
                    max_abs(s.exp_avg_sq.as_slice()),
                );
                adam_bounds(w, g, moments, wd, k)
            });
            match bound {
                Some(b) => bounds.push(Some((b, k, step))),
                None => break,
            }
        }
        if bounds.len() == params.len() {
            self.state.extend(fresh);
            for ((p, g), bound) in params.iter_mut().zip(grads).zip(bounds) {
                let (Some(s), Some(([w, m, v], k, step))) = (self.state.get_mut(&p.name), bound)
                else {
                    continue;
                };
                s.step = step;
                let (em, ev) = (s.exp_avg.as_mut_slice(), s.exp_avg_sq.as_mut_slice());
                adam_in_place(p.value.as_mut_slice(), g.as_slice(), em, ev, wd, k);
                (p.magnitude, s.maxima) = (Some(w), Cached((m, v)));
            }
            return Ok(());
        }
        // Otherwise every new value goes into the spares first; nothing else is written.
        let mut steps = Vec::with_capacity(params.len());
        for (p, g) in params.iter().zip(grads) {
            let state = self.state.get(&p.name).or_else(|| fresh.get(&p.name));
            let Some(s) = state else {
                steps.push(None);
                continue;
            };
            let step = next_step(s.step, &p.name)?;
            steps.push(Some(step));
            let k = Self::constants_of(self.lr, self.betas, self.eps, step);
            let [w, m, v] = self
                .spares
                .get(p, ["weight", "first moment", "second moment"])?;
            let finite = adam_into(
                [p.value.as_slice(), g.as_slice()],
                [s.exp_avg.as_slice(), s.exp_avg_sq.as_slice()],
                [w.as_mut_slice(), m.as_mut_slice(), v.as_mut_slice()],
                wd,
                k,
            );
            if !finite {
                return Err(TrainError::StepNotFinite {
                    name: p.name.clone(),
                });
            }
        }
        // All finite: the spares become the values, the values the spares.
        self.state.extend(fresh);
        for (p, step) in params.iter_mut().zip(steps) {
            let (Some(s), Some([w, m, v]), Some(step)) =
                (self.state.get_mut(&p.name), self.spares.of(&p.name), step)
            else {
                continue;
            };
            s.step = step;
            core::mem::swap(&mut p.value, w);
            core::mem::swap(&mut s.exp_avg, m);
            core::mem::swap(&mut s.exp_avg_sq, v);
            s.maxima = Cached((
                max_abs(s.exp_avg.as_slice()),
                max_abs(s.exp_avg_sq.as_slice()),
            ));
            p.magnitude = Some(max_abs(p.value.as_slice()));
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
                    maxima: Cached((max_abs(exp_avg.as_slice()), max_abs(exp_avg_sq.as_slice()))),
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
            ("initial_lr", self.initial_lr),
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
                "initial_lr" => self.initial_lr = value,
                "beta1" => self.betas.0 = value,
                "beta2" => self.betas.1 = value,
                "eps" => self.eps = value,
                "weight_decay" => self.weight_decay = value,
                _ => {}
            }
        }
    }

    fn check_with(&self, hyper: &[(&'static str, f64)]) -> Result<(), TrainError> {
        let mut probe = Adam::new(self.lr);
        probe.set_hyper(&self.hyper().1);
        probe.set_hyper(hyper);
        probe.check_hyper()
    }
}

/// The number of a parameter's next Adam step: one more than `step`, or an error when the
/// count (read from a checkpoint, say) is already the largest a `u64` holds.
fn next_step(step: u64, name: &str) -> Result<u64, TrainError> {
    step.checked_add(1).ok_or_else(|| TrainError::Checkpoint {
        reason: format!(
            "the Adam step count of `{name}` is {step}, the largest there is: no further step can be counted"
        ),
    })
}

/// Spare buffers an optimizer writes a step's new values into, per parameter name: a step
/// that turns out not to be finite then changes nothing, and one that is swaps them in, with
/// no allocation after the first step. Scratch, not state: equal whatever they hold, and never
/// saved.
#[derive(Clone, Default)]
struct Spares(BTreeMap<String, Vec<DMatrix<f32>>>);

impl Spares {
    /// `N` spares shaped like `p`'s value, allocated fallibly the first time (or when the
    /// parameter of that name changed its shape).
    fn get<const N: usize>(
        &mut self,
        p: &Param,
        what: [&str; N],
    ) -> Result<&mut [DMatrix<f32>; N], TrainError> {
        let fits = |spares: &Vec<DMatrix<f32>>| {
            spares.len() == N && spares.iter().all(|m| m.shape() == p.value.shape())
        };
        if !self.0.get(&p.name).is_some_and(fits) {
            let mut fresh = Vec::with_capacity(N);
            for what in what {
                fresh.push(zeros_like(p, &format!("spare {what}"))?);
            }
            self.0.insert(p.name.clone(), fresh);
        }
        self.of(&p.name).ok_or_else(|| TrainError::GradsMismatch {
            reason: format!("no spare buffers for `{}`", p.name),
        })
    }

    /// The `N` spares of parameter `name`, if it has `N`.
    fn of<const N: usize>(&mut self, name: &str) -> Option<&mut [DMatrix<f32>; N]> {
        self.0
            .get_mut(name)
            .and_then(|spares| <&mut [DMatrix<f32>; N]>::try_from(spares.as_mut_slice()).ok())
    }
}

impl PartialEq for Spares {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl core::fmt::Debug for Spares {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Spares({} parameters)", self.0.len())
    }
}

/// A value derived from others and kept to save work: equal whatever it holds, so that two
/// optimizers of equal state compare equal however their caches came about.
#[derive(Clone, Copy, Debug, Default)]
struct Cached<T>(T);

impl<T> PartialEq for Cached<T> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// Bounds on every `|value|` of a momentum buffer, per parameter name, kept with the buffers
/// by the steps that write them ([`sgd_bounds`]); a buffer without one (loaded from a file)
/// gets one from a pass over it. A cache: equal whatever it holds.
#[derive(Clone, Default)]
struct Bounds(BTreeMap<String, f32>);

impl PartialEq for Bounds {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl core::fmt::Debug for Bounds {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Bounds({} buffers)", self.0.len())
    }
}

/// One Adam step of a parameter into `out` (`[weight, first moment, second moment]`), from
/// `[weight, gradient]` and `[first moment, second moment]` (slices of one length), with the
/// weight decay `wd` added to the gradient; whether every value written is finite. `k` is
/// `[1 − β1, β2, 1 − β2, 1/√(1 − β2^t), eps, lr/(1 − β1^t)]`.
fn adam_into(
    [w, g]: [&[f32]; 2],
    [m, v]: [&[f32]; 2],
    out: [&mut [f32]; 3],
    wd: f32,
    k: [f32; 6],
) -> bool {
    // As PyTorch: no decay term at all when the decay is 0 (an infinite weight stays finite
    // in the gradient).
    if wd == 0.0 {
        adam_loop::<false>([w, g], [m, v], out, wd, k)
    } else {
        adam_loop::<true>([w, g], [m, v], out, wd, k)
    }
}

/// [`adam_into`]'s loop, compiled with and without decay: one pass that writes the new values
/// and folds their finiteness in.
#[inline(always)]
fn adam_loop<const DECAY: bool>(
    [w, g]: [&[f32]; 2],
    [m, v]: [&[f32]; 2],
    [ow, om, ov]: [&mut [f32]; 3],
    wd: f32,
    k: [f32; 6],
) -> bool {
    let [one_minus_b1, b2, one_minus_b2, inv_bias2_sqrt, eps, step_size] = k;
    let n = w.len().min(g.len()).min(m.len()).min(v.len());
    let n = n.min(ow.len()).min(om.len()).min(ov.len());
    let (w, g, m, v) = (&w[..n], &g[..n], &m[..n], &v[..n]);
    let (ow, om, ov) = (&mut ow[..n], &mut om[..n], &mut ov[..n]);
    let mut bad = 0u32;
    for i in 0..n {
        let g = if DECAY { g[i] + wd * w[i] } else { g[i] };
        let m = m[i] + one_minus_b1 * (g - m[i]);
        let v = v[i] * b2 + one_minus_b2 * g * g;
        let denom = v.sqrt() * inv_bias2_sqrt + eps;
        let w = w[i] - step_size * m / denom;
        (ow[i], om[i], ov[i]) = (w, m, v);
        // A moment that is not finite makes the weight not finite (`step·m/denom` is ±inf or
        // NaN, also with `step` 0), so the weight and the second moment tell it all.
        bad |= not_finite2(w, v);
    }
    bad == 0
}

/// Values up to which a step's arithmetic provably stays finite: `f32::MAX` is 3.4e38, and the
/// bounds below are off by a few roundings at most.
const BOUND: f64 = 1e37;

/// Bounds on every new weight, first and second moment (`[|w|, |m|, v]`) of an Adam step from
/// weights, gradients and moments bounded by `w`, `g`, `m` and `v`, when they prove every
/// intermediate of [`adam_in_place`] finite; `None` otherwise: for NaN or an infinity, for
/// values too large, and whenever it cannot tell (`eps` 0 lets `0 / 0` through).
///
/// Both moments are convex combinations (`m + (1 − β1)(g − m)` lies between `m` and `g`), so
/// their bounds do not grow unless the gradients do; the weight's grows by the largest step
/// `lr·|m|/eps` (a loose bound: the real step is about `lr`), until a pass over the values
/// tightens it again.
fn adam_bounds(w: f32, g: f32, (m, v): (f32, f32), wd: f32, k: [f32; 6]) -> Option<[f32; 3]> {
    let [_, _, _, inv_bias2_sqrt, eps, step_size] = k.map(f64::from);
    let (w, g, m, v, wd) = (
        f64::from(w),
        f64::from(g),
        f64::from(m),
        f64::from(v),
        f64::from(wd),
    );
    // A few roundings in f32, each off by 2^-24 at most.
    let margin = 1.0 + 1e-6;
    let g = g + wd * w; // the decayed gradient
    let m = m.max(g) * margin;
    let v = v.max(g * g) * margin;
    let step = step_size * m; // the numerator; the denominator is at least eps
    let denom = v.sqrt() * inv_bias2_sqrt + eps;
    let w_new = (w + step / eps) * margin;
    let fine = [w, g, g * g, m, v, step, denom, w_new]
        .iter()
        .all(|&x| x <= BOUND);
    (eps > 0.0 && fine).then(|| [w_new, m, v].map(|x| x as f32))
}

/// One Adam step of a parameter in place (its weight, gradient and moments: slices of one
/// length), with the weight decay `wd` added to the gradient. Only when [`adam_bounds`] proved
/// the result finite.
fn adam_in_place(w: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], wd: f32, k: [f32; 6]) {
    // As PyTorch: no decay term at all when the decay is 0 (an infinite weight stays finite
    // in the gradient).
    if wd == 0.0 {
        adam_in_place_loop::<false>(w, g, m, v, wd, k);
    } else {
        adam_in_place_loop::<true>(w, g, m, v, wd, k);
    }
}

/// [`adam_in_place`]'s loop, compiled with and without decay. The same arithmetic as
/// [`adam_loop`], in the same order, so both give the same bits.
#[inline(always)]
fn adam_in_place_loop<const DECAY: bool>(
    w: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    wd: f32,
    k: [f32; 6],
) {
    let [one_minus_b1, b2, one_minus_b2, inv_bias2_sqrt, eps, step_size] = k;
    let n = w.len().min(g.len()).min(m.len()).min(v.len());
    let (w, g, m, v) = (&mut w[..n], &g[..n], &mut m[..n], &mut v[..n]);
    for i in 0..n {
        let g = if DECAY { g[i] + wd * w[i] } else { g[i] };
        m[i] += one_minus_b1 * (g - m[i]);
        v[i] = v[i] * b2 + one_minus_b2 * g * g;
        let denom = v[i].sqrt() * inv_bias2_sqrt + eps;
        w[i] -= step_size * m[i] / denom;
    }
}

/// The bits of an `f32` but its sign: ordered as the magnitudes are (NaN above infinity).
const ABS: u32 = 0x7fff_ffff;

/// The largest `|value|` (NaN when one is NaN, 0 for none): a maximum of the values' bits
/// but the sign, which order as the magnitudes do, in eight lanes of `i32` so that the loop is
/// vectorized on every x86-64 (an unsigned maximum needs SSE4.1).
fn max_abs(values: &[f32]) -> f32 {
    // Below 2^31 once the sign bit is cleared, so the conversion never fails (and compiles to
    // nothing).
    let magnitude = |v: &f32| i32::try_from(v.to_bits() & ABS).unwrap_or(i32::MAX);
    let mut lanes = [0i32; 8];
    let chunks = values.chunks_exact(8);
    let rest = chunks.remainder().iter().map(magnitude).max().unwrap_or(0);
    for chunk in chunks {
        for (lane, v) in lanes.iter_mut().zip(chunk) {
            *lane = (*lane).max(magnitude(v));
        }
    }
    let largest = lanes.iter().fold(rest, |a, &b| a.max(b));
    // Non-negative: the sign bit was cleared.
    f32::from_bits(u32::try_from(largest).unwrap_or(u32::MAX))
}

/// 1 when `a` or `b` is NaN or infinite (every exponent bit set), else 0: integer operations
/// the compiler vectorizes.
#[inline(always)]
fn not_finite2(a: f32, b: f32) -> u32 {
    const EXPONENT: u32 = 0x7f80_0000;
    u32::from(a.to_bits() & EXPONENT == EXPONENT) | u32::from(b.to_bits() & EXPONENT == EXPONENT)
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
    initial_lr: f64,
    momentum: f64,
    dampening: f64,
    weight_decay: f64,
    nesterov: bool,
    buffers: BTreeMap<String, Buffer>,
    bounds: Bounds,
    spares: Spares,
}

impl Sgd {
    /// Plain gradient descent with learning rate `lr`.
    pub fn new(lr: f64) -> Self {
        Sgd {
            lr,
            initial_lr: lr,
            momentum: 0.0,
            dampening: 0.0,
            weight_decay: 0.0,
            nesterov: false,
            buffers: BTreeMap::new(),
            bounds: Bounds::default(),
            spares: Spares::default(),
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
        grads: &[&DMatrix<f32>],
    ) -> Result<(), TrainError> {
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
        let nesterov = self.nesterov;
        let momentum = self.momentum != 0.0;
        // When bounds on the inputs prove every new value finite (as in all but absurd cases),
        // the step runs in place, in one pass.
        //
        // Bounds on the inputs: the gradient's from a pass over it; the weight's and buffer's as
        // the last step left them, or, when those do not prove the step finite, from a pass
        // over the values.
        let mut bounds = Vec::with_capacity(params.len());
        for (p, g) in params.iter().zip(grads) {
            let g = max_abs(g.as_slice());
            let buffer = self.buffers.get(&p.name).filter(|_| momentum);
            let kept_b = buffer.map_or(Some(0.0), |_| self.bounds.0.get(&p.name).copied());
            let kept = p.magnitude.zip(kept_b);
            let bound = kept.and_then(|(w, b)| sgd_bounds(w, g, b, k)).or_else(|| {
                let b = buffer.map_or(0.0, |(_, b)| max_abs(b.as_slice()));
                sgd_bounds(max_abs(p.value.as_slice()), g, b, k)
            });
            match bound {
                Some(b) => bounds.push(b),
                None => break,
            }
        }
        if bounds.len() == params.len() {
            // A new buffer is set to the first gradient: its (zero) values are not read.
            let first: Vec<String> = fresh.keys().cloned().collect();
            self.buffers.extend(fresh);
            for ((p, g), [w_bound, b_bound]) in params.iter_mut().zip(grads).zip(bounds) {
                let (w, g) = (p.value.as_mut_slice(), g.as_slice());
                match self.buffers.get_mut(&p.name) {
                    Some((_, b)) if momentum => {
                        let first = first.contains(&p.name);
                        sgd_momentum_in_place(w, g, b.as_mut_slice(), first, k, nesterov);
                        self.bounds.0.insert(p.name.clone(), b_bound);
                    }
                    _ => sgd_in_place(w, g, k),
                }
                p.magnitude = Some(w_bound);
            }
            return Ok(());
        }
        // Otherwise every new value goes into the spares first; nothing else is written.
        for (p, g) in params.iter().zip(grads) {
            let (w, g) = (p.value.as_slice(), g.as_slice());
            let finite = if self.momentum == 0.0 {
                let [out] = self.spares.get(p, ["weight"])?;
                sgd_into(w, g, out.as_mut_slice(), k)
            } else {
                // A buffer is set to the first gradient: its old (zero) values are not read.
                let old = self.buffers.get(&p.name).map(|(_, b)| b.as_slice());
                let [out, b] = self.spares.get(p, ["weight", "momentum buffer"])?;
                let out = [out.as_mut_slice(), b.as_mut_slice()];
                sgd_momentum_into([w, g], old, out, k, nesterov)
            };
            if !finite {
                return Err(TrainError::StepNotFinite {
                    name: p.name.clone(),
                });
            }
        }
        // All finite: the spares become the values, the values the spares.
        self.buffers.extend(fresh);
        for p in params.iter_mut() {
            if self.momentum == 0.0 {
                if let Some([w]) = self.spares.of(&p.name) {
                    core::mem::swap(&mut p.value, w);
                }
            } else if let (Some([w, b]), Some((_, old))) =
                (self.spares.of(&p.name), self.buffers.get_mut(&p.name))
            {
                core::mem::swap(&mut p.value, w);
                core::mem::swap(old, b);
                self.bounds
                    .0
                    .insert(p.name.clone(), max_abs(old.as_slice()));
            }
            p.magnitude = Some(max_abs(p.value.as_slice()));
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
            self.bounds = Bounds::default();
        }
    }

    fn hyper(&self) -> (&'static str, Vec<(&'static str, f64)>) {
        let values = vec![
            ("lr", self.lr),
            ("initial_lr", self.initial_lr),
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
                "initial_lr" => self.initial_lr = value,
                "momentum" => self.momentum = value,
                "dampening" => self.dampening = value,
                "weight_decay" => self.weight_decay = value,
                "nesterov" => self.nesterov = value != 0.0,
                _ => {}
            }
        }
    }

    fn check_with(&self, hyper: &[(&'static str, f64)]) -> Result<(), TrainError> {
        let mut probe = Sgd::new(self.lr);
        probe.set_hyper(&self.hyper().1);
        probe.set_hyper(hyper);
        probe.check_hyper()
    }
}

/// A momentum buffer: its parameter's PyTorch shape and its values.
type Buffer = (Vec<usize>, DMatrix<f32>);

/// One plain SGD step of a parameter into `out`, from its weight `w` and gradient `g`
/// (slices of one length): weight decay, then `w − lr·d`; whether every value written is
/// finite. `k` is `[lr, weight decay, momentum, 1 − dampening]`.
fn sgd_into(w: &[f32], g: &[f32], out: &mut [f32], k: [f32; 4]) -> bool {
    let [lr, wd, _, _] = k;
    let n = w.len().min(g.len()).min(out.len());
    let (w, g, out) = (&w[..n], &g[..n], &mut out[..n]);
    let mut bad = 0u32;
    for i in 0..n {
        let d = if wd != 0.0 { g[i] + wd * w[i] } else { g[i] };
        out[i] = w[i] - lr * d;
        bad |= not_finite2(out[i], 0.0);
    }
    bad == 0
}

/// One SGD step with momentum into `[weight, buffer]`, from `[weight, gradient]` and the
/// buffer so far (`None` on its first step, when it becomes the gradient): weight decay, then
/// momentum (optionally Nesterov's), then `w − lr·d`; whether every value written is finite.
fn sgd_momentum_into(
    [w, g]: [&[f32]; 2],
    old: Option<&[f32]>,
    [ow, ob]: [&mut [f32]; 2],
    k: [f32; 4],
    nesterov: bool,
) -> bool {
    let [lr, wd, momentum, keep] = k;
    let n = w.len().min(g.len()).min(ow.len()).min(ob.len());
    let (w, g, ow, ob) = (&w[..n], &g[..n], &mut ow[..n], &mut ob[..n]);
    let decayed = |i: usize| if wd != 0.0 { g[i] + wd * w[i] } else { g[i] };
    let mut bad = 0u32;
    match old {
        None => {
            for i in 0..n {
                let d = decayed(i);
                let step = if nesterov { d + momentum * d } else { d };
                (ow[i], ob[i]) = (w[i] - lr * step, d);
                bad |= not_finite2(ow[i], d);
            }
        }
        Some(b) => {
            let b = &b[..n.min(b.len())];
            for (i, &b) in b.iter().enumerate() {
                let d = decayed(i);
                let b = b * momentum + keep * d;
                let step = if nesterov { d + momentum * b } else { b };
                (ow[i], ob[i]) = (w[i] - lr * step, b);
                bad |= not_finite2(ow[i], b);
            }
        }
    }
    bad == 0
}

/// Bounds on the new `[|w|, |b|]` of an SGD step from weights, gradients and momentum buffers
/// bounded by `w`, `g` and `b`, when they prove every intermediate of [`sgd_in_place`] and
/// [`sgd_momentum_in_place`] finite; `None` otherwise (NaN, an infinity, values too large).
fn sgd_bounds(w: f32, g: f32, b: f32, k: [f32; 4]) -> Option<[f32; 2]> {
    let [lr, wd, momentum, keep] = k.map(f64::from);
    let (w, g, b) = (f64::from(w), f64::from(g), f64::from(b));
    // A few roundings in f32, each off by 2^-24 at most.
    let margin = 1.0 + 1e-6;
    let d = g + wd * w; // the decayed gradient
    let b = (momentum * b + keep.abs().max(1.0) * d) * margin; // the buffer, or the gradient
    let step = d + momentum * b + b; // Nesterov's or not
    let w_new = (w + lr * step) * margin;
    let fine = [w, d, b, step, lr * step, w_new]
        .iter()
        .all(|&x| x <= BOUND);
    fine.then(|| [w_new, b].map(|x| x as f32))
}

/// One plain SGD step of a parameter in place. Only when [`sgd_bounds`] proved the result
/// finite. The same arithmetic as [`sgd_into`].
fn sgd_in_place(w: &mut [f32], g: &[f32], k: [f32; 4]) {
    let [lr, wd, _, _] = k;
    let n = w.len().min(g.len());
    let (w, g) = (&mut w[..n], &g[..n]);
    for i in 0..n {
        let d = if wd != 0.0 { g[i] + wd * w[i] } else { g[i] };
        w[i] -= lr * d;
    }
}

/// One SGD step with momentum in place, the buffer `b` set to the gradient on its `first`
/// step. Only when [`sgd_bounds`] proved the result finite. The same arithmetic as
/// [`sgd_momentum_into`].
fn sgd_momentum_in_place(
    w: &mut [f32],
    g: &[f32],
    b: &mut [f32],
    first: bool,
    k: [f32; 4],
    nesterov: bool,
) {
    let [lr, wd, momentum, keep] = k;
    let n = w.len().min(g.len()).min(b.len());
    let (w, g, b) = (&mut w[..n], &g[..n], &mut b[..n]);
    for i in 0..n {
        let d = if wd != 0.0 { g[i] + wd * w[i] } else { g[i] };
        b[i] = if first { d } else { b[i] * momentum + keep * d };
        let step = if nesterov { d + momentum * b[i] } else { b[i] };
        w[i] -= lr * step;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values from a fixed xorshift stream: signs, magnitudes from 1e-30 to 1e3, subnormals
    /// and zeros.
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..n)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let unit = (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                match i % 7 {
                    0 => 0.0,
                    1 => unit * 1e-40,
                    2 => unit * 1e-30,
                    3 => unit * 1e3,
                    _ => unit,
                }
            })
            .collect()
    }

    /// The two ways of taking a step give the same bits: in place (when bounded) and into
    /// spare buffers (otherwise).
    #[test]
    fn in_place_and_spare_steps_agree_bit_for_bit() {
        let n = 1031;
        for seed in 0..8 {
            let (w, g, m) = (
                values(n, seed),
                values(n, seed + 100),
                values(n, seed + 200),
            );
            let v: Vec<f32> = values(n, seed + 300).iter().map(|x| x * x).collect();
            for wd in [0.0, 0.01] {
                let k = Adam::constants_of(1e-3, (0.9, 0.999), 1e-8, seed + 1);
                let (mut w1, mut m1, mut v1) = (w.clone(), m.clone(), v.clone());
                adam_in_place(&mut w1, &g, &mut m1, &mut v1, wd, k);
                let (mut w2, mut m2, mut v2) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
                let out = [&mut w2[..], &mut m2[..], &mut v2[..]];
                assert!(adam_into([&w, &g], [&m, &v], out, wd, k));
                let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&w1), bits(&w2));
                assert_eq!(bits(&m1), bits(&m2));
                assert_eq!(bits(&v1), bits(&v2));

                let k = [0.1, wd, 0.9, 0.8];
                for nesterov in [false, true] {
                    for first in [false, true] {
                        let (mut w1, mut b1) = (w.clone(), m.clone());
                        sgd_momentum_in_place(&mut w1, &g, &mut b1, first, k, nesterov);
                        let (mut w2, mut b2) = (vec![0.0; n], vec![0.0; n]);
                        let old = (!first).then_some(&m[..]);
                        let out = [&mut w2[..], &mut b2[..]];
                        assert!(sgd_momentum_into([&w, &g], old, out, k, nesterov));
                        assert_eq!(bits(&w1), bits(&w2));
                        assert_eq!(bits(&b1), bits(&b2));
                    }
                }
                let mut w1 = w.clone();
                sgd_in_place(&mut w1, &g, k);
                let mut w2 = vec![0.0; n];
                assert!(sgd_into(&w, &g, &mut w2, k));
                assert_eq!(bits(&w1), bits(&w2));
            }
        }
    }

    #[test]
    fn the_last_step_count_is_an_error_not_a_wrap() {
        assert!(matches!(next_step(7, "0.weight"), Ok(8)));
        let err = next_step(u64::MAX, "0.weight").err();
        assert!(
            matches!(err, Some(TrainError::Checkpoint { .. })),
            "{err:?}"
        );
    }

    #[test]
    fn bounds_cover_the_largest_value_and_catch_non_finite_ones() {
        let v = [0.5f32, -3.0, 1e-40, 2.9, 4.0, 0.25, -0.125, 1.5, 2.0];
        assert_eq!(max_abs(&v), 4.0);
        assert_eq!(max_abs(&v[..8]), 4.0);
        assert_eq!(max_abs(&v[..3]), 3.0);
        assert!(max_abs(&[1.0, f32::NAN]).is_nan());
        assert_eq!(max_abs(&[1.0, f32::NEG_INFINITY]), f32::INFINITY);
        assert_eq!(max_abs(&[]), 0.0);
        let k = Adam::constants_of(1e-3, (0.9, 0.999), 1e-8, 1);
        let bounds = adam_bounds(1.0, 2.0, (1.0, 1.0), 0.0, k).unwrap_or_default();
        assert!(
            bounds[1] >= 2.0 && bounds[2] >= 4.0 && bounds[0] > 1.0,
            "{bounds:?}"
        );
        assert!(adam_bounds(1e38, 1.0, (1.0, 1.0), 0.0, k).is_none());
        assert!(adam_bounds(1.0, 1e19, (1.0, 1.0), 0.0, k).is_none());
        assert!(adam_bounds(1.0, f32::NAN, (1.0, 1.0), 0.0, k).is_none());
        let no_eps = Adam::constants_of(1e-3, (0.9, 0.999), 0.0, 1);
        assert!(adam_bounds(1.0, 1.0, (1.0, 1.0), 0.0, no_eps).is_none());
        assert!(sgd_bounds(1.0, 1.0, 1.0, [0.1, 0.0, 0.9, 1.0]).is_some());
        assert!(sgd_bounds(1.0, 1.0, 1.0, [3e38, 0.0, 0.9, 1.0]).is_none());
        assert!(sgd_bounds(f32::INFINITY, 1.0, 1.0, [0.1, 0.0, 0.0, 1.0]).is_none());
    }
}
