//! Finite-difference checks, in `f64`, of the training passes of `BatchNorm` (flat and image),
//! `LayerNorm` and `Dropout`, as `gradcheck.rs` checks the other layers.
//!
//! `gradcheck.rs`'s reference runs one sample at a time, which a batch normalization cannot:
//! its output depends on the whole batch. The reference here runs the whole batch through
//! every layer, from PyTorch's definitions: `nn.Linear`; `nn.Conv2d` (stride 1, zero padding,
//! with or without bias); `nn.BatchNorm1d`/`nn.BatchNorm2d` in training mode, normalizing each
//! feature (each channel, over samples × H × W) by the batch's mean and *biased* variance,
//! `eps` 1e-5, then `weight · x̂ + bias`; `nn.LayerNorm(features)`, each sample by its own
//! mean and biased variance, `eps` 1e-5, per-feature `weight` and `bias`; `nn.Dropout(p)` with
//! a given mask, kept values scaled by `1/(1 − p)`; the activations; and the two losses.
//!
//! Each case:
//! 1. binds a lazynet net with random widths and seed, and sets every normalization's weight
//!    and bias to random values (`Net::set_param`: they start at 1 and 0, where a wrong
//!    gradient of either could hide);
//! 2. runs `Net::loss_and_grads` (a training pass), recording with [`Tap`] layers what lazynet
//!    computed at chosen places: the net's training output (a tap last), and the input and
//!    output of every dropout;
//! 3. reads each dropout's mask from its two taps: a value is dropped where the output is 0
//!    and the input is not, and every kept value must be exactly `input · (1/(1 − p))` in
//!    `f32` (checked bit for bit);
//! 4. loads lazynet's parameters (widened exactly to `f64`) and the masks into the reference,
//!    and checks its training output and loss against lazynet's (`1e-5·max(1, |value|)`);
//! 5. compares lazynet's analytic gradients of every parameter, and of the input through the
//!    [`Probe`] trick of `gradcheck.rs` (a layer first in the net that records the gradient
//!    the next layer's backward pass sends it), with central finite differences of the
//!    reference's loss over the whole batch.
//!
//! # Why the dropout mask is read from lazynet
//! The mask is drawn from the net's seed, the optimizer steps taken and the layer's place, by
//! a stream the crate does not promise to keep; reading it from the taps makes the test depend
//! only on what `Dropout` promises (zeros, or the value scaled by `1/(1 − p)`; the same mask in
//! the forward and the backward pass of one `loss_and_grads`). The other way, finite
//! differences of lazynet's own `f32` loss (the mask is the same from call to call), would
//! check gradients to two or three digits only; with the mask, the reference is exact and the
//! tolerances are `gradcheck.rs`'s. A backward pass that drew another mask than its forward
//! pass fails the comparison: its gradients are those of another function.
//!
//! # Kinks and conditioning
//! ReLU kinks are handled as in `gradcheck.rs`: a case whose forward pass comes within
//! [`MARGIN`] of one is rejected, and a finite difference whose steps changed a ReLU's side is
//! left out (at most a tenth of a case's; none was while this was written). Normalizations
//! have no kink (`eps` keeps them smooth), but they amplify rounding. Their input `x` is an
//! `f32` value, rounded to about `2⁻²⁴·|x|`, so `x̂ = (x − mean)/σ` carries an error of about
//! `2⁻²⁴·|x|/σ`; and lazynet's batch normalization computes `x·a + c` with
//! `a = w/σ`, `c = b − mean·a` in `f32` (PyTorch's CPU kernel does the same), whose two terms
//! cancel to the same relative error when `|mean| ≫ σ`. A group of nearly equal values (two
//! samples a hair apart) makes that error as large as it likes, so a case in which some
//! normalized group (a batch norm's feature or channel, a layer norm's sample) has
//! `max |x| / σ` above [`COND`] = 50 is rejected (see [`near_a_kink`]): the error of `x̂` is
//! then below `50·2⁻²⁴ ≈ 3e-6`, under the output tolerance. About 7% of the cases are
//! rejected so, most of them of two samples or two features.
//!
//! # Tolerances
//! As `gradcheck.rs`: a gradient value passes when `|fd − analytic| ≤ 1e-3·|fd| + 1e-5·G`, `G`
//! the largest of the case's finite differences and of `Σ |∂L/∂y|` over the outputs; outputs
//! and loss within `1e-5·max(1, |value|)`. Over 12,000 cases (730,000 gradient values, every
//! test at 2000 cases) the largest gradient error was 14% of its tolerance and the largest
//! output error 32%. Wrong backward passes fail at once, each at its first few cases (tried
//! while this was written, each mutation on its own): a batch norm's input gradient without
//! its `Σ dy / n` term, or dividing by the samples and not samples × H × W on images; the
//! unbiased variance in the training forward pass; a layer norm's input gradient with `n + 1`
//! for `n`; a dropout's backward pass without the `1/(1 − p)` scale, or drawing its mask from
//! the stream one value further on. Set `GRADCHECK_NORM_REPORT=1` to print, per case, the
//! largest errors relative to their tolerances.

use std::sync::{Arc, Mutex};

use lazynet::layer::{
    Activation, DeclaresInput, Fault, Infer, Kernel, Layer, LayerOn, Mode, Param, PartialShape,
    Pass,
};
use lazynet::list::{Chain, Follows};
use lazynet::nalgebra::DMatrix;
use lazynet::prelude::*;
use lazynet::rules::Proven;
use lazynet::train::TargetFor;
use proptest::prelude::*;

/// The finite-difference step.
const H: f64 = 1e-6;

/// How far from a ReLU kink every value must be.
const MARGIN: f64 = 1e-4;

/// The largest `max |x| / σ` of a normalized group a case may have.
const COND: f64 = 50.0;

/// The gradient tolerance relative to the value.
const RTOL: f64 = 1e-3;

/// The gradient tolerance relative to the scale of the case's gradients.
const GTOL: f64 = 1e-5;

/// The output and loss tolerance, relative to `max(1, |value|)`.
const OTOL: f64 = 1e-5;

/// PyTorch's `eps` of both normalizations.
const EPS: f64 = 1e-5;

// ---------------------------------------------------------------------------------------------
// Layers for the tests: a probe of the input gradient, a tap of values, and one slot that is
// any of the layers that keep their input's shape, chosen at run time.

/// A layer that passes its input through and records the gradient that reaches it (copied
/// from `gradcheck.rs`). Put first in a net, it receives the gradient of the loss with respect
/// to the net's input. A probe that `learns` owns one parameter (`0.weight`, ignored, with a
/// zero gradient), without which a net computes no input gradient for its first layer.
#[derive(Clone, Debug)]
struct Probe {
    seen: Arc<Mutex<Option<DMatrix<f32>>>>,
    learns: bool,
}

impl Probe {
    fn new(learns: bool) -> Self {
        Probe {
            seen: Arc::default(),
            learns,
        }
    }

    fn take(&self) -> Option<DMatrix<f32>> {
        self.seen.lock().unwrap().take()
    }
}

