//! Nets with `BatchNorm`, `LayerNorm` and `Dropout` never panic: random nets (flat and image,
//! every width given at run time, some 0, 1 or too large for memory, random probabilities,
//! normalizations chosen at run time in slots, a residual block and a tied batch normalization)
//! on random batches (from 0 samples, some holding NaN, infinities or values near `f32::MAX`)
//! go through binding (`try_bind`, `bind`, `forward_init`), `Display`, a forward pass,
//! `predict_classes`, `evaluate`, `loss_and_grads` with both losses, an optimizer step (Adam or
//! SGD with momentum), `fit` for an epoch, `save_to_bytes`, `load_from_bytes` (of the saved
//! bytes, of corrupted bytes, and of files whose running statistics were replaced),
//! `load_infer_weights` and `named_buffers`; and the three layers' kernels are called on their
//! own with parameters, buffers and matrices that fit and that do not. Errors are fine, panics
//! are not; on the way the promises that hold whatever the input are checked:
//! * an inference pass keeps the batch's shape and, on finite values in a fresh net, gives
//!   finite values;
//! * `loss_and_grads` fails only for an empty batch, a batch norm's training batch of one value
//!   per feature, or memory, and its gradients are named and shaped as the parameters;
//! * a step either succeeds, leaving every parameter finite, every running variance at least
//!   0 and not NaN, and every `num_batches_tracked` one higher per place of its layer, or fails
//!   and changes nothing;
//! * a training pass changes nothing in the net;
//! * saved bytes load back to the same parameters and buffers, bit for bit; a load that fails
//!   changes nothing; a load that succeeds leaves valid buffers.
//!
//! A running variance of +∞ is valid here: a batch of values near `f32::MAX` has a variance
//! past `f32`'s range, which a step writes as +∞, as PyTorch does (inference then gives the
//! bias). A `fit` whose last batch holds one sample fails at that step when a batch
//! normalization sees one value per feature (PyTorch's rule, without a `drop_last`).

use lazynet::layer::{
    Activation, Buffer, BufferKind, BufferSpec, BufferValue, DeclaresInput, Fault, Infer, Kernel,
    Layer, LayerOn, Param, PartialShape, Pass,
};
use lazynet::list::{Chain, Follows};
use lazynet::nalgebra::DMatrix;
use lazynet::prelude::*;
use lazynet::rules::Proven;
use lazynet::train::TargetFor;
use proptest::prelude::*;
use safetensors::tensor::{Dtype, TensorView};

fn fail(e: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(e.to_string())
}

/// One of the layers that keep their shape, chosen at run time: so that a net of one type
/// holds batch normalizations, layer normalizations and dropouts at places drawn per case. It
/// delegates every method, its buffers included, to the layer it holds.
#[derive(Clone, Debug)]
enum Slot {
    BatchNorm(BatchNorm),
    LayerNorm(LayerNorm),
    Dropout(Dropout),
    Relu,
    Identity,
}

impl Slot {
    fn layer(&self) -> &dyn Layer {
        match self {
            Slot::BatchNorm(l) => l,
            Slot::LayerNorm(l) => l,
            Slot::Dropout(d) => d,
            Slot::Relu => &Relu,
            Slot::Identity => &Identity,
        }
    }
}

impl Layer for Slot {
    fn kind(&self) -> &'static str {
        self.layer().kind()
    }
    fn output_shape(&self, input: Option<&PartialShape>) -> Result<Option<PartialShape>, Fault> {
        self.layer().output_shape(input)
    }
    fn param_shapes(&self, input: Option<&PartialShape>) -> Vec<(Role, PartialShape)> {
        self.layer().param_shapes(input)
    }
    fn kernel(&self, input: &[usize], output: &[usize]) -> Box<dyn Kernel> {
        self.layer().kernel(input, output)
    }
    fn fans(&self, input: &[usize], output: &[usize]) -> Option<(usize, usize)> {
        self.layer().fans(input, output)
    }
    fn scratch(&self, input: &[usize], output: &[usize]) -> Vec<(&'static str, Vec<usize>)> {
        self.layer().scratch(input, output)
    }
    fn buffers(&self, input: Option<&PartialShape>) -> Vec<BufferSpec> {
        self.layer().buffers(input)
    }
}

impl<Prev> Follows<Prev> for Slot {
    type Known = Prev;
}

impl DeclaresInput for Slot {
    type Input = Infer;
}

impl<In: Shape, Known> LayerOn<In, Known> for Slot {
    type Out = In;
    type Checks = Proven;
}

