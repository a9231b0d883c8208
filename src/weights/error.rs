//! What goes wrong when weights are loaded or saved.

use std::path::PathBuf;

use thiserror::Error;

use crate::error::ShapeError;
use crate::init::Dims;
use crate::layer::PartialShape;

/// The data types lazynet converts to `f32`, for error messages.
const READABLE: &str = "F32, F16, BF16 and F64";

/// Why a safetensors file could not be loaded into a net.
///
/// Every variant names what was expected and what was found; those about one tensor name it.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The file could not be read: it does not exist, cannot be opened, or memory to hold it
    /// could not be had.
    #[error("cannot read `{}`: {source}", path.display())]
    Io {
        /// The path given.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },

    /// The path names something other than a regular file (a directory, a device, a FIFO, a
    /// socket), which is refused before it is read: a device such as `/dev/zero` never ends and
    /// opening a FIFO waits for a writer.
    #[error("cannot read `{}`: it is {kind}, not a regular file", path.display())]
    NotAFile {
        /// The path given.
        path: PathBuf,
        /// What it is: `"a directory"`, `"a character device"`, `"a block device"`,
        /// `"a FIFO (named pipe)"`, `"a socket"` or `"a special file"`.
        kind: &'static str,
    },

    /// The file is empty.
    #[error("the file is empty; a safetensors file starts with an 8-byte header length")]
    Empty,

    /// The file is shorter than the 8-byte header length every safetensors file starts with.
    #[error("the file has {len} bytes, fewer than the 8-byte header length a safetensors file starts with")]
    TooShort {
        /// The file's length in bytes.
        len: usize,
    },

    /// The header length (the file's first 8 bytes) is larger than the rest of the file.
    #[error("the header length says {declared} bytes but only {available} bytes follow it; the file is truncated or not a safetensors file")]
    HeaderLength {
        /// The header length the file declares.
        declared: u64,
        /// The bytes after the header length.
        available: usize,
    },

    /// The header is not a valid safetensors header: not UTF-8, not JSON, or JSON that does
    /// not describe tensors.
    #[error("invalid header: {reason}")]
    Header {
        /// What is wrong with it.
        reason: String,
    },

    /// A tensor's data does not start where the previous tensor's data ends: the two overlap,
    /// or there is a gap between them, or its offsets end before they start.
    #[error("tensor `{name}`: {}", offsets_fault(*start, *end, *previous_end))]
    Offsets {
        /// The tensor.
        name: String,
        /// Its first data offset.
        start: usize,
        /// Its last data offset.
        end: usize,
        /// Where the previous tensor's data ends (0 for the first tensor).
        previous_end: usize,
    },

    /// A tensor's data offsets span a different number of bytes than its shape and data type
    /// need.
    #[error("tensor `{name}`: shape {} of {dtype} needs {} bytes but its data offsets span {found}", Dims(shape), bytes_needed(*expected))]
    DataLength {
        /// The tensor.
        name: String,
        /// Its data type, as the file names it (`F32`).
        dtype: String,
        /// Its shape.
        shape: Vec<usize>,
        /// The bytes its shape and type need; `None` when that number overflows.
        expected: Option<usize>,
        /// The bytes its offsets span.
        found: usize,
    },

    /// A tensor's data runs past the end of the file.
    #[error("tensor `{name}`: its data ends at byte {end} of the data section but the file holds only {available} bytes of data; the file is truncated")]
    PastEnd {
        /// The tensor.
        name: String,
        /// Its last data offset.
        end: usize,
        /// The bytes after the header.
        available: usize,
    },

    /// The file holds more bytes after the header than its tensors use.
    #[error(
        "the header describes {described} bytes of tensor data but {available} bytes follow it"
    )]
    TrailingData {
        /// The bytes the tensors use.
        described: usize,
        /// The bytes after the header.
        available: usize,
    },

    /// Memory for a tensor's values, converted to `f32`, could not be had: the allocator
    /// refused it, or it needs more bytes than one allocation can hold.
    #[error("tensor `{name}`: cannot allocate {bytes} bytes for its values as f32")]
    OutOfMemory {
        /// The tensor.
        name: String,
        /// The bytes asked for (it may exceed `usize::MAX`).
        bytes: u128,
    },

    /// A count (`num_batches_tracked`) stored as another type than `int64`.
    #[error("tensor `{name}` is a count and must be I64 (as PyTorch writes `num_batches_tracked`), but has data type {dtype}")]
    CountDtype {
        /// The tensor.
        name: String,
        /// Its data type, as the file names it (`F32`).
        dtype: String,
    },

    /// A tensor the net needs has a data type that is not converted to `f32`.
    #[error("tensor `{name}` has data type {dtype}; lazynet loads {READABLE}")]
    Dtype {
        /// The tensor.
        name: String,
        /// Its data type, as the file names it (`I64`).
        dtype: String,
    },

    /// The file has no tensor for one of the net's parameters.
    #[error("the file has no tensor `{name}`; the net expects one of shape {expected}")]
    Missing {
        /// The parameter.
        name: String,
        /// Its shape (`?` for a size not known before binding).
        expected: PartialShape,
    },

    /// The file has tensors the net has no parameter for. Allowed with
    /// [`LoadOptions::allow_unexpected`](super::LoadOptions::allow_unexpected).
    #[error("the file has {} the net has no parameter for: {}; `LoadOptions::new().allow_unexpected(true)` ignores them", count(tensors.len(), "tensor"), listing(tensors))]
    Unexpected {
        /// Each such tensor's name and shape, by name.
        tensors: Vec<(String, Vec<usize>)>,
    },

    /// A tensor has the rank the net expects but other sizes.
    #[error("tensor `{name}`: expected shape {expected}, found {}", Dims(found))]
    Shape {
        /// The tensor.
        name: String,
        /// The shape the net expects (`?` for a size not known before binding).
        expected: PartialShape,
        /// The shape in the file.
        found: Vec<usize>,
    },

    /// A tensor has a different number of dimensions than the net expects.
    #[error("tensor `{name}`: expected {} dimensions, shape {expected}, found {}: {}", expected.rank(), found.len(), Dims(found))]
    Rank {
        /// The tensor.
        name: String,
        /// The shape the net expects (`?` for a size not known before binding).
        expected: PartialShape,
        /// The shape in the file.
        found: Vec<usize>,
    },

    /// [`Net::load_infer`](crate::Net::load_infer) on a net without parameters: nothing in the file gives the input
    /// size.
    #[error("the net has no parameters, so no tensor in the file gives its input size; bind it with `try_bind` first")]
    NoParameters,

    /// The input size read from the file is one the net cannot be bound to.
    #[error("tensor `{name}` has shape {}, which gives an input size of {input}, but the net cannot take it: {source}", Dims(found))]
    Infer {
        /// The tensor the input size was read from.
        name: String,
        /// Its shape.
        found: Vec<usize>,
        /// The input size read from it.
        input: usize,
        /// Why the net cannot be bound to it (boxed, to keep `LoadError` small).
        source: Box<ShapeError>,
    },

    /// [`Net::load_infer`](crate::Net::load_infer) on a net whose first parameter comes after a
    /// layer that changes the shape: that parameter's size is not the net's input size, and no
    /// tensor gives it.
    #[error("tensor `{name}` cannot give the net's input size: layer {layer} ({kind}) before it changes the shape ({} to {}), so what reaches `{name}` is not the input; bind with `try_bind` and then `load`", Dims(input), Dims(output))]
    InferThrough {
        /// The first parameter.
        name: String,
        /// The layer before it that changes the shape.
        layer: usize,
        /// That layer's kind.
        kind: &'static str,
        /// The shape it receives when the net is bound to the size read from `name`.
        input: Vec<usize>,
        /// The shape it gives.
        output: Vec<usize>,
    },

    /// A file that names a tied parameter at two places with different values: a tied set
    /// has one value.
    #[error("tensors `{first}` and `{place}` name one tied parameter but hold different values (first at flat index {index})")]
    TiedDiffers {
        /// The name at the set's first place.
        first: String,
        /// The name at a later place.
        place: String,
        /// The first flat index at which they differ, in the file's (row-major) order.
        index: usize,
    },

    /// [`Net::load_infer`](crate::Net::load_infer) on a net whose first parameter has one
    /// size: it holds no input size, as a dense weight `(out, in)` does.
    #[error("tensor `{name}` of shape {} holds no input size (`load_infer` reads the second size of the first parameter, as a dense weight `(out, in)` holds it); bind with `try_bind` or `load_bound`, then `load`", Dims(shape))]
    NoInputSize {
        /// The first parameter.
        name: String,
        /// Its shape in the file.
        shape: Vec<usize>,
    },

    /// A buffer's tensor holds values the buffer cannot hold: a negative or NaN running
    /// variance, a negative count.
    #[error("tensor `{name}`: {reason}")]
    Buffer {
        /// The tensor.
        name: String,
        /// What was expected and what was found.
        reason: String,
    },

    /// A run-time binding before the load failed (from `?` on
    /// [`try_bind`](crate::Net::try_bind)).
    #[error(transparent)]
    Bind(#[from] ShapeError),
}

