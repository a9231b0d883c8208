//! Attacks on composition: residual blocks, tied (`Shared`) layers, one trunk with several
//! stems, `with_input` on any layer, and the graph executor under them.
//!
//! A test marked `#[ignore = "bug: …"]` shows a bug: its comment gives the input, what the
//! house rules or the docs promise, and what happens. Every other test is an attack the library
//! withstands (an error, not a panic; nothing changed; the same numbers on every path).
//!
//! Nets are few and their widths small, so that the crate type-checks in little memory; the
//! user-written layer below picks its lie at run time rather than through a type per lie.

use std::panic::{catch_unwind, AssertUnwindSafe};

use lazynet::layer::{Activation, Fault, Kernel, Layer, Param, PartialShape};
use lazynet::nalgebra::DMatrix;
use lazynet::prelude::*;
use safetensors::tensor::{Dtype, TensorView};

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

/// Every parameter's value, in order.
fn values<S: lazynet::Bound, L: lazynet::list::Layers>(net: &Net<S, L>) -> Vec<DMatrix<f32>> {
    net.named_params().map(|(_, v)| v.clone()).collect()
}

/// The parameter `name`'s value.
fn param<S: lazynet::Bound, L: lazynet::list::Layers>(net: &Net<S, L>, name: &str) -> DMatrix<f32> {
    net.named_params()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("no parameter {name}"))
}

/// A safetensors file of `F32` tensors: name, PyTorch shape, values in row-major order.
fn file(tensors: &[(String, Vec<usize>, Vec<f32>)]) -> Vec<u8> {
    let data: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, s, v)| {
            let bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            (n.clone(), s.clone(), bytes)
        })
        .collect();
    let views: Vec<(String, TensorView<'_>)> = data
        .iter()
        .map(|(n, s, d)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), d).unwrap(),
            )
        })
        .collect();
    safetensors::serialize(views, None).unwrap()
}

/// A parameter as a file's tensor: its name, PyTorch shape and row-major values.
fn tensor_of<S: lazynet::Bound, L: lazynet::list::Layers>(
    net: &Net<S, L>,
    name: &str,
    as_name: &str,
) -> (String, Vec<usize>, Vec<f32>) {
    let value = param(net, name);
    let shape = if value.ncols() == 1 {
        vec![value.nrows()]
    } else {
        vec![value.nrows(), value.ncols()]
    };
    (
        as_name.to_owned(),
        shape,
        value.transpose().as_slice().to_vec(),
    )
}

// ---------------------------------------------------------------------------------------------
// A layer written outside the crate that lies, chosen at run time: `y = g ⊙ x` with a gain
// `g` of the input's width, honest in mode 0.

/// What the layer lies about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lie {
    /// Nothing: `y = g ⊙ x`.
    Honest,
    /// Its run-time rule gives one more feature than its compile-time half (`flat -> same`).
    OutputShape,
    /// Its kernel replaces the output by one of another shape.
    ForwardBuffer,
    /// Its kernel replaces the gain's gradient by one of another shape.
    GradBuffer,
    /// Its kernel replaces the input gradient by one of another shape.
    InputGradBuffer,
    /// Its kernel says it is a ReLU (`Kernel::activation`), though it owns a gain.
    ClaimsRelu,
    /// Its kernel says it is a reshape (`Kernel::is_reshape`), though it owns a gain.
    ClaimsReshape,
}

#[derive(Clone, Copy, Debug)]
struct Liar(Lie);

lazynet::shape_rule!(Liar, flat -> same);

impl Layer for Liar {
    fn kind(&self) -> &'static str {
        "Liar"
    }

    fn output_shape(&self, input: Option<&PartialShape>) -> Result<Option<PartialShape>, Fault> {
        match (self.0, input.and_then(PartialShape::len)) {
            (Lie::OutputShape, Some(n)) => Ok(Some(PartialShape::from_dims(&[n + 1]))),
            _ => Ok(input.cloned()),
        }
    }

    fn param_shapes(&self, input: Option<&PartialShape>) -> Vec<(Role, PartialShape)> {
        let width = input.and_then(PartialShape::len);
        vec![(Role::Named("gain"), PartialShape(vec![width]))]
    }

    fn kernel(&self, _: &[usize], _: &[usize]) -> Box<dyn Kernel> {
        Box::new(LiarKernel(self.0))
    }
}

#[derive(Debug)]
struct LiarKernel(Lie);

impl LiarKernel {
    fn gain(params: &[Param], rows: usize) -> Result<&[f32], ShapeError> {
        match params {
            [g] if g.value().len() == rows => Ok(g.value().as_slice()),
            _ => Err(ShapeError::Contract {
                what: "a call to the Liar kernel".into(),
                detail: "wrong parameters".into(),
            }),
        }
    }
}

impl Kernel for LiarKernel {
    fn forward(
        &self,
        params: &[Param],
        x: &DMatrix<f32>,
        y: &mut DMatrix<f32>,
        _: Activation,
    ) -> Result<(), ShapeError> {
        if self.0 == Lie::ForwardBuffer {
            *y = DMatrix::zeros(y.nrows() + 1, y.ncols());
            return Ok(());
        }
        let g = Self::gain(params, x.nrows())?;
        if y.shape() != x.shape() {
            return Err(ShapeError::Contract {
                what: "a call to the Liar kernel".into(),
                detail: "wrong output".into(),
            });
        }
        for (mut y, x) in y.column_iter_mut().zip(x.column_iter()) {
            for ((y, x), g) in y.iter_mut().zip(x.iter()).zip(g) {
                *y = g * x;
            }
        }
        Ok(())
    }

    fn backward(
        &self,
        params: &[Param],
        x: &DMatrix<f32>,
        _: &DMatrix<f32>,
        dy: &DMatrix<f32>,
        grads: &mut [DMatrix<f32>],
        dx: Option<&mut DMatrix<f32>>,
    ) -> Result<(), ShapeError> {
        match (self.0, grads.first_mut()) {
            (Lie::GradBuffer, Some(dg)) => {
                *dg = DMatrix::zeros(1, 7);
                return Ok(());
            }
            (Lie::InputGradBuffer, _) => {
                if let Some(dx) = dx {
                    *dx = DMatrix::zeros(1, 1);
                }
                return Ok(());
            }
            _ => {}
        }
        let g = Self::gain(params, x.nrows())?;
        let Some(dg) = grads.first_mut() else {
            return Ok(());
        };
        for (x, dy) in x.column_iter().zip(dy.column_iter()) {
            *dg += x.component_mul(&dy);
        }
        if let Some(dx) = dx {
            for (mut dx, dy) in dx.column_iter_mut().zip(dy.column_iter()) {
                for ((dx, dy), g) in dx.iter_mut().zip(dy.iter()).zip(g) {
                    *dx = g * dy;
                }
            }
        }
        Ok(())
    }

    fn activation(&self) -> Option<Activation> {
        (self.0 == Lie::ClaimsRelu).then_some(Activation::Relu)
    }

    fn is_reshape(&self) -> bool {
        self.0 == Lie::ClaimsReshape
    }
}

