//! Reads and edits ELF files (interpreter, run path, needed, soname) without ever writing a broken binary.
//!
//! This is storepatch's replacement for `patchelf`. [`ElfInfo::parse`] reads what the dynamic
//! loader reads (class, machine, OS ABI, `PT_INTERP`, `DT_NEEDED`, `DT_SONAME`,
//! `DT_RPATH`/`DT_RUNPATH`, the `.note.dlopen` sonames), through the program headers, so files with
//! stripped section headers work. [`plan`] turns an [`ElfEdits`] into a [`Patch`]; all edits are
//! applied in one layout pass:
//!
//! - a string is rewritten **in place** when the new value fits and no other reference (symbol
//!   names, version records, other dynamic entries; linkers merge string tails) points into the old
//!   one; the rest is padded with NUL (an old run path is overwritten with `X`, as patchelf does)
//!   so no old store path survives;
//! - a new dynamic entry reuses a spare `DT_NULL` slot, keeping one terminator;
//! - otherwise `.dynstr` is copied and extended, and moves (with a grown `.dynamic`, a longer
//!   interpreter and, when there is no room for one more program header, the program header
//!   table) into **one new `PT_LOAD`** at the end of the file, aligned to the ABI page size; a
//!   section header table that ended the file moves behind it, and no `PT_LOAD` is left mapping
//!   no section (binutils `strip` would break such a file).
//!
//! [`apply_to_file`] writes only the changed bytes of an in-place patch; a relayout goes to a
//! temporary file in the same directory, is re-parsed and checked, then renamed over the original
//! with its mode kept. Malformed input gives an [`Error`], never a panic.
//!
//! ```
//! use storepatch_elf::{ElfEdits, ElfInfo, Options, Patch, RunPathEdit, plan};
//!
//! // Any dynamically linked ELF file will do; the test binary running this example is one.
//! let bytes = fs_err::read(std::env::current_exe()?)?;
//! let info = ElfInfo::parse(&bytes)?;
//! assert!(!info.is_static());
//!
//! let edits = ElfEdits {
//!     run_path: Some(RunPathEdit::Set(b"/nix/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-zlib/lib".to_vec())),
//!     ..ElfEdits::default()
//! };
//! let new_bytes = match plan(&bytes, &edits, &Options::default())? {
//!     Patch::Relayout(new_bytes) => new_bytes,
//!     Patch::InPlace(writes) => {
//!         let mut copy = bytes.clone();
//!         for write in writes {
//!             let at = usize::try_from(write.offset)?;
//!             copy[at..at + write.bytes.len()].copy_from_slice(&write.bytes);
//!         }
//!         copy
//!     }
//!     Patch::Unchanged => bytes.clone(),
//! };
//! let patched = ElfInfo::parse(&new_bytes)?;
//! assert_eq!(patched.run_path(), Some(&b"/nix/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-zlib/lib"[..]));
//! assert_eq!(patched.needed, info.needed);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

mod dlopen;
mod error;
mod file;
mod ldcache;
mod plan;
mod read;
#[cfg(test)]
mod tests;

pub use error::{Error, Result};
pub use file::{Outcome, apply_to_file, apply_to_file_as, apply_to_read_file, read_file};
pub use ldcache::{NoResolutionCache, resolution_cache_descriptor};
pub use plan::{Patch, Write, changes, plan};
pub use read::{Warning, relayout_warnings};

use read::{DF_1_PIE, DT_FLAGS_1, DT_NEEDED, DT_RPATH, DT_RUNPATH, DT_SONAME, Parsed};

/// ELF class: the word size of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ElfClass {
    /// `ELFCLASS32`.
    Elf32,
    /// `ELFCLASS64`.
    Elf64,
}

/// Byte order of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endianness {
    /// `ELFDATA2LSB`.
    Little,
    /// `ELFDATA2MSB`.
    Big,
}

/// What kind of object a file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ElfKind {
    /// `ET_REL`: an object file.
    Relocatable,
    /// `ET_EXEC`: a position-dependent executable.
    Executable,
    /// `ET_DYN` with `DF_1_PIE`, or with an interpreter and no soname.
    PositionIndependentExecutable,
    /// `ET_DYN` otherwise: a shared library.
    SharedObject,
    /// `ET_CORE`.
    Core,
    /// Any other `e_type`.
    Other(u16),
}

