//! Element-wise activation layers. They own no parameters and keep the shape.

use nalgebra::DMatrix;

use super::{check_shapes, Fault, Kernel, Layer, Param, PartialShape};
use crate::error::ShapeError;
use crate::init::Role;

/// An element-wise function: the computation of the activation layers, and what a dense or
/// convolution layer applies to its output when an activation follows it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Activation {
    /// `max(x, 0)`; NaN stays NaN, as in PyTorch.
    Relu,
    /// `1 / (1 + e^(−x))`.
    Sigmoid,
    /// `tanh(x)`.
    Tanh,
    /// `x`.
    #[default]
    Identity,
}

impl Activation {
    /// Its name, as its layer's kind: `"Relu"`, `"Sigmoid"`, `"Tanh"`, `"Identity"`.
    pub fn name(self) -> &'static str {
        match self {
            Activation::Relu => "Relu",
            Activation::Sigmoid => "Sigmoid",
            Activation::Tanh => "Tanh",
            Activation::Identity => "Identity",
        }
    }

    /// The function at one value.
    #[inline(always)]
    pub fn at(self, v: f32) -> f32 {
        match self {
            Activation::Relu => {
                if v < 0.0 {
                    0.0
                } else {
                    v
                }
            }
            Activation::Sigmoid => 1.0 / (1.0 + (-v).exp()),
            Activation::Tanh => v.tanh(),
            Activation::Identity => v,
        }
    }

    /// Its derivative, from the function's output `y`: for ReLU 0 where `y ≤ 0` and 1
    /// elsewhere, NaN included (PyTorch's `threshold_backward`, so a NaN output passes the
    /// gradient); `y·(1 − y)` for the sigmoid; `1 − y²` for tanh.
    #[inline(always)]
    pub fn slope_at_output(self, y: f32) -> f32 {
        match self {
            Activation::Relu => {
                if y <= 0.0 {
                    0.0
                } else {
                    1.0
                }
            }
            Activation::Sigmoid => y * (1.0 - y),
            Activation::Tanh => 1.0 - y * y,
            Activation::Identity => 1.0,
        }
    }

    /// Applies the function in place to `values` plus a bias: value `i` becomes
    /// `f(value + bias[(i / run) % bias.len()])`, so a bias per row of a column-major
    /// `rows × samples` matrix is `run = 1`, and a bias per channel of C, H, W samples is
    /// `run = H·W`; `values` holds whole blocks of `run · bias.len()` (a remainder is left
    /// unchanged). An empty `bias` adds nothing. The one place an activation is written.
    pub fn apply(self, values: &mut [f32], bias: &[f32], run: usize) {
        match self {
            Activation::Relu => biased(values, bias, run, |v| Activation::Relu.at(v)),
            Activation::Sigmoid => biased(values, bias, run, |v| Activation::Sigmoid.at(v)),
            Activation::Tanh => biased(values, bias, run, |v| Activation::Tanh.at(v)),
            Activation::Identity => {
                if !bias.is_empty() {
                    biased(values, bias, run, |v| v);
                }
            }
        }
    }

    /// Multiplies the gradient `dy` in place by the derivative at each output `y`: the gradient
    /// after the function becomes the gradient before it.
    pub fn backward(self, y: &[f32], dy: &mut [f32]) {
        match self {
            Activation::Relu => slope(y, dy, |y| Activation::Relu.slope_at_output(y)),
            Activation::Sigmoid => slope(y, dy, |y| Activation::Sigmoid.slope_at_output(y)),
            Activation::Tanh => slope(y, dy, |y| Activation::Tanh.slope_at_output(y)),
            Activation::Identity => {}
        }
    }
}

/// The loop of [`Activation::apply`], compiled once per function.
#[inline(always)]
fn biased(values: &mut [f32], bias: &[f32], run: usize, f: impl Fn(f32) -> f32) {
    if bias.is_empty() {
        values.iter_mut().for_each(|v| *v = f(*v));
        return;
    }
    // Exact chunks: the length known to the loop lets it vectorize. Callers pass whole
    // columns (dense) or whole samples (convolution), so nothing is left over.
    if run <= 1 {
        for column in values.chunks_exact_mut(bias.len()) {
            for (v, b) in column.iter_mut().zip(bias) {
                *v = f(*v + b);
            }
        }
        return;
    }
    // A block longer than `usize` counts is longer than any slice: nothing to apply it to.
    let Some(block) = run.checked_mul(bias.len()) else {
        return;
    };
    for block in values.chunks_exact_mut(block) {
        for (part, b) in block.chunks_exact_mut(run).zip(bias) {
            part.iter_mut().for_each(|v| *v = f(*v + b));
        }
    }
}

