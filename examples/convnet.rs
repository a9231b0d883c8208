//! A convolutional net declared once, without its input size, and bound to two image sizes:
//! every layer's shape is computed by the compiler. Then the same declaration bound at run time,
//! and the error for an image too small for its kernels.
//!
//! Run with `cargo run --example convnet`.

use lazynet::prelude::*;

fn main() -> Result<(), ShapeError> {
    // Declared once: each layer states what it produces, not what it receives.
    let decl = Net::new()
        .push(Conv2d::<U16, U3>::new().padding::<U1>()) // out channels, kernel; stride 1
        .push(Relu)
        .push(MaxPool2d::<U2>::new()) // kernel 2, stride = kernel
        .push(Conv2d::<U32, U3>::new())
        .push(Relu)
        .push(Flatten)
        .push(Dense::<U10>::new())
        .seed(7);
    println!("{decl}\n");

    // Bound to 1×28×28 at compile time: 28 → 28 (padding 1) → 14 (pool) → 12 (3×3) → 32·12·12.
    let net = decl.clone().bind::<Image<U1, U28, U28>>();
    println!("{net}\n");

    // The same declaration bound to 3×32×32: another type, other shapes, also checked.
    let net32 = decl.clone().bind::<Image<U3, U32, U32>>();
    println!("{net32}\n");

    // A forward pass on a batch of 4 random images; the output type is `Batch<U10>`.
    let mut state = 0x2545_f491_u32;
    let mut noise = move || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        state as f32 / u32::MAX as f32
    };
    let images = Batch::<Image<U1, U28, U28>>::from_fn(4, |_, _| noise());
    let scores: Batch<U10> = net.forward(&images);
    println!(
        "scores of the first image: {:?}\n",
        scores.sample(0).unwrap_or(&[])
    );

    // Run time: the image size is read, not typed, and every check returns a `Result`.
    let dyn_net = decl.try_bind(Image::dynamic(1, 28, 28))?;
    let same = dyn_net.try_forward(&images)?;
    println!(
        "run-time binding gives the same scores: {}\n",
        same.as_matrix() == scores.as_matrix()
    );

    // An image too small for the kernels is an error that names the layer and the numbers.
    match decl.try_bind(Image::dynamic(1, 4, 4)) {
        Ok(_) => println!("unexpected: a 4×4 image was accepted"),
        Err(err) => println!("1×4×4: {err}"),
    }
    Ok(())
}
