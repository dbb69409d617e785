//! `storepatch scrub`: rewrite every live store reference's hash part to 32 `e`s.
//!
//! Order of work: discover (two passes, see `tree`), plan, make the affected directories writable,
//! rewrite file contents in parallel (one temp file + rename each; hard links inside the tree are
//! re-linked to the new file), retarget symlinks, then rename entries deepest first, and finally
//! restore directory modes. Each step only touches entries that hold a selected reference.
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use rayon::prelude::*;
use serde_json::json;
use storepatch_core::{HashPart, SCRUBBED_HASH, StoreDir};
use storepatch_rewrite::{Patch, WritableDirs};
use storepatch_scan::Hit;

use crate::cli::{GlobalArgs, ScrubArgs};
use crate::output::{self, Output, bytes_value, path_value};
use crate::tree::{self, EntryError, Location, TreeScan};

/// The changes planned for one place of one entry.
struct Change {
    entry: usize,
    location: Location,
    /// Offsets of the hash parts to overwrite.
    offsets: Vec<u64>,
    /// Rendered store paths of the scrubbed references, sorted and unique.
    store_paths: BTreeSet<Vec<u8>>,
}

pub(crate) fn run(global: &GlobalArgs, args: &ScrubArgs) -> anyhow::Result<ExitCode> {
    for root in &args.paths {
        tree::require_directory(root)?;
    }
    let options = super::tree_options(global, &args.discovery, false)?;
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

    let mut scan = tree::scan_roots(&args.paths, &options)?;
    let mut kept = 0usize;
    let mut changes = Vec::new();
    for finding in &scan.findings {
        let mut change = Change {
            entry: finding.entry,
            location: finding.location,
            offsets: Vec::new(),
            store_paths: BTreeSet::new(),
        };
        for hit in &finding.hits {
            if selected(hit) {
                change.offsets.push(hit.hash_offset);
                change
                    .store_paths
                    .insert(tree::render_target(&store_dir, hit));
            } else if hit.live().is_some() {
                kept += 1;
            }
        }
        if !change.offsets.is_empty() {
            changes.push(change);
        }
    }

    let mut errors: Vec<EntryError> = std::mem::take(&mut scan.errors);
    let renamed = if args.dry_run {
        BTreeMap::new()
    } else {
        apply(&scan, &changes, &mut errors)?
    };
    report(
        global, args, &scan, &changes, &renamed, &errors, kept, &store_dir,
    )?;
    Ok(ExitCode::from(if errors.is_empty() {
        0
    } else {
        crate::exit::ERROR
    }))
}

/// Carries out the plan. Returns the new paths of renamed entries.
fn apply(
    scan: &TreeScan,
    changes: &[Change],
    errors: &mut Vec<EntryError>,
) -> anyhow::Result<BTreeMap<usize, PathBuf>> {
    let entries = &scan.entries;
    let parents: BTreeSet<&Path> = changes
        .iter()
        .filter_map(|change| entries[change.entry].path.parent())
        .collect();
    let mut writable = WritableDirs::make_writable(parents)?;

    // Contents: one rewrite per inode; other names of the same inode in the tree are re-linked.
    let mut by_inode: BTreeMap<(u64, u64), Vec<&Change>> = BTreeMap::new();
    for change in changes
        .iter()
        .filter(|change| change.location == Location::Content)
    {
        let entry = &entries[change.entry];
        by_inode
            .entry((entry.dev, entry.ino))
            .or_default()
            .push(change);
    }
    let groups: Vec<Vec<&Change>> = by_inode.into_values().collect();
    let content_errors: Vec<EntryError> = groups
        .par_iter()
        .flat_map_iter(|group| rewrite_group(scan, group))
        .collect();
    errors.extend(content_errors);

    let link_errors: Vec<EntryError> = changes
        .par_iter()
        .filter(|change| change.location == Location::Symlink)
        .filter_map(|change| {
            let path = &entries[change.entry].path;
            retarget(path, &change.offsets).err().map(|err| EntryError {
                path: path.clone(),
                message: format!("{err:#}"),
            })
        })
        .collect();
    errors.extend(link_errors);

    // Names last, deepest first (reverse walk order puts every child before its parent), so a
    // renamed directory never invalidates a path still to be renamed.
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
        let patches = patches(&change.offsets);
        let Some(new_name) = storepatch_rewrite::apply(name.as_bytes(), &patches) else {
            continue;
        };
        match storepatch_rewrite::rename_entry(path, &storepatch_rewrite::os_string(new_name)) {
            Ok(new_path) => {
                writable.renamed(path, &new_path);
                renamed.insert(change.entry, new_path);
            }
            Err(err) => errors.push(EntryError {
                path: path.clone(),
                message: tree::error_chain(&err),
            }),
        }
    }
    writable.restore()?;
    errors.sort_by(|left, right| left.path.cmp(&right.path));
    Ok(renamed)
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

