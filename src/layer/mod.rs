//! Layers: what a net is declared from.
//!
//! A layer value is a *specification*: it states its output width and, optionally, its input
//! width. It holds no parameters; binding the net turns each specification into a bound layer
//! that owns its parameters.

mod activation;
mod compose;
mod conv;
mod declared;
mod dense;
mod flatten;
mod nonlinear;
mod norm;
mod pass;
mod pool;

use core::fmt;

use nalgebra::DMatrix;

pub use crate::error::Fault;
use crate::error::ShapeError;
pub use crate::partial::PartialShape;

pub use activation::{Identity, Relu, Sigmoid, Tanh};
pub use compose::{
    NoProjection, Parts, Projection, Residual, Sequential, Shared, SkipPath, TiedPlace,
};
pub use conv::Conv2d;
pub use declared::{DeclareInput, WithInput};
pub use dense::{Dense, Infer, InputDecl, InputRule, PushRule};
pub use flatten::Flatten;
pub use nonlinear::{Gelu, LeakyRelu, Softmax};
pub use norm::{BatchNorm, Dropout, LayerNorm, SettingError};
pub use pass::{Buffer, BufferKind, BufferSpec, BufferValue, Mode, Pass};
pub use pool::{Avg, AvgPool2d, Max, MaxPool2d, Pool2d, PoolKind};

use crate::init::Role;
use crate::shape::Shape;

pub use crate::state::Param;
pub use activation::Activation;

