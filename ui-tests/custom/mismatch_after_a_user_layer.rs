// Must fail: a user-written layer that keeps its input's shape (`keeps_shape!`) passes the
// width 10 on, and the dense layer after it declares 20 inputs: the compiler checks the user's
// layer as it checks the crate's.
use lazynet::layer::{Activation, Fault, Kernel, Layer, Param, PartialShape};
use lazynet::nalgebra::DMatrix;
use lazynet::prelude::*;

#[derive(Clone, Copy, Debug)]
struct Double;

impl Layer for Double {
    fn kind(&self) -> &'static str {
        "Double"
    }
    fn output_shape(&self, input: Option<&PartialShape>) -> Result<Option<PartialShape>, Fault> {
        Ok(input.cloned())
    }
    fn param_shapes(&self, _: Option<&PartialShape>) -> Vec<(Role, PartialShape)> {
        Vec::new()
    }
    fn kernel(&self, _: &[usize], _: &[usize]) -> Box<dyn Kernel> {
        Box::new(DoubleKernel)
    }
}

#[derive(Debug)]
struct DoubleKernel;

impl Kernel for DoubleKernel {
    fn forward(
        &self,
        _: &[Param],
        x: &DMatrix<f32>,
        y: &mut DMatrix<f32>,
        _: Activation,
    ) -> Result<(), ShapeError> {
        y.zip_apply(x, |y, x| *y = 2.0 * x);
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
            dx.zip_apply(dy, |d, g| *d = 2.0 * g);
        }
        Ok(())
    }
}

lazynet::keeps_shape!(Double);

fn main() {
    let _decl = Net::new()
        .push(Dense::<U10>::new())
        .push(Double)
        .push(Dense::<U5>::with_input::<U20>());
}
