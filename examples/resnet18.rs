//! ResNet-18 as torchvision defines it, declared on one page and bound to 3×224×224 images at
//! compile time. Given a state_dict saved by PyTorch (torchvision's own names) and an input
//! file, it writes the logits.
//!
//! ```sh
//! cargo run --release --example resnet18
//! cargo run --release --example resnet18 -- --weights resnet18.safetensors --input x.safetensors --output y.safetensors
//! ```
//!
//! `x.safetensors` holds `x`, f32 of shape (N, 3, 224, 224) as PyTorch lays it out; the logits
//! are written as `y`, f32 (N, 1000). `examples/resnet18_reference.py` makes such files with
//! PyTorch and compares the logits.

use std::error::Error;
use std::time::Instant;

use lazynet::layer::Activation;
use lazynet::prelude::*;

/// torchvision's `BasicBlock` with `C` channels: `relu(bn2(conv2(relu(bn1(conv1(x))))) + x)`.
/// With `down`, its first convolution has stride 2 and the shortcut is `downsample`: a
/// strided 1×1 convolution and a batch normalization.
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
        .names(["conv1", "bn1", "relu", "conv2", "bn2"])
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
        .names(["conv1", "bn1", "relu", "conv2", "bn2"])
        .then(Activation::Relu)
    };
}

/// torchvision's `layerN`: two basic blocks, the first one downsampling with `down`.
macro_rules! stage {
    ($c:ty) => {
        Sequential::new(Net::new().push(basic_block!($c)).push(basic_block!($c)))
    };
    ($c:ty, down) => {
        Sequential::new(
            Net::new()
                .push(basic_block!($c, down))
                .push(basic_block!($c)),
        )
    };
}

/// The command line: `--weights`, `--input`, `--output`, each a path.
#[derive(Default)]
struct Args {
    weights: Option<String>,
    input: Option<String>,
    output: Option<String>,
}

fn args() -> Result<Args, String> {
    let mut args = Args::default();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let slot = match flag.as_str() {
            "--weights" => &mut args.weights,
            "--input" => &mut args.input,
            "--output" => &mut args.output,
            other => {
                return Err(format!(
                    "unknown argument {other:?}; use --weights, --input, --output"
                ))
            }
        };
        *slot = Some(it.next().ok_or_else(|| format!("{flag} needs a path"))?);
    }
    Ok(args)
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = args()?;
    // 224 → 112 (conv1, stride 2) → 56 (maxpool) → 56, 28, 14, 7 (layer1–4) → 1 (avgpool).
    let resnet18 = Net::new()
        .push(
            Conv2d::<U64, U7>::new()
                .stride::<U2>()
                .padding::<U3>()
                .without_bias(),
        )
        .push(BatchNorm::new())
        .push(Relu)
        .push(MaxPool2d::<U3>::new().stride::<U2>().padding::<U1>())
        .push(stage!(U64))
        .push(stage!(U128, down))
        .push(stage!(U256, down))
        .push(stage!(U512, down))
        .push(AvgPool2d::<U7>::new())
        .push(Flatten)
        .push(Dense::<U1000>::new())
        .names([
            "conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool",
            "flatten", "fc",
        ]);
    let mut net = resnet18.bind::<Image<U3, U224, U224>>();
    println!("{net}");

    let Some(weights) = &args.weights else {
        println!("\nno --weights given: nothing to run (see the top of examples/resnet18.rs)");
        return Ok(());
    };
    net.load(weights)?;
    println!("loaded {weights}");
    let Some(input) = &args.input else {
        return Ok(());
    };
    let file = Weights::read(input)?;
    let x = file
        .get("x")
        .ok_or_else(|| format!("{input} has no tensor `x`"))?;
    if !matches!(x.shape(), [_, 3, 224, 224]) {
        return Err(format!(
            "{input}: `x` has shape {:?}, but ResNet-18 takes (N, 3, 224, 224) as PyTorch lays it out",
            x.shape()
        )
        .into());
    }
    // PyTorch's (N, 3, 224, 224) is one sample after another, each in C, H, W order: a batch's
    // rows.
    let batch = Batch::<Image<U3, U224, U224>>::from_rows(x.to_f32()?)?;
    let start = Instant::now();
    let y = net.forward(&batch);
    println!(
        "forward pass of {} image(s): {:.1} ms",
        batch.samples(),
        start.elapsed().as_secs_f64() * 1e3
    );
    // Samples are columns: (1000, N) here, (N, 1000) row-major in the file.
    let logits = y.as_matrix().transpose();
    let mut bytes = Vec::with_capacity(logits.len() * 4);
    // Row-major: sample by sample.
    for row in logits.row_iter() {
        for v in row.iter() {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
    }
    let Some(output) = &args.output else {
        let first: Vec<f32> = logits
            .row_iter()
            .next()
            .into_iter()
            .flatten()
            .take(5)
            .copied()
            .collect();
        println!("first logits of the first image: {first:?}");
        return Ok(());
    };
    let view = safetensors::tensor::TensorView::new(
        safetensors::Dtype::F32,
        vec![batch.samples(), 1000],
        &bytes,
    )?;
    safetensors::serialize_to_file([("y", view)], None, output.as_ref())?;
    println!("wrote the logits to {output}");
    Ok(())
}
