//! Walks trees for storepatch in a deterministic order without following symlinks, and maps files
//! for reading.
//!
//! The walk is sequential and sorted by file name (cheap next to reading the files); callers fan the
//! returned entries out over threads. Symlinks are never followed, not even as the root, so nothing
//! outside the given roots is read or touched. Errors (a directory that cannot be listed, say) are
//! collected with their path and the walk goes on.
//!
//! ```
//! let dir = tempfile::tempdir()?;
//! fs_err::write(dir.path().join("b"), "x")?;
//! fs_err::create_dir(dir.path().join("a"))?;
//! let walk = storepatch_walk::walk(dir.path())?;
//! let names: Vec<_> = walk.entries.iter().map(|entry| entry.path.file_name()).collect();
//! assert_eq!(names.len(), 3); // the root, `a`, `b`
//! assert!(walk.errors.is_empty());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

use std::io::Read;
use std::ops::Deref;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

mod mmap;

/// Errors from walking and reading, always with the path concerned.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A root or an entry below it could not be examined or listed.
    #[error("cannot read `{}`", .path.display())]
    Walk {
        /// The path that failed.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A file could not be read.
    #[error("cannot read `{}`", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A file changed size while it was being read.
    #[error("`{}` changed while it was read (expected {expected} bytes, found {found})", .path.display())]
    Changed {
        /// The file.
        path: PathBuf,
        /// Size when the walk saw it.
        expected: u64,
        /// Size when it was read (for a file that grew, one more than expected).
        found: u64,
    },
}

impl Error {
    /// The path the error is about.
    pub fn path(&self) -> &Path {
        match self {
            Self::Walk { path, .. } | Self::Read { path, .. } | Self::Changed { path, .. } => path,
        }
    }
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What an entry is, as seen without following symlinks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (never followed).
    Symlink,
    /// A device, socket or FIFO: never read.
    Other,
}

/// One entry of a walk.
#[derive(Clone, Debug)]
pub struct Entry {
    /// The path, starting with the root as given.
    pub path: PathBuf,
    /// 0 for the root.
    pub depth: usize,
    /// What the entry is.
    pub kind: EntryKind,
    /// Size in bytes.
    pub len: u64,
    /// Permission bits and file type, as `st_mode`.
    pub mode: u32,
    /// Device number (with `ino`, identifies hard links).
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// Number of hard links.
    pub nlink: u64,
}

/// The result of walking one root.
#[derive(Debug, Default)]
pub struct Walk {
    /// Entries in a deterministic order: depth first, siblings sorted by name, parents first.
    pub entries: Vec<Entry>,
    /// Entries that could not be examined; the walk went on without them.
    pub errors: Vec<Error>,
}

/// Walks `root` without following symlinks. Fails only if the root itself cannot be examined.
pub fn walk(root: &Path) -> Result<Walk> {
    root.symlink_metadata().map_err(|source| Error::Walk {
        path: root.to_path_buf(),
        source,
    })?;
    let mut walk = Walk::default();
    for item in walkdir::WalkDir::new(root)
        .follow_links(false)
        .follow_root_links(false)
        .sort_by_file_name()
    {
        match item {
            Ok(entry) => match entry.metadata() {
                Ok(metadata) => walk.entries.push(Entry {
                    kind: kind_of(metadata.file_type()),
                    len: metadata.len(),
                    mode: metadata.mode(),
                    dev: metadata.dev(),
                    ino: metadata.ino(),
                    nlink: metadata.nlink(),
                    depth: entry.depth(),
                    path: entry.into_path(),
                }),
                Err(err) => walk.errors.push(walk_error(root, err)),
            },
            Err(err) => walk.errors.push(walk_error(root, err)),
        }
    }
    Ok(walk)
}

fn kind_of(file_type: std::fs::FileType) -> EntryKind {
    if file_type.is_symlink() {
        EntryKind::Symlink
    } else if file_type.is_dir() {
        EntryKind::Dir
    } else if file_type.is_file() {
        EntryKind::File
    } else {
        EntryKind::Other
    }
}

fn walk_error(root: &Path, err: walkdir::Error) -> Error {
    let path = err.path().unwrap_or(root).to_path_buf();
    let source = err
        .into_io_error()
        .unwrap_or_else(|| std::io::Error::other("filesystem loop"));
    Error::Walk { path, source }
}

/// How file contents are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadPolicy {
    /// Map files at least this large; read smaller ones into memory.
    MmapAbove(u64),
    /// Always read into memory (no mmap at all).
    Read,
}

impl Default for ReadPolicy {
    fn default() -> Self {
        // Below this, a read(2) costs less than setting up and tearing down a mapping.
        Self::MmapAbove(1 << 20)
    }
}

/// The bytes of a file, mapped or read.
#[derive(Debug)]
pub enum Contents {
    /// A read-only mapping of the whole file.
    Mapped(mmap::Mapping),
    /// The file read into memory.
    Owned(Vec<u8>),
}

