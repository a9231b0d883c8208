//! Run-time shape errors.

use thiserror::Error;

/// A shape mismatch found at run time.
///
/// Returned by [`Net::try_bind`](crate::Net::try_bind),
/// [`Net::try_forward`](crate::Net::try_forward),
/// [`Batch::try_from_matrix`](crate::Batch::try_from_matrix) and the other checked calls.
/// Every variant names the numbers involved; those about a layer name its index (its position
/// in the net, as in the parameter names `0.weight`) and its kind.
///
/// # Example
/// ```
/// use lazynet::prelude::*;
///
/// let decl = Net::new()
///     .push(Dense::dynamic(256))
///     .push(Relu)
///     .push(Dense::<U10>::with_input::<U30>());
/// match decl.try_bind(20) {
///     Ok(_) => return Err("a 256-wide layer cannot feed one that declares 30 inputs".into()),
///     Err(err) => assert_eq!(
///         err.to_string(),
///         "layer 2 (Dense) declares 30 inputs but receives 256 from the layer before it"
///     ),
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ShapeError {
    /// A net was bound to an input of zero features.
    #[error("the input size must be at least 1, got 0")]
    ZeroInput,

    /// A layer declares an input size that differs from what reaches it.
    #[error("layer {layer} ({kind}) declares {expected} inputs but receives {actual}{}", source_of(*layer))]
    LayerInput {
        /// The layer's index in the net.
        layer: usize,
        /// The layer's kind, e.g. `"Dense"`.
        kind: &'static str,
        /// The input size the layer declares.
        expected: usize,
        /// The size the net delivers to it.
        actual: usize,
    },

    /// A batch has another number of features than the net, or the batch type, expects.
    #[error("the batch has {actual} features per sample but {expected} are expected")]
    Features {
        /// The number of features expected.
        expected: usize,
        /// The number of features (rows) found.
        actual: usize,
    },
}

fn source_of(layer: usize) -> &'static str {
    if layer == 0 {
        " from the input"
    } else {
        " from the layer before it"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_layer_and_both_numbers() {
        let e = ShapeError::LayerInput {
            layer: 0,
            kind: "Dense",
            expected: 20,
            actual: 30,
        };
        assert_eq!(
            e.to_string(),
            "layer 0 (Dense) declares 20 inputs but receives 30 from the input"
        );
        let e = ShapeError::Features {
            expected: 20,
            actual: 30,
        };
        assert_eq!(
            e.to_string(),
            "the batch has 30 features per sample but 20 are expected"
        );
        assert_eq!(
            ShapeError::ZeroInput.to_string(),
            "the input size must be at least 1, got 0"
        );
    }

    #[test]
    fn is_a_std_error() {
        fn takes(_: &dyn std::error::Error) {}
        takes(&ShapeError::ZeroInput);
    }
}
