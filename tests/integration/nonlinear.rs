//! `LeakyRelu`, `Gelu` and `Softmax` in nets: PyTorch's outputs and gradients
//! (tests/fixtures/norm/activations.safetensors), their compile-time halves, values through a
//! whole forward pass, NaN and infinities, and what a net does around them (no fusing, the
//! run-time rank check).

use lazynet::layer::{Fault, Kernel, Layer, PartialShape};
use lazynet::prelude::*;

use crate::train_fixtures::{error, loss_error, Fixture};

/// PyTorch's `Sequential(Linear(5,8), LayerNorm(8), GELU(), Linear(8,8), LeakyReLU(0.2),
/// Linear(8,6), LeakyReLU(-0.5), Linear(6,4), Softmax(dim=1))` under `MSELoss()`, computed by
/// PyTorch in float64 from float32 parameters and inputs (the fixture's script documents it):
/// lazynet's float32 output, loss and every parameter's gradient agree to float32 rounding
/// (errors of 2e-7 of the largest value when this was written; the bound is 1e-5).
#[test]
fn a_net_of_them_matches_pytorch() -> Result<(), ShapeError> {
    let fixture = Fixture::read_from("norm", "activations.safetensors");
    let mut net = Net::new()
        .push(Dense::<U8>::new())
        .push(LayerNorm::new())
        .push(Gelu)
        .push(Dense::<U8>::new())
        .push(LeakyRelu::new(0.2))
        .push(Dense::<U6>::new())
        .push(LeakyRelu::new(-0.5))
        .push(Dense::<U4>::new())
        .push(Softmax)
        .bind::<U5>();
    fixture.load_initial(&mut net);
    let x = Batch::<U5>::from_rows(fixture.f32s("x"))?;
    let targets = Batch::<U4>::from_rows(fixture.f32s("targets"))?;

    let y = net.forward(&x);
    let err = error("y", &y.as_matrix().transpose(), &fixture.values("y"));
    assert!(err < 1e-5, "output: {err:.2e}");

    let (loss, grads) = net.loss_and_grads(&x, &targets, Mse)?;
    loss_error("loss", loss, fixture.values("loss").0[0]);
    let names = fixture.grad_names();
    assert_eq!(grads.len(), names.len());
    for name in names {
        let g = grads
            .get(&name)
            .unwrap_or_else(|| panic!("no gradient {name}"));
        let err = error(&name, g, &fixture.values(&format!("grad.{name}")));
        assert!(err < 1e-5, "{name}: {err:.2e}");
    }
    Ok(())
}

/// Every sample of `y`, as vectors.
fn samples<N: Shape>(y: &Batch<N>) -> Vec<Vec<f32>> {
    (0..y.samples())
        .filter_map(|j| y.sample(j).map(<[f32]>::to_vec))
        .collect()
}

#[test]
fn hand_computed_values_through_nets() -> Result<(), ShapeError> {
    let leaky = Net::new().push(LeakyRelu::new(0.1)).bind::<U3>();
    let y = leaky.forward(&Batch::<U3>::from_rows([-2.0, 0.5, 0.0])?);
    assert_eq!(samples(&y), [[-0.2, 0.5, 0.0]]);

    // x·Φ(x), erf-based: Φ(1) = 0.841 344 746, Φ(−1) = 0.158 655 254.
    let gelu = Net::new().push(Gelu).bind::<U2>();
    let y = gelu.forward(&Batch::<U2>::from_rows([1.0, -1.0])?);
    let [a, b] = [y.as_matrix()[0], y.as_matrix()[1]];
    assert!((a - 0.841_344_7).abs() <= 6e-8, "{a}");
    assert!((b - -0.158_655_26).abs() <= 1.5e-8, "{b}");

    // e^(x − 3) / (e^−2 + e^−1 + 1).
    let softmax = Net::new().push(Softmax).bind::<U3>();
    let y = softmax.forward(&Batch::<U3>::from_rows([1.0, 2.0, 3.0, 1e30, 0.0, -1e30])?);
    let expected = [0.090_030_57f32, 0.244_728_47, 0.665_240_94];
    for (p, e) in y.as_matrix().column(0).iter().zip(expected) {
        assert!((p - e).abs() <= 1e-7, "{p} against {e}");
    }
    // A huge logit: probability 1, no NaN.
    assert_eq!(y.sample(1), Some(&[1.0, 0.0, 0.0][..]));
    Ok(())
}

