//! `storepatch scrub`: rewrite every live store reference's hash part to 32 `e`s.
//!
//! Order of work: discover (two passes, see `tree`), plan, make the affected directories writable,
//! rewrite file contents in parallel (one temp file + rename each; hard links inside the tree are
//! re-linked to the new file), retarget symlinks, then rename entries deepest first, and finally
//! restore directory modes. Each step only touches entries that hold a selected reference.
//!
//! Most files are written earlier, by the discovery's first pass while it holds their contents
//! ([`FirstPass`]), so that each is read once: a file with one name whose directory lets us write
//! there. Hits that only the second pass finds in such a file (bare hashes of store paths found
//! elsewhere) are written after discovery, as are hard-linked files and the files of read-only
//! directories.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use rayon::prelude::*;
use serde_json::json;
use storepatch_core::{HashPart, SCRUBBED_HASH, StoreDir};
use storepatch_rewrite::{Patch, WritableDirs};
use storepatch_scan::Hit;

use super::Outcome;
use crate::cli::{GlobalArgs, ScrubArgs};
use crate::output::{self, Output, bytes_value, path_value};
use crate::tree::{self, EntryError, Location, TreeScan};
use storepatch_tree::Written;

/// The changes planned for one place of one entry.
struct Change {
    entry: usize,
    location: Location,
    /// Offsets of the hash parts to overwrite.
    offsets: Vec<u64>,
    /// The store paths of the scrubbed references, as indices into [`StorePaths`], sorted by
    /// their rendering and unique.
    ///
    /// A vector, not a set, of indices, not renderings: a venv has a change for each of thousands
    /// of `.pyc` files, most naming the one same store path, and a one-element `BTreeSet` holds a
    /// whole tree node.
    store_paths: Vec<usize>,
}

/// Every store path the changes name, each once: rendered, with its hash part (the summary
/// counts store paths by hash, as `scan` and Nix do: one store path may be written with names
/// that run on into other text).
#[derive(Default)]
struct StorePaths {
    paths: Vec<(Vec<u8>, HashPart)>,
    index: HashMap<Vec<u8>, usize>,
}

impl StorePaths {
    /// The index of `rendered`, added if it is new.
    fn add(&mut self, rendered: &[u8], hash: HashPart) -> usize {
        if let Some(&index) = self.index.get(rendered) {
            return index;
        }
        let index = self.paths.len();
        self.paths.push((rendered.to_vec(), hash));
        self.index.insert(rendered.to_vec(), index);
        index
    }

    fn rendered(&self, index: usize) -> &[u8] {
        &self.paths[index].0
    }

    fn hash(&self, index: usize) -> &HashPart {
        &self.paths[index].1
    }
}

pub(crate) fn run(global: &GlobalArgs, args: &ScrubArgs) -> anyhow::Result<ExitCode> {
    for root in &args.paths {
        tree::require_directory(root)?;
    }
    let options = super::tree_options(
        global,
        &args.discovery,
        false,
        storepatch_tree::Keep::REPORTED,
    )?;
    let store_dir = options.store_dir.clone();
    let keep: BTreeSet<HashPart> = tree::parse_store_paths(&store_dir, &args.keep)?
        .iter()
        .map(|path| *path.hash())
        .collect();
    let only: BTreeSet<HashPart> = tree::parse_store_paths(&store_dir, &args.only)?
        .iter()
        .map(|path| *path.hash())
        .collect();
    let selected = |hit: &Hit| {
        hit.live().is_some_and(|path| {
            !keep.contains(path.hash()) && (only.is_empty() || only.contains(path.hash()))
        })
    };

    let mut scan = if args.dry_run {
        tree::scan_roots(&args.paths, &options)?
    } else {
        tree::scan_roots_writing(
            &args.paths,
            &options,
            &FirstPass {
                selected: &selected,
            },
        )?
    };
    for note in tree::handle_leftovers(&mut scan, !args.dry_run) {
        output::message(global.quiet, &note.to_string());
    }
    let mut kept = 0usize;
    let mut changes = Vec::new();
    let mut store_paths = StorePaths::default();
    let mut rendered = Vec::new();
    for finding in &scan.findings {
        let mut change = Change {
            entry: finding.entry,
            location: finding.location,
            offsets: Vec::new(),
            store_paths: Vec::new(),
        };
        for hit in &finding.hits {
            match hit.live() {
                Some(path) if selected(hit) => {
                    change.offsets.push(hit.hash_offset);
                    rendered.clear();
                    tree::render_target_into(&store_dir, hit, &mut rendered);
                    change
                        .store_paths
                        .push(store_paths.add(&rendered, *path.hash()));
                }
                Some(_) => kept += 1,
                None => {}
            }
        }
        if !change.offsets.is_empty() {
            // Kept until the report: most changes have one reference, and a vector grown by
            // push holds room for four.
            change.offsets.shrink_to_fit();
            change.store_paths.sort_unstable_by(|&left, &right| {
                store_paths.rendered(left).cmp(store_paths.rendered(right))
            });
            change.store_paths.dedup();
            change.store_paths.shrink_to_fit();
            changes.push(change);
        }
    }

    let mut errors: Vec<EntryError> = std::mem::take(&mut scan.errors);
    let (renamed, statuses) = if args.dry_run {
        (BTreeMap::new(), vec![Outcome::Planned; changes.len()])
    } else {
        let written = std::mem::take(&mut scan.written);
        apply(&scan, &changes, written, &mut errors)?
    };
    report(
        global,
        args,
        &scan,
        &changes,
        &store_paths,
        &statuses,
        &renamed,
        &errors,
        kept,
        &store_dir,
    )?;
    Ok(ExitCode::from(if errors.is_empty() {
        0
    } else {
        crate::exit::ERROR
    }))
}

