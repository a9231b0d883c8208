//! Training: the pinned API, bad input (a clear error, nothing lost), non-finite steps,
//! determinism and checkpoints.

use lazynet::nalgebra::DMatrix;
use lazynet::prelude::*;
use proptest::prelude::*;

use crate::strategies::snapshot;

/// The example, spelled as pinned.
#[test]
fn the_pinned_api_compiles_and_runs() -> Result<(), Box<dyn std::error::Error>> {
    let mut net = Net::new()
        .push(Dense::<U64>::new())
        .push(Relu)
        .push(Dense::<U10>::new())
        .initialize(KaimingUniform::default())
        .seed(0)
        .bind::<U20>();

    let x = Batch::<U20>::from_fn(4, |f, s| (f * s) as f32 / 80.0);
    let labels = Labels::<U10>::try_new(vec![3, 0, 9, 1])?;
    let (loss, grads) = net.loss_and_grads(&x, &labels, CrossEntropy)?;
    assert!(loss.is_finite() && loss > 0.0);
    let named: Vec<(String, (usize, usize))> = grads
        .named_grads()
        .map(|(n, g)| (n.to_string(), g.shape()))
        .collect();
    let params: Vec<(String, (usize, usize))> = net
        .named_params()
        .map(|(n, p)| (n.to_string(), p.shape()))
        .collect();
    assert_eq!(named, params);
    assert_eq!(named[0], ("0.weight".to_string(), (64, 20)));
    assert_eq!(named[1], ("0.bias".to_string(), (64, 1)));
    let mut adam = Adam::new(1e-2);
    let before = snapshot(&net);
    adam.step(&mut net, &grads)?;
    assert_ne!(snapshot(&net), before);
    let mut sgd = Sgd::new(0.1).momentum(0.9).weight_decay(1e-4);
    sgd.step(&mut net, &grads)?;

    let targets = Batch::<U10>::zeros(4);
    let (mse, grads) = net.loss_and_grads(&x, &targets, Mse)?;
    assert!(mse > 0.0);
    assert_eq!(grads.len(), 4);
    Ok(())
}

fn mlp() -> Net<Init<U20>, impl lazynet::list::Chain<U20, Out = U10> + Clone> {
    Net::new()
        .push(Dense::<U16>::new())
        .push(Relu)
        .push(Dense::<U10>::new())
        .seed(7)
        .bind::<U20>()
}

#[test]
fn loss_and_grads_leaves_the_net_unchanged() -> Result<(), ShapeError> {
    let net = mlp();
    let before = snapshot(&net);
    let x = Batch::<U20>::from_fn(3, |f, s| (f + s) as f32 / 10.0);
    let labels = Labels::<U10>::try_new(vec![1, 2, 3])?;
    net.loss_and_grads(&x, &labels, CrossEntropy)?;
    assert_eq!(snapshot(&net), before);
    Ok(())
}

#[test]
fn bad_input_is_an_error_naming_both_numbers() -> Result<(), ShapeError> {
    let net = mlp();
    let x = Batch::<U20>::from_fn(4, |f, s| (f + s) as f32 / 10.0);
    let err = Labels::<U10>::try_new(vec![3, 0, 10, 1]).err();
    assert_eq!(
        err.map(|e| e.to_string()).as_deref(),
        Some("label 10 (sample 2) is out of range: there are 10 classes, labels 0 to 9")
    );
    let err = Labels::try_dynamic(0, vec![0]).err();
    assert_eq!(
        err.map(|e| e.to_string()).as_deref(),
        Some("label 0 (sample 0) is out of range: there are no classes, so no label fits")
    );
    let three = Labels::<U10>::try_new(vec![3, 0, 9])?;
    let err = net.loss_and_grads(&x, &three, CrossEntropy).err();
    assert_eq!(
        err.map(|e| e.to_string()).as_deref(),
        Some("the batch has 4 samples but there are 3 labels")
    );
    let targets = Batch::<U10>::zeros(5);
    let err = net.loss_and_grads(&x, &targets, Mse).err();
    assert_eq!(
        err.map(|e| e.to_string()).as_deref(),
        Some("the batch has 4 samples but there are 5 targets")
    );
    let empty = Batch::<U20>::zeros(0);
    let none = Labels::<U10>::try_new(vec![])?;
    assert_eq!(
        net.loss_and_grads(&empty, &none, CrossEntropy).err(),
        Some(ShapeError::EmptyBatch)
    );
    let wide = Batch::<Dyn>::from_fn_dyn(21, 4, |f, s| (f + s) as f32);
    let four = Labels::<U10>::try_new(vec![3, 0, 9, 1])?;
    let err = net.loss_and_grads(&wide, &four, CrossEntropy).err();
    assert_eq!(
        err,
        Some(ShapeError::Features {
            expected: 20,
            actual: 21
        })
    );
    // Run-time class counts are checked at run time.
    let dyn_labels = Labels::try_dynamic(5, vec![3, 0, 4, 1])?;
    let err = net.loss_and_grads(&x, &dyn_labels, CrossEntropy).err();
    assert_eq!(
        err.map(|e| e.to_string()).as_deref(),
        Some("the labels are 5 wide but the net's output is 10 wide")
    );
    Ok(())
}

