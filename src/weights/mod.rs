//! Weights in and out: [safetensors](https://huggingface.co/docs/safetensors) files, with
//! PyTorch's names, shapes and layout, every shape checked on load.
//!
//! * [`Net::save`] writes every parameter under its PyTorch `nn.Sequential` name (`0.weight`,
//!   `0.bias`, `2.weight`, …) as little-endian `f32`, shapes in PyTorch order: a dense weight
//!   `[out, in]`, a convolution weight `[out_c, in_c, kh, kw]`, a bias `[out]`, each stored
//!   row-major (C order). The file's metadata holds `format = pt`, `library = lazynet` and
//!   `version`, the crate's version.
//! * [`Net::load`] fills a bound net from a file and checks every tensor against the net.
//! * [`Net::load_infer`] fills an **unbound** declaration: the input size is read from the
//!   first weight in the file (`0.weight` of shape `(256, 20)` gives 20 inputs) and the net is
//!   bound to it at run time. [`Net::load_bound`] binds to a static size instead and checks the
//!   file against it.
//!
//! # Data types
//! Tensors stored as `F32` are read as they are. `F16`, `BF16` and `F64` tensors are converted
//! to `f32` on load: half-precision values exactly, `f64` values rounded to the nearest `f32`
//! (beyond `f32`'s range they become infinite). Any other type (integers, booleans, 8-bit and
//! smaller floats) is a [`LoadError::Dtype`] when the net needs the tensor.
//!
//! # Errors
//! Loading never panics and never leaves a net half-loaded: every tensor is read, converted
//! and checked before the first parameter is replaced, and on any error the net is unchanged.
//! Each [`LoadError`] says what was expected and what was found, naming the tensor when the
//! fault is in one.
//!
//! # Example
//! ```
//! use lazynet::prelude::*;
//!
//! let decl = Net::new()
//!     .push(Dense::<U256>::new())
//!     .push(Relu)
//!     .push(Dense::<U10>::new())
//!     .seed(7);
//! let net = decl.clone().bind::<U20>();
//!
//! let dir = std::env::temp_dir().join(format!("lazynet-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! let path = dir.join("mlp.safetensors");
//! net.save(&path)?;
//!
//! // The declaration states no input size; the file tells it.
//! let loaded = decl.load_infer(&path)?;
//! assert_eq!(loaded.input(), Dyn(20));
//! assert!(loaded.named_params().eq(net.named_params()));
//!
//! // A file that does not fit is an error that names the tensor and both shapes.
//! let wide = decl.clone().bind::<U30>();
//! wide.save(&path)?;
//! let err = decl.load_bound::<U20>(&path).unwrap_err();
//! assert_eq!(
//!     err.to_string(),
//!     "tensor `0.weight`: expected shape (256, 20), found (256, 30)"
//! );
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod error;
mod file;
mod format;

mod layout;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::io::Write as _;
use std::path::Path;

use half::{bf16, f16};
use nalgebra::DMatrix;
use safetensors::tensor::{Dtype, SafeTensors, TensorInfo};

pub use self::error::{LoadError, SaveError};
pub(crate) use self::format::encode_params;
use self::format::{encode_file, explain, header_length, values_of, LEN_BYTES};
use self::layout::{column_major, Fault};
use crate::dim::Dyn;
use crate::init::Dims;
use crate::layer::{Buffer, BufferKind, BufferValue, PartialShape};
use crate::list::{Chain, Layers};
use crate::net::{BindTo, Net};
use crate::shape::StaticShape;
use crate::state::{Bound, BoundLayer, Init, Param, Uninit};

/// How strictly a file must match the net.
///
/// By default every tensor in the file must be a parameter of the net. A file that also holds
/// other tensors (an optimizer's state, a head the net does not have) is loaded with
/// `LoadOptions::new().allow_unexpected(true)`; the extra tensors are ignored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoadOptions {
    allow_unexpected: bool,
}

impl LoadOptions {
    /// The default: every tensor in the file must belong to the net.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether tensors the net has no parameter for are ignored (`true`) or an error
    /// ([`LoadError::Unexpected`], the default).
    pub fn allow_unexpected(mut self, allow: bool) -> Self {
        self.allow_unexpected = allow;
        self
    }
}

