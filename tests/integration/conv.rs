//! Convolution, pooling and flatten: shapes on both binding paths, the fast kernels against
//! naive loops, and no panic for any combination of sizes.

use lazynet::nalgebra::DMatrix;
use lazynet::prelude::*;
use proptest::prelude::*;

use crate::strategies::random_matrix;

/// Kernel, stride, padding, dilation.
type Hyper = (usize, usize, usize, usize);

/// PyTorch's output size along one axis, in signed arithmetic; `None` when it would be < 1.
fn expected_size(x: usize, (k, s, p, d): Hyper) -> Option<usize> {
    let span = d as i64 * (k as i64 - 1) + 1;
    let free = x as i64 + 2 * p as i64 - span;
    (free >= 0 && s > 0).then(|| (free / s as i64 + 1) as usize)
}

/// The direct 7-loop convolution: samples, output channels, rows, columns, input channels,
/// kernel rows, kernel columns.
fn naive_conv(
    x: &DMatrix<f32>,
    [c, h, w]: [usize; 3],
    weight: &DMatrix<f32>,
    bias: Option<&DMatrix<f32>>,
    (k, s, p, d): Hyper,
) -> (DMatrix<f32>, [usize; 3]) {
    let out_c = weight.nrows();
    let (oh, ow) = (
        expected_size(h, (k, s, p, d)).unwrap_or(0),
        expected_size(w, (k, s, p, d)).unwrap_or(0),
    );
    let mut out = DMatrix::zeros(out_c * oh * ow, x.ncols());
    for n in 0..x.ncols() {
        for co in 0..out_c {
            for oi in 0..oh {
                for oj in 0..ow {
                    let mut acc = bias.map_or(0.0, |b| b[co]);
                    for ci in 0..c {
                        for ki in 0..k {
                            for kj in 0..k {
                                let r = (oi * s + ki * d) as i64 - p as i64;
                                let q = (oj * s + kj * d) as i64 - p as i64;
                                if r < 0 || q < 0 || r >= h as i64 || q >= w as i64 {
                                    continue;
                                }
                                let v = x[((ci * h + r as usize) * w + q as usize, n)];
                                acc += weight[(co, (ci * k + ki) * k + kj)] * v;
                            }
                        }
                    }
                    out[((co * oh + oi) * ow + oj, n)] = acc;
                }
            }
        }
    }
    (out, [out_c, oh, ow])
}

/// Direct pooling; `max` or average with padding counted as zeros.
fn naive_pool(
    x: &DMatrix<f32>,
    [c, h, w]: [usize; 3],
    (k, s, p): (usize, usize, usize),
    max: bool,
) -> DMatrix<f32> {
    let oh = expected_size(h, (k, s, p, 1)).unwrap_or(0);
    let ow = expected_size(w, (k, s, p, 1)).unwrap_or(0);
    let mut out = DMatrix::zeros(c * oh * ow, x.ncols());
    for n in 0..x.ncols() {
        for ci in 0..c {
            for oi in 0..oh {
                for oj in 0..ow {
                    let mut best = f32::NEG_INFINITY;
                    let mut sum = 0.0;
                    for ki in 0..k {
                        for kj in 0..k {
                            let r = (oi * s + ki) as i64 - p as i64;
                            let q = (oj * s + kj) as i64 - p as i64;
                            if r < 0 || q < 0 || r >= h as i64 || q >= w as i64 {
                                continue;
                            }
                            let v = x[((ci * h + r as usize) * w + q as usize, n)];
                            best = best.max(v);
                            sum += v;
                        }
                    }
                    out[((ci * oh + oi) * ow + oj, n)] =
                        if max { best } else { sum / (k * k) as f32 };
                }
            }
        }
    }
    out
}

fn close(a: &DMatrix<f32>, b: &DMatrix<f32>) -> Result<(), TestCaseError> {
    prop_assert_eq!(a.shape(), b.shape());
    for (x, y) in a.iter().zip(b.iter()) {
        prop_assert!(
            (x - y).abs() <= 1e-4 * y.abs().max(1.0),
            "{} differs from {}",
            x,
            y
        );
    }
    Ok(())
}

fn fail(e: ShapeError) -> TestCaseError {
    TestCaseError::fail(e.to_string())
}

