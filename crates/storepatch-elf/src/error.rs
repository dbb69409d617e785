//! The one error type of this crate.
//!
//! Every variant that comes from reading a file carries the offset of the offending structure, so
//! a message points at the broken byte range, and [`Error::Io`] names the path.
use std::path::PathBuf;

/// Errors from reading, planning and writing ELF edits.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The bytes do not start with a well-formed ELF header.
    #[error("not an ELF file: {reason}")]
    NotElf {
        /// What is wrong with the header.
        reason: &'static str,
    },
    /// A structure lies (partly) outside the file or is otherwise inconsistent.
    #[error("malformed ELF: {what} at offset {offset:#x}")]
    Malformed {
        /// The structure that is broken, such as "program header table".
        what: &'static str,
        /// File offset (or virtual address, for unmapped addresses) of the structure.
        offset: u64,
    },
    /// The edit needs a structure the file does not have (a static binary has no `.dynamic`).
    #[error("cannot {operation}: the file has no {missing} (it is most likely statically linked)")]
    Missing {
        /// The edit that was asked for.
        operation: &'static str,
        /// The structure the file lacks, such as "`PT_INTERP`".
        missing: &'static str,
    },
    /// The edit would need a layout change this file cannot take safely.
    #[error("unsupported: {what}")]
    Unsupported {
        /// What cannot be done.
        what: &'static str,
    },
    /// An option value is invalid, such as a page size that is not a power of two.
    #[error("invalid {what}: {value}")]
    InvalidOption {
        /// The option.
        what: &'static str,
        /// The rejected value, rendered for humans.
        value: String,
    },
    /// The re-parsed result of a relayout does not say what the edits asked for.
    #[error("internal check failed after relayout: {what}")]
    Verification {
        /// The value that came out wrong.
        what: &'static str,
    },
    /// A file to read or to replace is not a regular file (a device, FIFO, socket or
    /// directory): it is never read without bound, waited on, or renamed over.
    #[error("cannot {action} `{}`: {kind}, not a regular file", path.display())]
    NotRegular {
        /// The file.
        path: PathBuf,
        /// What it is, such as "a FIFO".
        kind: &'static str,
        /// "read" or "replace".
        action: &'static str,
    },
    /// Reading or writing a file failed.
    #[error("{cause}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error; its message names the path.
        cause: std::io::Error,
    },
    /// Parsing or editing the ELF file at a path failed.
    #[error("cannot patch `{}`: {cause}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What was wrong with it.
        cause: Box<Error>,
    },
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn malformed(what: &'static str, offset: u64) -> Self {
        Self::Malformed { what, offset }
    }

    /// Attaches a path to an error that lacks one.
    pub(crate) fn with_path(self, path: &std::path::Path) -> Self {
        match self {
            Self::Io { .. } | Self::File { .. } | Self::NotRegular { .. } => self,
            other => Self::File {
                path: path.to_path_buf(),
                cause: Box::new(other),
            },
        }
    }
}
