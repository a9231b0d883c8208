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

    /// The labels of the samples at `indices`, in that order, of the same number of classes.
    /// An index may appear more than once, or not at all.
    ///
    /// # Errors
    /// * [`ShapeError::SampleIndex`] naming the first index past the end;
    /// * [`ShapeError::OutOfMemory`] when the new labels cannot be allocated.
    ///
    /// ```
    /// use lazynet::prelude::*;
    ///
    /// let labels = Labels::<U3>::try_new(vec![0, 1, 2, 1])?;
    /// assert_eq!(labels.select(&[3, 0, 3])?.as_slice(), [1, 0, 1]);
    /// assert_eq!(labels.select(&[4]), Err(ShapeError::SampleIndex { index: 4, samples: 4 }));
    /// # Ok::<(), ShapeError>(())
    /// ```
    pub fn select(&self, indices: &[usize]) -> Result<Self, ShapeError> {
        let samples = self.labels.len();
        if let Some(&index) = indices.iter().find(|&&index| index >= samples) {
            return Err(ShapeError::SampleIndex { index, samples });
        }
        let mut labels = try_labels(indices.len())?;
        // Every index was checked against the number of labels above.
        labels.extend(indices.iter().filter_map(|&index| self.labels.get(index)));
        Ok(Labels {
            classes: self.classes,
            labels,
        })
    }

    /// The labels of `self`, then those of `other`.
    ///
    /// # Errors
    /// * [`ShapeError::ConcatClasses`] naming both numbers of classes when they differ (only
    ///   labels of a number of classes known at run time, `Labels<Dyn>`, can differ);
    /// * [`ShapeError::OutOfMemory`] when the new labels cannot be allocated.
    ///
    /// ```
    /// use lazynet::prelude::*;
    ///
    /// let a = Labels::<U3>::try_new(vec![2, 0])?;
    /// let b = Labels::<U3>::try_new(vec![1])?;
    /// assert_eq!(a.concat(&b)?.as_slice(), [2, 0, 1]);
    ///
    /// let four = Labels::try_dynamic(4, vec![3])?;
    /// let five = Labels::try_dynamic(5, vec![4])?;
    /// assert_eq!(
    ///     four.concat(&five).err().map(|e| e.to_string()).as_deref(),
    ///     Some("cannot concatenate labels of 4 classes with labels of 5 classes")
    /// );
    /// # Ok::<(), ShapeError>(())
    /// ```
    pub fn concat(&self, other: &Self) -> Result<Self, ShapeError> {
        let (first, second) = (self.classes(), other.classes());
        if first != second {
            return Err(ShapeError::ConcatClasses { first, second });
        }
        let (a, b) = (self.labels.len(), other.labels.len());
        let len = a.checked_add(b).ok_or_else(|| ShapeError::OutOfMemory {
            what: format!("{a} + {b} labels, more than a usize counts"),
            values: a as u128 + b as u128,
        })?;
        let mut labels = try_labels(len)?;
        labels.extend_from_slice(&self.labels);
        labels.extend_from_slice(&other.labels);
        Ok(Labels {
            classes: self.classes,
            labels,
        })
    }
}

/// An empty vector with room for `len` labels; [`ShapeError::OutOfMemory`] when it cannot be
/// had.
fn try_labels(len: usize) -> Result<Vec<usize>, ShapeError> {
    crate::alloc::try_vec(len).ok_or_else(|| ShapeError::OutOfMemory {
        what: format!("{len} labels"),
        values: len as u128,
    })
}