#[test]
fn nan_and_infinities_as_documented() -> Result<(), ShapeError> {
    let nan = f32::NAN;
    let (inf, ninf) = (f32::INFINITY, f32::NEG_INFINITY);

    // LeakyRelu: NaN stays NaN, ±inf as `x > 0 ? x : slope·x`.
    let y = Net::new()
        .push(LeakyRelu::new(0.5))
        .bind::<U3>()
        .forward(&Batch::<U3>::from_rows([nan, inf, ninf])?);
    assert!(y.as_matrix()[0].is_nan());
    assert_eq!(y.as_matrix().as_slice()[1..], [inf, ninf]);

    // Gelu: NaN stays NaN, the limits at ±inf (+inf, −0).
    let y = Net::new()
        .push(Gelu)
        .bind::<U3>()
        .forward(&Batch::<U3>::from_rows([nan, inf, ninf])?);
    assert!(y.as_matrix()[0].is_nan());
    assert_eq!(y.as_matrix().as_slice()[1..], [inf, 0.0]);

    // Softmax as PyTorch's: a NaN or a +inf makes the sample NaN, so does a sample of −inf
    // only; a −inf among finite values is probability 0.
    let y = Net::new()
        .push(Softmax)
        .bind::<U2>()
        .forward(&Batch::<U2>::from_rows([
            nan, 0.0, inf, 0.0, inf, inf, ninf, ninf, ninf, 0.0,
        ])?);
    for j in 0..4 {
        let sample = y.sample(j).unwrap_or_default();
        assert!(sample.iter().all(|p| p.is_nan()), "sample {j}: {sample:?}");
    }
    assert_eq!(y.sample(4), Some(&[0.0, 1.0][..]));
    Ok(())
}

#[test]
fn softmax_layer_and_batch_softmax_agree_to_the_bit() -> Result<(), ShapeError> {
    let mut rng = InitRng::new(5, "logits");
    let rows: Vec<f32> = (0..7 * 40)
        .map(|i| match i % 23 {
            0 => 1e30,
            1 => -3e38,
            _ => rng.uniform(-40.0, 40.0),
        })
        .collect();
    let x = Batch::<U7>::from_rows(&rows)?;
    let layer = Net::new().push(Softmax).bind::<U7>().forward(&x);
    let batch = x.softmax();
    let bits = |b: &Batch<U7>| {
        b.as_matrix()
            .iter()
            .map(|v| v.to_bits())
            .collect::<Vec<_>>()
    };
    assert_eq!(bits(&layer), bits(&batch));
    Ok(())
}

#[test]
fn compile_time_halves_place_them_in_nets_of_every_shape() -> Result<(), ShapeError> {
    // LeakyRelu and Gelu take images; Softmax takes the flattened vector.
    let net = Net::new()
        .push(Conv2d::<U4, U3>::new())
        .push(LeakyRelu::new(-0.5))
        .push(Gelu)
        .push(Flatten)
        .push(Dense::<U5>::new())
        .push(Gelu)
        .push(Dense::<U3>::new())
        .push(Softmax)
        .seed(9)
        .bind::<Image<U1, U6, U6>>();
    let x = Batch::try_with_shape(
        Image::<U1, U6, U6>::default(),
        lazynet::nalgebra::DMatrix::from_fn(36, 2, |i, j| (i as f32 - 17.0) / (j as f32 + 3.0)),
    )?;
    let p: Batch<U3> = net.forward(&x);
    for sample in samples(&p) {
        let total: f32 = sample.iter().sum();
        assert!((total - 1.0).abs() < 1e-6, "{sample:?}");
    }

    // Declared inputs, run-time widths.
    let eager = Net::new()
        .push(Softmax.with_input::<U4>())
        .push(Dense::<U2>::new())
        .build();
    assert_eq!(eager.output_dims(), [2]);
    let dynamic = Net::new()
        .push(Gelu)
        .push(Dense::dynamic(3))
        .push(LeakyRelu::default())
        .push(Softmax)
        .try_bind(6)?;
    assert_eq!(dynamic.output_dims(), [3]);

    // The summary names them.
    let table = net.to_string();
    for kind in ["LeakyRelu", "Gelu", "Softmax"] {
        assert!(table.contains(kind), "{table}");
    }
    Ok(())
}