/// Scrubs a file's selected references while discovery's first pass holds its contents.
struct FirstPass<'select> {
    selected: &'select (dyn Fn(&Hit) -> bool + Sync),
}

impl storepatch_tree::ContentWriter for FirstPass<'_> {
    fn write_content(
        &self,
        visit: &storepatch_walk::Visit<'_>,
        contents: &[u8],
        hits: &[Hit],
    ) -> Option<Written> {
        let entry = visit.entry();
        // Other names of the inode are re-linked to the new file after discovery (`apply`).
        if entry.nlink > 1 {
            return None;
        }
        let mut offsets: Vec<u64> = hits
            .iter()
            .filter(|hit| (self.selected)(hit))
            .map(|hit| hit.hash_offset)
            .collect();
        if offsets.is_empty() {
            return None;
        }
        offsets.sort_unstable();
        offsets.dedup();
        let metadata = visit.metadata()?;
        let result =
            storepatch_rewrite::replace_file(&entry.path, metadata, contents, &patches(&offsets));
        match result {
            // A directory we may not write to yet: `apply` makes it writable first.
            Err(storepatch_rewrite::Error::Io { source, .. })
                if source.kind() == std::io::ErrorKind::PermissionDenied =>
            {
                None
            }
            result => Some(Written::new(offsets, result)),
        }
    }
}

