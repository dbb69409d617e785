//! The library index: every shared library in the trees being patched and the search paths,
//! keyed by file name (what the dynamic loader looks for in a run path directory) and by soname
//! (for hints when only the soname matches).
//!
//! Order decides which library wins: the sources in the order they were added, and inside a
//! source the walk order (names sorted byte-wise, parents before children), never the order the
//! file system returns. Files are parsed in parallel; the result does not depend on the thread
//! count.
//!
//! With [`LibraryIndexBuilder::follow_run_paths`], as autoPatchelfHook does, the run path
//! entries of the indexed libraries (without `$ORIGIN` ones) are searched too, as directories
//! (not recursively), breadth first: after every source of the same group
//! ([`LibraryIndexBuilder::end_group`]), before the next group. Directories that do not exist
//! (scrubbed entries) add nothing, silently; a directory is listed once.
use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use storepatch_elf::ElfInfo;
use storepatch_walk::{EntryKind, ReadPolicy};

use crate::error::{Error, Result};
use crate::runpath::normalize;
use crate::target::Target;

/// One shared library in the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Library {
    /// The file (or symlink to it), as found.
    pub path: PathBuf,
    /// The directory that goes into a run path: the one holding the file it resolves to when
    /// that has the same name (as autoPatchelfHook does), else the one holding `path`.
    pub dir: PathBuf,
    /// Its file name, the key a `DT_NEEDED` entry is matched against.
    pub name: Vec<u8>,
    /// Its `DT_SONAME`.
    pub soname: Option<Vec<u8>>,
    /// Class, machine and OS ABI.
    pub target: Target,
}

/// Shared libraries by file name and soname, in priority order.
#[derive(Debug, Default)]
pub struct LibraryIndex {
    libraries: Vec<Library>,
    by_name: HashMap<Vec<u8>, Vec<usize>>,
    by_soname: HashMap<Vec<u8>, Vec<usize>>,
    by_dir_and_name: HashMap<(Vec<u8>, Vec<u8>), usize>,
}

impl LibraryIndex {
    /// Starts an empty index.
    pub fn builder() -> LibraryIndexBuilder {
        LibraryIndexBuilder::default()
    }

    /// Every library, in priority order.
    pub fn libraries(&self) -> &[Library] {
        &self.libraries
    }

    /// The first library named `name` that a file of target `wanted` can load.
    pub fn find(&self, name: &[u8], wanted: &Target) -> Option<&Library> {
        self.by_name
            .get(name)?
            .iter()
            .map(|&index| &self.libraries[index])
            .find(|library| wanted.accepts(&library.target))
    }

    /// Libraries whose soname is `soname` (whatever their file name), in priority order.
    pub fn with_soname(&self, soname: &[u8]) -> impl Iterator<Item = &Library> {
        self.by_soname
            .get(soname)
            .into_iter()
            .flatten()
            .map(|&index| &self.libraries[index])
    }

    /// The library named `name` in directory `dir` (compared after lexical normalisation).
    pub fn in_directory(&self, dir: &Path, name: &[u8]) -> Option<&Library> {
        let key = (normalize(dir.as_os_str().as_bytes()), name.to_vec());
        self.by_dir_and_name
            .get(&key)
            .map(|&index| &self.libraries[index])
    }

    fn push(&mut self, library: Library) {
        let index = self.libraries.len();
        self.by_name
            .entry(library.name.clone())
            .or_default()
            .push(index);
        if let Some(soname) = &library.soname {
            self.by_soname
                .entry(soname.clone())
                .or_default()
                .push(index);
        }
        self.by_dir_and_name
            .entry((
                normalize(library.dir.as_os_str().as_bytes()),
                library.name.clone(),
            ))
            .or_insert(index);
        self.libraries.push(library);
    }
}

#[derive(Debug, Clone)]
enum Source {
    Directory(PathBuf),
    Tree {
        root: PathBuf,
        recursive: bool,
    },
    /// A run path entry of an indexed library: a directory that may not exist.
    RunPath(PathBuf),
    /// Files (or symlinks) named like libraries that the caller found walking a tree.
    Listed(Vec<PathBuf>),
}

