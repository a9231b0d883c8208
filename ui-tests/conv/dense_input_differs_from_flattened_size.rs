// Must fail: VGG's classifier declares 1000 inputs, but the flatten produces 512·7·7 = 25088.
use lazynet::prelude::*;

fn main() {
    let decl = Net::new()
        .push(Conv2d::<U512, U3>::new().padding::<U1>())
        .push(Relu)
        .push(MaxPool2d::<U2>::new())
        .push(Flatten)
        .push(Dense::<U4096>::with_input::<U1000>());
    let _net = decl.bind::<Image<U3, U14, U14>>();
}