/// A layer specification: its kind, how it maps shapes, the parameters it will own, and the
/// computation it becomes once bound.
///
/// This is the run-time half of a layer; [`LayerOn`], [`DeclaresInput`] and
/// [`Follows`](crate::list::Follows) are its compile-time half. A layer written outside this
/// crate implements all four, and the compiler checks it in a net as it checks the layers
/// here: see `examples/custom_layer.rs` for a layer whose parameter shape follows the
/// inferred input.
pub trait Layer: Send + Sync + 'static {
    /// The layer's kind, e.g. `"Dense"`; error messages and summaries show it.
    fn kind(&self) -> &'static str;

    /// The output shape, given the input shape as far as it is known (`None`: not even its
    /// rank is known). Sizes that depend on an unknown one are `None`; given a fully known
    /// input, the output must be fully known, or the layer reports why the input does not fit.
    fn output_shape(&self, input: Option<&PartialShape>) -> Result<Option<PartialShape>, Fault>;

    /// The shapes of the parameters it will own (PyTorch order: weight, then bias), with `None`
    /// where a size is not known yet. A parameter of shape `[d0, d1, …]` is stored as a
    /// `d0 × (d1·…)` matrix (a column for a 1-d shape).
    fn param_shapes(&self, input: Option<&PartialShape>) -> Vec<(Role, PartialShape)>;

    /// The input width this layer declares, if it declares one.
    fn declared_input(&self) -> Option<usize> {
        None
    }

    /// The computation the layer runs once bound to an input of shape `input` (which
    /// [`output_shape`](Layer::output_shape) accepted, giving `output`).
    fn kernel(&self, input: &[usize], output: &[usize]) -> Box<dyn Kernel>;

    /// The fan-in and fan-out its parameters' initializers see (PyTorch's
    /// `_calculate_fan_in_and_fan_out`), given the known input and output shapes. `None` (the
    /// default) reads them from the first parameter, as PyTorch does: a `[out, in, k…]` weight
    /// has fan-in `in·k…` and fan-out `out·k…`; a 1-d one has fan-in 0.
    fn fans(&self, _input: &[usize], _output: &[usize]) -> Option<(usize, usize)> {
        None
    }

    /// The work buffers the layer needs per sample, beyond its input and output, given its
    /// known input and output shapes: their names and shapes, so that binding checks that
    /// they can be allocated.
    fn scratch(&self, _input: &[usize], _output: &[usize]) -> Vec<(&'static str, Vec<usize>)> {
        Vec::new()
    }

    /// The buffers the layer will own, given its input as far as it is known: state that is
    /// not learned, such as [`BatchNorm`]'s running statistics. Their names are
    /// `{path}.{name}`; they are saved and loaded with the parameters but are not parameters
    /// (no gradient, no optimizer, no initializer). None unless overridden.
    ///
    /// The kernel reads them, and in training records their new values, through the [`Pass`]
    /// its [`forward_with`](Kernel::forward_with) receives; the optimizer's step writes them.
    ///
    /// # Example
    /// A layer that passes its input through and counts the training steps it took part in:
    /// ```
    /// use lazynet::layer::{
    ///     Activation, BufferKind, BufferSpec, BufferValue, Fault, Kernel, Layer, Mode, Param,
    ///     PartialShape, Pass,
    /// };
    /// use lazynet::nalgebra::DMatrix;
    /// use lazynet::prelude::*;
    ///
    /// #[derive(Clone, Copy, Debug)]
    /// struct Steps;
    ///
    /// impl Layer for Steps {
    ///     fn kind(&self) -> &'static str { "Steps" }
    ///     fn output_shape(&self, input: Option<&PartialShape>)
    ///         -> Result<Option<PartialShape>, Fault> { Ok(input.cloned()) }
    ///     fn param_shapes(&self, _: Option<&PartialShape>) -> Vec<(Role, PartialShape)> { vec![] }
    ///     fn buffers(&self, _: Option<&PartialShape>) -> Vec<BufferSpec> {
    ///         vec![BufferSpec { name: "steps", shape: PartialShape(vec![]), kind: BufferKind::Count }]
    ///     }
    ///     fn kernel(&self, _: &[usize], _: &[usize]) -> Box<dyn Kernel> { Box::new(StepsKernel) }
    /// }
    ///
    /// #[derive(Debug)]
    /// struct StepsKernel;
    ///
    /// impl Kernel for StepsKernel {
    ///     fn forward(&self, _: &[Param], x: &DMatrix<f32>, y: &mut DMatrix<f32>, _: Activation)
    ///         -> Result<(), ShapeError> {
    ///         y.copy_from(x);
    ///         Ok(())
    ///     }
    ///     fn forward_with(&self, pass: &mut Pass<'_>, params: &[Param], x: &DMatrix<f32>,
    ///         y: &mut DMatrix<f32>, then: Activation) -> Result<(), ShapeError> {
    ///         if pass.mode() == Mode::Train {
    ///             let steps = pass.buffers().first().and_then(|b| b.count()).unwrap_or(0);
    ///             pass.set_buffer(0, BufferValue::Count(steps + 1))?;
    ///         }
    ///         self.forward(params, x, y, then)
    ///     }
    ///     fn backward(&self, _: &[Param], _: &DMatrix<f32>, _: &DMatrix<f32>, dy: &DMatrix<f32>,
    ///         _: &mut [DMatrix<f32>], dx: Option<&mut DMatrix<f32>>) -> Result<(), ShapeError> {
    ///         if let Some(dx) = dx {
    ///             dx.copy_from(dy);
    ///         }
    ///         Ok(())
    ///     }
    /// }
    ///
    /// lazynet::keeps_shape!(Steps);
    ///
    /// let mut net = Net::new().push(Dense::<U2>::new()).push(Steps).bind::<U3>();
    /// let x = Batch::<U3>::from_fn(4, |f, s| (f + s) as f32);
    /// let count = |net: &Net<_, _>| net.named_buffers().next().and_then(|b| b.count());
    /// let (_, grads) = net.loss_and_grads(&x, &Batch::<U2>::zeros(4), Mse)?;
    /// assert_eq!(count(&net), Some(0)); // a pass changes nothing
    /// Sgd::new(0.1).step(&mut net, &grads)?;
    /// assert_eq!(count(&net), Some(1)); // the step writes what the pass recorded
    /// net.forward(&x);
    /// assert_eq!(count(&net), Some(1)); // inference records nothing
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    fn buffers(&self, _input: Option<&PartialShape>) -> Vec<BufferSpec> {
        Vec::new()
    }

    /// How the layer is made of other layers: [`Residual`] and [`Shared`] say so here, and the
    /// net builds their parts instead of calling [`kernel`](Layer::kernel). A single layer
    /// (the default) is a leaf.
    #[doc(hidden)]
    fn parts(&self) -> Parts<'_> {
        Parts::Leaf
    }
}

