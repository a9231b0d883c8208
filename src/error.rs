//! Run-time shape errors.

use thiserror::Error;

use crate::partial::Dims;

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

    /// An image shape a net is bound to has a size of 0.
    #[error(
        "the input shape {} has a size of 0; every size must be at least 1",
        Dims(shape)
    )]
    ZeroSize {
        /// The input shape: `[channels, height, width]`.
        shape: Vec<usize>,
    },

    /// A shape holds more values than one allocation can hold, or than a `usize` counts: the
    /// input shape a net is bound to, or the shape of one sample of a batch.
    #[error(
        "the input shape {} holds more values than one allocation can hold",
        Dims(shape)
    )]
    InputTooLarge {
        /// The input shape.
        shape: Vec<usize>,
    },

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

    /// A kernel (a convolution's, dilation included, or a pooling window) spans more than the
    /// padded input along an axis, so the layer's output would be empty.
    #[error("layer {layer} ({kind}): the kernel spans {span} along the {axis} but the padded input has only {padded}, so the output would be empty")]
    KernelTooLarge {
        /// The layer's index in the net.
        layer: usize,
        /// The layer's kind, e.g. `"Conv2d"`.
        kind: &'static str,
        /// `"height"` or `"width"`.
        axis: &'static str,
        /// The kernel's span: `dilation × (kernel − 1) + 1` (it may exceed `usize::MAX`).
        span: u128,
        /// The input size plus twice the padding (it may exceed `usize::MAX`).
        padded: u128,
    },

    /// A convolution or pooling layer's output size along an axis is more than a `usize` can
    /// count (a huge padding).
    #[error("layer {layer} ({kind}): the output would have {size} values along the {axis}, more than a usize can count")]
    SizeOverflow {
        /// The layer's index in the net.
        layer: usize,
        /// The layer's kind, e.g. `"Conv2d"`.
        kind: &'static str,
        /// `"height"` or `"width"`.
        axis: &'static str,
        /// The output size.
        size: u128,
    },

    /// A kernel size, stride or dilation is 0.
    #[error("layer {layer} ({kind}): the {name} must be at least 1, got 0")]
    ZeroParameter {
        /// The layer's index in the net.
        layer: usize,
        /// The layer's kind, e.g. `"Conv2d"`.
        kind: &'static str,
        /// `"kernel"`, `"stride"` or `"dilation"`.
        name: &'static str,
    },

    /// A pooling layer pads by more than half its window (PyTorch's rule), so a window could
    /// hold padding only.
    #[error("layer {layer} ({kind}): padding {padding} is more than half the kernel {kernel}; every pooling window must hold at least one input value")]
    PoolPadding {
        /// The layer's index in the net.
        layer: usize,
        /// The layer's kind, e.g. `"MaxPool2d"`.
        kind: &'static str,
        /// The padding on each side.
        padding: usize,
        /// The window size.
        kernel: usize,
    },

    /// A layer receives a shape of the wrong rank: a convolution or pooling layer a flat
    /// vector, or a dense layer an image.
    #[error(
        "layer {layer} ({kind}) needs {needs} but receives shape {}",
        Dims(found)
    )]
    Rank {
        /// The layer's index in the net.
        layer: usize,
        /// The layer's kind.
        kind: &'static str,
        /// What the layer needs, in words.
        needs: &'static str,
        /// The shape it receives.
        found: Vec<usize>,
    },

    /// A tensor of a layer (a parameter, its input or output for one sample, a work buffer)
    /// would hold more values than one allocation can hold (`isize::MAX` bytes), or its size
    /// does not fit in a `usize`.
    #[error(
        "layer {layer} ({kind}): {tensor} of shape {} holds more values than one allocation can hold",
        Dims(shape)
    )]
    TooLarge {
        /// The layer's index in the net.
        layer: usize,
        /// The layer's kind.
        kind: &'static str,
        /// What the tensor is: ``"parameter `0.weight`"``, `"input"`, `"output"`,
        /// `"patch buffer"`.
        tensor: String,
        /// The tensor's shape.
        shape: Vec<usize>,
    },

    /// Memory for a tensor could not be had: the allocator refused it, or it needs more bytes
    /// than one allocation can hold. Nothing was changed.
    #[error("cannot allocate {values} values for {what}")]
    OutOfMemory {
        /// What the memory was for, with its shape: ``"parameter `0.weight` of layer 0
        /// (Dense), shape (256, 67108864)"``.
        what: String,
        /// The number of values asked for (`f32`s, or the classes of
        /// [`Batch::argmax`](crate::Batch::argmax)); it may exceed `usize::MAX`.
        values: u128,
    },

    /// A batch of images has another image shape than the net is bound to, though it may hold
    /// as many values.
    #[error(
        "the batch holds images of shape {} but the net was bound to images of shape {}",
        Dims(found),
        Dims(expected)
    )]
    ImageShape {
        /// The net's input shape: `[channels, height, width]`.
        expected: Vec<usize>,
        /// The batch's image shape.
        found: Vec<usize>,
    },

    /// [`Batch::argmax`](crate::Batch::argmax) of a batch with no features: no class to pick.
    #[error("argmax needs at least one value per sample, but the batch has 0 features")]
    NoClasses,

    /// A label names a class the net does not have: labels count from 0, so a net with 10
    /// outputs takes labels 0 to 9.
    #[error("label {label} (sample {index}) is out of range: {}", label_range(*classes))]
    LabelOutOfRange {
        /// The sample whose label it is.
        index: usize,
        /// The label.
        label: usize,
        /// The number of classes.
        classes: usize,
    },

    /// Labels or targets for another number of samples than the batch has.
    #[error("the batch has {samples} samples but there are {targets} {what}")]
    TargetCount {
        /// `"labels"` or `"targets"`.
        what: &'static str,
        /// The samples in the batch.
        samples: usize,
        /// The labels or targets.
        targets: usize,
    },

    /// Labels of another number of classes, or targets of another width, than the net's
    /// output, found at run time (a run-time width on one side).
    #[error("the {what} are {found} wide but the net's output is {expected} wide")]
    TargetWidth {
        /// `"labels"` (their number of classes) or `"targets"`.
        what: &'static str,
        /// The net's output width.
        expected: usize,
        /// The width of the labels or targets.
        found: usize,
    },

    /// A parameter's values that are not laid out as its shape says.
    #[error("parameter `{name}` of shape {} is stored as {} × {} values, but the values given are {} × {}", Dims(shape), expected.0, expected.1, found.0, found.1)]
    ParamShape {
        /// The parameter's name.
        name: String,
        /// Its shape in PyTorch's order.
        shape: Vec<usize>,
        /// The matrix it is stored as: `shape[0] × (shape[1]·…)`.
        expected: (usize, usize),
        /// The matrix given.
        found: (usize, usize),
    },

    /// A layer names two of its parameters alike (two of the same [`Role`](crate::init::Role)).
    #[error("layer {layer} ({kind}) has two parameters named `{name}`; give them distinct roles (`Role::Named`)")]
    DuplicateParam {
        /// The layer's index.
        layer: usize,
        /// The layer's kind.
        kind: &'static str,
        /// The name given twice.
        name: String,
    },

    /// A place of a [`Shared`](crate::layer::Shared) layer receives another input shape than
    /// the place that made its parameters.
    #[error(
        "layer {place} shares the parameters of layer {first}, which were made for input {}, but receives {}",
        Dims(expected),
        Dims(found)
    )]
    TiedInput {
        /// The first place, which made the parameters (`2`, or `3.1` inside a block).
        first: String,
        /// The place that receives another shape.
        place: String,
        /// The input shape of the first place.
        expected: Vec<usize>,
        /// The input shape of this place.
        found: Vec<usize>,
    },

    /// The two branches of a [`Residual`](crate::layer::Residual) block give different
    /// shapes.
    #[error(
        "residual block {layer}: its body gives {} but it is added to {what} {}",
        Dims(body),
        Dims(other)
    )]
    Branch {
        /// The block (`2`, or `3.1` inside another block).
        layer: String,
        /// What the body is added to: `"its input"` or `"the projection's output"`.
        what: &'static str,
        /// The body's output shape.
        body: Vec<usize>,
        /// The shape it is added to.
        other: Vec<usize>,
    },

    /// A batch of a shape that no stem of a net with several stems takes.
    #[error("no stem of the net takes samples of shape {}; its stems take {}", Dims(found), stems.iter().map(|s| Dims(s).to_string()).collect::<Vec<_>>().join(", "))]
    NoStem {
        /// The batch's sample shape.
        found: Vec<usize>,
        /// The shapes the stems take.
        stems: Vec<Vec<usize>>,
    },

    /// Two stems of a net take one input shape: a batch of it could take either.
    #[error(
        "two stems take inputs of shape {}; each stem takes a shape of its own",
        Dims(shape)
    )]
    DuplicateStem {
        /// The shape.
        shape: Vec<usize>,
    },

    /// A layer inside a composite layer (a [`Residual`](crate::layer::Residual) block) does not
    /// fit; the inner error counts layers from the start of the block's branch.
    #[error("in layer {layer} ({kind}), {branch}: {source}")]
    InBlock {
        /// The composite's place (`2`, or `3.1` inside another block).
        layer: String,
        /// Its kind.
        kind: &'static str,
        /// Which branch: `"its body"` or `"its projection"`.
        branch: &'static str,
        /// The error inside it.
        source: Box<ShapeError>,
    },

    /// Two layers of a net give a parameter the same name: names a block was given
    /// ([`Residual::names`](crate::layer::Residual::names)) that clash.
    #[error(
        "{} both have a parameter named `{name}`; give the layers of a block distinct names",
        two_places(first, second)
    )]
    DuplicateName {
        /// The name given twice.
        name: String,
        /// The first layer's place.
        first: String,
        /// The second layer's place.
        second: String,
    },

    /// A name given to a block's layers ([`Residual::names`](crate::layer::Residual::names),
    /// [`Residual::projection_name`](crate::layer::Residual::projection_name)) that cannot be
    /// one.
    #[error(
        "{}: the name `{name}` cannot be used: {reason}",
        block_at(block, layer)
    )]
    BlockName {
        /// What is named: `"residual block"`, `"sequential block"`, `"the net"`.
        block: &'static str,
        /// The block's place (empty for the net).
        layer: String,
        /// The name (or, for too many, the names past the last layer).
        name: String,
        /// Why.
        reason: &'static str,
    },

    /// A sample index past the end of a batch or of labels.
    #[error("sample {index} is past the end: there are {samples} samples")]
    SampleIndex {
        /// The index.
        index: usize,
        /// The number of samples.
        samples: usize,
    },

    /// A layer's kernel or a loss written outside the crate returned a result of another
    /// shape than its contract says.
    #[error("{what} broke its contract: {detail}")]
    Contract {
        /// Which: `layer 2 (Gain)`, `the loss cross-entropy`.
        what: String,
        /// What it returned, and what it should have.
        detail: String,
    },

    /// A training batch that gives a batch normalization one value per feature (a flat batch
    /// of one sample): no variance can be computed (PyTorch refuses it too).
    #[error("layer {layer} ({kind}): a training pass needs more than 1 value per feature to compute a variance, but the batch gives {values}; train on batches of 2 samples or more")]
    BatchTooSmall {
        /// The layer's place.
        layer: String,
        /// Its kind, `BatchNorm`.
        kind: &'static str,
        /// The values per feature the batch gives (samples × pixels).
        values: usize,
    },

    /// A parameter name the net does not have.
    #[error("the net has no parameter `{name}`")]
    NoParam {
        /// The name.
        name: String,
    },

    /// Image targets of another image shape than the net's image output, though as many
    /// values.
    #[error(
        "the targets are images of shape {} but the net outputs images of shape {}",
        Dims(found),
        Dims(expected)
    )]
    TargetImageShape {
        /// The net's output shape.
        expected: Vec<usize>,
        /// The targets' shape.
        found: Vec<usize>,
    },

    /// A loss of a batch of no samples: its mean is not defined.
    #[error("the batch is empty: a loss needs at least one sample")]
    EmptyBatch,

    /// A batch has another number of features than the net, or the batch type, expects.
    #[error("the batch has {actual} features per sample but {expected} are expected")]
    Features {
        /// The number of features expected.
        expected: usize,
        /// The number of features (rows) found.
        actual: usize,
    },

    /// Two batches whose samples have different shapes, given to
    /// [`Batch::concat`](crate::Batch::concat).
    #[error(
        "cannot concatenate a batch of samples of shape {} with one of samples of shape {}",
        Dims(first),
        Dims(second)
    )]
    ConcatShape {
        /// The shape of the first batch's samples.
        first: Vec<usize>,
        /// The shape of the second batch's samples.
        second: Vec<usize>,
    },

    /// Labels of different numbers of classes, given to
    /// [`Labels::concat`](crate::train::Labels::concat).
    #[error("cannot concatenate labels of {first} classes with labels of {second} classes")]
    ConcatClasses {
        /// The number of classes of the first labels.
        first: usize,
        /// The number of classes of the second labels.
        second: usize,
    },

    /// A split's test fraction that is not a number strictly between 0 and 1 (0, 1, a
    /// negative number, an infinity, NaN).
    #[error("the test fraction is {fraction}, but it must be a number strictly between 0 and 1")]
    SplitFraction {
        /// The fraction given.
        fraction: Fraction,
    },

    /// A split that would leave the training or the test part without samples: a test
    /// fraction so small or so large for the number of samples that one part gets them all.
    #[error(
        "a test fraction of {fraction} splits {} into {train} for training and {test} for testing; each part needs at least one sample",
        count_of((*train as u128) + (*test as u128))
    )]
    SplitEmpty {
        /// The test fraction given.
        fraction: Fraction,
        /// The samples the training part would get.
        train: usize,
        /// The samples the test part would get.
        test: usize,
    },

    /// A stratified split of targets that are not classes (a [`Batch`](crate::Batch) of
    /// regression targets): there is nothing to stratify by.
    #[error("a stratified split needs the class of every sample, but sample {sample} of the {what} has none; split {what} that are not classes with train_test_split")]
    NotClasses {
        /// `"targets"` or `"labels"`.
        what: &'static str,
        /// The first sample without a class.
        sample: usize,
    },

    /// A value that must be finite is NaN or infinite: a feature that
    /// [`Standardize`](crate::data::Standardize) measures (a NaN would make the whole feature
    /// NaN).
    #[error("feature {feature} of sample {sample} is not finite (NaN or infinite); {what} needs finite values")]
    NotFinite {
        /// What needs them, e.g. `"standardizing"`.
        what: &'static str,
        /// The feature (row).
        feature: usize,
        /// The sample (column).
        sample: usize,
    },
}

