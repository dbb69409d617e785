//! `storepatch restore`: scrub's inverse, plus relocation of the venv's own location.
//!
//! Discovery is scrub's (see `tree`): one walk, every scrubbed `<storedir>/eeee…-NAME` in
//! contents, symlink targets and (as a bare `eeee…-NAME`) file names. Each NAME that belongs to
//! exactly one supplied store path gets that path's hash back, same length. With `--relocate
//! OLD=NEW`, every regular file and symlink is also searched for OLD; text files and symlinks get
//! NEW (the length may change); in `.pyc` files the file names of code objects that start with
//! OLD are rewritten through the marshal stream (`storepatch_rewrite::pyc`); other binary files,
//! bytecode that cannot be read and other occurrences in bytecode are reported and left alone.
//! Scrubbed references inside an OLD are relocated, never restored (the FOD's scrubbed `$out` is
//! not an input to point back at). The `RECORD` lines of files that change get the new hash and
//! size (`storepatch_rewrite::record`); the `RECORD` is written after them, and a line whose file
//! could not be written keeps its old hash.
//!
//! Writes follow scrub: one temp file + rename per changed inode (other names of the inode in
//! the tree are re-linked to it), symlinks replaced atomically, renames deepest first, directory
//! modes put back. Files that need no change are never written.
//!
//! Without `--relocate` and `--dry-run`, a file's changes are its scrubbed references alone, known
//! as soon as discovery's first pass reads it: a file with one name that is not a `RECORD` is
//! restored there and then ([`FirstPass`]), so that it is read once, as scrub does. A signal
//! during that pass stops discovery, so files it did not reach have no record (and are
//! unchanged). A `RECORD` that is not updated while files it lists were (a signal came first, or
//! its write failed) is reported as failed, counting the lines left with an old hash: a later run
//! finds nothing to change in those files and would not plan those lines again.
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use rayon::prelude::*;
use serde_json::json;
use storepatch_core::{HASH_LEN, Resolution, SCRUBBED_HASH, StoreDir, StorePath, SuppliedPaths};
use storepatch_rewrite::pyc::FilenameRewrite;
use storepatch_rewrite::{Occurrence, Relocation, Splice, WritableDirs};
use storepatch_scan::{Hit, Target};
use storepatch_tree::Written;
use storepatch_walk::{Entry, EntryKind, ReadPolicy, Visit};

use super::Outcome;
use crate::cli::{GlobalArgs, RestoreArgs};
use crate::output::{self, Output, bytes_value, path_value};
use crate::tree::{self, EntryError, Location};

/// Exit status when something was left as it was (unknown or ambiguous names, binary files
/// holding a relocated location).
const LEFT: u8 = 1;

/// A scrubbed reference to restore.
#[derive(Clone, Copy, Debug)]
struct Restoration<'supplied> {
    hash_offset: u64,
    /// The supplied path it is restored to.
    path: &'supplied StorePath,
}

/// A `RECORD` line's `hash,size` fields for a file this run changes.
#[derive(Clone, Debug)]
struct RecordField {
    offset: u64,
    len: usize,
    /// The fields as they are now.
    old: Vec<u8>,
    /// The fields for the file's new contents.
    bytes: Vec<u8>,
    /// The entry the line lists.
    target: usize,
}

/// Everything planned for one place of one entry.
#[derive(Clone, Debug)]
struct Change<'supplied> {
    entry: usize,
    location: Location,
    restorations: Vec<Restoration<'supplied>>,
    /// The rest, for the few changes that do more than restore references: kept apart, as every
    /// change of a large tree is held to the end of the run.
    more: Option<Box<MoreChanges>>,
}

/// What a [`Change`] does besides restoring references.
#[derive(Clone, Debug, Default)]
struct MoreChanges {
    occurrences: Vec<Occurrence>,
    /// `.pyc` file names (string objects, whose length may change).
    rewrites: Vec<FilenameRewrite>,
    /// Lines of a `RECORD` file listing files this run changes.
    record_fields: Vec<RecordField>,
}

impl<'supplied> Change<'supplied> {
    /// A change that does nothing yet.
    const fn new(entry: usize, location: Location) -> Self {
        Self {
            entry,
            location,
            restorations: Vec::new(),
            more: None,
        }
    }

    /// Occurrences of relocated locations.
    fn occurrences(&self) -> &[Occurrence] {
        self.more.as_ref().map_or(&[], |more| &more.occurrences)
    }

    /// `.pyc` file names (string objects, whose length may change).
    fn rewrites(&self) -> &[FilenameRewrite] {
        self.more.as_ref().map_or(&[], |more| &more.rewrites)
    }

    /// Lines of a `RECORD` file listing files this run changes.
    fn record_fields(&self) -> &[RecordField] {
        self.more.as_ref().map_or(&[], |more| &more.record_fields)
    }

    fn splices<'plan>(&'plan self, relocations: &'plan [Relocation]) -> Vec<Splice<'plan>>
    where
        'supplied: 'plan,
    {
        let mut splices: Vec<Splice<'plan>> = self
            .restorations
            .iter()
            .map(|restoration| Splice {
                offset: restoration.hash_offset,
                len: HASH_LEN,
                bytes: restoration.path.hash().as_bytes(),
            })
            .chain(
                self.occurrences()
                    .iter()
                    .map(|occurrence| occurrence.splice(relocations)),
            )
            .chain(self.rewrites().iter().map(|rewrite| Splice {
                offset: rewrite.offset,
                len: rewrite.len,
                bytes: &rewrite.bytes,
            }))
            .chain(self.record_fields().iter().map(|field| Splice {
                offset: field.offset,
                len: field.len,
                bytes: &field.bytes,
            }))
            .collect();
        splices.sort_by_key(|splice| splice.offset);
        splices
    }
}

/// A scrubbed name that could not be restored, with where it occurs.
#[derive(Debug, Default)]
struct Unresolved {
    /// The supplied paths with this name (empty: none).
    matches: Vec<StorePath>,
    /// Entries holding it, in walk order, with the place.
    places: BTreeSet<(usize, Location)>,
}

/// Occurrences of an OLD in a binary file that were left as they are.
#[derive(Debug)]
struct Left {
    entry: usize,
    /// Why, as a clause ("the length of an ELF file cannot change").
    reason: String,
    occurrences: Vec<Occurrence>,
}