#[test]
fn a_net_bound_at_run_time_trains_and_checks_widths() -> Result<(), Box<dyn std::error::Error>> {
    let mut net = Net::new()
        .push(Dense::dynamic(8))
        .push(Tanh)
        .push(Dense::<U3>::new())
        .try_bind(5)?;
    let x = Batch::<Dyn>::from_fn_dyn(5, 6, |f, s| (f as f32 - s as f32) / 4.0);
    let labels = Labels::<U3>::try_new(vec![0, 1, 2, 0, 1, 2])?;
    let mut sgd = Sgd::new(0.5);
    let (first, _) = net.loss_and_grads(&x, &labels, CrossEntropy)?;
    for _ in 0..50 {
        let (_, grads) = net.loss_and_grads(&x, &labels, CrossEntropy)?;
        sgd.step(&mut net, &grads)?;
    }
    let (last, _) = net.loss_and_grads(&x, &labels, CrossEntropy)?;
    assert!(last < first, "{first} → {last}");
    let narrow = Batch::<Dyn>::from_fn_dyn(4, 6, |_, _| 0.0);
    assert!(matches!(
        net.loss_and_grads(&narrow, &labels, CrossEntropy),
        Err(ShapeError::Features {
            expected: 5,
            actual: 4
        })
    ));
    Ok(())
}

#[test]
fn a_step_with_gradients_that_are_not_finite_is_refused_and_changes_nothing(
) -> Result<(), Box<dyn std::error::Error>> {
    let mut net = mlp();
    let labels = Labels::<U10>::try_new(vec![1, 2])?;
    let good = Batch::<U20>::from_fn(2, |f, s| (f + s) as f32 / 10.0);
    let mut adam = Adam::new(1e-2);
    let mut sgd = Sgd::new(0.1).momentum(0.9);
    let (_, grads) = net.loss_and_grads(&good, &labels, CrossEntropy)?;
    adam.step(&mut net, &grads)?;
    sgd.step(&mut net, &grads)?;
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let x = Batch::<U20>::from_fn(2, |f, s| if f == 3 && s == 1 { bad } else { 0.5 });
        let (loss, grads) = net.loss_and_grads(&x, &labels, CrossEntropy)?;
        assert!(!loss.is_finite() || grads.first_not_finite().is_some());
        let (params, adam_before, sgd_before) = (snapshot(&net), adam.clone(), sgd.clone());
        let err = adam.step(&mut net, &grads).err();
        assert!(
            matches!(err, Some(TrainError::GradientNotFinite { .. })),
            "{err:?}"
        );
        let err = sgd.step(&mut net, &grads).err();
        assert!(matches!(err, Some(TrainError::GradientNotFinite { .. })));
        assert_eq!(snapshot(&net), params);
        assert_eq!(adam, adam_before);
        assert_eq!(sgd, sgd_before);
    }
    Ok(())
}

#[test]
fn gradients_of_another_net_are_refused() -> Result<(), Box<dyn std::error::Error>> {
    let mut net = mlp();
    let other = Net::new().push(Dense::<U10>::new()).seed(1).bind::<U20>();
    let x = Batch::<U20>::from_fn(2, |f, s| (f + s) as f32 / 10.0);
    let labels = Labels::<U10>::try_new(vec![1, 2])?;
    let (_, grads) = other.loss_and_grads(&x, &labels, CrossEntropy)?;
    let before = snapshot(&net);
    let mut adam = Adam::new(1e-2);
    let err = adam.step(&mut net, &grads).err();
    assert!(
        matches!(err, Some(TrainError::GradsMismatch { .. })),
        "{err:?}"
    );
    assert_eq!(snapshot(&net), before);
    assert_eq!(adam, Adam::new(1e-2));
    let err = Adam::new(-1.0).step(&mut net, &grads).err();
    assert!(err.is_some());
    Ok(())
}