/// A slot: mostly a normalization or a dropout, now and then an activation or nothing.
fn slot() -> impl Strategy<Value = Slot> {
    prop_oneof![
        3 => Just(Slot::BatchNorm(BatchNorm::new())),
        3 => Just(Slot::LayerNorm(LayerNorm::new())),
        3 => probability().prop_map(|p| Slot::Dropout(Dropout::new(p).unwrap())),
        1 => Just(Slot::Relu),
        1 => Just(Slot::Identity),
    ]
}

/// A dropout probability: 0, common ones, any below 1, or the largest `f32` below 1.
fn probability() -> impl Strategy<Value = f32> {
    prop_oneof![
        1 => Just(0.0f32),
        2 => prop::sample::select(vec![0.1f32, 0.5, 0.9]),
        2 => 0.0f32..1.0,
        1 => Just(1.0 - f32::EPSILON / 2.0),
    ]
}

/// A width: mostly 1 to 4, now and then 0 (refused at binding) or too large for memory.
fn width() -> impl Strategy<Value = usize> {
    prop_oneof![1 => Just(0usize), 20 => 1usize..=4, 1 => Just(1usize << 40)]
}

/// The tied batch normalization of [`FlatNet`].
type TiedBn = Shared<BatchNorm, ()>;

/// `s0 Dense(w0) BatchNorm s1 Dropout(p) Residual(Dense(r) BatchNorm Relu) tie LayerNorm s2
/// Dense(w1) tie Dense(out)`: a tied batch normalization at 6 and 10.
type FlatNet = lazynet::Layers![
    Slot,
    Dense<Dyn>,
    BatchNorm,
    Slot,
    Dropout,
    Residual<lazynet::Layers![Dense<Dyn>, BatchNorm, Relu]>,
    TiedBn,
    LayerNorm,
    Slot,
    Dense<Dyn>,
    TiedBn,
    Dense<Dyn>
];

/// The numbers of a [`FlatNet`].
#[derive(Clone, Debug)]
struct FlatSpec {
    slots: [Slot; 3],
    p: f32,
    /// `[w0, r, w1, out]`.
    w: [usize; 4],
}

fn flat_spec() -> impl Strategy<Value = FlatSpec> {
    (
        [slot(), slot(), slot()],
        probability(),
        [width(), width(), width(), width()],
        any::<bool>(),
    )
        .prop_map(|(slots, p, mut w, fit)| {
            if fit {
                // The residual body gives back its input, the tie's places agree.
                w[1] = w[0];
                w[2] = w[0];
            }
            FlatSpec { slots, p, w }
        })
}

fn flat_net(spec: &FlatSpec, seed: u64) -> Net<Uninit, FlatNet> {
    let [s0, s1, s2] = spec.slots.clone();
    let [w0, r, w1, out] = spec.w;
    let tie: TiedBn = Shared::new(BatchNorm::new());
    Net::new()
        .push(s0)
        .push(Dense::dynamic(w0))
        .push(BatchNorm::new())
        .push(s1)
        .push(Dropout::new(spec.p).unwrap())
        .push(Residual::new(
            Net::new()
                .push(Dense::dynamic(r))
                .push(BatchNorm::new())
                .push(Relu),
        ))
        .push(tie.clone())
        .push(LayerNorm::new())
        .push(s2)
        .push(Dense::dynamic(w1))
        .push(tie)
        .push(Dense::dynamic(out))
        .seed(seed)
}

/// The image net's convolution: run-time channels, kernel and padding.
type Conv = Conv2d<Dyn, Dyn, U1, Dyn, U1>;

/// `Conv BatchNorm s0 Dropout(p) Conv s1 MaxPool(2) s2 Flatten s3 Dense(out)`.
type ImageNet = lazynet::Layers![
    Conv,
    BatchNorm,
    Slot,
    Dropout,
    Conv,
    Slot,
    MaxPool2d<Dyn>,
    Slot,
    Flatten,
    Slot,
    Dense<Dyn>
];

/// The numbers of an [`ImageNet`].
#[derive(Clone, Debug)]
struct ImageSpec {
    slots: [Slot; 4],
    p: f32,
    /// Channels of both convolutions, then the dense layer's width.
    w: [usize; 3],
    /// Kernels and paddings of both convolutions.
    k: [usize; 2],
    pad: [usize; 2],
}

