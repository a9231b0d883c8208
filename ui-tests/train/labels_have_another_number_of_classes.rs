// Must fail: labels of 5 classes for a net whose output is 10 wide.
use lazynet::prelude::*;

fn main() -> Result<(), ShapeError> {
    let net = Net::new()
        .push(Dense::<U64>::new())
        .push(Relu)
        .push(Dense::<U10>::new())
        .bind::<U20>();
    let x = Batch::<U20>::zeros(4);
    let labels = Labels::<U5>::try_new(vec![3, 0, 4, 1])?;
    let _ = net.loss_and_grads(&x, &labels, CrossEntropy)?;
    Ok(())
}
