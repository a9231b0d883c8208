// Must fail: an unbound net cannot run; bind it or use `forward_init`.
use lazynet::prelude::*;

fn main() {
    let decl = Net::new().push(Dense::<U10>::new());
    let x = Batch::<U20>::zeros(2);
    let _y = decl.forward(&x);
}
