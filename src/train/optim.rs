//! Optimizers: [`Adam`] and [`Sgd`], PyTorch's `torch.optim.Adam` and `torch.optim.SGD`.

use std::collections::BTreeMap;

use nalgebra::DMatrix;

use super::{Grads, TrainError};
use crate::alloc::try_zeros;
use crate::init::{Dims, Role};
use crate::list::Layers;
use crate::net::Net;
use crate::state::{Bound, Param};
use crate::weights::{LoadError, Weights};

mod sealed {
    pub trait Sealed {}
}

/// An optimizer: it updates a bound net's parameters from their gradients, keeping its state
/// (moments, momentum buffers) per parameter name.
///
/// Only a bound net has parameters, so only a bound net can be stepped: stepping a
/// declaration is a compile error.
pub trait Optimizer: sealed::Sealed {
    /// Updates every parameter of `net` from `grads`, made by
    /// [`Net::loss_and_grads`](crate::Net::loss_and_grads) on that net.
    ///
    /// All or nothing: on an error no parameter and no state changed.
    ///
    /// # Errors
    /// * [`TrainError::GradientNotFinite`] when a gradient holds NaN or an infinity;
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
        self.apply(&mut params, &grads.values)
    }

    /// The name in error messages, `"Adam"` or `"SGD"`.
    #[doc(hidden)]
    fn name(&self) -> &'static str;

    /// Checks the hyper-parameters.
    #[doc(hidden)]
    fn check_hyper(&self) -> Result<(), TrainError>;

    /// Applies checked, finite gradients, all or nothing.
    #[doc(hidden)]
    fn apply(
        &mut self,
        params: &mut [&mut Param],
        grads: &[DMatrix<f32>],
    ) -> Result<(), TrainError>;

    /// The state, as tensors named `optim.{param}.{what}`, for a checkpoint.
    #[doc(hidden)]
    fn state_tensors(&self) -> Vec<Param>;

    /// Reads the state of `params` from a checkpoint, without changing `self`.
    #[doc(hidden)]
    fn read_state(
        &self,
        params: &[&Param],
        weights: &Weights<'_>,
    ) -> Result<Box<dyn std::any::Any>, LoadError>;

    /// Takes a state [`read_state`](Optimizer::read_state) returned.
    #[doc(hidden)]
    fn set_state(&mut self, state: Box<dyn std::any::Any>);
}