fn image_spec() -> impl Strategy<Value = ImageSpec> {
    (
        [slot(), slot(), slot(), slot()],
        probability(),
        [width(), width(), width()],
        [1usize..=3, 1usize..=3],
        [0usize..=1, 0usize..=1],
    )
        .prop_map(|(slots, p, w, k, pad)| ImageSpec {
            slots,
            p,
            w,
            k,
            pad,
        })
}

fn image_net(spec: &ImageSpec, seed: u64) -> Net<Uninit, ImageNet> {
    let [s0, s1, s2, s3] = spec.slots.clone();
    let conv = |c: usize, k: usize, p: usize| -> Conv { Conv2d::dynamic(c, k).padding_size(p) };
    Net::new()
        .push(conv(spec.w[0], spec.k[0], spec.pad[0]))
        .push(BatchNorm::new())
        .push(s0)
        .push(Dropout::new(spec.p).unwrap())
        .push(conv(spec.w[1], spec.k[1], spec.pad[1]))
        .push(s1)
        .push(MaxPool2d::dynamic(2))
        .push(s2)
        .push(Flatten)
        .push(s3)
        .push(Dense::dynamic(spec.w[2]))
        .seed(seed)
}

/// What a batch holds besides values in [-1, 1).
#[derive(Clone, Copy, Debug)]
enum Values {
    Plain,
    /// One NaN.
    Nan,
    /// One +∞ and one −∞.
    Infinite,
    /// Every value near ±`f32::MAX`.
    Huge,
    /// Every sample the same (a variance of 0 over the batch).
    Constant,
}

fn values() -> impl Strategy<Value = Values> {
    prop_oneof![
        6 => Just(Values::Plain),
        1 => Just(Values::Nan),
        1 => Just(Values::Infinite),
        1 => Just(Values::Huge),
        1 => Just(Values::Constant),
    ]
}

/// `features × samples` values of kind `kind`, from a seed.
/// `None` when they would be more than 2^20.
fn batch_values(features: usize, samples: usize, kind: Values, seed: u64) -> Option<DMatrix<f32>> {
    let mut rng = InitRng::new(seed, "batch");
    let len = features.checked_mul(samples).filter(|&n| n <= 1 << 20)?;
    let mut m = DMatrix::from_fn(features, samples, |f, _| match kind {
        Values::Constant => f as f32 / 3.0 - 0.5,
        Values::Huge => rng.uniform(-1.0, 1.0) * f32::MAX,
        _ => rng.uniform(-1.0, 1.0),
    });
    let mut at = || ((rng.next_f64() * len as f64) as usize).min(len.saturating_sub(1));
    if len > 0 {
        match kind {
            Values::Nan => {
                let i = at();
                m[i] = f32::NAN;
            }
            Values::Infinite => {
                let (i, j) = (at(), at());
                m[i] = f32::INFINITY;
                m[j] = f32::NEG_INFINITY;
            }
            _ => {}
        }
    }
    Some(m)
}

/// Every parameter and buffer of a net, as bits (NaN equals itself).
type State = (
    Vec<(String, Vec<u32>)>,
    Vec<(String, Result<Vec<u32>, i64>)>,
);

fn state<S: lazynet::Bound, L: lazynet::list::Layers>(net: &Net<S, L>) -> State {
    (
        net.named_params()
            .map(|(n, m)| (n.to_owned(), m.iter().map(|v| v.to_bits()).collect()))
            .collect(),
        net.named_buffers()
            .map(|b| {
                let value = match b.value() {
                    BufferValue::Values(v) => Ok(v.iter().map(|x| x.to_bits()).collect()),
                    BufferValue::Count(c) => Err(*c),
                };
                (b.name().to_owned(), value)
            })
            .collect(),
    )
}

/// Every buffer holds what it may: running variances at least 0 and not NaN, counts from 0
/// up; and the names are unique, three per batch normalization.
fn buffers_are_valid<S: lazynet::Bound, L: lazynet::list::Layers>(
    net: &Net<S, L>,
    what: &str,
) -> Result<(), TestCaseError> {
    let mut names = Vec::new();
    for b in net.named_buffers() {
        match b.value() {
            BufferValue::Values(v) => {
                prop_assert_eq!(v.nrows(), b.shape().first().copied().unwrap_or(1));
                if b.name().ends_with("running_var") {
                    prop_assert!(
                        v.iter().all(|x| *x >= 0.0),
                        "{}: {} holds {:?}",
                        what,
                        b.name(),
                        v.as_slice()
                    );
                }
            }
            BufferValue::Count(c) => prop_assert!(*c >= 0, "{}: {} is {}", what, b.name(), c),
        }
        names.push(b.name().to_owned());
    }
    let count = names.len();
    names.sort();
    names.dedup();
    prop_assert_eq!(names.len(), count, "{}: buffer names are unique", what);
    let means = net
        .named_buffers()
        .filter(|b| b.name().ends_with(".running_mean"))
        .count();
    prop_assert_eq!(count, 3 * means, "{}: three buffers per batch norm", what);
    Ok(())
}

