//! [`WithInput`]: any layer that declares its input size, and [`DeclareInput`], the method
//! that makes one (`Gain::new().with_input::<U4>()`). A layer written outside the crate gets
//! Gluon's `in_units` without writing a type parameter, a rule or a check of its own.

use typenum::UInt;

use super::{DeclaresInput, Fault, Infer, InputDecl, InputRule, Kernel, Layer, LayerOn, Parts};
use crate::dim::{Dyn, StaticDim};
use crate::init::Role;
use crate::list::{Follows, Static};
use crate::partial::PartialShape;
use crate::rules::Both;
use crate::shape::Shape;

/// A layer `L` that declares `I` inputs: a typenum number (checked by the compiler, as
/// [`Dense::with_input`](super::Dense::with_input) is) or [`Dyn`] (checked by `try_bind`).
/// Made by [`DeclareInput::with_input`] and [`DeclareInput::with_input_size`].
///
/// A declared input is a flat width: the layer then needs a flat input, and its parameters'
/// shapes are known before binding (`(4,)` rather than `(?,)`).
///
/// # Type parameters
/// * `L`: the layer.
/// * `I`: the declared width.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WithInput<L, I> {
    layer: L,
    input: I,
}

impl<L, I> WithInput<L, I> {
    /// The layer that declares the input.
    pub fn layer(&self) -> &L {
        &self.layer
    }
}

/// The methods that make a layer declare its input size, for every layer that declares none.
///
/// # Example
/// ```
/// use lazynet::prelude::*;
///
/// // Any layer, here an activation: 4 inputs declared, checked by the compiler.
/// let net = Net::new().push(Relu.with_input::<U4>()).push(Dense::<U2>::new()).build();
/// assert_eq!(net.param_shapes()[0], [2, 4]);
///
/// // At run time, checked by `try_bind`.
/// let decl = Net::new().push(Tanh.with_input_size(4)).push(Dense::<U2>::new());
/// assert!(decl.try_bind(5).is_err());
/// assert!(decl.try_bind(4).is_ok());
/// ```
pub trait DeclareInput: Layer + DeclaresInput<Input = Infer> + Sized {
    /// Declares `I` inputs, checked by the compiler: a net that starts with it is bound by
    /// [`build`](crate::Net::build).
    fn with_input<I: StaticDim>(self) -> WithInput<Self, I> {
        WithInput {
            layer: self,
            input: I::default(),
        }
    }

    /// Declares `input` inputs at run time, checked by `try_bind`.
    fn with_input_size(self, input: usize) -> WithInput<Self, Dyn> {
        WithInput {
            layer: self,
            input: Dyn(input),
        }
    }
}

impl<L: Layer + DeclaresInput<Input = Infer>> DeclareInput for L {}

impl<L: Layer, I: InputDecl> WithInput<L, I> {
    /// The declared width as the shape the layer sees.
    fn declared(&self) -> Option<PartialShape> {
        self.input.declared().map(|n| PartialShape::from_dims(&[n]))
    }
}

impl<L: Layer, I: InputDecl> Layer for WithInput<L, I> {
    fn kind(&self) -> &'static str {
        self.layer.kind()
    }

    fn output_shape(&self, input: Option<&PartialShape>) -> Result<Option<PartialShape>, Fault> {
        let declared = self.declared();
        if let (Some(input), Some(expected)) = (input, self.input.declared()) {
            match input.0.as_slice() {
                [Some(actual)] if *actual != expected => {
                    return Err(Fault::DeclaredInput {
                        expected,
                        actual: *actual,
                    })
                }
                [_] => {}
                _ => {
                    return Err(Fault::Rank {
                        needs: "a flat input (it declares its input size)",
                        found: input.or_zero(),
                    })
                }
            }
        }
        self.layer.output_shape(declared.as_ref().or(input))
    }

    fn param_shapes(&self, input: Option<&PartialShape>) -> Vec<(Role, PartialShape)> {
        let declared = self.declared();
        self.layer.param_shapes(declared.as_ref().or(input))
    }

    fn buffers(&self, input: Option<&PartialShape>) -> Vec<super::BufferSpec> {
        let declared = self.declared();
        self.layer.buffers(declared.as_ref().or(input))
    }

    fn declared_input(&self) -> Option<usize> {
        self.input.declared()
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
        self.layer.parts()
    }
}

/// `push` checks the declared width against what comes before, as for a dense layer.
impl<L, I> DeclaresInput for WithInput<L, I> {
    type Input = I;
}

/// Declared static: the layer follows a width of `I`.
impl<L, U: 'static, B: 'static, Prev> Follows<Prev> for WithInput<L, UInt<U, B>>
where
    L: Follows<Static<UInt<U, B>>>,
    UInt<U, B>: StaticDim,
{
    type Known = <L as Follows<Static<UInt<U, B>>>>::Known;
}

/// Declared at run time: the layer follows a run-time width.
impl<L: Follows<Dyn>, Prev> Follows<Prev> for WithInput<L, Dyn> {
    type Known = L::Known;
}

/// The layer's own rule, and the declared width's: checked by the compiler when the width
/// reaching it is static, by `try_bind` otherwise.
impl<L, I, In: Shape, Known> LayerOn<In, Known> for WithInput<L, I>
where
    L: LayerOn<In, Known>,
    I: InputDecl + InputRule<In, Known>,
    L::Checks: Both<I::Checks>,
{
    type Out = L::Out;
    type Checks = <L::Checks as Both<I::Checks>>::Output;

    fn nested_outputs(out: &mut Vec<PartialShape>) {
        L::nested_outputs(out);
    }
}
