//! A layer written outside lazynet: `Gain`, a learnable gain per feature, `y = g ⊙ x`, whose
//! parameter `g` has the shape of the input, `(in,)`, known only once the net is bound (as the
//! weight of PyTorch's `LazyBatchNorm1d`).
//!
//! It implements lazynet's run-time traits ([`Layer`], [`Kernel`]) and states its shape class
//! with one macro line for the compile-time half; from then on it is checked, summarized,
//! initialized, trained, saved and loaded like the layers the crate ships, and
//! `Gain::new().with_input::<U4>()` declares its input size as `Dense` does.
//!
//! Run with `cargo run --example custom_layer`.

use std::error::Error;

use lazynet::layer::{Activation, Fault, Kernel, Layer, Param, PartialShape};
use lazynet::nalgebra::DMatrix;
use lazynet::prelude::*;

// ---------------------------------------------------------------------------------------------
// The layer.
// ---------------------------------------------------------------------------------------------

/// A learnable gain per feature: `y = g ⊙ x`, with `g` of shape `(in,)`, named
/// `{index}.weight` (as PyTorch names the gain of a batch or layer norm).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Gain;

impl Gain {
    /// A gain whose width is inferred when the net is bound.
    pub fn new() -> Self {
        Gain
    }
}

/// The run-time half: the kind, the shape rule, the parameter's shape, the computation.
impl Layer for Gain {
    fn kind(&self) -> &'static str {
        "Gain"
    }

    fn output_shape(&self, input: Option<&PartialShape>) -> Result<Option<PartialShape>, Fault> {
        match input.map(|i| i.0.as_slice()) {
            None => Ok(Some(PartialShape(vec![None]))), // flat, width not known yet: `(?,)`
            Some([_]) => Ok(input.cloned()),
            Some(_) => Err(Fault::Rank {
                needs: "a flat input",
                found: input.map(PartialShape::or_zero).unwrap_or_default(),
            }),
        }
    }

    fn param_shapes(&self, input: Option<&PartialShape>) -> Vec<(Role, PartialShape)> {
        // `(?,)` until the width is known; a 1-d parameter is stored as a column.
        let width = input.and_then(PartialShape::len);
        vec![(Role::Weight, PartialShape(vec![width]))]
    }

    fn kernel(&self, _input: &[usize], _output: &[usize]) -> Box<dyn Kernel> {
        Box::new(GainKernel)
    }
}

// The compile-time half: a flat input, an output of its width. An image reaching a gain is a
// compile error naming it; `with_input` (from the prelude) declares a width.
lazynet::shape_rule!(Gain, flat -> same);

/// The bound computation: forward `y = g ⊙ x`; backward `dg = Σ_samples dy ⊙ x`,
/// `dx = g ⊙ dy`. Every matrix holds one sample per column.
#[derive(Clone, Copy, Debug)]
struct GainKernel;

impl GainKernel {
    /// The gain, checked against the batch `x` and the buffers that must have its shape: a
    /// kernel called on its own with other shapes gets an error, not a panic.
    fn gain<'p>(
        params: &'p [Param],
        x: &DMatrix<f32>,
        like_x: &[(usize, usize)],
    ) -> Result<&'p [f32], ShapeError> {
        let contract = |detail: String| ShapeError::Contract {
            what: "a call to the Gain kernel".into(),
            detail,
        };
        let [g] = params else {
            return Err(contract(format!(
                "it takes 1 parameter, given {}",
                params.len()
            )));
        };
        let g = g.value().as_slice();
        if x.nrows() != g.len() || like_x.iter().any(|&s| s != x.shape()) {
            return Err(contract(format!(
                "a gain of {} values meets buffers of shapes {:?} and {like_x:?}",
                g.len(),
                x.shape()
            )));
        }
        Ok(g)
    }
}

impl Kernel for GainKernel {
    fn forward(
        &self,
        params: &[Param],
        x: &DMatrix<f32>,
        y: &mut DMatrix<f32>,
        _then: Activation, // always the identity: this kernel fuses no activation
    ) -> Result<(), ShapeError> {
        let g = Self::gain(params, x, &[y.shape()])?;
        for (y, x) in y.column_iter_mut().zip(x.column_iter()) {
            for ((y, x), g) in y.into_iter().zip(x.iter()).zip(g) {
                *y = g * x;
            }
        }
        Ok(())
    }

