//! The safetensors format: explaining a bad file, encoding a net's parameters.

use std::collections::{BTreeMap, HashMap};

use safetensors::tensor::{Dtype, SafeTensorError, TensorInfo, TensorView};

use super::error::{LoadError, SaveError};
use super::layout::row_major_bytes;
use crate::state::BoundLayer;

/// The bytes before a safetensors header: its length, a little-endian `u64`.
pub(super) const LEN_BYTES: usize = 8;

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
        SafeTensorError::HeaderTooLarge => {
            "the header is larger than the 100000000 bytes safetensors allows".to_owned()
        }
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
        let expected = info
            .shape
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .and_then(|n| n.checked_mul(info.dtype.bitsize()))
            .map(|bits| bits.div_ceil(8));
        if expected != Some(end - start) {
            return Some(LoadError::DataLength {
                name,
                dtype: info.dtype.to_string(),
                shape: info.shape,
                expected,
                found: end - start,
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

/// The `__metadata__` lazynet writes.
fn file_metadata() -> HashMap<String, String> {
    [
        ("format", "pt"),
        ("library", env!("CARGO_PKG_NAME")),
        ("version", env!("CARGO_PKG_VERSION")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// Every parameter as `(name, shape, little-endian f32 bytes in row-major order)`.
fn encode(layers: &[BoundLayer]) -> Vec<(String, Vec<usize>, Vec<u8>)> {
    layers
        .iter()
        .flat_map(|l| &l.params)
        .map(|p| (p.name.clone(), p.shape.clone(), row_major_bytes(&p.value)))
        .collect()
}

fn views(
    tensors: &[(String, Vec<usize>, Vec<u8>)],
) -> Result<Vec<(&str, TensorView<'_>)>, SaveError> {
    tensors
        .iter()
        .map(|(name, shape, bytes)| {
            TensorView::new(Dtype::F32, shape.clone(), bytes)
                .map(|view| (name.as_str(), view))
                .map_err(encode_error)
        })
        .collect()
}

fn encode_error(err: SafeTensorError) -> SaveError {
    SaveError::Encode {
        reason: err.to_string(),
    }
}

/// The file [`Net::save`](crate::Net::save) writes: the `safetensors` crate's encoding, with the header's keys
/// sorted.
///
/// The crate writes `__metadata__` from a `HashMap`, whose order changes from run to run; with
/// the keys sorted, saving the same parameters always writes the same bytes. The header is
/// rewritten in place: the same keys and values, so the same length.
pub(super) fn encode_file(layers: &[BoundLayer]) -> Result<Vec<u8>, SaveError> {
    let tensors = encode(layers);
    let mut bytes =
        safetensors::serialize(views(&tensors)?, Some(file_metadata())).map_err(encode_error)?;
    let header_len = bytes
        .first_chunk::<LEN_BYTES>()
        .and_then(|n| usize::try_from(u64::from_le_bytes(*n)).ok())
        .unwrap_or(0);
    if let Some(header) = bytes.get_mut(LEN_BYTES..LEN_BYTES + header_len) {
        if let Some(sorted) = sorted_header(header) {
            if sorted.len() <= header.len() {
                let (text, padding) = header.split_at_mut(sorted.len());
                text.copy_from_slice(&sorted);
                padding.fill(b' ');
            }
        }
    }
    Ok(bytes)
}

/// The header with its keys, and those of `__metadata__`, in sorted order.
fn sorted_header(header: &[u8]) -> Option<Vec<u8>> {
    let mut entries: BTreeMap<String, serde_json::Value> = serde_json::from_slice(header).ok()?;
    if let Some(metadata) = entries.get_mut("__metadata__") {
        let sorted: BTreeMap<String, String> = serde_json::from_value(metadata.take()).ok()?;
        *metadata = serde_json::to_value(sorted).ok()?;
    }
    serde_json::to_vec(&entries).ok()
}
