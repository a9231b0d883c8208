//! Batches from outside the crate: built from rows, read back as classes and probabilities,
//! and every absurd size an error, not a panic or an abort.

use lazynet::nalgebra::DMatrix;
use lazynet::prelude::*;

#[test]
fn rows_in_classes_out_through_a_net() -> Result<(), ShapeError> {
    let net = Net::new()
        .push(Dense::<U8>::new())
        .push(Relu)
        .push(Dense::<U3>::new())
        .seed(3)
        .bind::<U4>();
    let rows = [
        [0.5f32, -1.0, 2.0, 0.0],
        [1.0, 1.0, 1.0, 1.0],
        [-2.0, 0.0, 3.0, 1.5],
    ];
    let x = Batch::<U4>::from_rows(rows.as_flattened())?;
    let logits = net.forward(&x);
    let classes = logits.argmax()?;
    let probabilities = logits.clone().softmax();
    for (j, row) in rows.iter().enumerate() {
        // Each sample alone gives the same class and probabilities as in the batch.
        let one = net.forward(&Batch::<U4>::from_rows(row)?);
        assert_eq!(one.argmax()?, [classes[j]]);
        assert_eq!(one.softmax().sample(0), probabilities.sample(j));
        let p = probabilities.sample(j).ok_or(ShapeError::ZeroInput)?;
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        // The class is the most probable one.
        let best = p.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        assert_eq!(p[classes[j]], best);
    }
    // The run-time-shape path gives the same batch.
    let d = Batch::from_rows_with_shape(Dyn(4), rows.as_flattened())?;
    assert_eq!(d, x.clone().into_dyn());
    assert_eq!(net.try_forward(&d)?.as_matrix(), logits.as_matrix());
    Ok(())
}

#[test]
fn images_from_rows_are_c_h_w_per_sample() -> Result<(), ShapeError> {
    let values: Vec<f32> = (0..2 * 12).map(|v| v as f32).collect();
    let stat = Batch::<Image<U3, U2, U2>>::from_rows(&values)?;
    let dynamic = Batch::from_rows_with_shape(Image::dynamic(3, 2, 2), &values)?;
    assert_eq!(stat.as_matrix(), dynamic.as_matrix());
    assert_eq!(stat.sample(1).map(|s| s[0]), Some(12.0));
    assert_eq!(
        Batch::<Image<U3, U2, U2>>::from_fn(2, |f, s| (12 * s + f) as f32),
        stat
    );
    assert_eq!(
        Batch::from_rows_with_shape(Image::dynamic(3, 2, 2), &values[..13]),
        Err(ShapeError::Features {
            expected: 12,
            actual: 13
        })
    );
    Ok(())
}

#[test]
fn error_messages() {
    let msg = |r: Result<Batch<Dyn>, ShapeError>| r.err().map(|e| e.to_string());
    assert_eq!(
        msg(Batch::from_rows_with_shape(Dyn(4), [0.0; 6])).as_deref(),
        Some("the batch has 6 features per sample but 4 are expected")
    );
    assert_eq!(
        msg(Batch::try_from_fn_dyn(3, usize::MAX, |_, _| 0.0)).as_deref(),
        Some("cannot allocate 55340232221128654845 values for a batch of 18446744073709551615 samples of shape (3,)")
    );
    let image = Batch::try_with_shape(Image::dynamic(1 << 32, 1 << 32, 2), DMatrix::zeros(0, 1));
    assert_eq!(
        image.err().map(|e| e.to_string()).as_deref(),
        Some("the input shape (4294967296, 4294967296, 2) holds more values than one allocation can hold")
    );
    assert_eq!(
        Batch::from_fn_dyn(0, 2, |_, _| 0.0)
            .argmax()
            .err()
            .map(|e| e.to_string())
            .as_deref(),
        Some("argmax needs at least one value per sample, but the batch has 0 features")
    );
}
