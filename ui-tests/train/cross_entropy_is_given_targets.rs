// Must fail: `CrossEntropy` compares the output with labels, and is given a batch of targets.
use lazynet::prelude::*;

fn main() -> Result<(), ShapeError> {
    let net = Net::new()
        .push(Dense::<U64>::new())
        .push(Relu)
        .push(Dense::<U10>::new())
        .bind::<U20>();
    let x = Batch::<U20>::zeros(4);
    let targets = Batch::<U10>::zeros(4);
    let _ = net.loss_and_grads(&x, &targets, CrossEntropy)?;
    Ok(())
}
