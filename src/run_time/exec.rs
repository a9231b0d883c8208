//! The run-time core: checking, building and running a list of layers.
//!
//! None of this is generic over the net's type, so it is compiled once, however many nets a
//! program declares and however long they are: the types check the shapes, these loops do the
//! work.

use core::ops::Range;

use nalgebra::DMatrix;

use crate::alloc::{try_clone, try_zeros};
use crate::error::ShapeError;
use crate::init::{Dims, InitRng, Initializer, ParamInfo};
use crate::layer::{Activation, Layer, PartialShape};
use crate::plan::{fits, known, PlanOp, Planner, Src};
use crate::state::{BoundLayer, Op, Param};

/// Checks every shape a binding of `layers` to `input` needs and builds the bound nodes, with
/// every parameter 0 (the caller initializes or loads them).
///
/// The [plan](crate::plan) checks each layer (it accepts what reaches it; its parameters,
/// input, output and work buffers can be allocated, so no size computed from them overflows),
/// opening composite layers into their parts; only then is anything allocated, each parameter
/// fallibly: memory that cannot be had is [`ShapeError::OutOfMemory`] naming the parameter,
/// and what was allocated is freed.
///
/// A layer is checked, not believed: its output must be fully known and agree with
/// `expected` (each layer's output as the compiler computed it), its parameters' shapes must be
/// fully known, and a kernel that calls itself a reshape or an activation must keep its
/// input's size (a reshape) or shape (an activation), since the net then skips it or runs it
/// in place.
pub(crate) fn build(
    layers: &[&dyn Layer],
    input: &[usize],
    expected: &[PartialShape],
    names: &[String],
) -> Result<Vec<BoundLayer>, ShapeError> {
    check_input(input)?;
    let mut planner = Planner::binding(expected);
    planner.check_names("the net", "", names, layers.len(), None)?;
    planner.seq(
        layers,
        "",
        names,
        (Src::Input, Some(PartialShape::from_dims(input))),
    )?;
    allocate(planner.nodes)
}

/// Checks an input shape as [`build`] does.
fn check_input(input: &[usize]) -> Result<(), ShapeError> {
    if input.contains(&0) {
        return Err(match input {
            [_] => ShapeError::ZeroInput,
            _ => ShapeError::ZeroSize {
                shape: input.to_vec(),
            },
        });
    }
    if !fits(input) {
        return Err(ShapeError::InputTooLarge {
            shape: input.to_vec(),
        });
    }
    Ok(())
}

