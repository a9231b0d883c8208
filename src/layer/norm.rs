//! Normalization and dropout: [`BatchNorm`], [`LayerNorm`], [`Dropout`]. Their computation
//! depends on the pass ([`Mode`]): batch statistics and dropout in training, running
//! statistics and no dropout in inference.

use nalgebra::DMatrix;

use super::{
    check_shapes, param_count, Activation, BufferKind, BufferSpec, BufferValue, Fault, Kernel,
    Layer, Mode, Param, PartialShape, Pass,
};
use crate::error::ShapeError;
use crate::init::Role;

/// A layer setting outside the range it must lie in: `Dropout::new(1.0)`, say.
#[derive(Clone, Copy, Debug, PartialEq, thiserror::Error)]
#[error("{layer}: {name} must be {range}, got {value}")]
pub struct SettingError {
    /// The layer, e.g. `"Dropout"`.
    pub layer: &'static str,
    /// The setting, e.g. `"p"`.
    pub name: &'static str,
    /// The range it must lie in, e.g. `"in [0, 1)"`.
    pub range: &'static str,
    /// The value given.
    pub value: f32,
}

/// PyTorch's `eps` of both normalizations.
const EPS: f32 = 1e-5;
/// PyTorch's `momentum` of [`BatchNorm`] (a double in PyTorch too).
const MOMENTUM: f64 = 0.1;

/// Batch normalization, PyTorch's `BatchNorm1d` on a flat input and `BatchNorm2d` on an
/// image: each feature (each channel of an image) is normalized over the batch (and the
/// image's pixels), then scaled and shifted by learned `weight` and `bias`, of one value per
/// feature or channel — their count inferred at binding, as PyTorch's `LazyBatchNorm`.
///
/// * In training ([`loss_and_grads`](crate::Net::loss_and_grads),
///   [`fit`](crate::Net::fit)) it normalizes by the batch's mean and biased variance, with
///   `eps` 1e-5, and computes the new running statistics: `running = 0.9·running + 0.1·batch`,
///   with the unbiased variance, and `num_batches_tracked + 1`. The pass does not change the
///   net; the optimizer's step writes them, once per step (once per place for a layer tied at
///   several places, as PyTorch updates a module called twice), as PyTorch's training-mode
///   forward does (so a step that is refused changes nothing).
/// * In inference ([`forward`](crate::Net::forward), [`predict`](crate::Net::predict),
///   [`evaluate`](crate::Net::evaluate)) it normalizes by the running statistics.
///
/// Its buffers `running_mean` (0 at first), `running_var` (1) and `num_batches_tracked` (0,
/// `int64` in files) are listed by [`Net::named_buffers`](crate::Net::named_buffers), saved
/// and loaded under PyTorch's names; they are not parameters. Its `weight` starts at 1 and its
/// `bias` at 0, whatever initializer the net has.
///
/// A training batch needs more than one value per feature (PyTorch's rule): a flat batch of
/// one sample is [`ShapeError::BatchTooSmall`].
///
/// # Example
/// ```
/// use lazynet::prelude::*;
///
/// let net = Net::new()
///     .push(Dense::<U4>::new())
///     .push(BatchNorm::new())
///     .push(Relu)
///     .push(Dense::<U2>::new())
///     .bind::<U3>();
/// let names: Vec<&str> = net.named_buffers().map(|b| b.name()).collect();
/// assert_eq!(names, ["1.running_mean", "1.running_var", "1.num_batches_tracked"]);
/// let x = Batch::<U3>::from_fn(8, |f, s| (f * s) as f32);
/// let before = net.forward(&x);
/// let (_, _grads) = net.loss_and_grads(&x, &Batch::<U2>::zeros(8), Mse)?;
/// // Training passes do not change the net; inference is unchanged.
/// assert_eq!(net.forward(&x), before);
/// # Ok::<(), ShapeError>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BatchNorm {
    _private: (),
}

