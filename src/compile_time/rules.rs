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
    note = "a run-time width (`Dense::dynamic`, `with_input_size`) meets a declared input size somewhere in the net, or a tied layer (`Shared`) sits where the declaration does not know its width (first in a net or a block, after a convolution, a pooling layer or a run-time width)"
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

/// Rule: a layer's declared input size equals the size the flatten before it produces.
#[diagnostic::on_unimplemented(
    message = "shape mismatch: a layer declares {Self} inputs but the flatten before it produces {Found}",
    label = "this input size does not fit the net",
    note = "sizes are spelled as their decimal digits: `Num<_2, _5, _0, _8, _8>` means 25088",
    note = "a flatten produces channels × height × width of the image it receives; declare that, or drop `with_input::<…>()` and let binding infer it"
)]
pub trait FlattenedInputMatches<Found> {}

impl<T> FlattenedInputMatches<T> for T {}

/// Rule: a kernel (a convolution's, dilation included, or a pooling window) fits in the padded
/// input along `Axis`, so the output is not empty. `Ordering` compares the padded input with
/// the kernel's span.
#[diagnostic::on_unimplemented(
    message = "shape mismatch: the kernel spans {Self} along the {Axis} but the padded input has only {Input}, so the output would be empty",
    label = "the kernel does not fit the image this net is bound to",
    note = "sizes are spelled as their decimal digits: `Num<_2, _8>` means 28",
    note = "a kernel spans dilation × (kernel − 1) + 1 and the padded input is size + 2 × padding: bind a larger image, or use a smaller kernel or dilation, or more padding"
)]
pub trait WindowFits<Input, Axis, Ordering> {}

impl<S, I, A> WindowFits<I, A, typenum::Equal> for S {}
impl<S, I, A> WindowFits<I, A, typenum::Greater> for S {}

/// Rule: pooling padding is at most half the kernel (PyTorch's rule), so that every window
/// holds at least one input value. `Ordering` compares twice the padding with the kernel.
#[diagnostic::on_unimplemented(
    message = "pooling padding {Self} is more than half the kernel {Kernel}",
    label = "every pooling window must hold at least one input value",
    note = "sizes are spelled as their decimal digits: `Num<_3>` means 3",
    note = "use padding ≤ kernel / 2"
)]
pub trait PaddingFitsKernel<Kernel, Ordering> {}

impl<S, K> PaddingFitsKernel<K, typenum::Less> for S {}
impl<S, K> PaddingFitsKernel<K, typenum::Equal> for S {}

/// What reaches a layer, as seen by the rules [`TakesImage`] and [`TakesFlat`]. Wrapping it
/// keeps the rule's own message in the error: rustc reports the outermost bound instead when
/// the rule's type is the net's input type itself.
pub struct Input<T>(core::marker::PhantomData<T>);

/// Rule: a convolution or pooling layer receives an image. Gives the image's three sizes.
#[diagnostic::on_unimplemented(
    message = "a convolution or pooling layer needs an image input, but receives a flat vector",
    label = "this net gives a flat vector to a layer that needs channels × height × width",
    note = "bind the net to an image, `Image<U1, U28, U28>` or `Image::dynamic(1, 28, 28)`, and put no `Flatten` or `Dense` before a convolution or pooling layer"
)]
pub trait TakesImage {
    /// The number of channels.
    type Channels: crate::Dim;
    /// The height.
    type Height: crate::Dim;
    /// The width.
    type Width: crate::Dim;
}

impl<C: crate::Dim, H: crate::Dim, W: crate::Dim> TakesImage for Input<crate::Image<C, H, W>> {
    type Channels = C;
    type Height = H;
    type Width = W;
}

/// A static flat vector reaching a convolution or pooling layer: an implementation whose
/// condition never holds, so that the error states the [`ImageNotFlat`] rule (on `Input<…>`:
/// rustc reports the outermost bound instead when the rule's type is the net's input type).
impl<U, B> TakesImage for Input<typenum::UInt<U, B>>
where
    Input<typenum::UInt<U, B>>: ImageNotFlat,
{
    type Channels = crate::Dyn;
    type Height = crate::Dyn;
    type Width = crate::Dyn;
}