pub(crate) fn run(global: &GlobalArgs, args: &RestoreArgs) -> anyhow::Result<ExitCode> {
    for root in &args.paths {
        tree::require_directory(root)?;
    }
    let store_dir = super::store_dir(global)?;
    let mut supplied =
        tree::load_candidates(&store_dir, &args.candidates, args.candidates_from_env)?;
    supplied.extend(tree::parse_store_paths(&store_dir, &args.store_path)?);
    let supplied = SuppliedPaths::new(supplied);
    let relocations = args
        .relocate
        .iter()
        .map(|spec| {
            Relocation::parse(spec.as_bytes()).with_context(|| {
                format!(
                    "`--relocate {}`: expected OLD=NEW with a non-empty OLD",
                    spec.to_string_lossy()
                )
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;

    // Scrubbed references are found in path form whatever the candidates, so none are given.
    let discovery = crate::cli::DiscoveryArgs {
        candidates: Vec::new(),
        candidates_from_env: false,
    };
    // Any entry may hold an OLD of a relocation; without one, only a few entries beyond those
    // with scrubbed references are needed.
    let keep = if relocations.is_empty() {
        storepatch_tree::Keep::Reported(needed_without_findings)
    } else {
        storepatch_tree::Keep::All
    };
    let options = super::tree_options(global, &discovery, false, keep)?;
    // Without relocations, a file's changes are its scrubbed references alone, known as soon as
    // the first pass reads it: it is written then (see `FirstPass`).
    let mut scan = if args.dry_run || !relocations.is_empty() {
        tree::scan_roots(&args.paths, &options)?
    } else {
        tree::scan_roots_writing(
            &args.paths,
            &options,
            &FirstPass {
                supplied: &supplied,
            },
        )?
    };
    // Left in their boxes: `apply` hands each on to its file's group as it is.
    let written: BTreeMap<usize, Box<Written>> =
        std::mem::take(&mut scan.written).into_iter().collect();
    for note in tree::handle_leftovers(&mut scan, !args.dry_run) {
        output::message(global.quiet, &note.to_string());
    }
    let mut errors: Vec<EntryError> = std::mem::take(&mut scan.errors);
    let entries = &scan.entries;

    // Occurrences of the old locations, per file and symlink (a second read, only when asked).
    let found: Vec<(usize, Found)> = if relocations.is_empty() {
        Vec::new()
    } else {
        let results: Vec<_> = entries
            .par_iter()
            .enumerate()
            .filter_map(|(index, entry)| {
                find_relocations(entry, &relocations, options.read_policy)
                    .map(|found| found.map(|found| (index, found)))
                    .transpose()
            })
            .collect();
        let mut found = Vec::new();
        for result in results {
            match result {
                Ok(item) => found.push(item),
                Err(error) => errors.push(error),
            }
        }
        found
    };

    let mut plan: BTreeMap<(usize, Location), Change> = BTreeMap::new();
    let mut left = Vec::new();
    for (entry, found) in found {
        if let Some(reason) = found.left {
            left.push(Left {
                entry,
                reason,
                occurrences: found.left_occurrences,
            });
        }
        plan.insert(
            (entry, found.location),
            Change {
                more: (!found.occurrences.is_empty() || !found.rewrites.is_empty()).then(|| {
                    Box::new(MoreChanges {
                        occurrences: found.occurrences,
                        rewrites: found.rewrites,
                        record_fields: Vec::new(),
                    })
                }),
                ..Change::new(entry, found.location)
            },
        );
    }
    // Ranges held by an old location (relocated or left): nothing inside them is restored.
    let covered: BTreeMap<(usize, Location), Vec<(u64, u64)>> = left
        .iter()
        .map(|left| ((left.entry, Location::Content), &left.occurrences))
        .map(|(key, occurrences)| (key, ranges(occurrences)))
        .chain(plan.iter().map(|(key, change)| {
            let mut covered = ranges(change.occurrences());
            covered.extend(
                change
                    .rewrites()
                    .iter()
                    .map(|rewrite| (rewrite.offset, rewrite.offset + rewrite.len as u64)),
            );
            (*key, covered)
        }))
        .filter(|(_, ranges)| !ranges.is_empty())
        .fold(BTreeMap::new(), |mut covered, (key, ranges)| {
            covered.entry(key).or_insert_with(Vec::new).extend(ranges);
            covered
        });

    let mut unresolved: BTreeMap<Vec<u8>, Unresolved> = BTreeMap::new();
    let mut note = |name: &[u8], entry: usize, location: Location, supplied: &SuppliedPaths| {
        let item = unresolved.entry(name.to_vec()).or_default();
        if item.places.is_empty()
            && let Resolution::Ambiguous(paths) = supplied.resolve(name)
        {
            item.matches = paths.to_vec();
        }
        item.places.insert((entry, location));
    };
    let mut restore = |entry: usize, location: Location, hash_offset: u64, name: &[u8]| {
        let inside = covered.get(&(entry, location)).is_some_and(|ranges| {
            ranges
                .iter()
                .any(|&(start, end)| hash_offset >= start && hash_offset < end)
        });
        if inside {
            return;
        }
        match supplied.resolve(name) {
            Resolution::Unique(path) => {
                let restorations = &mut plan
                    .entry((entry, location))
                    .or_insert_with(|| Change::new(entry, location))
                    .restorations;
                // Most changes restore one reference, and the first push onto an empty vector
                // makes room for four: room for exactly one first.
                if restorations.capacity() == 0 {
                    restorations.reserve_exact(1);
                }
                restorations.push(Restoration { hash_offset, path });
            }
            Resolution::Ambiguous(_) | Resolution::Unknown => {
                note(name, entry, location, &supplied);
            }
        }
    };
    for finding in &scan.findings {
        for hit in &finding.hits {
            if let Target::Scrubbed { name } = &hit.target {
                restore(finding.entry, finding.location, hit.hash_offset, name);
            }
        }
    }
    // A file name holds a bare `eeee…-NAME` (scrub rewrote a bare hash there).
    for (index, entry) in entries.iter().enumerate() {
        if entry.depth == 0 {
            continue;
        }
        let name = Visit::detached(entry).name().as_bytes();
        for (offset, scrubbed_name) in scrubbed_in_name(name) {
            restore(index, Location::Name, offset, scrubbed_name);
        }
    }

    // A change may hold a relocation that would be a no-op (OLD = NEW): drop what changes nothing.
    let mut changes: Vec<Change> = plan
        .into_values()
        .filter(|change| {
            !change.restorations.is_empty()
                || !change.rewrites().is_empty()
                || change.occurrences().iter().any(|occurrence| {
                    relocations[occurrence.relocation].old != relocations[occurrence.relocation].new
                })
        })
        .map(|mut change| {
            // Kept to the end of the run: most changes restore one reference, and a vector grown
            // by push holds room for four.
            change.restorations.shrink_to_fit();
            change
        })
        .collect();
    // Kept to the end of the run too; collected from a filter, it may have room for twice as many.
    changes.shrink_to_fit();
    plan_record_updates(
        entries,
        &mut changes,
        &relocations,
        &written,
        options.read_policy,
        &mut errors,
    );

    let mut outcomes = BTreeMap::new();
    let renamed = if args.dry_run {
        BTreeMap::new()
    } else {
        apply(
            entries,
            &changes,
            &relocations,
            written,
            &mut errors,
            &mut outcomes,
        )?
    };
    errors.sort_by(|left, right| left.path.cmp(&right.path));
    let report = Report {
        store_dir: &store_dir,
        entries,
        examined: scan.examined,
        changes: &changes,
        unresolved: &unresolved,
        left: &left,
        relocations: &relocations,
        renamed: &renamed,
        outcomes: &outcomes,
        errors: &errors,
        supplied: supplied.len(),
    };
    report.print(global, args)?;
    Ok(ExitCode::from(if !errors.is_empty() {
        crate::exit::ERROR
    } else if !unresolved.is_empty() || !left.is_empty() {
        LEFT
    } else {
        0
    }))
}

/// Bare scrubbed references at the start of a name or after a non-name byte: `(hash offset,
/// name)`.
fn scrubbed_in_name(name: &[u8]) -> Vec<(u64, &[u8])> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(at) = memchr::memmem::find(&name[from..], &SCRUBBED_HASH) {
        let start = from + at;
        let after = start + HASH_LEN;
        // Part of a longer run of `e`s, or not followed by `-NAME`: not ours.
        let longer = start > 0 && name[start - 1] == b'e';
        if !longer && name.get(after) == Some(&b'-') {
            let rest = &name[after + 1..];
            let len = rest
                .iter()
                .take(storepatch_core::MAX_NAME_LEN)
                .take_while(|&&byte| storepatch_core::is_name_byte(byte))
                .count();
            found.push((start as u64, &rest[..len]));
        }
        from = after;
    }
    found
}

/// Whether a run without relocations needs the entry even when the scan found nothing in it: a
/// `RECORD` (its lines get the new hashes of the files it lists) or an entry whose name holds a
/// scrubbed bare hash.
fn needed_without_findings(entry: &Entry) -> bool {
    is_record(entry)
        || (entry.depth > 0
            && !scrubbed_in_name(Visit::detached(entry).name().as_bytes()).is_empty())
}

/// Whether an entry is a wheel's `RECORD` (`<name>.dist-info/RECORD`).
fn is_record(entry: &Entry) -> bool {
    entry.kind == EntryKind::File
        && entry.path.file_name() == Some(std::ffi::OsStr::new("RECORD"))
        && entry
            .path
            .parent()
            .and_then(Path::file_name)
            .is_some_and(|name| name.as_bytes().ends_with(b".dist-info"))
}

/// `base` joined with the relative `path`, `..` and `.` resolved without the file system;
/// `None` when `..` climbs above what `base` names.
fn join_lexically(base: &Path, path: &Path) -> Option<PathBuf> {
    use std::path::Component;
    let mut joined = base.to_path_buf();
    let mut depth = base.components().count();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if depth == 0 || !joined.pop() {
                    return None;
                }
                depth -= 1;
            }
            Component::Normal(name) => {
                joined.push(name);
                depth += 1;
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(joined)
}

/// `path`'s bytes in the one spelling of its components (no `//`, no `.` inside, no trailing
/// `/`), so that paths `Path` holds equal have equal keys; borrowed when already so spelt (paths
/// the walk builds below a root given plainly).
fn path_key(path: &Path) -> Cow<'_, [u8]> {
    let bytes = path.as_os_str().as_bytes();
    let plain = memchr::memmem::find(bytes, b"//").is_none()
        && memchr::memmem::find(bytes, b"/./").is_none()
        && !(bytes.len() > 1 && bytes.ends_with(b"/"))
        && !bytes.ends_with(b"/.");
    if plain {
        Cow::Borrowed(bytes)
    } else {
        Cow::Owned(
            path.components()
                .collect::<PathBuf>()
                .into_os_string()
                .into_vec(),
        )
    }
}

/// For every `RECORD` in the tree, the lines of files this run changes get the hash and size of
/// the new contents (`hash,size` fields as splices of the `RECORD`'s own change); every other
/// byte of it stays. A line's path is read as it will be after relocation: relative to the
/// `.dist-info` directory's parent, or absolute.
fn plan_record_updates(
    entries: &[Entry],
    changes: &mut Vec<Change>,
    relocations: &[Relocation],
    written: &BTreeMap<usize, Box<Written>>,
    policy: ReadPolicy,
    errors: &mut Vec<EntryError>,
) {
    let by_inode: BTreeMap<(u64, u64), usize> = changes
        .iter()
        .enumerate()
        .filter(|(_, change)| change.location == Location::Content)
        .map(|(index, change)| {
            let entry = &entries[change.entry];
            ((entry.dev, entry.ino), index)
        })
        .collect();
    if by_inode.is_empty() {
        return;
    }
    // Keyed by the paths' bytes in one spelling (see `path_key`), hashed: a tree's entries are
    // tens of thousands of long paths, which an ordered map of `Path`s would compare component
    // by component, and which `Path`'s own hash reads byte by byte.
    let by_path: HashMap<Cow<'_, [u8]>, usize> = entries
        .iter()
        .enumerate()
        .filter(|(_, entry)| entry.kind == EntryKind::File)
        .map(|(index, entry)| (path_key(&entry.path), index))
        .collect();
    // The lines listing another file this run changes, with that file and its change.
    let resolve = |index: usize, base: &Path, line: &storepatch_rewrite::record::RecordLine| {
        let splices: Vec<Splice<'_>> =
            storepatch_rewrite::find_occurrences(&line.path, relocations)
                .iter()
                .map(|occurrence| occurrence.splice(relocations))
                .collect();
        let listed =
            storepatch_rewrite::splice(&line.path, &splices).unwrap_or_else(|| line.path.clone());
        let listed = Path::new(std::ffi::OsStr::from_bytes(&listed));
        let resolved = if listed.is_absolute() {
            Some(listed.to_path_buf())
        } else {
            join_lexically(base, listed)
        };
        let &target = resolved
            .as_deref()
            .and_then(|path| by_path.get(&path_key(path)))?;
        let target_entry = &entries[target];
        let &change = by_inode.get(&(target_entry.dev, target_entry.ino))?;
        (target != index).then_some((target, change))
    };
    // Parsed straight from the bytes as read, keeping only those lines (a large RECORD is neither
    // copied nor held whole as lines, and a mapped one lets go of the lines behind).
    let read_lines = |index: usize, entry: &Entry, base: &Path| {
        Visit::detached(entry)
            .read_with_release(policy, |contents, release| {
                storepatch_rewrite::record::record_lines_iter(contents)
                    .filter_map(|line| {
                        release(line.fields.end);
                        resolve(index, base, &line).map(|(target, change)| (line, target, change))
                    })
                    .collect::<Vec<_>>()
            })
            .map_err(|err| EntryError {
                path: entry.path.clone(),
                message: tree::error_chain(&err),
            })
    };
    // Each RECORD on its own, in parallel; the results in entry order.
    let changes_now: &[Change] = changes;
    let per_record: Vec<(usize, Vec<RecordField>, Vec<EntryError>)> = entries
        .par_iter()
        .enumerate()
        .filter(|(_, entry)| is_record(entry))
        .filter_map(|(index, entry)| {
            let base = entry.path.parent().and_then(Path::parent)?;
            let mut errors = Vec::new();
            let lines = match read_lines(index, entry, base) {
                Ok(lines) => lines,
                Err(error) => return Some((index, Vec::new(), vec![error])),
            };
            let mut fields = Vec::new();
            for (line, target, change) in lines {
                let target_entry = &entries[target];
                // A file the first pass wrote holds its new contents already, but for the
                // restorations that pass did not know of; one it failed to write is hashed as
                // planned (its line is dropped with those of the files `apply` fails to write).
                let pending = pending(&changes_now[change], written);
                let splices = match &pending {
                    Ok(pending) => pending.splices(relocations),
                    Err(_) => changes_now[change].splices(relocations),
                };
                // Hashed a stretch at a time from the file's bytes as read: no new copy is made,
                // and a mapped file lets go of what is behind.
                let updated = Visit::detached(target_entry)
                    .read_with_release(policy, |current, release| {
                        line.updated_fields_spliced(current, &splices, release)
                    })
                    .map_err(|err| EntryError {
                        path: target_entry.path.clone(),
                        message: tree::error_chain(&err),
                    })
                    .and_then(|new| {
                        new.ok_or_else(|| EntryError {
                            path: target_entry.path.clone(),
                            message: "the planned changes do not fit the file".to_owned(),
                        })
                    });
                match updated {
                    Ok(updated) => {
                        if let Some(bytes) = updated {
                            fields.push(RecordField {
                                offset: line.fields.start as u64,
                                len: line.fields.len(),
                                old: line.current,
                                bytes,
                                target,
                            });
                        }
                    }
                    Err(error) => errors.push(error),
                }
            }
            Some((index, fields, errors))
        })
        .collect();
    // The lookups are done with: their tables (the path table alone is a few megabytes on a large
    // tree) are given back before `changes` grows.
    drop(by_path);
    drop(by_inode);
    let mut planned: Vec<(usize, Vec<RecordField>)> = Vec::new();
    for (index, fields, record_errors) in per_record {
        errors.extend(record_errors);
        if !fields.is_empty() {
            planned.push((index, fields));
        }
    }
    // At most one more change per RECORD: pushed one by one onto an exactly sized list, the first
    // would double it.
    changes.reserve_exact(planned.len());
    for (index, fields) in planned {
        // `changes` are sorted by entry and place (the RECORDs' own changes are pushed after
        // them, and none of those is looked for again).
        match changes
            .binary_search_by_key(&(index, Location::Content), |change| {
                (change.entry, change.location)
            })
            .ok()
            .map(|at| &mut changes[at])
        {
            Some(change) => change.more.get_or_insert_with(Box::default).record_fields = fields,
            None => changes.push(Change {
                more: Some(Box::new(MoreChanges {
                    record_fields: fields,
                    ..MoreChanges::default()
                })),
                ..Change::new(index, Location::Content)
            }),
        }
    }
    // In place: no two changes share an entry and place, so an unstable sort gives the one order,
    // without the stable sort's scratch copy of the whole list.
    changes.sort_unstable_by_key(|change| (change.entry, change.location));
}

/// The byte ranges of `occurrences`.
fn ranges(occurrences: &[Occurrence]) -> Vec<(u64, u64)> {
    occurrences
        .iter()
        .map(|occurrence| (occurrence.offset, occurrence.offset + occurrence.len as u64))
        .collect()
}

/// What relocation finds in one file or symlink.
#[derive(Debug)]
struct Found {
    location: Location,
    /// Occurrences to replace (text files and symlinks).
    occurrences: Vec<Occurrence>,
    /// `.pyc` file names to rewrite.
    rewrites: Vec<FilenameRewrite>,
    /// Why the occurrences in `left_occurrences` stay, if some do.
    left: Option<String>,
    left_occurrences: Vec<Occurrence>,
}

/// Occurrences of the old locations in one file's contents or symlink's target.
fn find_relocations(
    entry: &Entry,
    relocations: &[Relocation],
    policy: ReadPolicy,
) -> Result<Option<Found>, EntryError> {
    let visit = Visit::detached(entry);
    let error = |err: storepatch_walk::Error| EntryError {
        path: entry.path.clone(),
        message: tree::error_chain(&err),
    };
    match entry.kind {
        EntryKind::File => visit
            .read_with(policy, |contents| {
                let occurrences = storepatch_rewrite::find_occurrences(contents, relocations);
                if occurrences.is_empty() {
                    return None;
                }
                let binary = storepatch_rewrite::binary_kind(visit.name().as_bytes(), contents);
                Some(match binary {
                    None => Found {
                        location: Location::Content,
                        occurrences,
                        rewrites: Vec::new(),
                        left: None,
                        left_occurrences: Vec::new(),
                    },
                    Some(storepatch_rewrite::PYTHON_BYTECODE) => {
                        bytecode_relocations(contents, occurrences, relocations)
                    }
                    Some(kind) => Found {
                        location: Location::Content,
                        occurrences: Vec::new(),
                        rewrites: Vec::new(),
                        left: Some(format!("the length of {kind} cannot change")),
                        left_occurrences: occurrences,
                    },
                })
            })
            .map_err(error),
        EntryKind::Symlink => {
            let target = visit.read_link().map_err(error)?;
            let occurrences =
                storepatch_rewrite::find_occurrences(target.as_os_str().as_bytes(), relocations);
            Ok((!occurrences.is_empty()).then_some(Found {
                location: Location::Symlink,
                occurrences,
                rewrites: Vec::new(),
                left: None,
                left_occurrences: Vec::new(),
            }))
        }
        EntryKind::Dir | EntryKind::Other => Ok(None),
    }
}

/// A `.pyc`: the code objects' file names that start with an OLD are rewritten (the marshal
/// stream is written again, see `storepatch_rewrite::pyc`); any other occurrence is left, as is
/// every occurrence in a file that cannot be read as bytecode.
fn bytecode_relocations(
    contents: &[u8],
    occurrences: Vec<Occurrence>,
    relocations: &[Relocation],
) -> Found {
    match storepatch_rewrite::pyc::filename_rewrites(contents, relocations) {
        Ok(rewrites) => {
            let inside = |occurrence: &Occurrence| {
                rewrites.iter().any(|rewrite| {
                    occurrence.offset >= rewrite.offset
                        && occurrence.offset + occurrence.len as u64
                            <= rewrite.offset + rewrite.len as u64
                })
            };
            let left_occurrences: Vec<Occurrence> = occurrences
                .into_iter()
                .filter(|occurrence| !inside(occurrence))
                .collect();
            Found {
                location: Location::Content,
                occurrences: Vec::new(),
                rewrites,
                left: (!left_occurrences.is_empty()).then(|| {
                    "in Python bytecode only the file names of code objects are relocated"
                        .to_owned()
                }),
                left_occurrences,
            }
        }
        Err(err) => Found {
            location: Location::Content,
            occurrences: Vec::new(),
            rewrites: Vec::new(),
            left: Some(format!("it is Python bytecode that cannot be read ({err})")),
            left_occurrences: occurrences,
        },
    }
}

/// Carries out the plan. Returns the new paths of renamed entries.
fn apply(
    entries: &[Entry],
    changes: &[Change],
    relocations: &[Relocation],
    mut written: BTreeMap<usize, Box<Written>>,
    errors: &mut Vec<EntryError>,
    outcomes: &mut BTreeMap<(usize, Location), Outcome>,
) -> anyhow::Result<BTreeMap<usize, PathBuf>> {
    // Files the first pass wrote need nothing more of their directory.
    let parents: BTreeSet<&Path> = changes
        .iter()
        .filter(|change| {
            change.location != Location::Content || !written.contains_key(&change.entry)
        })
        .filter_map(|change| entries[change.entry].path.parent())
        .collect();
    let mut writable = WritableDirs::make_writable(parents)?;

    // The content changes by inode (a file's names together, in plan order), as slices of one
    // sorted list: most files have one name, and a list or map per file would cost several times
    // the changes themselves on a large tree.
    let inode = |change: &Change| {
        let entry = &entries[change.entry];
        (entry.dev, entry.ino)
    };
    let mut content: Vec<&Change> = changes
        .iter()
        .filter(|change| change.location == Location::Content)
        .collect();
    content.sort_by_key(|change| inode(change));
    // RECORD files last: a line names the new hash of a file only once that file is written.
    let (records, groups): (Vec<&[&Change]>, Vec<&[&Change]>) = content
        .chunk_by(|left, right| inode(left) == inode(right))
        .partition(|group| !group[0].record_fields().is_empty());
    let groups: Vec<(&[&Change], Option<Box<Written>>)> = groups
        .into_iter()
        .map(|group| {
            let done = written.remove(&group[0].entry);
            (group, done)
        })
        .collect();
    let content_errors: Vec<(usize, Outcome, EntryError)> = groups
        .into_par_iter()
        .flat_map_iter(|(group, done)| match done {
            Some(done) => after_first_pass(entries, group, *done),
            None => rewrite_group(entries, group, relocations),
        })
        .collect();
    let unwritten: BTreeMap<usize, Outcome> = content_errors
        .iter()
        .map(|(entry, outcome, _)| (*entry, *outcome))
        .collect();
    // A line whose file was not written keeps its old hash, which is still the file's. One whose
    // file failed to write makes the RECORD reported as failed (whatever else was written to
    // it); one whose file a signal left unchanged is simply dropped, the signal stopping the
    // RECORD's own update anyway.
    let mut kept_errors = Vec::new();
    let records: Vec<Vec<Change>> = records
        .into_iter()
        .map(|group| {
            group
                .iter()
                .map(|&change| {
                    let mut change = change.clone();
                    let mut kept = 0;
                    if let Some(more) = &mut change.more {
                        more.record_fields
                            .retain(|field| match unwritten.get(&field.target) {
                                None => true,
                                Some(outcome) => {
                                    kept += usize::from(*outcome == Outcome::Failed);
                                    false
                                }
                            });
                    }
                    if kept > 0 {
                        kept_errors.push((
                            change.entry,
                            Outcome::Failed,
                            EntryError {
                                path: entries[change.entry].path.clone(),
                                message: if kept == 1 {
                                    "1 RECORD line keeps its old hash: the file it lists could \
                                     not be written"
                                        .to_owned()
                                } else {
                                    format!(
                                        "{kept} RECORD lines keep their old hash: the files they \
                                         list could not be written"
                                    )
                                },
                            },
                        ));
                    }
                    change
                })
                .collect()
        })
        .collect();
    let record_errors: Vec<(usize, Outcome, EntryError)> = records
        .par_iter()
        .flat_map_iter(|group| {
            let group: Vec<&Change> = group.iter().collect();
            rewrite_group(entries, &group, relocations)
        })
        .collect();
    // A RECORD that was not updated (a signal stopped the run first, or its write failed) while
    // files it lists were: those lines hold hashes of contents the files no longer have, and a
    // later run, which finds nothing to change in those files, would not plan them again. Said
    // so, and counted as failed.
    let stale_errors: Vec<(usize, Outcome, EntryError)> = record_errors
        .iter()
        .filter_map(|(entry, outcome, _)| {
            let change = records
                .iter()
                .flatten()
                .find(|change| change.entry == *entry)?;
            let stale = change.record_fields().len();
            (stale > 0).then(|| {
                let why = if *outcome == Outcome::Interrupted {
                    "the run was stopped before the RECORD was updated"
                } else {
                    "the RECORD could not be updated"
                };
                (
                    *entry,
                    Outcome::Failed,
                    EntryError {
                        path: entries[*entry].path.clone(),
                        message: if stale == 1 {
                            format!(
                                "1 RECORD line keeps the old hash of a file this run changed: \
                                 {why}"
                            )
                        } else {
                            format!(
                                "{stale} RECORD lines keep the old hashes of files this run \
                                 changed: {why}"
                            )
                        },
                    },
                )
            })
        })
        .collect();
    for (entry, outcome, error) in content_errors
        .into_iter()
        .chain(kept_errors)
        .chain(record_errors)
        .chain(stale_errors)
    {
        outcomes.insert((entry, Location::Content), outcome);
        errors.push(error);
    }

    let link_errors: Vec<(usize, Outcome, EntryError)> = changes
        .par_iter()
        .filter(|change| change.location == Location::Symlink)
        .filter_map(|change| {
            let path = &entries[change.entry].path;
            retarget(path, change, relocations).err().map(|err| {
                (
                    change.entry,
                    Outcome::of_error(&err),
                    EntryError {
                        path: path.clone(),
                        message: crate::exit::render(&err),
                    },
                )
            })
        })
        .collect();
    for (entry, outcome, error) in link_errors {
        outcomes.insert((entry, Location::Symlink), outcome);
        errors.push(error);
    }

    // Names last, deepest first (see scrub).
    let mut renamed = BTreeMap::new();
    for change in changes
        .iter()
        .rev()
        .filter(|change| change.location == Location::Name)
    {
        let path = &entries[change.entry].path;
        let Some(name) = path.file_name() else {
            continue;
        };
        let Some(new_name) =
            storepatch_rewrite::splice(name.as_bytes(), &change.splices(relocations))
        else {
            continue;
        };
        let result = storepatch_rewrite::interrupt::check(path).and_then(|()| {
            storepatch_rewrite::rename_entry(path, &storepatch_rewrite::os_string(new_name))
        });
        match result {
            Ok(new_path) => {
                writable.renamed(path, &new_path);
                renamed.insert(change.entry, new_path);
            }
            Err(err) => {
                let outcome = if matches!(err, storepatch_rewrite::Error::Interrupted { .. }) {
                    Outcome::Interrupted
                } else {
                    Outcome::Failed
                };
                outcomes.insert((change.entry, Location::Name), outcome);
                errors.push(EntryError {
                    path: path.clone(),
                    message: tree::error_chain(&err),
                });
            }
        }
    }
    writable.restore()?;
    Ok(renamed)
}

/// Restores a file's scrubbed references while discovery's first pass holds its contents (runs
/// without relocations only).
struct FirstPass<'supplied> {
    supplied: &'supplied SuppliedPaths,
}

impl storepatch_tree::ContentWriter for FirstPass<'_> {
    fn write_content(&self, visit: &Visit<'_>, contents: &[u8], hits: &[Hit]) -> Option<Written> {
        let entry = visit.entry();
        // Other names of the inode are re-linked to the new file after discovery (`apply`), and a
        // `RECORD` gets the new hashes of the files it lists, known once they are all planned.
        if entry.nlink > 1 || is_record(entry) {
            return None;
        }
        let mut splices: Vec<Splice<'_>> = hits
            .iter()
            .filter_map(|hit| match &hit.target {
                Target::Scrubbed { name } => match self.supplied.resolve(name) {
                    Resolution::Unique(path) => Some(Splice {
                        offset: hit.hash_offset,
                        len: HASH_LEN,
                        bytes: path.hash().as_bytes(),
                    }),
                    Resolution::Ambiguous(_) | Resolution::Unknown => None,
                },
                Target::Live(_) => None,
            })
            .collect();
        splices.sort_by_key(|splice| splice.offset);
        splices.dedup_by_key(|splice| splice.offset);
        // A supplied path whose hash is the scrubbed one changes nothing: left to `apply`, which
        // writes no file that needs no change.
        if splices.is_empty() || splices.iter().any(|splice| splice.bytes == SCRUBBED_HASH) {
            return None;
        }
        let metadata = visit.metadata()?;
        let result = storepatch_rewrite::interrupt::check(&entry.path).and_then(|()| {
            storepatch_rewrite::replace_file_spliced(&entry.path, metadata, contents, &splices)
                .map(|_| ())
        });
        match result {
            // A directory we may not write to yet: `apply` makes it writable first.
            Err(storepatch_rewrite::Error::Io { source, .. })
                if source.kind() == std::io::ErrorKind::PermissionDenied =>
            {
                None
            }
            result => Some(Written::new(
                splices
                    .iter()
                    .map(|splice| splice.offset)
                    .collect::<Box<[u64]>>(),
                result,
            )),
        }
    }
}

