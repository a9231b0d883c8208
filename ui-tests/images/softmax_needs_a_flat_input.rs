// Must fail: `Softmax` is taken over a flat sample's features (PyTorch's `nn.Softmax(dim=1)` on
// an `(N, F)` input), and a convolution gives it an image; the error names `Softmax`, says it
// needs a flat input, and tells to put `Flatten` before it.
use lazynet::prelude::*;

fn main() {
    let _net = Net::new()
        .push(Conv2d::<U4, U3>::new())
        .push(Softmax)
        .bind::<Image<U1, U8, U8>>();
}
