// Must fail: regression targets 3 wide for a net whose output is 10 wide.
use lazynet::prelude::*;

fn main() -> Result<(), ShapeError> {
    let net = Net::new()
        .push(Dense::<U64>::new())
        .push(Relu)
        .push(Dense::<U10>::new())
        .bind::<U20>();
    let x = Batch::<U20>::zeros(4);
    let targets = Batch::<U3>::zeros(4);
    let _ = net.loss_and_grads(&x, &targets, Mse)?;
    Ok(())
}
