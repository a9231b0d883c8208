//! The 2-d convolution layer.

use typenum::{Unsigned, U0, U1};

use nalgebra::DMatrix;

use super::{
    check_shapes, param_count, Activation, DeclaresInput, Fault, Infer, Kernel, Layer, LayerOn,
    Param, PartialShape,
};
use crate::alloc::{try_zeros, MAX_VALUES};
use crate::dim::{Dim, Dyn, StaticDim};
use crate::error::ShapeError;
use crate::init::Role;
use crate::kernels::{self, Taps};
use crate::list::{Follows, Unknown};
use crate::rules::{Input, Proven, TakesImage};
use crate::shape::{Image, Shape};
use crate::spatial::{plane, Geom2d, ImageHeight, ImageWidth, OutHeight, OutWidth, Plane};

/// A 2-d convolution over images of shape (channels, height, width), like PyTorch's
/// `nn.Conv2d`: square kernels, the same stride, padding and dilation along both axes, zero
/// padding, and the number of input channels inferred when the net is bound.
///
/// Its parameters are `{index}.weight`, of shape `[out_channels, in_channels, kernel, kernel]`,
/// and `{index}.bias`, of shape `[out_channels]` (unless made
/// [`without_bias`](Conv2d::without_bias)).
///
/// Along each axis the output size is `(size + 2·padding − dilation·(kernel − 1) − 1) / stride
/// + 1`. When the image size and these four numbers are typenum numbers the compiler computes
/// it, and a kernel larger than the padded image is a compile error; when one of them is known
/// only at run time, `try_bind` computes it and returns a [`ShapeError`](crate::ShapeError).
///
/// # Type parameters
/// * `O`: the number of output channels.
/// * `K`: the kernel size.
/// * `S`: the stride (1 unless set with [`stride`](Conv2d::stride)).
/// * `P`: the zero padding on each side (0 unless set with [`padding`](Conv2d::padding)).
/// * `D`: the dilation (1 unless set with [`dilation`](Conv2d::dilation)).
///
/// Each is a typenum number or [`Dyn`]: [`Conv2d::dynamic`] and the `*_size` methods take
/// run-time numbers.
///
/// # Example
/// ```
/// use lazynet::prelude::*;
///
/// // 16 output channels, 3×3 kernel, padding 1: the image size is kept.
/// let same = Conv2d::<U16, U3>::new().padding::<U1>();
/// let net = Net::new().push(same).bind::<Image<U1, U28, U28>>();
/// assert_eq!(net.output_dims(), [16, 28, 28]);
/// assert_eq!(net.param_shapes()[0], [16, 1, 3, 3]);
///
/// // The same layer with every number read at run time.
/// let run_time = Conv2d::dynamic(16, 3).padding_size(1).stride_size(2);
/// let net = Net::new().push(run_time).try_bind(Image::dynamic(1, 28, 28))?;
/// assert_eq!(net.output_dims(), [16, 14, 14]);
/// # Ok::<(), ShapeError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Conv2d<O, K, S = U1, P = U0, D = U1> {
    out: O,
    kernel: K,
    stride: S,
    padding: P,
    dilation: D,
    bias: bool,
}

impl<O: StaticDim, K: StaticDim> Conv2d<O, K> {
    /// A convolution of `O` output channels and a `K × K` kernel; stride 1, no padding,
    /// dilation 1, with a bias.
    pub fn new() -> Self {
        Conv2d {
            out: O::default(),
            kernel: K::default(),
            stride: U1::default(),
            padding: U0::default(),
            dilation: U1::default(),
            bias: true,
        }
    }
}

impl<O: StaticDim, K: StaticDim> Default for Conv2d<O, K> {
    fn default() -> Self {
        Self::new()
    }
}

impl Conv2d<Dyn, Dyn> {
    /// A convolution whose number of output channels and kernel size are known only at run
    /// time; stride 1, no padding, dilation 1, with a bias.
    ///
    /// A kernel of 0 is reported by `try_bind`. Zero output channels are allowed, as in a
    /// dense layer of width 0: the layer outputs an empty image.
    pub fn dynamic(out_channels: usize, kernel: usize) -> Self {
        Conv2d {
            out: Dyn(out_channels),
            kernel: Dyn(kernel),
            stride: U1::default(),
            padding: U0::default(),
            dilation: U1::default(),
            bias: true,
        }
    }
}

