//! The type-level list of layers a net is declared from.
//!
//! `Net::new()` holds `()`; each `push` wraps the list so far with the new layer: `((), A)`,
//! then `(((), A), B)`. The last layer is outermost, so `push` costs nothing at the type level,
//! and the input flows from the innermost pair outwards.

use crate::dim::Dim;

/// The type of a list of layers, written first to last: `Layers![Dense<U256>, Relu,
/// Dense<U10>]` is `((((), Dense<U256>), Relu), Dense<U10>)`, the `L` of a `Net<S, L>`.
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
    (@acc $acc:ty; $head:ty $(, $rest:ty)*) => { $crate::Layers!(@acc ($acc, $head); $($rest),*) };
    ($($layer:ty),* $(,)?) => { $crate::Layers!(@acc (); $($layer),*) };
}
use crate::layer::{DeclaresInput, Layer, LayerOn, PushRule};
use crate::rules::Both;

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
impl<P: Layers, H: Layer + Clone> Layers for (P, H) {
    const LEN: usize = P::LEN + 1;
    fn visit<'a>(&'a self, out: &mut Vec<&'a dyn Layer>) {
        self.0.visit(out);
        out.push(&self.1);
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
pub struct Static<N>(core::marker::PhantomData<N>);

/// What a declaration produces so far, as far as the compiler knows it before binding:
/// [`Static<N>`](Static) for a static width, [`Dyn`](crate::Dyn) for a run-time width, or
/// [`Unknown`] while it still depends on the input size. [`Net::push`](crate::Net::push) uses it to check a layer's
/// declared input at the line that pushes it.
pub trait Produces: Layers {
    /// A dimension, or [`Unknown`].
    type Known;
}

/// When the list is empty: the input size, not known yet.
impl Produces for () {
    type Known = Unknown;
}

/// The layers before, then what the last layer makes of their output.
impl<P: Produces, H: Follows<P::Known> + Clone> Produces for (P, H) {
    type Known = H::Known;
}

/// What a layer produces after a part of a declaration producing `Prev` ([`Unknown`],
/// [`Static<N>`](Static) or [`Dyn`](crate::Dyn)), as far as the compiler knows before binding.
pub trait Follows<Prev>: Layer {
    /// What the layer produces, as far as the compiler knows before binding.
    type Known;
}

/// A layer whose declared input agrees with `Prev`, what the declaration produced before it
/// as far as the compiler knows: the bound of [`Net::push`](crate::Net::push).
pub trait FitsAfter<Prev> {}

/// Whatever the layer, its declared input decides, by
/// [`PushRule`](crate::layer::PushRule).
impl<H: DeclaresInput, Prev> FitsAfter<Prev> for H where H::Input: PushRule<Prev> {}

/// A list of layers that accepts an input of dimension `In`: every layer accepts what the one
/// before it produces.
///
/// # Type parameters
/// * `In`: the net's input dimension.
pub trait Chain<In: Dim>: Produces {
    /// The dimension the last layer produces.
    type Out: Dim;
    /// [`Proven`](crate::rules::Proven) when the compiler made every check,
    /// [`AtRunTime`](crate::rules::AtRunTime) when one is left for run time.
    type Checks;
    /// The output dimension's value for this input.
    fn output(&self, input: In) -> <Self as Chain<In>>::Out;
}

/// When the list is empty: the input passes through.
impl<In: Dim> Chain<In> for () {
    type Out = In;
    type Checks = crate::rules::Proven;
    fn output(&self, input: In) -> In {
        input
    }
}

/// The layers before accept `In`, then the last layer accepts what they produce.
impl<In: Dim, P: Chain<In>, H> Chain<In> for (P, H)
where
    H: LayerOn<P::Out, P::Known> + Follows<P::Known> + Clone,
    P::Checks: Both<H::Checks>,
{
    type Out = <H as LayerOn<P::Out, P::Known>>::Out;
    type Checks = <P::Checks as Both<H::Checks>>::Output;
    fn output(&self, input: In) -> <H as LayerOn<P::Out, P::Known>>::Out {
        self.1.output(self.0.output(input))
    }
}

/// The input size that the first layer of a list declares.
pub trait FirstInput: Layers {
    /// The declared input dimension.
    type Input: Dim;
    /// Its value.
    fn first_input(&self) -> Self::Input;
}

/// When the list holds one layer: a dense layer that declares its input.
impl<O: Dim, I: Dim> FirstInput for ((), crate::layer::Dense<O, I>)
where
    crate::layer::Dense<O, I>: Layer,
{
    type Input = I;
    fn first_input(&self) -> I {
        self.1.declared_dim()
    }
}

/// More layers follow the first: look further in.
impl<PP, PH, H: Layer + Clone> FirstInput for ((PP, PH), H)
where
    (PP, PH): FirstInput,
{
    type Input = <(PP, PH) as FirstInput>::Input;
    fn first_input(&self) -> Self::Input {
        self.0.first_input()
    }
}
