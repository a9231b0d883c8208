//! [`Net`]: a declaration that becomes a bound network.

use std::sync::Arc;

use generic_array::sequence::GenericSequence;
use generic_array::{ArrayLength, GenericArray};
use nalgebra::DMatrix;

use crate::batch::Batch;
use crate::decimal::{Dec, Decimal};
use crate::dim::{Dyn, StaticDim};
use crate::error::ShapeError;
use crate::exec;
use crate::init::Initializer;
use crate::layer::{Layer, PartialShape};
use crate::list::{
    compile_time_outputs, Chain, Cons, FirstInput, FitsAfter, Follows, KnownAfter, Layers, Produces,
};
use crate::rules::{BatchLayoutFits, BatchWidthMatches, CheckedAtCompileTime, SampleWidthMatches};
use crate::shape::{Image, RunTimeInput, Shape, StaticShape};
use crate::state::{Bound, BoundLayer, Init, Unbound, Uninit};

/// A neural network: a list of layers `L` in state `S`.
///
/// A net starts as a declaration, `Net<Uninit, L>`: layers state their output sizes, an
/// initializer and a seed can be registered, and no parameter exists. Binding the input size
/// infers every layer's shape, checks them, allocates and initializes the parameters, and
/// yields `Net<Init<N>, L>`:
///
/// * [`bind::<U20>()`](Net::bind): the size is a type; the compiler checks every shape and the
///   call cannot fail.
/// * [`try_bind(20)`](Net::try_bind): the size is a run-time number; a mismatch is a
///   [`ShapeError`] naming the layer and both sizes.
/// * [`forward_init(&batch)`](Net::forward_init): the first batch fixes the size (PyTorch's
///   lazy modules).
/// * [`build()`](Net::build): the first layer declared its input size
///   (`Dense::<U256>::with_input::<U20>()`), so nothing needs to be named.
///
/// # Binding one declaration to several input sizes
///
/// A declaration is a value that can be cloned and bound again: `decl.clone().bind::<U20>()`
/// and `decl.bind::<U30>()` are two nets of different types. They share the declaration (the
/// layers, the initializer, the seed) and nothing else: each owns its parameters. Because every
/// parameter draws from a random stream chosen by the seed and its name, a parameter gets the
/// same values in both nets when neither its shape nor what its initializer reads of it
/// depends on the input size: in a `Dense 256 → Relu → Dense 10` net, `2.weight` and `2.bias`
/// always; `0.bias` too under an initializer that ignores the fan-in (Xavier's zero biases,
/// `Constant`), but not under the default, whose bound is 1/√in; `0.weight` never, since its
/// shape is `(256, in)`.
///
/// # Type parameters
/// * `S`: the state, [`Uninit`] or [`Init<N>`](Init).
/// * `L`: the type-level list of layers, built by [`push`](Net::push).
///
/// # Example
/// ```
/// use lazynet::prelude::*;
///
/// let decl = Net::new()
///     .push(Dense::<U256>::new())
///     .push(Relu)
///     .push(Dense::<U10>::new())
///     .initialize(XavierUniform::default())
///     .seed(42);
///
/// let net = decl.clone().bind::<U20>();
/// assert_eq!(net.param_shapes(), [vec![256, 20], vec![256], vec![10, 256], vec![10]]);
///
/// let x = Batch::<U20>::from_fn(2, |f, s| (f + s) as f32 / 20.0);
/// let y: Batch<U10> = net.forward(&x);
/// assert_eq!(y.samples(), 2);
///
/// let dyn_net = decl.try_bind(20)?;
/// let y2 = dyn_net.try_forward(&x.into_dyn())?;
/// assert_eq!(y.as_matrix(), y2.as_matrix());
/// # Ok::<(), ShapeError>(())
/// ```
#[derive(Clone, Debug)]
pub struct Net<S, L> {
    state: S,
    layers: L,
}