/// What a bound layer computes: its forward pass and its backward pass.
///
/// Every matrix holds one sample per column, `values × samples`; an image sample is its values
/// in C, H, W order. The parameters come in the order of
/// [`Layer::param_shapes`], each stored as a `d0 × (d1·…)` matrix.
///
/// # Example
/// A layer that doubles its input:
/// ```
/// use lazynet::layer::{Activation, Kernel, Param};
/// use lazynet::nalgebra::DMatrix;
/// use lazynet::ShapeError;
///
/// #[derive(Debug)]
/// struct Double;
///
/// impl Kernel for Double {
///     fn forward(&self, _: &[Param], x: &DMatrix<f32>, y: &mut DMatrix<f32>, _: Activation)
///         -> Result<(), ShapeError> {
///         y.zip_apply(x, |y, x| *y = 2.0 * x);
///         Ok(())
///     }
///     fn backward(&self, _: &[Param], _: &DMatrix<f32>, _: &DMatrix<f32>, dy: &DMatrix<f32>,
///         _: &mut [DMatrix<f32>], dx: Option<&mut DMatrix<f32>>) -> Result<(), ShapeError> {
///         if let Some(dx) = dx {
///             dx.zip_apply(dy, |d, g| *d = 2.0 * g);
///         }
///         Ok(())
///     }
/// }
/// ```
pub trait Kernel: Send + Sync + fmt::Debug + 'static {
    /// Computes the output `y` of the batch `x`. `y` is allocated and zeroed, with the layer's
    /// output size as rows and as many columns as `x`. `then` is
    /// [`Activation::Identity`] unless [`fuses_activation`](Kernel::fuses_activation) says
    /// otherwise: then it is the activation that follows this layer, to apply to every value
    /// of `y` before returning.
    ///
    /// # Errors
    /// [`ShapeError::OutOfMemory`] when memory for a work buffer cannot be had;
    /// [`ShapeError::Contract`] when the buffers do not have the shapes the layer was bound
    /// to (a kernel called on its own).
    fn forward(
        &self,
        params: &[Param],
        x: &DMatrix<f32>,
        y: &mut DMatrix<f32>,
        then: Activation,
    ) -> Result<(), ShapeError>;

    /// Given `dy`, the gradient of the loss with respect to the layer's output, writes the
    /// gradient of every parameter into `grads` (zeroed, one matrix per parameter, shaped like
    /// it) and, when `dx` is `Some` (when the input's gradient is needed: not for a layer
    /// with no parameters before it), the gradient with respect to the input `x` (zeroed,
    /// shaped like `x`). The net adds these up where a parameter is used at several places
    /// (tied layers) or a value is read twice (a residual block's input), so a kernel writes
    /// only its own call's gradients.
    ///
    /// `y` is the output the forward pass computed. For a layer that fused an activation, `y`
    /// is the output after it, and `dy` is already the gradient before it.
    ///
    /// # Errors
    /// As [`forward`](Kernel::forward).
    fn backward(
        &self,
        params: &[Param],
        x: &DMatrix<f32>,
        y: &DMatrix<f32>,
        dy: &DMatrix<f32>,
        grads: &mut [DMatrix<f32>],
        dx: Option<&mut DMatrix<f32>>,
    ) -> Result<(), ShapeError>;

    /// [`forward`](Kernel::forward) in a [`Pass`]: the net calls this one. A kernel whose
    /// output depends on the mode (training or inference), on its layer's buffers or on
    /// random numbers overrides it (and may make [`forward`](Kernel::forward) an error);
    /// the default calls [`forward`](Kernel::forward).
    ///
    /// In a training pass the kernel may record new values for its buffers with
    /// [`Pass::set_buffer`]: the net is not changed by the pass, the next optimizer step
    /// writes them.
    ///
    /// # Errors
    /// As [`forward`](Kernel::forward).
    fn forward_with(
        &self,
        pass: &mut Pass<'_>,
        params: &[Param],
        x: &DMatrix<f32>,
        y: &mut DMatrix<f32>,
        then: Activation,
    ) -> Result<(), ShapeError> {
        let _ = pass;
        self.forward(params, x, y, then)
    }

    /// [`backward`](Kernel::backward) in a [`Pass`] (always a training pass, the one whose
    /// forward pass computed `y`): the net calls this one. The default calls
    /// [`backward`](Kernel::backward).
    ///
    /// # Errors
    /// As [`backward`](Kernel::backward).
    #[allow(clippy::too_many_arguments)]
    fn backward_with(
        &self,
        pass: &Pass<'_>,
        params: &[Param],
        x: &DMatrix<f32>,
        y: &DMatrix<f32>,
        dy: &DMatrix<f32>,
        grads: &mut [DMatrix<f32>],
        dx: Option<&mut DMatrix<f32>>,
    ) -> Result<(), ShapeError> {
        let _ = pass;
        self.backward(params, x, y, dy, grads, dx)
    }

    /// Whether [`forward`](Kernel::forward) applies the activation that follows the layer
    /// (one pass over the output instead of two). `false` unless overridden.
    fn fuses_activation(&self) -> bool {
        false
    }

    /// The element-wise function this layer is, if it is one: a layer before it that
    /// [fuses](Kernel::fuses_activation) activations applies it instead, and the forward pass
    /// of inference may apply it in place instead of calling [`forward`](Kernel::forward), so
    /// a kernel that returns `Some` must compute exactly that function. `None` unless
    /// overridden.
    fn activation(&self) -> Option<Activation> {
        None
    }

    /// Whether the output is the input's values unchanged (a reshape such as
    /// [`Flatten`]): the net then skips the layer, forward and backward. `false` unless
    /// overridden.
    fn is_reshape(&self) -> bool {
        false
    }
}

