//! One trunk, several stems (d2l's exercise 3): names, the path each batch takes, gradients
//! that reach the one trunk, a step that leaves an unreached stem alone, errors, save and load.

use lazynet::nalgebra::DMatrix;
use lazynet::prelude::*;

type Error = Box<dyn std::error::Error>;

/// The trunk's layers.
type Trunk = lazynet::Layers![Dense<U8>, Relu, Dense<U1>];

fn trunk() -> Net<Uninit, Trunk> {
    Net::new()
        .push(Dense::<U8>::new())
        .push(Relu)
        .push(Dense::<U1>::new())
}

/// The stems for 4 and 7 features (a macro: their type is long to write).
macro_rules! stems {
    () => {
        Stems::new()
            .stem::<U4, _>(Net::new().push(Dense::<U16>::new()).push(Tanh))
            .stem::<U7, _>(Net::new().push(Dense::<U16>::new()).push(Relu))
    };
}

/// The parameter `name`'s values.
fn param<S: lazynet::Bound, L: lazynet::list::Layers>(
    net: &Net<S, L>,
    name: &str,
) -> Option<DMatrix<f32>> {
    net.named_params()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.clone())
}

#[test]
fn names_list_each_stem_and_the_trunk_once() -> Result<(), Error> {
    let net = trunk().seed(1).bind_stems(stems!())?;
    let names: Vec<&str> = net.named_params().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "stems.4.0.weight",
            "stems.4.0.bias",
            "trunk.0.weight",
            "trunk.0.bias",
            "trunk.2.weight",
            "trunk.2.bias",
            "stems.7.0.weight",
            "stems.7.0.bias",
        ]
    );
    let stem = |i: usize| 16 * i + 16;
    assert_eq!(net.param_count(), stem(4) + stem(7) + 8 * 16 + 8 + 8 + 1);
    assert_eq!(net.stem_inputs(), [vec![4], vec![7]]);
    Ok(())
}

/// The plain net `stem → trunk` with the stemmed net's parameters for the stem `input`.
fn plain_for<S: lazynet::Bound, L: lazynet::list::Layers>(
    net: &Net<S, L>,
    input: usize,
) -> Result<Vec<(String, DMatrix<f32>)>, Error> {
    let map = [
        (format!("stems.{input}.0.weight"), "0.weight"),
        (format!("stems.{input}.0.bias"), "0.bias"),
        ("trunk.0.weight".into(), "2.weight"),
        ("trunk.0.bias".into(), "2.bias"),
        ("trunk.2.weight".into(), "4.weight"),
        ("trunk.2.bias".into(), "4.bias"),
    ];
    map.into_iter()
        .map(|(from, to)| {
            let value = param(net, &from).ok_or(format!("no {from}"))?;
            Ok((to.to_owned(), value))
        })
        .collect()
}

#[test]
fn each_batch_runs_its_stem_then_the_one_trunk_and_its_gradients_reach_the_trunk(
) -> Result<(), Error> {
    let net = trunk().seed(2).bind_stems(stems!())?;
    let x4 = Batch::<U4>::from_fn(3, |f, s| (f as f32 - 1.5) * (s as f32 + 0.5));
    let x7 = Batch::<U7>::from_fn(5, |f, s| ((f * 3 + s) % 5) as f32 - 2.0);

    // The same computation as a plain net holding the stem and the trunk.
    let mut plain4 = Net::new()
        .push(Dense::<U16>::new())
        .push(Tanh)
        .push(Dense::<U8>::new())
        .push(Relu)
        .push(Dense::<U1>::new())
        .bind::<U4>();
    for (name, value) in plain_for(&net, 4)? {
        plain4.set_param(&name, value)?;
    }
    let mut plain7 = Net::new()
        .push(Dense::<U16>::new())
        .push(Relu)
        .push(Dense::<U8>::new())
        .push(Relu)
        .push(Dense::<U1>::new())
        .bind::<U7>();
    for (name, value) in plain_for(&net, 7)? {
        plain7.set_param(&name, value)?;
    }
    assert_eq!(
        net.forward(&x4).as_matrix(),
        plain4.forward(&x4).as_matrix()
    );
    assert_eq!(
        net.forward(&x7).as_matrix(),
        plain7.forward(&x7).as_matrix()
    );

    let t7 = Batch::<U1>::from_fn(5, |_, s| s as f32 * 0.25);
    let (loss, grads) = net.loss_and_grads(&x7, &t7, Mse)?;
    let (plain_loss, plain_grads) = plain7.loss_and_grads(&x7, &t7, Mse)?;
    assert_eq!(loss, plain_loss);
    let pairs = [
        ("stems.7.0.weight", "0.weight"),
        ("trunk.0.weight", "2.weight"),
        ("trunk.2.bias", "4.bias"),
    ];
    for (ours, theirs) in pairs {
        assert_eq!(grads.get(ours), plain_grads.get(theirs), "{ours}");
    }
    // The stem the batch did not run through gets a zero gradient, marked as not reached.
    let unreached = grads.get("stems.4.0.weight").ok_or("no gradient")?;
    assert!(unreached.iter().all(|&g| g == 0.0));
    assert!(!grads.reached("stems.4.0.weight"));
    assert!(grads.reached("stems.7.0.weight") && grads.reached("trunk.0.weight"));
    assert!(!grads.reached("no.such.weight"));
    Ok(())
}