/// Whether an error is one a net too large for memory may give.
fn too_large(err: &ShapeError) -> bool {
    match err {
        ShapeError::TooLarge { .. } | ShapeError::OutOfMemory { .. } => true,
        ShapeError::InBlock { source, .. } => too_large(source),
        _ => false,
    }
}

/// Whether a training pass may fail so: a batch normalization given one value per feature.
fn one_value_per_feature(err: &ShapeError) -> bool {
    match err {
        ShapeError::BatchTooSmall { values, .. } => *values < 2,
        ShapeError::InBlock { source, .. } => one_value_per_feature(source),
        _ => false,
    }
}

/// The safetensors bytes of `bytes` with every tensor named in `edits` replaced by the given
/// little-endian bytes of the given type and shape.
fn edited(
    bytes: &[u8],
    edits: &[(String, Dtype, Vec<usize>, Vec<u8>)],
) -> Result<Vec<u8>, TestCaseError> {
    let file = safetensors::SafeTensors::deserialize(bytes).map_err(fail)?;
    let mut views = Vec::new();
    for (name, view) in file.tensors() {
        let view = match edits.iter().find(|e| e.0 == name) {
            Some((_, dtype, shape, data)) => {
                TensorView::new(*dtype, shape.clone(), data).map_err(fail)?
            }
            None => view,
        };
        views.push((name, view));
    }
    safetensors::serialize(views, None).map_err(fail)
}

/// How a case corrupts the saved bytes.
#[derive(Clone, Debug)]
enum Corruption {
    /// Bytes at these fractions of the length xor-ed with these values.
    Flip(Vec<(f64, u8)>),
    /// Cut at this fraction of the length.
    Truncate(f64),
    /// These bytes appended.
    Append(Vec<u8>),
    /// Every running variance set to this value.
    Variance(f32),
    /// Every running mean set to this value.
    Mean(f32),
    /// Every count set to this value.
    Count(i64),
}

fn corruption() -> impl Strategy<Value = Corruption> {
    prop_oneof![
        prop::collection::vec((0.0f64..1.0, 1u8..=255), 1..4).prop_map(Corruption::Flip),
        (0.0f64..1.0).prop_map(Corruption::Truncate),
        prop::collection::vec(any::<u8>(), 1..16).prop_map(Corruption::Append),
        prop::sample::select(vec![-1.0f32, f32::NAN, f32::INFINITY, 0.0, 1e-30])
            .prop_map(Corruption::Variance),
        prop::sample::select(vec![f32::NAN, f32::INFINITY, -f32::MAX]).prop_map(Corruption::Mean),
        prop::sample::select(vec![-1i64, 0, i64::MAX, i64::MAX - 1]).prop_map(Corruption::Count),
    ]
}

/// `bytes` corrupted as `how` says, for a net whose buffers are `buffers`.
fn corrupt(
    bytes: &[u8],
    how: &Corruption,
    buffers: &[(String, Vec<usize>)],
) -> Result<Vec<u8>, TestCaseError> {
    let at = |f: f64| ((f * bytes.len() as f64) as usize).min(bytes.len().saturating_sub(1));
    let replace = |suffix: &str, dtype: Dtype, value: &[u8]| {
        let edits: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = buffers
            .iter()
            .filter(|(n, _)| n.ends_with(suffix))
            .map(|(n, shape)| {
                let count: usize = shape.iter().product();
                let data = value.repeat(count);
                (n.clone(), dtype, shape.clone(), data)
            })
            .collect();
        edited(bytes, &edits)
    };
    match how {
        Corruption::Flip(flips) => {
            let mut b = bytes.to_vec();
            for &(f, x) in flips {
                if let Some(v) = b.get_mut(at(f)) {
                    *v ^= x;
                }
            }
            Ok(b)
        }
        Corruption::Truncate(f) => Ok(bytes[..at(*f)].to_vec()),
        Corruption::Append(extra) => Ok([bytes, extra].concat()),
        Corruption::Variance(v) => replace(".running_var", Dtype::F32, &v.to_le_bytes()),
        Corruption::Mean(v) => replace(".running_mean", Dtype::F32, &v.to_le_bytes()),
        Corruption::Count(c) => replace(".num_batches_tracked", Dtype::I64, &c.to_le_bytes()),
    }
}

