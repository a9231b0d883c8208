//! Composition beyond a chain: [`Residual`] blocks (`x + f(x)` and `f(x) + g(x)`) and
//! [`Shared`] layers, one parameter set used at several places (parameter tying).
//!
//! Both are layers: they are pushed onto a net like any other, checked by the compiler like
//! any other, and become part of the one run-time plan that binding builds. A residual block's
//! branches are declarations of their own (`Net::new().push(…)`); their parameters are named
//! as PyTorch names a `Sequential` inside a `Sequential` (`2.0.weight`), or by names the block
//! is given (`2.conv1.weight`, `2.downsample.0.weight`).

use core::fmt;
use core::marker::PhantomData;
use std::sync::Arc;

use nalgebra::DMatrix;

use super::{Activation, DeclaresInput, Fault, Infer, Kernel, Layer, LayerOn, Param};
use crate::decimal::{Dec, Decimal};
use crate::dim::Dyn;
use crate::error::ShapeError;
use crate::init::Role;
use crate::list::{Chain, Flattened, Follows, Layers, OutList, Produces, Static, Unknown};
use crate::net::Net;
use crate::partial::PartialShape;
use crate::rules::{AtRunTime, Both, BranchShapesMatch, ShapeKey, TiedInputMatches};
use crate::shape::Shape;
use crate::state::Uninit;

/// How a layer is made of other layers, as the plan builder reads it. A layer of your own is a
/// [`Parts::Leaf`] (the default of [`Layer::parts`]).
#[doc(hidden)]
#[non_exhaustive]
pub enum Parts<'a> {
    /// A single layer, run by its kernel.
    Leaf,
    /// `body(x) + x`, or `body(x) + projection(x)`.
    Residual {
        /// The body's layers, first to last.
        body: Vec<&'a dyn Layer>,
        /// The names of the body's layers (their indices where none is given).
        names: &'a [String],
        /// The projection's name and layers, if the skip path has one.
        projection: Option<(&'a str, Vec<&'a dyn Layer>)>,
        /// The activation applied to the sum ([`Activation::Identity`]: none).
        then: Activation,
    },
    /// Layers run one after the other, named under the block's place.
    Seq {
        /// The layers, first to last.
        body: Vec<&'a dyn Layer>,
        /// Their names (their indices where none is given).
        names: &'a [String],
    },
    /// One parameter set shared by every place that holds a clone of the same [`Shared`].
    Shared {
        /// Which set: equal for clones of one [`Shared`].
        key: usize,
        /// The layer whose parameters are shared.
        layer: &'a dyn Layer,
    },
}

/// The layers of a declaration, first to last.
fn layers_of<L: Layers>(list: &L) -> Vec<&dyn Layer> {
    let mut out = Vec::with_capacity(L::LEN);
    list.visit(&mut out);
    out
}

