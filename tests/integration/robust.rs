//! No abort, no overflow, no silent wrong answer, from any input: absurd sizes, huge padding,
//! stride and dilation, memory that cannot be had, NaN and infinities, an initializer that
//! panics halfway.
//!
//! Run in debug, so an unchecked overflow anywhere is a panic here.

use std::panic::{catch_unwind, AssertUnwindSafe};

use lazynet::nalgebra::DMatrix;
use lazynet::prelude::*;
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------------
// Memory that cannot be had is an error naming the tensor, never an abort.

#[test]
#[cfg(target_os = "linux")]
fn a_width_whose_weights_do_not_fit_in_memory_is_an_error() {
    // 256 × 2^26 weights: 64 GiB, more than the 24 GB machines this runs on have (on a larger
    // one, twice what it has).
    let width = (1usize << 26).max((available_bytes() / 4 / 256 * 2) as usize);
    let decl = Net::new().push(Dense::<U256>::new());
    let err = decl.try_bind(width).unwrap_err();
    assert!(
        matches!(err, ShapeError::OutOfMemory { values, .. } if values == 256 * width as u128),
        "{err:?}"
    );
    if width != 1 << 26 {
        return;
    }
    assert_eq!(
        err.to_string(),
        "cannot allocate 17179869184 values for parameter `0.weight` of layer 0 (Dense), shape (256, 67108864)"
    );
    // Far past any memory: 2^60 values.
    let err = Net::new()
        .push(Dense::dynamic(1 << 40))
        .try_bind(1 << 20)
        .unwrap_err();
    assert!(matches!(err, ShapeError::OutOfMemory { .. }), "{err:?}");
}

/// The bytes the system says this process can still have, as lazynet reads them.
fn available_bytes() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").expect("/proc/meminfo");
    let field = |name: &str| -> u64 {
        let line = meminfo.lines().find(|l| l.starts_with(name)).expect(name);
        let kb = line[name.len()..].trim().trim_end_matches("kB").trim();
        kb.parse::<u64>().expect("a number of kB") * 1024
    };
    field("MemAvailable:") + field("SwapFree:")
}

#[test]
#[cfg(target_os = "linux")]
fn two_widths_that_fit_alone_but_not_together_are_refused_before_either_is_allocated() {
    // Each weight takes 60 % of the memory available; both take 120 %.
    let width = (available_bytes() / 4 * 6 / 10 / 1024) as usize;
    let decl = Net::new()
        .push(Dense::dynamic(width))
        .push(Dense::dynamic(1024));
    let err = decl.try_bind(1024).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, ShapeError::OutOfMemory { .. }), "{err:?}");
    assert!(
        message.contains("parameter `1.weight` of layer 1 (Dense)"),
        "{message}"
    );
    assert!(
        message.contains("with the parameters before it"),
        "{message}"
    );
}

#[test]
fn a_convolution_with_a_huge_padding_is_an_error_at_forward_not_an_abort() {
    // Binds: one weight. Its output, 1 × (2^21 + 1)², is 4.4e12 values (16 TiB) a sample.
    let net = Net::new()
        .push(Conv2d::dynamic(1, 1).padding_size(1 << 20))
        .try_bind(Image::dynamic(1, 1, 1))
        .unwrap();
    assert_eq!(net.output_dims(), [1, (1 << 21) + 1, (1 << 21) + 1]);
    let x = Batch::try_with_shape(Image::dynamic(1, 1, 1), DMatrix::from_element(1, 1, 1.0));
    let err = net.try_forward(&x.unwrap()).unwrap_err();
    assert!(matches!(err, ShapeError::OutOfMemory { .. }), "{err:?}");
    assert!(err.to_string().contains("layer 0 (Conv2d)"), "{err}");
}