/// Rewrites the first name of an inode and links the others to the result.
fn rewrite_group(scan: &TreeScan, group: &[&Change]) -> Vec<EntryError> {
    let entries = &scan.entries;
    let leader = &entries[group[0].entry];
    // Opened without following a symlink, and checked to be the file the scan read.
    let result = storepatch_walk::Visit::detached(leader)
        .reopen()
        .and_then(|(file, metadata)| {
            let contents = storepatch_walk::read_from(
                &file,
                &leader.path,
                leader.len,
                storepatch_walk::ReadPolicy::default(),
            )?;
            Ok((contents, metadata))
        })
        .map_err(anyhow::Error::from)
        .and_then(|(contents, metadata)| {
            // The file must still hold a hash at every offset the scan saw.
            for &offset in &group[0].offsets {
                let start = usize::try_from(offset).unwrap_or(usize::MAX);
                let hash = contents.get(start..start.saturating_add(32));
                anyhow::ensure!(
                    hash.is_some_and(|hash| HashPart::parse(hash).is_ok()),
                    "changed while it was scrubbed (no store hash at offset {offset} any more)"
                );
            }
            storepatch_rewrite::replace_file(
                &leader.path,
                &metadata,
                &contents,
                &patches(&group[0].offsets),
            )?;
            Ok(())
        });
    if let Err(err) = result {
        return vec![EntryError {
            path: leader.path.clone(),
            message: format!("{err:#}"),
        }];
    }
    group[1..]
        .iter()
        .filter_map(|change| {
            let path = &entries[change.entry].path;
            storepatch_rewrite::link_into_place(&leader.path, path)
                .err()
                .map(|err| EntryError {
                    path: path.clone(),
                    message: tree::error_chain(&err),
                })
        })
        .collect()
}

fn retarget(path: &Path, offsets: &[u64]) -> anyhow::Result<()> {
    let target = fs_err::read_link(path)?;
    let new_target = storepatch_rewrite::apply(target.as_os_str().as_bytes(), &patches(offsets))
        .ok_or_else(|| {
            anyhow::anyhow!("symlink `{}` changed while it was scrubbed", path.display())
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
    renamed: &BTreeMap<usize, PathBuf>,
    errors: &[EntryError],
    kept: usize,
    store_dir: &StoreDir,
) -> anyhow::Result<()> {
    let references: usize = changes.iter().map(|change| change.offsets.len()).sum();
    let store_paths: BTreeSet<&Vec<u8>> = changes
        .iter()
        .flat_map(|change| &change.store_paths)
        .collect();
    let count = |location| {
        changes
            .iter()
            .filter(|change| change.location == location)
            .count()
    };
    let mut out = Output::new();
    if global.json {
        for change in changes {
            let path = &scan.entries[change.entry].path;
            out.json(&json!({
                "type": "rewrite",
                "path": path_value(path),
                "kind": change.location.as_str(),
                "references": change.offsets.len(),
                "store_paths": change.store_paths.iter().map(|path| bytes_value(path)).collect::<Vec<_>>(),
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
            "entries": scan.entries.len(),
            "references": references,
            "store_paths": store_paths.len(),
            "files": count(Location::Content),
            "symlinks": count(Location::Symlink),
            "names": count(Location::Name),
            "kept_references": kept,
            "errors": errors.len(),
        }))?;
    } else {
        for change in changes {
            let path = &scan.entries[change.entry].path;
            let mut line = format!(
                "{} {}: {} reference{} to ",
                if args.dry_run {
                    "would scrub"
                } else {
                    "scrubbed"
                },
                path.display(),
                change.offsets.len(),
                if change.offsets.len() == 1 { "" } else { "s" },
            )
            .into_bytes();
            line.extend(
                change
                    .store_paths
                    .iter()
                    .flat_map(|path| [path.as_slice(), b", "])
                    .flatten()
                    .copied(),
            );
            line.truncate(line.len() - 2);
            line.extend_from_slice(format!(" ({})", change.location.as_str()).as_bytes());
            if !global.quiet {
                out.line(&line)?;
            }
        }
        for error in errors {
            output::entry_error(&error.message);
        }
    }
    out.flush()?;
    if !global.json {
        output::message(
            global.quiet,
            &format!(
                "{} {references} references to {} store paths: {} files, {} symlinks, {} names ({} entries scanned, {kept} references kept, {} errors)",
                if args.dry_run {
                    "would scrub"
                } else {
                    "scrubbed"
                },
                store_paths.len(),
                count(Location::Content),
                count(Location::Symlink),
                count(Location::Name),
                scan.entries.len(),
                errors.len(),
            ),
        );
    }
    Ok(())
}