/// Two classes of points, for the fit tests.
fn data(samples: usize) -> Result<(Batch<U20>, Labels<U10>), ShapeError> {
    let x = Batch::<U20>::from_fn(samples, |f, s| {
        (((f * 31 + s * 17) % 23) as f32 - 11.0) / 11.0
    });
    let labels = (0..samples)
        .map(|s| x.sample(s).map_or(0, |v| usize::from(v[0] > v[1]) * 7))
        .collect();
    Ok((x, Labels::try_new(labels)?))
}

#[test]
fn fit_is_deterministic_and_learns() -> Result<(), Box<dyn std::error::Error>> {
    let (x, labels) = data(100)?;
    let fit = Fit::new(5)
        .batch_size(16)
        .seed(3)
        .validation(&x, &labels)
        .quiet();
    let mut a = mlp();
    let mut b = mlp();
    let ha = a.fit(&x, &labels, CrossEntropy, &mut Adam::new(1e-2), &fit)?;
    let hb = b.fit(&x, &labels, CrossEntropy, &mut Adam::new(1e-2), &fit)?;
    let metrics = |h: &History| -> Vec<_> {
        h.epochs()
            .iter()
            .map(|e| (e.loss, e.accuracy, e.val_loss, e.val_accuracy))
            .collect()
    };
    assert_eq!(metrics(&ha), metrics(&hb));
    assert_eq!(snapshot(&a), snapshot(&b));
    assert_eq!(ha.epochs().len(), 5);
    let first = ha.epochs()[0];
    let last = *ha.last().ok_or("no epochs")?;
    assert!(last.loss < first.loss, "{first} / {last}");
    assert!(last.val_accuracy.is_some() && last.accuracy.is_some());
    assert_eq!(last.epoch, 5);
    // Another seed shuffles otherwise.
    let mut c = mlp();
    c.fit(
        &x,
        &labels,
        CrossEntropy,
        &mut Adam::new(1e-2),
        &fit.clone().seed(4),
    )?;
    assert_ne!(snapshot(&a), snapshot(&c));
    Ok(())
}

