//! Finding references across whole trees: the pipeline `scan`, `scrub`, `restore` and `audit` share.
//!
//! Discovery reads every file once. That pass finds path-form references (and bare hashes of the
//! candidates given on the command line), and keeps every other 32-byte run of hash-alphabet bytes
//! it saw. Every live store path found in path form becomes a candidate too, exactly as Nix's
//! scanner would see it if that path were an input of the build; the kept runs are then checked
//! against those new candidates without reading anything again. Only an entry with more runs than
//! we keep (or, with `--json`, one that gained hits and needs their context) is read a second time.
//! Work fans out over rayon; results keep walk order, so output never depends on the thread count.
//!
//! `scan`, `scrub`, `restore` and `audit` all start from [`scan_roots`]; a Rust caller gets the
//! same [`TreeScan`] without the command line. Progress is reported through [`Progress`]; nothing
//! here prints.
#![deny(missing_docs)]
use std::collections::{BTreeSet, HashMap};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use rayon::prelude::*;
use storepatch_core::{HashPart, StoreDir, StorePath};
use storepatch_scan::{Hit, Scanner, Windows};
use storepatch_walk::{Entry, EntryKind, ReadPolicy, Visit};

mod context;
mod voice;
pub use context::Contexts;
use context::ContextsBuilder;
pub use voice::in_one_voice;

/// Where in an entry a reference sits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Location {
    /// The bytes of a regular file.
    Content,
    /// The target of a symlink.
    Symlink,
    /// The entry's own file name.
    Name,
}

impl Location {
    /// The word used in reports: `content`, `symlink` or `name`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Content => "content",
            Self::Symlink => "symlink",
            Self::Name => "name",
        }
    }
}

/// The references found in one place of one entry.
#[derive(Debug)]
pub struct Finding {
    /// Index into [`TreeScan::entries`].
    pub entry: usize,
    /// Where in the entry the hits are.
    pub location: Location,
    /// The references, in offset order.
    pub hits: Vec<Hit>,
    /// Up to [`CONTEXT_BYTES`] bytes either side of each hit, when asked for (empty otherwise).
    pub contexts: Contexts,
}

/// A per-entry problem; the run goes on without that entry.
#[derive(Debug)]
pub struct EntryError {
    /// The entry.
    pub path: PathBuf,
    /// What went wrong, with its causes on one line.
    pub message: String,
}

/// The outcome of scanning some roots.
#[derive(Debug)]
pub struct TreeScan {
    /// The entries of every root that [`TreeOptions::keep`] keeps, in walk order.
    pub entries: Vec<Entry>,
    /// How many entries the roots have, kept or not.
    pub examined: usize,
    /// The references found, in entry order, then by [`Location`].
    pub findings: Vec<Finding>,
    /// Per-entry problems, sorted by path.
    pub errors: Vec<EntryError>,
    /// The scanner of the last pass: its candidates are every hash that was searched for.
    pub scanner: Scanner,
    /// Entries named like the temporary files of a storepatch run (`.storepatch-<pid>-<n>.tmp`):
    /// not scanned; see [`handle_leftovers`].
    pub leftovers: Vec<(usize, storepatch_rewrite::Leftover)>,
    /// What a [`ContentWriter`] wrote during the first pass, by entry index, in entry order.
    /// Boxed as the first pass made them: a scrub writes most files there, and taken out of
    /// their boxes they would all be held a second time.
    pub written: Vec<(usize, Box<Written>)>,
}

/// Writes a file while the first pass holds its contents, so that a command that changes most
/// of the files it finds references in (`scrub`) reads each of them once, not once to find the
/// references and again to rewrite them.
///
/// It only sees the hits of that first pass: a candidate found later (in path form elsewhere in
/// the tree) can add hits to a file already written, which [`TreeScan::findings`] then holds next
/// to the written ones, for the caller to write in a second go.
pub trait ContentWriter: Sync {
    /// Called on a regular file with the contents the first pass read and the references found
    /// in them (never empty). Returns what was written, or `None` to leave the file to the caller
    /// (nothing written).
    ///
    /// The file's directory has been listed in full before any of its files is visited, so a
    /// temporary file made and renamed there is never seen by the walk.
    fn write_content(&self, visit: &Visit<'_>, contents: &[u8], hits: &[Hit]) -> Option<Written>;

    /// Whether [`ContentWriter::write_content`] may write anything. A writer that never does lets
    /// a file read in pieces (`--no-mmap`) stay that way when it has references; otherwise such a
    /// file is read again whole for the writer.
    fn writes(&self) -> bool {
        true
    }
}

/// Writes nothing.
impl ContentWriter for () {
    fn write_content(&self, _: &Visit<'_>, _: &[u8], _: &[Hit]) -> Option<Written> {
        None
    }

