//! Composition beyond a chain: [`Residual`] blocks and [`Shared`] (tied) layers.
//!
//! * Against an independent implementation: numpy by hand, in float64
//!   (tests/fixtures/compose/make_compose_fixtures.py, which documents the files): d2l's tied
//!   net, a residual MLP and a block with a projection. lazynet loads the file's weights and must
//!   reproduce the output, the MSE loss, every gradient (a tied weight's is the sum over its
//!   places) and the parameters after two Adam steps (a tied weight moves once per step).
//! * The semantics: names, the summary, saving and loading ties, an optimizer step on a tie,
//!   the errors of `try_bind` inside and around blocks, an empty residual body.
//! * A small residual CNN trains on the digits and survives a save and a load.
//!
//! A tensor's error is `max |lazynet − numpy| / max |numpy|`, as in train_fixtures.rs: the
//! largest difference relative to the tensor's largest magnitude.

use std::path::Path;

use lazynet::list::Layers;
use lazynet::nalgebra::DMatrix;
use lazynet::prelude::*;
use lazynet::train::Grads;
use lazynet::Bound;
use safetensors::tensor::Dtype;
use safetensors::SafeTensors;

/// The output's error, relative to its largest entry.
const OUTPUT_TOL: f64 = 1e-5;
/// The loss's relative error.
const LOSS_TOL: f64 = 1e-5;
/// A gradient's error, relative to its largest entry.
const GRAD_TOL: f64 = 1e-4;
/// A parameter's error after the Adam steps, relative to its largest entry.
const STEP_TOL: f64 = 2e-4;

// ---------------------------------------------------------------------------------------------
// The numpy fixtures.

/// A fixture file of tests/fixtures/compose.
struct Fixture {
    name: &'static str,
    bytes: Vec<u8>,
}

impl Fixture {
    fn read(name: &'static str) -> Self {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/compose")
            .join(name);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Fixture { name, bytes }
    }

    fn tensors(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).expect("a valid safetensors fixture")
    }

    /// The values of tensor `name` (`F32` or `F64`) in the file's row-major order, and its
    /// shape.
    fn values(&self, name: &str) -> (Vec<f64>, Vec<usize>) {
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
    fn f32s(&self, name: &str) -> Vec<f32> {
        let tensors = self.tensors();
        let t = tensors.tensor(name).unwrap();
        assert_eq!(t.dtype(), Dtype::F32, "{}: `{name}`", self.name);
        t.data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect()
    }

    /// The names of the gradients the file holds, without their `grad.` prefix, sorted.
    fn grad_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .tensors()
            .names()
            .into_iter()
            .filter_map(|n| n.strip_prefix("grad.").map(str::to_owned))
            .collect();
        names.sort_unstable();
        names
    }

    /// Loads the file's parameters into `net`; its other tensors (inputs, expected results)
    /// are not parameters and are skipped.
    fn load_into<S: Bound, L: Layers>(&self, net: &mut Net<S, L>) {
        let weights = Weights::from_bytes(&self.bytes).unwrap();
        net.load_weights(&weights, LoadOptions::new().allow_unexpected(true))
            .unwrap_or_else(|e| panic!("{}: {e}", self.name));
    }
}