impl BatchNorm {
    /// A batch normalization with PyTorch's settings: `eps` 1e-5, `momentum` 0.1, learned
    /// scale and shift, running statistics tracked.
    pub fn new() -> Self {
        BatchNorm { _private: () }
    }
}

/// The features a normalization has for an input: its width, or an image's channels.
fn features(input: Option<&PartialShape>) -> Option<usize> {
    input.and_then(|i| i.0.first().copied().flatten())
}

impl Layer for BatchNorm {
    fn kind(&self) -> &'static str {
        "BatchNorm"
    }

    fn output_shape(&self, input: Option<&PartialShape>) -> Result<Option<PartialShape>, Fault> {
        Ok(input.cloned())
    }

    fn param_shapes(&self, input: Option<&PartialShape>) -> Vec<(Role, PartialShape)> {
        let c = PartialShape(vec![features(input)]);
        vec![(Role::Scale, c.clone()), (Role::Shift, c)]
    }

    fn buffers(&self, input: Option<&PartialShape>) -> Vec<BufferSpec> {
        let c = PartialShape(vec![features(input)]);
        vec![
            BufferSpec {
                name: "running_mean",
                shape: c.clone(),
                kind: BufferKind::Values {
                    fill: 0.0,
                    nonnegative: false,
                },
            },
            BufferSpec {
                name: "running_var",
                shape: c,
                kind: BufferKind::Values {
                    fill: 1.0,
                    nonnegative: true,
                },
            },
            BufferSpec {
                name: "num_batches_tracked",
                shape: PartialShape(Vec::new()),
                kind: BufferKind::Count,
            },
        ]
    }

    fn kernel(&self, input: &[usize], _: &[usize]) -> Box<dyn Kernel> {
        let channels = input.first().copied().unwrap_or(0);
        // A shape whose size overflows never fits a buffer: `check` refuses every call.
        let run = input
            .iter()
            .skip(1)
            .try_fold(1usize, |n, d| n.checked_mul(*d));
        let width = run.and_then(|r| channels.checked_mul(r));
        Box::new(BatchNormKernel {
            channels,
            run: run.unwrap_or(0),
            width,
        })
    }
}

crate::keeps_shape!(BatchNorm);

/// The bound computation of [`BatchNorm`]: `channels` features, each a run of `run` values
/// of a sample (1 for a flat input, H·W for an image).
#[derive(Clone, Copy, Debug)]
struct BatchNormKernel {
    channels: usize,
    run: usize,
    /// The values of one sample, `channels · run`; `None` for a shape whose size a `usize`
    /// cannot count (a kernel made on its own), which refuses every call.
    width: Option<usize>,
}

/// The statistics of one channel over a batch, in `f64`: mean and biased variance.
struct Stats {
    mean: f64,
    var: f64,
}

