//! The safetensors format: explaining a bad file, encoding a net's parameters.

use std::collections::{BTreeMap, HashMap};

use safetensors::tensor::{Metadata, SafeTensorError, TensorInfo};

use super::error::{LoadError, SaveError};
use super::layout::write_row_major;
use crate::init::Dims;
use nalgebra::DMatrix;

use crate::layer::{Buffer, BufferValue};
use crate::state::{BoundLayer, Param};

/// The bytes before a safetensors header: its length, a little-endian `u64`.
pub(super) const LEN_BYTES: usize = 8;

/// The largest header the `safetensors` crate reads or writes, in bytes.
pub(super) const MAX_HEADER: usize = 100_000_000;

/// Why a header longer than [`MAX_HEADER`] is refused.
fn header_too_large() -> String {
    format!("the header is larger than the {MAX_HEADER} bytes safetensors allows")
}

/// [`LoadError::Header`] for a header longer than [`MAX_HEADER`].
/// The header's length, read from the file's first 8 bytes `len`, when the `file_len`-byte
/// file holds that many bytes after them; [`LoadError::HeaderLength`] when it does not.
pub(super) fn header_length(len: [u8; LEN_BYTES], file_len: usize) -> Result<usize, LoadError> {
    let declared = u64::from_le_bytes(len);
    let available = file_len.saturating_sub(LEN_BYTES);
    match usize::try_from(declared) {
        Ok(n) if n <= available => Ok(n),
        _ => Err(LoadError::HeaderLength {
            declared,
            available,
        }),
    }
}

/// The number of values of a tensor of `shape`: 0 when a size is 0, whatever the others;
/// `None` when the product passes `usize::MAX`.
pub(super) fn values_of(shape: &[usize]) -> Option<usize> {
    if shape.contains(&0) {
        return Some(0);
    }
    shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
}

pub(super) fn header_too_large_error() -> LoadError {
    LoadError::Header {
        reason: header_too_large(),
    }
}

/// The bytes of tensor data a valid header describes: where its last tensor's data ends (0
/// when it has none); `None` when it is not a valid header.
pub(super) fn described_data(header: &[u8]) -> Option<usize> {
    let metadata: Metadata = serde_json::from_slice(header).ok()?;
    Some(
        metadata
            .tensors()
            .values()
            .map(|info| info.data_offsets.1)
            .max()
            .unwrap_or(0),
    )
}

/// Turns the `safetensors` crate's verdict on a bad file into an error that names the tensor
/// and the numbers. The crate's layout errors do not name them all, so the header is read
/// again (with the crate's own `TensorInfo`) to find the first tensor at fault, checking the
/// crate's rules in the crate's order.
pub(super) fn explain(err: SafeTensorError, header: &[u8], available: usize) -> LoadError {
    let reason = match err {
        SafeTensorError::InvalidHeader(e) => format!("the header is not UTF-8: {e}"),
        SafeTensorError::InvalidHeaderDeserialization(e) => {
            format!("the header is not a JSON description of tensors: {e}")
        }
        SafeTensorError::HeaderTooLarge => header_too_large(),
        other => {
            return locate(header, available).unwrap_or(LoadError::Header {
                reason: other.to_string(),
            })
        }
    };
    LoadError::Header { reason }
}

/// The first tensor whose offsets or length break the safetensors layout, or a data section of
/// the wrong length.
fn locate(header: &[u8], available: usize) -> Option<LoadError> {
    let entries: HashMap<String, serde_json::Value> = serde_json::from_slice(header).ok()?;
    let mut tensors: Vec<(String, TensorInfo)> = entries
        .into_iter()
        .filter(|(name, _)| name != "__metadata__")
        .filter_map(|(name, v)| Some((name, serde_json::from_value(v).ok()?)))
        .collect();
    tensors.sort_by(|(a, x), (b, y)| x.data_offsets.cmp(&y.data_offsets).then(a.cmp(b)));
    let mut previous_end = 0;
    for (name, info) in tensors {
        let (start, end) = info.data_offsets;
        if start != previous_end || end < start {
            return Some(LoadError::Offsets {
                name,
                start,
                end,
                previous_end,
            });
        }
        let expected = values_of(&info.shape)
            .and_then(|n| n.checked_mul(info.dtype.bitsize()))
            .map(|bits| bits.div_ceil(8));
        // `end >= start` was checked above.
        let found = end.saturating_sub(start);
        if expected != Some(found) {
            return Some(LoadError::DataLength {
                name,
                dtype: info.dtype.to_string(),
                shape: info.shape,
                expected,
                found,
            });
        }
        if end > available {
            return Some(LoadError::PastEnd {
                name,
                end,
                available,
            });
        }
        previous_end = end;
    }
    (previous_end != available).then_some(LoadError::TrailingData {
        described: previous_end,
        available,
    })
}

/// The file [`Net::save`](crate::Net::save) writes, as the `safetensors` crate would encode
/// it but with the header's keys sorted, in one buffer allocated fallibly.
///
/// The crate writes `__metadata__` from a `HashMap`, whose order changes from run to run; with
/// the keys sorted (`serde_json`'s maps are sorted), saving the same parameters always writes
/// the same bytes. As the crate does, the tensors' data is in the order of their alignment
/// (`int64` counts first) and then of their names, and the header is padded with spaces to a
/// multiple of 8 bytes.
pub(super) fn encode_file(layers: &[BoundLayer]) -> Result<Vec<u8>, SaveError> {
    let params = layers.iter().flat_map(|l| &l.params).map(Entry::from);
    let buffers = layers.iter().flat_map(|l| &l.buffers).map(Entry::from);
    encode_params(params.chain(buffers), &BTreeMap::new())
}

