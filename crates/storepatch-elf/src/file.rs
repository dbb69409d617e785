//! Writing a [`Patch`] to a file: changed bytes only for in-place patches, a checked temporary
//! file renamed over the original for relayouts.
use std::io::Write as _;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::error::{Error, Result};
use crate::plan::Planned;
use crate::{ElfEdits, Options};

/// What [`apply_to_file`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing needed doing; the file was not opened for writing.
    Unchanged,
    /// Bytes were overwritten in place.
    InPlace {
        /// How many bytes were written.
        bytes_written: u64,
    },
    /// The file was rewritten with a new segment.
    Relayout {
        /// Size before.
        old_size: u64,
        /// Size after.
        new_size: u64,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |error| Error::Io {
        path: path.to_path_buf(),
        cause: naming(path, error),
    }
}

/// fs-err's messages name the path already; others get it prepended, so the message of
/// [`Error::Io`] names the path exactly once.
fn naming(path: &Path, error: std::io::Error) -> std::io::Error {
    let message = error.to_string();
    let shown = path.display().to_string();
    if message.contains(&shown) {
        error
    } else {
        std::io::Error::new(error.kind(), format!("{shown}: {message}"))
    }
}

/// Applies `edits` to the ELF file at `path`.
///
/// On error the file is untouched. The file is mapped (small ones are read); an in-place patch
/// then writes only its changed byte ranges (a read-only file is made writable for that and
/// restored), a relayout is written to a temporary file next to `path`, re-parsed, and renamed
/// over it with the original permissions. A file with several hard links is never modified through the shared inode: it
/// is copied and renamed, so the other names keep their contents.
pub fn apply_to_file(path: &Path, edits: &ElfEdits, options: &Options) -> Result<Outcome> {
    apply_to_file_as(path, path, edits, options)
}

/// Like [`apply_to_file`], but writes the result to `output` (which may equal `input`).
pub fn apply_to_file_as(
    input: &Path,
    output: &Path,
    edits: &ElfEdits,
    options: &Options,
) -> Result<Outcome> {
    // Mapped, not read: an in-place edit of a 450 MB library should touch only the pages that
    // the headers and strings live in.
    let bytes = read_file(input)?;
    write_planned(input, output, &bytes, edits, options)
}

/// Like [`apply_to_file`], for a caller that has just read the file: `bytes` are its contents
/// (best mapped, see [`read_file`]), so it is neither read nor planned again. The safety rules
/// are those of [`apply_to_file`]: a relayout is streamed from the file itself and verified
/// before the rename, and a file that no longer has `bytes.len()` bytes is left alone.
pub fn apply_to_read_file(
    path: &Path,
    bytes: &[u8],
    edits: &ElfEdits,
    options: &Options,
) -> Result<Outcome> {
    write_planned(path, path, bytes, edits, options)
}

/// Plans `edits` on `bytes` (the contents of `input`) and writes the result to `output`.
fn write_planned(
    input: &Path,
    output: &Path,
    bytes: &[u8],
    edits: &ElfEdits,
    options: &Options,
) -> Result<Outcome> {
    let planned =
        crate::plan::plan_layout(bytes, edits, options).map_err(|err| err.with_path(input))?;
    let same_file = input == output;
    if !same_file && output_target(output)? == Target::Device {
        return write_to_device(output, bytes, planned).map_err(|err| err.with_path(input));
    }
    let old_size = bytes.len() as u64;
    match planned {
        Planned::Unchanged if same_file => Ok(Outcome::Unchanged),
        Planned::Unchanged => {
            let copy = Copy {
                bytes,
                writes: &[],
                length: old_size,
                tail: &[],
            };
            write_copy(input, output, &copy, |_| Ok(()))?;
            Ok(Outcome::Unchanged)
        }
        Planned::InPlace(writes) if same_file && !is_shared_inode(input)? => {
            let written = write_in_place(output, &writes)?;
            Ok(Outcome::InPlace {
                bytes_written: written,
            })
        }
        Planned::InPlace(writes) => {
            // A separate output, or a hard-linked file (copied and renamed, so that the other
            // names keep the old bytes), streamed as a relayout is.
            let written = writes.iter().map(|write| write.bytes.len() as u64).sum();
            let copy = Copy {
                bytes,
                writes: &writes,
                length: old_size,
                tail: &[],
            };
            write_copy(input, output, &copy, |_| Ok(())).map_err(|err| err.with_path(input))?;
            Ok(Outcome::InPlace {
                bytes_written: written,
            })
        }
        Planned::Relayout(layout) => {
            // Streamed to disk: no second copy of a big file in memory.
            let copy = Copy {
                bytes,
                writes: &layout.writes,
                length: layout.length,
                tail: &layout.tail,
            };
            let new_size = write_copy(input, output, &copy, |new_bytes| layout.verify(new_bytes))
                .map_err(|err| err.with_path(input))?;
            Ok(Outcome::Relayout { old_size, new_size })
        }
    }
}