/// A run-time flat vector reaching a convolution or pooling layer, as the static one. With
/// these implementations rustc no longer concludes, from a single one, that every input must
/// be an image: `try_bind(64)` reports the [`ImageNotFlat`] rule instead of a type mismatch on
/// `RunTimeInput::Shape`.
impl<T: RunTimeWidth + ImageNotFlat> TakesImage for Input<T> {
    type Channels = crate::Dyn;
    type Height = crate::Dyn;
    type Width = crate::Dyn;
}

/// [`Dyn`](crate::Dyn), the run-time flat width.
pub trait RunTimeWidth {}

impl RunTimeWidth for crate::Dyn {}

/// Rule: what reaches a convolution or pooling layer is an image, not a flat vector. No flat
/// size implements it.
#[diagnostic::on_unimplemented(
    message = "a convolution or pooling layer needs an image input, but receives a flat vector",
    label = "this net gives a flat vector to a layer that needs channels × height × width",
    note = "bind the net to an image, `Image<U1, U28, U28>` or `try_bind(Image::dynamic(1, 28, 28))` (`try_bind(784)` binds a flat input), and put no `Flatten` or `Dense` before a convolution or pooling layer"
)]
pub trait ImageNotFlat {}

/// Rule: a dense layer receives a flat vector. One implementation per kind of flat size, so
/// that an image finds none and the error states this rule.
#[diagnostic::on_unimplemented(
    message = "a dense layer needs a flat input, but receives an image",
    label = "this net gives an image to a dense layer",
    note = "put `Flatten` between the last convolution or pooling layer and the dense layer"
)]
pub trait TakesFlat {}

impl<U, B> TakesFlat for Input<typenum::UInt<U, B>> {}
impl TakesFlat for Input<typenum::UTerm> {}
impl TakesFlat for Input<crate::Dyn> {}

/// Rule: a batch of images has the image shape the net is bound to, channels, height and width
/// alike (an `(8, 8, 1)` image holds as many values as a `(1, 8, 8)` one, but not in the same
/// places). `Self` is the net's `(channels, height, width)`, `Found` the batch's.
#[diagnostic::on_unimplemented(
    message = "shape mismatch: the batch holds images of shape {Found} but the net was bound to images of shape {Self}",
    label = "wrong image shape for this net",
    note = "shapes are (channels, height, width), each spelled as its decimal digits: `Num<_2, _8>` means 28",
    note = "images are stored channel first (C, H, W); to feed the same values in another layout, reorder them, or pass them as a flat batch (`Batch<U784>`), which is read in C, H, W order"
)]
pub trait BatchImageMatches<Found> {}

impl<T> BatchImageMatches<T> for T {}

/// The layout a batch of shape `Self` needs to run on a net bound to `N`, beyond the number of
/// values (checked by [`BatchWidthMatches`]): a batch of images must have `N`'s image shape;
/// a flat batch, or images on a flat net, are read flat. The bound of
/// [`Net::forward`](crate::Net::forward).
pub trait BatchLayoutFits<N> {}

/// A flat batch: read in C, H, W order whatever the net's input.
impl<U, B, N> BatchLayoutFits<N> for typenum::UInt<U, B> {}

/// A batch of images: the net's input decides ([`TakesImages`]).
impl<C, H, W, N: TakesImages<C, H, W>> BatchLayoutFits<N> for crate::Image<C, H, W> {}

/// A net input that takes a batch of `C × H × W` images (as many values assumed): a flat input,
/// or the same image shape.
pub trait TakesImages<C, H, W> {}

/// A flat input: the images are read flat, in C, H, W order.
impl<U, B, C, H, W> TakesImages<C, H, W> for typenum::UInt<U, B> {}

/// An image input: channels, height and width must all match.
impl<C, H, W, C2, H2, W2> TakesImages<C2, H2, W2> for crate::Image<C, H, W>
where
    C: crate::decimal::Decimal,
    H: crate::decimal::Decimal,
    W: crate::decimal::Decimal,
    C2: crate::decimal::Decimal,
    H2: crate::decimal::Decimal,
    W2: crate::decimal::Decimal,
    (
        crate::decimal::Dec<C>,
        crate::decimal::Dec<H>,
        crate::decimal::Dec<W>,
    ): BatchImageMatches<(
        crate::decimal::Dec<C2>,
        crate::decimal::Dec<H2>,
        crate::decimal::Dec<W2>,
    )>,
{
}

