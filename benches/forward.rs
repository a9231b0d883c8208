//! MLP 784 → 256 → 10 (ReLU between): lazynet's forward next to hand-written nalgebra on the
//! same weights, at batch 1, 64 and 1024, in one run.
//!
//! The baseline is what a careful nalgebra user writes: `W · X` through nalgebra's GEMM, then
//! bias and ReLU in one pass over the output. lazynet does the same arithmetic, so the ratio
//! of the two is the overhead lazynet adds.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use lazynet::nalgebra::DMatrix;
use lazynet::prelude::*;
use std::hint::black_box;

/// `W · X + b`, then `f`, as a hand-written nalgebra program would.
fn dense(
    w: &DMatrix<f32>,
    b: &DMatrix<f32>,
    x: &DMatrix<f32>,
    f: impl Fn(f32) -> f32,
) -> DMatrix<f32> {
    let mut z = w * x;
    let bias = b.as_slice();
    for column in z.as_mut_slice().chunks_exact_mut(bias.len()) {
        for (v, b) in column.iter_mut().zip(bias) {
            *v = f(*v + b);
        }
    }
    z
}

fn forward(c: &mut Criterion) {
    let net = Net::new()
        .push(Dense::<U256>::new())
        .push(Relu)
        .push(Dense::<U10>::new())
        .seed(1)
        .bind::<U784>();
    // The baseline reads the net's own matrices: the same weights in the same memory.
    let p: Vec<&DMatrix<f32>> = net.named_params().map(|(_, m)| m).collect();
    let [w1, b1, w2, b2] = p.as_slice() else {
        panic!("the MLP has four parameters")
    };

    let mut group = c.benchmark_group("mlp_784_256_10");
    for batch in [1usize, 64, 1024] {
        let mut rng = InitRng::new(2, "bench");
        let x = Batch::<U784>::from_fn(batch, |_, _| rng.uniform(0.0, 1.0));
        let m = x.as_matrix().clone();

        let ours = net.forward(&x);
        let theirs = dense(w2, b2, &dense(w1, b1, &m, |v| v.max(0.0)), |v| v);
        assert_eq!(
            ours.as_matrix(),
            &theirs,
            "both sides must compute the same thing"
        );

        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(BenchmarkId::new("nalgebra", batch), &m, |bench, m| {
            bench.iter(|| dense(w2, b2, &dense(w1, b1, black_box(m), |v| v.max(0.0)), |v| v))
        });
        group.bench_with_input(BenchmarkId::new("lazynet", batch), &x, |bench, x| {
            bench.iter(|| net.forward(black_box(x)))
        });
    }
    group.finish();
}

criterion_group!(benches, forward);
criterion_main!(benches);
