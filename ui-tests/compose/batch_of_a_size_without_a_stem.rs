// Must fail: the net has stems for 4 and 7 features; a batch of 5 has none.
use lazynet::prelude::*;

fn main() {
    let trunk = Net::new().push(Dense::<U8>::new()).push(Relu).push(Dense::<U1>::new());
    let stems = Stems::new()
        .stem::<U4, _>(Net::new().push(Dense::<U16>::new()))
        .stem::<U7, _>(Net::new().push(Dense::<U16>::new()));
    let net = trunk.bind_stems(stems).unwrap();
    let _y = net.forward(&Batch::<U5>::zeros(2));
}
