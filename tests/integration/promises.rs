//! The promises where users reach, each a repro of a way they broke: a user's layer is
//! checked, not believed (its run-time rule against its compile-time half, a reshape or an
//! activation that changes the size, parameter sizes left unknown, no output shape); messages
//! name the cause; a crafted checkpoint or a huge learning rate cannot write a non-finite
//! weight; an error inside `fit` says where, with the history.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use lazynet::layer::{Activation, Fault, Kernel, Layer, Param, PartialShape};
use lazynet::nalgebra::DMatrix;
use lazynet::prelude::*;
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

use crate::strategies::snapshot;

/// What a [`Rogue`] layer's `output_shape` says of a known input.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Out {
    /// The input's shape (what `keeps_shape!` tells the compiler).
    Same,
    /// Twice as many values: `[n]` to `[2n]`.
    Twice,
    /// One more value: `[n]` to `[n + 1]`.
    PlusOne,
    /// `Ok(None)`: no shape at all.
    Nothing,
    /// A shape with an unknown size.
    Partial,
}

/// A layer that breaks one rule of the `Layer` trait, as a layer written outside the crate
/// may; `keeps_shape!` tells the compiler it keeps the shape.
#[derive(Clone, Copy, Debug)]
struct Rogue {
    out: Out,
    /// A parameter whose first size stays unknown after binding.
    unknown_param: bool,
    /// Its kernel says it is a reshape.
    reshape: bool,
    /// Its kernel says it is an activation.
    activation: bool,
    /// Its forward pass fails on this call (counting from 1), counted in `calls`.
    fail_on: Option<(usize, &'static AtomicUsize)>,
}

impl Rogue {
    const HONEST: Rogue = Rogue {
        out: Out::Same,
        unknown_param: false,
        reshape: false,
        activation: false,
        fail_on: None,
    };
}

impl Layer for Rogue {
    fn kind(&self) -> &'static str {
        "Rogue"
    }
    fn output_shape(&self, input: Option<&PartialShape>) -> Result<Option<PartialShape>, Fault> {
        let Some(n) = input.and_then(PartialShape::len) else {
            return Ok(input.cloned());
        };
        Ok(match self.out {
            Out::Same => input.cloned(),
            Out::Twice => Some(PartialShape(vec![Some(2 * n)])),
            Out::PlusOne => Some(PartialShape(vec![Some(n + 1)])),
            Out::Nothing => None,
            Out::Partial => Some(PartialShape(vec![None])),
        })
    }
    fn param_shapes(&self, _: Option<&PartialShape>) -> Vec<(Role, PartialShape)> {
        if self.unknown_param {
            vec![(Role::Named("scale"), PartialShape(vec![None, Some(3)]))]
        } else {
            Vec::new()
        }
    }
    fn kernel(&self, _: &[usize], _: &[usize]) -> Box<dyn Kernel> {
        Box::new(RogueKernel {
            reshape: self.reshape,
            activation: self.activation,
            fail_on: self.fail_on,
        })
    }
}

lazynet::keeps_shape!(Rogue);