impl BatchNormKernel {
    /// Checks the parameters and buffers it was given; returns the weight, the bias and the
    /// values of one sample.
    fn check<'p>(
        &self,
        params: &'p [Param],
        x: &DMatrix<f32>,
        y: (usize, usize),
    ) -> Result<(&'p [f32], &'p [f32], usize), ShapeError> {
        let [w, b] = params else {
            return Err(param_count("BatchNorm", params.len(), 2));
        };
        let Some(width) = self.width else {
            return Err(ShapeError::Contract {
                what: "a call to the BatchNorm kernel".into(),
                detail: "it was made for an input of more values than a usize counts".into(),
            });
        };
        let c = (self.channels, 1);
        check_shapes(
            "BatchNorm",
            &[
                ("the weight", w.value.shape(), c),
                ("the bias", b.value.shape(), c),
                ("the input", (x.nrows(), 1), (width, 1)),
                ("the output", y, x.shape()),
            ],
        )?;
        Ok((w.value.as_slice(), b.value.as_slice(), width))
    }

    /// The statistics of every channel over the batch `x`, of `width` values a sample.
    fn stats(&self, x: &DMatrix<f32>, width: usize) -> Vec<Stats> {
        let n = x.ncols() as f64 * self.run as f64;
        let mut sums = vec![0.0f64; self.channels];
        for sample in x.as_slice().chunks_exact(width.max(1)) {
            for (sum, run) in sums.iter_mut().zip(sample.chunks_exact(self.run.max(1))) {
                *sum += run.iter().map(|&v| f64::from(v)).sum::<f64>();
            }
        }
        let means: Vec<f64> = sums.iter().map(|s| s / n).collect();
        let mut squares = vec![0.0f64; self.channels];
        for sample in x.as_slice().chunks_exact(width.max(1)) {
            let runs = sample.chunks_exact(self.run.max(1));
            for ((sq, run), mean) in squares.iter_mut().zip(runs).zip(&means) {
                *sq += run
                    .iter()
                    .map(|&v| (f64::from(v) - mean).powi(2))
                    .sum::<f64>();
            }
        }
        means
            .into_iter()
            .zip(squares)
            .map(|(mean, sq)| Stats { mean, var: sq / n })
            .collect()
    }

    /// `y = x·scale + shift` per channel, then `then`; `width` values a sample.
    #[allow(clippy::too_many_arguments)]
    fn affine(
        &self,
        x: &DMatrix<f32>,
        y: &mut DMatrix<f32>,
        width: usize,
        scale: &[f32],
        shift: &[f32],
        then: Activation,
    ) {
        let width = width.max(1);
        let run = self.run.max(1);
        let samples = y
            .as_mut_slice()
            .chunks_exact_mut(width)
            .zip(x.as_slice().chunks_exact(width));
        for (ys, xs) in samples {
            let runs = ys.chunks_exact_mut(run).zip(xs.chunks_exact(run));
            for ((yr, xr), (a, b)) in runs.zip(scale.iter().zip(shift)) {
                for (y, x) in yr.iter_mut().zip(xr) {
                    *y = x * a + b;
                }
            }
        }
        then.apply(y.as_mut_slice(), &[], 1);
    }
}

/// Checks the gradient buffers of a normalization with `features` scales and shifts (and the
/// input gradient, when asked for); returns the two gradients.
fn scale_shift_grads<'g>(
    kind: &str,
    grads: &'g mut [DMatrix<f32>],
    features: usize,
    x: &DMatrix<f32>,
    dx: Option<&DMatrix<f32>>,
) -> Result<[&'g mut DMatrix<f32>; 2], ShapeError> {
    let [dw, db] = grads else {
        return Err(param_count(kind, grads.len(), 2));
    };
    let f = (features, 1);
    check_shapes(
        kind,
        &[
            ("the weight gradient", dw.shape(), f),
            ("the bias gradient", db.shape(), f),
        ],
    )?;
    if let Some(dx) = dx {
        check_shapes(kind, &[("the input gradient", dx.shape(), x.shape())])?;
    }
    Ok([dw, db])
}

/// The running statistics and count among a batch normalization's buffers.
fn running(
    buffers: &[super::Buffer],
    channels: usize,
) -> Result<(&[f32], &[f32], i64), ShapeError> {
    let broken = |detail: String| ShapeError::Contract {
        what: "a call to the BatchNorm kernel".into(),
        detail,
    };
    match buffers {
        [mean, var, count] => match (&mean.value, &var.value, &count.value) {
            (BufferValue::Values(m), BufferValue::Values(v), BufferValue::Count(c))
                if m.shape() == (channels, 1) && v.shape() == (channels, 1) =>
            {
                Ok((m.as_slice(), v.as_slice(), *c))
            }
            _ => Err(broken(format!(
                "its buffers must be a running mean and variance of {channels} values and a count"
            ))),
        },
        _ => Err(broken(format!(
            "it was given {} buffers but keeps 3 (running_mean, running_var, num_batches_tracked)",
            buffers.len()
        ))),
    }
}