/// What is still to be written of `change`: all of it, or, for a file the first pass wrote, the
/// restorations that pass did not know of; the first pass's error if it failed to write it.
fn pending<'change, 'written>(
    change: &'change Change<'change>,
    written: &'written BTreeMap<usize, Box<Written>>,
) -> Result<Cow<'change, Change<'change>>, &'written storepatch_rewrite::Error> {
    if change.location != Location::Content {
        return Ok(Cow::Borrowed(change));
    }
    let Some(done) = written.get(&change.entry) else {
        return Ok(Cow::Borrowed(change));
    };
    done.result.as_ref().map_err(|err| &**err)?;
    let mut late = change.clone();
    late.restorations.retain(|restoration| {
        done.offsets
            .binary_search(&restoration.hash_offset)
            .is_err()
    });
    Ok(Cow::Owned(late))
}

/// The result for `group` (the names of one inode), a file the first pass wrote: the
/// restorations it did not know of are written now.
fn after_first_pass(
    entries: &[Entry],
    group: &[&Change],
    done: Written,
) -> Vec<(usize, Outcome, EntryError)> {
    let leader = &entries[group[0].entry];
    let mut results = Vec::new();
    if let Err(err) = done.result {
        let err = anyhow::Error::from(*err);
        results.push((
            group[0].entry,
            Outcome::of_error(&err),
            EntryError {
                path: leader.path.clone(),
                message: crate::exit::render(&err),
            },
        ));
    } else {
        let mut late = group[0].clone();
        late.restorations.retain(|restoration| {
            done.offsets
                .binary_search(&restoration.hash_offset)
                .is_err()
        });
        if !late.restorations.is_empty() {
            // The file is a new inode now: reopened by name and checked like any other.
            results.extend(rewrite_group(entries, &[&late], &[]));
        }
    }
    // A file written in the first pass has one name (see `FirstPass`): a second one would be the
    // same file listed twice, by two roots that overlap.
    results.extend(group[1..].iter().map(|change| {
        (
            change.entry,
            Outcome::Failed,
            EntryError {
                path: entries[change.entry].path.clone(),
                message: format!(
                    "cannot restore `{}`: it is another name of `{}`, written on its own",
                    entries[change.entry].path.display(),
                    leader.path.display()
                ),
            },
        )
    }));
    results
}

