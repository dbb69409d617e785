//! Per-file decisions: which directory satisfies each dependency, and the run path and
//! interpreter the file should have.
//!
//! Resolution of one dependency, in order (autoPatchelfHook's order, plus the `$ORIGIN` rule):
//!
//! 1. an absolute `DT_NEEDED` path that exists needs nothing;
//! 2. a libc object is left to the dynamic linker (unless `keep_libc`);
//! 3. an existing `$ORIGIN` run path entry under which the library exists (and can be loaded)
//!    is kept — autoPatchelfHook would replace it with an absolute path into the output;
//! 4. the first compatible library of that file name in the [`LibraryIndex`];
//! 5. with `keep_libc`, a libc object that is not in the index is still left to the linker;
//! 6. otherwise the dependency is missing.
//!
//! A `.note.dlopen` entry is a group of alternatives: its sonames are tried in order with the
//! steps above, and the first one satisfied satisfies the group (one [`Dependency`] per group,
//! missing only when no alternative is found), as autoPatchelfHook does.
//!
//! The new run path is, for dynamic executables (with `PT_INTERP`) only, the runtime
//! dependencies first; then the directories of step 3 and 4 in dependency order; then the
//! appended run paths; without duplicates (the first occurrence stays), as autoPatchelfHook
//! builds it. The file's current run path (with
//! scrubbed entries restored, see [`RestoreMap`](crate::RestoreMap)) is kept instead when it is
//! already equivalent: every entry is one of those directories, and the loader would find every
//! dependency through it in the chosen directory. That makes a relink idempotent, and turns a
//! scrubbed file whose restored run path is complete into a same-length, in-place edit.
//!
//! A file that gets a run path ends with `DT_RUNPATH`, as after the hook's
//! `patchelf --set-rpath`: a `DT_RPATH` becomes `DT_RUNPATH` (same value, in place), unless
//! [`PatchelfFlags`] has `--force-rpath`, which writes `DT_RPATH`. A file that gets none (it
//! needs only libc) keeps its tag, as the hook leaves it alone. The pass with
//! [`Settings::restore_only`] keeps the tag too.
//!
//! # Differences from autoPatchelfHook
//!
//! (`pkgs/by-name/au/auto-patchelf/source/auto-patchelf.py` in nixpkgs.) The directories chosen
//! per file are the same (a parity test checks this on real wheels), except:
//!
//! - `$ORIGIN` entries that still resolve a library are kept; the hook writes the absolute
//!   directory, which breaks when the tree is copied.
//! - The index is built in sorted walk order, never file system order.
//! - [`PatchelfFlags`] (the hook's `patchelfFlags`, which it passes to every `patchelf` call)
//!   are applied to the files the hook would call `patchelf` on: dynamic executables, and files
//!   that get a run path. Only flags that mean something for such a call are accepted.
//! - A run path that is already equivalent is left as it is (after restoring scrubbed
//!   entries), so a second run writes nothing.
//! - The run paths of indexed libraries are added to the search directories only when asked
//!   ([`LibraryIndexBuilder::follow_run_paths`](crate::LibraryIndexBuilder::follow_run_paths));
//!   the hook always does (and storepatch's relink hook asks). Those directories are searched
//!   without recursion and relative entries are skipped; the hook searches the ones it finds in
//!   the trees being patched recursively and takes relative entries relative to its working
//!   directory.
//! - libc's objects are, in a Nix build, the files in `$NIX_BINTOOLS/nix-support/orig-libc`'s
//!   `lib` (the hook's only source), else glibc's sonames (see [`LibcNames`]).
//! - A missing `.note.dlopen` group of two or more alternatives is ignored when an ignore
//!   pattern matches one of them. auto-patchelf.py cannot ignore one: given any ignore pattern
//!   it stops with a Python `AttributeError` (it calls `.name` on the text `any(a, b)`), and
//!   without one it fails on the missing group, as storepatch does.
use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use storepatch_elf::{ElfEdits, ElfInfo, ElfKind, RunPathEdit};
use storepatch_walk::ReadPolicy;

