// Must fail: on images, the body of `x + body(x)` must keep channels, height and width; this
// convolution gives 8 channels to a block that receives 4.
use lazynet::prelude::*;

fn main() {
    let body = Net::new().push(Conv2d::<U8, U3>::new().padding::<U1>());
    let _net = Net::new()
        .push(Residual::new(body))
        .bind::<Image<U4, U8, U8>>();
}