fn offsets_fault(start: usize, end: usize, previous_end: usize) -> String {
    if end < start {
        format!("its data offsets [{start}, {end}] end before they start")
    } else if start < previous_end {
        format!("its data offsets [{start}, {end}] overlap the previous tensor's, which end at byte {previous_end}")
    } else {
        format!("its data offsets [{start}, {end}] leave a gap after the previous tensor's, which end at byte {previous_end}")
    }
}

fn bytes_needed(expected: Option<usize>) -> String {
    expected.map_or_else(|| "more than usize::MAX".to_owned(), |n| n.to_string())
}

fn count(n: usize, noun: &str) -> String {
    match n {
        1 => format!("1 {noun}"),
        n => format!("{n} {noun}s"),
    }
}

/// The first few tensors as `` `name` (shape) ``, then how many more.
fn listing(tensors: &[(String, Vec<usize>)]) -> String {
    const SHOWN: usize = 5;
    let mut out: Vec<String> = tensors
        .iter()
        .take(SHOWN)
        .map(|(name, shape)| format!("`{name}` {}", Dims(shape)))
        .collect();
    if tensors.len() > SHOWN {
        out.push(format!("and {} more", tensors.len() - SHOWN));
    }
    out.join(", ")
}

/// Why a net could not be saved.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SaveError {
    /// The file could not be written.
    #[error("cannot write `{}`: {source}", path.display())]
    Io {
        /// The path given.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },

    /// Memory for the file's bytes could not be had: the allocator refused it, or the file
    /// needs more bytes than one allocation can hold.
    #[error("cannot allocate {bytes} bytes for the safetensors file")]
    OutOfMemory {
        /// The bytes asked for (it may exceed `usize::MAX`).
        bytes: u128,
    },

    /// The safetensors writer refused the tensors.
    #[error("cannot encode the parameters as safetensors: {reason}")]
    Encode {
        /// Why.
        reason: String,
    },
}
