//! Shared proptest strategies and helpers.

use lazynet::nalgebra::DMatrix;
use lazynet::prelude::*;
use proptest::prelude::*;

/// A layer width, including the degenerate 0.
pub fn width() -> impl Strategy<Value = usize> {
    prop_oneof![4 => 1usize..48, 1 => Just(0usize)]
}

/// Three layer widths.
pub fn widths() -> impl Strategy<Value = [usize; 3]> {
    [width(), width(), width()]
}

/// An index into the sizes of [`with_static_size!`].
pub fn static_size_index() -> impl Strategy<Value = usize> {
    0..STATIC_SIZE_COUNT
}

/// How many sizes [`with_static_size!`] knows.
pub const STATIC_SIZE_COUNT: usize = 8;

/// The input size of index `i`, read from [`with_static_size!`], the one list of them.
pub fn static_size(i: usize) -> usize {
    crate::with_static_size!(i, |N| N::default().size())
}

/// Runs `$body` with `$n` bound to the typenum type of static size number `$i` (1, 2, 3, 7,
/// 16, 20, 33, 100; past the end, the last).
#[macro_export]
macro_rules! with_static_size {
    ($i:expr, |$n:ident| $body:expr) => {
        $crate::with_static_size!(@arms $i, $n, $body; 0 => U1, 1 => U2, 2 => U3, 3 => U7, 4 => U16, 5 => U20, 6 => U33; U100)
    };
    (@arms $i:expr, $n:ident, $body:expr; $($k:literal => $t:ident),*; $last:ident) => {
        match $i {
            $($k => {
                type $n = $t;
                $body
            })*
            _ => {
                type $n = $last;
                $body
            }
        }
    };
}

/// Every parameter of a bound net: name, shape and values, for comparing nets bit for bit.
pub type Snapshot = Vec<(String, Vec<usize>, Vec<u32>)>;

/// Snapshots a bound net's parameters.
pub fn snapshot<S: lazynet::Bound, L: lazynet::list::Layers>(net: &Net<S, L>) -> Snapshot {
    net.named_params()
        .zip(net.param_shapes())
        .map(|((name, m), shape)| {
            (
                name.to_string(),
                shape,
                m.iter().map(|v| v.to_bits()).collect(),
            )
        })
        .collect()
}

/// A test fraction for a split: mostly in (0, 1), some at or past its ends (0, 1, negative,
/// above 1, infinite, NaN), some so small or so close to 1 that a part may be left empty.
pub fn test_fraction() -> impl Strategy<Value = f64> {
    prop_oneof![
        6 => 0.0f64..1.0,
        1 => prop::sample::select(vec![
            0.0,
            -0.0,
            1.0,
            -0.1,
            1.5,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::MIN_POSITIVE,
            1.0 - f64::EPSILON,
        ]),
        1 => 1e-6f64..0.05,
        1 => 0.95f64..1.0,
    ]
}

/// A batch of `samples` values in [-1, 1) with `features` rows, from a seed.
pub fn random_matrix(features: usize, samples: usize, seed: u64) -> DMatrix<f32> {
    let mut rng = InitRng::new(seed, "batch");
    DMatrix::from_fn(features, samples, |_, _| rng.uniform(-1.0, 1.0))
}

#[test]
fn the_size_count_matches_the_macro() {
    let sizes: Vec<usize> = (0..=STATIC_SIZE_COUNT).map(static_size).collect();
    let mut distinct = sizes[..STATIC_SIZE_COUNT].to_vec();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        STATIC_SIZE_COUNT,
        "every index below the count has its own size"
    );
    assert_eq!(
        sizes[STATIC_SIZE_COUNT],
        sizes[STATIC_SIZE_COUNT - 1],
        "past the end is the last"
    );
}

/// A layer width for nets with residual blocks and ties: small (0 to 5, so that two drawn
/// widths often agree), or now and then one so large that no tensor of it can be had
/// (2^40 values per sample).
pub fn composite_width() -> impl Strategy<Value = usize> {
    prop_oneof![30 => 0usize..6, 1 => Just(1usize << 40)]
}

/// A width that is `to` three times in four (a residual body that gives back its input, a tied
/// place that receives its first place's width), else any [`composite_width`].
pub fn maybe_same(to: usize) -> impl Strategy<Value = usize> {
    prop_oneof![3 => Just(to), 1 => composite_width()]
}
