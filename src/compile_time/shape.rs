//! Shapes: what flows from layer to layer. A flat vector of features (any [`Dim`]: `U20`,
//! `Dyn`) or an image of channels × height × width ([`Image<C, H, W>`](Image)).
//!
//! A net is bound to a shape (`bind::<U20>()`, `bind::<Image<U1, U28, U28>>()`), and each layer
//! maps the shape it receives to the shape it produces. Every size in a shape is static (a
//! typenum number) or known at run time ([`Dyn`]), independently of the others.

use core::fmt;

use crate::dim::{Dim, Dyn, StaticDim};
use crate::partial::PartialShape;
use crate::spatial::VolumeOf;

/// A shape: a flat [`Dim`] or an [`Image`].
///
/// Batches store one sample per column with its values in this shape's order: an image's
/// values run over channels, then rows, then columns (C, H, W), as PyTorch lays out a tensor
/// and flattens it.
///
/// # Example
/// ```
/// use lazynet::prelude::*;
///
/// assert_eq!(U20::default().dims(), [20]);
/// let image = Image::<U3, U32, U32>::default();
/// assert_eq!(image.dims(), [3, 32, 32]);
/// assert_eq!(image.flat_size(), 3072);
/// assert_eq!(Image::dynamic(1, 28, 28).flat_size(), 784);
/// ```
pub trait Shape: Copy + Default + fmt::Debug + Send + Sync + 'static {
    /// The number of values in one sample, as a dimension: static when every size is.
    type Flat: Dim;

    /// The sizes: `[20]`, or `[channels, height, width]`.
    fn dims(&self) -> Vec<usize>;

    /// The number of values in one sample: the product of the sizes.
    ///
    /// # Panics
    /// When the product does not fit in a `usize`, which only an image shape built at run time
    /// can cause (`Image::dynamic(usize::MAX, 2, 1)`); [`checked_flat_size`](Shape::checked_flat_size)
    /// returns `None` instead.
    fn flat_size(&self) -> usize {
        match self.checked_flat_size() {
            Some(n) => n,
            None => panic!(
                "the shape {:?} holds more values than a usize can count",
                self.dims()
            ),
        }
    }

    /// The number of values in one sample; `None` when it does not fit in a `usize`.
    ///
    /// ```
    /// use lazynet::prelude::*;
    ///
    /// assert_eq!(Image::dynamic(3, 4, 5).checked_flat_size(), Some(60));
    /// assert_eq!(Image::dynamic(usize::MAX, 2, 1).checked_flat_size(), None);
    /// assert_eq!(Image::dynamic(usize::MAX, 2, 0).checked_flat_size(), Some(0));
    /// ```
    fn checked_flat_size(&self) -> Option<usize> {
        let dims = self.dims();
        // A size of 0 makes the product 0, whatever the order of the sizes.
        if dims.contains(&0) {
            return Some(0);
        }
        dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
    }

    /// Makes the shape from run-time sizes; `None` when the rank differs or a static size does.
    fn from_dims(dims: &[usize]) -> Option<Self>;

    /// The shape as the compiler knows it: each static size, `?` for a run-time one. Binding
    /// compares every layer's run-time output with it.
    #[doc(hidden)]
    fn compile_time() -> PartialShape;
}

/// A flat vector of features.
impl<D: Dim> Shape for D {
    type Flat = D;

    fn dims(&self) -> Vec<usize> {
        vec![self.size()]
    }

    fn from_dims(dims: &[usize]) -> Option<Self> {
        match dims {
            [n] => D::from_size(*n),
            _ => None,
        }
    }

    fn compile_time() -> PartialShape {
        PartialShape(vec![known::<D>()])
    }
}

/// A dimension's size when the compiler knows it.
fn known<D: Dim>() -> Option<usize> {
    D::IS_STATIC.then(|| D::default().size())
}

/// An image: `C` channels of `H` rows and `W` columns, each a typenum number or [`Dyn`].
///
/// `Image<U1, U28, U28>` is a 28×28 grey image known to the compiler;
/// [`Image::dynamic(1, 28, 28)`](Image::dynamic) is the same known at run time. Its values are
/// stored channel first (C, H, W), PyTorch's layout.
///
/// # Type parameters
/// * `C`: the number of channels.
/// * `H`: the height (rows).
/// * `W`: the width (columns).
///
/// # Example
/// ```
/// use lazynet::prelude::*;
///
/// let decl = Net::new().push(Conv2d::<U8, U3>::new()).push(Relu).push(Flatten);
/// let net = decl.clone().bind::<Image<U1, U28, U28>>();
/// assert_eq!(net.output_dims(), [8 * 26 * 26]);
/// let run_time = decl.try_bind(Image::dynamic(1, 10, 12))?;
/// assert_eq!(run_time.output_dims(), [8 * 8 * 10]);
/// # Ok::<(), ShapeError>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Image<C, H, W> {
    /// The number of channels.
    pub channels: C,
    /// The height.
    pub height: H,
    /// The width.
    pub width: W,
}

