//! Training agrees with an independent implementation: numpy by hand, with PyTorch's
//! definitions of the layers, `nn.CrossEntropyLoss`, `nn.MSELoss`, `torch.optim.Adam` and
//! `torch.optim.SGD`, in float64 (tests/fixtures/train/make_train_fixtures.py, which
//! documents the files).
//!
//! For each of three nets (a ReLU MLP with cross-entropy, a tanh/sigmoid MLP with MSE, a CNN
//! with convolution hyper-parameters and both poolings) lazynet loads the fixture's initial
//! weights and must reproduce:
//! * the loss, to a relative error of [`LOSS_TOL`];
//! * every gradient, to [`GRAD_TOL`];
//! * every parameter after 3 Adam steps and after 3 SGD steps from the initial weights (the
//!   gradient recomputed before each step, the loss before each step checked too), to
//!   [`STEP_TOL`], and its move by those steps (after − before) to [`MOVE_TOL`].
//!
//! A tensor's error is `max |lazynet − numpy| / max |numpy|` over its entries: the largest
//! difference relative to the tensor's largest magnitude, so entries near 0 are not held to a
//! relative precision float32 cannot give them. (The errors seen are below 1e-6 for the
//! values and 3e-6 for the moves: float32 rounding.)
//!
//! The fixtures' max-pooling windows have no near ties among positive values, so PyTorch's
//! tie rule (the first maximum takes the gradient) is not exercised here; the rest of the
//! script's definitions are.

use std::path::Path;

use lazynet::list::Layers;
use lazynet::nalgebra::DMatrix;
use lazynet::prelude::*;
use lazynet::Bound;
use safetensors::tensor::Dtype;
use safetensors::SafeTensors;

/// The loss's relative error.
const LOSS_TOL: f64 = 1e-5;
/// A gradient's error, relative to its largest entry.
const GRAD_TOL: f64 = 1e-4;
/// A parameter's error after the optimizer's steps, relative to its largest entry.
const STEP_TOL: f64 = 2e-4;
/// The move of a parameter by the optimizer's steps (after − before), relative to its largest
/// entry: a finer check of the optimizer, whose steps are small next to the weights.
const MOVE_TOL: f64 = 1e-3;
/// The optimizer steps each fixture holds the result of.
const STEPS: usize = 3;

/// A fixture file of tests/fixtures/train (or another directory of tests/fixtures).
pub(crate) struct Fixture {
    name: &'static str,
    bytes: Vec<u8>,
}

impl Fixture {
    fn read(name: &'static str) -> Self {
        Self::read_from("train", name)
    }

    /// The fixture `name` of tests/fixtures/`dir`.
    pub(crate) fn read_from(dir: &str, name: &'static str) -> Self {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(dir)
            .join(name);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Fixture { name, bytes }
    }

    pub(crate) fn tensors(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).expect("a valid safetensors fixture")
    }

    /// The values of tensor `name` (`F32` or `F64`) in the file's row-major order, and its
    /// shape.
    pub(crate) fn values(&self, name: &str) -> (Vec<f64>, Vec<usize>) {
        let tensors = self.tensors();
        let t = tensors
            .tensor(name)
            .unwrap_or_else(|e| panic!("{}: `{name}`: {e}", self.name));
        let values = match t.dtype() {
            Dtype::F64 => t
                .data()
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
                .collect(),
            Dtype::F32 => t
                .data()
                .chunks_exact(4)
                .map(|b| f64::from(f32::from_le_bytes(b.try_into().unwrap())))
                .collect(),
            other => panic!("{}: `{name}` is {other:?}", self.name),
        };
        (values, t.shape().to_vec())
    }

    /// The `F32` tensor `name`, exactly, in row-major order: an input or targets.
    pub(crate) fn f32s(&self, name: &str) -> Vec<f32> {
        let tensors = self.tensors();
        let t = tensors.tensor(name).unwrap();
        assert_eq!(t.dtype(), Dtype::F32, "{}: `{name}`", self.name);
        t.data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect()
    }

    /// The `I64` tensor `labels`.
    pub(crate) fn labels(&self) -> Vec<usize> {
        let tensors = self.tensors();
        let t = tensors.tensor("labels").unwrap();
        assert_eq!(t.dtype(), Dtype::I64, "{}: labels", self.name);
        t.data()
            .chunks_exact(8)
            .map(|b| usize::try_from(i64::from_le_bytes(b.try_into().unwrap())).unwrap())
            .collect()
    }

    /// Loads the initial parameters into `net`; the file's other tensors (inputs, expected
    /// results) are not parameters and are skipped.
    pub(crate) fn load_initial<S: Bound, L: Layers>(&self, net: &mut Net<S, L>) {
        let weights = Weights::from_bytes(&self.bytes).unwrap();
        net.load_weights(&weights, LoadOptions::new().allow_unexpected(true))
            .unwrap_or_else(|e| panic!("{}: {e}", self.name));
    }

    /// The names of the gradients the file holds, without their `grad.` prefix, sorted.
    pub(crate) fn grad_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .tensors()
            .names()
            .into_iter()
            .filter_map(|n| n.strip_prefix("grad.").map(str::to_owned))
            .collect();
        names.sort_unstable();
        names
    }
}