/// A flat size as the training rules compare it: its decimal digits ([`Num`](crate::decimal::Num))
/// when static, [`Dyn`](crate::Dyn) when known only at run time.
pub trait Width {
    /// The digits, or `Dyn`.
    type Output;
}

impl<U, B> Width for typenum::UInt<U, B>
where
    typenum::UInt<U, B>: crate::decimal::Decimal,
{
    type Output = crate::decimal::Dec<typenum::UInt<U, B>>;
}

impl Width for crate::Dyn {
    type Output = crate::Dyn;
}

/// A number written in decimal digits: a static [`Width`].
pub trait Digits {}

impl<A, B, C, D, E, F, G, H, I, J> Digits for crate::decimal::Num<A, B, C, D, E, F, G, H, I, J> {}

/// Rule: labels name as many classes as the net has outputs. Checked by the compiler when both
/// are static, by [`loss_and_grads`](crate::Net::loss_and_grads) when one is a run-time size.
#[diagnostic::on_unimplemented(
    message = "shape mismatch: the labels have {Self} classes but the net's output is {Expected} wide",
    label = "labels of another number of classes than the net's outputs",
    note = "a net whose last layer has 10 outputs takes `Labels<U10>`: one class per output",
    note = "sizes are spelled as their decimal digits: `Num<_1, _0>` means 10"
)]
pub trait ClassesMatch<Expected> {}

impl<T: Digits> ClassesMatch<T> for T {}
impl<T> ClassesMatch<crate::Dyn> for T {}
impl<T: Digits> ClassesMatch<T> for crate::Dyn {}

/// Rule: regression targets are as wide as the net's output. Checked by the compiler when both
/// are static, by [`loss_and_grads`](crate::Net::loss_and_grads) when one is a run-time size.
#[diagnostic::on_unimplemented(
    message = "shape mismatch: the targets have {Self} values per sample but the net's output is {Expected} wide",
    label = "targets of another width than the net's output",
    note = "a net whose last layer has 10 outputs takes `Batch<U10>` targets",
    note = "sizes are spelled as their decimal digits: `Num<_1, _0>` means 10"
)]
pub trait TargetWidthMatches<Expected> {}

impl<T: Digits> TargetWidthMatches<T> for T {}
impl<T> TargetWidthMatches<crate::Dyn> for T {}
impl<T: Digits> TargetWidthMatches<T> for crate::Dyn {}

/// Rule: validation data has as many features per sample as the training data. Checked by
/// the compiler when both are static, by [`fit`](crate::Net::fit) when one is a run-time size.
#[diagnostic::on_unimplemented(
    message = "shape mismatch: the validation batch has {Self} features but the training batch has {Expected}",
    label = "validation data of another width than the training data",
    note = "validation data is evaluated by the same net: a net trained on `Batch<U4>` is validated on `Batch<U4>`",
    note = "sizes are spelled as their decimal digits: `Num<_1, _0>` means 10"
)]
pub trait ValidationWidthMatches<Expected> {}

/// The same width, static or not (and the same unknown width, in generic code).
impl<T> ValidationWidthMatches<T> for T {}
/// A static width meeting a run-time one: checked by `fit`.
impl<T: Digits> ValidationWidthMatches<crate::Dyn> for T {}
/// A run-time width meeting a static one: checked by `fit`.
impl<T: Digits> ValidationWidthMatches<T> for crate::Dyn {}

/// The kind of targets a loss is given, as the loss rules ([`MseTakesTargets`],
/// [`CrossEntropyTakesLabels`]) see it: [`LabelsKind`] or [`TargetsKind`]. The kinds hold no
/// size, so a broken loss rule prints none (typenum would print it in binary). The kind, not
/// the loss, is the rules' `Self`: rustc reports the outer `Loss<…>` bound instead when the
/// rule's type is the loss itself (as with [`Input`]).
pub trait Kind {
    /// [`LabelsKind`] or [`TargetsKind`].
    type Output;
}

/// The kind of [`Labels`](crate::train::Labels): one class per sample.
#[derive(Clone, Copy, Debug)]
pub struct LabelsKind;

/// The kind of a [`Batch`](crate::Batch) of targets: values as wide as the output.
#[derive(Clone, Copy, Debug)]
pub struct TargetsKind;

/// Labels, whatever their number of classes.
impl<C: crate::Dim> Kind for crate::train::Labels<C> {
    type Output = LabelsKind;
}

