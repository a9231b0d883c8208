//! Finite-difference checks of every layer kind's backward pass, and of whole nets.
//!
//! lazynet computes in `f32`, whose finite differences are too noisy to check a gradient to more
//! than two or three digits. So the check runs in `f64`, against a reference written here: a
//! forward pass per layer kind in plain loops, from PyTorch's definitions (`nn.Linear`;
//! `nn.Conv2d` as a cross-correlation with zero padding, weight `[out, in, k, k]`;
//! `nn.MaxPool2d` padded with −∞, the first maximum taking the gradient; `nn.AvgPool2d` with
//! `count_include_pad=True`, divided by `k·k`; the activations, among them `nn.LeakyReLU(slope)`,
//! `nn.GELU()` with the exact erf and `nn.Softmax(dim=1)` over a sample's features), and the
//! two losses (`nn.CrossEntropyLoss()` and `nn.MSELoss()`, both means).
//!
//! Each case:
//! 1. binds a lazynet net and reads its parameters and inputs, widened exactly to `f64`;
//! 2. checks that the reference's outputs and loss agree with lazynet's forward pass and loss to
//!    `f32` precision, which makes the reference trustworthy (it computes what lazynet computes);
//! 3. computes central finite differences, in `f64`, of the reference loss with respect to every
//!    parameter and every input value;
//! 4. compares them with lazynet's analytic gradients: the parameters' from
//!    `Net::loss_and_grads`, the input's from `Kernel::backward`, called directly for the layers
//!    without parameters and, for the others (whose `Param`s cannot be made outside the crate),
//!    through a [`Probe`] layer put first in the net, which records the gradient that the next
//!    layer's backward pass sends it.
//!
//! # Composite nets
//! Residual blocks and tied layers ([`Composite`]) are checked the same way against a reference
//! that nests: a [`Block`] is a layer, a place of a tied set, or a residual block (`x + body(x)`
//! or `body(x) + projection(x)`). Its parameter sets are numbered and named as lazynet names them
//! (`2.0.weight`, `2.downsample.0.weight`; a tied set once, under its first place), which the
//! check compares too; a finite difference moves a tied value at every place at once, so it is
//! the sum over the places that lazynet's gradient must match, and the input gradient of a net
//! that starts with a residual block is the sum over both branches. The activations of these
//! tests are chosen at run time ([`AnyAct`]), so each test compiles one net.
//!
//! # Kinks
//! ReLU, the leaky ReLU and max pooling are not differentiable everywhere. A value within
//! [`MARGIN`] (1e-4) of a kink (a ReLU or leaky ReLU input near 0, the two largest values of a max-pooling window nearly equal) could
//! be crossed by a finite-difference step, or decided differently in `f32` and `f64`; a case
//! with one is rejected (`prop_assume`: about 1 case in 1400 while this was written), and the
//! direct tests draw inputs that have none (magnitudes of at least 0.01 before a ReLU, values
//! spread at least `1/n` apart before a max pooling). Values that are exactly equal by
//! construction (ReLU's zeros; a convolution's outputs that see only padding) are no kink: they
//! move together, and every tie rule gives them the same gradient. As a second guard, each
//! finite difference checks that neither step changed a ReLU's sign or a window's winner; one
//! that did is left out (none was while this was written), and a case may leave out at most a
//! tenth. The tie rule itself, which no finite difference sees, has a test of its own.
//!
//! # Tolerances
//! The reference's outputs and loss must agree with lazynet's within `1e-5·max(1, |value|)`:
//! the largest difference seen was 4e-7, `f32` rounding.
//!
//! A gradient value passes when `|fd − analytic| ≤ 1e-3·|fd| + 1e-5·G`, where `G`, the scale of
//! the case's gradients, is the largest of its finite differences and of `Σ |∂L/∂y|` over the
//! batch's outputs `y` (every gradient is made from those; a bias's gradient is their sum):
//! * the finite difference is exact to about 1e-9 relative: the step [`H`] = 1e-6 makes the
//!   truncation error (`H²/6` times the third derivative) about 1e-13, the `f64` round-off
//!   (`2⁻⁵²·|L|/H`) about 1e-10;
//! * lazynet's analytic gradient is an `f32` computation: sums of at most a few hundred
//!   products, each rounded to 2⁻²⁴ ≈ 6e-8 relative, give errors of order 1e-7 to 1e-6 of the
//!   value, or of `G` for a value that cancels to about 0 (the bias of a convolution with one
//!   output channel under cross-entropy: exactly 0, lazynet's `f32` sum gives 6e-7 for `G` ≈ 2);
//! * over 30 runs of this module (1.2 million values) the largest error was 3% of its tolerance,
//!   and a wrong backward pass (a missing term, a wrong index or factor) makes errors of the
//!   order of the gradient itself: a hundred times the tolerance and more.
//!
//! The looser `1e-3·max(1, |fd|)` was not used: these gradients are means over a batch, mostly
//! 1e-3 to 1e-1, so it would let errors of their own size through.

use std::sync::{Arc, Mutex};

use lazynet::layer::{
    Activation, Avg, DeclaresInput, Fault, Infer, Kernel, Layer, LayerOn, Max, Param, PartialShape,
    Pool2d,
};
use lazynet::list::{Chain, Follows};
use lazynet::nalgebra::DMatrix;
use lazynet::prelude::*;
use lazynet::rules::Proven;
use lazynet::train::TargetFor;
use proptest::prelude::*;

/// The finite-difference step.
const H: f64 = 1e-6;

/// How far from a kink every value must be.
const MARGIN: f64 = 1e-4;

/// The gradient tolerance relative to the value.
const RTOL: f64 = 1e-3;

/// The gradient tolerance relative to the scale of the case's gradients.
const GTOL: f64 = 1e-5;

// ---------------------------------------------------------------------------------------------
// The reference, in f64.

/// An element-wise function.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Act {
    Relu,
    Sigmoid,
    Tanh,
    Identity,
    /// `x > 0 ? x : slope·x`, the slope as lazynet's layer holds it.
    LeakyRelu(f32),
    /// `x·Φ(x) = x/2·(1 + erf(x/√2))`.
    Gelu,
}

impl Act {
    fn at(self, v: f64) -> f64 {
        match self {
            Act::Relu => v.max(0.0),
            Act::Sigmoid => 1.0 / (1.0 + (-v).exp()),
            Act::Tanh => v.tanh(),
            Act::Identity => v,
            Act::LeakyRelu(slope) => {
                if v > 0.0 {
                    v
                } else {
                    v * f64::from(slope)
                }
            }
            Act::Gelu => 0.5 * v * (1.0 + libm::erf(v * std::f64::consts::FRAC_1_SQRT_2)),
        }
    }

    /// Whether it has a kink at 0.
    fn kinked(self) -> bool {
        matches!(self, Act::Relu | Act::LeakyRelu(_))
    }
}

/// A layer, as the reference computes it.
#[derive(Clone, Copy, Debug)]
enum Spec {
    Dense {
        out: usize,
    },
    Conv {
        out: usize,
        k: usize,
        s: usize,
        p: usize,
        d: usize,
        bias: bool,
    },
    Pool {
        max: bool,
        k: usize,
        s: usize,
        p: usize,
    },
    Act(Act),
    /// The softmax over a flat sample's features.
    Softmax,
    Flatten,
}

/// PyTorch's output size along one axis (the layer's checks made it at least 1).
fn out_size(x: usize, k: usize, s: usize, p: usize, d: usize) -> usize {
    (x + 2 * p - d * (k - 1) - 1) / s + 1
}

/// What a forward pass met on its way: how close it came to a kink, and which side of each
/// kink it took (a ReLU's sign, a window's winner).
#[derive(Debug)]
struct Trace {
    margin: f64,
    pattern: Vec<u32>,
}

impl Trace {
    fn new() -> Self {
        Trace {
            margin: f64::INFINITY,
            pattern: Vec::new(),
        }
    }
}

impl Spec {
    /// The number of parameter tensors.
    fn params(&self) -> usize {
        match self {
            Spec::Dense { .. } => 2,
            Spec::Conv { bias, .. } => 1 + usize::from(*bias),
            _ => 0,
        }
    }

    fn out_shape(&self, input: &[usize]) -> Vec<usize> {
        match (*self, input) {
            (Spec::Dense { out }, _) => vec![out],
            (
                Spec::Conv {
                    out, k, s, p, d, ..
                },
                &[_, h, w],
            ) => {
                vec![out, out_size(h, k, s, p, d), out_size(w, k, s, p, d)]
            }
            (Spec::Pool { k, s, p, .. }, &[c, h, w]) => {
                vec![c, out_size(h, k, s, p, 1), out_size(w, k, s, p, 1)]
            }
            (Spec::Act(_), _) | (Spec::Softmax, &[_]) => input.to_vec(),
            (Spec::Flatten, _) => vec![input.iter().product()],
            _ => panic!("{self:?} does not take {input:?}"),
        }
    }

