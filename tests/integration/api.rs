//! The public API's behaviour, case by case.

use std::sync::{Arc, Mutex};

use lazynet::generic_array::sequence::GenericSequence;
use lazynet::nalgebra::DMatrix;
use lazynet::prelude::*;
use static_assertions::{assert_impl_all, assert_not_impl_any};

assert_impl_all!(Init<U20>: lazynet::Bound, Send, Sync, Clone);
assert_impl_all!(Init<Dyn>: lazynet::Bound);
assert_not_impl_any!(Uninit: lazynet::Bound);
assert_impl_all!(Uninit: lazynet::Unbound, Send, Sync, Clone);
assert_not_impl_any!(Init<U20>: lazynet::Unbound);
assert_not_impl_any!(Dyn: StaticDim);
assert_not_impl_any!(U0: StaticDim);
assert_impl_all!(ShapeError: std::error::Error, Send, Sync, Clone);
// Each built-in loss takes one kind of targets; the other kind's implementation only carries
// the rule the compile error states, and never holds.
assert_impl_all!(Mse: lazynet::train::Loss<Batch<U3>>, lazynet::train::Loss<Batch<Dyn>>);
assert_not_impl_any!(Mse: lazynet::train::Loss<Labels<U3>>, lazynet::train::Loss<Labels<Dyn>>);
assert_impl_all!(CrossEntropy: lazynet::train::Loss<Labels<U3>>, lazynet::train::Loss<Labels<Dyn>>);
assert_not_impl_any!(CrossEntropy: lazynet::train::Loss<Batch<U3>>, lazynet::train::Loss<Batch<Dyn>>);

/// Records every parameter it is asked to fill.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<String>>>);

