//! Normalization and dropout agree with PyTorch (tests/fixtures/norm/make_norm_fixtures.py,
//! which documents the files), and the train/eval split follows from the call.

use lazynet::layer::{Activation, BufferValue};
use lazynet::nalgebra::DMatrix;
use lazynet::prelude::*;

use crate::train_fixtures::{loss_error, Fixture};

/// An output's or gradient's error, relative to its largest entry.
const TOL: f64 = 1e-5;

/// The issue's net: `Linear(5,8) ReLU Residual[Linear(8,8) ReLU Linear(8,8)] BatchNorm1d(8)
/// ReLU Dropout(p) Linear(8,3)`, bound to 5 inputs.
macro_rules! issue_net {
    ($p:expr) => {
        Net::new()
            .push(Dense::<U8>::new())
            .push(Relu)
            .push(Residual::new(
                Net::new()
                    .push(Dense::<U8>::new())
                    .push(Relu)
                    .push(Dense::<U8>::new()),
            ))
            .push(BatchNorm::new())
            .push(Relu)
            .push(Dropout::new($p).unwrap())
            .push(Dense::<U3>::new())
            .bind::<U5>()
    };
}

/// `max |actual − expected| / max(max |expected|, 0.01)` of a parameter-shaped matrix against
/// a row-major tensor. The floor keeps a gradient that is 0 in exact arithmetic (the bias of a
/// layer just before a batch normalization, whose mean it removes) from being held to a
/// relative precision float32 cannot give it.
fn error(what: &str, actual: &DMatrix<f32>, (expected, shape): &(Vec<f64>, Vec<usize>)) -> f64 {
    let (rows, cols) = actual.shape();
    assert_eq!(shape.first(), Some(&rows), "{what}: shape {shape:?}");
    assert_eq!(expected.len(), rows * cols, "{what}: shape {shape:?}");
    let mut diff = 0.0f64;
    let mut scale = 0.01f64;
    for r in 0..rows {
        for c in 0..cols {
            let e = expected[r * cols + c];
            diff = diff.max((f64::from(actual[(r, c)]) - e).abs());
            scale = scale.max(e.abs());
        }
    }
    diff / scale
}

fn batch(fixture: &Fixture) -> Batch<U5> {
    let x = fixture.f32s("x");
    Batch::<U5>::from_fn(x.len() / 5, |f, s| x[s * 5 + f])
}

fn buffer<'a, S: lazynet::Bound, L: lazynet::list::Layers>(
    net: &'a Net<S, L>,
    name: &str,
) -> &'a BufferValue {
    net.named_buffers()
        .find(|b| b.name() == name)
        .map(|b| b.value())
        .unwrap_or_else(|| panic!("no buffer {name}"))
}

#[test]
fn issue_net_matches_pytorch_in_both_modes() {
    let fixture = Fixture::read_from("norm", "issue_net.safetensors");
    let x = batch(&fixture);
    let labels = Labels::<U3>::try_new(fixture.labels()).unwrap();

    // Inference with dropout 0.5 uses the running statistics and no dropout.
    let mut eval_net = issue_net!(0.5);
    fixture.load_initial(&mut eval_net);
    assert_eq!(
        buffer(&eval_net, "3.num_batches_tracked"),
        &BufferValue::Count(7)
    );
    let y = eval_net.forward(&x);
    let err = error(
        "eval.y",
        &y.as_matrix().transpose(),
        &fixture.values("eval.y"),
    );
    assert!(err < TOL, "eval output: {err:.2e}");

    // Training with dropout 0: batch statistics, PyTorch's gradients.
    let mut net = issue_net!(0.0);
    fixture.load_initial(&mut net);
    let before = net.clone();
    let (loss, grads) = net.loss_and_grads(&x, &labels, CrossEntropy).unwrap();
    loss_error("loss", loss, fixture.values("loss").0[0]);
    for name in fixture.grad_names() {
        let g = grads
            .get(&name)
            .unwrap_or_else(|| panic!("no gradient {name}"));
        let err = error(&name, g, &fixture.values(&format!("grad.{name}")));
        assert!(err < 1e-4, "{name}: {err:.2e}");
    }
    assert_eq!(grads.len(), fixture.grad_names().len());
    // The pass changed nothing.
    assert_eq!(
        net.named_buffers().collect::<Vec<_>>(),
        before.named_buffers().collect::<Vec<_>>()
    );

    // A step (of rate 0, which PyTorch accepts) writes the running statistics once.
    Sgd::new(0.0).step(&mut net, &grads).unwrap();
    for stat in ["running_mean", "running_var"] {
        let name = format!("3.{stat}");
        let BufferValue::Values(v) = buffer(&net, &name) else {
            panic!("{name} is not values");
        };
        let err = error(&name, v, &fixture.values(&format!("after.{name}")));
        assert!(err < 1e-6, "{name}: {err:.2e}");
    }
    assert_eq!(
        buffer(&net, "3.num_batches_tracked"),
        &BufferValue::Count(8)
    );
    let params: Vec<&DMatrix<f32>> = net.named_params().map(|(_, v)| v).collect();
    let old: Vec<&DMatrix<f32>> = before.named_params().map(|(_, v)| v).collect();
    assert_eq!(params, old, "a step of rate 0 moves no parameter");
}

