//! ResNet-18 (torchvision's, 1000 classes) inference on one 3×224×224 image, the library's
//! threading as built (one thread without the `threading` feature). PyTorch's time for the
//! same work on the same machine comes from `examples/resnet18_reference.py time`.

use criterion::{criterion_group, criterion_main, Criterion};
use lazynet::init::InitRng;
use lazynet::layer::Activation;
use lazynet::prelude::*;
use std::hint::black_box;

macro_rules! basic_block {
    ($c:ty) => {
        Residual::new(
            Net::new()
                .push(Conv2d::<$c, U3>::new().padding::<U1>().without_bias())
                .push(BatchNorm::new())
                .push(Relu)
                .push(Conv2d::<$c, U3>::new().padding::<U1>().without_bias())
                .push(BatchNorm::new()),
        )
        .then(Activation::Relu)
    };
    ($c:ty, down) => {
        Residual::with_projection(
            Net::new()
                .push(
                    Conv2d::<$c, U3>::new()
                        .stride::<U2>()
                        .padding::<U1>()
                        .without_bias(),
                )
                .push(BatchNorm::new())
                .push(Relu)
                .push(Conv2d::<$c, U3>::new().padding::<U1>().without_bias())
                .push(BatchNorm::new()),
            Net::new()
                .push(Conv2d::<$c, U1>::new().stride::<U2>().without_bias())
                .push(BatchNorm::new()),
        )
        .then(Activation::Relu)
    };
}

fn resnet18(c: &mut Criterion) {
    let net = Net::new()
        .push(
            Conv2d::<U64, U7>::new()
                .stride::<U2>()
                .padding::<U3>()
                .without_bias(),
        )
        .push(BatchNorm::new())
        .push(Relu)
        .push(MaxPool2d::<U3>::new().stride::<U2>().padding::<U1>())
        .push(basic_block!(U64))
        .push(basic_block!(U64))
        .push(basic_block!(U128, down))
        .push(basic_block!(U128))
        .push(basic_block!(U256, down))
        .push(basic_block!(U256))
        .push(basic_block!(U512, down))
        .push(basic_block!(U512))
        .push(AvgPool2d::<U7>::new())
        .push(Flatten)
        .push(Dense::<U1000>::new())
        .seed(1)
        .bind::<Image<U3, U224, U224>>();
    let mut rng = InitRng::new(2, "bench");
    let x = Batch::<Image<U3, U224, U224>>::from_fn(1, |_, _| rng.uniform(-1.0, 1.0));
    let mut group = c.benchmark_group("resnet18_224");
    group.sample_size(20);
    group.bench_function("inference_batch_1", |b| {
        b.iter(|| net.forward(black_box(&x)))
    });
    group.finish();
}

criterion_group!(benches, resnet18);
criterion_main!(benches);
