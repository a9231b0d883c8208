// Must fail: one trunk takes one width; the stem for 4 features gives 16, the stem for 7
// gives 12.
use lazynet::prelude::*;

fn main() {
    let trunk = Net::new().push(Dense::<U8>::new()).push(Relu).push(Dense::<U1>::new());
    let stems = Stems::new()
        .stem::<U4, _>(Net::new().push(Dense::<U16>::new()))
        .stem::<U7, _>(Net::new().push(Dense::<U12>::new()));
    let _net = trunk.bind_stems(stems);
}
