// Must fail: a 3×3 kernel with dilation 3 spans 3·(3 − 1) + 1 = 7 pixels, and a 4×4 image
// padded by 1 on each side has 6.
use lazynet::prelude::*;

fn main() {
    let decl = Net::new()
        .push(Conv2d::<U8, U3>::new().padding::<U1>().dilation::<U3>())
        .push(Relu);
    let _net = decl.bind::<Image<U1, U4, U4>>();
}