/// The kernel of an activation layer computing `f`.
pub(crate) fn activation_kernel(f: Activation) -> impl Kernel {
    activation::ActivationKernel(f)
}

/// Checks the buffers a kernel was given against the shapes it needs: each entry is a name, the
/// shape found and the shape needed. A kernel called outside a net (through
/// [`Layer::kernel`] and [`Param::new`]) with other shapes gets [`ShapeError::Contract`]
/// instead of a panic in a GEMM.
pub(crate) fn check_shapes(kind: &str, buffers: &[Checked<'_>]) -> Result<(), ShapeError> {
    for &(what, found, needed) in buffers {
        if found != needed {
            return Err(ShapeError::Contract {
                what: format!("a call to the {kind} kernel"),
                detail: format!(
                    "{what} is {} × {} but must be {} × {}",
                    found.0, found.1, needed.0, needed.1
                ),
            });
        }
    }
    Ok(())
}

/// A buffer to check: its name, the shape found and the shape needed.
pub(crate) type Checked<'a> = (&'a str, (usize, usize), (usize, usize));

/// The error of a kernel given another number of parameters than its layer owns.
pub(crate) fn param_count(kind: &str, found: usize, needed: usize) -> ShapeError {
    ShapeError::Contract {
        what: format!("a call to the {kind} kernel"),
        detail: format!("it was given {found} parameters or gradients but takes {needed}"),
    }
}

/// Writes the compile-time half of a layer that takes any input, flat or an image, declares
/// no input size and keeps the shape (as the activations do): its [`DeclaresInput`],
/// [`Follows`](crate::list::Follows) and [`LayerOn`] implementations. A layer that changes the
/// shape, or declares its input, writes them itself (see `examples/custom_layer.rs`).
///
/// # Example
/// ```
/// use lazynet::layer::{Activation, Fault, Kernel, Layer, Param, PartialShape};
/// use lazynet::nalgebra::DMatrix;
/// use lazynet::prelude::*;
///
/// /// `y = 2x`.
/// #[derive(Clone, Copy, Debug)]
/// struct Double;
///
/// impl Layer for Double {
///     fn kind(&self) -> &'static str { "Double" }
///     fn output_shape(&self, input: Option<&PartialShape>)
///         -> Result<Option<PartialShape>, Fault> { Ok(input.cloned()) }
///     fn param_shapes(&self, _: Option<&PartialShape>) -> Vec<(Role, PartialShape)> { vec![] }
///     fn kernel(&self, _: &[usize], _: &[usize]) -> Box<dyn Kernel> { Box::new(DoubleKernel) }
/// }
///
/// #[derive(Debug)]
/// struct DoubleKernel;
///
/// impl Kernel for DoubleKernel {
///     fn forward(&self, _: &[Param], x: &DMatrix<f32>, y: &mut DMatrix<f32>, _: Activation)
///         -> Result<(), ShapeError> {
///         y.zip_apply(x, |y, x| *y = 2.0 * x);
///         Ok(())
///     }
///     fn backward(&self, _: &[Param], _: &DMatrix<f32>, _: &DMatrix<f32>, dy: &DMatrix<f32>,
///         _: &mut [DMatrix<f32>], dx: Option<&mut DMatrix<f32>>) -> Result<(), ShapeError> {
///         if let Some(dx) = dx {
///             dx.zip_apply(dy, |d, g| *d = 2.0 * g);
///         }
///         Ok(())
///     }
/// }
///
/// lazynet::keeps_shape!(Double);
///
/// let net = Net::new().push(Double).push(Dense::<U2>::new()).bind::<U3>();
/// let y = net.forward(&Batch::<U3>::from_fn(1, |f, _| f as f32));
/// assert_eq!(y.samples(), 1);
/// ```
#[macro_export]
macro_rules! keeps_shape {
    ($layer:ty) => {
        /// Follows anything; produces what it receives.
        impl<Prev> $crate::list::Follows<Prev> for $layer {
            type Known = Prev;
        }

        /// Declares no input size.
        impl $crate::layer::DeclaresInput for $layer {
            type Input = $crate::layer::Infer;
        }

        /// Any input, flat or an image; the output has its shape.
        impl<In: $crate::Shape, Known> $crate::layer::LayerOn<In, Known> for $layer {
            type Out = In;
            type Checks = $crate::rules::Proven;
        }
    };
}

