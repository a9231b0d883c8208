// Must fail: 2^64 + 3 is a typenum number, but not a size: typenum's `USIZE` would keep only
// its low bits (3), so a dense layer of that width would silently be 3 wide.
use lazynet::prelude::*;

type Huge = lazynet::typenum::op!(U9223372036854775808 * U2 + U3);

fn main() {
    let _net = Net::new().push(Dense::<Huge>::new()).bind::<U4>();
}