// =============================================================================================
// Bugs.
// =============================================================================================

/// Input: a tie `s` at layer 0 and again as the first layer of a block named
/// `names(["d", "d"])`, whose second layer is a dense layer: the tied place and the dense layer
/// are both `1.d`.
/// Expected: `ShapeError::DuplicateName` from `try_bind`, as `Residual::names` documents ("Two
/// places with one name are an error at binding").
/// Found (before the fix, now tested): the net binds, and it cannot load its own file: `save` writes `1.d.weight` (the
/// dense layer's), `load` reads it as the tie's later place and refuses with
/// `TiedDiffers { first: "0.weight", place: "1.d.weight" }`. The summary shows two rows `1.d`.
#[test]
fn a_tied_place_named_like_another_layer_is_a_duplicate_name() {
    let s = Shared::<_, ()>::new(Dense::<U8>::new());
    let decl = Net::new()
        .push(s.clone())
        .push(Residual::new(Net::new().push(s.clone()).push(Dense::<U8>::new())).names(["d", "d"]))
        .seed(3);
    match decl.try_bind(8) {
        Err(ShapeError::DuplicateName { .. } | ShapeError::BlockName { .. }) => {}
        Err(other) => panic!("expected DuplicateName, got {other}"),
        Ok(mut net) => {
            let bytes = net.save_to_bytes().expect("saved");
            let reload = net.load_from_bytes(&bytes);
            panic!("bound two places named 1.d; loading its own save gives {reload:?}\n{net}");
        }
    }
}

/// Input: a block whose two ReLUs are both named `act` (`names(["fc", "act", "act"])`).
/// Expected: `DuplicateName`, as `Residual::names` documents for "two places with one name"
/// (PyTorch's `add_module` refuses a name twice too).
/// Found (before the fix, now tested): it binds; only names of parameters are compared, so the summary lists two layers
/// `1.act`.
#[test]
fn two_parameterless_places_of_one_name_are_refused_as_documented() {
    let block = Residual::new(Net::new().push(Dense::<U4>::new()).push(Relu).push(Relu))
        .names(["fc", "act", "act"]);
    let result = Net::new().push(Dense::<U4>::new()).push(block).try_bind(3);
    assert!(
        matches!(result, Err(ShapeError::BlockName { .. })),
        "bound two layers named 1.act: {:?}",
        result.map(|n| n.to_string())
    );
}

/// Input: a projection block whose body layer is named like the projection
/// (`names(["downsample"])`), or whose projection is named like a body layer
/// (`projection_name("0")`).
/// Expected: `DuplicateName`: in PyTorch's terms the block would have two children of one name
/// (`downsample` a `Linear` and a `Sequential`), which `add_module` refuses, and a torchvision
/// file can hold only one of them.
/// Found (before the fix, now tested): both bind, with `0.downsample.weight` beside `0.downsample.0.weight` (and
/// `0.0.weight` beside `0.0.0.weight`).
#[test]
fn a_body_layer_named_like_the_projection_is_refused() {
    let named = Residual::with_projection(
        Net::new().push(Dense::<U4>::new()),
        Net::new().push(Dense::<U4>::new()),
    )
    .names(["downsample"]);
    let result = Net::new().push(named).try_bind(3);
    assert!(
        matches!(result, Err(ShapeError::BlockName { .. })),
        "{:?}",
        result.map(|n| names_of(&n))
    );
    let renamed = Residual::with_projection(
        Net::new().push(Dense::<U4>::new()),
        Net::new().push(Dense::<U4>::new()),
    )
    .projection_name("0");
    let result = Net::new().push(renamed).try_bind(3);
    assert!(
        matches!(result, Err(ShapeError::BlockName { .. })),
        "{:?}",
        result.map(|n| names_of(&n))
    );
}

/// Input: two stems for one shape, `.stem::<U4, _>(a).stem::<U4, _>(b)`.
/// Expected: an error that says two stems take `(4,)` (or a compile error); a stem a batch can
/// never reach is not bound silently.
/// Found (before the fix, now tested): with parameterless stems (`Relu`, `Tanh`) the net binds and the second stem is dead
/// (`stem_inputs() == [[4], [4]]`, `try_forward` always takes the first); with dense stems
/// `try_bind_stems` says "two layers named stems.4.0 both have a parameter named
/// `stems.4.0.weight`; give the layers of a block distinct names" (there is no block), and
/// `bind_stems`, whose docs list only memory and foreign layers as panics, panics with it.
#[test]
fn two_stems_for_one_shape_are_refused_saying_so() {
    let dead = Stems::new()
        .stem::<U4, _>(Net::new().push(Relu))
        .stem::<U4, _>(Net::new().push(Tanh));
    let trunk = Net::new().push(Dense::<U2>::new());
    let bound = trunk.bind_stems(dead);
    assert!(
        bound.is_err(),
        "bound two stems for (4,): {:?}",
        bound.map(|n| n.stem_inputs())
    );

    let dense = Stems::new()
        .stem::<U4, _>(Net::new().push(Dense::<U3>::new()))
        .stem::<U4, _>(Net::new().push(Dense::<U3>::new()));
    let err = trunk
        .bind_stems(dense.clone())
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("stem") && !err.contains("block"),
        "the error should say two stems take (4,): {err}"
    );
    assert!(
        caught(|| trunk.bind_stems(dense).map(|n| n.param_count())).is_ok(),
        "bind_stems panicked"
    );
}

/// Input: `Shared::new(Residual::new(…))` pushed between two dense layers (the docs say a
/// `Shared` holds "a single layer, not a Residual", but it compiles).
/// Expected: the declaration is described whole: `partial_shapes` and the summary list every
/// layer ("describing never fails: a layer that rejects what reaches it gives `?`").
/// Found (before the fix, now tested): the walk stops at the tie; `partial_shapes` and `format!("{decl}")` silently drop
/// layer 2 (`2.weight`, `2.bias`). (Also: `bind` compiles and panics with "layer 1 (Residual)
/// broke its contract", a crate layer blamed as a foreign one; `try_bind` returns that error.
/// `Shared::new(Shared::new(Dense))` blames "layer 1 (Dense)".)
#[test]
fn a_shared_composite_does_not_hide_the_layers_after_it() {
    let s = Shared::new(Residual::new(Net::new().push(Dense::<U4>::new())));
    let decl = Net::new()
        .push(Dense::<U4>::new())
        .push(s)
        .push(Dense::<U1>::new());
    // A tied block binds (each later place replays the first place's nodes).
    assert!(decl.try_bind(3).is_ok());
    let names: Vec<String> = decl.partial_shapes().into_iter().map(|(n, _)| n).collect();
    assert!(
        names.iter().any(|n| n == "2.weight"),
        "partial_shapes lost layer 2: {names:?}"
    );
    let summary = format!("{decl}");
    assert!(summary.contains("2.weight"), "{summary}");
}

