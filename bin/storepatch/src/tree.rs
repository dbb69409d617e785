//! Finding references across whole trees: the part `scan`, `scrub` and `audit` share.
//!
//! Discovery runs in up to two passes. The first finds path-form references (and bare hashes of the
//! candidates given on the command line). Every live store path found that way becomes a candidate
//! too, and if that adds hashes, a second pass looks for their bare hash parts everywhere, exactly
//! as Nix's scanner would if those paths were inputs of the build. Both passes fan files out over
//! rayon; results keep walk order, so output never depends on the thread count.
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use rayon::prelude::*;
use storepatch_core::{HashPart, StoreDir, StorePath};
use storepatch_scan::{Hit, Scanner};
use storepatch_walk::{Entry, EntryKind, ReadPolicy};

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
    let mut entries = Vec::new();
    let mut errors = Vec::new();
    for root in roots {
        let walk = storepatch_walk::walk(root)?;
        errors.extend(walk.errors.into_iter().map(|err| EntryError {
            path: err.path().to_path_buf(),
            message: error_chain(&err),
        }));
        entries.extend(walk.entries);
    }
    let mut scanner = Scanner::builder(options.store_dir.clone())
        .candidates(options.candidates.iter().cloned())
        .build();
    // Small files' bytes are kept from the first pass for the second (within a budget), so the
    // second pass over a tree of many small files costs no system calls.
    let cache = ContentCache::new(&entries);
    let mut pass = scan_entries(&entries, &scanner, options, Some(&cache));
    let known: BTreeSet<HashPart> = scanner
        .candidates()
        .iter()
        .map(|path| *path.hash())
        .collect();
    let found: BTreeMap<HashPart, StorePath> = pass
        .0
        .iter()
        .flat_map(|finding| &finding.hits)
        .filter_map(|hit| hit.live())
        .filter(|path| !known.contains(path.hash()))
        .map(|path| (*path.hash(), path.clone()))
        .collect();
    if !found.is_empty() {
        log::debug!(
            "second pass for the bare hashes of {} store paths",
            found.len()
        );
        scanner = Scanner::builder(options.store_dir.clone())
            .candidates(options.candidates.iter().cloned())
            .candidates(found.into_values())
            .build();
        pass = scan_entries(&entries, &scanner, options, Some(&cache));
    }
    drop(cache);
    let (findings, pass_errors) = pass;
    errors.extend(pass_errors);
    errors.sort_by(|left, right| left.path.cmp(&right.path));
    errors.dedup_by(|left, right| left.path == right.path && left.message == right.message);
    Ok(TreeScan {
        entries,
        findings,
        errors,
        scanner,
    })
}

/// Bytes of small files, kept between the two passes of [`scan_roots`].
struct ContentCache {
    slots: Vec<std::sync::OnceLock<Vec<u8>>>,
    budget: std::sync::atomic::AtomicUsize,
}

impl ContentCache {
    /// Files up to this size are kept.
    const MAX_FILE: u64 = 64 * 1024;
    /// At most this many bytes are kept in all.
    const BUDGET: usize = 256 << 20;

    fn new(entries: &[Entry]) -> Self {
        Self {
            slots: entries.iter().map(|_| std::sync::OnceLock::new()).collect(),
            budget: std::sync::atomic::AtomicUsize::new(Self::BUDGET),
        }
    }

    fn get(&self, index: usize) -> Option<&[u8]> {
        self.slots.get(index)?.get().map(Vec::as_slice)
    }

    /// Keeps `bytes` for entry `index` if it is small and the budget allows.
    fn offer(&self, index: usize, bytes: &[u8]) {
        use std::sync::atomic::Ordering;
        if bytes.len() as u64 > Self::MAX_FILE {
            return;
        }
        let reserved = self
            .budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                left.checked_sub(bytes.len())
            });
        if reserved.is_ok()
            && let Some(slot) = self.slots.get(index)
        {
            let _ = slot.set(bytes.to_vec());
        }
    }
}

fn scan_entries(
    entries: &[Entry],
    scanner: &Scanner,
    options: &TreeOptions,
    cache: Option<&ContentCache>,
) -> (Vec<Finding>, Vec<EntryError>) {
    let progress = Progress::new(entries.len() as u64, "scanning", options.show_progress);
    let per_entry: Vec<(Vec<Finding>, Option<EntryError>)> = entries
        .par_iter()
        .enumerate()
        .map(|(index, entry)| {
            let result = scan_entry(index, entry, scanner, options, cache);
            progress.inc();
            match result {
                Ok(findings) => (findings, None),
                Err(err) => (
                    Vec::new(),
                    Some(EntryError {
                        path: entry.path.clone(),
                        message: format!("{err:#}"),
                    }),
                ),
            }
        })
        .collect();
    progress.finish();
    let mut findings = Vec::new();
    let mut errors = Vec::new();
    for (entry_findings, error) in per_entry {
        findings.extend(entry_findings);
        errors.extend(error);
    }
    (findings, errors)
}

fn scan_entry(
    index: usize,
    entry: &Entry,
    scanner: &Scanner,
    options: &TreeOptions,
    cache: Option<&ContentCache>,
) -> anyhow::Result<Vec<Finding>> {
    let mut findings = Vec::new();
    let mut record = |location, bytes: &[u8], hits: Vec<Hit>| {
        if !hits.is_empty() {
            let contexts = if options.with_context {
                hits.iter().map(|hit| context(bytes, hit)).collect()
            } else {
                Vec::new()
            };
            findings.push(Finding {
                entry: index,
                location,
                hits,
                contexts,
            });
        }
    };
    // The root's own name is outside the tree (it is often `$out` itself).
    if entry.depth > 0
        && let Some(name) = entry.path.file_name()
    {
        let name = name.as_bytes();
        record(Location::Name, name, scanner.scan(name));
    }
    match entry.kind {
        // Without mmap, big files are streamed in chunks rather than read whole into memory. The
        // scanner reports the same hits whatever the chunking; only the context is not kept.
        EntryKind::File if options.read_policy == ReadPolicy::Read && entry.len > STREAM_ABOVE => {
            let file = fs_err::File::open(&entry.path)?;
            let hits = scanner.scan_reader(file, STREAM_CHUNK)?;
            record(Location::Content, &[], hits);
        }
        EntryKind::File => {
            if let Some(bytes) = cache.and_then(|cache| cache.get(index)) {
                record(Location::Content, bytes, scanner.scan(bytes));
            } else {
                let contents = storepatch_walk::read(&entry.path, entry.len, options.read_policy)?;
                record(Location::Content, &contents, scanner.scan(&contents));
                if let Some(cache) = cache {
                    cache.offer(index, &contents);
                }
            }
        }
        EntryKind::Symlink => {
            let target = fs_err::read_link(&entry.path)?;
            let target = target.as_os_str().as_bytes();
            record(Location::Symlink, target, scanner.scan(target));
        }
        EntryKind::Dir | EntryKind::Other => {}
    }
    // Names come first in the entry but sort after content for readers: content, symlink, name.
    findings.sort_by_key(|finding| finding.location);
    Ok(findings)
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
        let text = fs_err::read(file)?;
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
    let metadata = fs_err::symlink_metadata(root)?;
    anyhow::ensure!(
        metadata.file_type().is_dir(),
        "`{}` is not a directory",
        root.display()
    );
    Ok(())
}
