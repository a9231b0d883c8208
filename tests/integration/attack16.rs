//! Attacks on normalization, dropout, buffers and modes (issue 16): layers written outside the
//! crate that declare odd buffers or misuse their `Pass`, `BatchNorm` tied, in a projection and
//! in a net with stems, `Net::names`, `Sequential`, files and checkpoints with bad buffers or
//! metadata, dropout at the edges of its range, NaN and infinities through the new layers.
//!
//! A test whose comment starts "Was a bug" failed when the attack was made (its comment gives
//! the input, what the house rules, PyTorch or the docs promise, and what happened then) and
//! passes since the fix. Every other test is an attack the library withstood from the start.

use std::panic::{catch_unwind, AssertUnwindSafe};

use lazynet::layer::{
    Activation, BufferKind, BufferSpec, BufferValue, Kernel, Layer, Mode, Param, PartialShape, Pass,
};
use lazynet::nalgebra::DMatrix;
use lazynet::prelude::*;
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

type Error = Box<dyn std::error::Error>;

/// Runs `f`, turning a panic into its message.
fn caught<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|e| {
        e.downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default()
    })
}

/// Every parameter and every buffer, named.
type State = (Vec<(String, DMatrix<f32>)>, Vec<(String, BufferValue)>);

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

fn buffer_names<S: lazynet::Bound, L: lazynet::list::Layers>(net: &Net<S, L>) -> Vec<String> {
    net.named_buffers().map(|b| b.name().to_owned()).collect()
}

fn buffer<S: lazynet::Bound, L: lazynet::list::Layers>(net: &Net<S, L>, name: &str) -> BufferValue {
    net.named_buffers()
        .find(|b| b.name() == name)
        .map(|b| b.value().clone())
        .unwrap_or_else(|| panic!("no buffer {name}"))
}