impl Net<Uninit, ()> {
    /// An empty declaration; add layers with [`push`](Net::push).
    pub fn new() -> Self {
        Net {
            state: Uninit::default(),
            layers: (),
        }
    }
}

impl Default for Net<Uninit, ()> {
    fn default() -> Self {
        Self::new()
    }
}

impl<L> Net<Uninit, L> {
    /// Appends a layer.
    ///
    /// When the size reaching the layer is already known to the compiler (a static width
    /// before it), a declared input size that differs is a compile error here, at this line.
    // Not inlined: a release build inlining every `push` of a long declaration into one
    // function took 118 s for 400 layers; with one call per layer it takes 3 s.
    #[inline(never)]
    pub fn push<H>(self, layer: H) -> Net<Uninit, Cons<L, H, KnownAfter<L, H>>>
    where
        L: Produces,
        H: Follows<L::Known> + FitsAfter<L::Known>,
    {
        Net {
            state: self.state,
            layers: Cons::new(self.layers, layer),
        }
    }
}

impl<L: Layers> Net<Uninit, L> {
    /// Registers the initializer that runs when the net is bound. Nothing runs now: the shapes
    /// are not known yet.
    pub fn initialize(mut self, init: impl Initializer + 'static) -> Self {
        self.state.init = Arc::new(init);
        self
    }

    /// Sets the seed of the initializer's random numbers (0 when never set).
    pub fn seed(mut self, seed: u64) -> Self {
        self.state.seed = seed;
        self
    }

