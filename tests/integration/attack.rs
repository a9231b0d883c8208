//! Attack tests on the training API, from a review that tried to break it: each asserts what
//! should happen (all failed before the fixes they led to).
//!
//! The optimizers' internal `apply` is no longer callable (a sealed trait), so its test is gone.

#![allow(clippy::type_complexity)]

use std::path::{Path, PathBuf};

use lazynet::nalgebra::DMatrix;
use lazynet::prelude::*;
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

fn mlp() -> Net<Init<U4>, impl lazynet::list::Chain<U4, Out = U3> + Clone> {
    Net::new()
        .push(Dense::<U5>::new())
        .push(Tanh)
        .push(Dense::<U3>::new())
        .seed(1)
        .bind::<U4>()
}

fn data() -> (Batch<U4>, Labels<U3>) {
    let x = Batch::<U4>::from_fn(6, |f, s| (f as f32 - s as f32) / 4.0);
    (x, Labels::<U3>::try_new(vec![0, 1, 2, 0, 1, 2]).unwrap())
}

fn params<S: lazynet::Bound, L: lazynet::list::Layers>(net: &Net<S, L>) -> Vec<DMatrix<f32>> {
    net.named_params().map(|(_, p)| p.clone()).collect()
}

fn all_finite(ps: &[DMatrix<f32>]) -> bool {
    ps.iter().all(|p| p.iter().all(|v| v.is_finite()))
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lazynet-attack-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Rewrites a safetensors file tensor by tensor (f32 only): `f` returns the new shape and
/// values, or `None` to drop the tensor.
fn rewrite(
    from: &Path,
    to: &Path,
    mut f: impl FnMut(&str, Vec<usize>, Vec<f32>) -> Option<(Vec<usize>, Vec<f32>)>,
) {
    let bytes = std::fs::read(from).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, view) in st.tensors() {
        assert_eq!(view.dtype(), Dtype::F32);
        let values: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        if let Some((shape, values)) = f(&name, view.shape().to_vec(), values) {
            let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            out.push((name, shape, data));
        }
    }
    let views: Vec<(String, TensorView<'_>)> = out
        .iter()
        .map(|(n, s, d)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), d).unwrap(),
            )
        })
        .collect();
    let bytes = safetensors::serialize(views, None).unwrap();
    std::fs::write(to, bytes).unwrap();
}

// ---------------------------------------------------------------------------------------------
// 1. Fit::first_epoch near usize::MAX: `first_epoch + e + 1` overflows (a panic in debug, a
//    wrap to epoch 0 and then `epoch - 1` wrapping in release).

#[test]
fn first_epoch_usize_max_is_an_error_not_a_panic() {
    let (x, labels) = data();
    let mut net = mlp();
    let fit = Fit::new(1).first_epoch(usize::MAX).quiet();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        net.fit(&x, &labels, CrossEntropy, &mut Adam::new(1e-2), &fit)
            .map(|h| h.epochs().iter().map(|e| e.epoch).collect::<Vec<_>>())
    }));
    let r = r.expect("fit panicked on first_epoch = usize::MAX");
    assert!(r.is_err(), "expected a Setting error, got {r:?}");
}

// ---------------------------------------------------------------------------------------------
// 2. A checkpoint's Adam step that is NaN, negative, fractional or huge is silently read as 0
//    (bias correction restarts) instead of being refused.

fn adam_checkpoint() -> (
    PathBuf,
    Net<Init<U4>, impl lazynet::list::Chain<U4, Out = U3> + Clone>,
) {
    let (x, labels) = data();
    let mut net = mlp();
    let mut adam = Adam::new(1e-2);
    for _ in 0..3 {
        let (_, g) = net.loss_and_grads(&x, &labels, CrossEntropy).unwrap();
        adam.step(&mut net, &g).unwrap();
    }
    let path = tmp("adam3.safetensors");
    net.save_checkpoint(&path, &adam).unwrap();
    (path, net)
}

