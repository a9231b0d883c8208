// Must fail: `try_bind(64)` binds a flat input of 64 features, but the first layer is a
// convolution, which needs an image.
use lazynet::prelude::*;

fn main() {
    let decl = Net::new().push(Conv2d::<U4, U3>::new()).push(Flatten);
    let _net = decl.try_bind(64);
}