    /// One sample through the layer. `params` are row-major: a dense weight `[out][in]`, a
    /// convolution weight `[out][in][k][k]`.
    fn forward(&self, params: &[Vec<f64>], x: &[f64], shape: &[usize], tr: &mut Trace) -> Vec<f64> {
        let out_shape = self.out_shape(shape);
        match *self {
            Spec::Dense { out } => {
                let n = x.len();
                (0..out)
                    .map(|o| {
                        let row = &params[0][o * n..(o + 1) * n];
                        params[1][o] + row.iter().zip(x).map(|(w, v)| w * v).sum::<f64>()
                    })
                    .collect()
            }
            Spec::Conv {
                out, k, s, p, d, ..
            } => {
                let [c, h, w] = [shape[0], shape[1], shape[2]];
                let (oh, ow) = (out_shape[1], out_shape[2]);
                let mut y = vec![0.0; out * oh * ow];
                for o in 0..out {
                    for i in 0..oh {
                        for j in 0..ow {
                            let mut acc = params.get(1).map_or(0.0, |b| b[o]);
                            for ci in 0..c {
                                for ki in 0..k {
                                    let r = (i * s + ki * d) as isize - p as isize;
                                    if r < 0 || r >= h as isize {
                                        continue;
                                    }
                                    for kj in 0..k {
                                        let q = (j * s + kj * d) as isize - p as isize;
                                        if q < 0 || q >= w as isize {
                                            continue;
                                        }
                                        let v = x[(ci * h + r as usize) * w + q as usize];
                                        acc += params[0][((o * c + ci) * k + ki) * k + kj] * v;
                                    }
                                }
                            }
                            y[(o * oh + i) * ow + j] = acc;
                        }
                    }
                }
                y
            }
            Spec::Pool { max, k, s, p } => {
                let [c, h, w] = [shape[0], shape[1], shape[2]];
                let (oh, ow) = (out_shape[1], out_shape[2]);
                let mut y = vec![0.0; c * oh * ow];
                for ci in 0..c {
                    for i in 0..oh {
                        for j in 0..ow {
                            // The padding is −∞ for the maximum, 0 for the mean.
                            let (mut best, mut at, mut sum) = (f64::NEG_INFINITY, 0, 0.0);
                            let mut values = Vec::with_capacity(k * k);
                            for ki in 0..k {
                                let r = (i * s + ki) as isize - p as isize;
                                for kj in 0..k {
                                    let q = (j * s + kj) as isize - p as isize;
                                    if r < 0 || q < 0 || r >= h as isize || q >= w as isize {
                                        continue;
                                    }
                                    let index = (ci * h + r as usize) * w + q as usize;
                                    let v = x[index];
                                    values.push(v);
                                    sum += v;
                                    if v > best {
                                        (best, at) = (v, index);
                                    }
                                }
                            }
                            y[(ci * oh + i) * ow + j] = if max {
                                tr.pattern.push(at as u32);
                                // The runner-up: the largest value below the maximum (values
                                // equal to it are equal by construction, see the module doc).
                                let second = values
                                    .iter()
                                    .copied()
                                    .filter(|&v| v < best)
                                    .fold(f64::NEG_INFINITY, f64::max);
                                tr.margin = tr.margin.min(best - second);
                                best
                            } else {
                                sum / (k * k) as f64
                            };
                        }
                    }
                }
                y
            }
            Spec::Act(a) => x
                .iter()
                .map(|&v| {
                    if a.kinked() {
                        tr.pattern.push(u32::from(v > 0.0));
                        // An exact 0 is a value that depends on nothing (a convolution's output
                        // that sees only padding, without bias): no kink.
                        if v != 0.0 {
                            tr.margin = tr.margin.min(v.abs());
                        }
                    }
                    a.at(v)
                })
                .collect(),
            Spec::Softmax => {
                let max = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = x.iter().map(|v| (v - max).exp()).collect();
                let sum: f64 = e.iter().sum();
                e.iter().map(|v| v / sum).collect()
            }
            Spec::Flatten => x.to_vec(),
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
    Values(Vec<Vec<f64>>),
    /// `Σ g·y`: the loss whose output gradient is `g`, for checking a kernel on its own.
    Linear(Vec<Vec<f64>>),
}

impl Target {
    /// The loss of sample `n`, whose output is `y`, before the mean.
    fn sample_loss(&self, n: usize, y: &[f64]) -> f64 {
        match self {
            Target::Labels(labels) => {
                let max = y.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = y.iter().map(|v| (v - max).exp()).sum();
                max + sum.ln() - y[labels[n]]
            }
            Target::Values(t) => y.iter().zip(&t[n]).map(|(a, b)| (a - b) * (a - b)).sum(),
            Target::Linear(g) => y.iter().zip(&g[n]).map(|(a, b)| a * b).sum(),
        }
    }

    /// What the sum of the sample losses is divided by, for `samples` outputs of `width`
    /// values.
    fn divisor(&self, samples: usize, width: usize) -> f64 {
        match self {
            Target::Labels(_) => samples as f64,
            Target::Values(_) => (samples * width) as f64,
            Target::Linear(_) => 1.0,
        }
    }

    /// `Σ |∂L/∂y|` over every output value `ys` of the batch, the sum of the sample losses
    /// divided by `divisor`: the scale every gradient of the net is made from (a bias's
    /// gradient is a sum of these).
    fn output_gradient_scale(&self, ys: &[Vec<f64>], divisor: f64) -> f64 {
        let total: f64 = ys
            .iter()
            .enumerate()
            .map(|(n, y)| match self {
                Target::Labels(labels) => {
                    let max = y.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let sum: f64 = y.iter().map(|v| (v - max).exp()).sum();
                    let p = |j: usize| (y[j] - max).exp() / sum;
                    (0..y.len())
                        .map(|j| (p(j) - f64::from(u8::from(j == labels[n]))).abs())
                        .sum::<f64>()
                }
                Target::Values(t) => y.iter().zip(&t[n]).map(|(a, b)| 2.0 * (a - b).abs()).sum(),
                Target::Linear(g) => g[n].iter().map(|v| v.abs()).sum(),
            })
            .sum();
        total / divisor
    }
}

/// A net as the reference computes it, with its parameters and a batch.
struct Reference {
    specs: Vec<Spec>,
    /// The input shape of every layer, then the output shape.
    shapes: Vec<Vec<usize>>,
    /// Per layer, its parameter tensors, row-major.
    params: Vec<Vec<Vec<f64>>>,
    /// The batch, one vector per sample.
    xs: Vec<Vec<f64>>,
    target: Target,
}

impl Reference {
    fn new(specs: Vec<Spec>, input: Vec<usize>, xs: Vec<Vec<f64>>, target: Target) -> Self {
        let mut shapes = vec![input];
        for spec in &specs {
            let next = spec.out_shape(shapes.last().unwrap());
            shapes.push(next);
        }
        let params = specs.iter().map(|_| Vec::new()).collect();
        Reference {
            specs,
            shapes,
            params,
            xs,
            target,
        }
    }

    /// Sample `x`, the input of layer `from`, through the layers from there on.
    fn forward_from(&self, from: usize, x: &[f64], tr: &mut Trace) -> Vec<f64> {
        let mut cur = x.to_vec();
        for l in from..self.specs.len() {
            cur = self.specs[l].forward(&self.params[l], &cur, &self.shapes[l], tr);
        }
        cur
    }

    /// The loss of sample `n`, before the mean.
    fn sample_loss(&self, n: usize, y: &[f64]) -> f64 {
        self.target.sample_loss(n, y)
    }

    /// What the sum of the sample losses is divided by.
    fn divisor(&self) -> f64 {
        let width = self.shapes.last().unwrap().iter().product();
        self.target.divisor(self.xs.len(), width)
    }

    /// `Σ |∂L/∂y|` over every output value of the batch: the scale every gradient of the net
    /// is made from (a bias's gradient is a sum of these).
    fn output_gradient_scale(&self, ys: &[Vec<f64>]) -> f64 {
        self.target.output_gradient_scale(ys, self.divisor())
    }

    /// Every sample's output, the loss, and the smallest distance to a kink.
    fn run(&self) -> (Vec<Vec<f64>>, f64, f64) {
        let mut tr = Trace::new();
        let ys: Vec<Vec<f64>> = self
            .xs
            .iter()
            .map(|x| self.forward_from(0, x, &mut tr))
            .collect();
        let total: f64 = ys
            .iter()
            .enumerate()
            .map(|(n, y)| self.sample_loss(n, y))
            .sum();
        (ys, total / self.divisor(), tr.margin)
    }

    /// The inputs of layer `l`, one per sample.
    fn inputs_of(&self, l: usize) -> Vec<Vec<f64>> {
        self.xs
            .iter()
            .map(|x| {
                let mut cur = x.clone();
                for k in 0..l {
                    cur = self.specs[k].forward(
                        &self.params[k],
                        &cur,
                        &self.shapes[k],
                        &mut Trace::new(),
                    );
                }
                cur
            })
            .collect()
    }

    /// The loss of the batch whose layer-`l` inputs are `inputs`, and whether every sample took
    /// the sides of the kinks in `patterns`.
    fn loss_from(&self, l: usize, inputs: &[Vec<f64>], patterns: &[Vec<u32>]) -> (f64, bool) {
        let mut total = 0.0;
        let mut same = true;
        for (n, (x, pattern)) in inputs.iter().zip(patterns).enumerate() {
            let mut tr = Trace::new();
            let y = self.forward_from(l, x, &mut tr);
            same &= tr.pattern == *pattern;
            total += self.sample_loss(n, &y);
        }
        (total / self.divisor(), same)
    }

    /// The central finite difference of the loss with respect to every parameter value, per
    /// layer and tensor, row-major; NaN where a step crossed a kink.
    fn param_differences(&mut self) -> Vec<Vec<Vec<f64>>> {
        let mut all = Vec::new();
        for l in 0..self.specs.len() {
            let inputs = self.inputs_of(l);
            let patterns: Vec<Vec<u32>> = inputs
                .iter()
                .map(|x| {
                    let mut tr = Trace::new();
                    self.forward_from(l, x, &mut tr);
                    tr.pattern
                })
                .collect();
            let mut layer = Vec::new();
            for t in 0..self.params[l].len() {
                let mut fd = Vec::with_capacity(self.params[l][t].len());
                for j in 0..self.params[l][t].len() {
                    let v = self.params[l][t][j];
                    self.params[l][t][j] = v + H;
                    let (plus, same_plus) = self.loss_from(l, &inputs, &patterns);
                    self.params[l][t][j] = v - H;
                    let (minus, same_minus) = self.loss_from(l, &inputs, &patterns);
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

    /// The central finite difference of the loss with respect to every input value, per sample;
    /// NaN where a step crossed a kink.
    fn input_differences(&self) -> Vec<Vec<f64>> {
        let d = self.divisor();
        self.xs
            .iter()
            .enumerate()
            .map(|(n, x)| {
                let mut base = Trace::new();
                self.forward_from(0, x, &mut base);
                let mut x = x.clone();
                (0..x.len())
                    .map(|i| {
                        let v = x[i];
                        let at = |value: f64, x: &mut Vec<f64>| {
                            x[i] = value;
                            let mut tr = Trace::new();
                            let y = self.forward_from(0, x, &mut tr);
                            (self.sample_loss(n, &y), tr.pattern == base.pattern)
                        };
                        let (plus, same_plus) = at(v + H, &mut x);
                        let (minus, same_minus) = at(v - H, &mut x);
                        x[i] = v;
                        if same_plus && same_minus {
                            (plus - minus) / (2.0 * H * d)
                        } else {
                            f64::NAN
                        }
                    })
                    .collect()
            })
            .collect()
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
fn columns(m: &DMatrix<f32>) -> Vec<Vec<f64>> {
    m.column_iter()
        .map(|c| c.iter().map(|&v| f64::from(v)).collect())
        .collect()
}

/// Checks lazynet's forward output (`features × samples`) against the reference's.
fn same_outputs(
    what: &str,
    lazynet: &DMatrix<f32>,
    reference: &[Vec<f64>],
) -> Result<(), TestCaseError> {
    prop_assert_eq!(lazynet.ncols(), reference.len(), "{}: samples", what);
    for (n, (a, b)) in lazynet.column_iter().zip(reference).enumerate() {
        prop_assert_eq!(a.len(), b.len(), "{}: output size", what);
        for (i, (&a, &b)) in a.iter().zip(b).enumerate() {
            prop_assert!(
                (f64::from(a) - b).abs() <= 1e-5 * b.abs().max(1.0),
                "{}: output {} of sample {}: lazynet {} against the f64 reference {}",
                what,
                i,
                n,
                a,
                b
            );
        }
    }
    Ok(())
}

/// Counts of what a case compared.
#[derive(Default, Debug)]
struct Counts {
    checked: usize,
    skipped: usize,
}

/// The largest finite difference, in magnitude: the scale of a gradient.
fn scale_of<'a>(fd: impl IntoIterator<Item = &'a f64>) -> f64 {
    fd.into_iter()
        .filter(|v| v.is_finite())
        .fold(0.0f64, |m, v| m.max(v.abs()))
}

/// Checks analytic gradient values against finite differences (NaN: left out); `case` is the
/// scale of the case's gradients (see the module's doc).
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

/// Rejects a case whose forward pass came within [`MARGIN`] of a kink.
fn near_a_kink(margin: f64) -> Result<(), TestCaseError> {
    if margin < MARGIN {
        return Err(TestCaseError::reject(format!(
            "a value lies {margin:e} from a kink"
        )));
    }
    Ok(())
}

fn fail(e: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(e.to_string())
}

// ---------------------------------------------------------------------------------------------
// Kernels on their own: the layers without parameters.

/// Checks the kernel of `layer` (no parameters) on the batch `x` of shape `input`: its forward
/// pass against the reference's `spec`, and its input gradient, by `Kernel::backward` for a
/// random output gradient `g`, against finite differences of `Σ g·y`.
fn check_kernel(
    layer: &dyn Layer,
    spec: Spec,
    input: &[usize],
    x: &DMatrix<f32>,
    seed: u64,
) -> Result<(), TestCaseError> {
    let out = layer
        .output_shape(Some(&PartialShape::from_dims(input)))
        .map_err(|f| fail(format!("{f:?}")))?
        .and_then(|s| s.known())
        .ok_or_else(|| fail("no output shape"))?;
    prop_assert_eq!(&out, &spec.out_shape(input));
    let kernel = layer.kernel(input, &out);
    let len: usize = out.iter().product();
    let mut y = DMatrix::zeros(len, x.ncols());
    kernel
        .forward(&[], x, &mut y, Activation::Identity)
        .map_err(fail)?;
    let mut rng = InitRng::new(seed, "output gradient");
    let g = DMatrix::from_fn(len, x.ncols(), |_, _| rng.uniform(-1.0, 1.0));
    let mut dx = DMatrix::zeros(x.nrows(), x.ncols());
    kernel
        .backward(&[], x, &y, &g, &mut [], Some(&mut dx))
        .map_err(fail)?;

    let reference = Reference::new(
        vec![spec],
        input.to_vec(),
        columns(x),
        Target::Linear(columns(&g)),
    );
    let (ys, _, margin) = reference.run();
    near_a_kink(margin)?;
    same_outputs(layer.kind(), &y, &ys)?;
    let fd = reference.input_differences();
    let case = scale_of(fd.iter().flatten()).max(reference.output_gradient_scale(&ys));
    let mut counts = Counts::default();
    for (n, (fd, dx)) in fd.iter().zip(columns(&dx)).enumerate() {
        let what = format!("{} input gradient, sample {n}", layer.kind());
        same_gradients(&what, fd, &dx, case, &mut counts)?;
    }
    kinks_were_rare(&counts)
}

// ---------------------------------------------------------------------------------------------
// Nets.

/// A layer that passes its input through and records the gradient that reaches it. Put first
/// in a net, it receives the gradient of the loss with respect to the net's input, as computed
/// by the next layer's `Kernel::backward`.
///
/// A net computes no input gradient for the layers before its first parameter, so a probe that
/// `learns` owns one parameter (`0.weight`, of shape `[1]`, ignored, with a zero gradient); one
/// that does not owns none, and leaves the next layer to run as a net's first layer does,
/// without an input gradient.
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

impl<Prev> Follows<Prev> for Probe {
    type Known = Prev;
}

impl DeclaresInput for Probe {
    type Input = Infer;
}

impl<In: Shape, Known> LayerOn<In, Known> for Probe {
    type Out = In;
    type Checks = Proven;
}

/// One of the element-wise activation layers, chosen at run time: it delegates to lazynet's own
/// layer, so the net gets that layer's kernel (and fuses it as it fuses that layer), while a
/// test's net has one type whatever activations it draws. (Every combination of activation
/// types made the composite tests below compile 64 nets each, and rustc needed over 12 GB for
/// them.)
#[derive(Clone, Copy, Debug)]
struct AnyAct(Act);

impl AnyAct {
    fn layer(self) -> Box<dyn Layer> {
        match self.0 {
            Act::Relu => Box::new(Relu),
            Act::Sigmoid => Box::new(Sigmoid),
            Act::Tanh => Box::new(Tanh),
            Act::Identity => Box::new(Identity),
            Act::LeakyRelu(slope) => Box::new(LeakyRelu::new(slope)),
            Act::Gelu => Box::new(Gelu),
        }
    }
}

impl Layer for AnyAct {
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

impl<Prev> Follows<Prev> for AnyAct {
    type Known = Prev;
}

impl DeclaresInput for AnyAct {
    type Input = Infer;
}

impl<In: Shape, Known> LayerOn<In, Known> for AnyAct {
    type Out = In;
    type Checks = Proven;
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

/// Checks a bound net, `probe` then the layers `specs`, on the batch `x`: forward pass and loss
/// against the reference, then every parameter's gradient and (when the probe learns) the
/// input's against finite differences.
fn check_net<N, L, M>(
    net: &Net<Init<N>, L>,
    probe: &Probe,
    specs: Vec<Spec>,
    x: &Batch<M>,
    loss: LossKind,
    seed: u64,
) -> Result<(), TestCaseError>
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
    let y32 = net.try_forward(x).map_err(fail)?;

    // The parameters: the probe's first (it is layer 0), then each layer's, named by its index.
    let first = 1;
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
    let mut reference = Reference::new(specs.clone(), input, columns(x.as_matrix()), target);
    let mut names = named.iter();
    for (l, spec) in specs.iter().enumerate() {
        for t in 0..spec.params() {
            let (name, value) = names.next().ok_or_else(|| fail("too few parameters"))?;
            let expected = format!("{}.{}", l + first, if t == 0 { "weight" } else { "bias" });
            prop_assert_eq!(name, &expected);
            reference.params[l].push(row_major(value));
        }
    }
    prop_assert!(names.next().is_none(), "more parameters than the reference");

    let (ys, loss64, margin) = reference.run();
    near_a_kink(margin)?;
    same_outputs("net", y32.as_matrix(), &ys)?;
    prop_assert!(
        (f64::from(loss32) - loss64).abs() <= 1e-5 * loss64.abs().max(1.0),
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
    .max(reference.output_gradient_scale(&ys));
    let mut counts = Counts::default();
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
    kinks_were_rare(&counts)
}

// ---------------------------------------------------------------------------------------------
// Composite nets: residual blocks and tied layers.

/// A part of a composite net, as the reference computes it.
#[derive(Clone, Debug)]
enum Block {
    /// A layer with parameters of its own.
    Layer(Spec),
    /// A place of the tied set `id`: its first place makes the parameters, every later place
    /// computes with them, and their gradient is the sum over the places (PyTorch's autograd).
    Tied(usize, Spec),
    /// `body(x) + x`, or `body(x) + projection(x)` with a projection on the skip path.
    Residual(Vec<Block>, Option<Vec<Block>>),
}

/// A part as the reference runs it: a layer computes with the parameter set `set`.
#[derive(Clone, Debug)]
enum Part {
    Layer {
        spec: Spec,
        set: usize,
    },
    Residual {
        body: Vec<Part>,
        projection: Option<Vec<Part>>,
    },
}

/// A composite net as the reference computes it, with its parameters and a batch. A parameter
/// set is a layer's tensors, shared by every place of a tie; sets are numbered in the order
/// their first places run (a block's body, then its projection), which is the order of
/// `named_params`.
struct Composite {
    parts: Vec<Part>,
    /// Per set: its layer, and the place its parameters are named after (`3`, `2.0`,
    /// `2.downsample.0`), as PyTorch names a `Sequential` inside a `Sequential`.
    sets: Vec<(Spec, String)>,
    /// Per set, its parameter tensors, row-major.
    params: Vec<Vec<Vec<f64>>>,
    input: Vec<usize>,
    xs: Vec<Vec<f64>>,
    target: Target,
}

impl Composite {
    /// The reference for `blocks`, the first of them at index `first` of the net.
    fn new(
        blocks: &[Block],
        first: usize,
        input: Vec<usize>,
        xs: Vec<Vec<f64>>,
        target: Target,
    ) -> Self {
        let mut sets = Vec::new();
        let mut ties = Vec::new();
        let paths: Vec<String> = (0..blocks.len()).map(|i| (i + first).to_string()).collect();
        let parts = Self::plan(blocks, &paths, &mut sets, &mut ties);
        let params = sets.iter().map(|_| Vec::new()).collect();
        Composite {
            parts,
            sets,
            params,
            input,
            xs,
            target,
        }
    }

    /// Numbers the parameter sets of `blocks`, placed at `paths`; `ties` maps a tie's id to its
    /// set.
    fn plan(
        blocks: &[Block],
        paths: &[String],
        sets: &mut Vec<(Spec, String)>,
        ties: &mut Vec<(usize, usize)>,
    ) -> Vec<Part> {
        blocks
            .iter()
            .zip(paths)
            .map(|(block, path)| match block {
                Block::Layer(spec) => {
                    sets.push((*spec, path.clone()));
                    Part::Layer {
                        spec: *spec,
                        set: sets.len() - 1,
                    }
                }
                Block::Tied(id, spec) => {
                    let set = match ties.iter().find(|(i, _)| i == id) {
                        Some(&(_, set)) => set,
                        None => {
                            sets.push((*spec, path.clone()));
                            ties.push((*id, sets.len() - 1));
                            sets.len() - 1
                        }
                    };
                    Part::Layer { spec: *spec, set }
                }
                Block::Residual(body, projection) => {
                    let inner = |prefix: String, n: usize| -> Vec<String> {
                        (0..n).map(|j| format!("{prefix}{j}")).collect()
                    };
                    let body_paths = inner(format!("{path}."), body.len());
                    let body = Self::plan(body, &body_paths, sets, ties);
                    let projection = projection.as_ref().map(|p| {
                        let paths = inner(format!("{path}.downsample."), p.len());
                        Self::plan(p, &paths, sets, ties)
                    });
                    Part::Residual { body, projection }
                }
            })
            .collect()
    }

    /// The name of every parameter tensor, in order, with its set and index in the set.
    fn names(&self) -> Vec<(String, usize, usize)> {
        let mut names = Vec::new();
        for (s, (spec, path)) in self.sets.iter().enumerate() {
            for t in 0..spec.params() {
                let role = if t == 0 { "weight" } else { "bias" };
                names.push((format!("{path}.{role}"), s, t));
            }
        }
        names
    }

    /// Sample `x` of shape `shape` through `parts`: its output and the output's shape.
    fn run_parts(
        &self,
        parts: &[Part],
        x: &[f64],
        shape: &[usize],
        tr: &mut Trace,
    ) -> (Vec<f64>, Vec<usize>) {
        let mut cur = (x.to_vec(), shape.to_vec());
        for part in parts {
            cur = match part {
                Part::Layer { spec, set } => {
                    let y = spec.forward(&self.params[*set], &cur.0, &cur.1, tr);
                    (y, spec.out_shape(&cur.1))
                }
                Part::Residual { body, projection } => {
                    let (y, y_shape) = self.run_parts(body, &cur.0, &cur.1, tr);
                    let (z, z_shape) = match projection {
                        Some(p) => self.run_parts(p, &cur.0, &cur.1, tr),
                        None => cur.clone(),
                    };
                    assert_eq!(y_shape, z_shape, "the reference's branches disagree");
                    (y.iter().zip(&z).map(|(a, b)| a + b).collect(), y_shape)
                }
            };
        }
        cur
    }

    fn forward(&self, x: &[f64], tr: &mut Trace) -> Vec<f64> {
        self.run_parts(&self.parts, x, &self.input, tr).0
    }

    fn divisor(&self, ys: &[Vec<f64>]) -> f64 {
        let width = ys.first().map_or(0, Vec::len);
        self.target.divisor(self.xs.len(), width)
    }

    /// Every sample's output, the loss, the smallest distance to a kink, and the side of
    /// every kink each sample took.
    fn run(&self) -> (Vec<Vec<f64>>, f64, f64, Vec<Vec<u32>>) {
        let mut margin = f64::INFINITY;
        let mut patterns = Vec::new();
        let ys: Vec<Vec<f64>> = self
            .xs
            .iter()
            .map(|x| {
                let mut tr = Trace::new();
                let y = self.forward(x, &mut tr);
                margin = margin.min(tr.margin);
                patterns.push(tr.pattern);
                y
            })
            .collect();
        let total: f64 = ys
            .iter()
            .enumerate()
            .map(|(n, y)| self.target.sample_loss(n, y))
            .sum();
        (ys.clone(), total / self.divisor(&ys), margin, patterns)
    }

    /// The loss of the batch, and whether every sample took the sides of the kinks in
    /// `patterns`.
    fn loss_with(&self, patterns: &[Vec<u32>]) -> (f64, bool) {
        let (_, loss, _, now) = self.run();
        (loss, now == patterns)
    }

    /// The central finite difference of the loss with respect to every parameter tensor named
    /// by [`names`](Composite::names), row-major; NaN where a step crossed a kink.
    fn param_differences(&mut self) -> Vec<Vec<f64>> {
        let (_, _, _, patterns) = self.run();
        let mut all = Vec::new();
        for (_, s, t) in self.names() {
            let mut fd = Vec::with_capacity(self.params[s][t].len());
            for j in 0..self.params[s][t].len() {
                let v = self.params[s][t][j];
                self.params[s][t][j] = v + H;
                let (plus, same_plus) = self.loss_with(&patterns);
                self.params[s][t][j] = v - H;
                let (minus, same_minus) = self.loss_with(&patterns);
                self.params[s][t][j] = v;
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

    /// The central finite difference of the loss with respect to every input value, per
    /// sample; NaN where a step crossed a kink.
    fn input_differences(&self, divisor: f64) -> Vec<Vec<f64>> {
        self.xs
            .iter()
            .enumerate()
            .map(|(n, x)| {
                let mut base = Trace::new();
                self.forward(x, &mut base);
                let mut x = x.clone();
                (0..x.len())
                    .map(|i| {
                        let v = x[i];
                        let at = |value: f64, x: &mut Vec<f64>| {
                            x[i] = value;
                            let mut tr = Trace::new();
                            let y = self.forward(x, &mut tr);
                            (self.target.sample_loss(n, &y), tr.pattern == base.pattern)
                        };
                        let (plus, same_plus) = at(v + H, &mut x);
                        let (minus, same_minus) = at(v - H, &mut x);
                        x[i] = v;
                        if same_plus && same_minus {
                            (plus - minus) / (2.0 * H * divisor)
                        } else {
                            f64::NAN
                        }
                    })
                    .collect()
            })
            .collect()
    }
}

/// Checks a bound composite net, `probe` then the parts `blocks`, on the batch `x`: the
/// parameters' names against the reference's, the forward pass and loss against the
/// reference, then every parameter's gradient (a tied set's summed over its places) and,
/// when the probe learns, the input's (summed over a residual block's two branches when the
/// net starts with one) against finite differences.
fn check_composite<N, L, M>(
    net: &Net<Init<N>, L>,
    probe: &Probe,
    blocks: &[Block],
    x: &Batch<M>,
    loss: LossKind,
    seed: u64,
) -> Result<(), TestCaseError>
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
    let y32 = net.try_forward(x).map_err(fail)?;

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
    let mut reference = Composite::new(blocks, 1, input, columns(x.as_matrix()), target);
    let names = reference.names();
    let lazy_names: Vec<&str> = named.iter().map(|(n, _)| n.as_str()).collect();
    let ref_names: Vec<&str> = names.iter().map(|(n, _, _)| n.as_str()).collect();
    prop_assert_eq!(&lazy_names, &ref_names, "the parameters' names");
    let grad_names: Vec<&str> = analytic.iter().map(|(n, _)| n.as_str()).collect();
    prop_assert_eq!(&grad_names, &ref_names, "the gradients' names");
    for ((_, value), (_, s, _)) in named.iter().zip(&names) {
        reference.params[*s].push(row_major(value));
    }

    let (ys, loss64, margin, _) = reference.run();
    near_a_kink(margin)?;
    same_outputs("net", y32.as_matrix(), &ys)?;
    prop_assert!(
        (f64::from(loss32) - loss64).abs() <= 1e-5 * loss64.abs().max(1.0),
        "loss: lazynet {} against the f64 reference {}",
        loss32,
        loss64
    );

    let divisor = reference.divisor(&ys);
    let fd = reference.param_differences();
    let fd_input = match &input_grad {
        Some(_) => reference.input_differences(divisor),
        None => Vec::new(),
    };
    let case = scale_of(fd.iter().flatten().chain(fd_input.iter().flatten()))
        .max(reference.target.output_gradient_scale(&ys, divisor));
    let mut counts = Counts::default();
    for (tensor, (name, g)) in fd.iter().zip(&analytic) {
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
    kinks_were_rare(&counts)
}

// ---------------------------------------------------------------------------------------------
// Inputs.

/// `rows × samples` values drawn uniformly from `[-scale, scale)`.
fn uniform(rows: usize, samples: usize, scale: f32, seed: u64) -> DMatrix<f32> {
    let mut rng = InitRng::new(seed, "inputs");
    DMatrix::from_fn(rows, samples, |_, _| rng.uniform(-scale, scale))
}

/// Values of magnitude 0.01 to 2 and random signs: no ReLU kink within 0.01.
fn away_from_zero(rows: usize, samples: usize, seed: u64) -> DMatrix<f32> {
    let mut rng = InitRng::new(seed, "inputs");
    DMatrix::from_fn(rows, samples, |_, _| {
        let magnitude = rng.uniform(0.01, 2.0);
        if rng.next_f64() < 0.5 {
            -magnitude
        } else {
            magnitude
        }
    })
}

/// Each sample a random permutation of `rows` values evenly spread over [-1, 1] (plus a little
/// noise): no two values of a sample within `1/rows`, so no max-pooling window is near a tie.
fn distinct(rows: usize, samples: usize, seed: u64) -> DMatrix<f32> {
    let mut rng = InitRng::new(seed, "inputs");
    let mut m = DMatrix::zeros(rows, samples);
    for n in 0..samples {
        let mut order: Vec<usize> = (0..rows).collect();
        for i in (1..rows).rev() {
            let j = ((rng.next_f64() * (i + 1) as f64) as usize).min(i);
            order.swap(i, j);
        }
        for (i, &rank) in order.iter().enumerate() {
            let noise = rng.uniform(-0.25, 0.25);
            m[(i, n)] = ((rank as f32 + 0.5 + noise) / rows as f32) * 2.0 - 1.0;
        }
    }
    m
}

fn image_batch(
    c: usize,
    h: usize,
    w: usize,
    x: DMatrix<f32>,
) -> Result<Batch<Image<Dyn, Dyn, Dyn>>, TestCaseError> {
    Batch::try_with_shape(Image::dynamic(c, h, w), x).map_err(fail)
}

fn flat_batch(x: DMatrix<f32>) -> Result<Batch<Dyn>, TestCaseError> {
    Batch::<Dyn>::try_from_matrix(x).map_err(fail)
}

/// The four activations a dense or convolution layer fuses (the [`Activation`]s).
fn act() -> impl Strategy<Value = Act> {
    prop_oneof![
        Just(Act::Relu),
        Just(Act::Sigmoid),
        Just(Act::Tanh),
        Just(Act::Identity)
    ]
}

/// The element-wise activations that no layer fuses: a leaky ReLU, of a random slope in
/// [-2, 2) or of 0, -1 (`|x|`) or PyTorch's default 0.01, and the GELU.
fn nonlinear_act() -> impl Strategy<Value = Act> {
    let slope = prop_oneof![4 => -2.0f32..2.0, 1 => Just(0.0), 1 => Just(-1.0), 1 => Just(0.01)];
    prop_oneof![slope.prop_map(Act::LeakyRelu), Just(Act::Gelu)]
}

/// Any element-wise activation, for nets that choose it at run time ([`AnyAct`]): one of the
/// fused four twice as often as one of the others.
fn any_act() -> impl Strategy<Value = Act> {
    prop_oneof![2 => act(), 1 => nonlinear_act()]
}

/// Whether the probe learns (so that the input gradient is checked): three times in four.
fn learns() -> impl Strategy<Value = bool> {
    prop_oneof![3 => Just(true), 1 => Just(false)]
}

/// Runs `$body` with `$t` the lazynet activation layer type of `$a`, one of the four [`act`]
/// draws (the others have a slope, or are checked through [`AnyAct`]: one net type).
macro_rules! with_act {
    ($a:expr, |$t:ident| $body:expr) => {
        match $a {
            Act::Relu => {
                type $t = Relu;
                $body
            }
            Act::Sigmoid => {
                type $t = Sigmoid;
                $body
            }
            Act::Tanh => {
                type $t = Tanh;
                $body
            }
            Act::Identity => {
                type $t = Identity;
                $body
            }
            other @ (Act::LeakyRelu(_) | Act::Gelu) => {
                unreachable!("with_act! takes the fused activations, not {other:?}")
            }
        }
    };
}

/// Runs `$body` with `$t` the lazynet pooling kind of `$max`.
macro_rules! with_pool {
    ($max:expr, |$t:ident| $body:expr) => {
        if $max {
            type $t = Max;
            $body
        } else {
            type $t = Avg;
            $body
        }
    };
}

/// A convolution with every number given at run time.
fn conv(
    out: usize,
    k: usize,
    s: usize,
    p: usize,
    d: usize,
    bias: bool,
) -> Conv2d<Dyn, Dyn, Dyn, Dyn, Dyn> {
    let c = Conv2d::dynamic(out, k)
        .stride_size(s)
        .padding_size(p)
        .dilation_size(d);
    if bias {
        c
    } else {
        c.without_bias()
    }
}

/// Channels, then a convolution's output channels, kernel, stride, padding and dilation, then
/// an image height and width it fits (1 to 9, or the kernel's span when larger).
fn conv_geometry() -> impl Strategy<Value = ([usize; 3], [usize; 5])> {
    (
        1usize..=3,
        1usize..=3,
        1usize..=4,
        1usize..=3,
        0usize..=2,
        1usize..=3,
    )
        .prop_flat_map(|(c, out, k, s, p, d)| {
            let lo = (d * (k - 1) + 1).saturating_sub(2 * p).max(1);
            let hi = lo.max(9);
            (lo..=hi, lo..=hi).prop_map(move |(h, w)| ([c, h, w], [out, k, s, p, d]))
        })
}

/// Channels, height and width, then a pooling window, stride and padding (at most half the
/// window) that fit.
fn pool_geometry() -> impl Strategy<Value = ([usize; 3], [usize; 3])> {
    (1usize..=3, 1usize..=4, 1usize..=3)
        .prop_flat_map(|(c, k, s)| (Just(c), Just(k), Just(s), 0..=k / 2))
        .prop_flat_map(|(c, k, s, p)| {
            let lo = k.saturating_sub(2 * p).max(1);
            let hi = lo.max(9);
            (lo..=hi, lo..=hi).prop_map(move |(h, w)| ([c, h, w], [k, s, p]))
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Dense: weight, bias and input gradients, with both losses.
    #[test]
    fn dense_gradients(
        n_in in 1usize..=8,
        out in 1usize..=6,
        samples in 1usize..=4,
        loss in loss_kind(),
        learns in learns(),
        seed in any::<u64>(),
    ) {
        let probe = Probe::new(learns);
        let net = Net::new()
            .push(probe.clone())
            .push(Dense::dynamic(out))
            .seed(seed)
            .try_bind(n_in)
            .map_err(fail)?;
        let x = flat_batch(uniform(n_in, samples, 1.0, seed))?;
        check_net(&net, &probe, vec![Spec::Dense { out }], &x, loss, seed)?;
    }

    /// The four activations: their kernels on their own (flat and image inputs), then in a net
    /// both on their own (after the probe) and fused into the dense layer before them.
    #[test]
    fn activation_gradients(
        a in act(),
        image in any::<bool>(),
        [c, h, w] in [1usize..=3, 1usize..=5, 1usize..=5],
        out in 1usize..=5,
        samples in 1usize..=4,
        loss in loss_kind(),
        learns in learns(),
        seed in any::<u64>(),
    ) {
        let input = if image { vec![c, h, w] } else { vec![c * h * w] };
        let len = c * h * w;
        let x = if a == Act::Relu {
            away_from_zero(len, samples, seed)
        } else {
            uniform(len, samples, 3.0, seed)
        };
        with_act!(a, |A| check_kernel(&A::default(), Spec::Act(a), &input, &x, seed))?;

        let probe = Probe::new(learns);
        with_act!(a, |A| {
            let net = Net::new()
                .push(probe.clone())
                .push(A::default())
                .push(Dense::dynamic(out))
                .push(A::default())
                .seed(seed)
                .try_bind(len)
                .map_err(fail)?;
            let specs = vec![Spec::Act(a), Spec::Dense { out }, Spec::Act(a)];
            check_net(&net, &probe, specs, &flat_batch(x.clone())?, loss, seed)
        })?;
    }

    /// Conv2d: weight, bias and input gradients over random shapes, kernels, strides, paddings
    /// and dilations, with and without bias.
    #[test]
    fn conv_gradients(
        ([c, h, w], [out, k, s, p, d]) in conv_geometry(),
        bias in any::<bool>(),
        samples in 1usize..=4,
        loss in loss_kind(),
        learns in learns(),
        seed in any::<u64>(),
    ) {
        let probe = Probe::new(learns);
        let net = Net::new()
            .push(probe.clone())
            .push(conv(out, k, s, p, d, bias))
            .seed(seed)
            .try_bind(Image::dynamic(c, h, w))
            .map_err(fail)?;
        let x = image_batch(c, h, w, uniform(c * h * w, samples, 1.0, seed))?;
        let spec = Spec::Conv { out, k, s, p, d, bias };
        check_net(&net, &probe, vec![spec], &x, loss, seed)?;
    }

    /// MaxPool2d and AvgPool2d: their kernels on their own, then in a net, over random shapes,
    /// windows, strides and paddings.
    #[test]
    fn pool_gradients(
        max in any::<bool>(),
        ([c, h, w], [k, s, p]) in pool_geometry(),
        samples in 1usize..=4,
        loss in loss_kind(),
        seed in any::<u64>(),
    ) {
        let x = if max {
            distinct(c * h * w, samples, seed)
        } else {
            uniform(c * h * w, samples, 1.0, seed)
        };
        let spec = Spec::Pool { max, k, s, p };
        with_pool!(max, |K| {
            let layer = Pool2d::<K, Dyn>::dynamic(k).stride_size(s).padding_size(p);
            check_kernel(&layer, spec, &[c, h, w], &x, seed)?;
            let probe = Probe::new(true);
            let net = Net::new()
                .push(probe.clone())
                .push(layer)
                .try_bind(Image::dynamic(c, h, w))
                .map_err(fail)?;
            check_net(&net, &probe, vec![spec], &image_batch(c, h, w, x.clone())?, loss, seed)?;
        });
    }

    /// Flatten's kernel on its own (a net skips it).
    #[test]
    fn flatten_gradients(
        [c, h, w] in [1usize..=3, 1usize..=5, 1usize..=5],
        samples in 1usize..=4,
        seed in any::<u64>(),
    ) {
        let x = uniform(c * h * w, samples, 1.0, seed);
        check_kernel(&Flatten, Spec::Flatten, &[c, h, w], &x, seed)?;
    }

    /// The leaky ReLU (random slopes, negative ones included) and the GELU, whose slopes are
    /// read from the input: their kernels on their own (flat and image inputs), then in a net
    /// both on their own (after the probe) and after a dense layer, which does not fuse them.
    #[test]
    fn nonlinear_activation_gradients(
        a in nonlinear_act(),
        image in any::<bool>(),
        [c, h, w] in [1usize..=3, 1usize..=5, 1usize..=5],
        out in 1usize..=5,
        samples in 1usize..=4,
        loss in loss_kind(),
        learns in learns(),
        seed in any::<u64>(),
    ) {
        let input = if image { vec![c, h, w] } else { vec![c * h * w] };
        let len = c * h * w;
        let x = if a.kinked() {
            away_from_zero(len, samples, seed)
        } else {
            uniform(len, samples, 3.0, seed)
        };
        check_kernel(&AnyAct(a), Spec::Act(a), &input, &x, seed)?;

        let probe = Probe::new(learns);
        let net = Net::new()
            .push(probe.clone())
            .push(AnyAct(a))
            .push(Dense::dynamic(out))
            .push(AnyAct(a))
            .seed(seed)
            .try_bind(len)
            .map_err(fail)?;
        let specs = vec![Spec::Act(a), Spec::Dense { out }, Spec::Act(a)];
        check_net(&net, &probe, specs, &flat_batch(x)?, loss, seed)?;
    }

    /// Softmax over a sample's features: its kernel on its own, on logits spread over ±3 and
    /// shifted by 0 or ±1e4 (without the maximum's subtraction, `exp` would overflow), then in
    /// a net, after the probe and after a dense layer, with both losses.
    #[test]
    fn softmax_gradients(
        width in 1usize..=8,
        out in 1usize..=5,
        shift in prop_oneof![Just(0.0f32), Just(1e4f32), Just(-1e4f32)],
        samples in 1usize..=4,
        loss in loss_kind(),
        learns in learns(),
        seed in any::<u64>(),
    ) {
        let x = uniform(width, samples, 3.0, seed).add_scalar(shift);
        check_kernel(&Softmax, Spec::Softmax, &[width], &x, seed)?;

        let probe = Probe::new(learns);
        let net = Net::new()
            .push(probe.clone())
            .push(Softmax)
            .push(Dense::dynamic(out))
            .push(Softmax)
            .seed(seed)
            .try_bind(width)
            .map_err(fail)?;
        let specs = vec![Spec::Softmax, Spec::Dense { out }, Spec::Softmax];
        check_net(&net, &probe, specs, &flat_batch(x)?, loss, seed)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whole nets: convolution, activation, pooling, flatten, dense, activation, dense, with
    /// both losses.
    #[test]
    fn conv_net_gradients(
        [c, h, w] in [1usize..=2, 3usize..=7, 3usize..=7],
        [out, k, s, p, d] in [1usize..=3, 1usize..=3, 1usize..=2, 0usize..=1, 1usize..=2],
        bias in any::<bool>(),
        (a1, a2) in (act(), act()),
        max in any::<bool>(),
        [pk, ps, pp] in [1usize..=2, 1usize..=2, 0usize..=1],
        [hidden, classes] in [1usize..=6, 1usize..=4],
        samples in 1usize..=3,
        loss in loss_kind(),
        learns in learns(),
        seed in any::<u64>(),
    ) {
        // The convolution's output must fit the kernel, then the pooling window.
        prop_assume!(h + 2 * p > d * (k - 1) && w + 2 * p > d * (k - 1));
        let (oh, ow) = (out_size(h, k, s, p, d), out_size(w, k, s, p, d));
        let pp = pp.min(pk / 2);
        let pk = if oh + 2 * pp < pk || ow + 2 * pp < pk { 1 } else { pk };
        let pp = pp.min(pk / 2);
        let specs = vec![
            Spec::Conv { out, k, s, p, d, bias },
            Spec::Act(a1),
            Spec::Pool { max, k: pk, s: ps, p: pp },
            Spec::Flatten,
            Spec::Dense { out: hidden },
            Spec::Act(a2),
            Spec::Dense { out: classes },
        ];
        let x = image_batch(c, h, w, uniform(c * h * w, samples, 1.0, seed))?;
        let probe = Probe::new(learns);
        with_act!(a1, |A1| with_act!(a2, |A2| with_pool!(max, |K| {
            let net = Net::new()
                .push(probe.clone())
                .push(conv(out, k, s, p, d, bias))
                .push(A1::default())
                .push(Pool2d::<K, Dyn>::dynamic(pk).stride_size(ps).padding_size(pp))
                .push(Flatten)
                .push(Dense::dynamic(hidden))
                .push(A2::default())
                .push(Dense::dynamic(classes))
                .seed(seed)
                .try_bind(Image::dynamic(c, h, w))
                .map_err(fail)?;
            check_net(&net, &probe, specs.clone(), &x, loss, seed)?;
        })));
    }

    /// Whole nets: three dense layers and two activations, with both losses.
    #[test]
    fn mlp_gradients(
        [n_in, h1, h2, classes] in [1usize..=6, 1usize..=6, 1usize..=6, 1usize..=4],
        (a1, a2) in (act(), act()),
        samples in 1usize..=4,
        loss in loss_kind(),
        learns in learns(),
        seed in any::<u64>(),
    ) {
        let specs = vec![
            Spec::Dense { out: h1 },
            Spec::Act(a1),
            Spec::Dense { out: h2 },
            Spec::Act(a2),
            Spec::Dense { out: classes },
        ];
        let x = flat_batch(uniform(n_in, samples, 1.0, seed))?;
        let probe = Probe::new(learns);
        with_act!(a1, |A1| with_act!(a2, |A2| {
            let net = Net::new()
                .push(probe.clone())
                .push(Dense::dynamic(h1))
                .push(A1::default())
                .push(Dense::dynamic(h2))
                .push(A2::default())
                .push(Dense::dynamic(classes))
                .seed(seed)
                .try_bind(n_in)
                .map_err(fail)?;
            check_net(&net, &probe, specs.clone(), &x, loss, seed)?;
        }));
    }
}

/// An odd kernel (1 or 3), a dilation (1 or 2), and the padding that keeps the size at stride 1.
fn same_conv() -> impl Strategy<Value = (usize, usize, usize)> {
    (prop_oneof![Just(1usize), Just(3usize)], 1usize..=2).prop_map(|(k, d)| (k, d, d * (k - 1) / 2))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// d2l's tied net, random widths and activations: `Dense(h) A shared A shared A
    /// Dense(classes)`, one `Dense(h)` at two places; its gradient is the sum over both.
    #[test]
    fn tied_mlp_gradients(
        [n_in, h, classes] in [1usize..=6, 1usize..=6, 1usize..=4],
        (a1, a2, a3) in (any_act(), any_act(), any_act()),
        samples in 1usize..=4,
        loss in loss_kind(),
        learns in learns(),
        seed in any::<u64>(),
    ) {
        let shared = Spec::Dense { out: h };
        let blocks = [
            Block::Layer(Spec::Dense { out: h }),
            Block::Layer(Spec::Act(a1)),
            Block::Tied(0, shared),
            Block::Layer(Spec::Act(a2)),
            Block::Tied(0, shared),
            Block::Layer(Spec::Act(a3)),
            Block::Layer(Spec::Dense { out: classes }),
        ];
        let x = flat_batch(uniform(n_in, samples, 1.0, seed))?;
        let probe = Probe::new(learns);
        {
            let tie = Shared::<_, ()>::new(Dense::dynamic(h));
            let net = Net::new()
                .push(probe.clone())
                .push(Dense::dynamic(h))
                .push(AnyAct(a1))
                .push(tie.clone())
                .push(AnyAct(a2))
                .push(tie)
                .push(AnyAct(a3))
                .push(Dense::dynamic(classes))
                .seed(seed)
                .try_bind(n_in)
                .map_err(fail)?;
            check_composite(&net, &probe, &blocks, &x, loss, seed)?;
        }
    }

    /// Residual blocks on flat inputs: one right at the input (the input's gradient is the sum
    /// of both branches'), one with a projection, one with an empty body (`2x`).
    #[test]
    fn residual_mlp_gradients(
        [n_in, k, h, m, c, classes] in [1usize..=5, 1usize..=5, 1usize..=5, 1usize..=5, 1usize..=5, 1usize..=4],
        (a1, a2, a3) in (any_act(), any_act(), any_act()),
        samples in 1usize..=4,
        loss in loss_kind(),
        learns in learns(),
        seed in any::<u64>(),
    ) {
        let blocks = [
            Block::Residual(
                vec![
                    Block::Layer(Spec::Dense { out: k }),
                    Block::Layer(Spec::Act(a1)),
                    Block::Layer(Spec::Dense { out: n_in }),
                ],
                None,
            ),
            Block::Layer(Spec::Dense { out: h }),
            Block::Layer(Spec::Act(a2)),
            Block::Residual(
                vec![
                    Block::Layer(Spec::Dense { out: m }),
                    Block::Layer(Spec::Act(a3)),
                    Block::Layer(Spec::Dense { out: c }),
                ],
                Some(vec![Block::Layer(Spec::Dense { out: c })]),
            ),
            Block::Residual(Vec::new(), None),
            Block::Layer(Spec::Dense { out: classes }),
        ];
        let x = flat_batch(uniform(n_in, samples, 1.0, seed))?;
        let probe = Probe::new(learns);
        {
            let first = Net::new()
                .push(Dense::dynamic(k))
                .push(AnyAct(a1))
                .push(Dense::dynamic(n_in));
            let body = Net::new()
                .push(Dense::dynamic(m))
                .push(AnyAct(a3))
                .push(Dense::dynamic(c));
            let down = Net::new().push(Dense::dynamic(c));
            let net = Net::new()
                .push(probe.clone())
                .push(Residual::new(first))
                .push(Dense::dynamic(h))
                .push(AnyAct(a2))
                .push(Residual::with_projection(body, down))
                .push(Residual::new(Net::new()))
                .push(Dense::dynamic(classes))
                .seed(seed)
                .try_bind(n_in)
                .map_err(fail)?;
            check_composite(&net, &probe, &blocks, &x, loss, seed)?;
        }
    }

    /// One tied layer at three places, two inside a residual block's body and one after it:
    /// the gradient sums over places in and out of the block.
    #[test]
    fn tied_across_blocks_gradients(
        [n_in, h, classes] in [1usize..=5, 1usize..=5, 1usize..=4],
        (a1, a2, a3) in (any_act(), any_act(), any_act()),
        samples in 1usize..=4,
        loss in loss_kind(),
        learns in learns(),
        seed in any::<u64>(),
    ) {
        let shared = Spec::Dense { out: h };
        let blocks = [
            Block::Layer(Spec::Dense { out: h }),
            Block::Layer(Spec::Act(a1)),
            Block::Residual(
                vec![
                    Block::Tied(0, shared),
                    Block::Layer(Spec::Act(a2)),
                    Block::Tied(0, shared),
                ],
                None,
            ),
            Block::Layer(Spec::Act(a3)),
            Block::Tied(0, shared),
            Block::Layer(Spec::Dense { out: classes }),
        ];
        let x = flat_batch(uniform(n_in, samples, 1.0, seed))?;
        let probe = Probe::new(learns);
        {
            let tie = Shared::<_, ()>::new(Dense::dynamic(h));
            let body = Net::new().push(tie.clone()).push(AnyAct(a2)).push(tie.clone());
            let net = Net::new()
                .push(probe.clone())
                .push(Dense::dynamic(h))
                .push(AnyAct(a1))
                .push(Residual::new(body))
                .push(AnyAct(a3))
                .push(tie)
                .push(Dense::dynamic(classes))
                .seed(seed)
                .try_bind(n_in)
                .map_err(fail)?;
            check_composite(&net, &probe, &blocks, &x, loss, seed)?;
        }
    }

    /// Pre-activation blocks (`x + W·a(x)`, He et al. 2016): the layer before a block is read
    /// by the block's first activation and by its sum, so it must not run fused with that
    /// activation.
    #[test]
    fn preactivation_residual_gradients(
        [n_in, h, k, classes] in [1usize..=5, 1usize..=5, 1usize..=5, 1usize..=4],
        (a1, a2, a3) in (any_act(), any_act(), any_act()),
        samples in 1usize..=4,
        loss in loss_kind(),
        learns in learns(),
        seed in any::<u64>(),
    ) {
        let blocks = [
            Block::Layer(Spec::Dense { out: h }),
            Block::Residual(
                vec![Block::Layer(Spec::Act(a1)), Block::Layer(Spec::Dense { out: h })],
                None,
            ),
            Block::Residual(
                vec![
                    Block::Layer(Spec::Act(a2)),
                    Block::Layer(Spec::Dense { out: k }),
                    Block::Layer(Spec::Act(a3)),
                    Block::Layer(Spec::Dense { out: h }),
                ],
                None,
            ),
            Block::Layer(Spec::Dense { out: classes }),
        ];
        let x = flat_batch(uniform(n_in, samples, 1.0, seed))?;
        let probe = Probe::new(learns);
        let net = Net::new()
            .push(probe.clone())
            .push(Dense::dynamic(h))
            .push(Residual::new(Net::new().push(AnyAct(a1)).push(Dense::dynamic(h))))
            .push(Residual::new(
                Net::new()
                    .push(AnyAct(a2))
                    .push(Dense::dynamic(k))
                    .push(AnyAct(a3))
                    .push(Dense::dynamic(h)),
            ))
            .push(Dense::dynamic(classes))
            .seed(seed)
            .try_bind(n_in)
            .map_err(fail)?;
        check_composite(&net, &probe, &blocks, &x, loss, seed)?;
    }

    /// Softmax in residual blocks: `x + W·softmax(x)` (its input read by the sum too), then a
    /// block whose body ends with a softmax and whose projection is a dense layer, with an
    /// activation drawn between them.
    #[test]
    fn softmax_residual_gradients(
        [n_in, h, k, classes] in [1usize..=5, 1usize..=5, 1usize..=5, 1usize..=4],
        a in any_act(),
        samples in 1usize..=4,
        loss in loss_kind(),
        learns in learns(),
        seed in any::<u64>(),
    ) {
        let blocks = [
            Block::Layer(Spec::Dense { out: h }),
            Block::Residual(
                vec![Block::Layer(Spec::Softmax), Block::Layer(Spec::Dense { out: h })],
                None,
            ),
            Block::Layer(Spec::Act(a)),
            Block::Residual(
                vec![Block::Layer(Spec::Dense { out: k }), Block::Layer(Spec::Softmax)],
                Some(vec![Block::Layer(Spec::Dense { out: k })]),
            ),
            Block::Layer(Spec::Dense { out: classes }),
        ];
        let x = flat_batch(uniform(n_in, samples, 1.0, seed))?;
        let probe = Probe::new(learns);
        let body = Net::new().push(Dense::dynamic(k)).push(Softmax);
        let net = Net::new()
            .push(probe.clone())
            .push(Dense::dynamic(h))
            .push(Residual::new(Net::new().push(Softmax).push(Dense::dynamic(h))))
            .push(AnyAct(a))
            .push(Residual::with_projection(body, Net::new().push(Dense::dynamic(k))))
            .push(Dense::dynamic(classes))
            .seed(seed)
            .try_bind(n_in)
            .map_err(fail)?;
        check_composite(&net, &probe, &blocks, &x, loss, seed)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Residual blocks on images: a pre-activation block (an activation, then two padded
    /// convolutions that keep the size: kernel 1 or 3, dilation 1 or 2), then a block whose body is strided and whose projection is a
    /// strided 1×1 convolution (ResNet's downsample), then flatten and dense.
    #[test]
    fn residual_conv_gradients(
        [c, h, w] in [1usize..=2, 2usize..=6, 2usize..=6],
        [c1, c2, s] in [1usize..=3, 1usize..=3, 1usize..=3],
        (k1, d1, p1) in same_conv(),
        (k2, d2, p2) in same_conv(),
        (k3, d3, p3) in same_conv(),
        [bias1, bias2] in [any::<bool>(), any::<bool>()],
        (a0, a1, a2) in (any_act(), any_act(), any_act()),
        classes in 1usize..=3,
        samples in 1usize..=3,
        loss in loss_kind(),
        learns in learns(),
        seed in any::<u64>(),
    ) {
        let conv_spec = |out, k, s, p, d, bias| Spec::Conv { out, k, s, p, d, bias };
        let blocks = [
            Block::Layer(conv_spec(c1, 3, 1, 1, 1, true)),
            Block::Residual(
                vec![
                    Block::Layer(Spec::Act(a0)),
                    Block::Layer(conv_spec(c1, k1, 1, p1, d1, bias1)),
                    Block::Layer(Spec::Act(a1)),
                    Block::Layer(conv_spec(c1, k2, 1, p2, d2, bias2)),
                ],
                None,
            ),
            Block::Residual(
                vec![
                    Block::Layer(conv_spec(c2, k3, s, p3, d3, true)),
                    Block::Layer(Spec::Act(a2)),
                    Block::Layer(conv_spec(c2, 3, 1, 1, 1, bias1)),
                ],
                Some(vec![Block::Layer(conv_spec(c2, 1, s, 0, 1, bias2))]),
            ),
            Block::Layer(Spec::Flatten),
            Block::Layer(Spec::Dense { out: classes }),
        ];
        let x = image_batch(c, h, w, uniform(c * h * w, samples, 1.0, seed))?;
        let probe = Probe::new(learns);
        {
            let same = Net::new()
                .push(AnyAct(a0))
                .push(conv(c1, k1, 1, p1, d1, bias1))
                .push(AnyAct(a1))
                .push(conv(c1, k2, 1, p2, d2, bias2));
            let strided = Net::new()
                .push(conv(c2, k3, s, p3, d3, true))
                .push(AnyAct(a2))
                .push(conv(c2, 3, 1, 1, 1, bias1));
            let down = Net::new().push(conv(c2, 1, s, 0, 1, bias2));
            let net = Net::new()
                .push(probe.clone())
                .push(conv(c1, 3, 1, 1, 1, true))
                .push(Residual::new(same))
                .push(Residual::with_projection(strided, down))
                .push(Flatten)
                .push(Dense::dynamic(classes))
                .seed(seed)
                .try_bind(Image::dynamic(c, h, w))
                .map_err(fail)?;
            check_composite(&net, &probe, &blocks, &x, loss, seed)?;
        }
    }

    /// A tied padded convolution at two places of a residual block's body, on images, with a
    /// max or mean pooling after the block.
    #[test]
    fn tied_conv_residual_gradients(
        [c, h, w] in [1usize..=2, 2usize..=6, 2usize..=6],
        c1 in 1usize..=3,
        (k, d, p) in same_conv(),
        bias in any::<bool>(),
        max in any::<bool>(),
        (a1, a2) in (any_act(), any_act()),
        classes in 1usize..=3,
        samples in 1usize..=3,
        loss in loss_kind(),
        learns in learns(),
        seed in any::<u64>(),
    ) {
        let shared = Spec::Conv { out: c1, k, s: 1, p, d, bias };
        let blocks = [
            Block::Layer(Spec::Conv { out: c1, k: 1, s: 1, p: 0, d: 1, bias: true }),
            Block::Residual(
                vec![
                    Block::Tied(0, shared),
                    Block::Layer(Spec::Act(a1)),
                    Block::Tied(0, shared),
                ],
                None,
            ),
            Block::Layer(Spec::Act(a2)),
            Block::Layer(Spec::Pool { max, k: 2, s: 1, p: 1 }),
            Block::Layer(Spec::Flatten),
            Block::Layer(Spec::Dense { out: classes }),
        ];
        let x = image_batch(c, h, w, if max {
            distinct(c * h * w, samples, seed)
        } else {
            uniform(c * h * w, samples, 1.0, seed)
        })?;
        let probe = Probe::new(learns);
        with_pool!(max, |K| {
            let tie = Shared::<_, ()>::new(conv(c1, k, 1, p, d, bias));
            let body = Net::new().push(tie.clone()).push(AnyAct(a1)).push(tie);
            let net = Net::new()
                .push(probe.clone())
                .push(conv(c1, 1, 1, 0, 1, true))
                .push(Residual::new(body))
                .push(AnyAct(a2))
                .push(Pool2d::<K, Dyn>::dynamic(2).stride_size(1).padding_size(1))
                .push(Flatten)
                .push(Dense::dynamic(classes))
                .seed(seed)
                .try_bind(Image::dynamic(c, h, w))
                .map_err(fail)?;
            check_composite(&net, &probe, &blocks, &x, loss, seed)?;
        });
    }
}

/// Ties in a max-pooling window: the gradient goes to the first maximum in the window (row by
/// row), as PyTorch's; the padding (−∞) never takes it. Not a finite difference (a tie has no
/// derivative): the convention the checks above cannot see.
#[test]
fn max_pooling_ties_go_to_the_first_maximum() {
    let layer = MaxPool2d::dynamic(2).stride_size(2).padding_size(1);
    let kernel = layer.kernel(&[1, 2, 2], &[1, 2, 2]);
    // A 2×2 image of equal values: each window (padded) holds one of them.
    let x = DMatrix::from_element(4, 1, 0.5f32);
    let mut y = DMatrix::zeros(4, 1);
    kernel
        .forward(&[], &x, &mut y, Activation::Identity)
        .unwrap();
    assert_eq!(y.as_slice(), [0.5; 4]);
    let mut dx = DMatrix::zeros(4, 1);
    let dy = DMatrix::from_column_slice(4, 1, &[1.0, 2.0, 3.0, 4.0]);
    kernel
        .backward(&[], &x, &y, &dy, &mut [], Some(&mut dx))
        .unwrap();
    assert_eq!(dx.as_slice(), [1.0, 2.0, 3.0, 4.0]);

    // One window over all four equal values: the first takes the gradient.
    let layer = MaxPool2d::dynamic(2);
    let kernel = layer.kernel(&[1, 2, 2], &[1, 1, 1]);
    let mut y = DMatrix::zeros(1, 1);
    kernel
        .forward(&[], &x, &mut y, Activation::Identity)
        .unwrap();
    let mut dx = DMatrix::zeros(4, 1);
    let dy = DMatrix::from_element(1, 1, 1.0f32);
    kernel
        .backward(&[], &x, &y, &dy, &mut [], Some(&mut dx))
        .unwrap();
    assert_eq!(dx.as_slice(), [1.0, 0.0, 0.0, 0.0]);
}
