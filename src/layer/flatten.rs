//! The flatten layer.

use nalgebra::DMatrix;

use super::check_shapes;
use super::{Activation, DeclaresInput, Fault, Infer, Kernel, Layer, LayerOn, Param, PartialShape};
use crate::dim::Dyn;
use crate::error::ShapeError;
use crate::init::Role;
use crate::list::{Flattened, Follows, Static, Unknown};
use crate::rules::Proven;
use crate::shape::Shape;

/// Flattens an image of shape (channels, height, width) into a vector of `C·H·W` features, in
/// C, H, W order (PyTorch's `nn.Flatten`), so that dense weights trained there line up. A flat
/// input passes through unchanged. Owns no parameters and copies nothing.
///
/// A dense layer that declares its input size after a flatten is checked against `C·H·W`: by
/// the compiler when the image size is static, by `try_bind` otherwise.
///
/// # Example
/// ```
/// use lazynet::prelude::*;
///
/// let decl = Net::new().push(Flatten).push(Dense::<U10>::with_input::<U784>());
/// let net = decl.clone().bind::<Image<U1, U28, U28>>();
/// assert_eq!(net.output_dims(), [10]);
/// assert!(decl.try_bind(Image::dynamic(3, 28, 28)).is_err());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Flatten;

impl Layer for Flatten {
    fn kind(&self) -> &'static str {
        "Flatten"
    }

    fn output_shape(&self, input: Option<&PartialShape>) -> Result<Option<PartialShape>, Fault> {
        let Some(input) = input else {
            return Ok(Some(PartialShape(vec![None])));
        };
        match (input.known(), input.len()) {
            (Some(shape), None) => Err(Fault::TooLarge {
                tensor: "input",
                shape,
            }),
            (_, len) => Ok(Some(PartialShape(vec![len]))),
        }
    }

    fn param_shapes(&self, _: Option<&PartialShape>) -> Vec<(Role, PartialShape)> {
        Vec::new()
    }

    fn kernel(&self, _: &[usize], _: &[usize]) -> Box<dyn Kernel> {
        Box::new(FlattenKernel)
    }
}

/// The bound computation of [`Flatten`]: none, the values are already in C, H, W order.
#[derive(Clone, Copy, Debug)]
struct FlattenKernel;

impl Kernel for FlattenKernel {
    fn forward(
        &self,
        _: &[Param],
        x: &DMatrix<f32>,
        y: &mut DMatrix<f32>,
        _: Activation,
    ) -> Result<(), ShapeError> {
        check_shapes("Flatten", &[("the output", y.shape(), x.shape())])?;
        y.as_mut_slice().copy_from_slice(x.as_slice());
        Ok(())
    }

    fn backward(
        &self,
        _: &[Param],
        _: &DMatrix<f32>,
        _: &DMatrix<f32>,
        dy: &DMatrix<f32>,
        _: &mut [DMatrix<f32>],
        dx: Option<&mut DMatrix<f32>>,
    ) -> Result<(), ShapeError> {
        if let Some(dx) = dx {
            check_shapes("Flatten", &[("the input gradient", dx.shape(), dy.shape())])?;
            dx.as_mut_slice().copy_from_slice(dy.as_slice());
        }
        Ok(())
    }

    fn is_reshape(&self) -> bool {
        true
    }
}

/// Any shape in; its flat size out.
impl<In: Shape, Known> LayerOn<In, Known> for Flatten {
    type Out = In::Flat;
    type Checks = Proven;
}

/// After an image whose size waits for the input: a flattened size, checked at binding.
impl Follows<Unknown> for Flatten {
    type Known = Flattened;
}

/// After another flatten: the same.
impl Follows<Flattened> for Flatten {
    type Known = Flattened;
}

/// After a static width: that width.
impl<N> Follows<Static<N>> for Flatten {
    type Known = Static<N>;
}

/// After a run-time width: a run-time width.
impl Follows<Dyn> for Flatten {
    type Known = Dyn;
}

impl DeclaresInput for Flatten {
    type Input = Infer;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flattens_what_it_knows() {
        let out = |i: Option<PartialShape>| {
            Flatten
                .output_shape(i.as_ref())
                .map(|s| s.map(|s| s.to_string()))
        };
        assert_eq!(out(None), Ok(Some("(?,)".to_string())));
        assert_eq!(
            out(Some(PartialShape::from_dims(&[16, 5, 5]))),
            Ok(Some("(400,)".to_string()))
        );
        assert_eq!(
            out(Some(PartialShape(vec![Some(16), None, None]))),
            Ok(Some("(?,)".to_string()))
        );
    }
}