    /// Names the net's layers, first to last, in place of their indices, as the attributes of
    /// a PyTorch module name its children: with `names(["conv1", "bn1", "relu", …, "fc"])` the
    /// parameters are `conv1.weight` and `fc.bias` (and the buffers `bn1.running_mean`), as
    /// in torchvision's ResNet. Layers past the last name keep their index. A name is one part of a path (not
    /// empty, no dot) and two layers cannot share one: an error at binding
    /// ([`ShapeError::BlockName`]).
    ///
    /// # Example
    /// ```
    /// use lazynet::prelude::*;
    ///
    /// let net = Net::new()
    ///     .push(Dense::<U4>::new())
    ///     .push(Relu)
    ///     .push(Dense::<U2>::new())
    ///     .names(["hidden", "relu", "out"])
    ///     .bind::<U3>();
    /// let names: Vec<&str> = net.named_params().map(|(n, _)| n).collect();
    /// assert_eq!(names, ["hidden.weight", "hidden.bias", "out.weight", "out.bias"]);
    /// ```
    pub fn names<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.state.names = names.into_iter().map(Into::into).collect();
        self
    }

    /// Every parameter's name and shape, with `?` where the input size is still unknown:
    /// `("0.weight", (256, ?))`, `("2.weight", (10, 256))`.
    pub fn partial_shapes(&self) -> Vec<(String, PartialShape)> {
        self.describe()
            .into_iter()
            .flat_map(|layer| layer.params)
            .collect()
    }

    /// Each node as far as it is known before binding, in the order the net will run them
    /// (a residual block's parts, then its sum).
    pub(crate) fn describe(&self) -> Vec<Described> {
        let mut planner = crate::plan::Planner::describing();
        // Describing never fails: a layer that rejects what reaches it gives `?`.
        let names = &self.state.names;
        let _ = planner.seq(
            &self.layer_refs(),
            "",
            names,
            (crate::plan::Src::Input, None),
        );
        let paths: Vec<String> = planner.nodes.iter().map(|n| n.path.clone()).collect();
        planner
            .nodes
            .into_iter()
            .map(|node| Described {
                path: node.path,
                kind: node.kind,
                output: node.output,
                params: node.params.into_iter().map(|p| (p.name, p.shape)).collect(),
                tied: node.tied.and_then(|t| paths.get(t).cloned()),
            })
            .collect()
    }

    /// Binds to an input shape known at run time, checking every shape: `try_bind(20)` for 20
    /// features, `try_bind(Image::dynamic(1, 28, 28))` for an image. The declaration is kept,
    /// so a failure loses nothing and the same declaration can be bound to other sizes.
    ///
    /// # Errors
    /// * [`ShapeError::ZeroInput`] when a flat input has 0 features, [`ShapeError::ZeroSize`]
    ///   when an image input has a size of 0;
    /// * [`ShapeError::InputTooLarge`] when the input holds more values than can be allocated;
    /// * [`ShapeError::LayerInput`] when a layer declares an input size other than what
    ///   reaches it;
    /// * [`ShapeError::KernelTooLarge`], [`ShapeError::ZeroParameter`],
    ///   [`ShapeError::PoolPadding`] when a convolution or pooling layer does not fit the image
    ///   that reaches it;
    /// * [`ShapeError::SizeOverflow`] when a convolution or pooling output size is more than a
    ///   `usize` counts;
    /// * [`ShapeError::TooLarge`] when a parameter, a layer's input or output, or a work buffer
    ///   holds more values than one allocation can;
    /// * [`ShapeError::OutOfMemory`] when the memory for the parameters cannot be had; what
    ///   was allocated is freed.
    pub fn try_bind<I: TryBindTo<L>>(
        &self,
        input: I,
    ) -> Result<Net<Init<I::Shape>, L>, ShapeError> {
        let expected = I::compile_time_outputs();
        let mut net = self.try_zeroed(input.into_shape(), &expected)?;
        self.state.initialize(&mut net.state.layers);
        Ok(net)
    }

    /// Binds to the input size that the first layer declares
    /// (`Dense::<U256>::with_input::<U20>()`), as Gluon initializes a layer given `in_units`
    /// at once. Checked by the compiler, like [`bind`](Net::bind).
    ///
    /// # Panics
    /// As [`bind`](Net::bind), only when memory for the parameters cannot be had;
    /// `try_bind(N::default())` returns that as an error.
    pub fn build(self) -> Net<Init<L::Input>, L>
    where
        L: FirstInput,
        L::Input: StaticDim + BindTo<L>,
    {
        self.bind::<L::Input>()
    }

    /// Binds to the size of the first batch and runs the net on it, like a PyTorch lazy
    /// module's first call. The declaration is kept.
    ///
    /// For a `Batch<U20>` this returns `(net, output)` and cannot fail; for a `Batch<Dyn>` it
    /// returns a `Result`.
    ///
    /// # Panics
    /// For a static batch, as [`bind`](Net::bind) and [`forward`](Net::forward): only when
    /// memory cannot be had. A `Batch<Dyn>` or run-time image batch returns that as an error.
    pub fn forward_init<M: ForwardInit<L>>(&self, x: &Batch<M>) -> M::Output {
        M::forward_init(self, x)
    }

    /// Checks `input` as [`try_bind`](Net::try_bind) does and allocates its parameters, all 0,
    /// for a loader or an initializer to fill. `expected` holds every layer's output shape as
    /// the compiler computed it ([`compile_time_outputs`]); a layer whose run-time rule
    /// disagrees is an error.
    pub(crate) fn try_zeroed<N: Shape>(
        &self,
        input: N,
        expected: &[PartialShape],
    ) -> Result<Net<Init<N>, L>, ShapeError> {
        let layers = exec::build(
            &self.layer_refs(),
            &input.dims(),
            expected,
            &self.state.names,
        )?;
        Ok(Net {
            state: Init {
                input,
                seed: self.state.seed,
                layers,
                steps: 0,
            },
            layers: self.layers.clone(),
        })
    }

    /// [`try_zeroed`](Net::try_zeroed) for a shape the compiler checked: only memory, or a
    /// layer whose two halves contradict each other, can fail.
    pub(crate) fn zeroed<N: Shape + BindTo<L>>(&self, input: N) -> Net<Init<N>, L> {
        match self.try_zeroed(input, &N::compile_time_outputs()) {
            Ok(net) => net,
            Err(err) => panic!("cannot bind the net: {err}"),
        }
    }
}

