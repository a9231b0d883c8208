//! The two states of a net: declared ([`Uninit`]) and bound to an input size ([`Init`]).

use core::fmt;
use std::sync::Arc;

use nalgebra::DMatrix;

use crate::error::ShapeError;
use crate::init::{DefaultInit, Initializer, Role};
use crate::layer::{Buffer, Kernel};
use crate::plan::Src;
use crate::shape::Shape;

/// The state of a net that is declared but not bound: it holds the registered initializer and
/// seed, and no parameters at all.
#[derive(Clone)]
pub struct Uninit {
    pub(crate) init: Arc<dyn Initializer>,
    pub(crate) seed: u64,
    /// The names of the net's layers, in place of their indices (see
    /// [`Net::names`](crate::Net::names)).
    pub(crate) names: Vec<String>,
}

impl Default for Uninit {
    fn default() -> Self {
        Uninit {
            init: Arc::new(DefaultInit),
            seed: 0,
            names: Vec::new(),
        }
    }
}

impl Uninit {
    /// Runs the registered initializer, with the registered seed, over freshly built layers.
    pub(crate) fn initialize(&self, layers: &mut [BoundLayer]) {
        crate::exec::initialize_fresh(layers, self.init.as_ref(), self.seed);
    }
}

impl fmt::Debug for Uninit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Uninit")
            .field("seed", &self.seed)
            .finish_non_exhaustive()
    }
}

/// The state of a net bound to an input of shape `N`: it owns every parameter.
///
/// # Type parameters
/// * `N`: the input shape: a typenum number, [`Dyn`](crate::Dyn), or an
///   [`Image`](crate::Image).
#[derive(Clone)]
pub struct Init<N: Shape> {
    pub(crate) input: N,
    pub(crate) seed: u64,
    pub(crate) layers: Vec<BoundLayer>,
    /// The optimizer steps taken: keys the random streams of training passes (dropout).
    pub(crate) steps: u64,
}

impl<N: Shape> fmt::Debug for Init<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Init")
            .field("input", &self.input.dims())
            .field("seed", &self.seed)
            .field("layers", &self.layers)
            .finish()
    }
}

/// A node of a bound net, in the order the net runs them: a layer (or a part of a composite
/// layer) with its output shape, its computation, where it reads its input and its parameters.
#[derive(Clone)]
pub struct BoundLayer {
    pub(crate) kind: &'static str,
    /// Its place: `3`, or `2.0` inside the block at index 2.
    pub(crate) path: String,
    pub(crate) output: Vec<usize>,
    pub(crate) op: Op,
    /// Where it reads its input.
    pub(crate) input: Src,
    /// The parameters it owns: none at a later place of a tied set.
    pub(crate) params: Vec<Param>,
    /// The node whose parameters it computes with, at a later place of a tied set.
    pub(crate) tied: Option<usize>,
    /// The buffers it owns (none at a later place of a tied set).
    pub(crate) buffers: Vec<Buffer>,
}

/// What a bound node computes.
#[derive(Clone)]
pub(crate) enum Op {
    /// A layer's kernel.
    Layer(Arc<dyn Kernel>),
    /// Adds the value read at another node to its input (a residual block's sum).
    Add(Src),
}

impl BoundLayer {
    /// The node whose value a residual sum adds.
    pub(crate) fn adds(&self) -> Option<Src> {
        match self.op {
            Op::Add(src) => Some(src),
            Op::Layer(_) => None,
        }
    }

    /// Whether the node passes its input's values on unchanged (a reshape).
    pub(crate) fn is_reshape(&self) -> bool {
        matches!(&self.op, Op::Layer(k) if k.is_reshape())
    }

    /// The element-wise function the node is, if it is one.
    pub(crate) fn activation(&self) -> Option<crate::layer::Activation> {
        match &self.op {
            Op::Layer(k) => k.activation(),
            Op::Add(_) => None,
        }
    }

    /// Whether the node applies the activation after it in its own pass.
    pub(crate) fn fuses_activation(&self) -> bool {
        match &self.op {
            Op::Layer(k) => k.fuses_activation(),
            Op::Add(_) => true,
        }
    }
}

impl fmt::Debug for BoundLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shapes: Vec<_> = self.params.iter().map(|p| (&p.name, &p.shape)).collect();
        f.debug_struct("BoundLayer")
            .field("path", &self.path)
            .field("kind", &self.kind)
            .field("params", &shapes)
            .finish()
    }
}

