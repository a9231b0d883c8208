//! Any bytes given to `load_from_bytes` load or are refused, without a panic; a refused load
//! leaves the net as it was.
//!
//! See `fuzz/README.md` to run it.

#![no_main]

use lazynet::nalgebra::DMatrix;
use lazynet::prelude::*;
use libfuzzer_sys::fuzz_target;

fn snapshot<S: lazynet::Bound, L: lazynet::list::Layers>(net: &Net<S, L>) -> Vec<DMatrix<f32>> {
    net.named_params().map(|(_, v)| v.clone()).collect()
}

fuzz_target!(|data: &[u8]| {
    let decl = Net::new()
        .push(Dense::<U3>::new())
        .push(Relu)
        .push(Dense::<U2>::new());

    let mut net = decl.clone().bind::<U4>();
    let before = snapshot(&net);
    if net.load_from_bytes(data).is_err() {
        assert_eq!(snapshot(&net), before, "a refused load changed the net");
    }

    if let Ok(weights) = Weights::from_bytes(data) {
        for name in weights.names() {
            if let Some(tensor) = weights.get(name) {
                let _ = tensor.to_f32();
            }
        }
        let options = LoadOptions::new().allow_unexpected(true);
        if let Ok(net) = decl.load_infer_weights(&weights, options) {
            let x = Batch::from_fn_dyn(net.input().0, 1, |f, _| f as f32);
            let _ = net.try_forward(&x);
        }
    }
});