/// A batch of targets, whatever its shape.
impl<S: crate::Shape> Kind for crate::Batch<S> {
    type Output = TargetsKind;
}

/// Rule: [`Mse`](crate::train::Mse) compares the output with a [`Batch`](crate::Batch) of
/// targets. `Self` is the kind of targets it is given.
#[diagnostic::on_unimplemented(
    message = "`Mse` compares the output with a `Batch` of targets, not with `Labels`: use `CrossEntropy` for labels",
    label = "`Mse` needs a `Batch` of targets as wide as the net's output",
    note = "`Mse` is for regression: a net with 10 outputs takes `Batch<U10>` targets, 10 values per sample",
    note = "`CrossEntropy` is for classification: it reads the output as logits and takes `Labels<U10>`, one class per sample"
)]
pub trait MseTakesTargets {}

impl MseTakesTargets for TargetsKind {}

/// Rule: [`CrossEntropy`](crate::train::CrossEntropy) compares the output with
/// [`Labels`](crate::train::Labels). `Self` is the kind of targets it is given.
#[diagnostic::on_unimplemented(
    message = "`CrossEntropy` compares the output with `Labels`, not with a `Batch` of targets: use `Mse` for targets",
    label = "`CrossEntropy` needs `Labels`, one class per sample",
    note = "`CrossEntropy` is for classification: a net with 10 outputs takes `Labels<U10>`; one-hot targets become labels with `Labels::<U10>::try_new(targets.argmax()?)`",
    note = "`Mse` is for regression: it compares the output with a `Batch` of targets as wide as the output"
)]
pub trait CrossEntropyTakesLabels {}

impl CrossEntropyTakesLabels for LabelsKind {}

/// A shape as the composition rules ([`BranchShapesMatch`]) compare it: a flat size's decimal
/// digits ([`Num`](crate::decimal::Num)) or [`Dyn`](crate::Dyn), or an image's three, as
/// [`ImageKey`].
pub trait ShapeKey {
    /// The digits, `Dyn`, or an [`ImageKey`] of them.
    type Key;
}

impl<U, B> ShapeKey for typenum::UInt<U, B>
where
    typenum::UInt<U, B>: crate::decimal::Decimal,
{
    type Key = crate::decimal::Dec<typenum::UInt<U, B>>;
}

impl ShapeKey for crate::Dyn {
    type Key = crate::Dyn;
}

impl<C: Width, H: Width, W: Width> ShapeKey for crate::Image<C, H, W> {
    type Key = ImageKey<C::Output, H::Output, W::Output>;
}

/// An image's channels, height and width as [`ShapeKey`] compares them, each its decimal
/// digits or [`Dyn`](crate::Dyn).
pub struct ImageKey<C, H, W>(core::marker::PhantomData<(C, H, W)>);

/// Rule: the two branches that a residual block adds up give one shape: the body and the
/// block's input (`x + body(x)`), or the body and the projection (`body(x) + projection(x)`).
/// `Self` is the body's output, `Other` what it is added to.
#[diagnostic::on_unimplemented(
    message = "shape mismatch: a residual block's body gives {Self} features but they are added to {Other} features",
    label = "the two branches of this residual block give different shapes",
    note = "sizes are spelled as their decimal digits: `Num<_1, _6>` means 16",
    note = "`Residual::new(body)` adds the body's output to its input, so the body must give the shape it receives; give it a projection (`Residual::with_projection(body, projection)`) to change the shape"
)]
pub trait BranchShapesMatch<Other> {
    /// [`Proven`], or [`AtRunTime`] when a size is known only at run time.
    type Checks;
}

impl<T: Digits> BranchShapesMatch<T> for T {
    type Checks = Proven;
}
impl<T: Digits> BranchShapesMatch<crate::Dyn> for T {
    type Checks = AtRunTime;
}
impl<T: Digits> BranchShapesMatch<T> for crate::Dyn {
    type Checks = AtRunTime;
}
impl BranchShapesMatch<crate::Dyn> for crate::Dyn {
    type Checks = AtRunTime;
}

