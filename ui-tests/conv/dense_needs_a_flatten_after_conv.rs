// Must fail: a dense layer straight after a convolution receives an image.
use lazynet::prelude::*;

fn main() {
    let decl = Net::new().push(Conv2d::<U8, U3>::new()).push(Dense::<U10>::new());
    let _net = decl.bind::<Image<U1, U28, U28>>();
}