/// Checks that `grads` belong to `params` and are finite.
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
    if let Some(name) = grads.first_not_finite() {
        return Err(TrainError::GradientNotFinite {
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// A state tensor shaped like `p`, named `optim.{p}.{what}`.
fn state_param(p_name: &str, shape: &[usize], what: &str, value: DMatrix<f32>) -> Param {
    Param {
        name: format!("optim.{p_name}.{what}"),
        shape: shape.to_vec(),
        role: Role::Weight,
        fan_in: 0,
        fan_out: 0,
        value,
    }
}

/// Reads `optim.{p}.{what}`, shaped like `p`; `None` when absent.
fn read_like(
    weights: &Weights<'_>,
    p: &Param,
    what: &str,
) -> Result<Option<DMatrix<f32>>, LoadError> {
    let like = state_param(
        &p.name,
        &p.shape,
        what,
        DMatrix::zeros(p.value.nrows(), p.value.ncols()),
    );
    weights.matrix_like(&like)
}

/// Checks that every `optim.` tensor of a checkpoint was read.
fn no_other_state(weights: &Weights<'_>, read: &[String]) -> Result<(), LoadError> {
    let extra: Vec<(String, Vec<usize>)> = weights
        .names()
        .filter(|n| n.starts_with("optim.") && !read.iter().any(|r| r == n))
        .map(|n| {
            let shape = weights
                .get(n)
                .map(|t| t.shape().to_vec())
                .unwrap_or_default();
            (n.to_owned(), shape)
        })
        .collect();
    if extra.is_empty() {
        Ok(())
    } else {
        Err(LoadError::Unexpected { tensors: extra })
    }
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
fn same_shape(p: &Param, state: &DMatrix<f32>) -> Result<(), TrainError> {
    if state.shape() == p.value.shape() {
        return Ok(());
    }
    Err(TrainError::GradsMismatch {
        reason: format!(
            "the state kept for `{}` is {} × {} but the parameter is {}: was the optimizer used on another net?",
            p.name,
            state.nrows(),
            state.ncols(),
            Dims(&p.shape)
        ),
    })
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

    /// The term added to the denominator, at least 0.
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
}

impl sealed::Sealed for Adam {}

impl Optimizer for Adam {
    fn name(&self) -> &'static str {
        "Adam"
    }

    fn check_hyper(&self) -> Result<(), TrainError> {
        let (b1, b2) = self.betas;
        let n = "Adam";
        hyper(
            n,
            "learning rate",
            self.lr,
            self.lr >= 0.0 && self.lr.is_finite(),
            "finite and at least 0",
        )?;
        hyper(n, "beta1", b1, (0.0..1.0).contains(&b1), "in [0, 1)")?;
        hyper(n, "beta2", b2, (0.0..1.0).contains(&b2), "in [0, 1)")?;
        hyper(
            n,
            "eps",
            self.eps,
            self.eps >= 0.0 && self.eps.is_finite(),
            "finite and at least 0",
        )?;
        let wd = self.weight_decay;
        hyper(
            n,
            "weight decay",
            wd,
            wd >= 0.0 && wd.is_finite(),
            "finite and at least 0",
        )
    }

    fn apply(
        &mut self,
        params: &mut [&mut Param],
        grads: &[DMatrix<f32>],
    ) -> Result<(), TrainError> {
        // New states are allocated, and kept ones checked, before anything changes.
        let mut fresh = Vec::new();
        for p in params.iter() {
            match self.state.get(&p.name) {
                Some(s) => same_shape(p, &s.exp_avg)?,
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
        self.state.extend(fresh);
        let (beta1, beta2) = self.betas;
        let wd = self.weight_decay as f32;
        for (p, g) in params.iter_mut().zip(grads) {
            let Some(s) = self.state.get_mut(&p.name) else {
                continue;
            };
            s.step += 1;
            let t = s.step as f64;
            let bias1 = 1.0 - beta1.powf(t);
            let bias2 = 1.0 - beta2.powf(t);
            let step_size = (self.lr / bias1) as f32;
            let bias2_sqrt = bias2.sqrt() as f32;
            let (b1, b2, eps) = ((1.0 - beta1) as f32, beta2 as f32, self.eps as f32);
            let one_minus_b2 = (1.0 - beta2) as f32;
            let inv_bias2_sqrt = 1.0 / bias2_sqrt;
            let w = p.value.as_mut_slice();
            let (g, m, v) = (
                g.as_slice(),
                s.exp_avg.as_mut_slice(),
                s.exp_avg_sq.as_mut_slice(),
            );
            adam_update(
                w,
                g,
                m,
                v,
                wd,
                [b1, b2, one_minus_b2, inv_bias2_sqrt, eps, step_size],
            );
        }
        Ok(())
    }

    fn state_tensors(&self) -> Vec<Param> {
        let mut out = Vec::new();
        for (name, s) in &self.state {
            out.push(state_param(name, &s.shape, "exp_avg", s.exp_avg.clone()));
            out.push(state_param(
                name,
                &s.shape,
                "exp_avg_sq",
                s.exp_avg_sq.clone(),
            ));
            out.push(state_param(
                name,
                &[1],
                "step",
                DMatrix::from_element(1, 1, s.step as f32),
            ));
        }
        out
    }

    fn read_state(
        &self,
        params: &[&Param],
        weights: &Weights<'_>,
    ) -> Result<Box<dyn std::any::Any>, LoadError> {
        let mut state = BTreeMap::new();
        let mut read = Vec::new();
        for p in params {
            let step_like = state_param(&p.name, &[1], "step", DMatrix::zeros(1, 1));
            let Some(step) = weights.matrix_like(&step_like)? else {
                continue;
            };
            let missing = |what: &str| LoadError::Missing {
                name: format!("optim.{}.{what}", p.name),
                expected: crate::layer::PartialShape::from_dims(&p.shape),
            };
            let exp_avg = read_like(weights, p, "exp_avg")?.ok_or_else(|| missing("exp_avg"))?;
            let exp_avg_sq =
                read_like(weights, p, "exp_avg_sq")?.ok_or_else(|| missing("exp_avg_sq"))?;
            let step = step.get(0).copied().unwrap_or(0.0);
            let step = if step >= 0.0 && step.fract() == 0.0 && step < 16_777_216.0 {
                step as u64
            } else {
                0
            };
            for what in ["step", "exp_avg", "exp_avg_sq"] {
                read.push(format!("optim.{}.{what}", p.name));
            }
            state.insert(
                p.name.clone(),
                AdamState {
                    shape: p.shape.clone(),
                    step,
                    exp_avg,
                    exp_avg_sq,
                },
            );
        }
        no_other_state(weights, &read)?;
        Ok(Box::new(state))
    }

    fn set_state(&mut self, state: Box<dyn std::any::Any>) {
        if let Ok(state) = state.downcast::<BTreeMap<String, AdamState>>() {
            self.state = *state;
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
    let [b1, b2, one_minus_b2, inv_bias2_sqrt, eps, step_size] = k;
    let n = w.len().min(g.len()).min(m.len()).min(v.len());
    let (w, g, m, v) = (&mut w[..n], &g[..n], &mut m[..n], &mut v[..n]);
    for i in 0..n {
        let g = if DECAY { g[i] + wd * w[i] } else { g[i] };
        m[i] += b1 * (g - m[i]);
        v[i] = v[i] * b2 + one_minus_b2 * g * g;
        let denom = v[i].sqrt() * inv_bias2_sqrt + eps;
        w[i] -= step_size * m[i] / denom;
    }
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
    buffers: BTreeMap<String, (Vec<usize>, DMatrix<f32>)>,
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

impl sealed::Sealed for Sgd {}

impl Optimizer for Sgd {
    fn name(&self) -> &'static str {
        "SGD"
    }

    fn check_hyper(&self) -> Result<(), TrainError> {
        let n = "SGD";
        let ok = |v: f64| v >= 0.0 && v.is_finite();
        hyper(
            n,
            "learning rate",
            self.lr,
            ok(self.lr),
            "finite and at least 0",
        )?;
        hyper(
            n,
            "momentum",
            self.momentum,
            ok(self.momentum),
            "finite and at least 0",
        )?;
        hyper(
            n,
            "dampening",
            self.dampening,
            ok(self.dampening),
            "finite and at least 0",
        )?;
        hyper(
            n,
            "weight decay",
            self.weight_decay,
            ok(self.weight_decay),
            "finite and at least 0",
        )?;
        let nesterov_ok = !self.nesterov || (self.momentum > 0.0 && self.dampening == 0.0);
        hyper(
            n,
            "momentum for Nesterov",
            self.momentum,
            nesterov_ok,
            "above 0, with dampening 0",
        )
    }

    fn apply(
        &mut self,
        params: &mut [&mut Param],
        grads: &[DMatrix<f32>],
    ) -> Result<(), TrainError> {
        let momentum = self.momentum as f32;
        let with_momentum = self.momentum != 0.0;
        // New buffers are allocated, and kept ones checked, before anything changes.
        let mut fresh = Vec::new();
        if with_momentum {
            for p in params.iter() {
                match self.buffers.get(&p.name) {
                    Some((_, b)) => same_shape(p, b)?,
                    None => fresh.push((
                        p.name.clone(),
                        (p.shape.clone(), zeros_like(p, "momentum buffer")?),
                    )),
                }
            }
        }
        let new: Vec<String> = fresh.iter().map(|(n, _)| n.clone()).collect();
        self.buffers.extend(fresh);
        let (lr, wd) = (self.lr as f32, self.weight_decay as f32);
        let keep = (1.0 - self.dampening) as f32;
        for (p, g) in params.iter_mut().zip(grads) {
            let first = new.contains(&p.name);
            let mut buffer = if with_momentum {
                self.buffers.get_mut(&p.name).map(|(_, b)| b)
            } else {
                None
            };
            let values = p.value.as_mut_slice().iter_mut().zip(g.as_slice());
            for (i, (w, g)) in values.enumerate() {
                let mut d = if wd != 0.0 { g + wd * *w } else { *g };
                if let Some(b) = buffer
                    .as_deref_mut()
                    .and_then(|b| b.as_mut_slice().get_mut(i))
                {
                    *b = if first { d } else { *b * momentum + keep * d };
                    d = if self.nesterov { d + momentum * *b } else { *b };
                }
                *w -= lr * d;
            }
        }
        Ok(())
    }

    fn state_tensors(&self) -> Vec<Param> {
        self.buffers
            .iter()
            .map(|(name, (shape, b))| state_param(name, shape, "momentum_buffer", b.clone()))
            .collect()
    }

    fn read_state(
        &self,
        params: &[&Param],
        weights: &Weights<'_>,
    ) -> Result<Box<dyn std::any::Any>, LoadError> {
        let mut buffers = BTreeMap::new();
        let mut read = Vec::new();
        for p in params {
            if let Some(b) = read_like(weights, p, "momentum_buffer")? {
                read.push(format!("optim.{}.momentum_buffer", p.name));
                buffers.insert(p.name.clone(), (p.shape.clone(), b));
            }
        }
        no_other_state(weights, &read)?;
        Ok(Box::new(buffers))
    }

    fn set_state(&mut self, state: Box<dyn std::any::Any>) {
        if let Ok(state) = state.downcast::<BTreeMap<String, (Vec<usize>, DMatrix<f32>)>>() {
            self.buffers = *state;
        }
    }
}
