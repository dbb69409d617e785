//! Walks trees for storepatch in a deterministic order without following symlinks, and maps files
//! for reading.
//!
//! The walk runs on rayon's threads and can hand each entry to a caller's function as soon as it is
//! found ([`walk_with`]), so reading files overlaps with listing directories; the order of the
//! result is fixed (depth first, siblings sorted by name) whatever the thread count. Symlinks are
//! never followed, not even as the root, so nothing outside the given roots is read or touched.
//! Errors (a directory that cannot be listed, say) are collected with their path and the walk goes
//! on.
//!
//! It is not built on `walkdir`, whose walk is sequential and examines every entry by its whole
//! path: on a 30 000-file tree that alone took 95 ms before the first file was read, half of a
//! whole scan. `walkdir` stays as the reference the tests compare the walk order against.
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

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::ops::Deref;
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use rayon::prelude::*;

mod mmap;
pub use mmap::tune_malloc;

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
    #[error("cannot read `{}`: it changed while it was read (expected {expected} bytes, found {found})", .path.display())]
    Changed {
        /// The file.
        path: PathBuf,
        /// Size when the walk saw it.
        expected: u64,
        /// Size when it was read (for a file that grew, one more than expected).
        found: u64,
    },
    /// The name now belongs to another file than the one the walk saw.
    #[error("cannot rewrite `{}`: it was replaced by another file after it was scanned", .path.display())]
    Replaced {
        /// The path.
        path: PathBuf,
    },
}