/// Carries out the plan. Returns the new paths of renamed entries and what became of each change.
fn apply(
    scan: &TreeScan,
    changes: &[Change],
    written: Vec<(usize, Box<Written>)>,
    errors: &mut Vec<EntryError>,
) -> anyhow::Result<(BTreeMap<usize, PathBuf>, Vec<Outcome>)> {
    let entries = &scan.entries;
    let mut statuses = vec![Outcome::Interrupted; changes.len()];
    let mut record = |index: usize, result: anyhow::Result<()>, errors: &mut Vec<EntryError>| {
        statuses[index] = match result {
            Ok(()) => Outcome::Done,
            Err(err) => {
                let status = Outcome::of_error(&err);
                if status == Outcome::Failed {
                    errors.push(EntryError {
                        path: entries[changes[index].entry].path.clone(),
                        message: crate::exit::render(&err),
                    });
                }
                status
            }
        };
    };
    // Changes are in walk order, so one directory's files are mostly next to each other:
    // `make_writable` sees each directory once however many files it holds.
    // Files the first pass wrote need nothing more of their directory. `written` is in entry
    // order, so it is searched as it is rather than put in a map: a venv has thousands.
    let mut written = written;
    let written_at = |written: &[(usize, Box<Written>)], entry: usize| {
        written
            .binary_search_by_key(&entry, |(index, _)| *index)
            .ok()
    };
    let mut parents: Vec<&Path> = changes
        .iter()
        .filter(|change| {
            change.location != Location::Content || written_at(&written, change.entry).is_none()
        })
        .filter_map(|change| entries[change.entry].path.parent())
        .collect();
    parents.dedup();
    let mut writable = WritableDirs::make_writable(parents)?;

    // Contents: one rewrite per inode; other names of the same inode in the tree are re-linked.
    // The groups are runs of one list sorted by inode (then by change, so each group's changes
    // are in walk order), not a list each.
    let mut by_inode: Vec<(u64, u64, usize)> = changes
        .iter()
        .enumerate()
        .filter(|(_, change)| change.location == Location::Content)
        .map(|(index, change)| {
            let entry = &entries[change.entry];
            (entry.dev, entry.ino, index)
        })
        .collect();
    by_inode.sort_unstable();
    let grouped: Vec<usize> = by_inode.iter().map(|&(_, _, index)| index).collect();
    let mut groups: Vec<std::ops::Range<usize>> = Vec::new();
    for (position, pair) in by_inode.windows(2).enumerate() {
        if (pair[0].0, pair[0].1) != (pair[1].0, pair[1].1) {
            let start = groups.last().map_or(0, |group| group.end);
            groups.push(start..position + 1);
        }
    }
    if !grouped.is_empty() {
        let start = groups.last().map_or(0, |group| group.end);
        groups.push(start..grouped.len());
    }
    drop(by_inode);
    // A file the first pass wrote in full (or failed to write) needs no more work: its results
    // are taken here, in order; only the others are left for the threads.
    let mut left: Vec<(std::ops::Range<usize>, Option<Written>)> = Vec::new();
    for group in groups {
        let leader = &changes[grouped[group.start]];
        let done = written_at(&written, leader.entry).map(|at| std::mem::take(&mut *written[at].1));
        match done {
            Some(done)
                if done.result.is_err()
                    || leader
                        .offsets
                        .iter()
                        .all(|offset| done.offsets.binary_search(offset).is_ok()) =>
            {
                for (index, result) in after_first_pass(scan, changes, &grouped[group], done) {
                    record(index, result, errors);
                }
            }
            done => left.push((group, done)),
        }
    }
    drop(written);
    let content: Vec<(usize, anyhow::Result<()>)> = left
        .into_par_iter()
        .flat_map_iter(|(group, done)| match done {
            Some(done) => after_first_pass(scan, changes, &grouped[group], done),
            None => rewrite_group(scan, changes, &grouped[group]),
        })
        .collect();
    for (index, result) in content {
        record(index, result, errors);
    }

    let links: Vec<(usize, anyhow::Result<()>)> = changes
        .par_iter()
        .enumerate()
        .filter(|(_, change)| change.location == Location::Symlink)
        .map(|(index, change)| {
            (
                index,
                retarget(&entries[change.entry].path, &change.offsets),
            )
        })
        .collect();
    for (index, result) in links {
        record(index, result, errors);
    }

    // Names last, deepest first (reverse walk order puts every child before its parent), so a
    // renamed directory never invalidates a path still to be renamed.
    let mut renamed = BTreeMap::new();
    for (index, change) in changes
        .iter()
        .enumerate()
        .rev()
        .filter(|(_, change)| change.location == Location::Name)
    {
        let path = &entries[change.entry].path;
        let Some(name) = path.file_name() else {
            continue;
        };
        let patches = patches(&change.offsets);
        let Some(new_name) = storepatch_rewrite::apply(name.as_bytes(), &patches) else {
            continue;
        };
        let result = storepatch_rewrite::interrupt::check(path).and_then(|()| {
            storepatch_rewrite::rename_entry(path, &storepatch_rewrite::os_string(new_name))
        });
        match result {
            Ok(new_path) => {
                writable.renamed(path, &new_path);
                renamed.insert(change.entry, new_path);
                record(index, Ok(()), errors);
            }
            Err(err) => record(index, Err(err.into()), errors),
        }
    }
    writable.restore()?;
    errors.sort_by(|left, right| left.path.cmp(&right.path));
    Ok((renamed, statuses))
}

fn patches(offsets: &[u64]) -> Vec<Patch<'static>> {
    offsets
        .iter()
        .map(|&offset| Patch {
            offset,
            bytes: &SCRUBBED_HASH,
        })
        .collect()
}