/// A number as given to a split (its test fraction), as [`ShapeError::SplitFraction`] and
/// [`ShapeError::SplitEmpty`] carry it; it displays as the `f64` does.
///
/// It compares by its bits, so that [`ShapeError`] stays `Eq`: a NaN equals itself, and
/// `0.0` and `-0.0` differ.
///
/// # Example
/// ```
/// use lazynet::prelude::*;
/// use lazynet::data::Fraction;
///
/// let x = Batch::<U2>::zeros(10);
/// let err = train_test_split(&x, &x, f64::NAN, 0).err();
/// assert_eq!(err, Some(ShapeError::SplitFraction { fraction: Fraction(f64::NAN) }));
/// # Ok::<(), ShapeError>(())
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Fraction(pub f64);

impl PartialEq for Fraction {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}

impl Eq for Fraction {}

impl core::fmt::Display for Fraction {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Display::fmt(&self.0, f)
    }
}

/// `layers 2 and 3`, or `two layers named 1.fc`: the places of a name clash.
fn two_places(first: &str, second: &str) -> String {
    if first == second {
        format!("two layers named {first}")
    } else {
        format!("layers {first} and {second}")
    }
}

/// `1 sample`, `10 samples`: a count of samples in words, for messages.
fn count_of(samples: u128) -> String {
    match samples {
        1 => "1 sample".to_owned(),
        n => format!("{n} samples"),
    }
}