impl Recorder {
    fn calls(&self) -> Vec<String> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

impl Initializer for Recorder {
    fn init(&self, param: &ParamInfo<'_>, _: &mut InitRng, values: &mut [f32]) {
        if let Ok(mut v) = self.0.lock() {
            v.push(format!("{} {}", param.name(), param.shape()));
        }
        values.fill(0.5);
    }
}

type Chapter = lazynet::Layers![Dense<U256>, Relu, Dense<U10>];

fn chapter_net() -> Net<Uninit, Chapter> {
    Net::new()
        .push(Dense::<U256>::new())
        .push(Relu)
        .push(Dense::<U10>::new())
}

#[test]
fn the_initializer_runs_once_per_parameter_in_order_and_only_at_binding() {
    let rec = Recorder::default();
    let decl = chapter_net().initialize(rec.clone());
    assert!(rec.calls().is_empty(), "registering must run nothing");

    let net = decl.clone().bind::<U20>();
    let expected = [
        "0.weight (256, 20)",
        "0.bias (256,)",
        "2.weight (10, 256)",
        "2.bias (10,)",
    ];
    assert_eq!(rec.calls(), expected);
    assert_eq!(
        net.param_shapes(),
        [vec![256, 20], vec![256], vec![10, 256], vec![10]]
    );

    let x = Batch::<U20>::zeros(2);
    let y1 = net.forward(&x);
    let y2 = net.forward(&x);
    assert_eq!(y1, y2);
    assert_eq!(rec.calls().len(), 4, "forward must not initialize again");

    let mut net = net;
    net.reinitialize(Constant(2.0)).unwrap();
    assert!(net.named_params().all(|(_, m)| m.iter().all(|v| *v == 2.0)));
    assert_eq!(
        rec.calls().len(),
        4,
        "reinitialize uses the new initializer only"
    );
}

#[test]
fn named_params_follow_pytorch_names_and_layouts() {
    let net = chapter_net().bind::<U20>();
    let params: Vec<(String, (usize, usize))> = net
        .named_params()
        .map(|(n, m)| (n.to_string(), m.shape()))
        .collect();
    assert_eq!(
        params,
        [
            ("0.weight".to_string(), (256, 20)),
            ("0.bias".to_string(), (256, 1)),
            ("2.weight".to_string(), (10, 256)),
            ("2.bias".to_string(), (10, 1)),
        ]
    );
    assert_eq!(net.param_count(), 256 * 20 + 256 + 10 * 256 + 10);
}

#[test]
fn default_init_is_pytorch_linear() {
    let net = chapter_net().bind::<U20>();
    let bound0 = 1.0 / 20f32.sqrt();
    let bound2 = 1.0 / 256f32.sqrt();
    for (name, m) in net.named_params() {
        let bound = if name.starts_with('0') {
            bound0
        } else {
            bound2
        };
        assert!(
            m.iter().all(|v| v.abs() <= bound),
            "{name} exceeds ±{bound}"
        );
        assert!(m.iter().any(|v| *v != 0.0), "{name} was not drawn");
    }
}

#[test]
fn seeds_decide_the_weights() {
    let a = chapter_net().seed(1).bind::<U20>();
    let b = chapter_net().seed(1).bind::<U20>();
    let c = chapter_net().seed(2).bind::<U20>();
    let first = |n: &Net<Init<U20>, _>| n.named_params().next().map(|(_, m)| m.clone());
    assert_eq!(first(&a), first(&b));
    assert_ne!(first(&a), first(&c));
}

#[test]
fn partial_shapes_show_what_is_known_before_binding() {
    let shapes: Vec<(String, String)> = chapter_net()
        .partial_shapes()
        .into_iter()
        .map(|(n, s)| (n, s.to_string()))
        .collect();
    let expected = [
        ("0.weight", "(256, ?)"),
        ("0.bias", "(256,)"),
        ("2.weight", "(10, 256)"),
        ("2.bias", "(10,)"),
    ];
    assert_eq!(
        shapes,
        expected.map(|(a, b)| (a.to_string(), b.to_string()))
    );
}

#[test]
fn summaries_show_partial_and_bound_shapes() {
    let decl = chapter_net();
    let text = decl.to_string();
    assert!(text.contains("0.weight   (256, ?)"), "{text}");
    assert!(text.contains("2.weight   (10, 256)   2560"), "{text}");
    assert!(text.contains("parameters: ? (2826 known"), "{text}");

    let text = decl.bind::<U20>().to_string();
    assert!(text.contains("Net (bound to input size 20)"), "{text}");
    assert!(text.contains("0.weight   (256, 20)   5120"), "{text}");
    assert!(text.contains("parameters: 7946"), "{text}");
}

#[test]
fn run_time_errors_name_layer_and_numbers() {
    let decl = Net::new()
        .push(Dense::dynamic(256))
        .push(Relu)
        .push(Dense::<U10>::with_input::<U30>());
    assert_eq!(
        decl.try_bind(20).map(|_| ()),
        Err(ShapeError::LayerInput {
            layer: 2,
            kind: "Dense",
            expected: 30,
            actual: 256
        })
    );
    assert_eq!(
        chapter_net().try_bind(0).map(|_| ()),
        Err(ShapeError::ZeroInput)
    );

    let net = chapter_net().try_bind(20).expect("binds");
    let wrong = Batch::<Dyn>::from_fn_dyn(30, 2, |_, _| 0.0);
    assert_eq!(
        net.try_forward(&wrong).map(|_| ()),
        Err(ShapeError::Features {
            expected: 20,
            actual: 30
        })
    );
    let wrong = Batch::<Dyn>::from_fn_dyn(30, 2, |_, _| 0.0);
    assert_eq!(
        chapter_net().forward_init(&wrong).map(|_| ()),
        Ok(()),
        "an undeclared input takes the first batch's size"
    );
    let declared = Net::new().push(Dense::<U10>::with_input::<U20>());
    assert_eq!(
        declared.forward_init(&wrong).map(|_| ()),
        Err(ShapeError::LayerInput {
            layer: 0,
            kind: "Dense",
            expected: 20,
            actual: 30
        })
    );
}

#[test]
fn empty_batches_give_empty_outputs() {
    let net = chapter_net().bind::<U20>();
    let y = net.forward(&Batch::<U20>::zeros(0));
    assert_eq!(y.as_matrix().shape(), (10, 0));
    let dyn_net = chapter_net().try_bind(20).expect("binds");
    let y = dyn_net
        .try_forward_matrix(&DMatrix::zeros(20, 0))
        .expect("runs");
    assert_eq!(y.as_matrix().shape(), (10, 0));
}

#[test]
fn zero_widths_are_empty_layers_not_panics() {
    let net = Net::new()
        .push(Dense::dynamic(0))
        .push(Relu)
        .push(Dense::<U3>::new())
        .initialize(Constant(1.0))
        .bind::<U4>();
    assert_eq!(
        net.param_shapes(),
        [vec![0, 4], vec![0], vec![3, 0], vec![3]]
    );
    let y = net.forward(&Batch::<U4>::zeros(2));
    // No features reach the last layer, so it outputs its bias.
    assert!(y.as_matrix().iter().all(|v| *v == 1.0));
}

#[test]
fn predict_equals_one_column_of_forward() {
    let net = chapter_net()
        .initialize(XavierUniform::default())
        .bind::<U20>();
    let s: GenericArray<f32, U20> = GenericArray::generate(|i| i as f32 / 20.0);
    let y: GenericArray<f32, U10> = net.predict(&s);
    let batch = net.forward(&Batch::<U20>::from_samples(&[s, s]));
    assert_eq!(Some(y.as_slice()), batch.sample(1));
}

#[test]
fn one_declaration_bound_to_two_sizes_shares_what_does_not_depend_on_the_input() {
    let decl = chapter_net().initialize(XavierUniform::default());
    let a = decl.clone().bind::<U20>();
    let b = decl.bind::<U30>();
    let same: Vec<&str> = a
        .named_params()
        .zip(b.named_params())
        .filter(|((_, x), (_, y))| x == y)
        .map(|((n, _), _)| n)
        .collect();
    // Xavier zeroes biases; 2.weight's shape and fans do not depend on the input size.
    assert_eq!(same, ["0.bias", "2.weight", "2.bias"]);
}

#[test]
fn per_parameter_initializers() {
    let net = chapter_net()
        .initialize(WeightBias::new(XavierUniform::default(), Constant(0.25)))
        .bind::<U20>();
    for (name, m) in net.named_params() {
        if name.ends_with("bias") {
            assert!(m.iter().all(|v| *v == 0.25), "{name}");
        } else {
            assert!(m.iter().any(|v| *v != 0.25), "{name}");
        }
    }
}
