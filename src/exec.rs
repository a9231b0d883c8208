//! The run-time core: checking, building and running a list of layers.
//!
//! None of this is generic over the net's type, so it is compiled once, however many nets a
//! program declares and however long they are: the types check the shapes, these loops do the
//! work.

use std::borrow::Cow;

use nalgebra::DMatrix;

use crate::error::ShapeError;
use crate::init::{InitRng, Initializer, ParamInfo};
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

use crate::alloc::MAX_VALUES;

/// Checks every shape a run-time binding of `layers` to `input` needs: each layer accepts what
/// reaches it, and its parameters, input and output can be allocated (so no size computed from
/// them overflows).
pub(crate) fn check(layers: &[&dyn Layer], input: &[usize]) -> Result<(), ShapeError> {
    if input.contains(&0) {
        return Err(ShapeError::ZeroInput);
    }
    for step in walk(layers, Some(PartialShape::from_dims(input))) {
        let at = |fault: Fault| fault.at(step.index, step.layer.kind());
        let output = step.output.clone().map_err(at)?;
        let shapes = step.layer.param_shapes(step.input.as_ref());
        let tensors = shapes
            .iter()
            .map(|(_, shape)| shape)
            .chain(step.input.as_ref())
            .chain(output.as_ref());
        for shape in tensors {
            let dims = shape.or_zero();
            let values = dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
            if values.is_none_or(|n| n > MAX_VALUES) {
                return Err(ShapeError::TooLarge {
                    layer: step.index,
                    kind: step.layer.kind(),
                    tensor: "a tensor".to_string(),
                    shape: dims,
                });
            }
        }
    }
    Ok(())
}

/// Builds the bound layers for an input of shape `input`, with every parameter 0 (the caller
/// initializes them or loads them). The shapes must have been checked, by the compiler or by
/// [`check`]. From a known input every layer's output is known (a [`Layer`] promises it), so
/// the `0`s below are never used.
pub(crate) fn build(layers: &[&dyn Layer], input: &[usize]) -> Vec<BoundLayer> {
    let known = |shape: Option<&PartialShape>| -> Vec<usize> {
        shape.map_or_else(Vec::new, PartialShape::or_zero)
    };
    walk(layers, Some(PartialShape::from_dims(input)))
        .map(|step| {
            let input = known(step.input.as_ref());
            let output = known(step.output.as_ref().ok().and_then(Option::as_ref));
            let shapes: Vec<_> = step
                .layer
                .param_shapes(step.input.as_ref())
                .into_iter()
                .map(|(role, shape)| (role, known(Some(&shape))))
                .collect();
            // PyTorch's fans, read from the weight (the first parameter): a dense `[out, in]`
            // has fan-in `in`; a convolution `[out, in, k, k]` has `in·k·k`. A bias shares them.
            let (fan_in, fan_out) = shapes.first().map_or((0, 0), |(_, w)| {
                let field: usize = w.iter().skip(2).product();
                let (out, inp) = (w.first().copied(), w.get(1).copied());
                (
                    inp.unwrap_or(0).saturating_mul(field),
                    out.unwrap_or(0).saturating_mul(field),
                )
            });
            let params = shapes
                .into_iter()
                .map(|(role, shape)| {
                    let rows = shape.first().copied().unwrap_or(1);
                    let cols = shape.iter().skip(1).product();
                    Param {
                        name: role.param_name(step.index),
                        shape,
                        role,
                        fan_in,
                        fan_out,
                        value: DMatrix::zeros(rows, cols),
                    }
                })
                .collect();
            BoundLayer {
                kind: step.layer.kind(),
                op: step.layer.op(&input),
                output,
                params,
            }
        })
        .collect()
}

/// Runs `init` over every parameter, in order.
pub(crate) fn initialize(layers: &mut [BoundLayer], init: &dyn Initializer, seed: u64) {
    for p in layers.iter_mut().flat_map(|l| l.params.iter_mut()) {
        let info = ParamInfo::new(&p.name, &p.shape, p.role, p.fan_in, p.fan_out);
        init.init(
            &info,
            &mut InitRng::new(seed, &p.name),
            p.value.as_mut_slice(),
        );
    }
}

/// Runs the bound layers on a `features × samples` matrix whose row count was checked.
///
/// A dense or convolution layer followed by an activation runs as one step: the product, then
/// bias and activation in a single pass over the output.
pub(crate) fn forward(layers: &[BoundLayer], x: &DMatrix<f32>) -> DMatrix<f32> {
    let mut cur: Cow<'_, DMatrix<f32>> = Cow::Borrowed(x);
    let mut i = 0;
    while let Some(layer) = layers.get(i) {
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
                if let [w, b] = layer.params.as_slice() {
                    let mut out = &w.value * cur.as_ref();
                    act.apply_with_bias(out.as_mut_slice(), b.value.as_slice());
                    cur = Cow::Owned(out);
                }
            }
            Op::Conv { geom, out_c } => {
                let act = fused();
                if let Some(w) = layer.params.first() {
                    let bias = layer.params.get(1).map(|b| b.value.as_slice());
                    let y = kernels::conv2d(cur.as_ref(), &w.value, bias, &geom, out_c, act);
                    cur = Cow::Owned(y);
                }
            }
            Op::MaxPool(geom) => cur = Cow::Owned(kernels::max_pool(cur.as_ref(), &geom)),
            Op::AvgPool(geom) => cur = Cow::Owned(kernels::avg_pool(cur.as_ref(), &geom)),
            Op::Flatten => {}
            Op::Act(a) => {
                let mut out = cur.into_owned();
                a.apply(out.as_mut_slice());
                cur = Cow::Owned(out);
            }
        }
        i += 1;
    }
    cur.into_owned()
}