/// `max |actual − expected| / max |expected|` of a parameter-shaped matrix against a
/// row-major tensor: a weight of shape `[out, in]` or `[out, in, k, k]` is lazynet's `out ×
/// (in·k·k)` matrix, a bias of shape `[out]` its `out × 1` column.
pub(crate) fn error(
    what: &str,
    actual: &DMatrix<f32>,
    (expected, shape): &(Vec<f64>, Vec<usize>),
) -> f64 {
    let (rows, cols) = actual.shape();
    assert_eq!(shape.first(), Some(&rows), "{what}: shape {shape:?}");
    assert_eq!(expected.len(), rows * cols, "{what}: shape {shape:?}");
    let mut diff = 0.0f64;
    let mut scale = 0.0f64;
    for r in 0..rows {
        for c in 0..cols {
            let e = expected[r * cols + c];
            diff = diff.max((f64::from(actual[(r, c)]) - e).abs());
            scale = scale.max(e.abs());
        }
    }
    assert!(
        scale > 0.0,
        "{what}: an all-zero expectation proves nothing"
    );
    diff / scale
}

pub(crate) fn loss_error(what: &str, actual: f32, expected: f64) -> f64 {
    assert!(expected.is_finite() && expected > 0.0, "{what}: {expected}");
    let err = (f64::from(actual) - expected).abs() / expected.abs();
    assert!(
        err <= LOSS_TOL,
        "{what}: lazynet {actual}, numpy {expected}: relative error {err:.2e}"
    );
    err
}

/// A net's loss and gradients on the fixture's batch.
type LossAndGrads<'a, S, L> = &'a dyn Fn(&Net<S, L>) -> (f32, Grads);

/// One net and its fixture.
struct Case<'a, S, L> {
    fixture: &'a Fixture,
    /// Declares and binds the net (with any initial weights).
    fresh: &'a dyn Fn() -> Net<S, L>,
    /// Runs the fixture's batch through the net.
    loss_and_grads: LossAndGrads<'a, S, L>,
}

/// The worst errors of a case, for the report.
#[derive(Default)]
struct Worst {
    loss: f64,
    grads: f64,
    after: [f64; 2],
    moves: [f64; 2],
}

