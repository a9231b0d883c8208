// Must fail: `bind` turns a declaration into a bound net once; a bound net is not rebound.
use lazynet::prelude::*;

fn main() {
    let net = Net::new().push(Dense::<U10>::new()).bind::<U20>();
    let _again = net.bind::<U20>();
}