/// A safetensors file, read and validated, whose tensors can be inspected and loaded.
///
/// [`Net::load`] and the other one-liners read a file and load it in one call; a `Weights`
/// value lets a program look at a file first ([`names`](Weights::names),
/// [`get`](Weights::get), [`metadata`](Weights::metadata)) or load it with
/// [`LoadOptions`].
///
/// Reading checks the file's layout (header, offsets, lengths) through the `safetensors`
/// crate; tensors are converted to `f32` only when they are loaded or asked for.
#[derive(Clone)]
pub struct Weights<'a> {
    bytes: Cow<'a, [u8]>,
    /// Where the data section starts in `bytes`.
    data_start: usize,
    /// The tensors, by name.
    tensors: BTreeMap<String, TensorInfo>,
    metadata: HashMap<String, String>,
}

impl fmt::Debug for Weights<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (name, info) in &self.tensors {
            map.entry(name, &format_args!("{} {}", info.dtype, Dims(&info.shape)));
        }
        map.finish()
    }
}

impl Weights<'static> {
    /// Reads and validates a safetensors file.
    ///
    /// Only a regular file (or a symbolic link to one) is read: a directory, a device such as
    /// `/dev/zero`, a FIFO or a socket is refused before it is opened. No more of the file is
    /// read than its header describes: a header length larger than the file, or a header that
    /// is invalid, is refused before the tensor data is read, and bytes after the described
    /// data are counted, not read. The errors are those [`from_bytes`](Weights::from_bytes)
    /// gives for the whole file.
    ///
    /// # Errors
    /// [`LoadError::NotAFile`] when `path` is not a regular file; [`LoadError::Io`] when the
    /// file cannot be read or memory to hold it cannot be had; the layout errors of
    /// [`from_bytes`](Weights::from_bytes) when it is not a valid safetensors file.
    pub fn read(path: impl AsRef<Path>) -> Result<Self, LoadError> {
        let (bytes, len) = file::read(path.as_ref())?;
        Weights::parse(Cow::Owned(bytes), len)
    }

    /// Validates the bytes of a safetensors file, taking ownership of them.
    ///
    /// # Errors
    /// As [`from_bytes`](Weights::from_bytes).
    pub fn from_vec(bytes: Vec<u8>) -> Result<Self, LoadError> {
        let len = bytes.len();
        Weights::parse(Cow::Owned(bytes), len)
    }
}

impl<'a> Weights<'a> {
    /// Validates the bytes of a safetensors file, borrowing them: nothing is copied until a
    /// tensor is converted.
    ///
    /// # Errors
    /// [`LoadError::Empty`], [`TooShort`](LoadError::TooShort),
    /// [`HeaderLength`](LoadError::HeaderLength), [`Header`](LoadError::Header),
    /// [`Offsets`](LoadError::Offsets), [`DataLength`](LoadError::DataLength),
    /// [`PastEnd`](LoadError::PastEnd) or [`TrailingData`](LoadError::TrailingData) when the
    /// bytes are not a valid safetensors file.
    pub fn from_bytes(bytes: &'a [u8]) -> Result<Self, LoadError> {
        Weights::parse(Cow::Borrowed(bytes), bytes.len())
    }

    /// Validates `bytes`, the first bytes of a file of `file_len` bytes (at least as many).
    /// When the file is longer, `bytes` hold the header length, the header and exactly the
    /// tensor data it describes, and the errors are those the whole file would give.
    fn parse(bytes: Cow<'a, [u8]>, file_len: usize) -> Result<Self, LoadError> {
        let file_len = file_len.max(bytes.len());
        let Some(len) = bytes.first_chunk::<LEN_BYTES>() else {
            return Err(match file_len {
                0 => LoadError::Empty,
                len => LoadError::TooShort { len },
            });
        };
        let header_len = header_length(*len, file_len)?;
        // `header_len <= available`, so neither overflows.
        let data_start = LEN_BYTES.saturating_add(header_len);
        let data_len = file_len.saturating_sub(data_start);
        let header = bytes.get(LEN_BYTES..data_start).unwrap_or_default();
        let metadata = match SafeTensors::read_metadata(&bytes) {
            Ok((_, metadata)) if file_len == bytes.len() => metadata,
            // The described data was read; the rest of the file was not.
            Ok(_) => {
                return Err(LoadError::TrailingData {
                    described: bytes.len().saturating_sub(data_start),
                    available: data_len,
                })
            }
            Err(err) => return Err(explain(err, header, data_len)),
        };
        let tensors = metadata
            .tensors()
            .into_iter()
            .map(|(name, info)| (name, info.clone()))
            .collect();
        Ok(Weights {
            data_start,
            tensors,
            metadata: metadata.metadata().clone().unwrap_or_default(),
            bytes,
        })
    }

