// Must fail: a convolution bound to a flat input of 784 features.
use lazynet::prelude::*;

fn main() {
    let decl = Net::new().push(Conv2d::<U8, U3>::new()).push(Relu);
    let _net = decl.bind::<U784>();
}