impl Kernel for BatchNormKernel {
    fn forward(
        &self,
        _: &[Param],
        _: &DMatrix<f32>,
        _: &mut DMatrix<f32>,
        _: Activation,
    ) -> Result<(), ShapeError> {
        Err(ShapeError::Contract {
            what: "a call to the BatchNorm kernel".into(),
            detail: "it needs its running statistics and the pass's mode: call `forward_with`"
                .into(),
        })
    }

    fn backward(
        &self,
        _: &[Param],
        _: &DMatrix<f32>,
        _: &DMatrix<f32>,
        _: &DMatrix<f32>,
        _: &mut [DMatrix<f32>],
        _: Option<&mut DMatrix<f32>>,
    ) -> Result<(), ShapeError> {
        Err(ShapeError::Contract {
            what: "a call to the BatchNorm kernel".into(),
            detail: "it needs the pass's mode: call `backward_with`".into(),
        })
    }

    fn forward_with(
        &self,
        pass: &mut Pass<'_>,
        params: &[Param],
        x: &DMatrix<f32>,
        y: &mut DMatrix<f32>,
        then: Activation,
    ) -> Result<(), ShapeError> {
        let (w, b, width) = self.check(params, x, y.shape())?;
        let (rm, rv, count) = running(pass.buffers(), self.channels)?;
        match pass.mode() {
            Mode::Eval => {
                // PyTorch's eval kernel: (x − mean)·(w / sqrt(var + eps)) + b.
                let scale: Vec<f32> = w
                    .iter()
                    .zip(rv)
                    .map(|(w, v)| w / (v + EPS).sqrt())
                    .collect();
                let shift: Vec<f32> = b
                    .iter()
                    .zip(rm)
                    .zip(&scale)
                    .map(|((b, m), s)| b - m * s)
                    .collect();
                self.affine(x, y, width, &scale, &shift, then);
                Ok(())
            }
            Mode::Train => {
                // `x` holds `ncols · width` values, so this product fits.
                let n = x.ncols().checked_mul(self.run).unwrap_or(0);
                if n < 2 {
                    return Err(ShapeError::BatchTooSmall {
                        layer: pass.path.to_owned(),
                        kind: "BatchNorm",
                        values: n,
                    });
                }
                let stats = self.stats(x, width);
                let invstd: Vec<f64> = stats
                    .iter()
                    .map(|s| 1.0 / (s.var + f64::from(EPS)).sqrt())
                    .collect();
                let scale: Vec<f32> = w
                    .iter()
                    .zip(&invstd)
                    .map(|(w, i)| (f64::from(*w) * i) as f32)
                    .collect();
                let shift: Vec<f32> = b
                    .iter()
                    .zip(&stats)
                    .zip(&scale)
                    .map(|((b, s), a)| (f64::from(*b) - s.mean * f64::from(*a)) as f32)
                    .collect();
                self.affine(x, y, width, &scale, &shift, then);
                // The running statistics, updated with the unbiased variance.
                let unbias = n as f64 / (n as f64 - 1.0);
                let m = MOMENTUM;
                let mix =
                    |running: f32, batch: f64| ((1.0 - m) * f64::from(running) + m * batch) as f32;
                let new_mean = DMatrix::from_iterator(
                    self.channels,
                    1,
                    rm.iter().zip(&stats).map(|(r, s)| mix(*r, s.mean)),
                );
                let new_var = DMatrix::from_iterator(
                    self.channels,
                    1,
                    rv.iter().zip(&stats).map(|(r, s)| mix(*r, s.var * unbias)),
                );
                // PyTorch's count would overflow past 2^63 − 1 batches; this one stays there.
                let count = count.saturating_add(1);
                pass.set_buffer(0, BufferValue::Values(new_mean))?;
                pass.set_buffer(1, BufferValue::Values(new_var))?;
                pass.set_buffer(2, BufferValue::Count(count))?;
                Ok(())
            }
        }
    }

