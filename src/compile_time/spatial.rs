//! Image sizes computed by the compiler, on stable Rust, with typenum arithmetic.
//!
//! Along one axis, a convolution or pooling layer with kernel `K`, stride `S`, padding `P` and
//! dilation `D` maps a size `X` to
//!
//! ```text
//! (X + 2·P − D·(K − 1) − 1) / S + 1
//! ```
//!
//! (PyTorch's formula, rounding down). When `X` and the four hyper-parameters are all typenum
//! numbers, the compiler computes the result as a typenum number; when one of them is
//! [`Dyn`], the result is [`Dyn`] and the same formula runs when the net is bound
//! ([`Net::try_bind`](crate::Net::try_bind)). A kernel that spans more than the padded input is a compile error
//! stating both numbers ([`WindowFits`]).
//!
//! Nothing here is needed to use the crate; it is public because it appears in the types.

use core::marker::PhantomData;
use core::ops::{Add, Div, Mul, Sub};

use typenum::{Add1, Cmp, Compare, Diff, Equal, Greater, Less, Prod, Quot, Sub1, Sum};
use typenum::{UInt, UTerm, B1, U2};

use crate::decimal::{Dec, Decimal};
use crate::dim::{Dim, Dyn};
use crate::error::Fault;
use crate::partial::PartialShape;
use crate::rules::{Input, PaddingFitsKernel, TakesImage, WindowFits};

/// A list of sizes that are all static; see [`Join`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Fixed<T>(PhantomData<T>);

/// Sorts a dimension into static (`Fixed<N>`) and run-time ([`Dyn`]).
#[doc(hidden)]
pub trait Lift {
    /// `Fixed<Self>` or [`Dyn`].
    type Lifted;
}

impl<U, B> Lift for UInt<U, B> {
    type Lifted = Fixed<UInt<U, B>>;
}

impl Lift for UTerm {
    type Lifted = Fixed<UTerm>;
}

impl Lift for Dyn {
    type Lifted = Dyn;
}

/// `Self` lifted: `Fixed<Self>` or [`Dyn`].
#[doc(hidden)]
pub type Lifted<A> = <A as Lift>::Lifted;

/// Joins two lifted sizes: `Fixed<(A, B)>` when both are static, [`Dyn`] otherwise. Joining
/// all the sizes a formula reads picks the typenum formula or the run-time one in a single
/// step, without an impl for every mix of static and run-time sizes.
#[doc(hidden)]
pub trait Join<B> {
    /// `Fixed<(A, B)>` or [`Dyn`].
    type Output;
}

impl<A, B> Join<Fixed<B>> for Fixed<A> {
    type Output = Fixed<(A, B)>;
}

impl<A> Join<Dyn> for Fixed<A> {
    type Output = Dyn;
}

impl<B> Join<B> for Dyn {
    type Output = Dyn;
}

/// `A` joined with `B`.
#[doc(hidden)]
pub type Joined<A, B> = <A as Join<B>>::Output;

/// The number of values of an image: `C·H·W` when all three are static, [`Dyn`] otherwise.
pub trait Volume {
    /// The product, or [`Dyn`].
    type Out: Dim;
}

impl Volume for Dyn {
    type Out = Dyn;
}

impl<C, H, W> Volume for Fixed<(C, (H, W))>
where
    C: Mul<H>,
    Prod<C, H>: Mul<W>,
    Prod<Prod<C, H>, W>: Dim,
{
    type Out = Prod<Prod<C, H>, W>;
}

/// `C·H·W` for `Self = C`: [`Volume`] of the three sizes joined, with the bounds that joining
/// them needs stated once.
pub trait VolumeOf<H, W> {
    /// The product, or [`Dyn`].
    type Out: Dim;
}

impl<C: Lift, H: Lift, W: Lift> VolumeOf<H, W> for C
where
    Lifted<H>: Join<Lifted<W>>,
    Lifted<C>: Join<Joined<Lifted<H>, Lifted<W>>>,
    Joined<Lifted<C>, Joined<Lifted<H>, Lifted<W>>>: Volume,
{
    type Out = <Joined<Lifted<C>, Joined<Lifted<H>, Lifted<W>>> as Volume>::Out;
}

/// The height axis, named in compile errors.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, Default)]
pub struct height;

/// The width axis, named in compile errors.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, Default)]
pub struct width;

/// The sizes along one axis of a convolution or pooling layer, joined: `X` the input size,
/// `K` the kernel, `S` the stride, `P` the padding, `D` the dilation.
pub type AxisSizes<X, K, S, P, D> =
    Joined<Lifted<X>, Joined<Lifted<K>, Joined<Lifted<S>, Joined<Lifted<P>, Lifted<D>>>>>;

