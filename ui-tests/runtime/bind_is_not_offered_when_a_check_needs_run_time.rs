// Must fail: a run-time width meets a declared input size, so only `try_bind` can check it.
use lazynet::prelude::*;

fn main() {
    let decl = Net::new().push(Dense::dynamic(256)).push(Dense::<U10>::with_input::<U256>());
    let _net = decl.bind::<U20>();
}