/// One parameter of a bound layer: its name, PyTorch shape, role and values.
///
/// A [`Kernel`] reads its layer's parameters through [`value`](Param::value).
#[derive(Clone, Debug)]
pub struct Param {
    pub(crate) name: String,
    pub(crate) shape: Vec<usize>,
    pub(crate) role: Role,
    pub(crate) fan_in: usize,
    pub(crate) fan_out: usize,
    pub(crate) value: DMatrix<f32>,
    /// A bound on every `|value|` when an optimizer step computed one (`None` once the values
    /// are set any other way): spares the next step a pass over the values.
    pub(crate) magnitude: Option<f32>,
}

impl Param {
    /// A parameter named `name` of PyTorch shape `shape` holding `value`, stored as a
    /// `shape[0] × (shape[1]·…)` matrix (a column for a 1-d shape): for testing a [`Kernel`]
    /// on its own.
    ///
    /// # Errors
    /// [`ShapeError::ParamShape`] when `value` is not laid out as `shape` says.
    ///
    /// # Example
    /// ```
    /// use lazynet::layer::Param;
    /// use lazynet::nalgebra::DMatrix;
    /// use lazynet::prelude::*;
    ///
    /// let gain = Param::new("0.gain", &[3], Role::Named("gain"), DMatrix::from_element(3, 1, 1.0))?;
    /// assert_eq!(gain.value().nrows(), 3);
    /// assert!(Param::new("0.weight", &[2, 3], Role::Weight, DMatrix::zeros(3, 2)).is_err());
    /// # Ok::<(), ShapeError>(())
    /// ```
    pub fn new(
        name: impl Into<String>,
        shape: &[usize],
        role: Role,
        value: DMatrix<f32>,
    ) -> Result<Self, ShapeError> {
        let name = name.into();
        let rows = shape.first().copied().unwrap_or(1);
        let cols = shape
            .iter()
            .skip(1)
            .try_fold(1usize, |n, d| n.checked_mul(*d));
        if Some(value.shape()) != cols.map(|c| (rows, c)) {
            return Err(ShapeError::ParamShape {
                name,
                shape: shape.to_vec(),
                expected: (rows, cols.unwrap_or(usize::MAX)),
                found: value.shape(),
            });
        }
        Ok(Param {
            name,
            shape: shape.to_vec(),
            role,
            fan_in: 0,
            fan_out: 0,
            value,
            magnitude: None,
        })
    }

    /// Its name, e.g. `"0.weight"`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its shape in PyTorch's order, e.g. `[256, 20]` or `[16, 1, 5, 5]`.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Its role: weight, bias or another.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Its values, stored as a `shape[0] × (shape[1]·…)` matrix (a column for a 1-d shape).
    pub fn value(&self) -> &DMatrix<f32> {
        &self.value
    }
}

pub(crate) mod sealed {
    pub trait Sealed {}
}

/// The states that own parameters: [`Init<N>`] for every `N`.
#[diagnostic::on_unimplemented(
    message = "the parameters of an unbound net do not exist yet",
    label = "this net is declared but not bound to an input size",
    note = "bind it first: `.bind::<U20>()`, `.try_bind(20)?` or `.forward_init(&batch)`; `partial_shapes()` shows the shapes known so far"
)]
pub trait Bound: sealed::Sealed {
    #[doc(hidden)]
    fn bound_layers(&self) -> &[BoundLayer];
    #[doc(hidden)]
    fn bound_layers_mut(&mut self) -> &mut [BoundLayer];
    #[doc(hidden)]
    fn seed(&self) -> u64;
    /// The optimizer steps taken, which key the random streams of training passes.
    #[doc(hidden)]
    fn steps(&self) -> u64;
    #[doc(hidden)]
    fn steps_mut(&mut self) -> &mut u64;
}

impl<N: Shape> sealed::Sealed for Init<N> {}

impl<N: Shape> Bound for Init<N> {
    fn bound_layers(&self) -> &[BoundLayer] {
        &self.layers
    }
    fn bound_layers_mut(&mut self) -> &mut [BoundLayer] {
        &mut self.layers
    }
    fn seed(&self) -> u64 {
        self.seed
    }
    fn steps(&self) -> u64 {
        self.steps
    }
    fn steps_mut(&mut self) -> &mut u64 {
        &mut self.steps
    }
}

/// The state that can still be bound: [`Uninit`].
#[diagnostic::on_unimplemented(
    message = "this net is already bound to an input size",
    label = "`bind` turns a declaration into a bound net once",
    note = "to bind the same declaration to another size, keep the declaration (`decl.clone().bind::<…>()`) and bind it again"
)]
pub trait Unbound: sealed::Sealed {
    #[doc(hidden)]
    fn into_uninit(self) -> Uninit;
}

impl sealed::Sealed for Uninit {}

impl Unbound for Uninit {
    fn into_uninit(self) -> Uninit {
        self
    }
}