fn image() -> impl Strategy<Value = [usize; 3]> {
    (1usize..4, 1usize..12, 1usize..12).prop_map(|(c, h, w)| [c, h, w])
}

fn hyper() -> impl Strategy<Value = Hyper> {
    (1usize..5, 1usize..4, 0usize..3, 1usize..3)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// The im2col + GEMM path equals the direct loops, on every shape `try_bind` accepts; it
    /// rejects exactly the shapes whose output would be empty.
    #[test]
    fn convolution_matches_the_direct_loops(
        [c, h, w] in image(),
        out_c in 0usize..7,
        hy in hyper(),
        samples in 0usize..4,
        bias in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let (k, s, p, d) = hy;
        let mut conv = Conv2d::dynamic(out_c, k).stride_size(s).padding_size(p).dilation_size(d);
        if !bias {
            conv = conv.without_bias();
        }
        let decl = Net::new()
            .push(conv)
            .initialize(WeightBias::new(XavierNormal::default(), Uniform::new(-0.5, 0.5).unwrap()))
            .seed(seed);
        let fits = expected_size(h, hy).is_some() && expected_size(w, hy).is_some();
        let net = match decl.try_bind(Image::dynamic(c, h, w)) {
            Ok(net) => net,
            Err(e) => {
                prop_assert!(!fits, "rejected a shape that fits: {}", e);
                prop_assert!(matches!(e, ShapeError::KernelTooLarge { layer: 0, .. }), "{}", e);
                return Ok(());
            }
        };
        prop_assert!(fits);
        let params: Vec<DMatrix<f32>> = net.named_params().map(|(_, v)| v.clone()).collect();
        prop_assert_eq!(params.len(), if bias { 2 } else { 1 });
        let x = random_matrix(c * h * w, samples, seed);
        let y = net.try_forward_matrix(&x).map_err(fail)?;
        let (expected, dims) = naive_conv(&x, [c, h, w], &params[0], params.get(1), hy);
        prop_assert_eq!(net.output_dims(), dims.to_vec());
        prop_assert_eq!(y.features().dims(), dims.to_vec());
        close(y.as_matrix(), &expected)?;
    }

    /// Max and average pooling equal the direct loops.
    #[test]
    fn pooling_matches_the_direct_loops(
        [c, h, w] in image(),
        k in 1usize..4,
        s in 1usize..4,
        p in 0usize..2,
        samples in 0usize..4,
        seed in any::<u64>(),
    ) {
        prop_assume!(2 * p <= k);
        let x = random_matrix(c * h * w, samples, seed);
        let fits = expected_size(h, (k, s, p, 1)).is_some() && expected_size(w, (k, s, p, 1)).is_some();
        let max = Net::new().push(MaxPool2d::dynamic(k).stride_size(s).padding_size(p));
        let avg = Net::new().push(AvgPool2d::dynamic(k).stride_size(s).padding_size(p));
        match (max.try_bind(Image::dynamic(c, h, w)), avg.try_bind(Image::dynamic(c, h, w))) {
            (Ok(max), Ok(avg)) => {
                prop_assert!(fits);
                close(max.try_forward_matrix(&x).map_err(fail)?.as_matrix(), &naive_pool(&x, [c, h, w], (k, s, p), true))?;
                close(avg.try_forward_matrix(&x).map_err(fail)?.as_matrix(), &naive_pool(&x, [c, h, w], (k, s, p), false))?;
            }
            (Err(a), Err(b)) => {
                prop_assert!(!fits);
                prop_assert_eq!(a.to_string().replace("MaxPool2d", "AvgPool2d"), b.to_string());
            }
            (a, b) => prop_assert!(false, "max and average pooling disagree: {:?} / {:?}", a.err(), b.err()),
        }
    }

    /// Any sizes, valid or not, including zeros and sizes too large to allocate: binding gives a
    /// net or an error, never a panic; a bound net runs on a batch of its size and refuses
    /// others.
    #[test]
    fn no_combination_of_sizes_panics(
        dims in prop::array::uniform3(prop_oneof![6 => 0usize..10, 1 => Just(usize::MAX / 3)]),
        out_c in 0usize..4,
        (k, s, p, d) in (0usize..5, 0usize..4, 0usize..4, 0usize..3),
        (pk, ps, pp) in (0usize..4, 0usize..3, 0usize..3),
        declared in 0usize..200,
        samples in 0usize..3,
    ) {
        let conv = Conv2d::dynamic(out_c, k).stride_size(s).padding_size(p).dilation_size(d);
        let pool = MaxPool2d::dynamic(pk).stride_size(ps).padding_size(pp);
        let inferred = Net::new().push(conv).push(Relu).push(pool).push(Flatten).push(Dense::<U3>::new());
        let declared = Net::new()
            .push(conv)
            .push(pool)
            .push(Flatten)
            .push(Dense::dynamic(3).with_input_size(declared));
        exercise(&inferred, dims, samples)?;
        exercise(&declared, dims, samples)?;
    }
}

