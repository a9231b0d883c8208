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

/// Checks every size a run-time binding of `layers` to `input` features needs.
pub(crate) fn check(layers: &[&dyn Layer], input: usize) -> Result<(), ShapeError> {
    if input == 0 {
        return Err(ShapeError::ZeroInput);
    }
    let mut size = input;
    for (index, layer) in layers.iter().enumerate() {
        if let Some(expected) = layer.declared_input() {
            if expected != size {
                return Err(ShapeError::LayerInput {
                    layer: index,
                    kind: layer.kind(),
                    expected,
                    actual: size,
                });
            }
        }
        size = layer.output_size(Some(size)).unwrap_or(size);
    }
    Ok(())
}

/// Builds the bound layers for `input` features and initializes their parameters. The sizes
/// must have been checked, by the compiler or by [`check`].
pub(crate) fn build(
    layers: &[&dyn Layer],
    input: usize,
    init: &dyn Initializer,
    seed: u64,
) -> Vec<BoundLayer> {
    let mut size = input;
    let mut bound = Vec::with_capacity(layers.len());
    for (index, layer) in layers.iter().enumerate() {
        let output = layer.output_size(Some(size)).unwrap_or(size);
        let params = layer
            .param_shapes(Some(size))
            .into_iter()
            .map(|(role, shape)| {
                let shape: Vec<usize> = shape.0.iter().map(|d| d.unwrap_or(0)).collect();
                let rows = shape.first().copied().unwrap_or(1);
                let cols = shape.iter().skip(1).product();
                let name = role.param_name(index);
                Param {
                    name,
                    shape,
                    role,
                    fan_in: size,
                    fan_out: output,
                    value: DMatrix::zeros(rows, cols),
                }
            })
            .collect();
        bound.push(BoundLayer {
            kind: layer.kind(),
            output,
            op: layer.op(),
            params,
        });
        size = output;
    }
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
