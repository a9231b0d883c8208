//! 2-d pooling layers: [`MaxPool2d`] and [`AvgPool2d`].

use core::marker::PhantomData;

use typenum::{Unsigned, U0, U1};

use nalgebra::DMatrix;

use super::check_shapes;
use super::{Activation, DeclaresInput, Fault, Infer, Kernel, Layer, LayerOn, Param, PartialShape};
use crate::dim::{Dim, Dyn, StaticDim};
use crate::error::ShapeError;
use crate::init::Role;
use crate::kernels;
use crate::list::{Follows, Unknown};
use crate::rules::{Input, Proven, TakesImage};
use crate::shape::{Image, Shape};
use crate::spatial::{
    plane, Geom2d, ImageHeight, ImageWidth, OutHeight, OutWidth, Plane, PoolPaddingOf,
};

/// What a pooling layer computes over each window: [`Max`] or [`Avg`].
pub trait PoolKind:
    sealed::Sealed + Copy + Default + core::fmt::Debug + Send + Sync + 'static
{
    /// `"MaxPool2d"` or `"AvgPool2d"`.
    const KIND: &'static str;
    /// Pools every window of `x` into `y`.
    #[doc(hidden)]
    fn forward(x: &DMatrix<f32>, geom: &Geom2d, y: &mut DMatrix<f32>);
    /// The gradient of [`forward`](PoolKind::forward).
    #[doc(hidden)]
    fn backward(x: &DMatrix<f32>, geom: &Geom2d, dy: &DMatrix<f32>, dx: &mut DMatrix<f32>);
}

mod sealed {
    pub trait Sealed {}
}

/// The largest value of each window; padding never wins (PyTorch pads with −∞).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Max;

/// The mean of each window; padding counts as zeros in it (PyTorch's default,
/// `count_include_pad=True`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Avg;

impl sealed::Sealed for Max {}
impl sealed::Sealed for Avg {}

impl PoolKind for Max {
    const KIND: &'static str = "MaxPool2d";
    fn forward(x: &DMatrix<f32>, geom: &Geom2d, y: &mut DMatrix<f32>) {
        kernels::max_pool(x, geom, y);
    }
    fn backward(x: &DMatrix<f32>, geom: &Geom2d, dy: &DMatrix<f32>, dx: &mut DMatrix<f32>) {
        kernels::max_pool_backward(x, geom, dy, dx);
    }
}

impl PoolKind for Avg {
    const KIND: &'static str = "AvgPool2d";
    fn forward(x: &DMatrix<f32>, geom: &Geom2d, y: &mut DMatrix<f32>) {
        kernels::avg_pool(x, geom, y);
    }
    fn backward(_: &DMatrix<f32>, geom: &Geom2d, dy: &DMatrix<f32>, dx: &mut DMatrix<f32>) {
        kernels::avg_pool_backward(geom, dy, dx);
    }
}

/// A 2-d pooling layer over images of shape (channels, height, width): square windows of `K`,
/// stride `S` (the kernel unless set), padding `P` (0 unless set, at most half the kernel). It
/// keeps the number of channels and owns no parameters. Used through its two kinds,
/// [`MaxPool2d`] and [`AvgPool2d`].
///
/// Along each axis the output size is `(size + 2·padding − kernel) / stride + 1`: computed by
/// the compiler when every number is static, by `try_bind` otherwise. A window larger than the
/// padded image (an output of size 0) is a compile error or a
/// [`ShapeError`](crate::ShapeError).
///
/// # Type parameters
/// * `Kind`: [`Max`] or [`Avg`].
/// * `K`: the window size.
/// * `S`: the stride.
/// * `P`: the padding on each side.
///
/// # Example
/// ```
/// use lazynet::prelude::*;
///
/// let net = Net::new()
///     .push(MaxPool2d::<U2>::new())
///     .push(AvgPool2d::<U3>::new().stride::<U1>().padding::<U1>())
///     .bind::<Image<U3, U32, U32>>();
/// assert_eq!(net.output_dims(), [3, 16, 16]);
///
/// let run_time = Net::new().push(MaxPool2d::dynamic(2)).try_bind(Image::dynamic(3, 7, 7))?;
/// assert_eq!(run_time.output_dims(), [3, 3, 3]);
/// # Ok::<(), ShapeError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Pool2d<Kind, K, S = K, P = U0> {
    kernel: K,
    stride: S,
    padding: P,
    kind: PhantomData<Kind>,
}