impl Error {
    /// The path the error is about.
    pub fn path(&self) -> &Path {
        match self {
            Self::Walk { path, .. }
            | Self::Read { path, .. }
            | Self::Changed { path, .. }
            | Self::Replaced { path } => path,
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

impl EntryKind {
    /// The kind of entry an `st_mode` says.
    fn of_mode(mode: u32) -> Self {
        use rustix::fs::FileType;
        match FileType::from_raw_mode(mode) {
            FileType::RegularFile => Self::File,
            FileType::Directory => Self::Dir,
            FileType::Symlink => Self::Symlink,
            _ => Self::Other,
        }
    }
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
    /// How many entries the walk examined, the root included: more than `entries` holds when the
    /// walk kept only some of them (see [`walk_keeping`]).
    pub examined: usize,
}

/// Walks `root` without following symlinks. Fails only if the root itself cannot be examined.
pub fn walk(root: &Path) -> Result<Walk> {
    walk_with_options(root, WalkOptions::default(), |_| ()).map(|(walk, _)| walk)
}

/// Walks `root` like [`walk`], calling `visit` on every entry as soon as it is found, on rayon's
/// threads; returns the walk and `visit`'s results in walk order.
///
/// Every directory is one task: it is opened once, by its name through its parent's open
/// directory (the root by its path), examined through the open descriptor, listed, and its
/// children examined through that handle (by one name, not the whole path again); its
/// subdirectories are handed on as tasks of their own, and `visit` runs on its children in
/// parallel while the handle is still open, so [`Visit::read_with`] and [`Visit::read_link`] work
/// relative to it too. Nothing waits for a
/// whole depth to finish, and the stack does not grow with the depth of the tree. The result does
/// not depend on the thread count or on the order in which the threads get to the entries.
///
/// Every regular file is opened before it is visited (see [`WalkOptions::open_files`]): `visit`
/// is expected to read most of them.
///
/// ```
/// let dir = tempfile::tempdir()?;
/// fs_err::write(dir.path().join("file"), "four")?;
/// let (walk, sizes) = storepatch_walk::walk_with(dir.path(), |visit| visit.entry().len)?;
/// assert_eq!(walk.entries.len(), 2);
/// assert_eq!(sizes[1], 4);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn walk_with<T, F>(root: &Path, visit: F) -> Result<(Walk, Vec<T>)>
where
    T: Send,
    F: Fn(&Visit<'_>) -> T + Sync,
{
    walk_with_options(root, WalkOptions { open_files: true }, visit)
}

/// Walks `root` like [`walk_with`], but keeps only the entries `visit` gives a value for: the
/// others are let go of as soon as they are visited, so a walk of a large tree that reports on
/// few of its entries never holds all of them. [`Walk::examined`] still counts every entry.
///
/// ```
/// let dir = tempfile::tempdir()?;
/// fs_err::write(dir.path().join("big"), "four")?;
/// fs_err::write(dir.path().join("small"), "")?;
/// let (walk, sizes) = storepatch_walk::walk_keeping(dir.path(), |visit| {
///     let entry = visit.entry();
///     (entry.depth > 0 && entry.len > 0).then_some(entry.len)
/// })?;
/// assert_eq!(walk.examined, 3);
/// assert_eq!(walk.entries.len(), 1);
/// assert_eq!(sizes, [4]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn walk_keeping<T, F>(root: &Path, visit: F) -> Result<(Walk, Vec<T>)>
where
    T: Send,
    F: Fn(&Visit<'_>) -> Option<T> + Sync,
{
    walk_kept(root, WalkOptions { open_files: true }, visit)
}

/// The most bytes of a file's start that [`walk_keeping_by_start`] reads.
pub const MAX_START: usize = 64;

/// Walks `root` like [`walk_keeping`], for a caller that wants few of a tree's regular files,
/// can tell them by their name and first bytes, and has no use for the directories below the
/// root (relink: the ELF files, and the files named like libraries).
///
/// Each file the listing calls a regular file is opened and its first `start_len` bytes (at most
/// [`MAX_START`]; fewer for a shorter file) are read before it is examined; a file for which
/// `wanted(name, start)` is false is let go of there, neither examined nor visited, which saves a
/// `fstat` for each. The others are examined and visited as [`walk_keeping`] would, and
/// [`Visit::start`] gives what was read. The start is read with `pread`, which a FIFO or socket
/// put in the file's place refuses: such a file, or any whose start cannot be read, is examined
/// and visited as usual, without a start. Directories below the root are opened and listed
/// through their parent, but not examined or visited (one `fstat` fewer for each too); one that
/// cannot be opened as a directory any more is examined and visited as what it now is. Every
/// other entry is examined and visited as usual. [`Walk::examined`] counts every entry.
///
/// Files and directories are opened with `O_NOATIME` where the kernel allows it (files the
/// caller owns, or any with `CAP_FOWNER`): looking at a tree's files leaves their access times
/// alone.
///
/// ```
/// let dir = tempfile::tempdir()?;
/// fs_err::create_dir(dir.path().join("sub"))?;
/// fs_err::write(dir.path().join("sub/yes"), "#!/bin/sh\n")?;
/// fs_err::write(dir.path().join("no"), "text")?;
/// let (walk, lens) = storepatch_walk::walk_keeping_by_start(
///     dir.path(),
///     2,
///     |_name, start| start == b"#!",
///     |visit| (visit.entry().depth > 0).then(|| (visit.start().map(<[u8]>::to_vec), visit.entry().len)),
/// )?;
/// assert_eq!(walk.examined, 4);
/// assert_eq!(lens, [(Some(b"#!".to_vec()), 10)]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn walk_keeping_by_start<T, W, F>(
    root: &Path,
    start_len: usize,
    wanted: W,
    visit: F,
) -> Result<(Walk, Vec<T>)>
where
    T: Send,
    W: Fn(&OsStr, &[u8]) -> bool + Sync,
    F: Fn(&Visit<'_>) -> Option<T> + Sync,
{
    let noatime = AtomicBool::new(true);
    let by_start = ByStart {
        len: start_len.min(MAX_START),
        wanted: &wanted,
        noatime: &noatime,
    };
    walk_kept_by(
        root,
        WalkOptions { open_files: true },
        Some(by_start),
        visit,
    )
}

/// What [`walk_keeping_by_start`] picks files by.
#[derive(Clone, Copy)]
struct ByStart<'w> {
    /// How many bytes of each file's start to read.
    len: usize,
    wanted: &'w (dyn Fn(&OsStr, &[u8]) -> bool + Sync),
    /// Whether files and directories are still opened with `O_NOATIME` (see [`open_noatime`]).
    noatime: &'w AtomicBool,
}

/// Opens `name` in `dir` with `flags`, and with `O_NOATIME` while `noatime` holds: a walk that
/// only looks at most files' first bytes leaves their access times (and the directories') alone,
/// which also spares the kernel the check on every read. The kernel refuses `O_NOATIME` (`EPERM`)
/// for a file the caller neither owns nor has `CAP_FOWNER` for; the file is then opened without
/// it, and it is not asked for again in this walk.
fn open_noatime(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    flags: rustix::fs::OFlags,
    noatime: &AtomicBool,
) -> rustix::io::Result<rustix::fd::OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    if noatime.load(Ordering::Relaxed) {
        match rustix::fs::openat(dir, name, flags | OFlags::NOATIME, Mode::empty()) {
            Err(rustix::io::Errno::PERM) => noatime.store(false, Ordering::Relaxed),
            opened => return opened,
        }
    }
    rustix::fs::openat(dir, name, flags, Mode::empty())
}

/// The first bytes of a file, as [`walk_keeping_by_start`] read them.
#[derive(Clone, Copy, Debug)]
struct Start {
    bytes: [u8; MAX_START],
    len: usize,
}

impl Start {
    fn bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Reads up to `len` bytes of an open file's start with `pread`, which never takes bytes from a
/// FIFO or a socket (it fails on them).
fn read_start(fd: BorrowedFd<'_>, len: usize) -> rustix::io::Result<Start> {
    let mut start = Start {
        bytes: [0; MAX_START],
        len: 0,
    };
    let len = len.min(MAX_START);
    while start.len < len {
        match rustix::io::pread(fd, &mut start.bytes[start.len..len], start.len as u64) {
            Ok(0) => break,
            Ok(read) => start.len += read,
            Err(rustix::io::Errno::INTR) => {}
            Err(err) => return Err(err),
        }
    }
    Ok(start)
}

/// How [`walk_with_options`] examines entries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalkOptions {
    /// Open each regular file (through its directory, never following a symlink) and take its
    /// metadata from the open file, rather than looking its name up once to examine it and again
    /// to open it. The file stays open while it is visited, so [`Visit::read_with`] reads it
    /// without opening it again. Worth it when most files are read.
    ///
    /// Either way, the type the directory listing gives (`d_type`) only decides how an entry is
    /// examined, never what it is: every entry's metadata comes from the entry itself, and an
    /// entry whose type the listing does not give (`DT_UNKNOWN`) is examined by name.
    pub open_files: bool,
}

/// [`walk_with`] with explicit [`WalkOptions`].
pub fn walk_with_options<T, F>(
    root: &Path,
    options: WalkOptions,
    visit: F,
) -> Result<(Walk, Vec<T>)>
where
    T: Send,
    F: Fn(&Visit<'_>) -> T + Sync,
{
    walk_kept(root, options, |entry| Some(visit(entry)))
}

/// The walk behind [`walk_with_options`] and [`walk_keeping`]: keeps the entries `visit` gives a
/// value for.
fn walk_kept<T, F>(root: &Path, options: WalkOptions, visit: F) -> Result<(Walk, Vec<T>)>
where
    T: Send,
    F: Fn(&Visit<'_>) -> Option<T> + Sync,
{
    walk_kept_by(root, options, None, visit)
}

/// [`walk_kept`], picking files by their start if `by_start` says how.
fn walk_kept_by<T, F>(
    root: &Path,
    options: WalkOptions,
    by_start: Option<ByStart<'_>>,
    visit: F,
) -> Result<(Walk, Vec<T>)>
where
    T: Send,
    F: Fn(&Visit<'_>) -> Option<T> + Sync,
{
    let stat = rustix::fs::lstat(root).map_err(|source| Error::Walk {
        path: root.to_path_buf(),
        source: source.into(),
    })?;
    let root = Entry::from_stat(root.to_path_buf(), 0, &stat);
    let root_value = visit(&Visit::detached(&root));
    let mut listings = Vec::new();
    let mut examined = 1;
    if root.kind == EntryKind::Dir {
        let shared = Shared {
            visit: &visit,
            options,
            by_start,
            listings: Mutex::new(Vec::new()),
            next_id: AtomicUsize::new(1),
            examined: AtomicUsize::new(0),
        };
        let path = root.path.clone();
        rayon::scope(|scope| list_dir(scope, &shared, 0, path, None, 1));
        examined += shared.examined.into_inner();
        listings = shared
            .listings
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
    }
    Ok(flatten(root, root_value, listings, examined))
}

/// What the directory tasks of one walk share.
struct Shared<'v, T, F> {
    visit: &'v F,
    options: WalkOptions,
    /// For [`walk_keeping_by_start`]: how files are picked by their start.
    by_start: Option<ByStart<'v>>,
    /// Each directory's listing, by its id (the root's is 0).
    listings: Mutex<Vec<Option<Listing<T>>>>,
    next_id: AtomicUsize,
    /// How many entries below the root were examined, kept or not.
    examined: AtomicUsize,
}

/// A directory's kept children, and what could not be listed or examined. Held for every
/// directory of the tree until the walk is flattened: its lists are boxed slices, with no room
/// beyond what they hold.
struct Listing<T> {
    /// The directory itself with its value, if it was kept (never for the root, whose entry is
    /// examined before the walk starts): a subdirectory is examined by its own task, through the
    /// descriptor it was opened with. Boxed: most directories are not kept, and every listing
    /// would otherwise carry its room.
    own: Option<Box<(Entry, T)>>,
    /// The children that were kept, sorted by name, with their values; subdirectories are not
    /// among them (see `own`).
    kept: Box<[(Entry, T)]>,
    /// Every subdirectory's listing id, in name order, after how many of `kept` it and its
    /// children come in walk order. A subdirectory that is not kept is still walked through; a
    /// file that is not kept takes no room at all.
    subdirs: Box<[(usize, usize)]>,
    errors: Box<[Error]>,
}

/// A directory with at most this many children has them visited one after another (see
/// `list_dir`).
const SEQUENTIAL_UP_TO: usize = 8;

/// What visiting a child of a directory gave: see `list_dir`.
type Visited<T> = Option<Result<Option<(Entry, T)>>>;

/// A child of a directory being listed.
enum Child {
    /// Examined by name while listing.
    Examined(Entry),
    /// A regular file as the listing says, opened and examined when it is visited.
    ToOpen(PathBuf),
    /// A directory as the listing says (or as examining it by name said): opened through its
    /// parent and examined through the open directory by a task of its own.
    Dir(PathBuf),
}

impl Child {
    fn path(&self) -> &Path {
        match self {
            Self::Examined(entry) => &entry.path,
            Self::ToOpen(path) | Self::Dir(path) => path,
        }
    }
}

/// The task for one directory: see [`walk_with`]. `parent` is the open directory holding it
/// (`None` for the root, which is opened by its path): the directory is opened by its name there,
/// never following a symlink, and examined through the open descriptor, so its path is never
/// looked up again.
fn list_dir<'s, T, F>(
    scope: &rayon::Scope<'s>,
    shared: &'s Shared<'s, T, F>,
    id: usize,
    path: PathBuf,
    parent: Option<(Arc<rustix::fs::Dir>, usize)>,
    depth: usize,
) where
    T: Send,
    F: Fn(&Visit<'_>) -> Option<T> + Sync,
{
    let mut errors = Vec::new();
    let mut kept = Vec::new();
    let mut subdir_listings = Vec::new();
    let mut examined = 0;
    let mut own = None;
    // `walk_keeping_by_start` neither examines nor visits the directories below the root.
    let unexamined = match &parent {
        Some((parent, name_at)) => shared
            .by_start
            .and_then(|by_start| open_subdir_unexamined(parent, &path, *name_at, by_start)),
        None => None,
    };
    let opened = match (parent, unexamined) {
        (parent, Some(fd)) => {
            examined += 1;
            drop(parent);
            Ok(Some((fd, path)))
        }
        (None, None) => match open_dir(rustix::fs::CWD, path.as_path()) {
            Ok(fd) => Ok(Some((fd, path))),
            Err(source) => Err(Error::Walk {
                path,
                source: source.into(),
            }),
        },
        (Some((parent, name_at)), None) => {
            let (entry, fd) = match open_subdir(&parent, path, name_at, depth - 1) {
                Ok(opened) => opened,
                Err(err) => {
                    store(shared, id, Listing::failed(err));
                    return;
                }
            };
            examined += 1;
            let value = (shared.visit)(&Visit {
                entry: &entry,
                name_at,
                parent: parent.fd().ok(),
                file: None,
                start: None,
            });
            // The parent is no longer needed: let its descriptor go before walking further down.
            drop(parent);
            let opened = fd.map(|fd| fd.map(|fd| (fd, entry.path.clone())));
            own = value.map(|value| Box::new((entry, value)));
            opened.transpose()
        }
    };
    let listed = opened.and_then(|opened| {
        opened
            .map(|(fd, path)| {
                // Every child's name starts at the same place in its path (see `child_path`).
                let name_at = child_name_at(&path);
                read_dir(fd, &path, depth, shared.options, &mut errors)
                    .map(|(dir, listed)| (dir, listed, name_at))
                    .map_err(|source| Error::Walk {
                        path,
                        source: source.into(),
                    })
            })
            .transpose()
    });
    match listed {
        // No longer a directory: its entry is all there is.
        Ok(None) => {}
        Ok(Some((dir, mut listed, name_at))) => {
            let dir = Arc::new(dir);
            // The subdirectories' listing ids, one run of them in name order.
            let subdir_count = listed
                .iter()
                .filter(|child| matches!(child, Child::Dir(_)))
                .count();
            let first_subdir = shared.next_id.fetch_add(subdir_count, Ordering::Relaxed);
            let mut sub_id = first_subdir;
            for child in &mut listed {
                if let Child::Dir(sub_path) = child {
                    // The task takes the path: the child is not visited here.
                    let sub_path = std::mem::take(sub_path);
                    let dir = Arc::clone(&dir);
                    let id = sub_id;
                    scope.spawn(move |scope| {
                        list_dir(scope, shared, id, sub_path, Some((dir, name_at)), depth + 1);
                    });
                    sub_id += 1;
                }
            }
            let parent = dir.fd().ok();
            // Per child: `None` for a subdirectory (examined by its own task), else the child
            // examined and visited, kept or not, or why it could not be examined.
            let visit_child = |child: Child| {
                let (entry, file, start) = match child {
                    Child::Examined(entry) => (entry, None, None),
                    Child::ToOpen(path) => {
                        match open_listed(parent, path, name_at, depth, shared.by_start) {
                            Ok(Some(opened)) => opened,
                            // Not wanted by its start: examined no further.
                            Ok(None) => return Some(Ok(None)),
                            Err(err) => return Some(Err(err)),
                        }
                    }
                    Child::Dir(_) => return None,
                };
                let value = (shared.visit)(&Visit {
                    entry: &entry,
                    name_at,
                    parent,
                    file: file.as_ref(),
                    start: start.as_ref().map(Start::bytes),
                });
                Some(Ok(value.map(|value| (entry, value))))
            };
            // A small directory's children are visited in order on this thread: in parallel,
            // a thread waiting for them would take up other directories' tasks meanwhile, and
            // every directory it took up holds its listing until it is done, so many listings
            // would be alive at once. Its subdirectories are tasks of their own either way.
            let visited: Vec<Visited<T>> = if listed.len() > SEQUENTIAL_UP_TO {
                listed.into_par_iter().map(visit_child).collect()
            } else {
                listed.into_iter().map(visit_child).collect()
            };
            // Every kept child of the tree sits in one of these until the walk is flattened.
            kept.reserve_exact(
                visited
                    .iter()
                    .filter(|visited| matches!(visited, Some(Ok(Some(_)))))
                    .count(),
            );
            subdir_listings.reserve_exact(subdir_count);
            let mut sub_id = first_subdir;
            for visited in visited {
                match visited {
                    Some(Ok(child)) => {
                        examined += 1;
                        kept.extend(child);
                    }
                    Some(Err(err)) => errors.push(err),
                    None => {
                        subdir_listings.push((kept.len(), sub_id));
                        sub_id += 1;
                    }
                }
            }
        }
        Err(err) => errors.push(err),
    }
    // Listing order is the file system's: report problems by path instead.
    errors.sort_by(|left, right| left.path().cmp(right.path()));
    shared.examined.fetch_add(examined, Ordering::Relaxed);
    store(
        shared,
        id,
        Listing {
            own,
            kept: kept.into_boxed_slice(),
            subdirs: subdir_listings.into_boxed_slice(),
            errors: errors.into_boxed_slice(),
        },
    );
}

impl<T> Listing<T> {
    /// The listing of a subdirectory that could not be examined at all.
    fn failed(err: Error) -> Self {
        Self {
            own: None,
            kept: Box::default(),
            subdirs: Box::default(),
            errors: Box::new([err]),
        }
    }
}

/// Puts a directory's listing where [`flatten`] finds it.
fn store<T, F>(shared: &Shared<'_, T, F>, id: usize, listing: Listing<T>) {
    let mut listings = shared
        .listings
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if listings.len() <= id {
        listings.resize_with(id + 1, || None);
    }
    listings[id] = Some(listing);
}

/// Opens a directory at `path` (relative to `at`) for listing, without following a symlink in
/// its place.
fn open_dir<P: rustix::path::Arg>(
    at: impl std::os::fd::AsFd,
    path: P,
) -> rustix::io::Result<rustix::fd::OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    rustix::fs::openat(
        at,
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Opens a subdirectory the listing of `parent` gave, by its name there, and examines it through
/// the open descriptor. Returns its entry, and the open directory or why it could not be opened
/// (reported against the entry, as for any directory that cannot be listed), or `None` if it is
/// no directory any more.
///
/// If it cannot be opened as a directory, it is examined by name instead: it may have been
/// replaced since the listing (by a symlink or a file, which is then that entry and is not
/// walked), or be a directory that cannot be opened (an error, after its entry). Only an entry
/// that cannot be examined at all is an error without an entry.
fn open_subdir(
    parent: &rustix::fs::Dir,
    path: PathBuf,
    name_at: usize,
    depth: usize,
) -> Result<(Entry, Option<Result<rustix::fd::OwnedFd>>)> {
    use rustix::fs::AtFlags;
    let walk_error = |path: &Path, source: rustix::io::Errno| Error::Walk {
        path: path.to_path_buf(),
        source: source.into(),
    };
    let dir = parent.fd().map_err(|source| walk_error(&path, source))?;
    let name = name_at_of(&path, name_at);
    match open_dir(dir, name) {
        Ok(fd) => match rustix::fs::fstat(&fd) {
            Ok(stat) => Ok((Entry::from_stat(path, depth, &stat), Some(Ok(fd)))),
            Err(source) => Err(walk_error(&path, source)),
        },
        Err(open_error) => {
            let stat = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|source| walk_error(&path, source))?;
            let entry = Entry::from_stat(path, depth, &stat);
            // Not a directory any more: only its entry is reported, and nothing below it.
            let opened =
                (entry.kind == EntryKind::Dir).then(|| Err(walk_error(&entry.path, open_error)));
            Ok((entry, opened))
        }
    }
}

/// Opens a subdirectory the listing of `parent` gave, by its name there, without examining it
/// (for [`walk_keeping_by_start`]); `None` if it cannot be opened as a directory, which
/// [`open_subdir`] then looks into.
fn open_subdir_unexamined(
    parent: &rustix::fs::Dir,
    path: &Path,
    name_at: usize,
    by_start: ByStart<'_>,
) -> Option<rustix::fd::OwnedFd> {
    use rustix::fs::OFlags;
    open_noatime(
        parent.fd().ok()?,
        name_at_of(path, name_at),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        by_start.noatime,
    )
    .ok()
}

/// Lists an open directory; returns it and its children sorted byte-wise by name. A child that
/// cannot be examined is added to `errors` and left out.
///
/// A child the listing calls a directory is left for its own task (see [`open_subdir`]); with
/// [`WalkOptions::open_files`], a child the listing calls a regular file is left for
/// [`open_listed`]; every other child is examined here, by name (`fstatat`), and handed on as a
/// directory if it is one.
fn read_dir(
    fd: rustix::fd::OwnedFd,
    path: &Path,
    depth: usize,
    options: WalkOptions,
    errors: &mut Vec<Error>,
) -> rustix::io::Result<(rustix::fs::Dir, Vec<Child>)> {
    use rustix::fs::{AtFlags, FileType};
    use std::mem::MaybeUninit;
    use std::os::fd::AsFd as _;
    /// The `getdents64` buffer: one call lists a directory of several hundred entries (most
    /// take two calls, the second finding the end), where `rustix::fs::Dir` starts at 768 bytes
    /// and copies each name into a new `CString`.
    const BUFFER: usize = 32 << 10;
    thread_local! {
        static DIRENTS: std::cell::Cell<Vec<MaybeUninit<u8>>> =
            const { std::cell::Cell::new(Vec::new()) };
    }
    let mut buffer = DIRENTS.take();
    if buffer.len() < BUFFER {
        buffer.resize(BUFFER, MaybeUninit::uninit());
    }
    let mut children = Vec::new();
    let mut raw = rustix::fs::RawDir::new(fd.as_fd(), &mut buffer);
    let listed = loop {
        let dirent = match raw.next() {
            // The end, or removed while it was being listed: nothing more to list (as `readdir`
            // has it).
            None | Some(Err(rustix::io::Errno::NOENT)) => break Ok(()),
            Some(Ok(dirent)) => dirent,
            Some(Err(err)) => break Err(err),
        };
        let name = dirent.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        let child = child_path(path, name);
        if dirent.file_type() == FileType::Directory {
            children.push(Child::Dir(child));
            continue;
        }
        if opened_when_visited(dirent.file_type(), options) {
            children.push(Child::ToOpen(child));
            continue;
        }
        match rustix::fs::statat(fd.as_fd(), dirent.file_name(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) if FileType::from_raw_mode(stat.st_mode) == FileType::Directory => {
                children.push(Child::Dir(child));
            }
            Ok(stat) => children.push(Child::Examined(Entry::from_stat(child, depth, &stat))),
            Err(source) => errors.push(Error::Walk {
                path: child,
                source: source.into(),
            }),
        }
    };
    DIRENTS.set(buffer);
    listed?;
    // Every child's path is this directory's path, a `/` and its name: comparing whole paths
    // compares the names, without looking for where each name starts.
    children.sort_unstable_by(|left, right| {
        left.path()
            .as_os_str()
            .as_bytes()
            .cmp(right.path().as_os_str().as_bytes())
    });
    Ok((rustix::fs::Dir::new(fd)?, children))
}

/// `parent/name`, allocated at its exact length: a tree's paths are most of a walk's memory, and
/// `Path::join` leaves room for about as much again.
fn child_path(parent: &Path, name: &[u8]) -> PathBuf {
    let name_at = child_name_at(parent);
    let parent = parent.as_os_str().as_bytes();
    let mut child = Vec::with_capacity(name_at + name.len());
    child.extend_from_slice(parent);
    child.resize(name_at, b'/');
    child.extend_from_slice(name);
    PathBuf::from(OsString::from_vec(child))
}

/// Where a child's name starts in the path [`child_path`] gives it: after the parent's path and
/// a `/`, which (as `Path::join` has it) is left out after an empty parent or one ending in `/`.
fn child_name_at(parent: &Path) -> usize {
    let parent = parent.as_os_str().as_bytes();
    if parent.is_empty() || parent.ends_with(b"/") {
        parent.len()
    } else {
        parent.len() + 1
    }
}

/// Whether a child the listing gives as `listed` is examined by [`open_listed`] rather than by name
/// while listing: only a regular file, and only if asked for. Anything else, including a type the
/// file system did not give (`DT_UNKNOWN`), is examined by name.
fn opened_when_visited(listed: rustix::fs::FileType, options: WalkOptions) -> bool {
    options.open_files && listed == rustix::fs::FileType::RegularFile
}

/// A child that the listing called a regular file, as [`open_listed`] found it: its entry, the
/// open file if it still is one, and the start read of it (see [`walk_keeping_by_start`]).
type Listed = (Entry, Option<OpenFile>, Option<Start>);

/// A regular file the walk opened, with the metadata it was examined by (see [`Visit::metadata`]).
#[derive(Debug)]
struct OpenFile {
    file: std::fs::File,
    metadata: std::fs::Metadata,
}

/// Opens a child that the listing called a regular file, through its directory and without
/// following a symlink, and examines the open file; returns it open only if it still is a regular
/// file.
///
/// The open never blocks (`O_NONBLOCK`, for a FIFO put in the file's place) and never makes a
/// terminal ours (`O_NOCTTY`). A name that cannot be opened (now a symlink, or unreadable) is
/// examined by name instead, so it gets the same entry it would have had without opening; an
/// unreadable file's error then comes from whoever reads it, as for any file. A directory put in
/// the file's place is not walked: it is an error, as it would be for any entry that changes while
/// its directory is listed.
///
/// With `by_start` (see [`walk_keeping_by_start`]), the open file's start is read first, and a
/// file it does not want is `None`, not examined at all.
fn open_listed(
    parent: Option<BorrowedFd<'_>>,
    path: PathBuf,
    name_at: usize,
    depth: usize,
    by_start: Option<ByStart<'_>>,
) -> Result<Option<Listed>> {
    use rustix::fs::{AtFlags, Mode, OFlags};
    use std::os::fd::AsFd as _;
    let name = name_at_of(&path, name_at);
    let flags =
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NOCTTY | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let opened = match (parent, by_start) {
        (Some(dir), Some(by_start)) => open_noatime(dir, name, flags, by_start.noatime),
        (Some(dir), None) => rustix::fs::openat(dir, name, flags, Mode::empty()),
        (None, _) => Err(rustix::io::Errno::BADF),
    };
    let mut start = None;
    if let (Some(by_start), Ok(fd)) = (by_start, &opened) {
        // A start that cannot be read (a FIFO in the file's place, say) decides nothing: the
        // entry is examined as usual, and whoever reads it reports the error.
        if let Ok(read) = read_start(fd.as_fd(), by_start.len) {
            if !(by_start.wanted)(name, read.bytes()) {
                return Ok(None);
            }
            start = Some(read);
        }
    }
    // Examined through the open file, whose metadata is kept for the visit (a rewrite of the
    // file needs it, and would otherwise examine the file again).
    let examined = if let Ok(fd) = opened {
        let file = std::fs::File::from(fd);
        match file.metadata() {
            Ok(metadata) => Ok((
                Entry::from_metadata(path, depth, &metadata),
                Some(OpenFile { file, metadata }),
            )),
            Err(source) => Err((path, source)),
        }
    } else {
        let stat = match parent {
            Some(dir) => rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW),
            None => rustix::fs::lstat(&path),
        };
        match stat {
            Ok(stat) => Ok((Entry::from_stat(path, depth, &stat), None)),
            Err(source) => Err((path, source.into())),
        }
    };
    let (entry, opened) = match examined {
        Ok(examined) => examined,
        Err((path, source)) => return Err(Error::Walk { path, source }),
    };
    match entry.kind {
        EntryKind::File => Ok(Some((entry, opened, start))),
        EntryKind::Dir => Err(Error::Walk {
            path: entry.path,
            source: std::io::Error::other("replaced by a directory while its parent was listed"),
        }),
        EntryKind::Symlink | EntryKind::Other => Ok(Some((entry, None, None))),
    }
}

/// The last component of a path the walk built (`parent/name`).
fn name_of(path: &Path) -> &OsStr {
    let bytes = path.as_os_str().as_bytes();
    let start = memchr::memrchr(b'/', bytes).map_or(0, |slash| slash + 1);
    OsStr::from_bytes(&bytes[start..])
}

/// The name of a child whose path [`child_path`] built, starting at `name_at` (see
/// [`child_name_at`]): [`name_of`] without looking for it.
fn name_at_of(path: &Path, name_at: usize) -> &OsStr {
    let bytes = path.as_os_str().as_bytes();
    debug_assert_eq!(bytes.get(name_at..), Some(name_of(path).as_bytes()));
    OsStr::from_bytes(bytes.get(name_at..).unwrap_or_default())
}

/// Puts the listings into walk order: depth first, parents before children, siblings by name.
fn flatten<T>(
    root: Entry,
    root_value: Option<T>,
    mut listings: Vec<Option<Listing<T>>>,
    examined: usize,
) -> (Walk, Vec<T>) {
    // Sized once: growing by doubling would hold up to twice the entries (and a copy while
    // moving them) next to the listings that are still being taken apart.
    let mut walk = Walk {
        examined,
        ..Walk::default()
    };
    let count = usize::from(root_value.is_some())
        + listings
            .iter()
            .flatten()
            .map(|listing| usize::from(listing.own.is_some()) + listing.kept.len())
            .sum::<usize>();
    walk.entries.reserve_exact(count);
    let mut values = Vec::with_capacity(count);
    if let Some(root_value) = root_value {
        walk.entries.push(root);
        values.push(root_value);
    }
    // Per directory being flattened: its kept children, its subdirectories, how many kept so far.
    // A directory's own entry comes before its children.
    let mut take = |id: usize, walk: &mut Walk, values: &mut Vec<T>| {
        let listing = listings.get_mut(id).and_then(Option::take)?;
        walk.errors.extend(listing.errors);
        if let Some(own) = listing.own {
            let (entry, value) = *own;
            walk.entries.push(entry);
            values.push(value);
        }
        Some((
            listing.kept.into_iter(),
            listing.subdirs.into_iter().peekable(),
            0,
        ))
    };
    let mut stack: Vec<_> = take(0, &mut walk, &mut values).into_iter().collect();
    while let Some((kept, subdirs, taken)) = stack.last_mut() {
        if let Some(&(after, id)) = subdirs.peek()
            && after == *taken
        {
            subdirs.next();
            if let Some(children) = take(id, &mut walk, &mut values) {
                stack.push(children);
            }
            continue;
        }
        let Some((entry, value)) = kept.next() else {
            stack.pop();
            continue;
        };
        *taken += 1;
        walk.entries.push(entry);
        values.push(value);
    }
    (walk, values)
}

/// An entry being visited during [`walk_with`], with its directory still open.
///
/// Its file operations work relative to that directory, and none of them follows a symlink: an
/// entry that was replaced by a symlink after the walk saw it is an error, not a way out of the
/// tree.
#[derive(Clone, Copy, Debug)]
pub struct Visit<'a> {
    entry: &'a Entry,
    /// Where the entry's own name starts in its path.
    name_at: usize,
    /// The open directory holding the entry; `None` means the entry's whole path is used.
    parent: Option<BorrowedFd<'a>>,
    /// The entry (a regular file) opened by the walk, if it was, with its metadata.
    file: Option<&'a OpenFile>,
    /// Its first bytes, if the walk read them (see [`walk_keeping_by_start`]).
    start: Option<&'a [u8]>,
}

impl<'a> Visit<'a> {
    /// An entry outside a walk (a second look after the walk, say): its whole path is used.
    pub fn detached(entry: &'a Entry) -> Self {
        let path = entry.path.as_os_str().len();
        Self {
            entry,
            name_at: path - name_of(&entry.path).len(),
            parent: None,
            file: None,
            start: None,
        }
    }

    /// The entry.
    pub fn entry(&self) -> &'a Entry {
        self.entry
    }

    /// The entry (a regular file) as the walk opened it, if it did.
    pub fn file(&self) -> Option<&'a std::fs::File> {
        self.file.map(|opened| &opened.file)
    }

    /// The metadata the walk examined the open [`Visit::file`] by, if it opened the entry: what
    /// `file().metadata()` would give, without examining the file again.
    pub fn metadata(&self) -> Option<&'a std::fs::Metadata> {
        self.file.map(|opened| &opened.metadata)
    }