/// The padded input `X + 2·P`.
pub type Padded<X, P> = Sum<X, Prod<P, U2>>;

/// The span of a dilated kernel, `D·(K − 1) + 1`.
pub type Span<K, D> = Add1<Prod<D, Sub1<K>>>;

/// Whether a [`Window`] checks that the kernel fits: [`Open`] does, [`Closed`] does not, because
/// the axis before already failed (a kernel too large for both axes reports one error, not
/// two).
pub trait Gate<Span, Padded, Axis, Ordering> {}

/// Check: the [`WindowFits`] rule.
#[derive(Clone, Copy, Debug, Default)]
pub struct Open;

/// Do not check: an error was already reported for this layer.
#[derive(Clone, Copy, Debug, Default)]
pub struct Closed;

impl<Sp, Pd, A, O> Gate<Sp, Pd, A, O> for Open where Sp: WindowFits<Pd, A, O> {}
impl<Sp, Pd, A, O> Gate<Sp, Pd, A, O> for Closed {}

/// The gate for the next axis: [`Closed`] when this one does not fit.
pub trait NextGate {
    /// [`Open`] or [`Closed`].
    type Gate;
}

impl NextGate for Less {
    type Gate = Closed;
}
impl NextGate for Equal {
    type Gate = Open;
}
impl NextGate for Greater {
    type Gate = Open;
}

/// The output size along `Axis` (`height` or `width`) of a window sliding over
/// [`AxisSizes`]: computed by the compiler when they are all static, [`Dyn`] otherwise. `G`
/// says whether to check that the kernel fits ([`Gate`]).
pub trait Window<Axis, G> {
    /// The output size.
    type Out: Dim;
    /// The gate for the next axis.
    type Next;
}

impl<Axis, G> Window<Axis, G> for Dyn {
    type Out = Dyn;
    type Next = G;
}

impl<Axis, G, X, K, S, P, D> Window<Axis, G> for Fixed<(X, (K, (S, (P, D))))>
where
    P: Mul<U2>,
    X: Add<Prod<P, U2>>,
    K: Sub<B1>,
    D: Mul<Sub1<K>>,
    Prod<D, Sub1<K>>: Add<B1>,
    Padded<X, P>: Cmp<Span<K, D>> + Decimal,
    Span<K, D>: Decimal,
    Compare<Padded<X, P>, Span<K, D>>: NextGate,
    G: Gate<Dec<Span<K, D>>, Dec<Padded<X, P>>, Axis, Compare<Padded<X, P>, Span<K, D>>>,
    Padded<X, P>: Slide<Span<K, D>, S, Compare<Padded<X, P>, Span<K, D>>>,
{
    type Out = <Padded<X, P> as Slide<Span<K, D>, S, Compare<Padded<X, P>, Span<K, D>>>>::Out;
    type Next = <Compare<Padded<X, P>, Span<K, D>> as NextGate>::Gate;
}

/// The output size along `Axis` for an input size `Self`: [`Window`] of the joined
/// [`AxisSizes`], with the bounds that joining them needs stated once.
pub trait WindowOn<Axis, K, S, P, D, G = Open> {
    /// The output size.
    type Out: Dim;
    /// The gate for the next axis.
    type Next;
}

impl<Axis, G, X: Lift, K: Lift, S: Lift, P: Lift, D: Lift> WindowOn<Axis, K, S, P, D, G> for X
where
    Lifted<P>: Join<Lifted<D>>,
    Lifted<S>: Join<Joined<Lifted<P>, Lifted<D>>>,
    Lifted<K>: Join<Joined<Lifted<S>, Joined<Lifted<P>, Lifted<D>>>>,
    Lifted<X>: Join<Joined<Lifted<K>, Joined<Lifted<S>, Joined<Lifted<P>, Lifted<D>>>>>,
    AxisSizes<X, K, S, P, D>: Window<Axis, G>,
{
    type Out = <AxisSizes<X, K, S, P, D> as Window<Axis, G>>::Out;
    type Next = <AxisSizes<X, K, S, P, D> as Window<Axis, G>>::Next;
}

/// The two axes of an image of height `Self` and width `W`: the width is checked only when the
/// height fits ([`Gate`]).
pub trait Plane<W, K, S, P, D> {
    /// The output height.
    type Height: Dim;
    /// The output width.
    type Width: Dim;
}