use crate::error::{Error, Result};
use crate::index::LibraryIndex;
use crate::libc::LibcNames;
pub use crate::patchelf_flags::PatchelfFlags;
use crate::runpath::{self, RestoreMap, normalize};
use crate::target::Target;

/// OS ABIs whose libc lives apart from the dynamic linker in nixpkgs (FreeBSD, OpenBSD): libc
/// must stay on the run path there, as autoPatchelfHook does.
const OS_ABIS_KEEPING_LIBC: [u8; 2] = [9, 12];

/// Everything a relink decides with, besides the index.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The machine the files are for; files of another machine are skipped.
    pub target: Target,
    /// The dynamic linker for executables (`PT_INTERP`), if it should be set.
    pub interpreter: Option<Vec<u8>>,
    /// Run path entries dynamic executables get first, before the directories they need
    /// (`<dep>/lib`, autoPatchelfHook's `runtimeDependencies`).
    pub runtime_dependencies: Vec<Vec<u8>>,
    /// Run path entries every file gets last.
    pub append_run_paths: Vec<Vec<u8>>,
    /// Look libc's own objects up in the index like any other library.
    pub keep_libc: bool,
    /// Which objects are libc's.
    pub libc: LibcNames,
    /// How to restore scrubbed run path entries.
    pub restore: RestoreMap,
    /// patchelf flags for every file patchelf would be called on.
    pub patchelf: PatchelfFlags,
    /// Only restore scrubbed run path entries (same length, in place) and change nothing else:
    /// for a pass before `strip` and patchELF, leaving the layout-changing edits to the pass
    /// after them (binutils' `strip` can misalign a segment a grown run path left empty).
    pub restore_only: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            target: Target::host(),
            interpreter: None,
            runtime_dependencies: Vec::new(),
            append_run_paths: Vec::new(),
            keep_libc: false,
            libc: LibcNames::default(),
            restore: RestoreMap::default(),
            patchelf: PatchelfFlags::default(),
            restore_only: false,
        }
    }
}

/// Why a file is left alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// Not an ELF file at all.
    NotElf,
    /// A statically linked executable: nothing to relink.
    Static,
    /// No dynamic section (an object file, a core dump, a separate debug file).
    NotDynamic(ElfKind),
    /// Built for another machine or word size.
    Architecture {
        /// The file's.
        found: Target,
        /// The one being relinked for.
        target: Target,
    },
    /// An OS ABI that cannot be loaded by the target's dynamic linker.
    OsAbi {
        /// The file's.
        found: Target,
        /// The one being relinked for.
        target: Target,
    },
}

impl std::fmt::Display for Skip {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotElf => formatter.write_str("not an ELF file"),
            Self::Static => formatter.write_str("statically linked"),
            Self::NotDynamic(kind) => write!(
                formatter,
                "no dynamic section ({})",
                match kind {
                    ElfKind::Relocatable => "an object file",
                    ElfKind::Core => "a core dump",
                    _ => "nothing for the dynamic loader",
                }
            ),
            Self::Architecture { found, target } => write!(
                formatter,
                "architecture {} differs from the target {}",
                found.machine_name(),
                target.machine_name()
            ),
            Self::OsAbi { found, target } => write!(
                formatter,
                "OS ABI {} is not compatible with the target's {}",
                found.os_abi, target.os_abi
            ),
        }
    }
}

/// Where a dependency comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DependencyKind {
    /// A `DT_NEEDED` entry.
    Needed,
    /// A `.note.dlopen` group of alternative sonames.
    Dlopen,
}

/// How a dependency is satisfied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// An absolute path that exists.
    Absolute,
    /// Left to the dynamic linker, which brings libc.
    Libc,
    /// Found through an existing `$ORIGIN` run path entry, which is kept.
    Origin {
        /// The entry, unexpanded.
        entry: Vec<u8>,
    },
    /// Found in the index.
    Library {
        /// The directory that goes into the run path.
        dir: PathBuf,
        /// The library file.
        path: PathBuf,
    },
    /// Not found anywhere.
    Missing {
        /// A library whose soname matches but whose file name does not (so the loader would
        /// not find it either): a symlink named after the soname is missing.
        same_soname: Option<PathBuf>,
    },
}

