//! The d2l.ai "Lazy Initialization" chapter, in Rust, step by step.
//!
//! Run it with `cargo run --example quickstart`.

use lazynet::nalgebra::DMatrix;
use lazynet::prelude::*;

/// MXNet's `MyInit` from the chapter: reports each parameter, then draws from U(-10, 10) and
/// zeroes every value below 5 in magnitude.
struct MyInit;

impl Initializer for MyInit {
    fn init(&self, param: &ParamInfo<'_>, rng: &mut InitRng, values: &mut [f32]) {
        println!("Init {} {}", param.name(), param.shape());
        for v in values {
            let x = rng.uniform(-10.0, 10.0);
            *v = if x.abs() >= 5.0 { x } else { 0.0 };
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // 1. Declare an MLP without any input size.
    println!("## 1. Declare: Dense(256) -> Relu -> Dense(10), no input size anywhere\n");
    let decl = Net::new()
        .push(Dense::<U256>::new())
        .push(Relu)
        .push(Dense::<U10>::new());

    // 2. The parameters do not exist yet; their shapes are partly known.
    println!("## 2. Before binding, no parameter exists; shapes so far:\n");
    for (name, shape) in decl.partial_shapes() {
        println!("  {name} {shape}");
    }
    println!("\n  (2.weight is already known: layer 0 fixes its output at 256)");
    println!("  (reading parameter values now does not compile: ui-tests/unbound/parameters_do_not_exist_before_binding.rs)\n");
    println!("{decl}\n");

    // 3. Register an initializer before any shape is known: nothing runs.
    println!("## 3. Register MyInit: nothing is initialized yet\n");
    let decl = decl.initialize(MyInit).seed(42);
    println!("  (no `Init` line printed above)\n");

    // 4. Bind the input size 20, statically and, for a second net, at run time.
    println!("## 4. Bind to 20 inputs at compile time: the initializer runs once per parameter\n");
    let net = decl.clone().bind::<U20>();
    println!("\n  shapes: {:?}\n", net.param_shapes());

    println!("## 4b. Bind a second net to 20 inputs at run time (a Result)\n");
    let dyn_net = decl.try_bind(20)?;
    println!("\n  shapes: {:?}", dyn_net.param_shapes());
    let same = net
        .named_params()
        .zip(dyn_net.named_params())
        .all(|((_, a), (_, b))| a == b);
    println!("  same seed, same weights, bit for bit: {same}\n");
    println!("{net}\n");

    // 5. Forward passes: nothing is initialized again.
    println!("## 5. Forward on a batch of 2 random inputs (features x samples)\n");
    let mut rng = InitRng::new(7, "inputs");
    let x = Batch::<U20>::from_fn(2, |_, _| rng.uniform(0.0, 1.0));
    let y: Batch<U10> = net.forward(&x);
    println!(
        "  y (one row per sample) = {:.1}",
        y.as_matrix().transpose()
    );
    let y_again = net.forward(&x);
    println!(
        "  again, no `Init` line and the same output: {}\n",
        y_again == y
    );

    println!("## 5b. Force a re-initialization with another initializer\n");
    let mut net = net;
    net.reinitialize(Normal::new(0.0, 0.01)?)?;
    let (name, w) = net
        .named_params()
        .next()
        .ok_or("the net has no parameters")?;
    println!(
        "  {name}[0, 0..3] after Normal(0, 0.01): {:?}\n",
        &w.row(0).iter().take(3).collect::<Vec<_>>()
    );

    // PyTorch style: the first batch fixes the input size.
    println!("## 5c. PyTorch style: the first batch binds the net\n");
    let (lazy_net, y0) = decl.clone().initialize(DefaultInit).forward_init(&x);
    println!(
        "  bound to {} inputs by its first batch; output {}x{}\n",
        lazy_net.input().size(),
        y0.features().size(),
        y0.samples()
    );

    // 6. The chapter's exercises.
    println!("## Exercise 1: a net whose first layer declares its input size needs no bind\n");
    let eager = Net::new()
        .push(Dense::<U256>::with_input::<U20>())
        .push(Relu)
        .push(Dense::<U10>::new())
        .initialize(MyInit)
        .seed(42)
        .build();
    println!("\n  (the Init lines above come from `.build()`: no input size was named again)");
    let eager_same = eager
        .named_params()
        .zip(dyn_net.named_params())
        .all(|((_, a), (_, b))| a == b);
    println!(
        "  shapes: {:?}; weights equal to the lazily bound net's: {eager_same}\n",
        eager.param_shapes()
    );

    println!("## Exercise 2: mismatched sizes\n");
    let mismatched = Net::new()
        .push(Dense::dynamic(256))
        .push(Relu)
        .push(Dense::<U10>::with_input::<U30>());
    match mismatched.try_bind(20) {
        Ok(_) => println!("  unexpectedly bound"),
        Err(e) => println!("  run time: Err(\"{e}\")"),
    }
    let wrong_batch = DMatrix::<f32>::zeros(30, 2);
    match dyn_net.try_forward_matrix(&wrong_batch) {
        Ok(_) => println!("  unexpectedly ran"),
        Err(e) => println!("  run time: Err(\"{e}\")"),
    }
    println!("  compile time: see ui-tests/mismatch/*.rs and their .stderr snapshots, e.g.");
    println!("    error[E0277]: shape mismatch: a layer declares Num<_3, _0> inputs but the layer before it outputs Num<_2, _5, _6>\n");

    println!("## Exercise 3: varying input sizes\n");
    let net20 = decl.clone().initialize(DefaultInit).bind::<U20>();
    let net30 = decl.clone().initialize(DefaultInit).bind::<U30>();
    println!(
        "  one declaration bound to 20 and to 30 inputs: {:?} / {:?}",
        net20.param_shapes()[0],
        net30.param_shapes()[0]
    );
    let shared = net20
        .named_params()
        .zip(net30.named_params())
        .filter(|((_, a), (_, b))| a == b)
        .map(|((n, _), _)| n)
        .collect::<Vec<_>>();
    println!("  parameters equal in both (neither their shapes nor their initial draws depend on the input): {shared:?}");
    let mut sizes = Vec::new();
    for n in [4, 20, 64] {
        let x = Batch::<Dyn>::from_fn_dyn(n, 1, |f, _| f as f32);
        let (net, y) = decl.clone().initialize(DefaultInit).forward_init(&x)?;
        sizes.push((net.input().size(), y.features().size()));
    }
    println!("  run-time sizes from data, one net each: {sizes:?}\n");

    // The hint: parameter tying. First d2l's own example, one layer used twice.
    println!("## Exercise 3, the hint: parameter tying (d2l's `shared = nn.LazyLinear(8)`)\n");
    let shared = Shared::new(Dense::<U8>::new());
    let mut tied = Net::new()
        .push(Dense::<U8>::new())
        .push(Relu)
        .push(shared.clone())
        .push(Relu)
        .push(shared.clone())
        .push(Relu)
        .push(Dense::<U1>::new())
        .seed(1)
        .bind::<U4>();
    println!("{tied}\n");
    let x4 = Batch::<U4>::from_fn(8, |f, s| ((f + 3 * s) % 7) as f32 / 7.0);
    let t = Batch::<U1>::from_fn(8, |_, s| (s % 2) as f32);
    let (_, grads) = tied.loss_and_grads(&x4, &t, Mse)?;
    let g = grads
        .get("2.weight")
        .ok_or("no gradient for the tied weight")?;
    println!(
        "  one gradient for the tied weight, the sum over both places: |d 2.weight| = {:.4}",
        g.norm()
    );
    let tied_weight = |net: &Net<Init<U4>, _>| {
        net.named_params()
            .find(|(n, _)| *n == "2.weight")
            .map(|(_, w)| w.clone())
    };
    let before = tied_weight(&tied);
    Sgd::new(0.1).step(&mut tied, &grads)?;
    println!(
        "  one SGD step changed 2.weight: {}; places 2 and 4 both compute with it\n",
        tied_weight(&tied) != before
    );

    // Then the exercise: inputs of 4 and 7 features, each through its own stem, into one
    // trunk whose parameters serve both.
    println!("## Exercise 3, answered: one trunk for inputs of 4 and of 7 features\n");
    let trunk = Net::new()
        .push(Dense::<U16>::new())
        .push(Relu)
        .push(Dense::<U1>::new())
        .seed(2);
    let stems = Stems::new()
        .stem::<U4, _>(Net::new().push(Dense::<U16>::new()).push(Relu))
        .stem::<U7, _>(Net::new().push(Dense::<U16>::new()).push(Relu));
    let mut net = trunk.bind_stems(stems)?;
    let names: Vec<&str> = net.named_params().map(|(n, _)| n).collect();
    println!("  parameters: {names:?}");
    let x7 = Batch::<U7>::from_fn(8, |f, s| ((f * s) % 5) as f32 / 5.0);
    let mut adam = Adam::new(1e-2);
    for _ in 0..50 {
        let (_, g4) = net.loss_and_grads(&x4, &t, Mse)?;
        adam.step(&mut net, &g4)?;
        let (_, g7) = net.loss_and_grads(&x7, &t, Mse)?;
        adam.step(&mut net, &g7)?;
    }
    let (l4, _) = net.loss_and_grads(&x4, &t, Mse)?;
    let (l7, _) = net.loss_and_grads(&x7, &t, Mse)?;
    println!(
        "  after 50 steps on each size: loss {l4:.4} on 4 features, {l7:.4} on 7; Adam stepped trunk.0.weight {} times, stems.4.0.weight {}, stems.7.0.weight {}",
        adam.steps("trunk.0.weight"),
        adam.steps("stems.4.0.weight"),
        adam.steps("stems.7.0.weight")
    );
    let _: Batch<U1> = net.forward(&x4);
    let _: Batch<U1> = net.forward(&x7);
    println!("  a batch of 5 features does not compile (ui-tests/compose/batch_of_a_size_without_a_stem.rs);");
    let five = Batch::<Dyn>::from_fn_dyn(5, 1, |_, _| 0.0);
    match net.try_forward(&five) {
        Ok(_) => println!("  unexpectedly ran"),
        Err(e) => println!("  at run time: Err(\"{e}\")"),
    }
    Ok(())
}
