// Must fail: four activations keep the input size, so the fifth layer's declared 30 inputs
// meet the bound input of 20 only when the net is bound.
use lazynet::prelude::*;

fn main() {
    let decl = Net::new()
        .push(Relu)
        .push(Tanh)
        .push(Sigmoid)
        .push(Identity)
        .push(Dense::<U10>::with_input::<U30>());
    let _net = decl.bind::<U20>();
}
