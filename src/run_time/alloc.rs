//! Fallible allocation: every buffer whose size comes from a user (a run-time width, a batch's
//! sample count, a file) is reserved with `try_reserve_exact`, so memory that cannot be had is
//! an error, never an abort.
//!
//! On Linux the allocator rarely refuses: memory is overcommitted, and a buffer larger than
//! what is free is handed out and kills the process (the OOM killer) once it is written. Every
//! buffer here is written at once (zeroed, then filled), so a large one is first compared with
//! the memory the system reports available ([`fits_in_memory`]), and refused when it is more.

use nalgebra::DMatrix;

use crate::error::ShapeError;

/// The most `f32` values one allocation can hold (`isize::MAX` bytes).
pub(crate) const MAX_VALUES: usize = isize::MAX as usize / core::mem::size_of::<f32>();

/// Buffers up to this many bytes are not compared with the available memory: reading it costs
/// more than zeroing a small buffer, and a small one does not decide whether memory runs out.
const CHECKED_FROM_BYTES: u128 = 64 << 20;

/// Whether `values` more `f32`s fit in the memory the system reports available: on Linux,
/// `MemAvailable + SwapFree` of `/proc/meminfo` (less when a cgroup limit leaves less), less a
/// sixteenth for everything else. `true` when the system says nothing (another OS, no
/// `/proc`), and for small amounts.
pub(crate) fn fits_in_memory(values: u128) -> bool {
    values
        .checked_mul(core::mem::size_of::<f32>() as u128)
        .is_some_and(bytes_fit_in_memory)
}

/// [`fits_in_memory`] for a number of bytes.
pub(crate) fn bytes_fit_in_memory(bytes: u128) -> bool {
    // A margin of a sixteenth: the rest of the process, and the system, need some too.
    bytes < CHECKED_FROM_BYTES
        || available_bytes().is_none_or(|free| bytes <= u128::from(free - free / 16))
}

/// The bytes this process can still have, as far as the system tells: `None` when it does not.
fn available_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = meminfo.lines().find(|l| l.starts_with(name))?;
        let kb: u64 = line
            .get(name.len()..)?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        kb.checked_mul(1024)
    };
    // Two counts of bytes of this machine: their sum is far below `u64::MAX`.
    let system = field("MemAvailable:")?.checked_add(field("SwapFree:").unwrap_or(0))?;
    Some(match cgroup_room() {
        Some(room) => system.min(room),
        None => system,
    })
}

/// What the cgroup memory limits leave, if one is set: the least room over the process's own
/// cgroup (from `/proc/self/cgroup`) and its ancestors, v2 (`memory.max`) or v1
/// (`memory.limit_in_bytes`). A limit is a ceiling on usage, so a usage above it leaves 0.
fn cgroup_room() -> Option<u64> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let (root, files, path) = memory_cgroup(&own)?;
    let read = |dir: &std::path::Path, file: &str| -> Option<u64> {
        std::fs::read_to_string(dir.join(file))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    let own_dir = std::path::Path::new(root).join(path.trim_start_matches('/'));
    own_dir
        .ancestors()
        .take_while(|dir| dir.starts_with(root))
        .filter_map(|dir| Some((read(dir, files[0])?, read(dir, files[1])?)))
        // A clamp, not a size: usage past the limit leaves no room.
        .map(|(limit, used)| limit.saturating_sub(used))
        .min()
}

/// Where the memory controller of the cgroup named in `/proc/self/cgroup` keeps its limit and
/// usage: the mount, the two files, and the cgroup's path. v1 (`N:memory:/path`, or a list of
/// controllers with `memory`) wins over v2 (`0::/path`), which a v1 memory controller
/// overrides.
fn memory_cgroup(own: &str) -> Option<(&'static str, [&'static str; 2], &str)> {
    let entries = own.lines().filter_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        Some((controllers, path))
    });
    let mut v2 = None;
    for (controllers, path) in entries {
        if controllers.split(',').any(|c| c == "memory") {
            let files = ["memory.limit_in_bytes", "memory.usage_in_bytes"];
            return Some(("/sys/fs/cgroup/memory", files, path));
        }
        if controllers.is_empty() {
            v2 = Some(("/sys/fs/cgroup", ["memory.max", "memory.current"], path));
        }
    }
    v2
}

