//! `storepatch scan`: report every store reference in some trees.
use std::collections::BTreeMap;
use std::process::ExitCode;

use rayon::prelude::*;
use serde_json::json;

use crate::cli::{GlobalArgs, ScanArgs};
use crate::output::{self, Output, path_value};
use crate::tree::{self, TreeScan};

pub(crate) fn run(global: &GlobalArgs, args: &ScanArgs) -> anyhow::Result<ExitCode> {
    let mut options = super::tree_options(
        global,
        &args.discovery,
        global.json,
        storepatch_tree::Keep::REPORTED,
    )?;
    // A scan reads each byte once and rewrites nothing: a large file read in pieces into a buffer
    // the thread reuses is scanned while still in the cache, which costs less than taking each
    // page of a mapping in (on the real corpus, 3% less time and 15% less user time), for the
    // same peak memory. A file with nowhere to cut is mapped, unless `--no-mmap` says not to.
    options.tree.read_in_pieces = true;
    let mut scan = tree::scan_roots(&args.paths, &options)?;
    tree::handle_leftovers(&mut scan, false);
    let mut out = Output::new();
    let totals = Totals::of(&scan);
    if global.json {
        write_json(&mut out, &scan, &options.store_dir, &totals)?;
    } else if global.quiet {
        // Like `grep -q`: the exit status is the answer.
    } else if args.files {
        write_files(&mut out, &scan, &options.store_dir)?;
    } else {
        write_summary(&mut out, &scan, &options.store_dir)?;
    }
    out.flush()?;
    if !global.json {
        for error in &scan.errors {
            output::entry_error(&error.message);
        }
        output::message(
            global.quiet,
            &format!(
                "{} live references to {} store paths in {} of {} entries; {} scrubbed references",
                totals.live,
                totals.live_paths,
                totals.files_with_live,
                totals.files,
                totals.scrubbed
            ),
        );
    }
    // grep's convention: 0 found, 1 none, 2 trouble (even if something was found).
    let code = match (scan.errors.is_empty(), totals.live > 0) {
        (false, _) => crate::exit::ERROR,
        (true, true) => 0,
        (true, false) => 1,
    };
    // The findings of a large tree are many small allocations: the process ends right after
    // this, and the system takes its memory back at once, faster than freeing each one.
    std::mem::forget(scan);
    Ok(ExitCode::from(code))
}

struct Totals {
    files: usize,
    files_with_live: usize,
    live: usize,
    live_paths: usize,
    scrubbed: usize,
}

impl Totals {
    fn of(scan: &TreeScan) -> Self {
        let mut live_paths = std::collections::BTreeSet::new();
        let (mut live, mut scrubbed, mut files_with_live) = (0, 0, 0);
        // Findings come in entry order, so an entry's findings are next to each other.
        let mut last_live_entry = None;
        for finding in &scan.findings {
            for hit in &finding.hits {
                if let Some(path) = hit.live() {
                    live += 1;
                    live_paths.insert(path.hash());
                    if last_live_entry != Some(finding.entry) {
                        last_live_entry = Some(finding.entry);
                        files_with_live += 1;
                    }
                } else {
                    scrubbed += 1;
                }
            }
        }
        Self {
            files: scan.examined,
            files_with_live,
            live,
            live_paths: live_paths.len(),
            scrubbed,
        }
    }
}

/// One row per store path: how many entries refer to it, and how often.
fn write_summary(
    out: &mut Output,
    scan: &TreeScan,
    store_dir: &storepatch_core::StoreDir,
) -> std::io::Result<()> {
    // Keyed by (scrubbed, rendered path) so live paths come first, each group sorted.
    let mut rows: BTreeMap<(bool, Vec<u8>), (std::collections::BTreeSet<usize>, usize)> =
        BTreeMap::new();
    for finding in &scan.findings {
        for hit in &finding.hits {
            let key = (hit.live().is_none(), shown_store_path(scan, store_dir, hit));
            let row = rows.entry(key).or_default();
            row.0.insert(finding.entry);
            row.1 += 1;
        }
    }
    let width = rows.keys().map(|(_, path)| path.len()).max().unwrap_or(0);
    for ((scrubbed, path), (entries, count)) in &rows {
        let mut line = path.clone();
        line.resize(width, b' ');
        line.extend_from_slice(
            format!(
                "  {:>6} entries  {:>7} references{}",
                entries.len(),
                count,
                if *scrubbed { "  (scrubbed)" } else { "" }
            )
            .as_bytes(),
        );
        out.line(&line)?;
    }
    Ok(())
}

