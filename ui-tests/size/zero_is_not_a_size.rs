// Must fail: U0 is not a size a net can be bound to.
use lazynet::prelude::*;

fn main() {
    let _net = Net::new().push(Dense::<U10>::new()).bind::<U0>();
}