impl<S: Bound, L: Layers> Case<'_, S, L> {
    /// The net with the fixture's initial weights.
    fn initial(&self) -> Net<S, L> {
        let mut net = (self.fresh)();
        self.fixture.load_initial(&mut net);
        net
    }

    /// Runs every check and reports the worst errors.
    fn check(&self) {
        let name = self.fixture.name;
        let net = self.initial();
        let mut params: Vec<String> = net.named_params().map(|(n, _)| n.to_owned()).collect();
        params.sort_unstable();
        assert_eq!(params, self.fixture.grad_names(), "{name}: the parameters");

        // The loss and every gradient at the initial weights.
        let mut worst = Worst::default();
        let (loss, grads) = (self.loss_and_grads)(&net);
        worst.loss = loss_error(name, loss, self.fixture.values("loss").0[0]);
        assert_eq!(grads.len(), params.len());
        for (p, g) in grads.named_grads() {
            let err = error(p, g, &self.fixture.values(&format!("grad.{p}")));
            assert!(
                err <= GRAD_TOL,
                "{name}: the gradient of `{p}` differs from numpy's by {err:.2e} of its largest entry"
            );
            worst.grads = worst.grads.max(err);
        }

        // Three steps of each optimizer from the initial weights, with the file's
        // hyper-parameters.
        let adam = self.fixture.values("adam.hyper").0;
        let adam = Adam::new(adam[0])
            .betas(adam[1], adam[2])
            .eps(adam[3])
            .weight_decay(adam[4]);
        self.check_steps("adam", adam, &mut worst, 0);
        let sgd = self.fixture.values("sgd.hyper").0;
        let sgd = Sgd::new(sgd[0])
            .momentum(sgd[1])
            .dampening(sgd[2])
            .weight_decay(sgd[3]);
        self.check_steps("sgd", sgd, &mut worst, 1);

        eprintln!(
            "{name}: worst relative errors: loss {:.1e}, gradients {:.1e}, after Adam {:.1e}, \
             after SGD {:.1e}; moves: Adam {:.1e}, SGD {:.1e}",
            worst.loss, worst.grads, worst.after[0], worst.after[1], worst.moves[0], worst.moves[1]
        );
    }

    /// [`STEPS`] steps of `optimizer` from the initial weights, against the fixture's
    /// `{key}.losses` and `{key}.{param}`.
    fn check_steps<O: Optimizer>(&self, key: &str, mut optimizer: O, worst: &mut Worst, i: usize) {
        let name = self.fixture.name;
        let mut net = self.initial();
        let losses = self.fixture.values(&format!("{key}.losses")).0;
        assert_eq!(losses.len(), STEPS);
        for (t, &expected) in losses.iter().enumerate() {
            let (loss, grads) = (self.loss_and_grads)(&net);
            let what = format!("{name}: {key}, the loss before step {}", t + 1);
            worst.loss = worst.loss.max(loss_error(&what, loss, expected));
            optimizer.step(&mut net, &grads).unwrap();
        }
        let start = self.initial();
        for ((p, value), (_, before)) in net.named_params().zip(start.named_params()) {
            let expected = self.fixture.values(&format!("{key}.{p}"));
            let err = error(p, value, &expected);
            assert!(
                err <= STEP_TOL,
                "{name}: `{p}` after {STEPS} {key} steps differs from numpy's by {err:.2e} of its largest entry"
            );
            // Not vacuous: the steps moved the parameter far more than the tolerance.
            let moved = error(p, before, &expected);
            assert!(
                moved > 10.0 * STEP_TOL,
                "{name}: `{p}` hardly moved: {moved:.2e}"
            );
            // The move itself, a finer check of the optimizer than the parameter's value.
            let (initial, shape) = self.fixture.values(p);
            let expected_move = expected.0.iter().zip(&initial).map(|(a, b)| a - b);
            let move_err = error(p, &(value - before), &(expected_move.collect(), shape));
            assert!(
                move_err <= MOVE_TOL,
                "{name}: the move of `{p}` by {STEPS} {key} steps differs from numpy's by {move_err:.2e} of its largest entry"
            );
            worst.after[i] = worst.after[i].max(err);
            worst.moves[i] = worst.moves[i].max(move_err);
        }
    }
}

#[test]
fn relu_mlp_with_cross_entropy_matches_numpy() {
    let fixture = Fixture::read("mlp.safetensors");
    let x = Batch::<U20>::from_rows(fixture.f32s("x")).unwrap();
    let labels = Labels::<U10>::try_new(fixture.labels()).unwrap();
    assert_eq!(x.samples(), 8);
    Case {
        fixture: &fixture,
        fresh: &|| {
            Net::new()
                .push(Dense::<U16>::new())
                .push(Relu)
                .push(Dense::<U10>::new())
                .bind::<U20>()
        },
        loss_and_grads: &|net| net.loss_and_grads(&x, &labels, CrossEntropy).unwrap(),
    }
    .check();
}

#[test]
fn tanh_sigmoid_mlp_with_mse_matches_numpy() {
    let fixture = Fixture::read("tanh_sigmoid.safetensors");
    let x = Batch::<U6>::from_rows(fixture.f32s("x")).unwrap();
    let targets = Batch::<U4>::from_rows(fixture.f32s("targets")).unwrap();
    assert_eq!((x.samples(), targets.samples()), (5, 5));
    Case {
        fixture: &fixture,
        fresh: &|| {
            Net::new()
                .push(Dense::<U8>::new())
                .push(Tanh)
                .push(Dense::<U5>::new())
                .push(Sigmoid)
                .push(Dense::<U4>::new())
                .bind::<U6>()
        },
        loss_and_grads: &|net| net.loss_and_grads(&x, &targets, Mse).unwrap(),
    }
    .check();
}

