//! The compile-time rules, one trait each, named after the rule they check.
//!
//! Each trait is stated on decimal digit lists ([`Num`](crate::decimal::Num)) so that a broken
//! rule prints both sizes in decimal in the headline of the error, at the user's line.

/// Rule: a layer's declared input size equals the size that reaches it.
#[diagnostic::on_unimplemented(
    message = "shape mismatch: a layer declares {Self} inputs but the layer before it (or the bound input) produces {Found}",
    label = "this net does not fit together",
    note = "the numbers are written as their decimal digits: `Num<_2, _5, _6>` is 256",
    note = "make the declared input (`with_input::<…>()`) equal the previous layer's output, or drop it and let binding infer it"
)]
pub trait DeclaredInputMatches<Found> {}

impl<T> DeclaredInputMatches<T> for T {}

/// Rule: a batch has as many features as the net's input.
#[diagnostic::on_unimplemented(
    message = "shape mismatch: the batch has {Self} features but the net was bound to {Expected} inputs",
    label = "wrong batch width for this net",
    note = "the numbers are written as their decimal digits: `Num<_2, _0>` is 20"
)]
pub trait BatchWidthMatches<Expected> {}

impl<T> BatchWidthMatches<T> for T {}

/// Marks a net whose every size check was made by the compiler.
#[derive(Clone, Copy, Debug, Default)]
pub struct Proven;

/// Marks a net that holds a check only run time can make: a run-time width (`Dyn`) meeting a
/// declared input size.
#[derive(Clone, Copy, Debug, Default)]
pub struct AtRunTime;

/// Rule: every size check of the net was made at compile time, so binding cannot fail.
#[diagnostic::on_unimplemented(
    message = "this net has a size check that only run time can make, so `bind` is not offered",
    label = "use `try_bind(n)`, which returns a `Result`",
    note = "a run-time width (`Dense::dynamic`, `with_input_size`) meets a declared input size somewhere in the net"
)]
pub trait CheckedAtCompileTime {}

impl CheckedAtCompileTime for Proven {}

/// Combines the check kinds of two parts of a net: [`Proven`] only when both are.
pub trait Both<B> {
    /// [`Proven`] or [`AtRunTime`].
    type Output;
}

impl Both<Proven> for Proven {
    type Output = Proven;
}
impl Both<AtRunTime> for Proven {
    type Output = AtRunTime;
}
impl<B> Both<B> for AtRunTime {
    type Output = AtRunTime;
}
