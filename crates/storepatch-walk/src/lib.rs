//! Walks trees for storepatch in a deterministic order without following symlinks, and maps files
//! for reading.
//!
//! The walk runs on rayon's threads and can hand each entry to a caller's function as soon as it is
//! found ([`walk_with`]), so reading files overlaps with listing directories; the order of the
//! result is fixed (depth first, siblings sorted by name) whatever the thread count. Symlinks are never followed, not even as the root, so nothing
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

use rayon::prelude::*;

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
    walk_with(root, |_| ()).map(|(walk, _)| walk)
}

/// Walks `root` like [`walk`], calling `visit` on every entry as soon as it is found, on rayon's
/// threads; returns the walk and `visit`'s results in walk order.
///
/// Directories are listed level by level: every entry of one depth is visited (and every directory
/// among them listed) in parallel before the next depth starts. The result does not depend on the
/// thread count or on the order in which the threads get to the entries.
///
/// ```
/// let dir = tempfile::tempdir()?;
/// fs_err::write(dir.path().join("file"), "four")?;
/// let (walk, sizes) = storepatch_walk::walk_with(dir.path(), |entry| entry.len)?;
/// assert_eq!(walk.entries.len(), 2);
/// assert_eq!(sizes[1], 4);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn walk_with<T, F>(root: &Path, visit: F) -> Result<(Walk, Vec<T>)>
where
    T: Send,
    F: Fn(&Entry) -> T + Sync,
{
    let metadata = root.symlink_metadata().map_err(|source| Error::Walk {
        path: root.to_path_buf(),
        source,
    })?;
    let mut levels: Vec<Level<T>> = Vec::new();
    let mut current = vec![Entry::new(root.to_path_buf(), 0, &metadata)];
    while !current.is_empty() {
        let visited: Vec<(T, Listing)> = current
            .par_iter()
            .map(|entry| {
                let value = visit(entry);
                let listing = if entry.kind == EntryKind::Dir {
                    list_dir(entry)
                } else {
                    Listing::default()
                };
                (value, listing)
            })
            .collect();
        let mut next = Vec::new();
        let mut nodes = Vec::with_capacity(current.len());
        for (entry, (value, listing)) in current.into_iter().zip(visited) {
            let children = next.len()..next.len() + listing.children.len();
            next.extend(listing.children);
            nodes.push(Some(Node {
                entry,
                value,
                children,
                errors: listing.errors,
            }));
        }
        levels.push(nodes);
        current = next;
    }
    Ok(flatten(levels))
}

/// One depth of a walk: its entries in order, each with the range of its children one level down.
type Level<T> = Vec<Option<Node<T>>>;

struct Node<T> {
    entry: Entry,
    value: T,
    children: std::ops::Range<usize>,
    errors: Vec<Error>,
}

/// A directory's children, sorted by name, and what could not be listed or examined.
#[derive(Default)]
struct Listing {
    children: Vec<Entry>,
    errors: Vec<Error>,
}

/// Lists a directory. Each child is examined through the open directory (`fstatat` on one name),
/// not by resolving its whole path again.
fn list_dir(dir: &Entry) -> Listing {
    let mut listing = Listing::default();
    #[expect(
        clippy::disallowed_methods,
        reason = "Error::Walk names the path; fs-err's ReadDir would copy it into every entry"
    )]
    let read_dir = match std::fs::read_dir(&dir.path) {
        Ok(read_dir) => read_dir,
        Err(source) => {
            listing.errors.push(Error::Walk {
                path: dir.path.clone(),
                source,
            });
            return listing;
        }
    };
    let mut named = Vec::new();
    for item in read_dir {
        let dirent = match item {
            Ok(dirent) => dirent,
            Err(source) => {
                listing.errors.push(Error::Walk {
                    path: dir.path.clone(),
                    source,
                });
                continue;
            }
        };
        match dirent.metadata() {
            Ok(metadata) => named.push((
                dirent.file_name(),
                Entry::new(dirent.path(), dir.depth + 1, &metadata),
            )),
            Err(source) => listing.errors.push(Error::Walk {
                path: dirent.path(),
                source,
            }),
        }
    }
    // Byte-wise by name, as `OsStr` compares on Unix.
    named.sort_unstable_by(|(left, _), (right, _)| left.cmp(right));
    listing.children = named.into_iter().map(|(_, entry)| entry).collect();
    listing
}