/// The kernel of a composite layer: the net runs a composite through its parts, never through
/// this, which reports that it was called on its own.
#[derive(Debug)]
struct PartsKernel(&'static str);

impl PartsKernel {
    fn refuse(&self) -> ShapeError {
        ShapeError::Contract {
            what: format!("a call to the {} kernel", self.0),
            detail: "a composite layer runs as part of a net (through its parts), not on its own"
                .into(),
        }
    }
}

impl Kernel for PartsKernel {
    fn forward(
        &self,
        _: &[Param],
        _: &DMatrix<f32>,
        _: &mut DMatrix<f32>,
        _: Activation,
    ) -> Result<(), ShapeError> {
        Err(self.refuse())
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
        Err(self.refuse())
    }
}

/// The output of `layers` run one after the other on `input`, as far as it is known.
fn chain_output(
    layers: &[&dyn Layer],
    input: Option<&PartialShape>,
) -> Result<Option<PartialShape>, Fault> {
    let mut shape = input.cloned();
    for layer in layers {
        shape = layer.output_shape(shape.as_ref())?;
    }
    Ok(shape)
}

// ---------------------------------------------------------------------------------------------
// Residual blocks.
// ---------------------------------------------------------------------------------------------

/// Marks a [`Residual`] whose skip path is the identity: `x + body(x)`.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoProjection;

/// Marks a [`Residual`] whose skip path is a projection `P` (a declaration's layers):
/// `body(x) + projection(x)`.
#[derive(Clone, Debug)]
pub struct Projection<P>(P);

/// A residual block: `x + body(x)`, or `body(x) + projection(x)` with a projection on the skip
/// path (ResNet's downsample, a strided 1×1 convolution).
///
/// The body (and the projection) are declared as nets are, `Net::new().push(…)`, and checked
/// by the compiler: the body must map the shape it receives to itself, or to the shape the
/// projection gives. A mismatch the compiler can see is a compile error stating both sizes;
/// one that depends on a run-time size is a [`ShapeError::Branch`] from `try_bind`.
///
/// Parameters are named as PyTorch names a `Sequential` inside a `Sequential`: the body's
/// layer `j` of the block at index `i` is `i.j` (`2.0.weight`). [`names`](Residual::names)
/// gives the body's layers names of their own (`conv1`, `bn1`, …), and the projection's layers
/// are `i.downsample.k` (torchvision's name; [`projection_name`](Residual::projection_name)
/// changes it), so a torchvision file reads without a hand-written table.
///
/// A declaration's registered initializer and seed are the outer net's: those of the body's
/// own `Net::new()` are not used.
///
/// # Type parameters
/// * `B`: the body's layers.
/// * `P`: [`NoProjection`], or [`Projection`] of the projection's layers.
///
/// # Example
/// ```
/// use lazynet::prelude::*;
///
/// let body = Net::new().push(Dense::<U3>::new()).push(Relu).push(Dense::<U3>::new());
/// let net = Net::new()
///     .push(Dense::<U3>::new())
///     .push(Residual::new(body))
///     .push(Dense::<U1>::new())
///     .bind::<U4>();
/// let names: Vec<&str> = net.named_params().map(|(n, _)| n).collect();
/// assert_eq!(names, ["0.weight", "0.bias", "1.0.weight", "1.0.bias", "1.2.weight", "1.2.bias", "2.weight", "2.bias"]);
/// let y: Batch<U1> = net.forward(&Batch::<U4>::from_fn(2, |f, s| (f + s) as f32));
/// assert_eq!(y.samples(), 2);
/// ```
#[derive(Clone)]
pub struct Residual<B, P = NoProjection> {
    body: B,
    projection: P,
    names: Vec<String>,
    projection_name: String,
    then: Activation,
}

impl<B: Layers> Residual<B> {
    /// `x + body(x)`: the body must give the shape it receives.
    pub fn new(body: Net<Uninit, B>) -> Self {
        Residual {
            body: body.into_layers(),
            projection: NoProjection,
            names: Vec::new(),
            projection_name: "downsample".into(),
            then: Activation::Identity,
        }
    }

    /// `body(x) + projection(x)`: both branches receive the block's input and must give the
    /// same shape.
    ///
    /// ```
    /// use lazynet::prelude::*;
    ///
    /// let body = Net::new().push(Conv2d::<U8, U3>::new().stride::<U2>().padding::<U1>());
    /// let down = Net::new().push(Conv2d::<U8, U1>::new().stride::<U2>());
    /// let net = Net::new()
    ///     .push(Residual::with_projection(body, down))
    ///     .bind::<Image<U4, U8, U8>>();
    /// assert_eq!(net.output_dims(), [8, 4, 4]);
    /// assert_eq!(net.named_params().nth(2).map(|(n, _)| n), Some("0.downsample.0.weight"));
    /// ```
    pub fn with_projection<P: Layers>(
        body: Net<Uninit, B>,
        projection: Net<Uninit, P>,
    ) -> Residual<B, Projection<P>> {
        Residual {
            body: body.into_layers(),
            projection: Projection(projection.into_layers()),
            names: Vec::new(),
            projection_name: "downsample".into(),
            then: Activation::Identity,
        }
    }
}

impl<B, P> Residual<B, P> {
    /// Names the body's layers, first to last, in place of their indices: with
    /// `names(["conv1", "relu", "conv2"])` the block at index 4 holds `4.conv1.weight` and
    /// `4.conv2.weight`. Layers past the last name keep their index. Two places with one name
    /// are an error at binding ([`ShapeError::DuplicateName`]).
    pub fn names<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.names = names.into_iter().map(Into::into).collect();
        self
    }

    /// Names the projection (`"downsample"` unless set): its layer `k` is `i.{name}.k`.
    pub fn projection_name(mut self, name: impl Into<String>) -> Self {
        self.projection_name = name.into();
        self
    }

    /// Applies `f` to the sum: `f(x + body(x))`, as ResNet's basic block applies a ReLU after
    /// adding its shortcut. The activation owns no parameters; it runs in the sum's pass.
    ///
    /// ```
    /// use lazynet::layer::Activation;
    /// use lazynet::prelude::*;
    ///
    /// let body = Net::new().push(Dense::<U2>::new());
    /// let net = Net::new()
    ///     .push(Residual::new(body).then(Activation::Relu))
    ///     .bind::<U2>();
    /// let y = net.forward(&Batch::<U2>::from_fn(3, |f, s| f as f32 - s as f32 * 9.0));
    /// assert!(y.as_matrix().iter().all(|v| *v >= 0.0));
    /// ```
    pub fn then(mut self, f: Activation) -> Self {
        self.then = f;
        self
    }
}