/// torchvision's basic block: `relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))`, with
/// `C` channels; `down` makes its first convolution strided and its shortcut a strided 1×1
/// convolution and a batch normalization (`downsample.0`, `downsample.1`).
macro_rules! basic_block {
    ($c:ty) => {
        Residual::new(
            Net::new()
                .push(Conv2d::<$c, U3>::new().padding::<U1>().without_bias())
                .push(BatchNorm::new())
                .push(Relu)
                .push(Conv2d::<$c, U3>::new().padding::<U1>().without_bias())
                .push(BatchNorm::new()),
        )
        .names(["conv1", "bn1", "relu", "conv2", "bn2"])
        .then(Activation::Relu)
    };
    ($c:ty, down) => {
        Residual::with_projection(
            Net::new()
                .push(
                    Conv2d::<$c, U3>::new()
                        .stride::<U2>()
                        .padding::<U1>()
                        .without_bias(),
                )
                .push(BatchNorm::new())
                .push(Relu)
                .push(Conv2d::<$c, U3>::new().padding::<U1>().without_bias())
                .push(BatchNorm::new()),
            Net::new()
                .push(Conv2d::<$c, U1>::new().stride::<U2>().without_bias())
                .push(BatchNorm::new()),
        )
        .names(["conv1", "bn1", "relu", "conv2", "bn2"])
        .then(Activation::Relu)
    };
}

/// A net of ResNet-18's shape and torchvision's names, 8 times narrower, on 3×64×64 images.
#[test]
fn a_narrow_resnet18_from_a_torchvision_state_dict_gives_pytorchs_logits() {
    let fixture = Fixture::read_from("norm", "mini_resnet.safetensors");
    let mut net = Net::new()
        .push(
            Conv2d::<U8, U7>::new()
                .stride::<U2>()
                .padding::<U3>()
                .without_bias(),
        )
        .push(BatchNorm::new())
        .push(Relu)
        .push(MaxPool2d::<U3>::new().stride::<U2>().padding::<U1>())
        .push(Sequential::new(
            Net::new().push(basic_block!(U8)).push(basic_block!(U8)),
        ))
        .push(Sequential::new(
            Net::new()
                .push(basic_block!(U16, down))
                .push(basic_block!(U16)),
        ))
        .push(Sequential::new(
            Net::new()
                .push(basic_block!(U32, down))
                .push(basic_block!(U32)),
        ))
        .push(Sequential::new(
            Net::new()
                .push(basic_block!(U64, down))
                .push(basic_block!(U64)),
        ))
        .push(AvgPool2d::<U2>::new())
        .push(Flatten)
        .push(Dense::<U10>::new())
        .names([
            "conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool",
            "flatten", "fc",
        ])
        .bind::<Image<U3, U64, U64>>();
    // The fixture holds 178,582 values: these and 1,220 buffer values (running statistics of
    // 600 channels, and 20 counts).
    assert_eq!(net.param_count(), 177_362);
    fixture.load_initial(&mut net);
    let names: Vec<&str> = net.named_buffers().map(|b| b.name()).collect();
    assert!(
        names.contains(&"layer2.0.downsample.1.running_var"),
        "{names:?}"
    );
    let x = fixture.f32s("x");
    let per = 3 * 64 * 64;
    let batch = Batch::<Image<U3, U64, U64>>::from_fn(x.len() / per, |f, s| x[s * per + f]);
    let y = net.forward(&batch);
    let err = error("y", &y.as_matrix().transpose(), &fixture.values("y"));
    assert!(err < 1e-5, "logits: {err:.2e}");
}