/// Checks that `contents` still hold what the plan was made from.
fn still_planned(
    contents: &[u8],
    change: &Change,
    relocations: &[Relocation],
) -> anyhow::Result<()> {
    for restoration in &change.restorations {
        let start = usize::try_from(restoration.hash_offset).unwrap_or(usize::MAX);
        anyhow::ensure!(
            contents.get(start..start.saturating_add(HASH_LEN)) == Some(&SCRUBBED_HASH[..]),
            "it changed while it was restored (no scrubbed hash at offset {} any more)",
            restoration.hash_offset
        );
    }
    for field in change.record_fields() {
        let start = usize::try_from(field.offset).unwrap_or(usize::MAX);
        anyhow::ensure!(
            contents.get(start..start.saturating_add(field.len)) == Some(&field.old[..]),
            "changed while it was restored (the RECORD line at offset {} is another)",
            field.offset
        );
    }
    for rewrite in change.rewrites() {
        let start = usize::try_from(rewrite.offset).unwrap_or(usize::MAX);
        anyhow::ensure!(
            contents.get(start..start.saturating_add(rewrite.len)) == Some(&rewrite.old[..]),
            "changed while it was restored (the bytecode's file name at offset {} is another)",
            rewrite.offset
        );
    }
    for occurrence in change.occurrences() {
        let start = usize::try_from(occurrence.offset).unwrap_or(usize::MAX);
        anyhow::ensure!(
            contents.get(start..start.saturating_add(occurrence.len))
                == Some(&relocations[occurrence.relocation].old[..]),
            "it changed while it was restored (`{}` not at offset {} any more)",
            String::from_utf8_lossy(&relocations[occurrence.relocation].old),
            occurrence.offset
        );
    }
    Ok(())
}

