// Must fail: in a five-layer net, layer 4 declares 128 inputs but layer 2 outputs 64; caught
// where layer 4 is pushed, before any binding.
use lazynet::prelude::*;

fn main() {
    let decl = Net::new()
        .push(Dense::<U256>::new())
        .push(Relu)
        .push(Dense::<U64>::new())
        .push(Tanh)
        .push(Dense::<U10>::with_input::<U128>());
    let _net = decl.bind::<U784>();
}
