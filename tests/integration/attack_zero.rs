//! Attack: zero-sized things.

use lazynet::prelude::*;

fn finite<S: lazynet::Bound, L: lazynet::list::Layers>(net: &Net<S, L>) -> bool {
    net.named_params()
        .all(|(_, p)| p.iter().all(|v| v.is_finite()))
}

#[test]
fn a_zero_wide_hidden_layer_trains() {
    let mut net = Net::new()
        .push(Dense::dynamic(0))
        .push(Relu)
        .push(Dense::dynamic(3))
        .seed(1)
        .try_bind(4)
        .unwrap();
    assert!(finite(&net), "{:?}", net.named_params().collect::<Vec<_>>());
    let x = Batch::<Dyn>::from_fn_dyn(4, 5, |f, s| (f + s) as f32);
    let labels = Labels::try_dynamic(3, vec![0, 1, 2, 0, 1]).unwrap();
    let (loss, grads) = net.loss_and_grads(&x, &labels, CrossEntropy).unwrap();
    assert!(loss.is_finite());
    Adam::new(0.1).step(&mut net, &grads).unwrap();
    let h = net
        .fit(
            &x,
            &labels,
            CrossEntropy,
            &mut Sgd::new(0.1).momentum(0.9).nesterov(true),
            &Fit::new(2).quiet(),
        )
        .unwrap();
    assert_eq!(h.epochs().len(), 2);
}

#[test]
fn zero_output_channels_conv() {
    let r = Net::new()
        .push(Conv2d::dynamic(0, 3))
        .push(Flatten)
        .push(Dense::dynamic(2))
        .seed(1)
        .try_bind(Image::dynamic(1, 5, 5));
    let Ok(net) = r else { return };
    let x = Batch::<Dyn>::from_fn_dyn(25, 2, |f, s| (f + s) as f32);
    let x = lazynet::Batch::try_with_shape(Image::dynamic(1, 5, 5), x.into_matrix()).unwrap();
    let labels = Labels::try_dynamic(2, vec![0, 1]).unwrap();
    let (loss, grads) = net.loss_and_grads(&x, &labels, CrossEntropy).unwrap();
    assert!(loss.is_finite());
    assert_eq!(grads.len(), 4);
}

#[test]
fn nets_without_parameters() {
    let mut net = Net::new()
        .push(Flatten)
        .push(Relu)
        .push(Tanh)
        .bind::<Image<U1, U2, U2>>();
    let x = Batch::<Image<U1, U2, U2>>::from_fn(3, |f, s| f as f32 - s as f32);
    let labels = Labels::<U4>::try_new(vec![0, 1, 3]).unwrap();
    let (loss, grads) = net.loss_and_grads(&x, &labels, CrossEntropy).unwrap();
    assert!(loss.is_finite());
    assert!(grads.is_empty());
    Adam::new(0.1).step(&mut net, &grads).unwrap();
    let h = net
        .fit(
            &x,
            &labels,
            CrossEntropy,
            &mut Adam::new(0.1),
            &Fit::new(2).batch_size(usize::MAX).quiet(),
        )
        .unwrap();
    assert_eq!(h.epochs().len(), 2);
    let h = net
        .fit(
            &x,
            &labels,
            CrossEntropy,
            &mut Adam::new(0.1),
            &Fit::new(0).quiet(),
        )
        .unwrap();
    assert!(h.epochs().is_empty());
    let path = std::env::temp_dir().join(format!("lazynet-attack-noparam-{}", std::process::id()));
    net.save_checkpoint(&path, &Adam::new(0.1)).unwrap();
    net.load_checkpoint(&path, &mut Adam::new(0.1)).unwrap();

    let only = Net::new().push(Flatten).bind::<U3>();
    let x = Batch::<U3>::from_fn(2, |f, _| f as f32);
    let t = Batch::<U3>::zeros(2);
    let (loss, grads) = only.loss_and_grads(&x, &t, Mse).unwrap();
    assert!(loss > 0.0 && grads.is_empty());
}

