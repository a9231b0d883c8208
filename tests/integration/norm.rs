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