/// Rewrites the first name of an inode and links the others to the result.
fn rewrite_group(
    entries: &[Entry],
    group: &[&Change],
    relocations: &[Relocation],
) -> Vec<(usize, Outcome, EntryError)> {
    let leader = &entries[group[0].entry];
    let result = storepatch_rewrite::interrupt::check(&leader.path)
        .map_err(anyhow::Error::from)
        .and_then(|()| {
            Visit::detached(leader)
                .reopen()
                .map_err(anyhow::Error::from)
        })
        .and_then(|(file, metadata)| {
            // Read into the thread's reused buffer: thousands of small files read one after
            // another then allocate nothing each.
            storepatch_walk::read_from_with(
                &file,
                &leader.path,
                leader.len,
                ReadPolicy::default(),
                |contents| {
                    still_planned(contents, group[0], relocations)
                        .with_context(|| format!("cannot restore `{}`", leader.path.display()))?;
                    let splices = group[0].splices(relocations);
                    let changes = storepatch_rewrite::splice_changes(contents, &splices)
                        .with_context(|| {
                            format!(
                                "cannot restore `{}`: the planned changes do not fit the file",
                                leader.path.display()
                            )
                        })?;
                    if changes {
                        // Written piece by piece from the bytes as read: no new copy is built.
                        storepatch_rewrite::replace_file_spliced(
                            &leader.path,
                            &metadata,
                            contents,
                            &splices,
                        )?;
                    }
                    Ok(())
                },
            )?
        });
    if let Err(err) = result {
        // No name of the inode changed.
        let outcome = Outcome::of_error(&err);
        return group
            .iter()
            .enumerate()
            .map(|(index, change)| {
                let path = &entries[change.entry].path;
                let message = if index == 0 {
                    crate::exit::render(&err)
                } else {
                    format!(
                        "not restored: another name of this file, `{}`, could not be",
                        leader.path.display()
                    )
                };
                (
                    change.entry,
                    outcome,
                    EntryError {
                        path: path.clone(),
                        message,
                    },
                )
            })
            .collect();
    }
    group[1..]
        .iter()
        .filter_map(|change| {
            let path = &entries[change.entry].path;
            storepatch_rewrite::link_into_place(&leader.path, path)
                .err()
                .map(|err| {
                    (
                        change.entry,
                        Outcome::Failed,
                        EntryError {
                            path: path.clone(),
                            message: tree::error_chain(&err),
                        },
                    )
                })
        })
        .collect()
}

