//! Layers: what a net is declared from.
//!
//! A layer value is a *specification*: it states its output width and, optionally, its input
//! width. It holds no parameters; binding the net turns each specification into a bound layer
//! that owns its parameters.

mod activation;
mod conv;
mod dense;
mod flatten;
mod pool;

use core::fmt;

pub use activation::{Identity, Relu, Sigmoid, Tanh};
pub use conv::Conv2d;
pub use dense::{Dense, Infer, InputDecl, InputRule, PushRule};
pub use flatten::Flatten;
pub use pool::{Avg, AvgPool2d, Max, MaxPool2d, Pool2d, PoolKind};

use crate::init::Role;
use crate::shape::Shape;
use crate::spatial::Geom2d;

pub(crate) use activation::Activation;

/// A layer specification: its kind, how it maps shapes, and the parameters it will own.
///
/// Implemented by the layers of this crate; it is sealed for now, because the bound side of a
/// layer (its forward computation) is not yet a public interface.
pub trait Layer: sealed::Sealed + Send + Sync + 'static {
    /// The layer's kind, e.g. `"Dense"`; error messages and summaries show it.
    fn kind(&self) -> &'static str;

    /// The output shape, given the input shape as far as it is known (`None`: not even its
    /// rank is known). Sizes that depend on an unknown one are `None`; given a fully known
    /// input, the output is fully known or the layer reports why the input does not fit.
    #[doc(hidden)]
    fn output_shape(&self, input: Option<&PartialShape>) -> Result<Option<PartialShape>, Fault>;

    /// The shapes of the parameters it will own (PyTorch order), with `None` where a size is not
    /// known yet.
    fn param_shapes(&self, input: Option<&PartialShape>) -> Vec<(Role, PartialShape)>;

    /// The input width this layer declares, if it declares one.
    fn declared_input(&self) -> Option<usize>;

    /// The computation the layer runs once bound to an input of shape `input`, which
    /// [`output_shape`](Layer::output_shape) accepted.
    #[doc(hidden)]
    fn op(&self, input: &[usize]) -> Op;

    /// The work buffers the layer needs per sample, beyond its input and output, given its
    /// known input and output shapes: their names and shapes, so that binding checks that
    /// they can be allocated.
    #[doc(hidden)]
    fn scratch(&self, _input: &[usize], _output: &[usize]) -> Vec<(&'static str, Vec<usize>)> {
        Vec::new()
    }
}

/// The input size a layer declares, as a type: [`Infer`] when it declares none, a typenum
/// number, or [`Dyn`](crate::Dyn). [`Net::push`](crate::Net::push) checks it with
/// [`PushRule`].
pub trait DeclaresInput {
    /// The declaration.
    type Input;
}

/// The bound computation of a layer. Not a public interface yet.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `W · X + b`.
    Dense,
    /// An element-wise function.
    Act(Activation),
    /// A 2-d convolution to `out_c` channels.
    Conv { geom: Geom2d, out_c: usize },
    /// Max pooling.
    MaxPool(Geom2d),
    /// Average pooling.
    AvgPool(Geom2d),
    /// Nothing to compute: the values are already in C, H, W order.
    Flatten,
}

/// Why an input does not fit a layer; the net adds the layer's index and kind to make a
/// [`ShapeError`](crate::ShapeError). Not a public interface.
#[doc(hidden)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// A declared input size differs from what reaches the layer.
    DeclaredInput { expected: usize, actual: usize },
    /// A kernel spans more than the padded input along an axis.
    Window {
        axis: &'static str,
        span: u128,
        padded: u128,
    },
    /// An output size along an axis that does not fit in a `usize`.
    Overflow { axis: &'static str, size: u128 },
    /// A tensor with more values than a `usize` counts.
    TooLarge {
        tensor: &'static str,
        shape: Vec<usize>,
    },
    /// A hyper-parameter that must be at least 1 is 0.
    Zero { name: &'static str },
    /// Pooling padding larger than half the kernel.
    PoolPadding { padding: usize, kernel: usize },
    /// An input of the wrong rank: a flat vector where an image is needed, or the reverse.
    Rank {
        needs: &'static str,
        found: Vec<usize>,
    },
}

mod sealed {
    pub trait Sealed {}
}

/// A layer whose output size type follows from the input size type `In`.
///
/// This is where the compiler checks shapes: an implementation exists only for the inputs a
/// layer accepts (a declared input size must match), and it says whether a check is left for
/// run time.
///
/// # Type parameters
/// * `In`: the input shape: a flat dimension (a typenum number or [`Dyn`](crate::Dyn)) or an
///   [`Image`](crate::Image).
/// * `Known`: what the declaration produced before this layer, as far as it was known before
///   binding (see [`Produces`](crate::list::Produces)); a check already made by `push` is not
///   made again.
pub trait LayerOn<In: Shape, Known = crate::list::Unknown>: Layer {
    /// The output shape.
    type Out: Shape;
    /// [`Proven`](crate::rules::Proven) when the compiler made every check,
    /// [`AtRunTime`](crate::rules::AtRunTime) when one is left for `try_bind`.
    type Checks;
}

/// A shape with unknown places, displayed as `(256, ?)`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PartialShape(pub Vec<Option<usize>>);

impl PartialShape {
    /// A shape whose sizes are all known.
    pub fn from_dims(dims: &[usize]) -> Self {
        PartialShape(dims.iter().copied().map(Some).collect())
    }

    /// The number of values, when every size is known and their product fits in a `usize`.
    pub fn len(&self) -> Option<usize> {
        self.0
            .iter()
            .try_fold(1usize, |n, d| d.and_then(|d| n.checked_mul(d)))
    }

    /// Whether the shape holds no values (`Some(true)`), some (`Some(false)`), or is not known.
    pub fn is_empty(&self) -> Option<bool> {
        self.len().map(|n| n == 0)
    }

    /// The full shape, when every size is known.
    pub fn known(&self) -> Option<Vec<usize>> {
        self.0.iter().copied().collect()
    }

    /// The sizes, with 0 where one is not known: for shapes known to be complete, and for
    /// error messages.
    pub(crate) fn or_zero(&self) -> Vec<usize> {
        self.0.iter().map(|d| d.unwrap_or(0)).collect()
    }

    /// The number of sizes: 1 for a flat vector, 3 for an image.
    pub fn rank(&self) -> usize {
        self.0.len()
    }
}

impl fmt::Display for PartialShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Place(Option<usize>);
        impl fmt::Display for Place {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self.0 {
                    Some(d) => write!(f, "{d}"),
                    None => f.write_str("?"),
                }
            }
        }
        let places: Vec<Place> = self.0.iter().copied().map(Place).collect();
        crate::init::write_tuple(f, places.iter().map(|p| p as &dyn fmt::Display))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_shapes_show_question_marks() {
        assert_eq!(PartialShape(vec![Some(256), None]).to_string(), "(256, ?)");
        assert_eq!(PartialShape(vec![Some(256)]).to_string(), "(256,)");
        assert_eq!(PartialShape(vec![Some(256), None]).len(), None);
        assert_eq!(PartialShape(vec![Some(10), Some(256)]).len(), Some(2560));
        assert_eq!(
            PartialShape(vec![Some(10), Some(256)]).known(),
            Some(vec![10, 256])
        );
    }
}
