// Must fail: a declared net has no parameters for an optimizer to step.
use lazynet::prelude::*;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut decl = Net::new()
        .push(Dense::<U64>::new())
        .push(Relu)
        .push(Dense::<U10>::new());
    let net = decl.clone().bind::<U20>();
    let x = Batch::<U20>::zeros(4);
    let labels = Labels::<U10>::try_new(vec![3, 0, 9, 1])?;
    let (_, grads) = net.loss_and_grads(&x, &labels, CrossEntropy)?;
    let mut adam = Adam::new(1e-2);
    adam.step(&mut decl, &grads)?;
    Ok(())
}