    fn writes(&self) -> bool {
        false
    }
}

/// A file a [`ContentWriter`] wrote (or tried to) during the first pass. Held for every such
/// file until the run ends: no room beyond what it says, and its error (rare) boxed.
#[derive(Debug)]
pub struct Written {
    /// The `hash_offset`s of the hits it changed, sorted.
    pub offsets: Box<[u64]>,
    /// Whether the new file is in place; on an error the file is unchanged.
    pub result: Result<(), Box<storepatch_rewrite::Error>>,
}

/// Nothing written, and no error.
impl Default for Written {
    fn default() -> Self {
        Self {
            offsets: Box::default(),
            result: Ok(()),
        }
    }
}

impl Written {
    /// The hits at `offsets` (sorted) written, or not, as `result` says.
    pub fn new(
        offsets: impl Into<Box<[u64]>>,
        result: Result<(), storepatch_rewrite::Error>,
    ) -> Self {
        Self {
            offsets: offsets.into(),
            result: result.map_err(Box::new),
        }
    }
}

/// A leftover temporary file that [`leftover`] removed.
#[derive(Debug)]
pub struct Removed {
    /// The file that was removed.
    pub path: PathBuf,
    /// The process id of the run that left it.
    pub pid: u32,
}

impl std::fmt::Display for Removed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "note: removed {}, a temporary file left by an interrupted run (pid {})",
            self.path.display(),
            self.pid
        )
    }
}

/// A leftover temporary file: removed when `clean` and its run is gone, otherwise reported as an
/// error (it would end up in the output as an ordinary file).
///
/// # Errors
///
/// The leftover is kept (not cleaning, or its run is still going) or could not be removed.
pub fn leftover(
    entry: &Entry,
    leftover: &storepatch_rewrite::Leftover,
    clean: bool,
) -> Result<Removed, EntryError> {
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
        Ok(storepatch_rewrite::Cleaned::Removed) => Ok(Removed {
            path: path.clone(),
            pid: leftover.pid,
        }),
        Ok(storepatch_rewrite::Cleaned::OwnerRunning) => Err(error(format!(
            "{}: temporary file of a storepatch run that is still going (pid {}); left alone",
            path.display(),
            leftover.pid
        ))),
        Err(err) => Err(error(error_chain(&err))),
    }
}

