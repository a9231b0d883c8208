//! The compile-time rules, one trait each, named after the rule they check.
//!
//! Each trait is stated on decimal digit lists ([`Num`](crate::decimal::Num)) so that a broken
//! rule prints both sizes in decimal in the headline of the error, at the user's line.

/// Rule: a layer's declared input size equals the width of the layer before it.
#[diagnostic::on_unimplemented(
    message = "shape mismatch: a layer declares {Self} inputs but the layer before it outputs {Found}",
    label = "this layer does not fit after the one before it",
    note = "sizes are spelled as their decimal digits: `Num<_2, _5, _6>` means 256",
    note = "make the declared input (`with_input::<…>()`) equal the previous layer's width, or drop it and let binding infer it"
)]
pub trait DeclaredInputMatches<Found> {}

impl<T> DeclaredInputMatches<T> for T {}

/// Rule: a layer's declared input size equals the input size the net is bound to (when only
/// shape-keeping layers stand before it).
#[diagnostic::on_unimplemented(
    message = "shape mismatch: a layer declares {Self} inputs but the net is bound to {Found} inputs",
    label = "this input size does not fit the net",
    note = "sizes are spelled as their decimal digits: `Num<_2, _0>` means 20",
    note = "bind to the size the first dense layer declares, or drop its `with_input::<…>()`"
)]
pub trait BoundInputMatches<Found> {}

impl<T> BoundInputMatches<T> for T {}

/// Rule: a batch has as many features as the net's input.
#[diagnostic::on_unimplemented(
    message = "shape mismatch: the batch has {Self} features but the net was bound to {Expected} inputs",
    label = "wrong batch width for this net",
    note = "sizes are spelled as their decimal digits: `Num<_2, _0>` means 20"
)]
pub trait BatchWidthMatches<Expected> {}

impl<T> BatchWidthMatches<T> for T {}

/// Rule: a single sample has as many features as the net's input.
#[diagnostic::on_unimplemented(
    message = "shape mismatch: the sample has {Self} features but the net was bound to {Expected} inputs",
    label = "wrong sample width for this net",
    note = "sizes are spelled as their decimal digits: `Num<_2, _0>` means 20"
)]
pub trait SampleWidthMatches<Expected> {}

impl<T> SampleWidthMatches<T> for T {}

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
