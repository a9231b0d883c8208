//! # lazynet
//!
//! Neural networks declared without their input size, whose shapes are checked by the
//! compiler.
//!
//! Deep-learning frameworks let you declare a network without its input size and fill the
//! shapes in later (PyTorch `LazyLinear`, Keras `Dense`, MXNet Gluon, Flax). It is convenient,
//! and it moves every shape mistake to run time, deep inside a matrix multiply. lazynet keeps
//! the convenience and moves the check to the compiler:
//!
//! ```
//! use lazynet::prelude::*;
//!
//! // Declared: layers state only their output sizes; no parameter exists yet.
//! let decl = Net::new()
//!     .push(Dense::<U256>::new())
//!     .push(Relu)
//!     .push(Dense::<U10>::new())
//!     .initialize(XavierUniform::default())
//!     .seed(42);
//! assert_eq!(decl.partial_shapes()[0].1.to_string(), "(256, ?)");
//!
//! // Bound at compile time: every shape is inferred and checked by the compiler.
//! let net = decl.clone().bind::<U20>();
//! let x = Batch::<U20>::from_fn(2, |f, s| (f * s) as f32 * 0.01);
//! let y: Batch<U10> = net.forward(&x);
//!
//! // Bound at run time: the same checks, as a `Result`.
//! let dyn_net = decl.try_bind(20)?;
//! assert_eq!(dyn_net.try_forward(&x)?.as_matrix(), y.as_matrix());
//! assert!(decl.try_bind(0).is_err());
//! # Ok::<(), ShapeError>(())
//! ```
//!
//! A layer that declares an input size other than what reaches it does not compile, and the
//! error states both sizes in decimal (`Num<_3, _0>` is 30):
//!
//! ```text
//! error[E0277]: shape mismatch: a layer declares Num<_3, _0> inputs but the layer before it outputs Num<_2, _5, _6>
//! ```
//!
//! ## Images
//!
//! A net bound to an [`Image<C, H, W>`](Image) runs [`Conv2d`](layer::Conv2d),
//! [`MaxPool2d`](layer::MaxPool2d), [`AvgPool2d`](layer::AvgPool2d) and
//! [`Flatten`](layer::Flatten), and the compiler computes every image size on the way, on
//! stable Rust, with typenum arithmetic ([`spatial`]): a kernel that does not fit, or a dense
//! layer that declares another size than the flatten before it produces, is a compile error.
//!
//! ```
//! use lazynet::prelude::*;
//!
//! let decl = Net::new()
//!     .push(Conv2d::<U16, U3>::new().padding::<U1>())
//!     .push(Relu)
//!     .push(MaxPool2d::<U2>::new())
//!     .push(Flatten)
//!     .push(Dense::<U10>::new());
//! let net = decl.clone().bind::<Image<U1, U28, U28>>();
//! assert_eq!(net.param_shapes()[2], [10, 16 * 14 * 14]);
//! let at_run_time = decl.try_bind(Image::dynamic(3, 32, 32))?;
//! assert_eq!(at_run_time.param_shapes()[2], [10, 16 * 16 * 16]);
//! # Ok::<(), ShapeError>(())
//! ```
//!
//! ## Data
//!
//! [`data`] shuffles samples with their labels or targets and splits them into a training and
//! a test part, as scikit-learn's `train_test_split` does, or keeping the proportion of every
//! class ([`stratified_split`](data::stratified_split)):
//!
//! ```
//! use lazynet::prelude::*;
//!
//! let x = Batch::<U4>::from_fn(100, |f, s| (f * s) as f32);
//! let labels = Labels::<U2>::try_new((0..100).map(|s| s % 2).collect())?;
//! let Split { x_train, y_train, x_test, y_test } = stratified_split(&x, &labels, 0.2, 0)?;
//! assert_eq!((x_train.samples(), y_train.len()), (80, 80));
//! assert_eq!((x_test.samples(), y_test.len()), (20, 20));
//! # Ok::<(), ShapeError>(())
//! ```
//!
//! ## Layout
//!
//! Parameters are heap `nalgebra::DMatrix<f32>`: a dense weight is `out × in` (PyTorch's
//! `[256, 20]`) and a batch is `features × samples`, one column per sample, so `W · X` runs on
//! the GEMM kernel at every batch size. The compile-time shapes live in the types only.
//!
//! ## Sizes
//!
//! Static sizes are typenum numbers, re-exported by the prelude: `U1` … `U1024`, powers of two
//! and of ten. Other sizes are written as arithmetic: `lazynet::typenum::op!(U32 * U36)`. Run-time sizes
//! are [`Dyn`].
//!
//! ## Features
//!
//! * `threading`: lets the GEMM kernel (matrixmultiply) use every core.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

// The compile-time side: sizes, shapes, the rules the compiler checks, the layer list.
#[path = "compile_time/decimal.rs"]
pub mod decimal;
#[path = "compile_time/dim.rs"]
mod dim;
#[path = "compile_time/list.rs"]
pub mod list;
#[path = "compile_time/partial.rs"]
mod partial;
#[path = "compile_time/rules.rs"]
pub mod rules;
#[path = "compile_time/shape.rs"]
mod shape;
#[path = "compile_time/spatial.rs"]
pub mod spatial;

// The run-time side: bound layers, buffers, the forward and backward walks, the kernels;
// training in `train`.
#[path = "run_time/alloc.rs"]
mod alloc;
#[path = "run_time/exec.rs"]
mod exec;
#[path = "run_time/kernels.rs"]
mod kernels;
#[path = "run_time/plan.rs"]
mod plan;
#[path = "run_time/state.rs"]
mod state;
pub mod train;

// Where the two meet: each layer's file holds its shape rule, its type-level rule and its
// forward and backward computation.
pub mod layer;

// The net, its data, initializers, errors, summaries and weight files.
mod batch;
pub mod data;
mod error;
pub mod init;
mod net;
pub mod prelude;
mod standardize;
pub mod stems;
mod summary;
pub mod weights;

pub use batch::Batch;
pub use dim::{Dim, Dyn, StaticDim};
pub use error::ShapeError;
pub use net::{BindTo, ForwardInit, NamedParams, Net, TryBindTo};
pub use shape::{FromRows, Image, ImageVolume, RunTimeInput, Shape, StaticShape};
pub use state::{Bound, Init, Unbound, Uninit};
pub use train::TrainError;
pub use weights::{LoadError, LoadOptions, SaveError, Weights};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

pub use generic_array;
pub use nalgebra;
/// The typenum crate, for sizes it does not name: `lazynet::typenum::op!(U32 * U36)`.
pub use typenum;
pub use typenum::consts::*;