/// What a case does with a bound net besides the forward pass.
#[derive(Clone, Debug)]
struct Plan {
    adam: bool,
    batch_size: usize,
    corruption: Corruption,
}

fn plan() -> impl Strategy<Value = Plan> {
    (any::<bool>(), 1usize..=4, corruption()).prop_map(|(adam, batch_size, corruption)| Plan {
        adam,
        batch_size,
        corruption,
    })
}

/// Runs a bound net through everything a user does with it; none of it may panic. `fresh(k)`
/// binds the declaration again with its seed changed by `k`; `places` gives, per batch
/// normalization that is tied, the prefix of its buffers' names and its number of places;
/// `huge`: a width may be too large for memory.
#[allow(clippy::too_many_arguments)]
fn exercise<N, L, M>(
    net: &Net<Init<N>, L>,
    x: &Batch<M>,
    kind: Values,
    fresh: &dyn Fn(u64) -> Result<Net<Init<N>, L>, ShapeError>,
    places: &[(&str, i64)],
    huge: bool,
    plan: &Plan,
    seed: u64,
) -> Result<(), TestCaseError>
where
    N: Shape,
    L: Chain<N> + Clone,
    M: Shape,
    Batch<Dyn>: TargetFor<<<L as Chain<N>>::Out as Shape>::Flat>,
    Labels<Dyn>: TargetFor<<<L as Chain<N>>::Out as Shape>::Flat>,
{
    let _ = format!("{net}");
    buffers_are_valid(net, "bound")?;
    let samples = x.samples();
    let width: usize = net.output_dims().iter().product();
    let oom = |err: &ShapeError| -> Result<(), TestCaseError> {
        prop_assert!(huge && too_large(err), "{:?}", err);
        Ok(())
    };

    // Inference.
    match net.try_forward(x) {
        Ok(y) => {
            prop_assert_eq!(y.as_matrix().shape(), (width, samples));
            if matches!(kind, Values::Plain | Values::Constant) {
                prop_assert!(
                    y.as_matrix().iter().all(|v| v.is_finite()),
                    "finite values in, {:?} out",
                    y.as_matrix().as_slice()
                );
            }
        }
        Err(err) => return oom(&err),
    }
    let _ = net.predict_classes(x);

    // Targets: regression values, and labels when there is a class.
    let mut rng = InitRng::new(seed, "targets");
    let targets =
        Batch::try_from_fn_dyn(width, samples, |_, _| rng.uniform(-1.0, 1.0)).map_err(fail)?;
    let labels = Labels::try_dynamic(
        width,
        (0..samples)
            .map(|_| ((rng.next_f64() * width as f64) as usize).min(width.saturating_sub(1)))
            .collect(),
    )
    .ok();
    let _ = net.evaluate(x, &targets, Mse);
    if let Some(labels) = &labels {
        let _ = net.evaluate(x, labels, CrossEntropy);
    }

    // Training passes: they change nothing.
    let before = state(net);
    let names: Vec<String> = net.named_params().map(|(n, _)| n.to_owned()).collect();
    let mut passes = vec![net.loss_and_grads(x, &targets, Mse)];
    if let Some(labels) = &labels {
        passes.push(net.loss_and_grads(x, labels, CrossEntropy));
    }
    prop_assert!(state(net) == before, "a training pass changed the net");
    let mut trained = net.clone();
    for pass in passes {
        let grads = match pass {
            Ok((_, grads)) => grads,
            Err(ShapeError::EmptyBatch) if samples == 0 => continue,
            Err(err) if one_value_per_feature(&err) => continue,
            Err(err) => return oom(&err),
        };
        prop_assert!(samples > 0);
        let grad_names: Vec<&str> = grads.named_grads().map(|(n, _)| n).collect();
        prop_assert_eq!(&grad_names, &names);
        for ((_, g), (_, p)) in grads.named_grads().zip(net.named_params()) {
            prop_assert_eq!(g.shape(), p.shape());
        }

        // A step of the net the pass ran on: all or nothing.
        let mut stepped = net.clone();
        let step = if plan.adam {
            Adam::new(1e-2).step(&mut stepped, &grads)
        } else {
            Sgd::new(0.1).momentum(0.9).step(&mut stepped, &grads)
        };
        match step {
            Ok(()) => {
                prop_assert!(
                    stepped
                        .named_params()
                        .all(|(_, v)| v.iter().all(|x| x.is_finite())),
                    "a step wrote a value that is not finite"
                );
                buffers_are_valid(&stepped, "after a step")?;
                for b in net.named_buffers() {
                    let Some(count) = b.count() else { continue };
                    let prefix = b.name().trim_end_matches("num_batches_tracked");
                    let times = places
                        .iter()
                        .find(|(p, _)| *p == prefix)
                        .map_or(1, |(_, t)| *t);
                    let now = stepped.named_buffers().find(|s| s.name() == b.name());
                    prop_assert_eq!(
                        now.and_then(|s| s.count()),
                        Some(count + times),
                        "{}",
                        b.name()
                    );
                }
                trained = stepped;
            }
            Err(err) => {
                prop_assert!(
                    state(&stepped) == before,
                    "a refused step changed the net: {}",
                    err
                );
            }
        }
    }

    // An epoch of fit.
    let fit = Fit::new(1).batch_size(plan.batch_size).seed(seed).quiet();
    let result = if plan.adam {
        trained.fit(x, &targets, Mse, &mut Adam::new(1e-3), &fit)
    } else {
        trained.fit(x, &targets, Mse, &mut Sgd::new(0.01), &fit)
    };
    if let Err(TrainError::Shape(err)) = &result {
        prop_assert!(
            samples == 0 || one_value_per_feature(err) || (huge && too_large(err)),
            "{:?}",
            err
        );
    }
    prop_assert!(
        trained
            .named_params()
            .all(|(_, v)| v.iter().all(|x| x.is_finite())),
        "fit wrote a value that is not finite"
    );
    buffers_are_valid(&trained, "after fit")?;

    // Saved and loaded: the same parameters and buffers, bit for bit.
    let bytes = trained.save_to_bytes().map_err(fail)?;
    let mut loaded = fresh(1).map_err(fail)?;
    loaded.load_from_bytes(&bytes).map_err(fail)?;
    prop_assert!(state(&loaded) == state(&trained), "a load gave another net");

    // Corrupted: an error that changes nothing, or a net with valid buffers.
    let buffers: Vec<(String, Vec<usize>)> = trained
        .named_buffers()
        .map(|b| (b.name().to_owned(), b.shape().to_vec()))
        .collect();
    let bad = corrupt(&bytes, &plan.corruption, &buffers)?;
    let mut target = fresh(2).map_err(fail)?;
    let untouched = state(&target);
    match target.load_from_bytes(&bad) {
        Ok(()) => {
            buffers_are_valid(&target, "after loading corrupted bytes")?;
            // The loaded net still runs, trains and saves (errors allowed).
            let _ = target.try_forward(x);
            if let Ok((_, grads)) = target.loss_and_grads(x, &targets, Mse) {
                let _ = Sgd::new(0.1).step(&mut target, &grads);
            }
            let _ = target.save_to_bytes();
            buffers_are_valid(&target, "after a step of the corrupted net")?;
        }
        Err(_) => prop_assert!(state(&target) == untouched, "a failed load changed the net"),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Flat nets with batch and layer normalizations, dropouts, a residual block holding a
    /// batch normalization and a tied batch normalization, every width at run time.
    #[test]
    fn flat_nets_with_normalization_and_dropout_never_panic(
        spec in flat_spec(),
        n in prop_oneof![1 => Just(0usize), 12 => 1usize..=4, 1 => Just(1usize << 40)],
        samples in prop_oneof![1 => Just(0usize), 2 => Just(1usize), 4 => 2usize..=5],
        kind in values(),
        plan in plan(),
        seed in any::<u64>(),
    ) {
        let decl = flat_net(&spec, seed);
        let _ = format!("{decl}");
        let huge = spec.w.iter().chain([&n]).any(|&v| v > 4);
        let net = match decl.try_bind(n) {
            Ok(net) => net,
            Err(err) => {
                prop_assert!(!matches!(err, ShapeError::Contract { .. }), "{:?}", err);
                return Ok(());
            }
        };
        let x = match batch_values(n, samples, kind, seed) {
            Some(m) => Batch::<Dyn>::try_from_matrix(m).map_err(fail)?,
            None => {
                prop_assert!(huge);
                return Ok(());
            }
        };
        // The first batch binds the declaration too.
        let _ = flat_net(&spec, seed).forward_init(&x);
        let fresh = |k| flat_net(&spec, seed ^ k).try_bind(n);
        exercise(&net, &x, kind, &fresh, &[("6.", 2)], huge, &plan, seed)?;

        // The input size read from a file: the first weight's columns. A normalization first
        // has a weight of one dimension, which `load_infer` refuses (an error, as documented).
        if !huge {
            let bytes = net.save_to_bytes().map_err(fail)?;
            let weights = Weights::from_bytes(&bytes).map_err(fail)?;
            let inferred = flat_net(&spec, seed ^ 3).load_infer_weights(&weights, LoadOptions::new());
            match (&spec.slots[0], inferred) {
                (Slot::BatchNorm(_) | Slot::LayerNorm(_), Err(_)) => {}
                (_, Ok(inferred)) => {
                    prop_assert_eq!(inferred.input(), Dyn(n));
                    prop_assert!(state(&inferred) == state(&net), "load_infer gave another net");
                }
                (_, Err(err)) => return Err(fail(err)),
            }
        }
    }

    /// Image nets with batch normalizations over channels, dropouts and normalizations in
    /// slots before and after the flatten (a layer normalization of an image is refused at
    /// binding), every number at run time.
    #[test]
    fn image_nets_with_normalization_and_dropout_never_panic(
        spec in image_spec(),
        [c, h, w] in [1usize..=2, 1usize..=5, 1usize..=5],
        samples in prop_oneof![1 => Just(0usize), 2 => Just(1usize), 3 => 2usize..=3],
        kind in values(),
        plan in plan(),
        seed in any::<u64>(),
    ) {
        let decl = image_net(&spec, seed);
        let huge = spec.w.iter().any(|&v| v > 4);
        let shape = Image::dynamic(c, h, w);
        let net = match decl.try_bind(shape) {
            Ok(net) => net,
            Err(err) => {
                prop_assert!(!matches!(err, ShapeError::Contract { .. }), "{:?}", err);
                return Ok(());
            }
        };
        let m = batch_values(c * h * w, samples, kind, seed).ok_or_else(|| fail("no batch"))?;
        let x = Batch::try_with_shape(shape, m).map_err(fail)?;
        let fresh = |k| image_net(&spec, seed ^ k).try_bind(shape);
        exercise(&net, &x, kind, &fresh, &[], huge, &plan, seed)?;
    }

    /// A net bound by the compiler, with every new layer, on random batches.
    #[test]
    fn statically_bound_nets_with_normalization_and_dropout_never_panic(
        p in probability(),
        samples in 0usize..=4,
        kind in values(),
        plan in plan(),
        seed in any::<u64>(),
    ) {
        let decl = Net::new()
            .push(BatchNorm::new())
            .push(Dense::<U4>::new())
            .push(BatchNorm::new())
            .push(Relu)
            .push(Dropout::new(p).unwrap())
            .push(LayerNorm::new())
            .push(Dense::<U2>::new())
            .seed(seed);
        let net = decl.clone().bind::<U3>();
        let m = batch_values(3, samples, kind, seed).ok_or_else(|| fail("no batch"))?;
        let x = Batch::<Dyn>::try_from_matrix(m).map_err(fail)?;
        let _ = decl.forward_init(&x);
        let fresh = |k| Ok(decl.clone().seed(seed ^ k).bind::<U3>());
        exercise(&net, &x, kind, &fresh, &[], false, &plan, seed)?;
    }
}

/// A parameter for a kernel called on its own: `len` values, as a column (`flat`) or as a
/// `len × 2` matrix (another rank than a normalization's).
fn param(name: &str, len: usize, flat: bool, fill: f32) -> Result<Param, TestCaseError> {
    let (shape, value) = if flat {
        (vec![len], DMatrix::from_element(len, 1, fill))
    } else {
        (vec![len, 2], DMatrix::from_element(len, 2, fill))
    };
    Param::new(name, &shape, Role::Weight, value).map_err(fail)
}

/// The buffers a batch normalization kernel is given: right, missing, of another length, of
/// another kind, or in another order.
fn kernel_buffers(channels: usize, how: usize) -> Result<Vec<Buffer>, TestCaseError> {
    let values = |name: &str, len: usize, fill: f32| {
        let kind = BufferKind::Values {
            fill,
            nonnegative: name == "running_var",
        };
        Buffer::new(name, &[len], kind).map_err(fail)
    };
    let count = || Buffer::new("num_batches_tracked", &[], BufferKind::Count).map_err(fail);
    Ok(match how {
        0 => vec![
            values("running_mean", channels, 0.0)?,
            values("running_var", channels, 1.0)?,
            count()?,
        ],
        1 => Vec::new(),
        2 => vec![
            values("running_mean", channels + 1, 0.0)?,
            values("running_var", channels, 1.0)?,
            count()?,
        ],
        3 => vec![count()?, values("running_var", channels, 1.0)?, count()?],
        _ => vec![
            values("running_var", channels, 1.0)?,
            values("running_mean", channels, 0.0)?,
        ],
    })
}

/// `right` three times in four, else any below `end`.
fn mostly(right: usize, end: usize) -> impl Strategy<Value = usize> {
    prop_oneof![3 => Just(right), 1 => 0..end]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// The kernels of `BatchNorm`, `LayerNorm` and `Dropout` called on their own, as a user's
    /// test of a kernel calls them (`Layer::kernel`, `Param::new`, `Buffer::new`,
    /// `Pass::train`/`Pass::eval`), with shapes that fit and shapes that do not: parameters
    /// and buffers missing, of other lengths, kinds or ranks; inputs, outputs and gradients of
    /// other sizes; empty batches. Errors, never a panic.
    #[test]
    fn normalization_and_dropout_kernels_never_panic(
        which in 0usize..3,
        p in probability(),
        input in prop::collection::vec(0usize..4, 1..=3),
        samples in 0usize..4,
        [x_delta, y_delta, dy_delta, dx_delta] in [mostly(0, 3), mostly(0, 3), mostly(0, 3), mostly(0, 3)],
        params in mostly(2, 4),
        [param_delta, flat_params] in [mostly(0, 3), mostly(0, 4)],
        buffers in mostly(0, 5),
        train in any::<bool>(),
        act in prop::sample::select(vec![
            Activation::Identity, Activation::Relu, Activation::Sigmoid, Activation::Tanh,
        ]),
        with_dx in any::<bool>(),
        grads in mostly(2, 4),
        seed in any::<u64>(),
    ) {
        let layer: Box<dyn Layer> = match which {
            0 => Box::new(BatchNorm::new()),
            1 => Box::new(LayerNorm::new()),
            _ => Box::new(Dropout::new(p).unwrap()),
        };
        let output = match layer.output_shape(Some(&PartialShape::from_dims(&input))) {
            Ok(Some(shape)) => shape.known().unwrap_or_else(|| input.clone()),
            _ => input.clone(),
        };
        let kernel = layer.kernel(&input, &output);
        let width: usize = input.iter().product();
        let channels = input[0];
        // A size off by `delta`: 0 the right one, 1 one more, 2 one less (or 0).
        let off = |n: usize, delta: usize| match delta {
            0 => n,
            1 => n + 1,
            _ => n.saturating_sub(1),
        };
        let len = off(channels, param_delta);
        let ps = (0..params)
            .map(|i| param(&format!("0.p{i}"), len, flat_params != 1, 1.0 - i as f32))
            .collect::<Result<Vec<_>, _>>()?;
        let bufs = kernel_buffers(channels, buffers)?;
        let mut rng = InitRng::new(seed, "kernel");
        let mut random = |rows: usize| DMatrix::from_fn(rows, samples, |_, _| rng.uniform(-2.0, 2.0));
        let x = random(off(width, x_delta));
        let mut y = DMatrix::zeros(off(width, y_delta), samples);
        let dy = random(off(width, dy_delta));
        let mut dx = DMatrix::zeros(off(width, dx_delta), samples);
        let mut gs: Vec<DMatrix<f32>> = (0..grads).map(|_| DMatrix::zeros(len, 1)).collect();

        let _ = kernel.forward(&ps, &x, &mut y, act);
        let _ = kernel.backward(&ps, &x, &y, &dy, &mut gs, with_dx.then_some(&mut dx));
        let mut pass = if train { Pass::train(&bufs, seed, 3) } else { Pass::eval(&bufs) };
        let forward = kernel.forward_with(&mut pass, &ps, &x, &mut y, act);
        // A forward pass that succeeded wrote only the buffers it may, with values that fit.
        if forward.is_ok() {
            for (i, buffer) in bufs.iter().enumerate() {
                if let Some(v) = pass.updated(i) {
                    prop_assert!(train, "an inference pass changed a buffer");
                    match (v, buffer.value()) {
                        (BufferValue::Values(new), BufferValue::Values(old)) => {
                            prop_assert_eq!(new.shape(), old.shape())
                        }
                        (BufferValue::Count(new), BufferValue::Count(old)) => {
                            prop_assert_eq!(*new, old + 1)
                        }
                        _ => prop_assert!(false, "a buffer changed kind"),
                    }
                }
            }
        }
        let _ = kernel.backward_with(&pass, &ps, &x, &y, &dy, &mut gs, with_dx.then_some(&mut dx));
    }
}