/// Applies [`leftover`] to every leftover of `scan`: errors join `scan.errors`, the removed files
/// are returned.
pub fn handle_leftovers(scan: &mut TreeScan, clean: bool) -> Vec<Removed> {
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

/// How many bytes either side of a hit [`Finding::contexts`] keeps.
pub const CONTEXT_BYTES: usize = 24;

/// With `--no-mmap`, files larger than this are read in pieces of this size (see
/// [`scan_in_pieces`]): the files the default policy maps.
const PIECE_LEN: usize = 256 << 10;
/// A file read in pieces that has nowhere to cut for this long (it is made of store-path bytes
/// alone) is streamed through the scanner instead.
const STREAM_ABOVE: usize = 64 << 20;
/// With [`TreeOptions::read_in_pieces`] and a policy that maps: a file with nowhere to cut for
/// this long is mapped instead, rather than read whole into a buffer that grows with it.
pub const MAP_UNCUT_ABOVE: usize = 4 << 20;
/// Chunk size for streamed files.
const STREAM_CHUNK: usize = 1 << 20;

/// How to scan.
#[derive(Debug)]
pub struct TreeOptions {
    /// The store directory references are found in.
    pub store_dir: StoreDir,
    /// Store paths whose bare hashes are searched for too.
    pub candidates: Vec<StorePath>,
    /// How files are read.
    pub read_policy: ReadPolicy,
    /// Read large files in pieces into the thread's buffer even where `read_policy` would map
    /// them (a scan that only reads: each piece is scanned while it is still in the cache); a file
    /// with nowhere to cut for [`MAP_UNCUT_ABOVE`] bytes is then read by `read_policy` instead.
    pub read_in_pieces: bool,
    /// Whether [`Finding::contexts`] is filled in.
    pub with_context: bool,
    /// Which entries [`TreeScan::entries`] holds.
    pub keep: Keep,
}

/// Which entries a [`TreeScan`] keeps. An entry with findings, an error or a leftover's name is
/// always kept; a command that needs nothing of the others lets go of them during the walk, so a
/// run over a large tree holds only what it reports on.
#[derive(Clone, Copy, Debug, Default)]
pub enum Keep {
    /// Every entry.
    #[default]
    All,
    /// Only the entries with something to report, and those the function says yes to.
    Reported(fn(&Entry) -> bool),
}

impl Keep {
    /// Only the entries with something to report.
    pub const REPORTED: Self = Self::Reported(|_| false);

    fn keeps(self, entry: &Entry) -> bool {
        match self {
            Self::All => true,
            Self::Reported(also) => also(entry),
        }
    }
}

/// Told about the run's progress; called from many threads at once.
pub trait Progress: Sync {
    /// One more entry was read in the first pass.
    fn entry_done(&self);
}

/// No progress reporting.
impl Progress for () {
    fn entry_done(&self) {}
}

/// An error that stops the whole scan.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A root could not be walked.
    #[error(transparent)]
    Walk(#[from] storepatch_walk::Error),
}

/// Walks the roots (in the order given) and finds every reference.
///
/// # Errors
///
/// A root cannot be examined; problems below a root are [`TreeScan::errors`] instead.
pub fn scan_roots(
    roots: &[PathBuf],
    options: &TreeOptions,
    progress: &dyn Progress,
) -> Result<TreeScan, Error> {
    scan_roots_writing(roots, options, progress, &())
}

/// [`scan_roots`], handing each file with references to `writer` while its contents are at hand.
///
/// # Errors
///
/// A root cannot be examined; problems below a root are [`TreeScan::errors`] instead.
pub fn scan_roots_writing(
    roots: &[PathBuf],
    options: &TreeOptions,
    progress: &dyn Progress,
    writer: &dyn ContentWriter,
) -> Result<TreeScan, Error> {
    let scanner = Scanner::builder(options.store_dir.clone())
        .candidates(options.candidates.iter().cloned())
        .build();
    let budget = AtomicUsize::new(WINDOW_BUDGET);
    let mut entries = Vec::new();
    let mut examined = 0;
    let mut scans: Vec<Option<Box<EntryScan>>> = Vec::new();
    let mut errors = Vec::new();
    // Files are read while directories are still being listed.
    for root in roots {
        let (walk, root_scans) = storepatch_walk::walk_keeping(root, |visit| {
            if is_leftover(visit) {
                return Some(None);
            }
            // After a signal the run stops: nothing more is read.
            let scan = if storepatch_rewrite::interrupt::signal().is_some() {
                None
            } else {
                let scan = scan_entry(visit, &scanner, options, Some((&budget, writer)));
                progress.entry_done();
                scan.kept()
            };
            (scan.is_some() || options.keep.keeps(visit.entry())).then_some(scan)
        })?;
        examined += walk.examined;
        errors.extend(walk.errors.into_iter().map(|err| EntryError {
            path: err.path().to_path_buf(),
            message: error_chain(&err),
        }));
        // The first root's lists are taken as they are rather than copied.
        if entries.is_empty() {
            entries = walk.entries;
            scans = root_scans;
        } else {
            entries.extend(walk.entries);
            scans.extend(root_scans);
        }
    }
    // Each finding learns its entry's index; store paths found in path form whose hashes were not
    // searched for yet are gathered on the way (for each hash, the tree's last name for it).
    let known: BTreeSet<HashPart> = scanner
        .candidates()
        .iter()
        .map(|path| *path.hash())
        .collect();
    let mut found: HashMap<HashPart, &StorePath> = HashMap::new();
    for (index, scan) in scans.iter_mut().enumerate() {
        let Some(scan) = scan else {
            continue;
        };
        scan.place_at(index);
        let scan: &EntryScan = scan;
        for path in scan
            .findings
            .iter()
            .flat_map(|finding| &finding.hits)
            .filter_map(Hit::live)
        {
            if !known.contains(path.hash()) {
                found.insert(*path.hash(), path);
            }
        }
    }
    // Copied once each: a venv names a few store paths thousands of times.
    let found: HashMap<HashPart, StorePath> = found
        .into_iter()
        .map(|(hash, path)| (hash, path.clone()))
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

    // Each scan stays in its box: taken out, every entry with findings would be held twice (in
    // its box, freed into the heap, and in this list) until the findings are gathered.
    let resolved: Vec<(usize, Box<EntryScan>)> = scans
        .into_par_iter()
        .zip(entries.par_iter())
        .enumerate()
        .filter_map(|(index, (scan, entry))| {
            let mut scan = scan?;
            let taken = std::mem::replace(&mut *scan, EntryScan::empty());
            *scan = resolve(index, entry, taken, &found, &scanner, options);
            Some((index, scan))
        })
        // Most entries have nothing to report; only the others are kept (in order).
        .filter(|(_, scan)| !scan.findings.is_empty() || scan.error.is_some())
        .collect();
    // Sized once: grown by doubling it would hold up to twice the findings.
    let mut findings =
        Vec::with_capacity(resolved.iter().map(|(_, scan)| scan.findings.len()).sum());
    let mut written = Vec::new();
    for (index, scan) in resolved {
        let scan = *scan;
        findings.extend(scan.findings);
        errors.extend(scan.error.map(|error| *error));
        written.extend(scan.written.map(|done| (index, done)));
    }
    errors.sort_by(|left, right| left.path.cmp(&right.path));
    errors.dedup_by(|left, right| left.path == right.path && left.message == right.message);
    let leftovers = entries
        .iter()
        .enumerate()
        .filter(|(_, entry)| entry.depth > 0 && entry.kind != EntryKind::Dir)
        .filter_map(|(index, entry)| {
            Some((
                index,
                storepatch_rewrite::Leftover::from_name(entry.name()?)?,
            ))
        })
        .collect();
    Ok(TreeScan {
        entries,
        examined,
        findings,
        errors,
        scanner,
        leftovers,
        written,
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
    /// Boxed: few entries have one, and every kept scan would otherwise carry its room.
    error: Option<Box<EntryError>>,
    /// What the [`ContentWriter`] wrote (first pass only). Boxed: most scans are of files nothing
    /// wrote, and every kept scan would otherwise carry its room.
    written: Option<Box<Written>>,
}

impl EntryScan {
    /// A scan that found nothing.
    fn empty() -> Self {
        Self {
            findings: Vec::new(),
            windows: Vec::new(),
            error: None,
            written: None,
        }
    }

    /// The scan as the walk keeps it until every entry is done: `None` for an entry with nothing
    /// to report or resolve (most entries), so it costs a pointer rather than a whole `EntryScan`.
    fn kept(mut self) -> Option<Box<Self>> {
        (!self.findings.is_empty()
            || !self.windows.is_empty()
            || self.error.is_some()
            || self.written.is_some())
        .then(|| {
            // Kept until the run ends: most entries have one finding, and a vector grown by push
            // holds room for four.
            self.findings.shrink_to_fit();
            self.windows.shrink_to_fit();
            Box::new(self)
        })
    }

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
        let mut again = scan_entry(&Visit::detached(entry), scanner, options, None);
        again.place_at(index);
        return match scan.written.take() {
            None => again,
            Some(written) => after_written(scan, again, written),
        };
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
                contexts: Contexts::default(),
            }),
        }
    }
    scan.findings.sort_by_key(|finding| finding.location);
    scan
}

