//! Finding references across whole trees: the part `scan`, `scrub` and `audit` share.
//!
//! Discovery reads every file once. That pass finds path-form references (and bare hashes of the
//! candidates given on the command line), and keeps every other 32-byte run of hash-alphabet bytes
//! it saw. Every live store path found in path form becomes a candidate too, exactly as Nix's
//! scanner would see it if that path were an input of the build; the kept runs are then checked
//! against those new candidates without reading anything again. Only an entry with more runs than
//! we keep (or, with `--json`, one that gained hits and needs their context) is read a second time.
//! Work fans out over rayon; results keep walk order, so output never depends on the thread count.
use std::collections::{BTreeSet, HashMap};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Context as _;
use rayon::prelude::*;
use storepatch_core::{HashPart, StoreDir, StorePath};
use storepatch_scan::{Hit, Scanner, Windows};
use storepatch_walk::{Entry, EntryKind, ReadPolicy, Visit};

use crate::progress::Progress;
/// Where in an entry a reference sits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Location {
    /// The bytes of a regular file.
    Content,
    /// The target of a symlink.
    Symlink,
    /// The entry's own file name.
    Name,
}

impl Location {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Content => "content",
            Self::Symlink => "symlink",
            Self::Name => "name",
        }
    }
}

/// The references found in one place of one entry.
#[derive(Debug)]
pub(crate) struct Finding {
    /// Index into [`TreeScan::entries`].
    pub(crate) entry: usize,
    pub(crate) location: Location,
    pub(crate) hits: Vec<Hit>,
    /// Up to [`CONTEXT_BYTES`] bytes either side of each hit, when asked for.
    pub(crate) contexts: Vec<Vec<u8>>,
}

/// A per-entry problem; the run goes on without that entry.
#[derive(Debug)]
pub(crate) struct EntryError {
    pub(crate) path: PathBuf,
    pub(crate) message: String,
}

/// The outcome of scanning some roots.
#[derive(Debug)]
pub(crate) struct TreeScan {
    pub(crate) entries: Vec<Entry>,
    pub(crate) findings: Vec<Finding>,
    pub(crate) errors: Vec<EntryError>,
    /// The scanner of the last pass: its candidates are every hash that was searched for.
    pub(crate) scanner: Scanner,
    /// Entries named like the temporary files of a storepatch run (`.storepatch-<pid>-<n>.tmp`):
    /// not scanned; see [`handle_leftovers`].
    pub(crate) leftovers: Vec<(usize, storepatch_rewrite::Leftover)>,
}

/// A leftover temporary file: removed when `clean` and its run is gone (returns the note to print),
/// otherwise reported as an error (it would end up in the output as an ordinary file).
pub(crate) fn leftover(
    entry: &Entry,
    leftover: &storepatch_rewrite::Leftover,
    clean: bool,
) -> Result<String, EntryError> {
    let path = &entry.path;
    let error = |message: String| EntryError {
        path: path.clone(),
        message,
    };
    if !clean {
        return Err(error(format!(
            "{}: temporary file left by an interrupted storepatch run (pid {}); `storepatch scrub` or `relink` removes it",
            path.display(),
            leftover.pid
        )));
    }
    match leftover.clean(path) {
        Ok(storepatch_rewrite::Cleaned::Removed) => Ok(format!(
            "note: removed {}, a temporary file left by an interrupted run (pid {})",
            path.display(),
            leftover.pid
        )),
        Ok(storepatch_rewrite::Cleaned::OwnerRunning) => Err(error(format!(
            "{}: temporary file of a storepatch run that is still going (pid {}); left alone",
            path.display(),
            leftover.pid
        ))),
        Err(err) => Err(error(error_chain(&err))),
    }
}

/// Applies [`leftover`] to every leftover of `scan`: errors join `scan.errors`, notes are returned.
pub(crate) fn handle_leftovers(scan: &mut TreeScan, clean: bool) -> Vec<String> {
    let mut notes = Vec::new();
    for (index, found) in &scan.leftovers {
        match leftover(&scan.entries[*index], found, clean) {
            Ok(note) => notes.push(note),
            Err(err) => scan.errors.push(err),
        }
    }
    scan.errors
        .sort_by(|left, right| left.path.cmp(&right.path));
    notes
}

const CONTEXT_BYTES: usize = 24;

