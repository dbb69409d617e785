//! Relinking whole trees: which files are relinked, each file's result, hard links.
//!
//! [`walk_trees`] walks the roots once: it handles leftover temporary files of interrupted runs,
//! collects the regular files to relink and the libraries among them (for the library index), and
//! looks at each file's first bytes as soon as the walk has it open, so the many files of a venv
//! that are not ELF are never examined (no `fstat`) nor opened again. [`relink_walked`] then relinks every ELF file in parallel (each inode once, under the name met first), links the other
//! names of a rewritten file to it again, and returns the results in walk order, so a report never
//! depends on the thread count. A signal stops the run between files: each file is old or new.
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use storepatch_elf::Outcome;
use storepatch_tree::error_chain;
use storepatch_walk::{EntryKind, ReadPolicy};

use crate::{Plan, Relink, Relinker, Skip};

/// What happened to one file.
#[derive(Debug)]
pub enum FileResult {
    /// Not relinked, for this reason.
    Skipped(Skip),
    /// Planned, and written unless the plan changes nothing or the run is a dry run.
    Relinked {
        /// The plan.
        relink: Box<Relink>,
        /// How the file was written; `None` when it was not.
        outcome: Option<Outcome>,
    },
    /// Another name of a file met earlier in the walk (`files[first]`): it is relinked once, under
    /// that name. If that rewrite made a new file, this name was linked to it again (`relinked`).
    HardLink {
        /// The index of the file's first name in [`TreeRun::files`].
        first: usize,
        /// Whether this name was linked to the new file.
        relinked: bool,
    },
    /// The file could not be relinked; the message names it.
    Failed(String),
    /// A signal stopped the run before this file was looked at; it is unchanged.
    Interrupted,
}

/// A regular file to relink.
#[derive(Debug)]
pub struct TreeFile {
    /// Its path (below one of the roots).
    pub path: PathBuf,
    /// Its size as the walk saw it.
    pub len: u64,
    /// Device and inode as the walk saw them.
    pub inode: (u64, u64),
    /// For a file with several names in the tree, every name after the first: the first's index.
    pub first_name: Option<usize>,
}

/// How to relink trees.
#[derive(Clone, Copy, Debug)]
pub struct TreeOptions {
    /// Relink files in subdirectories too (otherwise only a root's own files).
    pub recursive: bool,
    /// Plan only: write nothing, remove no leftover.
    pub dry_run: bool,
    /// How files are read.
    pub read_policy: ReadPolicy,
}

/// The outcome of relinking some trees.
#[derive(Debug)]
pub struct TreeRun {
    /// The regular files considered that a report may name, in walk order: every file that
    /// starts like an ELF file (or whose start could not be read) or is named like a library
    /// (`*.so*`). The other files, the bulk of a tree, are not ELF and have nothing to say
    /// (under any of their names), so they are left out.
    pub files: Vec<TreeFile>,
    /// `results[i]` is what happened to `files[i]`.
    pub results: Vec<FileResult>,
    /// Problems met by the walk and with leftover temporary files: path and message (which names
    /// the path).
    pub errors: Vec<(PathBuf, String)>,
    /// Leftover temporary files of interrupted runs that were removed.
    pub removed: Vec<storepatch_tree::Removed>,
}

/// An error that stops the whole run.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    /// A root could not be walked.
    #[error(transparent)]
    Walk(#[from] storepatch_walk::Error),
}

/// The trees to relink, walked once: the files to relink and the libraries among them, for
/// [`crate::LibraryIndexBuilder::files`] and then [`relink_walked`].
#[derive(Debug)]
pub struct TreeWalk {
    files: Vec<TreeFile>,
    /// What the walk learnt of each file's first bytes.
    starts: Vec<Start>,
    libraries: Vec<PathBuf>,
    errors: Vec<(PathBuf, String)>,
    removed: Vec<storepatch_tree::Removed>,
}

impl TreeWalk {
    /// The files and symlinks of the trees named like libraries (`*.so*`), in walk order: the
    /// trees' own libraries, as [`crate::LibraryIndexBuilder::tree`] would find them.
    pub fn libraries(&self) -> &[PathBuf] {
        &self.libraries
    }
}

/// What a file's first bytes say, learnt while the tree is walked. One byte: the walk holds one
/// for each of a tree's entries.
#[derive(Clone, Copy, Debug)]
enum Start {
    /// It starts with the ELF magic: it is read whole and planned.
    Elf,
    /// It does not (or is too short to): not ELF.
    NotElf,
    /// Its first bytes could not be read: it is read again when it is relinked, which reports
    /// the error (or, if it can be read by then, relinks it).
    Unreadable,
}

