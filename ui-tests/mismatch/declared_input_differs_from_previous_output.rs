// Must fail: layer 2 declares 30 inputs, layer 0 outputs 256; caught where layer 2 is pushed.
use lazynet::prelude::*;

fn main() {
    let decl = Net::new()
        .push(Dense::<U256>::new())
        .push(Relu)
        .push(Dense::<U10>::with_input::<U30>());
    let _net = decl.bind::<U20>();
}