/// `max |actual − expected| / max |expected|` of a parameter-shaped matrix against a row-major
/// tensor (a weight `[out, in]` is lazynet's `out × in` matrix, a bias `[out]` its column).
fn error(what: &str, actual: &DMatrix<f32>, (expected, shape): &(Vec<f64>, Vec<usize>)) -> f64 {
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

/// What a fixture's net computes on the fixture's batch: the output (`outputs × samples`), the
/// loss and the gradients.
type Run<'a, S, L> = &'a dyn Fn(&Net<S, L>) -> (DMatrix<f32>, f32, Grads);

/// Checks a net (bound, any weights) against a fixture: output, loss, every gradient, and
/// every parameter after two Adam steps. Returns the net with the fixture's weights.
fn check_fixture<S: Bound + Clone, L: Layers + Clone>(
    fixture: &Fixture,
    mut net: Net<S, L>,
    run: Run<'_, S, L>,
) -> Net<S, L> {
    let name = fixture.name;
    fixture.load_into(&mut net);
    let mut params: Vec<String> = net.named_params().map(|(n, _)| n.to_owned()).collect();
    params.sort_unstable();
    assert_eq!(params, fixture.grad_names(), "{name}: the parameters");

    let (y, loss, grads) = run(&net);
    // The output: `outputs × samples` here, `[samples, outputs]` in the file.
    let err = error("output", &y.transpose(), &fixture.values("output"));
    assert!(err <= OUTPUT_TOL, "{name}: the output differs by {err:.2e}");
    let expected = fixture.values("loss").0[0];
    let loss_err = (f64::from(loss) - expected).abs() / expected;
    assert!(
        loss_err <= LOSS_TOL,
        "{name}: loss {loss}, numpy {expected}: relative error {loss_err:.2e}"
    );
    assert_eq!(
        grads.len(),
        params.len(),
        "{name}: one gradient per parameter"
    );
    let mut worst = 0.0f64;
    for (p, g) in grads.named_grads() {
        let err = error(p, g, &fixture.values(&format!("grad.{p}")));
        assert!(
            err <= GRAD_TOL,
            "{name}: the gradient of `{p}` differs from numpy's by {err:.2e} of its largest entry"
        );
        worst = worst.max(err);
    }

    // Two Adam steps, the gradient recomputed before the second.
    let hyper = fixture.values("adam.hyper").0;
    let mut adam = Adam::new(hyper[0])
        .betas(hyper[1], hyper[2])
        .eps(hyper[3])
        .weight_decay(hyper[4]);
    let mut stepped = net.clone();
    for _ in 0..2 {
        let (_, _, grads) = run(&stepped);
        adam.step(&mut stepped, &grads).unwrap();
    }
    let mut worst_step = 0.0f64;
    for ((p, after), (_, before)) in stepped.named_params().zip(net.named_params()) {
        let expected = fixture.values(&format!("adam.{p}"));
        let err = error(p, after, &expected);
        assert!(
            err <= STEP_TOL,
            "{name}: `{p}` after 2 Adam steps differs from numpy's by {err:.2e}"
        );
        // Not vacuous: the steps moved the parameter far more than the tolerance.
        let moved = error(p, before, &expected);
        assert!(
            moved > 10.0 * STEP_TOL,
            "{name}: `{p}` hardly moved: {moved:.2e}"
        );
        worst_step = worst_step.max(err);
    }
    eprintln!(
        "{name}: output {err:.1e}, loss {loss_err:.1e}, gradients {worst:.1e}, after Adam {worst_step:.1e}"
    );
    net
}

/// d2l's tied net: `Linear(4, 8) ReLU shared ReLU shared ReLU Linear(8, 1)`, one `Linear(8, 8)`
/// at indices 2 and 4.
macro_rules! d2l_tied {
    () => {{
        let shared = Shared::new(Dense::<U8>::new());
        Net::new()
            .push(Dense::<U8>::new())
            .push(Relu)
            .push(shared.clone())
            .push(Relu)
            .push(shared)
            .push(Relu)
            .push(Dense::<U1>::new())
    }};
}

#[test]
fn d2l_tied_net_matches_numpy() {
    let fixture = Fixture::read("tied.safetensors");
    let x = Batch::<U4>::from_rows(fixture.f32s("x")).unwrap();
    let t = Batch::<U1>::from_rows(fixture.f32s("targets")).unwrap();
    assert_eq!(x.samples(), 6);
    let run = |net: &Net<_, _>| {
        let (loss, grads) = net.loss_and_grads(&x, &t, Mse).unwrap();
        (net.forward(&x).into_matrix(), loss, grads)
    };
    // The file names the shared tensors at both places (`2.*` and `4.*`, equal), as PyTorch's
    // `state_dict()` does; `load` reads both and keeps one.
    let net = check_fixture(&fixture, d2l_tied!().bind::<U4>(), &run);
    let names: Vec<&str> = net.named_params().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        ["0.weight", "0.bias", "2.weight", "2.bias", "6.weight", "6.bias"]
    );

    // The tied gradient is the sum over both places, not either place's alone: each place's
    // share differs from the sum by far more than the tolerance.
    let (_, _, grads) = run(&net);
    for role in ["weight", "bias"] {
        let total = grads.get(&format!("2.{role}")).unwrap();
        for place in [2, 4] {
            let alone = fixture.values(&format!("grad_at.{place}.{role}"));
            let err = error(&format!("2.{role} at {place}"), total, &alone);
            assert!(
                err > 100.0 * GRAD_TOL,
                "the gradient at place {place} alone is within {err:.1e} of the sum"
            );
        }
    }
}

#[test]
fn residual_mlp_matches_numpy() {
    let fixture = Fixture::read("residual_mlp.safetensors");
    let x = Batch::<U4>::from_rows(fixture.f32s("x")).unwrap();
    let t = Batch::<U2>::from_rows(fixture.f32s("targets")).unwrap();
    assert_eq!(x.samples(), 5);
    let body = Net::new()
        .push(Dense::<U3>::new())
        .push(Relu)
        .push(Dense::<U3>::new());
    let net = Net::new()
        .push(Dense::<U3>::new())
        .push(Residual::new(body))
        .push(Dense::<U2>::new())
        .bind::<U4>();
    check_fixture(&fixture, net, &|net| {
        let (loss, grads) = net.loss_and_grads(&x, &t, Mse).unwrap();
        (net.forward(&x).into_matrix(), loss, grads)
    });
}

#[test]
fn projection_block_matches_numpy() {
    let fixture = Fixture::read("projection.safetensors");
    let x = Batch::<U3>::from_rows(fixture.f32s("x")).unwrap();
    let t = Batch::<U5>::from_rows(fixture.f32s("targets")).unwrap();
    assert_eq!(x.samples(), 4);
    let body = Net::new()
        .push(Dense::<U5>::new())
        .push(Tanh)
        .push(Dense::<U5>::new());
    let down = Net::new().push(Dense::<U5>::new());
    let net = Net::new()
        .push(Dense::<U4>::new())
        .push(Residual::with_projection(body, down))
        .bind::<U3>();
    check_fixture(&fixture, net, &|net| {
        let (loss, grads) = net.loss_and_grads(&x, &t, Mse).unwrap();
        (net.forward(&x).into_matrix(), loss, grads)
    });
}