/// Builds a net of several stems and one trunk: each stem's nodes, then the trunk's, whose
/// parameters the first stem's path owns and every other path shares. Returns the nodes and,
/// per stem, the range of nodes its inputs run through.
pub(crate) fn build_stems(
    stems: &[crate::stems::StemPlan<'_>],
    trunk: &[&dyn Layer],
    trunk_names: &[String],
    trunk_expected: &[PartialShape],
) -> Result<(Vec<BoundLayer>, Vec<Range<usize>>), ShapeError> {
    for (i, stem) in stems.iter().enumerate() {
        if stems[..i].iter().any(|s| s.input == stem.input) {
            return Err(ShapeError::DuplicateStem {
                shape: stem.input.clone(),
            });
        }
    }
    let mut planner = Planner::binding(&[]);
    let mut ranges = Vec::with_capacity(stems.len());
    let mut first_trunk: Option<(Range<usize>, Src, Option<PartialShape>, String)> = None;
    for stem in stems {
        check_input(&stem.input)?;
        let start = planner.nodes.len();
        planner.compare_with(&stem.expected);
        let input = (Src::Input, Some(PartialShape::from_dims(&stem.input)));
        let prefix = format!("stems.{}.", stem.name);
        let in_stem = |source: ShapeError| ShapeError::InBlock {
            layer: format!("stems.{}", stem.name),
            kind: "Stem",
            branch: "its layers",
            source: Box::new(source),
        };
        planner
            .check_names("stem", &stem.name, stem.names, stem.layers.len(), None)
            .map_err(in_stem)?;
        let (src, shape) = planner
            .seq(&stem.layers, &prefix, stem.names, input)
            .map_err(in_stem)?;
        match &first_trunk {
            None => {
                let trunk_start = planner.nodes.len();
                planner.compare_with(trunk_expected);
                planner
                    .check_names("the trunk", "", trunk_names, trunk.len(), None)
                    .and_then(|()| planner.seq(trunk, "trunk.", trunk_names, (src, shape.clone())))
                    .map_err(|source| ShapeError::InBlock {
                        layer: "trunk".into(),
                        kind: "Trunk",
                        branch: "its layers",
                        source: Box::new(source),
                    })?;
                let range = trunk_start..planner.nodes.len();
                first_trunk = Some((range, src, shape, stem.name.clone()));
            }
            Some((range, first_src, first_shape, first_name)) => {
                if shape != *first_shape {
                    return Err(ShapeError::TiedInput {
                        first: format!("trunk (after stem {first_name})"),
                        place: format!("trunk (after stem {})", stem.name),
                        expected: known(first_shape).unwrap_or_default(),
                        found: known(&shape).unwrap_or_default(),
                    });
                }
                planner.replay(range.clone(), *first_src, src, None);
            }
        }
        ranges.push(start..planner.nodes.len());
    }
    Ok((allocate(planner.nodes)?, ranges))
}

/// Allocates the parameters of planned nodes, all 0, and makes them bound nodes.
fn allocate(nodes: Vec<crate::plan::Node>) -> Result<Vec<BoundLayer>, ShapeError> {
    // Two parameters of one name anywhere in the net (a block's names clashing with another
    // layer's) would be one tensor in a file.
    // A later place of a tied set is named too (`4.weight`, as PyTorch's `state_dict` names
    // it), and must not be another layer's name.
    let mut seen = std::collections::HashMap::new();
    for node in &nodes {
        let owner = node.tied.and_then(|t| nodes.get(t)).unwrap_or(node);
        let suffixes = owner
            .params
            .iter()
            .map(|p| (p.name.as_str(), p.role.suffix()));
        let buffers = owner.buffers.iter().map(|(name, _, _)| {
            let suffix = name.rsplit('.').next().unwrap_or(name.as_str());
            (name.as_str(), suffix)
        });
        for (first, suffix) in suffixes.chain(buffers) {
            let name = format!("{}.{suffix}", node.path);
            let again = node.tied.is_some() && name == first;
            if again {
                continue;
            }
            if let Some(first) = seen.insert(name.clone(), node.path.clone()) {
                return Err(ShapeError::DuplicateName {
                    name,
                    first,
                    second: node.path.clone(),
                });
            }
        }
    }
    // Every parameter is written as soon as it is allocated (zeroed, then initialized), so
    // parameters that together need more than the memory available are refused before any is
    // allocated: with overcommitted memory the allocator would hand them out, and the process
    // would be killed while writing them.
    let mut total = 0u128;
    for node in &nodes {
        let params = node.params.iter().map(|p| (&p.name, &p.shape, "parameter"));
        let buffers = node.buffers.iter().map(|(n, s, _)| (n, s, "buffer"));
        for (name, shape, what) in params.chain(buffers) {
            let dims = shape.known().unwrap_or_default();
            let before = total;
            total += dims.iter().map(|&d| d as u128).product::<u128>();
            if !crate::alloc::fits_in_memory(total) {
                let with = if before == 0 {
                    ""
                } else {
                    ", with the parameters before it"
                };
                return Err(ShapeError::OutOfMemory {
                    what: format!(
                        "{what} `{}` of layer {} ({}), shape {}{with}",
                        name,
                        node.path,
                        node.kind,
                        Dims(&dims)
                    ),
                    values: total,
                });
            }
        }
    }
    nodes
        .into_iter()
        .map(|node| {
            let op = match node.op {
                PlanOp::Layer(Some(kernel)) => Op::Layer(kernel),
                PlanOp::Add(src) => Op::Add(src),
                PlanOp::Layer(None) => {
                    return Err(ShapeError::Contract {
                        what: format!("layer {} ({})", node.path, node.kind),
                        detail: "it was planned without a kernel".into(),
                    })
                }
            };
            let params = node
                .params
                .into_iter()
                .map(|p| {
                    let shape = p.shape.known().unwrap_or_default();
                    let rows = shape.first().copied().unwrap_or(1);
                    let cols = shape.iter().skip(1).product();
                    let what = || {
                        format!(
                            "parameter `{}` of layer {} ({}), shape {}",
                            p.name,
                            node.path,
                            node.kind,
                            Dims(&shape)
                        )
                    };
                    Ok(Param {
                        value: try_zeros(rows, cols, what)?,
                        name: p.name,
                        shape,
                        role: p.role,
                        fan_in: p.fan_in,
                        fan_out: p.fan_out,
                        magnitude: None,
                    })
                })
                .collect::<Result<_, ShapeError>>()?;
            let buffers = node
                .buffers
                .into_iter()
                .map(|(name, shape, kind)| {
                    crate::layer::Buffer::new(name, &shape.known().unwrap_or_default(), kind)
                })
                .collect::<Result<_, ShapeError>>()?;
            Ok(BoundLayer {
                kind: node.kind,
                path: node.path,
                output: node
                    .output
                    .as_ref()
                    .and_then(PartialShape::known)
                    .unwrap_or_default(),
                op,
                input: node.input,
                params,
                tied: node.tied,
                buffers,
            })
        })
        .collect()
}

/// Runs `init` over every parameter, in order, all or nothing: the new values are drawn into
/// copies and swapped in only when every parameter has its values, so an initializer that
/// panics halfway leaves `layers` as they were. The copies are allocated fallibly.
pub(crate) fn initialize(
    layers: &mut [BoundLayer],
    init: &dyn Initializer,
    seed: u64,
) -> Result<(), ShapeError> {
    let mut fresh = Vec::new();
    for p in layers.iter().flat_map(|l| l.params.iter()) {
        let what = || format!("a copy of parameter `{}`, shape {}", p.name, Dims(&p.shape));
        let mut value = try_zeros(p.value.nrows(), p.value.ncols(), what)?;
        draw(init, seed, p, value.as_mut_slice());
        fresh.push(value);
    }
    let mut buffers = Vec::new();
    for b in layers.iter().flat_map(|l| l.buffers.iter()) {
        buffers.push(b.fresh()?);
    }
    let params = layers.iter_mut().flat_map(|l| l.params.iter_mut());
    for (p, value) in params.zip(fresh) {
        p.value = value;
        p.magnitude = None;
    }
    let olds = layers.iter_mut().flat_map(|l| l.buffers.iter_mut());
    for (old, new) in olds.zip(buffers) {
        *old = new;
    }
    Ok(())
}

/// Draws the starting values of `p` with `init`: a normalization's scale and shift start at 1
/// and 0 whatever the initializer, as in PyTorch.
fn draw(init: &dyn Initializer, seed: u64, p: &Param, values: &mut [f32]) {
    match p.role {
        crate::init::Role::Scale => values.fill(1.0),
        crate::init::Role::Shift => values.fill(0.0),
        _ => {
            let info = ParamInfo::new(&p.name, &p.shape, p.role, p.fan_in, p.fan_out);
            init.init(&info, &mut InitRng::new(seed, &p.name), values);
        }
    }
}

/// Initializes freshly built layers in place: nothing to keep if the initializer panics.
pub(crate) fn initialize_fresh(layers: &mut [BoundLayer], init: &dyn Initializer, seed: u64) {
    for p in layers.iter_mut().flat_map(|l| l.params.iter_mut()) {
        p.magnitude = None;
        let mut value = std::mem::replace(&mut p.value, DMatrix::zeros(0, 0));
        draw(init, seed, p, value.as_mut_slice());
        p.value = value;
    }
}

/// Where a step reads a value: the net's input or the output of an earlier step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Slot {
    /// The net's input.
    Input,
    /// The output of step `s`.
    Step(usize),
}