#[test]
fn a_batch_whose_outputs_do_not_fit_is_an_error() {
    // 1 input, 2^20 outputs, 2^40 samples of zero features cannot exist; take 2^22 samples of
    // one feature (16 MiB) into a 2^20-wide layer: 2^42 output values.
    let net = Net::new()
        .push(Dense::dynamic(1 << 20))
        .try_bind(1)
        .unwrap();
    let x = Batch::try_from_fn_dyn(1, 1 << 22, |_, _| 1.0).unwrap();
    let err = net.try_forward(&x).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("cannot allocate 4398046511104 values for the output of layer 0 (Dense)"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// Sizes: checked, exact, or refused.

#[test]
fn a_huge_dilation_is_kernel_too_large_with_the_exact_span() {
    let err = Net::new()
        .push(Conv2d::dynamic(1, 3).dilation_size(usize::MAX))
        .try_bind(Image::dynamic(1, 8, 8))
        .unwrap_err();
    let span = 2 * u128::from(u64::MAX) + 1;
    assert_eq!(
        err,
        ShapeError::KernelTooLarge {
            layer: 0,
            kind: "Conv2d",
            axis: "height",
            span,
            padded: 8,
        }
    );
    assert_eq!(
        err.to_string(),
        "layer 0 (Conv2d): the kernel spans 36893488147419103231 along the height but the padded input has only 8, so the output would be empty"
    );
}

#[test]
fn padding_and_stride_past_half_of_usize_give_the_exact_size() {
    // Padded input 2^64 + 1, stride 2^63: three windows along each axis.
    let net = Net::new()
        .push(
            Conv2d::dynamic(2, 1)
                .padding_size(1 << 63)
                .stride_size(1 << 63),
        )
        .push(MaxPool2d::dynamic(1))
        .push(Flatten)
        .try_bind(Image::dynamic(1, 1, 1))
        .unwrap();
    assert_eq!(net.output_dims(), [18]);
    let x = Batch::try_with_shape(Image::dynamic(1, 1, 1), DMatrix::from_element(1, 2, 5.0));
    let y = net.try_forward(&x.unwrap()).unwrap();
    // Only the centre window sees the input; the others see padding (bias only).
    assert_eq!(y.samples(), 2);
    let sample = y.sample(0).unwrap();
    assert!(sample.iter().all(|v| v.is_finite()));
}

#[test]
fn an_output_size_past_usize_is_an_error() {
    let err = Net::new()
        .push(MaxPool2d::dynamic(1).padding_size(0))
        .push(Conv2d::dynamic(1, 1).padding_size(usize::MAX))
        .try_bind(Image::dynamic(1, 1, 1))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "layer 1 (Conv2d): the output would have 36893488147419103231 values along the height, more than a usize can count"
    );
}

#[test]
fn tensors_too_large_name_what_they_are() {
    let err = Net::new()
        .push(Dense::dynamic(usize::MAX))
        .try_bind(2)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "layer 0 (Dense): parameter `0.weight` of shape (18446744073709551615, 2) holds more values than one allocation can hold"
    );
    // No parameter: a pooling layer's input.
    let err = Net::new()
        .push(MaxPool2d::dynamic(1))
        .try_bind(Image::dynamic(1 << 32, 1 << 32, 1))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "the input shape (4294967296, 4294967296, 1) holds more values than one allocation can hold"
    );
    // A convolution whose patches do not fit though its weight is empty (0 output channels).
    let err = Net::new()
        .push(Conv2d::dynamic(0, 1 << 20).padding_size(1 << 20))
        .try_bind(Image::dynamic(1, 1, 1))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "layer 0 (Conv2d): patch buffer of shape (1048578, 1048578, 1, 1048576, 1048576) holds more values than one allocation can hold"
    );
    // A flatten of an image too large to count.
    let err = Net::new()
        .push(Conv2d::dynamic(usize::MAX, 1).without_bias())
        .push(Flatten)
        .try_bind(Image::dynamic(1, 3, 3));
    assert!(err.is_err());
}

#[test]
fn summaries_of_huge_declarations_do_not_overflow() {
    let decl = Net::new()
        .push(Dense::dynamic(usize::MAX))
        .push(Dense::dynamic(usize::MAX))
        .push(Conv2d::dynamic(usize::MAX, usize::MAX));
    let text = decl.to_string();
    let row = text
        .lines()
        .find(|l| l.contains("1.weight"))
        .unwrap_or_default();
    assert!(
        row.contains("(18446744073709551615, 18446744073709551615)")
            && row.ends_with("> 18446744073709551615"),
        "{text}"
    );
    assert!(
        text.contains("parameters: ? (> 18446744073709551615 known; 1 shape(s) wait"),
        "{text}"
    );
    assert_eq!(
        decl.partial_shapes()[2].1.len(),
        None,
        "a product past usize is not a count"
    );
}