impl<B: fmt::Debug, P: fmt::Debug> fmt::Debug for Residual<B, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Residual")
            .field("body", &self.body)
            .field("projection", &self.projection)
            .field("names", &self.names)
            .field("then", &self.then)
            .finish()
    }
}

/// The skip path of a [`Residual`]: [`NoProjection`] or a [`Projection`].
pub trait SkipPath: Clone + Send + Sync + 'static {
    /// Its layers, `None` for the identity.
    #[doc(hidden)]
    fn layers(&self) -> Option<Vec<&dyn Layer>>;
}

impl SkipPath for NoProjection {
    fn layers(&self) -> Option<Vec<&dyn Layer>> {
        None
    }
}

impl<P: Layers> SkipPath for Projection<P> {
    fn layers(&self) -> Option<Vec<&dyn Layer>> {
        Some(layers_of(&self.0))
    }
}

impl<B: Layers, P: SkipPath> Layer for Residual<B, P> {
    fn kind(&self) -> &'static str {
        "Residual"
    }

    fn output_shape(&self, input: Option<&PartialShape>) -> Result<Option<PartialShape>, Fault> {
        chain_output(&layers_of(&self.body), input)
    }

    fn param_shapes(&self, _: Option<&PartialShape>) -> Vec<(Role, PartialShape)> {
        Vec::new()
    }

    fn kernel(&self, _: &[usize], _: &[usize]) -> Box<dyn Kernel> {
        Box::new(PartsKernel("Residual"))
    }

    fn parts(&self) -> Parts<'_> {
        Parts::Residual {
            body: layers_of(&self.body),
            names: &self.names,
            projection: self
                .projection
                .layers()
                .map(|layers| (self.projection_name.as_str(), layers)),
            then: self.then,
        }
    }
}

/// A residual block declares no input size.
impl<B, P> DeclaresInput for Residual<B, P> {
    type Input = Infer;
}

/// `x + body(x)` gives what it receives.
impl<B: Layers, Prev> Follows<Prev> for Residual<B, NoProjection> {
    type Known = Prev;
}

/// `body(x) + projection(x)` gives what the body gives, as far as its declaration knows it.
impl<B: Layers + Produces, P: Layers, Prev> Follows<Prev> for Residual<B, Projection<P>> {
    type Known = <B as Produces>::Known;
}