impl<H, W, K, S, P, D> Plane<W, K, S, P, D> for H
where
    H: WindowOn<height, K, S, P, D, Open>,
    W: WindowOn<width, K, S, P, D, <H as WindowOn<height, K, S, P, D, Open>>::Next>,
{
    type Height = <H as WindowOn<height, K, S, P, D, Open>>::Out;
    type Width =
        <W as WindowOn<width, K, S, P, D, <H as WindowOn<height, K, S, P, D, Open>>::Next>>::Out;
}

/// The output height of a layer with kernel `K`, stride `S`, padding `P`, dilation `D` that
/// receives `In`.
pub type OutHeight<In, K, S, P, D> = <ImageHeight<In> as Plane<ImageWidth<In>, K, S, P, D>>::Height;

/// The output width, like [`OutHeight`].
pub type OutWidth<In, K, S, P, D> = <ImageHeight<In> as Plane<ImageWidth<In>, K, S, P, D>>::Width;

/// The height of the image `In`.
pub type ImageHeight<In> = <Input<In> as TakesImage>::Height;

/// The width of the image `In`.
pub type ImageWidth<In> = <Input<In> as TakesImage>::Width;

/// `(Self − Span) / S + 1`, dispatched on how `Self` compares with `Span`. When the span is
/// larger the output is `U0` and never used: [`WindowFits`] has already failed, with a message.
pub trait Slide<Span, S, Ordering> {
    /// The output size.
    type Out: Dim;
}

impl<X, Sp, S> Slide<Sp, S, Less> for X {
    type Out = UTerm;
}

macro_rules! slide_fits {
    ($ord:ident) => {
        /// The window fits: `(X − Span) / S + 1`.
        impl<X, Sp, S> Slide<Sp, S, $ord> for X
        where
            X: Sub<Sp>,
            Diff<X, Sp>: Div<S>,
            Quot<Diff<X, Sp>, S>: Add<B1>,
            Add1<Quot<Diff<X, Sp>, S>>: Dim,
        {
            type Out = Add1<Quot<Diff<X, Sp>, S>>;
        }
    };
}
slide_fits!(Equal);
slide_fits!(Greater);

/// Pooling padding checked against the kernel, `2·P ≤ K`, when both are static
/// (`Fixed<(P, K)>`); checked when the net is bound otherwise.
pub trait PoolPadding {}

impl PoolPadding for Dyn {}

/// [`PoolPadding`] for `Self = P` and a kernel `K`, with the bounds joining them needs.
pub trait PoolPaddingOf<K> {}

impl<P: Lift, K: Lift> PoolPaddingOf<K> for P
where
    Lifted<P>: Join<Lifted<K>>,
    Joined<Lifted<P>, Lifted<K>>: PoolPadding,
{
}

impl<P, K> PoolPadding for Fixed<(P, K)>
where
    P: Mul<U2> + Decimal,
    K: Decimal,
    Prod<P, U2>: Cmp<K>,
    Dec<P>: PaddingFitsKernel<Dec<K>, Compare<Prod<P, U2>, K>>,
{
}

/// The run-time form of [`Window`]: the output size along `axis` for kernel, stride, padding
/// and dilation `hyper`, or why there is none.
///
/// Computed in `u128`, where nothing overflows (`input + 2·padding < 2^66`,
/// `dilation·(kernel − 1) + 1 < 2^128`): a huge padding or dilation gives the exact size, or
/// [`Fault::Window`], or, when the size does not fit in a `usize`, [`Fault::Overflow`].
pub(crate) fn window_output(
    axis: &'static str,
    input: usize,
    [kernel, stride, padding, dilation]: [usize; 4],
) -> Result<usize, Fault> {
    let wide = |n: usize| n as u128;
    let Some(taps_after_first) = kernel.checked_sub(1) else {
        return Err(Fault::Zero { name: "kernel" });
    };
    let padded = wide(input) + 2 * wide(padding);
    let span = wide(dilation) * wide(taps_after_first) + 1;
    if padded < span {
        return Err(Fault::Window { axis, span, padded });
    }
    // `stride` was checked to be at least 1.
    let out = (padded - span) / wide(stride.max(1)) + 1;
    usize::try_from(out).map_err(|_| Fault::Overflow { axis, size: out })
}

/// The sizes of a bound convolution or pooling layer: its input image, its window and its
/// output plane. Not a public interface.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geom2d {
    pub(crate) c: usize,
    pub(crate) h: usize,
    pub(crate) w: usize,
    pub(crate) kernel: usize,
    pub(crate) stride: usize,
    pub(crate) padding: usize,
    pub(crate) dilation: usize,
    pub(crate) out_h: usize,
    pub(crate) out_w: usize,
}