    /// The number of tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Whether the file holds no tensor.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// The tensors' names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// The tensor called `name`, if the file has one.
    pub fn get(&self, name: &str) -> Option<Tensor<'_>> {
        let (name, info) = self.tensors.get_key_value(name)?;
        let (start, end) = info.data_offsets;
        let start = self.data_start.checked_add(start)?;
        let end = self.data_start.checked_add(end)?;
        let data = self.bytes.get(start..end)?;
        Some(Tensor { name, info, data })
    }

    /// A value of the file's `__metadata__`, such as `"format"`.
    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).map(String::as_str)
    }

    /// Reads, converts and checks every parameter of `layers`, returning their new values in
    /// order. Nothing is changed, so an error loses nothing.
    pub(crate) fn values_for(
        &self,
        layers: &[BoundLayer],
        options: LoadOptions,
    ) -> Result<Vec<DMatrix<f32>>, LoadError> {
        let params: Vec<_> = layers.iter().flat_map(|l| &l.params).collect();
        // A tied parameter set is listed once, under its first place's name; a PyTorch
        // `state_dict` names it at every place too: `(first, later)` for every later place.
        let aliases: Vec<(&str, String)> = layers
            .iter()
            .filter_map(|l| Some((l, layers.get(l.tied?)?)))
            .flat_map(|(place, first)| {
                first.params.iter().map(move |p| {
                    (
                        p.name.as_str(),
                        format!("{}.{}", place.path, p.role.suffix()),
                    )
                })
            })
            // A trunk run after another stem keeps its names: no other name to read.
            .filter(|(first, later)| first != later)
            .collect();
        let values = params
            .iter()
            .map(|p| {
                let value = match self.matrix_like(p)? {
                    Some(value) => Some(value),
                    // A file that names the set at a later place only.
                    None => aliases
                        .iter()
                        .filter(|(first, _)| *first == p.name)
                        .find_map(|(_, later)| {
                            self.matrix_for(later, &p.shape, p.value.nrows(), p.value.ncols())
                                .transpose()
                        })
                        .transpose()?,
                };
                value.ok_or_else(|| LoadError::Missing {
                    name: p.name.clone(),
                    expected: PartialShape::from_dims(&p.shape),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Every later place the file names holds the first place's values.
        for (first, later) in &aliases {
            let Some((index, p)) = params.iter().enumerate().find(|(_, p)| p.name == *first) else {
                continue;
            };
            let Some(found) = self.matrix_for(later, &p.shape, p.value.nrows(), p.value.ncols())?
            else {
                continue;
            };
            // The first flat index in the file's (row-major) order, as PyTorch shows it.
            let differs = |value: &DMatrix<f32>| {
                let (rows, cols) = value.shape();
                (0..rows)
                    .flat_map(|r| (0..cols).map(move |c| (r, c)))
                    .position(|at| !same_value(value.get(at), found.get(at)))
            };
            if let Some(at) = values.get(index).and_then(differs) {
                return Err(LoadError::TiedDiffers {
                    first: (*first).to_owned(),
                    place: later.clone(),
                    index: at,
                });
            }
        }
        if !options.allow_unexpected {
            let mut names: HashSet<&str> = params.iter().map(|p| p.name.as_str()).collect();
            names.extend(
                layers
                    .iter()
                    .flat_map(|l| &l.buffers)
                    .map(|b| b.name.as_str()),
            );
            names.extend(aliases.iter().map(|(_, later)| later.as_str()));
            let buffer_aliases = buffer_aliases(layers);
            names.extend(buffer_aliases.iter().map(|(_, later)| later.as_str()));
            let extra: Vec<(String, Vec<usize>)> = self
                .tensors
                .iter()
                .filter(|(name, _)| !names.contains(name.as_str()))
                .map(|(name, info)| (name.clone(), info.shape.clone()))
                .collect();
            if !extra.is_empty() {
                return Err(LoadError::Unexpected { tensors: extra });
            }
        }
        Ok(values)
    }

    /// Reads and checks every buffer of `layers` (running statistics), returning their new
    /// values in order. Nothing is changed, so an error loses nothing.
    ///
    /// A buffer of values must have its shape (and, for a variance, hold no negative value and
    /// no NaN); a count must be an `int64` of shape `[]` from 0 up.
    pub(crate) fn buffers_for(&self, layers: &[BoundLayer]) -> Result<Vec<BufferValue>, LoadError> {
        let aliases = buffer_aliases(layers);
        layers
            .iter()
            .flat_map(|l| &l.buffers)
            .map(|b| {
                // A tied layer's buffers are read at its first place, or at a later place a
                // PyTorch `state_dict` names them at; every place named must hold one value.
                let later: Vec<&str> = aliases
                    .iter()
                    .filter(|(first, _)| *first == b.name)
                    .map(|(_, later)| later.as_str())
                    .collect();
                let name = std::iter::once(b.name.as_str())
                    .chain(later.iter().copied())
                    .find(|n| self.get(n).is_some())
                    .unwrap_or(b.name.as_str());
                let value = self.buffer_at(b, name)?;
                for other_name in later {
                    if other_name == name || self.get(other_name).is_none() {
                        continue;
                    }
                    let other = self.buffer_at(b, other_name)?;
                    let index = match (&value, &other) {
                        (BufferValue::Values(a), BufferValue::Values(o)) => {
                            let (rows, cols) = a.shape();
                            (0..rows)
                                .flat_map(|r| (0..cols).map(move |c| (r, c)))
                                .position(|at| !same_value(a.get(at), o.get(at)))
                        }
                        (a, o) => (a != o).then_some(0),
                    };
                    if let Some(index) = index {
                        return Err(LoadError::TiedDiffers {
                            first: name.to_owned(),
                            place: other_name.to_owned(),
                            index,
                        });
                    }
                }
                Ok(value)
            })
            .collect()
    }

    /// The buffer `b` read from the tensor `name` and checked.
    fn buffer_at(&self, b: &Buffer, name: &str) -> Result<BufferValue, LoadError> {
        let missing = || LoadError::Missing {
            name: name.to_owned(),
            expected: PartialShape::from_dims(&b.shape),
        };
        let value = match b.kind {
            BufferKind::Values { .. } => {
                let (rows, cols) = b.values().map_or((0, 0), DMatrix::shape);
                let m = self
                    .matrix_for(name, &b.shape, rows, cols)?
                    .ok_or_else(missing)?;
                BufferValue::Values(m)
            }
            // PyTorch's `_load_from_state_dict` fills in 0 for a missing
            // `num_batches_tracked` (a state_dict saved before it existed).
            BufferKind::Count => match self.get(name) {
                Some(tensor) => {
                    tensor.check_shape(&PartialShape(Vec::new()))?;
                    BufferValue::Count(tensor.count()?)
                }
                None => BufferValue::Count(0),
            },
        };
        b.check(&value).map_err(|reason| LoadError::Buffer {
            name: name.to_owned(),
            reason,
        })?;
        Ok(value)
    }

    /// The tensor named as `p`, checked against its shape and laid out as its value; `None`
    /// when the file has no tensor of that name.
    pub(crate) fn matrix_like(&self, p: &Param) -> Result<Option<DMatrix<f32>>, LoadError> {
        self.matrix_for(&p.name, &p.shape, p.value.nrows(), p.value.ncols())
    }

    /// The tensor `name`, checked against `shape` and laid out as a `rows × cols` matrix;
    /// `None` when the file has no tensor of that name.
    pub(crate) fn matrix_for(
        &self,
        name: &str,
        shape: &[usize],
        rows: usize,
        cols: usize,
    ) -> Result<Option<DMatrix<f32>>, LoadError> {
        let expected = PartialShape::from_dims(shape);
        let Some(tensor) = self.get(name) else {
            return Ok(None);
        };
        tensor.check_shape(&expected)?;
        // The shape was checked and the crate checked the byte length, so the values fill the
        // matrix; `decode_matrix` checks again rather than trust it.
        tensor
            .decode_matrix(rows, cols)?
            .map(Some)
            .ok_or_else(|| LoadError::Shape {
                name: name.to_owned(),
                expected,
                found: tensor.shape().to_vec(),
            })
    }

    /// The input size the file gives an unbound net: the second size of the first weight
    /// (`(256, 20)` for `0.weight` gives 20), or what that layer declares.
    fn input_size<L: Layers>(&self, decl: &Net<Uninit, L>) -> Result<(String, usize), LoadError> {
        let (name, expected) = decl
            .partial_shapes()
            .into_iter()
            .next()
            .ok_or(LoadError::NoParameters)?;
        let tensor = self.get(&name).ok_or_else(|| LoadError::Missing {
            name: name.clone(),
            expected: expected.clone(),
        })?;
        tensor.check_shape(&expected)?;
        let from_file = tensor.shape().get(1).copied();
        let input = expected.0.get(1).copied().flatten().or(from_file);
        // A 1-d first parameter (a gain, a norm's weight) holds no input size.
        let input = input.ok_or_else(|| LoadError::NoInputSize {
            name: name.clone(),
            shape: tensor.shape().to_vec(),
        })?;
        Ok((name, input))
    }
}

/// The later places' names of every tied layer's buffers, with the first place's: `(first,
/// later)`, as a PyTorch `state_dict` names a module used twice at both places.
pub(crate) fn buffer_aliases(layers: &[BoundLayer]) -> Vec<(&str, String)> {
    layers
        .iter()
        .filter_map(|l| Some((l, layers.get(l.tied?)?)))
        .flat_map(|(place, first)| {
            first.buffers.iter().map(move |b| {
                let suffix = b.name.rsplit('.').next().unwrap_or(b.name.as_str());
                (b.name.as_str(), format!("{}.{suffix}", place.path))
            })
        })
        .filter(|(first, later)| first != later)
        .collect()
}

/// Whether two stored values are one value: equal (0.0 and −0.0 too), or the same bits (a
/// NaN saved twice).
fn same_value(a: Option<&f32>, b: Option<&f32>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a == b || a.to_bits() == b.to_bits(),
        (a, b) => a.is_none() && b.is_none(),
    }
}

/// One tensor of a [`Weights`] file.
#[derive(Clone, Copy, Debug)]
pub struct Tensor<'a> {
    name: &'a str,
    info: &'a TensorInfo,
    data: &'a [u8],
}

impl Tensor<'_> {
    /// Its name: `0.weight`.
    pub fn name(&self) -> &str {
        self.name
    }

    /// Its shape, as stored: `[256, 20]`.
    pub fn shape(&self) -> &[usize] {
        &self.info.shape
    }

    /// Its data type, as the file names it: `F32`, `BF16`, `I64`.
    pub fn dtype(&self) -> String {
        self.info.dtype.to_string()
    }

    /// Its values as `f32`, in the file's (row-major) order, converted from `F16`, `BF16` or
    /// `F64`.
    ///
    /// # Errors
    /// [`LoadError::Dtype`] for any other data type; [`LoadError::OutOfMemory`] when memory
    /// for the values cannot be had; [`LoadError::DataLength`] if the data does not hold the
    /// values its shape says (the file was checked for that when it was read).
    pub fn to_f32(&self) -> Result<Vec<f32>, LoadError> {
        // As one row, column-major order is the file's order.
        let values = values_of(self.shape());
        let decoded = match values {
            Some(values) => self.decode(1, values)?,
            None => None,
        };
        decoded.ok_or_else(|| LoadError::DataLength {
            name: self.name.to_owned(),
            dtype: self.dtype(),
            shape: self.shape().to_vec(),
            expected: values
                .and_then(|n| n.checked_mul(self.info.dtype.bitsize()))
                .map(|bits| bits.div_ceil(8)),
            found: self.data.len(),
        })
    }

    /// Its one value as an `int64` count (PyTorch's `num_batches_tracked`).
    ///
    /// # Errors
    /// [`LoadError::Dtype`] unless it is `I64`; [`LoadError::DataLength`] unless it holds
    /// one value.
    fn count(&self) -> Result<i64, LoadError> {
        if self.info.dtype != Dtype::I64 {
            return Err(LoadError::CountDtype {
                name: self.name.to_owned(),
                dtype: self.dtype(),
            });
        }
        let bytes: Option<[u8; 8]> = self.data.try_into().ok();
        bytes
            .map(i64::from_le_bytes)
            .ok_or_else(|| LoadError::DataLength {
                name: self.name.to_owned(),
                dtype: self.dtype(),
                shape: self.shape().to_vec(),
                expected: Some(8),
                found: self.data.len(),
            })
    }

    /// Its values as a `rows × cols` matrix, decoded from the file's row-major order straight
    /// into nalgebra's column-major one; `None` when it does not hold `rows · cols` values.
    fn decode_matrix(self, rows: usize, cols: usize) -> Result<Option<DMatrix<f32>>, LoadError> {
        let values = self.decode(rows, cols)?;
        Ok(values.map(|v| DMatrix::from_vec(rows, cols, v)))
    }

    /// Its values converted to `f32`, in the column-major order of a `rows × cols` matrix;
    /// `None` when it does not hold `rows · cols` values.
    ///
    /// # Errors
    /// [`LoadError::Dtype`] for a type that is not converted; [`LoadError::OutOfMemory`] when
    /// the values cannot be allocated.
    fn decode(self, rows: usize, cols: usize) -> Result<Option<Vec<f32>>, LoadError> {
        let data = self.data;
        let decoded = match self.info.dtype {
            Dtype::F32 => column_major(data, rows, cols, f32::from_le_bytes),
            Dtype::F16 => column_major(data, rows, cols, |b| f16::from_le_bytes(b).to_f32()),
            Dtype::BF16 => column_major(data, rows, cols, |b| bf16::from_le_bytes(b).to_f32()),
            Dtype::F64 => column_major(data, rows, cols, |b| f64::from_le_bytes(b) as f32),
            other => {
                return Err(LoadError::Dtype {
                    name: self.name.to_owned(),
                    dtype: other.to_string(),
                })
            }
        };
        match decoded {
            Ok(values) => Ok(Some(values)),
            Err(Fault::Length) => Ok(None),
            Err(Fault::Memory) => Err(LoadError::OutOfMemory {
                name: self.name.to_owned(),
                // `rows·cols` is a parameter's length or a tensor's checked one, at most
                // `usize::MAX`: in bytes, below 2^66.
                bytes: rows as u128 * cols as u128 * 4,
            }),
        }
    }

    /// Checks the tensor's shape against `expected`, whose `?` sizes match anything.
    fn check_shape(&self, expected: &PartialShape) -> Result<(), LoadError> {
        let found = self.shape();
        let fault = if found.len() != expected.rank() {
            LoadError::Rank {
                name: self.name.to_owned(),
                expected: expected.clone(),
                found: found.to_vec(),
            }
        } else if expected
            .0
            .iter()
            .zip(found)
            .any(|(e, f)| e.is_some_and(|e| e != *f))
        {
            LoadError::Shape {
                name: self.name.to_owned(),
                expected: expected.clone(),
                found: found.to_vec(),
            }
        } else {
            return Ok(());
        };
        Err(fault)
    }
}