/// The layers of a list, first to last.
fn refs<L: Layers>(layers: &L) -> Vec<&dyn Layer> {
    let mut out = Vec::with_capacity(L::LEN);
    layers.visit(&mut out);
    out
}

/// A layer of a declaration as far as it is known before binding.
pub(crate) struct Described {
    pub(crate) path: String,
    pub(crate) kind: &'static str,
    pub(crate) output: Option<PartialShape>,
    pub(crate) params: Vec<(String, PartialShape)>,
    /// The place whose parameters it shares, at a later place of a tied set.
    pub(crate) tied: Option<String>,
}

impl<S, L: Layers> Net<S, L> {
    /// Binds to the input size `N`, checked by the compiler: a mismatch anywhere in the net is
    /// a compile error at this call, stating both sizes.
    ///
    /// Offered when every check can be made at compile time; a net where a run-time size
    /// meets a declared one is bound with [`try_bind`](Net::try_bind).
    ///
    /// # Panics
    /// * When memory fails: when the parameters cannot be allocated (static sizes so large that
    ///   they hold more values than memory, such as `op!(U65536 * U65536)` inputs), or when a
    ///   `Dyn` width in the net makes a tensor too large.
    /// * When a layer written outside this crate contradicts itself: its run-time rule
    ///   ([`Layer::output_shape`], [`Layer::param_shapes`], [`Kernel`](crate::layer::Kernel))
    ///   gives another output shape than its compile-time half
    ///   ([`LayerOn::Out`](crate::layer::LayerOn::Out)) told the compiler, or breaks another
    ///   rule of the trait. The message names the layer and both shapes. That is a bug in the
    ///   layer, not bad data, and no net is handed out that would compute with the wrong shape.
    /// * When a name given to layers ([`names`](Net::names), `Residual::names`,
    ///   `Sequential::names`) is empty, holds a dot, is given twice, or names more layers than
    ///   there are ([`ShapeError::BlockName`]).
    ///
    /// `decl.try_bind(N::default())` makes the same checks and returns them as a
    /// [`ShapeError`].
    pub fn bind<N>(self) -> Net<Init<N>, L>
    where
        S: Unbound,
        N: StaticShape + BindTo<L>,
    {
        let net = Net {
            state: self.state.into_uninit(),
            layers: self.layers,
        };
        let mut bound = net.zeroed(N::default());
        net.state.initialize(&mut bound.state.layers);
        bound
    }

    /// Every parameter with its name, in order: `("0.weight", W)` (`256 × 20`),
    /// `("0.bias", b)` (`256 × 1`), … A weight is stored `out × in`, a bias as a column.
    pub fn named_params(&self) -> NamedParams<'_>
    where
        S: Bound,
    {
        NamedParams {
            layers: self.state.bound_layers(),
            layer: 0,
            param: 0,
        }
    }

    /// Replaces the values of the parameter `name` (stored as [`named_params`](Net::named_params)
    /// gives them: `out × in` for a dense weight, a column for a bias). On an error the net is
    /// unchanged.
    ///
    /// # Errors
    /// [`ShapeError::NoParam`] when the net has no parameter of that name;
    /// [`ShapeError::ParamShape`] when `value` has another shape.
    ///
    /// ```
    /// use lazynet::nalgebra::DMatrix;
    /// use lazynet::prelude::*;
    ///
    /// let mut net = Net::new().push(Dense::<U2>::new()).bind::<U3>();
    /// net.set_param("0.bias", DMatrix::from_column_slice(2, 1, &[1.0, -1.0]))?;
    /// assert!(net.set_param("0.weight", DMatrix::zeros(3, 2)).is_err());
    /// assert!(net.set_param("1.weight", DMatrix::zeros(2, 3)).is_err());
    /// # Ok::<(), ShapeError>(())
    /// ```
    pub fn set_param(&mut self, name: &str, value: DMatrix<f32>) -> Result<(), ShapeError>
    where
        S: Bound,
    {
        let param = self
            .state
            .bound_layers_mut()
            .iter_mut()
            .flat_map(|l| &mut l.params)
            .find(|p| p.name == name)
            .ok_or_else(|| ShapeError::NoParam {
                name: name.to_owned(),
            })?;
        if param.value.shape() != value.shape() {
            return Err(ShapeError::ParamShape {
                name: name.to_owned(),
                shape: param.shape.clone(),
                expected: param.value.shape(),
                found: value.shape(),
            });
        }
        param.value = value;
        param.magnitude = None;
        Ok(())
    }