    fn backward_with(
        &self,
        pass: &Pass<'_>,
        params: &[Param],
        x: &DMatrix<f32>,
        _: &DMatrix<f32>,
        dy: &DMatrix<f32>,
        grads: &mut [DMatrix<f32>],
        dx: Option<&mut DMatrix<f32>>,
    ) -> Result<(), ShapeError> {
        let (w, _, width) = self.check(params, x, dy.shape())?;
        let [dw, db] = scale_shift_grads("BatchNorm", grads, self.channels, x, dx.as_deref())?;
        // Per channel: mean and 1/std as the forward pass used them.
        let (means, invstd): (Vec<f64>, Vec<f64>) = match pass.mode() {
            Mode::Train => self
                .stats(x, width)
                .iter()
                .map(|s| (s.mean, 1.0 / (s.var + f64::from(EPS)).sqrt()))
                .unzip(),
            Mode::Eval => {
                let (rm, rv, _) = running(pass.buffers(), self.channels)?;
                rm.iter()
                    .zip(rv)
                    .map(|(m, v)| (f64::from(*m), 1.0 / (f64::from(*v) + f64::from(EPS)).sqrt()))
                    .unzip()
            }
        };
        let width = width.max(1);
        let run = self.run.max(1);
        // Σ dy and Σ dy·x̂ per channel.
        let mut sum_dy = vec![0.0f64; self.channels];
        let mut sum_dy_xhat = vec![0.0f64; self.channels];
        let samples = dy
            .as_slice()
            .chunks_exact(width)
            .zip(x.as_slice().chunks_exact(width));
        for (ds, xs) in samples {
            let runs = ds.chunks_exact(run).zip(xs.chunks_exact(run));
            for (k, (dr, xr)) in runs.enumerate() {
                let (Some(m), Some(i)) = (means.get(k), invstd.get(k)) else {
                    continue;
                };
                let (mut a, mut b) = (0.0f64, 0.0f64);
                for (d, x) in dr.iter().zip(xr) {
                    let d = f64::from(*d);
                    a += d;
                    b += d * (f64::from(*x) - m) * i;
                }
                if let (Some(s), Some(t)) = (sum_dy.get_mut(k), sum_dy_xhat.get_mut(k)) {
                    *s += a;
                    *t += b;
                }
            }
        }
        for (g, t) in dw.as_mut_slice().iter_mut().zip(&sum_dy_xhat) {
            *g = *t as f32;
        }
        for (g, s) in db.as_mut_slice().iter_mut().zip(&sum_dy) {
            *g = *s as f32;
        }
        let Some(dx) = dx else {
            return Ok(());
        };
        let n = x.ncols() as f64 * self.run as f64;
        let train = pass.mode() == Mode::Train;
        let samples = dx
            .as_mut_slice()
            .chunks_exact_mut(width)
            .zip(dy.as_slice().chunks_exact(width))
            .zip(x.as_slice().chunks_exact(width));
        for ((gs, ds), xs) in samples {
            let runs = gs
                .chunks_exact_mut(run)
                .zip(ds.chunks_exact(run))
                .zip(xs.chunks_exact(run));
            for (k, ((gr, dr), xr)) in runs.enumerate() {
                let (Some(m), Some(i), Some(w), Some(s), Some(t)) = (
                    means.get(k),
                    invstd.get(k),
                    w.get(k),
                    sum_dy.get(k),
                    sum_dy_xhat.get(k),
                ) else {
                    continue;
                };
                let wi = f64::from(*w) * i;
                for ((g, d), x) in gr.iter_mut().zip(dr).zip(xr) {
                    let d = f64::from(*d);
                    *g = if train {
                        let xhat = (f64::from(*x) - m) * i;
                        (wi * (d - s / n - xhat * t / n)) as f32
                    } else {
                        (wi * d) as f32
                    };
                }
            }
        }
        Ok(())
    }