impl Layer for Probe {
    fn kind(&self) -> &'static str {
        "Probe"
    }
    fn output_shape(&self, input: Option<&PartialShape>) -> Result<Option<PartialShape>, Fault> {
        Ok(input.cloned())
    }
    fn param_shapes(&self, _: Option<&PartialShape>) -> Vec<(Role, PartialShape)> {
        if self.learns {
            vec![(Role::Weight, PartialShape::from_dims(&[1]))]
        } else {
            Vec::new()
        }
    }
    fn kernel(&self, _: &[usize], _: &[usize]) -> Box<dyn Kernel> {
        Box::new(self.clone())
    }
}

impl Kernel for Probe {
    fn forward(
        &self,
        _: &[Param],
        x: &DMatrix<f32>,
        y: &mut DMatrix<f32>,
        _: Activation,
    ) -> Result<(), ShapeError> {
        y.copy_from(x);
        Ok(())
    }
    fn backward(
        &self,
        _: &[Param],
        _: &DMatrix<f32>,
        _: &DMatrix<f32>,
        dy: &DMatrix<f32>,
        _: &mut [DMatrix<f32>],
        _: Option<&mut DMatrix<f32>>,
    ) -> Result<(), ShapeError> {
        *self.seen.lock().unwrap() = Some(dy.clone());
        Ok(())
    }
}

/// A layer that passes its input through, and records it in a training pass.
#[derive(Clone, Debug, Default)]
struct Tap {
    seen: Arc<Mutex<Option<DMatrix<f32>>>>,
}

impl Tap {
    fn take(&self) -> Option<DMatrix<f32>> {
        self.seen.lock().unwrap().take()
    }
}

impl Layer for Tap {
    fn kind(&self) -> &'static str {
        "Tap"
    }
    fn output_shape(&self, input: Option<&PartialShape>) -> Result<Option<PartialShape>, Fault> {
        Ok(input.cloned())
    }
    fn param_shapes(&self, _: Option<&PartialShape>) -> Vec<(Role, PartialShape)> {
        Vec::new()
    }
    fn kernel(&self, _: &[usize], _: &[usize]) -> Box<dyn Kernel> {
        Box::new(self.clone())
    }
}

impl Kernel for Tap {
    fn forward(
        &self,
        _: &[Param],
        x: &DMatrix<f32>,
        y: &mut DMatrix<f32>,
        _: Activation,
    ) -> Result<(), ShapeError> {
        y.copy_from(x);
        Ok(())
    }
    fn backward(
        &self,
        _: &[Param],
        _: &DMatrix<f32>,
        _: &DMatrix<f32>,
        dy: &DMatrix<f32>,
        _: &mut [DMatrix<f32>],
        dx: Option<&mut DMatrix<f32>>,
    ) -> Result<(), ShapeError> {
        if let Some(dx) = dx {
            dx.copy_from(dy);
        }
        Ok(())
    }
    fn forward_with(
        &self,
        pass: &mut Pass<'_>,
        _: &[Param],
        x: &DMatrix<f32>,
        y: &mut DMatrix<f32>,
        _: Activation,
    ) -> Result<(), ShapeError> {
        if pass.mode() == Mode::Train {
            *self.seen.lock().unwrap() = Some(x.clone());
        }
        y.copy_from(x);
        Ok(())
    }
}

/// One of the layers that keep their input's shape, chosen at run time: an activation, a tap
/// or a dropout. It delegates to the layer's own kernel (so the net fuses an activation into
/// the normalization before it as it fuses lazynet's own layer), while a test's net has one
/// type whatever it draws.
#[derive(Clone, Debug)]
enum Same {
    Act(Act),
    Tap(Tap),
    Dropout(Dropout),
}

impl Same {
    fn layer(&self) -> &dyn Layer {
        match self {
            Same::Act(Act::Relu) => &Relu,
            Same::Act(Act::Sigmoid) => &Sigmoid,
            Same::Act(Act::Tanh) => &Tanh,
            Same::Act(Act::Identity) => &Identity,
            Same::Tap(t) => t,
            Same::Dropout(d) => d,
        }
    }

    /// The layer as the reference computes it.
    fn spec(&self) -> Spec {
        match self {
            Same::Act(a) => Spec::Act(*a),
            Same::Tap(t) => Spec::Tap(t.clone()),
            Same::Dropout(d) => Spec::Dropout(d.p()),
        }
    }

    fn tap() -> Self {
        Same::Tap(Tap::default())
    }

    fn dropout(p: f32) -> Result<Self, TestCaseError> {
        Ok(Same::Dropout(Dropout::new(p).map_err(fail)?))
    }
}

impl Layer for Same {
    fn kind(&self) -> &'static str {
        self.layer().kind()
    }
    fn output_shape(&self, input: Option<&PartialShape>) -> Result<Option<PartialShape>, Fault> {
        self.layer().output_shape(input)
    }
    fn param_shapes(&self, input: Option<&PartialShape>) -> Vec<(Role, PartialShape)> {
        self.layer().param_shapes(input)
    }
    fn kernel(&self, input: &[usize], output: &[usize]) -> Box<dyn Kernel> {
        self.layer().kernel(input, output)
    }
}

/// The compile-time half of a layer that keeps its input's shape.
macro_rules! keeps_shape {
    ($($t:ty),*) => {$(
        impl<Prev> Follows<Prev> for $t {
            type Known = Prev;
        }
        impl DeclaresInput for $t {
            type Input = Infer;
        }
        impl<In: Shape, Known> LayerOn<In, Known> for $t {
            type Out = In;
            type Checks = Proven;
        }
    )*};
}

keeps_shape!(Probe, Tap, Same);

// ---------------------------------------------------------------------------------------------
// The reference, in f64, over whole batches.

/// An element-wise function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Act {
    Relu,
    Sigmoid,
    Tanh,
    Identity,
}

impl Act {
    fn at(self, v: f64) -> f64 {
        match self {
            Act::Relu => v.max(0.0),
            Act::Sigmoid => 1.0 / (1.0 + (-v).exp()),
            Act::Tanh => v.tanh(),
            Act::Identity => v,
        }
    }
}

/// A layer, as the reference computes it.
#[derive(Clone, Debug)]
enum Spec {
    Dense {
        out: usize,
    },
    /// Stride 1, dilation 1, a `k × k` kernel, zero padding `p`.
    Conv {
        out: usize,
        k: usize,
        p: usize,
        bias: bool,
    },
    BatchNorm,
    LayerNorm,
    Act(Act),
    /// Its mask comes from the taps around it.
    Dropout(f32),
    Tap(Tap),
    Flatten,
}

/// A batch: one vector per sample.
type Samples = Vec<Vec<f64>>;

/// What a forward pass met on its way: how close it came to a ReLU kink, which side of each it
/// took, and the largest `max |x| / σ` of a normalized group.
#[derive(Debug)]
struct Trace {
    margin: f64,
    pattern: Vec<bool>,
    cond: f64,
}