/// Puts the levels into walk order: depth first, parents before children, siblings by name.
fn flatten<T>(mut levels: Vec<Level<T>>) -> (Walk, Vec<T>) {
    let total = levels.iter().map(Vec::len).sum();
    let mut walk = Walk {
        entries: Vec::with_capacity(total),
        errors: Vec::new(),
    };
    let mut values = Vec::with_capacity(total);
    // (depth, index within that depth), last to visit first.
    let mut stack = vec![(0, 0)];
    while let Some((depth, index)) = stack.pop() {
        let Some(node) = levels[depth][index].take() else {
            continue;
        };
        walk.entries.push(node.entry);
        values.push(node.value);
        walk.errors.extend(node.errors);
        stack.extend(node.children.rev().map(|child| (depth + 1, child)));
    }
    (walk, values)
}

impl Entry {
    fn new(path: PathBuf, depth: usize, metadata: &std::fs::Metadata) -> Self {
        Self {
            kind: kind_of(metadata.file_type()),
            len: metadata.len(),
            mode: metadata.mode(),
            dev: metadata.dev(),
            ino: metadata.ino(),
            nlink: metadata.nlink(),
            depth,
            path,
        }
    }
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
    let file = open(path)?;
    if let Some(mapping) = map(&file, path, expected_len, policy)? {
        return Ok(Contents::Mapped(mapping));
    }
    let mut bytes = Vec::new();
    let len = read_exactly(&file, path, expected_len, &mut bytes)?;
    bytes.truncate(len);
    Ok(Contents::Owned(bytes))
}

/// Reads a file like [`read`] and hands its bytes to `with`.
///
/// A file that is read rather than mapped goes into a buffer kept per thread, so going through
/// many small files allocates (and faults in) no new memory per file.
pub fn read_with<R>(
    path: &Path,
    expected_len: u64,
    policy: ReadPolicy,
    with: impl FnOnce(&[u8]) -> R,
) -> Result<R> {
    /// Buffers that grew beyond this are not kept for the next file.
    const KEEP_AT_MOST: usize = 4 << 20;
    thread_local! {
        static BUFFER: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
    }
    let file = open(path)?;
    if let Some(mapping) = map(&file, path, expected_len, policy)? {
        return Ok(with(&mapping));
    }
    // Taken out rather than borrowed: `with` may itself read files on this thread.
    let mut buffer = BUFFER.take();
    let result =
        read_exactly(&file, path, expected_len, &mut buffer).map(|len| with(&buffer[..len]));
    if buffer.capacity() <= KEEP_AT_MOST {
        BUFFER.set(buffer);
    }
    result
}

fn open(path: &Path) -> Result<std::fs::File> {
    // Plain `OpenOptions` rather than fs-err: our own error already names the path.
    std::fs::OpenOptions::new()
        .read(true)
        .open(path)
        .map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })
}

/// Maps `file` if the policy says so and its size is still `expected_len`; `None` means read it.
fn map(
    file: &std::fs::File,
    path: &Path,
    expected_len: u64,
    policy: ReadPolicy,
) -> Result<Option<mmap::Mapping>> {
    let ReadPolicy::MmapAbove(threshold) = policy else {
        return Ok(None);
    };
    if expected_len < threshold {
        return Ok(None);
    }
    let found = file
        .metadata()
        .map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?
        .len();
    if found != expected_len {
        return Err(Error::Changed {
            path: path.to_path_buf(),
            expected: expected_len,
            found,
        });
    }
    Ok(mmap::Mapping::new(file).ok())
}

