//! Activation layers whose backward pass needs more than their output: the leaky ReLU and the
//! GELU (their slope is read from the input: a negative leaky slope makes the output
//! ambiguous, and the GELU is not monotone) and the softmax (it mixes a sample's features).
//!
//! None of them is an [`Activation`]: a dense or convolution layer before them never fuses
//! them, and they run forward and backward through their own kernels.

use nalgebra::DMatrix;

use super::{check_shapes, Activation, Fault, Kernel, Layer, Param, PartialShape};
use crate::batch::softmax_in_place;
use crate::error::ShapeError;
use crate::init::Role;

/// The leaky rectified linear unit, PyTorch's `nn.LeakyReLU(negative_slope)`: `x` where
/// `x > 0`, `slope · x` elsewhere.
///
/// Any slope is accepted, as in PyTorch: 0 makes a ReLU, 1 the identity, and a negative slope
/// folds the negative half over. The backward pass reads the input, as PyTorch's
/// `leaky_relu_backward` does: the gradient passes where `x > 0` and is multiplied by the slope
/// elsewhere (at 0 too). NaN stays NaN; `−inf` becomes `slope · −inf`, so NaN for a slope of 0,
/// as in PyTorch.
///
/// Owns no parameters; its output has the shape of its input, flat or an image.
///
/// # Example
/// ```
/// use lazynet::prelude::*;
///
/// let net = Net::new().push(LeakyRelu::new(0.1)).bind::<U3>();
/// let y = net.forward(&Batch::<U3>::from_rows([-2.0, 0.0, 3.0])?);
/// assert_eq!(y.sample(0), Some(&[-0.2, 0.0, 3.0][..]));
/// assert_eq!(LeakyRelu::default().slope(), 0.01); // PyTorch's default
/// # Ok::<(), ShapeError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LeakyRelu {
    slope: f32,
}

impl LeakyRelu {
    /// A leaky ReLU of slope `slope` below 0 (PyTorch's `negative_slope`); any value, NaN
    /// included, is accepted, as PyTorch accepts it.
    ///
    /// ```
    /// use lazynet::prelude::*;
    ///
    /// let fold = LeakyRelu::new(-1.0); // |x|
    /// let y = Net::new().push(fold).bind::<U2>().forward(&Batch::<U2>::from_rows([-3.0, 2.0])?);
    /// assert_eq!(y.sample(0), Some(&[3.0, 2.0][..]));
    /// # Ok::<(), ShapeError>(())
    /// ```
    pub const fn new(slope: f32) -> Self {
        LeakyRelu { slope }
    }

    /// The slope below 0.
    ///
    /// ```
    /// use lazynet::prelude::*;
    ///
    /// assert_eq!(LeakyRelu::new(0.2).slope(), 0.2);
    /// ```
    pub const fn slope(&self) -> f32 {
        self.slope
    }
}

/// PyTorch's default slope, 0.01.
impl Default for LeakyRelu {
    fn default() -> Self {
        LeakyRelu::new(0.01)
    }
}

impl Layer for LeakyRelu {
    fn kind(&self) -> &'static str {
        "LeakyRelu"
    }
    fn output_shape(&self, input: Option<&PartialShape>) -> Result<Option<PartialShape>, Fault> {
        Ok(input.cloned())
    }
    fn param_shapes(&self, _: Option<&PartialShape>) -> Vec<(Role, PartialShape)> {
        Vec::new()
    }
    fn kernel(&self, _: &[usize], _: &[usize]) -> Box<dyn Kernel> {
        Box::new(LeakyReluKernel(self.slope))
    }
}

crate::keeps_shape!(LeakyRelu);

/// The leaky ReLU at one value (PyTorch: `x > 0 ? x : x * slope`).
#[inline]
fn leaky_relu(x: f32, slope: f32) -> f32 {
    if x > 0.0 {
        x
    } else {
        x * slope
    }
}

/// The bound computation of [`LeakyRelu`]: its slope.
#[derive(Clone, Copy, Debug)]
struct LeakyReluKernel(f32);