/// Walks `roots` once (see the module docs): every regular file to relink, with its first bytes
/// looked at through the open file while the walk has it, and the libraries among them.
/// Leftover temporary files of interrupted runs are removed here (or reported, in a dry run).
///
/// # Errors
///
/// A root cannot be walked; problems with single entries are in the [`TreeWalk`] instead.
pub fn walk_trees(roots: &[PathBuf], options: TreeOptions) -> Result<TreeWalk, TreeError> {
    // The files to relink: regular files only (symlinks point at files that are relinked under
    // their own name, or are outside the tree and must not be written).
    // Hard links inside the trees: each file is relinked once, under the name met first.
    let mut tree = TreeWalk {
        files: Vec::new(),
        starts: Vec::new(),
        libraries: Vec::new(),
        errors: Vec::new(),
        removed: Vec::new(),
    };
    let mut first_names: HashMap<(u64, u64), usize> = HashMap::new();
    let considered = |entry: &storepatch_walk::Entry| options.recursive || entry.depth <= 1;
    let leftover = |entry: &storepatch_walk::Entry| {
        if entry.depth == 0 {
            return None;
        }
        storepatch_rewrite::Leftover::from_name(entry.name()?)
    };
    for root in roots {
        // Only the entries the loop below uses are kept: leftovers, symlinks named like
        // libraries and the files a report may name (see `TreeRun::files`); the bulk of a venv,
        // files that are not ELF, have one name and are not named like a library, is let go of
        // as soon as it is visited.
        // The walk reads each file's start before it examines the file, and lets go of one that
        // is not ELF and not named like a library or a leftover without examining it at all.
        let wanted = |name: &std::ffi::OsStr, start: &[u8]| {
            start == MAGIC
                || crate::index::looks_like_library(name)
                || storepatch_rewrite::Leftover::from_name(name).is_some()
        };
        let (walk, starts) =
            storepatch_walk::walk_keeping_by_start(root, MAGIC.len(), wanted, |visit| {
                let entry = visit.entry();
                if !considered(entry) {
                    return None;
                }
                match entry.kind {
                    EntryKind::File if leftover(entry).is_some() => Some(None),
                    EntryKind::File => {
                        let start = start_of(visit);
                        let library = entry.name().is_some_and(crate::index::looks_like_library);
                        (!matches!(start, Start::NotElf) || library).then_some(Some(start))
                    }
                    EntryKind::Symlink => (leftover(entry).is_none()
                        && entry.name().is_some_and(crate::index::looks_like_library))
                    .then_some(None),
                    EntryKind::Dir | EntryKind::Other => None,
                }
            })?;
        tree.errors.extend(
            walk.errors
                .iter()
                .map(|err| (err.path().to_path_buf(), error_chain(err))),
        );
        for (entry, start) in walk.entries.into_iter().zip(starts) {
            if !matches!(entry.kind, EntryKind::File | EntryKind::Symlink) || !considered(&entry) {
                continue;
            }
            if let Some(leftover) = leftover(&entry) {
                if entry.kind == EntryKind::File {
                    match storepatch_tree::leftover(&entry, &leftover, !options.dry_run) {
                        Ok(note) => tree.removed.push(note),
                        Err(err) => tree.errors.push((err.path, err.message)),
                    }
                }
                continue;
            }
            let library = entry.name().is_some_and(crate::index::looks_like_library);
            if library {
                tree.libraries.push(entry.path.clone());
            }
            let Some(start) = start else {
                continue;
            };
            // The bulk of a venv: a file that is not ELF and is not named like a library has
            // nothing to report, so it is not kept (see `TreeRun::files`), whatever its number
            // of names: its other names would say nothing either.
            if matches!(start, Start::NotElf) && !library {
                continue;
            }
            let inode = (entry.dev, entry.ino);
            let first_name = if entry.nlink > 1 {
                let index = tree.files.len();
                let first = *first_names.entry(inode).or_insert(index);
                (first != index).then_some(first)
            } else {
                None
            };
            tree.files.push(TreeFile {
                path: entry.path,
                len: entry.len,
                inode,
                first_name,
            });
            tree.starts.push(start);
        }
    }
    Ok(tree)
}

/// The ELF magic, the first bytes of every ELF file.
const MAGIC: &[u8; 4] = b"\x7fELF";

