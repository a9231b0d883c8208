//! Data handling as Keras and scikit-learn do it: [`shuffle`] samples and their targets
//! together, split them into a training and a test part ([`train_test_split`]), or split
//! labelled data so that each part keeps the proportion of every class
//! ([`stratified_split`]); [`Standardize`] features with the training part's statistics.
//!
//! Every function takes a seed and gives the same result for the same seed and data, on every
//! platform: the shuffle is [`Net::fit`](crate::Net::fit)'s (a Fisher–Yates shuffle driven by
//! ChaCha8). Samples and targets are joined and cut with [`Batch::select`],
//! [`Batch::concat`], [`Labels::select`](crate::train::Labels::select) and
//! [`Labels::concat`](crate::train::Labels::concat).
//!
//! # Example
//! Read the data, hold a fifth of it out, train on the rest, and evaluate on what was held
//! out:
//! ```
//! use lazynet::prelude::*;
//!
//! // 150 samples of 2 features, 50 of each of 3 classes around (1, 0), (0, 1) and (1, 1),
//! // as they would come from a file: one row per sample.
//! let classes: Vec<usize> = (0..150).map(|s| s % 3).collect();
//! let rows: Vec<f32> = classes
//!     .iter()
//!     .enumerate()
//!     .flat_map(|(s, &c)| {
//!         let noise = ((s * 37 % 19) as f32 / 19.0 - 0.5) * 0.3;
//!         [f32::from(c != 1) + noise, f32::from(c != 0) - noise]
//!     })
//!     .collect();
//! let x = Batch::<U2>::from_rows(&rows)?;
//! let labels = Labels::<U3>::try_new(classes)?;
//!
//! // 10 samples of each class held out for the test, 40 of each left for training.
//! let split = stratified_split(&x, &labels, 0.2, 0)?;
//! assert_eq!((split.x_train.samples(), split.x_test.samples()), (120, 30));
//!
//! let mut net = Net::new()
//!     .push(Dense::<U16>::new())
//!     .push(Relu)
//!     .push(Dense::<U3>::new())
//!     .seed(0)
//!     .bind::<U2>();
//! let fit = Fit::new(40).batch_size(16).quiet();
//! net.fit(&split.x_train, &split.y_train, CrossEntropy, &mut Adam::new(0.02), &fit)?;
//! let (_, accuracy) = net.evaluate(&split.x_test, &split.y_test, CrossEntropy)?;
//! assert!(accuracy.is_some_and(|a| a > 0.9), "{accuracy:?}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};

use crate::alloc::try_vec;
use crate::batch::Batch;
use crate::error::ShapeError;
use crate::shape::Shape;
use crate::train::Target;

pub use crate::error::Fraction;
pub use crate::standardize::Standardize;

/// Data split in two: a training part and a test part, samples and targets, as
/// [`train_test_split`] and [`stratified_split`] return it (scikit-learn's
/// `X_train, X_test, y_train, y_test`).
///
/// # Type parameters
/// * `M`: the shape of one sample.
/// * `T`: the targets: [`Labels`](crate::train::Labels) or a [`Batch`] of targets.
///
/// # Example
/// ```
/// use lazynet::prelude::*;
///
/// let x = Batch::<U2>::from_fn(10, |f, s| (10 * s + f) as f32);
/// let labels = Labels::<U2>::try_new(vec![0, 1, 0, 1, 0, 1, 0, 1, 0, 1])?;
/// let Split { x_train, y_train, x_test, y_test } = train_test_split(&x, &labels, 0.3, 7)?;
/// assert_eq!((x_train.samples(), y_train.len()), (7, 7));
/// assert_eq!((x_test.samples(), y_test.len()), (3, 3));
/// # Ok::<(), ShapeError>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Split<M: Shape, T> {
    /// The samples to train on.
    pub x_train: Batch<M>,
    /// Their targets.
    pub y_train: T,
    /// The samples held out, to evaluate on.
    pub x_test: Batch<M>,
    /// Their targets.
    pub y_test: T,
}