/// With `--no-mmap`, files larger than this are streamed through the scanner.
const STREAM_ABOVE: u64 = 64 << 20;
/// Chunk size for streamed files.
const STREAM_CHUNK: usize = 1 << 20;

/// How to scan.
#[derive(Debug)]
pub(crate) struct TreeOptions {
    pub(crate) store_dir: StoreDir,
    pub(crate) candidates: Vec<StorePath>,
    pub(crate) read_policy: ReadPolicy,
    pub(crate) with_context: bool,
    pub(crate) show_progress: bool,
}

/// Walks the roots (in the order given) and finds every reference.
pub(crate) fn scan_roots(roots: &[PathBuf], options: &TreeOptions) -> anyhow::Result<TreeScan> {
    let scanner = Scanner::builder(options.store_dir.clone())
        .candidates(options.candidates.iter().cloned())
        .build();
    let budget = AtomicUsize::new(WINDOW_BUDGET);
    let progress = Progress::new("scanning", options.show_progress);
    let mut entries = Vec::new();
    let mut scans: Vec<EntryScan> = Vec::new();
    let mut errors = Vec::new();
    // Files are read while directories are still being listed.
    for root in roots {
        let (walk, root_scans) = storepatch_walk::walk_with(root, |visit| {
            // After a signal the run stops: nothing more is read.
            if storepatch_rewrite::interrupt::signal().is_some() || is_leftover(visit) {
                return EntryScan {
                    findings: Vec::new(),
                    windows: Vec::new(),
                    error: None,
                };
            }
            let scan = scan_entry(visit, &scanner, options, Some(&budget));
            progress.inc();
            scan
        })?;
        errors.extend(walk.errors.into_iter().map(|err| EntryError {
            path: err.path().to_path_buf(),
            message: error_chain(&err),
        }));
        entries.extend(walk.entries);
        scans.extend(root_scans);
    }
    progress.finish();
    for (index, scan) in scans.iter_mut().enumerate() {
        scan.place_at(index);
    }

    // Store paths found in path form whose hashes were not searched for yet.
    let known: BTreeSet<HashPart> = scanner
        .candidates()
        .iter()
        .map(|path| *path.hash())
        .collect();
    let found: HashMap<HashPart, StorePath> = scans
        .iter()
        .flat_map(|scan| &scan.findings)
        .flat_map(|finding| &finding.hits)
        .filter_map(Hit::live)
        .filter(|path| !known.contains(path.hash()))
        .map(|path| (*path.hash(), path.clone()))
        .collect();
    let scanner = if found.is_empty() {
        scanner
    } else {
        // The builder keys candidates by hash, so the map's order does not matter.
        Scanner::builder(options.store_dir.clone())
            .candidates(options.candidates.iter().cloned())
            .candidates(found.values().cloned())
            .build()
    };

    let resolved: Vec<EntryScan> = scans
        .into_par_iter()
        .zip(entries.par_iter())
        .enumerate()
        .map(|(index, (scan, entry))| resolve(index, entry, scan, &found, &scanner, options))
        .collect();
    let mut findings = Vec::new();
    for scan in resolved {
        findings.extend(scan.findings);
        errors.extend(scan.error);
    }
    errors.sort_by(|left, right| left.path.cmp(&right.path));
    errors.dedup_by(|left, right| left.path == right.path && left.message == right.message);
    let leftovers = entries
        .iter()
        .enumerate()
        .filter(|(_, entry)| entry.depth > 0 && entry.kind != EntryKind::Dir)
        .filter_map(|(index, entry)| {
            let name = entry.path.file_name()?;
            Some((index, storepatch_rewrite::Leftover::from_name(name)?))
        })
        .collect();
    Ok(TreeScan {
        entries,
        findings,
        errors,
        scanner,
        leftovers,
    })
}

/// Whether the entry is named like a storepatch temporary file (and is not the root).
fn is_leftover(visit: &Visit<'_>) -> bool {
    let entry = visit.entry();
    entry.depth > 0
        && entry.kind != EntryKind::Dir
        && storepatch_rewrite::Leftover::from_name(visit.name()).is_some()
}

/// At most this many unresolved hash-alphabet runs are kept per place (content, target, name).
const WINDOWS_PER_PLACE: usize = 4096;
/// At most this many are kept in all (40 bytes each).
const WINDOW_BUDGET: usize = 4 << 20;

/// What the first pass learnt about one entry.
struct EntryScan {
    findings: Vec<Finding>,
    /// Runs that matched no candidate, per place (empty in a second pass; flagged when cut short).
    windows: Vec<(Location, Windows)>,
    error: Option<EntryError>,
}

