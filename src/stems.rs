//! One trunk, several stems: inputs of several sizes served by one set of trunk parameters,
//! the d2l chapter's last exercise ("what would you need to do if you have input of varying
//! dimensionality? Hint: look at the parameter tying").
//!
//! # The design, and why
//!
//! A net with stems is **one net whose forward pass is chosen by the batch's type**:
//! `net.forward(&Batch<U4>)` runs the stem of 4 features and then the trunk,
//! `net.forward(&Batch<U7>)` the stem of 7 and the same trunk, and a `Batch<U5>` does not
//! compile. One net, not two nets over one trunk, because the trunk's parameters must have one
//! owner: two bound nets each own their parameters, and sharing them between two values would
//! need shared mutable state that every forward pass and optimizer step would have to lock.
//! Here the net owns every parameter once, the trunk's included, so everything that works on a
//! bound net works on it: [`named_params`](crate::Net::named_params),
//! [`param_count`](crate::Net::param_count), [`save`](crate::Net::save) and
//! [`load`](crate::Net::load), and every [`Optimizer`](crate::train::Optimizer).
//!
//! Inside, each stem's path is a list of nodes that ends in the trunk's nodes; the first stem's
//! path owns the trunk's parameters and every other path's trunk nodes are later places of
//! them, as with [`Shared`](crate::layer::Shared): gradients from a batch of either size land
//! on the one trunk.
//!
//! **Optimizer state.** An optimizer keeps its state per parameter name, so the trunk has one
//! set of moments, fed by batches of every size: Adam's moments for `trunk.0.weight` average
//! over batches of 4 and of 7 features alike. A stem that a batch does not reach gets no
//! gradient, and a step leaves it and its state alone, as PyTorch's optimizers skip a
//! parameter whose `.grad` is `None`.
//!
//! Names follow a PyTorch module with `self.stems = nn.ModuleDict({"4": …, "7": …})` and
//! `self.trunk = nn.Sequential(…)`: `stems.4.0.weight`, `trunk.0.weight`.
//!
//! # Example
//! ```
//! use lazynet::prelude::*;
//!
//! let trunk = Net::new().push(Dense::<U8>::new()).push(Relu).push(Dense::<U1>::new());
//! let stems = Stems::new()
//!     .stem::<U4, _>(Net::new().push(Dense::<U16>::new()).push(Relu))
//!     .stem::<U7, _>(Net::new().push(Dense::<U16>::new()).push(Relu));
//! let mut net = trunk.bind_stems(stems)?;
//!
//! let small = Batch::<U4>::from_fn(3, |f, s| (f + s) as f32);
//! let large = Batch::<U7>::from_fn(2, |f, s| (f * s) as f32);
//! let _: Batch<U1> = net.forward(&small);
//! let _: Batch<U1> = net.forward(&large);
//! // net.forward(&Batch::<U5>::zeros(1)); // does not compile: no stem takes 5 features
//!
//! // Training on either size moves the one trunk.
//! let before = net.named_params().find(|(n, _)| *n == "trunk.0.weight").map(|(_, w)| w.clone());
//! let (_, grads) = net.loss_and_grads(&large, &Batch::<U1>::zeros(2), Mse)?;
//! Sgd::new(0.1).step(&mut net, &grads)?;
//! let after = net.named_params().find(|(n, _)| *n == "trunk.0.weight").map(|(_, w)| w.clone());
//! assert_ne!(before, after);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use core::fmt;
use core::marker::PhantomData;
use core::ops::Range;

use crate::batch::Batch;
use crate::error::ShapeError;
use crate::exec;
use crate::layer::{Layer, PartialShape};
use crate::list::{compile_time_outputs, Chain, Layers};
use crate::net::Net;
use crate::rules::{CheckedAtCompileTime, ShapeKey};
use crate::shape::{Shape, StaticShape};
use crate::state::{sealed, Bound, BoundLayer, Uninit};
use crate::train::{loss_grads_at, Grads, Loss, TargetFor};