/// Collects library sources, then parses them all (see [`LibraryIndex::builder`]).
#[derive(Debug, Clone, Default)]
pub struct LibraryIndexBuilder {
    /// Groups of sources, in order.
    groups: Vec<Vec<Source>>,
    follow_run_paths: bool,
}

impl LibraryIndexBuilder {
    /// Adds the libraries directly in `dir` (not in its subdirectories), like `--library-path`.
    /// `dir` may also be one library file.
    #[must_use]
    pub fn directory(mut self, dir: impl Into<PathBuf>) -> Self {
        self.push(Source::Directory(dir.into()));
        self
    }

    /// Also searches the run paths of indexed libraries (see the module docs).
    #[must_use]
    pub fn follow_run_paths(mut self, follow: bool) -> Self {
        self.follow_run_paths = follow;
        self
    }

    /// Ends a group of sources: run paths followed from its libraries come before the sources
    /// added next (autoPatchelfHook indexes the output and what its libraries' run paths name,
    /// then the search paths and what theirs name).
    #[must_use]
    pub fn end_group(mut self) -> Self {
        if self.groups.last().is_some_and(|group| !group.is_empty()) {
            self.groups.push(Vec::new());
        }
        self
    }

    fn push(&mut self, source: Source) {
        match self.groups.last_mut() {
            Some(group) => group.push(source),
            None => self.groups.push(vec![source]),
        }
    }

    /// Adds the libraries anywhere below `root` (or only directly in it when `recursive` is
    /// false), like the trees being patched and `--library-tree`. `root` may also be one file.
    #[must_use]
    pub fn tree(mut self, root: impl Into<PathBuf>, recursive: bool) -> Self {
        self.push(Source::Tree {
            root: root.into(),
            recursive,
        });
        self
    }

    /// Searches these files (or symlinks to them), in the order given, as [`Self::tree`] would
    /// search the tree they were found in: for a caller that has walked the tree already, such
    /// as [`crate::walk_trees`] ([`crate::TreeWalk::libraries`]). Names that do not look like
    /// libraries are left out.
    #[must_use]
    pub fn files(mut self, paths: impl IntoIterator<Item = PathBuf>) -> Self {
        self.push(Source::Listed(
            paths
                .into_iter()
                .filter(|path| path.file_name().is_some_and(looks_like_library))
                .collect(),
        ));
        self
    }

    /// Lists and parses every source. Files that are not ELF (linker scripts such as `libc.so`)
    /// are left out silently; sources and files that cannot be read are returned as errors next
    /// to the index, which holds everything else.
    pub fn build(self) -> (LibraryIndex, Vec<Error>) {
        let mut errors = Vec::new();
        let mut index = LibraryIndex::default();
        // Directories already listed as run path sources (normalised), so each is listed once.
        let mut followed: std::collections::HashSet<Vec<u8>> = std::collections::HashSet::new();
        for group in self.groups {
            let mut round = group;
            while !round.is_empty() {
                let mut candidates: Vec<PathBuf> = Vec::new();
                for source in &round {
                    if let Source::Directory(dir) | Source::RunPath(dir) = source {
                        followed.insert(normalize(dir.as_os_str().as_bytes()));
                    }
                    match list(source) {
                        Ok(found) => candidates.extend(found),
                        Err(err) => errors.push(err),
                    }
                }
                let parsed: Vec<Result<Option<Parsed>>> =
                    candidates.par_iter().map(|path| library(path)).collect();
                let mut next = Vec::new();
                for result in parsed {
                    match result {
                        Ok(Some((library, run_path))) => {
                            if self.follow_run_paths
                                && let Some(run_path) = run_path
                            {
                                for entry in crate::runpath::split(&run_path) {
                                    if crate::runpath::uses_origin(&entry)
                                        || entry.first() != Some(&b'/')
                                        || !followed.insert(normalize(&entry))
                                    {
                                        continue;
                                    }
                                    next.push(Source::RunPath(PathBuf::from(OsStr::from_bytes(
                                        &entry,
                                    ))));
                                }
                            }
                            index.push(library);
                        }
                        Ok(None) => {}
                        Err(err) => errors.push(err),
                    }
                }
                round = next;
            }
        }
        log::debug!("indexed {} libraries", index.libraries.len());
        (index, errors)
    }
}