    fn backward(
        &self,
        params: &[Param],
        x: &DMatrix<f32>,
        _y: &DMatrix<f32>,
        dy: &DMatrix<f32>,
        grads: &mut [DMatrix<f32>],
        dx: Option<&mut DMatrix<f32>>,
    ) -> Result<(), ShapeError> {
        let mut shapes = vec![dy.shape()];
        shapes.extend(dx.as_ref().map(|dx| dx.shape()));
        let g = Self::gain(params, x, &shapes)?;
        let [dg] = grads else {
            return Err(ShapeError::Contract {
                what: "a call to the Gain kernel".into(),
                detail: format!("it takes 1 gradient, given {}", grads.len()),
            });
        };
        if dg.shape() != (g.len(), 1) {
            return Err(ShapeError::Contract {
                what: "a call to the Gain kernel".into(),
                detail: format!(
                    "the gradient is {:?}, the gain {} values",
                    dg.shape(),
                    g.len()
                ),
            });
        }
        for (x, dy) in x.column_iter().zip(dy.column_iter()) {
            *dg += x.component_mul(&dy);
        }
        if let Some(dx) = dx {
            for (mut dx, dy) in dx.column_iter_mut().zip(dy.column_iter()) {
                for ((dx, dy), g) in dx.iter_mut().zip(dy.iter()).zip(g) {
                    *dx = g * dy;
                }
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Using it.
// ---------------------------------------------------------------------------------------------

/// Gains 1.0 for the parameters named in `ones`, `rest` for every other one: the initializer
/// is registered before any shape is known and sees each parameter's name and shape at binding.
struct OnesFor<R> {
    ones: &'static [&'static str],
    rest: R,
}

impl<R: Initializer> Initializer for OnesFor<R> {
    fn init(&self, param: &ParamInfo<'_>, rng: &mut InitRng, values: &mut [f32]) {
        if self.ones.contains(&param.name()) {
            println!("  init {} {}: ones", param.name(), param.shape());
            values.fill(1.0);
        } else {
            println!("  init {} {}: Kaiming uniform", param.name(), param.shape());
            self.rest.init(param, rng, values);
        }
    }
}

/// Every parameter set to the values in `params`, one of them (`name`, at `index`) moved by
/// `delta`: for finite differences.
struct Nudged<'a> {
    params: &'a [(String, Vec<f32>)],
    name: &'a str,
    index: usize,
    delta: f32,
}

impl Initializer for Nudged<'_> {
    fn init(&self, param: &ParamInfo<'_>, _: &mut InitRng, values: &mut [f32]) {
        if let Some((_, v)) = self.params.iter().find(|(n, _)| n == param.name()) {
            values.copy_from_slice(v);
        }
        if param.name() == self.name {
            if let Some(v) = values.get_mut(self.index) {
                *v += self.delta;
            }
        }
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    // 1. Declared without an input size: the gain's weight is `(?,)` until binding.
    let decl = Net::new()
        .push(Gain::new())
        .push(Dense::<U16>::new())
        .push(Tanh)
        .push(Dense::<U1>::new())
        .initialize(OnesFor {
            ones: &["0.weight"],
            rest: KaimingUniform::default(),
        })
        .seed(3);
    println!("## 1. Declared\n\n{decl}\n");
    let first = decl.partial_shapes().into_iter().next();
    let first = first.map(|(name, shape)| format!("{name} {shape}"));
    assert_eq!(first.as_deref(), Some("0.weight (?,)"));

    // 2. Bound at compile time: the registered initializer runs, sees `0.weight (4,)`, and
    //    gives the gains 1.0.
    println!("## 2. Bound to 4 inputs\n");
    let mut net = decl.clone().bind::<U4>();
    println!("\n{net}\n");
    let gains = |net: &Net<Init<U4>, _>| -> Vec<f32> {
        net.named_params()
            .find(|(name, _)| *name == "0.weight")
            .map(|(_, g)| g.as_slice().to_vec())
            .unwrap_or_default()
    };
    assert_eq!(gains(&net), [1.0; 4]);

    // The output type follows from the layers, the gain included:
    let x = Batch::<U4>::from_fn(3, |f, s| (f + s) as f32);
    let _y: Batch<U1> = net.forward(&x);
    // Each of these is a compile error (messages as rustc 1.95 prints them):
    //
    //   let _y: Batch<U4> = net.forward(&x);
    //   // error[E0308]: mismatched types: the net outputs `Batch<U1>`
    //
    //   Net::new().push(Dense::<U8>::new()).push(Gain::new().with_input::<U4>());
    //   // error[E0277]: shape mismatch: a layer declares Num<_4> inputs but the layer before
    //   //               it outputs Num<_8>
    //
    //   Net::new().push(Gain::new().with_input::<U4>()).push(Dense::<U1>::new()).bind::<U5>();
    //   // error[E0277]: shape mismatch: a layer declares Num<_4> inputs but the net is bound
    //   //               to Num<_5> inputs
    //
    //   Net::new().push(Conv2d::<U4, U3>::new()).push(Gain::new()).bind::<Image<U1, U8, U8>>();
    //   // error[E0277]: `Gain` needs a flat input, but receives an image
    //
    // while a declared width that agrees compiles:
    let _fits = Net::new()
        .push(Dense::<U8>::new())
        .push(Gain::new().with_input::<U8>())
        .bind::<U4>();

    // 3. Checked at run time by `try_bind` when a size is known only then.
    println!("## 3. Checked at try_bind\n");
    let declared = Net::new()
        .push(Gain::new().with_input_size(4))
        .push(Dense::<U1>::new());
    let err = declared
        .try_bind(3)
        .err()
        .ok_or("a gain declaring 4 inputs bound to 3")?;
    println!("  try_bind(3) on a gain declaring 4 inputs: {err}");
    assert_eq!(
        err,
        ShapeError::LayerInput {
            layer: 0,
            kind: "Gain",
            expected: 4,
            actual: 3
        }
    );
    assert!(declared.try_bind(4).is_ok());
    println!(
        "  try_bind(4): {:?}\n",
        declared.try_bind(4)?.param_shapes()
    );

    // 4. The backward pass agrees with finite differences of the loss.
    println!("## 4. Gradient of the gains against finite differences\n");
    // Features on very different scales; the target mixes them.
    let mut state = 0x9e37_79b9_u32;
    let mut uniform = move || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        2.0 * (state as f32 / u32::MAX as f32) - 1.0
    };
    let scales = [10.0, 1.0, 0.1, 1.0];
    let samples: Vec<[f32; 4]> = (0..256)
        .map(|_| [uniform(), uniform(), uniform(), uniform()])
        .collect();
    let targets: Vec<f32> = samples
        .iter()
        .map(|u| (u[0] + 2.0 * u[1] * u[3] - u[2]).tanh())
        .collect();
    let rows: Vec<f32> = samples
        .iter()
        .flat_map(|u| u.iter().zip(scales).map(|(u, s)| u * s))
        .collect();
    let x = Batch::<U4>::from_rows(rows)?;
    let t = Batch::<U1>::from_rows(targets)?;

    let (_, grads) = net.loss_and_grads(&x, &t, Mse)?;
    let dg = grads.get("0.weight").ok_or("no gradient for the gains")?;
    let params: Vec<(String, Vec<f32>)> = net
        .named_params()
        .map(|(n, v)| (n.to_string(), v.as_slice().to_vec()))
        .collect();
    let mut probe = decl.clone().initialize(Zeros).bind::<U4>();
    let h = 1e-2;
    for (i, &analytic) in dg.iter().enumerate() {
        let mut loss_at = |delta| -> Result<f32, Box<dyn Error>> {
            probe.reinitialize(Nudged {
                params: &params,
                name: "0.weight",
                index: i,
                delta,
            })?;
            Ok(probe.evaluate(&x, &t, Mse)?.0)
        };
        let numeric = (loss_at(h)? - loss_at(-h)?) / (2.0 * h);
        println!("  d loss / d g[{i}]: backward {analytic:+.6}, finite differences {numeric:+.6}");
        assert!(
            (analytic - numeric).abs() <= 1e-3 + 1e-2 * numeric.abs(),
            "gain {i}: {analytic} vs {numeric}"
        );
    }

    // 5. It trains: Adam moves the gains with the rest, and the loss falls.
    println!("\n## 5. Training\n");
    let fit = Fit::new(200).batch_size(32).seed(0).quiet();
    let history = net.fit(&x, &t, Mse, &mut Adam::new(1e-2), &fit)?;
    let first = history.epochs().first().ok_or("no epoch")?.loss;
    let last = history.last().ok_or("no epoch")?.loss;
    println!(
        "  loss: epoch 1 {first:.4}, epoch {} {last:.4}",
        history.epochs().len()
    );
    // Feature 0 arrives 10 times too large and feature 2 10 times too small: their gains
    // move to undo part of that.
    println!("  gains after training: {:?}", gains(&net));
    assert!(
        last < first / 10.0,
        "the loss fell only from {first} to {last}"
    );
    assert_ne!(gains(&net), [1.0; 4], "the gains did not train");

    // 6. Saved and loaded: the same parameters, bit for bit.
    println!("\n## 6. Saved and loaded\n");
    let path =
        std::env::temp_dir().join(format!("lazynet-gain-{}.safetensors", std::process::id()));
    net.save(&path)?;
    let result = (|| -> Result<(), Box<dyn Error>> {
        let loaded = decl.load_bound::<U4>(&path)?;
        assert!(loaded.named_params().eq(net.named_params()));
        assert_eq!(loaded.forward(&x).as_matrix(), net.forward(&x).as_matrix());
        println!(
            "  {}: load_bound::<U4> gives the same parameters and outputs",
            path.display()
        );
        // `load_infer` reads the input size from the second size of the first weight, where a
        // dense weight `(out, in)` holds it; a gain's weight `(in,)` has none, and a layer
        // cannot tell it where else to look, so a net that starts with a gain is loaded with
        // `load_bound` (or `try_bind` and `load`).
        match decl.load_infer(&path) {
            Ok(net) => println!("  load_infer: input size {}", net.input().0),
            Err(err) => println!("  load_infer cannot infer the input from a gain: {err}"),
        }
        Ok(())
    })();
    std::fs::remove_file(&path)?;
    result
}