/// Input: a residual block (or a tied ReLU) that declares a flat input of 4,
/// `.with_input_size(4)`, reached by images `(2, 3, 3)`.
/// Expected: an error, as for a single layer: `Relu.with_input_size(4)` there is
/// `ShapeError::Rank` ("a flat input (it declares its input size)").
/// Found (before the fix, now tested): both bind (`Ok`): a composite's declared width is compared only with a flat input,
/// and ignored otherwise.
#[test]
fn a_composite_that_declares_a_flat_input_refuses_an_image() {
    let image = Image::dynamic(2, 3, 3);
    let leaf = Net::new()
        .push(Relu.with_input_size(4))
        .push(Flatten)
        .push(Dense::<U1>::new());
    assert!(matches!(leaf.try_bind(image), Err(ShapeError::Rank { .. })));

    let block = Residual::new(Net::new().push(Conv2d::<U2, U1>::new())).with_input_size(4);
    let decl = Net::new()
        .push(block)
        .push(Flatten)
        .push(Dense::<U1>::new());
    let bound = decl.try_bind(image).map(|n| n.output_dims());
    assert!(
        bound.is_err(),
        "a block declared (4,) bound to images: {bound:?}"
    );

    let tie = Shared::<_, ()>::new(Relu);
    let decl = Net::new()
        .push(tie.with_input_size(4))
        .push(Flatten)
        .push(Dense::<U1>::new());
    let bound = decl.try_bind(image).map(|n| n.output_dims());
    assert!(
        bound.is_err(),
        "a tie declared (4,) bound to images: {bound:?}"
    );
}

/// Input: `Residual::new(Net::new().push(Dense::<U4>::new())).with_input::<U4>()` and
/// `Shared::new(Dense::<U3>::new()).with_input::<U4>()` as a net's first layer.
/// Expected: as `WithInput` documents, "its parameters' shapes are known before binding":
/// `partial_shapes` gives `(4, 4)` and `(3, 4)`, as for `Dense::<U3>::new().with_input::<U4>()`.
/// Found (before the fix, now tested): `(4, ?)` and `(3, ?)`; the declaration reaches a composite's parts, which never see
/// it.
#[test]
fn a_declared_composite_knows_its_parameter_shapes_before_binding() {
    let leaf = Net::new()
        .push(Dense::<U3>::new().with_input::<U4>())
        .push(Dense::<U1>::new());
    assert_eq!(leaf.partial_shapes()[0].1, PartialShape::from_dims(&[3, 4]));
    let block = Net::new()
        .push(Residual::new(Net::new().push(Dense::<U4>::new())).with_input::<U4>())
        .push(Dense::<U1>::new());
    assert_eq!(
        block.partial_shapes()[0],
        ("0.0.weight".to_owned(), PartialShape::from_dims(&[4, 4]))
    );
    let tie = Net::new()
        .push(Shared::new(Dense::<U3>::new()).with_input::<U4>())
        .push(Dense::<U1>::new());
    assert_eq!(
        tie.partial_shapes()[0],
        ("0.weight".to_owned(), PartialShape::from_dims(&[3, 4]))
    );
}

/// Input: stems that end in run-time widths, `Dense::dynamic(16)` for 4 features and
/// `Dense::dynamic(8)` for 7, bound with `bind_stems`.
/// Expected: as for a plain net, a check that only run time can make leaves `bind_stems`
/// unoffered (a compile error pointing at `try_bind_stems`), or `bind_stems` documents the
/// panic. (`try_bind_stems` returns `TiedInput` rightly.)
/// Found (before the fix, now tested): `bind_stems` compiles and panics: "cannot bind the net: layer trunk (after stem 7)
/// shares the parameters of layer trunk (after stem 4), which were made for input (16,), but
/// receives (8,)". Its docs promise a panic only when memory fails or a foreign layer
/// contradicts itself; the widths may come from a configuration file.
#[test]
fn bind_stems_does_not_panic_on_run_time_stem_widths() {
    let trunk = Net::new().push(Dense::<U2>::new());
    let stems = Stems::new()
        .stem::<U4, _>(Net::new().push(Dense::dynamic(16)))
        .stem::<U7, _>(Net::new().push(Dense::dynamic(8)));
    let err = trunk.bind_stems(stems.clone()).map(|_| ()).unwrap_err();
    assert!(matches!(err, ShapeError::TiedInput { .. }), "{err}");
    let bound = caught(|| trunk.bind_stems(stems).map(|n| n.stem_inputs()));
    assert!(bound.is_ok(), "bind_stems panicked: {bound:?}");
}

/// Input: a stem for 4 features whose layer 1 is a user layer lying about its output (its
/// run-time rule gives 4 features, its compile-time half 3).
/// Expected: the error names the place, as errors inside a block do (`in layer 1 (Residual),
/// its body: …`, or a path such as `stems.4.1`).
/// Found (before the fix, now tested): "layer 1 (Liar) broke its contract: …", with no stem: layer 1 of the trunk, or of the
/// stem for 7, is another layer. (`TooLarge` inside a stem is the same, "layer 0 (Dense): …",
/// though its parameter's name `stems.7.0.weight` tells the stem.)
#[test]
fn an_error_inside_a_stem_names_the_stem() {
    let trunk = Net::new().push(Dense::<U1>::new());
    let stems = Stems::new()
        .stem::<U4, _>(
            Net::new()
                .push(Dense::<U3>::new())
                .push(Liar(Lie::OutputShape)),
        )
        .stem::<U7, _>(Net::new().push(Dense::<U3>::new()));
    let err = trunk.bind_stems(stems).map(|_| ()).unwrap_err().to_string();
    assert!(err.contains("broke its contract"), "{err}");
    assert!(
        err.contains("stems.4") || err.contains("stem 4"),
        "which stem? {err}"
    );
}

/// Input: a net with an empty stem for 4 features and an empty trunk (the path for 4 is the
/// identity; the stem for 7 is `Dense::<U4>`), `loss_and_grads(&Batch<U4>, &Batch<U4>, Mse)`.
/// Expected: the loss of the identity, `Ok` (the target is `Batch<U4>`, and `try_forward` gives
/// 4 × samples).
/// Found (before the fix, now tested): `TargetWidth`: "the targets are 4 wide but the net's output is 1 wide": the output
/// shape of an empty range of nodes is taken as `()`, whose product is 1. The same when the
/// empty stem is added second.
#[test]
fn an_identity_stem_path_takes_targets_of_its_width() -> Result<(), Error> {
    let stems = Stems::new()
        .stem::<U4, _>(Net::new())
        .stem::<U7, _>(Net::new().push(Dense::<U4>::new()));
    let net = Net::new().bind_stems(stems)?;
    let x = Batch::<U4>::from_fn(2, |f, s| (f + s) as f32);
    assert_eq!(net.try_forward(&x)?.as_matrix(), x.as_matrix());
    let t = Batch::<U4>::zeros(2);
    let (loss, _) = net.loss_and_grads(&x, &t, Mse)?;
    let expected = x.as_matrix().iter().map(|v| v * v).sum::<f32>() / 8.0;
    assert_eq!(loss, expected);
    Ok(())
}