/// Writes the compile-time half of a layer from its shape class: its
/// [`DeclaresInput`], [`Follows`](crate::list::Follows) and [`LayerOn`] implementations.
///
/// * `shape_rule!(MyLayer, any -> same)`: any input, flat or an image; the output has its
///   shape (an activation). The same as [`keeps_shape!`].
/// * `shape_rule!(MyLayer, flat -> same)`: a flat input; the output has its width. An image
///   reaching it is a compile error naming the layer.
/// * `shape_rule!(MyLayer, image -> same)`: an image; the output has its shape. A flat input
///   reaching it is a compile error.
///
/// The layer declares no input size; [`with_input`](DeclareInput::with_input) makes it
/// declare one. A layer of another class writes the three implementations itself.
///
/// # Example
/// ```
/// use lazynet::prelude::*;
/// # use lazynet::layer::{Fault, Kernel, Layer, PartialShape};
/// # #[derive(Clone, Copy, Debug)]
/// # struct Norm;
/// # impl Layer for Norm {
/// #     fn kind(&self) -> &'static str { "Norm" }
/// #     fn output_shape(&self, i: Option<&PartialShape>) -> Result<Option<PartialShape>, Fault> { Ok(i.cloned()) }
/// #     fn param_shapes(&self, _: Option<&PartialShape>) -> Vec<(Role, PartialShape)> { vec![] }
/// #     fn kernel(&self, _: &[usize], _: &[usize]) -> Box<dyn Kernel> { unimplemented!() }
/// # }
/// lazynet::shape_rule!(Norm, flat -> same);
///
/// let decl = Net::new().push(Dense::<U8>::new()).push(Norm).push(Dense::<U2>::new());
/// let declared = Net::new().push(Norm.with_input::<U4>()).push(Dense::<U2>::new());
/// # let _ = (decl, declared);
/// ```
#[macro_export]
macro_rules! shape_rule {
    ($layer:ty, any -> same) => {
        $crate::keeps_shape!($layer);
    };
    ($layer:ty, flat -> same) => {
        $crate::shape_rule!(@keeps $layer, $crate::rules::NeedsFlat<$layer>);
    };
    ($layer:ty, image -> same) => {
        $crate::shape_rule!(@keeps $layer, $crate::rules::NeedsImage<$layer>);
    };
    (@keeps $layer:ty, $rule:path) => {
        /// Follows anything; produces what it receives.
        impl<Prev> $crate::list::Follows<Prev> for $layer {
            type Known = Prev;
        }

        /// Declares no input size.
        impl $crate::layer::DeclaresInput for $layer {
            type Input = $crate::layer::Infer;
        }

        /// An input of its class (the rule `$rule`); the output has its shape.
        impl<In: $crate::Shape, Known> $crate::layer::LayerOn<In, Known> for $layer
        where
            $crate::rules::Input<In>: $rule,
        {
            type Out = In;
            type Checks = $crate::rules::Proven;
        }
    };
}

/// The input size a layer declares, as a type: [`Infer`] when it declares none, a typenum
/// number, or [`Dyn`](crate::Dyn). [`Net::push`](crate::Net::push) checks it with
/// [`PushRule`].
pub trait DeclaresInput {
    /// The declaration.
    type Input;
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

    /// Appends the output shape of every layer inside this one, in the order the net builds
    /// them, as the compiler computed them: a composite layer's ([`Residual`]) parts are
    /// checked at binding as the net's own layers are. Nothing for a single layer.
    #[doc(hidden)]
    fn nested_outputs(_out: &mut Vec<PartialShape>) {}
}
