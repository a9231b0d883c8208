//! What `train_digits` and `resnet_digits` share: the UCI 8×8 digits read from `data/`, the
//! stratified 80/20 split (seed 2024), the batches of one input shape, the command line
//! (`--seeds N`), a model's training settings, and the median of the seeds' accuracies.

use std::error::Error;
use std::io::{BufRead, BufReader};
use std::path::Path;

use flate2::read::GzDecoder;
use lazynet::prelude::*;
use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};

/// An 8×8 grey image, one channel.
pub type Digit = Image<U1, U8, U8>;

/// The split is the same whatever seed trains the models.
pub const SPLIT_SEED: u64 = 2024;
/// The share of each class held out for testing.
pub const TEST_FRACTION: f64 = 0.2;

/// How one model is trained.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Passes over the training split.
    pub epochs: usize,
    /// Samples per optimizer step.
    pub batch_size: usize,
    /// Adam's learning rate.
    pub lr: f64,
}

impl std::fmt::Display for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} epochs, batches of {}, Adam with learning rate {}",
            self.epochs, self.batch_size, self.lr
        )
    }
}

/// `--seeds N` from the command line (1 when absent).
pub fn seeds_from_args() -> Result<u64, Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let mut seeds = 1;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seeds" => {
                let n = args.next().ok_or("--seeds needs a number")?;
                seeds = n.parse().map_err(|e| format!("--seeds {n}: {e}"))?;
                if seeds == 0 {
                    return Err("--seeds must be at least 1".into());
                }
            }
            other => return Err(format!("unknown argument `{other}`; try --seeds 5").into()),
        }
    }
    Ok(seeds)
}

/// The data set: every image's 64 pixels (0 to 16) and its class.
pub struct Digits {
    pixels: Vec<[u8; 64]>,
    pub labels: Vec<usize>,
}

/// Reads the gzip CSV: one image per line, 64 pixel values in row-major order, then the label.
pub fn read_digits(path: &Path) -> Result<Digits, Box<dyn Error>> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut digits = Digits {
        pixels: Vec::new(),
        labels: Vec::new(),
    };
    for (n, line) in BufReader::new(GzDecoder::new(file)).lines().enumerate() {
        let line = line?;
        let at = |what: String| format!("{} line {}: {what}", path.display(), n + 1);
        let values = line
            .split(',')
            .map(|v| v.trim().parse::<u8>())
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|e| at(e.to_string()))?;
        let (Some((&label, pixels)), 65) = (values.split_last(), values.len()) else {
            return Err(at(format!("{} values, expected 65", values.len())).into());
        };
        if let Some(p) = pixels.iter().find(|&&p| p > 16) {
            return Err(at(format!("pixel value {p}, expected 0 to 16")).into());
        }
        if label > 9 {
            return Err(at(format!("label {label}, expected 0 to 9")).into());
        }
        digits.pixels.push(pixels.try_into()?);
        digits.labels.push(usize::from(label));
    }
    if digits.labels.len() != 1797 {
        return Err(format!(
            "{}: {} images, expected 1797",
            path.display(),
            digits.labels.len()
        )
        .into());
    }
    Ok(digits)
}

/// Splits the samples class by class: each class's indices shuffled from `seed`, `fraction`
/// of them (rounded) to the test set, the rest to the training set. Returns (train, test).
pub fn stratified_split(labels: &[usize], fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let (mut train, mut test) = (Vec::new(), Vec::new());
    let classes = labels.iter().max().map_or(0, |&c| c + 1);
    for class in 0..classes {
        let mut members: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == class).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(class as u64);
        // Fisher–Yates, with a multiply-shift draw in 0..=i.
        for i in (1..members.len()).rev() {
            let j = ((u128::from(rng.next_u64()) * (i as u128 + 1)) >> 64) as usize;
            members.swap(i, j);
        }
        let held_out = (members.len() as f64 * fraction).round() as usize;
        test.extend_from_slice(&members[..held_out]);
        train.extend_from_slice(&members[held_out..]);
    }
    train.sort_unstable();
    test.sort_unstable();
    (train, test)
}

/// The training and test batches of one input shape, pixels scaled to [0, 1], with their
/// labels.
pub struct Data<N: Shape> {
    pub train_x: Batch<N>,
    pub train_y: Labels<U10>,
    pub test_x: Batch<N>,
    pub test_y: Labels<U10>,
}

impl<N: Shape + lazynet::FromRows> Data<N> {
    pub fn new(digits: &Digits, train: &[usize], test: &[usize]) -> Result<Self, ShapeError> {
        let batch = |indices: &[usize]| {
            let rows: Vec<f32> = indices
                .iter()
                .filter_map(|&i| digits.pixels.get(i))
                .flat_map(|p| p.iter().map(|&v| f32::from(v) / 16.0))
                .collect();
            Batch::<N>::from_rows_with_shape(N::default(), rows)
        };
        let labels = |indices: &[usize]| {
            Labels::<U10>::try_new(
                indices
                    .iter()
                    .filter_map(|&i| digits.labels.get(i).copied())
                    .collect(),
            )
        };
        Ok(Data {
            train_x: batch(train)?,
            train_y: labels(train)?,
            test_x: batch(test)?,
            test_y: labels(test)?,
        })
    }
}

pub fn median(values: &[f32]) -> f32 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f32::total_cmp);
    match sorted.len() {
        0 => f32::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}
