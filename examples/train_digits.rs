//! Handwritten digits, end to end: read the UCI 8×8 digits (vendored in `data/`), split them
//! 80/20 per class, train a multilayer perceptron and a small convolutional net with Adam,
//! report their test accuracy, save the weights, load them into fresh declarations, and draw
//! the training curves as an SVG.
//!
//! Run with `cargo run --release --example train_digits` (one seed per model), or
//! `cargo run --release --example train_digits -- --seeds 5` to train each model from five
//! seeds and print the median test accuracy; it fails when a median is below its goal (97.5 %
//! for the MLP, 98.5 % for the CNN). CI runs it so.

mod common;

use std::error::Error;
use std::path::Path;

use common::{
    median, read_digits, seeds_from_args, stratified_split, Data, Digit, Settings, SPLIT_SEED,
    TEST_FRACTION,
};
use lazynet::list::Chain;
use lazynet::prelude::*;
use lazynet::rules::Width;
use lazynet::train::TargetFor;
use lazynet::BindTo;
use plotters::prelude::*;

const MLP: Settings = Settings {
    epochs: 60,
    batch_size: 16,
    lr: 3e-3,
};

const CNN: Settings = Settings {
    epochs: 40,
    batch_size: 16,
    lr: 4e-3,
};

fn main() -> Result<(), Box<dyn Error>> {
    let seeds = seeds_from_args()?;
    let start = std::time::Instant::now();

    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/digits.csv.gz");
    let digits = read_digits(&path)?;
    let (train, test) = stratified_split(&digits.labels, TEST_FRACTION, SPLIT_SEED);
    println!(
        "{} images from {}: {} to train on, {} to test on (stratified 80/20, seed {SPLIT_SEED})",
        digits.labels.len(),
        path.display(),
        train.len(),
        test.len()
    );
    let out = std::env::temp_dir();

    // The multilayer perceptron: 64 → 256 → 10. No input size is declared; binding to `U64`
    // gives the first weight its shape (256, 64).
    let mlp = Net::new()
        .push(Dense::<U256>::new())
        .push(Relu)
        .push(Dense::<U10>::new());
    let data = Data::<U64>::new(&digits, &train, &test)?;
    println!("\n## MLP 64 → 256 → 10, {MLP}\n\n{mlp}\n");
    let mut mlp_runs = Vec::new();
    for seed in 0..seeds {
        let run = train_and_test(&mlp, &data, MLP, seed, seed > 0)?;
        if seeds > 1 {
            println!("seed {seed}: test accuracy {:.2}%", 100.0 * run.accuracy);
        }
        mlp_runs.push(run);
    }
    let mlp_run = mlp_runs.first().ok_or("no seed to train")?;
    println!("test accuracy: {:.2}%", 100.0 * mlp_run.accuracy);

    // Saved, then loaded into the declaration, which states no input size: `load_infer`
    // reads 64 from the shape of `0.weight`.
    let mlp_path = out.join("lazynet-digits-mlp.safetensors");
    mlp_run.net.save(&mlp_path)?;
    let reloaded = mlp.load_infer(&mlp_path)?;
    let (_, again) = reloaded.evaluate(&data.test_x, &data.test_y, CrossEntropy)?;
    let again = again.ok_or("no accuracy for labels")?;
    println!(
        "saved to {}; loaded with load_infer (input size {} read from the file): test accuracy {:.2}%",
        mlp_path.display(),
        reloaded.input().0,
        100.0 * again
    );
    assert!(reloaded.named_params().eq(mlp_run.net.named_params()));
    assert_eq!(
        again, mlp_run.accuracy,
        "the reloaded MLP scores differently"
    );

    // The convolutional net, on the images as images: 1×8×8 → 16×8×8 → 16×4×4 → 32×4×4 →
    // 32×2×2 → 128 → 10, every size computed by the compiler at `bind`.
    let cnn = Net::new()
        .push(Conv2d::<U16, U3>::new().padding::<U1>())
        .push(Relu)
        .push(MaxPool2d::<U2>::new())
        .push(Conv2d::<U32, U3>::new().padding::<U1>())
        .push(Relu)
        .push(MaxPool2d::<U2>::new())
        .push(Flatten)
        .push(Dense::<U10>::new());
    let data = Data::<Digit>::new(&digits, &train, &test)?;
    println!("\n## CNN on 1×8×8 images, {CNN}\n\n{cnn}\n");
    let mut cnn_runs = Vec::new();
    for seed in 0..seeds {
        let run = train_and_test(&cnn, &data, CNN, seed, seed > 0)?;
        if seeds > 1 {
            println!("seed {seed}: test accuracy {:.2}%", 100.0 * run.accuracy);
        }
        cnn_runs.push(run);
    }
    let cnn_run = cnn_runs.first().ok_or("no seed to train")?;
    println!("test accuracy: {:.2}%", 100.0 * cnn_run.accuracy);

    // `load_infer` binds to a flat input of the width the first weight gives, and a
    // convolution takes only images (`cnn.load_infer(…)` does not compile); a file gives the
    // channels (`0.weight` is (16, 1, 3, 3)) but not the height and width. So the image shape
    // is named and checked by the compiler, as by `bind`.
    let cnn_path = out.join("lazynet-digits-cnn.safetensors");
    cnn_run.net.save(&cnn_path)?;
    let reloaded = cnn.load_bound::<Digit>(&cnn_path)?;
    let (_, again) = reloaded.evaluate(&data.test_x, &data.test_y, CrossEntropy)?;
    let again = again.ok_or("no accuracy for labels")?;
    println!(
        "saved to {}; loaded with load_bound::<Image<U1, U8, U8>>: test accuracy {:.2}%",
        cnn_path.display(),
        100.0 * again
    );
    assert!(reloaded.named_params().eq(cnn_run.net.named_params()));
    assert_eq!(
        again, cnn_run.accuracy,
        "the reloaded CNN scores differently"
    );

    let svg = out.join("lazynet-digits-curves.svg");
    plot_curves(
        &svg,
        &[("MLP", &mlp_run.history), ("CNN", &cnn_run.history)],
    )?;
    println!("\ntraining curves: {}", svg.display());

    if seeds > 1 {
        println!("\n## {seeds} seeds\n");
        // The goals: a median test accuracy of at least 97.5 % for the MLP and 98.5 % for the
        // CNN. Falling short is an error, so CI (which runs `--seeds 5`) notices.
        for (name, runs, goal) in [
            ("MLP", accuracies(&mlp_runs), 0.975),
            ("CNN", accuracies(&cnn_runs), 0.985),
        ] {
            let each: Vec<String> = runs.iter().map(|a| format!("{:.2}%", 100.0 * a)).collect();
            let median = median(&runs);
            println!(
                "{name}: {}; median {:.2}% (goal {:.1}%)",
                each.join(", "),
                100.0 * median,
                100.0 * goal
            );
            if median < goal {
                return Err(format!(
                    "{name}: median test accuracy {:.2}% is below the goal of {:.1}%",
                    100.0 * median,
                    100.0 * goal
                )
                .into());
            }
        }
    }
    println!("\ntotal time {:.1} s", start.elapsed().as_secs_f64());
    Ok(())
}