/// `x + body(x)`: the body maps the input's shape to itself.
impl<In, Known, B> LayerOn<In, Known> for Residual<B, NoProjection>
where
    In: Shape + ShapeKey,
    B: Chain<In>,
    B::Out: ShapeKey,
    <B::Out as ShapeKey>::Key: BranchShapesMatch<<In as ShapeKey>::Key>,
    B::Checks: Both<<<B::Out as ShapeKey>::Key as BranchShapesMatch<In::Key>>::Checks>,
{
    type Out = In;
    type Checks = <B::Checks as Both<
        <<B::Out as ShapeKey>::Key as BranchShapesMatch<In::Key>>::Checks,
    >>::Output;

    fn nested_outputs(out: &mut Vec<PartialShape>) {
        <B::Outs as OutList>::push_all(out);
    }
}

/// `body(x) + projection(x)`: both branches give one shape.
impl<In, Known, B, P> LayerOn<In, Known> for Residual<B, Projection<P>>
where
    In: Shape,
    B: Chain<In>,
    P: Chain<In>,
    B::Out: ShapeKey,
    P::Out: ShapeKey,
    <B::Out as ShapeKey>::Key: BranchShapesMatch<<P::Out as ShapeKey>::Key>,
    B::Checks: Both<P::Checks>,
    <B::Checks as Both<P::Checks>>::Output:
        Both<<<B::Out as ShapeKey>::Key as BranchShapesMatch<<P::Out as ShapeKey>::Key>>::Checks>,
{
    type Out = B::Out;
    type Checks = <<B::Checks as Both<P::Checks>>::Output as Both<
        <<B::Out as ShapeKey>::Key as BranchShapesMatch<<P::Out as ShapeKey>::Key>>::Checks,
    >>::Output;

    fn nested_outputs(out: &mut Vec<PartialShape>) {
        <B::Outs as OutList>::push_all(out);
        <P::Outs as OutList>::push_all(out);
    }
}

// ---------------------------------------------------------------------------------------------
// Sequential blocks.
// ---------------------------------------------------------------------------------------------

/// Layers run one after the other as one layer of a net, their parameters named under its
/// place: PyTorch's `nn.Sequential` inside an `nn.Sequential` (torchvision's `layer1`, whose
/// blocks hold `layer1.0.conv1.weight`).
///
/// The compiler checks its layers as it checks a net's: the block's output is its last
/// layer's.
///
/// # Example
/// ```
/// use lazynet::prelude::*;
///
/// let stage = Sequential::new(Net::new().push(Dense::<U4>::new()).push(Relu).push(Dense::<U3>::new()))
///     .names(["fc1", "relu", "fc2"]);
/// let net = Net::new().push(stage).push(Dense::<U1>::new()).bind::<U2>();
/// let names: Vec<&str> = net.named_params().map(|(n, _)| n).collect();
/// assert_eq!(names, ["0.fc1.weight", "0.fc1.bias", "0.fc2.weight", "0.fc2.bias", "1.weight", "1.bias"]);
/// ```
#[derive(Clone)]
pub struct Sequential<B> {
    body: B,
    names: Vec<String>,
}

impl<B: Layers> Sequential<B> {
    /// The layers of `body`, as one layer.
    pub fn new(body: Net<Uninit, B>) -> Self {
        Sequential {
            body: body.into_layers(),
            names: Vec::new(),
        }
    }
}

impl<B> Sequential<B> {
    /// Names its layers, first to last, in place of their indices: with `names(["conv",
    /// "bn"])` the block at index 4 holds `4.conv.weight`. Layers past the last name keep their
    /// index. A name is one part of a path (not empty, no dot) and two layers cannot share
    /// one: an error at binding ([`ShapeError::BlockName`]).
    pub fn names<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.names = names.into_iter().map(Into::into).collect();
        self
    }
}

impl<B: fmt::Debug> fmt::Debug for Sequential<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sequential")
            .field("body", &self.body)
            .field("names", &self.names)
            .finish()
    }
}

impl<B: Layers> Layer for Sequential<B> {
    fn kind(&self) -> &'static str {
        "Sequential"
    }

    fn output_shape(&self, input: Option<&PartialShape>) -> Result<Option<PartialShape>, Fault> {
        chain_output(&layers_of(&self.body), input)
    }

    fn param_shapes(&self, _: Option<&PartialShape>) -> Vec<(Role, PartialShape)> {
        Vec::new()
    }

    fn kernel(&self, _: &[usize], _: &[usize]) -> Box<dyn Kernel> {
        Box::new(PartsKernel("Sequential"))
    }

    fn parts(&self) -> Parts<'_> {
        Parts::Seq {
            body: layers_of(&self.body),
            names: &self.names,
        }
    }
}