impl Trace {
    fn new() -> Self {
        Trace {
            margin: f64::INFINITY,
            pattern: Vec::new(),
            cond: 0.0,
        }
    }
}

/// Normalizes `values` (indices into `xs`, as `(sample, value)`) by their mean and biased
/// variance; writes `scale · x̂ + shift` to `ys`.
fn normalize(
    xs: &[Vec<f64>],
    ys: &mut [Vec<f64>],
    at: &[(usize, usize)],
    scale: impl Fn(usize) -> f64,
    shift: impl Fn(usize) -> f64,
    tr: &mut Trace,
) {
    let n = at.len() as f64;
    let mean = at.iter().map(|&(s, i)| xs[s][i]).sum::<f64>() / n;
    let var = at
        .iter()
        .map(|&(s, i)| (xs[s][i] - mean).powi(2))
        .sum::<f64>()
        / n;
    let invstd = 1.0 / (var + EPS).sqrt();
    let largest = at.iter().map(|&(s, i)| xs[s][i].abs()).fold(0.0, f64::max);
    tr.cond = tr.cond.max(largest * invstd);
    for &(s, i) in at {
        ys[s][i] = (xs[s][i] - mean) * invstd * scale(i) + shift(i);
    }
}

impl Spec {
    /// The number of parameter tensors.
    fn params(&self) -> usize {
        match self {
            Spec::Dense { .. } | Spec::BatchNorm | Spec::LayerNorm => 2,
            Spec::Conv { bias, .. } => 1 + usize::from(*bias),
            _ => 0,
        }
    }

    fn out_shape(&self, input: &[usize]) -> Vec<usize> {
        match (self, input) {
            (Spec::Dense { out }, _) => vec![*out],
            (Spec::Conv { out, k, p, .. }, &[_, h, w]) => {
                vec![*out, h + 2 * p + 1 - k, w + 2 * p + 1 - k]
            }
            (Spec::Flatten, _) => vec![input.iter().product()],
            _ => input.to_vec(),
        }
    }

    /// The batch `xs`, of shape `shape` per sample, through the layer. `params` are
    /// row-major: a dense weight `[out][in]`, a convolution weight `[out][in][k][k]`; `mask`
    /// is a dropout's, per sample and value (`true`: kept).
    fn forward(
        &self,
        params: &[Vec<f64>],
        mask: Option<&Vec<Vec<bool>>>,
        xs: &[Vec<f64>],
        shape: &[usize],
        tr: &mut Trace,
    ) -> Samples {
        match *self {
            Spec::Dense { out } => xs
                .iter()
                .map(|x| {
                    let n = x.len();
                    (0..out)
                        .map(|o| {
                            let row = &params[0][o * n..(o + 1) * n];
                            params[1][o] + row.iter().zip(x).map(|(w, v)| w * v).sum::<f64>()
                        })
                        .collect()
                })
                .collect(),
            Spec::Conv { out, k, p, .. } => {
                let [c, h, w] = [shape[0], shape[1], shape[2]];
                let (oh, ow) = (h + 2 * p + 1 - k, w + 2 * p + 1 - k);
                xs.iter()
                    .map(|x| {
                        let mut y = vec![0.0; out * oh * ow];
                        for o in 0..out {
                            for i in 0..oh {
                                for j in 0..ow {
                                    let mut acc = params.get(1).map_or(0.0, |b| b[o]);
                                    for ci in 0..c {
                                        for ki in 0..k {
                                            let r = (i + ki) as isize - p as isize;
                                            if r < 0 || r >= h as isize {
                                                continue;
                                            }
                                            for kj in 0..k {
                                                let q = (j + kj) as isize - p as isize;
                                                if q < 0 || q >= w as isize {
                                                    continue;
                                                }
                                                let v = x[(ci * h + r as usize) * w + q as usize];
                                                acc +=
                                                    params[0][((o * c + ci) * k + ki) * k + kj] * v;
                                            }
                                        }
                                    }
                                    y[(o * oh + i) * ow + j] = acc;
                                }
                            }
                        }
                        y
                    })
                    .collect()
            }
            Spec::BatchNorm => {
                // Per channel, over every sample and every pixel (a flat input: one pixel).
                let run: usize = shape[1..].iter().product();
                let mut ys = xs.to_vec();
                for (ch, (&w, &b)) in params[0].iter().zip(&params[1]).enumerate() {
                    let at: Vec<(usize, usize)> = (0..xs.len())
                        .flat_map(|s| (ch * run..(ch + 1) * run).map(move |i| (s, i)))
                        .collect();
                    normalize(xs, &mut ys, &at, |_| w, |_| b, tr);
                }
                ys
            }
            Spec::LayerNorm => {
                let mut ys = xs.to_vec();
                for s in 0..xs.len() {
                    let at: Vec<(usize, usize)> = (0..xs[s].len()).map(|i| (s, i)).collect();
                    normalize(xs, &mut ys, &at, |i| params[0][i], |i| params[1][i], tr);
                }
                ys
            }
            Spec::Act(a) => xs
                .iter()
                .map(|x| {
                    x.iter()
                        .map(|&v| {
                            if a == Act::Relu {
                                tr.pattern.push(v > 0.0);
                                tr.margin = tr.margin.min(v.abs());
                            }
                            a.at(v)
                        })
                        .collect()
                })
                .collect(),
            Spec::Dropout(p) => {
                let scale = 1.0 / (1.0 - f64::from(p));
                let mask = mask.expect("a dropout's mask");
                xs.iter()
                    .zip(mask)
                    .map(|(x, keep)| {
                        x.iter()
                            .zip(keep)
                            .map(|(v, &k)| if k { v * scale } else { 0.0 })
                            .collect()
                    })
                    .collect()
            }
            Spec::Tap(_) | Spec::Flatten => xs.to_vec(),
        }
    }
}

/// What the reference loss compares the output with.
#[derive(Clone, Debug)]
enum Target {
    /// Cross-entropy with these labels, averaged over the samples.
    Labels(Vec<usize>),
    /// Mean squared error with these targets (one vector per sample), averaged over every
    /// value.
    Values(Samples),
}

impl Target {
    /// The mean loss of the outputs `ys`.
    fn loss(&self, ys: &[Vec<f64>]) -> f64 {
        match self {
            Target::Labels(labels) => {
                let total: f64 = ys
                    .iter()
                    .zip(labels)
                    .map(|(y, &label)| {
                        let max = y.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                        let sum: f64 = y.iter().map(|v| (v - max).exp()).sum();
                        max + sum.ln() - y[label]
                    })
                    .sum();
                total / ys.len() as f64
            }
            Target::Values(t) => {
                let total: f64 = ys
                    .iter()
                    .zip(t)
                    .map(|(y, t)| y.iter().zip(t).map(|(a, b)| (a - b) * (a - b)).sum::<f64>())
                    .sum();
                total / ys.iter().map(Vec::len).sum::<usize>() as f64
            }
        }
    }