    /// The entry's (a regular file's) first bytes, if the walk read them before examining it:
    /// see [`walk_keeping_by_start`]. Fewer than asked for only if the file is that short.
    pub fn start(&self) -> Option<&'a [u8]> {
        self.start
    }

    /// The entry's own name (for the root, its path's last component).
    pub fn name(&self) -> &'a OsStr {
        name_at_of(&self.entry.path, self.name_at)
    }

    /// Opens the entry (a regular file) for reading.
    pub fn open(&self) -> Result<std::fs::File> {
        use rustix::fs::{Mode, OFlags};
        if let Some(file) = self.file() {
            return file.try_clone().map_err(|source| Error::Read {
                path: self.entry.path.clone(),
                source,
            });
        }
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NOCTTY | OFlags::CLOEXEC;
        let opened = match self.parent {
            Some(dir) => rustix::fs::openat(dir, self.name(), flags, Mode::empty()),
            None => rustix::fs::open(&self.entry.path, flags, Mode::empty()),
        };
        opened
            .map(std::fs::File::from)
            .map_err(|source| Error::Read {
                path: self.entry.path.clone(),
                source: source.into(),
            })
    }

    /// Opens the entry (a regular file) again after the walk and checks that it is still the file
    /// the walk saw: the same device, inode and size. Returns it with its current metadata (mode
    /// and owner may have changed; contents are checked by whoever reads them).
    pub fn reopen(&self) -> Result<(std::fs::File, std::fs::Metadata)> {
        let file = self.open()?;
        let metadata = file.metadata().map_err(|source| Error::Read {
            path: self.entry.path.clone(),
            source,
        })?;
        if (metadata.dev(), metadata.ino()) != (self.entry.dev, self.entry.ino) {
            return Err(Error::Replaced {
                path: self.entry.path.clone(),
            });
        }
        if metadata.len() != self.entry.len {
            return Err(Error::Changed {
                path: self.entry.path.clone(),
                expected: self.entry.len,
                found: metadata.len(),
            });
        }
        Ok((file, metadata))
    }

    /// Reads the entry (a regular file) like the free [`read_with`].
    pub fn read_with<R>(&self, policy: ReadPolicy, with: impl FnOnce(&[u8]) -> R) -> Result<R> {
        self.read_with_release(policy, |bytes, _| with(bytes))
    }

    /// Reads the entry (a regular file) like the free [`read_with_release`].
    pub fn read_with_release<R>(
        &self,
        policy: ReadPolicy,
        with: impl FnOnce(&[u8], &mut dyn FnMut(usize)) -> R,
    ) -> Result<R> {
        if let Some(file) = self.file() {
            return read_opened(file, &self.entry.path, self.entry.len, policy, with);
        }
        read_opened(
            &self.open()?,
            &self.entry.path,
            self.entry.len,
            policy,
            with,
        )
    }

    /// Reads the entry (a regular file) from start to end a piece at a time, into a buffer that
    /// holds only what `with` still needs: the bounded way to read a file of any size for a reader
    /// that looks at a stretch of it at a time.
    ///
    /// `with(bytes, start, at_end)` is handed the bytes held, which start at offset `start` of the
    /// file; unless `at_end`, at least `piece_len` of them are new since its last call. It returns
    /// `Continue(done)`: it is done with the first `done` bytes, and the others are handed to it
    /// again, first, in the next call; or `Break(())` to stop reading. Each read adds as many
    /// bytes as are still held, and at least `piece_len`, so a reader that keeps much (a file with
    /// nowhere to cut) costs a number of reads logarithmic in what it keeps, and each byte is
    /// moved to the front of the buffer a bounded number of times on average. The last call has
    /// `at_end` set and holds the rest of the file; its return is not looked at.
    ///
    /// Returns whether the whole file was read (`false`: `with` stopped). The buffer is kept per
    /// thread like [`read_with`]'s. Reads are at explicit offsets, so the file the walk opened is
    /// left where it was for a later read of it. A file that is not the `len` bytes the walk saw
    /// is [`Error::Changed`].
    pub fn read_in_pieces(
        &self,
        piece_len: usize,
        mut with: impl FnMut(&[u8], u64, bool) -> std::ops::ControlFlow<(), usize>,
    ) -> Result<bool> {
        use std::os::unix::fs::FileExt as _;
        let opened;
        let file = if let Some(file) = self.file() {
            file
        } else {
            opened = self.open()?;
            &opened
        };
        let path = &self.entry.path;
        let expected = self.entry.len;
        let changed = |found: u64| Error::Changed {
            path: path.clone(),
            expected,
            found,
        };
        // Taken out rather than borrowed: `with` may itself read files on this thread.
        let mut buffer = BUFFER.take();
        let result = (|| {
            let piece_len = piece_len.max(1);
            // File offset of `buffer[0]`, and how many bytes from there are held.
            let mut start = 0u64;
            let mut held = 0usize;
            let mut want = piece_len;
            loop {
                // One byte past the expected end is asked for, so a file that grew is noticed.
                let limit =
                    usize::try_from((expected + 1).saturating_sub(start)).unwrap_or(usize::MAX);
                let end = (held + want).min(limit);
                if buffer.len() < end {
                    buffer.resize(end, 0);
                }
                let mut at_end = false;
                while held < end {
                    match file.read_at(&mut buffer[held..end], start + held as u64) {
                        Ok(0) => {
                            at_end = true;
                            break;
                        }
                        Ok(read) => {
                            held += read;
                            // A short read ending at the expected length is the end of a regular
                            // file, as in `read_exactly`: no further read to find it.
                            if start + held as u64 == expected && held < end {
                                at_end = true;
                                break;
                            }
                        }
                        Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(source) => {
                            return Err(Error::Read {
                                path: path.clone(),
                                source,
                            });
                        }
                    }
                }
                let total = start + held as u64;
                if total > expected || (at_end && total != expected) {
                    return Err(changed(total));
                }
                if at_end {
                    let _ = with(&buffer[..held], start, true);
                    return Ok(true);
                }
                match with(&buffer[..held], start, false) {
                    std::ops::ControlFlow::Break(()) => return Ok(false),
                    std::ops::ControlFlow::Continue(done) => {
                        let done = done.min(held);
                        buffer.copy_within(done..held, 0);
                        held -= done;
                        start += done as u64;
                        want = piece_len.max(held);
                    }
                }
            }
        })();
        if buffer.capacity() <= KEEP_AT_MOST {
            BUFFER.set(buffer);
        }
        result
    }

    /// Reads the first bytes of the entry (a regular file) into `buffer`, as many as it holds or
    /// the file has; returns how many. Nothing past the buffer is read.
    pub fn read_start(&self, buffer: &mut [u8]) -> Result<usize> {
        use std::os::unix::fs::FileExt as _;
        let opened;
        let file = if let Some(file) = self.file() {
            file
        } else {
            opened = self.open()?;
            &opened
        };
        let mut filled = 0;
        while filled < buffer.len() {
            match file.read_at(&mut buffer[filled..], filled as u64) {
                Ok(0) => break,
                Ok(read) => filled += read,
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(Error::Read {
                        path: self.entry.path.clone(),
                        source,
                    });
                }
            }
        }
        Ok(filled)
    }

    /// The target of the entry (a symlink).
    pub fn read_link(&self) -> Result<PathBuf> {
        let target = match self.parent {
            Some(dir) => rustix::fs::readlinkat(dir, self.name(), Vec::new()),
            None => rustix::fs::readlinkat(rustix::fs::CWD, &self.entry.path, Vec::new()),
        };
        target
            .map(|target| PathBuf::from(OsString::from_vec(target.into_bytes())))
            .map_err(|source| Error::Read {
                path: self.entry.path.clone(),
                source: source.into(),
            })
    }
}