/// The stems of a net, each a declaration for one input shape: built by
/// [`stem`](Stems::stem), bound with a trunk by [`Net::bind_stems`].
///
/// # Type parameters
/// * `E`: the stems, a type-level list `(Stem<M, S>, (…, ()))`, the last added first.
#[derive(Clone, Debug)]
pub struct Stems<E> {
    entries: E,
}

/// One stem: the layers `S` that take inputs of shape `M`.
pub struct Stem<M, S> {
    layers: S,
    /// The names given to its layers ([`Net::names`]).
    names: Vec<String>,
    input: PhantomData<fn() -> M>,
}

impl<M, S: Clone> Clone for Stem<M, S> {
    fn clone(&self) -> Self {
        Stem {
            layers: self.layers.clone(),
            names: self.names.clone(),
            input: PhantomData,
        }
    }
}

impl<M, S: fmt::Debug> fmt::Debug for Stem<M, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Stem").field(&self.layers).finish()
    }
}

impl Stems<()> {
    /// No stems yet.
    pub fn new() -> Self {
        Stems { entries: () }
    }
}

impl Default for Stems<()> {
    fn default() -> Self {
        Self::new()
    }
}

impl<E> Stems<E> {
    /// Adds the stem for inputs of shape `M` (`U4`, or an `Image<…>`): a declaration whose
    /// output the trunk takes. Its registered initializer and seed are not used: the trunk
    /// declaration's are.
    pub fn stem<M: StaticShape, S: Layers>(self, stem: Net<Uninit, S>) -> Stems<(Stem<M, S>, E)> {
        let names = stem.state().names.clone();
        Stems {
            entries: (
                Stem {
                    layers: stem.into_layers(),
                    names,
                    input: PhantomData,
                },
                self.entries,
            ),
        }
    }
}

/// The stems of a net whose trunk is `L`, checked by the compiler: every stem takes its input
/// shape with every check made, and gives one shape, the trunk's input. The bound of
/// [`Net::bind_stems`].
#[diagnostic::on_unimplemented(
    message = "these stems do not fit this trunk",
    label = "each stem must give the shape the trunk takes, the same for every stem, with every check made by the compiler",
    note = "a stem for `U4` inputs is `Stems::new().stem::<U4, _>(Net::new().push(Dense::<U16>::new()))`; every stem's last layer gives the trunk's input"
)]
pub trait StemsFit<L>: Clone + Send + Sync + 'static {
    /// What every stem gives, the trunk's input.
    type TrunkIn: Shape;
    /// What the trunk gives.
    type Out: Shape;
    /// Appends each stem, first added first.
    #[doc(hidden)]
    fn plans<'a>(&'a self, out: &mut Vec<StemPlan<'a>>);
    /// The trunk's layers' output shapes as the compiler computed them.
    #[doc(hidden)]
    fn trunk_expected() -> Vec<PartialShape>;
}

/// One stem of a net with several: its name, its input shape, its layers, and their output
/// shapes as the compiler computed them.
#[doc(hidden)]
pub struct StemPlan<'a> {
    pub(crate) name: String,
    pub(crate) input: Vec<usize>,
    pub(crate) layers: Vec<&'a dyn Layer>,
    pub(crate) names: &'a [String],
    pub(crate) expected: Vec<PartialShape>,
}

/// The plan of one stem.
fn plan_of<M: StaticShape, S: Chain<M>>(stem: &Stem<M, S>) -> StemPlan<'_> {
    let input = M::default().dims();
    let mut layers = Vec::with_capacity(S::LEN);
    stem.layers.visit(&mut layers);
    StemPlan {
        name: input
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join("x"),
        input,
        layers,
        names: &stem.names,
        expected: compile_time_outputs::<M, S>(),
    }
}

/// The first stem added: it fixes the trunk's input.
impl<M, S, L> StemsFit<L> for (Stem<M, S>, ())
where
    M: StaticShape,
    S: Chain<M>,
    S::Checks: CheckedAtCompileTime,
    L: Chain<S::Out>,
    L::Checks: CheckedAtCompileTime,
{
    type TrunkIn = S::Out;
    type Out = <L as Chain<S::Out>>::Out;
    fn plans<'a>(&'a self, out: &mut Vec<StemPlan<'a>>) {
        out.push(plan_of(&self.0));
    }
    fn trunk_expected() -> Vec<PartialShape> {
        compile_time_outputs::<S::Out, L>()
    }
}