impl Deref for Contents {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Self::Mapped(mapping) => mapping,
            Self::Owned(bytes) => bytes,
        }
    }
}

/// Reads a regular file that the walk saw with `expected_len` bytes.
///
/// Mapping failures fall back to reading. A file that no longer has `expected_len` bytes is
/// reported as [`Error::Changed`] rather than half-processed.
pub fn read(path: &Path, expected_len: u64, policy: ReadPolicy) -> Result<Contents> {
    let read_error = |source: std::io::Error| Error::Read {
        path: path.to_path_buf(),
        source,
    };
    // Plain `OpenOptions` rather than fs-err: our own error already names the path.
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .open(path)
        .map_err(read_error)?;
    if let ReadPolicy::MmapAbove(threshold) = policy
        && expected_len >= threshold
    {
        let found = file.metadata().map_err(read_error)?.len();
        if found != expected_len {
            return Err(Error::Changed {
                path: path.to_path_buf(),
                expected: expected_len,
                found,
            });
        }
        if let Ok(mapping) = mmap::Mapping::new(&file) {
            return Ok(Contents::Mapped(mapping));
        }
    }
    // Read exactly the size the walk saw, then make sure nothing follows: two read(2) calls for a
    // small file, and no fstat or lseek (which `read_to_end` would add).
    let changed = |found: u64| Error::Changed {
        path: path.to_path_buf(),
        expected: expected_len,
        found,
    };
    let capacity = usize::try_from(expected_len).map_err(|_| changed(expected_len))?;
    let mut bytes = vec![0; capacity];
    let mut filled = 0;
    while filled < capacity {
        match file.read(&mut bytes[filled..]) {
            Ok(0) => return Err(changed(filled as u64)),
            Ok(read) => filled += read,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => return Err(read_error(err)),
        }
    }
    let mut probe = [0u8; 1];
    loop {
        match file.read(&mut probe) {
            Ok(0) => break,
            Ok(_) => return Err(changed(expected_len + 1)),
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => return Err(read_error(err)),
        }
    }
    Ok(Contents::Owned(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walk_is_sorted_and_does_not_follow_links() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs_err::create_dir_all(root.join("z/inner")).unwrap();
        fs_err::write(root.join("b"), "b").unwrap();
        fs_err::write(root.join("a"), "a").unwrap();
        let outside = dir.path().join("outside");
        fs_err::create_dir_all(&outside).unwrap();
        fs_err::write(outside.join("secret"), "s").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        let walk = walk(&root).unwrap();
        let names: Vec<_> = walk
            .entries
            .iter()
            .map(|entry| entry.path.strip_prefix(&root).unwrap().to_path_buf())
            .collect();
        let expected: Vec<PathBuf> = ["", "a", "b", "link", "z", "z/inner"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(names, expected);
        assert_eq!(walk.entries[3].kind, EntryKind::Symlink);
    }

    #[test]
    fn root_symlink_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        fs_err::create_dir(dir.path().join("real")).unwrap();
        fs_err::write(dir.path().join("real/file"), "x").unwrap();
        std::os::unix::fs::symlink(dir.path().join("real"), dir.path().join("link")).unwrap();
        let walk = walk(&dir.path().join("link")).unwrap();
        assert_eq!(walk.entries.len(), 1);
        assert_eq!(walk.entries[0].kind, EntryKind::Symlink);
    }

    #[test]
    fn missing_root_is_an_error_naming_it() {
        let err = walk(Path::new("/nonexistent/storepatch")).unwrap_err();
        assert_eq!(err.path(), Path::new("/nonexistent/storepatch"));
    }

    #[test]
    fn read_policies_agree_and_detect_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("file");
        let bytes: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        fs_err::write(&path, &bytes).unwrap();
        let mapped = read(&path, 100_000, ReadPolicy::MmapAbove(0)).unwrap();
        assert!(matches!(mapped, Contents::Mapped(_)));
        let owned = read(&path, 100_000, ReadPolicy::Read).unwrap();
        assert_eq!(&*mapped, &*owned);
        assert_eq!(&*owned, &bytes[..]);
        let changed = read(&path, 5, ReadPolicy::Read).unwrap_err();
        assert!(
            matches!(changed, Error::Changed { found: 6, .. }),
            "{changed:?}"
        );
        let changed = read(&path, 200_000, ReadPolicy::Read).unwrap_err();
        assert!(
            matches!(changed, Error::Changed { found: 100_000, .. }),
            "{changed:?}"
        );
        let changed = read(&path, 200_000, ReadPolicy::MmapAbove(0)).unwrap_err();
        assert!(
            matches!(changed, Error::Changed { found: 100_000, .. }),
            "{changed:?}"
        );
        let empty = dir.path().join("empty");
        fs_err::write(&empty, "").unwrap();
        assert!(
            read(&empty, 0, ReadPolicy::MmapAbove(0))
                .unwrap()
                .is_empty()
        );
    }
}