    /// Every parameter's shape in PyTorch order: `[[256, 20], [256], [10, 256], [10]]`.
    pub fn param_shapes(&self) -> Vec<Vec<usize>>
    where
        S: Bound,
    {
        self.state
            .bound_layers()
            .iter()
            .flat_map(|l| l.params.iter().map(|p| p.shape.clone()))
            .collect()
    }

    /// The number of parameter values.
    pub fn param_count(&self) -> usize
    where
        S: Bound,
    {
        self.state
            .bound_layers()
            .iter()
            .flat_map(|l| &l.params)
            .map(|p| p.value.len())
            .sum()
    }

    /// Draws every parameter again with another initializer (MXNet's `force_reinit`), using
    /// the net's seed.
    ///
    /// All or nothing: the new values are drawn into copies that replace the parameters only
    /// once every one is drawn, so an initializer that panics halfway (or memory that cannot be
    /// had for the copies) leaves every parameter as it was.
    ///
    /// # Errors
    /// [`ShapeError::OutOfMemory`] when the copies cannot be allocated; the net is unchanged.
    pub fn reinitialize(&mut self, init: impl Initializer) -> Result<(), ShapeError>
    where
        S: Bound,
    {
        let seed = self.state.seed();
        exec::initialize(self.state.bound_layers_mut(), &init, seed)
    }

    /// The layers of the declaration.
    pub fn layers(&self) -> &L {
        &self.layers
    }

    /// A net of a state and layers.
    pub(crate) fn from_parts(state: S, layers: L) -> Self {
        Net { state, layers }
    }

    /// The layers, for a composite that holds the declaration.
    pub(crate) fn into_layers(self) -> L {
        self.layers
    }

    pub(crate) fn state(&self) -> &S {
        &self.state
    }

    pub(crate) fn state_mut(&mut self) -> &mut S {
        &mut self.state
    }

    pub(crate) fn layer_refs(&self) -> Vec<&dyn Layer> {
        refs(&self.layers)
    }
}

impl<N: Shape, L: Chain<N>> Net<Init<N>, L> {
    /// The input shape the net is bound to.
    pub fn input(&self) -> N {
        self.state.input
    }

    /// The shape the net produces for one sample: `[10]`, or `[16, 14, 14]` for an image.
    pub fn output_dims(&self) -> Vec<usize> {
        self.state
            .layers
            .last()
            .map_or_else(|| self.state.input.dims(), |l| l.output.clone())
    }

    /// Runs the net on a batch whose shape is checked at run time.
    ///
    /// A batch of images must have the image shape the net is bound to, channels, height and
    /// width alike: `(8, 8, 1)` images do not run on a net bound to `(1, 8, 8)`, though they
    /// hold as many values. A flat batch of as many features as the input holds values is read
    /// in C, H, W order (`Batch<U64>` or a 64-row `Batch<Dyn>` for `Image<U1, U8, U8>`), and a
    /// net bound to a flat input reads a batch of images of as many values flat, in C, H, W
    /// order, as a `Flatten` would.
    ///
    /// # Errors
    /// * [`ShapeError::ImageShape`] when a batch of images has another image shape than the
    ///   net's input;
    /// * [`ShapeError::Features`] when the batch's samples do not have as many values as the
    ///   net's input (`C·H·W` for an image);
    /// * [`ShapeError::OutOfMemory`] when a layer's output for the batch cannot be allocated.
    pub fn try_forward<M: Shape>(
        &self,
        x: &Batch<M>,
    ) -> Result<Batch<<L as Chain<N>>::Out>, ShapeError> {
        self.check_batch(x)?;
        self.run(x.as_matrix())
    }

