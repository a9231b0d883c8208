// Must fail: every place of a `Shared` layer computes with the same parameters; the first
// place receives 8 features, the second 16. Caught where the second place is pushed.
use lazynet::prelude::*;

fn main() {
    let shared = Shared::new(Dense::<U8>::new());
    let _decl = Net::new()
        .push(Dense::<U8>::new())
        .push(shared.clone())
        .push(Dense::<U16>::new())
        .push(shared.clone());
}
