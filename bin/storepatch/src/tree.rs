//! The command line's side of discovery across trees (see `storepatch-tree`): options from flags,
//! candidates lists read from files, progress shown while the roots are scanned.
use std::path::{Path, PathBuf};

use storepatch_core::{StoreDir, StorePath};
pub(crate) use storepatch_tree::{
    EntryError, Location, TreeScan, error_chain, handle_leftovers, parse_store_paths,
    render_target, render_target_into,
};

use crate::progress::Progress;

/// How to scan, and whether to show progress while doing it.
#[derive(Debug)]
pub(crate) struct TreeOptions {
    pub(crate) tree: storepatch_tree::TreeOptions,
    pub(crate) show_progress: bool,
}

impl std::ops::Deref for TreeOptions {
    type Target = storepatch_tree::TreeOptions;

    fn deref(&self) -> &Self::Target {
        &self.tree
    }
}

impl storepatch_tree::Progress for Progress {
    fn entry_done(&self) {
        self.inc();
    }
}

/// Walks the roots (in the order given) and finds every reference, showing progress.
pub(crate) fn scan_roots(roots: &[PathBuf], options: &TreeOptions) -> anyhow::Result<TreeScan> {
    let progress = Progress::new("scanning", options.show_progress);
    let scan = storepatch_tree::scan_roots(roots, &options.tree, &progress);
    progress.finish();
    Ok(scan?)
}

/// [`scan_roots`], with `writer` writing files while the first pass holds their contents.
pub(crate) fn scan_roots_writing(
    roots: &[PathBuf],
    options: &TreeOptions,
    writer: &dyn storepatch_tree::ContentWriter,
) -> anyhow::Result<TreeScan> {
    let progress = Progress::new("scanning", options.show_progress);
    let scan = storepatch_tree::scan_roots_writing(roots, &options.tree, &progress, writer);
    progress.finish();
    Ok(scan?)
}

/// Reads `--candidates` files and `--candidates-from-env` into store paths.
pub(crate) fn load_candidates(
    store_dir: &StoreDir,
    files: &[PathBuf],
    from_env: bool,
) -> anyhow::Result<Vec<StorePath>> {
    let mut candidates = Vec::new();
    for file in files {
        let text = crate::exit::read_regular(file)?;
        candidates.extend(storepatch_tree::parse_candidates(store_dir, file, &text)?);
    }
    if from_env {
        candidates.extend(storepatch_tree::candidates_from_vars(
            store_dir,
            std::env::vars_os(),
        ));
    }
    candidates.sort();
    candidates.dedup();
    Ok(candidates)
}

/// Checks that `root` is a directory (not a symlink to one).
pub(crate) fn require_directory(root: &Path) -> anyhow::Result<()> {
    let metadata =
        fs_err::symlink_metadata(root).map_err(|err| crate::exit::cannot("read", root, &err))?;
    anyhow::ensure!(
        metadata.file_type().is_dir(),
        "cannot scrub `{}`: not a directory",
        root.display()
    );
    Ok(())
}
