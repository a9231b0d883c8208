//! [`Labels`]: the classes of a batch's samples, for [`CrossEntropy`](super::CrossEntropy).

use crate::dim::{Dim, Dyn, StaticDim};
use crate::error::ShapeError;

/// The class of every sample of a batch, each below `C` (the number of classes, a typenum
/// number or [`Dyn`]).
///
/// A net whose output is 10 wide takes `Labels<U10>`: the compiler rejects `Labels<U5>` for
/// it. Every label is checked when the labels are made.
///
/// # Example
/// ```
/// use lazynet::prelude::*;
///
/// let labels = Labels::<U10>::try_new(vec![3, 0, 9, 1])?;
/// assert_eq!(labels.len(), 4);
/// assert!(Labels::<U10>::try_new(vec![10]).is_err());
/// # Ok::<(), ShapeError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Labels<C: Dim> {
    classes: C,
    labels: Vec<usize>,
}

impl<C: StaticDim> Labels<C> {
    /// Labels of `C` classes.
    ///
    /// # Errors
    /// [`ShapeError::LabelOutOfRange`] for a label of `C` or more, naming the first.
    pub fn try_new(labels: Vec<usize>) -> Result<Self, ShapeError> {
        Self::checked(C::default(), labels)
    }
}

impl Labels<Dyn> {
    /// Labels of a number of classes known at run time.
    ///
    /// # Errors
    /// [`ShapeError::LabelOutOfRange`] for a label of `classes` or more, naming the first.
    pub fn try_dynamic(classes: usize, labels: Vec<usize>) -> Result<Self, ShapeError> {
        Self::checked(Dyn(classes), labels)
    }
}

impl<C: Dim> Labels<C> {
    fn checked(classes: C, labels: Vec<usize>) -> Result<Self, ShapeError> {
        let n = classes.size();
        if let Some((index, &label)) = labels.iter().enumerate().find(|(_, &l)| l >= n) {
            return Err(ShapeError::LabelOutOfRange {
                index,
                label,
                classes: n,
            });
        }
        Ok(Labels { classes, labels })
    }

    /// The number of classes.
    pub fn classes(&self) -> usize {
        self.classes.size()
    }

    /// The labels, one per sample.
    pub fn as_slice(&self) -> &[usize] {
        &self.labels
    }

    /// The number of labels.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no labels.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The labels of the samples at `indices`, in that order.
    ///
    /// # Errors
    /// [`ShapeError::SampleIndex`] for an index past the end.
    pub(crate) fn select(&self, indices: &[usize]) -> Result<Self, ShapeError> {
        let mut labels = crate::alloc::try_vec(indices.len()).ok_or(ShapeError::OutOfMemory {
            what: format!("{} labels", indices.len()),
            values: indices.len() as u128,
        })?;
        for &index in indices {
            let label = self.labels.get(index).ok_or(ShapeError::SampleIndex {
                index,
                samples: self.labels.len(),
            })?;
            labels.push(*label);
        }
        Ok(Labels {
            classes: self.classes,
            labels,
        })
    }
}