/// Input: a user layer that owns a gain `g` (`y = g ⊙ x`) and whose kernel says it is a ReLU
/// (`Kernel::activation`), after a `Tanh`, gains 0.5, input `(1, −1)`.
/// Expected: refused at binding (`ShapeError::Contract`): an element-wise activation owns no
/// parameters, so the claim is checkable, and "code a user plugs in is checked, not believed".
/// Found (before the fix, now tested): it binds, and inference and training compute different nets: `forward` runs the
/// claimed ReLU in place, `(0.762, 0)`, mean square 0.290; `loss_and_grads` runs the kernel,
/// `0.5 · tanh(x)`, loss 0.145, and trains a gain that inference ignores.
#[test]
fn a_kernel_with_parameters_that_claims_to_be_an_activation_is_refused() {
    let decl = Net::new()
        .push(Tanh)
        .push(Liar(Lie::ClaimsRelu))
        .initialize(Constant(0.5));
    let net = match decl.try_bind(U2::default()) {
        Err(ShapeError::Contract { .. }) => return,
        Err(other) => panic!("expected a Contract error, got {other}"),
        Ok(net) => net,
    };
    let x = Batch::<U2>::from_fn(1, |f, _| [1.0, -1.0][f]);
    let y = net.forward(&x);
    let forward_mse = y.as_matrix().iter().map(|v| v * v).sum::<f32>() / 2.0;
    let (loss, _) = net
        .loss_and_grads(&x, &Batch::<U2>::zeros(1), Mse)
        .expect("a loss");
    assert_eq!(
        forward_mse,
        loss,
        "forward {:?} and training disagree",
        y.as_matrix().as_slice()
    );
}

/// Input: the same layer with a kernel that says it is a reshape (`Kernel::is_reshape`), tied
/// in a residual body and after it.
/// Expected: refused at binding: a reshape owns no parameters.
/// Found (before the fix, now tested): it binds; the net skips the layer forward and backward, and its gain `1.0.gain` is
/// never used and always gets a zero gradient.
#[test]
fn a_kernel_with_parameters_that_claims_to_be_a_reshape_is_refused() {
    let tie = Shared::new(Liar(Lie::ClaimsReshape));
    let decl = Net::new()
        .push(Dense::<U3>::new())
        .push(Residual::new(
            Net::new().push(tie.clone()).push(Relu).push(tie.clone()),
        ))
        .push(tie)
        .push(Dense::<U1>::new())
        .initialize(Constant(0.5));
    let result = decl.try_bind(2);
    let net = match result.map_err(innermost) {
        Err(ShapeError::Contract { .. }) => return,
        Err(other) => panic!("expected a Contract error, got {other}"),
        Ok(net) => net,
    };
    let x = Batch::from_fn_dyn(2, 3, |f, s| (f + s) as f32 - 1.0);
    let (_, grads) = net
        .loss_and_grads(&x, &Batch::<U1>::zeros(3), Mse)
        .expect("gradients");
    let gain = grads.get("1.0.gain").expect("the gain's gradient");
    panic!("bound a reshape that owns a gain; its gradient is {gain:?}");
}

// =============================================================================================
// Attacks withstood.
// =============================================================================================