/// One step of a forward pass: a node, and the activation after it that it fuses (the
/// identity when none). Reshapes are no steps: their output is their input's value.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stage {
    /// The node that computes.
    pub(crate) layer: usize,
    /// The node whose output the step's output is (the fused activation's, or `layer`).
    pub(crate) last: usize,
    /// The fused activation.
    pub(crate) then: Activation,
    /// Where it reads its input.
    pub(crate) input: Slot,
    /// Where it reads the value it adds, for a residual sum.
    pub(crate) add: Option<Slot>,
}

/// The steps of a forward pass through `layers`, and where the net's output is.
///
/// A node that fuses activations (a dense layer, a convolution, a residual sum) followed by an
/// activation that reads only it, when nothing else reads it, runs as one step.
pub(crate) fn stages(layers: &[BoundLayer], nodes: Range<usize>) -> (Vec<Stage>, Slot) {
    let start = nodes.start;
    let Some(layers_in) = layers.get(nodes.clone()) else {
        return (Vec::new(), Slot::Input);
    };
    // How many nodes read each node's output, and the slot each node's value is in; both
    // indexed from `start`.
    let mut readers = vec![0usize; layers_in.len()];
    for l in layers_in {
        for src in [Some(l.input), l.adds()].into_iter().flatten() {
            if let Some(r) = local(src, start).and_then(|k| readers.get_mut(k)) {
                *r += 1;
            }
        }
    }
    let mut slot_of: Vec<Slot> = Vec::with_capacity(layers_in.len());
    let resolve = |slot_of: &[Slot], src: Src| {
        local(src, start)
            .and_then(|k| slot_of.get(k).copied())
            .unwrap_or(Slot::Input)
    };
    let mut out = Vec::with_capacity(layers_in.len());
    let mut i = 0;
    while let Some(layer) = layers_in.get(i) {
        let input = resolve(&slot_of, layer.input);
        if layer.is_reshape() {
            slot_of.push(input);
            i += 1;
            continue;
        }
        let add = layer.adds().map(|src| resolve(&slot_of, src));
        let next = layers_in
            .get(i + 1)
            .filter(|n| n.input == Src::Node(start + i) && readers[i] == 1)
            .and_then(BoundLayer::activation);
        let step = Slot::Step(out.len());
        match next {
            Some(then) if layer.fuses_activation() => {
                out.push(Stage {
                    layer: start + i,
                    last: start + i + 1,
                    then,
                    input,
                    add,
                });
                slot_of.extend([step, step]);
                i += 2;
            }
            _ => {
                out.push(Stage {
                    layer: start + i,
                    last: start + i,
                    then: Activation::Identity,
                    input,
                    add,
                });
                slot_of.push(step);
                i += 1;
            }
        }
    }
    (out, slot_of.last().copied().unwrap_or(Slot::Input))
}