/// The result for each change of `group` (indices into `changes`), a file the first pass wrote:
/// the hits it did not know of yet are written now.
fn after_first_pass(
    scan: &TreeScan,
    changes: &[Change],
    group: &[usize],
    written: Written,
) -> Vec<(usize, anyhow::Result<()>)> {
    let change = &changes[group[0]];
    let path = &scan.entries[change.entry].path;
    let result = written
        .result
        .map_err(|err| anyhow::Error::from(*err))
        .and_then(|()| {
            let late: Vec<u64> = change
                .offsets
                .iter()
                .copied()
                .filter(|offset| written.offsets.binary_search(offset).is_err())
                .collect();
            if late.is_empty() {
                return Ok(());
            }
            // The file is a new inode now: opened by name (never through a symlink), checked to be
            // a regular file of the size the scan saw, and by its contents.
            storepatch_rewrite::interrupt::check(path)?;
            let entry = &scan.entries[change.entry];
            let file = storepatch_walk::Visit::detached(entry).open()?;
            let metadata = file.metadata()?;
            anyhow::ensure!(
                metadata.file_type().is_file() && metadata.len() == entry.len,
                "cannot scrub `{}`: it changed while it was scrubbed",
                path.display()
            );
            scrub_opened(path, &file, &metadata, &late)
        });
    // A file written in the first pass has one name (see `FirstPass`): a second one would be the
    // same file listed twice, by two roots that overlap.
    let mut results = vec![(group[0], result)];
    results.extend(group[1..].iter().map(|&index| {
        (
            index,
            Err(anyhow::anyhow!(
                "cannot scrub `{}`: it is another name of `{}`, written on its own",
                scan.entries[changes[index].entry].path.display(),
                path.display()
            )),
        )
    }));
    results
}

/// Reads the open file and writes it with the hashes at `offsets` scrubbed, once it is sure they
/// are still hashes.
fn scrub_opened(
    path: &Path,
    file: &std::fs::File,
    metadata: &std::fs::Metadata,
    offsets: &[u64],
) -> anyhow::Result<()> {
    // Read into the thread's reused buffer: thousands of small files read one after another then
    // allocate nothing each.
    storepatch_walk::read_from_with(
        file,
        path,
        metadata.len(),
        storepatch_walk::ReadPolicy::default(),
        |contents| {
            // The file must still hold a hash at every offset the scan saw.
            for &offset in offsets {
                let start = usize::try_from(offset).unwrap_or(usize::MAX);
                let hash = contents.get(start..start.saturating_add(32));
                anyhow::ensure!(
                    hash.is_some_and(|hash| HashPart::parse(hash).is_ok()),
                    "cannot scrub `{}`: it changed while it was scrubbed (no store hash at \
                     offset {offset} any more)",
                    path.display()
                );
            }
            storepatch_rewrite::replace_file(path, metadata, contents, &patches(offsets))?;
            Ok(())
        },
    )?
}

/// Rewrites the first name of an inode and links the others to the result; returns the result
/// for each change of `group` (indices into `changes`).
fn rewrite_group(
    scan: &TreeScan,
    changes: &[Change],
    group: &[usize],
) -> Vec<(usize, anyhow::Result<()>)> {
    let entries = &scan.entries;
    let leader_change = &changes[group[0]];
    let leader = &entries[leader_change.entry];
    // Opened without following a symlink, and checked to be the file the scan read.
    let result = storepatch_rewrite::interrupt::check(&leader.path)
        .map_err(anyhow::Error::from)
        .and_then(|()| Ok(storepatch_walk::Visit::detached(leader).reopen()?))
        .and_then(|(file, metadata)| {
            scrub_opened(&leader.path, &file, &metadata, &leader_change.offsets)
        });
    if let Err(err) = result {
        let status = Outcome::of_error(&err);
        let mut results = vec![(group[0], Err(err))];
        // The other names are unchanged too, for the same reason.
        results.extend(group[1..].iter().map(|&index| {
            let path = &entries[changes[index].entry].path;
            let err = if status == Outcome::Interrupted {
                anyhow::Error::from(storepatch_rewrite::Error::Interrupted {
                    path: path.clone(),
                    signal: storepatch_rewrite::interrupt::signal().unwrap_or(0),
                })
            } else {
                anyhow::anyhow!(
                    "cannot scrub `{}`: its other name `{}` could not be rewritten",
                    path.display(),
                    leader.path.display()
                )
            };
            (index, Err(err))
        }));
        return results;
    }
    let mut results = vec![(group[0], Ok(()))];
    results.extend(group[1..].iter().map(|&index| {
        let path = &entries[changes[index].entry].path;
        let linked =
            storepatch_rewrite::link_into_place(&leader.path, path).map_err(anyhow::Error::from);
        (index, linked)
    }));
    results
}