    /// `Σ |∂L/∂y|` over every output value: the scale every gradient of the net is made from.
    fn output_gradient_scale(&self, ys: &[Vec<f64>]) -> f64 {
        match self {
            Target::Labels(labels) => {
                let total: f64 = ys
                    .iter()
                    .zip(labels)
                    .map(|(y, &label)| {
                        let max = y.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                        let sum: f64 = y.iter().map(|v| (v - max).exp()).sum();
                        (0..y.len())
                            .map(|j| {
                                ((y[j] - max).exp() / sum - f64::from(u8::from(j == label))).abs()
                            })
                            .sum::<f64>()
                    })
                    .sum();
                total / ys.len() as f64
            }
            Target::Values(t) => {
                let total: f64 = ys
                    .iter()
                    .zip(t)
                    .map(|(y, t)| {
                        y.iter()
                            .zip(t)
                            .map(|(a, b)| 2.0 * (a - b).abs())
                            .sum::<f64>()
                    })
                    .sum();
                total / ys.iter().map(Vec::len).sum::<usize>() as f64
            }
        }
    }
}

/// A net as the reference computes it, with its parameters, dropout masks and a batch.
struct Reference {
    specs: Vec<Spec>,
    /// The input shape of every layer, then the output shape.
    shapes: Vec<Vec<usize>>,
    /// Per layer, its parameter tensors, row-major.
    params: Vec<Vec<Vec<f64>>>,
    /// Per layer, a dropout's mask.
    masks: Vec<Option<Vec<Vec<bool>>>>,
    xs: Samples,
    target: Target,
}

impl Reference {
    fn new(specs: Vec<Spec>, input: Vec<usize>, xs: Samples, target: Target) -> Self {
        let mut shapes = vec![input];
        for spec in &specs {
            let next = spec.out_shape(shapes.last().unwrap());
            shapes.push(next);
        }
        Reference {
            params: specs.iter().map(|_| Vec::new()).collect(),
            masks: specs.iter().map(|_| None).collect(),
            specs,
            shapes,
            xs,
            target,
        }
    }

    /// The batch `xs`, the input of layer `from`, through the layers from there on.
    fn forward_from(&self, from: usize, xs: &[Vec<f64>], tr: &mut Trace) -> Samples {
        let mut cur = xs.to_vec();
        for l in from..self.specs.len() {
            cur = self.specs[l].forward(
                &self.params[l],
                self.masks[l].as_ref(),
                &cur,
                &self.shapes[l],
                tr,
            );
        }
        cur
    }

    /// The inputs of layer `l`.
    fn inputs_of(&self, l: usize) -> Samples {
        let mut cur = self.xs.clone();
        for k in 0..l {
            cur = self.specs[k].forward(
                &self.params[k],
                self.masks[k].as_ref(),
                &cur,
                &self.shapes[k],
                &mut Trace::new(),
            );
        }
        cur
    }

    /// The outputs, the loss, and the trace.
    fn run(&self) -> (Samples, f64, Trace) {
        let mut tr = Trace::new();
        let ys = self.forward_from(0, &self.xs, &mut tr);
        let loss = self.target.loss(&ys);
        (ys, loss, tr)
    }

    /// The loss of the batch whose layer-`l` inputs are `xs`, and whether every ReLU took the
    /// side it took in `pattern`.
    fn loss_from(&self, l: usize, xs: &[Vec<f64>], pattern: &[bool]) -> (f64, bool) {
        let mut tr = Trace::new();
        let ys = self.forward_from(l, xs, &mut tr);
        (self.target.loss(&ys), tr.pattern == pattern)
    }

    /// The central finite difference of the loss with respect to every parameter value, per
    /// layer and tensor, row-major; NaN where a step crossed a kink.
    fn param_differences(&mut self) -> Vec<Vec<Vec<f64>>> {
        let mut all = Vec::new();
        for l in 0..self.specs.len() {
            let inputs = self.inputs_of(l);
            let mut base = Trace::new();
            self.forward_from(l, &inputs, &mut base);
            let mut layer = Vec::new();
            for t in 0..self.params[l].len() {
                let mut fd = Vec::with_capacity(self.params[l][t].len());
                for j in 0..self.params[l][t].len() {
                    let v = self.params[l][t][j];
                    self.params[l][t][j] = v + H;
                    let (plus, same_plus) = self.loss_from(l, &inputs, &base.pattern);
                    self.params[l][t][j] = v - H;
                    let (minus, same_minus) = self.loss_from(l, &inputs, &base.pattern);
                    self.params[l][t][j] = v;
                    fd.push(if same_plus && same_minus {
                        (plus - minus) / (2.0 * H)
                    } else {
                        f64::NAN
                    });
                }
                layer.push(fd);
            }
            all.push(layer);
        }
        all
    }

    /// The central finite difference of the loss with respect to every input value, per
    /// sample; NaN where a step crossed a kink.
    fn input_differences(&self) -> Samples {
        let mut base = Trace::new();
        self.forward_from(0, &self.xs, &mut base);
        let mut xs = self.xs.clone();
        let mut all = Vec::new();
        for n in 0..xs.len() {
            let mut fd = Vec::with_capacity(xs[n].len());
            for i in 0..xs[n].len() {
                let v = xs[n][i];
                xs[n][i] = v + H;
                let (plus, same_plus) = self.loss_from(0, &xs, &base.pattern);
                xs[n][i] = v - H;
                let (minus, same_minus) = self.loss_from(0, &xs, &base.pattern);
                xs[n][i] = v;
                fd.push(if same_plus && same_minus {
                    (plus - minus) / (2.0 * H)
                } else {
                    f64::NAN
                });
            }
            all.push(fd);
        }
        all
    }
}

// ---------------------------------------------------------------------------------------------
// Comparisons.

/// A matrix's values, row-major, in f64: a parameter's PyTorch layout.
fn row_major(m: &DMatrix<f32>) -> Vec<f64> {
    let mut v = Vec::with_capacity(m.len());
    for r in 0..m.nrows() {
        for c in 0..m.ncols() {
            v.push(f64::from(m[(r, c)]));
        }
    }
    v
}

/// A batch's samples (the matrix's columns), in f64.
fn columns(m: &DMatrix<f32>) -> Samples {
    m.column_iter()
        .map(|c| c.iter().map(|&v| f64::from(v)).collect())
        .collect()
}

/// What a case compared, and its largest error relative to its tolerance.
#[derive(Default, Debug)]
struct Counts {
    checked: usize,
    skipped: usize,
    /// The largest `error / tolerance` of a gradient value.
    worst: f64,
    /// The largest `error / tolerance` of an output value or the loss.
    worst_output: f64,
}

/// Checks lazynet's training output (`features × samples`) against the reference's.
fn same_outputs(
    lazynet: &DMatrix<f32>,
    reference: &[Vec<f64>],
    counts: &mut Counts,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(lazynet.ncols(), reference.len(), "samples");
    for (n, (a, b)) in lazynet.column_iter().zip(reference).enumerate() {
        prop_assert_eq!(a.len(), b.len(), "output size");
        for (i, (&a, &b)) in a.iter().zip(b).enumerate() {
            let tol = OTOL * b.abs().max(1.0);
            let err = (f64::from(a) - b).abs();
            counts.worst_output = counts.worst_output.max(err / tol);
            prop_assert!(
                err <= tol,
                "training output {} of sample {}: lazynet {} against the f64 reference {}",
                i,
                n,
                a,
                b
            );
        }
    }
    Ok(())
}