/// A node read by a node of a range starting at `start`, counted from `start` (`None` for the
/// input).
fn local(src: Src, start: usize) -> Option<usize> {
    match src {
        Src::Node(k) => k.checked_sub(start),
        Src::Input => None,
    }
}

/// The step at which each step's output is read for the last time (`None`: never read).
fn last_reads(stages: &[Stage]) -> Vec<Option<usize>> {
    let mut last = vec![None; stages.len()];
    for (s, st) in stages.iter().enumerate() {
        for slot in [Some(st.input), st.add].into_iter().flatten() {
            if let Slot::Step(p) = slot {
                if let Some(l) = last.get_mut(p) {
                    *l = Some(s);
                }
            }
        }
    }
    last
}

/// The error of a kernel that left a buffer of another shape than it was given.
fn broke(
    layer: &BoundLayer,
    what: &str,
    expected: (usize, usize),
    found: (usize, usize),
) -> ShapeError {
    ShapeError::Contract {
        what: format!("layer {} ({})", layer.path, layer.kind),
        detail: format!(
            "{what} is {} × {} but must stay {} × {}",
            found.0, found.1, expected.0, expected.1
        ),
    }
}

/// Names the layer in an error a kernel returned.
fn at_layer(err: ShapeError, layer: &BoundLayer) -> ShapeError {
    match err {
        ShapeError::OutOfMemory { what, values } => ShapeError::OutOfMemory {
            what: format!("{what} (layer {}, {})", layer.path, layer.kind),
            values,
        },
        other => other,
    }
}