#[test]
fn a_step_moves_the_trunk_and_the_reached_stem_and_leaves_the_other_stem_alone() -> Result<(), Error>
{
    let mut net = trunk().seed(3).bind_stems(stems!())?;
    let x4 = Batch::<U4>::from_fn(4, |f, s| (f + 2 * s) as f32 * 0.1);
    let t = Batch::<U1>::from_fn(4, |_, s| s as f32);
    let names = ["stems.4.0.weight", "stems.7.0.weight", "trunk.0.weight"];
    let before: Vec<_> = names.iter().map(|n| param(&net, n)).collect();
    let mut adam = Adam::new(1e-2);
    let (_, grads) = net.loss_and_grads(&x4, &t, Mse)?;
    adam.step(&mut net, &grads)?;
    let after: Vec<_> = names.iter().map(|n| param(&net, n)).collect();
    assert_ne!(before[0], after[0], "the stem for 4 features moved");
    assert_eq!(before[1], after[1], "the stem for 7 features did not");
    assert_ne!(before[2], after[2], "the trunk moved");
    assert_eq!(adam.steps("stems.4.0.weight"), 1);
    assert_eq!(adam.steps("stems.7.0.weight"), 0);
    assert_eq!(adam.steps("trunk.0.weight"), 1);

    // A batch of the other size: its stem and the trunk move, the trunk's moments go on.
    let x7 = Batch::<U7>::from_fn(4, |f, s| (f * s) as f32 * 0.1);
    let (_, grads) = net.loss_and_grads(&x7, &t, Mse)?;
    let stem4 = param(&net, "stems.4.0.weight");
    adam.step(&mut net, &grads)?;
    assert_eq!(param(&net, "stems.4.0.weight"), stem4);
    assert_eq!(adam.steps("stems.7.0.weight"), 1);
    assert_eq!(adam.steps("trunk.0.weight"), 2);
    Ok(())
}

#[test]
fn a_run_time_shape_without_a_stem_is_an_error_naming_the_stems() -> Result<(), Error> {
    let net = trunk().bind_stems(stems!())?;
    let x = Batch::<Dyn>::from_fn_dyn(5, 2, |f, _| f as f32);
    let err = net.try_forward(&x).err().ok_or("5 features ran")?;
    assert_eq!(
        err.to_string(),
        "no stem of the net takes samples of shape (5,); its stems take (4,), (7,)"
    );
    let t = Batch::<U1>::zeros(2);
    assert!(matches!(
        net.loss_and_grads(&x, &t, Mse),
        Err(ShapeError::NoStem { .. })
    ));
    // A run-time batch of a size that has a stem runs it.
    let x7 = Batch::<Dyn>::from_fn_dyn(7, 2, |f, _| f as f32);
    let y = net.try_forward(&x7)?;
    assert_eq!(y.samples(), 2);
    Ok(())
}

#[test]
fn saved_and_loaded_to_the_same_outputs() -> Result<(), Error> {
    let net = trunk().seed(4).bind_stems(stems!())?;
    let bytes = net.save_to_bytes()?;
    let mut fresh = trunk().seed(5).bind_stems(stems!())?;
    let x = Batch::<U7>::from_fn(2, |f, s| (f + s) as f32);
    assert_ne!(fresh.forward(&x).as_matrix(), net.forward(&x).as_matrix());
    fresh.load_weights(&Weights::from_bytes(&bytes)?, LoadOptions::new())?;
    assert!(fresh.named_params().eq(net.named_params()));
    assert_eq!(fresh.forward(&x).as_matrix(), net.forward(&x).as_matrix());
    Ok(())
}