/// The store path a hit is reported under. Bare hits carry the candidate's full name; path hits
/// may carry a shorter one (cut at junk), so live references show the candidate with their hash,
/// and scrubbed ones their `eeee…` form.
fn shown_store_path(
    scan: &TreeScan,
    store_dir: &storepatch_core::StoreDir,
    hit: &storepatch_scan::Hit,
) -> Vec<u8> {
    let mut shown = Vec::new();
    push_shown_store_path(&mut shown, scan, store_dir, hit);
    shown
}

/// Appends [`shown_store_path`] to `out`, with nothing cloned or allocated on the way.
fn push_shown_store_path(
    out: &mut Vec<u8>,
    scan: &TreeScan,
    store_dir: &storepatch_core::StoreDir,
    hit: &storepatch_scan::Hit,
) {
    match &hit.target {
        storepatch_scan::Target::Live(path) => {
            store_dir.render_into(out, candidate_for(scan, path));
        }
        storepatch_scan::Target::Scrubbed { name } => store_dir.render_scrubbed_into(out, name),
    }
}

/// The candidate with the same hash as `path` (the name a path hit carries may be cut short).
fn candidate_for<'a>(
    scan: &'a TreeScan,
    path: &'a storepatch_core::StorePath,
) -> &'a storepatch_core::StorePath {
    let candidates = scan.scanner.candidates();
    candidates
        .binary_search_by(|candidate| candidate.hash().cmp(path.hash()))
        .map_or(path, |index| &candidates[index])
}

/// The `reference` records of `findings` into `records` (cleared first), one line each (newline
/// included), byte for byte what `serde_json` writes for them: keys sorted, as its map orders
/// them.
fn render_references(
    records: &mut Vec<u8>,
    scan: &TreeScan,
    store_dir: &storepatch_core::StoreDir,
    findings: &[storepatch_tree::Finding],
) {
    records.clear();
    records.reserve(
        findings
            .iter()
            .map(|finding| records_len(scan, store_dir, finding))
            .sum(),
    );
    // The path of a finding is the same in each of its records: rendered once.
    let mut path_field = Vec::with_capacity(256);
    let mut store_path = Vec::with_capacity(256);
    for finding in findings {
        path_field.clear();
        path_field.extend_from_slice(b",\"path\":");
        output::push_bytes_value(
            &mut path_field,
            scan.entries[finding.entry]
                .path
                .as_os_str()
                .as_encoded_bytes(),
        );
        // `kind` sorts before `offset` and `path`: the record holds it first, this tail after.
        let kind: &[u8] = match finding.location {
            tree::Location::Content => b",\"kind\":\"content\",\"offset\":",
            tree::Location::Symlink => b",\"kind\":\"symlink\",\"offset\":",
            tree::Location::Name => b",\"kind\":\"name\",\"offset\":",
        };
        for (index, hit) in finding.hits.iter().enumerate() {
            let live = hit.live();
            records.extend_from_slice(b"{\"context\":");
            match finding.contexts.get(index) {
                Some(context) => output::push_bytes_value(records, context),
                None => records.extend_from_slice(b"null"),
            }
            records.extend_from_slice(match hit.form {
                storepatch_scan::Form::Path => b",\"form\":\"path\",\"hash\":",
                storepatch_scan::Form::Bare => b",\"form\":\"bare\",\"hash\":",
            });
            match live {
                // Nix base-32 needs no escaping.
                Some(path) => {
                    records.push(b'"');
                    records.extend_from_slice(path.hash().as_bytes());
                    records.push(b'"');
                }
                None => records.extend_from_slice(b"null"),
            }
            records.extend_from_slice(kind);
            output::push_json_u64(records, hit.offset);
            records.extend_from_slice(&path_field);
            records.extend_from_slice(if live.is_none() {
                b",\"scrubbed\":true,\"store_path\":"
            } else {
                b",\"scrubbed\":false,\"store_path\":"
            });
            store_path.clear();
            push_shown_store_path(&mut store_path, scan, store_dir, hit);
            output::push_bytes_value(records, &store_path);
            records.extend_from_slice(b",\"type\":\"reference\"}\n");
        }
    }
}

