// Must fail: an unbound net has no parameters to read.
use lazynet::prelude::*;

fn main() {
    let decl = Net::new().push(Dense::<U256>::new()).push(Relu).push(Dense::<U10>::new());
    for (name, value) in decl.named_params() {
        println!("{name}: {value}");
    }
}