    /// The class of every sample of a batch: the index of its largest output (the first on
    /// ties, NaN counting as the largest, as PyTorch's `argmax`). What Keras users reach for
    /// after training a classifier; `try_forward(&x)?.softmax()` gives the probabilities.
    ///
    /// # Errors
    /// As [`try_forward`](Net::try_forward); [`ShapeError::NoClasses`] for a net whose output
    /// has no values.
    ///
    /// ```
    /// use lazynet::prelude::*;
    ///
    /// let net = Net::new().push(Dense::<U3>::new()).seed(0).bind::<U2>();
    /// let x = Batch::<U2>::from_rows([0.5f32, -1.0, 2.0, 0.25])?;
    /// let classes = net.predict_classes(&x)?;
    /// assert_eq!(classes, net.try_forward(&x)?.argmax()?);
    /// assert!(classes.len() == 2 && classes.iter().all(|&c| c < 3));
    /// # Ok::<(), ShapeError>(())
    /// ```
    pub fn predict_classes<M: Shape>(&self, x: &Batch<M>) -> Result<Vec<usize>, ShapeError> {
        self.try_forward(x)?.argmax()
    }

    /// Checks that a batch fits the net's input, as [`try_forward`](Net::try_forward) does.
    pub(crate) fn check_batch<M: Shape>(&self, x: &Batch<M>) -> Result<(), ShapeError> {
        self.check_parts(&x.features().dims(), x.as_matrix())
    }

    /// [`check_batch`](Net::check_batch) of a batch given as its sample shape and matrix.
    pub(crate) fn check_parts(&self, found: &[usize], x: &DMatrix<f32>) -> Result<(), ShapeError> {
        let expected = self.state.input.dims();
        if found.len() > 1 && expected.len() > 1 && found != expected {
            return Err(ShapeError::ImageShape {
                expected,
                found: found.to_vec(),
            });
        }
        self.check_matrix(x)
    }

    /// Checks that a matrix has the net's input size as its row count.
    fn check_matrix(&self, x: &DMatrix<f32>) -> Result<(), ShapeError> {
        // Binding checked that the input's size fits.
        let expected = self.state.input.checked_flat_size().unwrap_or(0);
        if x.nrows() != expected {
            return Err(ShapeError::Features {
                expected,
                actual: x.nrows(),
            });
        }
        Ok(())
    }

    /// Runs the net on a `features × samples` matrix, checking its row count.
    ///
    /// # Errors
    /// [`ShapeError::Features`] when the row count is not the net's input size (`C·H·W` for an
    /// image); [`ShapeError::OutOfMemory`] when a layer's output for the batch cannot be
    /// allocated.
    pub fn try_forward_matrix(
        &self,
        x: &DMatrix<f32>,
    ) -> Result<Batch<<L as Chain<N>>::Out>, ShapeError> {
        self.check_matrix(x)?;
        self.run(x)
    }

    fn run(&self, x: &DMatrix<f32>) -> Result<Batch<<L as Chain<N>>::Out>, ShapeError> {
        // The output's shape is the last layer's; for a static output type the compiler proved
        // they agree, so `from_dims` cannot miss.
        let out = match self.state.layers.last() {
            Some(last) => <L as Chain<N>>::Out::from_dims(&last.output),
            None => <L as Chain<N>>::Out::from_dims(&self.state.input.dims()),
        };
        let out = out.unwrap_or_default();
        Ok(Batch::from_parts(
            exec::forward(&self.state.layers, x)?,
            out,
        ))
    }