fn retarget(path: &Path, change: &Change, relocations: &[Relocation]) -> anyhow::Result<()> {
    storepatch_rewrite::interrupt::check(path)?;
    let target = fs_err::read_link(path)?;
    let target = target.as_os_str().as_bytes();
    still_planned(target, change, relocations)
        .with_context(|| format!("cannot restore `{}`", path.display()))?;
    let new_target = storepatch_rewrite::splice(target, &change.splices(relocations))
        .with_context(|| {
            format!(
                "cannot restore `{}`: the planned changes do not fit the symlink's target",
                path.display()
            )
        })?;
    storepatch_rewrite::retarget_symlink(path, &storepatch_rewrite::os_string(new_target))?;
    Ok(())
}

/// Everything the report shows.
struct Report<'run> {
    store_dir: &'run StoreDir,
    entries: &'run [Entry],
    /// How many entries were scanned, kept or not.
    examined: usize,
    changes: &'run [Change<'run>],
    unresolved: &'run BTreeMap<Vec<u8>, Unresolved>,
    left: &'run [Left],
    relocations: &'run [Relocation],
    renamed: &'run BTreeMap<usize, PathBuf>,
    /// Planned changes that were not carried out; every other one was (unless a dry run).
    outcomes: &'run BTreeMap<(usize, Location), Outcome>,
    errors: &'run [EntryError],
    supplied: usize,
}