/// Absurd widths inside blocks, projections, ties and stems: every one is an error naming the
/// parameter, none a panic, an overflow or an aborting allocation.
#[test]
fn absurd_sizes_in_blocks_ties_and_stems_are_errors() {
    for width in [usize::MAX, 1 << 40, 1 << 33, (1 << 31) + 1] {
        let body = Net::new()
            .push(Dense::dynamic(width))
            .push(Dense::dynamic(4));
        let decl = Net::new().push(Dense::dynamic(4)).push(Residual::new(body));
        let err = caught(|| decl.try_bind(4).map(|_| ()))
            .unwrap_or_else(|p| panic!("width {width}: panicked: {p}"))
            .unwrap_err();
        assert!(
            matches!(
                &err,
                ShapeError::OutOfMemory { .. } | ShapeError::InBlock { .. }
            ),
            "width {width}: {err:?}"
        );
        assert!(err.to_string().contains("1.0.weight"), "{err}");

        let projection = Residual::with_projection(
            Net::new().push(Dense::dynamic(width)),
            Net::new().push(Dense::dynamic(width)),
        );
        let decl = Net::new().push(projection);
        let err = caught(|| decl.try_bind(4).map(|_| ()))
            .unwrap_or_else(|p| panic!("width {width}: panicked: {p}"))
            .unwrap_err();
        assert!(err.to_string().contains("0.0.weight"), "{err}");
    }

    let tie = Shared::<_, ()>::new(Dense::dynamic(1 << 40));
    let decl = Net::new().push(tie.clone()).push(Dense::dynamic(4));
    let err = decl.try_bind(4).map(|_| ()).unwrap_err();
    assert!(matches!(err, ShapeError::OutOfMemory { .. }), "{err}");

    // Products that overflow `usize`: a 2^20-channel convolution of a 2^16 × 2^16 image.
    let decl = Net::new()
        .push(Conv2d::dynamic(1 << 20, 3))
        .push(Residual::new(Net::new().push(Conv2d::dynamic(1 << 20, 1))));
    let bound = caught(|| {
        decl.try_bind(Image::dynamic(1, 1 << 16, 1 << 16))
            .map(|_| ())
    });
    assert!(matches!(bound, Ok(Err(_))), "{bound:?}");

    // Stems: a stem's absurd width, the trunk's, memory for both stems together, a huge image.
    let trunk = Net::new().push(Dense::<U2>::new());
    let stems = Stems::new()
        .stem::<U4, _>(Net::new().push(Dense::dynamic(3)))
        .stem::<U7, _>(Net::new().push(Dense::dynamic(usize::MAX)));
    let err = trunk.bind_stems(stems).map(|_| ()).unwrap_err();
    assert!(
        matches!(innermost(err.clone()), ShapeError::TooLarge { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("stems.7.0.weight"), "{err}");
    let stems = Stems::new()
        .stem::<U4, _>(Net::new().push(Dense::dynamic(1 << 40)))
        .stem::<U7, _>(Net::new().push(Dense::dynamic(1 << 40)));
    let err = trunk.bind_stems(stems).map(|_| ()).unwrap_err();
    assert!(matches!(err, ShapeError::OutOfMemory { .. }), "{err}");
    let wide = Net::new().push(Dense::dynamic(usize::MAX));
    let stems = Stems::new()
        .stem::<U4, _>(Net::new().push(Dense::<U3>::new()))
        .stem::<U7, _>(Net::new().push(Dense::<U3>::new()));
    let err = wide.bind_stems(stems).map(|_| ()).unwrap_err();
    assert!(err.to_string().contains("trunk.0.weight"), "{err}");
    let flat = Net::new().push(Flatten).push(Dense::<U1>::new());
    let huge = Stems::new().stem::<Image<U65536, U65536, U65536>, _>(Net::new().push(Relu));
    let err = flat.bind_stems(huge).map(|_| ()).unwrap_err();
    assert!(matches!(err, ShapeError::OutOfMemory { .. }), "{err}");
}

/// A residual in a residual in a residual around an empty body: `x + (x + (x + x)) = 4x`, and
/// the gradient of a layer before it is four times the plain one.
#[test]
fn three_nested_blocks_around_an_empty_body_quadruple() -> Result<(), Error> {
    let nested =
        Residual::new(Net::new().push(Residual::new(Net::new().push(Residual::new(Net::new())))));
    let net = Net::new()
        .push(Dense::<U2>::new())
        .push(nested)
        .seed(5)
        .bind::<U3>();
    let mut plain = Net::new().push(Dense::<U2>::new()).bind::<U3>();
    plain.set_param("0.weight", param(&net, "0.weight") * 4.0)?;
    plain.set_param("0.bias", param(&net, "0.bias") * 4.0)?;
    let x = Batch::<U3>::from_fn(3, |f, s| (f as f32 - s as f32) * 0.5);
    let close = |a: &DMatrix<f32>, b: &DMatrix<f32>| {
        a.shape() == b.shape()
            && a.iter()
                .zip(b.iter())
                .all(|(a, b)| (a - b).abs() <= 1e-5 * (1.0 + b.abs()))
    };
    let (y, plain_y) = (net.forward(&x), plain.forward(&x));
    assert!(
        close(y.as_matrix(), plain_y.as_matrix()),
        "{y:?} {plain_y:?}"
    );
    let t = Batch::<U2>::from_fn(3, |f, s| (f * s) as f32);
    let (_, grads) = net.loss_and_grads(&x, &t, Mse)?;
    let (_, plain_grads) = plain.loss_and_grads(&x, &t, Mse)?;
    let (g, p) = (grads.get("0.bias"), plain_grads.get("0.bias"));
    let four_times = |g: &DMatrix<f32>, p: &DMatrix<f32>| close(&(g / 4.0), p);
    assert!(
        g.zip(p).is_some_and(|(g, p)| four_times(g, p)),
        "{g:?} {p:?}"
    );
    let summary = format!("{net}");
    for row in ["0", "1.0.0", "1.0", "1"] {
        assert!(
            summary
                .lines()
                .any(|l| l.split_whitespace().next() == Some(row)),
            "{summary}"
        );
    }
    Ok(())
}

/// PyTorch's arithmetic through a residual sum with a ReLU fused after it: `inf + (−inf)`,
/// `−inf + inf` and NaN give NaN, and `relu(NaN)` is NaN, in inference (in place) and in
/// training; the loss and the gradients are NaN, and a step refuses them, changing nothing.
#[test]
fn nan_and_infinities_propagate_through_a_residual_sum() -> Result<(), Error> {
    let mut net = Net::new()
        .push(Residual::new(Net::new().push(Dense::<U1>::new())))
        .push(Relu)
        .bind::<U1>();
    net.set_param("0.0.weight", DMatrix::from_element(1, 1, -1.0))?;
    net.set_param("0.0.bias", DMatrix::from_element(1, 1, 0.0))?;
    let inputs = [f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 2.0];
    let x = Batch::<U1>::from_fn(4, |_, s| inputs[s]);
    let y = net.forward(&x);
    let y = y.as_matrix().as_slice();
    assert!(y[..3].iter().all(|v| v.is_nan()), "{y:?}");
    assert_eq!(y[3], 0.0);
    let (loss, grads) = net.loss_and_grads(&x, &Batch::<U1>::zeros(4), Mse)?;
    assert!(loss.is_nan());
    assert_eq!(grads.first_not_finite(), Some("0.0.weight"));
    let before = values(&net);
    let err = Adam::new(0.1).step(&mut net, &grads).unwrap_err();
    assert!(matches!(err, TrainError::GradientNotFinite { .. }), "{err}");
    assert_eq!(values(&net), before);
    Ok(())
}

/// Inference (with fusion and in-place activations) gives the output training differentiates,
/// and the gradients match central differences, on graphs made to trip the executor: a
/// pre-activation block (an activation and the sum read one value), a tie at the top level,
/// inside a nested block and as a projection, an empty block, a tie in a block's body and its
/// projection at once (`S(x) + S(x)`).
#[test]
fn inference_and_training_agree_and_gradients_match_finite_differences() {
    let x = Batch::<U3>::from_fn(4, |f, s| ((f * 5 + s * 3) % 7) as f32 / 3.0 - 1.0);
    let t = Batch::<U2>::from_fn(4, |f, s| ((f + s) % 3) as f32 / 2.0);

    macro_rules! check {
        ($net:expr) => {{
            let net = $net;
            let y = net.try_forward(&x).expect("forward");
            let (loss, grads) = net.loss_and_grads(&x, &t, Mse).expect("gradients");
            let diff = y.as_matrix() - t.as_matrix();
            let mse = diff.iter().map(|v| v * v).sum::<f32>() / diff.len() as f32;
            assert!((mse - loss).abs() <= 1e-6 * loss.max(1.0), "{mse} {loss}");
            let h = 1e-2f32;
            let names: Vec<String> = net.named_params().map(|(n, _)| n.to_owned()).collect();
            for name in &names {
                let value = param(&net, name);
                let g = grads.get(name).expect("a gradient");
                for i in 0..value.len() {
                    let at = |delta: f32| {
                        let mut nudged = net.clone();
                        let mut v = value.clone();
                        v[i] += delta;
                        nudged.set_param(name, v).expect("set");
                        nudged.loss_and_grads(&x, &t, Mse).expect("loss").0
                    };
                    let fd = (at(h) - at(-h)) / (2.0 * h);
                    let err = (fd - g[i]).abs() / (1e-2 + g[i].abs().max(fd.abs()));
                    assert!(err < 2e-2, "{name}[{i}]: analytic {} numeric {fd}", g[i]);
                }
            }
            net
        }};
    }

    let s = Shared::new(Dense::<U3>::new());
    let net = check!(Net::new()
        .push(Dense::<U3>::new())
        .push(Residual::new(
            Net::new().push(Tanh).push(Dense::<U3>::new())
        ))
        .push(Tanh)
        .push(s.clone())
        .push(Residual::with_projection(
            Net::new().push(Tanh).push(Residual::new(
                Net::new().push(Sigmoid).push(Dense::<U3>::new())
            )),
            Net::new().push(s.clone()),
        ))
        .push(Residual::new(Net::new()))
        .push(Tanh)
        .push(s)
        .push(Dense::<U2>::new())
        .seed(9)
        .try_bind(U3::default())
        .expect("bound"));
    let summary = format!("{net}");
    assert!(summary.contains("(tied to 3)"), "{summary}");

    let s = Shared::<_, ()>::new(Dense::<U3>::new());
    check!(Net::new()
        .push(Dense::<U3>::new())
        .push(Tanh)
        .push(Residual::with_projection(
            Net::new().push(s.clone()),
            Net::new().push(s.clone())
        ))
        .push(Tanh)
        .push(Residual::new(
            Net::new().push(Residual::new(Net::new().push(s).push(Tanh)))
        ))
        .push(Dense::<U2>::new())
        .seed(4)
        .try_bind(U3::default())
        .expect("bound"));
}

/// A projection block of two flattens (both branches are the input's values, skipped): the sum
/// is `2x`, as a flat vector, and inference agrees with training.
#[test]
fn a_block_of_reshapes_on_both_branches_doubles() -> Result<(), Error> {
    let net = Net::new()
        .push(Conv2d::<U1, U1>::new())
        .push(Residual::with_projection(
            Net::new().push(Flatten),
            Net::new().push(Flatten),
        ))
        .seed(1)
        .bind::<Image<U1, U2, U2>>();
    let x = Batch::<Image<U1, U2, U2>>::from_fn(2, |f, s| (f + s) as f32 * 0.3 - 0.5);
    let w = param(&net, "0.weight")[0];
    let b = param(&net, "0.bias")[0];
    let y = net.forward(&x);
    assert_eq!(y.as_matrix().nrows(), 4);
    for (y, x) in y.as_matrix().iter().zip(x.as_matrix().iter()) {
        let expected = 2.0 * (w * x + b);
        assert!(
            (y - expected).abs() <= 1e-6 * (1.0 + expected.abs()),
            "{y} {expected}"
        );
    }
    let t = Batch::<U4>::zeros(2);
    let (loss, _) = net.loss_and_grads(&x, &t, Mse)?;
    let mse = y.as_matrix().iter().map(|v| v * v).sum::<f32>() / 8.0;
    assert!((loss - mse).abs() <= 1e-6 * (1.0 + mse), "{loss} {mse}");
    Ok(())
}

/// A user layer that lies, as a tie inside a residual body and after it, and in a stem and a
/// trunk: a run-time rule that disagrees with its compile-time half, an output buffer of another
/// shape, a parameter gradient or an input gradient of another shape. Each is a
/// `ShapeError::Contract` naming the layer; none panics.
#[test]
fn a_lying_user_layer_is_caught_in_blocks_ties_and_stems() {
    let lies = [
        (Lie::Honest, ""),
        (Lie::OutputShape, "compile-time half"),
        (Lie::ForwardBuffer, "its output is 4 × 3"),
        (Lie::GradBuffer, "the gradient of `1.0.gain` is 1 × 7"),
        (Lie::InputGradBuffer, "its input gradient is 1 × 1"),
    ];
    for (lie, says) in lies {
        let tie = Shared::new(Liar(lie));
        let decl = Net::new()
            .push(Dense::<U3>::new())
            .push(Residual::new(
                Net::new().push(tie.clone()).push(Relu).push(tie.clone()),
            ))
            .push(tie)
            .push(Dense::<U1>::new());
        let run = caught(|| {
            let net = decl.try_bind(2)?;
            let x = Batch::from_fn_dyn(2, 3, |f, s| (f + s) as f32 - 1.0);
            net.try_forward(&x)?;
            net.loss_and_grads(&x, &Batch::<U1>::zeros(3), Mse)?;
            Ok::<_, ShapeError>(())
        });
        let run = run.unwrap_or_else(|p| panic!("{lie:?} panicked: {p}"));
        if lie == Lie::Honest {
            assert_eq!(run, Ok(()));
            continue;
        }
        let err = run.unwrap_err();
        assert!(err.to_string().contains(says), "{lie:?}: {err}");
        assert!(err.to_string().contains("Liar"), "{lie:?}: {err}");

        let trunk = Net::new().push(Liar(lie)).push(Dense::<U1>::new());
        let stems = Stems::new()
            .stem::<U4, _>(Net::new().push(Dense::<U3>::new()))
            .stem::<U7, _>(Net::new().push(Dense::<U3>::new()));
        let run = caught(|| {
            let net = trunk.bind_stems(stems)?;
            let x = Batch::<U7>::from_fn(2, |f, s| (f + s) as f32 - 1.0);
            net.try_forward(&x)?;
            net.loss_and_grads(&x, &Batch::<U1>::zeros(2), Mse)?;
            Ok::<_, ShapeError>(())
        });
        let err = run
            .unwrap_or_else(|p| panic!("{lie:?} in a trunk panicked: {p}"))
            .unwrap_err();
        assert!(
            matches!(innermost(err.clone()), ShapeError::Contract { .. }),
            "{lie:?}: {err}"
        );
    }
}

/// The error inside the blocks, stems or trunk an error is wrapped in.
fn innermost(err: ShapeError) -> ShapeError {
    match err {
        ShapeError::InBlock { source, .. } => innermost(*source),
        other => other,
    }
}

/// Stems at their edges: a batch of no samples runs (as on a plain net) but has no loss;
/// targets and labels of another count are refused; a flat batch of as many features as an
/// image stem's values finds no stem, static or run-time.
#[test]
fn stems_refuse_what_does_not_fit() -> Result<(), Error> {
    let trunk = Net::new().push(Dense::<U2>::new());
    let stems = Stems::new()
        .stem::<U4, _>(Net::new().push(Dense::<U3>::new()))
        .stem::<U7, _>(Net::new().push(Dense::<U3>::new()));
    let net = trunk.bind_stems(stems)?;
    let empty = Batch::<U4>::zeros(0);
    assert_eq!(net.try_forward(&empty)?.samples(), 0);
    let err = net.loss_and_grads(&empty, &Batch::<U2>::zeros(0), Mse);
    assert!(matches!(err, Err(ShapeError::EmptyBatch)), "{err:?}");
    let x = Batch::<U4>::zeros(2);
    let err = net.loss_and_grads(&x, &Batch::<U2>::zeros(3), Mse);
    assert!(
        matches!(err, Err(ShapeError::TargetCount { .. })),
        "{err:?}"
    );
    let labels = Labels::<U2>::try_new(vec![0])?;
    let err = net.loss_and_grads(&x, &labels, CrossEntropy);
    assert!(
        matches!(err, Err(ShapeError::TargetCount { .. })),
        "{err:?}"
    );
    let odd = Batch::from_fn_dyn(5, 1, |_, _| 0.0);
    assert!(matches!(
        net.try_forward(&odd),
        Err(ShapeError::NoStem { .. })
    ));

    let images = Net::new()
        .push(Flatten)
        .push(Dense::<U2>::new())
        .bind_stems(Stems::new().stem::<Image<U1, U2, U2>, _>(Net::new().push(Relu)))?;
    for err in [
        images.try_forward(&Batch::<U4>::zeros(1)).map(|_| ()),
        images
            .try_forward(&Batch::from_fn_dyn(4, 1, |_, _| 0.0))
            .map(|_| ()),
    ] {
        let err = err.unwrap_err();
        assert_eq!(
            err.to_string(),
            "no stem of the net takes samples of shape (4,); its stems take (1, 2, 2)"
        );
    }
    Ok(())
}

/// Gradients of one net stepped onto another are refused and change nothing, parameters or
/// optimizer state: a stemmed net's onto a plain net and back. A stem a batch does not reach
/// gets no Adam step (its count stays 0), a step on the other stem leaves the first's state
/// alone, and a tie across stems is reached from both.
#[test]
fn optimizer_steps_on_stems_refuse_foreign_gradients_and_skip_unreached_stems() -> Result<(), Error>
{
    let s = Shared::new(Dense::<U3>::new());
    let trunk = Net::new()
        .push(Residual::new(
            Net::new().push(Tanh).push(Dense::<U3>::new()),
        ))
        .push(Relu)
        .push(Residual::new(Net::new()))
        .push(Dense::<U2>::new());
    let stems = Stems::new()
        .stem::<U4, _>(
            Net::new()
                .push(Dense::<U3>::new())
                .push(Tanh)
                .push(s.clone()),
        )
        .stem::<U7, _>(Net::new().push(Dense::<U3>::new()).push(Tanh).push(s));
    let mut net = trunk.seed(3).bind_stems(stems)?;
    let names: Vec<&str> = net.named_params().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "stems.4.0.weight",
            "stems.4.0.bias",
            "stems.4.2.weight",
            "stems.4.2.bias",
            "trunk.0.1.weight",
            "trunk.0.1.bias",
            "trunk.3.weight",
            "trunk.3.bias",
            "stems.7.0.weight",
            "stems.7.0.bias",
        ]
    );
    let x4 = Batch::<U4>::from_fn(3, |f, s| ((f * 3 + s) % 5) as f32 - 2.0);
    let x7 = Batch::<U7>::from_fn(3, |f, s| ((f * 3 + s) % 5) as f32 - 2.0);
    let t = Batch::<U2>::from_fn(3, |f, s| (f + s) as f32 * 0.1);
    let (loss7, g7) = net.loss_and_grads(&x7, &t, Mse)?;
    // Inference through the stem for 7 and the trunk gives what training differentiated.
    let y7 = net.forward(&x7);
    let diff = y7.as_matrix() - t.as_matrix();
    let mse = diff.iter().map(|v| v * v).sum::<f32>() / 6.0;
    assert!((mse - loss7).abs() <= 1e-6, "{mse} {loss7}");
    assert!(g7
        .get("stems.4.2.weight")
        .is_some_and(|g| g.iter().any(|v| *v != 0.0)));
    assert!(g7
        .get("stems.4.0.weight")
        .is_some_and(|g| g.iter().all(|v| *v == 0.0)));

    let mut adam = Adam::new(0.1);
    adam.step(&mut net, &g7)?;
    assert_eq!(adam.steps("stems.7.0.weight"), 1);
    assert_eq!(adam.steps("stems.4.2.weight"), 1, "the tie is reached");
    assert_eq!(adam.steps("stems.4.0.weight"), 0, "the stem for 4 is not");
    let stem4 = param(&net, "stems.4.0.weight");

    // A plain net's gradients and the stemmed net's do not cross; nothing changes.
    let mut plain = Net::new()
        .push(Dense::<U3>::new())
        .push(Dense::<U2>::new())
        .bind::<U4>();
    let (_, gp) = plain.loss_and_grads(&x4, &t, Mse)?;
    let (before, plain_before) = (values(&net), values(&plain));
    let adam_before = adam.clone();
    assert!(adam.step(&mut plain, &g7).is_err());
    assert!(adam.step(&mut net, &gp).is_err());
    assert_eq!(values(&net), before);
    assert_eq!(values(&plain), plain_before);
    assert_eq!(adam, adam_before);

    let (_, g4) = net.loss_and_grads(&x4, &t, Mse)?;
    adam.step(&mut net, &g4)?;
    assert_eq!(adam.steps("stems.4.0.weight"), 1);
    assert_eq!(adam.steps("stems.7.0.weight"), 1, "left alone");
    assert_eq!(adam.steps("stems.4.2.weight"), 2);
    assert_ne!(param(&net, "stems.4.0.weight"), stem4);
    Ok(())
}