/// One dependency of a file and its resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    /// The soname (or path) wanted: of a `.note.dlopen` group, the alternative that was found,
    /// or the first one when none was.
    pub name: Vec<u8>,
    /// Of a `.note.dlopen` group, every alternative in order; empty for `DT_NEEDED`.
    pub alternatives: Vec<Vec<u8>>,
    /// Where it was listed.
    pub kind: DependencyKind,
    /// How it is satisfied.
    pub resolution: Resolution,
}

impl Dependency {
    /// Whether the dependency could not be satisfied.
    pub fn is_missing(&self) -> bool {
        matches!(self.resolution, Resolution::Missing { .. })
    }
}

/// The decision for one ELF file that is relinked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relink {
    /// Every dependency, `DT_NEEDED` first, then `.note.dlopen` groups.
    pub dependencies: Vec<Dependency>,
    /// The run path now (`DT_RUNPATH`, else `DT_RPATH`).
    pub old_run_path: Option<Vec<u8>>,
    /// The run path after the edit.
    pub new_run_path: Option<Vec<u8>>,
    /// The interpreter now.
    pub old_interpreter: Option<Vec<u8>>,
    /// The interpreter after the edit.
    pub new_interpreter: Option<Vec<u8>>,
    /// How many scrubbed entries were restored.
    pub restored_entries: usize,
    /// The current run path (with restored entries) was complete and is kept.
    pub kept_run_path: bool,
    /// The edits to apply; empty when nothing changes.
    pub edits: ElfEdits,
}

impl Relink {
    /// Whether the file needs writing.
    pub fn changes_file(&self) -> bool {
        self.edits != ElfEdits::default()
    }

    /// Restoring scrubbed entries was the whole edit (same length, no relayout).
    pub fn is_restore_only(&self) -> bool {
        self.kept_run_path
            && self.restored_entries > 0
            && self.edits.interpreter.is_none()
            && self.edits.add_run_path.is_empty()
    }

    /// The dependencies that were not found.
    pub fn missing(&self) -> impl Iterator<Item = &Dependency> {
        self.dependencies.iter().filter(|dep| dep.is_missing())
    }
}

/// What to do with one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Leave it alone, for this reason.
    Skip(Skip),
    /// Relink it (possibly with no change at all).
    Relink(Box<Relink>),
}

/// Plans relinks against one index; cheap to share across threads.
#[derive(Debug)]
pub struct Relinker {
    index: LibraryIndex,
    settings: Settings,
    probes: Mutex<HashMap<Vec<u8>, Option<Target>>>,
}

impl Relinker {
    /// A relinker over `index` with `settings`.
    pub fn new(index: LibraryIndex, settings: Settings) -> Self {
        Self {
            index,
            settings,
            probes: Mutex::new(HashMap::new()),
        }
    }

