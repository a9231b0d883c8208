//! Shapes as far as they are known, and how shapes print: `(256, ?)`, `(256, 20)`, `(256,)`.
//!
//! A leaf: it imports nothing from the crate, so every module that shows a shape can use it.

use core::fmt;

/// A parameter's shape in PyTorch order (`[out, in]` for a dense weight, `[out]` for a bias),
/// displayed as a Python tuple: `(256, 20)`, `(256,)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Dims<'a>(pub &'a [usize]);

impl fmt::Display for Dims<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_tuple(f, self.0.iter().map(|d| d as &dyn fmt::Display))
    }
}

/// Writes items as a Python tuple: `(a, b)`, `(a,)`, `()`.
pub(crate) fn write_tuple<'a>(
    f: &mut fmt::Formatter<'_>,
    items: impl ExactSizeIterator<Item = &'a dyn fmt::Display>,
) -> fmt::Result {
    let one = items.len() == 1;
    f.write_str("(")?;
    for (i, item) in items.enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{item}")?;
    }
    f.write_str(if one { ",)" } else { ")" })
}

/// A shape with unknown places, displayed as `(256, ?)`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PartialShape(pub Vec<Option<usize>>);

impl PartialShape {
    /// A shape whose sizes are all known.
    pub fn from_dims(dims: &[usize]) -> Self {
        PartialShape(dims.iter().copied().map(Some).collect())
    }

    /// The number of values, when every size is known and their product fits in a `usize`.
    pub fn len(&self) -> Option<usize> {
        self.0
            .iter()
            .try_fold(1usize, |n, d| d.and_then(|d| n.checked_mul(d)))
    }

    /// Whether the shape holds no values (`Some(true)`), some (`Some(false)`), or is not known.
    pub fn is_empty(&self) -> Option<bool> {
        self.len().map(|n| n == 0)
    }

    /// The full shape, when every size is known.
    pub fn known(&self) -> Option<Vec<usize>> {
        self.0.iter().copied().collect()
    }

    /// The sizes, with 0 where one is not known: for shapes known to be complete, and for
    /// error messages ([`Fault::Rank`](crate::layer::Fault::Rank)).
    ///
    /// ```
    /// use lazynet::layer::PartialShape;
    ///
    /// assert_eq!(PartialShape(vec![Some(3), None]).or_zero(), [3, 0]);
    /// ```
    pub fn or_zero(&self) -> Vec<usize> {
        self.0.iter().map(|d| d.unwrap_or(0)).collect()
    }

    /// The number of sizes: 1 for a flat vector, 3 for an image.
    pub fn rank(&self) -> usize {
        self.0.len()
    }
}

impl fmt::Display for PartialShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Place(Option<usize>);
        impl fmt::Display for Place {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self.0 {
                    Some(d) => write!(f, "{d}"),
                    None => f.write_str("?"),
                }
            }
        }
        let places: Vec<Place> = self.0.iter().copied().map(Place).collect();
        write_tuple(f, places.iter().map(|p| p as &dyn fmt::Display))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_shapes_show_question_marks() {
        assert_eq!(PartialShape(vec![Some(256), None]).to_string(), "(256, ?)");
        assert_eq!(PartialShape(vec![Some(256)]).to_string(), "(256,)");
        assert_eq!(PartialShape(vec![Some(256), None]).len(), None);
        assert_eq!(PartialShape(vec![Some(10), Some(256)]).len(), Some(2560));
        assert_eq!(
            PartialShape(vec![Some(10), Some(256)]).known(),
            Some(vec![10, 256])
        );
    }
}