/// Binds `decl` to `dims` at run time and, when that succeeds, runs it on batches of the right
/// and the wrong size.
fn exercise<L>(
    decl: &Net<Uninit, L>,
    [c, h, w]: [usize; 3],
    samples: usize,
) -> Result<(), TestCaseError>
where
    L: lazynet::list::Chain<Image<Dyn, Dyn, Dyn>>,
{
    prop_assert!(!decl.to_string().is_empty());
    match decl.try_bind(Image::dynamic(c, h, w)) {
        Ok(net) => {
            let features = c * h * w;
            let y = net
                .try_forward_matrix(&DMatrix::from_element(features, samples, 0.5))
                .map_err(fail)?;
            prop_assert_eq!(y.as_matrix().shape(), (3, samples));
            prop_assert!(net
                .try_forward_matrix(&DMatrix::zeros(features + 1, 1))
                .is_err());
            prop_assert!(!net.to_string().is_empty());
        }
        Err(e) => prop_assert!(!e.to_string().is_empty()),
    }
    Ok(())
}

/// Every static configuration in one list: `(C, H, W)`, then kernel, stride, padding, dilation
/// of a convolution, then kernel, stride, padding of a pooling layer.
macro_rules! static_configs {
    ($body:ident) => {{
        $body!(U1, U28, U28; U3, U1, U1, U1; U2, U2, U0);
        $body!(U3, U32, U32; U5, U1, U0, U1; U2, U2, U0);
        $body!(U2, U9, U13; U3, U2, U1, U2; U3, U1, U1);
        $body!(U1, U7, U5; U1, U3, U0, U1; U2, U1, U1);
        $body!(U4, U16, U8; U4, U2, U2, U3; U1, U1, U0);
        $body!(U1, U5, U5; U5, U1, U0, U1; U1, U1, U0);
        $body!(U2, U11, U6; U2, U3, U3, U2; U3, U2, U1);
        $body!(U3, U20, U30; U3, U1, U0, U4; U2, U3, U0);
    }};
}

/// The compiler's sizes equal the run-time ones and PyTorch's formula, and both nets compute
/// the same outputs from the same seed.
#[test]
fn static_and_run_time_shapes_and_outputs_agree() {
    macro_rules! check {
        ($c:ident, $h:ident, $w:ident; $k:ident, $s:ident, $p:ident, $d:ident; $pk:ident, $ps:ident, $pp:ident) => {{
            let decl = Net::new()
                .push(Conv2d::<U4, $k>::new().stride::<$s>().padding::<$p>().dilation::<$d>())
                .push(Tanh)
                .push(AvgPool2d::<$pk>::new().stride::<$ps>().padding::<$pp>())
                .push(Flatten)
                .push(Dense::<U3>::new())
                .seed(11);
            let net = decl.clone().bind::<Image<$c, $h, $w>>();
            let dims = Image::<$c, $h, $w>::default().dims();
            let dynamic = decl
                .try_bind(Image::dynamic(dims[0], dims[1], dims[2]))
                .expect("the static net binds, so the run-time one must");
            let conv = ($k::USIZE, $s::USIZE, $p::USIZE, $d::USIZE);
            let pool = ($pk::USIZE, $ps::USIZE, $pp::USIZE, 1);
            let h = expected_size(expected_size(dims[1], conv).unwrap(), pool).unwrap();
            let w = expected_size(expected_size(dims[2], conv).unwrap(), pool).unwrap();
            assert_eq!(net.param_shapes()[2], [3, 4 * h * w], "{}", stringify!($h $w $k));
            assert_eq!(net.param_shapes(), dynamic.param_shapes());
            let x = Batch::<Image<$c, $h, $w>>::from_fn(3, |f, s| ((f * 7 + s * 3) % 11) as f32 / 11.0);
            let y: Batch<U3> = net.forward(&x);
            let y2 = dynamic.try_forward(&x).expect("same feature count");
            assert_eq!(y.as_matrix(), y2.as_matrix());
        }};
    }
    use lazynet::typenum::Unsigned;
    static_configs!(check);
}