fn checkpoint_round_trip<O: Optimizer + Clone>(
    optimizer: O,
    name: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let (x, labels) = data(50)?;
    let fit = |epochs, first| {
        Fit::new(epochs)
            .batch_size(8)
            .seed(11)
            .first_epoch(first)
            .quiet()
    };
    let mut whole = mlp();
    let mut opt = optimizer.clone();
    whole.fit(&x, &labels, CrossEntropy, &mut opt, &fit(4, 0))?;

    let mut half = mlp();
    let mut opt = optimizer.clone();
    half.fit(&x, &labels, CrossEntropy, &mut opt, &fit(2, 0))?;
    let dir =
        std::env::temp_dir().join(format!("lazynet-checkpoint-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("two_epochs.safetensors");
    half.save_checkpoint(&path, &opt)?;

    // A fresh net (other initial weights) and a fresh optimizer.
    let mut resumed = Net::new()
        .push(Dense::<U16>::new())
        .push(Relu)
        .push(Dense::<U10>::new())
        .seed(99)
        .bind::<U20>();
    let mut fresh = optimizer.clone();
    resumed.load_checkpoint(&path, &mut fresh)?;
    resumed.fit(&x, &labels, CrossEntropy, &mut fresh, &fit(2, 2))?;
    std::fs::remove_dir_all(&dir)?;
    assert_eq!(snapshot(&resumed), snapshot(&whole));
    Ok(())
}

#[test]
fn two_epochs_saved_loaded_and_two_more_equal_four_bit_for_bit(
) -> Result<(), Box<dyn std::error::Error>> {
    checkpoint_round_trip(Adam::new(1e-2).weight_decay(1e-4), "adam")?;
    checkpoint_round_trip(Sgd::new(0.05).momentum(0.9).weight_decay(1e-4), "sgd")
}

#[test]
fn a_checkpoint_that_does_not_fit_changes_nothing() -> Result<(), Box<dyn std::error::Error>> {
    let (x, labels) = data(20)?;
    let mut net = mlp();
    let mut adam = Adam::new(1e-2);
    net.fit(&x, &labels, CrossEntropy, &mut adam, &Fit::new(1).quiet())?;
    let other = Net::new().push(Dense::<U10>::new()).bind::<U20>();
    let dir = std::env::temp_dir().join(format!("lazynet-bad-checkpoint-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("other.safetensors");
    other.save_checkpoint(&path, &Adam::new(1e-2))?;
    let (params, state) = (snapshot(&net), adam.clone());
    assert!(net.load_checkpoint(&path, &mut adam).is_err());
    assert!(net.load_checkpoint(dir.join("missing"), &mut adam).is_err());
    std::fs::remove_dir_all(&dir)?;
    assert_eq!(snapshot(&net), params);
    assert_eq!(adam, state);
    Ok(())
}

#[test]
fn a_loss_that_stops_being_finite_stops_the_fit_naming_epoch_and_step(
) -> Result<(), Box<dyn std::error::Error>> {
    let (mut x, labels) = data(40)?;
    let mut m = x.clone().into_matrix();
    m[(0, 37)] = f32::NAN;
    x = Batch::try_from_matrix(m)?;
    let mut net = mlp();
    let fit = Fit::new(3).batch_size(10).shuffle(false).quiet();
    let err = net
        .fit(&x, &labels, CrossEntropy, &mut Sgd::new(0.1), &fit)
        .err();
    assert!(
        matches!(
            err,
            Some(TrainError::LossNotFinite {
                epoch: 1,
                step: 4,
                ..
            })
        ),
        "{err:?}"
    );
    let err = err.map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("epoch 1, step 4"), "{err}");
    let err = net
        .fit(
            &x,
            &labels,
            CrossEntropy,
            &mut Sgd::new(0.1),
            &Fit::new(1).batch_size(0).quiet(),
        )
        .err();
    assert!(matches!(err, Some(TrainError::Setting(_))));
    Ok(())
}

#[test]
fn cross_entropy_is_stable_for_huge_logits() -> Result<(), ShapeError> {
    // A net that passes its input through: the logits are the input.
    let net = Net::new().push(Identity).bind::<U3>();
    let x = Batch::<U3>::from_rows([1e4f32, -1e4, 0.0, -1e4, 1e4, 0.0])?;
    let labels = Labels::<U3>::try_new(vec![0, 0])?;
    let (loss, grads) = net.loss_and_grads(&x, &labels, CrossEntropy)?;
    // log-softmax: sample 0 is right (loss 0), sample 1 is wrong by 2e4.
    assert!((loss - 1e4).abs() < 1.0, "{loss}");
    assert_eq!(grads.first_not_finite(), None);
    // The output gradient is softmax − one-hot over the batch: finite too.
    let mut probe = Net::new().push(Dense::<U3>::new()).bind::<U3>();
    probe.set_param("0.weight", DMatrix::identity(3, 3))?;
    let (_, grads) = probe.loss_and_grads(&x, &labels, CrossEntropy)?;
    assert_eq!(grads.first_not_finite(), None);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Random run-time nets, batch sizes (0 included) and label vectors (in and out of range):
    /// an error or a result, never a panic.
    #[test]
    fn no_panic_for_random_nets_batches_and_labels(
        input in 1usize..12,
        hidden in 0usize..12,
        classes in 0usize..6,
        samples in 0usize..6,
        labels in proptest::collection::vec(0usize..8, 0..7),
        lr in prop_oneof![Just(1e-2), Just(-1.0), Just(f64::NAN), Just(1e30)],
    ) {
        let decl = Net::new()
            .push(Dense::dynamic(hidden))
            .push(Sigmoid)
            .push(Dense::dynamic(classes));
        let Ok(mut net) = decl.try_bind(input) else { return Ok(()) };
        let x = Batch::<Dyn>::from_fn_dyn(input, samples, |f, s| (f * s) as f32 / 7.0);
        if let Ok(labels) = Labels::try_dynamic(classes, labels) {
            let before = snapshot(&net);
            match net.loss_and_grads(&x, &labels, CrossEntropy) {
                Ok((_, grads)) => {
                    let mut adam = Adam::new(lr);
                    if adam.step(&mut net, &grads).is_err() {
                        prop_assert_eq!(snapshot(&net), before);
                    }
                    let _ = Sgd::new(lr).momentum(0.9).step(&mut net, &grads);
                }
                Err(e) => prop_assert!(!e.to_string().is_empty()),
            }
            let fit = Fit::new(1).batch_size(samples.max(1)).quiet();
            let _ = net.fit(&x, &labels, CrossEntropy, &mut Adam::new(lr), &fit);
        }
        let targets = Batch::<Dyn>::from_fn_dyn(classes, samples, |_, _| 0.5);
        let _ = net.loss_and_grads(&x, &targets, Mse);
    }
}