impl<O: Dim, K: Dim, S: Dim, P: Dim, D: Dim> Conv2d<O, K, S, P, D> {
    /// Sets the stride, known to the compiler.
    pub fn stride<S2: StaticDim>(self) -> Conv2d<O, K, S2, P, D> {
        self.with(S2::default(), self.padding, self.dilation)
    }

    /// Sets the stride, known at run time; 0 is reported by `try_bind`.
    pub fn stride_size(self, stride: usize) -> Conv2d<O, K, Dyn, P, D> {
        self.with(Dyn(stride), self.padding, self.dilation)
    }

    /// Sets the zero padding on each side, known to the compiler (`U0` allowed).
    pub fn padding<P2: Dim + Unsigned>(self) -> Conv2d<O, K, S, P2, D> {
        self.with(self.stride, P2::default(), self.dilation)
    }

    /// Sets the zero padding on each side, known at run time.
    pub fn padding_size(self, padding: usize) -> Conv2d<O, K, S, Dyn, D> {
        self.with(self.stride, Dyn(padding), self.dilation)
    }

    /// Sets the dilation (the step between kernel taps), known to the compiler.
    pub fn dilation<D2: StaticDim>(self) -> Conv2d<O, K, S, P, D2> {
        self.with(self.stride, self.padding, D2::default())
    }

    /// Sets the dilation, known at run time; 0 is reported by `try_bind`.
    pub fn dilation_size(self, dilation: usize) -> Conv2d<O, K, S, P, Dyn> {
        self.with(self.stride, self.padding, Dyn(dilation))
    }

    /// Drops the bias (PyTorch's `bias=False`): the layer owns only its weight.
    pub fn without_bias(mut self) -> Self {
        self.bias = false;
        self
    }

    /// Whether the layer has a bias.
    pub fn has_bias(&self) -> bool {
        self.bias
    }

    fn with<S2, P2, D2>(self, stride: S2, padding: P2, dilation: D2) -> Conv2d<O, K, S2, P2, D2> {
        Conv2d {
            out: self.out,
            kernel: self.kernel,
            stride,
            padding,
            dilation,
            bias: self.bias,
        }
    }

    /// Kernel, stride, padding, dilation.
    fn hyper(&self) -> [usize; 4] {
        [
            self.kernel.size(),
            self.stride.size(),
            self.padding.size(),
            self.dilation.size(),
        ]
    }
}

impl<O: Dim, K: Dim, S: Dim, P: Dim, D: Dim> Layer for Conv2d<O, K, S, P, D> {
    fn kind(&self) -> &'static str {
        "Conv2d"
    }

    fn output_shape(&self, input: Option<&PartialShape>) -> Result<Option<PartialShape>, Fault> {
        let [_, h, w] = plane(input, self.hyper())?;
        Ok(Some(PartialShape(vec![Some(self.out.size()), h, w])))
    }

    fn param_shapes(&self, input: Option<&PartialShape>) -> Vec<(Role, PartialShape)> {
        let in_c = input.and_then(|i| i.0.first().copied().flatten());
        let (out, k) = (Some(self.out.size()), Some(self.kernel.size()));
        let mut shapes = vec![(Role::Weight, PartialShape(vec![out, in_c, k, k]))];
        if self.bias {
            shapes.push((Role::Bias, PartialShape(vec![out])));
        }
        shapes
    }

    /// The patches of one sample (im2col): one row per output pixel, one column per tap.
    fn scratch(&self, input: &[usize], output: &[usize]) -> Vec<(&'static str, Vec<usize>)> {
        let k = self.kernel.size();
        match (input, output) {
            ([c, _, _], [_, oh, ow]) => vec![("patch buffer", vec![*oh, *ow, *c, k, k])],
            _ => Vec::new(),
        }
    }

    fn kernel(&self, input: &[usize], _: &[usize]) -> Box<dyn Kernel> {
        Box::new(ConvKernel {
            geom: Geom2d::new(input, self.hyper()),
            out_c: self.out.size(),
        })
    }
}