impl EntryScan {
    /// Records that the entry is [`TreeScan::entries`]`[index]` in every finding.
    fn place_at(&mut self, index: usize) {
        for finding in &mut self.findings {
            finding.entry = index;
        }
    }
}

/// Adds the bare hits of candidates found elsewhere; rescans the entry if its runs were not kept.
fn resolve(
    index: usize,
    entry: &Entry,
    mut scan: EntryScan,
    found: &HashMap<HashPart, StorePath>,
    scanner: &Scanner,
    options: &TreeOptions,
) -> EntryScan {
    if found.is_empty() || scan.error.is_some() || is_leftover(&Visit::detached(entry)) {
        return scan;
    }
    let mut rescan = false;
    let mut late: Vec<(Location, Vec<Hit>)> = Vec::new();
    for (location, windows) in &scan.windows {
        let hits = windows.hits_for(found);
        rescan |= windows.needs_rescan(found) || (options.with_context && !hits.is_empty());
        if !hits.is_empty() {
            late.push((*location, hits));
        }
    }
    if rescan {
        let mut scan = scan_entry(&Visit::detached(entry), scanner, options, None);
        scan.place_at(index);
        return scan;
    }
    for (location, hits) in late {
        match scan
            .findings
            .iter_mut()
            .find(|finding| finding.location == location)
        {
            Some(finding) => {
                finding.hits.extend(hits);
                finding.hits.sort_by_key(|hit| hit.hash_offset);
            }
            None => scan.findings.push(Finding {
                entry: index,
                location,
                hits,
                contexts: Vec::new(),
            }),
        }
    }
    scan.findings.sort_by_key(|finding| finding.location);
    scan
}

/// Scans one entry's name, contents or symlink target (see [`EntryScan::place_at`]). With a
/// `budget`, keeps the runs that matched no candidate (first pass); without, scans with the final
/// candidates (second pass).
fn scan_entry(
    visit: &Visit<'_>,
    scanner: &Scanner,
    options: &TreeOptions,
    budget: Option<&AtomicUsize>,
) -> EntryScan {
    let mut scan = EntryScan {
        findings: Vec::new(),
        windows: Vec::new(),
        error: None,
    };
    if let Err(err) = scan_places(visit, scanner, options, budget, &mut scan) {
        scan.findings.clear();
        scan.windows.clear();
        scan.error = Some(EntryError {
            path: visit.entry().path.clone(),
            message: format!("{err:#}"),
        });
    }
    // Names come first in the entry but sort after content for readers: content, symlink, name.
    scan.findings.sort_by_key(|finding| finding.location);
    scan
}

fn scan_places(
    visit: &Visit<'_>,
    scanner: &Scanner,
    options: &TreeOptions,
    budget: Option<&AtomicUsize>,
    scan: &mut EntryScan,
) -> anyhow::Result<()> {
    let mut record = |location, bytes: &[u8], streamed: Option<Vec<Hit>>| {
        let (hits, windows) = match (streamed, budget) {
            (Some(hits), Some(_)) => (hits, Some(overflowed())),
            (Some(hits), None) => (hits, None),
            (None, Some(budget)) => {
                let limit = take_budget(budget);
                let (hits, windows) = scanner.scan_keeping_windows(bytes, limit);
                budget.fetch_add(limit - windows.windows.len(), Ordering::Relaxed);
                (hits, Some(windows))
            }
            (None, None) => (scanner.scan(bytes), None),
        };
        if let Some(windows) = windows
            && (windows.overflowed || !windows.windows.is_empty())
        {
            scan.windows.push((location, windows));
        }
        if !hits.is_empty() {
            let contexts = if options.with_context {
                hits.iter().map(|hit| context(bytes, hit)).collect()
            } else {
                Vec::new()
            };
            scan.findings.push(Finding {
                // Not known while the walk is still going: see `EntryScan::place_at`.
                entry: usize::MAX,
                location,
                hits,
                contexts,
            });
        }
    };
    let entry = visit.entry();
    // The root's own name is outside the tree (it is often `$out` itself).
    if entry.depth > 0 {
        record(Location::Name, visit.name().as_bytes(), None);
    }
    match entry.kind {
        // Without mmap, big files are streamed in chunks rather than read whole into memory. The
        // scanner reports the same hits whatever the chunking; the context and the unresolved
        // runs are not kept (so a later candidate means reading such a file again).
        EntryKind::File if options.read_policy == ReadPolicy::Read && entry.len > STREAM_ABOVE => {
            let hits = scanner.scan_reader(visit.open()?, STREAM_CHUNK)?;
            record(Location::Content, &[], Some(hits));
        }
        EntryKind::File => {
            visit.read_with(options.read_policy, |contents| {
                record(Location::Content, contents, None);
            })?;
        }
        EntryKind::Symlink => {
            let target = visit.read_link()?;
            record(Location::Symlink, target.as_os_str().as_bytes(), None);
        }
        EntryKind::Dir | EntryKind::Other => {}
    }
    Ok(())
}