impl Report<'_> {
    fn restored_paths(change: &Change, store_dir: &StoreDir) -> BTreeSet<Vec<u8>> {
        change
            .restorations
            .iter()
            .map(|restoration| store_dir.render(restoration.path))
            .collect()
    }

    fn relocated_olds(&self, occurrences: &[Occurrence]) -> BTreeSet<&[u8]> {
        occurrences
            .iter()
            .map(|occurrence| self.relocations[occurrence.relocation].old.as_slice())
            .collect()
    }

    /// The OLDs a change relocates (text occurrences and bytecode file names).
    fn change_olds(&self, change: &Change) -> BTreeSet<&[u8]> {
        let mut olds = self.relocated_olds(change.occurrences());
        olds.extend(
            change
                .rewrites()
                .iter()
                .map(|rewrite| self.relocations[rewrite.relocation].old.as_slice()),
        );
        olds
    }

    fn places(&self, item: &Unresolved) -> Vec<(PathBuf, Location)> {
        item.places
            .iter()
            .map(|&(entry, location)| (self.entries[entry].path.clone(), location))
            .collect()
    }

    fn scrubbed(&self, name: &[u8]) -> Vec<u8> {
        let mut path = self.store_dir.prefix().to_vec();
        path.extend_from_slice(&SCRUBBED_HASH);
        if !name.is_empty() {
            path.push(b'-');
            path.extend_from_slice(name);
        }
        path
    }

    fn outcome(&self, change: &Change, dry_run: bool) -> &'static str {
        if dry_run {
            return "planned";
        }
        self.outcomes
            .get(&(change.entry, change.location))
            .map_or("done", |outcome| outcome.as_str())
    }

    fn print(&self, global: &GlobalArgs, args: &RestoreArgs) -> anyhow::Result<()> {
        let done: Vec<&Change> = self
            .changes
            .iter()
            .filter(|change| !self.outcomes.contains_key(&(change.entry, change.location)))
            .collect();
        let failed = self
            .outcomes
            .values()
            .filter(|outcome| **outcome == Outcome::Failed)
            .count();
        let interrupted = self.outcomes.len() - failed;
        let restored: usize = done.iter().map(|change| change.restorations.len()).sum();
        let relocated: usize = done
            .iter()
            .map(|change| change.occurrences().len() + change.rewrites().len())
            .sum();
        let record_lines: usize = done.iter().map(|change| change.record_fields().len()).sum();
        let unresolved_references: usize =
            self.unresolved.values().map(|item| item.places.len()).sum();
        let count = |location| {
            done.iter()
                .filter(|change| change.location == location)
                .count()
        };
        let mut out = Output::new();
        if global.json {
            for change in self.changes {
                let path = &self.entries[change.entry].path;
                out.json(&json!({
                    "type": "restore",
                    "path": path_value(path),
                    "outcome": self.outcome(change, args.dry_run),
                    "kind": change.location.as_str(),
                    "references": change.restorations.len(),
                    "store_paths": Self::restored_paths(change, self.store_dir).iter().map(|path| bytes_value(path)).collect::<Vec<_>>(),
                    "relocated": change.occurrences().len() + change.rewrites().len(),
                    "record_lines": change.record_fields().len(),
                    "new_path": self.renamed.get(&change.entry).map(|path| path_value(path)),
                }))?;
            }
            for (name, item) in self.unresolved {
                out.json(&json!({
                    "type": "unresolved",
                    "name": bytes_value(name),
                    "reason": if item.matches.is_empty() { "unknown" } else { "ambiguous" },
                    "matches": item.matches.iter().map(|path| bytes_value(&self.store_dir.render(path))).collect::<Vec<_>>(),
                    "places": self.places(item).iter().map(|(path, location)| json!({"path": path_value(path), "kind": location.as_str()})).collect::<Vec<_>>(),
                }))?;
            }
            for left in self.left {
                out.json(&json!({
                    "type": "left",
                    "path": path_value(&self.entries[left.entry].path),
                    "reason": left.reason,
                    "occurrences": left.occurrences.len(),
                    "old": self.relocated_olds(&left.occurrences).iter().map(|old| bytes_value(old)).collect::<Vec<_>>(),
                }))?;
            }
            for error in self.errors {
                out.json(&json!({"type": "error", "path": path_value(&error.path), "message": error.message}))?;
            }
            out.json(&json!({
                "type": "summary",
                "dry_run": args.dry_run,
                "store_dir": bytes_value(self.store_dir.as_bytes()),
                "supplied": self.supplied,
                "entries": self.examined,
                "references": restored,
                "relocated": relocated,
                "record_lines": record_lines,
                "files": count(Location::Content),
                "symlinks": count(Location::Symlink),
                "names": count(Location::Name),
                "unresolved_names": self.unresolved.len(),
                "unresolved_references": unresolved_references,
                "left_files": self.left.len(),
                "failed": failed,
                "interrupted": interrupted,
                "errors": self.errors.len(),
            }))?;
            out.flush()?;
            return Ok(());
        }
        let verb = if args.dry_run {
            "would restore"
        } else {
            "restored"
        };
        if !global.quiet {
            for change in done.iter().copied() {
                let path = &self.entries[change.entry].path;
                let mut line = format!("{verb} {}:", path.display()).into_bytes();
                if !change.restorations.is_empty() {
                    line.extend_from_slice(
                        format!(
                            " {} reference{} to ",
                            change.restorations.len(),
                            plural(change.restorations.len())
                        )
                        .as_bytes(),
                    );
                    line.extend_from_slice(&join(Self::restored_paths(change, self.store_dir)));
                }
                if !change.occurrences().is_empty() {
                    if !change.restorations.is_empty() {
                        line.push(b';');
                    }
                    line.extend_from_slice(
                        format!(
                            " relocated {} occurrence{} of ",
                            change.occurrences().len(),
                            plural(change.occurrences().len())
                        )
                        .as_bytes(),
                    );
                    line.extend_from_slice(&join(
                        self.relocated_olds(change.occurrences())
                            .into_iter()
                            .map(<[u8]>::to_vec),
                    ));
                }
                if !change.rewrites().is_empty() {
                    if !change.restorations.is_empty() {
                        line.push(b';');
                    }
                    line.extend_from_slice(
                        format!(
                            " relocated {} bytecode file name{} under ",
                            change.rewrites().len(),
                            plural(change.rewrites().len())
                        )
                        .as_bytes(),
                    );
                    line.extend_from_slice(&join(
                        self.change_olds(change).into_iter().map(<[u8]>::to_vec),
                    ));
                }
                if !change.record_fields().is_empty() {
                    if !line.ends_with(b":") {
                        line.push(b';');
                    }
                    line.extend_from_slice(
                        format!(
                            " updated {} RECORD line{} (hash and size)",
                            change.record_fields().len(),
                            plural(change.record_fields().len())
                        )
                        .as_bytes(),
                    );
                }
                line.extend_from_slice(format!(" ({})", change.location.as_str()).as_bytes());
                out.line(&line)?;
            }
        }
        out.flush()?;
        // What was left is something the user must act on: always shown, on stderr.
        for (name, item) in self.unresolved {
            let mut message = String::from_utf8_lossy(&self.scrubbed(name)).into_owned();
            if item.matches.is_empty() {
                message.push_str(" left scrubbed: no supplied store path has this name");
            } else {
                message.push_str(" left scrubbed: several supplied store paths have this name (");
                message.push_str(
                    &item
                        .matches
                        .iter()
                        .map(|path| {
                            String::from_utf8_lossy(&self.store_dir.render(path)).into_owned()
                        })
                        .collect::<Vec<_>>()
                        .join(", "),
                );
                message.push(')');
            }
            message.push_str("; in ");
            message.push_str(
                &self
                    .places(item)
                    .iter()
                    .map(|(path, location)| format!("{} ({})", path.display(), location.as_str()))
                    .collect::<Vec<_>>()
                    .join(", "),
            );
            output::warning(&message);
        }
        for left in self.left {
            let olds: Vec<String> = self
                .relocated_olds(&left.occurrences)
                .iter()
                .map(|old| String::from_utf8_lossy(old).into_owned())
                .collect();
            output::warning(&format!(
                "{}: {} occurrence{} of {} left as {}: {}",
                self.entries[left.entry].path.display(),
                left.occurrences.len(),
                plural(left.occurrences.len()),
                olds.join(", "),
                if olds.len() == 1 { "it is" } else { "they are" },
                left.reason,
            ));
        }
        for error in self.errors {
            output::entry_error(&error.message);
        }
        let not_done = if self.outcomes.is_empty() {
            String::new()
        } else {
            format!("; {failed} entries failed and {interrupted} were left unchanged by a signal")
        };
        output::message(
            global.quiet,
            &format!(
                "{verb} {restored} references and relocated {relocated}: {} files, {} symlinks, {} names ({} entries scanned, {} store paths supplied, {unresolved_references} places with {} names left scrubbed, {} binary files left, {} errors){not_done}",
                count(Location::Content),
                count(Location::Symlink),
                count(Location::Name),
                self.examined,
                self.supplied,
                self.unresolved.len(),
                self.left.len(),
                self.errors.len(),
            ),
        );
        Ok(())
    }
}