#[test]
fn a_checkpoint_step_that_is_not_a_count_is_refused() {
    let (path, _) = adam_checkpoint();
    for (i, bad) in [f32::NAN, -3.0, 2.5, 1e30, f32::INFINITY]
        .into_iter()
        .enumerate()
    {
        let to = tmp(&format!("adam-bad-step-{i}.safetensors"));
        rewrite(&path, &to, |name, shape, values| {
            if name.ends_with(".step") {
                Some((shape, vec![bad]))
            } else {
                Some((shape, values))
            }
        });
        let mut net = mlp();
        let mut adam = Adam::new(1e-2);
        let r = net.load_checkpoint(&to, &mut adam);
        assert!(
            r.is_err(),
            "step {bad} accepted; Adam now counts {} steps for 0.weight",
            adam.steps("0.weight")
        );
    }
}

/// 2b. A legitimate step count past 2^24 does not survive a save/load (stored as f32, read
/// back as 0).
#[test]
fn a_large_step_count_round_trips() {
    let (path, _) = adam_checkpoint();
    let to = tmp("adam-big-step.safetensors");
    rewrite(&path, &to, |name, shape, values| {
        if name.ends_with(".step") {
            Some((shape, vec![16_777_216.0]))
        } else {
            Some((shape, values))
        }
    });
    let mut net = mlp();
    let mut adam = Adam::new(1e-2);
    net.load_checkpoint(&to, &mut adam).unwrap();
    assert_eq!(adam.steps("0.weight"), 16_777_216);
}

/// 2c. A checkpoint with the moments but no step names the missing step (it reports the
/// moments as "unexpected").
#[test]
fn a_missing_step_is_reported_as_missing() {
    let (path, _) = adam_checkpoint();
    let to = tmp("adam-no-step.safetensors");
    rewrite(&path, &to, |name, shape, values| {
        (!name.ends_with("0.weight.step")).then_some((shape, values))
    });
    let mut net = mlp();
    let mut adam = Adam::new(1e-2);
    let err = net.load_checkpoint(&to, &mut adam).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("optim.0.weight.step"), "{msg}");
}

// ---------------------------------------------------------------------------------------------
// 3. Hyper-parameters are checked as f64 but applied as f32: finite in f64, infinite in f32;
//    the step "succeeds" and every parameter becomes inf or NaN.

#[test]
fn a_learning_rate_beyond_f32_is_refused_or_keeps_weights_finite() {
    let (x, labels) = data();
    let optimizers: Vec<(
        &str,
        Box<dyn Fn(&mut Net<_, _>, &Grads) -> Result<(), TrainError>>,
    )> = vec![
        (
            "Adam lr 1e300",
            Box::new(|n, g| Adam::new(1e300).step(n, g)),
        ),
        ("SGD lr 1e39", Box::new(|n, g| Sgd::new(1e39).step(n, g))),
        (
            "SGD wd 1e39",
            Box::new(|n, g| Sgd::new(0.1).weight_decay(1e39).step(n, g)),
        ),
        (
            "Adam wd 1e39",
            Box::new(|n, g| Adam::new(0.1).weight_decay(1e39).step(n, g)),
        ),
        (
            "SGD momentum 1e39",
            Box::new(|n, g| {
                let mut s = Sgd::new(0.1).momentum(1e39);
                s.step(n, g)?;
                s.step(n, g)
            }),
        ),
    ];
    let mut failures = Vec::new();
    for (what, step) in &optimizers {
        let mut net = mlp();
        let (_, g) = net.loss_and_grads(&x, &labels, CrossEntropy).unwrap();
        let before = params(&net);
        match step(&mut net, &g) {
            Ok(()) if !all_finite(&params(&net)) => failures.push(format!(
                "{what}: Ok, and the parameters are no longer finite"
            )),
            Err(_) if params(&net) != before => failures.push(format!("{what}: Err, but changed")),
            _ => {}
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

// ---------------------------------------------------------------------------------------------
// 4. A user's Loss (the trait is public and unsealed) returning a gradient of the wrong shape
//    makes nalgebra panic in the backward pass instead of an error.

#[derive(Clone, Copy)]
struct BadLoss;

impl lazynet::train::Loss<Labels<U3>> for BadLoss {
    fn name(&self) -> &'static str {
        "bad"
    }
    fn loss_and_grad(
        &self,
        _y: &DMatrix<f32>,
        _t: &Labels<U3>,
    ) -> Result<(f32, DMatrix<f32>), ShapeError> {
        Ok((1.0, DMatrix::zeros(1, 1)))
    }
}

#[test]
fn a_loss_gradient_of_another_shape_is_an_error_not_a_panic() {
    let (x, labels) = data();
    let net = mlp();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        net.loss_and_grads(&x, &labels, BadLoss).map(|_| ())
    }));
    assert!(
        matches!(r, Ok(Err(_))),
        "panicked or accepted: {:?}",
        r.map(|r| r.is_ok())
    );
}