#[inline(always)]
fn slope(y: &[f32], dy: &mut [f32], d: impl Fn(f32) -> f32) {
    for (g, y) in dy.iter_mut().zip(y) {
        *g *= d(*y);
    }
}

/// The bound computation of an activation layer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ActivationKernel(pub(crate) Activation);

impl Kernel for ActivationKernel {
    fn forward(
        &self,
        _: &[Param],
        x: &DMatrix<f32>,
        y: &mut DMatrix<f32>,
        _: Activation,
    ) -> Result<(), ShapeError> {
        check_shapes("activation", &[("the output", y.shape(), x.shape())])?;
        y.as_mut_slice().copy_from_slice(x.as_slice());
        self.0.apply(y.as_mut_slice(), &[], 1);
        Ok(())
    }

    fn backward(
        &self,
        _: &[Param],
        _: &DMatrix<f32>,
        y: &DMatrix<f32>,
        dy: &DMatrix<f32>,
        _: &mut [DMatrix<f32>],
        dx: Option<&mut DMatrix<f32>>,
    ) -> Result<(), ShapeError> {
        if let Some(dx) = dx {
            let buffers = [
                ("the output gradient", dy.shape(), y.shape()),
                ("the input gradient", dx.shape(), y.shape()),
            ];
            check_shapes("activation", &buffers)?;
            dx.as_mut_slice().copy_from_slice(dy.as_slice());
            self.0.backward(y.as_slice(), dx.as_mut_slice());
        }
        Ok(())
    }

    fn activation(&self) -> Option<Activation> {
        Some(self.0)
    }
}

macro_rules! activation {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        ///
        /// Owns no parameters; its output has the shape of its input.
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
        pub struct $name;

        impl Layer for $name {
            fn kind(&self) -> &'static str {
                stringify!($name)
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
                Box::new(ActivationKernel(Activation::$name))
            }
        }

        crate::keeps_shape!($name);
    };
}

activation!(
    /// The rectified linear unit, `max(x, 0)`.
    Relu
);
activation!(
    /// The logistic sigmoid, `1 / (1 + e^(−x))`.
    Sigmoid
);
activation!(
    /// The hyperbolic tangent.
    Tanh
);
activation!(
    /// Passes its input through unchanged.
    Identity
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn functions_are_right() {
        let mut v = [-1.0, 0.0, 2.0];
        Activation::Relu.apply(&mut v, &[], 1);
        assert_eq!(v, [0.0, 0.0, 2.0]);
        let mut v = [0.0f32];
        Activation::Sigmoid.apply(&mut v, &[], 1);
        assert_eq!(v, [0.5]);
        let mut v = [1.0f32];
        Activation::Tanh.apply(&mut v, &[], 1);
        assert!((v[0] - 1.0f32.tanh()).abs() < 1e-7);
    }

    #[test]
    fn bias_is_added_per_row_of_each_column() {
        // Two rows, three columns, column-major.
        let mut v = [1.0, -5.0, 2.0, -6.0, 3.0, 7.0];
        Activation::Relu.apply(&mut v, &[1.0, 1.0], 1);
        assert_eq!(v, [2.0, 0.0, 3.0, 0.0, 4.0, 8.0]);
        Activation::Identity.apply(&mut v, &[], 1);
        assert_eq!(v, [2.0, 0.0, 3.0, 0.0, 4.0, 8.0]);
        // A bias per channel of two-pixel planes.
        let mut v = [0.0; 8];
        Activation::Identity.apply(&mut v, &[1.0, -1.0], 2);
        assert_eq!(v, [1.0, 1.0, -1.0, -1.0, 1.0, 1.0, -1.0, -1.0]);
    }

    #[test]
    fn activations_keep_the_shape() {
        let image = PartialShape(vec![Some(3), None, Some(5)]);
        assert_eq!(Relu.output_shape(Some(&image)), Ok(Some(image.clone())));
        assert_eq!(Tanh.output_shape(None), Ok(None));
        assert!(Sigmoid.param_shapes(Some(&image)).is_empty());
    }
}