impl Entry {
    /// The entry's file name. Below the root, the walk built the path as `parent/name`, so the
    /// name is what follows the last `/`: cheaper than [`Path::file_name`], which parses
    /// components, for each of a tree's entries. `None` only for a root without one (`/`, `..`).
    pub fn name(&self) -> Option<&OsStr> {
        if self.depth == 0 {
            return self.path.file_name();
        }
        Some(name_of(&self.path))
    }

    fn from_metadata(path: PathBuf, depth: usize, metadata: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt as _;
        Self {
            kind: EntryKind::of_mode(metadata.mode()),
            len: metadata.size(),
            mode: metadata.mode(),
            dev: metadata.dev(),
            ino: metadata.ino(),
            nlink: metadata.nlink(),
            depth,
            path,
        }
    }

    #[expect(
        clippy::useless_conversion,
        reason = "the widths of `struct stat` fields differ between targets"
    )]
    fn from_stat(path: PathBuf, depth: usize, stat: &rustix::fs::Stat) -> Self {
        Self {
            kind: EntryKind::of_mode(stat.st_mode.into()),
            len: u64::try_from(stat.st_size).unwrap_or(0),
            mode: stat.st_mode.into(),
            dev: stat.st_dev.into(),
            ino: stat.st_ino.into(),
            nlink: stat.st_nlink.into(),
            depth,
            path,
        }
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
        Self::MmapAbove(256 << 10)
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
    read_from(&open(path)?, path, expected_len, policy)
}