#[test]
fn cnn_with_strided_dilated_padded_convolution_and_both_poolings_matches_numpy() {
    let fixture = Fixture::read("cnn.safetensors");
    let x = Batch::<Image<U1, U8, U8>>::from_rows(fixture.f32s("x")).unwrap();
    let labels = Labels::<U3>::try_new(fixture.labels()).unwrap();
    assert_eq!(x.samples(), 4);
    Case {
        fixture: &fixture,
        fresh: &|| {
            Net::new()
                // 1×8×8 → 4×8×8
                .push(Conv2d::<U4, U3>::new().padding::<U1>())
                .push(Relu)
                // → 4×4×4
                .push(MaxPool2d::<U2>::new())
                // (4 + 2·2 − 2·2 − 1) / 2 + 1 = 2: → 6×2×2, the last padded row and column
                // unused
                .push(
                    Conv2d::<U6, U3>::new()
                        .stride::<U2>()
                        .padding::<U2>()
                        .dilation::<U2>(),
                )
                // (2 + 2·1 − 2) / 1 + 1 = 3: → 6×3×3, padding counted in every mean
                .push(AvgPool2d::<U2>::new().stride::<U1>().padding::<U1>())
                .push(Flatten)
                .push(Dense::<U3>::new())
                .bind::<Image<U1, U8, U8>>()
        },
        loss_and_grads: &|net| net.loss_and_grads(&x, &labels, CrossEntropy).unwrap(),
    }
    .check();
}

/// CrossEntropy at logits far from 0 (tests/fixtures/train/make_cross_entropy_fixture.py,
/// float64 from the float32 logits): every sample's loss to float32 precision, `(b, b−1, b−2)`
/// with label 0 giving PyTorch's 0.40760595 at b = 1e7 as at b = 0, and the gradient of the
/// batch's mean.
#[test]
fn cross_entropy_is_exact_at_large_logits() -> Result<(), Box<dyn std::error::Error>> {
    let fixture = Fixture::read("cross_entropy_large_logits.safetensors");
    let logits = fixture.f32s("logits");
    let labels = fixture.labels();
    let (losses, _) = fixture.values("losses");
    // The logits are the output: a net that passes its input through.
    let net = Net::new().push(Identity).bind::<U3>();
    let mut checked = 0;
    for ((z, &label), &expected) in logits.chunks_exact(3).zip(&labels).zip(&losses) {
        let x = Batch::<U3>::from_rows(z)?;
        let (loss, _) =
            net.loss_and_grads(&x, &Labels::<U3>::try_new(vec![label])?, CrossEntropy)?;
        let error = (f64::from(loss) - expected).abs();
        assert!(
            error <= 1e-6 * expected.abs().max(1.0),
            "logits {z:?}, label {label}: lazynet {loss}, float64 {expected}"
        );
        checked += 1;
    }
    assert_eq!(checked, 117);
    let x = Batch::<U3>::from_rows(&logits)?;
    let all = Labels::<U3>::try_new(labels.clone())?;
    let (loss, _) = net.loss_and_grads(&x, &all, CrossEntropy)?;
    let (mean, _) = fixture.values("loss");
    assert!(
        (f64::from(loss) - mean[0]).abs() <= 1e-6 * mean[0],
        "{loss} vs {}",
        mean[0]
    );
    let (evaluated, _) = net.evaluate(&x, &all, CrossEntropy)?;
    assert_eq!(evaluated, loss);
    // The gradient with respect to the logits, through a dense layer holding the identity.
    let mut probe = Net::new().push(Dense::<U3>::new()).bind::<U3>();
    probe.set_param("0.weight", DMatrix::identity(3, 3))?;
    probe.set_param("0.bias", DMatrix::zeros(3, 1))?;
    let (_, grads) = probe.loss_and_grads(&x, &all, CrossEntropy)?;
    // d loss / d bias = Σ over samples of d loss / d logits.
    let (grad, _) = fixture.values("grad");
    let bias = grads.get("0.bias").ok_or("no bias gradient")?;
    for c in 0..3 {
        let expected: f64 = grad.chunks_exact(3).map(|g| g[c]).sum();
        let found = f64::from(bias[(c, 0)]);
        assert!(
            (found - expected).abs() < 1e-6,
            "class {c}: {found} vs {expected}"
        );
    }
    // The case, spelled out.
    for (b, label, expected) in [(1e7f32, 0, 0.407_605_96f32), (1e7, 2, 2.407_606)] {
        let x = Batch::<U3>::from_rows([b, b - 1.0, b - 2.0])?;
        let (loss, _) =
            net.loss_and_grads(&x, &Labels::<U3>::try_new(vec![label])?, CrossEntropy)?;
        assert!(
            (loss - expected).abs() < 1e-6,
            "b {b}, label {label}: {loss}"
        );
    }
    Ok(())
}
