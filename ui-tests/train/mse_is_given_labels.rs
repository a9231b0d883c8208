// Must fail: `Mse` compares the output with a batch of targets, and `fit` gives it labels.
use lazynet::prelude::*;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut net = Net::new()
        .push(Dense::<U64>::new())
        .push(Relu)
        .push(Dense::<U10>::new())
        .bind::<U20>();
    let x = Batch::<U20>::zeros(4);
    let labels = Labels::<U10>::try_new(vec![3, 0, 9, 1])?;
    let mut adam = Adam::new(1e-2);
    let fit = Fit::new(5).quiet();
    net.fit(&x, &labels, Mse, &mut adam, &fit)?;
    Ok(())
}