impl Fault {
    /// The error for layer `layer` of kind `kind`.
    pub(crate) fn at(self, layer: usize, kind: &'static str) -> ShapeError {
        match self {
            Fault::DeclaredInput { expected, actual } => ShapeError::LayerInput {
                layer,
                kind,
                expected,
                actual,
            },
            Fault::Window { axis, span, padded } => ShapeError::KernelTooLarge {
                layer,
                kind,
                axis,
                span,
                padded,
            },
            Fault::Overflow { axis, size } => ShapeError::SizeOverflow {
                layer,
                kind,
                axis,
                size,
            },
            Fault::TooLarge { tensor, shape } => ShapeError::TooLarge {
                layer,
                kind,
                tensor: tensor.to_string(),
                shape,
            },
            Fault::Zero { name } => ShapeError::ZeroParameter { layer, kind, name },
            Fault::PoolPadding { padding, kernel } => ShapeError::PoolPadding {
                layer,
                kind,
                padding,
                kernel,
            },
            Fault::Rank { needs, found } => ShapeError::Rank {
                layer,
                kind,
                needs,
                found,
            },
        }
    }
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
    fn image_messages_name_the_rule_and_numbers() {
        let e = Fault::Window {
            axis: "height",
            span: 5,
            padded: 4,
        }
        .at(3, "Conv2d");
        assert_eq!(
            e.to_string(),
            "layer 3 (Conv2d): the kernel spans 5 along the height but the padded input has only 4, so the output would be empty"
        );
        let e = Fault::Rank {
            needs: "an image (channels, height, width)",
            found: vec![20],
        }
        .at(0, "Conv2d");
        assert_eq!(
            e.to_string(),
            "layer 0 (Conv2d) needs an image (channels, height, width) but receives shape (20,)"
        );
        assert_eq!(
            Fault::PoolPadding { padding: 2, kernel: 3 }.at(1, "MaxPool2d").to_string(),
            "layer 1 (MaxPool2d): padding 2 is more than half the kernel 3; every pooling window must hold at least one input value"
        );
        assert_eq!(
            Fault::Zero { name: "stride" }.at(0, "Conv2d").to_string(),
            "layer 0 (Conv2d): the stride must be at least 1, got 0"
        );
    }