impl<S: Bound, L: Layers> Net<S, L> {
    /// Writes every parameter to a safetensors file at `path`, replacing any file there: PyTorch
    /// `nn.Sequential` names, shapes and layout, as little-endian `f32` (see the
    /// [module documentation](crate::weights)). The same parameters always give the same bytes.
    ///
    /// The file is written to a temporary file beside `path` and then renamed over it, so a
    /// failed save leaves any previous file whole. When `path` is a symbolic link, the file it
    /// points to is the one replaced, and the link stays. The new file is a new inode: a hard
    /// link to the old file keeps the old contents.
    ///
    /// On Unix the file gets the permissions `File::create` would give it: those of the file it
    /// replaces, or for a new file `0o666` less the process's umask (`0o644` under the usual
    /// umask `022`).
    ///
    /// # Errors
    /// [`SaveError::Io`] when the file cannot be written; [`SaveError::OutOfMemory`] when
    /// memory for its bytes cannot be had.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), SaveError> {
        write_file(path.as_ref(), &self.save_to_bytes()?)
    }

    /// The bytes [`save`](Net::save) writes.
    ///
    /// # Errors
    /// [`SaveError::OutOfMemory`] when memory for the bytes cannot be had;
    /// [`SaveError::Encode`] if the parameters cannot be encoded (a header larger than
    /// safetensors allows).
    pub fn save_to_bytes(&self) -> Result<Vec<u8>, SaveError> {
        encode_file(self.state().bound_layers())
    }

    /// Replaces every parameter with the tensor of the same name in the safetensors file at
    /// `path`, checking each shape. Every tensor in the file must belong to the net; see
    /// [`load_weights`](Net::load_weights) to allow others.
    ///
    /// On any error the net is unchanged.
    ///
    /// # Errors
    /// [`LoadError::Io`] when the file cannot be read; a layout error when it is not a valid
    /// safetensors file; [`LoadError::Missing`], [`Unexpected`](LoadError::Unexpected),
    /// [`Shape`](LoadError::Shape), [`Rank`](LoadError::Rank) or [`Dtype`](LoadError::Dtype)
    /// when its tensors do not fit the net.
    pub fn load(&mut self, path: impl AsRef<Path>) -> Result<(), LoadError> {
        self.load_weights(&Weights::read(path)?, LoadOptions::new())
    }

    /// [`load`](Net::load) from the bytes of a safetensors file.
    ///
    /// # Errors
    /// As [`load`](Net::load), but for [`LoadError::Io`].
    pub fn load_from_bytes(&mut self, bytes: &[u8]) -> Result<(), LoadError> {
        self.load_weights(&Weights::from_bytes(bytes)?, LoadOptions::new())
    }

    /// Replaces every parameter with the tensor of the same name in `weights`, checking each
    /// shape, under `options`. On any error the net is unchanged.
    ///
    /// # Errors
    /// [`LoadError::Missing`], [`Unexpected`](LoadError::Unexpected) (unless allowed),
    /// [`Shape`](LoadError::Shape), [`Rank`](LoadError::Rank) or [`Dtype`](LoadError::Dtype)
    /// when the tensors do not fit the net.
    pub fn load_weights(
        &mut self,
        weights: &Weights<'_>,
        options: LoadOptions,
    ) -> Result<(), LoadError> {
        let values = weights.values_for(self.state().bound_layers(), options)?;
        let buffers = weights.buffers_for(self.state().bound_layers())?;
        self.set_values(values);
        self.set_buffers(buffers);
        Ok(())
    }

    /// Replaces every buffer's value, in order, by ones [`Weights::buffers_for`] checked.
    pub(crate) fn set_buffers(&mut self, values: Vec<BufferValue>) {
        let buffers = self
            .state_mut()
            .bound_layers_mut()
            .iter_mut()
            .flat_map(|l| &mut l.buffers);
        for (buffer, value) in buffers.zip(values) {
            buffer.value = value;
        }
    }

    /// Every buffer, in order: state that is not learned, such as a
    /// [`BatchNorm`](crate::layer::BatchNorm)'s running statistics, named as PyTorch names
    /// them (`3.running_mean`, `3.num_batches_tracked`). Buffers are not parameters: they are
    /// not in [`named_params`](Net::named_params), have no gradient, and no optimizer or
    /// initializer touches them.
    ///
    /// # Example
    /// ```
    /// use lazynet::prelude::*;
    ///
    /// let net = Net::new().push(BatchNorm::new()).bind::<Image<U3, U4, U4>>();
    /// let var = net.named_buffers().nth(1).and_then(|b| b.values().cloned());
    /// assert_eq!(var, Some(lazynet::nalgebra::DMatrix::from_element(3, 1, 1.0)));
    /// assert_eq!(net.named_params().count(), 2);
    /// ```
    pub fn named_buffers(&self) -> impl Iterator<Item = &Buffer> + '_ {
        self.state().bound_layers().iter().flat_map(|l| &l.buffers)
    }

    /// Replaces every parameter's values, in order, by ones [`Weights::values_for`] checked.
    pub(crate) fn set_values(&mut self, values: Vec<DMatrix<f32>>) {
        let params = self
            .state_mut()
            .bound_layers_mut()
            .iter_mut()
            .flat_map(|l| &mut l.params);
        for (param, value) in params.zip(values) {
            param.value = value;
            param.magnitude = None;
        }
    }
}

