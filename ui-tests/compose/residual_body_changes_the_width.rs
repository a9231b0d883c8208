// Must fail: `x + body(x)` needs a body that gives the width it receives; this body maps 8
// features to 4.
use lazynet::prelude::*;

fn main() {
    let body = Net::new().push(Dense::<U16>::new()).push(Relu).push(Dense::<U4>::new());
    let _net = Net::new()
        .push(Dense::<U8>::new())
        .push(Residual::new(body))
        .bind::<U3>();
}
