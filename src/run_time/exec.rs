//! The run-time core: checking, building and running a list of layers.
//!
//! None of this is generic over the net's type, so it is compiled once, however many nets a
//! program declares and however long they are: the types check the shapes, these loops do the
//! work.

use std::borrow::Cow;

use nalgebra::DMatrix;

use std::sync::Arc;

use crate::alloc::{try_clone, try_zeros, MAX_VALUES};
use crate::error::ShapeError;
use crate::init::{Dims, InitRng, Initializer, ParamInfo};
use crate::layer::{Activation, Fault, Kernel, Layer, PartialShape};
use crate::state::{BoundLayer, Param};

/// One layer of a walk through a list: its index and the shapes around it, `None` where not
/// even the rank is known.
pub(crate) struct Step<'a> {
    pub(crate) index: usize,
    pub(crate) layer: &'a dyn Layer,
    pub(crate) input: Option<PartialShape>,
    /// The output shape, or why the input does not fit.
    pub(crate) output: Result<Option<PartialShape>, Fault>,
}

/// Walks `layers` from an input shape (`None` before binding), passing each layer's output to
/// the next. The one place that propagates shapes: checking, building and describing all use
/// it. After a layer that rejects its input, the shape is unknown.
pub(crate) fn walk<'a>(
    layers: &'a [&'a dyn Layer],
    input: Option<PartialShape>,
) -> impl Iterator<Item = Step<'a>> + 'a {
    layers
        .iter()
        .enumerate()
        .scan(input, |shape, (index, &layer)| {
            let input = shape.take();
            let output = layer.output_shape(input.as_ref());
            shape.clone_from(&output.as_ref().ok().cloned().flatten());
            Some(Step {
                index,
                layer,
                input,
                output,
            })
        })
}

/// Whether a tensor of shape `dims` can be allocated and indexed: the product of its non-zero
/// sizes is at most [`MAX_VALUES`]. Every partial product a kernel computes from these sizes
/// (a row, a plane, `in_c·k·k`) is then at most that, so none overflows.
fn fits(dims: &[usize]) -> bool {
    dims.iter()
        .filter(|&&d| d != 0)
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .is_some_and(|n| n <= MAX_VALUES)
}

/// The error of a layer whose run-time rule breaks the [`Layer`] trait's contract, or
/// contradicts its compile-time half.
fn contradicts(index: usize, kind: &str, detail: String) -> ShapeError {
    ShapeError::Contract {
        what: format!("layer {index} ({kind})"),
        detail,
    }
}

/// Whether a run-time shape is one the compiler's partial shape allows: the same rank, and
/// every size the compiler knows the same.
fn agrees(run_time: &[usize], compile_time: &PartialShape) -> bool {
    run_time.len() == compile_time.0.len()
        && run_time
            .iter()
            .zip(&compile_time.0)
            .all(|(r, c)| c.is_none_or(|c| c == *r))
}

/// A parameter to allocate: where it goes and what it is.
struct Planned {
    name: String,
    shape: Vec<usize>,
    role: crate::init::Role,
    fan_in: usize,
    fan_out: usize,
    rows: usize,
    cols: usize,
}

