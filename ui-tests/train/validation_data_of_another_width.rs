// Must fail: validation samples of 5 features for a net trained on 4; the fit's batch shape is
// inferred from the later `net.fit(&x, …)`, and the rule still fires at `validation`.
use lazynet::prelude::*;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut net = Net::new().push(Dense::<U3>::new()).bind::<U4>();
    let x = Batch::<U4>::zeros(6);
    let labels = Labels::<U3>::try_new(vec![0, 1, 2, 0, 1, 2])?;
    let val_x = Batch::<U5>::zeros(3);
    let val_labels = Labels::<U3>::try_new(vec![2, 1, 0])?;
    let fit = Fit::new(5).quiet().validation(&val_x, &val_labels);
    net.fit(&x, &labels, CrossEntropy, &mut Adam::new(1e-2), &fit)?;
    Ok(())
}
