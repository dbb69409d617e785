//! The one error type of this crate; every variant names the file it is about.
use std::path::PathBuf;

/// Errors from indexing, planning and applying relinks.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading, examining or writing a file failed.
    ///
    /// The message includes the cause, so `error` is not exposed as `source()` (chains of
    /// causes printed one after the other would repeat it).
    #[error("{}: {error}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
    /// A file system operation failed; the message (from `fs-err`) names the path.
    #[error("{0}")]
    Fs(std::io::Error),
    /// Walking a tree failed.
    #[error(transparent)]
    Walk(#[from] storepatch_walk::Error),
    /// A file starts like an ELF file but cannot be parsed (truncated or malformed).
    #[error("cannot relink `{}`: {error}", path.display())]
    Elf {
        /// The file.
        path: PathBuf,
        /// What the ELF engine found wrong.
        error: storepatch_elf::Error,
    },
    /// The interpreter given for dynamic executables is not an ELF file that can be used.
    #[error("cannot use `{}` as the interpreter: {reason}", path.display())]
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
    /// An error of the ELF engine about `path`, without repeating the path it already names.
    pub(crate) fn engine(path: &std::path::Path, error: storepatch_elf::Error) -> Self {
        match error {
            storepatch_elf::Error::Io { cause, .. } => Self::Fs(cause),
            storepatch_elf::Error::File { cause, .. } => Self::Elf {
                path: path.to_path_buf(),
                error: *cause,
            },
            error => Self::Elf {
                path: path.to_path_buf(),
                error,
            },
        }
    }

    /// The file the error is about.
    pub fn path(&self) -> &std::path::Path {
        match self {
            Self::Io { path, .. } | Self::Elf { path, .. } | Self::Interpreter { path, .. } => path,
            Self::Walk(err) => err.path(),
            Self::Fs(_) => std::path::Path::new(""),
        }
    }
}