/// Reads an ELF file: mapped or, when small, read, never more than the size `stat` gives.
///
/// Only a regular file is read (symbolic links are followed): a device such as `/dev/zero`
/// would give bytes without end and a FIFO would block, so both are refused with
/// [`Error::NotRegular`] before anything is opened.
pub fn read_file(path: &Path) -> Result<storepatch_walk::Contents> {
    let metadata = fs_err::metadata(path).map_err(io(path))?;
    if let Some(kind) = storepatch_rewrite::special_kind(metadata.file_type()) {
        return Err(Error::NotRegular {
            path: path.to_path_buf(),
            kind,
            action: "read",
        });
    }
    map(path, metadata.len())
}

/// How a separate output is written.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    /// A new regular file renamed into place (over a regular file or a symbolic link, which
    /// is replaced, not followed).
    Replace,
    /// A character device (such as `/dev/null`) is written into, as patchelf does; it is never
    /// renamed over.
    Device,
}

/// Decides, from `lstat`, how `output` is written; a FIFO, socket, directory or block device is
/// refused (a FIFO would block, and renaming over any of them destroys it).
fn output_target(output: &Path) -> Result<Target> {
    let metadata = match fs_err::symlink_metadata(output) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Target::Replace),
        Err(error) => return Err(io(output)(error)),
    };
    let file_type = metadata.file_type();
    if file_type.is_file() || file_type.is_symlink() {
        return Ok(Target::Replace);
    }
    if std::os::unix::fs::FileTypeExt::is_char_device(&file_type) {
        return Ok(Target::Device);
    }
    Err(Error::NotRegular {
        path: output.to_path_buf(),
        kind: storepatch_rewrite::special_kind(file_type).unwrap_or("a special file"),
        action: "replace",
    })
}

/// Writes the whole result into the character device `output`, opened for writing only (not
/// created, not truncated, not renamed over).
fn write_to_device(output: &Path, bytes: &[u8], planned: Planned) -> Result<Outcome> {
    let old_size = bytes.len() as u64;
    let (contents, outcome) = match planned {
        Planned::Unchanged => (bytes.to_vec(), Outcome::Unchanged),
        Planned::InPlace(writes) => {
            let mut copy = bytes.to_vec();
            let written: u64 = writes
                .iter()
                .map(|write| write.apply_within(&mut copy, 0) as u64)
                .sum();
            (
                copy,
                Outcome::InPlace {
                    bytes_written: written,
                },
            )
        }
        Planned::Relayout(layout) => {
            let new_bytes = layout.build(bytes)?;
            layout.verify(&new_bytes)?;
            let new_size = new_bytes.len() as u64;
            (new_bytes, Outcome::Relayout { old_size, new_size })
        }
    };
    let mut device = fs_err::OpenOptions::new()
        .write(true)
        .open(output)
        .map_err(io(output))?;
    device.write_all(&contents).map_err(io(output))?;
    device.flush().map_err(io(output))?;
    Ok(outcome)
}

/// `path` mapped (or, when small, read), expected to be `size` bytes long.
fn map(path: &Path, size: u64) -> Result<storepatch_walk::Contents> {
    storepatch_walk::read(path, size, storepatch_walk::ReadPolicy::default()).map_err(|err| {
        Error::Io {
            path: path.to_path_buf(),
            cause: std::io::Error::other(err.to_string()),
        }
    })
}

fn is_shared_inode(path: &Path) -> Result<bool> {
    use std::os::unix::fs::MetadataExt;
    Ok(fs_err::metadata(path).map_err(io(path))?.nlink() > 1)
}

/// Overwrites byte ranges of `path`; a read-only file is made writable for the duration.
fn write_in_place(path: &Path, writes: &[crate::plan::Write]) -> Result<u64> {
    use std::os::unix::fs::PermissionsExt;
    let permissions = fs_err::metadata(path).map_err(io(path))?.permissions();
    let read_only = permissions.mode() & 0o200 == 0;
    if read_only {
        let writable = std::fs::Permissions::from_mode(permissions.mode() | 0o200);
        fs_err::set_permissions(path, writable).map_err(io(path))?;
    }
    let result = (|| {
        let file = fs_err::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io(path))?;
        let mut written = 0;
        for write in writes {
            file.file()
                .write_all_at(&write.bytes, write.offset)
                .map_err(io(path))?;
            written += write.bytes.len() as u64;
        }
        file.sync_data().map_err(io(path))?;
        Ok(written)
    })();
    if read_only {
        fs_err::set_permissions(path, permissions).map_err(io(path))?;
    }
    result
}