/// Reads an open regular file like [`read`]; `path` is its name for errors.
pub fn read_from(
    file: &std::fs::File,
    path: &Path,
    expected_len: u64,
    policy: ReadPolicy,
) -> Result<Contents> {
    if let Some(mapping) = map(file, path, expected_len, policy)? {
        return Ok(Contents::Mapped(mapping));
    }
    let mut bytes = Vec::new();
    let len = read_exactly(file, path, expected_len, &mut bytes)?;
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
    read_opened(&open(path)?, path, expected_len, policy, |bytes, _| {
        with(bytes)
    })
}

/// Reads a file like [`read_with`], and also hands `with` a `release(offset)` to call as it goes:
/// it says that `with` is done with the bytes before `offset` for now.
///
/// For a mapped file, the pages before `offset` are let go (they stop counting towards the
/// process's resident memory), so reading a large file in one pass never keeps all of it resident.
/// The bytes stay readable and unchanged: reading one again faults its page back in from the page
/// cache. For a file read into memory, `release` does nothing.
pub fn read_with_release<R>(
    path: &Path,
    expected_len: u64,
    policy: ReadPolicy,
    with: impl FnOnce(&[u8], &mut dyn FnMut(usize)) -> R,
) -> Result<R> {
    read_opened(&open(path)?, path, expected_len, policy, with)
}