/// Max pooling, like PyTorch's `nn.MaxPool2d`: `MaxPool2d::<U2>::new()` halves each side.
pub type MaxPool2d<K, S = K, P = U0> = Pool2d<Max, K, S, P>;

/// Average pooling, like PyTorch's `nn.AvgPool2d`: `AvgPool2d::<U2>::new()` halves each side.
pub type AvgPool2d<K, S = K, P = U0> = Pool2d<Avg, K, S, P>;

impl<Kind: PoolKind, K: StaticDim> Pool2d<Kind, K> {
    /// A pooling layer with a `K × K` window, stride `K` and no padding.
    pub fn new() -> Self {
        Pool2d {
            kernel: K::default(),
            stride: K::default(),
            padding: U0::default(),
            kind: PhantomData,
        }
    }
}

impl<Kind: PoolKind, K: StaticDim> Default for Pool2d<Kind, K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<Kind: PoolKind> Pool2d<Kind, Dyn> {
    /// A pooling layer whose window is known only at run time; stride equal to the window, no
    /// padding. A window of 0 is reported by `try_bind`.
    pub fn dynamic(kernel: usize) -> Self {
        Pool2d {
            kernel: Dyn(kernel),
            stride: Dyn(kernel),
            padding: U0::default(),
            kind: PhantomData,
        }
    }
}

impl<Kind: PoolKind, K: Dim, S: Dim, P: Dim> Pool2d<Kind, K, S, P> {
    /// Sets the stride, known to the compiler.
    pub fn stride<S2: StaticDim>(self) -> Pool2d<Kind, K, S2, P> {
        self.with(S2::default(), self.padding)
    }

    /// Sets the stride, known at run time; 0 is reported by `try_bind`.
    pub fn stride_size(self, stride: usize) -> Pool2d<Kind, K, Dyn, P> {
        self.with(Dyn(stride), self.padding)
    }

    /// Sets the padding on each side, known to the compiler; more than half the window is a
    /// compile error.
    pub fn padding<P2: Dim + Unsigned>(self) -> Pool2d<Kind, K, S, P2> {
        self.with(self.stride, P2::default())
    }

    /// Sets the padding on each side, known at run time; more than half the window is reported
    /// by `try_bind`.
    pub fn padding_size(self, padding: usize) -> Pool2d<Kind, K, S, Dyn> {
        self.with(self.stride, Dyn(padding))
    }

    fn with<S2, P2>(self, stride: S2, padding: P2) -> Pool2d<Kind, K, S2, P2> {
        Pool2d {
            kernel: self.kernel,
            stride,
            padding,
            kind: PhantomData,
        }
    }

    /// Kernel, stride, padding, dilation (always 1).
    fn hyper(&self) -> [usize; 4] {
        [
            self.kernel.size(),
            self.stride.size(),
            self.padding.size(),
            1,
        ]
    }
}

impl<Kind: PoolKind, K: Dim, S: Dim, P: Dim> Layer for Pool2d<Kind, K, S, P> {
    fn kind(&self) -> &'static str {
        Kind::KIND
    }

    fn output_shape(&self, input: Option<&PartialShape>) -> Result<Option<PartialShape>, Fault> {
        let [kernel, _, padding, _] = self.hyper();
        // 2·padding > kernel, without overflow.
        if padding > kernel / 2 {
            return Err(Fault::PoolPadding { padding, kernel });
        }
        Ok(Some(PartialShape(plane(input, self.hyper())?.to_vec())))
    }

    fn param_shapes(&self, _: Option<&PartialShape>) -> Vec<(Role, PartialShape)> {
        Vec::new()
    }

    fn kernel(&self, input: &[usize], _: &[usize]) -> Box<dyn Kernel> {
        Box::new(PoolKernel::<Kind> {
            geom: Geom2d::new(input, self.hyper()),
            kind: PhantomData,
        })
    }
}