    #[test]
    fn is_a_std_error() {
        fn takes(_: &dyn std::error::Error) {}
        takes(&ShapeError::ZeroInput);
    }
}

/// Why an input does not fit a layer, as [`Layer::output_shape`](crate::layer::Layer::output_shape)
/// reports it; the net adds the layer's index and kind to make a [`ShapeError`].
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// A declared input size differs from what reaches the layer.
    DeclaredInput {
        /// The size the layer declares.
        expected: usize,
        /// The size that reaches it.
        actual: usize,
    },
    /// A kernel spans more than the padded input along an axis.
    Window {
        /// `"height"` or `"width"`.
        axis: &'static str,
        /// The kernel's span, `dilation·(kernel − 1) + 1`.
        span: u128,
        /// The padded input size.
        padded: u128,
    },
    /// An output size along an axis that does not fit in a `usize`.
    Overflow {
        /// `"height"` or `"width"`.
        axis: &'static str,
        /// The exact size.
        size: u128,
    },
    /// A tensor with more values than a `usize` counts.
    TooLarge {
        /// Which tensor: `"input"`, `"output"`, …
        tensor: &'static str,
        /// Its shape.
        shape: Vec<usize>,
    },
    /// A hyper-parameter that must be at least 1 is 0.
    Zero {
        /// Its name, e.g. `"stride"`.
        name: &'static str,
    },
    /// Pooling padding larger than half the kernel.
    PoolPadding {
        /// The padding.
        padding: usize,
        /// The kernel size.
        kernel: usize,
    },
    /// An input of the wrong rank: a flat vector where an image is needed, or the reverse.
    Rank {
        /// What the layer needs, e.g. `"an image"`.
        needs: &'static str,
        /// The shape that reached it.
        found: Vec<usize>,
    },
}

/// A block and its place: `residual block 2`, or `the net`.
fn block_at(block: &str, layer: &str) -> String {
    if layer.is_empty() {
        block.to_owned()
    } else {
        format!("{block} {layer}")
    }
}

/// The labels `classes` classes take, for [`ShapeError::LabelOutOfRange`].
fn label_range(classes: usize) -> String {
    match classes.checked_sub(1) {
        Some(last) => format!("there are {classes} classes, labels 0 to {last}"),
        None => "there are no classes, so no label fits".to_owned(),
    }
}