/// The output buffer of a step for `samples` samples, allocated fallibly.
fn output_buffer(
    layers: &[BoundLayer],
    step: &Stage,
    samples: usize,
) -> Result<DMatrix<f32>, ShapeError> {
    let layer = &layers[step.last];
    // Binding checked that the output's size fits.
    let rows: usize = layer.output.iter().product();
    try_zeros(rows, samples, || {
        format!(
            "the output of layer {} ({}), {rows} values × {samples} samples",
            layer.path, layer.kind
        )
    })
}

/// The parameters node `layer` computes with: its own, or its tied set's.
fn params_of(layers: &[BoundLayer], layer: usize) -> &[crate::state::Param] {
    let owner = layers.get(layer).and_then(|l| l.tied).unwrap_or(layer);
    layers.get(owner).map_or(&[], |l| l.params.as_slice())
}

/// What a pass runs with besides the values: its mode, the key of its random streams, and the
/// new buffer values its training steps recorded, per node that owns buffers.
pub(crate) struct RunCtx {
    mode: crate::layer::Mode,
    seed: u64,
    steps: u64,
    /// Per node, the buffers as the pass left them (`None`: unchanged).
    pending: Vec<Option<Vec<crate::layer::Buffer>>>,
}

impl RunCtx {
    /// An inference pass.
    pub(crate) fn eval() -> Self {
        RunCtx {
            mode: crate::layer::Mode::Eval,
            seed: 0,
            steps: 0,
            pending: Vec::new(),
        }
    }

    /// A training pass of a net seeded with `seed` after `steps` optimizer steps.
    pub(crate) fn train(seed: u64, steps: u64) -> Self {
        RunCtx {
            mode: crate::layer::Mode::Train,
            seed,
            steps,
            pending: Vec::new(),
        }
    }

    /// The buffers node `owner` computes with: as an earlier place of this pass left them,
    /// or the net's.
    fn buffers<'a>(&'a self, layers: &'a [BoundLayer], owner: usize) -> &'a [crate::layer::Buffer] {
        match self.pending.get(owner) {
            Some(Some(b)) => b,
            _ => layers.get(owner).map_or(&[], |l| l.buffers.as_slice()),
        }
    }

    /// The new buffers the pass recorded: per node that owns buffers, all of its buffers.
    pub(crate) fn into_updates(self) -> Vec<(usize, Vec<crate::layer::Buffer>)> {
        self.pending
            .into_iter()
            .enumerate()
            .filter_map(|(i, b)| Some((i, b?)))
            .collect()
    }
}

/// Runs one step on its input `x` (and `add`, the value a residual sum adds).
fn run_step(
    layers: &[BoundLayer],
    step: &Stage,
    x: &DMatrix<f32>,
    add: Option<&DMatrix<f32>>,
    ctx: &mut RunCtx,
) -> Result<DMatrix<f32>, ShapeError> {
    let layer = &layers[step.layer];
    let mut y = output_buffer(layers, step, x.ncols())?;
    let shape = y.shape();
    match (&layer.op, add) {
        (Op::Add(_), Some(other)) => {
            // Binding checked that both branches give the output's shape.
            if x.shape() != shape || other.shape() != shape {
                return Err(broke(layer, "a branch", shape, x.shape()));
            }
            let sums = y.as_mut_slice().iter_mut();
            for ((y, a), b) in sums.zip(x.as_slice()).zip(other.as_slice()) {
                *y = a + b;
            }
            step.then.apply(y.as_mut_slice(), &[], 1);
        }
        (Op::Layer(kernel), _) => {
            let owner = layer.tied.unwrap_or(step.layer);
            let buffers = ctx.buffers(layers, owner);
            let mut pass =
                crate::layer::Pass::new(ctx.mode, buffers, ctx.seed, ctx.steps, &layer.path);
            kernel
                .forward_with(
                    &mut pass,
                    params_of(layers, step.layer),
                    x,
                    &mut y,
                    step.then,
                )
                .map_err(|e| at_layer(e, layer))?;
            if pass.updates.iter().any(Option::is_some) {
                let mut new = buffers.to_vec();
                for (b, u) in new.iter_mut().zip(pass.updates) {
                    if let Some(u) = u {
                        b.value = u;
                    }
                }
                if ctx.pending.len() < layers.len() {
                    ctx.pending.resize(layers.len(), None);
                }
                if let Some(slot) = ctx.pending.get_mut(owner) {
                    *slot = Some(new);
                }
            }
        }
        (Op::Add(_), None) => {
            return Err(broke(layer, "its second branch", shape, (0, 0)));
        }
    }
    if y.shape() != shape {
        return Err(broke(layer, "its output", shape, y.shape()));
    }
    Ok(y)
}