/// A new file described as the old one (`bytes`, the contents of the input) with `writes`
/// applied, cut or zero-padded to `length`, then `tail`.
struct Copy<'a> {
    bytes: &'a [u8],
    writes: &'a [crate::plan::Write],
    length: u64,
    tail: &'a [u8],
}

/// Writes `copy` to a temporary file next to `output`: the unchanged bytes are copied by the
/// kernel from `input` (`copy_file_range`), the writes (gathered into few, see
/// [`gathered_writes`]) and the tail are put in place, the result is mapped and checked with
/// `check`, and only then renamed over `output` with `input`'s mode. Returns the new size.
fn write_copy(
    input: &Path,
    output: &Path,
    copy: &Copy<'_>,
    check: impl FnOnce(&[u8]) -> Result<()>,
) -> Result<u64> {
    use std::io::Read as _;

    let old_size = copy.bytes.len() as u64;
    let new_size = copy.length + copy.tail.len() as u64;
    for write in copy.writes {
        if write.offset.saturating_add(write.bytes.len() as u64) > old_size {
            return Err(Error::malformed("write outside the file", write.offset));
        }
    }
    replace(input, output, |file, path| {
        let source = fs_err::File::open(input).map_err(io(input))?;
        // One byte more than expected is asked for: a file that grew is noticed too.
        let copied =
            std::io::copy(&mut source.file().take(old_size + 1), file).map_err(io(path))?;
        if copied != old_size {
            return Err(Error::Io {
                path: input.to_path_buf(),
                cause: std::io::Error::other("the file changed while it was patched"),
            });
        }
        if copy.length != old_size {
            file.set_len(copy.length).map_err(io(path))?;
        }
        for (offset, bytes) in gathered_writes(copy.bytes, copy.writes) {
            // Bytes past the new length are cut, as `Layout::build` does.
            let keep = usize::try_from(copy.length.saturating_sub(offset))
                .unwrap_or(usize::MAX)
                .min(bytes.len());
            if keep > 0 {
                file.write_all_at(&bytes[..keep], offset)
                    .map_err(io(path))?;
            }
        }
        if !copy.tail.is_empty() {
            file.write_all_at(copy.tail, copy.length)
                .map_err(io(path))?;
        }
        check(&map(path, new_size)?)
    })?;
    Ok(new_size)
}

/// The largest gap of unchanged bytes that [`gathered_writes`] writes again to join two writes.
pub(crate) const GATHER_GAP: u64 = 256;
/// The largest write [`gathered_writes`] makes of smaller ones.
pub(crate) const GATHER_MAX: u64 = 64 << 10;

/// `writes` (all inside `bytes`, applied in order, a later one winning where they overlap) as
/// few writes of whole ranges: writes less than [`GATHER_GAP`] bytes apart become one, with the
/// unchanged bytes between them taken from `bytes`, up to [`GATHER_MAX`] bytes each. A relayout
/// rewrites hundreds of fields a few bytes apart (program and section headers, dynamic entries):
/// one `pwrite` each cost more than the kernel copy of the whole file.
pub(crate) fn gathered_writes(bytes: &[u8], writes: &[crate::plan::Write]) -> Vec<(u64, Vec<u8>)> {
    let mut ranges: Vec<(u64, u64)> = writes
        .iter()
        .filter(|write| !write.bytes.is_empty())
        .map(|write| (write.offset, write.offset + write.bytes.len() as u64))
        .collect();
    ranges.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (start, end) in ranges {
        match merged.last_mut() {
            // Inside the last range already (which may be one write longer than the largest).
            Some(last) if end <= last.1 => {}
            Some(last)
                if start <= last.1.saturating_add(GATHER_GAP) && end - last.0 <= GATHER_MAX =>
            {
                last.1 = end;
            }
            // Past the largest write, the next one starts where the last ends (a write may
            // fall into two ranges: each gets its part).
            last => {
                let start = last.map_or(start, |last| start.max(last.1));
                merged.push((start, end));
            }
        }
    }
    // Each range holds the original bytes, then every write that falls in it, in order.
    let mut gathered: Vec<(u64, Vec<u8>)> = merged
        .iter()
        .map(|&(start, end)| {
            let range = usize::try_from(start).unwrap_or(usize::MAX)
                ..usize::try_from(end).unwrap_or(usize::MAX);
            (
                start,
                bytes.get(range).map(<[u8]>::to_vec).unwrap_or_default(),
            )
        })
        .collect();
    for write in writes {
        let first = merged.partition_point(|&(_, end)| end <= write.offset);
        for (start, window) in &mut gathered[first..] {
            if *start >= write.offset.saturating_add(write.bytes.len() as u64) {
                break;
            }
            write.apply_within(window, *start);
        }
    }
    gathered
}

