//! Data handling from outside the crate: shuffles, train/test splits and stratified splits
//! keep every sample with its target, cut where scikit-learn cuts, and refuse what cannot be
//! split; batches and labels concatenate.

use lazynet::data::Fraction;
use lazynet::prelude::*;
use lazynet::train::Target;
use proptest::prelude::*;

use crate::strategies::test_fraction;

/// `n` samples of 2 features, `(s, s mod 5)` for sample `s` (so every sample is told apart by
/// its first feature, and the second repeats), and the label `(7 s) mod k` of `k` classes.
fn dataset(n: usize, k: usize) -> Result<(Batch<U2>, Labels<Dyn>), ShapeError> {
    let rows: Vec<f32> = (0..n).flat_map(|s| [s as f32, (s % 5) as f32]).collect();
    let labels = (0..n).map(|s| (7 * s) % k).collect();
    Ok((
        Batch::<U2>::from_rows(rows)?,
        Labels::try_dynamic(k, labels)?,
    ))
}

/// Every sample's features (as bits) with its label, sorted: the multiset of pairs.
fn pairs<M: Shape, C: Dim>(x: &Batch<M>, labels: &Labels<C>) -> Vec<(Vec<u32>, usize)> {
    assert_eq!(x.samples(), labels.len());
    let mut pairs: Vec<(Vec<u32>, usize)> = (0..x.samples())
        .map(|j| {
            let features = x.sample(j).unwrap_or_default();
            (
                features.iter().map(|v| v.to_bits()).collect(),
                labels.as_slice()[j],
            )
        })
        .collect();
    pairs.sort();
    pairs
}

/// The split's two parts, joined again, hold exactly the input's (sample, label) pairs, and
/// neither part is empty.
fn assert_partition<M: Shape, C: Dim>(
    x: &Batch<M>,
    labels: &Labels<C>,
    split: &Split<M, Labels<C>>,
) -> Result<(), ShapeError> {
    assert!(split.x_train.samples() >= 1 && split.x_test.samples() >= 1);
    assert_eq!(split.x_train.samples(), split.y_train.len());
    assert_eq!(split.x_test.samples(), split.y_test.len());
    let x_all = split.x_train.concat(&split.x_test)?;
    let y_all = split.y_train.concat(&split.y_test)?;
    assert_eq!(pairs(&x_all, &y_all), pairs(x, labels));
    Ok(())
}

/// How many labels of `labels` are `class`.
fn count(labels: &Labels<Dyn>, class: usize) -> usize {
    labels.as_slice().iter().filter(|&&c| c == class).count()
}

#[test]
fn split_sizes_follow_scikit_learn() -> Result<(), ShapeError> {
    // (samples, test fraction, training samples, test samples): test = ceil(fraction · n).
    let cases = [
        (10, 0.25, 7, 3),
        (150, 0.2, 120, 30),
        (7, 0.5, 3, 4),
        (2, 0.5, 1, 1),
        (100, 0.01, 99, 1),
        (100, 0.99, 1, 99),
        (30, 0.1, 27, 3),
        (1000, 0.333, 667, 333),
        (5, 1e-9, 4, 1),
    ];
    for (n, fraction, train, test) in cases {
        let (x, labels) = dataset(n, 2)?;
        for split in [
            train_test_split(&x, &labels, fraction, 0)?,
            stratified_split(&x, &labels, fraction, 0)?,
        ] {
            assert_eq!(
                (split.x_train.samples(), split.x_test.samples()),
                (train, test),
                "{fraction} of {n}"
            );
            assert_partition(&x, &labels, &split)?;
        }
    }
    Ok(())
}

#[test]
fn train_and_test_keep_every_sample_with_its_target() -> Result<(), ShapeError> {
    for (n, k) in [(2, 1), (9, 2), (50, 3), (101, 7)] {
        let (x, labels) = dataset(n, k)?;
        for seed in [0, 1, u64::MAX] {
            assert_partition(&x, &labels, &train_test_split(&x, &labels, 0.3, seed)?)?;
            assert_partition(&x, &labels, &stratified_split(&x, &labels, 0.3, seed)?)?;
            let (xs, ls) = shuffle(&x, &labels, seed)?;
            assert_eq!(pairs(&xs, &ls), pairs(&x, &labels));
        }
    }
    // Regression targets, y = 3x + 1: every sample keeps its own.
    let x = Batch::<U1>::from_fn(40, |_, s| s as f32);
    let y = Batch::<U1>::from_fn(40, |_, s| 3.0 * s as f32 + 1.0);
    let split = train_test_split(&x, &y, 0.25, 5)?;
    assert_eq!((split.y_train.samples(), split.y_test.samples()), (30, 10));
    let mut seen = Vec::new();
    for (xs, ys) in [
        (&split.x_train, &split.y_train),
        (&split.x_test, &split.y_test),
    ] {
        for j in 0..xs.samples() {
            let (xj, yj) = (
                xs.sample(j).unwrap_or_default(),
                ys.sample(j).unwrap_or_default(),
            );
            assert_eq!(yj, [3.0 * xj[0] + 1.0]);
            seen.push(xj[0] as usize);
        }
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..40).collect::<Vec<_>>());
    Ok(())
}

