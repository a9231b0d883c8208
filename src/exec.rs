//! The run-time core: checking, building and running a list of layers.
//!
//! None of this is generic over the net's type, so it is compiled once, however many nets a
//! program declares and however long they are: the types check the shapes, these loops do the
//! work.

use std::borrow::Cow;

use nalgebra::DMatrix;

use crate::error::ShapeError;
use crate::init::{InitRng, Initializer, ParamInfo};
use crate::layer::{Layer, Op};
use crate::state::{BoundLayer, Param};

/// One layer of a walk through a list: its index and the sizes around it, `None` where unknown.
pub(crate) struct Step<'a> {
    pub(crate) index: usize,
    pub(crate) layer: &'a dyn Layer,
    pub(crate) input: Option<usize>,
    pub(crate) output: Option<usize>,
}

/// Walks `layers` from an input size (`None` before binding), passing each layer's output to
/// the next. The one place that propagates sizes: checking, building and describing all use it.
pub(crate) fn walk<'a>(
    layers: &'a [&'a dyn Layer],
    input: Option<usize>,
) -> impl Iterator<Item = Step<'a>> + 'a {
    layers
        .iter()
        .enumerate()
        .scan(input, |size, (index, &layer)| {
            let input = *size;
            let output = layer.output_size(input);
            *size = output;
            Some(Step {
                index,
                layer,
                input,
                output,
            })
        })
}

/// Checks every size a run-time binding of `layers` to `input` features needs.
pub(crate) fn check(layers: &[&dyn Layer], input: usize) -> Result<(), ShapeError> {
    if input == 0 {
        return Err(ShapeError::ZeroInput);
    }
    for step in walk(layers, Some(input)) {
        if let (Some(expected), Some(actual)) = (step.layer.declared_input(), step.input) {
            if expected != actual {
                return Err(ShapeError::LayerInput {
                    layer: step.index,
                    kind: step.layer.kind(),
                    expected,
                    actual,
                });
            }
        }
    }
    Ok(())
}

/// Builds the bound layers for `input` features and initializes their parameters. The sizes
/// must have been checked, by the compiler or by [`check`]. From a known input every layer's
/// output is known (a [`Layer`] promises it), so the `0`s below are never used.
pub(crate) fn build(
    layers: &[&dyn Layer],
    input: usize,
    init: &dyn Initializer,
    seed: u64,
) -> Vec<BoundLayer> {
    let mut bound: Vec<BoundLayer> = walk(layers, Some(input))
        .map(|step| {
            let (fan_in, fan_out) = (step.input.unwrap_or(0), step.output.unwrap_or(0));
            let params = step
                .layer
                .param_shapes(step.input)
                .into_iter()
                .map(|(role, shape)| {
                    let shape: Vec<usize> = shape.0.iter().map(|d| d.unwrap_or(0)).collect();
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
                output: fan_out,
                op: step.layer.op(),
                params,
            }
        })
        .collect();
    initialize(&mut bound, init, seed);
    bound
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
/// A dense layer followed by an activation runs as one step: `W · X`, then bias and activation
/// in a single pass over the output.
pub(crate) fn forward(layers: &[BoundLayer], x: &DMatrix<f32>) -> DMatrix<f32> {
    let mut cur: Cow<'_, DMatrix<f32>> = Cow::Borrowed(x);
    let mut i = 0;
    while let Some(layer) = layers.get(i) {
        match layer.op {
            Op::Dense => {
                let act = match layers.get(i + 1).map(|l| l.op) {
                    Some(Op::Act(a)) => {
                        i += 1;
                        a
                    }
                    _ => crate::layer::Activation::Identity,
                };
                if let [w, b] = layer.params.as_slice() {
                    let mut out = &w.value * cur.as_ref();
                    act.apply_with_bias(out.as_mut_slice(), b.value.as_slice());
                    cur = Cow::Owned(out);
                }
            }
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
