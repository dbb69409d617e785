//! The one error type of this crate; every variant names the file it is about.
use std::path::PathBuf;

/// Errors from indexing, planning and applying relinks.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading, examining or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Walking a tree failed.
    #[error(transparent)]
    Walk(#[from] storepatch_walk::Error),
    /// A file starts like an ELF file but cannot be parsed (truncated or malformed).
    #[error("{}: {source}", path.display())]
    Elf {
        /// The file.
        path: PathBuf,
        /// What the ELF engine found wrong.
        source: storepatch_elf::Error,
    },
    /// The interpreter given for dynamic executables is not an ELF file that can be used.
    #[error("interpreter {}: {reason}", path.display())]
    Interpreter {
        /// The interpreter path.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Self + '_ {
        move |source| Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// The file the error is about.
    pub fn path(&self) -> &std::path::Path {
        match self {
            Self::Io { path, .. } | Self::Elf { path, .. } | Self::Interpreter { path, .. } => path,
            Self::Walk(err) => err.path(),
        }
    }
}
