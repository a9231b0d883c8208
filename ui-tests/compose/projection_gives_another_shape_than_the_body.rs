// Must fail: `body(x) + projection(x)` adds two branches, which must give one shape; the body
// halves the image (stride 2) but the projection keeps its size (stride 1).
use lazynet::prelude::*;

fn main() {
    let body = Net::new().push(Conv2d::<U8, U3>::new().stride::<U2>().padding::<U1>());
    let down = Net::new().push(Conv2d::<U8, U1>::new());
    let _net = Net::new()
        .push(Residual::with_projection(body, down))
        .bind::<Image<U4, U8, U8>>();
}