/// A sequential block declares no input size.
impl<B> DeclaresInput for Sequential<B> {
    type Input = Infer;
}

/// It gives what its layers give, as far as their declaration knows it.
impl<B: Layers + Produces, Prev> Follows<Prev> for Sequential<B> {
    type Known = <B as Produces>::Known;
}

/// Its layers' chain.
impl<In: Shape, Known, B: Chain<In>> LayerOn<In, Known> for Sequential<B> {
    type Out = B::Out;
    type Checks = B::Checks;

    fn nested_outputs(out: &mut Vec<PartialShape>) {
        <B::Outs as OutList>::push_all(out);
    }
}

// ---------------------------------------------------------------------------------------------
// Tied parameters.
// ---------------------------------------------------------------------------------------------

/// One layer whose parameters are shared by every place it is pushed at: PyTorch's
/// `shared = nn.LazyLinear(8)` put twice in one `nn.Sequential` (parameter tying).
///
/// Clones of one `Shared` are one parameter set: pushed at several places of a net, they
/// compute with the same parameters, their gradients add up (as PyTorch's autograd sums them),
/// and one optimizer step moves every place. [`named_params`](crate::Net::named_params),
/// [`param_count`](crate::Net::param_count), the gradients, the summary and `save` list the set
/// once, under its first place's name; the summary marks each later place as tied to it.
/// [`load`](crate::Net::load) reads a PyTorch `state_dict` that names the tensor at every
/// place (equal values) or at the first place only.
///
/// Every place must receive the input size the set was made for.
/// * When the width before a place is static, the compiler checks it: the set's type records
///   the width its first such place receives (`D`, inferred, in decimal digits), and a place
///   after another width does not compile.
/// * Otherwise (the first layer of a net, after a run-time width or after a `Flatten`) the
///   place is checked when the net is bound, and the net is bound with `try_bind`, which names
///   both places and both sizes in [`ShapeError::TiedInput`].
///
/// When no place follows a static width (every place after a run-time width, or first in the
/// net), nothing records a width and the compiler asks for the set's type: write
/// `Shared::<_, ()>::new(Dense::dynamic(8))`; every place is then checked by `try_bind`.
///
/// A net holds the parameters of its ties: two nets bound from declarations that hold clones
/// of one `Shared` each own their own copy.
///
/// # Type parameters
/// * `L`: the shared layer: a single layer, or a block ([`Residual`]), whose later places
///   compute with the first place's parameters and are named as their own place (`3.0` for
///   `1.0`).
/// * `D`: the input width of the set's places, in decimal digits; inferred from the first
///   place after a static width.
///
/// # Example
/// d2l's tied net, `Linear(4, 8) ReLU shared ReLU shared ReLU Linear(8, 1)`:
/// ```
/// use lazynet::prelude::*;
///
/// let shared = Shared::new(Dense::<U8>::new());
/// let net = Net::new()
///     .push(Dense::<U8>::new()).push(Relu)
///     .push(shared.clone()).push(Relu)
///     .push(shared.clone()).push(Relu)
///     .push(Dense::<U1>::new())
///     .bind::<U4>();
/// let names: Vec<&str> = net.named_params().map(|(n, _)| n).collect();
/// assert_eq!(names, ["0.weight", "0.bias", "2.weight", "2.bias", "6.weight", "6.bias"]);
/// assert_eq!(net.param_count(), 8 * 4 + 8 + 8 * 8 + 8 + 8 + 1);
/// ```
pub struct Shared<L, D> {
    layer: Arc<L>,
    tie: PhantomData<fn() -> D>,
}

impl<L: Layer, D> Shared<L, D> {
    /// A parameter set to push at several places: push clones of it.
    pub fn new(layer: L) -> Self {
        Shared {
            layer: Arc::new(layer),
            tie: PhantomData,
        }
    }