/// Reads an open regular file like [`read_with`]; `path` is its name for errors.
pub fn read_from_with<R>(
    file: &std::fs::File,
    path: &Path,
    expected_len: u64,
    policy: ReadPolicy,
    with: impl FnOnce(&[u8]) -> R,
) -> Result<R> {
    read_opened(file, path, expected_len, policy, |bytes, _| with(bytes))
}

fn read_opened<R>(
    file: &std::fs::File,
    path: &Path,
    expected_len: u64,
    policy: ReadPolicy,
    with: impl FnOnce(&[u8], &mut dyn FnMut(usize)) -> R,
) -> Result<R> {
    if let Some(mapping) = map(file, path, expected_len, policy)? {
        let mut released = 0;
        let mut release = |offset: usize| {
            if offset > released {
                released = mapping.release(released..offset);
            }
        };
        return Ok(with(&mapping, &mut release));
    }
    // Taken out rather than borrowed: `with` may itself read files on this thread.
    let mut buffer = BUFFER.take();
    let result = read_exactly(file, path, expected_len, &mut buffer)
        .map(|len| with(&buffer[..len], &mut |_| {}));
    if buffer.capacity() <= KEEP_AT_MOST {
        BUFFER.set(buffer);
    }
    result
}

/// Buffers that grew beyond this are not kept for the next file.
const KEEP_AT_MOST: usize = 4 << 20;