/// The largest finite difference, in magnitude.
fn scale_of<'a>(fd: impl IntoIterator<Item = &'a f64>) -> f64 {
    fd.into_iter()
        .filter(|v| v.is_finite())
        .fold(0.0f64, |m, v| m.max(v.abs()))
}

/// Checks analytic gradient values against finite differences (NaN: left out); `case` is the
/// scale of the case's gradients.
fn same_gradients(
    what: &str,
    fd: &[f64],
    analytic: &[f64],
    case: f64,
    counts: &mut Counts,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(fd.len(), analytic.len(), "{}: gradient size", what);
    for (i, (&f, &a)) in fd.iter().zip(analytic).enumerate() {
        if f.is_nan() {
            counts.skipped += 1;
            continue;
        }
        counts.checked += 1;
        let tol = RTOL * f.abs() + GTOL * case;
        let err = (f - a).abs();
        counts.worst = counts.worst.max(err / tol);
        prop_assert!(
            err <= tol,
            "{}[{}]: analytic {:e}, finite difference {:e} (error {:e}, tolerance {:e}, gradient scale {:e})",
            what,
            i,
            a,
            f,
            err,
            tol,
            case
        );
    }
    Ok(())
}

/// Fails a case whose finite differences mostly crossed kinks, or that checked nothing.
fn kinks_were_rare(counts: &Counts) -> Result<(), TestCaseError> {
    prop_assert!(counts.checked > 0, "nothing was checked");
    prop_assert!(
        counts.skipped * 10 <= counts.checked + counts.skipped,
        "{} of {} finite differences crossed a kink",
        counts.skipped,
        counts.checked + counts.skipped
    );
    Ok(())
}

/// Rejects a case whose forward pass came within [`MARGIN`] of a ReLU kink, or normalized a
/// group so narrow that `f32` rounding of its values is amplified past [`COND`].
fn near_a_kink(tr: &Trace) -> Result<(), TestCaseError> {
    if tr.margin < MARGIN {
        return Err(TestCaseError::reject(format!(
            "a value lies {:e} from a kink",
            tr.margin
        )));
    }
    if tr.cond > COND {
        if std::env::var_os("GRADCHECK_NORM_REPORT").is_some() {
            eprintln!("gradcheck_norm: rejected, max |x| / σ = {:e}", tr.cond);
        }
        return Err(TestCaseError::reject(format!(
            "a normalized group has max |x| / σ = {:e}",
            tr.cond
        )));
    }
    Ok(())
}

fn fail(e: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(e.to_string())
}

/// Which loss a case uses.
#[derive(Clone, Copy, Debug)]
enum LossKind {
    CrossEntropy,
    Mse,
}

fn loss_kind() -> impl Strategy<Value = LossKind> {
    prop_oneof![Just(LossKind::CrossEntropy), Just(LossKind::Mse)]
}

/// Reads a dropout's mask from its taps: the values it received and gave, `features ×
/// samples`. Dropped where the output is 0 and the input is not; every other output must be
/// exactly the input times `1/(1 − p)` in `f32`. An input of exactly 0 (after a ReLU) tells
/// nothing and is called kept: its value and gradient are 0 either way.
fn read_mask(
    p: f32,
    input: &DMatrix<f32>,
    output: &DMatrix<f32>,
) -> Result<Vec<Vec<bool>>, TestCaseError> {
    prop_assert_eq!(
        input.shape(),
        output.shape(),
        "a dropout's input and output"
    );
    let scale = 1.0f32 / (1.0 - p);
    let mut mask = Vec::new();
    for (n, (xs, ys)) in input.column_iter().zip(output.column_iter()).enumerate() {
        let mut keep = Vec::new();
        for (i, (&x, &y)) in xs.iter().zip(ys.iter()).enumerate() {
            let dropped = y == 0.0 && x != 0.0;
            prop_assert!(
                dropped || y.to_bits() == (x * scale).to_bits(),
                "dropout (p {}), value {} of sample {}: {} became {}, neither 0 nor {}",
                p,
                i,
                n,
                x,
                y,
                x * scale
            );
            prop_assert!(p > 0.0 || !dropped, "dropout of p 0 dropped a value");
            keep.push(!dropped);
        }
        mask.push(keep);
    }
    Ok(mask)
}

/// Sets every normalization's weight and bias in `net` (layer `l + 1` for `specs[l]`) to random
/// values: weights of magnitude 0.5 to 1.5 and either sign, biases in [-0.5, 0.5).
fn randomize_norms<N: Shape, L: Chain<N>>(
    net: &mut Net<Init<N>, L>,
    specs: &[Spec],
    seed: u64,
) -> Result<(), TestCaseError> {
    let mut rng = InitRng::new(seed, "normalizations");
    let shapes: Vec<(String, (usize, usize))> = net
        .named_params()
        .map(|(n, m)| (n.to_string(), m.shape()))
        .collect();
    for (l, spec) in specs.iter().enumerate() {
        if !matches!(spec, Spec::BatchNorm | Spec::LayerNorm) {
            continue;
        }
        for role in ["weight", "bias"] {
            let name = format!("{}.{role}", l + 1);
            let (_, (rows, cols)) = shapes
                .iter()
                .find(|(n, _)| *n == name)
                .ok_or_else(|| fail(format!("no parameter {name}")))?;
            let value = DMatrix::from_fn(*rows, *cols, |_, _| {
                if role == "bias" {
                    rng.uniform(-0.5, 0.5)
                } else {
                    let m = rng.uniform(0.5, 1.5);
                    if rng.next_f64() < 0.5 {
                        -m
                    } else {
                        m
                    }
                }
            });
            net.set_param(&name, value).map_err(fail)?;
        }
    }
    Ok(())
}

