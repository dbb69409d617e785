//! Same-length byte rewrites of files, symlinks and names for storepatch, written atomically with
//! modes and hard links kept.
//!
//! Every change lands with one `rename(2)`: a file is written in full to a temporary file in the
//! same directory, given the original's mode (and owner, when we may), then renamed over the
//! original. Readers see the old or the new file, never a mix, and a failure leaves the original
//! untouched. Because the original inode is replaced rather than written, other hard links to it
//! (outside the tree, say in the Nix store) keep the old contents; [`link_into_place`] lets the
//! caller re-link names inside the tree to the new file.
//!
//! This is the one write path of every storepatch command (scrub, relink, elf): [`Replacement`]
//! writes the temporary file (named `.storepatch-<pid>-<n>.tmp`, so that [`Leftover`] recognises
//! what a killed run left behind), refuses to replace anything but a regular file, and is
//! registered for removal when a signal stops the run ([`interrupt`], [`remove_registered`]).
//!
//! ```
//! use storepatch_rewrite::{Patch, rewrite_file};
//!
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("pyvenv.cfg");
//! fs_err::write(&path, "home = /nix/store/abc/bin\n")?;
//! let original = fs_err::read(&path)?;
//! rewrite_file(&path, &original, &[Patch { offset: 18, bytes: b"eee" }])?;
//! assert_eq!(fs_err::read_to_string(&path)?, "home = /nix/store/eee/bin\n");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

pub mod pyc;
pub mod record;
mod relocate;

pub use relocate::{
    Occurrence, PYTHON_BYTECODE, Relocation, Splice, binary_kind, find_occurrences,
    replace_file_spliced, splice, splice_changes, splice_pieces,
};

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub mod interrupt;
mod temporary;

use temporary::Registration;
pub use temporary::{Cleaned, Leftover, Replacement, remove_registered, special_kind};

