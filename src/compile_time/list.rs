//! The type-level list of layers a net is declared from.
//!
//! `Net::new()` holds `()`; each `push` wraps the list so far in a [`Cons`] with the new layer:
//! `Cons<(), A, _>`, then `Cons<Cons<(), A, _>, B, _>`. The last layer is outermost, so `push`
//! costs nothing at the type level, and the input flows from the innermost node outwards.
//!
//! Each node also records, as its third type parameter, what the declaration produces up to
//! that layer as far as the compiler knows before binding ([`Produces`]). `push` reads it from
//! the outermost node instead of walking the list, so declaring a net of `n` layers costs the
//! compiler `O(n)`, not `O(n²)` (measured: 400 layers went from 10.9 s to well under a second
//! of `cargo check`).

use core::marker::PhantomData;

use crate::dim::Dim;
use crate::layer::{DeclaresInput, Dense, Layer, LayerOn, PushRule};
use crate::partial::PartialShape;
use crate::rules::{Both, Proven};
use crate::shape::Shape;

/// The type of a list of layers, written first to last: the `L` of a `Net<S, L>`.
///
/// `Layers![Dense<U256>, Relu, Dense<U10>]` is the type that
/// `Net::new().push(Dense::<U256>::new()).push(Relu).push(Dense::<U10>::new())` holds.
///
/// # Example
/// ```
/// use lazynet::prelude::*;
/// use lazynet::Layers;
///
/// type Mlp = Layers![Dense<U256>, Relu, Dense<U10>];
///
/// fn declare() -> Net<Uninit, Mlp> {
///     Net::new().push(Dense::<U256>::new()).push(Relu).push(Dense::<U10>::new())
/// }
/// let net: Net<Init<U20>, Mlp> = declare().bind::<U20>();
/// # let _ = net;
/// ```
#[macro_export]
macro_rules! Layers {
    (@acc $acc:ty;) => { $acc };
    (@acc $acc:ty; $head:ty $(, $rest:ty)*) => {
        $crate::Layers!(@acc $crate::list::Cons<$acc, $head, $crate::list::KnownAfter<$acc, $head>>; $($rest),*)
    };
    ($($layer:ty),* $(,)?) => { $crate::Layers!(@acc (); $($layer),*) };
}

/// A node of the list: the layers before it (`P`), the last layer (`H`), and what the
/// declaration produces after `H` as far as the compiler knows (`K`, see [`Produces`]).
///
/// # Type parameters
/// * `P`: the list before, `()` or another `Cons`.
/// * `H`: the last layer.
/// * `K`: [`Unknown`], [`Static<N>`](Static) or [`Dyn`](crate::Dyn).
pub struct Cons<P, H, K> {
    pub(crate) prev: P,
    pub(crate) last: H,
    known: PhantomData<fn() -> K>,
}

impl<P, H, K> Cons<P, H, K> {
    pub(crate) fn new(prev: P, last: H) -> Self {
        Cons {
            prev,
            last,
            known: PhantomData,
        }
    }
}

impl<P: Clone, H: Clone, K> Clone for Cons<P, H, K> {
    fn clone(&self) -> Self {
        Cons::new(self.prev.clone(), self.last.clone())
    }
}

impl<P: core::fmt::Debug, H: core::fmt::Debug, K> core::fmt::Debug for Cons<P, H, K> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_tuple("Cons")
            .field(&self.prev)
            .field(&self.last)
            .finish()
    }
}

/// A list of layers, walked at run time in order.
pub trait Layers: Clone + Send + Sync + 'static {
    /// How many layers the list holds.
    const LEN: usize;

    /// Appends each layer, first to last, to `out`.
    fn visit<'a>(&'a self, out: &mut Vec<&'a dyn Layer>);
}

/// When the list is empty.
impl Layers for () {
    const LEN: usize = 0;
    fn visit<'a>(&'a self, _: &mut Vec<&'a dyn Layer>) {}
}

/// The layers before, then the last one.
impl<P: Layers, H: Layer + Clone, K: 'static> Layers for Cons<P, H, K> {
    const LEN: usize = P::LEN + 1;
    // Not inlined: each level would otherwise inline every level below it, and release builds
    // of long nets would grow with the square of their length (measured).
    #[inline(never)]
    fn visit<'a>(&'a self, out: &mut Vec<&'a dyn Layer>) {
        self.prev.visit(out);
        out.push(&self.last);
    }
}

/// Marks a size that depends on the input size, not yet known while the net is declared.
#[derive(Clone, Copy, Debug, Default)]
pub struct Unknown;

/// Marks a static size `N` that the declaration knows before binding (a static width).
///
/// Kept apart from [`Unknown`] and [`Dyn`](crate::Dyn) by its head, so that the compiler never
/// has to evaluate typenum arithmetic to tell them apart.
#[derive(Clone, Copy, Debug, Default)]
pub struct Static<N>(PhantomData<N>);

/// Marks the flat size a [`Flatten`](crate::layer::Flatten) produces from an image whose size
/// waits for the input: a dense layer that declares its input after it is checked at binding,
/// against channels × height × width.
#[derive(Clone, Copy, Debug, Default)]
pub struct Flattened;

/// What a declaration produces so far, as far as the compiler knows it before binding:
/// [`Static<N>`](Static) for a static width, [`Dyn`](crate::Dyn) for a run-time width, or
/// [`Unknown`] while it still depends on the input size. Read from the outermost node, in
/// constant time.
pub trait Produces {
    /// [`Unknown`], [`Static<N>`](Static) or [`Dyn`](crate::Dyn).
    type Known;
}