impl<L: Layers> Net<Uninit, L> {
    /// Binds an unbound declaration to the input size a safetensors file gives, and loads the
    /// file into it: `0.weight` of shape `(256, 20)` (the first weight, in general) gives 20
    /// inputs. The result is bound at run time (`Init<Dyn>`), as by
    /// [`try_bind`](Net::try_bind), and every tensor is checked. The declaration is kept.
    ///
    /// Nets whose input is an image are bound with `try_bind(Image::dynamic(c, h, w))` and
    /// then [`load`](Net::load)ed: a file gives the channels but not the height and width.
    ///
    /// # Errors
    /// As [`load`](Net::load); also [`LoadError::NoParameters`] for a net without parameters
    /// and [`LoadError::Infer`] when the net cannot take the input size the file gives.
    pub fn load_infer(&self, path: impl AsRef<Path>) -> Result<Net<Init<Dyn>, L>, LoadError>
    where
        L: Chain<Dyn>,
    {
        self.load_infer_weights(&Weights::read(path)?, LoadOptions::new())
    }

    /// [`load_infer`](Net::load_infer) from a [`Weights`] value, under `options`.
    ///
    /// # Errors
    /// As [`load_infer`](Net::load_infer), but for [`LoadError::Io`].
    pub fn load_infer_weights(
        &self,
        weights: &Weights<'_>,
        options: LoadOptions,
    ) -> Result<Net<Init<Dyn>, L>, LoadError>
    where
        L: Chain<Dyn>,
    {
        let (name, input) = weights.input_size(self)?;
        let mut net = self
            .try_zeroed(Dyn(input), &crate::list::compile_time_outputs::<Dyn, L>())
            .map_err(|source| LoadError::Infer {
                found: weights
                    .get(&name)
                    .map(|t| t.shape().to_vec())
                    .unwrap_or_default(),
                name: name.clone(),
                input,
                source: Box::new(source),
            })?;
        // The size read from the first weight is the net's input only when every layer before
        // that weight's layer keeps the shape (activations); a layer that changes it leaves the
        // input unknown.
        let layers = net.state().bound_layers();
        let owner = layers
            .iter()
            .position(|l| !l.params.is_empty())
            .unwrap_or(0);
        let mut shape = vec![input];
        for layer in layers.iter().take(owner) {
            if layer.output != shape {
                let top = layer.path.split('.').next().and_then(|i| i.parse().ok());
                return Err(LoadError::InferThrough {
                    name,
                    layer: top.unwrap_or(0),
                    kind: layer.kind,
                    input: shape,
                    output: layer.output.clone(),
                });
            }
            shape.clone_from(&layer.output);
        }
        net.load_weights(weights, options)?;
        Ok(net)
    }

