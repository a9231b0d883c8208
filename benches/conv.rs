//! A LeNet-style convolutional net on 1×28×28 images at batch 64, next to one dense GEMM of the
//! same number of floating-point operations, in one run.
//!
//! The GEMM is the best case for the same work: one `W · X` through nalgebra's (matrixmultiply)
//! kernel, with nothing else to do. The net adds im2col, pooling, the small dense layers and the
//! write-back of each convolution in C, H, W order, so the ratio of the two times says how much
//! of the kernel's speed the net keeps. Criterion's throughput is set to FLOPs, so it reports
//! GFLOP/s as "Gelem/s".

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use lazynet::nalgebra::DMatrix;
use lazynet::prelude::*;
use std::hint::black_box;

const BATCH: usize = 64;

/// Multiply-adds per sample, counted as 2 FLOPs each: conv 1×28×28 → 6×24×24 (5×5), conv
/// 6×12×12 → 16×8×8 (5×5), dense 256 → 120 → 84 → 10.
const FLOPS_PER_SAMPLE: usize =
    2 * (6 * 25 * 24 * 24 + 16 * 6 * 25 * 8 * 8 + 256 * 120 + 120 * 84 + 84 * 10);

fn conv(c: &mut Criterion) {
    let net = Net::new()
        .push(Conv2d::<U6, U5>::new())
        .push(Relu)
        .push(MaxPool2d::<U2>::new())
        .push(Conv2d::<U16, U5>::new())
        .push(Relu)
        .push(MaxPool2d::<U2>::new())
        .push(Flatten)
        .push(Dense::<U120>::new())
        .push(Relu)
        .push(Dense::<U84>::new())
        .push(Relu)
        .push(Dense::<U10>::new())
        .seed(1)
        .bind::<Image<U1, U28, U28>>();
    let mut rng = InitRng::new(2, "bench");
    let x = Batch::<Image<U1, U28, U28>>::from_fn(BATCH, |_, _| rng.uniform(0.0, 1.0));

    // The same FLOPs as one GEMM: W (rows × 784) · X (784 × 64).
    let flops = FLOPS_PER_SAMPLE * BATCH;
    let rows = flops / (2 * 784 * BATCH);
    let w = DMatrix::<f32>::from_fn(rows, 784, |i, j| ((i * 31 + j * 17) % 13) as f32 / 13.0);
    let m = x.as_matrix().clone();
    let gemm_flops = 2 * rows * 784 * BATCH;

    let mut group = c.benchmark_group("lenet_1x28x28_b64");
    group.throughput(Throughput::Elements(gemm_flops as u64));
    group.bench_function("gemm_same_flops", |bench| bench.iter(|| &w * black_box(&m)));
    group.throughput(Throughput::Elements(flops as u64));
    group.bench_function("lenet", |bench| bench.iter(|| net.forward(black_box(&x))));
    group.finish();
}

criterion_group!(benches, conv);
criterion_main!(benches);