impl Kernel for LeakyReluKernel {
    fn forward(
        &self,
        _: &[Param],
        x: &DMatrix<f32>,
        y: &mut DMatrix<f32>,
        _: Activation,
    ) -> Result<(), ShapeError> {
        let slope = self.0;
        map_input("LeakyRelu", x, y, |x| leaky_relu(x, slope))
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
        let slope = self.0;
        map_gradient(
            "LeakyRelu",
            x,
            dy,
            dx,
            |x, g| if x > 0.0 { g } else { g * slope },
        )
    }
}

/// The Gaussian error linear unit, PyTorch's default `nn.GELU()` (`approximate='none'`):
/// `x · Φ(x) = x/2 · (1 + erf(x/√2))`, with the exact error function, Φ being the standard
/// normal distribution function.
///
/// Computed in `f64` and rounded once to `f32`, Φ(x) as `erfc(−x/√2)/2` (the `libm` crate's
/// `erfc`, a port of musl's): each output is the `f32` nearest the exact value, also where
/// `1 + erf(x/√2)` would cancel (x below −3 or so). PyTorch computes in `f32` on the CPU and
/// agrees to a unit or two in the last place for x above −3 (GELU(1) = 0.841 344 746… is
/// `0.8413448` here, the nearest `f32`, and `0.8413447` in PyTorch); below, its output has
/// fewer correct digits and is `−0` from about −5.5 on, where this one is a tiny negative
/// value (an absolute difference under 1e-8).
///
/// The backward pass reads the input, as PyTorch's `gelu_backward`:
/// `dy · (Φ(x) + x·φ(x))` with φ the standard normal density, in `f64` as well.
///
/// NaN stays NaN. At the infinities this layer gives the limits: `+inf` for `+inf` and `−0`
/// for `−inf`, with slopes 1 and 0 there. PyTorch's formula gives NaN at `−inf` (`−inf · 0`)
/// and its x86 CPU kernel at `+inf` as well; PyTorch tracks both as bugs (issues 185770 and
/// 187293) and the fix under review returns these limits.
///
/// Owns no parameters; its output has the shape of its input, flat or an image.
///
/// # Example
/// ```
/// use lazynet::prelude::*;
///
/// let net = Net::new()
///     .push(Dense::<U8>::new())
///     .push(Gelu)
///     .push(Dense::<U2>::new())
///     .seed(1)
///     .bind::<U4>();
/// let y = net.forward(&Batch::<U4>::from_rows([0.5, -1.0, 2.0, 0.0])?);
/// assert_eq!(y.samples(), 1);
///
/// let gelu = Net::new().push(Gelu).bind::<U2>();
/// let y = gelu.forward(&Batch::<U2>::from_rows([1.0, -1.0])?);
/// assert_eq!(y.sample(0), Some(&[0.841_344_8, -0.158_655_26][..])); // x · Φ(x)
/// # Ok::<(), ShapeError>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Gelu;

impl Layer for Gelu {
    fn kind(&self) -> &'static str {
        "Gelu"
    }
    fn output_shape(&self, input: Option<&PartialShape>) -> Result<Option<PartialShape>, Fault> {
        Ok(input.cloned())
    }
    fn param_shapes(&self, _: Option<&PartialShape>) -> Vec<(Role, PartialShape)> {
        Vec::new()
    }
    fn kernel(&self, _: &[usize], _: &[usize]) -> Box<dyn Kernel> {
        Box::new(GeluKernel)
    }
}

crate::keeps_shape!(Gelu);

/// `1/√(2π)`, the standard normal density at 0.
const FRAC_1_SQRT_2PI: f64 = 0.398_942_280_401_432_7;

/// Φ(x), the standard normal distribution function, as `erfc(−x/√2)/2`: no cancellation for
/// negative `x`.
#[inline]
fn normal_cdf(x: f64) -> f64 {
    0.5 * libm::erfc(-x * core::f64::consts::FRAC_1_SQRT_2)
}