// ---------------------------------------------------------------------------------------------
// 6. Target::select (public trait) with an index out of range: labels silently dropped it
//    (fewer labels than indices), targets silently gave a zero column. Both are errors now.

#[test]
fn select_out_of_range_is_an_error_for_labels_and_targets() {
    use lazynet::train::Target;
    let (x, labels) = data();
    let out_of_range = ShapeError::SampleIndex {
        index: 99,
        samples: 6,
    };
    assert_eq!(
        Target::select(&labels, &[0, 99]).err(),
        Some(out_of_range.clone())
    );
    assert_eq!(Target::select(&x, &[0, 99]).err(), Some(out_of_range));
    assert_eq!(
        Target::select(&labels, &[5, 0]).map(|l| l.as_slice().to_vec()),
        Ok(vec![2, 0])
    );
}

// ---------------------------------------------------------------------------------------------
// 7. A fit that fails in epoch 3 returns no history of epochs 1 and 2.

#[test]
fn a_failed_fit_keeps_its_history() {
    // A linear net and SGD with a learning rate that diverges: the loss grows ~400x an epoch
    // and overflows f32 after some epochs.
    let mut net = Net::new().push(Dense::<U1>::new()).seed(0).bind::<U1>();
    let x = Batch::<U1>::from_fn(4, |_, s| 1.0 + s as f32 / 4.0);
    let y = Batch::<U1>::from_fn(4, |_, _| 1.0);
    let fit = Fit::new(100).batch_size(4).quiet();
    let r = net.fit(&x, &y, Mse, &mut Sgd::new(10.0), &fit);
    match r {
        Err(TrainError::LossNotFinite { epoch, history, .. }) if epoch > 1 => {
            assert_eq!(history.epochs().len(), epoch - 1);
            assert_eq!(history.last().map(|e| e.epoch), Some(epoch - 1));
        }
        other => panic!("setup did not diverge as intended: {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// 8. Checkpoints: an Adam checkpoint loaded into SGD and the reverse are refused, and change
//    nothing; a truncated file is refused.

#[test]
fn checkpoints_of_another_optimizer_or_truncated_are_refused_atomically() {
    let (path, _) = adam_checkpoint();
    let mut net = mlp();
    let before = params(&net);
    let mut sgd = Sgd::new(0.1).momentum(0.9);
    assert!(net.load_checkpoint(&path, &mut sgd).is_err());
    assert_eq!(params(&net), before);
    assert_eq!(sgd, Sgd::new(0.1).momentum(0.9));

    let (x, labels) = data();
    let mut other = mlp();
    let mut s = Sgd::new(0.1).momentum(0.9);
    let (_, g) = other.loss_and_grads(&x, &labels, CrossEntropy).unwrap();
    s.step(&mut other, &g).unwrap();
    let sgd_path = tmp("sgd.safetensors");
    other.save_checkpoint(&sgd_path, &s).unwrap();
    let mut adam = Adam::new(0.1);
    assert!(net.load_checkpoint(&sgd_path, &mut adam).is_err());
    assert_eq!(params(&net), before);
    assert_eq!(adam, Adam::new(0.1));

    let bytes = std::fs::read(&path).unwrap();
    for cut in [0, 7, 8, 100, bytes.len() - 1] {
        let t = tmp(&format!("trunc-{cut}.safetensors"));
        std::fs::write(&t, &bytes[..cut]).unwrap();
        assert!(net.load_checkpoint(&t, &mut adam).is_err());
    }
    assert_eq!(params(&net), before);
}

// ---------------------------------------------------------------------------------------------
// 9. Optimizer state saved from a net with other parameter names gives a checkpoint that
//    `save_checkpoint` writes but `load_checkpoint` refuses.

#[test]
fn save_checkpoint_refuses_state_it_could_not_load() {
    let (x, labels) = data();
    let mut a = Net::new()
        .push(Dense::<U2>::new())
        .push(Dense::<U5>::new())
        .push(Tanh)
        .push(Dense::<U3>::new())
        .seed(1)
        .bind::<U4>();
    let mut adam = Adam::new(1e-2);
    let (_, g) = a.loss_and_grads(&x, &labels, CrossEntropy).unwrap();
    adam.step(&mut a, &g).unwrap();
    let net = mlp(); // no "2.weight"
    let path = tmp("mixed.safetensors");
    let saved = net.save_checkpoint(&path, &adam);
    if saved.is_ok() {
        let mut fresh = mlp();
        let loaded = fresh.load_checkpoint(&path, &mut Adam::new(1e-2));
        assert!(loaded.is_ok(), "saved, then refused on load: {loaded:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// 10. MSE targets of another image shape with the same number of values are accepted (at
//     compile time and at run time), while a batch *input* of a transposed image shape is a
//     compile error (BatchImageMatches): the values do not line up.

#[test]
fn mse_targets_of_a_transposed_image_shape_are_refused() {
    let net = Net::new()
        .push(Conv2d::<U2, U1>::new())
        .seed(0)
        .bind::<Image<U1, U5, U1>>();
    assert_eq!(net.output_dims(), [2, 5, 1]);
    let x = Batch::<Image<U1, U5, U1>>::from_fn(3, |f, s| (f + s) as f32);
    // (1, 2, 5): ten values per sample like (2, 5, 1), laid out otherwise.
    let targets = Batch::<Image<U1, U2, U5>>::from_fn(3, |f, _| f as f32);
    let r = net.loss_and_grads(&x, &targets, Mse);
    assert!(
        r.is_err(),
        "targets of shape (1, 2, 5) accepted for an output of shape (2, 5, 1)"
    );
}

// ---------------------------------------------------------------------------------------------
// 11. A user's Kernel (public trait) whose backward replaces `dx` with a matrix of another
//     shape: the layer before panics inside nalgebra instead of an error naming the layer.

mod shrink {
    use lazynet::layer::{Activation, Fault, Kernel, Layer, Param, PartialShape};
    use lazynet::nalgebra::DMatrix;
    use lazynet::prelude::*;

    #[derive(Clone, Copy, Debug)]
    pub struct Sloppy;

    impl Layer for Sloppy {
        fn kind(&self) -> &'static str {
            "Sloppy"
        }
        fn output_shape(
            &self,
            input: Option<&PartialShape>,
        ) -> Result<Option<PartialShape>, Fault> {
            Ok(input.cloned())
        }
        fn param_shapes(&self, _: Option<&PartialShape>) -> Vec<(Role, PartialShape)> {
            Vec::new()
        }
        fn kernel(&self, _: &[usize], _: &[usize]) -> Box<dyn Kernel> {
            Box::new(SloppyKernel)
        }
    }

    #[derive(Debug)]
    struct SloppyKernel;

    impl Kernel for SloppyKernel {
        fn forward(
            &self,
            _: &[Param],
            x: &DMatrix<f32>,
            y: &mut DMatrix<f32>,
            _: Activation,
        ) -> Result<(), ShapeError> {
            y.copy_from(x);
            Ok(())
        }
        fn backward(
            &self,
            _: &[Param],
            _: &DMatrix<f32>,
            _: &DMatrix<f32>,
            _: &DMatrix<f32>,
            _: &mut [DMatrix<f32>],
            dx: Option<&mut DMatrix<f32>>,
        ) -> Result<(), ShapeError> {
            if let Some(dx) = dx {
                *dx = DMatrix::zeros(1, 1); // a bug in user code
            }
            Ok(())
        }
    }

    lazynet::keeps_shape!(Sloppy);
}

#[test]
fn a_kernel_that_breaks_its_contract_is_an_error_not_a_panic() {
    let (x, labels) = data();
    let net = Net::new()
        .push(Dense::<U5>::new())
        .push(shrink::Sloppy)
        .push(Dense::<U3>::new())
        .seed(0)
        .bind::<U4>();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        net.loss_and_grads(&x, &labels, CrossEntropy).map(|_| ())
    }));
    assert!(matches!(r, Ok(Err(_))), "panicked (or accepted)");
}
