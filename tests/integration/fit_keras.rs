//! `fit` as a Keras user expects it: learning-rate schedules recorded in the history, early
//! stopping with restored best weights, a per-epoch callback, `validation_split`, checkpoints
//! that hold the hyper-parameters and where the fit stood, and times printed in milliseconds.

use lazynet::prelude::*;

use crate::strategies::snapshot;

/// Two classes of 4 features: is the first feature larger than the second?
fn data(samples: usize) -> Result<(Batch<U4>, Labels<U2>), ShapeError> {
    let x = Batch::<U4>::from_fn(samples, |f, s| ((s * 7 + f * 13) % 17) as f32 / 17.0 - 0.5);
    let labels = (0..samples)
        .map(|s| usize::from(x.sample(s).is_some_and(|v| v[0] > v[1])))
        .collect();
    Ok((x, Labels::try_new(labels)?))
}

type Small = lazynet::Layers![Dense<U8>, Relu, Dense<U2>];

fn net(seed: u64) -> Net<Init<U4>, Small> {
    Net::new()
        .push(Dense::<U8>::new())
        .push(Relu)
        .push(Dense::<U2>::new())
        .seed(seed)
        .bind::<U4>()
}

/// A temporary file, removed when dropped.
struct TempPath(std::path::PathBuf);