/// The bound computation of [`Conv2d`]: im2col and one GEMM per sample, then bias and the
/// fused activation.
#[derive(Clone, Copy, Debug)]
struct ConvKernel {
    geom: Geom2d,
    out_c: usize,
}

impl ConvKernel {
    /// The patch buffer of one sample and the tap positions, allocated fallibly.
    fn taps(&self, taps: usize) -> Result<Taps, ShapeError> {
        let g = &self.geom;
        let pixels = g.out_h * g.out_w;
        let what = || format!("the patch buffer of a Conv2d, {pixels} × {taps} values");
        let work = try_zeros(pixels, taps, what)?;
        Taps::new(g, work).ok_or_else(|| ShapeError::OutOfMemory {
            what: format!("the tap positions of a Conv2d, 2 × {} runs", g.kernel),
            values: 2 * g.kernel as u128,
        })
    }

    /// Checks that the output (or gradient) of `samples` samples and one sample's patches
    /// fit in memory together.
    fn fits(&self, taps: usize, samples: usize) -> Result<(), ShapeError> {
        let g = &self.geom;
        let (pixels, out_len) = (g.out_h * g.out_w, self.out_c * g.out_h * g.out_w);
        let out_values = out_len as u128 * samples as u128;
        let patch_values = pixels as u128 * taps as u128;
        let together = if out_values == 0 {
            0
        } else {
            out_values + patch_values
        };
        if crate::alloc::fits_in_memory(together) && patch_values <= MAX_VALUES as u128 {
            return Ok(());
        }
        Err(ShapeError::OutOfMemory {
            what: format!(
                "the output ({out_len} values × {samples} samples) and the patch buffer ({pixels} × {taps} values) of a Conv2d"
            ),
            values: together,
        })
    }
}

impl ConvKernel {
    /// The weight, after checking the parameters: a weight `out_c × (in_c·k·k)` and an optional
    /// bias `out_c × 1`.
    fn check_params<'a>(&self, params: &'a [Param]) -> Result<&'a Param, ShapeError> {
        let g = &self.geom;
        let (Some(w), 1..=2) = (params.first(), params.len()) else {
            return Err(param_count("Conv2d", params.len(), 2));
        };
        let mut buffers = vec![(
            "the weight",
            w.value().shape(),
            (self.out_c, g.c * g.kernel * g.kernel),
        )];
        if let Some(b) = params.get(1) {
            buffers.push(("the bias", b.value().shape(), (self.out_c, 1)));
        }
        check_shapes("Conv2d", &buffers)?;
        Ok(w)
    }

    /// The input's shape for `n` samples.
    fn input(&self, n: usize) -> (usize, usize) {
        (self.geom.c * self.geom.h * self.geom.w, n)
    }

    /// The output's shape for `n` samples.
    fn output(&self, n: usize) -> (usize, usize) {
        (self.out_c * self.geom.out_h * self.geom.out_w, n)
    }
}

impl Kernel for ConvKernel {
    fn forward(
        &self,
        params: &[Param],
        x: &DMatrix<f32>,
        y: &mut DMatrix<f32>,
        then: Activation,
    ) -> Result<(), ShapeError> {
        let w = self.check_params(params)?;
        let n = x.ncols();
        check_shapes(
            "Conv2d",
            &[
                ("the input", x.shape(), self.input(n)),
                ("the output", y.shape(), self.output(n)),
            ],
        )?;
        // An empty output (no samples, no channels) needs no patches.
        if y.is_empty() {
            return Ok(());
        }
        self.fits(w.value().ncols(), x.ncols())?;
        let mut taps = self.taps(w.value().ncols())?;
        let bias = params.get(1).map(|b| b.value().as_slice());
        kernels::conv2d(x, w.value(), bias, &self.geom, then, y, &mut taps);
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
        let w = self.check_params(params)?;
        if grads.len() != params.len() {
            return Err(param_count("Conv2d", grads.len(), params.len()));
        }
        let n = x.ncols();
        let mut buffers = vec![
            ("the input", x.shape(), self.input(n)),
            ("the output gradient", dy.shape(), self.output(n)),
        ];
        for (g, p) in grads.iter().zip(params) {
            buffers.push(("a parameter gradient", g.shape(), p.value().shape()));
        }
        if let Some(dx) = &dx {
            buffers.push(("the input gradient", dx.shape(), self.input(n)));
        }
        check_shapes("Conv2d", &buffers)?;
        let [dw, rest @ ..] = grads else {
            return Err(param_count("Conv2d", 0, params.len()));
        };
        if dy.is_empty() {
            return Ok(());
        }
        let tap_count = w.value().ncols();
        let mut taps = self.taps(tap_count)?;
        let dx = match dx {
            Some(dx) => {
                let pixels = self.geom.out_h * self.geom.out_w;
                let what =
                    || format!("the patch gradient of a Conv2d, {pixels} × {tap_count} values");
                Some((dx, try_zeros(pixels, tap_count, what)?))
            }
            None => None,
        };
        let mut dx = dx;
        let pixels = self.geom.out_h * self.geom.out_w;
        let mut grad_t = try_zeros(self.out_c, pixels, || {
            format!(
                "the transposed output gradient of a Conv2d, {} × {pixels} values",
                self.out_c
            )
        })?;
        kernels::conv2d_backward(
            x,
            w.value(),
            &self.geom,
            dy,
            dw,
            rest.first_mut(),
            dx.as_mut().map(|(dx, dp)| (&mut **dx, dp)),
            &mut taps,
            &mut grad_t,
        );
        Ok(())
    }