/// The samples and their targets in a random order, the same for both, drawn from `seed`
/// (scikit-learn's `shuffle(X, y, random_state=seed)`).
///
/// The order is the one [`Net::fit`](crate::Net::fit) uses for its first epoch with
/// [`Fit::seed(seed)`](crate::train::Fit::seed): a Fisher–Yates shuffle driven by ChaCha8, the
/// same on every platform.
///
/// # Type parameters
/// * `M`: the shape of one sample.
/// * `T`: the targets: [`Labels`](crate::train::Labels) or a [`Batch`] of targets.
///
/// # Errors
/// * [`ShapeError::TargetCount`] when `target` holds another number of samples than `x`;
/// * [`ShapeError::OutOfMemory`] when the shuffled copies cannot be allocated.
///
/// # Example
/// ```
/// use lazynet::prelude::*;
///
/// let x = Batch::<U1>::from_rows([0.0, 1.0, 2.0, 3.0, 4.0])?;
/// let labels = Labels::<U5>::try_new(vec![0, 1, 2, 3, 4])?;
/// let (xs, ls) = shuffle(&x, &labels, 42)?;
/// // Each sample keeps its label, whatever the order.
/// for (j, &label) in ls.as_slice().iter().enumerate() {
///     assert_eq!(xs.sample(j), Some(&[label as f32][..]));
/// }
/// // The same seed gives the same order.
/// assert_eq!(shuffle(&x, &labels, 42)?, (xs, ls));
/// assert!(shuffle(&x, &Labels::<U5>::try_new(vec![0])?, 42).is_err());
/// # Ok::<(), ShapeError>(())
/// ```
pub fn shuffle<M: Shape, T: Target>(
    x: &Batch<M>,
    target: &T,
    seed: u64,
) -> Result<(Batch<M>, T), ShapeError> {
    let n = same_count(x, target)?;
    let order = order(n, seed, 0, true)?;
    Ok((x.select(&order)?, target.select(&order)?))
}

/// The samples and their targets, shuffled from `seed` and split into a training and a test
/// part: scikit-learn's `train_test_split(X, y, test_size=test_fraction, random_state=seed)`.
///
/// Of `n` samples, the test part gets `ceil(test_fraction · n)` (computed in `f64`, as
/// scikit-learn does) and the training part the rest. The samples are shuffled as
/// [`shuffle`] does; the test part is the first ones of that order and the training part the
/// others, each in that shuffled order.
///
/// # Type parameters
/// * `M`: the shape of one sample.
/// * `T`: the targets: [`Labels`](crate::train::Labels) or a [`Batch`] of targets.
///
/// # Errors
/// * [`ShapeError::TargetCount`] when `target` holds another number of samples than `x`;
/// * [`ShapeError::SplitFraction`] when `test_fraction` is not a number strictly between 0
///   and 1;
/// * [`ShapeError::SplitEmpty`] when a part would get no sample: fewer than 2 samples, or a
///   fraction so close to 1 that the test part takes them all;
/// * [`ShapeError::OutOfMemory`] when the parts cannot be allocated.
///
/// # Example
/// ```
/// use lazynet::prelude::*;
///
/// // Regression targets: y = 2x.
/// let x = Batch::<U1>::from_fn(10, |_, s| s as f32);
/// let y = Batch::<U1>::from_fn(10, |_, s| 2.0 * s as f32);
/// let split = train_test_split(&x, &y, 0.25, 0)?;
/// assert_eq!((split.x_train.samples(), split.x_test.samples()), (7, 3)); // ceil(2.5) = 3
/// for j in 0..3 {
///     let (xj, yj) = (split.x_test.sample(j), split.y_test.sample(j));
///     assert_eq!(xj.zip(yj).map(|(x, y)| 2.0 * x[0] == y[0]), Some(true));
/// }
/// let err = train_test_split(&x, &y, 1.5, 0).err().map(|e| e.to_string());
/// assert_eq!(
///     err.as_deref(),
///     Some("the test fraction is 1.5, but it must be a number strictly between 0 and 1")
/// );
/// # Ok::<(), ShapeError>(())
/// ```
pub fn train_test_split<M: Shape, T: Target>(
    x: &Batch<M>,
    target: &T,
    test_fraction: f64,
    seed: u64,
) -> Result<Split<M, T>, ShapeError> {
    let n = same_count(x, target)?;
    let test = test_count(test_fraction, n)?;
    let order = order(n, seed, 0, true)?;
    let (test, train) = order.split_at(test.min(order.len()));
    split(x, target, train, test)
}