/// `reinitialize` on a stemmed net draws what a fresh binding with that initializer draws.
#[test]
fn reinitializing_a_stemmed_net_equals_binding_it_afresh() -> Result<(), Error> {
    let trunk = Net::new().push(Dense::<U2>::new());
    let stems = Stems::new()
        .stem::<U4, _>(Net::new().push(Dense::<U3>::new()))
        .stem::<U7, _>(Net::new().push(Dense::<U3>::new()));
    let mut net = trunk.clone().seed(5).bind_stems(stems.clone())?;
    net.reinitialize(XavierUniform::default())?;
    let fresh = trunk
        .seed(5)
        .initialize(XavierUniform::default())
        .bind_stems(stems)?;
    assert_eq!(values(&net), values(&fresh));
    Ok(())
}

/// Files for a tie inside a block and after it (`1.0` and `2`): the tensor named only at the
/// later place loads; a later place of another shape is an error naming it, even when
/// unexpected tensors are allowed; NaN saved at both places is one value; a tensor named like
/// a place the net does not have, and a missing nested one, are errors; every error changes
/// nothing.
#[test]
fn files_for_a_tie_across_a_block() -> Result<(), Error> {
    let s = Shared::new(Dense::<U3>::new());
    let decl = Net::new()
        .push(Dense::<U3>::new())
        .push(Residual::new(Net::new().push(s.clone()).push(Tanh)))
        .push(s)
        .push(Dense::<U1>::new());
    let source = decl.clone().seed(2).try_bind(U2::default())?;
    let mut net = decl.seed(7).try_bind(U2::default())?;
    let names: Vec<&str> = net.named_params().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "0.weight",
            "0.bias",
            "1.0.weight",
            "1.0.bias",
            "3.weight",
            "3.bias"
        ]
    );
    let own = |skip: &[&str]| -> Vec<(String, Vec<usize>, Vec<f32>)> {
        names_of(&source)
            .iter()
            .filter(|n| !skip.contains(&n.as_str()))
            .map(|n| tensor_of(&source, n, n))
            .collect()
    };

    // Refused, changing nothing; the result of the same file with unexpected tensors allowed
    // (on a copy).
    let before = values(&net);
    let mut refuse = |bytes: Vec<u8>, says: &str| {
        let err = net.load_from_bytes(&bytes).unwrap_err().to_string();
        assert!(err.contains(says), "{err}");
        assert_eq!(values(&net), before, "{says}");
        let w = Weights::from_bytes(&bytes).expect("a valid file");
        let options = LoadOptions::new().allow_unexpected(true);
        net.clone()
            .load_weights(&w, options)
            .map_err(|e| e.to_string())
    };

    // At the later place, of another shape: refused, allowed or not.
    let mut f = own(&[]);
    let (_, _, w) = tensor_of(&source, "1.0.weight", "2.weight");
    f.push(("2.weight".into(), vec![9], w));
    let allowed = refuse(file(&f), "`2.weight`");
    assert!(allowed.is_err_and(|e| e.contains("`2.weight`")));
    // A place the net does not have: refused unless allowed.
    let mut f = own(&[]);
    f.push(("3.0.weight".into(), vec![1, 3], vec![0.0; 3]));
    assert!(refuse(file(&f), "`3.0.weight`").is_ok());
    // A nested tensor missing.
    assert!(refuse(file(&own(&["1.0.bias"])), "`1.0.bias`").is_err());

    // Named only at the later place: loaded.
    let mut f = own(&["1.0.weight", "1.0.bias"]);
    f.push(tensor_of(&source, "1.0.weight", "2.weight"));
    f.push(tensor_of(&source, "1.0.bias", "2.bias"));
    let mut later = net.clone();
    later.load_from_bytes(&file(&f))?;
    assert_eq!(values(&later), values(&source));

    // NaN at both places: one value.
    let mut f = own(&["1.0.weight"]);
    f.push(("1.0.weight".into(), vec![3, 3], vec![f32::NAN; 9]));
    f.push(("2.weight".into(), vec![3, 3], vec![f32::NAN; 9]));
    let mut nan = net.clone();
    nan.load_from_bytes(&file(&f))?;
    assert!(param(&nan, "1.0.weight").iter().all(|v| v.is_nan()));
    Ok(())
}

