//! Properties over random widths, input sizes, seeds and batches.

use lazynet::list::Chain;
use lazynet::nalgebra::DMatrix;
use lazynet::prelude::*;
use lazynet::train::TargetFor;
use proptest::prelude::*;
use safetensors::tensor::{Dtype, TensorView};

use crate::strategies::{
    composite_width, maybe_same, random_matrix, snapshot, static_size, static_size_index, widths,
    Snapshot,
};
use crate::with_static_size;

/// Dense(w0) → Relu → Dense(w1) → Tanh → Dense(w2) → Sigmoid, widths at run time.
type Mlp = lazynet::Layers![Dense<Dyn>, Relu, Dense<Dyn>, Tanh, Dense<Dyn>, Sigmoid];

fn mlp(w: [usize; 3], seed: u64) -> Net<Uninit, Mlp> {
    Net::new()
        .push(Dense::dynamic(w[0]))
        .push(Relu)
        .push(Dense::dynamic(w[1]))
        .push(Tanh)
        .push(Dense::dynamic(w[2]))
        .push(Sigmoid)
        // Non-zero biases, so that the forward property sees them.
        .initialize(WeightBias::new(
            XavierNormal::default(),
            Uniform::new(-0.5, 0.5).unwrap(),
        ))
        .seed(seed)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn static_run_time_and_first_batch_binding_agree(w in widths(), i in static_size_index(), seed in any::<u64>()) {
        let n = static_size(i);
        let decl = Net::new()
            .push(Dense::dynamic(w[0]))
            .push(Relu)
            .push(Dense::dynamic(w[1]))
            .push(Dense::dynamic(w[2]))
            .initialize(KaimingUniform::default())
            .seed(seed);
        let dynamic = decl.try_bind(n).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let (by_dyn_batch, _) = decl
            .forward_init(&Batch::<Dyn>::from_fn_dyn(n, 1, |_, _| 0.5))
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let (statically, by_static_batch) = with_static_size!(i, |N| {
            let net = decl.clone().bind::<N>();
            let (first_batch, _) = decl.forward_init(&Batch::<N>::zeros(2));
            (snapshot(&net), snapshot(&first_batch))
        });

        let expected_shapes = vec![
            vec![w[0], n], vec![w[0]], vec![w[1], w[0]], vec![w[1]], vec![w[2], w[1]], vec![w[2]],
        ];
        prop_assert_eq!(dynamic.param_shapes(), expected_shapes);
        let count = w[0] * n + w[0] + w[1] * w[0] + w[1] + w[2] * w[1] + w[2];
        prop_assert_eq!(dynamic.param_count(), count);
        prop_assert_eq!(&snapshot(&dynamic), &statically);
        prop_assert_eq!(&snapshot(&by_dyn_batch), &statically);
        prop_assert_eq!(&by_static_batch, &statically);
    }

    #[test]
    fn eager_declaration_gives_the_same_weights(w in 1usize..40, seed in any::<u64>()) {
        let lazy = Net::new().push(Dense::<U16>::new()).push(Relu).push(Dense::dynamic(w)).seed(seed).bind::<U20>();
        let eager = Net::new().push(Dense::<U16>::with_input::<U20>()).push(Relu).push(Dense::dynamic(w)).seed(seed).build();
        let eager_dyn = Net::new()
            .push(Dense::<U16>::new().with_input_size(20))
            .push(Relu)
            .push(Dense::dynamic(w))
            .seed(seed)
            .try_bind(20)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(snapshot(&lazy), snapshot(&eager));
        prop_assert_eq!(snapshot(&lazy), snapshot(&eager_dyn));
    }

    #[test]
    fn run_time_binding_fails_exactly_when_a_declared_size_disagrees(
        n in 0usize..40, d0 in 1usize..40, w0 in 0usize..40, d1 in 0usize..40,
    ) {
        let decl = Net::new()
            .push(Dense::dynamic(w0).with_input_size(d0))
            .push(Relu)
            .push(Dense::<U5>::new().with_input_size(d1));
        let expected = if n == 0 {
            Err(ShapeError::ZeroInput)
        } else if d0 != n {
            Err(ShapeError::LayerInput { layer: 0, kind: "Dense", expected: d0, actual: n })
        } else if d1 != w0 {
            Err(ShapeError::LayerInput { layer: 2, kind: "Dense", expected: d1, actual: w0 })
        } else {
            Ok(())
        };
        prop_assert_eq!(decl.try_bind(n).map(|_| ()), expected);
    }

    #[test]
    fn forward_equals_plain_nalgebra(w in widths(), n in 1usize..30, samples in 0usize..9, seed in any::<u64>()) {
        let net = mlp(w, seed).try_bind(n).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let x = random_matrix(n, samples, seed);
        let y = net.try_forward_matrix(&x).map_err(|e| TestCaseError::fail(e.to_string()))?;

        let p: Vec<&DMatrix<f32>> = net.named_params().map(|(_, m)| m).collect();
        let layer = |w: &DMatrix<f32>, b: &DMatrix<f32>, x: &DMatrix<f32>, f: fn(f32) -> f32| {
            let mut z = w * x;
            for mut col in z.column_iter_mut() {
                col += b.column(0);
            }
            z.map(f)
        };
        let h = layer(p[0], p[1], &x, |v| v.max(0.0));
        let h = layer(p[2], p[3], &h, f32::tanh);
        let expected = layer(p[4], p[5], &h, |v| 1.0 / (1.0 + (-v).exp()));

        prop_assert_eq!(y.as_matrix().shape(), (w[2], samples));
        for (a, b) in y.as_matrix().iter().zip(expected.iter()) {
            prop_assert!((a - b).abs() <= 1e-5, "{} vs {}", a, b);
        }
    }

    #[test]
    fn wrong_feature_counts_are_errors_never_panics(n in 1usize..30, m in 0usize..30, samples in 0usize..4) {
        let net = mlp([3, 4, 5], 1).try_bind(n).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let result = net.try_forward_matrix(&DMatrix::zeros(m, samples));
        if m == n {
            prop_assert_eq!(result.map(|y| y.samples()), Ok(samples));
        } else {
            prop_assert_eq!(result.map(|_| ()), Err(ShapeError::Features { expected: n, actual: m }));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Nets with residual blocks and ties, every width given at run time.

/// The tied layer of [`Composite`].
type Tie = Shared<Dense<Dyn>, ()>;

/// `Dense(w0) Relu Residual(Dense(b0) Tanh Dense(b1)) tie Sigmoid
/// Residual(body: tie Relu Dense(p0); projection: Dense(p1)) Residual(∅) Dense(out)`, the tie
/// a `Dense(t)` at 3 and at 5.0.
type Composite = lazynet::Layers![
    Dense<Dyn>,
    Relu,
    Residual<lazynet::Layers![Dense<Dyn>, Tanh, Dense<Dyn>]>,
    Tie,
    Sigmoid,
    Residual<
        lazynet::Layers![Tie, Relu, Dense<Dyn>],
        lazynet::layer::Projection<lazynet::Layers![Dense<Dyn>]>
    >,
    Residual<()>,
    Dense<Dyn>
];

/// The widths of [`Composite`]: `[w0, b0, b1, t, p0, p1, out]`.
fn composite(w: [usize; 7], seed: u64) -> Net<Uninit, Composite> {
    let [w0, b0, b1, t, p0, p1, out] = w;
    let tie: Tie = Shared::new(Dense::dynamic(t));
    Net::new()
        .push(Dense::dynamic(w0))
        .push(Relu)
        .push(Residual::new(
            Net::new()
                .push(Dense::dynamic(b0))
                .push(Tanh)
                .push(Dense::dynamic(b1)),
        ))
        .push(tie.clone())
        .push(Sigmoid)
        .push(Residual::with_projection(
            Net::new().push(tie).push(Relu).push(Dense::dynamic(p0)),
            Net::new().push(Dense::dynamic(p1)),
        ))
        .push(Residual::new(Net::new()))
        .push(Dense::dynamic(out))
        .initialize(WeightBias::new(
            XavierNormal::default(),
            Uniform::new(-0.5, 0.5).unwrap(),
        ))
        .seed(seed)
}

/// What `try_bind(n)` of [`composite`] gives, when every width is small: the first check that
/// fails, in the order the net is planned.
fn composite_error(n: usize, w: [usize; 7]) -> Option<ShapeError> {
    let [w0, _, b1, t, p0, p1, _] = w;
    if n == 0 {
        Some(ShapeError::ZeroInput)
    } else if b1 != w0 {
        Some(ShapeError::Branch {
            layer: "2".into(),
            what: "its input",
            body: vec![b1],
            other: vec![w0],
        })
    } else if t != w0 {
        Some(ShapeError::InBlock {
            layer: "5".into(),
            kind: "Residual",
            branch: "its body",
            source: Box::new(ShapeError::TiedInput {
                first: "3".into(),
                place: "5.0".into(),
                expected: vec![w0],
                found: vec![t],
            }),
        })
    } else if p0 != p1 {
        Some(ShapeError::Branch {
            layer: "5".into(),
            what: "the projection's output",
            body: vec![p0],
            other: vec![p1],
        })
    } else {
        None
    }
}

/// Whether an error is one a net too large for memory may give.
fn too_large(err: &ShapeError) -> bool {
    match err {
        ShapeError::TooLarge { .. } | ShapeError::OutOfMemory { .. } => true,
        ShapeError::InBlock { source, .. } => too_large(source),
        _ => false,
    }
}

fn composite_widths() -> impl Strategy<Value = [usize; 7]> {
    [composite_width(), composite_width(), composite_width()]
        .prop_flat_map(|[w0, b0, p0]| {
            (
                Just([w0, b0, p0]),
                maybe_same(w0),
                maybe_same(w0),
                maybe_same(p0),
                composite_width(),
            )
        })
        .prop_map(|([w0, b0, p0], b1, t, p1, out)| [w0, b0, b1, t, p0, p1, out])
}

fn fail(e: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(e.to_string())
}

/// Runs a bound net through everything a user does with it, none of which may panic: a forward
/// pass of `x` (when the batch could be made), the loss and gradients of MSE against targets,
/// an Adam step, a save, and two loads into a net bound by `fresh` (from another seed): of the
/// saved file, and of that file with every tie also named at its later places (`ties`: first
/// place, later place), as PyTorch's `state_dict()` names it. `fresh(k)` binds the net's
/// declaration again, its seed changed by `k`. Only a net with a `huge` width
/// may run out of memory. Returns the trained parameters and the saved bytes, unless memory
/// ran out first.
fn exercise<N, L, M>(
    net: &Net<Init<N>, L>,
    x: Result<Batch<M>, ShapeError>,
    fresh: &dyn Fn(u64) -> Result<Net<Init<N>, L>, ShapeError>,
    ties: &[(&str, &str)],
    huge: bool,
) -> Result<Option<(Snapshot, Vec<u8>)>, TestCaseError>
where
    N: Shape,
    L: Chain<N> + Clone,
    M: Shape,
    Batch<Dyn>: TargetFor<<<L as Chain<N>>::Out as Shape>::Flat>,
{
    let out_of_memory = |err: ShapeError| -> Result<Option<(Snapshot, Vec<u8>)>, TestCaseError> {
        prop_assert!(huge && too_large(&err), "{:?}", err);
        Ok(None)
    };
    let x = match x {
        Ok(x) => x,
        Err(err) => return out_of_memory(err),
    };
    let samples = x.samples();
    let width: usize = net.output_dims().iter().product();
    let y = match net.try_forward(&x) {
        Ok(y) => y,
        Err(err) => return out_of_memory(err),
    };
    prop_assert_eq!(y.as_matrix().shape(), (width, samples));

    // The loss and gradients, then an Adam step.
    let names: Vec<&str> = net.named_params().map(|(n, _)| n).collect();
    let t =
        Batch::try_from_fn_dyn(width, samples, |f, s| (f + s) as f32 / 4.0 - 0.5).map_err(fail)?;
    let mut trained = net.clone();
    match net.loss_and_grads(&x, &t, Mse) {
        Ok((_, grads)) => {
            prop_assert!(samples > 0);
            let grad_names: Vec<&str> = grads.named_grads().map(|(n, _)| n).collect();
            prop_assert_eq!(&grad_names, &names);
            for ((_, g), (_, p)) in grads.named_grads().zip(net.named_params()) {
                prop_assert_eq!(g.shape(), p.shape());
            }
            // A step refuses gradients that are not finite, and takes finite ones.
            let step = Adam::new(1e-2).step(&mut trained, &grads);
            if grads.first_not_finite().is_none() {
                prop_assert!(step.is_ok(), "{:?}", step);
            }
        }
        Err(ShapeError::EmptyBatch) if samples == 0 => {}
        Err(err) => return out_of_memory(err),
    }

    // Saved, then loaded into a fresh binding of the declaration.
    let bytes = trained.save_to_bytes().map_err(fail)?;
    let mut loaded = fresh(1).map_err(fail)?;
    loaded.load_from_bytes(&bytes).map_err(fail)?;
    prop_assert_eq!(snapshot(&loaded), snapshot(&trained));

    // A PyTorch state_dict names a tie at every place.
    let weights = Weights::from_bytes(&bytes).map_err(fail)?;
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for name in weights.names() {
        let t = weights.get(name).ok_or_else(|| fail(name))?;
        let data = t
            .to_f32()
            .map_err(fail)?
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        tensors.push((name.to_string(), t.shape().to_vec(), data));
        for (first, later) in ties {
            if let Some(role) = name.strip_prefix(&format!("{first}.")) {
                let copy = tensors.last().cloned().ok_or_else(|| fail("no tensor"))?;
                tensors.push((format!("{later}.{role}"), copy.1, copy.2));
            }
        }
    }
    let views = tensors
        .iter()
        .map(|(name, shape, data)| {
            let view = TensorView::new(Dtype::F32, shape.clone(), data).map_err(fail)?;
            Ok((name.clone(), view))
        })
        .collect::<Result<Vec<_>, TestCaseError>>()?;
    let torch = safetensors::serialize(views, None).map_err(fail)?;
    let mut loaded = fresh(2).map_err(fail)?;
    loaded.load_from_bytes(&torch).map_err(fail)?;
    prop_assert_eq!(snapshot(&loaded), snapshot(&trained));
    Ok(Some((snapshot(&trained), bytes)))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Residual blocks and a tie at run-time widths, some of which disagree or are too large
    /// for memory: binding gives exactly the expected error, or a net on which a forward pass,
    /// the loss and gradients, an Adam step, a save and three loads (the tie named at its first
    /// place, at both places, and through `load_infer`) all work, never a panic.
    #[test]
    fn composite_nets_bind_run_train_save_and_load_without_panicking(
        w in composite_widths(),
        n in prop_oneof![1 => Just(0usize), 10 => 1usize..6, 1 => Just(1usize << 40)],
        samples in 0usize..4,
        seed in any::<u64>(),
    ) {
        let decl = composite(w, seed);
        let huge = w.iter().chain([&n]).any(|&v| v > 5);
        let net = match (decl.try_bind(n), huge) {
            (Ok(net), false) => {
                prop_assert_eq!(composite_error(n, w), None);
                net
            }
            (Err(err), false) => {
                prop_assert_eq!(Some(err), composite_error(n, w));
                return Ok(());
            }
            (Ok(net), true) => net,
            (Err(err), true) => {
                prop_assert!(
                    too_large(&err) || composite_error(n.min(1), w.map(|v| v.min(6))).is_some()
                        || matches!(err, ShapeError::Branch { .. } | ShapeError::InBlock { .. }),
                    "{:?}", err
                );
                return Ok(());
            }
        };
        prop_assert!(
            net.named_params().all(|(name, _)| !name.starts_with("5.0.")),
            "the tie is listed once"
        );
        if !huge {
            let wrong = net.try_forward_matrix(&DMatrix::zeros(n + 1, samples));
            prop_assert_eq!(wrong.map(|_| ()), Err(ShapeError::Features { expected: n, actual: n + 1 }));
        }
        // A batch of 2^40 features cannot be had: then the net is all that is checked.
        let mut rng = InitRng::new(seed, "batch");
        let x = Batch::<Dyn>::try_from_fn_dyn(n, samples, |_, _| rng.uniform(-1.0, 1.0));
        let fresh = |other| composite(w, seed ^ other).try_bind(n);
        let Some((trained, bytes)) = exercise(&net, x, &fresh, &[("3", "5.0")], huge)? else {
            return Ok(());
        };
        // The input size read from the file.
        let weights = Weights::from_bytes(&bytes).map_err(fail)?;
        let inferred = composite(w, seed ^ 3)
            .load_infer_weights(&weights, LoadOptions::new())
            .map_err(fail)?;
        prop_assert_eq!(inferred.input(), Dyn(n));
        prop_assert_eq!(snapshot(&inferred), trained);
    }
}

/// `Conv(c0, k0, p0) Relu Residual(Conv(c1, k1, p1) Relu Conv(c2, k2, p2)) tie
/// Residual(body: tie Relu Conv(c4, k4, stride s, p4); projection: Conv(c5, 1, stride s5))
/// MaxPool(2) Flatten Dense(out)`, the tie a padded `Conv(c3, 3, p 1)` at 3 and at 4.0, every
/// number given at run time.
type ImageComposite = lazynet::Layers![
    Conv2d<Dyn, Dyn, Dyn, Dyn, Dyn>,
    Relu,
    Residual<lazynet::Layers![Conv2d<Dyn, Dyn, Dyn, Dyn, Dyn>, Relu, Conv2d<Dyn, Dyn, Dyn, Dyn, Dyn>]>,
    ConvTie,
    Residual<
        lazynet::Layers![ConvTie, Relu, Conv2d<Dyn, Dyn, Dyn, Dyn, Dyn>],
        lazynet::layer::Projection<lazynet::Layers![Conv2d<Dyn, Dyn, Dyn, Dyn, Dyn>]>
    >,
    MaxPool2d<Dyn>,
    Flatten,
    Dense<Dyn>
];

/// The tied layer of [`ImageComposite`].
type ConvTie = Shared<Conv2d<Dyn, Dyn, Dyn, Dyn, Dyn>, ()>;

/// The numbers of [`ImageComposite`]: channels, kernels, paddings and strides.
#[derive(Clone, Copy, Debug)]
struct ImageWidths {
    c: [usize; 6],
    k: [usize; 4],
    p: [usize; 4],
    s: [usize; 2],
    out: usize,
}

fn image_composite(w: ImageWidths, seed: u64) -> Net<Uninit, ImageComposite> {
    let ImageWidths { c, k, p, s, out } = w;
    let conv = |c: usize, k: usize, p: usize, s: usize| {
        Conv2d::dynamic(c, k)
            .stride_size(s)
            .padding_size(p)
            .dilation_size(1)
    };
    let tie: ConvTie = Shared::new(conv(c[3], 3, 1, 1));
    Net::new()
        .push(conv(c[0], k[0], p[0], 1))
        .push(Relu)
        .push(Residual::new(
            Net::new()
                .push(conv(c[1], k[1], p[1], 1))
                .push(Relu)
                .push(conv(c[2], k[2], p[2], 1)),
        ))
        .push(tie.clone())
        .push(Residual::with_projection(
            Net::new()
                .push(tie)
                .push(Relu)
                .push(conv(c[4], k[3], p[3], s[0])),
            Net::new().push(conv(c[5], 1, 0, s[1])),
        ))
        .push(MaxPool2d::dynamic(2))
        .push(Flatten)
        .push(Dense::dynamic(out))
        .seed(seed)
}

/// Channels 0 to 3 (0 is refused at binding), now and then one too large for memory; kernels
/// 1 to 3, paddings 0 to 2, strides 1 to 2; half of the time the numbers that make the blocks
/// and the tie fit.
fn image_widths() -> impl Strategy<Value = ImageWidths> {
    let channels = || prop_oneof![1 => Just(0usize), 12 => 1usize..4, 1 => Just(1usize << 40)];
    (
        [
            channels(),
            channels(),
            channels(),
            channels(),
            channels(),
            channels(),
        ],
        [1usize..=3, 1usize..=3, 1usize..=3, 1usize..=3],
        [0usize..=2, 0usize..=2, 0usize..=2, 0usize..=2],
        [1usize..=2, 1usize..=2],
        1usize..4,
        any::<bool>(),
    )
        .prop_map(|(mut c, mut k, mut p, mut s, out, fit)| {
            if fit {
                // The body gives back its input, the tie's places receive c0 channels, the body
                // and the projection agree.
                c[2] = c[0];
                c[3] = c[0];
                c[5] = c[4];
                for i in 1..4 {
                    k[i] |= 1;
                    p[i] = (k[i] - 1) / 2;
                }
                s[1] = s[0];
            }
            ImageWidths { c, k, p, s, out }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Residual blocks with convolutions, a strided projection and a tied convolution, every
    /// number given at run time, some that do not fit: binding gives an error or a net that
    /// runs, trains, saves and loads; never a panic.
    #[test]
    fn image_composite_nets_never_panic(
        w in image_widths(),
        [ch, h, wd] in [1usize..=3, 1usize..=7, 1usize..=7],
        samples in 0usize..3,
        seed in any::<u64>(),
    ) {
        let decl = image_composite(w, seed);
        let huge = w.c.iter().any(|&v| v > 3);
        let shape = Image::dynamic(ch, h, wd);
        let net = match decl.try_bind(shape) {
            Ok(net) => net,
            Err(err) => {
                // Any error but a contract violation (a bug of a layer, not of the input).
                prop_assert!(!matches!(err, ShapeError::Contract { .. }), "{:?}", err);
                return Ok(());
            }
        };
        prop_assert!(net.named_params().all(|(name, _)| !name.starts_with("4.0.")));
        let mut rng = InitRng::new(seed, "batch");
        let x = Batch::try_from_fn_dyn(ch * h * wd, samples, |_, _| rng.uniform(-1.0, 1.0))
            .and_then(|x| Batch::try_with_shape(shape, x.into_matrix()));
        let fresh = |other| image_composite(w, seed ^ other).try_bind(shape);
        exercise(&net, x, &fresh, &[("3", "4.0")], huge)?;
    }
}