    /// The index.
    pub fn index(&self) -> &LibraryIndex {
        &self.index
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Decides what to do with the file at `path` whose contents are `bytes`. Reads nothing but
    /// the libraries it probes. A file that starts like ELF but cannot be parsed is an error.
    pub fn plan(&self, path: &Path, bytes: &[u8]) -> Result<Plan> {
        if !bytes.starts_with(b"\x7fELF") {
            return Ok(Plan::Skip(Skip::NotElf));
        }
        let info = ElfInfo::parse(bytes).map_err(|error| Error::Elf {
            path: path.to_path_buf(),
            error,
        })?;
        let found = Target::of(&info);
        let target = self.settings.target;
        if info.is_static() {
            return Ok(Plan::Skip(Skip::Static));
        }
        if !info.has_dynamic {
            return Ok(Plan::Skip(Skip::NotDynamic(info.kind)));
        }
        if !target.same_architecture(&found) {
            return Ok(Plan::Skip(Skip::Architecture { found, target }));
        }
        if !target.accepts(&found) {
            return Ok(Plan::Skip(Skip::OsAbi { found, target }));
        }
        let mut relink = self.relink(path, &info);
        if self.settings.patchelf.has_edits() && relink.changes_file() {
            // The flags may ask for what the file already has (DF_1_NODEFLIB set, DT_RPATH
            // already): then there is nothing to write.
            let options = self.settings.patchelf.options();
            let changes = storepatch_elf::changes(bytes, &relink.edits, &options)
                .map_err(|error| Error::engine(path, error))?;
            if !changes {
                relink.edits = ElfEdits::default();
            }
        }
        Ok(Plan::Relink(Box::new(relink)))
    }

    fn relink(&self, path: &Path, info: &ElfInfo) -> Relink {
        let origin = path.parent().unwrap_or(Path::new("."));
        let file_target = Target::of(info);
        let old_run_path = info.run_path().map(<[u8]>::to_vec);
        // The current run path with scrubbed entries restored, empty entries kept in place.
        let mut restored_entries = 0;
        let restored_raw: Option<Vec<u8>> = old_run_path.as_ref().map(|raw| {
            let entries: Vec<Vec<u8>> = raw
                .split(|&byte| byte == b':')
                .map(|entry| {
                    if let Some(restored) = self.settings.restore.restore(entry) {
                        restored_entries += 1;
                        restored
                    } else {
                        entry.to_vec()
                    }
                })
                .collect();
            runpath::join(&entries)
        });
        let current = restored_raw
            .as_deref()
            .map(runpath::split)
            .unwrap_or_default();

        let keep_libc = self.settings.keep_libc || OS_ABIS_KEEPING_LIBC.contains(&info.os_abi);
        let mut dependencies: Vec<Dependency> = info
            .needed
            .iter()
            .map(|name| Dependency {
                name: name.clone(),
                alternatives: Vec::new(),
                kind: DependencyKind::Needed,
                resolution: self.resolve(name, origin, file_target, &current, keep_libc),
            })
            .collect();
        for group in &info.dlopen_groups {
            let resolved = group.iter().find_map(|name| {
                let resolution = self.resolve(name, origin, file_target, &current, keep_libc);
                (!matches!(resolution, Resolution::Missing { .. })).then_some((name, resolution))
            });
            let (name, resolution) = match resolved {
                Some((name, resolution)) => (name.clone(), resolution),
                None => (
                    group[0].clone(),
                    self.resolve(&group[0], origin, file_target, &current, keep_libc),
                ),
            };
            dependencies.push(Dependency {
                name,
                alternatives: group.clone(),
                kind: DependencyKind::Dlopen,
                resolution,
            });
        }

        if self.settings.restore_only {
            let mut edits = ElfEdits::default();
            if restored_entries > 0
                && let Some(restored) = &restored_raw
            {
                edits.run_path = Some(RunPathEdit::Set(restored.clone()));
                edits.force_rpath = info.rpath.is_some() && info.runpath.is_none();
            }
            return Relink {
                dependencies,
                new_run_path: restored_raw,
                old_run_path,
                old_interpreter: info.interpreter.clone(),
                new_interpreter: info.interpreter.clone(),
                restored_entries,
                kept_run_path: true,
                edits,
            };
        }

        // autoPatchelfHook gives runtime dependencies to dynamic executables only, first.
        let is_dynamic_executable = info.interpreter.is_some();
        let runtime: &[Vec<u8>] = if is_dynamic_executable {
            &self.settings.runtime_dependencies
        } else {
            &[]
        };
        let extra: Vec<Vec<u8>> = runtime
            .iter()
            .chain(&self.settings.append_run_paths)
            .cloned()
            .collect();
        let mut fresh: Vec<Vec<u8>> = Vec::new();
        for entry in runtime {
            push_unique(&mut fresh, entry.clone());
        }
        for dependency in &dependencies {
            let entry = match &dependency.resolution {
                Resolution::Origin { entry } => entry.clone(),
                Resolution::Library { dir, .. } => dir.as_os_str().as_bytes().to_vec(),
                _ => continue,
            };
            push_unique(&mut fresh, entry);
        }
        for entry in &self.settings.append_run_paths {
            push_unique(&mut fresh, entry.clone());
        }

        let kept_run_path =
            self.is_equivalent(&current, &dependencies, &extra, origin, file_target)
                && starts_with_runtime(&current, runtime);
        let new_run_path = if kept_run_path || fresh.is_empty() {
            // Equivalent already, or nothing to point at (autoPatchelfHook then leaves the run
            // path alone too): only restore scrubbed entries. A file that needs nothing also
            // loses the scrubbed entries no supplied store path gave back: they name no
            // directory and can never be restored by a relink (one that misses libraries keeps
            // them, so that a later run with the libraries supplied still can).
            restored_raw.as_ref().and_then(|raw| {
                if !dependencies.is_empty() {
                    return Some(raw.clone());
                }
                let entries: Vec<&[u8]> = raw.split(|&byte| byte == b':').collect();
                let live: Vec<Vec<u8>> = entries
                    .iter()
                    .filter(|entry| !self.settings.restore.is_scrubbed(entry))
                    .map(|entry| entry.to_vec())
                    .collect();
                if live.len() == entries.len() {
                    Some(raw.clone())
                } else if live.is_empty() {
                    None
                } else {
                    Some(runpath::join(&live))
                }
            })
        } else {
            Some(runpath::join(&fresh))
        };

        let mut edits = ElfEdits::default();
        if new_run_path.is_none() && old_run_path.is_some() {
            edits.run_path = Some(RunPathEdit::Remove);
        }
        // The hook runs `patchelf --set-rpath` on every file that gets a run path, and patchelf
        // then writes DT_RUNPATH (a DT_RPATH becomes one) unless `--force-rpath` is among
        // `patchelfFlags`. A file that gets none is left as it is, tag and all.
        let sets_run_path = !fresh.is_empty();
        let rpath_only = info.rpath.is_some() && info.runpath.is_none();
        let force_rpath = if sets_run_path {
            self.settings.patchelf.force_rpath
        } else {
            rpath_only
        };
        let tag_changes = sets_run_path && force_rpath != rpath_only;
        if let Some(new) = &new_run_path
            && (new_run_path != old_run_path || tag_changes)
        {
            edits.run_path = Some(RunPathEdit::Set(new.clone()));
            edits.force_rpath = force_rpath;
        }
        let old_interpreter = info.interpreter.clone();
        let mut new_interpreter = old_interpreter.clone();
        if let (Some(wanted), Some(current)) = (&self.settings.interpreter, &info.interpreter)
            && wanted != current
        {
            edits.interpreter = Some(wanted.clone());
            new_interpreter = Some(wanted.clone());
        }
        // The hook calls patchelf (with `patchelfFlags`) to set the interpreter of every dynamic
        // executable, and to set the run path of every file that gets one.
        let patchelf_called =
            (is_dynamic_executable && self.settings.interpreter.is_some()) || sets_run_path;
        if patchelf_called {
            edits.no_default_lib |= self.settings.patchelf.no_default_lib;
        }
        Relink {
            dependencies,
            old_run_path,
            new_run_path,
            old_interpreter,
            new_interpreter,
            restored_entries,
            kept_run_path,
            edits,
        }
    }

    fn resolve(
        &self,
        name: &[u8],
        origin: &Path,
        file_target: Target,
        current: &[Vec<u8>],
        keep_libc: bool,
    ) -> Resolution {
        if name.first() == Some(&b'/') && Path::new(std::ffi::OsStr::from_bytes(name)).is_file() {
            return Resolution::Absolute;
        }
        let file_name = name.rsplit(|&byte| byte == b'/').next().unwrap_or(name);
        let is_libc = self.settings.libc.contains(file_name);
        if is_libc && !keep_libc {
            return Resolution::Libc;
        }
        for entry in current.iter().filter(|entry| runpath::uses_origin(entry)) {
            if let Some(dir) = runpath::expand(entry, origin)
                && self.probe(&dir, file_name, file_target)
            {
                return Resolution::Origin {
                    entry: entry.clone(),
                };
            }
        }
        if let Some(library) = self.index.find(file_name, &file_target) {
            return Resolution::Library {
                dir: library.dir.clone(),
                path: library.path.clone(),
            };
        }
        if is_libc {
            return Resolution::Libc;
        }
        Resolution::Missing {
            same_soname: self
                .index
                .with_soname(file_name)
                .find(|library| file_target.accepts(&library.target))
                .map(|library| library.path.clone()),
        }
    }

    /// Whether the run path `entries` is as good as a fresh one (see the module docs).
    fn is_equivalent(
        &self,
        entries: &[Vec<u8>],
        dependencies: &[Dependency],
        extra: &[Vec<u8>],
        origin: &Path,
        file_target: Target,
    ) -> bool {
        let expanded: Vec<Option<Vec<u8>>> = entries
            .iter()
            .map(|entry| runpath::expand(entry, origin).map(|dir| normalize(&dir)))
            .collect();
        let chosen = |dependency: &Dependency, index: usize| match &dependency.resolution {
            Resolution::Origin { entry } => entries[index] == *entry,
            Resolution::Library { dir, .. } => {
                expanded[index].as_deref() == Some(&normalize(dir.as_os_str().as_bytes())[..])
            }
            _ => false,
        };
        let useful = (0..entries.len()).all(|index| {
            dependencies
                .iter()
                .any(|dependency| chosen(dependency, index))
                || extra
                    .iter()
                    .any(|wanted| normalize(wanted) == normalize(&entries[index]))
        });
        if !useful {
            return false;
        }
        let has_extra = extra.iter().all(|wanted| {
            entries
                .iter()
                .any(|entry| normalize(wanted) == normalize(entry))
        });
        if !has_extra {
            return false;
        }
        dependencies.iter().all(|dependency| {
            if !matches!(
                dependency.resolution,
                Resolution::Origin { .. } | Resolution::Library { .. }
            ) {
                return true;
            }
            let file_name = dependency
                .name
                .rsplit(|&byte| byte == b'/')
                .next()
                .unwrap_or(&dependency.name);
            // The loader takes the first entry that has a loadable file of that name.
            let first = (0..entries.len()).find(|&index| {
                expanded[index]
                    .as_deref()
                    .is_some_and(|dir| self.probe(dir, file_name, file_target))
            });
            first.is_some_and(|index| chosen(dependency, index))
        })
    }

    /// Whether `dir/name` is a library a file of `wanted` can load; cached.
    fn probe(&self, dir: &[u8], name: &[u8], wanted: Target) -> bool {
        let dir_path = Path::new(std::ffi::OsStr::from_bytes(dir));
        if let Some(library) = self.index.in_directory(dir_path, name) {
            return wanted.accepts(&library.target);
        }
        let mut key = normalize(dir);
        key.push(b'/');
        key.extend_from_slice(name);
        let cached = self
            .probes
            .lock()
            .ok()
            .and_then(|probes| probes.get(&key).copied());
        let target = if let Some(target) = cached {
            target
        } else {
            let target = probe_file(&dir_path.join(std::ffi::OsStr::from_bytes(name)));
            if let Ok(mut probes) = self.probes.lock() {
                probes.insert(key, target);
            }
            target
        };
        target.is_some_and(|target| wanted.accepts(&target))
    }
}

/// Whether the run path `entries` starts with the runtime dependencies, in order (after
/// normalisation), as a fresh one would.
fn starts_with_runtime(entries: &[Vec<u8>], runtime: &[Vec<u8>]) -> bool {
    let mut wanted: Vec<Vec<u8>> = Vec::new();
    for entry in runtime {
        push_unique(&mut wanted, entry.clone());
    }
    wanted.len() <= entries.len()
        && wanted
            .iter()
            .zip(entries)
            .all(|(wanted, entry)| normalize(wanted) == normalize(entry))
}

fn push_unique(entries: &mut Vec<Vec<u8>>, entry: Vec<u8>) {
    let normalized = normalize(&entry);
    if !entries
        .iter()
        .any(|existing| normalize(existing) == normalized)
    {
        entries.push(entry);
    }
}

/// The target of the ELF file at `path`, if it is a readable one.
pub(crate) fn probe_file(path: &Path) -> Option<Target> {
    let metadata = fs_err::metadata(path).ok()?;
    if !metadata.is_file() {
        return None;
    }
    let contents = storepatch_walk::read(path, metadata.len(), ReadPolicy::default()).ok()?;
    ElfInfo::parse(&contents).ok().map(|info| Target::of(&info))
}