/// The GELU at one value, rounded once from `f64`; `−0` at `−inf` (the limit; `−inf · 0` would
/// be NaN).
#[inline]
fn gelu(x: f32) -> f32 {
    if x == f32::NEG_INFINITY {
        return -0.0;
    }
    let x = f64::from(x);
    (x * normal_cdf(x)) as f32
}

/// The GELU's derivative at one value, `Φ(x) + x·φ(x)`: 1 at `+inf` and 0 at `−inf` (the
/// limits; `±inf · 0` would be NaN).
#[inline]
fn gelu_slope(x: f32) -> f64 {
    let x = f64::from(x);
    let cdf = normal_cdf(x);
    if x.is_infinite() {
        return cdf;
    }
    cdf + x * FRAC_1_SQRT_2PI * (-0.5 * x * x).exp()
}

/// The bound computation of [`Gelu`].
#[derive(Clone, Copy, Debug)]
struct GeluKernel;

impl Kernel for GeluKernel {
    fn forward(
        &self,
        _: &[Param],
        x: &DMatrix<f32>,
        y: &mut DMatrix<f32>,
        _: Activation,
    ) -> Result<(), ShapeError> {
        map_input("Gelu", x, y, gelu)
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
        map_gradient("Gelu", x, dy, dx, |x, g| {
            (f64::from(g) * gelu_slope(x)) as f32
        })
    }
}

/// The softmax over a sample's features, PyTorch's `nn.Softmax(dim=1)` on an `(N, F)` input:
/// `y_i = exp(x_i − m) / Σ_j exp(x_j − m)`, `m` the sample's largest value, so that no logit
/// is too large (1e30 gives a probability of 1, not NaN).
///
/// Takes a flat input: an image reaching it does not compile (`` `lazynet::layer::Softmax`
/// needs a flat input, but receives an image ``, with the note `` put `Flatten` before it ``),
/// and a layer that hides it from the compiler gets [`ShapeError::Rank`] from `try_bind`. Owns
/// no parameters; its output has the width of its input.
///
/// It computes what [`Batch::softmax`](crate::Batch::softmax) computes, to the bit: `exp` in
/// `f32`, the sum and the division in `f64`. NaN and the infinities behave as in PyTorch,
/// whose kernel subtracts the maximum too: a sample that holds a NaN or a `+inf` becomes all
/// NaN (`+inf − +inf` is NaN, and NaN spreads through the sum), and so does a sample whose
/// values are all `−inf`; a `−inf` among finite values gets probability 0.
///
/// The backward pass is PyTorch's `_softmax_backward_data`, from the output:
/// `dx = y ⊙ (dy − Σ dy ⊙ y)` per sample, the sum in `f64`.
///
/// A net trained with [`CrossEntropy`](crate::train::CrossEntropy) should not end with it:
/// that loss takes logits and applies its own log-softmax, as PyTorch's
/// `nn.CrossEntropyLoss` does.
///
/// # Example
/// ```
/// use lazynet::prelude::*;
///
/// let net = Net::new()
///     .push(Dense::<U8>::new())
///     .push(Relu)
///     .push(Dense::<U3>::new())
///     .push(Softmax)
///     .seed(3)
///     .bind::<U4>();
/// let p = net.forward(&Batch::<U4>::from_rows([0.5, -1.0, 2.0, 0.0])?);
/// let total: f32 = p.as_matrix().iter().sum();
/// assert!((total - 1.0).abs() < 1e-6);
/// # Ok::<(), ShapeError>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Softmax;

impl Layer for Softmax {
    fn kind(&self) -> &'static str {
        "Softmax"
    }
    fn output_shape(&self, input: Option<&PartialShape>) -> Result<Option<PartialShape>, Fault> {
        match input {
            None => Ok(Some(PartialShape(vec![None]))),
            Some(input) if input.rank() == 1 => Ok(Some(input.clone())),
            Some(input) => Err(Fault::Rank {
                needs: "a flat input",
                found: input.or_zero(),
            }),
        }
    }
    fn param_shapes(&self, _: Option<&PartialShape>) -> Vec<(Role, PartialShape)> {
        Vec::new()
    }
    fn kernel(&self, _: &[usize], _: &[usize]) -> Box<dyn Kernel> {
        Box::new(SoftmaxKernel)
    }
}

