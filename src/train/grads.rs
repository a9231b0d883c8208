//! [`Grads`]: the gradient of every parameter of a net.

use nalgebra::DMatrix;

/// The gradient of the loss with respect to every parameter of a net, in the order, with the
/// names and shapes, of [`Net::named_params`](crate::Net::named_params). Made by
/// [`Net::loss_and_grads`](crate::Net::loss_and_grads), used by an optimizer's `step`.
///
/// It also carries the buffers the training pass computed (the new running statistics of a
/// [`BatchNorm`](crate::layer::BatchNorm)), as values: the step writes them. Gradients kept
/// across a `load` would write the statistics computed before it; compute them again.
#[derive(Clone, Debug, PartialEq)]
pub struct Grads {
    pub(crate) names: Vec<String>,
    pub(crate) values: Vec<DMatrix<f32>>,
    /// Which parameters the batch reached (`None`: all): a net with several stems gives no
    /// gradient to the stems a batch does not run through, and a step leaves them alone.
    pub(crate) reached: Option<Vec<bool>>,
    /// The buffers the training pass changed (a batch normalization's running statistics):
    /// per node, all of its buffers' new values. An optimizer step writes them.
    pub(crate) buffers: Vec<(usize, Vec<crate::layer::Buffer>)>,
}

impl Grads {
    /// Every gradient with its parameter's name, in order: `("0.weight", dW)`, …, each shaped
    /// as its parameter (`out × in` for a dense weight, a column for a bias).
    pub fn named_grads(&self) -> impl ExactSizeIterator<Item = (&str, &DMatrix<f32>)> + '_ {
        self.names.iter().map(String::as_str).zip(&self.values)
    }

    /// The gradient of the parameter `name`.
    pub fn get(&self, name: &str) -> Option<&DMatrix<f32>> {
        let i = self.names.iter().position(|n| n == name)?;
        self.values.get(i)
    }

    /// Whether the batch reached the parameter `name`: `false` for a stem of a net with
    /// [stems](crate::stems) that the batch did not run through (its gradient is zeros, and an
    /// optimizer step leaves it alone) and for a name the net does not have.
    pub fn reached(&self, name: &str) -> bool {
        let Some(i) = self.names.iter().position(|n| n == name) else {
            return false;
        };
        self.reached
            .as_ref()
            .is_none_or(|r| r.get(i) == Some(&true))
    }

    /// The number of gradients (of parameters).
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether there are none: the net has no parameters.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The first parameter whose gradient holds NaN or an infinity, if any.
    pub fn first_not_finite(&self) -> Option<&str> {
        self.named_grads()
            .find(|(_, g)| not_finite(g.as_slice()))
            .map(|(name, _)| name)
    }
}

/// Whether any value is NaN or infinite (all exponent bits set), in blocks of integer
/// operations the compiler vectorizes.
fn not_finite(values: &[f32]) -> bool {
    const EXPONENT: u32 = 0x7f80_0000;
    values.chunks(256).any(|block| {
        block.iter().fold(0u32, |acc, v| {
            acc | u32::from(v.to_bits() & EXPONENT == EXPONENT)
        }) != 0
    })
}