/// A small net with every new layer: BatchNorm on an image and on a flat input, LayerNorm,
/// Dropout.
macro_rules! mixed_net {
    ($p:expr) => {
        Net::new()
            .push(Conv2d::<U3, U3>::new().padding::<U1>())
            .push(BatchNorm::new())
            .push(Relu)
            .push(Flatten)
            .push(Dense::<U6>::new())
            .push(BatchNorm::new())
            .push(Relu)
            .push(Dropout::new($p).unwrap())
            .push(Dense::<U5>::new())
            .push(LayerNorm::new())
            .push(Dense::<U3>::new())
            .seed(11)
            .bind::<Image<U2, U4, U4>>()
    };
}

fn images(samples: usize) -> Batch<Image<U2, U4, U4>> {
    Batch::from_fn(samples, |f, s| ((f * 7 + s * 13) % 11) as f32 / 5.0 - 1.0)
}

fn labels(samples: usize) -> Labels<U3> {
    Labels::try_new((0..samples).map(|s| s % 3).collect()).unwrap()
}

/// Every parameter and every buffer, named.
type State = (Vec<(String, DMatrix<f32>)>, Vec<(String, BufferValue)>);

/// Every parameter and buffer, to compare two nets bit for bit.
fn state<S: lazynet::Bound, L: lazynet::list::Layers>(net: &Net<S, L>) -> State {
    (
        net.named_params()
            .map(|(n, v)| (n.to_owned(), v.clone()))
            .collect(),
        net.named_buffers()
            .map(|b| (b.name().to_owned(), b.value().clone()))
            .collect(),
    )
}

#[test]
fn inference_and_training_passes_never_change_the_net() {
    let net = mixed_net!(0.5);
    let before = state(&net);
    let x = images(6);
    let y = net.forward(&x);
    assert_eq!(net.try_forward(&x).unwrap(), y);
    let first = x.sample(0).unwrap().iter().copied();
    let first: GenericArray<f32, U32> = GenericArray::try_from_iter(first).unwrap();
    assert_eq!(net.predict(&first).as_slice(), y.sample(0).unwrap());
    net.evaluate(&x, &labels(6), CrossEntropy).unwrap();
    net.predict_classes(&x).unwrap();
    net.loss_and_grads(&x, &labels(6), CrossEntropy).unwrap();
    assert_eq!(state(&net), before);
    // Inference is deterministic and uses no batch statistics: one sample alone gives what
    // it gives in a batch.
    let one = net.forward(&images(1));
    assert_eq!(one.as_matrix().column(0), y.as_matrix().column(0));
}