    fn fuses_activation(&self) -> bool {
        true
    }
}
/// An image in, an image out: `O` channels, each axis by [`Window`](crate::spatial::Window). A flat input breaks the
/// [`TakesImage`] rule; a kernel larger than the padded image breaks
/// [`WindowFits`](crate::rules::WindowFits).
impl<O: Dim, K: Dim, S: Dim, P: Dim, D: Dim, In: Shape, Known> LayerOn<In, Known>
    for Conv2d<O, K, S, P, D>
where
    Input<In>: TakesImage,
    ImageHeight<In>: Plane<ImageWidth<In>, K, S, P, D>,
    Image<O, OutHeight<In, K, S, P, D>, OutWidth<In, K, S, P, D>>: Shape,
{
    type Out = Image<O, OutHeight<In, K, S, P, D>, OutWidth<In, K, S, P, D>>;
    type Checks = Proven;
}

/// The output size depends on the image size, not known before binding.
impl<O, K, S, P, D, Prev> Follows<Prev> for Conv2d<O, K, S, P, D>
where
    Conv2d<O, K, S, P, D>: Layer,
{
    type Known = Unknown;
}

impl<O, K, S, P, D> DeclaresInput for Conv2d<O, K, S, P, D> {
    type Input = Infer;
}

#[cfg(test)]
mod tests {
    use super::*;
    use typenum::{U16, U2, U3};

    #[test]
    fn shapes_before_and_after_binding() {
        let c = Conv2d::<U16, U3>::new().padding::<U1>();
        assert_eq!(
            c.output_shape(None).map(|s| s.map(|s| s.to_string())),
            Ok(Some("(16, ?, ?)".to_string()))
        );
        assert_eq!(c.param_shapes(None)[0].1.to_string(), "(16, ?, 3, 3)");
        let image = PartialShape::from_dims(&[1, 28, 28]);
        assert_eq!(
            c.output_shape(Some(&image)),
            Ok(Some(PartialShape::from_dims(&[16, 28, 28])))
        );
        assert_eq!(
            c.param_shapes(Some(&image))[0].1,
            PartialShape::from_dims(&[16, 1, 3, 3])
        );
        assert_eq!(c.without_bias().param_shapes(Some(&image)).len(), 1);
    }

    #[test]
    fn bad_inputs_are_faults() {
        let c = Conv2d::<U16, U3>::new().dilation::<U2>();
        assert_eq!(
            c.output_shape(Some(&PartialShape::from_dims(&[1, 4, 9]))),
            Err(Fault::Window {
                axis: "height",
                span: 5,
                padded: 4
            })
        );
        assert_eq!(
            c.output_shape(Some(&PartialShape::from_dims(&[20]))),
            Err(Fault::Rank {
                needs: "an image (channels, height, width)",
                found: vec![20]
            })
        );
        assert_eq!(
            Conv2d::dynamic(4, 3).stride_size(0).output_shape(None),
            Err(Fault::Zero { name: "stride" })
        );
    }
}