/// Fills a temporary file next to `output` with `fill`, syncs it, gives it the mode and owner of
/// `input` and renames it over `output`, through the one write path every command uses
/// ([`storepatch_rewrite::Replacement`]: regular files only, registered for removal on signals).
/// On any error the temporary file is removed and `output` is untouched.
fn replace(
    input: &Path,
    output: &Path,
    fill: impl FnOnce(&mut std::fs::File, &Path) -> Result<()>,
) -> Result<()> {
    let like = fs_err::metadata(input).map_err(io(input))?;
    let mut replacement = storepatch_rewrite::Replacement::beside(output)
        .map_err(write_error(output))?
        .sync_data(true);
    let path = replacement.path().to_path_buf();
    fill(replacement.file(), &path)?;
    replacement.commit(&like).map_err(write_error(output))
}

/// An error of the shared write path as an [`Error::Io`] about `path`.
fn write_error(path: &Path) -> impl FnOnce(storepatch_rewrite::Error) -> Error + '_ {
    move |error| {
        let kind = match &error {
            storepatch_rewrite::Error::Io { source, .. } => source.kind(),
            storepatch_rewrite::Error::Interrupted { .. } => std::io::ErrorKind::Interrupted,
            _ => std::io::ErrorKind::InvalidInput,
        };
        // The rewrite error's message names the action and the path, its source the cause;
        // both go into the one message.
        let mut message = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        Error::Io {
            path: path.to_path_buf(),
            cause: std::io::Error::new(kind, message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Write;

    /// The gathered writes leave a file exactly as the writes do one by one in order (a later one
    /// winning where they overlap), in fewer writes, none longer than allowed unless one write
    /// alone is.
    #[test]
    fn gathered_writes_leave_the_same_bytes() {
        let original: Vec<u8> = (0..200_000u32).map(|index| (index % 251) as u8).collect();
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = |below: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % below
        };
        for round in 0..200 {
            let mut writes = Vec::new();
            for _ in 0..next(40) {
                // Clustered offsets (headers) and some far apart; sizes from 1 byte to past
                // the largest gathered write.
                let offset = if next(3) == 0 {
                    next(original.len() as u64)
                } else {
                    next(4096)
                };
                let room = original.len() as u64 - offset;
                let len = (if next(20) == 0 {
                    next(GATHER_MAX * 2)
                } else {
                    next(16)
                } + 1)
                    .min(room);
                let byte = u8::try_from(next(256)).unwrap();
                writes.push(Write {
                    offset,
                    bytes: vec![byte; usize::try_from(len).unwrap()],
                });
            }
            let mut expected = original.clone();
            for write in &writes {
                write.apply_within(&mut expected, 0);
            }
            let gathered = gathered_writes(&original, &writes);
            assert!(gathered.len() <= writes.len(), "round {round}");
            let mut found = original.clone();
            for (offset, bytes) in &gathered {
                let at = usize::try_from(*offset).unwrap();
                found[at..at + bytes.len()].copy_from_slice(bytes);
                let alone = writes.iter().any(|write| {
                    write.offset <= *offset
                        && write.offset + write.bytes.len() as u64 >= *offset + bytes.len() as u64
                });
                assert!(bytes.len() as u64 <= GATHER_MAX || alone, "round {round}");
            }
            assert!(found == expected, "round {round}");
            // In order, and never overlapping.
            for pair in gathered.windows(2) {
                let end = pair[0].0 + pair[0].1.len() as u64;
                assert!(
                    pair[1].0 >= end,
                    "round {round}: overlapping gathered writes"
                );
            }
        }
    }

    #[test]
    fn near_writes_become_one() {
        let original = vec![0u8; 4096];
        let writes: Vec<Write> = (0..100)
            .map(|index| Write {
                offset: 64 + index * 8,
                bytes: vec![1, 2],
            })
            .chain([Write {
                offset: 3000,
                bytes: vec![9],
            }])
            .collect();
        let gathered = gathered_writes(&original, &writes);
        assert_eq!(gathered.len(), 2);
        assert_eq!(gathered[0].0, 64);
        assert_eq!(gathered[0].1.len(), 99 * 8 + 2);
        assert_eq!(gathered[1], (3000, vec![9]));
    }
}