thread_local! {
    /// The buffer files are read into on this thread (see [`read_with`]).
    static BUFFER: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
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
/// cleared again. One byte more than expected is asked for, so a file that grew is noticed without
/// reading on, and a short read that ends exactly at the expected length is taken as the end of the
/// file (which it is for a regular file), so most files take one `read(2)`: no second read to find
/// the end, and no `fstat` or `lseek` (which `File::read_to_end` would add).
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
        // Exactly: grown by doubling, a buffer kept per thread could hold twice the largest file
        // read into it. But never smaller than `FIRST_CAPACITY`, so that it is a mapping of its
        // own (see `tune_malloc`) rather than a run of the heap that the walk's records share:
        // grown there file by file, each step would leave a hole behind that the records then
        // spread into. The pages beyond what is read are never touched, so they cost nothing.
        const FIRST_CAPACITY: usize = 256 << 10;
        buffer.reserve_exact(wanted.max(FIRST_CAPACITY) - buffer.len());
        buffer.resize(wanted, 0);
    }
    let mut filled = 0;
    while filled < wanted {
        match file.read(&mut buffer[filled..wanted]) {
            Ok(0) => break,
            Ok(read) => {
                filled += read;
                // Only a short read can stop here: one more byte than this was asked for.
                if filled as u64 == expected_len {
                    break;
                }
            }
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
    use std::os::unix::ffi::OsStringExt as _;

    use super::*;

    /// Makes a FIFO at `path`.
    fn make_fifo(path: impl AsRef<Path>) {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            path.as_ref(),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
    }

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
            // Each entry's depth, and its contents or target read through the open directory.
            let (walk, values) = pool.install(|| {
                walk_with(dir.path(), |visit| {
                    let bytes = match visit.entry().kind {
                        EntryKind::File => visit
                            .read_with(ReadPolicy::MmapAbove(200), <[u8]>::to_vec)
                            .unwrap(),
                        EntryKind::Symlink => {
                            visit.read_link().unwrap().into_os_string().into_vec()
                        }
                        EntryKind::Dir | EntryKind::Other => Vec::new(),
                    };
                    (visit.entry().depth, visit.name().to_owned(), bytes)
                })
                .unwrap()
            });
            let found: Vec<(PathBuf, usize, u64)> = walk
                .entries
                .iter()
                .map(|entry| (entry.path.clone(), entry.depth, entry.ino))
                .collect();
            assert_eq!(found, expected, "{threads} threads");
            for (entry, (depth, name, bytes)) in walk.entries.iter().zip(&values) {
                assert_eq!(*depth, entry.depth, "values follow the entries");
                assert_eq!(Some(name.as_os_str()), entry.path.file_name());
                let expected = match entry.kind {
                    EntryKind::File => fs_err::read(&entry.path).unwrap(),
                    EntryKind::Symlink => fs_err::read_link(&entry.path)
                        .unwrap()
                        .into_os_string()
                        .into_vec(),
                    EntryKind::Dir | EntryKind::Other => Vec::new(),
                };
                assert_eq!(*bytes, expected, "{}", entry.path.display());
            }
            assert!(walk.errors.is_empty());
        }
    }

    #[test]
    fn keeping_some_entries_gives_those_of_the_whole_walk_in_its_order_for_any_thread_count() {
        let dir = tempfile::tempdir().unwrap();
        awkward_tree(dir.path());
        let whole = walk(dir.path()).unwrap();
        // Files of even size and the symlinks: whole directories (`empty`, `a/b/c/d/e`) are left
        // out while their children are still walked.
        let kept = |entry: &Entry| {
            (entry.kind == EntryKind::File && entry.len.is_multiple_of(2))
                || entry.kind == EntryKind::Symlink
        };
        let expected: Vec<String> = whole
            .entries
            .iter()
            .filter(|entry| kept(entry))
            .map(|entry| format!("{entry:?}"))
            .collect();
        assert!(
            expected
                .iter()
                .any(|entry| entry.contains("a/b/c/d/e/leaf"))
        );
        for threads in [1, 2, 7] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let (walk, values) = pool.install(|| {
                walk_keeping(dir.path(), |visit| {
                    kept(visit.entry()).then(|| visit.entry().path.clone())
                })
                .unwrap()
            });
            assert_eq!(described(&walk), expected, "{threads} threads");
            let paths: Vec<&PathBuf> = walk.entries.iter().map(|entry| &entry.path).collect();
            assert_eq!(values.iter().collect::<Vec<_>>(), paths, "values follow");
            assert_eq!(walk.examined, whole.entries.len(), "{threads} threads");
            assert!(walk.errors.is_empty());
        }
        // Keeping nothing, not even the root.
        let (walk, values) = walk_keeping(dir.path(), |_| None::<()>).unwrap();
        assert!(walk.entries.is_empty() && values.is_empty());
        assert_eq!(walk.examined, whole.entries.len());
    }

    #[test]
    fn picking_files_by_start_gives_those_of_the_whole_walk_for_any_thread_count() {
        let dir = tempfile::tempdir().unwrap();
        awkward_tree(dir.path());
        make_fifo(dir.path().join("a/fifo"));
        fs_err::write(dir.path().join("a/b/named.so"), "").unwrap();
        let whole = walk(dir.path()).unwrap();
        // Files starting with `xx` (the `wide` files of 2 bytes and more) or named `*.so`, and
        // every entry that is no regular file and no directory below the root.
        let wanted = |name: &OsStr, start: &[u8]| {
            start.starts_with(b"xx") || name.as_bytes().ends_with(b".so")
        };
        let contents = |entry: &Entry| fs_err::read(&entry.path).unwrap();
        let expected: Vec<(String, Option<Vec<u8>>)> = whole
            .entries
            .iter()
            .filter(|entry| match entry.kind {
                EntryKind::File => wanted(name_of(&entry.path), &contents(entry)),
                EntryKind::Dir => entry.depth == 0,
                EntryKind::Symlink | EntryKind::Other => true,
            })
            .map(|entry| {
                let start = (entry.kind == EntryKind::File && entry.depth > 0)
                    .then(|| contents(entry).into_iter().take(3).collect());
                (format!("{entry:?}"), start)
            })
            .collect();
        assert!(expected.iter().any(|(entry, _)| entry.contains("wide/299")));
        assert!(expected.iter().any(|(entry, _)| entry.contains("named.so")));
        assert!(expected.iter().any(|(entry, _)| entry.contains("fifo")));
        assert!(!expected.iter().any(|(entry, _)| entry.contains("wide/1\"")));
        for threads in [1, 2, 7] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let (walk, values) = pool.install(|| {
                walk_keeping_by_start(dir.path(), 3, wanted, |visit| {
                    Some(visit.start().map(<[u8]>::to_vec))
                })
                .unwrap()
            });
            let found: Vec<(String, Option<Vec<u8>>)> = walk
                .entries
                .iter()
                .map(|entry| format!("{entry:?}"))
                .zip(values)
                .collect();
            assert_eq!(found, expected, "{threads} threads");
            assert_eq!(walk.examined, whole.entries.len(), "{threads} threads");
            assert!(walk.errors.is_empty());
        }
    }

    #[test]
    fn picking_files_by_start_leaves_access_times_alone() {
        use std::time::{Duration, SystemTime};
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs_err::create_dir_all(root.join("sub")).unwrap();
        for name in ["sub/file", "control"] {
            fs_err::write(root.join(name), "contents").unwrap();
        }
        // Accessed before they were last modified: a read must update such an access time,
        // even under `relatime`.
        let past = SystemTime::now() - Duration::from_secs(3600);
        let times = std::fs::FileTimes::new().set_accessed(past);
        for name in ["sub/file", "sub", "control"] {
            let file = fs_err::File::open(root.join(name)).unwrap();
            file.file().set_times(times).unwrap();
        }
        let accessed = |name: &str| {
            fs_err::metadata(root.join(name))
                .unwrap()
                .accessed()
                .unwrap()
        };
        let (walk, _) = walk_keeping_by_start(&root, 4, |_, _| false, |_| None::<()>).unwrap();
        assert_eq!(walk.examined, 4);
        assert_eq!(accessed("sub/file"), past);
        assert_eq!(accessed("sub"), past);
        // A plain read does update it (the default `relatime` does): the walk's read would have.
        fs_err::read(root.join("control")).unwrap();
        assert_ne!(accessed("control"), past);
    }

    /// Every entry as the walk gives it, with all its metadata.
    fn described(walk: &Walk) -> Vec<String> {
        walk.entries
            .iter()
            .map(|entry| format!("{entry:?}"))
            .collect()
    }

    #[test]
    fn opening_files_gives_the_same_entries_as_examining_every_name() {
        let dir = tempfile::tempdir().unwrap();
        awkward_tree(dir.path());
        fs_err::hard_link(dir.path().join("~"), dir.path().join("wide/linked")).unwrap();
        make_fifo(dir.path().join("a/fifo"));
        let by_name = walk(dir.path()).unwrap();
        for threads in [1, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let (opened, seen) = pool.install(|| {
                walk_with(dir.path(), |visit| {
                    (visit.entry().kind, visit.file.is_some())
                })
                .unwrap()
            });
            assert_eq!(described(&opened), described(&by_name), "{threads} threads");
            assert!(opened.errors.is_empty() && by_name.errors.is_empty());
            // Only regular files come open; the FIFO, symlinks and directories never do.
            for (kind, open) in &seen {
                assert_eq!(*open, *kind == EntryKind::File, "{kind:?}");
            }
            let fifo = opened
                .entries
                .iter()
                .find(|entry| entry.path.ends_with("a/fifo"))
                .unwrap();
            assert_eq!(fifo.kind, EntryKind::Other);
        }
    }

    #[test]
    fn only_regular_files_the_listing_names_are_opened() {
        use rustix::fs::FileType;
        let open = WalkOptions { open_files: true };
        assert!(opened_when_visited(FileType::RegularFile, open));
        for listed in [
            FileType::Unknown,
            FileType::Directory,
            FileType::Symlink,
            FileType::Fifo,
            FileType::Socket,
            FileType::CharacterDevice,
            FileType::BlockDevice,
        ] {
            assert!(!opened_when_visited(listed, open), "{listed:?}");
        }
        assert!(!opened_when_visited(
            FileType::RegularFile,
            WalkOptions::default()
        ));
    }

    #[test]
    fn a_listed_file_replaced_before_it_is_opened_is_examined_as_what_it_now_is() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs_err::create_dir(&root).unwrap();
        fs_err::write(dir.path().join("secret"), "outside").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), root.join("link")).unwrap();
        make_fifo(root.join("fifo"));
        fs_err::create_dir(root.join("dir")).unwrap();
        fs_err::write(root.join("file"), "inside").unwrap();
        let parent = rustix::fs::open(
            &root,
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY,
            rustix::fs::Mode::empty(),
        )
        .unwrap();
        let parent = Some(std::os::fd::AsFd::as_fd(&parent));
        // Picking files by their start (as `walk_keeping_by_start` does) changes nothing for
        // entries that are no regular files: their start is never read (a FIFO refuses `pread`,
        // a symlink is not opened, a directory cannot be read), so they are examined as usual.
        let nothing = |_: &OsStr, _: &[u8]| false;
        let everything = |_: &OsStr, _: &[u8]| true;
        let noatime = AtomicBool::new(true);
        let rejecting = ByStart {
            len: 4,
            wanted: &nothing,
            noatime: &noatime,
        };
        for by_start in [None, Some(rejecting)] {
            let listed = |name: &str| {
                open_listed(parent, root.join(name), child_name_at(&root), 1, by_start)
            };
            // A symlink is not followed: it is a symlink entry, and nothing is opened.
            let (link, file, start) = listed("link").unwrap().unwrap();
            assert_eq!((link.kind, file.is_none()), (EntryKind::Symlink, true));
            assert!(start.is_none());
            // A FIFO does not block the open and is not handed on to be read.
            let (fifo, file, start) = listed("fifo").unwrap().unwrap();
            assert_eq!((fifo.kind, file.is_none()), (EntryKind::Other, true));
            assert!(start.is_none());
            // A directory that took a file's place is an error naming it, not a directory to walk.
            let err = listed("dir").unwrap_err();
            assert_eq!(err.path(), root.join("dir"));
            let err = listed("gone").unwrap_err();
            assert_eq!(err.path(), root.join("gone"));
        }
        // A regular file whose start is not wanted is not examined; one that is wanted is, and
        // its start comes with it.
        assert!(
            open_listed(
                parent,
                root.join("file"),
                child_name_at(&root),
                1,
                Some(rejecting)
            )
            .unwrap()
            .is_none()
        );
        let wanting = ByStart {
            len: 4,
            wanted: &everything,
            noatime: &noatime,
        };
        let (entry, _, start) = open_listed(
            parent,
            root.join("file"),
            child_name_at(&root),
            1,
            Some(wanting),
        )
        .unwrap()
        .unwrap();
        assert_eq!((entry.kind, entry.len), (EntryKind::File, 6));
        assert_eq!(start.as_ref().map(Start::bytes), Some(&b"insi"[..]));
        let (entry, file, start) =
            open_listed(parent, root.join("file"), child_name_at(&root), 1, None)
                .unwrap()
                .unwrap();
        assert!(start.is_none());
        assert_eq!((entry.kind, entry.len), (EntryKind::File, 6));
        let visit = Visit {
            entry: &entry,
            name_at: child_name_at(&root),
            parent,
            file: file.as_ref(),
            start: None,
        };
        let contents = visit.read_with(ReadPolicy::Read, <[u8]>::to_vec).unwrap();
        assert_eq!(contents, b"inside");
        let mut start = [0; 4];
        assert_eq!(visit.read_start(&mut start).unwrap(), 4);
        assert_eq!(&start, b"insi");
        let mut more = [0; 10];
        assert_eq!(Visit::detached(&entry).read_start(&mut more).unwrap(), 6);
        assert_eq!(&more[..6], b"inside");
    }

    #[test]
    fn a_listed_directory_replaced_before_it_is_opened_is_examined_as_what_it_now_is() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let outside = dir.path().join("outside");
        fs_err::create_dir_all(root.join("dir")).unwrap();
        fs_err::create_dir(&outside).unwrap();
        fs_err::write(outside.join("secret"), "outside").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        fs_err::write(root.join("file"), "inside").unwrap();
        make_fifo(root.join("fifo"));
        let parent =
            rustix::fs::Dir::new(open_dir(rustix::fs::CWD, root.as_path()).unwrap()).unwrap();
        // A directory is opened through its parent and examined through the open descriptor.
        let (entry, opened) =
            open_subdir(&parent, root.join("dir"), child_name_at(&root), 1).unwrap();
        let ino = fs_err::symlink_metadata(root.join("dir")).unwrap().ino();
        assert_eq!(
            (entry.kind, entry.ino, entry.depth),
            (EntryKind::Dir, ino, 1)
        );
        assert!(matches!(opened, Some(Ok(_))));
        // A symlink to a directory that took its place is a symlink entry, never opened.
        let (link, opened) =
            open_subdir(&parent, root.join("link"), child_name_at(&root), 1).unwrap();
        assert_eq!((link.kind, opened.is_none()), (EntryKind::Symlink, true));
        // So are a file and a FIFO (whose open does not block: it is not opened as a directory).
        let (file, opened) =
            open_subdir(&parent, root.join("file"), child_name_at(&root), 1).unwrap();
        assert_eq!(
            (file.kind, file.len, opened.is_none()),
            (EntryKind::File, 6, true)
        );
        let (fifo, opened) =
            open_subdir(&parent, root.join("fifo"), child_name_at(&root), 1).unwrap();
        assert_eq!((fifo.kind, opened.is_none()), (EntryKind::Other, true));
        // A directory that went away is an error naming it.
        let err = open_subdir(&parent, root.join("gone"), child_name_at(&root), 1).unwrap_err();
        assert_eq!(err.path(), root.join("gone"));
    }

    #[test]
    fn a_directory_replaced_by_a_symlink_during_the_walk_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let outside = dir.path().join("outside");
        fs_err::create_dir_all(root.join("b").join("sub")).unwrap();
        fs_err::write(root.join("b").join("inside"), "inside").unwrap();
        fs_err::write(root.join("a"), "first").unwrap();
        fs_err::create_dir(&outside).unwrap();
        fs_err::write(outside.join("secret"), "outside").unwrap();
        // On one thread, a directory's own files are visited before its subdirectories' tasks
        // run: visiting `a` swaps `b` for a symlink to a directory outside the tree, after `b` was
        // listed as a directory and before it is opened.
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let (walk, visited) = pool
            .install(|| {
                walk_with(&root, |visit| {
                    if visit.name() == "a" {
                        fs_err::rename(root.join("b"), dir.path().join("moved")).unwrap();
                        std::os::unix::fs::symlink(&outside, root.join("b")).unwrap();
                    }
                    visit.entry().path.clone()
                })
            })
            .unwrap();
        let names: Vec<_> = walk
            .entries
            .iter()
            .map(|entry| {
                (
                    entry.path.strip_prefix(&root).unwrap().to_owned(),
                    entry.kind,
                )
            })
            .collect();
        assert_eq!(
            names,
            [
                (PathBuf::new(), EntryKind::Dir),
                (PathBuf::from("a"), EntryKind::File),
                (PathBuf::from("b"), EntryKind::Symlink),
            ]
        );
        assert_eq!(visited.len(), 3);
        assert!(walk.errors.is_empty(), "{:?}", walk.errors);
        assert_eq!(walk.examined, 3);
    }

    #[test]
    fn a_file_replaced_by_a_symlink_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs_err::create_dir(&root).unwrap();
        fs_err::write(root.join("file"), "inside").unwrap();
        fs_err::write(dir.path().join("secret"), "outside").unwrap();
        let walk = walk(&root).unwrap();
        let file = &walk.entries[1];
        assert_eq!(file.kind, EntryKind::File);
        fs_err::remove_file(&file.path).unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), &file.path).unwrap();
        let err = Visit::detached(file)
            .read_with(ReadPolicy::Read, <[u8]>::to_vec)
            .unwrap_err();
        assert_eq!(err.path(), file.path);
        assert!(err.to_string().contains("cannot read"), "{err}");
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
    fn reopen_finds_the_file_the_walk_saw_or_says_what_changed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs_err::create_dir(&root).unwrap();
        for name in ["grown", "linked", "replaced", "same"] {
            fs_err::write(root.join(name), "contents").unwrap();
        }
        fs_err::write(dir.path().join("outside"), "contents").unwrap();
        let walk = walk(&root).unwrap();
        let entry = |name: &str| {
            walk.entries
                .iter()
                .find(|entry| entry.path == root.join(name))
                .unwrap()
        };
        fs_err::write(root.join("grown"), "contents and more").unwrap();
        fs_err::remove_file(root.join("linked")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("outside"), root.join("linked")).unwrap();
        fs_err::write(root.join("replacement"), "CONTENTS").unwrap();
        fs_err::rename(root.join("replacement"), root.join("replaced")).unwrap();

        let (file, metadata) = Visit::detached(entry("same")).reopen().unwrap();
        assert_eq!(metadata.len(), 8);
        let contents = read_from(&file, &root.join("same"), 8, ReadPolicy::Read).unwrap();
        assert_eq!(&*contents, b"contents");
        let grown = Visit::detached(entry("grown")).reopen().unwrap_err();
        assert!(
            matches!(
                grown,
                Error::Changed {
                    expected: 8,
                    found: 17,
                    ..
                }
            ),
            "{grown:?}"
        );
        let replaced = Visit::detached(entry("replaced")).reopen().unwrap_err();
        assert!(matches!(replaced, Error::Replaced { .. }), "{replaced:?}");
        assert_eq!(replaced.path(), root.join("replaced"));
        let linked = Visit::detached(entry("linked")).reopen().unwrap_err();
        assert!(matches!(linked, Error::Read { .. }), "{linked:?}");
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

    /// Reading in pieces hands over every byte once in order whatever the reader keeps (nothing,
    /// everything, a tail), grows the buffer only as far as the reader keeps, stops when told,
    /// and notices a file that is no longer the size the walk saw.
    #[test]
    fn reading_in_pieces_hands_over_the_file_in_order_and_detects_changes() {
        use std::ops::ControlFlow;
        let dir = tempfile::tempdir().unwrap();
        let bytes: Vec<u8> = (0..100_003u32).map(|i| (i % 251) as u8).collect();
        fs_err::write(dir.path().join("file"), &bytes).unwrap();
        fs_err::write(dir.path().join("empty"), "").unwrap();
        let walk = walk(dir.path()).unwrap();
        let entry = |name: &str| {
            walk.entries
                .iter()
                .find(|entry| entry.path.ends_with(name))
                .unwrap()
                .clone()
        };
        let file = entry("file");
        // How much of what it holds the reader is done with: all, none, all but a tail.
        let keeps: [fn(usize) -> usize; 3] = [|held| held, |_| 0, |held| held.saturating_sub(777)];
        for piece_len in [1, 1000, 4096, 65_536, 1 << 20] {
            for keep in keeps {
                let mut seen = Vec::new();
                let mut calls = 0;
                let mut largest = 0;
                let whole = Visit::detached(&file)
                    .read_in_pieces(piece_len, |held, start, at_end| {
                        calls += 1;
                        largest = largest.max(held.len());
                        // What was handed before and kept comes first again.
                        let start = usize::try_from(start).unwrap();
                        assert_eq!(held, &bytes[start..start + held.len()]);
                        let done = if at_end { held.len() } else { keep(held.len()) };
                        seen.truncate(start);
                        seen.extend_from_slice(&held[..done]);
                        if at_end {
                            seen.extend_from_slice(&held[done..]);
                        }
                        ControlFlow::Continue(done)
                    })
                    .unwrap();
                assert!(whole);
                assert_eq!(seen.len(), bytes.len(), "{piece_len}");
                assert!(seen == bytes, "{piece_len}");
                if keep(1000) == 1000 {
                    // Done with everything each time: nothing held beyond a piece and one byte.
                    assert!(largest <= piece_len + 1, "{piece_len}: {largest}");
                }
                if keep(1000) == 0 {
                    // Keeping everything: the reads double, so there are few calls.
                    assert!(
                        calls <= 2 + 2 * (bytes.len() / piece_len).max(1).ilog2(),
                        "{calls}"
                    );
                }
            }
        }
        // Through the file the walk opened: a whole read after it still reads the whole file.
        let (_, read_after) = walk_keeping(dir.path(), |visit| {
            (visit.entry().path.ends_with("file") && visit.file().is_some()).then(|| {
                visit
                    .read_in_pieces(4096, |held, _, _| ControlFlow::Continue(held.len()))
                    .unwrap();
                visit.read_with(ReadPolicy::Read, <[u8]>::to_vec).unwrap()
            })
        })
        .unwrap();
        assert_eq!(read_after, std::slice::from_ref(&bytes));
        // Told to stop, it stops.
        let mut calls = 0;
        let whole = Visit::detached(&file)
            .read_in_pieces(1000, |_, _, _| {
                calls += 1;
                ControlFlow::Break(())
            })
            .unwrap();
        assert!(!whole);
        assert_eq!(calls, 1);
        // An empty file: one call, at its end.
        let mut calls = 0;
        Visit::detached(&entry("empty"))
            .read_in_pieces(1000, |held, _, at_end| {
                calls += 1;
                assert!(held.is_empty() && at_end);
                ControlFlow::Continue(0)
            })
            .unwrap();
        assert_eq!(calls, 1);
        // A file that shrank or grew since the walk saw it.
        for (len, found) in [(100_003 + 10, 100_003), (99_000, 99_001)] {
            let seen_then = Entry {
                len,
                ..file.clone()
            };
            let err = Visit::detached(&seen_then)
                .read_in_pieces(4096, |held, _, _| ControlFlow::Continue(held.len()))
                .unwrap_err();
            assert!(
                matches!(err, Error::Changed { found: at, .. } if at == found),
                "{err:?}"
            );
        }
    }

    /// Resident file-backed and shared-memory pages of this process, in bytes (a temporary file
    /// may live on a disk or on tmpfs).
    fn resident_file_pages() -> u64 {
        let status = fs_err::read_to_string("/proc/self/status").unwrap();
        status
            .lines()
            .filter(|line| line.starts_with("RssFile:") || line.starts_with("RssShmem:"))
            .map(|line| {
                let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
                kib * 1024
            })
            .sum()
    }

    #[test]
    fn releasing_a_mapping_behind_a_pass_keeps_it_small_and_its_bytes_the_same() {
        const LEN: usize = 32 << 20;
        const STEP: usize = 1 << 20;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("large");
        let bytes: Vec<u8> = (0..LEN).map(|i| (i % 251) as u8).collect();
        fs_err::write(&path, &bytes).unwrap();
        // One pass over the file, reading every page, releasing (or not) each step behind it;
        // returns the most the mapping added to the resident pages, and a sum of every byte.
        let pass = |release_behind: bool| {
            read_with_release(
                &path,
                LEN as u64,
                ReadPolicy::MmapAbove(0),
                |contents, release| {
                    let before = resident_file_pages();
                    let mut most = 0;
                    let mut sum = 0u64;
                    for (index, step) in contents.chunks(STEP).enumerate() {
                        sum += step
                            .iter()
                            .step_by(512)
                            .map(|&byte| u64::from(byte))
                            .sum::<u64>();
                        most = most.max(resident_file_pages().saturating_sub(before));
                        if release_behind {
                            release((index + 1) * STEP);
                        }
                    }
                    // Bytes let go of read the same when read again.
                    assert_eq!(contents, &bytes[..]);
                    (most, sum)
                },
            )
            .unwrap()
        };
        let expected: u64 = bytes.iter().step_by(512).map(|&byte| u64::from(byte)).sum();
        let (kept, kept_sum) = pass(false);
        let (released, released_sum) = pass(true);
        assert_eq!((kept_sum, released_sum), (expected, expected));
        // Without releasing, the whole file ends up resident; releasing holds it to a few steps
        // (read-ahead and fault-around map a little beyond the byte read).
        assert!(
            kept >= (LEN - 2 * STEP) as u64,
            "kept {kept} bytes resident"
        );
        assert!(released <= (8 * STEP) as u64, "{released} bytes resident");
        // A file read into memory has nothing to release; `release` is a no-op for it.
        let owned = read_with_release(&path, LEN as u64, ReadPolicy::Read, |contents, release| {
            release(LEN);
            contents == &bytes[..]
        })
        .unwrap();
        assert!(owned);
    }
}