#[derive(Debug)]
struct RogueKernel {
    reshape: bool,
    activation: bool,
    fail_on: Option<(usize, &'static AtomicUsize)>,
}

impl Kernel for RogueKernel {
    fn forward(
        &self,
        _: &[Param],
        x: &DMatrix<f32>,
        y: &mut DMatrix<f32>,
        _: Activation,
    ) -> Result<(), ShapeError> {
        if let Some((on, calls)) = self.fail_on {
            if calls.fetch_add(1, Ordering::SeqCst) + 1 == on {
                return Err(ShapeError::Contract {
                    what: "the rogue kernel".into(),
                    detail: format!("it fails on call {on}"),
                });
            }
        }
        // Copies what fits: a rogue layer's output may have another size.
        for (y, x) in y.iter_mut().zip(x.iter()) {
            *y = *x;
        }
        Ok(())
    }
    fn backward(
        &self,
        _: &[Param],
        _: &DMatrix<f32>,
        _: &DMatrix<f32>,
        dy: &DMatrix<f32>,
        _: &mut [DMatrix<f32>],
        dx: Option<&mut DMatrix<f32>>,
    ) -> Result<(), ShapeError> {
        if let Some(dx) = dx {
            for (d, g) in dx.iter_mut().zip(dy.iter()) {
                *d = *g;
            }
        }
        Ok(())
    }
    fn is_reshape(&self) -> bool {
        self.reshape
    }
    fn activation(&self) -> Option<Activation> {
        self.activation.then_some(Activation::Identity)
    }
}

/// The message of an error, or a note that there was none.
fn message<T, E: std::fmt::Display>(result: Result<T, E>) -> String {
    match result {
        Ok(_) => "no error".into(),
        Err(e) => e.to_string(),
    }
}

/// Item 2: a layer whose run-time rule turns `[n]` into `[2n]` while `keeps_shape!` told the
/// compiler `[n]`. Before: `bind::<U3>()` gave a net whose `forward` returned a `Batch<U3>`
/// of 6 rows and `predict` the first 3 values.
#[test]
fn a_layer_whose_two_halves_disagree_is_refused_at_binding() {
    let twice = Rogue {
        out: Out::Twice,
        ..Rogue::HONEST
    };
    let decl = Net::new().push(twice);
    let err = message(decl.try_bind(U3::default()));
    assert_eq!(
        err,
        "layer 0 (Rogue) broke its contract: its run-time rule (`Layer::output_shape`) gives output (6,) for input (3,), but its compile-time half (`LayerOn::Out`) told the compiler (3,)"
    );
    // `bind` cannot return it: it panics, naming the layer and both shapes, and hands out
    // no net.
    let bind = std::panic::AssertUnwindSafe(|| decl.clone().bind::<U3>());
    let panic = std::panic::catch_unwind(bind)
        .err()
        .and_then(|p| p.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    assert!(
        panic.contains("layer 0 (Rogue)") && panic.contains("(6,)") && panic.contains("(3,)"),
        "{panic}"
    );
    // With a declared dense layer after it, the rogue layer is named, not the dense one.
    let decl = Net::new().push(twice).push(Dense::<U2>::with_input::<U3>());
    assert!(message(decl.try_bind(U3::default())).starts_with("layer 0 (Rogue)"));
    // At run time the compiler knows no size, so the run-time rule decides: the dense layer
    // that declares 3 inputs receives 6.
    assert_eq!(
        message(decl.try_bind(3)),
        "layer 1 (Dense) declares 3 inputs but receives 6 from the layer before it"
    );
    // An honest layer binds both ways.
    let honest = Net::new().push(Rogue::HONEST).push(Dense::<U2>::new());
    assert!(honest.try_bind(U3::default()).is_ok() && honest.try_bind(3).is_ok());
}

/// Item 3: a kernel that says it is a reshape (which the net skips) on a layer whose output
/// size differs. Before: `output_dims()` said 4, `forward` returned 3 rows, and an Mse loss on
/// 4-wide targets returned `Ok(0.744)` from misaligned buffers.
#[test]
fn a_reshape_or_activation_that_changes_the_size_is_refused() {
    let fake = Rogue {
        out: Out::PlusOne,
        reshape: true,
        ..Rogue::HONEST
    };
    let err = message(Net::new().push(fake).push(Dense::<U2>::new()).try_bind(3));
    assert_eq!(
        err,
        "layer 0 (Rogue) broke its contract: its kernel says it is a reshape (`Kernel::is_reshape`), which the net skips, but its output (4,) holds 4 values and its input (3,) holds 3"
    );
    let fake = Rogue {
        out: Out::PlusOne,
        activation: true,
        ..Rogue::HONEST
    };
    let err = message(Net::new().push(fake).try_bind(3));
    assert!(
        err.contains("`Kernel::activation`") && err.contains("(4,)"),
        "{err}"
    );
    // A reshape that keeps the size is one: it binds and passes values through.
    let reshape = Rogue {
        reshape: true,
        ..Rogue::HONEST
    };
    assert!(Net::new().push(reshape).try_bind(3).is_ok());
}

/// Item 4: a parameter whose size is still unknown after binding. Before: a 1 × 1 scalar.
#[test]
fn a_parameter_of_unknown_size_after_binding_is_refused() {
    let rogue = Rogue {
        unknown_param: true,
        ..Rogue::HONEST
    };
    assert_eq!(
        message(Net::new().push(rogue).try_bind(3)),
        "layer 0 (Rogue) broke its contract: its parameter `0.scale` has shape (?, 3) for the known input (3,); once the input is known every size of a parameter must be"
    );
}

/// Item 5: `output_shape` of `Ok(None)` or of a partial shape for a known input. Before: "output
/// of shape () holds more values than one allocation can hold".
#[test]
fn no_output_shape_for_a_known_input_says_so() {
    for (out, says) in [
        (Out::Nothing, "gives no shape"),
        (Out::Partial, "gives (?,)"),
    ] {
        let rogue = Rogue {
            out,
            ..Rogue::HONEST
        };
        let err = message(Net::new().push(rogue).try_bind(3));
        assert!(
            err.starts_with("layer 0 (Rogue) broke its contract") && err.contains(says),
            "{err}"
        );
        assert!(!err.contains("allocation"), "{err}");
    }
}

/// Item 5: Nesterov momentum with a dampening blames the dampening. Before: the momentum (0.9).
#[test]
fn nesterov_with_dampening_blames_the_dampening() -> Result<(), Box<dyn std::error::Error>> {
    let mut net = Net::new().push(Dense::<U2>::new()).bind::<U3>();
    let x = Batch::<U3>::from_fn(2, |f, s| (f + s) as f32);
    let (_, grads) = net.loss_and_grads(&x, &Batch::<U2>::zeros(2), Mse)?;
    let before = snapshot(&net);
    let mut sgd = Sgd::new(0.1).momentum(0.9).nesterov(true).dampening(0.1);
    assert_eq!(
        message(sgd.step(&mut net, &grads)),
        "the SGD dampening for Nesterov must be 0, got 0.1"
    );
    let mut sgd = Sgd::new(0.1).nesterov(true);
    assert_eq!(
        message(sgd.step(&mut net, &grads)),
        "the SGD momentum for Nesterov must be above 0, got 0"
    );
    assert_eq!(snapshot(&net), before);
    Ok(())
}

/// A temporary file's path, removed when dropped.
struct TempPath(std::path::PathBuf);

impl TempPath {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("lazynet-promises-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        TempPath(dir.join(name))
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The net of the checkpoint tests, bound at run time.
type Small = Net<Init<Dyn>, lazynet::Layers![Dense<U2>]>;

/// A net of `inputs` inputs trained one Adam step, its optimizer and the step's gradients.
fn stepped(inputs: usize) -> Result<(Small, Adam, Grads), Box<dyn std::error::Error>> {
    let mut net = Net::new()
        .push(Dense::<U2>::new())
        .seed(5)
        .try_bind(inputs)?;
    let x = Batch::from_fn_dyn(inputs, 4, |f, s| (f + 2 * s) as f32 / 8.0);
    let labels = Labels::<U2>::try_new(vec![0, 1, 1, 0])?;
    let (_, grads) = net.loss_and_grads(&x, &labels, CrossEntropy)?;
    let mut adam = Adam::new(1e-2);
    adam.step(&mut net, &grads)?;
    Ok((net, adam, grads))
}

/// Item 5: a checkpoint of a 5-input net loaded into a 4-input net names the parameter, not
/// the optimizer's state of it. Before: `optim.0.weight.exp_avg`.
#[test]
fn a_checkpoint_of_another_net_names_the_parameter() -> Result<(), Box<dyn std::error::Error>> {
    let path = TempPath::new("five.safetensors");
    let (five, adam, _) = stepped(5)?;
    five.save_checkpoint(&path.0, &adam)?;
    let (mut four, mut adam4, _) = stepped(4)?;
    let before = snapshot(&four);
    let err = message(four.load_checkpoint(&path.0, &mut adam4));
    assert!(
        err.contains("`0.weight`") && !err.contains("optim."),
        "{err}"
    );
    assert_eq!(snapshot(&four), before);
    Ok(())
}

/// Item 5: `load_infer` of a net whose first layer has no parameters and changes the shape.
/// Before: `Ok` with the input size of the later layer's weight.
#[test]
fn load_infer_through_a_layer_that_changes_the_shape_is_refused(
) -> Result<(), Box<dyn std::error::Error>> {
    let path = TempPath::new("infer.safetensors");
    let twice = Rogue {
        out: Out::Twice,
        ..Rogue::HONEST
    };
    let decl = Net::new().push(twice).push(Dense::<U2>::new());
    let net = decl.try_bind(3)?;
    net.save(&path.0)?;
    assert_eq!(
        message(decl.load_infer(&path.0)),
        "tensor `1.weight` cannot give the net's input size: layer 0 (Rogue) before it changes the shape ((6,) to (12,)), so what reaches `1.weight` is not the input; bind with `try_bind` and then `load`"
    );
    // Through layers that keep the shape, the size is inferred.
    let decl = Net::new()
        .push(Relu)
        .push(Rogue::HONEST)
        .push(Dense::<U2>::new());
    decl.try_bind(3)?.save(&path.0)?;
    assert_eq!(decl.load_infer(&path.0)?.input(), Dyn(3));
    Ok(())
}

/// Rewrites the tensor `name` of a safetensors file through `f`, keeping the rest.
fn rewrite(
    path: &Path,
    name: &str,
    f: impl Fn(&mut [f32]),
) -> Result<(), Box<dyn std::error::Error>> {
    let bytes = std::fs::read(path)?;
    let file = SafeTensors::deserialize(&bytes)?;
    let (_, metadata) = SafeTensors::read_metadata(&bytes)?;
    let mut data: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (n, t) in file.tensors() {
        let mut raw = t.data().to_vec();
        if n == name {
            let mut values: Vec<f32> = raw
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            f(&mut values);
            raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        }
        data.push((n, t.shape().to_vec(), raw));
    }
    let views = data
        .iter()
        .map(|(n, shape, raw)| Ok((n.clone(), TensorView::new(Dtype::F32, shape.clone(), raw)?)))
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
    let metadata: Option<HashMap<String, String>> = metadata.metadata().clone();
    std::fs::write(path, safetensors::serialize(views, metadata)?)?;
    Ok(())
}

/// Item 6: a crafted checkpoint cannot poison the weights. Before: `exp_avg_sq = −1` or
/// `exp_avg = NaN` loaded `Ok`, and the next step wrote NaN into the weights.
#[test]
fn a_crafted_optimizer_state_is_refused_on_load() -> Result<(), Box<dyn std::error::Error>> {
    let path = TempPath::new("crafted.safetensors");
    let cases: [(&str, f32, &str); 4] = [
        ("optim.0.weight.exp_avg_sq", -1.0, "finite and at least 0"),
        ("optim.0.weight.exp_avg", f32::NAN, "holds NaN"),
        ("optim.0.bias.exp_avg_sq", f32::INFINITY, "holds inf"),
        ("optim.0.bias.exp_avg", f32::NEG_INFINITY, "holds -inf"),
    ];
    for (tensor, value, says) in cases {
        let (net, adam, grads) = stepped(3)?;
        net.save_checkpoint(&path.0, &adam)?;
        rewrite(&path.0, tensor, |v| v[1] = value)?;
        let (mut fresh, mut fresh_adam, _) = stepped(3)?;
        let before = snapshot(&fresh);
        let err = message(fresh.load_checkpoint(&path.0, &mut fresh_adam));
        assert!(
            err.contains(tensor) && err.contains(says) && err.contains("index 1"),
            "{err}"
        );
        assert_eq!(snapshot(&fresh), before);
        // The optimizer kept its own state: the next step is finite.
        fresh_adam.step(&mut fresh, &grads)?;
        assert!(fresh
            .named_params()
            .all(|(_, p)| p.iter().all(|v| v.is_finite())));
    }
    // A momentum buffer too.
    let (mut net, _, grads) = stepped(3)?;
    let mut sgd = Sgd::new(0.1).momentum(0.9);
    sgd.step(&mut net, &grads)?;
    net.save_checkpoint(&path.0, &sgd)?;
    rewrite(&path.0, "optim.0.weight.momentum_buffer", |v| {
        v[0] = f32::NAN
    })?;
    let err = message(net.load_checkpoint(&path.0, &mut Sgd::new(0.1).momentum(0.9)));
    assert!(
        err.contains("momentum_buffer") && err.contains("NaN"),
        "{err}"
    );
    Ok(())
}

/// Item 6: a step whose update would not be finite is refused and changes nothing. Before:
/// `Adam::new(3e38)` passed the hyper-parameter check and its first step wrote infinities.
#[test]
fn a_step_that_would_write_a_non_finite_value_is_refused() -> Result<(), Box<dyn std::error::Error>>
{
    let (mut net, _, grads) = stepped(3)?;
    for lr in [3e38, f64::from(f32::MAX)] {
        let before = snapshot(&net);
        let mut adam = Adam::new(lr);
        let err = adam.step(&mut net, &grads).err();
        assert!(
            matches!(&err, Some(TrainError::StepNotFinite { name }) if name == "0.weight"),
            "{err:?}"
        );
        assert_eq!(snapshot(&net), before);
        // The refused step left no state: the optimizer is as new.
        assert_eq!(adam.steps("0.weight"), 0);
    }
    // A gradient whose square overflows `f32`: Adam's second moment would be infinite (and
    // the weight would not move, so only the state shows it); SGD's step of 3e38 times it
    // would be infinite.
    let mut probe = Net::new().push(Dense::<U1>::new()).bind::<U1>();
    probe.set_param("0.weight", DMatrix::from_element(1, 1, 1.0))?;
    let x = Batch::<U1>::from_rows([1e12f32])?;
    let (_, g) = probe.loss_and_grads(&x, &Batch::<U1>::zeros(1), Mse)?;
    assert!(
        g.first_not_finite().is_none(),
        "the gradient itself is finite"
    );
    let before = snapshot(&probe);
    let err = Adam::new(1e-3).step(&mut probe, &g).err();
    assert!(
        matches!(err, Some(TrainError::StepNotFinite { .. })),
        "{err:?}"
    );
    let mut sgd = Sgd::new(3e38).momentum(0.5);
    assert!(matches!(
        sgd.step(&mut probe, &g),
        Err(TrainError::StepNotFinite { .. })
    ));
    assert_eq!(snapshot(&probe), before);
    // The same SGD on a small gradient takes its (huge, finite) step.
    Sgd::new(1.0).step(&mut probe, &g)?;
    // `eps` 0 with gradients of 0: 0 / 0.
    let mut flat = Net::new().push(Dense::<U1>::new()).bind::<U1>();
    flat.set_param("0.bias", DMatrix::zeros(1, 1))?;
    let x0 = Batch::<U1>::from_rows([0.0f32])?;
    let (_, g0) = flat.loss_and_grads(&x0, &Batch::<U1>::zeros(1), Mse)?;
    let err = Adam::new(1e-3).eps(0.0).step(&mut flat, &g0).err();
    assert!(
        matches!(err, Some(TrainError::StepNotFinite { .. })),
        "{err:?}"
    );
    // With the default eps the same step is taken.
    Adam::new(1e-3).step(&mut flat, &g0)?;
    Ok(())
}

static CALLS: AtomicUsize = AtomicUsize::new(0);

/// Item 7: a layer that fails inside `fit` (its sixth call, five epochs of two steps).
/// Before: a bare `TrainError::Shape`, without the epoch, the step or the history.
#[test]
fn an_error_inside_fit_says_where_with_the_history() -> Result<(), Box<dyn std::error::Error>> {
    let flaky = Rogue {
        fail_on: Some((6, &CALLS)),
        ..Rogue::HONEST
    };
    let mut net = Net::new()
        .push(flaky)
        .push(Dense::<U2>::new())
        .seed(1)
        .bind::<U3>();
    let x = Batch::<U3>::from_fn(8, |f, s| (f * s) as f32 / 24.0);
    let labels = Labels::<U2>::try_new(vec![0, 1, 0, 1, 1, 0, 1, 0])?;
    let fit = Fit::new(5).batch_size(4).quiet();
    let err = net
        .fit(&x, &labels, CrossEntropy, &mut Adam::new(1e-2), &fit)
        .err();
    match &err {
        Some(TrainError::Step {
            epoch: 3,
            step: 2,
            history,
            source,
        }) => {
            assert_eq!(history.epochs().len(), 2);
            assert!(source.to_string().contains("fails on call 6"), "{source}");
        }
        other => panic!("expected a step error at epoch 3, step 2: {other:?}"),
    }
    let text = err.map(|e| e.to_string()).unwrap_or_default();
    assert!(
        text.starts_with("epoch 3, step 2: the rogue kernel broke its contract"),
        "{text}"
    );
    Ok(())
}

/// A weight set by hand after some steps is not hidden by what the optimizer knew of the old
/// weights: a step that would overflow it is refused. And a step that cannot be proved finite
/// in advance (weights of 2e37, `eps` 0) but is, is taken.
#[test]
fn steps_after_a_weight_set_by_hand_are_checked_against_it(
) -> Result<(), Box<dyn std::error::Error>> {
    let (mut net, mut adam, grads) = stepped(3)?;
    // Steps that leave the weights small: the optimizers know it.
    adam.step(&mut net, &grads)?;
    let mut sgd = Sgd::new(0.1);
    sgd.step(&mut net, &grads)?;
    // Weights of `f32::MAX` set by hand, each against its gradient: a step of 1e36 times the
    // gradient overflows every one whose gradient is not 0.
    let g = grads.get("0.weight").ok_or("no gradient")?;
    assert!(g.iter().any(|&v| v != 0.0));
    net.set_param(
        "0.weight",
        g.map(|v| if v > 0.0 { -f32::MAX } else { f32::MAX }),
    )?;
    let before = snapshot(&net);
    let err = Sgd::new(1e36).step(&mut net, &grads).err();
    assert!(
        matches!(err, Some(TrainError::StepNotFinite { .. })),
        "{err:?}"
    );
    assert_eq!(snapshot(&net), before);
    // Weights of 2e37 and a small step: not provably finite in advance, but finite: taken.
    net.set_param("0.weight", DMatrix::from_element(2, 3, 2e37))?;
    sgd.step(&mut net, &grads)?;
    adam.step(&mut net, &grads)?;
    assert!(net
        .named_params()
        .all(|(_, p)| p.iter().all(|v| v.is_finite())));
    Ok(())
}