/// The samples and their labels split into a training and a test part that each keep the
/// proportion of every class: scikit-learn's `train_test_split(X, y, test_size=test_fraction,
/// stratify=y, random_state=seed)`.
///
/// The test part gets `ceil(test_fraction · n)` samples in all, as with
/// [`train_test_split`], shared among the classes in proportion to their sizes by the
/// largest-remainder rule: a class of `c` samples gets `floor(test · c / n)` of them, and the
/// few left over go one each to the classes with the largest remainders of that division (on
/// equal remainders, the smaller class number first). So every class gets its exact share,
/// rounded up or down, and the total is exact: 150 samples, 50 of each of 3 classes, and a
/// fraction of 0.2 give 10 test samples of each class. A class too small for its share to
/// reach 1 may get none in the test part.
///
/// Which samples of a class go to the test part is drawn from `seed`: the samples are
/// shuffled as [`shuffle`] does, and each class's first ones in that order go to the test
/// part. Both parts are in that shuffled order.
///
/// # Type parameters
/// * `M`: the shape of one sample.
/// * `T`: the targets: [`Labels`](crate::train::Labels), or any [`Target`] that gives each sample's class
///   ([`Target::class_of`]).
///
/// # Errors
/// * [`ShapeError::TargetCount`] when `target` holds another number of samples than `x`;
/// * [`ShapeError::SplitFraction`] when `test_fraction` is not a number strictly between 0
///   and 1;
/// * [`ShapeError::NotClasses`] when the targets are not classes (a [`Batch`] of regression
///   targets), naming the first sample without one;
/// * [`ShapeError::SplitEmpty`] when a part would get no sample;
/// * [`ShapeError::OutOfMemory`] when the parts cannot be allocated.
///
/// # Example
/// ```
/// use lazynet::prelude::*;
///
/// // 80 samples of class 0 and 20 of class 1.
/// let labels = Labels::<U2>::try_new((0..100).map(|s| usize::from(s % 5 == 0)).collect())?;
/// let x = Batch::<U1>::from_fn(100, |_, s| s as f32);
/// let split = stratified_split(&x, &labels, 0.25, 3)?;
/// let ones = |l: &Labels<U2>| l.as_slice().iter().filter(|&&c| c == 1).count();
/// assert_eq!((split.y_test.len(), ones(&split.y_test)), (25, 5));
/// assert_eq!((split.y_train.len(), ones(&split.y_train)), (75, 15));
///
/// // Regression targets have no classes to keep.
/// let err = stratified_split(&x, &x, 0.25, 3).err().map(|e| e.to_string());
/// assert_eq!(
///     err.as_deref(),
///     Some("a stratified split needs the class of every sample, but sample 0 of the targets has none; split targets that are not classes with train_test_split")
/// );
/// # Ok::<(), ShapeError>(())
/// ```
pub fn stratified_split<M: Shape, T: Target>(
    x: &Batch<M>,
    target: &T,
    test_fraction: f64,
    seed: u64,
) -> Result<Split<M, T>, ShapeError> {
    let n = same_count(x, target)?;
    check_fraction(test_fraction)?;
    let classes = classes_of(target, n)?;
    let test_total = test_count(test_fraction, n)?;
    let mut strata = strata(&classes, test_total)?;
    let order = order(n, seed, 0, true)?;
    let mut test = indices(test_total)?;
    let mut train = indices(n - test_total)?;
    for index in order {
        // Every sample's class is among the strata: they were made from these classes.
        let stratum = classes
            .get(index)
            .and_then(|class| strata.binary_search_by_key(class, |s| s.class).ok())
            .and_then(|k| strata.get_mut(k));
        match stratum {
            Some(s) if s.test > 0 => {
                s.test -= 1;
                test.push(index);
            }
            _ => train.push(index),
        }
    }
    split(x, target, &train, &test)
}

