//! The run-time core: checking, building and running a list of layers.
//!
//! None of this is generic over the net's type, so it is compiled once, however many nets a
//! program declares and however long they are: the types check the shapes, these loops do the
//! work.

use std::borrow::Cow;

use nalgebra::DMatrix;

use crate::alloc::{try_clone, try_zeros, MAX_VALUES};
use crate::error::ShapeError;
use crate::init::{Dims, InitRng, Initializer, ParamInfo};
use crate::kernels;
use crate::layer::{Activation, Fault, Layer, Op, PartialShape};
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
pub(crate) fn build(layers: &[&dyn Layer], input: &[usize]) -> Result<Vec<BoundLayer>, ShapeError> {
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
        // From a known input every layer's output is known (a `Layer` promises it).
        let known = |shape: Option<&PartialShape>| shape.and_then(PartialShape::known);
        let (Some(input), Some(output)) = (known(step.input.as_ref()), known(output.as_ref()))
        else {
            return Err(too_large("output".into(), Vec::new()));
        };
        let mut params = Vec::new();
        for (role, shape) in step.layer.param_shapes(step.input.as_ref()) {
            let name = role.param_name(index);
            let shape = shape.known().unwrap_or_default();
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
        let (fan_in, fan_out) = params.first().map_or((0, 0), |(_, _, w)| {
            let field = w.iter().skip(2).product::<usize>();
            let size = |i: usize| w.get(i).copied().unwrap_or(0) * field;
            (size(1), size(0))
        });
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
        plan.push((index, step.layer, input, output, params));
    }
    // Every parameter is written as soon as it is allocated (zeroed, then initialized), so
    // parameters that together need more than the memory available are refused before any is
    // allocated: with overcommitted memory the allocator would hand them out, and the process
    // would be killed while writing them.
    let mut total = 0u128;
    for (index, layer, _, _, params) in &plan {
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
                        "parameter `{}` of layer {index} ({}), shape {}{with}",
                        p.name,
                        layer.kind(),
                        Dims(&p.shape)
                    ),
                    values: total,
                });
            }
        }
    }
    plan.into_iter()
        .map(|(index, layer, input, output, params)| {
            let kind = layer.kind();
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
                    })
                })
                .collect::<Result<_, ShapeError>>()?;
            Ok(BoundLayer {
                kind,
                op: layer.op(&input),
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
    }
    Ok(())
}

/// Initializes freshly built layers in place: nothing to keep if the initializer panics.
pub(crate) fn initialize_fresh(layers: &mut [BoundLayer], init: &dyn Initializer, seed: u64) {
    for p in layers.iter_mut().flat_map(|l| l.params.iter_mut()) {
        let info = ParamInfo::new(&p.name, &p.shape, p.role, p.fan_in, p.fan_out);
        init.init(
            &info,
            &mut InitRng::new(seed, &p.name),
            p.value.as_mut_slice(),
        );
    }
}

