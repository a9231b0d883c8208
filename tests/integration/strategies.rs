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

/// An index into [`STATIC_SIZES`].
pub fn static_size_index() -> impl Strategy<Value = usize> {
    0..STATIC_SIZES.len()
}

/// The input sizes the static path is tried with; `with_static_size!` maps each to its type.
pub const STATIC_SIZES: [usize; 8] = [1, 2, 3, 7, 16, 20, 33, 100];

/// Runs `$body` with `$n` bound to the typenum type of `STATIC_SIZES[$i]`.
#[macro_export]
macro_rules! with_static_size {
    ($i:expr, |$n:ident| $body:expr) => {
        match $i {
            0 => {
                type $n = U1;
                $body
            }
            1 => {
                type $n = U2;
                $body
            }
            2 => {
                type $n = U3;
                $body
            }
            3 => {
                type $n = U7;
                $body
            }
            4 => {
                type $n = U16;
                $body
            }
            5 => {
                type $n = U20;
                $body
            }
            6 => {
                type $n = U33;
                $body
            }
            _ => {
                type $n = U100;
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

/// A batch of `samples` values in [-1, 1) with `features` rows, from a seed.
pub fn random_matrix(features: usize, samples: usize, seed: u64) -> DMatrix<f32> {
    let mut rng = InitRng::new(seed, "batch");
    DMatrix::from_fn(features, samples, |_, _| rng.uniform(-1.0, 1.0))
}