/// What the first bytes of a regular file say: those the walk read, or else read now through
/// the file the walk has open; a file too short to hold the ELF magic is not read for it.
fn start_of(visit: &storepatch_walk::Visit<'_>) -> Start {
    if let Some(start) = visit.start() {
        return if start == MAGIC {
            Start::Elf
        } else {
            Start::NotElf
        };
    }
    if visit.entry().len < MAGIC.len() as u64 {
        return Start::NotElf;
    }
    let mut start = [0; MAGIC.len()];
    match visit.read_start(&mut start) {
        Ok(read) if read == start.len() && start == *MAGIC => Start::Elf,
        Ok(_) => Start::NotElf,
        Err(err) => {
            log::debug!("{}", error_chain(&err));
            Start::Unreadable
        }
    }
}

/// Relinks every regular file below `roots` (see the module docs): [`walk_trees`], then
/// [`relink_walked`].
///
/// # Errors
///
/// A root cannot be walked; problems with single files are in the [`TreeRun`] instead.
pub fn relink_trees(
    relinker: &Relinker,
    roots: &[PathBuf],
    options: TreeOptions,
) -> Result<TreeRun, TreeError> {
    Ok(relink_walked(
        relinker,
        walk_trees(roots, options)?,
        options,
        &(),
    ))
}

/// Relinks the files of trees walked by [`walk_trees`] in parallel, telling `progress` about each
/// file once it is done; results in walk order.
pub fn relink_walked(
    relinker: &Relinker,
    tree: TreeWalk,
    options: TreeOptions,
    progress: &dyn storepatch_tree::Progress,
) -> TreeRun {
    let TreeWalk {
        files,
        starts,
        errors,
        removed,
        ..
    } = tree;
    let mut results: Vec<FileResult> = files
        .par_iter()
        .zip(starts)
        .map(|(file, start)| {
            let result = match (file.first_name, start) {
                (Some(first), _) => FileResult::HardLink {
                    first,
                    relinked: false,
                },
                (None, Start::NotElf) => FileResult::Skipped(Skip::NotElf),
                // Each file is finished or not started: a signal stops the run between files.
                (None, Start::Elf | Start::Unreadable)
                    if storepatch_rewrite::interrupt::signal().is_some() =>
                {
                    FileResult::Interrupted
                }
                (None, Start::Elf | Start::Unreadable) => {
                    let started = std::time::Instant::now();
                    let result = relink_file(relinker, &file.path, file.len, options);
                    log::trace!(
                        "{}: {} bytes, {:?}",
                        file.path.display(),
                        file.len,
                        started.elapsed()
                    );
                    result
                }
            };
            progress.entry_done();
            result
        })
        .collect();
    relink_hard_links(&files, &mut results);
    TreeRun {
        files,
        results,
        errors,
        removed,
    }
}

/// Links every later name of a file to its first name again where relinking the first name put a
/// new file there. That is any write: a relayout is a new file, and so is an edit in place of a
/// file with several names (the ELF engine never writes through a shared inode).
fn relink_hard_links(files: &[TreeFile], results: &mut [FileResult]) {
    for index in 0..files.len() {
        let FileResult::HardLink { first, .. } = results[index] else {
            continue;
        };
        if !matches!(
            results[first],
            FileResult::Relinked {
                outcome: Some(_),
                ..
            }
        ) {
            continue;
        }
        let (first_file, file) = (&files[first], &files[index]);
        let linked = match fs_err::symlink_metadata(&first_file.path) {
            Err(err) => Err(error_chain(&err)),
            Ok(metadata) if (metadata.dev(), metadata.ino()) == first_file.inode => Ok(false),
            Ok(_) => storepatch_rewrite::link_into_place(&first_file.path, &file.path)
                .map(|()| true)
                .map_err(|err| error_chain(&err)),
        };
        results[index] = match linked {
            Ok(relinked) => FileResult::HardLink { first, relinked },
            Err(err) => FileResult::Failed(format!(
                "cannot link `{}` to `{}` again: {err}",
                file.path.display(),
                first_file.path.display(),
            )),
        };
    }
}

