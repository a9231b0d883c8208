// Must fail: a user's loss implements `Loss<Labels<U10>>` only, and is given a batch of
// targets.
use lazynet::nalgebra::DMatrix;
use lazynet::prelude::*;
use lazynet::train::Loss;

#[derive(Clone, Copy)]
struct Hinge;

impl Loss<Labels<U10>> for Hinge {
    fn name(&self) -> &'static str {
        "hinge"
    }

    fn loss_and_grad(
        &self,
        y: &DMatrix<f32>,
        _labels: &Labels<U10>,
    ) -> Result<(f32, DMatrix<f32>), ShapeError> {
        Ok((0.0, DMatrix::zeros(y.nrows(), y.ncols())))
    }
}

fn main() -> Result<(), ShapeError> {
    let net = Net::new().push(Dense::<U10>::new()).bind::<U20>();
    let x = Batch::<U20>::zeros(4);
    let targets = Batch::<U10>::zeros(4);
    let _ = net.loss_and_grads(&x, &targets, Hinge)?;
    Ok(())
}