    /// [`run`](Net::run) for a call that cannot return an error: only memory can fail.
    fn run_or_panic(&self, x: &DMatrix<f32>) -> Batch<<L as Chain<N>>::Out> {
        match self.run(x) {
            Ok(y) => y,
            Err(err) => panic!("cannot run the net: {err}"),
        }
    }
}

impl<N: StaticShape, L: Chain<N>> Net<Init<N>, L>
where
    N::Flat: Decimal,
{
    /// Runs the net on a batch of its input size. Cannot fail: a batch of another size is a
    /// compile error. A batch of zero samples gives an output of zero samples.
    ///
    /// A net bound to an image takes a batch of that image shape (channels, height and width
    /// alike: `Image<U8, U8, U1>` does not fit `Image<U1, U8, U8>`), or a flat batch of as many
    /// features (`Batch<U784>` for `Image<U1, U28, U28>`), read in C, H, W order. A net bound to
    /// a flat input reads a batch of images of as many values flat, in C, H, W order.
    ///
    /// # Panics
    /// When memory for a layer's output cannot be had (a batch of billions of samples);
    /// [`try_forward`](Net::try_forward) returns [`ShapeError::OutOfMemory`] instead.
    pub fn forward<M>(&self, x: &Batch<M>) -> Batch<<L as Chain<N>>::Out>
    where
        M: StaticShape + BatchLayoutFits<N>,
        M::Flat: Decimal,
        Dec<M::Flat>: BatchWidthMatches<Dec<N::Flat>>,
    {
        self.run_or_panic(x.as_matrix())
    }

    /// Runs the net on one sample and returns one output, both sized by their types.
    ///
    /// # Panics
    /// When memory for a layer's output cannot be had, as [`forward`](Net::forward).
    ///
    /// ```
    /// use lazynet::prelude::*;
    ///
    /// let net = Net::new().push(Dense::<U3>::new()).push(Sigmoid).bind::<U2>();
    /// let y: GenericArray<f32, U3> = net.predict(&GenericArray::from_array([0.5, -0.5]));
    /// assert!(y.iter().all(|v| (0.0..=1.0).contains(v)));
    /// ```
    pub fn predict<M>(
        &self,
        sample: &GenericArray<f32, M>,
    ) -> GenericArray<f32, <<L as Chain<N>>::Out as Shape>::Flat>
    where
        M: StaticDim + Decimal + ArrayLength,
        Dec<M>: SampleWidthMatches<Dec<N::Flat>>,
        <<L as Chain<N>>::Out as Shape>::Flat: ArrayLength,
    {
        let x = DMatrix::from_column_slice(M::USIZE, 1, sample.as_slice());
        let y = self.run_or_panic(&x).into_matrix();
        GenericArray::generate(|i| y.as_slice().get(i).copied().unwrap_or(f32::NAN))
    }
}

/// The iterator of [`Net::named_params`]: `(name, values)` for every parameter, in order.
#[derive(Clone, Debug)]
pub struct NamedParams<'a> {
    layers: &'a [BoundLayer],
    layer: usize,
    param: usize,
}

impl<'a> Iterator for NamedParams<'a> {
    type Item = (&'a str, &'a DMatrix<f32>);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let layer = self.layers.get(self.layer)?;
            if let Some(p) = layer.params.get(self.param) {
                self.param += 1;
                return Some((p.name.as_str(), &p.value));
            }
            self.layer += 1;
            self.param = 0;
        }
    }
}

/// A static input size that a list of layers accepts with every check made by the compiler:
/// the bound of [`Net::bind`].
///
/// When a layer in the middle of the net does not fit, the error names that rule
/// ([`BoundInputMatches`](crate::rules::BoundInputMatches)) with both sizes in decimal.
#[diagnostic::on_unimplemented(
    message = "the net cannot be bound to `{Self}`",
    label = "not a valid input size for this net",
    note = "sizes are typenum numbers such as `U20`; a net with a run-time check is bound with `try_bind`"
)]
pub trait BindTo<L>: Shape {
    /// Every layer's output shape as the compiler computed it.
    #[doc(hidden)]
    fn compile_time_outputs() -> Vec<PartialShape>;
}