/// The order of `n` samples: `0..n`, shuffled when `shuffle` is set by a Fisher–Yates shuffle
/// from `seed` on ChaCha8's stream `stream` (a fit's epoch, counting from 0), the same on
/// every platform.
///
/// # Errors
/// [`ShapeError::OutOfMemory`] when the order cannot be allocated.
pub(crate) fn order(
    n: usize,
    seed: u64,
    stream: usize,
    shuffle: bool,
) -> Result<Vec<usize>, ShapeError> {
    let mut order = try_vec(n).ok_or_else(|| ShapeError::OutOfMemory {
        what: format!("the order of {n} samples"),
        values: n as u128,
    })?;
    order.extend(0..n);
    if shuffle {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(stream as u64);
        for i in (1..n).rev() {
            // A multiply-shift draw in 0..=i: uniform to 2^-64, and the same on every platform.
            let j = ((u128::from(rng.next_u64()) * (i as u128 + 1)) >> 64) as usize;
            order.swap(i, j);
        }
    }
    Ok(order)
}

/// The number of samples of `x`; [`ShapeError::TargetCount`] when `target` holds another.
fn same_count<M: Shape, T: Target>(x: &Batch<M>, target: &T) -> Result<usize, ShapeError> {
    let (samples, targets) = (x.samples(), target.samples());
    if samples != targets {
        return Err(ShapeError::TargetCount {
            what: T::WHAT,
            samples,
            targets,
        });
    }
    Ok(samples)
}

/// [`ShapeError::SplitFraction`] unless `fraction` is strictly between 0 and 1.
fn check_fraction(fraction: f64) -> Result<(), ShapeError> {
    // NaN fails both comparisons, an infinity one of them.
    if fraction > 0.0 && fraction < 1.0 {
        Ok(())
    } else {
        Err(ShapeError::SplitFraction {
            fraction: Fraction(fraction),
        })
    }
}

/// The size of the test part of `n` samples: `ceil(fraction · n)` in `f64`, as
/// scikit-learn computes it; an error when the fraction is not in (0, 1) or a part would be
/// empty.
fn test_count(fraction: f64, n: usize) -> Result<usize, ShapeError> {
    check_fraction(fraction)?;
    // `as` saturates, and the product of a fraction below 1 is at most `n` but for the
    // rounding of an `n` above 2^53 to `f64`: the `min` keeps it a count of these samples.
    let test = ((fraction * n as f64).ceil() as usize).min(n);
    let train = n - test;
    if test == 0 || train == 0 {
        return Err(ShapeError::SplitEmpty {
            fraction: Fraction(fraction),
            train,
            test,
        });
    }
    Ok(test)
}

/// The class of each of the `n` samples of `target`; [`ShapeError::NotClasses`] naming the
/// first without one.
fn classes_of<T: Target>(target: &T, n: usize) -> Result<Vec<usize>, ShapeError> {
    let mut classes = indices(n)?;
    for sample in 0..n {
        let class = target.class_of(sample).ok_or(ShapeError::NotClasses {
            what: T::WHAT,
            sample,
        })?;
        classes.push(class);
    }
    Ok(classes)
}