// ---------------------------------------------------------------------------------------------
// Images must match C, H and W, not only their number of values.

#[test]
fn images_of_another_layout_are_refused_at_run_time() {
    let decl = Net::new().push(Conv2d::<U4, U3>::new()).push(Flatten);
    let net = decl.clone().bind::<Image<U1, U8, U8>>();
    let other = Batch::<Image<U8, U8, U1>>::zeros(2);
    assert_eq!(
        net.try_forward(&other).unwrap_err().to_string(),
        "the batch holds images of shape (8, 8, 1) but the net was bound to images of shape (1, 8, 8)"
    );
    let dyn_net = decl.try_bind(Image::dynamic(1, 8, 8)).unwrap();
    let other = Batch::try_with_shape(Image::dynamic(8, 1, 8), DMatrix::zeros(64, 3)).unwrap();
    assert!(matches!(
        dyn_net.try_forward(&other),
        Err(ShapeError::ImageShape { .. })
    ));
    // Flat batches of as many values are read in C, H, W order, as documented.
    let flat = Batch::<U64>::zeros(2);
    assert_eq!(net.forward(&flat).samples(), 2);
    assert_eq!(dyn_net.try_forward(&flat).unwrap().samples(), 2);
    let same = Batch::try_with_shape(Image::dynamic(1, 8, 8), DMatrix::zeros(64, 1)).unwrap();
    assert_eq!(dyn_net.try_forward(&same).unwrap().samples(), 1);
    assert_eq!(
        net.forward(&Batch::<Image<U1, U8, U8>>::zeros(1)).samples(),
        1
    );
}

// ---------------------------------------------------------------------------------------------
// All or nothing.

struct PanicsOnSecond;

impl Initializer for PanicsOnSecond {
    fn init(&self, param: &ParamInfo<'_>, _: &mut InitRng, values: &mut [f32]) {
        values.fill(7.0);
        if param.name() == "0.bias" {
            panic!("the second parameter");
        }
    }
}

#[test]
fn a_reinitialization_that_panics_halfway_changes_nothing() {
    let mut net = Net::new()
        .push(Dense::<U4>::new())
        .push(Relu)
        .push(Dense::<U2>::new())
        .bind::<U3>();
    let before = net.clone();
    let result = catch_unwind(AssertUnwindSafe(|| net.reinitialize(PanicsOnSecond)));
    assert!(result.is_err(), "the initializer panics");
    assert!(net.named_params().eq(before.named_params()));
    // And one that succeeds replaces every parameter.
    net.reinitialize(Constant(3.0)).unwrap();
    assert!(net.named_params().all(|(_, p)| p.iter().all(|v| *v == 3.0)));
}

#[test]
fn initializers_with_nonsense_settings_cannot_be_made() {
    assert_eq!(
        Normal::new(0.0, f32::NAN).unwrap_err().to_string(),
        "a normal distribution needs a finite standard deviation >= 0, got NaN"
    );
    assert_eq!(
        Uniform::new(1.0, -1.0).unwrap_err().to_string(),
        "a uniform distribution needs finite bounds with low <= high, got low 1 and high -1"
    );
    assert!(Uniform::new(f32::NEG_INFINITY, 0.0).is_err());
    assert!(XavierUniform::with_gain(f32::NAN).is_err());
    assert!(KaimingNormal::with_gain(-1.0).is_err());
    let init = Uniform::new(-0.25, 0.25).unwrap();
    let net = Net::new()
        .push(Dense::<U64>::new())
        .initialize(init)
        .bind::<U64>();
    assert!(net
        .named_params()
        .all(|(_, p)| p.iter().all(|v| (-0.25..0.25).contains(v))));
}

// ---------------------------------------------------------------------------------------------
// NaN and infinities, as PyTorch computes them.

/// `relu`, `sigmoid`, `tanh` and identity of NaN, +inf, -inf, -1 and 2, from PyTorch's
/// definitions: ReLU passes NaN (`torch.relu(nan)` is nan), sigmoid and tanh saturate at ±inf.
fn expected(kind: &str) -> [f32; 5] {
    let nan = f32::NAN;
    match kind {
        "relu" => [nan, f32::INFINITY, 0.0, 0.0, 2.0],
        "sigmoid" => [
            nan,
            1.0,
            0.0,
            1.0 / (1.0 + 1f32.exp()),
            1.0 / (1.0 + (-2f32).exp()),
        ],
        "tanh" => [nan, 1.0, -1.0, (-1f32).tanh(), 2f32.tanh()],
        _ => [nan, f32::INFINITY, f32::NEG_INFINITY, -1.0, 2.0],
    }
}

