//! Attack: finite-difference gradient checks of the step fusion in odd layer orders.

use lazynet::nalgebra::DMatrix;
use lazynet::prelude::*;

/// Central differences in f64-ish (f32 loss), for every element of every parameter; returns the
/// worst relative error.
macro_rules! gradcheck {
    ($net:expr, $x:expr, $t:expr, $loss:expr) => {{
        let net = &mut $net;
        let (_, grads) = net.loss_and_grads($x, $t, $loss).unwrap();
        let names: Vec<(String, DMatrix<f32>)> = net
            .named_params()
            .map(|(n, p)| (n.to_string(), p.clone()))
            .collect();
        let mut worst = 0.0f64;
        let mut where_ = String::new();
        for (name, value) in &names {
            let g = grads.get(name).unwrap().clone();
            for i in 0..value.len() {
                let h = 1e-2f32;
                let mut plus = value.clone();
                plus.as_mut_slice()[i] += h;
                net.set_param(name, plus).unwrap();
                let (lp, _) = net.loss_and_grads($x, $t, $loss).unwrap();
                let mut minus = value.clone();
                minus.as_mut_slice()[i] -= h;
                net.set_param(name, minus).unwrap();
                let (lm, _) = net.loss_and_grads($x, $t, $loss).unwrap();
                net.set_param(name, value.clone()).unwrap();
                let numeric = (f64::from(lp) - f64::from(lm)) / (2.0 * f64::from(h));
                let analytic = f64::from(g.as_slice()[i]);
                let err =
                    (numeric - analytic).abs() / (numeric.abs().max(analytic.abs()).max(1e-2));
                if err > worst {
                    worst = err;
                    where_ = format!("{name}[{i}]: numeric {numeric}, analytic {analytic}");
                }
            }
        }
        (worst, where_)
    }};
}

fn img_x(samples: usize) -> Batch<Image<U2, U6, U6>> {
    Batch::<Image<U2, U6, U6>>::from_fn(samples, |f, s| ((f * 7 + s * 13) % 23) as f32 / 23.0 - 0.4)
}

#[test]
fn activation_first_then_dense() {
    let mut net = Net::new()
        .push(Tanh)
        .push(Dense::<U5>::new())
        .push(Sigmoid)
        .push(Dense::<U3>::new())
        .seed(3)
        .bind::<U4>();
    let x = Batch::<U4>::from_fn(3, |f, s| (f as f32 - s as f32) / 3.0);
    let t = Labels::<U3>::try_new(vec![0, 2, 1]).unwrap();
    let (worst, at) = gradcheck!(net, &x, &t, CrossEntropy);
    assert!(worst < 2e-2, "{worst} at {at}");
}

#[test]
fn two_activations_in_a_row() {
    let mut net = Net::new()
        .push(Dense::<U5>::new())
        .push(Tanh)
        .push(Sigmoid)
        .push(Tanh)
        .push(Dense::<U3>::new())
        .seed(4)
        .bind::<U4>();
    let x = Batch::<U4>::from_fn(3, |f, s| (f as f32 - s as f32) / 3.0);
    let t = Batch::<U3>::from_fn(3, |f, s| (f + s) as f32 / 5.0);
    let (worst, at) = gradcheck!(net, &x, &t, Mse);
    assert!(worst < 2e-2, "{worst} at {at}");
}

#[test]
fn activation_after_flatten_after_conv() {
    let mut net = Net::new()
        .push(Conv2d::<U3, U3>::new())
        .push(Flatten)
        .push(Tanh)
        .push(Dense::<U3>::new())
        .seed(5)
        .bind::<Image<U2, U6, U6>>();
    let x = img_x(2);
    let t = Labels::<U3>::try_new(vec![1, 2]).unwrap();
    let (worst, at) = gradcheck!(net, &x, &t, CrossEntropy);
    assert!(worst < 2e-2, "{worst} at {at}");
}

#[test]
fn activation_after_max_pool_and_avg_pool() {
    let mut net = Net::new()
        .push(Conv2d::<U3, U3>::new().padding::<U1>())
        .push(MaxPool2d::<U2>::new())
        .push(Tanh)
        .push(AvgPool2d::<U3>::new().stride::<U1>().padding::<U1>())
        .push(Sigmoid)
        .push(Flatten)
        .push(Dense::<U3>::new())
        .push(Tanh)
        .seed(6)
        .bind::<Image<U2, U6, U6>>();
    let x = img_x(2);
    let t = Batch::<U3>::from_fn(2, |f, s| (f + s) as f32 / 5.0);
    let (worst, at) = gradcheck!(net, &x, &t, Mse);
    assert!(worst < 2e-2, "{worst} at {at}");
}

#[test]
fn conv_then_two_activations_then_conv() {
    let mut net = Net::new()
        .push(Conv2d::<U2, U3>::new().stride::<U2>().padding::<U1>())
        .push(Sigmoid)
        .push(Tanh)
        .push(Conv2d::<U2, U2>::new().dilation::<U2>().padding::<U1>())
        .push(Flatten)
        .push(Dense::<U2>::new())
        .seed(7)
        .bind::<Image<U2, U6, U6>>();
    let x = img_x(3);
    let t = Labels::<U2>::try_new(vec![1, 0, 1]).unwrap();
    let (worst, at) = gradcheck!(net, &x, &t, CrossEntropy);
    assert!(worst < 2e-2, "{worst} at {at}");
}

#[test]
fn identity_layers_and_flatten_of_flat() {
    let mut net = Net::new()
        .push(Identity)
        .push(Dense::<U4>::new())
        .push(Identity)
        .push(Flatten)
        .push(Tanh)
        .push(Flatten)
        .push(Dense::<U2>::new())
        .push(Sigmoid)
        .seed(8)
        .bind::<U3>();
    let x = Batch::<U3>::from_fn(4, |f, s| f as f32 * 0.3 - s as f32 * 0.2);
    let t = Batch::<U2>::from_fn(4, |f, s| ((f + s) % 2) as f32);
    let (worst, at) = gradcheck!(net, &x, &t, Mse);
    assert!(worst < 2e-2, "{worst} at {at}");
}

#[test]
fn conv_without_bias_relu_pool_relu() {
    let mut net = Net::new()
        .push(Conv2d::<U2, U3>::new().without_bias())
        .push(Sigmoid)
        .push(MaxPool2d::<U2>::new())
        .push(Relu)
        .push(Flatten)
        .push(Dense::<U2>::new())
        .seed(9)
        .bind::<Image<U2, U6, U6>>();
    let x = img_x(2);
    let t = Labels::<U2>::try_new(vec![1, 0]).unwrap();
    let (worst, at) = gradcheck!(net, &x, &t, CrossEntropy);
    assert!(worst < 2e-2, "{worst} at {at}");
}