/// The second look at a file the [`ContentWriter`] wrote in the first pass (`first`): it read
/// the new contents, where the written hits are scrubbed, so those come from the first pass and
/// the others (such as late candidates' bare hashes) from the second look.
fn after_written(mut first: EntryScan, again: EntryScan, written: Box<Written>) -> EntryScan {
    first.written = Some(written);
    if again.error.is_some() {
        first.error = again.error;
        return first;
    }
    let first_content = first
        .findings
        .iter()
        .position(|finding| finding.location == Location::Content);
    let mut merged = again;
    for finding in &mut merged.findings {
        let Some(first_finding) = first_content.map(|index| &first.findings[index]) else {
            break;
        };
        if finding.location != Location::Content {
            continue;
        }
        let seen: BTreeSet<u64> = first_finding
            .hits
            .iter()
            .map(|hit| hit.hash_offset)
            .collect();
        let with_context = !finding.contexts.is_empty() && !first_finding.contexts.is_empty();
        // Each hit by where it comes from (the first pass, or this one) and its index there, in
        // offset order; a stable sort keeps the first pass's hit first at an equal offset.
        let mut order: Vec<(u64, bool, usize)> = first_finding
            .hits
            .iter()
            .enumerate()
            .map(|(index, hit)| (hit.hash_offset, true, index))
            .chain(
                finding
                    .hits
                    .iter()
                    .enumerate()
                    .filter(|(_, hit)| !seen.contains(&hit.hash_offset))
                    .map(|(index, hit)| (hit.hash_offset, false, index)),
            )
            .collect();
        order.sort_by_key(|&(offset, _, _)| offset);
        let mut contexts = ContextsBuilder::default();
        let mut hits = Vec::with_capacity(order.len());
        for &(_, from_first, index) in &order {
            let from = if from_first { first_finding } else { &*finding };
            hits.push(from.hits[index].clone());
            let context = from.contexts.get(index);
            if with_context {
                contexts.push(context.unwrap_or_default());
            }
        }
        finding.hits = hits;
        finding.contexts = contexts.finish();
    }
    if let Some(index) = first_content
        && !merged
            .findings
            .iter()
            .any(|finding| finding.location == Location::Content)
    {
        merged.findings.push(first.findings.swap_remove(index));
        merged.findings.sort_by_key(|finding| finding.location);
    }
    merged.written = first.written;
    merged
}