/// A later stem: it gives what the stems before it give.
impl<M, S, H, T, L> StemsFit<L> for (Stem<M, S>, (H, T))
where
    (H, T): StemsFit<L>,
    M: StaticShape,
    S: Chain<M>,
    S::Checks: CheckedAtCompileTime,
    S::Out: ShapeKey,
    <(H, T) as StemsFit<L>>::TrunkIn: ShapeKey,
    <S::Out as ShapeKey>::Key:
        StemOutputsMatch<<<(H, T) as StemsFit<L>>::TrunkIn as ShapeKey>::Key>,
    Stem<M, S>: Clone + Send + Sync + 'static,
{
    type TrunkIn = <(H, T) as StemsFit<L>>::TrunkIn;
    type Out = <(H, T) as StemsFit<L>>::Out;
    fn plans<'a>(&'a self, out: &mut Vec<StemPlan<'a>>) {
        self.1.plans(out);
        out.push(plan_of(&self.0));
    }
    fn trunk_expected() -> Vec<PartialShape> {
        <(H, T) as StemsFit<L>>::trunk_expected()
    }
}

/// Rule: every stem gives the shape the trunk takes (what the first stem gives). `Self` is
/// this stem's output, `Trunk` the trunk's input.
#[diagnostic::on_unimplemented(
    message = "shape mismatch: a stem gives {Self} but the trunk takes {Trunk}, what the stems before it give",
    label = "every stem must give the trunk's input",
    note = "sizes are spelled as their decimal digits: `Num<_1, _6>` means 16"
)]
pub trait StemOutputsMatch<Trunk> {}

impl<T> StemOutputsMatch<T> for T {}

/// Marks the stem a batch runs through: the first of the list.
#[derive(Clone, Copy, Debug)]
pub struct Here;

/// Marks the stem a batch runs through: one further in the list.
#[derive(Clone, Copy, Debug)]
pub struct There<I>(PhantomData<I>);

/// A list of stems with one for inputs whose shape's digits are `K` (found at the position
/// `I`, which the compiler infers): the bound of the stemmed net's
/// [`forward`](Net::forward).
#[diagnostic::on_unimplemented(
    message = "no stem of this net takes samples of {K}",
    label = "this batch's shape has no stem",
    note = "sizes are spelled as their decimal digits: `Num<_5>` means 5",
    note = "add a stem for it (`.stem::<U5, _>(…)`), or call `try_forward`, which returns an error for a shape without a stem"
)]
pub trait HasStem<K, I> {}

impl<K, M, S, T> HasStem<K, Here> for (Stem<M, S>, T) where M: ShapeKey<Key = K> {}

impl<K, H, T, I> HasStem<K, There<I>> for (H, T) where T: HasStem<K, I> {}

/// The state of a net bound with several stems: it owns every parameter, the trunk's once.
///
/// # Type parameters
/// * `E`: the stems ([`Stems`]).
pub struct Stemmed<E> {
    seed: u64,
    layers: Vec<BoundLayer>,
    /// The optimizer steps taken (see [`Bound`]).
    steps: u64,
    /// Per stem, first added first: its input shape and the nodes it runs through.
    entries: Vec<(Vec<usize>, Range<usize>)>,
    stems: PhantomData<fn() -> E>,
}

impl<E> Clone for Stemmed<E> {
    fn clone(&self) -> Self {
        Stemmed {
            seed: self.seed,
            layers: self.layers.clone(),
            steps: self.steps,
            entries: self.entries.clone(),
            stems: PhantomData,
        }
    }
}

impl<E> fmt::Debug for Stemmed<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stemmed")
            .field(
                "inputs",
                &self.entries.iter().map(|e| &e.0).collect::<Vec<_>>(),
            )
            .field("seed", &self.seed)
            .field("layers", &self.layers)
            .finish()
    }
}

impl<E> Stemmed<E> {
    /// The input shapes, one per stem, first added first.
    pub(crate) fn inputs(&self) -> impl Iterator<Item = &[usize]> + '_ {
        self.entries.iter().map(|e| e.0.as_slice())
    }
}