/// Relinks one file (the first name of its inode), which starts with the ELF magic (or whose
/// start could not be read).
fn relink_file(relinker: &Relinker, path: &Path, len: u64, options: TreeOptions) -> FileResult {
    // Mapped whatever its size (unless mapping is off): planning reads the headers and the
    // dynamic tables only, so only their pages are ever resident, even of a 100 MB library.
    let policy = match options.read_policy {
        ReadPolicy::Read => ReadPolicy::Read,
        ReadPolicy::MmapAbove(_) => ReadPolicy::MmapAbove(0),
    };
    let contents = match storepatch_walk::read(path, len, policy) {
        Ok(contents) => contents,
        Err(err) => return FileResult::Failed(error_chain(&err)),
    };
    let plan = match relinker.plan(path, &contents) {
        Ok(plan) => plan,
        Err(err) => return FileResult::Failed(error_chain(&err)),
    };
    match plan {
        Plan::Skip(skip) => FileResult::Skipped(skip),
        Plan::Relink(relink) => {
            if options.dry_run || !relink.changes_file() {
                return FileResult::Relinked {
                    relink,
                    outcome: None,
                };
            }
            let patchelf = relinker.settings().patchelf.options();
            match crate::apply_with_options(path, &contents, &relink.edits, &patchelf) {
                Ok(outcome) => FileResult::Relinked {
                    relink,
                    outcome: Some(outcome),
                },
                Err(err) if storepatch_rewrite::interrupt::signal().is_some() => {
                    log::debug!("{}: {}", path.display(), error_chain(&err));
                    FileResult::Interrupted
                }
                Err(err) => FileResult::Failed(error_chain(&err)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_walk_finds_the_libraries_and_keeps_the_files_to_report() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("tree");
        fs_err::create_dir_all(root.join("sub")).unwrap();
        // A real ELF file (this test binary) under a library's name, and under another name.
        let elf = fs_err::read(std::env::current_exe().unwrap()).unwrap();
        fs_err::write(root.join("libreal.so.1"), &elf).unwrap();
        fs_err::write(root.join("sub/libdeep.so"), &elf).unwrap();
        fs_err::write(root.join("tool"), &elf).unwrap();
        // The magic alone is a (truncated) ELF file; shorter files cannot be one.
        fs_err::write(root.join("stub"), b"\x7fELF").unwrap();
        fs_err::write(root.join("short"), b"\x7fEL").unwrap();
        fs_err::write(root.join("empty"), b"").unwrap();
        fs_err::write(root.join("script.py"), b"print('hello')\n").unwrap();
        std::os::unix::fs::symlink("libreal.so.1", root.join("libreal.so")).unwrap();
        fs_err::hard_link(root.join("tool"), root.join("tool-again")).unwrap();
        // A file that is not ELF but kept for the report: a linker script named like a library.
        // A file that is not ELF has nothing to report under any of its names.
        fs_err::write(root.join("libc.so"), b"GROUP ( libc.so.6 )\n").unwrap();
        fs_err::write(root.join("data"), b"not ELF\n").unwrap();
        fs_err::hard_link(root.join("data"), root.join("data-again")).unwrap();
        let starts = |tree: &TreeWalk| -> Vec<(String, String, Option<usize>)> {
            tree.files
                .iter()
                .zip(&tree.starts)
                .map(|(file, start)| {
                    let name = file.path.strip_prefix(&root).unwrap().display().to_string();
                    (name, format!("{start:?}"), file.first_name)
                })
                .collect()
        };
        let names = |paths: &[PathBuf]| -> Vec<String> {
            paths
                .iter()
                .map(|path| path.strip_prefix(&root).unwrap().display().to_string())
                .collect()
        };
        let mut options = TreeOptions {
            recursive: true,
            dry_run: true,
            read_policy: ReadPolicy::default(),
        };
        let tree = walk_trees(std::slice::from_ref(&root), options).unwrap();
        assert!(tree.errors.is_empty(), "{:?}", tree.errors);
        assert_eq!(
            names(tree.libraries()),
            ["libc.so", "libreal.so", "libreal.so.1", "sub/libdeep.so"]
        );
        // `empty`, `short`, `script.py` and `data` (with its other name) are not ELF and have
        // nothing to report: left out.
        let expected = [
            ("libc.so", "NotElf", None),
            ("libreal.so.1", "Elf", None),
            ("stub", "Elf", None),
            ("sub/libdeep.so", "Elf", None),
            ("tool", "Elf", None),
            ("tool-again", "Elf", Some(4)),
        ];
        let expected: Vec<(String, String, Option<usize>)> = expected
            .iter()
            .map(|(name, start, first)| ((*name).to_owned(), (*start).to_owned(), *first))
            .collect();
        assert_eq!(starts(&tree), expected);
        // Without recursion, neither the files nor the libraries of `sub` are taken.
        options.recursive = false;
        let tree = walk_trees(std::slice::from_ref(&root), options).unwrap();
        assert_eq!(
            names(tree.libraries()),
            ["libc.so", "libreal.so", "libreal.so.1"]
        );
        assert!(
            starts(&tree)
                .iter()
                .all(|(name, ..)| !name.starts_with("sub"))
        );
    }
}