/// A class and the number of its samples still to go to the test part.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stratum {
    class: usize,
    test: usize,
}

/// The classes present, in increasing order, each with its share of the `test` test samples:
/// `floor(test · count / n)`, and the samples left over one each to the classes with the
/// largest remainders (the smaller class first on equal ones). `test` is at most the number
/// of samples.
fn strata(classes: &[usize], test: usize) -> Result<Vec<Stratum>, ShapeError> {
    let n = classes.len();
    let mut sorted = indices(n)?;
    sorted.extend_from_slice(classes);
    sorted.sort_unstable();
    let distinct = sorted.chunk_by(|a, b| a == b).count();
    // (class, count, remainder) of every class.
    let mut shares: Vec<(usize, usize, u128)> = try_vec(distinct).ok_or_else(|| oom(distinct))?;
    let mut given = 0usize;
    for run in sorted.chunk_by(|a, b| a == b) {
        let (Some(&class), count) = (run.first(), run.len()) else {
            continue;
        };
        // `test · count` fits in a u128, and the share is at most `count` since `test ≤ n`.
        let exact = test as u128 * count as u128;
        let floor = usize::try_from(exact / n as u128).map_err(|_| share_error())?;
        given += floor;
        shares.push((class, floor, exact % n as u128));
    }
    // The floors sum to at most `test`, and fall short of it by fewer than the classes.
    let left = test.checked_sub(given).ok_or_else(share_error)?;
    let mut by_remainder: Vec<usize> = indices(distinct)?;
    by_remainder.extend(0..distinct);
    by_remainder.sort_unstable_by_key(|&k| {
        let (class, _, remainder) = shares.get(k).copied().unwrap_or_default();
        (core::cmp::Reverse(remainder), class)
    });
    for &k in by_remainder.iter().take(left) {
        if let Some(share) = shares.get_mut(k) {
            share.1 += 1;
        }
    }
    let mut strata = try_vec(distinct).ok_or_else(|| oom(distinct))?;
    strata.extend(
        shares
            .iter()
            .map(|&(class, test, _)| Stratum { class, test }),
    );
    Ok(strata)
}

/// An empty vector with room for `n` sample indices.
fn indices(n: usize) -> Result<Vec<usize>, ShapeError> {
    try_vec(n).ok_or_else(|| oom(n))
}

/// [`ShapeError::OutOfMemory`] for `n` sample indices or classes.
fn oom(n: usize) -> ShapeError {
    ShapeError::OutOfMemory {
        what: format!("the indices of {n} samples"),
        values: n as u128,
    }
}

/// The samples and targets at `train` and at `test`.
fn split<M: Shape, T: Target>(
    x: &Batch<M>,
    target: &T,
    train: &[usize],
    test: &[usize],
) -> Result<Split<M, T>, ShapeError> {
    Ok(Split {
        x_train: x.select(train)?,
        y_train: target.select(train)?,
        x_test: x.select(test)?,
        y_test: target.select(test)?,
    })
}

