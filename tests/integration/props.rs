//! Properties over random widths, input sizes, seeds and batches.

use lazynet::nalgebra::DMatrix;
use lazynet::prelude::*;
use proptest::prelude::*;

use crate::strategies::{random_matrix, snapshot, static_size, static_size_index, widths};
use crate::with_static_size;

/// Dense(w0) → Relu → Dense(w1) → Tanh → Dense(w2) → Sigmoid, widths at run time.
type Mlp = lazynet::Layers![Dense<Dyn>, Relu, Dense<Dyn>, Tanh, Dense<Dyn>, Sigmoid];

fn mlp(w: [usize; 3], seed: u64) -> Net<Uninit, Mlp> {
    Net::new()
        .push(Dense::dynamic(w[0]))
        .push(Relu)
        .push(Dense::dynamic(w[1]))
        .push(Tanh)
        .push(Dense::dynamic(w[2]))
        .push(Sigmoid)
        // Non-zero biases, so that the forward property sees them.
        .initialize(WeightBias::new(
            XavierNormal::default(),
            Uniform::new(-0.5, 0.5).unwrap(),
        ))
        .seed(seed)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn static_run_time_and_first_batch_binding_agree(w in widths(), i in static_size_index(), seed in any::<u64>()) {
        let n = static_size(i);
        let decl = Net::new()
            .push(Dense::dynamic(w[0]))
            .push(Relu)
            .push(Dense::dynamic(w[1]))
            .push(Dense::dynamic(w[2]))
            .initialize(KaimingUniform::default())
            .seed(seed);
        let dynamic = decl.try_bind(n).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let (by_dyn_batch, _) = decl
            .forward_init(&Batch::<Dyn>::from_fn_dyn(n, 1, |_, _| 0.5))
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let (statically, by_static_batch) = with_static_size!(i, |N| {
            let net = decl.clone().bind::<N>();
            let (first_batch, _) = decl.forward_init(&Batch::<N>::zeros(2));
            (snapshot(&net), snapshot(&first_batch))
        });

        let expected_shapes = vec![
            vec![w[0], n], vec![w[0]], vec![w[1], w[0]], vec![w[1]], vec![w[2], w[1]], vec![w[2]],
        ];
        prop_assert_eq!(dynamic.param_shapes(), expected_shapes);
        let count = w[0] * n + w[0] + w[1] * w[0] + w[1] + w[2] * w[1] + w[2];
        prop_assert_eq!(dynamic.param_count(), count);
        prop_assert_eq!(&snapshot(&dynamic), &statically);
        prop_assert_eq!(&snapshot(&by_dyn_batch), &statically);
        prop_assert_eq!(&by_static_batch, &statically);
    }

    #[test]
    fn eager_declaration_gives_the_same_weights(w in 1usize..40, seed in any::<u64>()) {
        let lazy = Net::new().push(Dense::<U16>::new()).push(Relu).push(Dense::dynamic(w)).seed(seed).bind::<U20>();
        let eager = Net::new().push(Dense::<U16>::with_input::<U20>()).push(Relu).push(Dense::dynamic(w)).seed(seed).build();
        let eager_dyn = Net::new()
            .push(Dense::<U16>::new().with_input_size(20))
            .push(Relu)
            .push(Dense::dynamic(w))
            .seed(seed)
            .try_bind(20)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(snapshot(&lazy), snapshot(&eager));
        prop_assert_eq!(snapshot(&lazy), snapshot(&eager_dyn));
    }

    #[test]
    fn run_time_binding_fails_exactly_when_a_declared_size_disagrees(
        n in 0usize..40, d0 in 1usize..40, w0 in 0usize..40, d1 in 0usize..40,
    ) {
        let decl = Net::new()
            .push(Dense::dynamic(w0).with_input_size(d0))
            .push(Relu)
            .push(Dense::<U5>::new().with_input_size(d1));
        let expected = if n == 0 {
            Err(ShapeError::ZeroInput)
        } else if d0 != n {
            Err(ShapeError::LayerInput { layer: 0, kind: "Dense", expected: d0, actual: n })
        } else if d1 != w0 {
            Err(ShapeError::LayerInput { layer: 2, kind: "Dense", expected: d1, actual: w0 })
        } else {
            Ok(())
        };
        prop_assert_eq!(decl.try_bind(n).map(|_| ()), expected);
    }

    #[test]
    fn forward_equals_plain_nalgebra(w in widths(), n in 1usize..30, samples in 0usize..9, seed in any::<u64>()) {
        let net = mlp(w, seed).try_bind(n).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let x = random_matrix(n, samples, seed);
        let y = net.try_forward_matrix(&x).map_err(|e| TestCaseError::fail(e.to_string()))?;

        let p: Vec<&DMatrix<f32>> = net.named_params().map(|(_, m)| m).collect();
        let layer = |w: &DMatrix<f32>, b: &DMatrix<f32>, x: &DMatrix<f32>, f: fn(f32) -> f32| {
            let mut z = w * x;
            for mut col in z.column_iter_mut() {
                col += b.column(0);
            }
            z.map(f)
        };
        let h = layer(p[0], p[1], &x, |v| v.max(0.0));
        let h = layer(p[2], p[3], &h, f32::tanh);
        let expected = layer(p[4], p[5], &h, |v| 1.0 / (1.0 + (-v).exp()));

        prop_assert_eq!(y.as_matrix().shape(), (w[2], samples));
        for (a, b) in y.as_matrix().iter().zip(expected.iter()) {
            prop_assert!((a - b).abs() <= 1e-5, "{} vs {}", a, b);
        }
    }

    #[test]
    fn wrong_feature_counts_are_errors_never_panics(n in 1usize..30, m in 0usize..30, samples in 0usize..4) {
        let net = mlp([3, 4, 5], 1).try_bind(n).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let result = net.try_forward_matrix(&DMatrix::zeros(m, samples));
        if m == n {
            prop_assert_eq!(result.map(|y| y.samples()), Ok(samples));
        } else {
            prop_assert_eq!(result.map(|_| ()), Err(ShapeError::Features { expected: n, actual: m }));
        }
    }
}