/// Scans one entry's name, contents or symlink target (see [`EntryScan::place_at`]). In the first
/// pass (`first`: the window budget and the content writer) keeps the runs that matched no
/// candidate and hands files with hits to the writer; otherwise scans with the final candidates.
fn scan_entry(
    visit: &Visit<'_>,
    scanner: &Scanner,
    options: &TreeOptions,
    first: Option<(&AtomicUsize, &dyn ContentWriter)>,
) -> EntryScan {
    let mut scan = EntryScan::empty();
    if let Err(err) = scan_places(visit, scanner, options, first, &mut scan) {
        // What was written stays reported with the hits it changed.
        if scan.written.is_none() {
            scan.findings.clear();
        }
        scan.windows.clear();
        scan.error = Some(Box::new(EntryError {
            path: visit.entry().path.clone(),
            message: error_chain(&*err),
        }));
    }
    // Names come first in the entry but sort after content for readers: content, symlink, name.
    scan.findings.sort_by_key(|finding| finding.location);
    scan
}

fn scan_places(
    visit: &Visit<'_>,
    scanner: &Scanner,
    options: &TreeOptions,
    first: Option<(&AtomicUsize, &dyn ContentWriter)>,
    scan: &mut EntryScan,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let budget = first.map(|(budget, _)| budget);
    // `release` is told how far the scan of `bytes` has got (see `Scanner::scan_passing`).
    let mut record =
        |location, bytes: &[u8], scanned: Option<Scanned>, release: &mut dyn FnMut(usize)| {
            let whole = scanned.is_none();
            let (mut hits, windows, contexts) = match (scanned, budget) {
                (Some(scanned), _) => (scanned.hits, scanned.windows, scanned.contexts),
                (None, Some(budget)) => {
                    let limit = take_budget(budget);
                    let (hits, windows) = scanner.scan_passing(bytes, Some(limit), release);
                    budget.fetch_add(limit - windows.windows.len(), Ordering::Relaxed);
                    (hits, Some(windows), None)
                }
                (None, None) => (scanner.scan_passing(bytes, None, release).0, None, None),
            };
            if let Some(windows) = windows
                && (windows.overflowed || !windows.windows.is_empty())
            {
                scan.windows.push((location, windows));
            }
            if !hits.is_empty() {
                // Kept until the run ends: most files have one hit, and a vector grown by push
                // holds room for four.
                hits.shrink_to_fit();
                let contexts = match contexts {
                    Some(contexts) => contexts,
                    None if options.with_context => Contexts::capture(bytes, &hits),
                    None => Contexts::default(),
                };
                // Only with the whole contents at hand (not for a file streamed in chunks).
                if let Some((_, writer)) = first
                    && location == Location::Content
                    && whole
                {
                    scan.written = writer.write_content(visit, bytes, &hits).map(Box::new);
                }
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
        record(Location::Name, visit.name().as_bytes(), None, &mut |_| {});
    }
    match entry.kind {
        // Without mmap, large files are read in pieces rather than whole into memory, with the
        // same hits, windows and context as a whole read.
        EntryKind::File
            if (options.read_policy == ReadPolicy::Read || options.read_in_pieces)
                && entry.len > PIECE_LEN as u64 =>
        {
            let may_map = options.read_policy != ReadPolicy::Read;
            let max_uncut = if may_map {
                MAP_UNCUT_ABOVE
            } else {
                STREAM_ABOVE
            };
            let limit = budget.map(take_budget);
            let pieces = scan_in_pieces(
                visit,
                scanner,
                limit,
                options.with_context,
                (PIECE_LEN, max_uncut),
            );
            if let (Some(budget), Some(limit)) = (budget, limit) {
                let used = match &pieces {
                    Ok(Some(Scanned {
                        windows: Some(windows),
                        ..
                    })) => windows.windows.len(),
                    _ => 0,
                };
                budget.fetch_add(limit - used, Ordering::Relaxed);
            }
            match pieces? {
                // A writer needs the whole contents of a file it may rewrite: such a file (one
                // with references) is read again whole, as with mmap.
                Some(scanned)
                    if !scanned.hits.is_empty()
                        && first.is_some_and(|(_, writer)| writer.writes())
                        && entry.len <= STREAM_ABOVE as u64 =>
                {
                    visit.read_with(options.read_policy, |contents| {
                        record(Location::Content, contents, None, &mut |_| {});
                    })?;
                }
                Some(scanned) => record(Location::Content, &[], Some(scanned), &mut |_| {}),
                // Nowhere to cut, and mapping allowed: mapped and scanned whole.
                None if may_map => {
                    visit.read_with_release(options.read_policy, |contents, release| {
                        record(Location::Content, contents, None, release);
                    })?;
                }
                // Nowhere to cut: streamed, with the same hits whatever the chunking; the context
                // and the unresolved runs are not kept (so a later candidate means reading the
                // file again).
                None => {
                    let hits = scanner.scan_reader(visit.open()?, STREAM_CHUNK)?;
                    let scanned = Scanned {
                        hits,
                        windows: budget.map(|_| overflowed()),
                        contexts: None,
                    };
                    record(Location::Content, &[], Some(scanned), &mut |_| {});
                }
            }
        }
        // A mapped file's pages are let go of behind the scan as it goes (see
        // `Scanner::scan_passing`), so two threads on large files do not hold both whole.
        EntryKind::File => {
            visit.read_with_release(options.read_policy, |contents, release| {
                record(Location::Content, contents, None, release);
            })?;
        }
        EntryKind::Symlink => {
            let target = visit.read_link()?;
            record(
                Location::Symlink,
                target.as_os_str().as_bytes(),
                None,
                &mut |_| {},
            );
        }
        EntryKind::Dir | EntryKind::Other => {}
    }
    Ok(())
}

/// What a scan of a file read in pieces found (see [`scan_in_pieces`]).
struct Scanned {
    hits: Vec<Hit>,
    /// The windows kept, when a limit was given.
    windows: Option<Windows>,
    /// The hits' contexts, when asked for; `None` leaves them to be taken from the bytes at hand.
    contexts: Option<Contexts>,
}

/// Scans a file read in pieces of about `piece_len` bytes ([`Visit::read_in_pieces`]), keeping
/// up to `limit` windows: the same hits, windows and (`with_context`) contexts as a scan of the
/// whole file at once, in a buffer of about one piece.
///
/// Each piece ends just after a byte no reference can hold ([`Scanner::last_cut`]), so no
/// reference or run spans two pieces and [`storepatch_scan::PieceScan`] finds in each exactly
/// what a whole scan finds there. What follows the cut is kept for the next piece, with
/// [`CONTEXT_BYTES`] before it and at least as many after it in hand for the contexts of the
/// hits near the edge. A stretch with no such byte (one hash-alphabet byte repeated) keeps the
/// buffer growing, each time searched only where it was not before; past `max_uncut` bytes the
/// scan gives up and returns `None`. (The tree scan uses [`PIECE_LEN`] and [`STREAM_ABOVE`].)
fn scan_in_pieces(
    visit: &Visit<'_>,
    scanner: &Scanner,
    limit: Option<usize>,
    with_context: bool,
    (piece_len, max_uncut): (usize, usize),
) -> Result<Option<Scanned>, storepatch_walk::Error> {
    let mut pieces = scanner.pieces(limit);
    let mut hits = Vec::new();
    let mut contexts = ContextsBuilder::default();
    // The file offset where the next piece starts, and how far from there there is no cut (the
    // cut found is the last one before where the search stopped).
    let mut next = 0u64;
    let mut searched = 0u64;
    let offset_in = |offset: u64, start: u64| usize::try_from(offset - start).unwrap_or(usize::MAX);
    let whole = visit.read_in_pieces(piece_len, |held, start, at_end| {
        let from = offset_in(next, start);
        let end = if at_end {
            Some(held.len())
        } else {
            let until = held.len().saturating_sub(CONTEXT_BYTES).max(from);
            let search_from = offset_in(searched, start).clamp(from, until);
            let cut = scanner
                .last_cut(&held[search_from..until])
                .map(|cut| search_from + cut);
            searched = start + until as u64;
            cut
        };
        let Some(end) = end else {
            if held.len() - from > max_uncut {
                return std::ops::ControlFlow::Break(());
            }
            return std::ops::ControlFlow::Continue(from.saturating_sub(CONTEXT_BYTES));
        };
        let first = hits.len();
        pieces.scan(&held[from..end], &mut hits);
        if with_context {
            contexts.capture(held, start, &hits[first..]);
        }
        next = start + end as u64;
        std::ops::ControlFlow::Continue(end.saturating_sub(CONTEXT_BYTES))
    })?;
    Ok(whole.then(|| Scanned {
        hits,
        windows: limit.map(|_| pieces.finish()),
        contexts: with_context.then(|| contexts.finish()),
    }))
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

/// `err` and its causes on one line, in the one wording of messages about files (see
/// [`in_one_voice`]).
#[must_use]
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    in_one_voice(&message)
}

/// A line of a candidates list that is not a store path.
#[derive(Debug, thiserror::Error)]
#[error("{}:{line}: not a store path", .file.display())]
pub struct CandidateError {
    /// The list the line is in.
    pub file: PathBuf,
    /// The line number, from 1.
    pub line: usize,
    /// Why the line is not a store path.
    #[source]
    pub source: storepatch_core::Error,
}

/// Parses a candidates list read from `file`: one store path (or a path below one) a line; blank
/// lines and lines starting with `#` are skipped.
///
/// # Errors
///
/// A line is not a store path.
pub fn parse_candidates(
    store_dir: &StoreDir,
    file: &Path,
    text: &[u8],
) -> Result<Vec<StorePath>, CandidateError> {
    let mut candidates = Vec::new();
    for (number, line) in text.split(|&byte| byte == b'\n').enumerate() {
        let line = line.trim_ascii();
        if line.is_empty() || line.starts_with(b"#") {
            continue;
        }
        let (path, _rest) = store_dir
            .parse_path_prefix(line)
            .map_err(|source| CandidateError {
                file: file.to_path_buf(),
                line: number + 1,
                source,
            })?;
        candidates.push(path);
    }
    Ok(candidates)
}

/// The live store paths named in the values of `vars` (as in the environment of a build, whose
/// inputs are all named there).
pub fn candidates_from_vars(
    store_dir: &StoreDir,
    vars: impl IntoIterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
) -> Vec<StorePath> {
    let scanner = Scanner::builder(store_dir.clone()).build();
    let mut candidates = Vec::new();
    for (_name, value) in vars {
        candidates.extend(
            scanner
                .scan(value.as_bytes())
                .iter()
                .filter_map(Hit::live)
                .cloned(),
        );
    }
    candidates
}

/// An argument that is not a store path.
#[derive(Debug, thiserror::Error)]
#[error("`{}` is not a store path", .path.display())]
pub struct StorePathError {
    /// The argument.
    pub path: PathBuf,
    /// Why it is not a store path.
    #[source]
    pub source: storepatch_core::Error,
}

/// Parses `--keep`/`--only` style store path arguments (anything below a store path is allowed).
///
/// # Errors
///
/// An argument is not a store path.
pub fn parse_store_paths(
    store_dir: &StoreDir,
    paths: &[PathBuf],
) -> Result<Vec<StorePath>, StorePathError> {
    paths
        .iter()
        .map(|path| {
            store_dir
                .parse_path_prefix(path.as_os_str().as_bytes())
                .map(|(store_path, _)| store_path)
                .map_err(|source| StorePathError {
                    path: path.clone(),
                    source,
                })
        })
        .collect()
}

/// Renders a hit's target as `<storedir>/<hash>-<name>`, or with `eeee…` when scrubbed.
#[must_use]
pub fn render_target(store_dir: &StoreDir, hit: &Hit) -> Vec<u8> {
    let mut out = Vec::new();
    render_target_into(store_dir, hit, &mut out);
    out
}

/// [`render_target`], appended to `out`: a caller rendering thousands of hits reuses one buffer.
pub fn render_target_into(store_dir: &StoreDir, hit: &Hit, out: &mut Vec<u8>) {
    match &hit.target {
        storepatch_scan::Target::Live(path) => store_dir.render_into(out, path),
        storepatch_scan::Target::Scrubbed { name } => store_dir.render_scrubbed_into(out, name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HASH_A: &[u8; 32] = b"0c5dq8ikmzkcjh2hh2x3a1ihcp6yq3w1";
    const HASH_B: &[u8; 32] = b"1111111111111111111111111111111z";

    fn store_path(hash: &[u8; 32], name: &str) -> StorePath {
        StorePath::new(HashPart::parse(hash).unwrap(), name)
    }

    /// Parts a file is made of: noise, store paths and their pieces, bare hashes, scrubbed
    /// hashes, separators, and long runs of hash-alphabet bytes with nowhere to cut.
    fn part() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..40),
            Just(b"/nix/store/".to_vec()),
            Just(HASH_A.to_vec()),
            Just(HASH_B.to_vec()),
            Just(storepatch_core::SCRUBBED_HASH.to_vec()),
            Just(b"-zlib-1.3.1".to_vec()),
            Just(b"/lib\0".to_vec()),
            Just(b"\n".to_vec()),
            "[a-z0-9.+_=-]{0,30}".prop_map(String::into_bytes),
            (prop::sample::select(&b"0xz-."[..]), 0usize..600)
                .prop_map(|(byte, len)| vec![byte; len]),
            ("[0-9a-df-np-sv-z]{1,40}", 0usize..600).prop_map(|(pattern, len)| pattern
                .into_bytes()
                .into_iter()
                .cycle()
                .take(len)
                .collect()),
        ]
    }

    /// The file `bytes` as the walk sees it, in a directory that lives as long as the result.
    fn file_with(bytes: &[u8]) -> (tempfile::TempDir, Entry) {
        let dir = tempfile::tempdir().unwrap();
        fs_err::write(dir.path().join("file"), bytes).unwrap();
        let walk = storepatch_walk::walk(dir.path()).unwrap();
        let entry = walk
            .entries
            .into_iter()
            .find(|entry| entry.kind == EntryKind::File)
            .unwrap();
        (dir, entry)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// A file read in pieces of any size gives the hits, kept windows and contexts of one scan
        /// of the whole file, with references at every piece edge, at the file's end, and inside
        /// long runs with nowhere to cut; and gives up only where a stretch with no cut is longer
        /// than it is allowed to hold.
        #[test]
        fn pieces_give_what_a_whole_read_gives(
            parts in proptest::collection::vec(part(), 0..80),
            piece_len in 1usize..300,
            limit in prop_oneof![Just(None), (0usize..40).prop_map(Some)],
        ) {
            let bytes = parts.concat();
            let scanner = Scanner::builder(StoreDir::default())
                .candidate(store_path(HASH_B, "b"))
                .build();
            let (whole, windows) = match limit {
                Some(limit) => {
                    let (hits, windows) = scanner.scan_keeping_windows(&bytes, limit);
                    (hits, Some(windows))
                }
                None => (scanner.scan(&bytes), None),
            };
            let contexts = Contexts::capture(&bytes, &whole);
            prop_assert_eq!(contexts.len(), whole.len());
            let (_dir, entry) = file_with(&bytes);
            let visit = Visit::detached(&entry);
            let scanned = scan_in_pieces(&visit, &scanner, limit, true, (piece_len, usize::MAX))
                .unwrap()
                .unwrap();
            prop_assert_eq!(&scanned.hits, &whole);
            prop_assert_eq!(&scanned.windows, &windows);
            prop_assert_eq!(scanned.contexts.as_ref(), Some(&contexts));
            let without = scan_in_pieces(&visit, &scanner, limit, false, (piece_len, usize::MAX))
                .unwrap()
                .unwrap();
            prop_assert_eq!(&without.hits, &whole);
            prop_assert!(without.contexts.is_none());
            // The longest stretch with nowhere to cut, and a bound just under it: the scan gives
            // up, unless the read that outgrew the bound reached the end of the file, where the
            // buffer holds everything and the scan is whole.
            let uncut = bytes
                .split(|&byte| scanner.is_cut(byte))
                .map(<[u8]>::len)
                .max()
                .unwrap_or(0);
            if uncut > 2 * piece_len + 2 * CONTEXT_BYTES {
                let capped = scan_in_pieces(&visit, &scanner, limit, false, (piece_len, uncut / 2))
                    .unwrap();
                if let Some(capped) = capped {
                    prop_assert_eq!(&capped.hits, &whole);
                }
            }
        }
    }

    /// A stretch with nowhere to cut that outgrows the bound well before the end of the file
    /// makes the scan give up (the tree scan then streams the file).
    #[test]
    fn a_long_uncut_stretch_before_the_end_gives_up() {
        let mut bytes = vec![b'0'; 1000];
        bytes.push(b'\n');
        bytes.extend(b"plain text with no reference in it\n".repeat(300));
        let scanner = Scanner::builder(StoreDir::default()).build();
        let (_dir, entry) = file_with(&bytes);
        let visit = Visit::detached(&entry);
        let capped = scan_in_pieces(&visit, &scanner, None, true, (16, 100)).unwrap();
        assert!(capped.is_none());
        let whole = scan_in_pieces(&visit, &scanner, None, true, (16, 2000))
            .unwrap()
            .expect("a bound above the stretch lets the scan finish");
        assert!(whole.hits.is_empty());
    }

    /// 50 MB of `0` (the cliff input, with a reference at each end) has nowhere to cut:
    /// read in 256 KiB pieces it is still scanned whole and right, in a number of reads
    /// logarithmic in its size rather than quadratic work.
    #[test]
    fn a_file_with_nowhere_to_cut_is_scanned_whole_and_right() {
        let mut bytes = b"/nix/store/".to_vec();
        bytes.extend_from_slice(HASH_A);
        bytes.extend_from_slice(b"-a ");
        bytes.resize(50_000_000, b'0');
        bytes.extend_from_slice(HASH_B);
        let scanner = Scanner::builder(StoreDir::default())
            .candidate(store_path(HASH_B, "b"))
            .build();
        let (_dir, entry) = file_with(&bytes);
        let started = std::time::Instant::now();
        let scanned = scan_in_pieces(
            &Visit::detached(&entry),
            &scanner,
            Some(4096),
            true,
            (PIECE_LEN, STREAM_ABOVE),
        )
        .unwrap()
        .unwrap();
        let (hits, windows) = scanner.scan_keeping_windows(&bytes, 4096);
        assert_eq!(scanned.hits, hits);
        assert_eq!(scanned.hits.len(), 2);
        assert_eq!(scanned.windows, Some(windows));
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
    }
}