/// Runs the bound layers on a `features × samples` matrix whose row count was checked. Every
/// buffer is allocated fallibly: memory that cannot be had is [`ShapeError::OutOfMemory`]
/// naming the layer and the buffer.
///
/// A dense or convolution layer followed by an activation runs as one step: the product, then
/// bias and activation in a single pass over the output.
pub(crate) fn forward(layers: &[BoundLayer], x: &DMatrix<f32>) -> Result<DMatrix<f32>, ShapeError> {
    let samples = x.ncols();
    let mut cur: Cow<'_, DMatrix<f32>> = Cow::Borrowed(x);
    let mut i = 0;
    while let Some(layer) = layers.get(i) {
        let index = i;
        // The output buffer of this layer for the whole batch.
        let buffer = |rows: usize, name: &str| {
            try_zeros(rows, samples, || {
                format!(
                    "the {name} of layer {index} ({}), {rows} values × {samples} samples",
                    layer.kind
                )
            })
        };
        // The activation right after a layer with a bias, fused into it.
        let mut fused = || match layers.get(i + 1).map(|l| l.op) {
            Some(Op::Act(a)) => {
                i += 1;
                a
            }
            _ => Activation::Identity,
        };
        match layer.op {
            Op::Dense => {
                let act = fused();
                // Binding gives a dense layer its weight and bias, always.
                debug_assert_eq!(
                    layer.params.len(),
                    2,
                    "a bound dense layer has two parameters"
                );
                if let [w, b] = layer.params.as_slice() {
                    let mut out = buffer(w.value.nrows(), "output")?;
                    out.gemm(1.0, &w.value, cur.as_ref(), 0.0);
                    act.apply_with_bias(out.as_mut_slice(), b.value.as_slice());
                    cur = Cow::Owned(out);
                }
            }
            Op::Conv { geom, out_c } => {
                let act = fused();
                debug_assert!(!layer.params.is_empty(), "a bound convolution has a weight");
                if let Some(w) = layer.params.first() {
                    let bias = layer.params.get(1).map(|b| b.value.as_slice());
                    let out_len = out_c * geom.out_h * geom.out_w;
                    let patches = geom.out_h * geom.out_w;
                    // The output and the patches live together: both must fit. (An empty output
                    // needs no patches.)
                    let out_values = out_len as u128 * samples as u128;
                    let patch_values = patches as u128 * w.value.ncols() as u128;
                    let together = if out_values == 0 {
                        0
                    } else {
                        out_values + patch_values
                    };
                    if !crate::alloc::fits_in_memory(together) {
                        return Err(ShapeError::OutOfMemory {
                            what: format!(
                                "the output ({out_len} values × {samples} samples) and the patch buffer ({patches} × {} values) of layer {index} ({})",
                                w.value.ncols(),
                                layer.kind
                            ),
                            values: together,
                        });
                    }
                    let mut out = buffer(out_len, "output")?;
                    // An empty output (no samples, no channels) needs no patches.
                    if !out.is_empty() {
                        let work = try_zeros(patches, w.value.ncols(), || {
                            format!(
                                "the patch buffer of layer {index} ({}), {patches} × {} values",
                                layer.kind,
                                w.value.ncols()
                            )
                        })?;
                        let mut taps = kernels::Taps::new(&geom, work).ok_or_else(|| {
                            ShapeError::OutOfMemory {
                                what: format!(
                                    "the tap positions of layer {index} ({}), 2 × {} runs",
                                    layer.kind, geom.kernel
                                ),
                                values: 2 * geom.kernel as u128,
                            }
                        })?;
                        kernels::conv2d(
                            cur.as_ref(),
                            &w.value,
                            bias,
                            &geom,
                            act,
                            &mut out,
                            &mut taps,
                        );
                    }
                    cur = Cow::Owned(out);
                }
            }
            Op::MaxPool(geom) => {
                let mut out = buffer(geom.c * geom.out_h * geom.out_w, "output")?;
                kernels::max_pool(cur.as_ref(), &geom, &mut out);
                cur = Cow::Owned(out);
            }
            Op::AvgPool(geom) => {
                let mut out = buffer(geom.c * geom.out_h * geom.out_w, "output")?;
                kernels::avg_pool(cur.as_ref(), &geom, &mut out);
                cur = Cow::Owned(out);
            }
            Op::Flatten => {}
            Op::Act(a) => {
                let mut out = match cur {
                    Cow::Owned(m) => m,
                    Cow::Borrowed(m) => try_clone(m, || {
                        format!(
                            "the output of layer {index} ({}), {} values × {samples} samples",
                            layer.kind,
                            m.nrows()
                        )
                    })?,
                };
                a.apply(out.as_mut_slice());
                cur = Cow::Owned(out);
            }
        }
        i += 1;
    }
    match cur {
        Cow::Owned(m) => Ok(m),
        Cow::Borrowed(m) => try_clone(m, || {
            format!("the output, {} values × {samples} samples", m.nrows())
        }),
    }
}
