// Must fail: the first layer declares 30 inputs, the net is bound to 20.
use lazynet::prelude::*;

fn main() {
    let decl = Net::new().push(Dense::<U256>::with_input::<U30>()).push(Relu);
    let _net = decl.bind::<U20>();
}
