//! Dimensions: a size known to the compiler (a typenum number such as [`U20`](crate::U20))
//! or a size known only at run time ([`Dyn`]).

use core::fmt;

use typenum::{Bit, UInt, UTerm, Unsigned};

use crate::spatial::Lift;

/// Any dimension: a typenum number (`U1`, `U20`, `U784`, …) or a run-time [`Dyn`].
///
/// Every layer, batch and net is generic over `Dim`, so the same declaration serves sizes
/// fixed at compile time and sizes read at run time.
///
/// # Example
/// ```
/// use lazynet::prelude::*;
///
/// assert_eq!(U20::default().size(), 20);
/// assert_eq!(Dyn(20).size(), 20);
/// ```
pub trait Dim: Copy + Default + fmt::Debug + Send + Sync + Lift + 'static {
    /// The size this dimension stands for.
    fn size(&self) -> usize;

    /// Whether the compiler knows the size (`true` for typenum numbers, `false` for [`Dyn`]).
    const IS_STATIC: bool;

    /// Makes the dimension from a run-time size; `None` when a static dimension's size differs.
    fn from_size(size: usize) -> Option<Self>;
}

/// A dimension the compiler knows: every typenum number from `U1` up (`U0` is not a size).
///
/// Numbers that typenum does not name (it names `U0`–`U1024`, powers of two and of ten) are
/// written as arithmetic: `lazynet::typenum::op!(U32 * U36)` or `lazynet::typenum::Sum<U1000, U24>`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a size the compiler knows",
    label = "expected a typenum number such as `U20`",
    note = "static sizes are typenum numbers `U1`, `U2`, …, `U1024` (or `op!(U32 * U36)`); `U0` is not a size; use `Dyn` and the `try_` methods for sizes known only at run time"
)]
pub trait StaticDim: Dim + Unsigned {}

impl<U: Unsigned, B: Bit> Dim for UInt<U, B>
where
    UInt<U, B>: Unsigned + Copy + Default + fmt::Debug + Send + Sync + 'static,
{
    fn size(&self) -> usize {
        static_size::<Self>()
    }

    const IS_STATIC: bool = true;

    fn from_size(size: usize) -> Option<Self> {
        (size == static_size::<Self>()).then(Self::default)
    }
}

/// The size of a typenum number, which must fit in a `usize`: typenum's own `USIZE` keeps only
/// the low bits of a larger number (`2^64 + 3` would be 3), so a larger one is a compile error
/// ("a static size must be at most usize::MAX") wherever its size is used.
fn static_size<N: Unsigned>() -> usize {
    const {
        assert!(
            N::U128 <= usize::MAX as u128,
            "a static size must be at most usize::MAX"
        )
    };
    N::USIZE
}

/// `U0` is a dimension, so that rules can name it, but not a [`StaticDim`]: no net is bound
/// to zero inputs and no static layer has zero width.
impl Dim for UTerm {
    fn size(&self) -> usize {
        0
    }

    const IS_STATIC: bool = true;

    fn from_size(size: usize) -> Option<Self> {
        (size == 0).then_some(UTerm)
    }
}

impl<U: Unsigned, B: Bit> StaticDim for UInt<U, B> where UInt<U, B>: Dim + Unsigned {}

/// A dimension whose size is known only at run time.
///
/// Nets bound to a `Dyn` input are made with [`Net::try_bind`](crate::Net::try_bind) and run
/// with [`Net::try_forward`](crate::Net::try_forward): every check happens when they are
/// called and a mismatch is a [`ShapeError`](crate::ShapeError), never a panic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Dyn(pub usize);

impl Dim for Dyn {
    fn size(&self) -> usize {
        self.0
    }

    const IS_STATIC: bool = false;

    fn from_size(size: usize) -> Option<Self> {
        Some(Dyn(size))
    }
}

impl fmt::Display for Dyn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use typenum::{U1, U1024, U20, U784};

    #[test]
    fn static_sizes_are_their_numbers() {
        assert_eq!(U1::default().size(), 1);
        assert_eq!(U20::default().size(), 20);
        assert_eq!(U784::default().size(), 784);
        assert_eq!(U1024::default().size(), 1024);
        const { assert!(<U20 as Dim>::IS_STATIC) };
    }

    #[test]
    fn from_size_checks_static_sizes() {
        assert_eq!(U20::from_size(20), Some(U20::default()));
        assert_eq!(U20::from_size(21), None);
        assert_eq!(Dyn::from_size(21), Some(Dyn(21)));
        const { assert!(!<Dyn as Dim>::IS_STATIC) };
    }

    #[test]
    fn arithmetic_sizes_work() {
        use typenum::{U32, U36};
        type S = typenum::op!(U32 * U36);
        assert_eq!(S::default().size(), 1152);
        assert_eq!(UTerm.size(), 0);
    }
}