impl<E> sealed::Sealed for Stemmed<E> {}

impl<E> Bound for Stemmed<E> {
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

impl<L: Layers> Net<Uninit, L> {
    /// Binds this declaration as the trunk of a net with several stems, one per input shape,
    /// checked by the compiler: each stem takes its input with every check made, every stem
    /// gives the shape the trunk takes, and the trunk takes it. The trunk's registered
    /// initializer and seed initialize every parameter.
    ///
    /// # Errors
    /// * [`ShapeError::DuplicateStem`] when two stems take one input shape;
    /// * [`ShapeError::TiedInput`] when a stem gives another shape than the first at run time
    ///   (a run-time width in a stem);
    /// * [`ShapeError::OutOfMemory`] when memory for the parameters cannot be had;
    /// * [`ShapeError::Contract`] when a layer written outside this crate contradicts its
    ///   compile-time half.
    pub fn bind_stems<E: StemsFit<L>>(
        &self,
        stems: Stems<E>,
    ) -> Result<Net<Stemmed<E>, L>, ShapeError> {
        let mut plans = Vec::new();
        stems.entries.plans(&mut plans);
        let trunk_expected = E::trunk_expected();
        let (mut layers, ranges) = exec::build_stems(
            &plans,
            &self.layer_refs(),
            &self.state().names,
            &trunk_expected,
        )?;
        self.state().initialize(&mut layers);
        let entries = plans.into_iter().map(|p| p.input).zip(ranges).collect();
        Ok(Net::from_parts(
            Stemmed {
                seed: self.state().seed,
                layers,
                steps: 0,
                entries,
                stems: PhantomData,
            },
            self.layers().clone(),
        ))
    }
}

impl<E: StemsFit<L>, L: Layers> Net<Stemmed<E>, L> {
    /// The input shapes the net takes, one per stem, first added first.
    pub fn stem_inputs(&self) -> Vec<Vec<usize>> {
        self.state().entries.iter().map(|e| e.0.clone()).collect()
    }

    /// The stem for samples of shape `dims`: images by their shape, flat samples by their
    /// size.
    fn entry(&self, dims: &[usize]) -> Result<Range<usize>, ShapeError> {
        let entries = &self.state().entries;
        let found = entries.iter().find(|(input, _)| input.as_slice() == dims);
        found
            .map(|(_, nodes)| nodes.clone())
            .ok_or_else(|| ShapeError::NoStem {
                found: dims.to_vec(),
                stems: entries.iter().map(|e| e.0.clone()).collect(),
            })
    }

    /// The output shape of the nodes `nodes` on inputs of shape `input` (the input itself for
    /// a path of no nodes).
    fn output_of(&self, nodes: &Range<usize>, input: &[usize]) -> Vec<usize> {
        let last = nodes.end.checked_sub(1).filter(|l| *l >= nodes.start);
        last.and_then(|l| self.state().layers.get(l))
            .map_or_else(|| input.to_vec(), |l| l.output.clone())
    }

    /// Runs the stem for `x`'s shape, then the trunk. A batch of a shape that has no stem is
    /// a compile error.
    ///
    /// # Panics
    /// When memory for a layer's output cannot be had, as [`Net::forward`].
    pub fn forward<B, I>(&self, x: &Batch<B>) -> Batch<E::Out>
    where
        B: StaticShape + ShapeKey,
        E: HasStem<B::Key, I>,
    {
        match self.try_forward(x) {
            Ok(y) => y,
            Err(err) => panic!("cannot run the net: {err}"),
        }
    }

    /// Runs the stem for `x`'s shape, then the trunk, checked at run time.
    ///
    /// # Errors
    /// [`ShapeError::NoStem`] when no stem takes samples of `x`'s shape;
    /// [`ShapeError::OutOfMemory`] when a layer's output cannot be allocated.
    pub fn try_forward<B: Shape>(&self, x: &Batch<B>) -> Result<Batch<E::Out>, ShapeError> {
        let dims = x.features().dims();
        let nodes = self.entry(&dims)?;
        let out = E::Out::from_dims(&self.output_of(&nodes, &dims)).unwrap_or_default();
        let y = exec::forward_at(&self.state().layers, nodes, x.as_matrix())?;
        Ok(Batch::from_parts(y, out))
    }

