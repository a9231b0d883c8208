//! The dense (fully connected) layer.

use nalgebra::DMatrix;

use super::{
    check_shapes, param_count, Activation, DeclaresInput, Fault, Kernel, Layer, LayerOn, Param,
    PartialShape,
};
use crate::alloc::try_zeros;
use crate::decimal::{Dec, Decimal};
use crate::dim::{Dim, Dyn, StaticDim};
use crate::error::ShapeError;
use crate::init::Role;
use crate::kernels::transposed;
use crate::list::{Flattened, Follows, Static, Unknown};
use crate::rules::{
    AtRunTime, BoundInputMatches, DeclaredInputMatches, FlattenedInputMatches, Input, Proven,
    TakesFlat,
};
use crate::shape::Shape;
use typenum::UInt;

/// Marks a layer whose input size is inferred when the net is bound (the default).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Infer;

/// A fully connected layer: `y = W · x + b`, with `W` of shape `[out, in]` (PyTorch's
/// `nn.Linear` layout) and `b` of shape `[out]`.
///
/// Its parameters are named `{index}.weight` and `{index}.bias`.
///
/// # Type parameters
/// * `O`: the output width, a typenum number (`Dense::<U256>::new()`) or [`Dyn`]
///   (`Dense::dynamic(256)`).
/// * `I`: the input width: [`Infer`] (the default) to take it from the layer before when the
///   net is bound, a typenum number to declare it (`Dense::<U256>::with_input::<U20>()`, Gluon's
///   `in_units`), or [`Dyn`] to declare it at run time (`with_input_size(20)`).
///
/// # Example
/// ```
/// use lazynet::prelude::*;
///
/// let static_width = Dense::<U256>::new();
/// let run_time_width = Dense::dynamic(256);
/// let declared = Dense::<U256>::with_input::<U20>();
/// # let _ = (static_width, run_time_width, declared);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Dense<O: Dim, I = Infer> {
    out: O,
    input: I,
}

impl<O: StaticDim> Dense<O> {
    /// A dense layer of `O` outputs whose input size is inferred at binding.
    pub fn new() -> Self {
        Dense {
            out: O::default(),
            input: Infer,
        }
    }

    /// A dense layer of `O` outputs that declares `I` inputs. A net that starts with it can be
    /// built without naming the input size again ([`Net::build`](crate::Net::build)); a
    /// mismatch with the layer before it is a compile error.
    pub fn with_input<I: StaticDim>() -> Dense<O, I> {
        Dense {
            out: O::default(),
            input: I::default(),
        }
    }
}

impl<O: StaticDim> Default for Dense<O> {
    fn default() -> Self {
        Self::new()
    }
}

impl Dense<Dyn> {
    /// A dense layer whose width is known only at run time.
    ///
    /// A width of 0 is allowed, as in PyTorch: the layer has no outputs, and a layer after it
    /// sees zero features (a dense layer then outputs its bias).
    pub fn dynamic(out: usize) -> Self {
        Dense {
            out: Dyn(out),
            input: Infer,
        }
    }
}

impl<O: Dim> Dense<O> {
    /// Declares the input size at run time; the net that holds it is bound with `try_bind`,
    /// which checks the size.
    pub fn with_input_size(self, input: usize) -> Dense<O, Dyn> {
        Dense {
            out: self.out,
            input: Dyn(input),
        }
    }
}

/// How a layer's input declaration reads: nothing, a static or a run-time size.
pub trait InputDecl: Copy + Send + Sync + 'static {
    /// The declared size, if any.
    fn declared(&self) -> Option<usize>;
}

impl InputDecl for Infer {
    fn declared(&self) -> Option<usize> {
        None
    }
}

impl<D: Dim> InputDecl for D {
    fn declared(&self) -> Option<usize> {
        Some(self.size())
    }
}

impl<O: Dim, I: InputDecl> Layer for Dense<O, I> {
    fn kind(&self) -> &'static str {
        "Dense"
    }

    fn output_shape(&self, input: Option<&PartialShape>) -> Result<Option<PartialShape>, Fault> {
        if let Some(input) = input {
            let found = match input.0.as_slice() {
                [found] => *found,
                _ => {
                    return Err(Fault::Rank {
                        needs: "a flat input",
                        found: input.or_zero(),
                    })
                }
            };
            if let (Some(expected), Some(actual)) = (self.input.declared(), found) {
                if expected != actual {
                    return Err(Fault::DeclaredInput { expected, actual });
                }
            }
        }
        Ok(Some(PartialShape::from_dims(&[self.out.size()])))
    }

    fn param_shapes(&self, input: Option<&PartialShape>) -> Vec<(Role, PartialShape)> {
        let input = self
            .input
            .declared()
            .or_else(|| input.and_then(PartialShape::len));
        vec![
            (
                Role::Weight,
                PartialShape(vec![Some(self.out.size()), input]),
            ),
            (Role::Bias, PartialShape(vec![Some(self.out.size())])),
        ]
    }

    fn declared_input(&self) -> Option<usize> {
        self.input.declared()
    }

    fn kernel(&self, _: &[usize], _: &[usize]) -> Box<dyn Kernel> {
        Box::new(DenseKernel)
    }
}