/// Checks a bound net, `probe` then the layers `specs` (the last a tap, every dropout between
/// two taps), in a training pass on the batch `x`: its output and loss against the reference,
/// then every parameter's gradient and (when the probe learns) the input's against finite
/// differences. Returns what it compared.
fn check_net<N, L, M>(
    net: &Net<Init<N>, L>,
    probe: &Probe,
    specs: &[Spec],
    x: &Batch<M>,
    loss: LossKind,
    seed: u64,
) -> Result<Counts, TestCaseError>
where
    N: Shape,
    L: Chain<N>,
    M: Shape,
    Labels<Dyn>: TargetFor<<<L as Chain<N>>::Out as Shape>::Flat>,
    Batch<Dyn>: TargetFor<<<L as Chain<N>>::Out as Shape>::Flat>,
{
    let input = net.input().dims();
    let width: usize = net.output_dims().iter().product();
    let samples = x.samples();
    let mut rng = InitRng::new(seed, "targets");
    let (target, (loss32, grads)) = match loss {
        LossKind::CrossEntropy => {
            let labels: Vec<usize> = (0..samples)
                .map(|_| ((rng.next_f64() * width as f64) as usize).min(width - 1))
                .collect();
            let lazy = Labels::try_dynamic(width, labels.clone()).map_err(fail)?;
            let result = net.loss_and_grads(x, &lazy, CrossEntropy).map_err(fail)?;
            (Target::Labels(labels), result)
        }
        LossKind::Mse => {
            let t = Batch::try_from_fn_dyn(width, samples, |_, _| rng.uniform(-1.0, 1.0))
                .map_err(fail)?;
            let result = net.loss_and_grads(x, &t, Mse).map_err(fail)?;
            (Target::Values(columns(t.as_matrix())), result)
        }
    };
    let input_grad = probe.take();
    let seen: Vec<Option<DMatrix<f32>>> = specs
        .iter()
        .map(|s| match s {
            Spec::Tap(t) => t.take(),
            _ => None,
        })
        .collect();

    // The parameters: the probe's first (it is layer 0), then each layer's, named by its index.
    let mut named: Vec<(String, DMatrix<f32>)> = net
        .named_params()
        .map(|(name, m)| (name.to_string(), m.clone()))
        .collect();
    let mut analytic: Vec<(String, DMatrix<f32>)> = grads
        .named_grads()
        .map(|(name, m)| (name.to_string(), m.clone()))
        .collect();
    if probe.learns {
        prop_assert_eq!(&named[0].0, "0.weight");
        prop_assert!(analytic[0].1.iter().all(|&v| v == 0.0));
        named.remove(0);
        analytic.remove(0);
    }
    let mut reference = Reference::new(specs.to_vec(), input, columns(x.as_matrix()), target);
    let mut names = named.iter();
    for (l, spec) in specs.iter().enumerate() {
        for t in 0..spec.params() {
            let (name, value) = names.next().ok_or_else(|| fail("too few parameters"))?;
            let expected = format!("{}.{}", l + 1, if t == 0 { "weight" } else { "bias" });
            prop_assert_eq!(name, &expected);
            reference.params[l].push(row_major(value));
        }
        if let Spec::Dropout(p) = spec {
            let around = (
                l.checked_sub(1).and_then(|k| seen[k].as_ref()),
                seen.get(l + 1),
            );
            let (Some(before), Some(Some(after))) = around else {
                return Err(fail(format!("dropout {} is not between two taps", l + 1)));
            };
            reference.masks[l] = Some(read_mask(*p, before, after)?);
        }
    }
    prop_assert!(names.next().is_none(), "more parameters than the reference");
    let y32 = seen
        .last()
        .cloned()
        .flatten()
        .ok_or_else(|| fail("the net does not end with a tap"))?;

    let (ys, loss64, trace) = reference.run();
    near_a_kink(&trace)?;
    let mut counts = Counts::default();
    same_outputs(&y32, &ys, &mut counts)?;
    let loss_tol = OTOL * loss64.abs().max(1.0);
    let loss_err = (f64::from(loss32) - loss64).abs();
    counts.worst_output = counts.worst_output.max(loss_err / loss_tol);
    prop_assert!(
        loss_err <= loss_tol,
        "loss: lazynet {} against the f64 reference {}",
        loss32,
        loss64
    );

    let fd = reference.param_differences();
    let fd_input = match &input_grad {
        Some(_) => reference.input_differences(),
        None => Vec::new(),
    };
    let case = scale_of(
        fd.iter()
            .flatten()
            .flatten()
            .chain(fd_input.iter().flatten()),
    )
    .max(reference.target.output_gradient_scale(&ys));
    let mut analytic = analytic.iter();
    for tensor in fd.iter().flatten() {
        let (name, g) = analytic.next().ok_or_else(|| fail("too few gradients"))?;
        same_gradients(name, tensor, &row_major(g), case, &mut counts)?;
    }
    match input_grad {
        Some(dx) => {
            prop_assert!(
                probe.learns,
                "an input gradient reached a probe without a parameter"
            );
            for (n, (fd, dx)) in fd_input.iter().zip(columns(&dx)).enumerate() {
                let what = format!("input gradient, sample {n}");
                same_gradients(&what, fd, &dx, case, &mut counts)?;
            }
        }
        None => prop_assert!(!probe.learns, "no input gradient reached the probe"),
    }
    kinks_were_rare(&counts)?;
    report(&counts);
    Ok(counts)
}

