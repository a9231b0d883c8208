// Must fail: one sample of 30 features given to `predict` on a net bound to 20 inputs.
use lazynet::prelude::*;

fn main() {
    let net = Net::new().push(Dense::<U10>::new()).bind::<U20>();
    let s: GenericArray<f32, U30> = GenericArray::default();
    let _y = net.predict(&s);
}