/// A wide convolution on a batch of many samples, which reuses the patch buffer for each, matches
/// the direct loops.
#[test]
fn many_samples_through_one_patch_buffer_match_the_direct_loops() {
    // 16·3·3 taps × 30·30 pixels = 129,600 patch values per sample, 19 samples.
    let decl = Net::new()
        .push(Conv2d::<U8, U3>::new())
        .seed(3)
        .initialize(WeightBias::new(
            XavierNormal::default(),
            Uniform::new(-0.5, 0.5).unwrap(),
        ));
    let net = decl.bind::<Image<U16, U32, U32>>();
    let x = random_matrix(16 * 32 * 32, 19, 5);
    let y = net.try_forward_matrix(&x).expect("right size");
    let params: Vec<DMatrix<f32>> = net.named_params().map(|(_, v)| v.clone()).collect();
    let (expected, dims) = naive_conv(&x, [16, 32, 32], &params[0], params.get(1), (3, 1, 0, 1));
    assert_eq!(dims, [8, 30, 30]);
    close(y.as_matrix(), &expected).expect("chunked convolution matches");
}

/// The issue's net: conv(16, 3, padding 1) → relu → max pool 2 → conv(32, 3) → relu → flatten
/// → dense 10.
type IssueNet = lazynet::Layers![
    Conv2d<U16, U3, U1, U1>,
    Relu,
    MaxPool2d<U2>,
    Conv2d<U32, U3>,
    Relu,
    Flatten,
    Dense<U10>
];

fn issue_net() -> Net<Uninit, IssueNet> {
    Net::new()
        .push(Conv2d::<U16, U3>::new().padding::<U1>())
        .push(Relu)
        .push(MaxPool2d::<U2>::new())
        .push(Conv2d::<U32, U3>::new())
        .push(Relu)
        .push(Flatten)
        .push(Dense::<U10>::new())
}

#[test]
fn summaries_show_image_shapes_and_question_marks_before_binding() {
    let decl = issue_net();
    let declared = decl.to_string();
    assert!(
        declared.contains("0      Conv2d     (16, ?, ?)  0.weight   (16, ?, 3, 3)       ?"),
        "{declared}"
    );
    assert!(declared.contains("5      Flatten    (?,)"), "{declared}");
    assert!(declared.contains("6.weight   (10, ?)"), "{declared}");
    let net = decl.clone().bind::<Image<U1, U28, U28>>();
    let bound = net.to_string();
    assert!(
        bound.starts_with("Net (bound to input shape (1, 28, 28))"),
        "{bound}"
    );
    assert!(
        bound.contains("0      Conv2d     (16, 28, 28)  0.weight   (16, 1, 3, 3)     144"),
        "{bound}"
    );
    assert!(bound.contains("2      MaxPool2d  (16, 14, 14)"), "{bound}");
    assert!(bound.contains("3      Conv2d     (32, 12, 12)"), "{bound}");
    assert!(bound.contains("5      Flatten    (4608,)"), "{bound}");
    assert!(bound.contains("6.weight   (10, 4608)"), "{bound}");
    let partial: Vec<String> = decl
        .partial_shapes()
        .iter()
        .map(|(n, s)| format!("{n} {s}"))
        .collect();
    assert_eq!(
        partial,
        [
            "0.weight (16, ?, 3, 3)",
            "0.bias (16,)",
            "3.weight (32, 16, 3, 3)",
            "3.bias (32,)",
            "6.weight (10, ?)",
            "6.bias (10,)"
        ]
    );
}