/// With `GRADCHECK_NORM_REPORT` set, prints a case's largest errors relative to their
/// tolerances.
fn report(counts: &Counts) {
    if std::env::var_os("GRADCHECK_NORM_REPORT").is_some() {
        eprintln!(
            "gradcheck_norm: gradients {:.3e} of tolerance ({} values, {} left out), outputs {:.3e}",
            counts.worst, counts.checked, counts.skipped, counts.worst_output
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Inputs and nets.

/// `rows × samples` values drawn uniformly from `[-scale, scale)`.
fn uniform(rows: usize, samples: usize, scale: f32, seed: u64) -> DMatrix<f32> {
    let mut rng = InitRng::new(seed, "inputs");
    DMatrix::from_fn(rows, samples, |_, _| rng.uniform(-scale, scale))
}

fn act() -> impl Strategy<Value = Act> {
    prop_oneof![
        Just(Act::Relu),
        Just(Act::Sigmoid),
        Just(Act::Tanh),
        Just(Act::Identity)
    ]
}

/// Whether the probe learns (so that the input gradient is checked): three times in four.
fn learns() -> impl Strategy<Value = bool> {
    prop_oneof![3 => Just(true), 1 => Just(false)]
}

/// A dropout probability: the three of the brief, or any in [0, 0.9).
fn dropout_p() -> impl Strategy<Value = f32> {
    prop_oneof![Just(0.0f32), Just(0.3f32), Just(0.6f32), 0.0f32..0.9]
}

/// `Probe BatchNorm Dense(h) BatchNorm s1 s2 Dense(out) Tap` on flat inputs: the first batch
/// normalization sends its input gradient to the probe, the second one's output goes to the
/// run-time slots `s1` and `s2` (an activation there is fused into it).
type FlatBn = lazynet::Layers![
    Probe,
    BatchNorm,
    Dense<Dyn>,
    BatchNorm,
    Same,
    Same,
    Dense<Dyn>,
    Tap
];

/// A bound net and its layers as the reference computes them (after the probe).
type Checked<N, L> = (Net<Init<N>, L>, Vec<Spec>);

/// The flat batch-normalization net and its reference layers.
fn flat_bn(
    probe: &Probe,
    [n_in, h, out]: [usize; 3],
    [s1, s2]: [Same; 2],
    seed: u64,
) -> Result<Checked<Dyn, FlatBn>, TestCaseError> {
    let tap = Tap::default();
    let specs = vec![
        Spec::BatchNorm,
        Spec::Dense { out: h },
        Spec::BatchNorm,
        s1.spec(),
        s2.spec(),
        Spec::Dense { out },
        Spec::Tap(tap.clone()),
    ];
    let mut net = Net::new()
        .push(probe.clone())
        .push(BatchNorm::new())
        .push(Dense::dynamic(h))
        .push(BatchNorm::new())
        .push(s1)
        .push(s2)
        .push(Dense::dynamic(out))
        .push(tap)
        .seed(seed)
        .try_bind(n_in)
        .map_err(fail)?;
    randomize_norms(&mut net, &specs, seed)?;
    Ok((net, specs))
}

/// The conv layer of [`ImageBn`]: stride 1, dilation 1, run-time kernel and padding.
type Conv = Conv2d<Dyn, Dyn, U1, Dyn, U1>;

/// `Probe BatchNorm Conv BatchNorm s1 s2 Dropout-slot s3 Flatten Dense(classes) Tap` on
/// images: a batch normalization on the input image (its input gradient goes to the probe),
/// one after a convolution, feeding the run-time slots.
type ImageBn = lazynet::Layers![
    Probe,
    BatchNorm,
    Conv,
    BatchNorm,
    Same,
    Same,
    Same,
    Same,
    Flatten,
    Dense<Dyn>,
    Tap
];

/// The image batch-normalization net and its reference layers.
fn image_bn(
    probe: &Probe,
    [c, h, w]: [usize; 3],
    (out, k, p, bias): (usize, usize, usize, bool),
    slots: [Same; 4],
    classes: usize,
    seed: u64,
) -> Result<Checked<Image<Dyn, Dyn, Dyn>, ImageBn>, TestCaseError> {
    let tap = Tap::default();
    let mut specs = vec![
        Spec::BatchNorm,
        Spec::Conv { out, k, p, bias },
        Spec::BatchNorm,
    ];
    specs.extend(slots.iter().map(Same::spec));
    specs.extend([
        Spec::Flatten,
        Spec::Dense { out: classes },
        Spec::Tap(tap.clone()),
    ]);
    let conv: Conv = Conv2d::dynamic(out, k).padding_size(p);
    let conv = if bias { conv } else { conv.without_bias() };
    let [s1, s2, s3, s4] = slots;
    let mut net = Net::new()
        .push(probe.clone())
        .push(BatchNorm::new())
        .push(conv)
        .push(BatchNorm::new())
        .push(s1)
        .push(s2)
        .push(s3)
        .push(s4)
        .push(Flatten)
        .push(Dense::dynamic(classes))
        .push(tap)
        .seed(seed)
        .try_bind(Image::dynamic(c, h, w))
        .map_err(fail)?;
    randomize_norms(&mut net, &specs, seed)?;
    Ok((net, specs))
}

/// Every gradient of `a` and `b`, which must be the same net but for where a tap sits, agree
/// to `f32` rounding.
fn same_grads(a: &Grads, b: &Grads) -> Result<(), TestCaseError> {
    prop_assert_eq!(a.len(), b.len());
    for ((name, x), (other, y)) in a.named_grads().zip(b.named_grads()) {
        prop_assert_eq!(name, other);
        let scale = x.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
        for (u, v) in x.iter().zip(y.iter()) {
            prop_assert!(
                (u - v).abs() <= 1e-5 * scale,
                "{}: fused {} against unfused {}",
                name,
                u,
                v
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// BatchNorm on flat inputs, in training: both normalizations' weight, bias and input
    /// gradients (the first one's input gradient reaches the probe), with an activation fused
    /// into the second one (or a tap between them), both losses, 2 to 5 samples.
    #[test]
    fn batchnorm_flat_gradients(
        widths in [1usize..=5, 1usize..=5, 1usize..=4],
        a in act(),
        fused in any::<bool>(),
        samples in 2usize..=5,
        loss in loss_kind(),
        learns in learns(),
        seed in any::<u64>(),
    ) {
        let probe = Probe::new(learns);
        let slots = if fused { [Same::Act(a), Same::tap()] } else { [Same::tap(), Same::Act(a)] };
        let (net, specs) = flat_bn(&probe, widths, slots, seed)?;
        let x = Batch::<Dyn>::try_from_matrix(uniform(widths[0], samples, 1.0, seed)).map_err(fail)?;
        check_net(&net, &probe, &specs, &x, loss, seed)?;
    }

    /// BatchNorm on images (per channel, over samples × H × W), in training: on the input
    /// image and after a convolution with or without bias, the second fused with an
    /// activation, then a dropout between taps on the image, with random sizes (a batch of one
    /// sample when its images have two pixels or more).
    #[test]
    fn batchnorm_image_gradients(
        [c, h, w] in [1usize..=2, 1usize..=4, 1usize..=4],
        (out, k, p, bias) in (1usize..=3, 1usize..=3, 0usize..=1, any::<bool>()),
        a in act(),
        drop_p in dropout_p(),
        classes in 1usize..=3,
        samples in 1usize..=3,
        loss in loss_kind(),
        learns in learns(),
        seed in any::<u64>(),
    ) {
        prop_assume!(h + 2 * p >= k && w + 2 * p >= k);
        let (oh, ow) = (h + 2 * p + 1 - k, w + 2 * p + 1 - k);
        prop_assume!(samples * h * w >= 2 && samples * oh * ow >= 2);
        let probe = Probe::new(learns);
        let slots = [Same::Act(a), Same::tap(), Same::dropout(drop_p)?, Same::tap()];
        let (net, specs) = image_bn(&probe, [c, h, w], (out, k, p, bias), slots, classes, seed)?;
        let x = Batch::try_with_shape(Image::dynamic(c, h, w), uniform(c * h * w, samples, 1.0, seed))
            .map_err(fail)?;
        check_net(&net, &probe, &specs, &x, loss, seed)?;
    }

    /// BatchNorm followed by a ReLU, which the net fuses into the normalization's kernel: the
    /// gradients match the reference, and match those of the same net with a tap between the
    /// two (not fused), flat and on images.
    #[test]
    fn batchnorm_fused_relu_gradients(
        widths in [1usize..=5, 1usize..=5, 1usize..=4],
        [c, h, w] in [1usize..=2, 2usize..=4, 2usize..=4],
        (out, k) in (1usize..=3, 1usize..=3),
        samples in 2usize..=4,
        loss in loss_kind(),
        seed in any::<u64>(),
    ) {
        // Flat.
        let probe = Probe::new(true);
        let (fused, specs) = flat_bn(&probe, widths, [Same::Act(Act::Relu), Same::tap()], seed)?;
        let x = Batch::<Dyn>::try_from_matrix(uniform(widths[0], samples, 1.0, seed)).map_err(fail)?;
        check_net(&fused, &probe, &specs, &x, loss, seed)?;
        let (apart, _) = flat_bn(&Probe::new(true), widths, [Same::tap(), Same::Act(Act::Relu)], seed)?;
        let t = Batch::try_from_fn_dyn(widths[2], samples, |f, s| (f + s) as f32 / 3.0).map_err(fail)?;
        let (_, g1) = fused.loss_and_grads(&x, &t, Mse).map_err(fail)?;
        let (_, g2) = apart.loss_and_grads(&x, &t, Mse).map_err(fail)?;
        same_grads(&g1, &g2)?;

        // Images, padding k / 2 (the convolution keeps the size).
        let probe = Probe::new(true);
        let geometry = (out, k, k / 2, true);
        let relu_first = [Same::Act(Act::Relu), Same::tap(), Same::dropout(0.0)?, Same::tap()];
        let (fused, specs) = image_bn(&probe, [c, h, w], geometry, relu_first, 2, seed)?;
        let x = Batch::try_with_shape(Image::dynamic(c, h, w), uniform(c * h * w, samples, 1.0, seed))
            .map_err(fail)?;
        check_net(&fused, &probe, &specs, &x, loss, seed)?;
        let tap_first = [Same::tap(), Same::Act(Act::Relu), Same::dropout(0.0)?, Same::tap()];
        let (apart, _) = image_bn(&Probe::new(true), [c, h, w], geometry, tap_first, 2, seed)?;
        let t = Batch::try_from_fn_dyn(2, samples, |f, s| (f + s) as f32 / 3.0).map_err(fail)?;
        let (_, g1) = fused.loss_and_grads(&x, &t, Mse).map_err(fail)?;
        let (_, g2) = apart.loss_and_grads(&x, &t, Mse).map_err(fail)?;
        same_grads(&g1, &g2)?;
    }
}

/// `Probe LayerNorm Dense(h) LayerNorm s Dense(out) Tap`.
type LnNet = lazynet::Layers![
    Probe,
    LayerNorm,
    Dense<Dyn>,
    LayerNorm,
    Same,
    Dense<Dyn>,
    Tap
];

/// `Probe Tap Dropout Tap Dense(h) s Tap Dropout Tap Dense(out) Tap`, both dropouts in
/// run-time slots.
type DropNet = lazynet::Layers![
    Probe,
    Tap,
    Same,
    Tap,
    Dense<Dyn>,
    Same,
    Tap,
    Same,
    Tap,
    Dense<Dyn>,
    Tap
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// LayerNorm: on the input (its input gradient reaches the probe) and after a dense layer,
    /// fused with an activation; widths from 1 (a single feature normalizes to its bias),
    /// batches from 1 sample.
    #[test]
    fn layernorm_gradients(
        [n_in, h, out] in [1usize..=6, 1usize..=6, 1usize..=4],
        a in act(),
        samples in 1usize..=4,
        loss in loss_kind(),
        learns in learns(),
        seed in any::<u64>(),
    ) {
        let probe = Probe::new(learns);
        let tap = Tap::default();
        let specs = vec![
            Spec::LayerNorm,
            Spec::Dense { out: h },
            Spec::LayerNorm,
            Spec::Act(a),
            Spec::Dense { out },
            Spec::Tap(tap.clone()),
        ];
        let mut net: Net<Init<Dyn>, LnNet> = Net::new()
            .push(probe.clone())
            .push(LayerNorm::new())
            .push(Dense::dynamic(h))
            .push(LayerNorm::new())
            .push(Same::Act(a))
            .push(Dense::dynamic(out))
            .push(tap)
            .seed(seed)
            .try_bind(n_in)
            .map_err(fail)?;
        randomize_norms(&mut net, &specs, seed)?;
        let x = Batch::<Dyn>::try_from_matrix(uniform(n_in, samples, 1.0, seed)).map_err(fail)?;
        check_net(&net, &probe, &specs, &x, loss, seed)?;
    }

    /// Dropout in a training pass: on the input (its input gradient reaches the probe) and
    /// after a dense layer and an activation, each with its own probability (0, 0.3, 0.6 or
    /// any below 0.9), the masks read from lazynet's taps; gradients through the same mask as
    /// the forward pass.
    #[test]
    fn dropout_gradients(
        [n_in, h, out] in [1usize..=6, 1usize..=6, 1usize..=4],
        a in act(),
        [p1, p2] in [dropout_p(), dropout_p()],
        samples in 1usize..=4,
        loss in loss_kind(),
        learns in learns(),
        seed in any::<u64>(),
    ) {
        let probe = Probe::new(learns);
        let taps: [Tap; 5] = Default::default();
        let specs = vec![
            Spec::Tap(taps[0].clone()),
            Spec::Dropout(p1),
            Spec::Tap(taps[1].clone()),
            Spec::Dense { out: h },
            Spec::Act(a),
            Spec::Tap(taps[2].clone()),
            Spec::Dropout(p2),
            Spec::Tap(taps[3].clone()),
            Spec::Dense { out },
            Spec::Tap(taps[4].clone()),
        ];
        let [t0, t1, t2, t3, t4] = taps;
        let net: Net<Init<Dyn>, DropNet> = Net::new()
            .push(probe.clone())
            .push(t0)
            .push(Same::dropout(p1)?)
            .push(t1)
            .push(Dense::dynamic(h))
            .push(Same::Act(a))
            .push(t2)
            .push(Same::dropout(p2)?)
            .push(t3)
            .push(Dense::dynamic(out))
            .push(t4)
            .seed(seed)
            .try_bind(n_in)
            .map_err(fail)?;
        let x = Batch::<Dyn>::try_from_matrix(uniform(n_in, samples, 1.0, seed)).map_err(fail)?;
        check_net(&net, &probe, &specs, &x, loss, seed)?;
    }
}

/// Dropout zeroes about a fraction `p` of many values, keeps the others scaled by `1/(1 − p)`,
/// and draws the same mask in two passes of one step: the mask read by the gradient checks is
/// the one the layer promises.
#[test]
fn dropout_drops_a_fraction_p() {
    let (features, samples) = (200, 50);
    for p in [0.1f32, 0.3, 0.6, 0.9] {
        let before = Tap::default();
        let after = Tap::default();
        let net = Net::new()
            .push(before.clone())
            .push(Dropout::new(p).unwrap())
            .push(after.clone())
            .push(Dense::dynamic(1))
            .seed(5)
            .try_bind(features)
            .unwrap();
        let x = Batch::<Dyn>::try_from_matrix(uniform(features, samples, 1.0, 9)).unwrap();
        let t = Batch::try_from_fn_dyn(1, samples, |_, _| 0.0).unwrap();
        net.loss_and_grads(&x, &t, Mse).unwrap();
        let mask = read_mask(p, &before.take().unwrap(), &after.take().unwrap()).unwrap();
        let n = (features * samples) as f64;
        let dropped = mask.iter().flatten().filter(|k| !**k).count() as f64;
        // Within 5 standard deviations of a binomial count.
        let sd = (n * f64::from(p) * (1.0 - f64::from(p))).sqrt();
        assert!(
            (dropped - n * f64::from(p)).abs() <= 5.0 * sd,
            "p {p}: {dropped} of {n} dropped"
        );
        net.loss_and_grads(&x, &t, Mse).unwrap();
        let again = read_mask(p, &before.take().unwrap(), &after.take().unwrap()).unwrap();
        assert_eq!(mask, again, "p {p}: one step, one mask");
    }
}
