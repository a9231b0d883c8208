//! Reading a safetensors file from a path: only a regular file, and never more bytes than its
//! header describes.

use std::fs::{File, FileType, Metadata};
use std::io::{self, Read};
use std::path::Path;

use safetensors::tensor::SafeTensorError;
use safetensors::SafeTensors;

use super::error::LoadError;
use super::format::{
    described_data, explain, header_length, header_too_large_error, LEN_BYTES, MAX_HEADER,
};

/// The bytes of the file at `path` that its header describes, and the file's length.
///
/// The length is at least the bytes' length; when it is longer, the bytes are the 8-byte header
/// length, the header and exactly the tensor data it describes, and the rest of the file was
/// not read. Errors that need no more than the header (a header length larger than the file, a
/// header that is too large, invalid, or whose offsets are wrong) are reported before any data
/// is read.
pub(super) fn read(path: &Path) -> Result<(Vec<u8>, usize), LoadError> {
    let io = |source: io::Error| LoadError::Io {
        path: path.to_path_buf(),
        source,
    };
    // Before opening: opening a FIFO waits for a writer.
    regular(path, &std::fs::metadata(path).map_err(io)?)?;
    let mut file = File::open(path).map_err(io)?;
    // Again on what was opened, in case the path was replaced in between.
    let metadata = file.metadata().map_err(io)?;
    regular(path, &metadata)?;
    let file_len = usize::try_from(metadata.len()).unwrap_or(usize::MAX);

    let mut bytes = Vec::new();
    reserve(&mut bytes, LEN_BYTES, path)?;
    append(&mut file, &mut bytes, LEN_BYTES as u64).map_err(io)?;
    let Some(len) = bytes.first_chunk::<LEN_BYTES>() else {
        // Empty or too short: the whole file was read.
        let len = bytes.len();
        return Ok((bytes, len));
    };
    let header_len = header_length(*len, file_len)?;
    if header_len > MAX_HEADER {
        return Err(header_too_large_error());
    }

    reserve(&mut bytes, header_len, path)?;
    append(&mut file, &mut bytes, header_len as u64).map_err(io)?;
    let data_start = LEN_BYTES + header_len;
    let header = match bytes.get(LEN_BYTES..data_start) {
        Some(header) => header,
        // The file is shorter than it was: parsing what was read explains it.
        None => {
            let len = bytes.len();
            return Ok((bytes, len));
        }
    };
    // What the file holds after its header (a clamp: nothing when it was cut inside the
    // header). `data_start >= 8`, so this is below `usize::MAX`.
    let remaining = file_len.saturating_sub(data_start);
    // The header alone: any fault but a data section of the wrong length is found without the
    // data (and explained with the file's length).
    let data = match SafeTensors::read_metadata(&bytes) {
        Ok(_) => Some(0),
        Err(SafeTensorError::MetadataIncompleteBuffer) => described_data(header),
        Err(err) => return Err(explain(err, header, remaining)),
    };
    // The header was read whole and is valid, so `data` is known.
    let data = data.unwrap_or(0);

    // The described data and one byte more, to learn whether the file goes on; never more
    // than the file holds after the header, and one byte.
    let wanted = data.min(remaining) + 1;
    reserve(&mut bytes, wanted, path)?;
    let limit = u64::try_from(wanted).unwrap_or(u64::MAX);
    append(&mut file, &mut bytes, limit).map_err(io)?;
    match data_start.checked_add(data) {
        // Trailing data: not read, but counted. `end < bytes.len()`, so `end + 1` fits.
        Some(end) if bytes.len() > end => {
            bytes.truncate(end);
            Ok((bytes, file_len.max(end + 1)))
        }
        // The file holds no more than its header describes (or describes more than a `usize`
        // counts, which no file holds).
        _ => {
            let len = bytes.len();
            Ok((bytes, len))
        }
    }
}

/// Refuses anything but a regular file.
fn regular(path: &Path, metadata: &Metadata) -> Result<(), LoadError> {
    let kind = metadata.file_type();
    if kind.is_file() {
        return Ok(());
    }
    Err(LoadError::NotAFile {
        path: path.to_path_buf(),
        kind: describe(kind),
    })
}

/// What a file that is not a regular file is, for [`LoadError::NotAFile`].
fn describe(kind: FileType) -> &'static str {
    if kind.is_dir() {
        return "a directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if kind.is_char_device() {
            return "a character device";
        }
        if kind.is_block_device() {
            return "a block device";
        }
        if kind.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if kind.is_socket() {
            return "a socket";
        }
    }
    "a special file"
}

/// Reserves room for `more` bytes, or says how many could not be had.
fn reserve(bytes: &mut Vec<u8>, more: usize, path: &Path) -> Result<(), LoadError> {
    // Memory that the system does not have is refused before it is written (`alloc`).
    let total = bytes.len() as u128 + more as u128;
    let fits = crate::alloc::bytes_fit_in_memory(total);
    let reserved = if fits {
        bytes.try_reserve_exact(more).ok()
    } else {
        None
    };
    reserved.ok_or_else(|| LoadError::Io {
        path: path.to_path_buf(),
        source: io::Error::new(
            io::ErrorKind::OutOfMemory,
            format!("cannot allocate {total} bytes to hold the file"),
        ),
    })?;
    Ok(())
}

/// Appends at most `limit` bytes of `file` to `bytes`, fewer at its end.
fn append(file: &mut File, bytes: &mut Vec<u8>, limit: u64) -> io::Result<()> {
    file.take(limit).read_to_end(bytes).map(|_| ())
}
