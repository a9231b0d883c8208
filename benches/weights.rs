//! Saving and loading an MLP 784 → 1024 → 1024 → 10 (1.86 M parameters, 7.5 MB) as
//! safetensors bytes, next to the least any program does with the `safetensors` crate, in one
//! run.
//!
//! The baselines hold row-major `Vec<f32>` tensors, as PyTorch does, so they neither transpose
//! nor check anything against a net:
//! * save: encode each tensor as little-endian bytes and call `safetensors::serialize`;
//! * load: `SafeTensors::deserialize`, then decode every tensor into a `Vec<f32>`.
//!
//! lazynet's side does what a user calls: `save_to_bytes` and `load_from_bytes` (which also
//! checks every name and shape, converts into the net's column-major matrices, and sorts the
//! header so that a save is deterministic).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use lazynet::prelude::*;
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

/// `(name, shape, row-major values)` for every parameter of `net`.
type Tensors = Vec<(String, Vec<usize>, Vec<f32>)>;

fn baseline_save(tensors: &Tensors) -> Vec<u8> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(name, shape, values)| {
            let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            (name.clone(), shape.clone(), data)
        })
        .collect();
    let views = bytes.iter().map(|(name, shape, data)| {
        let view = TensorView::new(Dtype::F32, shape.clone(), data).expect("a valid tensor");
        (name.as_str(), view)
    });
    safetensors::serialize(views, None).expect("serializes")
}

fn baseline_load(bytes: &[u8]) -> Vec<Vec<f32>> {
    let st = SafeTensors::deserialize(bytes).expect("a valid file");
    st.iter()
        .map(|(_, view)| {
            let (values, _) = view.data().as_chunks::<4>();
            values.iter().map(|&b| f32::from_le_bytes(b)).collect()
        })
        .collect()
}

fn weights(c: &mut Criterion) {
    let decl = Net::new()
        .push(Dense::<U1024>::new())
        .push(Relu)
        .push(Dense::<U1024>::new())
        .push(Relu)
        .push(Dense::<U10>::new());
    let net = decl.clone().seed(1).bind::<U784>();
    let bytes = net.save_to_bytes().expect("saves");
    let tensors: Tensors = net
        .named_params()
        .map(|(name, m)| {
            let shape = if m.ncols() == 1 {
                vec![m.nrows()]
            } else {
                vec![m.nrows(), m.ncols()]
            };
            (name.to_owned(), shape, m.transpose().as_slice().to_vec())
        })
        .collect();

    // Both sides describe the same tensors with the same values.
    let loaded = baseline_load(&baseline_save(&tensors));
    let mut target = decl.clone().seed(2).bind::<U784>();
    target.load_from_bytes(&bytes).expect("loads");
    assert!(target.named_params().eq(net.named_params()));
    assert_eq!(
        loaded.iter().map(Vec::len).sum::<usize>(),
        net.param_count()
    );

    let mut group = c.benchmark_group("weights_784_1024_1024_10");
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    group.bench_function("save/safetensors", |b| {
        b.iter(|| baseline_save(black_box(&tensors)))
    });
    group.bench_function("save/lazynet", |b| {
        b.iter(|| black_box(&net).save_to_bytes().expect("saves"))
    });
    group.bench_function("load/safetensors", |b| {
        b.iter(|| baseline_load(black_box(&bytes)))
    });
    group.bench_function("load/lazynet", |b| {
        b.iter(|| target.load_from_bytes(black_box(&bytes)).expect("loads"))
    });
    group.finish();
}

criterion_group!(benches, weights);
criterion_main!(benches);