/// A dense layer before them runs unfused: the net's output is the activation applied to the
/// dense layer's output, to the bit, in inference and in the forward pass kept for training.
#[test]
fn a_dense_layer_does_not_fuse_them() -> Result<(), ShapeError> {
    let x = Batch::<U4>::from_fn(3, |f, s| (f as f32 - 1.5) * (s as f32 + 0.5));
    let dense = Net::new().push(Dense::<U6>::new()).seed(4).bind::<U4>();
    let z = dense.forward(&x);
    let then = |layer: &dyn Layer| -> Result<Vec<u32>, ShapeError> {
        let kernel = layer.kernel(&[6], &[6]);
        let mut y = lazynet::nalgebra::DMatrix::zeros(6, 3);
        kernel.forward(
            &[],
            z.as_matrix(),
            &mut y,
            lazynet::layer::Activation::Identity,
        )?;
        Ok(y.iter().map(|v| v.to_bits()).collect())
    };
    let bits = |y: Batch<U6>| {
        y.as_matrix()
            .iter()
            .map(|v| v.to_bits())
            .collect::<Vec<_>>()
    };
    let leaky = LeakyRelu::new(-0.3);
    let nets = (
        Net::new()
            .push(Dense::<U6>::new())
            .push(leaky)
            .seed(4)
            .bind::<U4>(),
        Net::new()
            .push(Dense::<U6>::new())
            .push(Gelu)
            .seed(4)
            .bind::<U4>(),
        Net::new()
            .push(Dense::<U6>::new())
            .push(Softmax)
            .seed(4)
            .bind::<U4>(),
    );
    assert_eq!(bits(nets.0.forward(&x)), then(&leaky)?);
    assert_eq!(bits(nets.1.forward(&x)), then(&Gelu)?);
    assert_eq!(bits(nets.2.forward(&x)), then(&Softmax)?);

    // The training forward pass computes the same loss as inference.
    let t = Batch::<U6>::from_fn(3, |f, s| ((f + s) % 3) as f32 / 3.0);
    let (loss, _) = nets.2.loss_and_grads(&x, &t, Mse)?;
    let p = nets.2.forward(&x);
    let mse: f32 = p
        .as_matrix()
        .iter()
        .zip(t.as_matrix().iter())
        .map(|(a, b)| (a - b) * (a - b))
        .sum::<f32>()
        / 18.0;
    assert!(
        (loss - mse).abs() <= 1e-6 * mse.max(1.0),
        "{loss} against {mse}"
    );
    Ok(())
}

/// A layer that hides `Softmax` behind a compile-time half that takes any shape, so that only
/// the run-time check sees an image reach it.
#[derive(Clone, Copy, Debug)]
struct Disguised;

impl Layer for Disguised {
    fn kind(&self) -> &'static str {
        Softmax.kind()
    }
    fn output_shape(&self, input: Option<&PartialShape>) -> Result<Option<PartialShape>, Fault> {
        Softmax.output_shape(input)
    }
    fn param_shapes(&self, input: Option<&PartialShape>) -> Vec<(Role, PartialShape)> {
        Softmax.param_shapes(input)
    }
    fn kernel(&self, input: &[usize], output: &[usize]) -> Box<dyn Kernel> {
        Softmax.kernel(input, output)
    }
}

lazynet::keeps_shape!(Disguised);

#[test]
fn softmax_refuses_an_image_at_run_time_too() {
    let err = Net::new()
        .push(Disguised)
        .try_bind(Image::dynamic(2, 3, 3))
        .err();
    assert_eq!(
        err,
        Some(ShapeError::Rank {
            layer: 0,
            kind: "Softmax",
            needs: "a flat input",
            found: vec![2, 3, 3],
        })
    );
    let message = err.map(|e| e.to_string()).unwrap_or_default();
    assert_eq!(
        message,
        "layer 0 (Softmax) needs a flat input but receives shape (2, 3, 3)"
    );
    // Flat, it binds.
    assert!(Net::new().push(Disguised).try_bind(18).is_ok());
}