    /// Binds an unbound declaration to the static input shape `N`, checked by the compiler as
    /// by [`bind`](Net::bind), and loads the safetensors file at `path` into it, checking every
    /// tensor against `N`. The declaration is kept.
    ///
    /// # Errors
    /// As [`load`](Net::load); [`LoadError::Bind`] when memory for the parameters cannot be
    /// had.
    pub fn load_bound<N>(&self, path: impl AsRef<Path>) -> Result<Net<Init<N>, L>, LoadError>
    where
        N: StaticShape + BindTo<L>,
    {
        self.load_bound_weights(&Weights::read(path)?, LoadOptions::new())
    }

    /// [`load_bound`](Net::load_bound) from a [`Weights`] value, under `options`.
    ///
    /// # Errors
    /// As [`load_weights`](Net::load_weights).
    pub fn load_bound_weights<N>(
        &self,
        weights: &Weights<'_>,
        options: LoadOptions,
    ) -> Result<Net<Init<N>, L>, LoadError>
    where
        N: StaticShape + BindTo<L>,
    {
        // The compiler checked the shapes; only memory can fail, and that is an error here.
        let mut net = self.try_zeroed(N::default(), &N::compile_time_outputs())?;
        net.load_weights(weights, options)?;
        Ok(net)
    }
}