/// Errors from rewriting, always naming the path.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O operation failed.
    #[error("{action} `{}`", .path.display())]
    Io {
        /// What was being done, such as "cannot write".
        action: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A patch does not fit the contents it is meant for.
    #[error("patch at offset {offset} ({len} bytes) does not fit `{}` ({size} bytes) or overlaps another", .path.display())]
    PatchOutOfBounds {
        /// The file.
        path: PathBuf,
        /// The offset of the patch.
        offset: u64,
        /// Its length.
        len: usize,
        /// The size of the contents.
        size: u64,
    },
    /// A rename would replace an entry that already exists.
    #[error("cannot rename `{}`: `{}` already exists", .from.display(), .to.display())]
    Exists {
        /// The entry being renamed.
        from: PathBuf,
        /// The name that is taken.
        to: PathBuf,
    },
    /// The entry to be replaced is not a regular file (a device, FIFO, socket, directory or
    /// symlink is never replaced).
    #[error("cannot replace `{}`: {kind}, not a regular file", .path.display())]
    NotRegular {
        /// The entry.
        path: PathBuf,
        /// What it is, such as "a FIFO".
        kind: &'static str,
    },
    /// The entry to be retargeted is not a symlink.
    #[error("cannot retarget `{}`: not a symlink any more", .path.display())]
    NotSymlink {
        /// The entry.
        path: PathBuf,
    },
    /// A signal stopped the run before this entry was written; it is unchanged.
    #[error("`{}` left unchanged: stopped by signal {signal}", .path.display())]
    Interrupted {
        /// The entry.
        path: PathBuf,
        /// The signal's number.
        signal: i32,
    },
    /// The path has no parent directory or no file name.
    #[error("cannot replace `{}`: it has no parent directory", .path.display())]
    NoParent {
        /// The path.
        path: PathBuf,
    },
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Replace `bytes.len()` bytes at `offset` with `bytes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Patch<'bytes> {
    /// Where the replaced bytes start.
    pub offset: u64,
    /// The new bytes (the same number of bytes are replaced).
    pub bytes: &'bytes [u8],
}

/// Applies `patches` to `contents` in memory (used for names and symlink targets).
pub fn apply(contents: &[u8], patches: &[Patch<'_>]) -> Option<Vec<u8>> {
    let mut out = contents.to_vec();
    for patch in patches {
        let start = usize::try_from(patch.offset).ok()?;
        out.get_mut(start..start.checked_add(patch.bytes.len())?)?
            .copy_from_slice(patch.bytes);
    }
    Some(out)
}

pub(crate) fn parent_of(path: &Path) -> Result<&Path> {
    match path.parent() {
        Some(parent) if path.file_name().is_some() => Ok(if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        }),
        _ => Err(Error::NoParent {
            path: path.to_path_buf(),
        }),
    }
}

/// Writes `contents` with `patches` applied to a temporary file beside `path`, gives it the mode
/// (and, where allowed, the owner) of `path`, and renames it over `path`.
///
/// `contents` is normally `path`'s own bytes, read or mapped earlier. Patches must be sorted,
/// in bounds and not overlap; nothing is written otherwise.
pub fn rewrite_file(path: &Path, contents: &[u8], patches: &[Patch<'_>]) -> Result<()> {
    let metadata = fs_err::symlink_metadata(path).map_err(|err| Error::Io {
        action: "cannot examine",
        path: path.to_path_buf(),
        source: err,
    })?;
    replace_file(path, &metadata, contents, patches)
}

/// [`rewrite_file`] for a caller that has just examined `path` (through the file it read
/// `contents` from, say): `original` gives the mode and owner for the new file.
pub fn replace_file(
    path: &Path,
    original: &std::fs::Metadata,
    contents: &[u8],
    patches: &[Patch<'_>],
) -> Result<()> {
    let size = contents.len() as u64;
    let mut position = 0u64;
    for patch in patches {
        let end = patch.offset.checked_add(patch.bytes.len() as u64);
        if patch.offset < position || end.is_none_or(|end| end > size) {
            return Err(Error::PatchOutOfBounds {
                path: path.to_path_buf(),
                offset: patch.offset,
                len: patch.bytes.len(),
                size,
            });
        }
        position = end.unwrap_or(size);
    }
    let mut replacement = Replacement::beside_examined(path, original)?;
    let temp = replacement.path().to_path_buf();
    let mut writer = SparseWriter::new(replacement.file(), contents.len());
    let mut position = 0usize;
    let mut write = |bytes: &[u8]| writer.write(bytes).map_err(write_error(&temp, path));
    for patch in patches {
        // In bounds: checked above.
        let start = patch.offset as usize;
        write(&contents[position..start])?;
        write(patch.bytes)?;
        position = start + patch.bytes.len();
    }
    write(&contents[position..])?;
    writer.finish().map_err(write_error(&temp, path))?;
    replacement.commit(original)
}

/// The error for a failed write to `temp`, or [`Error::Interrupted`] when a signal stopped it.
fn write_error<'path>(
    temp: &'path Path,
    target: &'path Path,
) -> impl FnOnce(std::io::Error) -> Error + 'path {
    move |source| match interrupt::signal() {
        Some(signal) if source.kind() == std::io::ErrorKind::Interrupted => Error::Interrupted {
            path: target.to_path_buf(),
            signal,
        },
        _ => Error::Io {
            action: "cannot write",
            path: temp.to_path_buf(),
            source,
        },
    }
}

/// Writes a file sequentially, leaving holes where whole blocks are zero, so that a sparse file
/// stays sparse after a rewrite (a 5 GB sparse file must not become 5 GB on disk).
struct SparseWriter<'file> {
    file: &'file mut std::fs::File,
    length: u64,
    /// Whether the file ends in a hole so far (skipped over, not written).
    hole_at_end: bool,
    /// Bytes not yet written, fewer than one block.
    pending: Vec<u8>,
}

impl<'file> SparseWriter<'file> {
    const BLOCK: usize = 64 * 1024;
    /// [`Self::BLOCK`] as a seek distance.
    const BLOCK_SEEK: i64 = 64 * 1024;

    /// A writer for a file of `size` bytes.
    fn new(file: &'file mut std::fs::File, size: usize) -> Self {
        Self {
            file,
            length: 0,
            hole_at_end: false,
            pending: Vec::with_capacity(size.min(Self::BLOCK)),
        }
    }

    fn write(&mut self, mut bytes: &[u8]) -> std::io::Result<()> {
        if !self.pending.is_empty() {
            let take = bytes.len().min(Self::BLOCK - self.pending.len());
            self.pending.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.pending.len() == Self::BLOCK {
                let block = std::mem::take(&mut self.pending);
                self.block(&block)?;
                self.pending = block;
                self.pending.clear();
            }
        }
        let mut blocks = bytes.chunks_exact(Self::BLOCK);
        for block in &mut blocks {
            self.block(block)?;
        }
        self.pending.extend_from_slice(blocks.remainder());
        Ok(())
    }

    /// Writes one whole block (exactly [`Self::BLOCK`] bytes).
    fn block(&mut self, block: &[u8]) -> std::io::Result<()> {
        use std::io::Seek as _;
        debug_assert_eq!(block.len(), Self::BLOCK);
        if interrupt::signal().is_some() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::Interrupted,
                "stopped by a signal",
            ));
        }
        self.hole_at_end = block.iter().all(|&byte| byte == 0);
        if self.hole_at_end {
            self.file
                .seek(std::io::SeekFrom::Current(Self::BLOCK_SEEK))?;
        } else {
            self.file.write_all(block)?;
        }
        self.length += block.len() as u64;
        Ok(())
    }

    fn finish(self) -> std::io::Result<()> {
        if !self.pending.is_empty() {
            return self.file.write_all(&self.pending);
        }
        if self.hole_at_end {
            // A trailing hole is only a seek so far: the length makes it part of the file.
            self.file.set_len(self.length)?;
        }
        Ok(())
    }
}

/// Replaces the symlink at `path` with one pointing at `target`, atomically.
pub fn retarget_symlink(path: &Path, target: &OsStr) -> Result<()> {
    let metadata = fs_err::symlink_metadata(path).map_err(io_error("cannot examine", path))?;
    if !metadata.file_type().is_symlink() {
        return Err(Error::NotSymlink {
            path: path.to_path_buf(),
        });
    }
    let (temp, ()) = Registration::create(path, |temp| std::os::unix::fs::symlink(target, temp))?;
    temp.rename_over(path)
}

/// Renames the entry at `path` to `new_name` in the same directory, refusing to replace anything.
pub fn rename_entry(path: &Path, new_name: &OsStr) -> Result<PathBuf> {
    let destination = parent_of(path)?.join(new_name);
    if fs_err::symlink_metadata(&destination).is_ok() {
        return Err(Error::Exists {
            from: path.to_path_buf(),
            to: destination,
        });
    }
    fs_err::rename(path, &destination).map_err(|source| Error::Io {
        action: "cannot rename",
        path: path.to_path_buf(),
        source,
    })?;
    Ok(destination)
}

/// Makes `path` another hard link to `source` (atomically replacing the regular file `path` was,
/// if any; anything else there is refused).
pub fn link_into_place(source: &Path, path: &Path) -> Result<()> {
    temporary::check_replaceable(path)?;
    let (temp, ()) = Registration::create(path, |temp| fs_err::hard_link(source, temp)).map_err(
        |err| match err {
            Error::Io { source: cause, .. } => Error::Io {
                action: "cannot link",
                path: path.to_path_buf(),
                source: cause,
            },
            other => other,
        },
    )?;
    temp.rename_over(path)
}

/// Directories made writable for the duration of a rewrite; [`WritableDirs::restore`] puts the
/// original modes back (deepest first), and so does dropping it.
#[derive(Debug, Default)]
pub struct WritableDirs {
    changed: Vec<(PathBuf, u32)>,
}

impl WritableDirs {
    /// Gives the owner write (and search) permission on each of `dirs` that lacks it.
    ///
    /// Call this before writing in parallel, so that no two threads race on one directory's mode.
    pub fn make_writable<'path>(dirs: impl IntoIterator<Item = &'path Path>) -> Result<Self> {
        let mut guard = Self::default();
        // Callers pass the parent of every file they will write, thousands of times the same
        // few directories: compared as bytes, not component by component, and not copied.
        let mut seen = std::collections::HashSet::new();
        for dir in dirs {
            if !seen.insert(dir.as_os_str().as_bytes()) {
                continue;
            }
            let metadata = fs_err::symlink_metadata(dir).map_err(|err| Error::Io {
                action: "cannot examine",
                path: dir.to_path_buf(),
                source: err,
            })?;
            let mode = metadata.mode() & 0o7777;
            if mode & 0o300 != 0o300 {
                fs_err::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o300))
                    .map_err(|err| Error::Io {
                        action: "cannot make writable",
                        path: dir.to_path_buf(),
                        source: err,
                    })?;
                guard.changed.push((dir.to_path_buf(), mode));
            }
        }
        Ok(guard)
    }

    /// Updates the remembered path of a directory that was renamed meanwhile.
    pub fn renamed(&mut self, from: &Path, to: &Path) {
        for (path, _) in &mut self.changed {
            if let Ok(rest) = path.strip_prefix(from) {
                *path = to.join(rest);
            }
        }
    }

    /// Restores the original modes; returns the first error, after trying every directory.
    pub fn restore(mut self) -> Result<()> {
        self.restore_all()
    }

    fn restore_all(&mut self) -> Result<()> {
        let mut first_error = None;
        // Deepest first, so that restoring a parent never blocks a child.
        self.changed
            .sort_by_key(|(path, _)| std::cmp::Reverse(path.components().count()));
        for (path, mode) in self.changed.drain(..) {
            if let Err(err) = fs_err::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            {
                first_error.get_or_insert(Error::Io {
                    action: "cannot restore the mode of",
                    path,
                    source: err,
                });
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for WritableDirs {
    fn drop(&mut self) {
        if let Err(err) = self.restore_all() {
            log::warn!("{err}");
        }
    }
}

/// Turns bytes into an `OsString` (names and symlink targets are bytes on Unix).
pub fn os_string(bytes: Vec<u8>) -> OsString {
    use std::os::unix::ffi::OsStringExt;
    OsString::from_vec(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn rewrite_keeps_mode_and_breaks_outside_hard_links() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("file");
        let other = dir.path().join("other-link");
        fs_err::write(&path, b"0123456789").unwrap();
        fs_err::hard_link(&path, &other).unwrap();
        fs_err::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).unwrap();
        let contents = fs_err::read(&path).unwrap();
        rewrite_file(
            &path,
            &contents,
            &[
                Patch {
                    offset: 2,
                    bytes: b"ab",
                },
                Patch {
                    offset: 8,
                    bytes: b"cd",
                },
            ],
        )
        .unwrap();
        assert_eq!(fs_err::read(&path).unwrap(), b"01ab4567cd");
        assert_eq!(fs_err::read(&other).unwrap(), b"0123456789");
        assert_eq!(fs_err::metadata(&path).unwrap().mode() & 0o7777, 0o444);
        let leftovers: Vec<_> = fs_err::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 2, "no temporary file is left behind");
    }

    #[test]
    fn sparse_files_stay_sparse_and_exact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sparse");
        let size = 8 << 20;
        let mut contents = vec![0u8; size];
        contents[5 << 20..(5 << 20) + 4].copy_from_slice(b"data");
        contents[size - 1] = 0;
        fs_err::write(&path, &contents).unwrap();
        rewrite_file(
            &path,
            &contents,
            &[Patch {
                offset: 5 << 20,
                bytes: b"DATA",
            }],
        )
        .unwrap();
        let written = fs_err::read(&path).unwrap();
        assert_eq!(written.len(), size);
        contents[5 << 20..(5 << 20) + 4].copy_from_slice(b"DATA");
        assert_eq!(written, contents);
        let allocated = fs_err::metadata(&path).unwrap().blocks() * 512;
        assert!(allocated < 1 << 20, "{allocated} bytes allocated");
        // Odd sizes and writes that straddle blocks come out exact too.
        let odd: Vec<u8> = (0..200_001u32).map(|i| u8::from(i % 70_000 < 3)).collect();
        rewrite_file(
            &path,
            &odd,
            &[Patch {
                offset: 65_535,
                bytes: b"xy",
            }],
        )
        .unwrap();
        let mut expected = odd.clone();
        expected[65_535..65_537].copy_from_slice(b"xy");
        assert_eq!(fs_err::read(&path).unwrap(), expected);
        // Whole blocks of data and nothing after them: the last block is the end of the file.
        let blocks = vec![7u8; 2 * 65_536];
        rewrite_file(
            &path,
            &blocks,
            &[Patch {
                offset: 0,
                bytes: b"z",
            }],
        )
        .unwrap();
        let mut expected = blocks.clone();
        expected[0] = b'z';
        assert_eq!(fs_err::read(&path).unwrap(), expected);
    }

    #[test]
    fn bad_patches_write_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("file");
        fs_err::write(&path, b"0123").unwrap();
        let contents = fs_err::read(&path).unwrap();
        for patches in [
            vec![Patch {
                offset: 3,
                bytes: b"xy",
            }],
            vec![
                Patch {
                    offset: 2,
                    bytes: b"x",
                },
                Patch {
                    offset: 1,
                    bytes: b"y",
                },
            ],
            vec![Patch {
                offset: u64::MAX,
                bytes: b"x",
            }],
        ] {
            let err = rewrite_file(&path, &contents, &patches).unwrap_err();
            assert!(matches!(err, Error::PatchOutOfBounds { .. }), "{err}");
        }
        assert_eq!(fs_err::read(&path).unwrap(), b"0123");
        assert_eq!(fs_err::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn symlinks_names_and_links() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink("/old/target", &link).unwrap();
        retarget_symlink(&link, OsStr::new("/new/target")).unwrap();
        assert_eq!(fs_err::read_link(&link).unwrap(), Path::new("/new/target"));

        let renamed = rename_entry(&link, OsStr::new("renamed")).unwrap();
        assert_eq!(renamed, dir.path().join("renamed"));
        fs_err::write(dir.path().join("taken"), "").unwrap();
        assert!(matches!(
            rename_entry(&renamed, OsStr::new("taken")),
            Err(Error::Exists { .. })
        ));

        let source = dir.path().join("source");
        fs_err::write(&source, "new").unwrap();
        link_into_place(&source, &dir.path().join("taken")).unwrap();
        assert_eq!(
            fs_err::read_to_string(dir.path().join("taken")).unwrap(),
            "new"
        );
        assert_eq!(fs_err::metadata(&source).unwrap().nlink(), 2);
    }

    #[test]
    fn writable_dirs_restore_modes() {
        let dir = tempfile::tempdir().unwrap();
        let locked = dir.path().join("locked");
        fs_err::create_dir(&locked).unwrap();
        fs_err::set_permissions(&locked, std::fs::Permissions::from_mode(0o555)).unwrap();
        let guard = WritableDirs::make_writable([locked.as_path()]).unwrap();
        assert_eq!(fs_err::metadata(&locked).unwrap().mode() & 0o777, 0o755);
        guard.restore().unwrap();
        assert_eq!(fs_err::metadata(&locked).unwrap().mode() & 0o777, 0o555);
    }
}