/// An empty vector with room for `len` values of `T`, or `None` when that room cannot be had
/// (more than the memory available, or refused by the allocator).
pub(crate) fn try_vec<T>(len: usize) -> Option<Vec<T>> {
    let bytes = (len as u128).checked_mul(core::mem::size_of::<T>() as u128)?;
    if !bytes_fit_in_memory(bytes) {
        return None;
    }
    let mut v = Vec::new();
    v.try_reserve_exact(len).ok()?;
    Some(v)
}

/// A vector of `len` zeros, or `None` when the allocator refuses it (or `len` is more than one
/// allocation can hold, or more than the memory available).
pub(crate) fn try_zeroed_vec(len: usize) -> Option<Vec<f32>> {
    if len > MAX_VALUES || !fits_in_memory(len as u128) {
        return None;
    }
    let mut v = Vec::new();
    v.try_reserve_exact(len).ok()?;
    // Written now, so the memory is the process's before the next check reads what is left.
    // (`calloc` could skip the writing, but only through an allocation that aborts when it
    // fails.)
    v.resize(len, 0.0);
    Some(v)
}

/// A `rows × cols` matrix of zeros; [`ShapeError::OutOfMemory`] naming `what` (a noun phrase
/// with the shape, built only on failure) when it cannot be had.
pub(crate) fn try_zeros(
    rows: usize,
    cols: usize,
    what: impl FnOnce() -> String,
) -> Result<DMatrix<f32>, ShapeError> {
    // The product of two `usize`s always fits in a `u128`.
    let fail = |what: String| ShapeError::OutOfMemory {
        what,
        values: rows as u128 * cols as u128,
    };
    match rows.checked_mul(cols).and_then(try_zeroed_vec) {
        Some(v) => Ok(DMatrix::from_vec(rows, cols, v)),
        None => Err(fail(what())),
    }
}

/// A copy of `m`, allocated fallibly.
pub(crate) fn try_clone(
    m: &DMatrix<f32>,
    what: impl FnOnce() -> String,
) -> Result<DMatrix<f32>, ShapeError> {
    let mut v = Vec::new();
    if !fits_in_memory(m.len() as u128) || v.try_reserve_exact(m.len()).is_err() {
        return Err(ShapeError::OutOfMemory {
            what: what(),
            values: m.len() as u128,
        });
    }
    v.extend_from_slice(m.as_slice());
    Ok(DMatrix::from_vec(m.nrows(), m.ncols(), v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn impossible_sizes_are_errors() {
        assert!(try_zeroed_vec(usize::MAX).is_none());
        assert!(try_zeroed_vec(MAX_VALUES + 1).is_none());
        let err = try_zeros(usize::MAX, 3, || "a test matrix".into()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot allocate 55340232221128654845 values for a test matrix"
        );
        // 2^62 values (16 EiB) is no more than a slice can index, but no allocator gives it.
        assert!(try_zeros(1 << 31, 1 << 31, String::new).is_err());
        assert_eq!(try_zeros(2, 3, String::new).map(|m| m.shape()), Ok((2, 3)));
    }

    #[test]
    fn the_memory_cgroup_is_found_in_v1_and_v2() {
        let v1 = "9:name=systemd:/\n4:memory:/process_api/abc\n0::/\n";
        assert_eq!(
            memory_cgroup(v1),
            Some((
                "/sys/fs/cgroup/memory",
                ["memory.limit_in_bytes", "memory.usage_in_bytes"],
                "/process_api/abc"
            ))
        );
        let v2 = "0::/user.slice/app.scope\n";
        assert_eq!(
            memory_cgroup(v2),
            Some((
                "/sys/fs/cgroup",
                ["memory.max", "memory.current"],
                "/user.slice/app.scope"
            ))
        );
        assert_eq!(memory_cgroup("3:cpu,memory:/x\n").map(|c| c.2), Some("/x"));
        assert_eq!(memory_cgroup("1:cpu:/\n"), None);
    }

    #[test]
    fn memory_is_compared_with_what_is_available() {
        assert!(fits_in_memory(1000));
        if let Some(free) = available_bytes() {
            // Twice what is free does not fit; a tenth does.
            assert!(!fits_in_memory(u128::from(free) / 2));
            assert!(fits_in_memory(u128::from(free) / 40));
        }
        assert!(!fits_in_memory(u128::MAX));
    }
}
