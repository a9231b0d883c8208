// Must fail: a 3×3 pooling window padded by 2 could hold padding only.
use lazynet::prelude::*;

fn main() {
    let decl = Net::new().push(MaxPool2d::<U3>::new().stride::<U1>().padding::<U2>());
    let _net = decl.bind::<Image<U1, U28, U28>>();
}