/// Whether a file name looks like a shared library (`*.so*`, autoPatchelfHook's pattern).
pub(crate) fn looks_like_library(name: &OsStr) -> bool {
    memfind(name.as_bytes(), b".so")
}

fn memfind(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

fn list(source: &Source) -> Result<Vec<PathBuf>> {
    match source {
        Source::RunPath(dir) if !dir.is_dir() => Ok(Vec::new()),
        Source::Directory(file) if fs_err::metadata(file).is_ok_and(|meta| meta.is_file()) => {
            Ok(file
                .file_name()
                .is_some_and(looks_like_library)
                .then(|| file.clone())
                .into_iter()
                .collect())
        }
        Source::Directory(dir) | Source::RunPath(dir) => {
            let mut names: Vec<PathBuf> = fs_err::read_dir(dir)
                .map_err(Error::Fs)?
                .filter_map(std::result::Result::ok)
                .map(|entry| entry.path())
                .filter(|path| path.file_name().is_some_and(looks_like_library))
                .collect();
            names.sort_by(|left, right| {
                left.as_os_str()
                    .as_bytes()
                    .cmp(right.as_os_str().as_bytes())
            });
            Ok(names)
        }
        Source::Listed(paths) => Ok(paths.clone()),
        Source::Tree { root, recursive } => {
            let walk = storepatch_walk::walk(root)?;
            Ok(walk
                .entries
                .into_iter()
                .filter(|entry| *recursive || entry.depth <= 1)
                .filter(|entry| matches!(entry.kind, EntryKind::File | EntryKind::Symlink))
                .map(|entry| entry.path)
                .filter(|path| path.file_name().is_some_and(looks_like_library))
                .collect())
        }
    }
}

/// The directory a run path gets for the library at `path` (in `dir`, named `name`): as
/// autoPatchelfHook decides it, the directory of the file the path resolves to (symlinks
/// followed in every component) when that file has the same name, else `dir` itself (a
/// `libfoo.so -> libfoo.so.1` link is found in its own directory).
fn run_path_directory(path: &Path, dir: &Path, name: &OsStr) -> PathBuf {
    match fs_err::canonicalize(path) {
        Ok(resolved) if resolved.file_name() == Some(name) => resolved
            .parent()
            .map_or_else(|| dir.to_path_buf(), Path::to_path_buf),
        _ => dir.to_path_buf(),
    }
}

/// An indexed library and its run path.
type Parsed = (Library, Option<Vec<u8>>);

/// Parses one candidate, with its run path; `None` when it is not a (readable, regular) ELF
/// file.
fn library(path: &Path) -> Result<Option<Parsed>> {
    // Symlinks count when they lead to a regular file; dangling ones are left out.
    let Ok(metadata) = fs_err::metadata(path) else {
        return Ok(None);
    };
    if !metadata.is_file() {
        return Ok(None);
    }
    // Mapped whatever its size: only the headers and dynamic tables are read.
    let contents = storepatch_walk::read(path, metadata.len(), ReadPolicy::MmapAbove(0))?;
    let info = match ElfInfo::parse(&contents) {
        Ok(info) => info,
        Err(err) => {
            log::debug!("not indexing {}: {err}", path.display());
            return Ok(None);
        }
    };
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok(None);
    };
    Ok(Some((
        Library {
            path: path.to_path_buf(),
            dir: run_path_directory(path, dir, name),
            name: name.as_bytes().to_vec(),
            soname: info.soname.clone(),
            target: Target::of(&info),
        },
        info.run_path().map(<[u8]>::to_vec),
    )))
}
