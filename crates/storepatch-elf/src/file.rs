//! Writing a [`Patch`] to a file: changed bytes only for in-place patches, a checked temporary
//! file renamed over the original for relayouts.
use std::io::Write as _;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::error::{Error, Result};
use crate::plan::{Layout, Planned};
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
    // the headers and strings live in. The mapping is dropped before anything is written.
    let bytes = read_file(input)?;
    let planned =
        crate::plan::plan_layout(&bytes, edits, options).map_err(|err| err.with_path(input))?;
    let same_file = input == output;
    if !same_file && output_target(output)? == Target::Device {
        return write_to_device(output, &bytes, planned).map_err(|err| err.with_path(input));
    }
    match planned {
        Planned::Unchanged if same_file => Ok(Outcome::Unchanged),
        Planned::Unchanged => {
            replace(input, output, |file, path| {
                file.write_all(&bytes).map_err(io(path))
            })?;
            Ok(Outcome::Unchanged)
        }
        Planned::InPlace(writes) if same_file && !is_shared_inode(input)? => {
            drop(bytes);
            let written = write_in_place(output, &writes)?;
            Ok(Outcome::InPlace {
                bytes_written: written,
            })
        }
        Planned::InPlace(writes) => {
            // A separate output, or a hard-linked file (copied and renamed, so that the other
            // names keep the old bytes).
            let mut copy = bytes.to_vec();
            let written: u64 = writes
                .iter()
                .map(|write| write.apply_within(&mut copy, 0) as u64)
                .sum();
            replace(input, output, |file, path| {
                file.write_all(&copy).map_err(io(path))
            })?;
            Ok(Outcome::InPlace {
                bytes_written: written,
            })
        }
        Planned::Relayout(layout) => {
            // Streamed to disk: no second copy of a big file in memory.
            let old_size = bytes.len() as u64;
            let new_size = write_layout(input, output, old_size, &layout)
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

/// Writes a relayout of `input` to a temporary file next to `output`: the unchanged bytes are
/// copied by the kernel (`copy_file_range`), the writes and the new segment are put in place,
/// the result is mapped and verified, and only then renamed over `output` with `input`'s mode.
/// Returns the new size.
fn write_layout(input: &Path, output: &Path, old_size: u64, layout: &Layout) -> Result<u64> {
    use std::io::Read as _;

    let new_size = layout.length + layout.tail.len() as u64;
    replace(input, output, |file, path| {
        let source = fs_err::File::open(input).map_err(io(input))?;
        let prefix = old_size.min(layout.length);
        let copied = std::io::copy(&mut source.file().take(prefix), file).map_err(io(path))?;
        if copied != prefix {
            return Err(Error::Io {
                path: input.to_path_buf(),
                cause: std::io::Error::other("the file changed while it was patched"),
            });
        }
        file.set_len(layout.length).map_err(io(path))?;
        for write in &layout.writes {
            let end = write.offset.saturating_add(write.bytes.len() as u64);
            if end > old_size {
                return Err(Error::malformed("write outside the file", write.offset));
            }
            // Bytes past the new length are cut, as `Layout::build` does.
            let keep =
                usize::try_from(end.min(layout.length).saturating_sub(write.offset)).unwrap_or(0);
            file.write_all_at(&write.bytes[..keep.min(write.bytes.len())], write.offset)
                .map_err(io(path))?;
        }
        file.write_all_at(&layout.tail, layout.length)
            .map_err(io(path))?;
        layout.verify(&map(path, new_size)?)
    })?;
    Ok(new_size)
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