impl Geom2d {
    /// The geometry over an input `[c, h, w]` that [`plane`] accepted (other inputs give
    /// zeros, never used).
    pub(crate) fn new(input: &[usize], hyper: [usize; 4]) -> Self {
        let [kernel, stride, padding, dilation] = hyper;
        let (c, h, w) = match input {
            [c, h, w] => (*c, *h, *w),
            _ => (0, 0, 0),
        };
        let out = |x| window_output("", x, hyper).unwrap_or(0);
        Geom2d {
            c,
            h,
            w,
            kernel,
            stride,
            padding,
            dilation,
            out_h: out(h),
            out_w: out(w),
        }
    }
}

/// The run-time side of a convolution or pooling layer over `input` (`None` before binding):
/// the input's channels, then the output height and width, each `None` where not known yet.
pub(crate) fn plane(
    input: Option<&PartialShape>,
    hyper: [usize; 4],
) -> Result<[Option<usize>; 3], Fault> {
    let [kernel, stride, _, dilation] = hyper;
    nonzero(&[
        ("kernel", kernel),
        ("stride", stride),
        ("dilation", dilation),
    ])?;
    let (c, h, w) = match input.map(|i| i.0.as_slice()) {
        None => (None, None, None),
        Some([c, h, w]) => (*c, *h, *w),
        Some(_) => {
            return Err(Fault::Rank {
                needs: "an image (channels, height, width)",
                found: input.map(PartialShape::or_zero).unwrap_or_default(),
            })
        }
    };
    let axis = |name, size: Option<usize>| size.map(|x| window_output(name, x, hyper)).transpose();
    Ok([c, axis("height", h)?, axis("width", w)?])
}

/// Checks the hyper-parameters that must be at least 1.
fn nonzero(params: &[(&'static str, usize)]) -> Result<(), Fault> {
    match params.iter().find(|(_, v)| *v == 0) {
        Some((name, _)) => Err(Fault::Zero { name }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use typenum::{U0, U1, U10, U14, U28, U3, U5};

    fn out<W: Window<height, Open>>() -> usize {
        W::Out::default().size()
    }

    #[test]
    fn static_sizes_follow_the_formula() {
        assert_eq!(out::<AxisSizes<U28, U3, U1, U0, U1>>(), 26);
        assert_eq!(out::<AxisSizes<U28, U3, U1, U1, U1>>(), 28);
        assert_eq!(out::<AxisSizes<U28, U2, U2, U0, U1>>(), 14);
        assert_eq!(out::<AxisSizes<U28, U3, U2, U1, U2>>(), 13);
        assert_eq!(out::<AxisSizes<U5, U5, U1, U0, U1>>(), 1);
        assert_eq!(out::<AxisSizes<U14, U5, U3, U0, U1>>(), 4);
        assert_eq!(out::<AxisSizes<U28, U10, U1, U0, U3>>(), 1);
    }

    #[test]
    fn run_time_sizes_give_dyn() {
        let _: <AxisSizes<Dyn, U3, U1, U0, U1> as Window<width, Open>>::Out = Dyn(0);
        let _: <AxisSizes<U28, U3, Dyn, U0, U1> as Window<width, Open>>::Out = Dyn(0);
    }

    #[test]
    fn run_time_formula_matches() {
        assert_eq!(window_output("height", 28, [3, 1, 0, 1]), Ok(26));
        assert_eq!(window_output("height", 28, [3, 2, 1, 2]), Ok(13));
        assert_eq!(
            window_output("width", 2, [3, 1, 0, 1]),
            Err(Fault::Window {
                axis: "width",
                span: 3,
                padded: 2
            })
        );
        // Saturating arithmetic once made this `Ok(1)`; the span is about 2^128.
        let max = usize::MAX as u128;
        assert_eq!(
            window_output("width", usize::MAX, [usize::MAX, 1, usize::MAX, usize::MAX]),
            Err(Fault::Window {
                axis: "width",
                span: max * (max - 1) + 1,
                padded: 3 * max
            })
        );
        // A padding past `usize::MAX / 2` with a stride as large: the exact size, 3.
        assert_eq!(window_output("height", 1, [1, 1 << 63, 1 << 63, 1]), Ok(3));
        // An output size beyond `usize::MAX`.
        assert_eq!(
            window_output("height", usize::MAX, [1, 1, usize::MAX, 1]),
            Err(Fault::Overflow {
                axis: "height",
                size: 3 * max
            })
        );
        assert_eq!(
            nonzero(&[("kernel", 3), ("stride", 0)]),
            Err(Fault::Zero { name: "stride" })
        );
    }
}
