//! One training step (forward, backward, Adam update) at batch 64, single thread, next to a
//! baseline of the same matrix products written directly with nalgebra, in one run:
//!
//! * the digits MLP 64 → 256 → 10 (ReLU), cross-entropy;
//! * a LeNet-style CNN on 1×28×28: conv 6@5×5 → ReLU → max pool 2 → conv 16@5×5 → ReLU → max
//!   pool 2 → flatten → dense 120 → ReLU → dense 84 → ReLU → dense 10.
//!
//! The baseline is only the GEMMs: per layer one forward (`W·X`; a convolution as one GEMM over
//! the whole batch's patches) and two backward (`dW = dY·Xᵀ` and `dX = Wᵀ·dY`, none for the
//! first layer's input, as lazynet skips it too), on preallocated matrices of the same shapes.
//! It has no bias, activation, im2col, pooling, loss or optimizer: the ratio says what all of
//! that, and lazynet's bookkeeping, cost on top of the arithmetic.
//! Criterion's throughput is samples, so it reports samples per second.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use lazynet::nalgebra::DMatrix;
use lazynet::prelude::*;
use std::hint::black_box;

const BATCH: usize = 64;

/// A layer's GEMMs: `(out, in, columns)` with `W` out × in and `X` in × columns.
struct Gemms {
    w: DMatrix<f32>,
    x: DMatrix<f32>,
    y: DMatrix<f32>,
    dw: DMatrix<f32>,
    dx: DMatrix<f32>,
    w_t: DMatrix<f32>,
    x_t: DMatrix<f32>,
    first: bool,
}

impl Gemms {
    fn new(out: usize, inp: usize, columns: usize, first: bool) -> Self {
        let f = |r: usize, c: usize| ((r * 31 + c * 17) % 13) as f32 / 13.0 - 0.5;
        Gemms {
            w: DMatrix::from_fn(out, inp, f),
            x: DMatrix::from_fn(inp, columns, f),
            y: DMatrix::zeros(out, columns),
            dw: DMatrix::zeros(out, inp),
            dx: DMatrix::zeros(inp, columns),
            w_t: DMatrix::from_fn(inp, out, f),
            x_t: DMatrix::from_fn(columns, inp, f),
            first,
        }
    }

    fn forward(&mut self) {
        self.y.gemm(1.0, &self.w, &self.x, 0.0);
    }

    /// `dW = dY·Xᵀ` and, but for the first layer, `dX = Wᵀ·dY` (with `dY` the output buffer).
    fn backward(&mut self) {
        self.dw.gemm(1.0, &self.y, &self.x_t, 0.0);
        if !self.first {
            self.dx.gemm(1.0, &self.w_t, &self.y, 0.0);
        }
    }
}

fn baseline_step(layers: &mut [Gemms]) {
    for l in layers.iter_mut() {
        l.forward();
    }
    for l in layers.iter_mut().rev() {
        l.backward();
    }
    black_box(&layers[0].dw);
}

fn mlp(c: &mut Criterion) {
    let mut net = Net::new()
        .push(Dense::<U256>::new())
        .push(Relu)
        .push(Dense::<U10>::new())
        .seed(1)
        .bind::<U64>();
    let mut rng = InitRng::new(2, "bench");
    let x = Batch::<U64>::from_fn(BATCH, |_, _| rng.uniform(0.0, 1.0));
    let labels = Labels::<U10>::try_new((0..BATCH).map(|s| s % 10).collect())
        .unwrap_or_else(|e| panic!("{e}"));
    let mut adam = Adam::new(1e-3);
    let mut sgd = Sgd::new(1e-2).momentum(0.9);
    let mut baseline = [
        Gemms::new(256, 64, BATCH, true),
        Gemms::new(10, 256, BATCH, false),
    ];

    let mut group = c.benchmark_group("train_mlp_64_256_10_b64");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("nalgebra_gemms", |b| {
        b.iter(|| baseline_step(&mut baseline))
    });
    group.bench_function("lazynet_adam", |b| {
        b.iter(|| {
            let (loss, grads) = net
                .loss_and_grads(black_box(&x), &labels, CrossEntropy)
                .unwrap_or_else(|e| panic!("{e}"));
            adam.step(&mut net, &grads)
                .unwrap_or_else(|e| panic!("{e}"));
            loss
        })
    });
    group.bench_function("lazynet_sgd_momentum", |b| {
        b.iter(|| {
            let (loss, grads) = net
                .loss_and_grads(black_box(&x), &labels, CrossEntropy)
                .unwrap_or_else(|e| panic!("{e}"));
            sgd.step(&mut net, &grads).unwrap_or_else(|e| panic!("{e}"));
            loss
        })
    });
    group.finish();
}

fn lenet(c: &mut Criterion) {
    let mut net = Net::new()
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
    let labels = Labels::<U10>::try_new((0..BATCH).map(|s| s % 10).collect())
        .unwrap_or_else(|e| panic!("{e}"));
    let mut adam = Adam::new(1e-3);
    // A convolution as one GEMM over the batch: out_c × (in_c·k·k) times (in_c·k·k) × pixels.
    let mut baseline = [
        Gemms::new(6, 25, 24 * 24 * BATCH, true),
        Gemms::new(16, 6 * 25, 8 * 8 * BATCH, false),
        Gemms::new(120, 256, BATCH, false),
        Gemms::new(84, 120, BATCH, false),
        Gemms::new(10, 84, BATCH, false),
    ];

    let mut group = c.benchmark_group("train_lenet_1x28x28_b64");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("nalgebra_gemms", |b| {
        b.iter(|| baseline_step(&mut baseline))
    });
    group.bench_function("lazynet_adam", |b| {
        b.iter(|| {
            let (loss, grads) = net
                .loss_and_grads(black_box(&x), &labels, CrossEntropy)
                .unwrap_or_else(|e| panic!("{e}"));
            adam.step(&mut net, &grads)
                .unwrap_or_else(|e| panic!("{e}"));
            loss
        })
    });
    group.finish();
}

criterion_group!(benches, mlp, lenet);
criterion_main!(benches);
