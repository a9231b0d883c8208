//! The type-level list of layers a net is declared from.
//!
//! `Net::new()` holds `()`; each `push` wraps the list so far with the new layer: `((), A)`,
//! then `(((), A), B)`. The last layer is outermost, so `push` costs nothing at the type level,
//! and the input flows from the innermost pair outwards.

use crate::dim::Dim;
use crate::layer::{Layer, LayerOn};
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

/// A list of layers that accepts an input of dimension `In`: every layer accepts what the one
/// before it produces.
///
/// # Type parameters
/// * `In`: the net's input dimension.
pub trait Chain<In: Dim>: Layers {
    /// The dimension the last layer produces.
    type Out: Dim;
    /// [`Proven`](crate::rules::Proven) when the compiler made every check,
    /// [`AtRunTime`](crate::rules::AtRunTime) when one is left for run time.
    type Checks;
    /// The output dimension's value for this input.
    fn output(&self, input: In) -> Self::Out;
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
impl<In: Dim, P: Chain<In>, H: LayerOn<P::Out> + Clone> Chain<In> for (P, H)
where
    P::Checks: Both<H::Checks>,
{
    type Out = H::Out;
    type Checks = <P::Checks as Both<H::Checks>>::Output;
    fn output(&self, input: In) -> H::Out {
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