crate::shape_rule!(Softmax, flat -> same);

/// The bound computation of [`Softmax`].
#[derive(Clone, Copy, Debug)]
struct SoftmaxKernel;

impl Kernel for SoftmaxKernel {
    fn forward(
        &self,
        _: &[Param],
        x: &DMatrix<f32>,
        y: &mut DMatrix<f32>,
        _: Activation,
    ) -> Result<(), ShapeError> {
        check_shapes("Softmax", &[("the output", y.shape(), x.shape())])?;
        for (y, x) in y.as_mut_slice().iter_mut().zip(x.as_slice()) {
            *y = *x;
        }
        // A batch of zero features is an empty slice: nothing to chunk.
        let rows = x.nrows().max(1);
        y.as_mut_slice()
            .chunks_exact_mut(rows)
            .for_each(softmax_in_place);
        Ok(())
    }

    fn backward(
        &self,
        _: &[Param],
        x: &DMatrix<f32>,
        y: &DMatrix<f32>,
        dy: &DMatrix<f32>,
        _: &mut [DMatrix<f32>],
        dx: Option<&mut DMatrix<f32>>,
    ) -> Result<(), ShapeError> {
        let Some(dx) = dx else {
            return Ok(());
        };
        let buffers = [
            ("the output", y.shape(), x.shape()),
            ("the output gradient", dy.shape(), x.shape()),
            ("the input gradient", dx.shape(), x.shape()),
        ];
        check_shapes("Softmax", &buffers)?;
        let rows = x.nrows().max(1);
        let samples = dx
            .as_mut_slice()
            .chunks_exact_mut(rows)
            .zip(dy.as_slice().chunks_exact(rows))
            .zip(y.as_slice().chunks_exact(rows));
        for ((dx, dy), y) in samples {
            let dot: f64 = dy
                .iter()
                .zip(y)
                .map(|(&g, &p)| f64::from(g) * f64::from(p))
                .sum();
            for ((d, &g), &p) in dx.iter_mut().zip(dy).zip(y) {
                *d = (f64::from(p) * (f64::from(g) - dot)) as f32;
            }
        }
        Ok(())
    }
}

/// The forward pass of an element-wise layer: `y = f(x)` value by value, after checking that
/// `y` has the shape of `x`.
fn map_input(
    kind: &str,
    x: &DMatrix<f32>,
    y: &mut DMatrix<f32>,
    f: impl Fn(f32) -> f32,
) -> Result<(), ShapeError> {
    check_shapes(kind, &[("the output", y.shape(), x.shape())])?;
    for (y, &x) in y.as_mut_slice().iter_mut().zip(x.as_slice()) {
        *y = f(x);
    }
    Ok(())
}