fn names_of<S: lazynet::Bound, L: lazynet::list::Layers>(net: &Net<S, L>) -> Vec<String> {
    net.named_params().map(|(n, _)| n.to_owned()).collect()
}

/// `fit` on a net with a residual block and a tie, a checkpoint with its Adam state, and a
/// fresh net that loads it continues bit for bit as the net that wrote it.
#[test]
fn fit_and_checkpoint_a_tied_residual_net() -> Result<(), Error> {
    let s = Shared::new(Dense::<U3>::new());
    let decl = Net::new()
        .push(Dense::<U3>::new())
        .push(Tanh)
        .push(Residual::new(Net::new().push(s.clone()).push(Tanh)))
        .push(s)
        .push(Tanh)
        .push(Dense::<U2>::new())
        .seed(2);
    let x = Batch::<U2>::from_fn(16, |f, s| ((f * 7 + s * 3) % 5) as f32 / 5.0 - 0.4);
    let labels = Labels::<U2>::try_new((0..16).map(|s| s % 2).collect())?;
    let mut net = decl.clone().try_bind(U2::default())?;
    let mut adam = Adam::new(0.05);
    let history = net.fit(
        &x,
        &labels,
        CrossEntropy,
        &mut adam,
        &Fit::new(3).batch_size(4).quiet(),
    )?;
    assert!(history.epochs().iter().all(|e| e.loss.is_finite()));
    assert_eq!(
        adam.steps("2.0.weight"),
        12,
        "one step per batch, once per tie"
    );

    let dir = std::env::temp_dir().join(format!("lazynet-attack15-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("tied.safetensors");
    net.save_checkpoint(&path, &adam)?;
    let stored: Vec<String> = Weights::read(&path)?.names().map(String::from).collect();
    assert!(!stored.iter().any(|n| n.contains("3.weight")), "{stored:?}");
    let mut resumed = decl.try_bind(U2::default())?;
    let mut adam_resumed = Adam::new(0.05);
    resumed.load_checkpoint(&path, &mut adam_resumed)?;
    for _ in 0..2 {
        let (_, g) = net.loss_and_grads(&x, &labels, CrossEntropy)?;
        adam.step(&mut net, &g)?;
        let (_, g) = resumed.loss_and_grads(&x, &labels, CrossEntropy)?;
        adam_resumed.step(&mut resumed, &g)?;
    }
    assert_eq!(values(&net), values(&resumed));
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// A composite that declares its input is checked against a flat input of another width, and
/// a tie declared at its first place is checked at its later place; `load_infer` reads the
/// input size of nets that start with a tie or a block.
#[test]
fn declared_composites_and_load_infer_on_composites() -> Result<(), Error> {
    let decl = Net::new()
        .push(Residual::new(Net::new().push(Dense::<U4>::new())).with_input_size(5))
        .push(Dense::<U1>::new());
    let err = decl.try_bind(4).map(|_| ()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "layer 0 (Residual) declares 5 inputs but receives 4 from the input"
    );
    let tie = Shared::<_, ()>::new(Dense::<U4>::new());
    let decl = Net::new()
        .push(tie.clone().with_input_size(4))
        .push(Dense::dynamic(5))
        .push(tie.clone());
    let err = decl.try_bind(4).map(|_| ()).unwrap_err();
    assert!(matches!(err, ShapeError::TiedInput { .. }), "{err}");

    let dir = std::env::temp_dir().join(format!("lazynet-attack15-infer-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let decl = Net::new()
        .push(tie.clone())
        .push(Tanh)
        .push(Dense::dynamic(3))
        .push(tie);
    let path = dir.join("tie.safetensors");
    decl.try_bind(3)?.save(&path)?;
    assert_eq!(decl.load_infer(&path)?.input(), Dyn(3));
    let decl = Net::new()
        .push(Residual::new(Net::new().push(Dense::<U3>::new())))
        .push(Dense::<U1>::new());
    decl.try_bind(3)?.save(&path)?;
    assert_eq!(decl.load_infer(&path)?.input(), Dyn(3));
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// Before binding, a declaration with blocks and ties lists the parameters binding will make,
/// under the same names (a tie once, at its first place), and its summary marks the later
/// places; three stems, one of them empty, share one trunk with a block.
#[test]
fn declarations_with_blocks_and_ties_describe_what_binding_makes() -> Result<(), Error> {
    let s = Shared::new(Dense::<U3>::new());
    let decl = Net::new()
        .push(Dense::<U3>::new())
        .push(Residual::new(
            Net::new().push(Tanh).push(Dense::<U3>::new()),
        ))
        .push(s.clone())
        .push(Residual::with_projection(
            Net::new().push(Tanh),
            Net::new().push(s.clone()),
        ))
        .push(s)
        .push(Dense::<U2>::new());
    let declared: Vec<String> = decl.partial_shapes().into_iter().map(|(n, _)| n).collect();
    let summary = format!("{decl}");
    let net = decl.try_bind(3)?;
    assert_eq!(declared, names_of(&net));
    for later in ["3.downsample.0", "4"] {
        let row = summary
            .lines()
            .find(|l| l.split_whitespace().next() == Some(later))
            .unwrap_or_else(|| panic!("no row {later}:\n{summary}"));
        assert!(row.contains("(tied to 2)"), "{row}");
    }

    let trunk = Net::new()
        .push(Residual::new(Net::new().push(Dense::<U3>::new())))
        .push(Dense::<U1>::new());
    let stems = Stems::new()
        .stem::<U4, _>(Net::new().push(Dense::<U3>::new()))
        .stem::<U3, _>(Net::new())
        .stem::<U7, _>(Net::new().push(Dense::<U3>::new()));
    let net = trunk.seed(1).bind_stems(stems)?;
    assert_eq!(net.stem_inputs(), [vec![4], vec![3], vec![7]]);
    let x3 = Batch::<U3>::from_fn(2, |f, s| (f + s) as f32 * 0.5);
    let (_, grads) = net.loss_and_grads(&x3, &Batch::<U1>::zeros(2), Mse)?;
    assert!(grads
        .get("trunk.0.0.weight")
        .is_some_and(|g| g.iter().any(|v| *v != 0.0)));
    for stem in ["stems.4.0.weight", "stems.7.0.weight"] {
        assert!(grads.get(stem).is_some_and(|g| g.iter().all(|v| *v == 0.0)));
    }
    Ok(())
}