#[test]
fn each_optimizer_step_writes_the_running_statistics_once() {
    let mut net = mixed_net!(0.0);
    let x = images(8);
    let (_, grads) = net.loss_and_grads(&x, &labels(8), CrossEntropy).unwrap();
    let mut adam = Adam::new(1e-3);
    adam.step(&mut net, &grads).unwrap();
    let counts: Vec<&BufferValue> = net
        .named_buffers()
        .filter(|b| b.name().ends_with("num_batches_tracked"))
        .map(|b| b.value())
        .collect();
    assert_eq!(counts, [&BufferValue::Count(1), &BufferValue::Count(1)]);
    // Running means moved from 0 towards the batch's.
    let mean = net
        .named_buffers()
        .find(|b| b.name() == "1.running_mean")
        .unwrap();
    assert!(mean.values().unwrap().iter().any(|v| *v != 0.0));

    // `fit` steps once per batch: 3 epochs of 2 batches.
    let mut net = mixed_net!(0.2);
    let fit = Fit::new(3).batch_size(4).quiet();
    net.fit(&x, &labels(8), CrossEntropy, &mut Adam::new(1e-3), &fit)
        .unwrap();
    let count = net
        .named_buffers()
        .find(|b| b.name() == "5.num_batches_tracked")
        .unwrap();
    assert_eq!(count.count(), Some(6));
}

#[test]
fn a_refused_step_changes_no_parameter_and_no_buffer() {
    let mut net = mixed_net!(0.0);
    let x = images(8);
    let (_, grads) = net.loss_and_grads(&x, &labels(8), CrossEntropy).unwrap();
    let before = state(&net);
    // A learning rate the optimizer refuses.
    let err = Sgd::new(-1.0).step(&mut net, &grads).unwrap_err();
    assert!(matches!(err, TrainError::Hyper { .. }), "{err}");
    assert_eq!(state(&net), before);
    // A batch whose input is NaN gives NaN gradients: refused too.
    let nan = Batch::<Image<U2, U4, U4>>::from_fn(8, |_, _| f32::NAN);
    let (_, grads) = net.loss_and_grads(&nan, &labels(8), CrossEntropy).unwrap();
    let err = Adam::new(1e-3).step(&mut net, &grads).unwrap_err();
    assert!(matches!(err, TrainError::GradientNotFinite { .. }), "{err}");
    assert_eq!(state(&net), before);
}

#[test]
fn dropout_is_reproducible_bit_for_bit_and_draws_a_new_mask_each_step() {
    let x = images(8);
    let run = || {
        let mut net = mixed_net!(0.5);
        let fit = Fit::new(4).batch_size(4).quiet();
        net.fit(&x, &labels(8), CrossEntropy, &mut Adam::new(1e-2), &fit)
            .unwrap();
        state(&net)
    };
    assert_eq!(run(), run());

    // One step of rate 0 changes no parameter but the step count: the next pass draws
    // another mask, so another loss.
    let mut net = mixed_net!(0.5);
    let (a, grads) = net.loss_and_grads(&x, &labels(8), CrossEntropy).unwrap();
    let (again, _) = net.loss_and_grads(&x, &labels(8), CrossEntropy).unwrap();
    assert_eq!(a.to_bits(), again.to_bits(), "one step, one mask");
    Sgd::new(0.0).step(&mut net, &grads).unwrap();
    let (b, _) = net.loss_and_grads(&x, &labels(8), CrossEntropy).unwrap();
    assert_ne!(a, b);
}

#[test]
fn dropout_probability_outside_zero_to_one_is_an_error() {
    for p in [1.0, 1.5, -0.1, f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let err = Dropout::new(p).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("Dropout: p must be in [0, 1), got {p}")
        );
    }
    assert_eq!(Dropout::new(0.0).unwrap().p(), 0.0);
    assert!(Dropout::new(0.999).is_ok());
}