impl Image<Dyn, Dyn, Dyn> {
    /// An image shape known at run time: `channels × height × width`.
    pub fn dynamic(channels: usize, height: usize, width: usize) -> Self {
        Image {
            channels: Dyn(channels),
            height: Dyn(height),
            width: Dyn(width),
        }
    }
}

/// The flat size type of an image: the product of its sizes when all are static, [`Dyn`] when
/// one is not.
pub type ImageVolume<C, H, W> = <C as VolumeOf<H, W>>::Out;

impl<C: Dim + VolumeOf<H, W>, H: Dim, W: Dim> Shape for Image<C, H, W> {
    type Flat = ImageVolume<C, H, W>;

    fn dims(&self) -> Vec<usize> {
        vec![self.channels.size(), self.height.size(), self.width.size()]
    }

    fn from_dims(dims: &[usize]) -> Option<Self> {
        match dims {
            [c, h, w] => Some(Image {
                channels: C::from_size(*c)?,
                height: H::from_size(*h)?,
                width: W::from_size(*w)?,
            }),
            _ => None,
        }
    }

    fn compile_time() -> PartialShape {
        PartialShape(vec![known::<C>(), known::<H>(), known::<W>()])
    }
}

/// A shape the compiler knows entirely: a typenum number from `U1` up, or an image of three
/// such numbers. The shapes that [`Net::bind`](crate::Net::bind) takes.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a shape the compiler knows",
    label = "expected a typenum number such as `U20`, or `Image<U1, U28, U28>`",
    note = "static sizes are typenum numbers `U1`, `U2`, …, `U1024` (or `op!(U32 * U36)`); `U0` is not a size; use `Dyn`, `Image::dynamic` and the `try_` methods for sizes known only at run time"
)]
pub trait StaticShape: Shape {}

impl<D: StaticDim> StaticShape for D {}

impl<C: StaticDim, H: StaticDim, W: StaticDim> StaticShape for Image<C, H, W> where
    Image<C, H, W>: Shape
{
}

/// A shape that a row count alone determines: every flat [`Dim`], and images whose sizes are
/// all static. [`Batch::try_from_matrix`](crate::Batch::try_from_matrix) needs it; a batch of
/// images known at run time is made with
/// [`Batch::try_with_shape`](crate::Batch::try_with_shape).
pub trait FromRows: Shape {
    /// The shape of a sample of `rows` values; `None` when a static shape has another size.
    fn from_rows(rows: usize) -> Option<Self>;
}

impl<D: Dim> FromRows for D {
    fn from_rows(rows: usize) -> Option<Self> {
        D::from_size(rows)
    }
}

impl<C: StaticDim, H: StaticDim, W: StaticDim> FromRows for Image<C, H, W>
where
    Image<C, H, W>: Shape,
{
    fn from_rows(rows: usize) -> Option<Self> {
        let shape = Self::default();
        (shape.checked_flat_size() == Some(rows)).then_some(shape)
    }
}

/// What [`Net::try_bind`](crate::Net::try_bind) accepts: a plain `usize` (a flat input of that
/// many features, bound as [`Dyn`]) or any [`Shape`] (`Image::dynamic(1, 28, 28)`).
pub trait RunTimeInput {
    /// The shape the net is bound to.
    type Shape: Shape;
    /// The shape.
    fn into_shape(self) -> Self::Shape;
}

/// `try_bind(20)`: a flat input of 20 features.
impl RunTimeInput for usize {
    type Shape = Dyn;
    fn into_shape(self) -> Dyn {
        Dyn(self)
    }
}

/// Any shape, as it is.
impl<S: Shape> RunTimeInput for S {
    type Shape = S;
    fn into_shape(self) -> S {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use typenum::{U1, U28, U3, U32};

    #[test]
    fn images_know_their_sizes() {
        let i = Image::<U3, U32, U32>::default();
        assert_eq!(i.dims(), [3, 32, 32]);
        const { assert!(<<Image<U3, U32, U32> as Shape>::Flat as Dim>::IS_STATIC) };
        assert_eq!(<Image<U3, U32, U32> as Shape>::Flat::default().size(), 3072);
        const { assert!(!<<Image<U3, Dyn, U32> as Shape>::Flat as Dim>::IS_STATIC) };
        assert_eq!(
            Image::<U1, U28, U28>::from_dims(&[1, 28, 28]),
            Some(Image::default())
        );
        assert_eq!(Image::<U1, U28, U28>::from_dims(&[1, 28, 27]), None);
        assert_eq!(Image::<U1, U28, U28>::from_dims(&[784]), None);
        assert_eq!(
            Image::<U1, Dyn, Dyn>::from_dims(&[1, 5, 6]).map(|i| i.dims()),
            Some(vec![1, 5, 6])
        );
        assert_eq!(
            Image::<U1, U28, U28>::from_rows(784),
            Some(Image::default())
        );
        assert_eq!(Image::<U1, U28, U28>::from_rows(785), None);
    }
}