fn overflowed() -> Windows {
    Windows {
        overflowed: true,
        ..Windows::default()
    }
}

/// Reserves up to [`WINDOWS_PER_PLACE`] windows from the shared budget.
fn take_budget(budget: &AtomicUsize) -> usize {
    let mut taken = 0;
    let _ = budget.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
        taken = left.min(WINDOWS_PER_PLACE);
        Some(left - taken)
    });
    taken
}

fn context(bytes: &[u8], hit: &Hit) -> Vec<u8> {
    let start = usize::try_from(hit.offset)
        .unwrap_or(usize::MAX)
        .min(bytes.len());
    let end = start.saturating_add(hit.len).min(bytes.len());
    bytes[start.saturating_sub(CONTEXT_BYTES)..end.saturating_add(CONTEXT_BYTES).min(bytes.len())]
        .to_vec()
}

/// `err` and its causes on one line.
pub(crate) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// Reads `--candidates` files and `--candidates-from-env` into store paths.
pub(crate) fn load_candidates(
    store_dir: &StoreDir,
    files: &[PathBuf],
    from_env: bool,
) -> anyhow::Result<Vec<StorePath>> {
    let mut candidates = Vec::new();
    for file in files {
        let text = fs_err::read(file).map_err(|err| crate::exit::cannot("read", file, &err))?;
        for (number, line) in text.split(|&byte| byte == b'\n').enumerate() {
            let line = line.trim_ascii();
            if line.is_empty() || line.starts_with(b"#") {
                continue;
            }
            let (path, _rest) = store_dir
                .parse_path_prefix(line)
                .with_context(|| format!("{}:{}: not a store path", file.display(), number + 1))?;
            candidates.push(path);
        }
    }
    if from_env {
        let scanner = Scanner::builder(store_dir.clone()).build();
        for (_name, value) in std::env::vars_os() {
            candidates.extend(
                scanner
                    .scan(value.as_bytes())
                    .iter()
                    .filter_map(Hit::live)
                    .cloned(),
            );
        }
    }
    candidates.sort();
    candidates.dedup();
    Ok(candidates)
}

/// Parses `--keep`/`--only` style store path arguments (anything below a store path is allowed).
pub(crate) fn parse_store_paths(
    store_dir: &StoreDir,
    paths: &[PathBuf],
) -> anyhow::Result<Vec<StorePath>> {
    paths
        .iter()
        .map(|path| {
            store_dir
                .parse_path_prefix(path.as_os_str().as_bytes())
                .map(|(store_path, _)| store_path)
                .with_context(|| format!("`{}` is not a store path", path.display()))
        })
        .collect()
}

/// Renders a hit's target as `<storedir>/<hash>-<name>`, or with `eeee…` when scrubbed.
pub(crate) fn render_target(store_dir: &StoreDir, hit: &Hit) -> Vec<u8> {
    match &hit.target {
        storepatch_scan::Target::Live(path) => store_dir.render(path),
        storepatch_scan::Target::Scrubbed { name } => {
            let mut out = store_dir.prefix().to_vec();
            out.extend_from_slice(&storepatch_core::SCRUBBED_HASH);
            if !name.is_empty() {
                out.push(b'-');
                out.extend_from_slice(name);
            }
            out
        }
    }
}

/// Checks that `root` is a directory (not a symlink to one).
pub(crate) fn require_directory(root: &Path) -> anyhow::Result<()> {
    let metadata =
        fs_err::symlink_metadata(root).map_err(|err| crate::exit::cannot("read", root, &err))?;
    anyhow::ensure!(
        metadata.file_type().is_dir(),
        "cannot scrub `{}`: not a directory",
        root.display()
    );
    Ok(())
}