/// The backward pass of an element-wise layer whose slope is read from its input:
/// `dx = d(x, dy)` value by value, when `dx` is wanted, after checking the shapes.
fn map_gradient(
    kind: &str,
    x: &DMatrix<f32>,
    dy: &DMatrix<f32>,
    dx: Option<&mut DMatrix<f32>>,
    d: impl Fn(f32, f32) -> f32,
) -> Result<(), ShapeError> {
    let Some(dx) = dx else {
        return Ok(());
    };
    let buffers = [
        ("the output gradient", dy.shape(), x.shape()),
        ("the input gradient", dx.shape(), x.shape()),
    ];
    check_shapes(kind, &buffers)?;
    let values = dx.as_mut_slice().iter_mut().zip(x.as_slice());
    for ((d_x, &x), &g) in values.zip(dy.as_slice()) {
        *d_x = d(x, g);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `layer`'s kernel on one sample.
    fn run(layer: &dyn Layer, x: &[f32]) -> Vec<f32> {
        let kernel = layer.kernel(&[x.len()], &[x.len()]);
        let x = DMatrix::from_column_slice(x.len(), 1, x);
        let mut y = DMatrix::zeros(x.nrows(), 1);
        kernel
            .forward(&[], &x, &mut y, Activation::Identity)
            .unwrap();
        y.as_slice().to_vec()
    }

    /// The input gradient of `layer`'s kernel on one sample, for the output gradient `dy`.
    fn grad(layer: &dyn Layer, x: &[f32], dy: &[f32]) -> Vec<f32> {
        let kernel = layer.kernel(&[x.len()], &[x.len()]);
        let x = DMatrix::from_column_slice(x.len(), 1, x);
        let mut y = DMatrix::zeros(x.nrows(), 1);
        kernel
            .forward(&[], &x, &mut y, Activation::Identity)
            .unwrap();
        let dy = DMatrix::from_column_slice(dy.len(), 1, dy);
        let mut dx = DMatrix::zeros(x.nrows(), 1);
        kernel
            .backward(&[], &x, &y, &dy, &mut [], Some(&mut dx))
            .unwrap();
        dx.as_slice().to_vec()
    }

    #[test]
    fn leaky_relu_values_and_slopes() {
        let layer = LeakyRelu::new(0.1);
        let y = run(&layer, &[-2.0, -0.0, 0.0, 3.0]);
        assert_eq!(y, [-0.2, 0.0, 0.0, 3.0]);
        assert!(y[1].is_sign_negative(), "-0 · 0.1 is -0, as in PyTorch");
        // The slope at 0 is the leaky one (PyTorch: `x > 0 ? dy : dy * slope`).
        let dx = grad(&layer, &[-2.0, 0.0, 3.0], &[1.0, 1.0, 1.0]);
        assert_eq!(dx, [0.1, 0.1, 1.0]);
        assert_eq!(LeakyRelu::default(), LeakyRelu::new(0.01));
    }

    #[test]
    fn leaky_relu_with_a_negative_slope_reads_the_input() {
        // y = |x|: the outputs of -2 and 2 are equal, their slopes are not.
        let layer = LeakyRelu::new(-1.0);
        assert_eq!(run(&layer, &[-2.0, 2.0]), [2.0, 2.0]);
        assert_eq!(grad(&layer, &[-2.0, 2.0], &[1.0, 1.0]), [-1.0, 1.0]);
    }

    #[test]
    fn leaky_relu_nan_and_infinities_as_pytorch() {
        let y = run(
            &LeakyRelu::new(0.5),
            &[f32::NAN, f32::INFINITY, f32::NEG_INFINITY],
        );
        assert!(y[0].is_nan());
        assert_eq!(y[1..], [f32::INFINITY, f32::NEG_INFINITY]);
        // −inf · 0 is NaN, as PyTorch's `x * negative_slope`.
        assert!(run(&LeakyRelu::new(0.0), &[f32::NEG_INFINITY])[0].is_nan());
        assert_eq!(
            run(&LeakyRelu::new(-2.0), &[f32::NEG_INFINITY]),
            [f32::INFINITY]
        );
        // A NaN input takes the slope below 0 (NaN > 0 is false), as PyTorch's.
        assert_eq!(grad(&LeakyRelu::new(0.5), &[f32::NAN], &[2.0]), [1.0]);
    }

    #[test]
    fn gelu_values() {
        // x · Φ(x): Φ(1) = 0.841 344 746 068 543, Φ(−1) = 0.158 655 253 931 457. Each output
        // is the f32 nearest the exact value; PyTorch's f32 kernel gives 0.8413447 (one unit
        // in the last place below) and −0.15865526.
        let y = run(&Gelu, &[1.0, -1.0]);
        assert_eq!(
            y,
            [
                0.841_344_746_068_543_f64 as f32,
                -0.158_655_253_931_457_f64 as f32
            ]
        );
        assert_eq!(y, [0.841_344_8, -0.158_655_26]);
        let ulp = f32::EPSILON / 2.0;
        assert!((y[0] - 0.841_344_7).abs() <= ulp && (y[1] - -0.158_655_26).abs() <= ulp);
        assert_eq!(run(&Gelu, &[0.0]), [0.0]);
        // Φ(2) = 0.977 249 868 051 821; Φ(−3) = 0.001 349 898 031 630 09.
        let y = run(&Gelu, &[2.0, -3.0]);
        assert_eq!(y[0], (2.0 * 0.977_249_868_051_821_f64) as f32);
        assert_eq!(y[1], (-3.0 * 0.001_349_898_031_630_09_f64) as f32);
        // Far below 0, the exact value, not 0: Φ(−10) = 7.619 853 024 160 53e-24.
        assert_eq!(
            run(&Gelu, &[-10.0]),
            [(-10.0 * 7.619_853_024_160_53e-24_f64) as f32]
        );
    }

    #[test]
    fn gelu_slopes() {
        // Φ(x) + x·φ(x): at 0, 1/2; at 1, 0.841 344 746 + 0.241 970 725 = 1.083 315 471.
        let dx = grad(&Gelu, &[0.0, 1.0, -1.0], &[1.0, 1.0, 2.0]);
        assert_eq!(dx[0], 0.5);
        assert_eq!(dx[1], 1.083_315_471_f64 as f32);
        // At −1: 0.158 655 254 − 0.241 970 725 = −0.083 315 471, times 2.
        assert_eq!(dx[2], (2.0 * -0.083_315_471_f64) as f32);
    }

    #[test]
    fn gelu_nan_and_infinities() {
        let y = run(
            &Gelu,
            &[f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 3e38, -3e38],
        );
        assert!(y[0].is_nan());
        assert_eq!(y[1..], [f32::INFINITY, 0.0, 3e38, 0.0]);
        assert!(y[2].is_sign_negative() && y[4].is_sign_negative());
        let dx = grad(
            &Gelu,
            &[f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 3e38, -3e38],
            &[1.0; 5],
        );
        assert!(dx[0].is_nan());
        assert_eq!(dx[1..], [1.0, 0.0, 1.0, 0.0]);
    }

    #[test]
    fn softmax_values() {
        // e^−2, e^−1, 1 over their sum 1.503 214 724.
        let y = run(&Softmax, &[1.0, 2.0, 3.0]);
        let expected = [0.090_030_57, 0.244_728_47, 0.665_240_94];
        for (y, e) in y.iter().zip(expected) {
            assert!((y - e).abs() <= 1e-7, "{y} against {e}");
        }
        // A huge logit is a probability of 1, not NaN.
        assert_eq!(run(&Softmax, &[1e30, 0.0, -1e30]), [1.0, 0.0, 0.0]);
        assert_eq!(run(&Softmax, &[f32::MAX, -f32::MAX]), [1.0, 0.0]);
        assert_eq!(run(&Softmax, &[5.0]), [1.0]);
    }

    #[test]
    fn softmax_nan_and_infinities_as_pytorch() {
        let all_nan = |x: &[f32]| run(&Softmax, x).iter().all(|p| p.is_nan());
        assert!(all_nan(&[f32::NAN, 0.0, 1.0]));
        assert!(all_nan(&[0.0, f32::NAN]));
        assert!(all_nan(&[f32::INFINITY, 0.0]));
        assert!(all_nan(&[f32::INFINITY, f32::INFINITY]));
        assert!(all_nan(&[f32::NEG_INFINITY, f32::NEG_INFINITY]));
        assert_eq!(run(&Softmax, &[f32::NEG_INFINITY, 0.0]), [0.0, 1.0]);
    }

    #[test]
    fn softmax_backward_is_y_times_dy_minus_its_mean_under_y() {
        let y = run(&Softmax, &[0.0, 0.0]);
        assert_eq!(y, [0.5, 0.5]);
        // Σ dy·y = 1.5: dx = 0.5 · (1 − 1.5, 2 − 1.5).
        assert_eq!(grad(&Softmax, &[0.0, 0.0], &[1.0, 2.0]), [-0.25, 0.25]);
        // A gradient equal on every feature moves nothing (the softmax is shift-invariant).
        let dx = grad(&Softmax, &[1.0, 2.0, 3.0], &[7.0, 7.0, 7.0]);
        assert!(dx.iter().all(|d| d.abs() < 1e-6), "{dx:?}");
    }

    #[test]
    fn softmax_needs_a_flat_input() {
        let flat = PartialShape(vec![Some(5)]);
        assert_eq!(Softmax.output_shape(Some(&flat)), Ok(Some(flat.clone())));
        assert_eq!(
            Softmax.output_shape(None),
            Ok(Some(PartialShape(vec![None])))
        );
        let image = PartialShape(vec![Some(3), None, Some(5)]);
        assert_eq!(
            Softmax.output_shape(Some(&image)),
            Err(Fault::Rank {
                needs: "a flat input",
                found: vec![3, 0, 5]
            })
        );
    }

    #[test]
    fn element_wise_ones_keep_any_shape() {
        let image = PartialShape(vec![Some(3), None, Some(5)]);
        assert_eq!(Gelu.output_shape(Some(&image)), Ok(Some(image.clone())));
        assert_eq!(
            LeakyRelu::default().output_shape(Some(&image)),
            Ok(Some(image.clone()))
        );
        assert_eq!(Gelu.output_shape(None), Ok(None));
    }

    #[test]
    fn no_parameters_no_fusing_and_their_kinds() {
        let layers: [&dyn Layer; 3] = [&LeakyRelu::default(), &Gelu, &Softmax];
        let kinds: Vec<_> = layers.iter().map(|l| l.kind()).collect();
        assert_eq!(kinds, ["LeakyRelu", "Gelu", "Softmax"]);
        for layer in layers {
            assert!(layer.param_shapes(None).is_empty());
            let kernel = layer.kernel(&[4], &[4]);
            assert_eq!(kernel.activation(), None, "{}", layer.kind());
            assert!(!kernel.fuses_activation());
            assert!(!kernel.is_reshape());
        }
    }

    #[test]
    fn wrong_buffers_are_errors_not_panics() {
        let layers: [&dyn Layer; 3] = [&LeakyRelu::default(), &Gelu, &Softmax];
        let x = DMatrix::<f32>::zeros(3, 2);
        for layer in layers {
            let kernel = layer.kernel(&[3], &[3]);
            for bad in [(2, 2), (3, 1), (0, 0)] {
                let mut wrong = DMatrix::zeros(bad.0, bad.1);
                let fwd = kernel.forward(&[], &x, &mut wrong, Activation::Identity);
                assert!(
                    matches!(fwd, Err(ShapeError::Contract { .. })),
                    "{}",
                    layer.kind()
                );
                let mut dx = DMatrix::zeros(3, 2);
                let back = kernel.backward(&[], &x, &x, &wrong, &mut [], Some(&mut dx));
                assert!(matches!(back, Err(ShapeError::Contract { .. })));
                let back = kernel.backward(&[], &x, &x, &x, &mut [], Some(&mut wrong));
                assert!(matches!(back, Err(ShapeError::Contract { .. })));
            }
            // No input gradient wanted: nothing to compute, nothing to check.
            assert_eq!(kernel.backward(&[], &x, &x, &x, &mut [], None), Ok(()));
            // Zero features or zero samples: nothing to compute.
            for empty in [DMatrix::zeros(0, 2), DMatrix::zeros(3, 0)] {
                let mut y = empty.clone();
                assert_eq!(
                    kernel.forward(&[], &empty, &mut y, Activation::Identity),
                    Ok(())
                );
                let mut dx = empty.clone();
                let back = kernel.backward(&[], &empty, &y, &empty, &mut [], Some(&mut dx));
                assert_eq!(back, Ok(()));
            }
        }
        // Softmax also checks the output it is given for its backward pass.
        let kernel = Softmax.kernel(&[3], &[3]);
        let mut dx = DMatrix::zeros(3, 2);
        let short = DMatrix::zeros(2, 2);
        let back = kernel.backward(&[], &x, &short, &x, &mut [], Some(&mut dx));
        assert!(matches!(back, Err(ShapeError::Contract { .. })));
    }
}