const SPECIAL: [f32; 5] = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -1.0, 2.0];

fn same(found: &[f32], want: &[f32]) -> bool {
    found.len() == want.len()
        && found
            .iter()
            .zip(want)
            .all(|(f, w)| (f.is_nan() && w.is_nan()) || (f - w).abs() <= 1e-6 || f == w)
}

/// Runs `act` three ways on the special values: alone (its own pass), fused after a dense
/// layer of weight 1 and bias 0, and fused after a 1×1 convolution of weight 1 and bias 0.
macro_rules! check_activation {
    ($act:expr, $kind:literal) => {{
        let want = expected($kind);
        let x = Batch::<U1>::from_fn(5, |_, s| SPECIAL[s]);
        let alone = Net::new().push($act).bind::<U1>().forward(&x);
        assert!(
            same(alone.as_matrix().as_slice(), &want),
            "{} alone: {alone:?}",
            $kind
        );

        let ones = WeightBias::new(Constant(1.0), Zeros);
        let dense = Net::new()
            .push(Dense::<U1>::new())
            .push($act)
            .initialize(ones)
            .bind::<U1>()
            .forward(&x);
        assert!(
            same(dense.as_matrix().as_slice(), &want),
            "{} after dense: {dense:?}",
            $kind
        );

        let images = Batch::<Image<U1, U1, U1>>::from_fn(5, |_, s| SPECIAL[s]);
        let conv = Net::new()
            .push(Conv2d::<U1, U1>::new())
            .push($act)
            .initialize(ones)
            .bind::<Image<U1, U1, U1>>()
            .forward(&images);
        assert!(
            same(conv.as_matrix().as_slice(), &want),
            "{} after conv: {conv:?}",
            $kind
        );
    }};
}

#[test]
fn activations_follow_pytorch_on_nan_and_infinities() {
    check_activation!(Relu, "relu");
    check_activation!(Sigmoid, "sigmoid");
    check_activation!(Tanh, "tanh");
    check_activation!(Identity, "identity");
}

/// One 2×2 window over the values `window`, max and average pooled.
fn pool(window: [f32; 4]) -> (f32, f32) {
    let x = Batch::<Image<U1, U2, U2>>::from_fn(1, |f, _| window[f]);
    let max = Net::new()
        .push(MaxPool2d::<U2>::new())
        .bind::<Image<U1, U2, U2>>();
    let avg = Net::new()
        .push(AvgPool2d::<U2>::new())
        .bind::<Image<U1, U2, U2>>();
    (
        max.forward(&x).as_matrix()[(0, 0)],
        avg.forward(&x).as_matrix()[(0, 0)],
    )
}

#[test]
fn pooling_follows_pytorch_on_nan_and_infinities() {
    let (inf, nan) = (f32::INFINITY, f32::NAN);
    // PyTorch's max pooling: NaN anywhere in the window is the window's max.
    for window in [
        [nan, 1.0, 2.0, 3.0],
        [1.0, 2.0, 3.0, nan],
        [inf, nan, 1.0, -inf],
    ] {
        let (max, avg) = pool(window);
        assert!(max.is_nan(), "max of {window:?} is {max}");
        assert!(avg.is_nan(), "average of {window:?} is {avg}");
    }
    assert_eq!(pool([inf, 1.0, 2.0, 3.0]), (inf, inf));
    assert_eq!(pool([-inf, -inf, -inf, -inf]), (-inf, -inf));
    assert_eq!(pool([-inf, 1.0, 2.0, 3.0]), (3.0, -inf));
    let (max, avg) = pool([inf, -inf, 0.0, 0.0]);
    assert_eq!(max, inf);
    assert!(avg.is_nan(), "inf + -inf is NaN");
    // With padding, padding never wins a max: a window of -inf and padding is -inf.
    let net = Net::new()
        .push(MaxPool2d::<U2>::new().padding::<U1>())
        .bind::<Image<U1, U1, U1>>();
    let y = net.forward(&Batch::<Image<U1, U1, U1>>::from_fn(1, |_, _| {
        f32::NEG_INFINITY
    }));
    assert_eq!(y.as_matrix().as_slice(), [f32::NEG_INFINITY]);
}