/// The bound computation of [`Dense`]: `y = f(W·x + b)`.
#[derive(Clone, Copy, Debug)]
struct DenseKernel;

impl Kernel for DenseKernel {
    fn forward(
        &self,
        params: &[Param],
        x: &DMatrix<f32>,
        y: &mut DMatrix<f32>,
        then: Activation,
    ) -> Result<(), ShapeError> {
        let [w, b] = params else {
            return Err(param_count("Dense", params.len(), 2));
        };
        let (out, inp) = w.value().shape();
        let n = x.ncols();
        check_shapes(
            "Dense",
            &[
                ("the bias", b.value().shape(), (out, 1)),
                ("the input", x.shape(), (inp, n)),
                ("the output", y.shape(), (out, n)),
            ],
        )?;
        y.gemm(1.0, w.value(), x, 0.0);
        then.apply(y.as_mut_slice(), b.value().as_slice(), 1);
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
        let ([w, b], [dw, db]) = (params, &mut *grads) else {
            return Err(param_count("Dense", params.len().min(grads.len()), 2));
        };
        let (out, inp) = w.value().shape();
        let n = x.ncols();
        let mut buffers = vec![
            ("the bias", b.value().shape(), (out, 1)),
            ("the input", x.shape(), (inp, n)),
            ("the output gradient", dy.shape(), (out, n)),
            ("the weight gradient", dw.shape(), (out, inp)),
            ("the bias gradient", db.shape(), (out, 1)),
        ];
        if let Some(dx) = &dx {
            buffers.push(("the input gradient", dx.shape(), (inp, n)));
        }
        check_shapes("Dense", &buffers)?;
        // dW = dY · Xᵀ, db = the row sums of dY, dX = Wᵀ · dY.
        dw.gemm(1.0, dy, &transposed(x), 0.0);
        for column in dy.as_slice().chunks_exact(out.max(1)) {
            for (g, d) in db.as_mut_slice().iter_mut().zip(column) {
                *g += d;
            }
        }
        if let Some(dx) = dx {
            // Wᵀ copied: the left operand of a GEMM must be contiguous (see `transposed`).
            let mut w_t = try_zeros(inp, out, || {
                format!("the transposed weight of a Dense, {inp} × {out} values")
            })?;
            w.value().transpose_to(&mut w_t);
            dx.gemm(1.0, &w_t, dy, 0.0);
        }
        Ok(())
    }

    fn fuses_activation(&self) -> bool {
        true
    }
}

/// The rule binding checks for a declared input `Self` ([`Infer`], a static size or [`Dyn`]).
///
/// The implementations differ in their heads (`UInt<…>`, [`Unknown`], [`Static`], [`Dyn`]), so
/// the compiler always picks exactly one and, when its condition fails, reports that
/// condition: the decimal [`BoundInputMatches`] rule.
///
/// # Type parameters
/// * `In`: what reaches the layer once the net is bound.
/// * `Known`: what the declaration already produced before binding: a static size (then
///   `push` made the check), [`Dyn`], or [`Unknown`] (then binding makes it).
pub trait InputRule<In, Known> {
    /// [`Proven`] or [`AtRunTime`].
    type Checks;
}

/// No declared input: nothing to check.
impl<In, Known> InputRule<In, Known> for Infer {
    type Checks = Proven;
}

/// Declared at run time: checked by `try_bind`.
impl<In, Known> InputRule<In, Known> for Dyn {
    type Checks = AtRunTime;
}

/// Declared static, reached by a static size the declaration did not know: checked here.
impl<U, B, In> InputRule<In, Unknown> for UInt<U, B>
where
    In: StaticDim + Decimal,
    UInt<U, B>: Decimal,
    Dec<UInt<U, B>>: BoundInputMatches<Dec<In>>,
{
    type Checks = Proven;
}

/// Declared static, after a flatten whose size waits for the input: checked here.
impl<U, B, In> InputRule<In, Flattened> for UInt<U, B>
where
    In: StaticDim + Decimal,
    UInt<U, B>: Decimal,
    Dec<UInt<U, B>>: FlattenedInputMatches<Dec<In>>,
{
    type Checks = Proven;
}