/// The value at `slot`: the input `x`, or a step's output.
fn value<'a>(
    x: &'a DMatrix<f32>,
    outputs: &'a [Option<DMatrix<f32>>],
    slot: Slot,
) -> Result<&'a DMatrix<f32>, ShapeError> {
    match slot {
        Slot::Input => Ok(x),
        Slot::Step(s) => {
            outputs
                .get(s)
                .and_then(Option::as_ref)
                .ok_or_else(|| ShapeError::Contract {
                    what: "the net's plan".into(),
                    detail: format!("step {s} is read after its value was dropped"),
                })
        }
    }
}

/// Runs the bound nodes on a `features × samples` matrix whose row count was checked. Every
/// buffer is allocated fallibly: memory that cannot be had is [`ShapeError::OutOfMemory`]
/// naming the layer and the buffer.
///
/// A node that fuses activations (dense, convolution, a residual sum) followed by an
/// activation runs as one step: the product, then bias and activation in a single pass over
/// the output. An activation
/// whose input no later step reads runs in place, and every value is dropped after its last
/// read.
pub(crate) fn forward(layers: &[BoundLayer], x: &DMatrix<f32>) -> Result<DMatrix<f32>, ShapeError> {
    forward_at(layers, 0..layers.len(), x)
}

/// [`forward`] through the nodes `nodes` only (one entry of a net with several stems), whose
/// first node reads `x`.
pub(crate) fn forward_at(
    layers: &[BoundLayer],
    nodes: Range<usize>,
    x: &DMatrix<f32>,
) -> Result<DMatrix<f32>, ShapeError> {
    let samples = x.ncols();
    let mut ctx = RunCtx::eval();
    let (stages, output) = stages(layers, nodes);
    let last = last_reads(&stages);
    let mut outputs: Vec<Option<DMatrix<f32>>> = Vec::with_capacity(stages.len());
    for (s, step) in stages.iter().enumerate() {
        let layer = &layers[step.layer];
        // An activation on a value no later step reads runs in place (unless it fused the
        // activation after it, which the in-place pass would not apply).
        let alone = step.last == step.layer;
        if let (Some(a), Slot::Step(p), true) = (layer.activation(), step.input, alone) {
            if last.get(p) == Some(&Some(s)) {
                if let Some(mut m) = outputs.get_mut(p).and_then(Option::take) {
                    a.apply(m.as_mut_slice(), &[], 1);
                    outputs.push(Some(m));
                    continue;
                }
            }
        }
        let add = step.add.map(|a| value(x, &outputs, a)).transpose()?;
        let y = run_step(layers, step, value(x, &outputs, step.input)?, add, &mut ctx)?;
        // Values read for the last time are dropped.
        for slot in [Some(step.input), step.add].into_iter().flatten() {
            if let Slot::Step(p) = slot {
                if last.get(p) == Some(&Some(s)) && Slot::Step(p) != output {
                    if let Some(v) = outputs.get_mut(p) {
                        *v = None;
                    }
                }
            }
        }
        outputs.push(Some(y));
    }
    match output {
        Slot::Step(s) => {
            outputs
                .get_mut(s)
                .and_then(Option::take)
                .ok_or_else(|| ShapeError::Contract {
                    what: "the net's plan".into(),
                    detail: "its output was dropped".into(),
                })
        }
        Slot::Input => try_clone(x, || {
            format!("the output, {} values × {samples} samples", x.nrows())
        }),
    }
}

