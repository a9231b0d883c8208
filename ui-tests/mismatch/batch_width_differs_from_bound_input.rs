// Must fail: a batch of 30 features fed to a net bound to 20 inputs.
use lazynet::prelude::*;

fn main() {
    let net = Net::new().push(Dense::<U10>::new()).bind::<U20>();
    let x = Batch::<U30>::zeros(2);
    let _y = net.forward(&x);
}
