// Must fail: LeNet's layers on a 14×14 image: 14 → 10 (5×5) → 5 (pool) → 1 (5×5), and the
// last 2×2 pool finds a 1×1 image: its output would have size 0.
use lazynet::prelude::*;

fn main() {
    let decl = Net::new()
        .push(Conv2d::<U6, U5>::new())
        .push(Relu)
        .push(MaxPool2d::<U2>::new())
        .push(Conv2d::<U16, U5>::new())
        .push(Relu)
        .push(MaxPool2d::<U2>::new())
        .push(Flatten)
        .push(Dense::<U10>::new());
    let _net = decl.bind::<Image<U1, U14, U14>>();
}