fn plural(count: usize) -> &'static str {
    if count == 1 { "" } else { "s" }
}

fn join(items: impl IntoIterator<Item = Vec<u8>>) -> Vec<u8> {
    let mut out = Vec::new();
    for (index, item) in items.into_iter().enumerate() {
        if index > 0 {
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(&item);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_keys_are_equal_for_equal_paths() {
        let key = |path: &str| path_key(Path::new(path)).into_owned();
        let plain = key("venv/lib/site-packages/demo.py");
        assert!(matches!(
            path_key(Path::new("venv/lib/site-packages/demo.py")),
            Cow::Borrowed(_)
        ));
        for spelling in [
            "venv//lib/site-packages/demo.py",
            "venv/./lib/site-packages/demo.py",
            "venv/lib/site-packages/./demo.py",
        ] {
            assert_eq!(key(spelling), plain, "{spelling}");
        }
        assert_eq!(key("venv/lib/"), key("venv/lib"));
        assert_eq!(key("venv/lib/."), key("venv/lib"));
        assert_eq!(key("./venv/lib"), b"./venv/lib");
        assert_ne!(key("./venv/lib"), key("venv/lib"));
        assert_eq!(key("/"), b"/");
    }

    #[test]
    fn scrubbed_names_in_file_names() {
        let name = b"eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-zlib-1.3.1.drv";
        assert_eq!(scrubbed_in_name(name), [(0, &b"zlib-1.3.1.drv"[..])]);
        // 33 `e`s are not a scrubbed hash; nor is one without a name.
        assert!(scrubbed_in_name(b"eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-zlib").is_empty());
        assert!(scrubbed_in_name(b"eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee").is_empty());
    }
}