#[test]
fn zero_classes_and_zero_samples() {
    let net = Net::new()
        .push(Dense::dynamic(0))
        .seed(0)
        .try_bind(3)
        .unwrap();
    let x = Batch::<Dyn>::from_fn_dyn(3, 2, |f, s| (f + s) as f32);
    let labels = Labels::try_dynamic(0, vec![]).unwrap();
    assert!(net.loss_and_grads(&x, &labels, CrossEntropy).is_err());
    let x0 = Batch::<Dyn>::from_fn_dyn(3, 0, |_, _| 0.0);
    assert!(matches!(
        net.loss_and_grads(&x0, &labels, CrossEntropy),
        Err(ShapeError::EmptyBatch)
    ));
    assert!(Labels::try_dynamic(0, vec![0]).is_err());
    // MSE over a 0-wide output: PyTorch's mean of nothing is NaN.
    let t = Batch::<Dyn>::from_fn_dyn(0, 2, |_, _| 0.0);
    let r = net.loss_and_grads(&x, &t, Mse);
    eprintln!("mse of 0-wide output: {:?}", r.as_ref().map(|(l, _)| *l));
    let mut net = net;
    let fit = Fit::new(1).quiet();
    let r = net.fit(&x, &t, Mse, &mut Adam::new(0.1), &fit);
    eprintln!("fit 0-wide: {r:?}");
}

#[test]
fn batch_size_zero_and_validation_of_another_width() {
    let mut net = Net::new().push(Dense::<U3>::new()).seed(0).bind::<U2>();
    let x = Batch::<U2>::from_fn(4, |f, s| (f + s) as f32);
    let labels = Labels::<U3>::try_new(vec![0, 1, 2, 0]).unwrap();
    assert!(net
        .fit(
            &x,
            &labels,
            CrossEntropy,
            &mut Adam::new(0.1),
            &Fit::new(1).batch_size(0).quiet()
        )
        .is_err());
    let vx = Batch::<U2>::from_fn(2, |f, s| (f + s) as f32);
    let vl = Labels::<U3>::try_new(vec![0, 1, 2]).unwrap();
    let fit = Fit::new(1).quiet().validation(&vx, &vl);
    let before: Vec<_> = net.named_params().map(|(_, p)| p.clone()).collect();
    let r = net.fit(&x, &labels, CrossEntropy, &mut Adam::new(0.1), &fit);
    assert!(r.is_err());
    let after: Vec<_> = net.named_params().map(|(_, p)| p.clone()).collect();
    assert_eq!(before, after);
}

#[test]
fn absurd_batch_for_a_wide_layer_is_out_of_memory() {
    let net = Net::new()
        .push(Dense::dynamic(1 << 20))
        .push(Relu)
        .push(Dense::dynamic(2))
        .seed(0)
        .try_bind(1)
        .unwrap();
    let x = Batch::<Dyn>::from_fn_dyn(1, 1 << 21, |_, s| s as f32);
    let labels = Labels::try_dynamic(2, vec![0; 1 << 21]).unwrap();
    let r = net.loss_and_grads(&x, &labels, CrossEntropy);
    assert!(
        matches!(r, Err(ShapeError::OutOfMemory { .. })),
        "{:?}",
        r.map(|(l, _)| l)
    );
    let r = net.evaluate(&x, &labels, CrossEntropy);
    assert!(matches!(r, Err(ShapeError::OutOfMemory { .. })));
}

#[test]
fn absurd_conv_backward_is_out_of_memory() {
    // Forward output 256 × 256 × 256 per sample (64 MiB), 1024 samples: 64 GiB.
    let net = Net::new()
        .push(Conv2d::dynamic(256, 1))
        .push(Flatten)
        .push(Dense::dynamic(2))
        .seed(0)
        .try_bind(Image::dynamic(1, 256, 256));
    let Ok(net) = net else { return };
    let x = Batch::<Dyn>::from_fn_dyn(256 * 256, 1024, |_, _| 0.5);
    let x = lazynet::Batch::try_with_shape(Image::dynamic(1, 256, 256), x.into_matrix()).unwrap();
    let labels = Labels::try_dynamic(2, vec![0; 1024]).unwrap();
    let r = net.loss_and_grads(&x, &labels, CrossEntropy);
    assert!(
        matches!(r, Err(ShapeError::OutOfMemory { .. })),
        "{:?}",
        r.map(|(l, _)| l)
    );
}
