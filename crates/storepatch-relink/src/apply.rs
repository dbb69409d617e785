//! Writing a relink: through the ELF engine, without ever modifying a shared inode, and keeping
//! the mode of read-only files.
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use storepatch_elf::{ElfEdits, Options, Outcome, Patch};

use crate::error::{Error, Result};

/// Applies `edits` to the ELF file at `path` (whose current contents are `bytes`) in one pass.
///
/// Nothing is opened for writing when the edits change nothing. A file with other hard links is
/// rewritten to a new inode (the other names keep the old contents). A read-only file is made
/// writable for the edit and gets its mode back afterwards.
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
    let options = options.clone();
    let patch =
        storepatch_elf::plan(bytes, edits, &options).map_err(|error| Error::engine(path, error))?;
    if patch == Patch::Unchanged {
        return Ok(Outcome::Unchanged);
    }
    let metadata = fs_err::symlink_metadata(path).map_err(Error::Fs)?;
    let mode = metadata.permissions().mode();
    let read_only = mode & 0o200 == 0;
    if read_only {
        fs_err::set_permissions(path, std::fs::Permissions::from_mode(mode | 0o200))
            .map_err(Error::Fs)?;
    }
    let result = if metadata.nlink() > 1 {
        apply_to_new_inode(path, edits, &options)
    } else {
        storepatch_elf::apply_to_file(path, edits, &options)
            .map_err(|error| Error::engine(path, error))
    };
    if read_only {
        let restored =
            fs_err::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(Error::Fs);
        if result.is_ok() {
            restored?;
        }
    }
    result
}

fn apply_to_new_inode(path: &Path, edits: &ElfEdits, options: &Options) -> Result<Outcome> {
    let dir = path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let temp = tempfile::Builder::new()
        .prefix(".storepatch-relink")
        .tempfile_in(dir)
        .map_err(Error::io(dir))?
        .into_temp_path();
    let outcome = storepatch_elf::apply_to_file_as(path, &temp, edits, options)
        .map_err(|error| Error::engine(path, error))?;
    temp.persist(path).map_err(|err| Error::Io {
        path: path.to_path_buf(),
        error: err.error,
    })?;
    Ok(outcome)
}