fn count<S: lazynet::Bound, L: lazynet::list::Layers>(net: &Net<S, L>, name: &str) -> i64 {
    match buffer(net, name) {
        BufferValue::Count(c) => c,
        other => panic!("{name} is {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// A layer written outside the crate that declares whatever buffers it is given and records
// what it is told to in its pass.

/// What [`Odd`]'s kernel records in a pass (in any mode).
#[derive(Clone, Debug)]
enum Write {
    Nothing,
    Set(usize, BufferValue),
}

/// A layer that passes its input through, declares `buffers`, optionally owns a parameter
/// `weight` of shape `[1]`, optionally claims to be an activation, and records `write`.
#[derive(Clone, Debug)]
struct Odd {
    buffers: Vec<BufferSpec>,
    param: bool,
    activation: bool,
    write: Write,
}

impl Odd {
    fn new(buffers: Vec<BufferSpec>) -> Self {
        Odd {
            buffers,
            param: false,
            activation: false,
            write: Write::Nothing,
        }
    }
    fn writes(mut self, index: usize, value: BufferValue) -> Self {
        self.write = Write::Set(index, value);
        self
    }
}

fn values(name: &'static str, shape: &[usize], fill: f32, nonnegative: bool) -> BufferSpec {
    BufferSpec {
        name,
        shape: PartialShape::from_dims(shape),
        kind: BufferKind::Values { fill, nonnegative },
    }
}

fn a_count(name: &'static str, shape: &[usize]) -> BufferSpec {
    BufferSpec {
        name,
        shape: PartialShape::from_dims(shape),
        kind: BufferKind::Count,
    }
}

impl Layer for Odd {
    fn kind(&self) -> &'static str {
        "Odd"
    }
    fn output_shape(
        &self,
        input: Option<&PartialShape>,
    ) -> Result<Option<PartialShape>, lazynet::layer::Fault> {
        Ok(input.cloned())
    }
    fn param_shapes(&self, _: Option<&PartialShape>) -> Vec<(Role, PartialShape)> {
        if self.param {
            vec![(Role::Weight, PartialShape::from_dims(&[1]))]
        } else {
            Vec::new()
        }
    }
    fn kernel(&self, _: &[usize], _: &[usize]) -> Box<dyn Kernel> {
        Box::new(OddKernel(self.clone()))
    }
    fn buffers(&self, _: Option<&PartialShape>) -> Vec<BufferSpec> {
        self.buffers.clone()
    }
}

lazynet::keeps_shape!(Odd);

#[derive(Debug)]
struct OddKernel(Odd);

impl Kernel for OddKernel {
    fn forward(
        &self,
        _: &[Param],
        x: &DMatrix<f32>,
        y: &mut DMatrix<f32>,
        _: Activation,
    ) -> Result<(), ShapeError> {
        y.copy_from(x);
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
            dx.copy_from(dy);
        }
        Ok(())
    }
    fn forward_with(
        &self,
        pass: &mut Pass<'_>,
        params: &[Param],
        x: &DMatrix<f32>,
        y: &mut DMatrix<f32>,
        then: Activation,
    ) -> Result<(), ShapeError> {
        if let Write::Set(index, value) = &self.0.write {
            pass.set_buffer(*index, value.clone())?;
        }
        self.forward(params, x, y, then)
    }
    fn activation(&self) -> Option<Activation> {
        self.0.activation.then_some(Activation::Identity)
    }
}

type OddNet = lazynet::Layers![Dense<U3>, Odd, Dense<U2>];

fn odd_net(odd: Odd) -> Result<Net<Init<U3>, OddNet>, ShapeError> {
    Net::new()
        .push(Dense::<U3>::new())
        .push(odd)
        .push(Dense::<U2>::new())
        .seed(4)
        .try_bind(U3::new())
}

fn odd_x() -> Batch<U3> {
    Batch::from_fn(4, |f, s| (f * 3 + s) as f32 / 7.0 - 0.5)
}

/// A layer's contradiction is an error at binding, naming the layer, never a panic.
fn refused(odd: Odd, needle: &str) {
    let err = match caught(|| odd_net(odd)) {
        Ok(Ok(_)) => panic!("bound; expected an error containing {needle:?}"),
        Ok(Err(err)) => err,
        Err(panic) => panic!("panicked: {panic}"),
    };
    let text = err.to_string();
    assert!(text.contains(needle), "{text}\nexpected: {needle}");
}

#[test]
fn a_custom_layers_ill_shaped_buffers_are_refused_at_binding() {
    refused(
        Odd::new(vec![a_count("seen", &[2])]),
        "its buffer `1.seen` has shape (2,); a count has shape []",
    );
    refused(
        Odd::new(vec![values("scale", &[], 1.0, false)]),
        "its buffer `1.scale` has shape (); a count has shape [] and values have at least one dimension",
    );
    // Two buffers of one name, and a buffer named as the layer's parameter.
    refused(
        Odd::new(vec![values("m", &[3], 0.0, false), a_count("m", &[])]),
        "`1.m`",
    );
    let mut named_like_param = Odd::new(vec![values("weight", &[1], 0.0, false)]);
    named_like_param.param = true;
    refused(named_like_param, "`1.weight`");
}

#[test]
fn a_custom_layers_huge_buffer_is_an_error_not_an_abort() {
    for shape in [
        vec![usize::MAX],
        vec![usize::MAX, 2],
        vec![1 << 33, 1 << 33],
        vec![1 << 40],
        vec![1 << 20, 1 << 20, 1 << 20],
    ] {
        let err = match caught(|| odd_net(Odd::new(vec![values("big", &shape, 0.0, false)]))) {
            Ok(Ok(_)) => panic!("{shape:?} bound"),
            Ok(Err(err)) => err,
            Err(panic) => panic!("{shape:?} panicked: {panic}"),
        };
        assert!(
            matches!(
                err,
                ShapeError::TooLarge { .. } | ShapeError::OutOfMemory { .. }
            ),
            "{shape:?}: {err}"
        );
        assert!(err.to_string().contains("big"), "{err}");
    }
    // A count is one value whatever its declared kind.
    let net = odd_net(Odd::new(vec![a_count("n", &[])])).unwrap();
    assert_eq!(buffer(&net, "1.n"), BufferValue::Count(0));
}

#[test]
fn a_kernel_that_claims_to_be_an_activation_cannot_own_buffers() {
    let mut odd = Odd::new(vec![values("m", &[3], 0.0, false)]);
    odd.activation = true;
    refused(odd, "owns 0 parameter(s) and 1 buffer(s)");
    // Without buffers the claim is believed (it is an identity).
    let mut honest = Odd::new(Vec::new());
    honest.activation = true;
    assert!(odd_net(honest).is_ok());
}

#[test]
fn a_kernel_that_misuses_set_buffer_gets_an_error_and_changes_nothing() {
    let specs = || {
        vec![
            values("mean", &[3], 0.0, false),
            values("var", &[3], 1.0, true),
            a_count("n", &[]),
        ]
    };
    let y = Batch::<U2>::zeros(4);
    let cases = [
        (
            5,
            BufferValue::Count(1),
            "buffer 5 was set but the layer has 3",
        ),
        (
            0,
            BufferValue::Values(DMatrix::zeros(2, 1)),
            "values of shape (3,) (3 × 1) were expected, 2 × 1 were found",
        ),
        (
            0,
            BufferValue::Values(DMatrix::zeros(1, 3)),
            "values of shape (3,) (3 × 1) were expected, 1 × 3 were found",
        ),
        (
            0,
            BufferValue::Count(1),
            "values of shape (3,) were expected, a count was found",
        ),
        (
            2,
            BufferValue::Values(DMatrix::zeros(1, 1)),
            "a count (int64) was expected, values were found",
        ),
        (
            2,
            BufferValue::Count(-1),
            "a count is a whole number from 0 up, -1 was found",
        ),
    ];
    for (index, value, needle) in cases {
        let net = odd_net(Odd::new(specs()).writes(index, value)).unwrap();
        let before = state(&net);
        let err = net.loss_and_grads(&odd_x(), &y, Mse).unwrap_err();
        assert!(matches!(err, ShapeError::Contract { .. }), "{err:?}");
        assert!(
            err.to_string().contains(needle),
            "{err}\nexpected: {needle}"
        );
        assert_eq!(state(&net), before);
    }
    // Setting a buffer in inference is refused: `try_forward` says so, nothing changes.
    let net = odd_net(Odd::new(specs()).writes(2, BufferValue::Count(1))).unwrap();
    let before = state(&net);
    let err = net.try_forward(&odd_x()).unwrap_err();
    assert!(
        err.to_string()
            .contains("an inference pass cannot change a buffer"),
        "{err}"
    );
    assert_eq!(state(&net), before);
    // In training it is recorded, and the step writes it.
    let (_, grads) = net.loss_and_grads(&odd_x(), &y, Mse).unwrap();
    assert_eq!(state(&net), before);
    let mut net = net;
    Sgd::new(0.0).step(&mut net, &grads).unwrap();
    assert_eq!(count(&net, "1.n"), 1);
}

#[test]
fn a_nan_or_negative_variance_recorded_by_a_kernel_is_refused_by_the_step() {
    let specs = vec![values("var", &[3], 1.0, true)];
    let y = Batch::<U2>::zeros(4);
    for bad in [f32::NAN, -1.0] {
        let mut net = odd_net(
            Odd::new(specs.clone())
                .writes(0, BufferValue::Values(DMatrix::from_element(3, 1, bad))),
        )
        .unwrap();
        let (_, grads) = net.loss_and_grads(&odd_x(), &y, Mse).unwrap();
        let before = state(&net);
        let mut adam = Adam::new(1e-3);
        let err = adam.step(&mut net, &grads).unwrap_err();
        assert!(
            matches!(err, TrainError::BufferOutOfRange { ref name, .. } if name == "1.var"),
            "{bad}: {err:?}"
        );
        assert_eq!(state(&net), before, "{bad}");
        assert_eq!(
            adam.steps("0.weight"),
            0,
            "the optimizer's state is unchanged"
        );
    }
}

/// Was a bug: a buffer's name is not checked as a parameter's path part is. PyTorch's
/// `register_buffer` refuses an empty name and a name with a dot ("buffer name can't contain
/// \".\""), as `Net::names` and `Residual::names` refuse such layer names here. Found: an
/// `Odd` declaring buffers `""` and `"a.b"` binds; the net saves tensors `1.` and `1.a.b`.
#[test]

fn a_buffer_name_that_is_not_one_path_part_is_refused() {
    refused(Odd::new(vec![values("", &[3], 0.0, false)]), "``");
    refused(Odd::new(vec![values("a.b", &[3], 0.0, false)]), "a.b");
}

/// Was a bug: a buffer whose starting value breaks its own rule is believed. Input: an `Odd`
/// declaring `Values { fill: -1.0, nonnegative: true }`. Expected: an error at binding (the
/// layer contradicts itself), or at least a net that can load the file it saves. Found: the net
/// binds, and `load_from_bytes` of its own `save_to_bytes` fails with "every value must be at
/// least 0 (a variance), but flat index 0 holds -1".
#[test]

fn a_buffer_that_starts_outside_its_own_range_is_refused() {
    for fill in [-1.0, f32::NAN] {
        let Ok(mut net) = odd_net(Odd::new(vec![values("var", &[3], fill, true)])) else {
            continue; // refused at binding: right
        };
        let bytes = net.save_to_bytes().unwrap();
        net.load_from_bytes(&bytes)
            .unwrap_or_else(|e| panic!("fill {fill}: the net cannot load its own file: {e}"));
    }
}

/// Was a bug (wording): a buffer named as the layer's parameter, or two buffers of one name, is
/// `ShapeError::DuplicateParam`, whose message says "has two parameters named `1.weight`; give
/// them distinct roles (`Role::Named`)": advice that does not apply to a buffer.
#[test]

fn a_buffer_name_clash_is_reported_as_a_buffer() {
    let mut odd = Odd::new(vec![values("weight", &[1], 0.0, false)]);
    odd.param = true;
    let err = odd_net(odd).unwrap_err();
    assert!(err.to_string().contains("buffer"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// BatchNorm tied, in a projection, in a net with stems.

/// `Dense(4) Shared(BN) Relu Dense(4) Shared(BN) Dense(2)` on 3 inputs.
macro_rules! tied_bn_net {
    () => {{
        let bn = Shared::new(BatchNorm::new());
        Net::new()
            .push(Dense::<U4>::new())
            .push(bn.clone())
            .push(Relu)
            .push(Dense::<U4>::new())
            .push(bn)
            .push(Dense::<U2>::new())
            .seed(1)
            .bind::<U3>()
    }};
}

fn f64s(m: &DMatrix<f32>) -> DMatrix<f64> {
    m.map(f64::from)
}

/// Per row: mean and unbiased variance, and the row normalized by its biased variance.
fn batch_norm(h: &DMatrix<f64>) -> (Vec<f64>, Vec<f64>, DMatrix<f64>) {
    let n = h.ncols() as f64;
    let mut z = h.clone();
    let (mut means, mut vars) = (Vec::new(), Vec::new());
    for r in 0..h.nrows() {
        let mean = h.row(r).iter().sum::<f64>() / n;
        let var = h.row(r).iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        for c in 0..h.ncols() {
            z[(r, c)] = (h[(r, c)] - mean) / (var + 1e-5).sqrt();
        }
        means.push(mean);
        vars.push(var * n / (n - 1.0));
    }
    (means, vars, z)
}

#[test]
fn a_tied_batch_norm_updates_its_running_statistics_at_each_place_as_pytorch_does() {
    let mut net = tied_bn_net!();
    assert_eq!(
        buffer_names(&net),
        ["1.running_mean", "1.running_var", "1.num_batches_tracked"]
    );
    let x = Batch::<U3>::from_fn(6, |f, s| ((f * 5 + s * 3) % 7) as f32 / 3.0 - 1.0);
    let p = |name: &str| {
        f64s(
            net.named_params()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v)
                .unwrap(),
        )
    };
    let broadcast = |b: DMatrix<f64>| DMatrix::from_fn(b.nrows(), 6, |r, _| b[(r, 0)]);
    let h0 = p("0.weight") * f64s(x.as_matrix()) + broadcast(p("0.bias"));
    let (m1, v1, z1) = batch_norm(&h0);
    let h3 = p("3.weight") * z1.map(|v| v.max(0.0)) + broadcast(p("3.bias"));
    let (m2, v2, _) = batch_norm(&h3);
    let before = state(&net);
    let (_, grads) = net.loss_and_grads(&x, &Batch::<U2>::zeros(6), Mse).unwrap();
    assert_eq!(state(&net), before, "a training pass changes nothing");
    // PyTorch calls the module twice: two updates, the second from the first's result.
    Sgd::new(0.0).step(&mut net, &grads).unwrap();
    assert_eq!(count(&net, "1.num_batches_tracked"), 2);
    let BufferValue::Values(mean) = buffer(&net, "1.running_mean") else {
        panic!()
    };
    let BufferValue::Values(var) = buffer(&net, "1.running_var") else {
        panic!()
    };
    for k in 0..4 {
        let want_mean = 0.9 * (0.1 * m1[k]) + 0.1 * m2[k];
        let want_var = 0.9 * (0.9 + 0.1 * v1[k]) + 0.1 * v2[k];
        assert!(
            (f64::from(mean[k]) - want_mean).abs() < 1e-5,
            "{k}: {} vs {want_mean}",
            mean[k]
        );
        assert!(
            (f64::from(var[k]) - want_var).abs() < 1e-5 * want_var.max(1.0),
            "{k}: {} vs {want_var}",
            var[k]
        );
    }
    // Saved once, under the first place; loaded back bit for bit.
    let bytes = net.save_to_bytes().unwrap();
    let names: Vec<String> = Weights::from_bytes(&bytes)
        .unwrap()
        .names()
        .map(str::to_owned)
        .collect();
    assert!(!names.iter().any(|n| n.starts_with("4.")), "{names:?}");
    let mut fresh = tied_bn_net!();
    fresh.load_from_bytes(&bytes).unwrap();
    assert_eq!(state(&fresh), state(&net));
}

/// `bytes` with tensors copied under other names: `(from, to)`.
fn with_aliases(bytes: &[u8], aliases: &[(&str, &str)]) -> Vec<u8> {
    let file = SafeTensors::deserialize(bytes).unwrap();
    let mut views: Vec<(String, TensorView<'_>)> = file.tensors();
    for (from, to) in aliases {
        let view = file.tensor(from).unwrap();
        views.push((
            (*to).to_owned(),
            TensorView::new(view.dtype(), view.shape().to_vec(), view.data()).unwrap(),
        ));
    }
    safetensors::serialize(views, None).unwrap()
}

/// Was a bug: `Shared`'s docs promise that `load` reads "a PyTorch `state_dict` that names the tensor
/// at every place". PyTorch's `state_dict` of a net holding one `BatchNorm1d` at places 1 and
/// 4 names its buffers at both places (`4.running_mean`, `4.running_var`,
/// `4.num_batches_tracked`, equal to place 1's). lazynet accepts the parameters' aliases
/// (`4.weight`, `4.bias`) but not the buffers': `load_from_bytes` fails with "the file has 3
/// tensors the net has no parameter for: `4.num_batches_tracked` …".
#[test]

fn a_tied_batch_norms_state_dict_naming_every_place_loads() {
    let net = tied_bn_net!();
    let bytes = with_aliases(
        &net.save_to_bytes().unwrap(),
        &[
            ("1.weight", "4.weight"),
            ("1.bias", "4.bias"),
            ("1.running_mean", "4.running_mean"),
            ("1.running_var", "4.running_var"),
            ("1.num_batches_tracked", "4.num_batches_tracked"),
        ],
    );
    let mut fresh = tied_bn_net!();
    fresh.load_from_bytes(&bytes).unwrap();
    assert_eq!(state(&fresh), state(&net));
}

#[test]
fn a_batch_norm_in_a_projection_is_named_stepped_and_left_alone_by_inference() -> Result<(), Error>
{
    let mut net = Net::new()
        .push(Residual::with_projection(
            Net::new().push(Dense::<U4>::new()).push(BatchNorm::new()),
            Net::new().push(Dense::<U4>::new()).push(BatchNorm::new()),
        ))
        .push(Dense::<U2>::new())
        .seed(2)
        .bind::<U3>();
    assert_eq!(
        buffer_names(&net),
        [
            "0.1.running_mean",
            "0.1.running_var",
            "0.1.num_batches_tracked",
            "0.downsample.1.running_mean",
            "0.downsample.1.running_var",
            "0.downsample.1.num_batches_tracked",
        ]
    );
    let x = Batch::<U3>::from_fn(5, |f, s| (f as f32 - s as f32) / 3.0);
    let before = state(&net);
    let y = net.forward(&x);
    let (_, grads) = net.loss_and_grads(&x, &Batch::<U2>::zeros(5), Mse)?;
    assert_eq!(state(&net), before);
    assert_eq!(net.forward(&x), y);
    Adam::new(1e-2).step(&mut net, &grads)?;
    assert_eq!(count(&net, "0.1.num_batches_tracked"), 1);
    assert_eq!(count(&net, "0.downsample.1.num_batches_tracked"), 1);
    let mut fresh = Net::new()
        .push(Residual::with_projection(
            Net::new().push(Dense::<U4>::new()).push(BatchNorm::new()),
            Net::new().push(Dense::<U4>::new()).push(BatchNorm::new()),
        ))
        .push(Dense::<U2>::new())
        .bind::<U3>();
    fresh.load_from_bytes(&net.save_to_bytes()?)?;
    assert_eq!(fresh.forward(&x), net.forward(&x));
    Ok(())
}

macro_rules! bn_stems {
    () => {
        Stems::new()
            .stem::<U2, _>(Net::new().push(Dense::<U4>::new()).push(BatchNorm::new()))
            .stem::<U3, _>(Net::new().push(Dense::<U4>::new()))
    };
}

#[test]
fn batch_norm_in_a_trunk_and_a_stem_is_stepped_once_per_batch_that_reaches_it() -> Result<(), Error>
{
    let trunk = Net::new()
        .push(BatchNorm::new())
        .push(Relu)
        .push(Dense::<U1>::new());
    let mut net = trunk.seed(3).bind_stems(bn_stems!())?;
    assert_eq!(
        buffer_names(&net),
        [
            "stems.2.1.running_mean",
            "stems.2.1.running_var",
            "stems.2.1.num_batches_tracked",
            "trunk.0.running_mean",
            "trunk.0.running_var",
            "trunk.0.num_batches_tracked",
        ]
    );
    let two = Batch::<U2>::from_fn(4, |f, s| (f + 2 * s) as f32 / 5.0);
    let three = Batch::<U3>::from_fn(4, |f, s| (f * s) as f32 / 5.0 - 0.3);
    let target = Batch::<U1>::zeros(4);
    let mut adam = Adam::new(1e-2);
    let before = state(&net);
    let (_, grads) = net.loss_and_grads(&two, &target, Mse)?;
    assert_eq!(state(&net), before);
    adam.step(&mut net, &grads)?;
    assert_eq!(count(&net, "stems.2.1.num_batches_tracked"), 1);
    assert_eq!(count(&net, "trunk.0.num_batches_tracked"), 1);
    let stem_mean = buffer(&net, "stems.2.1.running_mean");
    let (_, grads) = net.loss_and_grads(&three, &target, Mse)?;
    adam.step(&mut net, &grads)?;
    // The trunk is one layer for both stems; the stem the batch did not reach is left alone.
    assert_eq!(count(&net, "trunk.0.num_batches_tracked"), 2);
    assert_eq!(count(&net, "stems.2.1.num_batches_tracked"), 1);
    assert_eq!(buffer(&net, "stems.2.1.running_mean"), stem_mean);
    // Inference through either stem changes nothing.
    let y = net.try_forward(&three)?;
    assert_eq!(net.try_forward(&three)?, y);
    Ok(())
}

/// Was a bug: `Net::names` is ignored by `bind_stems`. The docs of `Net::names` say the parameters
/// are named by them; `partial_shapes()` of the declaration does use them. Input: a trunk
/// `Dense(4) Relu Dense(1)` named `["fc1", "relu", "fc2"]`, bound with stems. Expected:
/// `trunk.fc1.weight` (or an error saying names are not supported with stems). Found:
/// `trunk.0.weight`, silently.
#[test]

fn names_given_to_a_trunk_are_kept_or_refused_by_bind_stems() {
    let trunk = Net::new()
        .push(Dense::<U4>::new())
        .push(Relu)
        .push(Dense::<U1>::new())
        .names(["fc1", "relu", "fc2"]);
    let declared: Vec<String> = trunk.partial_shapes().into_iter().map(|(n, _)| n).collect();
    assert_eq!(declared[0], "fc1.weight");
    match trunk.bind_stems(
        Stems::new()
            .stem::<U2, _>(Net::new().push(Dense::<U4>::new()))
            .stem::<U3, _>(Net::new().push(Dense::<U4>::new())),
    ) {
        Err(_) => {}
        Ok(net) => {
            let names: Vec<&str> = net.named_params().map(|(n, _)| n).collect();
            assert!(names.contains(&"trunk.fc1.weight"), "{names:?}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Names and sequential blocks.

#[test]
fn bad_layer_names_are_errors_at_binding() {
    let decl = || {
        Net::new()
            .push(Dense::<U4>::new())
            .push(Relu)
            .push(Dense::<U2>::new())
    };
    let cases: [(&[&str], &str, &str); 6] = [
        (&[""], "", "not empty, and without a dot"),
        (&["a.b"], "a.b", "not empty, and without a dot"),
        (&["a", "a"], "a", "two layers have this name"),
        (&["a", "b", "c", "d"], "d", "more names than layers"),
        // Layer 0 named as layer 1's index: `1.weight` would be two tensors.
        (&["1"], "1", "two layers have this name"),
        (&["x", "y", "0", "z", "w"], "z, w", "more names than layers"),
    ];
    for (names, name, reason) in cases {
        let err = decl()
            .names(names.iter().copied())
            .try_bind(U3::new())
            .unwrap_err();
        match &err {
            ShapeError::BlockName {
                name: found,
                reason: why,
                ..
            } => {
                assert_eq!(found, name, "{names:?}: {err}");
                assert!(why.contains(reason), "{names:?}: {err}");
            }
            other => panic!("{names:?}: {other:?}"),
        }
    }
    // A name equal to another layer's index where that layer is named too is fine.
    let net = decl().names(["x", "0", "2"]).try_bind(U3::new()).unwrap();
    let names: Vec<&str> = net.named_params().map(|(n, _)| n).collect();
    assert_eq!(names, ["x.weight", "x.bias", "2.weight", "2.bias"]);
}

#[test]
fn sequential_blocks_nest_and_an_empty_one_passes_its_input_through() -> Result<(), Error> {
    let inner = Sequential::new(Net::new().push(Dense::<U4>::new()).push(BatchNorm::new()))
        .names(["fc", "bn"]);
    let outer = Sequential::new(Net::new().push(inner).push(Relu)).names(["block", "act"]);
    let mut net = Net::new()
        .push(outer)
        .push(Dense::<U2>::new())
        .names(["stage", "head"])
        .bind::<U3>();
    let names: Vec<&str> = net.named_params().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "stage.block.fc.weight",
            "stage.block.fc.bias",
            "stage.block.bn.weight",
            "stage.block.bn.bias",
            "head.weight",
            "head.bias",
        ]
    );
    assert_eq!(buffer_names(&net)[0], "stage.block.bn.running_mean");
    let x = Batch::<U3>::from_fn(4, |f, s| (f + s) as f32);
    let (_, grads) = net.loss_and_grads(&x, &Batch::<U2>::zeros(4), Mse)?;
    Sgd::new(0.1).step(&mut net, &grads)?;
    assert_eq!(count(&net, "stage.block.bn.num_batches_tracked"), 1);

    // An empty block is nothing: the net computes what it computes without it.
    let with = Net::new()
        .push(Dense::<U4>::new())
        .push(Sequential::new(Net::new()))
        .push(Dense::<U2>::new())
        .seed(9)
        .bind::<U3>();
    let names: Vec<&str> = with.named_params().map(|(n, _)| n).collect();
    assert_eq!(names, ["0.weight", "0.bias", "2.weight", "2.bias"]);
    let y = with.forward(&x);
    let (loss, grads) = with.loss_and_grads(&x, &Batch::<U2>::zeros(4), Mse)?;
    assert!(loss.is_finite() && grads.len() == 4);
    let mut again = Net::new()
        .push(Dense::<U4>::new())
        .push(Sequential::new(Net::new()))
        .push(Dense::<U2>::new())
        .bind::<U3>();
    again.load_from_bytes(&with.save_to_bytes()?)?;
    assert_eq!(again.forward(&x), y);
    // A residual block around an empty block doubles its input.
    let double = Net::new()
        .push(Residual::new(Net::new().push(Sequential::new(Net::new()))))
        .bind::<U3>();
    let doubled = double.forward(&x);
    assert_eq!(doubled.as_matrix(), &(x.as_matrix() * 2.0));
    // Names for an empty block are more names than layers.
    let err = Net::new()
        .push(Sequential::new(Net::new()).names(["a"]))
        .push(Dense::<U2>::new())
        .try_bind(U3::new())
        .unwrap_err();
    assert!(err.to_string().contains("more names than layers"), "{err}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Files with bad buffers.

fn raw_file(tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
    let views: Vec<(&str, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, d, s, b)| (*n, TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize(views, None).unwrap()
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// `Dense(2) BatchNorm` on 2 inputs, and a file for it with the count `count` (or none) and
/// the running mean of shape `mean_shape`, plus `extra` tensors.
fn bn_file(
    count: Option<(Dtype, Vec<usize>, Vec<u8>)>,
    mean_shape: Vec<usize>,
    extra: &[(&str, Dtype, Vec<usize>, Vec<u8>)],
) -> Vec<u8> {
    let mut tensors = vec![
        (
            "0.weight",
            Dtype::F32,
            vec![2, 2],
            f32_bytes(&[1.0, 2.0, 3.0, 4.0]),
        ),
        ("0.bias", Dtype::F32, vec![2], f32_bytes(&[5.0, 6.0])),
        ("1.weight", Dtype::F32, vec![2], f32_bytes(&[1.5, 2.5])),
        ("1.bias", Dtype::F32, vec![2], f32_bytes(&[0.5, 0.25])),
        (
            "1.running_mean",
            Dtype::F32,
            mean_shape,
            f32_bytes(&[0.1, 0.2]),
        ),
        ("1.running_var", Dtype::F32, vec![2], f32_bytes(&[1.0, 2.0])),
    ];
    if let Some((d, s, b)) = count {
        tensors.push(("1.num_batches_tracked", d, s, b));
    }
    tensors.extend(extra.iter().cloned());
    raw_file(&tensors)
}

type BnNet = lazynet::Layers![Dense<U2>, BatchNorm];

fn bn_net() -> Net<Init<U2>, BnNet> {
    Net::new()
        .push(Dense::<U2>::new())
        .push(BatchNorm::new())
        .bind::<U2>()
}

#[test]
fn bad_counts_and_ranks_in_a_file_are_errors_and_load_nothing() {
    let i64_count = |c: i64| Some((Dtype::I64, vec![], c.to_le_bytes().to_vec()));
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            bn_file(
                Some((Dtype::I32, vec![], 3i32.to_le_bytes().to_vec())),
                vec![2],
                &[],
            ),
            "tensor `1.num_batches_tracked` is a count and must be I64 (as PyTorch writes `num_batches_tracked`), but has data type I32",
        ),
        (
            bn_file(Some((Dtype::U8, vec![], vec![3])), vec![2], &[]),
            "tensor `1.num_batches_tracked` is a count and must be I64 (as PyTorch writes `num_batches_tracked`), but has data type U8",
        ),
        (
            bn_file(
                Some((Dtype::F64, vec![], 3f64.to_le_bytes().to_vec())),
                vec![2],
                &[],
            ),
            "tensor `1.num_batches_tracked` is a count and must be I64 (as PyTorch writes `num_batches_tracked`), but has data type F64",
        ),
        (
            bn_file(
                Some((Dtype::I64, vec![1], 3i64.to_le_bytes().to_vec())),
                vec![2],
                &[],
            ),
            "tensor `1.num_batches_tracked`: expected 0 dimensions",
        ),
        (
            bn_file(
                Some((
                    Dtype::I64,
                    vec![2],
                    [3i64.to_le_bytes(), 4i64.to_le_bytes()].concat(),
                )),
                vec![2],
                &[],
            ),
            "tensor `1.num_batches_tracked`: expected 0 dimensions",
        ),
        (
            bn_file(i64_count(i64::MIN), vec![2], &[]),
            "a count is a whole number from 0 up, -9223372036854775808 was found",
        ),
        (
            bn_file(i64_count(3), vec![2, 1], &[]),
            "tensor `1.running_mean`: expected 1 dimensions",
        ),
        (
            bn_file(i64_count(3), vec![1, 2], &[]),
            "tensor `1.running_mean`: expected 1 dimensions",
        ),
        (
            bn_file(
                i64_count(3),
                vec![2],
                &[(
                    "1.running_extra",
                    Dtype::F32,
                    vec![2],
                    f32_bytes(&[0.0, 0.0]),
                )],
            ),
            "`1.running_extra`",
        ),
        (
            bn_file(
                i64_count(3),
                vec![2],
                &[(
                    "0.num_batches_tracked",
                    Dtype::I64,
                    vec![],
                    1i64.to_le_bytes().to_vec(),
                )],
            ),
            "`0.num_batches_tracked`",
        ),
    ];
    let net = bn_net();
    let before = state(&net);
    for (bytes, needle) in cases {
        let mut copy = net.clone();
        let err = match caught(|| copy.load_from_bytes(&bytes)) {
            Ok(Ok(())) => panic!("loaded; expected {needle}"),
            Ok(Err(err)) => err,
            Err(panic) => panic!("{needle}: panicked: {panic}"),
        };
        assert!(
            err.to_string().contains(needle),
            "{err}\nexpected: {needle}"
        );
        assert_eq!(state(&copy), before, "{needle}: nothing is loaded");
    }
    // Extra buffer-like tensors are ignored on request.
    let mut copy = net.clone();
    let extra = bn_file(
        i64_count(3),
        vec![2],
        &[(
            "1.running_extra",
            Dtype::F32,
            vec![2],
            f32_bytes(&[0.0, 0.0]),
        )],
    );
    copy.load_weights(
        &Weights::from_bytes(&extra).unwrap(),
        LoadOptions::new().allow_unexpected(true),
    )
    .unwrap();
    assert_eq!(count(&copy, "1.num_batches_tracked"), 3);
    // The largest count loads, and saves back as it was.
    let mut copy = net.clone();
    copy.load_from_bytes(&bn_file(i64_count(i64::MAX), vec![2], &[]))
        .unwrap();
    assert_eq!(count(&copy, "1.num_batches_tracked"), i64::MAX);
    let mut back = net.clone();
    back.load_from_bytes(&copy.save_to_bytes().unwrap())
        .unwrap();
    assert_eq!(state(&back), state(&copy));
}

#[test]
fn a_count_at_the_largest_int64_saturates_through_a_step() {
    let mut net = bn_net();
    net.load_from_bytes(&bn_file(
        Some((Dtype::I64, vec![], i64::MAX.to_le_bytes().to_vec())),
        vec![2],
        &[],
    ))
    .unwrap();
    let x = Batch::<U2>::from_fn(3, |f, s| (f * s) as f32);
    let (_, grads) = net.loss_and_grads(&x, &Batch::<U2>::zeros(3), Mse).unwrap();
    Sgd::new(0.0).step(&mut net, &grads).unwrap();
    assert_eq!(count(&net, "1.num_batches_tracked"), i64::MAX);
}

/// Was a bug (wording): a count stored as another type is `LoadError::Dtype`, whose message reads
/// "tensor `1.num_batches_tracked` has data type F32; lazynet loads F32, F16, BF16 and F64"
/// (now: "… is a count and must be I64 …"):
/// it says F32 is loadable while refusing an F32 tensor. Expected: a message saying a count
/// is read as I64 (int64).
#[test]

fn a_count_of_another_dtype_says_int64_is_expected() {
    let mut net = bn_net();
    let err = net
        .load_from_bytes(&bn_file(
            Some((Dtype::F32, vec![], f32_bytes(&[3.0]))),
            vec![2],
            &[],
        ))
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("I64") || text.contains("int64"), "{text}");
}

/// Was a bug: a file without `num_batches_tracked` is refused. PyTorch's `_NormBase` loads a
/// `state_dict` without version metadata (any dict read from safetensors) that lacks
/// `num_batches_tracked` by filling in 0 (`_load_from_state_dict`, "at version 2: added
/// num_batches_tracked buffer, this should have a default value of 0"), so such files load in
/// PyTorch with `strict=True`. Found: `LoadError::Missing` "the file has no tensor
/// `1.num_batches_tracked`".
#[test]

fn a_file_without_num_batches_tracked_loads_as_pytorch_does() {
    let mut net = bn_net();
    net.load_from_bytes(&bn_file(None, vec![2], &[])).unwrap();
    assert_eq!(count(&net, "1.num_batches_tracked"), 0);
}

#[test]
fn a_file_without_running_statistics_is_missing_them_and_loads_nothing() {
    // What an older lazynet wrote for the same net: parameters only.
    let old = raw_file(&[
        (
            "0.weight",
            Dtype::F32,
            vec![2, 2],
            f32_bytes(&[1.0, 2.0, 3.0, 4.0]),
        ),
        ("0.bias", Dtype::F32, vec![2], f32_bytes(&[5.0, 6.0])),
        ("1.weight", Dtype::F32, vec![2], f32_bytes(&[1.5, 2.5])),
        ("1.bias", Dtype::F32, vec![2], f32_bytes(&[0.5, 0.25])),
    ]);
    let mut net = bn_net();
    let before = state(&net);
    let err = net.load_from_bytes(&old).unwrap_err();
    assert!(
        matches!(err, LoadError::Missing { ref name, .. } if name == "1.running_mean"),
        "{err}"
    );
    assert_eq!(state(&net), before);
}

// ---------------------------------------------------------------------------------------------
// Checkpoints with bad step metadata.

/// `bytes` with the metadata `key` set to `value`.
fn with_metadata(bytes: &[u8], key: &str, value: &str) -> Vec<u8> {
    let (_, meta) = SafeTensors::read_metadata(bytes).unwrap();
    let mut map = meta.metadata().clone().unwrap_or_default();
    map.insert(key.to_owned(), value.to_owned());
    let file = SafeTensors::deserialize(bytes).unwrap();
    safetensors::serialize(file.tensors(), Some(map)).unwrap()
}

#[test]
fn a_checkpoint_with_garbage_step_metadata_is_an_error_and_changes_nothing() -> Result<(), Error> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("ck.safetensors");
    let x = Batch::<U2>::from_fn(4, |f, s| (f + s) as f32 / 3.0);
    let target = Batch::<U2>::zeros(4);
    let mut net = bn_net();
    let mut adam = Adam::new(1e-2);
    let (_, grads) = net.loss_and_grads(&x, &target, Mse)?;
    adam.step(&mut net, &grads)?;
    net.save_checkpoint(&path, &adam)?;
    let saved = std::fs::read(&path)?;
    assert_eq!(
        SafeTensors::read_metadata(&saved)?
            .1
            .metadata()
            .as_ref()
            .and_then(|m| m.get("lazynet.steps").cloned()),
        Some("1".to_owned())
    );
    for garbage in [
        "-1",
        "18446744073709551616",
        "99999999999999999999999999",
        "abc",
        "1.5",
        "",
        " 1",
        "0x10",
    ] {
        std::fs::write(&path, with_metadata(&saved, "lazynet.steps", garbage))?;
        let mut fresh = bn_net();
        let mut fresh_adam = Adam::new(1e-2);
        let before = state(&fresh);
        let err = match caught(|| fresh.load_checkpoint(&path, &mut fresh_adam)) {
            Ok(Ok(_)) => panic!("{garbage:?} loaded"),
            Ok(Err(err)) => err,
            Err(panic) => panic!("{garbage:?} panicked: {panic}"),
        };
        assert!(
            matches!(err, TrainError::Checkpoint { .. }),
            "{garbage:?}: {err}"
        );
        assert!(err.to_string().contains("lazynet.steps"), "{err}");
        assert_eq!(state(&fresh), before, "{garbage:?}");
        assert_eq!(fresh_adam.steps("0.weight"), 0, "{garbage:?}");
    }
    // The largest step count loads, and a step after it does not overflow.
    std::fs::write(
        &path,
        with_metadata(&saved, "lazynet.steps", &u64::MAX.to_string()),
    )?;
    let mut fresh = bn_net();
    let mut fresh_adam = Adam::new(1e-2);
    fresh.load_checkpoint(&path, &mut fresh_adam)?;
    let (_, grads) = fresh.loss_and_grads(&x, &target, Mse)?;
    fresh_adam.step(&mut fresh, &grads)?;
    assert_eq!(count(&fresh, "1.num_batches_tracked"), 2);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Dropout at the edges of its range; NaN and infinities through the new layers.

/// The kernel of `layer` for `width` flat features.
fn kernel_of(layer: &dyn Layer, width: usize) -> Box<dyn Kernel> {
    layer.kernel(&[width], &[width])
}

/// A training pass of dropout `p` over `x` (features × samples).
fn dropout_train(p: f32, x: &DMatrix<f32>, seed: u64) -> DMatrix<f32> {
    let layer = Dropout::new(p).unwrap();
    let kernel = kernel_of(&layer, x.nrows());
    let mut y = DMatrix::zeros(x.nrows(), x.ncols());
    let mut pass = Pass::train(&[], seed, 0);
    kernel
        .forward_with(&mut pass, &[], x, &mut y, Activation::Identity)
        .unwrap();
    y
}

#[test]
fn dropout_at_the_edges_of_its_range_stays_finite_and_scales_as_pytorch() {
    let x = DMatrix::from_fn(64, 64, |r, c| (r as f32 - c as f32) / 8.0 + 0.5);
    // The largest p below 1: almost all dropped, the kept ones scaled by 1/(1 − p).
    let p = f32::from_bits(1.0f32.to_bits() - 1);
    let y = dropout_train(p, &x, 1);
    let scale = 1.0 / (1.0 - p);
    assert!(scale.is_finite());
    for (o, i) in y.iter().zip(x.iter()) {
        assert!(*o == 0.0 || *o == i * scale, "{o} from {i}");
    }
    let y = dropout_train(0.999_999, &x, 1);
    assert!(y.iter().all(|v| v.is_finite()));
    // A subnormal p and −0.0: nothing dropped (−0.0 is accepted, as PyTorch accepts it).
    for p in [f32::from_bits(1), -0.0] {
        assert!(Dropout::new(p).is_ok(), "{p}");
        assert_eq!(dropout_train(p, &x, 2), x, "{p}");
    }
    // Inference passes everything through whatever p.
    let layer = Dropout::new(0.9).unwrap();
    let kernel = kernel_of(&layer, 64);
    let mut y = DMatrix::zeros(64, 64);
    kernel
        .forward_with(&mut Pass::eval(&[]), &[], &x, &mut y, Activation::Identity)
        .unwrap();
    assert_eq!(y, x);
    // An eval pass and a train pass say their mode.
    assert_eq!(Pass::train(&[], 0, 0).mode(), Mode::Train);
}

/// Was a bug: dropout zeroes NaN and infinities. PyTorch's CPU dropout multiplies the input by its
/// mask (`input * bernoulli(1 − p) / (1 − p)`, `_dropout_impl`), so a dropped NaN or ±inf is
/// `x · 0 = NaN`, and the backward pass gives `dy · 0 = NaN` where `dy` is NaN; the crate
/// promises NaN and infinities propagate as PyTorch's do. Found: a dropped value is `0.0`
/// whatever it was (`DropoutKernel::masked` writes the constant 0).
#[test]

fn dropout_of_nan_and_infinities_is_nan_where_dropped_as_in_pytorch() {
    let x = DMatrix::from_fn(8, 32, |r, _| match r % 3 {
        0 => f32::NAN,
        1 => f32::INFINITY,
        _ => f32::NEG_INFINITY,
    });
    let y = dropout_train(0.5, &x, 5);
    let dropped = y.iter().filter(|v| **v == 0.0).count();
    assert_eq!(dropped, 0, "{dropped} of 256 non-finite values became 0");
}

#[test]
fn layer_norm_of_one_feature_gives_its_bias_and_zero_input_gradients() -> Result<(), Error> {
    let mut net = Net::new()
        .push(Dense::<U1>::new())
        .push(LayerNorm::new())
        .seed(5)
        .bind::<U2>();
    let x = Batch::<U2>::from_fn(3, |f, s| (f + 2 * s) as f32 - 1.5);
    let y = net.forward(&x);
    assert!(y.as_matrix().iter().all(|v| *v == 0.0), "{y:?}");
    let target = Batch::<U1>::from_fn(3, |_, s| s as f32);
    let (loss, grads) = net.loss_and_grads(&x, &target, Mse)?;
    assert!(loss.is_finite());
    // x − mean is 0: nothing reaches the dense layer or the scale; the shift gets it all.
    for name in ["0.weight", "0.bias", "1.weight"] {
        let g = grads.get(name).unwrap();
        assert!(g.iter().all(|v| *v == 0.0), "{name}: {g}");
    }
    assert!(grads.get("1.bias").unwrap()[0] != 0.0);
    Adam::new(0.1).step(&mut net, &grads)?;
    Ok(())
}

#[test]
fn new_activations_on_nan_infinities_and_huge_values() -> Result<(), Error> {
    let values = [
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::MAX,
        -f32::MAX,
        f32::MIN_POSITIVE,
        -0.0,
        1e30,
        -1e30,
    ];
    let x = Batch::<U9>::from_rows(values)?;
    // Gelu: NaN stays NaN, the limits at ±inf, x for huge x, −0 (or a tiny negative) for −huge.
    let gelu = Net::new().push(Gelu).bind::<U9>().forward(&x);
    let g = gelu.sample(0).unwrap();
    assert!(g[0].is_nan());
    assert_eq!((g[1], g[2]), (f32::INFINITY, 0.0));
    assert_eq!((g[3], g[7]), (f32::MAX, 1e30));
    assert!(g[4] == 0.0 && g[8] == 0.0, "{g:?}");
    // Leaky ReLU: NaN stays NaN; slope · −inf; an infinite slope makes 0 · inf = NaN at −0.
    let leaky = Net::new()
        .push(LeakyRelu::new(f32::INFINITY))
        .bind::<U9>()
        .forward(&x);
    let l = leaky.sample(0).unwrap();
    assert!(l[0].is_nan() && l[6].is_nan(), "{l:?}");
    assert_eq!(
        (l[1], l[2], l[4]),
        (f32::INFINITY, f32::NEG_INFINITY, f32::NEG_INFINITY)
    );
    // Softmax: a sample holding NaN or +inf is all NaN; huge finite values are fine.
    let soft = Net::new().push(Softmax).bind::<U9>().forward(&x);
    assert!(soft.as_matrix().iter().all(|v| v.is_nan()));
    let huge = Batch::<U3>::from_rows([f32::MAX, -f32::MAX, 1e30])?;
    let p = Net::new().push(Softmax).bind::<U3>().forward(&huge);
    assert_eq!(p.sample(0), Some(&[1.0, 0.0, 0.0][..]));
    // Gradients through each on huge inputs are finite where PyTorch's are.
    let net = Net::new()
        .push(Dense::<U3>::new())
        .push(Gelu)
        .push(LeakyRelu::new(-0.5))
        .push(Softmax)
        .seed(6)
        .bind::<U3>();
    let (loss, grads) = net.loss_and_grads(&huge, &Batch::<U3>::zeros(1), Mse)?;
    assert!(loss.is_finite(), "{loss}");
    assert!(grads.first_not_finite().is_none());
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// `fit` and a last batch of one sample.

type FitNet = lazynet::Layers![Dense<U4>, BatchNorm, Relu, Dense<U2>];

fn fit_net() -> Net<Init<U2>, FitNet> {
    Net::new()
        .push(Dense::<U4>::new())
        .push(BatchNorm::new())
        .push(Relu)
        .push(Dense::<U2>::new())
        .seed(8)
        .bind::<U2>()
}

/// Was a bug (design): `fit` knows before its first step that `samples % batch_size == 1` gives
/// every epoch a last batch of one sample, which a flat `BatchNorm` refuses in training; it
/// still trains the first two steps of epoch 1, then fails at step 3, leaving the net
/// half-trained. Its docs list what is checked "before the first step, with nothing changed"
/// (the errors of `loss_and_grads` checked on the whole data); this one is not. Expected: an
/// error before the first step (or, as Keras and PyTorch's `drop_last` do, a setting that
/// drops the short batch). Found: `TrainError::Step { epoch: 1, step: 3, … }` after 2 steps.
#[test]

fn fit_refuses_a_last_batch_of_one_sample_before_changing_the_net() {
    let x = Batch::<U2>::from_fn(9, |f, s| (f * 3 + s) as f32 / 9.0);
    let labels = Labels::<U2>::try_new((0..9).map(|s| s % 2).collect()).unwrap();
    let mut net = fit_net();
    let before = state(&net);
    let fit = Fit::new(2).batch_size(4).quiet();
    assert!(net
        .fit(&x, &labels, CrossEntropy, &mut Adam::new(1e-2), &fit)
        .is_err());
    assert_eq!(state(&net), before);
}

// ---------------------------------------------------------------------------------------------
// Kernels called on their own (`Layer::kernel`, `Pass::eval`, `Buffer::new`).

#[test]
fn buffers_of_absurd_shapes_are_out_of_memory_not_a_panic() {
    for shape in [vec![usize::MAX, 2], vec![2, usize::MAX, 2], vec![1 << 40]] {
        let kind = BufferKind::Values {
            fill: 1.0,
            nonnegative: true,
        };
        let r = caught(|| lazynet::layer::Buffer::new("x", &shape, kind).map(|_| ()));
        match r {
            Ok(Err(ShapeError::OutOfMemory { .. })) => {}
            other => panic!("{shape:?}: {other:?}"),
        }
    }
}

/// Was a bug: `BatchNorm::kernel` multiplies the input's sizes unchecked. `Layer::kernel` and
/// `Kernel::forward_with` are public, for testing a kernel on its own, and every other
/// contract breach of a kernel called so is `ShapeError::Contract`. Input:
/// `BatchNorm::new().kernel(&[2, usize::MAX, 2], …)` (or `&[usize::MAX, 2]`, then
/// `forward_with`). Expected: a kernel whose call is a `Contract` error. Found: "attempt to
/// multiply with overflow" in `kernel` (`input.iter().skip(1).product()`, norm.rs:135) or in
/// `width` (`channels * run`, norm.rs:159) in a debug build; a wrapped width in release.
#[test]

fn a_batch_norm_kernel_of_an_absurd_shape_is_an_error_not_an_overflow() {
    for shape in [vec![2, usize::MAX, 2], vec![usize::MAX, 2]] {
        let result = caught(|| {
            let kernel = BatchNorm::new().kernel(&shape, &shape);
            let params = [
                Param::new("w", &[2], Role::Scale, DMatrix::from_element(2, 1, 1.0)).unwrap(),
                Param::new("b", &[2], Role::Shift, DMatrix::zeros(2, 1)).unwrap(),
            ];
            let x = DMatrix::from_element(4, 3, 1.0f32);
            let mut y = DMatrix::zeros(4, 3);
            kernel.forward_with(
                &mut Pass::eval(&[]),
                &params,
                &x,
                &mut y,
                Activation::Identity,
            )
        });
        match result {
            Ok(Err(ShapeError::Contract { .. })) => {}
            other => panic!("{shape:?}: {other:?}"),
        }
    }
}

/// Was a bug: the `int64` count can be written misaligned. The `safetensors` crate's `serialize`
/// orders tensors by descending dtype alignment, then by name ("Make sure we're sorting by
/// descending dtype alignment"), and pads the header to 8 bytes, so that every tensor's data
/// starts at a multiple of its element size and a reader can cast it in place (zero-copy
/// readers that `bytemuck::cast_slice` an mmap refuse misaligned data). lazynet's writer
/// orders by name only (format.rs: "As the crate does, the tensors' data is in the order of
/// their names", no longer true once an I64 is among them). Input: `Dense(3) BatchNorm` saved:
/// `1.num_batches_tracked` follows `0.bias` (12 bytes), `0.weight` (36) and `1.bias` (12).
/// Found: its data starts at file byte 8 + header + 60, 4 past a multiple of 8.
#[test]

fn every_tensor_is_aligned_to_its_element_size_as_the_safetensors_crate_writes_it() {
    let net = Net::new()
        .push(Dense::<U3>::new())
        .push(BatchNorm::new())
        .bind::<U3>();
    let bytes = net.save_to_bytes().unwrap();
    let (header, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let start = 8 + header;
    for (name, info) in meta.tensors() {
        let size = info.dtype.bitsize() / 8;
        let at = start + info.data_offsets.0;
        assert_eq!(
            at % size,
            0,
            "{name} ({:?}) starts at byte {at}",
            info.dtype
        );
    }
}

/// A layer that counts its calls in a count buffer and records the count its pass shows in
/// each forward and backward call.
#[derive(Clone, Debug, Default)]
struct Counter {
    seen: std::sync::Arc<std::sync::Mutex<Vec<(&'static str, i64)>>>,
}

impl Layer for Counter {
    fn kind(&self) -> &'static str {
        "Counter"
    }
    fn output_shape(
        &self,
        input: Option<&PartialShape>,
    ) -> Result<Option<PartialShape>, lazynet::layer::Fault> {
        Ok(input.cloned())
    }
    fn param_shapes(&self, _: Option<&PartialShape>) -> Vec<(Role, PartialShape)> {
        Vec::new()
    }
    fn kernel(&self, _: &[usize], _: &[usize]) -> Box<dyn Kernel> {
        Box::new(self.clone())
    }
    fn buffers(&self, _: Option<&PartialShape>) -> Vec<BufferSpec> {
        vec![a_count("calls", &[])]
    }
}

lazynet::keeps_shape!(Counter);

fn calls(pass: &Pass<'_>) -> i64 {
    pass.buffers()
        .first()
        .and_then(lazynet::layer::Buffer::count)
        .unwrap_or(-1)
}

impl Kernel for Counter {
    fn forward(
        &self,
        _: &[Param],
        x: &DMatrix<f32>,
        y: &mut DMatrix<f32>,
        _: Activation,
    ) -> Result<(), ShapeError> {
        y.copy_from(x);
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
            dx.copy_from(dy);
        }
        Ok(())
    }
    fn forward_with(
        &self,
        pass: &mut Pass<'_>,
        params: &[Param],
        x: &DMatrix<f32>,
        y: &mut DMatrix<f32>,
        then: Activation,
    ) -> Result<(), ShapeError> {
        let n = calls(pass);
        self.seen.lock().unwrap().push(("forward", n));
        if pass.mode() == Mode::Train {
            pass.set_buffer(0, BufferValue::Count(n + 1))?;
        }
        self.forward(params, x, y, then)
    }
    #[allow(clippy::too_many_arguments)]
    fn backward_with(
        &self,
        pass: &Pass<'_>,
        params: &[Param],
        x: &DMatrix<f32>,
        y: &DMatrix<f32>,
        dy: &DMatrix<f32>,
        grads: &mut [DMatrix<f32>],
        dx: Option<&mut DMatrix<f32>>,
    ) -> Result<(), ShapeError> {
        self.seen.lock().unwrap().push(("backward", calls(pass)));
        self.backward(params, x, y, dy, grads, dx)
    }
}

/// Was a bug (docs or behaviour): `Pass::buffers` promises the buffers "as the pass found them (for a
/// layer used at several places, as its earlier places in this pass left them)". In the
/// forward pass a later place of a tied layer does see them so; in the backward pass of the
/// same training step every place is given the net's buffers instead
/// (`exec::backward` builds its `Pass` from `layers[owner].buffers`, not from the pending
/// ones). Input: a `Shared` layer counting its calls in a count buffer, at places 1 and 3.
/// Expected: backward at place 3 sees what forward at place 3 saw (1). Found: 0. No kernel of
/// the crate reads buffers in backward, so only a user's kernel can be misled.
#[test]

fn a_tied_kernel_sees_the_same_buffers_forward_and_backward_at_each_place() {
    let counter = Counter::default();
    let seen = counter.seen.clone();
    let shared = Shared::new(counter);
    let net = Net::new()
        .push(Dense::<U3>::new())
        .push(shared.clone())
        .push(Dense::<U3>::new())
        .push(shared)
        .push(Dense::<U1>::new())
        .bind::<U2>();
    let x = Batch::<U2>::from_fn(3, |f, s| (f + s) as f32);
    net.loss_and_grads(&x, &Batch::<U1>::zeros(3), Mse).unwrap();
    let seen = seen.lock().unwrap().clone();
    // Forward at places 1 and 3, then backward at places 3 and 1.
    assert_eq!(
        seen,
        [
            ("forward", 0),
            ("forward", 1),
            ("backward", 1),
            ("backward", 0)
        ]
    );
}

/// Was a bug: `WithInput` (what `with_input` returns) forwards every `Layer` method but `buffers`.
/// `BatchNorm::new().with_input::<U3>()` compiles (BatchNorm, like any layer that declares
/// nothing, offers `with_input`), binds with no buffers, and its kernel is then given none.
/// Expected: the running statistics of a BatchNorm, listed and used. Found: `named_buffers` is
/// empty and `forward` panics with "cannot run the net: a call to the BatchNorm kernel broke
/// its contract: it was given 0 buffers but keeps 3 (running_mean, running_var,
/// num_batches_tracked)"; `try_forward` and `loss_and_grads` return that error. (LayerNorm and
/// Dropout own no buffers and work declared so.)
#[test]

fn a_batch_norm_that_declares_its_input_keeps_its_buffers() {
    let net = Net::new()
        .push(BatchNorm::new().with_input::<U3>())
        .push(Dense::<U2>::new())
        .bind::<U3>();
    assert_eq!(
        buffer_names(&net),
        ["0.running_mean", "0.running_var", "0.num_batches_tracked"]
    );
    let x = Batch::<U3>::from_fn(4, |f, s| (f + s) as f32);
    caught(|| net.forward(&x)).unwrap();
}

/// Was a bug (low): `Shared` forwards `param_shapes`, `scratch`, `fans`… of its layer but not
/// `buffers`: `Shared::new(BatchNorm::new()).buffers(…)` is empty. A net is not affected (the
/// planner opens `Shared` through `parts`), but a layer that wraps a `Shared` and forwards to
/// it, as the docs invite, loses the buffers as `WithInput` does.
#[test]

fn a_shared_layer_reports_its_layers_buffers() {
    let input = PartialShape::from_dims(&[3]);
    let bn = BatchNorm::new();
    let shared = Shared::<_, ()>::new(bn);
    assert_eq!(
        shared.buffers(Some(&input)).len(),
        bn.buffers(Some(&input)).len()
    );
}