/// Images: channels, height and width each match.
impl<C, H, W, C2, H2, W2> BranchShapesMatch<ImageKey<C2, H2, W2>> for ImageKey<C, H, W>
where
    C: BranchChannelsMatch<C2>,
    H: BranchHeightsMatch<H2>,
    W: BranchWidthsMatch<W2>,
    C::Checks: Both<H::Checks>,
    <C::Checks as Both<H::Checks>>::Output: Both<W::Checks>,
{
    type Checks = <<C::Checks as Both<H::Checks>>::Output as Both<W::Checks>>::Output;
}

/// Writes one of the image rules of a residual block, per axis, with the axis in its message.
macro_rules! branch_axis_rule {
    ($(#[$doc:meta])* $rule:ident, $message:literal) => {
        $(#[$doc])*
        #[diagnostic::on_unimplemented(
            message = $message,
            label = "the two branches of this residual block give images of different shapes",
            note = "sizes are spelled as their decimal digits: `Num<_1, _6>` means 16",
            note = "`Residual::new(body)` adds the body's output to its input, so the body must give the shape it receives (a convolution with padding `(k − 1) / 2` and stride 1 keeps height and width); give it a projection (`Residual::with_projection(body, projection)`) to change the shape"
        )]
        pub trait $rule<Other> {
            /// [`Proven`], or [`AtRunTime`] when a size is known only at run time.
            type Checks;
        }
        impl<T: Digits> $rule<T> for T {
            type Checks = Proven;
        }
        impl<T: Digits> $rule<crate::Dyn> for T {
            type Checks = AtRunTime;
        }
        impl<T: Digits> $rule<T> for crate::Dyn {
            type Checks = AtRunTime;
        }
        impl $rule<crate::Dyn> for crate::Dyn {
            type Checks = AtRunTime;
        }
    };
}

branch_axis_rule!(
    /// Rule: the two branches of a residual block give images of one number of channels.
    BranchChannelsMatch,
    "shape mismatch: a residual block's body gives images of {Self} channels but they are added to images of {Other} channels"
);
branch_axis_rule!(
    /// Rule: the two branches of a residual block give images of one height.
    BranchHeightsMatch,
    "shape mismatch: a residual block's body gives images of height {Self} but they are added to images of height {Other}"
);
branch_axis_rule!(
    /// Rule: the two branches of a residual block give images of one width.
    BranchWidthsMatch,
    "shape mismatch: a residual block's body gives images of width {Self} but they are added to images of width {Other}"
);

/// Rule: every place of a [`Shared`](crate::layer::Shared) layer receives the width the set
/// was made for. `Self` is the width reaching this place, `Made` the width its first place
/// after a static width receives.
#[diagnostic::on_unimplemented(
    message = "shape mismatch: a tied layer receives {Self} inputs here but its parameters were made for {Made}",
    label = "this place of the `Shared` layer receives another width than its first place",
    note = "sizes are spelled as their decimal digits: `Num<_1, _6>` means 16",
    note = "every clone of one `Shared` computes with the same parameters, so each must receive the width they were made for"
)]
pub trait TiedInputMatches<Made> {}

impl<T> TiedInputMatches<T> for T {}

/// Rule: the layer `L` receives a flat vector (a layer written with
/// [`shape_rule!(L, flat -> same)`](crate::shape_rule)). One implementation per kind of flat
/// size, so that an image finds none and the error states this rule.
#[diagnostic::on_unimplemented(
    message = "`{L}` needs a flat input, but receives an image",
    label = "this net gives an image to a layer that takes flat vectors",
    note = "put `Flatten` before it"
)]
pub trait NeedsFlat<L> {}

impl<U, B, L> NeedsFlat<L> for Input<typenum::UInt<U, B>> {}
impl<L> NeedsFlat<L> for Input<typenum::UTerm> {}
impl<L> NeedsFlat<L> for Input<crate::Dyn> {}

/// Rule: the layer `L` receives an image (a layer written with
/// [`shape_rule!(L, image -> same)`](crate::shape_rule)).
#[diagnostic::on_unimplemented(
    message = "`{L}` needs an image input, but receives a flat vector",
    label = "this net gives a flat vector to a layer that takes images",
    note = "bind the net to an image, `Image<U1, U28, U28>` or `Image::dynamic(1, 28, 28)`, and put no `Flatten` or `Dense` before it"
)]
pub trait NeedsImage<L> {}

impl<C: crate::Dim, H: crate::Dim, W: crate::Dim, L> NeedsImage<L>
    for Input<crate::Image<C, H, W>>
{
}