    fn fuses_activation(&self) -> bool {
        true
    }
}

/// Layer normalization over the features of a flat input, PyTorch's `LayerNorm(features)`:
/// each sample is normalized by its own mean and biased variance (`eps` 1e-5), then scaled and
/// shifted by learned `weight` (starting at 1) and `bias` (0), of one value per feature. The
/// same in training and inference. An image reaching it does not compile.
///
/// # Example
/// ```
/// use lazynet::prelude::*;
///
/// let net = Net::new().push(LayerNorm::new()).bind::<U3>();
/// let y = net.forward(&Batch::<U3>::from_fn(1, |f, _| f as f32));
/// // (0, 1, 2) has mean 1 and variance 2/3.
/// let expected = 1.0 / (2.0f32 / 3.0 + 1e-5).sqrt();
/// assert!((y.as_matrix()[(2, 0)] - expected).abs() < 1e-5);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LayerNorm {
    _private: (),
}

impl LayerNorm {
    /// A layer normalization with PyTorch's settings: `eps` 1e-5, learned scale and shift.
    pub fn new() -> Self {
        LayerNorm { _private: () }
    }
}

impl Layer for LayerNorm {
    fn kind(&self) -> &'static str {
        "LayerNorm"
    }

    fn output_shape(&self, input: Option<&PartialShape>) -> Result<Option<PartialShape>, Fault> {
        if let Some(i) = input.filter(|i| i.0.len() != 1) {
            return Err(Fault::Rank {
                needs: "a flat input",
                found: i.0.iter().map(|d| d.unwrap_or(0)).collect(),
            });
        }
        Ok(input.cloned())
    }

    fn param_shapes(&self, input: Option<&PartialShape>) -> Vec<(Role, PartialShape)> {
        let f = PartialShape(vec![features(input)]);
        vec![(Role::Scale, f.clone()), (Role::Shift, f)]
    }

    fn kernel(&self, input: &[usize], _: &[usize]) -> Box<dyn Kernel> {
        Box::new(LayerNormKernel {
            features: input.first().copied().unwrap_or(0),
        })
    }
}

crate::shape_rule!(LayerNorm, flat -> same);

/// The bound computation of [`LayerNorm`].
#[derive(Clone, Copy, Debug)]
struct LayerNormKernel {
    features: usize,
}

impl LayerNormKernel {
    /// Checks the parameters it was given; returns the weight and bias.
    fn check<'p>(
        &self,
        params: &'p [Param],
        x: &DMatrix<f32>,
        y: (usize, usize),
    ) -> Result<(&'p [f32], &'p [f32]), ShapeError> {
        let [w, b] = params else {
            return Err(param_count("LayerNorm", params.len(), 2));
        };
        let f = (self.features, 1);
        check_shapes(
            "LayerNorm",
            &[
                ("the weight", w.value.shape(), f),
                ("the bias", b.value.shape(), f),
                ("the input", (x.nrows(), 1), f),
                ("the output", y, x.shape()),
            ],
        )?;
        Ok((w.value.as_slice(), b.value.as_slice()))
    }
}

/// The mean and 1/std of one sample, in `f64`.
fn sample_stats(xs: &[f32]) -> (f64, f64) {
    let n = xs.len().max(1) as f64;
    let mean = xs.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = xs
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n;
    (mean, 1.0 / (var + f64::from(EPS)).sqrt())
}