#[test]
fn nan_in_a_dense_input_reaches_every_output() {
    let net = Net::new()
        .push(Dense::<U4>::new())
        .push(Relu)
        .push(Dense::<U3>::new())
        .bind::<U2>();
    let x = Batch::<U2>::from_fn(2, |f, s| if (f, s) == (1, 1) { f32::NAN } else { 0.5 });
    let y = net.forward(&x);
    assert!(y.sample(0).unwrap().iter().all(|v| v.is_finite()));
    assert!(y.sample(1).unwrap().iter().all(|v| v.is_nan()));
    assert!(
        y.argmax().unwrap()[1] == 0,
        "argmax of all-NaN is the first NaN"
    );
}

// ---------------------------------------------------------------------------------------------
// Random nets of every layer kind, sizes from 0 to usize::MAX, through everything.

/// A huge size: a tensor with one of these sizes (2^40 values and up) never fits in memory, so
/// no case allocates more than a few kilobytes; products of two pass `usize::MAX`.
fn huge() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(1usize << 40),
        Just(1usize << 62),
        Just(1usize << 63),
        Just(usize::MAX / 2),
        Just(usize::MAX - 1),
        Just(usize::MAX),
    ]
}

/// A size: small (0 to 4), or huge one time in seven.
fn size() -> impl Strategy<Value = usize> {
    prop_oneof![6 => 0usize..5, 1 => huge()]
}

/// A size for a net of many sizes: small (1 to 4, 0 rarely), huge one time in twenty, so that
/// about half the nets have no huge size at all.
fn mostly_small() -> impl Strategy<Value = usize> {
    prop_oneof![18 => 1usize..5, 1 => Just(0usize), 1 => huge()]
}

/// A size of at least 1: small, or huge one time in five.
fn nonzero() -> impl Strategy<Value = usize> {
    prop_oneof![4 => 1usize..5, 1 => huge()]
}

/// Kernel, stride, padding, dilation, any of them huge; 0 only for the padding (a 0 elsewhere is
/// tested by the other cases).
fn hyper() -> impl Strategy<Value = [usize; 4]> {
    (nonzero(), nonzero(), size(), nonzero()).prop_map(|(k, s, p, d)| [k, s, p, d])
}

/// Kernel (1 to 3), stride (1 to 2), padding (0 to 1), dilation (1 to 2), each huge or 0 one
/// time in twenty.
fn mostly_small_hyper() -> impl Strategy<Value = [usize; 4]> {
    let pick = |lo: usize, hi: usize| prop_oneof![18 => lo..=hi, 1 => Just(0usize), 1 => huge()];
    [pick(1, 3), pick(1, 2), pick(0, 1), pick(1, 2)]
}

/// What the reference formula says a layer does to a shape.
#[derive(Debug, PartialEq)]
enum Verdict {
    /// The output shape.
    Out(Vec<usize>),
    /// A rule is broken (zero hyper-parameter, kernel too large, pooling padding, an output
    /// size past usize): binding must fail.
    Broken,
}

/// PyTorch's output size along one axis, in `u128`: `(x + 2p − d(k − 1) − 1) / s + 1`.
fn axis(x: usize, [k, s, p, d]: [usize; 4]) -> Option<usize> {
    let w = |n: usize| n as u128;
    if k == 0 || s == 0 || d == 0 {
        return None;
    }
    let padded = w(x) + 2 * w(p);
    let span = w(d) * (w(k) - 1) + 1;
    if padded < span {
        return None;
    }
    usize::try_from((padded - span) / w(s) + 1).ok()
}

fn conv_ref(input: &[usize], out_c: usize, hyper: [usize; 4]) -> Verdict {
    match input {
        [_, h, w] => match (axis(*h, hyper), axis(*w, hyper)) {
            (Some(oh), Some(ow)) => Verdict::Out(vec![out_c, oh, ow]),
            _ => Verdict::Broken,
        },
        _ => Verdict::Broken,
    }
}

