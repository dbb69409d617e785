//! Relinking whole trees: which files are relinked, each file's result, hard links.
//!
//! [`relink_trees`] walks the roots, handles leftover temporary files of interrupted runs, relinks
//! every regular file in parallel (each inode once, under the name met first), links the other
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
    /// Every regular file considered, in walk order.
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

/// Relinks every regular file below `roots` (see the module docs).
///
/// # Errors
///
/// A root cannot be walked; problems with single files are in the [`TreeRun`] instead.
pub fn relink_trees(
    relinker: &Relinker,
    roots: &[PathBuf],
    options: TreeOptions,
) -> Result<TreeRun, TreeError> {
    relink_trees_with_progress(relinker, roots, options, &())
}

/// Like [`relink_trees`], telling `progress` about each file once it is done.
///
/// # Errors
///
/// A root cannot be walked; problems with single files are in the [`TreeRun`] instead.
pub fn relink_trees_with_progress(
    relinker: &Relinker,
    roots: &[PathBuf],
    options: TreeOptions,
    progress: &dyn storepatch_tree::Progress,
) -> Result<TreeRun, TreeError> {
    // The files to relink: regular files only (symlinks point at files that are relinked under
    // their own name, or are outside the tree and must not be written).
    // Hard links inside the trees: each file is relinked once, under the name met first.
    let mut files: Vec<TreeFile> = Vec::new();
    let mut errors: Vec<(PathBuf, String)> = Vec::new();
    let mut removed = Vec::new();
    let mut first_names: HashMap<(u64, u64), usize> = HashMap::new();
    for root in roots {
        let walk = storepatch_walk::walk(root)?;
        errors.extend(
            walk.errors
                .iter()
                .map(|err| (err.path().to_path_buf(), error_chain(err))),
        );
        for entry in walk.entries {
            if entry.kind != EntryKind::File || !(options.recursive || entry.depth <= 1) {
                continue;
            }
            if entry.depth > 0
                && let Some(leftover) = entry
                    .path
                    .file_name()
                    .and_then(storepatch_rewrite::Leftover::from_name)
            {
                match storepatch_tree::leftover(&entry, &leftover, !options.dry_run) {
                    Ok(note) => removed.push(note),
                    Err(err) => errors.push((err.path, err.message)),
                }
                continue;
            }
            let inode = (entry.dev, entry.ino);
            let first_name = if entry.nlink > 1 {
                let index = files.len();
                let first = *first_names.entry(inode).or_insert(index);
                (first != index).then_some(first)
            } else {
                None
            };
            files.push(TreeFile {
                path: entry.path,
                len: entry.len,
                inode,
                first_name,
            });
        }
    }
    let mut results: Vec<FileResult> = files
        .par_iter()
        .map(|file| {
            let result = match file.first_name {
                Some(first) => FileResult::HardLink {
                    first,
                    relinked: false,
                },
                // Each file is finished or not started: a signal stops the run between files.
                None if storepatch_rewrite::interrupt::signal().is_some() => {
                    FileResult::Interrupted
                }
                None => relink_file(relinker, &file.path, file.len, options),
            };
            progress.entry_done();
            result
        })
        .collect();
    relink_hard_links(&files, &mut results);
    Ok(TreeRun {
        files,
        results,
        errors,
        removed,
    })
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

/// Relinks one file (the first name of its inode).
fn relink_file(relinker: &Relinker, path: &Path, len: u64, options: TreeOptions) -> FileResult {
    // Most files of a venv are not ELF: look at the magic before reading them whole.
    match has_elf_magic(path) {
        Ok(true) => {}
        Ok(false) => return FileResult::Skipped(Skip::NotElf),
        Err(err) => {
            return FileResult::Failed(format!(
                "cannot read `{}`: {}",
                path.display(),
                io_cause(&err)
            ));
        }
    }
    let contents = match storepatch_walk::read(path, len, options.read_policy) {
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

/// Whether the file starts with the ELF magic (a shorter file does not).
fn has_elf_magic(path: &Path) -> std::io::Result<bool> {
    use std::io::Read as _;
    let mut magic = [0u8; 4];
    let mut file = fs_err::File::open(path)?;
    let mut filled = 0;
    while filled < magic.len() {
        match file.read(&mut magic[filled..])? {
            0 => break,
            read => filled += read,
        }
    }
    Ok(filled == magic.len() && magic == *b"\x7fELF")
}

/// What the system said about `err`: `fs_err` words its errors as
/// ``failed to OPERATION `PATH`: CAUSE``, and the path is in the message already.
fn io_cause(err: &std::io::Error) -> String {
    let text = err.to_string();
    match text.split_once("`: ") {
        Some((operation, cause)) if operation.starts_with("failed to ") => cause.to_owned(),
        _ => text,
    }
}