impl<Kind: PoolKind> PoolKernel<Kind> {
    /// The input's shape for `n` samples.
    fn input(&self, n: usize) -> (usize, usize) {
        (self.geom.c * self.geom.h * self.geom.w, n)
    }

    /// The output's shape for `n` samples.
    fn output(&self, n: usize) -> (usize, usize) {
        (self.geom.c * self.geom.out_h * self.geom.out_w, n)
    }

    fn check(&self, buffers: &[super::Checked<'_>]) -> Result<(), ShapeError> {
        check_shapes(Kind::KIND, buffers)
    }
}

/// The bound computation of a pooling layer.
#[derive(Debug)]
struct PoolKernel<Kind> {
    geom: Geom2d,
    kind: PhantomData<Kind>,
}

impl<Kind: PoolKind> Kernel for PoolKernel<Kind> {
    fn forward(
        &self,
        _: &[Param],
        x: &DMatrix<f32>,
        y: &mut DMatrix<f32>,
        _: Activation,
    ) -> Result<(), ShapeError> {
        let n = x.ncols();
        self.check(&[
            ("the input", x.shape(), self.input(n)),
            ("the output", y.shape(), self.output(n)),
        ])?;
        Kind::forward(x, &self.geom, y);
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
            let n = x.ncols();
            self.check(&[
                ("the input", x.shape(), self.input(n)),
                ("the output gradient", dy.shape(), self.output(n)),
                ("the input gradient", dx.shape(), self.input(n)),
            ])?;
            Kind::backward(x, &self.geom, dy, dx);
        }
        Ok(())
    }
}

/// An image in, an image of as many channels out, each axis by [`Window`](crate::spatial::Window) (dilation 1). A flat
/// input breaks the [`TakesImage`] rule, a window larger than the padded image
/// [`WindowFits`](crate::rules::WindowFits), padding over half the window
/// [`PaddingFitsKernel`](crate::rules::PaddingFitsKernel).
impl<Kind: PoolKind, K: Dim, S: Dim, P: Dim, In: Shape, Known> LayerOn<In, Known>
    for Pool2d<Kind, K, S, P>
where
    Input<In>: TakesImage,
    P: PoolPaddingOf<K>,
    ImageHeight<In>: Plane<ImageWidth<In>, K, S, P, U1>,
    Image<
        <Input<In> as TakesImage>::Channels,
        OutHeight<In, K, S, P, U1>,
        OutWidth<In, K, S, P, U1>,
    >: Shape,
{
    type Out = Image<
        <Input<In> as TakesImage>::Channels,
        OutHeight<In, K, S, P, U1>,
        OutWidth<In, K, S, P, U1>,
    >;
    type Checks = Proven;
}

/// The output size depends on the image size, not known before binding.
impl<Kind, K, S, P, Prev> Follows<Prev> for Pool2d<Kind, K, S, P>
where
    Pool2d<Kind, K, S, P>: Layer,
{
    type Known = Unknown;
}

impl<Kind, K, S, P> DeclaresInput for Pool2d<Kind, K, S, P> {
    type Input = Infer;
}

#[cfg(test)]
mod tests {
    use super::*;
    use typenum::{U2, U3};

    #[test]
    fn shapes_and_faults() {
        let p = MaxPool2d::<U2>::new();
        assert_eq!(p.kind(), "MaxPool2d");
        assert_eq!(AvgPool2d::<U2>::new().kind(), "AvgPool2d");
        assert_eq!(
            p.output_shape(Some(&PartialShape::from_dims(&[16, 28, 27]))),
            Ok(Some(PartialShape::from_dims(&[16, 14, 13])))
        );
        assert_eq!(
            p.output_shape(Some(&PartialShape::from_dims(&[16, 1, 8]))),
            Err(Fault::Window {
                axis: "height",
                span: 2,
                padded: 1
            })
        );
        assert_eq!(
            MaxPool2d::<U3>::new().padding_size(2).output_shape(None),
            Err(Fault::PoolPadding {
                padding: 2,
                kernel: 3
            })
        );
        assert_eq!(
            MaxPool2d::dynamic(0).output_shape(None),
            Err(Fault::Zero { name: "kernel" })
        );
    }
}