    /// The loss of a batch and the gradient of every parameter, through the stem for the
    /// batch's shape and the trunk; a stem the batch does not reach gets no gradient (an
    /// optimizer step leaves it alone). The net does not change.
    ///
    /// # Errors
    /// As [`Net::loss_and_grads`]; [`ShapeError::NoStem`] when no stem takes samples of the
    /// batch's shape.
    pub fn loss_and_grads<B, T, F>(
        &self,
        x: &Batch<B>,
        target: &T,
        loss: F,
    ) -> Result<(f32, Grads), ShapeError>
    where
        B: Shape,
        T: TargetFor<<E::Out as Shape>::Flat>,
        F: Loss<T>,
    {
        let dims = x.features().dims();
        let nodes = self.entry(&dims)?;
        crate::train::check_target(&self.output_of(&nodes, &dims), x.samples(), target)?;
        let state = self.state();
        let ctx = crate::exec::RunCtx::train(state.seed, state.steps);
        let layers = &state.layers;
        let (value, mut grads, _) =
            loss_grads_at(layers, nodes.clone(), x.as_matrix(), target, loss, ctx)?;
        grads.reached = Some(reached(layers, nodes));
        Ok((value, grads))
    }
}

impl<E: StemsFit<L>, L: Layers> Net<Stemmed<E>, L> {
    /// The loss of a batch and, for labels, the fraction of samples classified right, from one
    /// forward pass through the stem for the batch's shape and the trunk, as
    /// [`Net::evaluate`] does for a net of one input.
    ///
    /// # Errors
    /// As [`loss_and_grads`](Net::loss_and_grads).
    pub fn evaluate<B, T, F>(
        &self,
        x: &Batch<B>,
        target: &T,
        loss: F,
    ) -> Result<(f32, Option<f32>), ShapeError>
    where
        B: Shape,
        T: TargetFor<<E::Out as Shape>::Flat>,
        F: Loss<T>,
    {
        let dims = x.features().dims();
        let nodes = self.entry(&dims)?;
        crate::train::check_target(&self.output_of(&nodes, &dims), x.samples(), target)?;
        let y = exec::forward_at(&self.state().layers, nodes, x.as_matrix())?;
        let (value, _) = loss.loss_and_grad(&y, target)?;
        let samples = x.samples().max(1) as f32;
        let accuracy = target.correct(&y).map(|c| c as f32 / samples);
        Ok((value, accuracy))
    }

    /// The class of every sample of a batch (the index of its largest output), through the
    /// stem for the batch's shape, as [`Net::predict_classes`] does for a net of one input.
    ///
    /// # Errors
    /// As [`try_forward`](Net::try_forward); [`ShapeError::NoClasses`] for a net whose output
    /// has no values.
    pub fn predict_classes<B: Shape>(&self, x: &Batch<B>) -> Result<Vec<usize>, ShapeError> {
        self.try_forward(x)?.argmax()
    }

    /// The shape the net produces for one sample through the stem for inputs of shape
    /// `input`: `[10]`, or `[16, 14, 14]` for an image.
    ///
    /// # Errors
    /// [`ShapeError::NoStem`] when no stem takes inputs of that shape.
    pub fn output_dims_for(&self, input: &[usize]) -> Result<Vec<usize>, ShapeError> {
        let nodes = self.entry(input)?;
        Ok(self.output_of(&nodes, input))
    }
}

/// Which parameters, in order, the nodes `nodes` compute with.
fn reached(layers: &[BoundLayer], nodes: Range<usize>) -> Vec<bool> {
    let mut owners = vec![false; layers.len()];
    for k in nodes {
        if let Some(l) = layers.get(k) {
            if let Some(o) = owners.get_mut(l.tied.unwrap_or(k)) {
                *o = true;
            }
        }
    }
    layers
        .iter()
        .zip(owners)
        .flat_map(|(l, o)| core::iter::repeat_n(o, l.params.len()))
        .collect()
}