/// A trained net, its history and its final test accuracy.
struct Run<N: Shape, L> {
    net: Net<Init<N>, L>,
    history: History,
    accuracy: f32,
}

/// Binds `decl` to `N` with weights drawn from `seed`, trains it with Adam on the training
/// split (shuffled from `seed` too), the test split as validation data, and tests it.
fn train_and_test<N, L>(
    decl: &Net<Uninit, L>,
    data: &Data<N>,
    settings: Settings,
    seed: u64,
    quiet: bool,
) -> Result<Run<N, L>, Box<dyn Error>>
where
    N: StaticShape + BindTo<L>,
    L: Chain<N>,
    Labels<U10>: TargetFor<<<L as Chain<N>>::Out as Shape>::Flat>,
    // Validation data as wide as the training data: the compiler compares the widths.
    N::Flat: Width,
{
    let mut net = decl.clone().seed(seed).bind::<N>();
    let mut fit = Fit::new(settings.epochs)
        .batch_size(settings.batch_size)
        .seed(seed)
        .validation(&data.test_x, &data.test_y);
    if quiet {
        fit = fit.quiet();
    }
    let mut adam = Adam::new(settings.lr);
    let history = net.fit(&data.train_x, &data.train_y, CrossEntropy, &mut adam, &fit)?;
    let (_, accuracy) = net.evaluate(&data.test_x, &data.test_y, CrossEntropy)?;
    let accuracy = accuracy.ok_or("no accuracy for labels")?;
    Ok(Run {
        net,
        history,
        accuracy,
    })
}

fn accuracies<N: Shape, L>(runs: &[Run<N, L>]) -> Vec<f32> {
    runs.iter().map(|r| r.accuracy).collect()
}

/// Two panels: the training loss (on a log scale) and the test accuracy of each run, per
/// epoch.
fn plot_curves(path: &Path, runs: &[(&str, &History)]) -> Result<(), Box<dyn Error>> {
    let root = SVGBackend::new(path, (1000, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(500);
    let epochs = runs
        .iter()
        .map(|(_, h)| h.epochs().len())
        .max()
        .unwrap_or(1);
    let last_epoch = epochs.max(2) as u32;
    let colors = [BLUE, RED, GREEN, MAGENTA];
    let curve = |history: &History, value: fn(&EpochMetrics) -> Option<f32>| {
        let points: Vec<(u32, f32)> = history
            .epochs()
            .iter()
            .filter_map(|e| Some((e.epoch as u32, value(e)?)))
            .collect();
        points
    };

    let losses = runs
        .iter()
        .flat_map(|(_, h)| h.epochs().iter().map(|e| e.loss));
    let (low, high) = losses.fold((f32::MAX, f32::MIN_POSITIVE), |(l, h), v| {
        (l.min(v), h.max(v))
    });
    let low = low.clamp(1e-6, high / 2.0);
    let mut chart = ChartBuilder::on(&left)
        .caption("training loss", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(1..last_epoch, (low * 0.8..high * 1.25).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc("cross-entropy (log scale)")
        .y_label_formatter(&|v| format!("{v:.0e}"))
        .draw()?;
    for ((name, history), color) in runs.iter().zip(colors) {
        let points = curve(history, |e| Some(e.loss));
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;

    let lowest = runs
        .iter()
        .flat_map(|(_, h)| h.epochs().iter().filter_map(|e| e.val_accuracy))
        .fold(1.0f32, f32::min);
    let mut chart = ChartBuilder::on(&right)
        .caption("test accuracy (%)", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(50)
        .build_cartesian_2d(1..last_epoch, (100.0 * lowest).floor()..100f32)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc("accuracy (%)")
        .draw()?;
    for ((name, history), color) in runs.iter().zip(colors) {
        let points = curve(history, |e| e.val_accuracy.map(|a| 100.0 * a));
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