/// When the list is empty: the input size, not known yet.
impl Produces for () {
    type Known = Unknown;
}

/// Recorded in the node.
impl<P, H, K> Produces for Cons<P, H, K> {
    type Known = K;
}

/// What `H` produces after the list `P`: the `K` of the node that `push` makes.
pub type KnownAfter<P, H> = <H as Follows<<P as Produces>::Known>>::Known;

/// What a layer produces after a part of a declaration producing `Prev` ([`Unknown`],
/// [`Static<N>`](Static) or [`Dyn`](crate::Dyn)), as far as the compiler knows before binding.
pub trait Follows<Prev>: Layer {
    /// What the layer produces, as far as the compiler knows before binding.
    type Known;
}

/// A layer whose declared input agrees with `Prev`, what the declaration produced before it
/// as far as the compiler knows: the bound of [`Net::push`](crate::Net::push).
pub trait FitsAfter<Prev> {}

/// Whatever the layer, its declared input decides, by [`PushRule`].
impl<H: DeclaresInput, Prev> FitsAfter<Prev> for H where H::Input: PushRule<Prev> {}

/// A list of layers that accepts an input of dimension `In`: every layer accepts what the one
/// before it produces.
///
/// # Type parameters
/// * `In`: the net's input shape.
pub trait Chain<In: Shape>: Layers + Produces {
    /// The shape the last layer produces.
    type Out: Shape;
    /// [`Proven`] when the compiler made every check,
    /// [`AtRunTime`](crate::rules::AtRunTime) when one is left for run time.
    type Checks;

    /// Each layer with the input the compiler computed for it, first to last: what binding
    /// compares each layer's run-time rule with ([`OutList`]).
    #[doc(hidden)]
    type Outs: OutList;
}

/// Every layer's output shape as the compiler computed it for the input `In`, first to last.
pub(crate) fn compile_time_outputs<In: Shape, L: Chain<In>>() -> Vec<PartialShape> {
    let mut out = Vec::with_capacity(L::LEN);
    <L::Outs as OutList>::push_all(&mut out);
    out
}

/// When the list is empty: the input passes through.
impl<In: Shape> Chain<In> for () {
    type Out = In;
    type Checks = Proven;
    type Outs = ();
}

/// The layers before accept `In`, then the last layer accepts what they produce.
impl<In: Shape, P: Chain<In>, H, K: 'static> Chain<In> for Cons<P, H, K>
where
    H: LayerOn<P::Out, P::Known> + Clone,
    P::Checks: Both<H::Checks>,
{
    type Out = <H as LayerOn<P::Out, P::Known>>::Out;
    type Checks = <P::Checks as Both<H::Checks>>::Output;
    type Outs = (P::Outs, At<H, P::Out, P::Known>);
}

/// A layer `H` at the input `In` the compiler computed for it, after a declaration that
/// produced `Known`: an entry of [`Chain::Outs`].
#[doc(hidden)]
pub struct At<H, In, Known>(
    PhantomData<fn() -> H>,
    PhantomData<fn() -> In>,
    PhantomData<fn() -> Known>,
);

/// The layers of a list with the inputs the compiler computed, as a list of [`At`]s: their
/// compile-time output shapes are read from it without going through [`Chain`] again.
///
/// Why not a method of `Chain`: calling a method of `Chain` from compiled code makes the
/// compiler re-check the `Chain` rule of that node, whose conditions name every node before
/// it; a 400-layer net's release build took 45 s instead of 5 (measured). The rule of an
/// `At` names one layer.
#[doc(hidden)]
pub trait OutList {
    /// Appends each layer's output shape (and the shapes inside a composite layer), first to
    /// last.
    fn push_all(out: &mut Vec<PartialShape>);
}

impl OutList for () {
    fn push_all(_: &mut Vec<PartialShape>) {}
}

impl<P: OutList, H: LayerOn<In, Known>, In: Shape, Known> OutList for (P, At<H, In, Known>) {
    // Not inlined, as `visit`.
    #[inline(never)]
    fn push_all(out: &mut Vec<PartialShape>) {
        P::push_all(out);
        out.push(<H::Out as Shape>::compile_time());
        H::nested_outputs(out);
    }
}

/// The input size that the first layer of a list declares.
pub trait FirstInput: Layers {
    /// The declared input dimension.
    type Input: Dim;
}

/// When the list holds one layer: a dense layer that declares its input.
impl<O: Dim, I: Dim, K: 'static> FirstInput for Cons<(), Dense<O, I>, K>
where
    Dense<O, I>: Layer,
{
    type Input = I;
}

/// When the list holds one layer: a layer that declares its input with
/// [`with_input`](crate::layer::DeclareInput::with_input).
impl<L: Layer + Clone, I: Dim, K: 'static> FirstInput for Cons<(), crate::layer::WithInput<L, I>, K>
where
    crate::layer::WithInput<L, I>: Layer,
{
    type Input = I;
}

/// More layers follow the first: look further in.
impl<PP, PH, PK, H: Layer + Clone, K: 'static> FirstInput for Cons<Cons<PP, PH, PK>, H, K>
where
    Cons<PP, PH, PK>: FirstInput,
{
    type Input = <Cons<PP, PH, PK> as FirstInput>::Input;
}