/// What the dynamic loader sees in an ELF file.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ElfInfo {
    /// Word size.
    pub class: ElfClass,
    /// Byte order.
    pub endianness: Endianness,
    /// `e_machine`, such as 62 for x86-64.
    pub machine: u16,
    /// `EI_OSABI`, such as 0 (System V) or 3 (GNU/Linux).
    pub os_abi: u8,
    /// Object kind.
    pub kind: ElfKind,
    /// `PT_INTERP`, without the NUL.
    pub interpreter: Option<Vec<u8>>,
    /// `DT_NEEDED` entries, in order.
    pub needed: Vec<Vec<u8>>,
    /// `DT_SONAME`.
    pub soname: Option<Vec<u8>>,
    /// `DT_RPATH`.
    pub rpath: Option<Vec<u8>>,
    /// `DT_RUNPATH`.
    pub runpath: Option<Vec<u8>>,
    /// Sonames from `.note.dlopen` notes, in order, without duplicates.
    pub dlopen: Vec<Vec<u8>>,
    /// The same notes as groups: each entry's `soname` list, alternatives of which one found is
    /// enough, in order, without duplicate groups.
    pub dlopen_groups: Vec<Vec<Vec<u8>>>,
    /// The file has a `PT_DYNAMIC` segment.
    pub has_dynamic: bool,
    /// The file has section headers.
    pub has_section_headers: bool,
    /// `PT_GNU_STACK`'s `PF_X`: whether the stack is executable; `None` without `PT_GNU_STACK`.
    pub execstack: Option<bool>,
    /// The descriptor of the `.note.nixos.ldcache` section (patchelf's resolution cache), when
    /// the file has one; empty when its note cannot be read.
    pub resolution_cache: Option<Vec<u8>>,
}

impl ElfInfo {
    /// Parses the parts of an ELF file the dynamic loader uses.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let parsed = Parsed::parse(bytes)?;
        let mut info = Self::from_parsed(&parsed);
        info.resolution_cache = parsed
            .sections
            .iter()
            .find(|section| section.index != 0 && section.name == ldcache::SECTION_NAME)
            .map(|section| {
                ldcache::note_descriptor(parsed.codec, bytes, section).unwrap_or_default()
            });
        Ok(info)
    }

    fn from_parsed(parsed: &Parsed) -> Self {
        let strings = |tag: u64| -> Vec<Vec<u8>> {
            let (Some(dynamic), Some(table)) = (&parsed.dynamic, &parsed.dynstr) else {
                return Vec::new();
            };
            dynamic
                .entries
                .iter()
                .filter(|entry| entry.tag == tag)
                .filter_map(|entry| table.get(entry.value))
                .map(<[u8]>::to_vec)
                .collect()
        };
        let soname = strings(DT_SONAME).into_iter().next();
        let interpreter = parsed.interp.as_ref().map(|(_, text)| text.clone());
        let flags_1 = parsed.dyn_value(DT_FLAGS_1).unwrap_or(0);
        let kind = match parsed.e_type {
            goblin::elf::header::ET_REL => ElfKind::Relocatable,
            goblin::elf::header::ET_EXEC => ElfKind::Executable,
            goblin::elf::header::ET_DYN
                if flags_1 & DF_1_PIE != 0 || (interpreter.is_some() && soname.is_none()) =>
            {
                ElfKind::PositionIndependentExecutable
            }
            goblin::elf::header::ET_DYN => ElfKind::SharedObject,
            goblin::elf::header::ET_CORE => ElfKind::Core,
            other => ElfKind::Other(other),
        };
        Self {
            class: if parsed.codec.is64 {
                ElfClass::Elf64
            } else {
                ElfClass::Elf32
            },
            endianness: if parsed.codec.little {
                Endianness::Little
            } else {
                Endianness::Big
            },
            machine: parsed.machine,
            os_abi: parsed.os_abi,
            kind,
            interpreter,
            needed: strings(DT_NEEDED),
            soname,
            rpath: strings(DT_RPATH).into_iter().next(),
            runpath: strings(DT_RUNPATH).into_iter().next(),
            dlopen: parsed.dlopen.clone(),
            dlopen_groups: parsed.dlopen_groups.clone(),
            has_dynamic: parsed.dynamic.is_some(),
            has_section_headers: !parsed.sections.is_empty(),
            execstack: parsed
                .segments
                .iter()
                .find(|segment| segment.p_type == goblin::elf::program_header::PT_GNU_STACK)
                .map(|segment| segment.flags & goblin::elf::program_header::PF_X != 0),
            resolution_cache: None,
        }
    }

    /// The run path the loader uses: `DT_RUNPATH` if present, else `DT_RPATH`.
    pub fn run_path(&self) -> Option<&[u8]> {
        self.runpath.as_deref().or(self.rpath.as_deref())
    }

    /// An executable that needs no dynamic loader (no interpreter and no `DT_NEEDED`).
    pub fn is_static(&self) -> bool {
        matches!(
            self.kind,
            ElfKind::Executable | ElfKind::PositionIndependentExecutable
        ) && self.interpreter.is_none()
            && self.needed.is_empty()
    }
}

/// How to change the run path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunPathEdit {
    /// Remove `DT_RPATH` and `DT_RUNPATH`.
    Remove,
    /// Set it to this colon-separated list.
    Set(Vec<u8>),
    /// Keep only relative entries and directories that hold a `DT_NEEDED` library of the same
    /// machine (patchelf's `--shrink-rpath`); when `allowed_prefixes` is not empty, absolute
    /// entries must also start with one of them. Probes the file system.
    Shrink {
        /// Allowed prefixes of absolute entries; empty allows all.
        allowed_prefixes: Vec<Vec<u8>>,
    },
}