/// A forward pass kept for the backward pass: every step's output, and the pass's context.
pub(crate) struct Trace {
    stages: Vec<Stage>,
    output: Slot,
    outputs: Vec<Option<DMatrix<f32>>>,
    ctx: RunCtx,
    /// Per step, the buffers its forward pass saw when an earlier place of its tied set had
    /// changed them (`None`: the net's).
    seen: Vec<Option<Vec<crate::layer::Buffer>>>,
}

impl Trace {
    /// The net's output (the input when the net computes nothing).
    pub(crate) fn output<'a>(&'a self, x: &'a DMatrix<f32>) -> &'a DMatrix<f32> {
        match self.output {
            Slot::Step(s) => self.outputs.get(s).and_then(Option::as_ref).unwrap_or(x),
            Slot::Input => x,
        }
    }
}

/// Runs the bound nodes on `x` in a training pass (`ctx`), keeping every step's output.
pub(crate) fn forward_trace(
    layers: &[BoundLayer],
    nodes: Range<usize>,
    x: &DMatrix<f32>,
    mut ctx: RunCtx,
) -> Result<Trace, ShapeError> {
    let (stages, output) = stages(layers, nodes);
    let mut outputs: Vec<Option<DMatrix<f32>>> = Vec::with_capacity(stages.len());
    let mut seen = Vec::with_capacity(stages.len());
    for step in &stages {
        let owner = layers
            .get(step.layer)
            .and_then(|l| l.tied)
            .unwrap_or(step.layer);
        seen.push(ctx.pending.get(owner).cloned().flatten());
        let add = step.add.map(|a| value(x, &outputs, a)).transpose()?;
        let y = run_step(layers, step, value(x, &outputs, step.input)?, add, &mut ctx)?;
        outputs.push(Some(y));
    }
    Ok(Trace {
        stages,
        output,
        outputs,
        ctx,
        seen,
    })
}

/// Adds `d` into the gradient kept for `slot`, or keeps it there when there is none yet.
fn accumulate(dvalues: &mut [Option<DMatrix<f32>>], slot: Slot, d: DMatrix<f32>) {
    let Slot::Step(p) = slot else { return };
    let Some(entry) = dvalues.get_mut(p) else {
        return;
    };
    match entry {
        Some(sum) => {
            for (s, v) in sum.as_mut_slice().iter_mut().zip(d.as_slice()) {
                *s += v;
            }
        }
        None => *entry = Some(d),
    }
}