#[test]
fn images_split_like_flat_samples() -> Result<(), ShapeError> {
    let x = Batch::<Image<U1, U2, U2>>::from_fn(12, |f, s| (4 * s + f) as f32);
    let labels = Labels::<U3>::try_new((0..12).map(|s| s % 3).collect())?;
    let split = stratified_split(&x, &labels, 0.5, 2)?;
    assert_eq!(split.x_test.features().dims(), [1, 2, 2]);
    assert_eq!(
        split.y_test.as_slice().iter().filter(|&&c| c == 2).count(),
        2
    );
    assert_partition(&x, &labels, &split)
}

#[test]
fn stratified_splits_keep_class_proportions() -> Result<(), ShapeError> {
    // Iris: 150 samples, 50 of each of 3 classes, sorted by class as the file has them.
    let x = Batch::<U4>::from_fn(150, |f, s| (s * 4 + f) as f32);
    let sorted = Labels::try_dynamic(3, (0..150).map(|s| s / 50).collect())?;
    let interleaved = Labels::try_dynamic(3, (0..150).map(|s| s % 3).collect())?;
    for labels in [&sorted, &interleaved] {
        for seed in 0..5 {
            let split = stratified_split(&x, labels, 0.2, seed)?;
            for class in 0..3 {
                assert_eq!(
                    count(&split.y_test, class),
                    10,
                    "class {class}, seed {seed}"
                );
                assert_eq!(
                    count(&split.y_train, class),
                    40,
                    "class {class}, seed {seed}"
                );
            }
            assert_partition(&x, labels, &split)?;
        }
    }
    // 90 of class 0 and 10 of class 1, a fifth held out: 18 and 2.
    let (x, _) = dataset(100, 1)?;
    let skewed = Labels::try_dynamic(2, (0..100).map(|s| usize::from(s % 10 == 3)).collect())?;
    let split = stratified_split(&x, &skewed, 0.2, 9)?;
    assert_eq!((count(&split.y_test, 0), count(&split.y_test, 1)), (18, 2));
    assert_eq!(
        (count(&split.y_train, 0), count(&split.y_train, 1)),
        (72, 8)
    );
    // A plain split of the same data only keeps the proportion by luck: over a few seeds, it
    // misses it at least once.
    let missed = (0..10)
        .filter_map(|seed| train_test_split(&x, &skewed, 0.2, seed).ok())
        .any(|split| count(&split.y_test, 1) != 2);
    assert!(missed, "ten plain splits all held out exactly 2 of class 1");
    Ok(())
}

#[test]
fn the_same_seed_gives_the_same_split_and_other_seeds_others() -> Result<(), ShapeError> {
    let (x, labels) = dataset(60, 3)?;
    let again = |seed| -> Result<_, ShapeError> {
        Ok((
            train_test_split(&x, &labels, 0.25, seed)?,
            stratified_split(&x, &labels, 0.25, seed)?,
            shuffle(&x, &labels, seed)?,
        ))
    };
    let first = again(42)?;
    assert_eq!(again(42)?, first);
    let others: Vec<_> = [0, 1, 43, u64::MAX]
        .into_iter()
        .map(again)
        .collect::<Result<_, _>>()?;
    for other in &others {
        assert_ne!(other.0.x_test, first.0.x_test);
        assert_ne!(other.1.x_test, first.1.x_test);
        assert_ne!(other.2 .0, first.2 .0);
    }
    // A shuffle moves samples: 60 samples left in place by chance is 1 in 60!.
    assert_ne!(first.2 .0, x);
    Ok(())
}