/// Edits to apply to one ELF file, all in one layout pass.
///
/// Setting a value the file already has is a no-op and never grows the file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ElfEdits {
    /// New interpreter (`PT_INTERP`).
    pub interpreter: Option<Vec<u8>>,
    /// Run path change, applied before `add_run_path`.
    pub run_path: Option<RunPathEdit>,
    /// Entries to append to the run path, skipping ones already present.
    pub add_run_path: Vec<Vec<u8>>,
    /// Write `DT_RPATH` rather than `DT_RUNPATH` (and turn an existing `DT_RUNPATH` into one).
    pub force_rpath: bool,
    /// New `DT_SONAME`.
    pub soname: Option<Vec<u8>>,
    /// `DT_NEEDED` entries to remove.
    pub remove_needed: Vec<Vec<u8>>,
    /// `DT_NEEDED` renames `(old, new)`; `.gnu.version_r` follows.
    pub replace_needed: Vec<(Vec<u8>, Vec<u8>)>,
    /// `DT_NEEDED` entries to add in front, unless present.
    pub add_needed: Vec<Vec<u8>>,
    /// New `EI_OSABI`.
    pub os_abi: Option<u8>,
    /// Set `DF_1_NODEFLIB` in `DT_FLAGS_1`.
    pub no_default_lib: bool,
    /// Set (`true`) or clear (`false`) `PF_X` of `PT_GNU_STACK`: whether the stack is executable.
    pub execstack: Option<bool>,
    /// Add a `DT_DEBUG` entry (zero) in front of `.dynamic`, unless there is one.
    pub add_debug_tag: bool,
    /// Dynamic symbols whose version to clear (their `.gnu.version` entry becomes 1, global).
    pub clear_symbol_version: Vec<Vec<u8>>,
    /// Dynamic symbols to rename `(old, new)` (patchelf's `--rename-dynamic-symbols`); the new
    /// names are appended to `.dynstr` and `.gnu.hash` and `.hash` are rebuilt.
    pub rename_dynamic_symbols: Vec<(Vec<u8>, Vec<u8>)>,
    /// Add a resolution cache note (`.note.nixos.ldcache`, patchelf's `--build-resolution-cache`)
    /// with this descriptor, from [`resolution_cache_descriptor`]. A file that has one already
    /// is left alone when it says the same, and is an error otherwise. Independently of this, any
    /// edit that changes the run path or the needed libraries removes an existing note (it would
    /// be stale), clearing its bytes.
    pub resolution_cache: Option<Vec<u8>>,
}

/// Layout options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// Alignment of a new `PT_LOAD`; default: the largest alignment of the file's LOADs, but at
    /// least the ABI's largest page size (64 KiB on aarch64, ppc64, mips, loongarch; 4 KiB on x86).
    pub page_size: Option<u64>,
    /// patchelf's `--no-clobber-old-sections`: the old copy of a section a relayout moves is left
    /// as it was, for programs that still read it at its old place. By default it is cleared, so
    /// no old string (nor store path) survives in it.
    pub keep_old_sections: bool,
}

/// Whether `bytes` start with the ELF magic; a cheap filter before [`ElfInfo::parse`].
pub fn is_elf(bytes: &[u8]) -> bool {
    bytes.starts_with(b"\x7fELF")
}

/// Parses the parts of an ELF file the dynamic loader uses; see [`ElfInfo::parse`].
pub fn parse(bytes: &[u8]) -> Result<ElfInfo> {
    ElfInfo::parse(bytes)
}

/// Name of an `EI_OSABI` value as patchelf prints it.
pub fn os_abi_name(os_abi: u8) -> Option<&'static str> {
    OS_ABI_NAMES
        .iter()
        .find(|(value, _, _)| *value == os_abi)
        .map(|(_, name, _)| *name)
}

/// `EI_OSABI` value for a name patchelf accepts (case-insensitive, such as `linux` or `System V`).
pub fn os_abi_from_name(name: &str) -> Option<u8> {
    let wanted = name.to_ascii_lowercase();
    OS_ABI_NAMES
        .iter()
        .find(|(_, display, aliases)| {
            display.eq_ignore_ascii_case(&wanted) || aliases.contains(&wanted.as_str())
        })
        .map(|(value, _, _)| *value)
}

const OS_ABI_NAMES: &[(u8, &str, &[&str])] = &[
    (0, "System V", &["none", "sysv", "system v"]),
    (1, "HP-UX", &["hpux", "hp-ux"]),
    (2, "NetBSD", &["netbsd"]),
    (3, "Linux", &["linux", "gnu"]),
    (4, "GNU Hurd", &["gnu hurd", "hurd"]),
    (6, "Solaris", &["solaris"]),
    (7, "AIX", &["aix"]),
    (8, "IRIX", &["irix"]),
    (9, "FreeBSD", &["freebsd"]),
    (10, "Tru64", &["tru64"]),
    (12, "OpenBSD", &["openbsd"]),
    (13, "OpenVMS", &["openvms"]),
];