fn retarget(path: &Path, offsets: &[u64]) -> anyhow::Result<()> {
    storepatch_rewrite::interrupt::check(path)?;
    let target = fs_err::read_link(path)?;
    let new_target = storepatch_rewrite::apply(target.as_os_str().as_bytes(), &patches(offsets))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "cannot scrub `{}`: the symlink changed while it was scrubbed",
                path.display()
            )
        })?;
    storepatch_rewrite::retarget_symlink(path, &storepatch_rewrite::os_string(new_target))?;
    Ok(())
}

#[expect(clippy::too_many_arguments, reason = "one report, many facts")]
fn report(
    global: &GlobalArgs,
    args: &ScrubArgs,
    scan: &TreeScan,
    changes: &[Change],
    paths: &StorePaths,
    statuses: &[Outcome],
    renamed: &BTreeMap<usize, PathBuf>,
    errors: &[EntryError],
    kept: usize,
    store_dir: &StoreDir,
) -> anyhow::Result<()> {
    // Totals count what was written (or, with `--dry-run`, would be).
    let made = |index: &usize| matches!(statuses[*index], Outcome::Done | Outcome::Planned);
    let written: Vec<usize> = (0..changes.len()).filter(made).collect();
    let references: usize = written
        .iter()
        .map(|&index| changes[index].offsets.len())
        .sum();
    let store_paths: BTreeSet<&HashPart> = written
        .iter()
        .flat_map(|&index| &changes[index].store_paths)
        .map(|&path| paths.hash(path))
        .collect();
    let count = |location| {
        written
            .iter()
            .filter(|&&index| changes[index].location == location)
            .count()
    };
    let failed = statuses
        .iter()
        .filter(|&&status| status == Outcome::Failed)
        .count();
    let interrupted = statuses
        .iter()
        .filter(|&&status| status == Outcome::Interrupted)
        .count();
    let mut out = Output::new();
    if global.json {
        for (change, status) in changes.iter().zip(statuses) {
            let path = &scan.entries[change.entry].path;
            out.json(&json!({
                "type": "rewrite",
                "outcome": status.as_str(),
                "path": path_value(path),
                "kind": change.location.as_str(),
                "references": change.offsets.len(),
                "store_paths": change.store_paths.iter().map(|&path| bytes_value(paths.rendered(path))).collect::<Vec<_>>(),
                "new_path": renamed.get(&change.entry).map(|path| path_value(path)),
            }))?;
        }
        for error in errors {
            out.json(&json!({"type": "error", "path": path_value(&error.path), "message": error.message}))?;
        }
        out.json(&json!({
            "type": "summary",
            "dry_run": args.dry_run,
            "store_dir": bytes_value(store_dir.as_bytes()),
            "entries": scan.examined,
            "references": references,
            "store_paths": store_paths.len(),
            "files": count(Location::Content),
            "symlinks": count(Location::Symlink),
            "names": count(Location::Name),
            "kept_references": kept,
            "failed": failed,
            "interrupted": interrupted,
            "errors": errors.len(),
        }))?;
    } else if !global.quiet {
        for change in written.iter().map(|&index| &changes[index]) {
            let path = &scan.entries[change.entry].path;
            let mut line = format!(
                "{} {}: {} reference{} to ",
                if args.dry_run {
                    "would scrub"
                } else {
                    "scrubbed"
                },
                output::escaped(path),
                change.offsets.len(),
                if change.offsets.len() == 1 { "" } else { "s" },
            )
            .into_bytes();
            line.extend(
                change
                    .store_paths
                    .iter()
                    .flat_map(|&path| [paths.rendered(path), b", "])
                    .flatten()
                    .copied(),
            );
            line.truncate(line.len() - 2);
            line.extend_from_slice(format!(" ({})", change.location.as_str()).as_bytes());
            out.line(&line)?;
        }
    }
    if !global.json {
        for error in errors {
            output::entry_error(&error.message);
        }
    }
    out.flush()?;
    if !global.json {
        output::message(
            global.quiet,
            &format!(
                "{} {references} references to {} store paths: {} files, {} symlinks, {} names ({} entries scanned, {kept} references kept, {}{}{} errors)",
                if args.dry_run {
                    "would scrub"
                } else {
                    "scrubbed"
                },
                store_paths.len(),
                count(Location::Content),
                count(Location::Symlink),
                count(Location::Name),
                scan.examined,
                if failed > 0 {
                    format!("{failed} entries failed, ")
                } else {
                    String::new()
                },
                if interrupted > 0 {
                    format!("{interrupted} entries left unchanged by the signal, ")
                } else {
                    String::new()
                },
                errors.len(),
            ),
        );
    }
    Ok(())
}
