//! Fisher's iris, as a Keras user would train it: read, split (stratified), standardize,
//! train with a validation split and early stopping, evaluate on the held-out test part.
//! Fails below 93 % test accuracy. `cargo run --example iris`
use lazynet::prelude::*;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // data/iris.csv: a header line, then 4 measurements and the class (0, 1, 2) per line.
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/data/iris.csv"))?;
    let (mut rows, mut classes) = (Vec::new(), Vec::new());
    for line in text.lines().skip(1) {
        let values: Vec<f32> = line.split(',').map(str::parse).collect::<Result<_, _>>()?;
        let [a, b, c, d, class] = values[..] else {
            return Err(format!("a line of 5 values expected: {line:?}").into());
        };
        rows.extend([a, b, c, d]);
        classes.push(class as usize);
    }
    let x = Batch::<U4>::from_rows(&rows)?;
    let labels = Labels::<U3>::try_new(classes)?;

    // 30 flowers (10 of each species) held out for the test, the scale measured on the rest.
    let split = stratified_split(&x, &labels, 0.2, 0)?;
    let scale = Standardize::fit(&split.x_train)?;
    let (x_train, x_test) = (scale.apply(&split.x_train)?, scale.apply(&split.x_test)?);

    let mut net = Net::new()
        .push(Dense::<U16>::new())
        .push(Relu)
        .push(Dense::<U3>::new())
        .seed(0)
        .bind::<U4>();
    // Shuffled once, as Keras's `validation_split` takes the last samples.
    let (x_train, y_train) = shuffle(&x_train, &split.y_train, 1)?;
    let stop = EarlyStopping::new(Monitor::ValLoss).patience(20);
    let fit = Fit::new(300).batch_size(16).validation_split(0.2).quiet();
    let fit = fit.early_stopping(stop.restore_best_weights(true));
    let history = net.fit(&x_train, &y_train, CrossEntropy, &mut Adam::new(0.01), &fit)?;
    let ran = history.epochs().len();
    if let Some(best) = history.best() {
        println!("{ran} epochs; the best by val loss, restored:\n{best}");
    }

    let (loss, accuracy) = net.evaluate(&x_test, &split.y_test, CrossEntropy)?;
    let accuracy = accuracy.unwrap_or(0.0);
    println!("test: loss {loss:.4}, accuracy {:.1}%", 100.0 * accuracy);
    let predicted = net.predict_classes(&x_test)?; // the class of each test flower
    println!(
        "predicted {predicted:?}\ntrue      {:?}",
        split.y_test.as_slice()
    );
    if accuracy < 0.93 {
        return Err(format!("test accuracy {accuracy} is below the 93 % goal").into());
    }
    Ok(())
}
