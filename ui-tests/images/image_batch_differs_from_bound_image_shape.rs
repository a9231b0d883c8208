// Must fail: 8×8×1 images hold as many values as the 1×8×8 images the net is bound to, but in
// other places; only the same (channels, height, width) runs.
use lazynet::prelude::*;

fn main() {
    let net = Net::new()
        .push(Conv2d::<U4, U3>::new())
        .push(Flatten)
        .bind::<Image<U1, U8, U8>>();
    let x = Batch::<Image<U8, U8, U1>>::zeros(2);
    let _y = net.forward(&x);
}