/// Reads the whole of `file`, which must hold exactly `expected_len` bytes, into the start of
/// `buffer`; returns that length.
///
/// The buffer only ever grows (zeroed once as it does), so a buffer that is reused is never
/// cleared again. At most one byte more than expected is asked for, so a file that grew is noticed
/// without reading on: one `read(2)` for the contents and one that finds the end, and no `fstat` or
/// `lseek` (which `File::read_to_end` would add).
fn read_exactly(
    mut file: &std::fs::File,
    path: &Path,
    expected_len: u64,
    buffer: &mut Vec<u8>,
) -> Result<usize> {
    let changed = |found: u64| Error::Changed {
        path: path.to_path_buf(),
        expected: expected_len,
        found,
    };
    let wanted = usize::try_from(expected_len)
        .ok()
        .and_then(|len| len.checked_add(1))
        .ok_or_else(|| changed(expected_len))?;
    if buffer.len() < wanted {
        buffer.resize(wanted, 0);
    }
    let mut filled = 0;
    while filled < wanted {
        match file.read(&mut buffer[filled..wanted]) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(Error::Read {
                    path: path.to_path_buf(),
                    source,
                });
            }
        }
    }
    if filled as u64 != expected_len {
        return Err(changed(filled as u64));
    }
    Ok(filled)
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

    /// A tree with wide and deep directories, names that sort differently as bytes and as text,
    /// a non-UTF-8 name, symlinks and an empty directory.
    fn awkward_tree(root: &Path) {
        use std::os::unix::ffi::OsStrExt;
        for dir in ["a/b/c/d/e", "a/B", "a-", "a.b", "empty", "wide", "Z"] {
            fs_err::create_dir_all(root.join(dir)).unwrap();
        }
        for index in 0..300 {
            fs_err::write(root.join(format!("wide/{index}")), "x".repeat(index)).unwrap();
        }
        for file in ["a/b/c/d/e/leaf", "a/B/x", "a-/y", "a.b/z", "Z/0", "é", "~"] {
            fs_err::write(root.join(file), file).unwrap();
        }
        let latin1 = std::ffi::OsStr::from_bytes(b"caf\xe9");
        fs_err::write(root.join(latin1), "not UTF-8").unwrap();
        std::os::unix::fs::symlink("a/b", root.join("to-dir")).unwrap();
        std::os::unix::fs::symlink("/nonexistent", root.join("a/b/dangling")).unwrap();
    }

    #[test]
    fn walk_matches_walkdir_sorted_for_any_thread_count() {
        let dir = tempfile::tempdir().unwrap();
        awkward_tree(dir.path());
        let expected: Vec<(PathBuf, usize, u64)> = walkdir::WalkDir::new(dir.path())
            .follow_links(false)
            .sort_by_file_name()
            .into_iter()
            .map(|entry| {
                let entry = entry.unwrap();
                let metadata = entry.metadata().unwrap();
                (entry.path().to_path_buf(), entry.depth(), metadata.ino())
            })
            .collect();
        for threads in [1, 2, 7] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let (walk, depths) =
                pool.install(|| walk_with(dir.path(), |entry| entry.depth).unwrap());
            let found: Vec<(PathBuf, usize, u64)> = walk
                .entries
                .iter()
                .map(|entry| (entry.path.clone(), entry.depth, entry.ino))
                .collect();
            assert_eq!(found, expected, "{threads} threads");
            let walked_depths: Vec<usize> = walk.entries.iter().map(|entry| entry.depth).collect();
            assert_eq!(depths, walked_depths, "values follow the entries");
            assert!(walk.errors.is_empty());
        }
    }

    #[test]
    fn deep_tree_does_not_exhaust_the_stack() {
        let dir = tempfile::tempdir().unwrap();
        // As deep as a path can get: every component is one letter and a slash.
        let mut path = dir.path().to_path_buf();
        let mut depth = 0;
        while path.as_os_str().len() < 4000 {
            path.push("d");
            depth += 1;
        }
        fs_err::create_dir_all(&path).unwrap();
        let walk = walk(dir.path()).unwrap();
        assert_eq!(walk.entries.len(), depth + 1);
        assert_eq!(walk.entries.last().unwrap().depth, depth);
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
        // The per-thread buffer: a big file, then a smaller one, then one that changed; each sees
        // exactly its own bytes.
        let small = dir.path().join("small");
        fs_err::write(&small, "short").unwrap();
        for policy in [ReadPolicy::Read, ReadPolicy::MmapAbove(50_000)] {
            let whole = read_with(&path, 100_000, policy, <[u8]>::to_vec).unwrap();
            assert_eq!(whole, bytes);
            let short = read_with(&small, 5, policy, <[u8]>::to_vec).unwrap();
            assert_eq!(short, b"short");
            let changed = read_with(&small, 4, policy, <[u8]>::to_vec).unwrap_err();
            assert!(
                matches!(changed, Error::Changed { found: 5, .. }),
                "{changed:?}"
            );
        }
        let empty = dir.path().join("empty");
        fs_err::write(&empty, "").unwrap();
        assert!(
            read(&empty, 0, ReadPolicy::MmapAbove(0))
                .unwrap()
                .is_empty()
        );
    }
}