/// A tensor to write: `f32` values, stored as a parameter is, or an `int64` count.
#[derive(Clone, Copy)]
pub(crate) struct Entry<'a> {
    name: &'a str,
    shape: &'a [usize],
    data: Data<'a>,
}

/// The data of an [`Entry`].
#[derive(Clone, Copy)]
enum Data<'a> {
    F32(&'a DMatrix<f32>),
    I64(i64),
}

impl<'a> From<&'a Param> for Entry<'a> {
    fn from(p: &'a Param) -> Self {
        Entry {
            name: &p.name,
            shape: &p.shape,
            data: Data::F32(&p.value),
        }
    }
}

impl<'a> From<&'a Buffer> for Entry<'a> {
    fn from(b: &'a Buffer) -> Self {
        let data = match &b.value {
            BufferValue::Values(v) => Data::F32(v),
            BufferValue::Count(c) => Data::I64(*c),
        };
        Entry {
            name: &b.name,
            shape: &b.shape,
            data,
        }
    }
}

impl Entry<'_> {
    /// The values it holds.
    fn len(&self) -> usize {
        match self.data {
            Data::F32(v) => v.len(),
            Data::I64(_) => 1,
        }
    }

    /// Its bytes per value, and its type's name in the file.
    fn dtype(&self) -> (usize, &'static str) {
        match self.data {
            Data::F32(_) => (F32_BYTES, "F32"),
            Data::I64(_) => (I64_BYTES, "I64"),
        }
    }
}

/// [`encode_file`] of any tensors, with `extra` added to the metadata: a checkpoint adds the
/// optimizer's state to the net's parameters, and its hyper-parameters to the metadata.
pub(crate) fn encode_params<'a>(
    entries: impl Iterator<Item = Entry<'a>>,
    extra: &BTreeMap<String, String>,
) -> Result<Vec<u8>, SaveError> {
    // As the crate orders them: by alignment (`int64` first), then by name, so every tensor
    // starts at a multiple of its element's size. One entry per name.
    let by_name: BTreeMap<&str, Entry<'a>> = entries.map(|e| (e.name, e)).collect();
    let mut params: Vec<(&str, Entry<'a>)> = by_name.into_iter().collect();
    params.sort_by_key(|(name, e)| (core::cmp::Reverse(e.dtype().0), *name));
    let mut entries: BTreeMap<&str, serde_json::Value> = BTreeMap::new();
    let mut data_len: usize = 0;
    for &(name, ref p) in &params {
        let values = values_of(p.shape);
        if values != Some(p.len()) {
            return Err(SaveError::Encode {
                reason: format!(
                    "tensor `{name}` has shape {} but holds {} values",
                    Dims(p.shape),
                    p.len()
                ),
            });
        }
        let (bytes, dtype) = p.dtype();
        let end = p
            .len()
            .checked_mul(bytes)
            .and_then(|n| n.checked_add(data_len))
            .ok_or_else(|| too_large(params.iter().map(|(_, e)| e)))?;
        entries.insert(
            name,
            serde_json::json!({
                "dtype": dtype,
                "shape": p.shape,
                "data_offsets": [data_len, end],
            }),
        );
        data_len = end;
    }
    let mut metadata = file_metadata();
    metadata.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
    entries.insert("__metadata__", serde_json::json!(metadata));
    let mut header = serde_json::to_vec(&entries).map_err(|err| SaveError::Encode {
        reason: err.to_string(),
    })?;
    header.resize(header.len().next_multiple_of(LEN_BYTES), b' ');
    if header.len() > MAX_HEADER {
        return Err(SaveError::Encode {
            reason: header_too_large(),
        });
    }
    let total = LEN_BYTES
        .checked_add(header.len())
        .and_then(|n| n.checked_add(data_len))
        .ok_or_else(|| too_large(params.iter().map(|(_, e)| e)))?;
    let mut bytes = Vec::new();
    // Memory that the system does not have is refused before it is written (`alloc`).
    if !crate::alloc::bytes_fit_in_memory(total as u128) || bytes.try_reserve_exact(total).is_err()
    {
        return Err(SaveError::OutOfMemory {
            bytes: total as u128,
        });
    }
    bytes.extend_from_slice(&(header.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&header);
    for (_, p) in &params {
        match p.data {
            Data::F32(value) => {
                let start = bytes.len();
                // Within the capacity reserved (so no allocation), and `total` did not
                // overflow.
                let end = start.saturating_add(value.len().saturating_mul(F32_BYTES));
                bytes.resize(end, 0);
                let written = bytes
                    .get_mut(start..)
                    .is_some_and(|out| write_row_major(value, out));
                if !written {
                    return Err(SaveError::Encode {
                        reason: format!("tensor `{}` could not be laid out", p.name),
                    });
                }
            }
            Data::I64(count) => bytes.extend_from_slice(&count.to_le_bytes()),
        }
    }
    Ok(bytes)
}

/// The bytes of one `f32`.
const F32_BYTES: usize = std::mem::size_of::<f32>();

/// The bytes of one `i64`.
const I64_BYTES: usize = std::mem::size_of::<i64>();

/// [`SaveError::OutOfMemory`] for tensors whose bytes overflow `usize`.
fn too_large<'a, 'b: 'a>(params: impl Iterator<Item = &'a Entry<'b>>) -> SaveError {
    let bytes = params
        .map(|p| p.len() as u128 * p.dtype().0 as u128)
        .fold(LEN_BYTES as u128, u128::saturating_add);
    SaveError::OutOfMemory { bytes }
}

/// The `__metadata__` lazynet writes.
fn file_metadata() -> BTreeMap<String, String> {
    [
        ("format", "pt"),
        ("library", env!("CARGO_PKG_NAME")),
        ("version", env!("CARGO_PKG_VERSION")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}