    /// The shared layer's declaration.
    pub fn layer(&self) -> &L {
        &self.layer
    }
}

impl<L, D> Clone for Shared<L, D> {
    /// Another place of the same parameter set.
    fn clone(&self) -> Self {
        Shared {
            layer: Arc::clone(&self.layer),
            tie: PhantomData,
        }
    }
}

impl<L: fmt::Debug, D> fmt::Debug for Shared<L, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Shared").field(&self.layer).finish()
    }
}

impl<L: Layer, D: 'static> Layer for Shared<L, D> {
    fn kind(&self) -> &'static str {
        self.layer.kind()
    }

    fn output_shape(&self, input: Option<&PartialShape>) -> Result<Option<PartialShape>, Fault> {
        self.layer.output_shape(input)
    }

    fn param_shapes(&self, input: Option<&PartialShape>) -> Vec<(Role, PartialShape)> {
        self.layer.param_shapes(input)
    }

    fn buffers(&self, input: Option<&PartialShape>) -> Vec<super::BufferSpec> {
        self.layer.buffers(input)
    }

    fn declared_input(&self) -> Option<usize> {
        self.layer.declared_input()
    }

    fn kernel(&self, input: &[usize], output: &[usize]) -> Box<dyn Kernel> {
        self.layer.kernel(input, output)
    }

    fn fans(&self, input: &[usize], output: &[usize]) -> Option<(usize, usize)> {
        self.layer.fans(input, output)
    }

    fn scratch(&self, input: &[usize], output: &[usize]) -> Vec<(&'static str, Vec<usize>)> {
        self.layer.scratch(input, output)
    }

    fn parts(&self) -> Parts<'_> {
        Parts::Shared {
            // The allocation's address: the same for every clone, and distinct from every
            // other set's while the declaration holds them.
            key: Arc::as_ptr(&self.layer) as *const () as usize,
            layer: &*self.layer,
        }
    }
}

/// A shared layer declares what its layer declares.
impl<L: DeclaresInput, D> DeclaresInput for Shared<L, D> {
    type Input = L::Input;
}

/// After a static width `P`: the set's recorded width must be `P` (the first such place
/// records it).
impl<L: Follows<Static<P>>, D: 'static, P> Follows<Static<P>> for Shared<L, D>
where
    P: Decimal,
    Dec<P>: TiedInputMatches<D>,
{
    type Known = L::Known;
}

/// Before the input size is known: checked at binding.
impl<L: Follows<Unknown>, D: 'static> Follows<Unknown> for Shared<L, D> {
    type Known = L::Known;
}

/// After a run-time width: checked by `try_bind`.
impl<L: Follows<Dyn>, D: 'static> Follows<Dyn> for Shared<L, D> {
    type Known = L::Known;
}

/// After a flatten whose size waits for the input: checked at binding.
impl<L: Follows<Flattened>, D: 'static> Follows<Flattened> for Shared<L, D> {
    type Known = L::Known;
}

/// What the declaration knew before a tied place: the compiler proved the place's input only
/// after a static width.
pub trait TiedPlace {
    /// [`Proven`](crate::rules::Proven) or [`AtRunTime`].
    type Checks;
}

impl<N> TiedPlace for Static<N> {
    type Checks = crate::rules::Proven;
}
impl TiedPlace for Unknown {
    type Checks = AtRunTime;
}
impl TiedPlace for Dyn {
    type Checks = AtRunTime;
}
impl TiedPlace for Flattened {
    type Checks = AtRunTime;
}

/// The shared layer's rule, and the place's: offered by `bind` only when the compiler proved
/// that this place receives the set's width.
impl<L, D: 'static, In: Shape, Known: TiedPlace> LayerOn<In, Known> for Shared<L, D>
where
    L: LayerOn<In, Known>,
    L::Checks: Both<Known::Checks>,
{
    type Out = L::Out;
    type Checks = <L::Checks as Both<Known::Checks>>::Output;

    fn nested_outputs(out: &mut Vec<PartialShape>) {
        L::nested_outputs(out);
    }
}