/// Checks every shape a binding of `layers` to `input` needs and builds the bound layers, with
/// every parameter 0 (the caller initializes or loads them).
///
/// One walk checks each layer (it accepts what reaches it; its parameters, input, output and
/// work buffers can be allocated, so no size computed from them overflows); only then is
/// anything allocated, each parameter fallibly: memory that cannot be had is
/// [`ShapeError::OutOfMemory`] naming the parameter, and what was allocated is freed.
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
) -> Result<Vec<BoundLayer>, ShapeError> {
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
    let mut plan = Vec::with_capacity(layers.len());
    for step in walk(layers, Some(PartialShape::from_dims(input))) {
        let (index, kind) = (step.index, step.layer.kind());
        let too_large = |tensor: String, shape: Vec<usize>| ShapeError::TooLarge {
            layer: index,
            kind,
            tensor,
            shape,
        };
        let output = step.output.clone().map_err(|f| f.at(index, kind))?;
        // The walk starts from a known input, and each layer before was checked to give a
        // known output.
        let Some(input) = step.input.as_ref().and_then(PartialShape::known) else {
            return Err(contradicts(
                index,
                kind,
                "it receives no known shape".into(),
            ));
        };
        // From a known input every layer's output is known (a `Layer` promises it).
        let output = match output.as_ref().map(|o| (o.known(), o)) {
            Some((Some(output), _)) => output,
            Some((None, partial)) => {
                return Err(contradicts(
                    index,
                    kind,
                    format!(
                        "its `output_shape` gives {partial} for the known input {}; from a known input every size of the output must be known",
                        Dims(&input)
                    ),
                ))
            }
            None => {
                return Err(contradicts(
                    index,
                    kind,
                    format!(
                        "its `output_shape` gives no shape for the known input {}; it must give the output's shape or an error saying why the input does not fit",
                        Dims(&input)
                    ),
                ))
            }
        };
        if let Some(compiled) = expected.get(index) {
            if !agrees(&output, compiled) {
                return Err(contradicts(
                    index,
                    kind,
                    format!(
                        "its run-time rule (`Layer::output_shape`) gives output {} for input {}, but its compile-time half (`LayerOn::Out`) told the compiler {compiled}",
                        Dims(&output),
                        Dims(&input)
                    ),
                ));
            }
        }
        let mut params = Vec::new();
        for (role, shape) in step.layer.param_shapes(step.input.as_ref()) {
            let name = role.param_name(index);
            if params.iter().any(|(_, n, _)| *n == name) {
                return Err(ShapeError::DuplicateParam {
                    layer: index,
                    kind,
                    name,
                });
            }
            let Some(shape) = shape.known() else {
                return Err(contradicts(
                    index,
                    kind,
                    format!(
                        "its parameter `{name}` has shape {shape} for the known input {}; once the input is known every size of a parameter must be",
                        Dims(&input)
                    ),
                ));
            };
            if !fits(&shape) {
                return Err(too_large(format!("parameter `{name}`"), shape));
            }
            params.push((role, name, shape));
        }
        let tensors = [("input", &input), ("output", &output)];
        for (tensor, shape) in tensors {
            if !fits(shape) {
                return Err(too_large(tensor.into(), shape.clone()));
            }
        }
        for (tensor, shape) in step.layer.scratch(&input, &output) {
            if !fits(&shape) {
                return Err(too_large(tensor.into(), shape));
            }
        }
        // PyTorch's fans, read from the weight (the first parameter): a dense `[out, in]` has
        // fan-in `in`; a convolution `[out, in, k, k]` has `in·k·k`. A bias shares them. The
        // weight fits, so these products do not overflow.
        let from_weight = || {
            params.first().map_or((0, 0), |(_, _, w)| {
                let field = w.iter().skip(2).product::<usize>();
                let size = |i: usize| w.get(i).copied().unwrap_or(0) * field;
                (size(1), size(0))
            })
        };
        let (fan_in, fan_out) = step.layer.fans(&input, &output).unwrap_or_else(from_weight);
        let kernel: Arc<dyn Kernel> = Arc::from(step.layer.kernel(&input, &output));
        // Both products fit: `fits` checked them.
        let size = |dims: &[usize]| dims.iter().product::<usize>();
        if kernel.is_reshape() && size(&input) != size(&output) {
            return Err(contradicts(
                index,
                kind,
                format!(
                    "its kernel says it is a reshape (`Kernel::is_reshape`), which the net skips, but its output {} holds {} values and its input {} holds {}",
                    Dims(&output),
                    size(&output),
                    Dims(&input),
                    size(&input)
                ),
            ));
        }
        if let Some(activation) = kernel.activation().filter(|_| input != output) {
            return Err(contradicts(
                index,
                kind,
                format!(
                    "its kernel says it is the element-wise {activation:?} (`Kernel::activation`), which keeps the shape, but it maps input {} to output {}",
                    Dims(&input),
                    Dims(&output)
                ),
            ));
        }
        let params: Vec<Planned> = params
            .into_iter()
            .map(|(role, name, shape)| Planned {
                rows: shape.first().copied().unwrap_or(1),
                cols: shape.iter().skip(1).product(),
                name,
                shape,
                role,
                fan_in,
                fan_out,
            })
            .collect();
        plan.push((index, kind, kernel, output, params));
    }
    // Every parameter is written as soon as it is allocated (zeroed, then initialized), so
    // parameters that together need more than the memory available are refused before any is
    // allocated: with overcommitted memory the allocator would hand them out, and the process
    // would be killed while writing them.
    let mut total = 0u128;
    for (index, kind, _, _, params) in &plan {
        for p in params {
            let before = total;
            total += p.rows as u128 * p.cols as u128;
            if !crate::alloc::fits_in_memory(total) {
                let with = if before == 0 {
                    ""
                } else {
                    ", with the parameters before it"
                };
                return Err(ShapeError::OutOfMemory {
                    what: format!(
                        "parameter `{}` of layer {index} ({kind}), shape {}{with}",
                        p.name,
                        Dims(&p.shape)
                    ),
                    values: total,
                });
            }
        }
    }
    plan.into_iter()
        .map(|(index, kind, kernel, output, params)| {
            let params = params
                .into_iter()
                .map(|p| {
                    let what = || {
                        format!(
                            "parameter `{}` of layer {index} ({kind}), shape {}",
                            p.name,
                            Dims(&p.shape)
                        )
                    };
                    Ok(Param {
                        value: try_zeros(p.rows, p.cols, what)?,
                        name: p.name,
                        shape: p.shape,
                        role: p.role,
                        fan_in: p.fan_in,
                        fan_out: p.fan_out,
                        magnitude: None,
                    })
                })
                .collect::<Result<_, ShapeError>>()?;
            Ok(BoundLayer {
                kind,
                kernel,
                output,
                params,
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
        let info = ParamInfo::new(&p.name, &p.shape, p.role, p.fan_in, p.fan_out);
        init.init(
            &info,
            &mut InitRng::new(seed, &p.name),
            value.as_mut_slice(),
        );
        fresh.push(value);
    }
    let params = layers.iter_mut().flat_map(|l| l.params.iter_mut());
    for (p, value) in params.zip(fresh) {
        p.value = value;
        p.magnitude = None;
    }
    Ok(())
}

/// Initializes freshly built layers in place: nothing to keep if the initializer panics.
pub(crate) fn initialize_fresh(layers: &mut [BoundLayer], init: &dyn Initializer, seed: u64) {
    for p in layers.iter_mut().flat_map(|l| l.params.iter_mut()) {
        p.magnitude = None;
        let info = ParamInfo::new(&p.name, &p.shape, p.role, p.fan_in, p.fan_out);
        init.init(
            &info,
            &mut InitRng::new(seed, &p.name),
            p.value.as_mut_slice(),
        );
    }
}

/// One step of a forward pass: a layer, and the activation after it that it fuses (the
/// identity when none). Reshapes are no steps: their output is their input.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stage {
    /// The layer that computes.
    pub(crate) layer: usize,
    /// The layer whose output the step's output is (the fused activation's, or `layer`).
    pub(crate) last: usize,
    /// The fused activation.
    pub(crate) then: Activation,
}

/// The steps of a forward pass through `layers`.
pub(crate) fn steps(layers: &[BoundLayer]) -> impl Iterator<Item = Stage> + '_ {
    let mut i = 0;
    core::iter::from_fn(move || loop {
        let layer = layers.get(i)?;
        if layer.kernel.is_reshape() {
            i += 1;
            continue;
        }
        let next = layers.get(i + 1).and_then(|l| l.kernel.activation());
        let stage = match next {
            Some(then) if layer.kernel.fuses_activation() => Stage {
                layer: i,
                last: i + 1,
                then,
            },
            _ => Stage {
                layer: i,
                last: i,
                then: Activation::Identity,
            },
        };
        i = stage.last + 1;
        return Some(stage);
    })
}

/// The error of a kernel that left a buffer of another shape than it was given.
fn broke(
    index: usize,
    kind: &str,
    what: &str,
    expected: (usize, usize),
    found: (usize, usize),
) -> ShapeError {
    ShapeError::Contract {
        what: format!("layer {index} ({kind})"),
        detail: format!(
            "{what} is {} × {} but must stay {} × {}",
            found.0, found.1, expected.0, expected.1
        ),
    }
}

/// Names the layer in an error a kernel returned.
fn at_layer(err: ShapeError, index: usize, kind: &str) -> ShapeError {
    match err {
        ShapeError::OutOfMemory { what, values } => ShapeError::OutOfMemory {
            what: format!("{what} (layer {index}, {kind})"),
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
    let (index, layer) = (step.last, &layers[step.last]);
    // Binding checked that the output's size fits.
    let rows: usize = layer.output.iter().product();
    try_zeros(rows, samples, || {
        format!(
            "the output of layer {index} ({}), {rows} values × {samples} samples",
            layer.kind
        )
    })
}

/// Runs one step.
fn run_step(
    layers: &[BoundLayer],
    step: &Stage,
    x: &DMatrix<f32>,
) -> Result<DMatrix<f32>, ShapeError> {
    let layer = &layers[step.layer];
    let mut y = output_buffer(layers, step, x.ncols())?;
    let shape = y.shape();
    layer
        .kernel
        .forward(&layer.params, x, &mut y, step.then)
        .map_err(|e| at_layer(e, step.layer, layer.kind))?;
    if y.shape() != shape {
        return Err(broke(
            step.layer,
            layer.kind,
            "its output",
            shape,
            y.shape(),
        ));
    }
    Ok(y)
}

/// Runs the bound layers on a `features × samples` matrix whose row count was checked. Every
/// buffer is allocated fallibly: memory that cannot be had is [`ShapeError::OutOfMemory`]
/// naming the layer and the buffer.
///
/// A layer that fuses activations (dense, convolution) followed by an activation runs as one
/// step: the product, then bias and activation in a single pass over the output.
pub(crate) fn forward(layers: &[BoundLayer], x: &DMatrix<f32>) -> Result<DMatrix<f32>, ShapeError> {
    let samples = x.ncols();
    let mut cur: Cow<'_, DMatrix<f32>> = Cow::Borrowed(x);
    for step in steps(layers) {
        let layer = &layers[step.layer];
        // An activation on a buffer of its own runs in place.
        if let (Some(a), Cow::Owned(m)) = (layer.kernel.activation(), &mut cur) {
            a.apply(m.as_mut_slice(), &[], 1);
            continue;
        }
        cur = Cow::Owned(run_step(layers, &step, cur.as_ref())?);
    }
    match cur {
        Cow::Owned(m) => Ok(m),
        Cow::Borrowed(m) => try_clone(m, || {
            format!("the output, {} values × {samples} samples", m.nrows())
        }),
    }
}

/// A forward pass kept for the backward pass: every step's output.
pub(crate) struct Trace {
    steps: Vec<Stage>,
    outputs: Vec<DMatrix<f32>>,
}

impl Trace {
    /// The net's output (the input when the net computes nothing).
    pub(crate) fn output<'a>(&'a self, x: &'a DMatrix<f32>) -> &'a DMatrix<f32> {
        self.outputs.last().unwrap_or(x)
    }
}

/// Runs the bound layers on `x`, keeping every step's output.
pub(crate) fn forward_trace(layers: &[BoundLayer], x: &DMatrix<f32>) -> Result<Trace, ShapeError> {
    let steps: Vec<Stage> = steps(layers).collect();
    let mut outputs: Vec<DMatrix<f32>> = Vec::with_capacity(steps.len());
    for step in &steps {
        let input = outputs.last().unwrap_or(x);
        let y = run_step(layers, step, input)?;
        outputs.push(y);
    }
    Ok(Trace { steps, outputs })
}

/// The gradient of every parameter, in order, given the trace of a forward pass on `x` and
/// `dy`, the gradient of the loss with respect to the net's output. Every buffer is
/// allocated fallibly.
pub(crate) fn backward(
    layers: &[BoundLayer],
    x: &DMatrix<f32>,
    trace: Trace,
    dy: DMatrix<f32>,
) -> Result<Vec<DMatrix<f32>>, ShapeError> {
    let Trace { steps, outputs } = trace;
    // Every parameter's gradient, zeroed, in order.
    let mut grads = Vec::new();
    for p in layers.iter().flat_map(|l| &l.params) {
        let what = || format!("the gradient of `{}`, shape {}", p.name, Dims(&p.shape));
        grads.push(try_zeros(p.value.nrows(), p.value.ncols(), what)?);
    }
    let mut offsets = Vec::with_capacity(layers.len());
    let mut offset = 0;
    for l in layers {
        offsets.push(offset);
        offset += l.params.len();
    }
    // No step before the first one with parameters needs its input's gradient.
    let first_learning = steps
        .iter()
        .position(|s| !layers[s.layer].params.is_empty())
        .unwrap_or(steps.len());
    let mut dy = dy;
    for (k, step) in steps.iter().enumerate().rev() {
        if k < first_learning {
            break;
        }
        let layer = &layers[step.layer];
        let y = &outputs[k];
        let input = match k.checked_sub(1) {
            Some(prev) => &outputs[prev],
            None => x,
        };
        step.then.backward(y.as_slice(), dy.as_mut_slice());
        let start = offsets[step.layer];
        let mine = &mut grads[start..start + layer.params.len()];
        let mut dx = if k > first_learning {
            let (rows, samples) = input.shape();
            Some(try_zeros(rows, samples, || {
                format!(
                    "the input gradient of layer {} ({}), {rows} values × {samples} samples",
                    step.layer, layer.kind
                )
            })?)
        } else {
            None
        };
        layer
            .kernel
            .backward(&layer.params, input, y, &dy, mine, dx.as_mut())
            .map_err(|e| at_layer(e, step.layer, layer.kind))?;
        // A kernel written outside the crate may have replaced a buffer by one of another
        // shape; the layers before it would then fail inside a GEMM.
        for (g, p) in mine.iter().zip(&layer.params) {
            if g.shape() != p.value.shape() {
                let what = format!("the gradient of `{}`", p.name);
                return Err(broke(
                    step.layer,
                    layer.kind,
                    &what,
                    p.value.shape(),
                    g.shape(),
                ));
            }
        }
        if let Some(dx) = &dx {
            if dx.shape() != input.shape() {
                let what = "its input gradient";
                return Err(broke(
                    step.layer,
                    layer.kind,
                    what,
                    input.shape(),
                    dx.shape(),
                ));
            }
        }
        if let Some(dx) = dx {
            dy = dx;
        }
    }
    Ok(grads)
}