/// The bytes of the fixed parts of a `reference` record: keys, punctuation, the longest `form`,
/// `kind`, `scrubbed` and `hash` values, a 20-digit offset and the quotes of the strings.
const RECORD_FIXED_LEN: usize = 200;

/// The length of `finding`'s records as [`render_references`] writes them when no byte needs
/// escaping (escapes only lengthen them): the room to make for them.
fn records_len(
    scan: &TreeScan,
    store_dir: &storepatch_core::StoreDir,
    finding: &storepatch_tree::Finding,
) -> usize {
    let path = scan.entries[finding.entry].path.as_os_str().len();
    let contexts: usize = finding.contexts.iter().map(<[u8]>::len).sum();
    let store_paths: usize = finding
        .hits
        .iter()
        .map(|hit| {
            let name = match &hit.target {
                storepatch_scan::Target::Live(path) => candidate_for(scan, path).name().len(),
                storepatch_scan::Target::Scrubbed { name } => name.len(),
            };
            store_dir.prefix().len() + storepatch_core::HASH_LEN + 1 + name
        })
        .sum();
    finding.hits.len() * (RECORD_FIXED_LEN + path) + contexts + store_paths
}

/// One line per reference: `path:offset: kind store_path`.
fn write_files(
    out: &mut Output,
    scan: &TreeScan,
    store_dir: &storepatch_core::StoreDir,
) -> std::io::Result<()> {
    for finding in &scan.findings {
        let path = &scan.entries[finding.entry].path;
        for hit in &finding.hits {
            let mut line = format!(
                "{}:{}: {} ",
                output::escaped(path),
                hit.offset,
                finding.location.as_str()
            )
            .into_bytes();
            tree::render_target_into(store_dir, hit, &mut line);
            match (hit.live().is_none(), hit.form) {
                (true, _) => line.extend_from_slice(b" (scrubbed)"),
                (false, storepatch_scan::Form::Bare) => line.extend_from_slice(b" (bare hash)"),
                (false, storepatch_scan::Form::Path) => {}
            }
            out.line(&line)?;
        }
    }
    Ok(())
}

/// Findings rendered per block of [`write_json`]: enough that a block is worth a task, few enough
/// that the blocks of one wave stay small.
const JSON_BLOCK: usize = 256;
/// Blocks rendered at once, per thread: the records in memory at a time are those of one wave.
const JSON_BLOCKS_PER_THREAD: usize = 4;

fn write_json(
    out: &mut Output,
    scan: &TreeScan,
    store_dir: &storepatch_core::StoreDir,
    totals: &Totals,
) -> std::io::Result<()> {
    // The reference records are rendered in blocks on the thread pool, a wave at a time, and
    // written in order: the same bytes as one after the other, for any number of threads.
    // Each wave renders into the buffers of the one before: its pages are written to again
    // rather than mapped anew.
    let wave = JSON_BLOCK * JSON_BLOCKS_PER_THREAD * rayon::current_num_threads().max(1);
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    for findings in scan.findings.chunks(wave) {
        let count = findings.len().div_ceil(JSON_BLOCK);
        if blocks.len() < count {
            blocks.resize_with(count, Vec::new);
        }
        blocks[..count]
            .par_iter_mut()
            .zip(findings.par_chunks(JSON_BLOCK))
            .for_each(|(records, block)| render_references(records, scan, store_dir, block));
        for block in &blocks[..count] {
            out.raw(block)?;
        }
    }
    for error in &scan.errors {
        out.json(&json!({
            "type": "error",
            "path": path_value(&error.path),
            "message": error.message,
        }))?;
    }
    out.json(&json!({
        "type": "summary",
        "entries": totals.files,
        "entries_with_references": totals.files_with_live,
        "references": totals.live,
        "store_paths": totals.live_paths,
        "scrubbed_references": totals.scrubbed,
        "errors": scan.errors.len(),
    }))
}