fn pool_ref(input: &[usize], [k, s, p, _]: [usize; 4]) -> Verdict {
    if k == 0 || (p as u128) * 2 > k as u128 {
        return Verdict::Broken;
    }
    match input {
        [c, ..] => match conv_ref(input, *c, [k, s, p, 1]) {
            Verdict::Out(o) => Verdict::Out(o),
            Verdict::Broken => Verdict::Broken,
        },
        _ => Verdict::Broken,
    }
}

fn flatten_ref(input: &[usize]) -> Verdict {
    let n = input
        .iter()
        .try_fold(1u128, |n, &d| n.checked_mul(d as u128));
    match n.and_then(|n| usize::try_from(n).ok()) {
        Some(n) => Verdict::Out(vec![n]),
        None => Verdict::Broken,
    }
}

/// An image shape known at run time.
type RunTimeImage = Image<Dyn, Dyn, Dyn>;

/// Drives a bound net (or a binding error) through everything, checking it against the
/// reference: `verdict` is the reference output shape, or `Broken`.
fn drive<L>(bound: Result<Net<Init<RunTimeImage>, L>, ShapeError>, verdict: Verdict, samples: usize)
where
    L: lazynet::list::Chain<RunTimeImage>,
{
    let net = match (bound, &verdict) {
        (Ok(net), Verdict::Out(out)) => {
            assert_eq!(
                &net.output_dims(),
                out,
                "output shape against the u128 formula"
            );
            net
        }
        (Ok(net), Verdict::Broken) => {
            panic!("bound though a rule is broken: {:?}", net.output_dims())
        }
        (Err(err), Verdict::Broken) => {
            let _ = err.to_string();
            return;
        }
        (Err(err), Verdict::Out(_)) => {
            // Sizes the formula allows may still be too large to allocate.
            assert!(
                matches!(
                    err,
                    ShapeError::TooLarge { .. }
                        | ShapeError::OutOfMemory { .. }
                        | ShapeError::InputTooLarge { .. }
                        | ShapeError::ZeroInput
                ),
                "{err:?} for an allowed net"
            );
            let _ = err.to_string();
            return;
        }
    };
    let _ = net.to_string();
    let input = net.input();
    // A flat batch of C·H·W values per sample; none when memory refuses it (an input of 2^40
    // values binds when no layer allocates from it).
    let flat = input.checked_flat_size().unwrap();
    if let Ok(x) = Batch::try_from_fn_dyn(flat, samples, |f, s| (f + s) as f32 * 0.25 - 1.0) {
        match net.try_forward(&x) {
            Ok(y) => {
                let out: usize = net.output_dims().iter().product();
                assert_eq!(y.as_matrix().shape(), (out, samples));
            }
            Err(err) => assert!(matches!(err, ShapeError::OutOfMemory { .. }), "{err:?}"),
        }
    }
    let mut copy = net.clone();
    match copy.reinitialize(XavierUniform::default()) {
        Ok(()) => {}
        Err(err) => assert!(matches!(err, ShapeError::OutOfMemory { .. }), "{err:?}"),
    }
    // Through a file, as a user saves and loads.
    let path = scratch_file();
    net.save(&path).unwrap();
    copy.load(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert!(copy.named_params().eq(net.named_params()));
}

/// A path of its own in the temporary directory, for one save and load.
fn scratch_file() -> std::path::PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!(
        "lazynet-robust-{}-{n}.safetensors",
        std::process::id()
    ))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_image_nets_never_panic_and_bind_to_the_reference_size(
        (c, h, w) in (mostly_small(), 2usize..9, 2usize..9),
        conv in (mostly_small(), mostly_small_hyper(), any::<bool>()),
        max in mostly_small_hyper(),
        avg in mostly_small_hyper(),
        (act, samples, dense) in (0..4usize, 0usize..3, mostly_small()),
    ) {
        let (out_c, conv_hyper, bias) = conv;
        let input = [c, h, w];
        let mut layer = Conv2d::dynamic(out_c, conv_hyper[0])
            .stride_size(conv_hyper[1])
            .padding_size(conv_hyper[2])
            .dilation_size(conv_hyper[3]);
        if !bias {
            layer = layer.without_bias();
        }
        let verdict = if input.contains(&0) {
            Verdict::Broken
        } else {
            match conv_ref(&input, out_c, conv_hyper) {
                Verdict::Out(a) => match pool_ref(&a, max) {
                    Verdict::Out(b) => match pool_ref(&b, avg) {
                        Verdict::Out(c) => match flatten_ref(&c) {
                            Verdict::Out(_) => Verdict::Out(vec![dense]),
                            v => v,
                        },
                        v => v,
                    },
                    v => v,
                },
                v => v,
            }
        };
        let shape = Image::dynamic(c, h, w);
        macro_rules! run {
            ($act:expr) => {{
                let decl = Net::new()
                    .push(layer)
                    .push($act)
                    .push(MaxPool2d::dynamic(max[0]).stride_size(max[1]).padding_size(max[2]))
                    .push(AvgPool2d::dynamic(avg[0]).stride_size(avg[1]).padding_size(avg[2]))
                    .push(Flatten)
                    .push(Dense::dynamic(dense));
                let _ = decl.to_string();
                drive(decl.try_bind(shape), verdict, samples)
            }};
        }
        match act {
            0 => run!(Relu),
            1 => run!(Sigmoid),
            2 => run!(Tanh),
            _ => run!(Identity),
        }
    }

    #[test]
    fn single_windows_with_huge_sizes_bind_to_the_reference_size(
        (c, h, w) in (nonzero(), nonzero(), nonzero()),
        (out_c, conv_hyper, pool_hyper) in (size(), hyper(), hyper()),
        (pool_first, samples) in (any::<bool>(), 0usize..3),
    ) {
        let input = [c, h, w];
        let conv = Conv2d::dynamic(out_c, conv_hyper[0])
            .stride_size(conv_hyper[1])
            .padding_size(conv_hyper[2])
            .dilation_size(conv_hyper[3]);
        // Pooling padding of at most half the window (others are refused; the test above
        // covers them), huge when the window is.
        let mut pool_hyper = pool_hyper;
        pool_hyper[2] %= pool_hyper[0] / 2 + 1;
        let pool = AvgPool2d::dynamic(pool_hyper[0])
            .stride_size(pool_hyper[1])
            .padding_size(pool_hyper[2]);
        let shape = Image::dynamic(c, h, w);
        let then = |v: Verdict, f: &dyn Fn(&[usize]) -> Verdict| match v {
            Verdict::Out(o) => f(&o),
            broken => broken,
        };
        let start = if input.contains(&0) { Verdict::Broken } else { Verdict::Out(input.to_vec()) };
        if pool_first {
            let verdict = then(
                then(start, &|i| pool_ref(i, pool_hyper)),
                &|i| conv_ref(i, out_c, conv_hyper),
            );
            let decl = Net::new().push(pool).push(conv);
            let _ = decl.to_string();
            drive(decl.try_bind(shape), verdict, samples);
        } else {
            let verdict = then(
                then(start, &|i| conv_ref(i, out_c, conv_hyper)),
                &|i| pool_ref(i, pool_hyper),
            );
            let decl = Net::new().push(conv).push(pool);
            let _ = decl.to_string();
            drive(decl.try_bind(shape), verdict, samples);
        }
    }

    #[test]
    fn random_dense_nets_never_panic(
        widths in [size(), size(), size()],
        samples in 0usize..3,
    ) {
        let [n, a, b] = widths;
        let decl = Net::new()
            .push(Dense::dynamic(a))
            .push(Tanh)
            .push(Dense::dynamic(b));
        let _ = decl.to_string();
        let small = |x: usize| x < 5;
        match decl.try_bind(n) {
            Ok(net) => {
                // Binding allocates every parameter: each must be small.
                prop_assert!(small(b) && (a == 0 || (small(a) && small(n))));
                prop_assert_eq!(net.output_dims(), vec![b]);
                let _ = net.to_string();
                if let Ok(x) = Batch::try_from_fn_dyn(n, samples, |f, s| (f * s) as f32) {
                    let y = net.try_forward(&x).unwrap();
                    prop_assert_eq!(y.as_matrix().shape(), (b, samples));
                }
                let bytes = net.save_to_bytes().unwrap();
                let mut copy = net.clone();
                copy.reinitialize(Zeros).unwrap();
                copy.load_from_bytes(&bytes).unwrap();
                prop_assert!(copy.named_params().eq(net.named_params()));
            }
            Err(err) => {
                let _ = err.to_string();
                prop_assert!(n == 0 || !small(n) || !small(a) || !small(b), "{:?}", err);
            }
        }
    }
}
