//! Element-wise activation layers. They own no parameters and keep the shape.

use super::{sealed, Fault, Layer, LayerOn, Op, PartialShape};
use crate::init::Role;
use crate::shape::Shape;

/// An element-wise function, applied in place.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Activation {
    /// max(x, 0)
    Relu,
    /// 1 / (1 + e^(−x))
    Sigmoid,
    /// tanh(x)
    Tanh,
    /// x
    Identity,
}

impl Activation {
    /// Applies the function to every value.
    pub(crate) fn apply(self, values: &mut [f32]) {
        match self {
            Activation::Relu => values.iter_mut().for_each(|v| *v = relu(*v)),
            Activation::Sigmoid => values.iter_mut().for_each(|v| *v = sigmoid(*v)),
            Activation::Tanh => values.iter_mut().for_each(|v| *v = v.tanh()),
            Activation::Identity => {}
        }
    }

    /// Adds `bias` to every value and applies the function, in one pass.
    pub(crate) fn apply_plus(self, values: &mut [f32], bias: f32) {
        match self {
            Activation::Relu => values.iter_mut().for_each(|v| *v = relu(*v + bias)),
            Activation::Sigmoid => values.iter_mut().for_each(|v| *v = sigmoid(*v + bias)),
            Activation::Tanh => values.iter_mut().for_each(|v| *v = (*v + bias).tanh()),
            Activation::Identity => values.iter_mut().for_each(|v| *v += bias),
        }
    }

    /// Adds `bias` to every column of the column-major `values` (`bias.len()` rows) and applies
    /// the function, in one pass.
    pub(crate) fn apply_with_bias(self, values: &mut [f32], bias: &[f32]) {
        match self {
            Activation::Relu => bias_then(values, bias, relu),
            Activation::Sigmoid => bias_then(values, bias, sigmoid),
            Activation::Tanh => bias_then(values, bias, f32::tanh),
            Activation::Identity => bias_then(values, bias, |v| v),
        }
    }
}

/// `max(v, 0)`, with NaN passed through as PyTorch's `relu` does (`f32::max` would return 0).
#[inline(always)]
fn relu(v: f32) -> f32 {
    if v < 0.0 {
        0.0
    } else {
        v
    }
}

#[inline(always)]
fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + (-v).exp())
}

#[inline(always)]
fn bias_then(values: &mut [f32], bias: &[f32], f: impl Fn(f32) -> f32) {
    if bias.is_empty() {
        return;
    }
    for column in values.chunks_exact_mut(bias.len()) {
        for (v, b) in column.iter_mut().zip(bias) {
            *v = f(*v + b);
        }
    }
}

macro_rules! activation {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        ///
        /// Owns no parameters; its output has the shape of its input.
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
        pub struct $name;

        impl sealed::Sealed for $name {}

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
            fn declared_input(&self) -> Option<usize> {
                None
            }
            fn op(&self, _: &[usize]) -> Op {
                Op::Act(Activation::$name)
            }
        }

        /// Follows anything; produces what it receives.
        impl<Prev> crate::list::Follows<Prev> for $name {
            type Known = Prev;
        }

        impl super::DeclaresInput for $name {
            type Input = super::Infer;
        }

        /// Any input, flat or an image; the output has its shape.
        impl<In: Shape, Known> LayerOn<In, Known> for $name {
            type Out = In;
            type Checks = crate::rules::Proven;
        }
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
        Activation::Relu.apply(&mut v);
        assert_eq!(v, [0.0, 0.0, 2.0]);
        let mut v = [0.0f32];
        Activation::Sigmoid.apply(&mut v);
        assert_eq!(v, [0.5]);
        let mut v = [1.0f32];
        Activation::Tanh.apply(&mut v);
        assert!((v[0] - 1.0f32.tanh()).abs() < 1e-7);
    }

    #[test]
    fn bias_is_added_per_row_of_each_column() {
        // Two rows, three columns, column-major.
        let mut v = [1.0, -5.0, 2.0, -6.0, 3.0, 7.0];
        Activation::Relu.apply_with_bias(&mut v, &[1.0, 1.0]);
        assert_eq!(v, [2.0, 0.0, 3.0, 0.0, 4.0, 8.0]);
        Activation::Identity.apply_with_bias(&mut v, &[]);
        assert_eq!(v, [2.0, 0.0, 3.0, 0.0, 4.0, 8.0]);
    }

    #[test]
    fn activations_keep_the_shape() {
        let image = PartialShape(vec![Some(3), None, Some(5)]);
        assert_eq!(Relu.output_shape(Some(&image)), Ok(Some(image.clone())));
        assert_eq!(Tanh.output_shape(None), Ok(None));
        assert!(Sigmoid.param_shapes(Some(&image)).is_empty());
    }
}