#[test]
fn one_declaration_binds_to_two_resolutions_and_at_run_time() {
    let decl = issue_net().seed(9);
    let small = decl.clone().bind::<Image<U1, U28, U28>>();
    let large = decl.clone().bind::<Image<U3, U32, U32>>();
    assert_eq!(small.param_shapes()[4], [10, 32 * 12 * 12]);
    assert_eq!(large.param_shapes()[0], [16, 3, 3, 3]);
    assert_eq!(large.param_shapes()[4], [10, 32 * 14 * 14]);
    let dynamic = decl
        .try_bind(Image::dynamic(1, 28, 28))
        .expect("28×28 fits");
    let x = Batch::<Image<U1, U28, U28>>::from_fn(2, |f, s| ((f + 3 * s) % 17) as f32 / 17.0);
    let y: Batch<U10> = small.forward(&x);
    assert_eq!(
        dynamic.try_forward(&x).expect("784 features").as_matrix(),
        y.as_matrix()
    );
    // A flat batch of 784 features is the same images, in C, H, W order.
    let flat = Batch::<U784>::try_from_matrix(x.as_matrix().clone()).expect("784 rows");
    assert_eq!(small.forward(&flat).as_matrix(), y.as_matrix());
    // The first batch binds a declaration, too.
    let (_, y3) = decl.forward_init(&x);
    assert_eq!(y3.as_matrix(), y.as_matrix());
    let images =
        Batch::try_with_shape(Image::dynamic(1, 28, 28), x.into_matrix()).expect("784 rows");
    let (_, y4) = decl.forward_init(&images).expect("28×28 fits");
    assert_eq!(y4.as_matrix(), y.as_matrix());
}

#[test]
fn run_time_errors_name_layer_rule_and_numbers() {
    let decl = issue_net();
    let err = |c, h, w| {
        decl.try_bind(Image::dynamic(c, h, w))
            .err()
            .map(|e| e.to_string())
    };
    assert_eq!(
        err(1, 4, 4).as_deref(),
        Some("layer 3 (Conv2d): the kernel spans 3 along the height but the padded input has only 2, so the output would be empty")
    );
    assert_eq!(
        err(1, 28, 1).as_deref(),
        Some("layer 2 (MaxPool2d): the kernel spans 2 along the width but the padded input has only 1, so the output would be empty")
    );
    assert_eq!(
        err(0, 28, 28).as_deref(),
        Some("the input shape (0, 28, 28) has a size of 0; every size must be at least 1")
    );
    let net = decl.try_bind(Image::dynamic(1, 28, 28)).expect("fits");
    assert_eq!(
        net.try_forward_matrix(&DMatrix::zeros(783, 2))
            .err()
            .map(|e| e.to_string())
            .as_deref(),
        Some("the batch has 783 features per sample but 784 are expected")
    );
    let vgg = Net::new()
        .push(Conv2d::dynamic(512, 3).padding_size(1))
        .push(MaxPool2d::<U2>::new())
        .push(Flatten)
        .push(Dense::<U4096>::new().with_input_size(1000));
    assert_eq!(
        vgg.try_bind(Image::dynamic(3, 14, 14))
            .err()
            .map(|e| e.to_string())
            .as_deref(),
        Some("layer 3 (Dense) declares 1000 inputs but receives 25088 from the layer before it")
    );
    let zero_stride = Net::new().push(Conv2d::dynamic(4, 3).stride_size(0));
    assert_eq!(
        zero_stride
            .try_bind(Image::dynamic(1, 8, 8))
            .err()
            .map(|e| e.to_string())
            .as_deref(),
        Some("layer 0 (Conv2d): the stride must be at least 1, got 0")
    );
    let padded = Net::new().push(AvgPool2d::dynamic(3).padding_size(2));
    assert!(matches!(
        padded.try_bind(Image::dynamic(1, 8, 8)),
        Err(ShapeError::PoolPadding {
            layer: 0,
            padding: 2,
            kernel: 3,
            ..
        })
    ));
}

#[test]
fn a_dense_layer_declared_after_a_flatten_is_checked_against_c_h_w() {
    let decl = Net::new()
        .push(Conv2d::<U8, U3>::new())
        .push(Flatten)
        .push(Dense::<U10>::with_input::<U200>());
    // 8 · 5 · 5 = 200.
    let net = decl.bind::<Image<U1, U7, U7>>();
    assert_eq!(net.param_shapes()[2], [10, 200]);
}