/// The gradient of every parameter, in order, given the trace of a forward pass on `x` and
/// `dy`, the gradient of the loss with respect to the net's output. Every buffer is
/// allocated fallibly.
///
/// Gradients accumulate: a value read by two steps (a residual block's input) gets the sum of
/// both gradients, and a tied parameter set the sum over its places, as PyTorch's autograd
/// gives them. Also returns the new buffer values the pass recorded.
#[allow(clippy::type_complexity)]
pub(crate) fn backward(
    layers: &[BoundLayer],
    x: &DMatrix<f32>,
    trace: Trace,
    dy: DMatrix<f32>,
) -> Result<(Vec<DMatrix<f32>>, Vec<(usize, Vec<crate::layer::Buffer>)>), ShapeError> {
    let Trace {
        stages,
        output,
        outputs,
        ctx,
        seen,
    } = trace;
    // Every parameter's gradient, zeroed, in order.
    let mut grads = Vec::new();
    let mut offsets = Vec::with_capacity(layers.len());
    for l in layers {
        offsets.push(grads.len());
        for p in &l.params {
            let what = || format!("the gradient of `{}`, shape {}", p.name, Dims(&p.shape));
            grads.push(try_zeros(p.value.nrows(), p.value.ncols(), what)?);
        }
    }
    // Whether a step's output depends on a parameter: only then does its input need a
    // gradient.
    let mut learns = Vec::with_capacity(stages.len());
    for step in &stages {
        let reads = |slot: Slot| match slot {
            Slot::Step(p) => learns.get(p).copied().unwrap_or(false),
            Slot::Input => false,
        };
        let own = !params_of(layers, step.layer).is_empty();
        let value = own || reads(step.input) || step.add.is_some_and(reads);
        learns.push(value);
    }
    let needs = |slot: Slot| match slot {
        Slot::Step(p) => learns.get(p).copied().unwrap_or(false),
        Slot::Input => false,
    };
    let mut dvalues: Vec<Option<DMatrix<f32>>> = (0..stages.len()).map(|_| None).collect();
    match output {
        Slot::Step(s) if needs(output) => accumulate(&mut dvalues, Slot::Step(s), dy),
        _ => return Ok((grads, ctx.into_updates())),
    }
    // Which parameter sets a kernel already wrote: a later write (another place of a tied
    // set, met earlier going backwards) goes through a buffer of its own and is added.
    let mut written = vec![false; layers.len()];
    for (s, step) in stages.iter().enumerate().rev() {
        let Some(mut dy) = dvalues.get_mut(s).and_then(Option::take) else {
            continue;
        };
        let layer = &layers[step.layer];
        let Some(Some(y)) = outputs.get(s) else {
            continue;
        };
        step.then.backward(y.as_slice(), dy.as_mut_slice());
        let input = value(x, &outputs, step.input)?;
        let kernel = match &layer.op {
            Op::Add(_) => {
                if let Some(add) = step.add.filter(|a| needs(*a)) {
                    let copy = try_clone(&dy, || {
                        format!(
                            "the gradient of a branch of layer {} ({})",
                            layer.path, layer.kind
                        )
                    })?;
                    accumulate(&mut dvalues, add, copy);
                }
                if needs(step.input) {
                    accumulate(&mut dvalues, step.input, dy);
                }
                continue;
            }
            Op::Layer(kernel) => kernel,
        };
        let owner = layer.tied.unwrap_or(step.layer);
        let params = params_of(layers, step.layer);
        let start = offsets.get(owner).copied().unwrap_or(0);
        let mut own = None;
        let first = written
            .get_mut(owner)
            .is_some_and(|w| !std::mem::replace(w, true));
        let mine: &mut [DMatrix<f32>] = if first {
            &mut grads[start..start + params.len()]
        } else {
            let mut fresh = Vec::with_capacity(params.len());
            for p in params {
                let what = || format!("the gradient of `{}`, shape {}", p.name, Dims(&p.shape));
                fresh.push(try_zeros(p.value.nrows(), p.value.ncols(), what)?);
            }
            own.insert(fresh).as_mut_slice()
        };
        let mut dx = if needs(step.input) {
            let (rows, samples) = input.shape();
            Some(try_zeros(rows, samples, || {
                format!(
                    "the input gradient of layer {} ({}), {rows} values × {samples} samples",
                    layer.path, layer.kind
                )
            })?)
        } else {
            None
        };
        let pass = crate::layer::Pass::new(
            ctx.mode,
            match seen.get(s) {
                Some(Some(earlier)) => earlier.as_slice(),
                _ => layers.get(owner).map_or(&[], |l| l.buffers.as_slice()),
            },
            ctx.seed,
            ctx.steps,
            &layer.path,
        );
        kernel
            .backward_with(&pass, params, input, y, &dy, mine, dx.as_mut())
            .map_err(|e| at_layer(e, layer))?;
        // A kernel written outside the crate may have replaced a buffer by one of another
        // shape; the layers before it would then fail inside a GEMM.
        for (g, p) in mine.iter().zip(params) {
            if g.shape() != p.value.shape() {
                let what = format!("the gradient of `{}`", p.name);
                return Err(broke(layer, &what, p.value.shape(), g.shape()));
            }
        }
        if let Some(fresh) = own {
            for (sum, g) in grads[start..start + params.len()].iter_mut().zip(fresh) {
                for (s, v) in sum.as_mut_slice().iter_mut().zip(g.as_slice()) {
                    *s += v;
                }
            }
        }
        if let Some(dx) = dx {
            if dx.shape() != input.shape() {
                let what = "its input gradient";
                return Err(broke(layer, what, input.shape(), dx.shape()));
            }
            accumulate(&mut dvalues, step.input, dx);
        }
    }
    Ok((grads, ctx.into_updates()))
}