#[test]
fn stems_of_images_and_of_flat_inputs_share_a_trunk() -> Result<(), Error> {
    let stems = Stems::new()
        .stem::<Image<U1, U4, U4>, _>(Net::new().push(Flatten).push(Dense::<U6>::new()))
        .stem::<U3, _>(Net::new().push(Dense::<U6>::new()));
    let net = Net::new()
        .push(Relu)
        .push(Dense::<U2>::new())
        .bind_stems(stems)?;
    let image = Batch::<Image<U1, U4, U4>>::from_fn(2, |f, _| f as f32 * 0.1);
    let flat = Batch::<U3>::from_fn(2, |f, _| f as f32);
    assert_eq!(net.forward(&image).samples(), 2);
    assert_eq!(net.forward(&flat).samples(), 2);
    // Sixteen flat features are not an image of 1 × 4 × 4 to this net: no stem takes (16,).
    let sixteen = Batch::<U16>::zeros(1);
    assert!(matches!(
        net.try_forward(&sixteen),
        Err(ShapeError::NoStem { .. })
    ));
    Ok(())
}

#[test]
fn the_summary_shows_each_stem_and_marks_the_trunk_s_later_places() -> Result<(), Error> {
    let net = trunk().bind_stems(stems!())?;
    let table = format!("{net}");
    assert!(
        table.starts_with("Net (stems for inputs (4,), (7,))"),
        "{table}"
    );
    let tied = table
        .lines()
        .filter(|l| l.contains("(tied to trunk.0)"))
        .count();
    assert_eq!(tied, 1, "{table}");
    assert!(table.contains("stems.7.0.weight"), "{table}");
    assert!(table
        .trim_end()
        .ends_with(&format!("parameters: {}", net.param_count())));
    Ok(())
}

#[test]
fn two_stems_for_one_shape_are_an_error() {
    let stems = Stems::new()
        .stem::<U4, _>(Net::new().push(Relu))
        .stem::<U4, _>(Net::new().push(Tanh));
    let err = Net::new().push(Dense::<U2>::new()).bind_stems(stems).err();
    assert_eq!(err, Some(ShapeError::DuplicateStem { shape: vec![4] }));
}

#[test]
fn stems_of_run_time_widths_that_differ_are_an_error_not_a_panic() {
    let stems = Stems::new()
        .stem::<U4, _>(Net::new().push(Dense::dynamic(3)))
        .stem::<U7, _>(Net::new().push(Dense::dynamic(5)));
    let err = Net::new().push(Dense::<U2>::new()).bind_stems(stems).err();
    assert!(matches!(err, Some(ShapeError::TiedInput { .. })), "{err:?}");
}

#[test]
fn evaluate_and_predict_classes_run_the_batch_s_stem() -> Result<(), Error> {
    let stems = Stems::new()
        .stem::<U4, _>(Net::new().push(Dense::<U6>::new()).push(Relu))
        .stem::<U7, _>(Net::new().push(Dense::<U6>::new()).push(Relu));
    let net = Net::new()
        .push(Dense::<U3>::new())
        .seed(9)
        .bind_stems(stems)?;
    let x = Batch::<U7>::from_fn(5, |f, s| ((f * 3 + s) % 4) as f32 - 1.5);
    let labels = Labels::<U3>::try_new(vec![0, 1, 2, 1, 0])?;
    let (loss, accuracy) = net.evaluate(&x, &labels, CrossEntropy)?;
    let (grads_loss, _) = net.loss_and_grads(&x, &labels, CrossEntropy)?;
    assert_eq!(loss, grads_loss);
    let classes = net.predict_classes(&x)?;
    assert_eq!(classes, net.try_forward(&x)?.argmax()?);
    let right = classes
        .iter()
        .zip([0, 1, 2, 1, 0])
        .filter(|(a, b)| **a == *b)
        .count();
    assert_eq!(accuracy, Some(right as f32 / 5.0));
    assert_eq!(net.output_dims_for(&[4])?, [3]);
    assert!(matches!(
        net.output_dims_for(&[5]),
        Err(ShapeError::NoStem { .. })
    ));
    Ok(())
}
