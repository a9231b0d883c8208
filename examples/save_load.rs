//! Weights in and out of safetensors files: bind, save, load into a fresh declaration that
//! states no input size, and what a file of the wrong shape says.
//!
//! Run it with `cargo run --example save_load`.

use lazynet::prelude::*;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("mlp.safetensors");

    // 1. Declare, bind to 20 inputs, save.
    println!("## 1. Bind Dense(256) -> Relu -> Dense(10) to 20 inputs and save it\n");
    let decl = Net::new()
        .push(Dense::<U256>::new())
        .push(Relu)
        .push(Dense::<U10>::new())
        .initialize(XavierUniform::default())
        .seed(42);
    let net = decl.clone().bind::<U20>();
    net.save(&path)?;

    let weights = Weights::read(&path)?;
    println!(
        "  {} ({} bytes)",
        path.display(),
        std::fs::metadata(&path)?.len()
    );
    for name in weights.names() {
        if let Some(t) = weights.get(name) {
            println!("    {name:<9} {} {:?}", t.dtype(), t.shape());
        }
    }
    for key in ["format", "library", "version"] {
        println!(
            "    metadata {key} = {}",
            weights.metadata(key).unwrap_or("-")
        );
    }

    // 2. A fresh declaration, no input size anywhere: the file supplies it.
    println!("\n## 2. Load into a fresh declaration without an input size\n");
    let fresh = Net::new()
        .push(Dense::<U256>::new())
        .push(Relu)
        .push(Dense::<U10>::new());
    for (name, shape) in fresh.partial_shapes() {
        println!("  before loading: {name} {shape}");
    }
    let loaded = fresh.load_infer(&path)?;
    println!("  inferred input size: {}", loaded.input().0);
    println!("  shapes: {:?}", loaded.param_shapes());

    let x = Batch::<U20>::from_fn(3, |f, s| ((f * 7 + s * 3) % 11) as f32 / 11.0 - 0.5);
    let y = net.forward(&x);
    let y_loaded = loaded.try_forward(&x.into_dyn())?;
    println!(
        "  same output as the saved net, bit for bit: {}",
        y.as_matrix() == y_loaded.as_matrix()
    );

    // The static path checks the file against a size the compiler knows.
    let bound = fresh.load_bound::<U20>(&path)?;
    println!("  load_bound::<U20>: {:?}", bound.param_shapes()[0]);

    // 3. Files that do not fit: an error that names the tensor and both shapes.
    println!("\n## 3. Files that do not fit\n");
    let wide = Net::new()
        .push(Dense::<U128>::new())
        .push(Relu)
        .push(Dense::<U10>::new())
        .bind::<U20>();
    let wrong = dir.path().join("wrong.safetensors");
    wide.save(&wrong)?;
    match fresh.load_infer(&wrong) {
        Ok(_) => println!("  unexpectedly loaded {}", wrong.display()),
        Err(err) => println!("  a 128-wide file into the 256-wide declaration:\n    {err}"),
    }

    let thirty = dir.path().join("thirty.safetensors");
    fresh.clone().bind::<U30>().save(&thirty)?;
    let mut held = decl.bind::<U20>();
    let before = held.save_to_bytes()?;
    match held.load(&thirty) {
        Ok(()) => println!("  unexpectedly loaded a 30-input file"),
        Err(err) => println!("  a 30-input file into a net bound to 20:\n    {err}"),
    }
    println!(
        "  the net is unchanged after the failed load: {}",
        held.save_to_bytes()? == before
    );

    let mut cut = std::fs::read(&path)?;
    cut.truncate(cut.len() - 100);
    match held.load_from_bytes(&cut) {
        Ok(()) => println!("  unexpectedly loaded a truncated file"),
        Err(err) => println!("  a file cut 100 bytes short:\n    {err}"),
    }
    Ok(())
}