/// Writes `bytes` to `path` as [`Net::save`] does: through a temporary file renamed over it,
/// with `File::create`'s permissions, through a symbolic link.
pub(crate) fn write_file(path: &Path, bytes: &[u8]) -> Result<(), SaveError> {
    let io = |source: std::io::Error| SaveError::Io {
        path: path.to_path_buf(),
        source,
    };
    // A symbolic link is written through, as `File::create` does: the file it points to
    // is replaced, and the link stays. (A link to nothing is replaced by the file.)
    let resolved = match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => std::fs::canonicalize(path).ok(),
        _ => None,
    };
    let path = resolved.as_deref().unwrap_or(path);
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut builder = tempfile::Builder::new();
    #[cfg(unix)]
    {
        use std::fs::Permissions;
        use std::os::unix::fs::PermissionsExt;
        // The mode `File::create` asks for; the kernel takes the umask off it.
        builder.permissions(Permissions::from_mode(0o666));
    }
    let mut file = builder.tempfile_in(dir).map_err(io)?;
    #[cfg(unix)]
    {
        use std::fs::Permissions;
        use std::os::unix::fs::PermissionsExt;
        // A file that is replaced keeps its permissions, as with `File::create`.
        if let Ok(existing) = std::fs::metadata(path) {
            if existing.is_file() {
                let mode = existing.permissions().mode() & 0o777;
                file.as_file()
                    .set_permissions(Permissions::from_mode(mode))
                    .map_err(io)?;
            }
        }
    }
    file.write_all(bytes).map_err(io)?;
    file.as_file().sync_all().map_err(io)?;
    file.persist(path).map_err(|err| io(err.error))?;
    Ok(())
}
