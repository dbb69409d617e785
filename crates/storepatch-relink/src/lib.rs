//! Resolves the NEEDED libraries of ELF files against library paths and plans their run paths, the way autoPatchelfHook does.
//!
//! This is the logic behind `storepatch relink` (nixpkgs' `autoPatchelfHook`, done in one
//! process, in parallel, deterministically) and `storepatch audit`:
//!
//! - [`LibraryIndex`]: the shared libraries of the trees being patched, then of the search paths,
//!   in a fixed order, keyed by file name and soname, with class, machine and OS ABI;
//! - [`Relinker::plan`]: for one file, how each `DT_NEEDED` (and `.note.dlopen`) entry is
//!   satisfied ([`Resolution`]), the new run path and interpreter, as
//!   [`storepatch_elf::ElfEdits`]; scrubbed run path entries are restored in place when a
//!   supplied library path has the same name ([`RestoreMap`]); see the `plan` module docs for
//!   the exact rules and where they differ from autoPatchelfHook;
//! - [`apply`]: one ELF engine pass per file, never through a shared inode, keeping modes;
//! - [`relink_trees`]: the run over whole trees (each inode relinked once, other names linked to
//!   the new file again, per-file results in walk order);
//! - [`Loader`]: a static model of ld.so's search, for audits;
//! - [`Pattern`]: `fnmatch`-style patterns for ignoring missing dependencies.
//!
//! ```
//! use storepatch_relink::{LibraryIndex, Plan, Relinker, Resolution, Settings};
//!
//! // No search paths: only libc's objects can be satisfied, by the dynamic linker.
//! let (index, _errors) = LibraryIndex::builder().build();
//! let relinker = Relinker::new(index, Settings::default());
//! let exe = std::env::current_exe()?;
//! let bytes = fs_err::read(&exe)?;
//! let Plan::Relink(relink) = relinker.plan(&exe, &bytes)? else {
//!     panic!("the test binary is dynamically linked");
//! };
//! let libc = relink
//!     .dependencies
//!     .iter()
//!     .find(|dependency| dependency.name == b"libc.so.6")
//!     .expect("linked against glibc");
//! assert_eq!(libc.resolution, Resolution::Libc);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

mod apply;
mod error;
mod glob;
mod index;
mod libc;
mod loader;
mod patchelf_flags;
mod plan;
mod run;
pub mod runpath;
mod target;

pub use apply::{apply, apply_with_options};
pub use error::{Error, Result};
pub use glob::Pattern;
pub use index::{Library, LibraryIndex, LibraryIndexBuilder};
pub use libc::LibcNames;
pub use loader::{Loader, LoaderSearch, Unresolved};
pub use patchelf_flags::PatchelfFlagError;
pub use plan::{
    Dependency, DependencyKind, PatchelfFlags, Plan, Relink, Relinker, Resolution, Settings, Skip,
};
pub use run::{
    FileResult, TreeError, TreeFile, TreeOptions, TreeRun, relink_trees, relink_trees_with_progress,
};
pub use runpath::RestoreMap;
pub use target::Target;