impl<N: Shape, L: Chain<N>> BindTo<L> for N
where
    L::Checks: CheckedAtCompileTime,
{
    fn compile_time_outputs() -> Vec<PartialShape> {
        compile_time_outputs::<N, L>()
    }
}

/// An input that [`Net::try_bind`] binds a list of layers `L` to: a `usize` (a flat input of
/// that many features), or any [`RunTimeInput`] shape the layers accept.
///
/// The bound of `try_bind`, stated on the input rather than on the layers: the compiler then
/// checks the layers only once it knows the input's type. (A bound `L: Chain<I::Shape>` made
/// it search every layer's rules with the input still unknown, and a declaration of 12 layers
/// took 40 s and 3 GB to type-check, 18 layers more memory than the machine had.)
#[diagnostic::on_unimplemented(
    message = "the net cannot be bound to `{Self}` at run time",
    label = "not an input this net takes",
    note = "`try_bind` takes a number of features (`try_bind(20)`) or a shape (`try_bind(Image::dynamic(1, 28, 28))`)"
)]
pub trait TryBindTo<L>: RunTimeInput {
    /// Every layer's output shape as the compiler computed it.
    #[doc(hidden)]
    fn compile_time_outputs() -> Vec<PartialShape>;
}

impl<I: RunTimeInput, L: Chain<I::Shape>> TryBindTo<L> for I {
    fn compile_time_outputs() -> Vec<PartialShape> {
        compile_time_outputs::<I::Shape, L>()
    }
}

/// A batch shape that can bind a declaration through [`Net::forward_init`], and what doing so
/// returns.
pub trait ForwardInit<L: Layers>: Shape {
    /// `(net, output)` for a static shape; a `Result` of it for a run-time one.
    type Output;
    /// Binds `net` to the batch's shape and runs it.
    fn forward_init(net: &Net<Uninit, L>, x: &Batch<Self>) -> Self::Output;
}

/// A static shape: checked by the compiler, cannot fail.
impl<N: StaticShape + BindTo<L>, L: Chain<N>> ForwardInit<L> for N {
    type Output = (Net<Init<N>, L>, Batch<<L as Chain<N>>::Out>);
    fn forward_init(net: &Net<Uninit, L>, x: &Batch<N>) -> Self::Output {
        let net = net.clone().bind::<N>();
        let y = net.run_or_panic(x.as_matrix());
        (net, y)
    }
}

/// A run-time width: checked now, `Err` on a mismatch.
impl<L: Chain<Dyn>> ForwardInit<L> for Dyn {
    type Output = Result<(Net<Init<Dyn>, L>, Batch<<L as Chain<Dyn>>::Out>), ShapeError>;
    fn forward_init(net: &Net<Uninit, L>, x: &Batch<Dyn>) -> Self::Output {
        let net = net.try_bind(x.features())?;
        let y = net.run(x.as_matrix())?;
        Ok((net, y))
    }
}

/// A run-time image shape: checked now, `Err` on a mismatch.
impl<L: Chain<Image<Dyn, Dyn, Dyn>>> ForwardInit<L> for Image<Dyn, Dyn, Dyn> {
    type Output = Result<
        (
            Net<Init<Image<Dyn, Dyn, Dyn>>, L>,
            Batch<<L as Chain<Image<Dyn, Dyn, Dyn>>>::Out>,
        ),
        ShapeError,
    >;
    fn forward_init(net: &Net<Uninit, L>, x: &Batch<Self>) -> Self::Output {
        let net = net.try_bind(x.features())?;
        let y = net.run(x.as_matrix())?;
        Ok((net, y))
    }
}