/// The error of a class share that broke the arithmetic it rests on (a share above its
/// class's count, shares summing past the test part): never expected, reported rather than
/// rounded.
fn share_error() -> ShapeError {
    ShapeError::Contract {
        what: "a stratified split".into(),
        detail: "the shares of the classes do not add up to the test part".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dim::Dyn;
    use crate::train::Labels;
    use typenum::{U1, U3};

    #[test]
    fn the_order_is_fits_and_does_not_change() {
        // Fixed values: a change here changes every fit, shuffle and split made so far.
        assert_eq!(
            order(10, 0, 0, true).unwrap(),
            [6, 1, 8, 3, 2, 9, 0, 5, 4, 7]
        );
        assert_eq!(
            order(10, 0, 1, true).unwrap(),
            [5, 1, 9, 0, 3, 2, 8, 4, 6, 7]
        );
        assert_eq!(order(5, 9, 0, false).unwrap(), [0, 1, 2, 3, 4]);
        assert_eq!(order(0, 1, 0, true).unwrap(), Vec::<usize>::new());
        assert_eq!(order(1, 1, 0, true).unwrap(), [0]);
        let mut sorted = order(1000, 7, 3, true).unwrap();
        assert_ne!(sorted, (0..1000).collect::<Vec<_>>());
        sorted.sort_unstable();
        assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn test_counts_are_scikit_learns() {
        // (samples, fraction, test samples): ceil(fraction · samples) in f64.
        let cases = [
            (10, 0.25, 3),
            (150, 0.2, 30),
            (30, 0.1, 3),
            (2, 0.5, 1),
            (3, 0.5, 2),
            (7, 0.3, 3),
            (1000, 0.001, 1),
            (1000, 0.999, 999),
            (3, 1e-300, 1),
        ];
        for (n, fraction, test) in cases {
            assert_eq!(test_count(fraction, n), Ok(test), "{fraction} of {n}");
        }
    }

    #[test]
    fn fractions_outside_zero_one_are_refused() {
        let bad = [
            0.0,
            -0.0,
            1.0,
            -0.1,
            1.5,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            1.0 + f64::EPSILON,
        ];
        for fraction in bad {
            assert_eq!(
                test_count(fraction, 100),
                Err(ShapeError::SplitFraction {
                    fraction: Fraction(fraction)
                }),
                "{fraction}"
            );
        }
        for fraction in [f64::MIN_POSITIVE, 1.0 - f64::EPSILON, 0.5] {
            assert!(check_fraction(fraction).is_ok(), "{fraction}");
        }
    }

    #[test]
    fn empty_parts_are_refused_with_both_counts() {
        let empty = |fraction, train, test| ShapeError::SplitEmpty {
            fraction: Fraction(fraction),
            train,
            test,
        };
        assert_eq!(test_count(0.5, 1), Err(empty(0.5, 0, 1)));
        assert_eq!(test_count(0.5, 0), Err(empty(0.5, 0, 0)));
        assert_eq!(test_count(0.95, 10), Err(empty(0.95, 0, 10)));
        assert_eq!(test_count(0.9, 3), Err(empty(0.9, 0, 3)));
        assert_eq!(
            empty(0.2, 0, 1).to_string(),
            "a test fraction of 0.2 splits 1 sample into 0 for training and 1 for testing; each part needs at least one sample"
        );
        assert_eq!(
            empty(0.95, 0, 10).to_string(),
            "a test fraction of 0.95 splits 10 samples into 0 for training and 10 for testing; each part needs at least one sample"
        );
        assert_eq!(
            ShapeError::SplitFraction {
                fraction: Fraction(f64::NAN)
            }
            .to_string(),
            "the test fraction is NaN, but it must be a number strictly between 0 and 1"
        );
    }

    #[test]
    fn fractions_compare_by_their_bits() {
        assert_eq!(Fraction(f64::NAN), Fraction(f64::NAN));
        assert_ne!(Fraction(0.0), Fraction(-0.0));
        assert_ne!(Fraction(0.1), Fraction(0.2));
        assert_eq!(Fraction(-0.1).to_string(), "-0.1");
    }

    fn shares(strata: &[Stratum]) -> Vec<(usize, usize)> {
        strata.iter().map(|s| (s.class, s.test)).collect()
    }

    #[test]
    fn strata_share_the_test_samples_by_largest_remainder() {
        let three_of_fifty: Vec<usize> = (0..150).map(|s| s % 3).collect();
        assert_eq!(
            shares(&strata(&three_of_fifty, 30).unwrap()),
            [(0, 10), (1, 10), (2, 10)]
        );
        // 7 and 3 samples, 3 to test: exact shares 2.1 and 0.9, so 2 and 1.
        let seven_three = [0, 0, 0, 0, 0, 0, 0, 1, 1, 1];
        assert_eq!(shares(&strata(&seven_three, 3).unwrap()), [(0, 2), (1, 1)]);
        // Equal remainders: the smaller class first.
        assert_eq!(shares(&strata(&[1, 0], 1).unwrap()), [(0, 1), (1, 0)]);
        // Classes need not be contiguous, nor their samples.
        assert_eq!(
            shares(&strata(&[9, 5, 9, 5, 9, 9], 3).unwrap()),
            [(5, 1), (9, 2)]
        );
        // 90 and 10, a fifth: 18 and 2.
        let skewed: Vec<usize> = (0..100).map(|s| usize::from(s >= 90)).collect();
        assert_eq!(shares(&strata(&skewed, 20).unwrap()), [(0, 18), (1, 2)]);
    }

    #[test]
    fn strata_always_sum_to_the_test_count_and_stay_within_one_of_the_share() {
        for n in 2..40usize {
            for k in 1..6usize {
                let classes: Vec<usize> = (0..n).map(|s| (s * s + 3 * s) % k).collect();
                for test in 1..n {
                    let strata = strata(&classes, test).unwrap();
                    let total: usize = strata.iter().map(|s| s.test).sum();
                    assert_eq!(total, test, "n {n}, k {k}, test {test}");
                    for s in &strata {
                        let count = classes.iter().filter(|&&c| c == s.class).count();
                        let exact = test * count;
                        assert!(s.test * n >= exact - exact % n, "{s:?} of {count}");
                        assert!(s.test * n < exact + n, "{s:?} of {count}");
                        assert!(s.test <= count);
                    }
                }
            }
        }
    }

    #[test]
    fn stratified_split_keeps_every_class_and_pairs() {
        let classes: Vec<usize> = (0..60).map(|s| [0, 0, 1, 2, 2, 2][s % 6]).collect();
        let labels = Labels::<U3>::try_new(classes.clone()).unwrap();
        let x = Batch::<U1>::from_fn(60, |_, s| s as f32);
        let split = stratified_split(&x, &labels, 0.25, 11).unwrap();
        // 20, 10 and 30 samples, 15 to test: exact shares 5, 2.5 and 7.5. The two halves are
        // equal remainders, so the one sample left over goes to class 1, the smaller.
        let count = |l: &Labels<U3>, c| l.as_slice().iter().filter(|&&v| v == c).count();
        let tests: Vec<usize> = (0..3).map(|c| count(&split.y_test, c)).collect();
        assert_eq!(tests, [5, 3, 7]);
        let trains: Vec<usize> = (0..3).map(|c| count(&split.y_train, c)).collect();
        assert_eq!(trains, [15, 7, 23]);
        for (xs, ls) in [
            (&split.x_train, &split.y_train),
            (&split.x_test, &split.y_test),
        ] {
            for (j, &label) in ls.as_slice().iter().enumerate() {
                let id = xs.sample(j).unwrap()[0] as usize;
                assert_eq!(classes[id], label);
            }
        }
    }

    #[test]
    fn targets_without_classes_cannot_be_stratified() {
        let x = Batch::<U1>::zeros(10);
        let y = Batch::<Dyn>::from_fn_dyn(2, 10, |_, _| 0.0);
        assert_eq!(
            stratified_split(&x, &y, 0.2, 0),
            Err(ShapeError::NotClasses {
                what: "targets",
                sample: 0
            })
        );
        // The fraction is checked first, then the classes, then the sizes of the parts.
        assert!(matches!(
            stratified_split(&x, &y, 2.0, 0),
            Err(ShapeError::SplitFraction { .. })
        ));
        let one = Batch::<U1>::zeros(1);
        assert!(matches!(
            stratified_split(&one, &one, 0.5, 0),
            Err(ShapeError::NotClasses { .. })
        ));
    }
}