/// Declared static, after a static width: `push` made the check.
impl<U, B, IU, IB, K> InputRule<UInt<IU, IB>, Static<K>> for UInt<U, B> {
    type Checks = Proven;
}

/// Declared static, reached by a run-time size: checked by `try_bind`.
impl<U, B, Known> InputRule<Dyn, Known> for UInt<U, B> {
    type Checks = AtRunTime;
}

/// A flat input; the declared input decides what is checked and when.
impl<O: Dim, I: InputDecl, In: Shape, Known> LayerOn<In, Known> for Dense<O, I>
where
    Input<In>: TakesFlat,
    I: InputRule<In, Known>,
{
    type Out = O;
    type Checks = I::Checks;
}

/// The rule [`Net::push`](crate::Net::push) checks for a declared input `Self`, against what
/// the declaration produced so far (`Prev`). Like [`InputRule`], one implementation per head.
pub trait PushRule<Prev> {}

/// No declared input: nothing to check.
impl<Prev> PushRule<Prev> for Infer {}

/// Declared at run time: checked by `try_bind`.
impl<Prev> PushRule<Prev> for Dyn {}

/// Declared static, after a part whose size waits for the input: checked at binding.
impl<U, B> PushRule<Unknown> for UInt<U, B> {}

/// Declared static, after a run-time width: checked by `try_bind`.
impl<U, B> PushRule<Dyn> for UInt<U, B> {}

/// Declared static, after a flatten whose size waits for the input: checked at binding.
impl<U, B> PushRule<Flattened> for UInt<U, B> {}

/// Declared static, after a static width: the compiler checks they are equal, here.
impl<U, B, P> PushRule<Static<P>> for UInt<U, B>
where
    P: Decimal,
    UInt<U, B>: Decimal,
    Dec<UInt<U, B>>: DeclaredInputMatches<Dec<P>>,
{
}

/// A dense layer of static width produces that width, whatever came before.
impl<U, B, I: InputDecl, Prev> Follows<Prev> for Dense<UInt<U, B>, I>
where
    UInt<U, B>: Dim,
{
    type Known = Static<UInt<U, B>>;
}

/// A dense layer of run-time width produces a run-time width.
impl<I: InputDecl, Prev> Follows<Prev> for Dense<Dyn, I> {
    type Known = Dyn;
}

impl<O: Dim, I: InputDecl> DeclaresInput for Dense<O, I> {
    type Input = I;
}

#[cfg(test)]
mod tests {
    use super::*;
    use typenum::{U10, U20, U256};

    #[test]
    fn shapes_follow_pytorch_order() {
        let d = Dense::<U256>::new();
        let twenty = PartialShape::from_dims(&[20]);
        assert_eq!(
            d.param_shapes(Some(&twenty))[0].1,
            PartialShape(vec![Some(256), Some(20)])
        );
        assert_eq!(d.param_shapes(None)[0].1.to_string(), "(256, ?)");
        assert_eq!(d.param_shapes(None)[1].1.to_string(), "(256,)");
        assert_eq!(
            d.output_shape(None),
            Ok(Some(PartialShape::from_dims(&[256])))
        );
        assert_eq!(
            d.output_shape(Some(&PartialShape::from_dims(&[1, 2, 3]))),
            Err(Fault::Rank {
                needs: "a flat input",
                found: vec![1, 2, 3]
            })
        );
        assert_eq!(
            Dense::<U10>::with_input::<U20>().output_shape(Some(&PartialShape::from_dims(&[21]))),
            Err(Fault::DeclaredInput {
                expected: 20,
                actual: 21
            })
        );
    }

    #[test]
    fn declared_inputs_are_reported() {
        assert_eq!(Dense::<U10>::with_input::<U20>().declared_input(), Some(20));
        assert_eq!(Dense::<U10>::new().declared_input(), None);
        assert_eq!(
            Dense::dynamic(10).with_input_size(30).declared_input(),
            Some(30)
        );
        assert_eq!(
            Dense::<U10>::with_input::<U20>().param_shapes(None)[0]
                .1
                .to_string(),
            "(10, 20)"
        );
    }

    #[test]
    fn output_types_follow_the_width() {
        fn out_of<L: LayerOn<U20>>(_: &L) -> usize {
            L::Out::default().flat_size()
        }
        assert_eq!(out_of(&Dense::<U10>::new()), 10);
        let _: <Dense<Dyn> as LayerOn<U20>>::Out = Dyn(7);
    }
}