#[test]
fn a_training_batch_of_one_value_per_feature_is_an_error_not_a_nan() {
    let net = issue_net!(0.0);
    let x = Batch::<U5>::from_fn(1, |f, _| f as f32);
    let err = net
        .loss_and_grads(&x, &Labels::<U3>::try_new(vec![1]).unwrap(), CrossEntropy)
        .unwrap_err();
    assert!(
        matches!(err, ShapeError::BatchTooSmall { values: 1, .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().starts_with(
            "layer 3 (BatchNorm): a training pass needs more than 1 value per feature"
        ),
        "{err}"
    );
    // Inference on one sample is fine.
    assert_eq!(net.forward(&x).samples(), 1);
}

/// Writes tensors to safetensors bytes: `(name, dtype, shape, little-endian bytes)`.
fn file(tensors: &[(&str, safetensors::Dtype, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
    let views: Vec<(&str, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(n, d, s, b)| {
            (
                *n,
                safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize(views, None).unwrap()
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

#[test]
fn bad_running_statistics_are_refused_and_nothing_is_loaded() {
    use safetensors::Dtype::{F32, I64};
    let net = Net::new()
        .push(Dense::<U2>::new())
        .push(BatchNorm::new())
        .bind::<U2>();
    let good = |var: Vec<f32>, count: (safetensors::Dtype, Vec<usize>, Vec<u8>)| {
        file(&[
            (
                "0.weight",
                F32,
                vec![2, 2],
                f32_bytes(&[1.0, 2.0, 3.0, 4.0]),
            ),
            ("0.bias", F32, vec![2], f32_bytes(&[5.0, 6.0])),
            ("1.weight", F32, vec![2], f32_bytes(&[1.5, 2.5])),
            ("1.bias", F32, vec![2], f32_bytes(&[0.5, 0.25])),
            ("1.running_mean", F32, vec![2], f32_bytes(&[0.1, 0.2])),
            ("1.running_var", F32, vec![var.len()], f32_bytes(&var)),
            ("1.num_batches_tracked", count.0, count.1, count.2),
        ])
    };
    let count = |c: i64| (I64, vec![], c.to_le_bytes().to_vec());
    let before = state(&net);
    let cases = [
        (good(vec![1.0, 2.0, 3.0], count(3)), "tensor `1.running_var`: expected shape (2,), found (3,)"),
        (good(vec![1.0, -2.0], count(3)), "tensor `1.running_var`: every value must be at least 0 (a variance), but flat index 1 holds -2"),
        (good(vec![f32::NAN, 2.0], count(3)), "tensor `1.running_var`: every value must be at least 0 (a variance), but flat index 0 holds NaN"),
        (good(vec![1.0, 2.0], count(-1)), "tensor `1.num_batches_tracked`: a count is a whole number from 0 up, -1 was found"),
        (good(vec![1.0, 2.0], (F32, vec![], f32_bytes(&[3.0]))), "tensor `1.num_batches_tracked` is a count and must be I64"),
        (good(vec![1.0, 2.0], (I64, vec![1], 3i64.to_le_bytes().to_vec())), "tensor `1.num_batches_tracked`: expected 0 dimensions"),
    ];
    for (bytes, message) in cases {
        let mut copy = net.clone();
        let err = copy.load_from_bytes(&bytes).unwrap_err();
        assert!(
            err.to_string().starts_with(message),
            "{err}\nexpected: {message}"
        );
        assert_eq!(state(&copy), before, "{message}: nothing is loaded");
    }
    // The good file loads, and saving writes the count back as int64.
    let mut copy = net.clone();
    copy.load_from_bytes(&good(vec![1.0, 2.0], count(3)))
        .unwrap();
    let saved = copy.save_to_bytes().unwrap();
    let weights = Weights::from_bytes(&saved).unwrap();
    let count_tensor = weights.get("1.num_batches_tracked").unwrap();
    assert_eq!(
        (count_tensor.dtype().as_str(), count_tensor.shape()),
        ("I64", &[][..])
    );
    let mut again = net.clone();
    again.load_from_bytes(&saved).unwrap();
    assert_eq!(state(&again), state(&copy));
    // A file without the running statistics is missing them.
    let err = net
        .clone()
        .load_from_bytes(&file(&[
            (
                "0.weight",
                F32,
                vec![2, 2],
                f32_bytes(&[1.0, 2.0, 3.0, 4.0]),
            ),
            ("0.bias", F32, vec![2], f32_bytes(&[5.0, 6.0])),
            ("1.weight", F32, vec![2], f32_bytes(&[1.5, 2.5])),
            ("1.bias", F32, vec![2], f32_bytes(&[0.5, 0.25])),
        ]))
        .unwrap_err();
    assert!(
        err.to_string().contains("no tensor `1.running_mean`"),
        "{err}"
    );
}

#[test]
fn buffers_are_not_parameters_and_start_at_pytorchs_values() {
    let mut net = Net::new()
        .push(Dense::<U3>::new())
        .push(BatchNorm::new())
        .initialize(Constant(7.0))
        .bind::<U2>();
    let names: Vec<&str> = net.named_params().map(|(n, _)| n).collect();
    assert_eq!(names, ["0.weight", "0.bias", "1.weight", "1.bias"]);
    // The initializer draws the dense layer's parameters only.
    let values: Vec<f32> = net.named_params().map(|(_, v)| v[0]).collect();
    assert_eq!(values, [7.0, 7.0, 1.0, 0.0]);
    let buffers: Vec<(&str, &BufferValue)> =
        net.named_buffers().map(|b| (b.name(), b.value())).collect();
    assert_eq!(
        buffers[0],
        ("1.running_mean", &BufferValue::Values(DMatrix::zeros(3, 1)))
    );
    assert_eq!(
        buffers[1],
        (
            "1.running_var",
            &BufferValue::Values(DMatrix::from_element(3, 1, 1.0))
        )
    );
    assert_eq!(
        buffers[2],
        ("1.num_batches_tracked", &BufferValue::Count(0))
    );
    // The gradients list parameters only.
    let x = Batch::<U2>::from_fn(4, |f, s| (f + s) as f32);
    let (_, grads) = net.loss_and_grads(&x, &Batch::<U3>::zeros(4), Mse).unwrap();
    assert_eq!(grads.len(), 4);
    // `reinitialize` sets the buffers back too, as PyTorch's `reset_parameters`.
    Adam::new(0.1).step(&mut net, &grads).unwrap();
    net.reinitialize(Constant(2.0)).unwrap();
    let buffers: Vec<&BufferValue> = net.named_buffers().map(|b| b.value()).collect();
    assert_eq!(buffers[2], &BufferValue::Count(0));
}

#[test]
fn a_checkpoint_keeps_running_statistics_and_the_dropout_stream() {
    let x = images(8);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ck.safetensors");
    let fit = Fit::new(2).batch_size(4).quiet();
    let mut a = mixed_net!(0.5);
    let mut adam = Adam::new(1e-2);
    a.fit(&x, &labels(8), CrossEntropy, &mut adam, &fit)
        .unwrap();
    a.save_checkpoint(&path, &adam).unwrap();
    a.fit(&x, &labels(8), CrossEntropy, &mut adam, &fit)
        .unwrap();

    let mut b = mixed_net!(0.5);
    let mut adam_b = Adam::new(1e-2);
    b.load_checkpoint(&path, &mut adam_b).unwrap();
    b.fit(&x, &labels(8), CrossEntropy, &mut adam_b, &fit)
        .unwrap();
    assert_eq!(state(&a), state(&b));
}

#[test]
fn early_stopping_restores_the_best_epochs_running_statistics_too() {
    let (x, vx, vl) = (images(16), images(6), labels(6));
    let stop = EarlyStopping::new(Monitor::ValLoss)
        .patience(2)
        .restore_best_weights(true);
    let fit = Fit::new(60)
        .batch_size(4)
        .quiet()
        .validation(&vx, &vl)
        .early_stopping(stop);
    let mut net = mixed_net!(0.0);
    // A rate so large that the validation loss soon stops improving.
    let history = net
        .fit(&x, &labels(16), CrossEntropy, &mut Adam::new(0.3), &fit)
        .unwrap();
    assert!(history.restored_best() && history.stopped_early().is_some());
    let best = history.best().unwrap();
    // Inference reads the running statistics: the best epoch's validation loss comes back only
    // with the best epoch's statistics.
    let (val_loss, _) = net.evaluate(&vx, &vl, CrossEntropy).unwrap();
    assert_eq!(Some(val_loss), best.val_loss);
    let count = net
        .named_buffers()
        .find(|b| b.name() == "1.num_batches_tracked")
        .unwrap();
    assert_eq!(count.count(), Some(4 * best.epoch as i64));
}
