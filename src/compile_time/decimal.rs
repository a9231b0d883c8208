//! Sizes written in decimal at the type level, so that compile errors state numbers a person
//! can read (`Num<_2, _5, _6>` for 256) instead of typenum's binary
//! (`UInt<UInt<UInt<…, B0>, B0>, B0>`).
//!
//! A typenum number is turned into its digit list by repeated `/ 10` and `% 10`, and the
//! compatibility rules are stated on the digit lists: when a rule fails, rustc prints the two
//! digit lists in the headline of the error. Nothing here exists at run time.

#![allow(non_camel_case_types)]

use core::ops::{Div, Rem};
use typenum::{
    Cmp, Compare, Equal, Greater, Less, Mod, Quot, UInt, UTerm, U0, U1, U10, U2, U3, U4, U5, U6,
    U7, U8, U9,
};

macro_rules! digits {
    ($($u:ident => $d:ident),* $(,)?) => {
        $(
            #[doc = concat!("The decimal digit ", stringify!($d), " in a [`Num`].")]
            #[derive(Debug)]
            pub struct $d;
            impl Digit for $d {}
            impl ToDigit for $u {
                type Digit = $d;
            }
        )*
    };
}

/// A decimal digit type (`_0` … `_9`).
#[doc(hidden)]
pub trait Digit {}

/// Maps typenum `U0` … `U9` to a digit type.
#[doc(hidden)]
pub trait ToDigit {
    /// The digit.
    type Digit: Digit;
}

digits!(U0 => _0, U1 => _1, U2 => _2, U3 => _3, U4 => _4, U5 => _5, U6 => _6, U7 => _7, U8 => _8, U9 => _9);

/// An unused digit place of a [`Num`]; never printed, since it is the default.
#[derive(Debug)]
pub struct __;

/// A number written as its decimal digits, most significant first: `Num<_2, _5, _6>` is 256.
///
/// Only ever seen in compile errors.
#[derive(Debug)]
#[allow(clippy::type_complexity)]
pub struct Num<A, B = __, C = __, D = __, E = __, F = __, G = __, H = __, I = __, J = __>(
    A,
    B,
    C,
    D,
    E,
    F,
    G,
    H,
    I,
    J,
);

/// Appends a digit to a [`Num`].
#[doc(hidden)]
pub trait Push<X> {
    /// The longer number.
    type Output;
}

macro_rules! push {
    ($($have:ident)*) => {
        impl<X: Digit, $($have: Digit),*> Push<X> for Num<$($have),*> {
            type Output = Num<$($have,)* X>;
        }
    };
}
push!(A);
push!(A B);
push!(A B C);
push!(A B C D);
push!(A B C D E);
push!(A B C D E F);
push!(A B C D E F G);
push!(A B C D E F G H);
push!(A B C D E F G H I);

/// The decimal form of a typenum number.
pub trait Decimal {
    /// Its digit list, a [`Num`].
    type Output;
}

/// [`Decimal`], dispatched on how the number compares with ten.
pub trait DecimalBy<Ordering> {
    /// Its digit list, a [`Num`].
    type Output;
}

/// The digit list of `N`.
pub type Dec<N> = <N as Decimal>::Output;

/// Zero.
impl Decimal for UTerm {
    type Output = Num<_0>;
}

/// Any other number: dispatched on how it compares with ten.
impl<U, B> Decimal for UInt<U, B>
where
    UInt<U, B>: Cmp<U10> + DecimalBy<Compare<UInt<U, B>, U10>>,
{
    type Output = <UInt<U, B> as DecimalBy<Compare<UInt<U, B>, U10>>>::Output;
}

/// When the number is below ten: one digit.
impl<N: ToDigit> DecimalBy<Less> for N {
    type Output = Num<N::Digit>;
}

macro_rules! many_digits {
    ($ord:ident) => {
        /// When the number is ten or more: the digits of `N / 10`, then `N % 10`.
        impl<N> DecimalBy<$ord> for N
        where
            N: Div<U10> + Rem<U10>,
            Quot<N, U10>: Decimal,
            Mod<N, U10>: ToDigit,
            Dec<Quot<N, U10>>: Push<<Mod<N, U10> as ToDigit>::Digit>,
        {
            type Output = <Dec<Quot<N, U10>> as Push<<Mod<N, U10> as ToDigit>::Digit>>::Output;
        }
    };
}
many_digits!(Equal);
many_digits!(Greater);

#[cfg(test)]
mod tests {
    use super::*;
    use typenum::{U1024, U256, U784};

    fn same<A, B>()
    where
        A: Same<B>,
    {
    }
    trait Same<T> {}
    impl<T> Same<T> for T {}

    #[test]
    fn numbers_become_their_digits() {
        same::<Dec<U0>, Num<_0>>();
        same::<Dec<U9>, Num<_9>>();
        same::<Dec<U10>, Num<_1, _0>>();
        same::<Dec<U256>, Num<_2, _5, _6>>();
        same::<Dec<U784>, Num<_7, _8, _4>>();
        same::<Dec<U1024>, Num<_1, _0, _2, _4>>();
        same::<Dec<typenum::U1000000000>, Num<_1, _0, _0, _0, _0, _0, _0, _0, _0, _0>>();
    }
}