impl TempPath {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("lazynet-fit-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        TempPath(dir.join(name))
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn a_schedule_sets_and_records_every_epochs_rate() -> Result<(), Box<dyn std::error::Error>> {
    let (x, labels) = data(32)?;
    let mut net = net(0);
    let mut adam = Adam::new(1.0);
    let fit = Fit::new(6)
        .batch_size(8)
        .quiet()
        .schedule(Schedule::step_decay(0.1, 2, 0.5));
    let history = net.fit(&x, &labels, CrossEntropy, &mut adam, &fit)?;
    let rates: Vec<f64> = history.epochs().iter().map(|m| m.lr).collect();
    assert_eq!(rates, [0.1, 0.1, 0.05, 0.05, 0.025, 0.025]);
    assert_eq!(adam.lr(), 0.025);
    // Without a schedule the optimizer's rate is recorded as it is.
    let history = net.fit(
        &x,
        &labels,
        CrossEntropy,
        &mut Sgd::new(0.3),
        &Fit::new(1).quiet(),
    )?;
    assert_eq!(history.last().map(|m| m.lr), Some(0.3));
    // A schedule that gives a bad rate: the first step of that epoch is refused, named.
    let bad = Fit::new(3)
        .quiet()
        .schedule(Schedule::from_fn(|e| if e == 2 { f64::NAN } else { 0.01 }));
    let err = net
        .fit(&x, &labels, CrossEntropy, &mut Adam::new(0.01), &bad)
        .err();
    match err {
        Some(TrainError::Step {
            epoch: 2,
            step: 1,
            history,
            source,
        }) => {
            assert_eq!(history.epochs().len(), 1);
            assert!(matches!(
                *source,
                TrainError::Hyper {
                    name: "learning rate",
                    ..
                }
            ));
        }
        other => panic!("{other:?}"),
    }
    Ok(())
}

#[test]
fn early_stopping_stops_and_restores_the_best_weights() -> Result<(), Box<dyn std::error::Error>> {
    let (x, labels) = data(64)?;
    let (vx, vl) = data(24)?;
    // A learning rate so large that the validation loss soon stops improving.
    let stop = EarlyStopping::new(Monitor::ValLoss)
        .patience(3)
        .restore_best_weights(true);
    let fit = Fit::new(200)
        .batch_size(8)
        .quiet()
        .validation(&vx, &vl)
        .early_stopping(stop);
    let mut best_net = net(2);
    let history = best_net.fit(&x, &labels, CrossEntropy, &mut Adam::new(0.5), &fit)?;
    let stopped = history.stopped_early().ok_or("no early stop")?;
    let best = history.best().ok_or("no best epoch")?;
    assert!(history.restored_best());
    assert_eq!(history.epochs().len(), stopped);
    assert_eq!(
        stopped,
        best.epoch + 3,
        "patience 3: the third epoch without improvement stops"
    );
    assert!(history.epochs().iter().all(|m| m
        .val_loss
        .is_some_and(|l| l >= best.val_loss.unwrap_or(f32::NAN))));
    // The net holds the best epoch's weights: its validation loss is the best epoch's.
    let (val_loss, _) = best_net.evaluate(&vx, &vl, CrossEntropy)?;
    assert_eq!(Some(val_loss), best.val_loss);

    // Without restoring, the weights are the last epoch's.
    let fit = fit.early_stopping(stop.restore_best_weights(false));
    let mut last = net(2);
    let history = last.fit(&x, &labels, CrossEntropy, &mut Adam::new(0.5), &fit)?;
    let (val_loss, _) = last.evaluate(&vx, &vl, CrossEntropy)?;
    assert!(!history.restored_best());
    assert_eq!(Some(val_loss), history.last().and_then(|m| m.val_loss));
    Ok(())
}

#[test]
fn early_stopping_needs_the_metric_it_watches() -> Result<(), Box<dyn std::error::Error>> {
    let (x, labels) = data(16)?;
    let mut net = net(0);
    let before = snapshot(&net);
    let fit = Fit::new(3)
        .quiet()
        .early_stopping(EarlyStopping::new(Monitor::ValAccuracy));
    let err = net
        .fit(&x, &labels, CrossEntropy, &mut Adam::new(0.01), &fit)
        .err();
    let text = err.map(|e| e.to_string()).unwrap_or_default();
    assert!(text.contains("no validation data"), "{text}");
    let targets = Batch::<U2>::zeros(16);
    let fit = Fit::new(3)
        .quiet()
        .early_stopping(EarlyStopping::new(Monitor::Accuracy));
    let err = net.fit(&x, &targets, Mse, &mut Adam::new(0.01), &fit).err();
    let text = err.map(|e| e.to_string()).unwrap_or_default();
    assert!(text.contains("not labels"), "{text}");
    assert_eq!(snapshot(&net), before);
    Ok(())
}

#[test]
fn a_callback_sees_every_epoch_and_can_stop() -> Result<(), Box<dyn std::error::Error>> {
    let (x, labels) = data(32)?;
    let mut seen = Vec::new();
    let fit = Fit::new(10).quiet().on_epoch_end(|m| {
        seen.push(m.epoch);
        if m.epoch == 4 {
            Control::Stop
        } else {
            Control::Continue
        }
    });
    let history = net(0).fit(&x, &labels, CrossEntropy, &mut Adam::new(0.01), &fit)?;
    drop(fit);
    assert_eq!(seen, [1, 2, 3, 4]);
    assert_eq!(history.stopped_early(), Some(4));
    assert_eq!(history.epochs().len(), 4);
    Ok(())
}

#[test]
fn validation_split_holds_out_the_last_samples() -> Result<(), Box<dyn std::error::Error>> {
    let (x, labels) = data(50)?;
    let fit = Fit::new(2)
        .batch_size(50)
        .quiet()
        .shuffle(false)
        .validation_split(0.2);
    let mut split_net = net(4);
    let history = split_net.fit(&x, &labels, CrossEntropy, &mut Sgd::new(0.1), &fit)?;
    // The same as training on the first 40 and validating on the last 10 by hand.
    let first: Vec<usize> = (0..40).collect();
    let last: Vec<usize> = (40..50).collect();
    let (tx, tl) = (x.select(&first)?, labels.select(&first)?);
    let (vx, vl) = (x.select(&last)?, labels.select(&last)?);
    let by_hand = Fit::new(2)
        .batch_size(50)
        .quiet()
        .shuffle(false)
        .validation(&vx, &vl);
    let mut hand_net = net(4);
    let expected = hand_net.fit(&tx, &tl, CrossEntropy, &mut Sgd::new(0.1), &by_hand)?;
    let strip = |h: &History| -> Vec<(f32, Option<f32>, Option<f32>)> {
        h.epochs()
            .iter()
            .map(|m| (m.loss, m.val_loss, m.val_accuracy))
            .collect()
    };
    assert_eq!(strip(&history), strip(&expected));
    assert_eq!(snapshot(&split_net), snapshot(&hand_net));
    // Fractions that leave a part empty (1e-17 of 50 validates on none, 0.99 trains on none),
    // or are no fraction, are refused before any step.
    for bad in [0.0, 1.0, -0.5, f64::NAN, 1e-17, 0.99] {
        let fit = Fit::new(1).quiet().validation_split(bad);
        let err = split_net
            .fit(&x, &labels, CrossEntropy, &mut Sgd::new(0.1), &fit)
            .err();
        assert!(
            matches!(err, Some(TrainError::Setting(_))),
            "{bad}: {err:?}"
        );
    }
    Ok(())
}

#[test]
fn validation_data_of_another_run_time_width_is_an_error() -> Result<(), Box<dyn std::error::Error>>
{
    let (x, labels) = data(8)?;
    let wide = Batch::from_fn_dyn(5, 8, |_, _| 0.0);
    let fit = Fit::new(1).quiet().validation(&wide, &labels);
    let err = net(0)
        .fit(&x, &labels, CrossEntropy, &mut Sgd::new(0.1), &fit)
        .err();
    assert!(
        matches!(
            err,
            Some(TrainError::Shape(ShapeError::Features {
                expected: 4,
                actual: 5
            }))
        ),
        "{err:?}"
    );
    Ok(())
}

#[test]
fn checkpoints_hold_hyper_parameters_and_progress() -> Result<(), Box<dyn std::error::Error>> {
    let (x, labels) = data(32)?;
    let path = TempPath::new("hyper.safetensors");
    let mut trained = net(1);
    let mut adam = Adam::new(0.01).betas(0.8, 0.99).weight_decay(1e-4);
    let fit = Fit::new(2)
        .batch_size(8)
        .seed(9)
        .quiet()
        .checkpoint(&path.0);
    trained.fit(&x, &labels, CrossEntropy, &mut adam, &fit)?;

    // Another learning rate: an error naming it, nothing loaded.
    let mut fresh = net(1);
    let before = snapshot(&fresh);
    let mut other = Adam::new(0.02).betas(0.8, 0.99).weight_decay(1e-4);
    let err = fresh.load_checkpoint(&path.0, &mut other).err();
    let text = err.map(|e| e.to_string()).unwrap_or_default();
    assert_eq!(
        text,
        "the checkpoint was saved by Adam with initial_lr 0.01 but is loaded into Adam with initial_lr 0.02; load with `Hyper::KeepOwn` to keep the optimizer's, or `Hyper::FromFile` to take the file's"
    );
    assert_eq!(snapshot(&fresh), before);
    assert_eq!(other.steps("0.weight"), 0);
    // Another optimizer altogether, whatever the policy.
    for hyper in [Hyper::Match, Hyper::KeepOwn, Hyper::FromFile] {
        let err = fresh
            .load_checkpoint_with(&path.0, &mut Sgd::new(0.01), hyper)
            .err();
        let text = err.map(|e| e.to_string()).unwrap_or_default();
        assert_eq!(
            text,
            "checkpoint: it holds the state of an Adam optimizer, which cannot be loaded into SGD"
        );
    }
    // Keep our own, or take the file's.
    let progress = fresh.load_checkpoint_with(&path.0, &mut other, Hyper::KeepOwn)?;
    assert_eq!(progress, Some(Progress { epoch: 2, seed: 9 }));
    assert_eq!(other.lr(), 0.02);
    let mut taken = Adam::new(0.5);
    fresh.load_checkpoint_with(&path.0, &mut taken, Hyper::FromFile)?;
    assert_eq!(taken, adam);
    assert_eq!(snapshot(&fresh), snapshot(&trained));
    // Crafted hyper-parameters the optimizer would refuse are refused on load, changing nothing:
    // a rate of -1 (state, taken under `Match`), a beta1 of 5 (taken under `FromFile`).
    for (key, value, hyper) in [
        ("lazynet.optimizer.lr", "-1", Hyper::Match),
        ("lazynet.optimizer.beta1", "5", Hyper::FromFile),
    ] {
        let bytes = std::fs::read(&path.0)?;
        let crafted = TempPath::new("crafted-hyper.safetensors");
        std::fs::write(&crafted.0, rewrite_metadata(&bytes, key, value)?)?;
        let mut probe = adam.clone();
        let before = snapshot(&fresh);
        let err = fresh
            .load_checkpoint_with(&crafted.0, &mut probe, hyper)
            .err();
        let text = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            text.contains("would make the optimizer invalid"),
            "{key}: {text}"
        );
        assert_eq!(probe, adam);
        assert_eq!(snapshot(&fresh), before);
    }
    // A plain `save_checkpoint` records the hyper-parameters but no progress.
    trained.save_checkpoint(&path.0, &adam)?;
    assert_eq!(fresh.load_checkpoint(&path.0, &mut adam.clone())?, None);
    Ok(())
}

/// Two epochs, a checkpoint, a fresh net and optimizer, `resume`, two more epochs: the
/// weights of four epochs in one go, bit for bit, under a schedule that changes every epoch.
#[test]
fn a_resumed_fit_with_a_schedule_equals_an_uninterrupted_one(
) -> Result<(), Box<dyn std::error::Error>> {
    let (x, labels) = data(40)?;
    let path = TempPath::new("resume.safetensors");
    let schedule = Schedule::cosine(0.05, 0.001, 4);
    let whole = Fit::new(4)
        .batch_size(8)
        .seed(3)
        .quiet()
        .schedule(schedule.clone());
    let mut straight = net(6);
    let straight_history = straight.fit(&x, &labels, CrossEntropy, &mut Adam::new(0.05), &whole)?;

    let first = Fit::new(2)
        .batch_size(8)
        .seed(3)
        .quiet()
        .schedule(schedule.clone())
        .checkpoint(&path.0);
    let mut half = net(6);
    half.fit(&x, &labels, CrossEntropy, &mut Adam::new(0.05), &first)?;
    let mut resumed = net(6);
    // Built as the first run's; the schedule left the rate at epoch 2's, which the file holds
    // and the optimizer takes.
    let mut adam = Adam::new(0.05);
    let progress = resumed
        .load_checkpoint(&path.0, &mut adam)?
        .ok_or("no progress in the checkpoint")?;
    assert_eq!(
        Some(adam.lr()),
        straight_history.epochs().get(1).map(|m| m.lr)
    );
    let rest = Fit::new(2)
        .batch_size(8)
        .quiet()
        .schedule(schedule)
        .resume(progress);
    let rest_history = resumed.fit(&x, &labels, CrossEntropy, &mut adam, &rest)?;
    assert_eq!(snapshot(&resumed), snapshot(&straight));
    let epochs: Vec<(usize, f64)> = rest_history
        .epochs()
        .iter()
        .map(|m| (m.epoch, m.lr))
        .collect();
    let expected: Vec<(usize, f64)> = straight_history.epochs()[2..]
        .iter()
        .map(|m| (m.epoch, m.lr))
        .collect();
    assert_eq!(epochs, expected);
    Ok(())
}

#[test]
fn epoch_times_below_10_ms_print_as_milliseconds() -> Result<(), Box<dyn std::error::Error>> {
    let (x, labels) = data(8)?;
    let history = net(0).fit(
        &x,
        &labels,
        CrossEntropy,
        &mut Sgd::new(0.1),
        &Fit::new(1).quiet(),
    )?;
    let m = history.last().ok_or("no epoch")?;
    let line = m.to_string();
    if m.seconds < 0.01 {
        assert!(
            line.ends_with(" ms)") && !line.contains("(0.00 s)"),
            "{line}"
        );
    } else {
        assert!(line.ends_with(" s)"), "{line}");
    }
    assert!(line.contains(", lr 0.1 ("), "{line}");
    Ok(())
}

/// A safetensors file's bytes with the metadata value `key` replaced by `value`.
fn rewrite_metadata(
    bytes: &[u8],
    key: &str,
    value: &str,
) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    use safetensors::SafeTensors;
    let file = SafeTensors::deserialize(bytes)?;
    let (_, metadata) = SafeTensors::read_metadata(bytes)?;
    let mut metadata = metadata.metadata().clone().unwrap_or_default();
    metadata.insert(key.to_owned(), value.to_owned());
    Ok(safetensors::serialize(file.tensors(), Some(metadata))?)
}

