//! Writing a relink: through the ELF engine, which never modifies a shared inode, keeps the mode
//! of read-only files, and writes every new file through storepatch-rewrite's one write path.
use std::path::Path;

use storepatch_elf::{ElfEdits, Options, Outcome};

use crate::error::{Error, Result};

/// Applies `edits` to the ELF file at `path` (whose current contents are `bytes`) in one pass.
///
/// Nothing is opened for writing when the edits change nothing. A file with other hard links is
/// rewritten to a new inode (the other names keep the old contents). A read-only file is made
/// writable for an edit in place and gets its mode back afterwards; a rewritten file gets the
/// original's mode.
pub fn apply(path: &Path, bytes: &[u8], edits: &ElfEdits) -> Result<Outcome> {
    apply_with_options(path, bytes, edits, &Options::default())
}

/// [`apply`] with layout options (`patchelfFlags`' `--page-size`).
pub fn apply_with_options(
    path: &Path,
    bytes: &[u8],
    edits: &ElfEdits,
    options: &Options,
) -> Result<Outcome> {
    // Planned once, on the bytes the caller read: a relayout is streamed from the file, never
    // built in memory.
    storepatch_elf::apply_to_read_file(path, bytes, edits, options)
        .map_err(|error| Error::engine(path, error))
}