impl Kernel for LayerNormKernel {
    fn forward(
        &self,
        params: &[Param],
        x: &DMatrix<f32>,
        y: &mut DMatrix<f32>,
        then: Activation,
    ) -> Result<(), ShapeError> {
        let (w, b) = self.check(params, x, y.shape())?;
        let f = self.features.max(1);
        for (ys, xs) in y
            .as_mut_slice()
            .chunks_exact_mut(f)
            .zip(x.as_slice().chunks_exact(f))
        {
            let (mean, invstd) = sample_stats(xs);
            for (((y, x), w), b) in ys.iter_mut().zip(xs).zip(w).zip(b) {
                *y = ((f64::from(*x) - mean) * invstd) as f32 * w + b;
            }
        }
        then.apply(y.as_mut_slice(), &[], 1);
        Ok(())
    }

    fn backward(
        &self,
        params: &[Param],
        x: &DMatrix<f32>,
        _: &DMatrix<f32>,
        dy: &DMatrix<f32>,
        grads: &mut [DMatrix<f32>],
        dx: Option<&mut DMatrix<f32>>,
    ) -> Result<(), ShapeError> {
        let (w, _) = self.check(params, x, dy.shape())?;
        let [dw, db] = scale_shift_grads("LayerNorm", grads, self.features, x, dx.as_deref())?;
        let f = self.features.max(1);
        let n = f as f64;
        let mut sum_w = vec![0.0f64; f];
        let mut sum_b = vec![0.0f64; f];
        let mut dx = dx;
        for (s, (ds, xs)) in dy
            .as_slice()
            .chunks_exact(f)
            .zip(x.as_slice().chunks_exact(f))
            .enumerate()
        {
            let (mean, invstd) = sample_stats(xs);
            // Σ dx̂ and Σ dx̂·x̂ over the features, with dx̂ = dy·w.
            let (mut a, mut c) = (0.0f64, 0.0f64);
            for (((d, x), w), (gw, gb)) in ds
                .iter()
                .zip(xs)
                .zip(w)
                .zip(sum_w.iter_mut().zip(sum_b.iter_mut()))
            {
                let d = f64::from(*d);
                let xhat = (f64::from(*x) - mean) * invstd;
                *gw += d * xhat;
                *gb += d;
                let dxhat = d * f64::from(*w);
                a += dxhat;
                c += dxhat * xhat;
            }
            let Some(dx) = dx.as_deref_mut() else {
                continue;
            };
            let Some(gs) = dx.as_mut_slice().chunks_exact_mut(f).nth(s) else {
                continue;
            };
            for (((g, d), x), w) in gs.iter_mut().zip(ds).zip(xs).zip(w) {
                let xhat = (f64::from(*x) - mean) * invstd;
                let dxhat = f64::from(*d) * f64::from(*w);
                *g = (invstd * (dxhat - a / n - xhat * c / n)) as f32;
            }
        }
        for (g, s) in dw.as_mut_slice().iter_mut().zip(&sum_w) {
            *g = *s as f32;
        }
        for (g, s) in db.as_mut_slice().iter_mut().zip(&sum_b) {
            *g = *s as f32;
        }
        Ok(())
    }

    fn fuses_activation(&self) -> bool {
        true
    }
}

/// Dropout, PyTorch's `nn.Dropout(p)`: in training each value is zeroed with probability `p`
/// and the kept ones are scaled by `1/(1 − p)`; in inference it passes its input through.
///
/// The masks are drawn from the net's seed, the layer's place and the optimizer steps taken,
/// so a training run is reproducible bit for bit; the forward and backward passes of one
/// [`loss_and_grads`](crate::Net::loss_and_grads) use one mask.
///
/// # Example
/// ```
/// use lazynet::prelude::*;
///
/// assert!(Dropout::new(1.0).is_err());
/// assert!(Dropout::new(f32::NAN).is_err());
/// let net = Net::new().push(Dropout::new(0.5)?).bind::<U4>();
/// let x = Batch::<U4>::from_fn(2, |f, _| f as f32);
/// // Inference: no dropout.
/// assert_eq!(net.forward(&x), x);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dropout {
    p: f32,
}

