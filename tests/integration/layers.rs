//! Layers written outside the crate: named parameters, duplicate names, `keeps_shape!`.

use lazynet::layer::{Activation, Fault, Kernel, Layer, Param, PartialShape};
use lazynet::nalgebra::DMatrix;
use lazynet::prelude::*;

/// A per-feature scale and shift, `y = a ⊙ x + b`, with parameters named by `roles`.
#[derive(Clone, Copy, Debug)]
struct Affine {
    roles: [Role; 2],
}

impl Layer for Affine {
    fn kind(&self) -> &'static str {
        "Affine"
    }
    fn output_shape(&self, input: Option<&PartialShape>) -> Result<Option<PartialShape>, Fault> {
        Ok(input.cloned())
    }
    fn param_shapes(&self, input: Option<&PartialShape>) -> Vec<(Role, PartialShape)> {
        let width = input.and_then(PartialShape::len);
        self.roles
            .iter()
            .map(|&r| (r, PartialShape(vec![width])))
            .collect()
    }
    fn kernel(&self, _: &[usize], _: &[usize]) -> Box<dyn Kernel> {
        Box::new(AffineKernel)
    }
}

#[derive(Debug)]
struct AffineKernel;

impl Kernel for AffineKernel {
    fn forward(
        &self,
        params: &[Param],
        x: &DMatrix<f32>,
        y: &mut DMatrix<f32>,
        _: Activation,
    ) -> Result<(), ShapeError> {
        if let [a, b] = params {
            for (yc, xc) in y.column_iter_mut().zip(x.column_iter()) {
                for (((y, x), a), b) in yc
                    .into_iter()
                    .zip(xc.iter())
                    .zip(a.value().iter())
                    .zip(b.value().iter())
                {
                    *y = a * x + b;
                }
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
        if let ([a, _], [da, db]) = (params, grads) {
            for (xc, dc) in x.column_iter().zip(dy.column_iter()) {
                for (i, (x, d)) in xc.iter().zip(dc.iter()).enumerate() {
                    da[i] += x * d;
                    db[i] += d;
                }
            }
            if let Some(dx) = dx {
                for (dxc, dc) in dx.column_iter_mut().zip(dy.column_iter()) {
                    for ((dx, d), a) in dxc.into_iter().zip(dc.iter()).zip(a.value().iter()) {
                        *dx = a * d;
                    }
                }
            }
        }
        Ok(())
    }
}

lazynet::keeps_shape!(Affine);

#[test]
fn named_parameters_bind_train_and_show() -> Result<(), Box<dyn std::error::Error>> {
    let decl = Net::new()
        .push(Dense::<U4>::new())
        .push(Affine {
            roles: [Role::Named("gain"), Role::Named("shift")],
        })
        .push(Dense::<U2>::new());
    let shapes: Vec<String> = decl
        .partial_shapes()
        .iter()
        .map(|(n, s)| format!("{n} {s}"))
        .collect();
    assert!(shapes.contains(&"1.gain (4,)".to_string()), "{shapes:?}");
    let mut net = decl.bind::<U3>();
    let names: Vec<&str> = net.named_params().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        ["0.weight", "0.bias", "1.gain", "1.shift", "2.weight", "2.bias"]
    );
    net.set_param("1.gain", DMatrix::from_element(4, 1, 1.0))?;
    let x = Batch::<U3>::from_fn(5, |f, s| (f + 2 * s) as f32 / 10.0);
    let labels = Labels::<U2>::try_new(vec![0, 1, 0, 1, 1])?;
    let (first, _) = net.loss_and_grads(&x, &labels, CrossEntropy)?;
    let mut adam = Adam::new(0.05);
    for _ in 0..100 {
        let (_, grads) = net.loss_and_grads(&x, &labels, CrossEntropy)?;
        adam.step(&mut net, &grads)?;
    }
    let (last, grads) = net.loss_and_grads(&x, &labels, CrossEntropy)?;
    assert!(last < first, "{first} → {last}");
    assert!(grads.get("1.shift").is_some());
    let bytes = net.save_to_bytes()?;
    let mut other = Net::new()
        .push(Dense::<U4>::new())
        .push(Affine {
            roles: [Role::Named("gain"), Role::Named("shift")],
        })
        .push(Dense::<U2>::new())
        .seed(5)
        .bind::<U3>();
    other.load_from_bytes(&bytes)?;
    assert_eq!(other.forward(&x).as_matrix(), net.forward(&x).as_matrix());
    Ok(())
}

#[test]
fn two_parameters_of_one_name_are_an_error() {
    let decl = Net::new().push(Affine {
        roles: [Role::Weight, Role::Weight],
    });
    let err = decl.try_bind(3).err();
    assert_eq!(
        err.map(|e| e.to_string()).as_deref(),
        Some("layer 0 (Affine) has two parameters named `0.weight`; give them distinct roles (`Role::Named`)")
    );
}

/// The crate's kernels, called on their own with buffers of other shapes than their layer was
/// bound to: an error naming the buffer, never a panic.
#[test]
fn kernels_called_alone_with_other_shapes_are_errors() -> Result<(), ShapeError> {
    let contract = |r: Result<(), ShapeError>| matches!(r, Err(ShapeError::Contract { .. }));
    let w = Param::new("0.weight", &[2, 3], Role::Weight, DMatrix::zeros(2, 3))?;
    let b = Param::new("0.bias", &[2], Role::Bias, DMatrix::zeros(2, 1))?;
    let dense = Dense::<U2>::new().kernel(&[3], &[2]);
    let params = [w, b];
    let x = DMatrix::zeros(4, 5);
    let mut y = DMatrix::zeros(2, 5);
    assert!(contract(dense.forward(
        &params,
        &x,
        &mut y,
        Activation::Relu
    )));
    assert!(contract(dense.forward(
        &params[..1],
        &DMatrix::zeros(3, 5),
        &mut y,
        Activation::Identity
    )));
    let mut grads = [DMatrix::zeros(2, 3), DMatrix::zeros(2, 1)];
    let mut dx = DMatrix::zeros(3, 4);
    let x = DMatrix::zeros(3, 5);
    let r = dense.backward(&params, &x, &y, &y, &mut grads, Some(&mut dx));
    assert!(contract(r), "an input gradient of another shape");

    let relu = Relu.kernel(&[3], &[3]);
    assert!(contract(relu.forward(
        &[],
        &x,
        &mut DMatrix::zeros(2, 5),
        Activation::Identity
    )));
    let pool = MaxPool2d::<U2>::new().kernel(&[1, 4, 4], &[1, 2, 2]);
    let mut out = DMatrix::zeros(4, 2);
    assert!(contract(pool.forward(
        &[],
        &DMatrix::zeros(15, 2),
        &mut out,
        Activation::Identity
    )));
    let conv = Conv2d::<U2, U3>::new().kernel(&[1, 4, 4], &[2, 2, 2]);
    let cw = Param::new(
        "0.weight",
        &[2, 1, 3, 3],
        Role::Weight,
        DMatrix::zeros(2, 9),
    )?;
    let wrong = Param::new(
        "0.weight",
        &[2, 1, 2, 2],
        Role::Weight,
        DMatrix::zeros(2, 4),
    )?;
    let mut cy = DMatrix::zeros(8, 3);
    assert!(contract(conv.forward(
        &[wrong],
        &DMatrix::zeros(16, 3),
        &mut cy,
        Activation::Identity
    )));
    assert!(contract(conv.forward(
        std::slice::from_ref(&cw),
        &DMatrix::zeros(15, 3),
        &mut cy,
        Activation::Identity
    )));
    assert!(conv
        .forward(&[cw], &DMatrix::zeros(16, 3), &mut cy, Activation::Identity)
        .is_ok());
    Ok(())
}