#[test]
fn batches_and_labels_concatenate() -> Result<(), ShapeError> {
    let a = Batch::<U2>::from_rows([1.0, 2.0, 3.0, 4.0])?;
    let b = Batch::<U2>::from_rows([5.0, 6.0])?;
    let ab = a.concat(&b)?;
    assert_eq!(ab, Batch::<U2>::from_rows([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])?);
    assert_eq!(b.concat(&a)?.sample(0), Some(&[5.0, 6.0][..]));
    let empty = Batch::<U2>::zeros(0);
    assert_eq!(a.concat(&empty)?, a);
    assert_eq!(empty.concat(&a)?, a);
    assert_eq!(empty.concat(&empty)?.samples(), 0);
    // Through the trait, as a generic caller sees it: regression targets too.
    assert_eq!(Target::concat(&a, &b)?, ab);

    let la = Labels::<U3>::try_new(vec![2, 0])?;
    let lb = Labels::<U3>::try_new(vec![1])?;
    assert_eq!(la.concat(&lb)?.as_slice(), [2, 0, 1]);
    assert_eq!(Target::concat(&lb, &la)?.as_slice(), [1, 2, 0]);
    assert_eq!(la.concat(&lb)?.classes(), 3);
    let d = Labels::try_dynamic(4, vec![3, 3])?;
    assert_eq!(d.concat(&Labels::try_dynamic(4, vec![])?)?, d);

    // select, public on both, repeats and reorders.
    assert_eq!(
        ab.select(&[2, 2, 0])?,
        Batch::<U2>::from_rows([5.0, 6.0, 5.0, 6.0, 1.0, 2.0])?
    );
    assert_eq!(la.select(&[1, 1])?.as_slice(), [0, 0]);
    assert_eq!(ab.select(&[])?.samples(), 0);
    assert_eq!(
        ab.select(&[0, 3]),
        Err(ShapeError::SampleIndex {
            index: 3,
            samples: 3
        })
    );
    assert_eq!(
        la.select(&[usize::MAX]),
        Err(ShapeError::SampleIndex {
            index: usize::MAX,
            samples: 2
        })
    );
    Ok(())
}

#[test]
fn concatenating_different_shapes_or_classes_is_an_error() -> Result<(), ShapeError> {
    let three = Batch::from_fn_dyn(3, 2, |_, _| 0.0);
    let four = Batch::from_fn_dyn(4, 2, |_, _| 0.0);
    let err = three.concat(&four);
    assert_eq!(
        err,
        Err(ShapeError::ConcatShape {
            first: vec![3],
            second: vec![4]
        })
    );
    assert_eq!(
        err.err().map(|e| e.to_string()).as_deref(),
        Some(
            "cannot concatenate a batch of samples of shape (3,) with one of samples of shape (4,)"
        )
    );
    assert!(Target::concat(&four, &three).is_err());

    // The same number of values in another image shape.
    let a = Batch::try_with_shape(
        Image::dynamic(3, 2, 2),
        lazynet::nalgebra::DMatrix::zeros(12, 1),
    )?;
    let b = Batch::try_with_shape(
        Image::dynamic(1, 3, 4),
        lazynet::nalgebra::DMatrix::zeros(12, 1),
    )?;
    assert_eq!(
        a.concat(&b).err().map(|e| e.to_string()).as_deref(),
        Some("cannot concatenate a batch of samples of shape (3, 2, 2) with one of samples of shape (1, 3, 4)")
    );
    assert_eq!(a.concat(&a)?.samples(), 2);

    let four = Labels::try_dynamic(4, vec![0])?;
    let five = Labels::try_dynamic(5, vec![0])?;
    assert_eq!(
        four.concat(&five),
        Err(ShapeError::ConcatClasses {
            first: 4,
            second: 5
        })
    );
    assert_eq!(
        Target::concat(&five, &four)
            .err()
            .map(|e| e.to_string())
            .as_deref(),
        Some("cannot concatenate labels of 5 classes with labels of 4 classes")
    );
    Ok(())
}

#[test]
fn fractions_outside_zero_one_are_errors() -> Result<(), ShapeError> {
    let (x, labels) = dataset(20, 2)?;
    for fraction in [0.0, 1.0, f64::NAN, -0.1, 1.5, f64::INFINITY] {
        let expected = Err(ShapeError::SplitFraction {
            fraction: Fraction(fraction),
        });
        assert_eq!(
            train_test_split(&x, &labels, fraction, 0),
            expected,
            "{fraction}"
        );
        assert_eq!(
            stratified_split(&x, &labels, fraction, 0),
            expected,
            "{fraction}"
        );
    }
    assert_eq!(
        train_test_split(&x, &labels, -0.1, 0)
            .err()
            .map(|e| e.to_string())
            .as_deref(),
        Some("the test fraction is -0.1, but it must be a number strictly between 0 and 1")
    );
    Ok(())
}