impl Dropout {
    /// Dropout with probability `p` of zeroing a value.
    ///
    /// # Errors
    /// [`SettingError`] unless `0 ≤ p < 1` (NaN included).
    pub fn new(p: f32) -> Result<Self, SettingError> {
        if (0.0..1.0).contains(&p) {
            Ok(Dropout { p })
        } else {
            Err(SettingError {
                layer: "Dropout",
                name: "p",
                range: "in [0, 1)",
                value: p,
            })
        }
    }

    /// Its probability of zeroing a value.
    pub fn p(&self) -> f32 {
        self.p
    }
}

impl Layer for Dropout {
    fn kind(&self) -> &'static str {
        "Dropout"
    }

    fn output_shape(&self, input: Option<&PartialShape>) -> Result<Option<PartialShape>, Fault> {
        Ok(input.cloned())
    }

    fn param_shapes(&self, _: Option<&PartialShape>) -> Vec<(Role, PartialShape)> {
        Vec::new()
    }

    fn kernel(&self, _: &[usize], _: &[usize]) -> Box<dyn Kernel> {
        Box::new(DropoutKernel { p: self.p })
    }
}

crate::keeps_shape!(Dropout);

/// The bound computation of [`Dropout`].
#[derive(Clone, Copy, Debug)]
struct DropoutKernel {
    p: f32,
}

impl DropoutKernel {
    /// `out = in · mask / (1 − p)` with the mask of this pass, or `out = in` in inference.
    fn masked(&self, pass: &Pass<'_>, input: &[f32], out: &mut [f32]) {
        if pass.mode() == Mode::Eval || self.p == 0.0 {
            out.copy_from_slice(input);
            return;
        }
        let scale = 1.0 / (1.0 - self.p);
        let p = f64::from(self.p);
        let mut rng = pass.rng();
        // `x · mask / (1 − p)` as PyTorch multiplies: a dropped NaN or infinity is NaN.
        for (o, i) in out.iter_mut().zip(input) {
            *o = i * if rng.next_f64() < p { 0.0 } else { scale };
        }
    }
}

impl Kernel for DropoutKernel {
    fn forward(
        &self,
        _: &[Param],
        x: &DMatrix<f32>,
        y: &mut DMatrix<f32>,
        _: Activation,
    ) -> Result<(), ShapeError> {
        check_shapes("Dropout", &[("the output", y.shape(), x.shape())])?;
        y.as_mut_slice().copy_from_slice(x.as_slice());
        Ok(())
    }

    fn backward(
        &self,
        _: &[Param],
        x: &DMatrix<f32>,
        _: &DMatrix<f32>,
        dy: &DMatrix<f32>,
        _: &mut [DMatrix<f32>],
        dx: Option<&mut DMatrix<f32>>,
    ) -> Result<(), ShapeError> {
        if let Some(dx) = dx {
            check_shapes(
                "Dropout",
                &[
                    ("the output gradient", dy.shape(), x.shape()),
                    ("the input gradient", dx.shape(), x.shape()),
                ],
            )?;
            dx.as_mut_slice().copy_from_slice(dy.as_slice());
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
        check_shapes("Dropout", &[("the output", y.shape(), x.shape())])?;
        self.masked(pass, x.as_slice(), y.as_mut_slice());
        Ok(())
    }

    fn backward_with(
        &self,
        pass: &Pass<'_>,
        _: &[Param],
        x: &DMatrix<f32>,
        _: &DMatrix<f32>,
        dy: &DMatrix<f32>,
        _: &mut [DMatrix<f32>],
        dx: Option<&mut DMatrix<f32>>,
    ) -> Result<(), ShapeError> {
        if let Some(dx) = dx {
            check_shapes(
                "Dropout",
                &[
                    ("the output gradient", dy.shape(), x.shape()),
                    ("the input gradient", dx.shape(), x.shape()),
                ],
            )?;
            // The same mask as the forward pass: the same stream.
            self.masked(pass, dy.as_slice(), dx.as_mut_slice());
        }
        Ok(())
    }
}