#[test]
fn validation_split_rounds_the_training_part_down_as_keras(
) -> Result<(), Box<dyn std::error::Error>> {
    // 10 samples and 0.25: Keras trains on ⌊7.5⌋ = 7 and validates on 3; 9 samples and 0.1:
    // 8 and 1.
    for (n, fraction, validated) in [(10, 0.25, 3), (9, 0.1, 1)] {
        let x = Batch::<U1>::from_fn(n, |_, s| s as f32);
        let y = Batch::<U1>::zeros(n);
        let mut net = Net::new().push(Dense::<U1>::new()).bind::<U1>();
        net.set_param(
            "0.weight",
            lazynet::nalgebra::DMatrix::from_element(1, 1, 1.0),
        )?;
        net.set_param("0.bias", lazynet::nalgebra::DMatrix::zeros(1, 1))?;
        let fit = Fit::new(1)
            .quiet()
            .batch_size(100)
            .validation_split(fraction);
        let history = net.fit(&x, &y, Mse, &mut Sgd::new(0.0), &fit)?;
        let m = history.last().ok_or("no epoch")?;
        // With a rate of 0 the net stays the identity: the losses are means of s².
        let trained = n - validated;
        let mean_sq = |r: std::ops::Range<usize>| {
            let len = r.len() as f32;
            r.map(|s| (s * s) as f32).sum::<f32>() / len
        };
        assert_eq!(m.loss, mean_sq(0..trained), "{n} × {fraction}");
        assert_eq!(m.val_loss, Some(mean_sq(trained..n)), "{n} × {fraction}");
    }
    Ok(())
}

#[test]
fn early_stopping_never_stops_after_the_first_epoch_and_keeps_its_weights(
) -> Result<(), Box<dyn std::error::Error>> {
    // Validation data holding a NaN: every val loss is NaN, none improves.
    let (x, labels) = data(16)?;
    let mut vx = x.clone().into_matrix();
    vx[(0, 0)] = f32::NAN;
    let vx = Batch::<U4>::try_from_matrix(vx)?;
    let stop = EarlyStopping::new(Monitor::ValLoss)
        .patience(1)
        .restore_best_weights(true);
    let fit = Fit::new(5)
        .quiet()
        .validation(&vx, &labels)
        .early_stopping(stop);
    let mut net = net(0);
    let history = net.fit(&x, &labels, CrossEntropy, &mut Adam::new(0.01), &fit)?;
    // Keras: no stop after the first epoch; the first epoch's weights are the best.
    assert_eq!(history.stopped_early(), Some(2));
    assert_eq!(history.best_epoch(), Some(1));
    assert!(history.restored_best());
    Ok(())
}