#[test]
fn a_split_that_leaves_a_part_empty_is_an_error() -> Result<(), ShapeError> {
    let empty = |fraction, train, test| {
        Err(ShapeError::SplitEmpty {
            fraction: Fraction(fraction),
            train,
            test,
        })
    };
    let (one, one_label) = dataset(1, 2)?;
    assert_eq!(train_test_split(&one, &one_label, 0.2, 0), empty(0.2, 0, 1));
    assert_eq!(stratified_split(&one, &one_label, 0.2, 0), empty(0.2, 0, 1));
    assert_eq!(
        train_test_split(&one, &one_label, 0.2, 0).err().map(|e| e.to_string()).as_deref(),
        Some("a test fraction of 0.2 splits 1 sample into 0 for training and 1 for testing; each part needs at least one sample")
    );
    let (none, no_labels) = dataset(0, 2)?;
    assert_eq!(
        train_test_split(&none, &no_labels, 0.5, 0),
        empty(0.5, 0, 0)
    );
    assert_eq!(
        stratified_split(&none, &no_labels, 0.5, 0),
        empty(0.5, 0, 0)
    );
    // ceil(0.95 · 10) = 10: nothing left to train on.
    let (x, labels) = dataset(10, 2)?;
    assert_eq!(train_test_split(&x, &labels, 0.95, 0), empty(0.95, 0, 10));
    assert_eq!(stratified_split(&x, &labels, 0.95, 0), empty(0.95, 0, 10));
    assert!(train_test_split(&x, &labels, 0.9, 0).is_ok());
    Ok(())
}

#[test]
fn mismatched_sample_counts_are_errors() -> Result<(), ShapeError> {
    let (x, _) = dataset(10, 2)?;
    let labels = Labels::<U2>::try_new(vec![0; 9])?;
    let expected = ShapeError::TargetCount {
        what: "labels",
        samples: 10,
        targets: 9,
    };
    assert_eq!(shuffle(&x, &labels, 0).err(), Some(expected.clone()));
    assert_eq!(
        train_test_split(&x, &labels, 0.5, 0).err(),
        Some(expected.clone())
    );
    assert_eq!(stratified_split(&x, &labels, 0.5, 0).err(), Some(expected));
    let targets = Batch::<U1>::zeros(11);
    assert_eq!(
        train_test_split(&x, &targets, 0.5, 0)
            .err()
            .map(|e| e.to_string())
            .as_deref(),
        Some("the batch has 10 samples but there are 11 targets")
    );
    Ok(())
}

#[test]
fn regression_targets_cannot_be_stratified() -> Result<(), ShapeError> {
    let x = Batch::<U3>::from_fn(20, |f, s| (f + s) as f32);
    let y = Batch::<U1>::from_fn(20, |_, s| s as f32 * 0.5);
    assert_eq!(
        stratified_split(&x, &y, 0.2, 0).err(),
        Some(ShapeError::NotClasses {
            what: "targets",
            sample: 0
        })
    );
    // They split without stratifying.
    assert_eq!(train_test_split(&x, &y, 0.2, 0)?.y_test.samples(), 4);
    assert_eq!(y.class_of(0), None);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_splits_never_panic_and_always_partition(
        n in 0usize..120,
        k in 1usize..6,
        fraction in test_fraction(),
        seed in any::<u64>(),
    ) {
        let (x, labels) = dataset(n, k)?;
        let valid = fraction > 0.0 && fraction < 1.0;
        // scikit-learn's count, and whether it leaves both parts some samples.
        let test = if valid { ((fraction * n as f64).ceil() as usize).min(n) } else { 0 };
        let fits = valid && test >= 1 && test < n;
        for (stratified, result) in [
            (false, train_test_split(&x, &labels, fraction, seed)),
            (true, stratified_split(&x, &labels, fraction, seed)),
        ] {
            match result {
                Ok(split) => {
                    prop_assert!(fits, "{fraction} of {n} split");
                    prop_assert_eq!(split.x_test.samples(), test);
                    prop_assert_eq!(split.x_train.samples(), n - test);
                    assert_partition(&x, &labels, &split)?;
                    if stratified {
                        // Each class holds its exact share of the test samples, rounded
                        // down or up.
                        for class in 0..k {
                            let c = count(&labels, class);
                            let got = count(&split.y_test, class);
                            prop_assert!(got * n >= test * c - (test * c) % n, "class {class}: {got} of {c}");
                            prop_assert!(got * n < test * c + n, "class {class}: {got} of {c}");
                        }
                    }
                }
                Err(ShapeError::SplitFraction { fraction: f }) => {
                    prop_assert!(!valid);
                    prop_assert_eq!(f, Fraction(fraction));
                }
                Err(ShapeError::SplitEmpty { train, test: t, .. }) => {
                    prop_assert!(valid && !fits);
                    prop_assert_eq!((train, t), (n - test, test));
                }
                Err(e) => prop_assert!(false, "unexpected error {e}"),
            }
        }
        let (xs, ls) = shuffle(&x, &labels, seed)?;
        prop_assert_eq!(pairs(&xs, &ls), pairs(&x, &labels));
    }
}
