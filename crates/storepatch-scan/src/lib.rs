//! Finds Nix store references in byte buffers.
//!
//! Two kinds of discovery, because both matter (see DESIGN.md §2):
//!
//! - **Path form**: `<storedir>/<hash>-<name>` occurrences. The name is taken with Nix's name grammar,
//!   so `…-source", "dir_info"` yields the name `source`, not the junk after it. Already-scrubbed
//!   paths (a hash of 32 `e`s) are reported as [`Target::Scrubbed`], never as live references.
//! - **Bare form**: the 32-byte hash part of a *candidate* store path anywhere, with no prefix and
//!   no word boundaries: exactly what Nix's own reference scanner looks for.
//!
//! [`Scanner::scan`] works on a whole buffer; [`Scanner::stream`] works on a buffer fed in chunks
//! and reports the same hits whatever the chunk size, so a reference split across a chunk edge is
//! still found. [`Scanner::pieces`] works on a buffer cut only where no reference can be (see
//! [`Scanner::last_cut`]) and gives everything a whole scan gives, the kept windows included.
//!
//! ```
//! use storepatch_core::{StoreDir, StorePath, HashPart};
//! use storepatch_scan::{Form, Scanner, Target};
//!
//! let zlib = StorePath::new(HashPart::parse(b"0c5dq8ikmzkcjh2hh2x3a1ihcp6yq3w1")?, "zlib-1.3.1");
//! let scanner = Scanner::builder(StoreDir::new("/nix/store")?).candidate(zlib).build();
//! let text = b"rpath=/nix/store/0c5dq8ikmzkcjh2hh2x3a1ihcp6yq3w1-zlib-1.3.1/lib \
//!              bare=0c5dq8ikmzkcjh2hh2x3a1ihcp6yq3w1";
//! let hits = scanner.scan(text);
//! assert_eq!(hits.len(), 2);
//! assert_eq!(hits[0].form, Form::Path);
//! assert_eq!(hits[1].form, Form::Bare);
//! assert!(matches!(&hits[1].target, Target::Live(path) if path.name() == b"zlib-1.3.1"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

use std::collections::{BTreeMap, HashMap};
use std::io::Read;

use storepatch_core::{HASH_LEN, HashPart, MAX_NAME_LEN, SCRUBBED_HASH, StoreDir, StorePath};

mod wide;

/// How a reference was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Form {
    /// `<storedir>/<hash>[-<name>]`.
    Path,
    /// The bare hash part of a candidate, without the store dir in front.
    Bare,
}

/// What a reference points at.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    /// A live store path (its hash part is valid and would be seen by Nix).
    Live(StorePath),
    /// A path scrubbed earlier: the hash part is 32 `e`s; the name is kept for reporting.
    Scrubbed {
        /// The name after `eeee…-` (may be empty).
        name: Vec<u8>,
    },
}

/// One reference found in a buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hit {
    /// Offset of the first byte of the matched text (the store dir for [`Form::Path`]).
    pub offset: u64,
    /// Offset of the 32-byte hash part: the bytes a scrub rewrites.
    pub hash_offset: u64,
    /// Length of the matched text.
    pub len: usize,
    /// Path or bare form.
    pub form: Form,
    /// The store path referred to.
    pub target: Target,
}

impl Hit {
    /// The live store path, if this reference is not scrubbed.
    pub fn live(&self) -> Option<&StorePath> {
        match &self.target {
            Target::Live(path) => Some(path),
            Target::Scrubbed { .. } => None,
        }
    }
}

/// Builds a [`Scanner`].
#[derive(Debug)]
pub struct ScannerBuilder {
    store_dir: StoreDir,
    candidates: BTreeMap<HashPart, StorePath>,
}

impl ScannerBuilder {
    /// Adds a candidate whose bare hash part is searched for.
    #[must_use]
    pub fn candidate(mut self, path: StorePath) -> Self {
        self.candidates.entry(*path.hash()).or_insert(path);
        self
    }

    /// Adds several candidates.
    #[must_use]
    pub fn candidates(mut self, paths: impl IntoIterator<Item = StorePath>) -> Self {
        for path in paths {
            self = self.candidate(path);
        }
        self
    }

    /// Builds the scanner.
    pub fn build(self) -> Scanner {
        let candidates: Vec<StorePath> = self.candidates.into_values().collect();
        let table = CandidateTable::new(&candidates);
        let mut cut = [true; 256];
        for (byte, cut) in (0..=u8::MAX).zip(&mut cut) {
            *cut = !storepatch_core::is_hash_byte(byte)
                && !storepatch_core::is_name_byte(byte)
                && !self.store_dir.prefix().contains(&byte);
        }
        Scanner {
            store_dir: self.store_dir,
            candidates,
            table,
            cut,
        }
    }
}

/// Finds store references in buffers. Cheap to share between threads.
#[derive(Debug)]
pub struct Scanner {
    store_dir: StoreDir,
    /// Sorted by hash.
    candidates: Vec<StorePath>,
    /// Packed hash part -> index into `candidates`.
    table: CandidateTable,
    /// The bytes no reference can hold (see [`Scanner::last_cut`]).
    cut: [bool; 256],
}

/// 32-byte runs of hash-alphabet bytes that matched no candidate, kept by
/// [`Scanner::scan_keeping_windows`] so that candidates learnt later can be checked against them
/// without reading the bytes again.
///
/// Each distinct run is kept once, at its first offset; runs seen again are only named in
/// [`Windows::repeated`], so a long stretch of one repeated pattern (a megabyte of `0`s) costs one
/// entry, not one per offset.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Windows {
    /// `(offset, hash)` of the first occurrence of each distinct window, in offset order.
    pub windows: Vec<(u64, HashPart)>,
    /// The hashes (sorted) of [`Windows::windows`] that occur at more offsets than their first: a
    /// later candidate among them needs the bytes scanned again to learn those offsets.
    pub repeated: Vec<HashPart>,
    /// More distinct windows than the limit were seen and the rest were dropped: the caller must
    /// scan the bytes again to learn about later candidates.
    pub overflowed: bool,
}

impl Windows {
    /// Bare hits at the first offsets of the windows whose hash is one of `candidates`; complete
    /// unless [`Windows::needs_rescan`] says otherwise.
    pub fn hits_for(&self, candidates: &HashMap<HashPart, StorePath>) -> Vec<Hit> {
        self.windows
            .iter()
            .filter_map(|(offset, hash)| {
                candidates.get(hash).map(|path| Hit {
                    offset: *offset,
                    hash_offset: *offset,
                    len: HASH_LEN,
                    form: Form::Bare,
                    target: Target::Live(path.clone()),
                })
            })
            .collect()
    }

    /// Whether [`Windows::hits_for`] may miss hits of `candidates`: windows were dropped, or one
    /// of the candidates occurs at more than one offset.
    pub fn needs_rescan(&self, candidates: &HashMap<HashPart, StorePath>) -> bool {
        self.overflowed
            || self
                .repeated
                .iter()
                .any(|hash| candidates.contains_key(hash))
    }
}

/// Whether each byte value is in Nix's base-32 alphabet, as a table for the hot loop.
const HASH_BYTE: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 256 {
        table[byte] = storepatch_core::is_hash_byte(byte as u8);
        byte += 1;
    }
    table
};

/// Each alphabet byte's digit value (its index in the alphabet); other bytes map to 0 and are
/// never looked up.
const DIGIT: [u8; 256] = {
    let mut table = [0; 256];
    let mut digit = 0;
    while digit < 32 {
        table[storepatch_core::NIX_BASE32_ALPHABET[digit] as usize] = digit as u8;
        digit += 1;
    }
    table
};

/// Bytes per word of the window finder's filter.
const WORD: usize = 8;
/// The filter looks at one word in three. A run of 32 alphabet bytes covers at least three
/// consecutive whole words (counted from the start of the haystack), so one of them is looked at.
const STRIDE: usize = 3 * WORD;
/// How often (in bytes of haystack) the window finder says how far it has got.
const PASSED_EVERY: usize = 2 << 20;
/// A thread keeps the lists of its last scan (runs, hits) for the next one up to this many items
/// in all; longer ones are let go of.
const KEPT_LIST_LEN: usize = 1024;

/// Whether every byte of `word` could be a hash byte: all are ASCII digits or lowercase letters.
///
/// A necessary condition only (it lets `e`, `o`, `t` and `u` through), computed on all eight bytes
/// at once: adding `0x80 - c` to a byte below `0x80` sets its high bit exactly when the byte is at
/// least `c`, and never carries into the next byte. Bytes at or above `0x80` may carry, but they
/// fail the test themselves, so the whole word fails anyway.
fn maybe_all_hash(word: u64) -> bool {
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    const fn at_least(byte: u8) -> u64 {
        u64::from_ne_bytes([0x80 - byte; 8])
    }
    let digit_or_above = word.wrapping_add(at_least(b'0'));
    let above_digits = word.wrapping_add(at_least(b'9' + 1));
    let lower_or_above = word.wrapping_add(at_least(b'a'));
    let above_lower = word.wrapping_add(at_least(b'z' + 1));
    let in_class = !word & digit_or_above & !above_lower & !(above_digits & !lower_or_above) & HIGH;
    in_class == HIGH
}

/// Whether every byte of `word` is a hash byte: [`maybe_all_hash`], and none of the four letters
/// the alphabet leaves out. Exact, on all eight bytes at once.
#[inline]
fn all_hash(word: u64) -> bool {
    const LOW: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    // Nonzero exactly when some byte of `value` is zero.
    let has_zero = |value: u64| value.wrapping_sub(LOW) & !value & HIGH != 0;
    maybe_all_hash(word)
        && !b"eotu"
            .iter()
            .any(|&letter| has_zero(word ^ u64::from_ne_bytes([letter; 8])))
}

/// Calls `found(start, end)` for every maximal run of at least 32 hash-alphabet bytes, and
/// `scrubbed(start, end)` for every maximal run of at least 32 `e`s (a scrubbed hash), in ascending
/// order, adding the steps taken to `work`.
///
/// Most data has no such runs, so the search is a cheap filter over one word in every [`STRIDE`]
/// bytes ([`maybe_all_hash`], a few arithmetic operations and a branch that is almost never
/// taken). A word that passes and is made of alphabet bytes only (or of `e`s only) is grown into
/// its whole run, byte by byte both ways (never back into a run already reported), and the filter
/// goes on after the run: every byte is looked at a bounded number of times.
///
/// Every store path in path form is found here too: its hash part is a run of exactly 32 alphabet
/// bytes (or `e`s), since the store dir before it ends in `/` and a path followed by another
/// letter or digit is no path. So one pass over the bytes finds both forms.
///
/// Calls `passed(offset)` each time the search has gone
/// [`PASSED_EVERY`] bytes further: it reads nothing before `offset` any more (the byte-by-byte
/// look-back stops at the end of the last run, and a run that started before `offset` has been
/// reported).
///
/// Where the CPU has AVX2 ([`wide::available`]), the filter is [`wide::next_block`] instead of
/// one word in every [`STRIDE`] bytes; both find the same runs.
fn for_each_hash_run_passing(
    haystack: &[u8],
    work: &mut u64,
    found: impl FnMut(usize, usize),
    scrubbed: impl FnMut(usize, usize),
    passed: impl FnMut(usize),
) {
    if wide::available() {
        for_each_hash_run_wide(haystack, work, found, scrubbed, passed);
    } else {
        for_each_hash_run_narrow(haystack, work, found, scrubbed, passed);
    }
}

/// [`for_each_hash_run_passing`] with the word filter, on any CPU.
fn for_each_hash_run_narrow(
    haystack: &[u8],
    work: &mut u64,
    mut found: impl FnMut(usize, usize),
    mut scrubbed: impl FnMut(usize, usize),
    mut passed: impl FnMut(usize),
) {
    let mut word_start = 0;
    // Every run ending before this has been dealt with; the byte here (if any) is not a hash byte.
    let mut done = 0;
    let mut steps = 0;
    let mut next_pass = PASSED_EVERY;
    while let Some(bytes) = haystack.get(word_start..word_start + WORD) {
        if word_start >= next_pass {
            // The look-back from here stops at `done` or at the first byte that is no hash byte;
            // a run of hash bytes that long before `word_start` would have been found already.
            passed(done.max(word_start.saturating_sub(STRIDE + WORD)));
            next_pass = word_start + PASSED_EVERY;
        }
        steps += 1;
        let word = u64::from_le_bytes(bytes.try_into().unwrap_or([0; WORD]));
        if !maybe_all_hash(word) {
            word_start += STRIDE;
            continue;
        }
        match grow_run(
            haystack,
            word_start,
            done,
            &mut steps,
            &mut found,
            &mut scrubbed,
        ) {
            Some(end) => {
                done = end;
                word_start = end.next_multiple_of(STRIDE);
            }
            None => word_start += STRIDE,
        }
    }
    *work += steps as u64;
}

/// [`for_each_hash_run_passing`] with [`wide::next_block`] as the filter.
///
/// A run of at least 32 bytes covers a whole [`wide::BLOCK`] of 16 bytes that starts at a
/// multiple of 16 (counted from the start of the haystack); so does a run of 32 `e`s. Only such
/// blocks, made of digits and lowercase letters alone, are looked at closely: their first word
/// starts a run as in [`for_each_hash_run_narrow`], or the block is passed over.
fn for_each_hash_run_wide(
    haystack: &[u8],
    work: &mut u64,
    mut found: impl FnMut(usize, usize),
    mut scrubbed: impl FnMut(usize, usize),
    mut passed: impl FnMut(usize),
) {
    let len = haystack.len();
    // Every block starting before this has been looked at.
    let mut position = 0;
    let mut done = 0;
    let mut steps = 0;
    let mut next_pass = PASSED_EVERY;
    while position < len {
        if position >= next_pass {
            // As in the word filter: a run as long as a hash that started this far back would
            // have covered a whole block looked at already.
            passed(done.max(position.saturating_sub(HASH_LEN)));
            next_pass = position + PASSED_EVERY;
        }
        let from = position.next_multiple_of(wide::BLOCK);
        let until = next_pass.min(len);
        let Some(block) = wide::next_block(haystack, from, until) else {
            steps += until.saturating_sub(from) / (2 * wide::BLOCK) + 1;
            position = until;
            continue;
        };
        steps += (block - from) / (2 * wide::BLOCK) + 1;
        match grow_run(haystack, block, done, &mut steps, &mut found, &mut scrubbed) {
            Some(end) => {
                done = end;
                position = end;
            }
            None => position = block + wide::BLOCK,
        }
    }
    *work += steps as u64;
}

/// Looks closely at the word at `word_start`, whose bytes are all digits or lowercase letters:
/// if it is made of `e`s or of alphabet bytes only, grows it into its whole run (byte by byte
/// backwards, never back past `done`; forwards a word at a time), reports the run if it is at
/// least a hash long, and returns where it ends. `None`: the word is neither, and starts no run.
#[inline]
fn grow_run(
    haystack: &[u8],
    word_start: usize,
    done: usize,
    steps: &mut usize,
    found: &mut impl FnMut(usize, usize),
    scrubbed: &mut impl FnMut(usize, usize),
) -> Option<usize> {
    const SCRUBBED_WORD: u64 = u64::from_ne_bytes([b'e'; WORD]);
    let len = haystack.len();
    let is_hash = |position: usize| HASH_BYTE[usize::from(haystack[position])];
    let word = u64::from_le_bytes(
        haystack
            .get(word_start..word_start + WORD)?
            .try_into()
            .unwrap_or([0; WORD]),
    );
    if word == SCRUBBED_WORD {
        let mut start = word_start;
        while start > done && haystack[start - 1] == b'e' {
            start -= 1;
        }
        let mut end = word_start + WORD;
        while end < len && haystack[end] == b'e' {
            end += 1;
        }
        *steps += (word_start - start) + (end - word_start) / WORD + WORD;
        if end - start >= HASH_LEN {
            scrubbed(start, end);
        }
        return Some(end);
    }
    if !all_hash(word) {
        return None;
    }
    let mut start = word_start;
    while start > done && is_hash(start - 1) {
        start -= 1;
    }
    let end = wide::hash_run_end(haystack, word_start + WORD);
    // Backwards byte by byte (under a word), forwards a word at a time.
    *steps += (word_start - start) + (end - word_start) / WORD + WORD;
    if end - start >= HASH_LEN {
        found(start, end);
    }
    Some(end)
}

/// [`wide::hash_run_end`] without AVX2: a word at a time, then byte by byte.
fn hash_run_end_words(haystack: &[u8], from: usize) -> usize {
    let mut end = from.min(haystack.len());
    while let Some(bytes) = haystack.get(end..end + WORD)
        && all_hash(u64::from_le_bytes(bytes.try_into().unwrap_or([0; WORD])))
    {
        end += WORD;
    }
    while end < haystack.len() && HASH_BYTE[usize::from(haystack[end])] {
        end += 1;
    }
    end
}

/// A 32-byte window of alphabet bytes packed into 160 bits, five per byte: two packed windows are
/// equal exactly when their bytes are. Sliding it one byte on is a few shifts, so every window of
/// a run is looked up in constant time, however long the run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
struct Packed {
    /// The first 32 bits (the oldest bytes' digits).
    high: u32,
    /// The last 128 bits.
    low: u128,
}

impl Packed {
    /// The window moved on by one byte whose digit is `digit` (the oldest byte drops out).
    #[inline]
    fn push(self, digit: u8) -> Self {
        Self {
            high: (self.high << 5) | (self.low >> 123) as u32,
            low: (self.low << 5) | u128::from(digit),
        }
    }

    fn of(bytes: &[u8]) -> Self {
        bytes.iter().fold(Self::default(), |packed, &byte| {
            packed.push(DIGIT[usize::from(byte)])
        })
    }

    /// A well-mixed 64-bit digest of the value.
    #[inline]
    #[expect(
        clippy::cast_possible_truncation,
        reason = "folding 160 bits into 64 on purpose"
    )]
    fn mix(self) -> u64 {
        let folded = (self.low as u64)
            ^ ((self.low >> 64) as u64).rotate_left(29)
            ^ u64::from(self.high).rotate_left(47);
        folded.wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }
}

impl std::hash::Hash for Packed {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.mix());
    }
}

/// Hasher for [`Packed`] keys, which hash themselves ([`Packed::mix`]).
#[derive(Default)]
struct PackedHasher(u64);

impl std::hash::Hasher for PackedHasher {
    fn finish(&self) -> u64 {
        self.0 ^ (self.0 >> 29)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(byte)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 ^= value;
    }
}

type PackedMap<V> = HashMap<Packed, V, std::hash::BuildHasherDefault<PackedHasher>>;

/// The candidates' hash parts, packed, behind a bit filter that turns away almost every window
/// with one memory access.
#[derive(Debug)]
struct CandidateTable {
    filter: Vec<u64>,
    /// The filter's bit of a value is its [`Packed::mix`] shifted right by this.
    shift: u32,
    /// Sorted by value; the `usize` indexes the scanner's candidates.
    sorted: Vec<(Packed, usize)>,
}

impl CandidateTable {
    fn new(candidates: &[StorePath]) -> Self {
        let bits = (candidates.len() * 64)
            .next_power_of_two()
            .clamp(1 << 12, 1 << 24);
        let shift = 64 - bits.trailing_zeros();
        let mut filter = vec![0; bits / 64];
        let mut sorted: Vec<(Packed, usize)> = candidates
            .iter()
            .enumerate()
            .map(|(index, path)| (Packed::of(path.hash().as_bytes()), index))
            .collect();
        sorted.sort_unstable();
        for (packed, _) in &sorted {
            let (word, bit) = Self::bit(packed.mix() >> shift);
            filter[word] |= bit;
        }
        Self {
            filter,
            shift,
            sorted,
        }
    }

    #[inline]
    fn bit(index: u64) -> (usize, u64) {
        (usize::try_from(index >> 6).unwrap_or(0), 1 << (index & 63))
    }

    fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }

    /// The candidate whose hash part is `packed`.
    #[inline]
    fn get(&self, packed: Packed) -> Option<usize> {
        let (word, bit) = Self::bit(packed.mix() >> self.shift);
        if self
            .filter
            .get(word)
            .is_none_or(|&filter| filter & bit == 0)
        {
            return None;
        }
        self.sorted
            .binary_search_by(|(value, _)| value.cmp(&packed))
            .ok()
            .map(|at| self.sorted[at].1)
    }
}

/// The end of the stretch of `byte`s that starts at `from` (at most `end`), eight bytes at a time.
fn stretch_end(haystack: &[u8], from: usize, end: usize, byte: u8, work: &mut u64) -> usize {
    let splat = u64::from_ne_bytes([byte; WORD]);
    let mut at = from;
    while at + WORD <= end {
        let word = u64::from_ne_bytes(haystack[at..at + WORD].try_into().unwrap_or([0; WORD]));
        if word != splat {
            break;
        }
        at += WORD;
    }
    while at < end && haystack[at] == byte {
        at += 1;
    }
    *work += ((at - from) / WORD + (at - from) % WORD + 1) as u64;
    at
}

/// The windows kept by [`Scanner::scan_keeping_windows`] while they are being found.
#[derive(Debug)]
struct Keeper {
    windows: Windows,
    limit: usize,
    /// Each distinct value: its index in `windows.windows` and whether it occurred again.
    seen: PackedMap<(usize, bool)>,
}

impl Keeper {
    fn new(windows: Windows, limit: usize) -> Self {
        Self {
            windows,
            limit,
            seen: PackedMap::default(),
        }
    }

    /// Records `occurrences` windows of value `packed`, the first at `offset` with bytes `bytes`.
    fn add(&mut self, offset: u64, occurrences: usize, packed: Packed, bytes: &[u8]) {
        if self.windows.overflowed {
            return;
        }
        if let Some((_, repeated)) = self.seen.get_mut(&packed) {
            *repeated = true;
            return;
        }
        if self.windows.windows.len() >= self.limit {
            self.windows.overflowed = true;
            self.seen.clear();
            return;
        }
        let Ok(hash) = HashPart::parse(bytes) else {
            return;
        };
        self.seen
            .insert(packed, (self.windows.windows.len(), occurrences > 1));
        self.windows.windows.push((offset, hash));
    }

    fn finish(mut self) -> Windows {
        let mut repeated: Vec<HashPart> = self
            .seen
            .values()
            .filter(|(_, repeated)| *repeated)
            .map(|&(index, _)| self.windows.windows[index].1)
            .collect();
        repeated.sort_unstable();
        self.windows.repeated = repeated;
        self.windows
    }
}

/// The bare-form search over one haystack's runs; see [`Scanner::scan_into`].
struct RunScan<'scan> {
    table: &'scan CandidateTable,
    candidates: &'scan [StorePath],
    haystack: &'scan [u8],
    base: u64,
    hits: &'scan mut Vec<Hit>,
    /// The path hits are `hits[next_path..path_hits_end]` from here on.
    next_path: usize,
    path_hits_end: usize,
    keeper: Option<&'scan mut Keeper>,
    work: u64,
}

impl RunScan<'_> {
    /// Looks at every window of the run `haystack[start..end]`, in constant time per window: the
    /// packed value slides one byte at a time, and a stretch of one repeated byte (whose windows
    /// are all alike) is skipped eight bytes at a time and looked up once.
    fn run(&mut self, start: usize, end: usize) {
        let haystack = self.haystack;
        let mut packed = Packed::default();
        let mut same_since = start;
        for at in start..start + HASH_LEN - 1 {
            packed = packed.push(DIGIT[usize::from(haystack[at])]);
            if at > start && haystack[at] != haystack[at - 1] {
                same_since = at;
            }
        }
        let mut last = start + HASH_LEN - 1;
        while last < end {
            let byte = haystack[last];
            packed = packed.push(DIGIT[usize::from(byte)]);
            if haystack[last - 1] != byte {
                same_since = last;
            }
            let window = last + 1 - HASH_LEN;
            let mut count = 1;
            if last + 1 - same_since >= HASH_LEN {
                // Every window up to the stretch's end holds the same 32 bytes.
                let stretch = stretch_end(haystack, last + 1, end, byte, &mut self.work);
                count += stretch - (last + 1);
                last = stretch - 1;
            }
            self.work += 1;
            self.windows(window, count, packed);
            last += 1;
        }
    }

    /// Deals with `count` consecutive windows from `first`, all of value `packed`.
    fn windows(&mut self, first: usize, count: usize, packed: Packed) {
        let from = self.base + first as u64;
        let to = from + count as u64;
        while self.next_path < self.path_hits_end && self.hits[self.next_path].hash_offset < from {
            self.next_path += 1;
        }
        // A path hit's hash is not a bare window as well.
        let mut path_end = self.next_path;
        while path_end < self.path_hits_end && self.hits[path_end].hash_offset < to {
            path_end += 1;
        }
        let path_hits: Vec<u64> = self.hits[self.next_path..path_end]
            .iter()
            .map(|hit| hit.hash_offset)
            .collect();
        self.next_path = path_end;
        if path_hits.len() == count {
            return;
        }
        let mut bare_offsets = (from..to).filter(|offset| !path_hits.contains(offset));
        if let Some(index) = self.table.get(packed) {
            for offset in bare_offsets {
                self.hits.push(Hit {
                    offset,
                    hash_offset: offset,
                    len: HASH_LEN,
                    form: Form::Bare,
                    target: Target::Live(self.candidates[index].clone()),
                });
            }
            self.work += count as u64;
        } else if let Some(keeper) = self.keeper.as_mut()
            && let Some(offset) = bare_offsets.next()
        {
            let at = usize::try_from(offset - self.base).unwrap_or(usize::MAX);
            keeper.add(
                offset,
                count - path_hits.len(),
                packed,
                &self.haystack[at..at + HASH_LEN],
            );
        }
    }
}

impl Scanner {
    /// Starts building a scanner for `store_dir`.
    pub fn builder(store_dir: StoreDir) -> ScannerBuilder {
        ScannerBuilder {
            store_dir,
            candidates: BTreeMap::new(),
        }
    }

    /// The store dir this scanner looks for.
    pub fn store_dir(&self) -> &StoreDir {
        &self.store_dir
    }

    /// The candidates whose bare hash parts are searched for, sorted by hash.
    pub fn candidates(&self) -> &[StorePath] {
        &self.candidates
    }

    /// How many bytes after the start of a match can belong to it: a chunked reader must keep at
    /// least this many bytes of overlap.
    pub fn max_match_len(&self) -> usize {
        self.store_dir.prefix().len() + HASH_LEN + 1 + MAX_NAME_LEN
    }

    /// Every reference in `haystack`, sorted by hash offset. A bare hit at the same hash offset as
    /// a path hit is folded into the path hit.
    pub fn scan(&self, haystack: &[u8]) -> Vec<Hit> {
        let mut hits = Vec::new();
        self.scan_into(haystack, 0, &mut hits, None, &mut 0);
        hits
    }

    /// Like [`Scanner::scan`], and also keeps (up to `limit`) the hash-alphabet windows that
    /// matched no candidate, for [`Windows::hits_for`].
    pub fn scan_keeping_windows(&self, haystack: &[u8], limit: usize) -> (Vec<Hit>, Windows) {
        let mut hits = Vec::new();
        let mut windows = Windows::default();
        self.scan_into(haystack, 0, &mut hits, Some((&mut windows, limit)), &mut 0);
        (hits, windows)
    }

    /// Like [`Scanner::scan_keeping_windows`] with a `limit`, or [`Scanner::scan`] without one
    /// (the windows are then empty), and calls `passed(offset)` now and then, in ascending order,
    /// once the scan's pass over the whole haystack has left `offset` behind: from then on it only
    /// reads bytes before `offset` near the references and windows it found.
    ///
    /// A caller whose haystack is a file mapping can let go of the pages before `offset` (a later
    /// read faults them in again), so a large file never has to be resident all at once.
    pub fn scan_passing(
        &self,
        haystack: &[u8],
        limit: Option<usize>,
        passed: &mut dyn FnMut(usize),
    ) -> (Vec<Hit>, Windows) {
        // Found into the list of the scan before on this thread and handed over at their exact
        // length: a list grown by pushing holds room for four hits, and most files have one.
        thread_local! {
            static HITS: std::cell::Cell<Vec<Hit>> = const { std::cell::Cell::new(Vec::new()) };
        }
        let mut found = HITS.take();
        let mut windows = Windows::default();
        let keep = limit.map(|limit| (&mut windows, limit));
        self.scan_into_passing(haystack, 0, &mut found, keep, &mut 0, passed);
        // Not `mem::take`: the list given back keeps its room for the next scan.
        #[expect(clippy::drain_collect, reason = "the list given back keeps its room")]
        let hits = found.drain(..).collect();
        if found.capacity() <= KEPT_LIST_LEN {
            HITS.set(found);
        }
        (hits, windows)
    }

    /// Scans `haystack`, whose first byte is at `base` in the whole input, appending to `hits`.
    fn scan_into(
        &self,
        haystack: &[u8],
        base: u64,
        hits: &mut Vec<Hit>,
        keep: Option<(&mut Windows, usize)>,
        work: &mut u64,
    ) {
        self.scan_into_passing(haystack, base, hits, keep, work, &mut |_| {});
    }

    /// [`Scanner::scan_into`], telling `passed` how far it has got (see [`Scanner::scan_passing`]).
    fn scan_into_passing(
        &self,
        haystack: &[u8],
        base: u64,
        hits: &mut Vec<Hit>,
        keep: Option<(&mut Windows, usize)>,
        work: &mut u64,
        passed: &mut dyn FnMut(usize),
    ) {
        match keep {
            Some((windows, limit)) => {
                let mut keeper = Keeper::new(std::mem::take(windows), limit);
                self.scan_into_keeper(haystack, base, hits, Some(&mut keeper), work, passed);
                *windows = keeper.finish();
            }
            None => self.scan_into_keeper(haystack, base, hits, None, work, passed),
        }
    }

    /// [`Scanner::scan_into_passing`] with the windows kept in `keeper`, which may have seen
    /// earlier pieces of the same input (so a window seen there counts as seen).
    fn scan_into_keeper(
        &self,
        haystack: &[u8],
        base: u64,
        hits: &mut Vec<Hit>,
        keeper: Option<&mut Keeper>,
        work: &mut u64,
        passed: &mut dyn FnMut(usize),
    ) {
        /// The run lists of the scan before on this thread, taken and given back empty: most
        /// files have a run or two, and new lists would be two allocations for each of them.
        type Runs = (Vec<(usize, usize)>, Vec<(usize, usize)>);
        thread_local! {
            static RUNS: std::cell::Cell<Runs> = const {
                std::cell::Cell::new((Vec::new(), Vec::new()))
            };
        }
        let first = hits.len();
        // One pass finds the runs: the bare-form candidates, and the hash parts of every path.
        let (mut runs, mut scrubbed_runs) = RUNS.take();
        let mut finder_work = 0;
        for_each_hash_run_passing(
            haystack,
            &mut finder_work,
            |start, end| runs.push((start, end)),
            |start, end| scrubbed_runs.push((start, end)),
            passed,
        );
        let prefix = self.store_dir.prefix();
        for &(start, end) in runs.iter().chain(&scrubbed_runs) {
            if end - start == HASH_LEN
                && haystack[..start].ends_with(prefix)
                && let Some(hit) = self.path_hit_at(haystack, start - prefix.len(), base)
            {
                hits.push(hit);
            }
        }
        if !scrubbed_runs.is_empty() {
            hits[first..].sort_by_key(|hit| hit.hash_offset);
        }
        let path_hits_end = hits.len();
        let give_back = |mut runs: Vec<(usize, usize)>, mut scrubbed_runs: Vec<(usize, usize)>| {
            // The lists of a file with very many runs are let go of rather than kept for good.
            if runs.capacity() + scrubbed_runs.capacity() <= KEPT_LIST_LEN {
                runs.clear();
                scrubbed_runs.clear();
                RUNS.set((runs, scrubbed_runs));
            }
        };
        if self.table.is_empty() && keeper.is_none() {
            *work += finder_work;
            give_back(runs, scrubbed_runs);
            return;
        }

        let mut scan = RunScan {
            table: &self.table,
            candidates: &self.candidates,
            haystack,
            base,
            hits,
            next_path: first,
            path_hits_end,
            keeper,
            work: 0,
        };
        for &(start, end) in &runs {
            scan.run(start, end);
        }
        *work += finder_work + scan.work;
        give_back(runs, scrubbed_runs);
        hits[first..].sort_by_key(|hit| hit.hash_offset);
    }

    /// The path-form hit whose store dir prefix starts at `start`, if the bytes after it form one.
    fn path_hit_at(&self, haystack: &[u8], start: usize, base: u64) -> Option<Hit> {
        let hash_start = start + self.store_dir.prefix().len();
        let hash = haystack.get(hash_start..hash_start + HASH_LEN)?;
        let scrubbed = hash == SCRUBBED_HASH;
        let live = if scrubbed {
            None
        } else {
            Some(HashPart::parse(hash).ok()?)
        };
        let after = hash_start + HASH_LEN;
        let name = match haystack.get(after) {
            // A longer token such as `<storedir>/<33 letters>` is not a store path.
            Some(byte) if byte.is_ascii_alphanumeric() => return None,
            // A name Nix rejects (`.hidden`) is not part of the path: `<storedir>/<hash>` alone.
            Some(b'-') => storepatch_core::name_at_start(&haystack[after + 1..]),
            _ => &[][..],
        };
        let len = after - start + if name.is_empty() { 0 } else { 1 + name.len() };
        let target = match live {
            Some(hash) => Target::Live(StorePath::new(hash, name)),
            None => Target::Scrubbed {
                name: name.to_vec(),
            },
        };
        Some(Hit {
            offset: base + start as u64,
            hash_offset: base + hash_start as u64,
            len,
            form: Form::Path,
            target,
        })
    }

    /// Starts a chunked scan: feed it the input in pieces of any size.
    pub fn stream(&self) -> StreamScanner<'_> {
        StreamScanner {
            scanner: self,
            window: Vec::new(),
            window_start: 0,
            reported_until: 0,
        }
    }

    /// Whether no reference can hold `byte`: it is no hash byte, no name byte and not in the
    /// store dir. A piece of input that ends just after such a byte holds every reference that
    /// starts in it whole (see [`Scanner::pieces`]).
    pub fn is_cut(&self, byte: u8) -> bool {
        self.cut[usize::from(byte)]
    }

    /// The length of the longest start of `bytes` that ends just after a byte no reference can
    /// hold ([`Scanner::is_cut`]), or `None` when `bytes` has no such byte.
    ///
    /// Text has one on almost every line (a space, a newline, a quote) and binaries in almost
    /// every word (a NUL), so the search backwards from the end is short; only input made of
    /// store-path bytes alone has none at all. A word of eight digits and lowercase letters holds
    /// no cut, so such input (a long run of `0`, say) is passed over a word at a time.
    pub fn last_cut(&self, bytes: &[u8]) -> Option<usize> {
        let mut end = bytes.len();
        while end > 0 {
            let start = end.saturating_sub(WORD);
            let piece = &bytes[start..end];
            if let Ok(word) = <[u8; WORD]>::try_from(piece)
                && maybe_all_hash(u64::from_ne_bytes(word))
            {
                end = start;
                continue;
            }
            if let Some(at) = piece.iter().rposition(|&byte| self.is_cut(byte)) {
                return Some(start + at + 1);
            }
            end = start;
        }
        None
    }

    /// Starts a scan of input handed over in pieces cut where no reference can be (see
    /// [`PieceScan::scan`]). Keeps up to `limit` windows like [`Scanner::scan_keeping_windows`],
    /// or none without a limit. The hits and windows are exactly those of a scan of the whole
    /// input at once, however it is cut.
    pub fn pieces(&self, limit: Option<usize>) -> PieceScan<'_> {
        PieceScan {
            scanner: self,
            keeper: limit.map(|limit| Keeper::new(Windows::default(), limit)),
            scanned: 0,
        }
    }

    /// Scans everything `reader` yields, `chunk_size` bytes at a time (raised to a useful minimum).
    pub fn scan_reader(
        &self,
        mut reader: impl Read,
        chunk_size: usize,
    ) -> std::io::Result<Vec<Hit>> {
        let mut stream = self.stream();
        let mut hits = Vec::new();
        let mut chunk = vec![0; chunk_size.max(1)];
        loop {
            let read = match reader.read(&mut chunk) {
                Ok(0) => break,
                Ok(read) => read,
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            };
            stream.feed(&chunk[..read], &mut hits);
        }
        stream.finish(&mut hits);
        Ok(hits)
    }
}

/// A scan over input handed over in pieces; see [`Scanner::pieces`].
#[derive(Debug)]
pub struct PieceScan<'scanner> {
    scanner: &'scanner Scanner,
    keeper: Option<Keeper>,
    /// Offset in the whole input of the next piece.
    scanned: u64,
}

impl PieceScan<'_> {
    /// Scans `piece`, the input's next bytes, appending its hits (in hash offset order, with
    /// offsets in the whole input) to `hits`.
    ///
    /// Every piece but the last must end just after a byte [`Scanner::is_cut`] says no reference
    /// can hold, such as the end [`Scanner::last_cut`] finds. Then no reference spans two pieces,
    /// no run of hash-alphabet bytes does, and a store dir in front of a hash is in the hash's
    /// piece, so each piece has exactly the hits and windows of its part of the whole input. A
    /// piece cut anywhere else may lose references that span its end.
    pub fn scan(&mut self, piece: &[u8], hits: &mut Vec<Hit>) {
        self.scanner.scan_into_keeper(
            piece,
            self.scanned,
            hits,
            self.keeper.as_mut(),
            &mut 0,
            &mut |_| {},
        );
        self.scanned += piece.len() as u64;
    }

    /// Ends the scan: the windows kept over all the pieces (empty without a limit).
    pub fn finish(self) -> Windows {
        self.keeper.map(Keeper::finish).unwrap_or_default()
    }
}

/// A scan over input fed in chunks; see [`Scanner::stream`].
///
/// It keeps a window of unreported bytes. A hit is reported once enough bytes after its hash are
/// known to decide its full extent (the longest possible name), so results do not depend on where
/// the chunk edges fall.
#[derive(Debug)]
pub struct StreamScanner<'scanner> {
    scanner: &'scanner Scanner,
    window: Vec<u8>,
    /// Offset of `window[0]` in the whole input.
    window_start: u64,
    /// Every hit whose hash starts before this offset has been reported.
    reported_until: u64,
}

impl StreamScanner<'_> {
    /// Feeds the next chunk, appending the hits that are now certain to `hits`.
    pub fn feed(&mut self, chunk: &[u8], hits: &mut Vec<Hit>) {
        self.window.extend_from_slice(chunk);
        let after_hash = HASH_LEN + 1 + MAX_NAME_LEN;
        let Some(cut_index) = self.window.len().checked_sub(after_hash) else {
            return;
        };
        // Small feeds are batched until there is a useful amount to scan.
        if cut_index < self.scanner.max_match_len() * 4 {
            return;
        }
        let cut = self.window_start + cut_index as u64;
        self.scan_window(Some(cut), hits);
        // Keep the bytes after the cut, plus the store dir before it so that a path whose hash
        // starts right after the cut is still seen in path form.
        let keep_from = cut_index.saturating_sub(self.scanner.store_dir.prefix().len());
        self.window.drain(..keep_from);
        self.window_start += keep_from as u64;
        self.reported_until = cut;
    }

    /// Reports the hits left at the end of the input.
    pub fn finish(self, hits: &mut Vec<Hit>) {
        self.scan_window(None, hits);
    }

    fn scan_window(&self, cut: Option<u64>, hits: &mut Vec<Hit>) {
        let mut found = Vec::new();
        self.scanner
            .scan_into(&self.window, self.window_start, &mut found, None, &mut 0);
        hits.extend(found.into_iter().filter(|hit| {
            hit.hash_offset >= self.reported_until && cut.is_none_or(|cut| hit.hash_offset < cut)
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Steps a xorshift generator: the tests' deterministic stream of pseudo-random bytes.
    pub(crate) fn xorshift(state: &mut u64) {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
    }

    /// `len` bytes from the stream: mostly bytes of `common`, and one of `rare` where the state is
    /// a multiple of `rare_every` (so the smaller it is, the shorter the runs of `common` bytes).
    pub(crate) fn mostly(
        state: &mut u64,
        len: usize,
        common: &[u8],
        rare: &[u8],
        rare_every: u64,
    ) -> Vec<u8> {
        (0..len)
            .map(|_| {
                xorshift(state);
                let pick = usize::try_from(*state >> 8).unwrap();
                if state.is_multiple_of(rare_every) {
                    rare[pick % rare.len()]
                } else {
                    common[pick % common.len()]
                }
            })
            .collect()
    }

    const HASH_A: &[u8; 32] = b"0c5dq8ikmzkcjh2hh2x3a1ihcp6yq3w1";
    const HASH_B: &[u8; 32] = b"1111111111111111111111111111111z";

    fn store_path(hash: &[u8; 32], name: &str) -> StorePath {
        StorePath::new(HashPart::parse(hash).unwrap(), name)
    }

    fn scanner(candidates: &[StorePath]) -> Scanner {
        Scanner::builder(StoreDir::default())
            .candidates(candidates.iter().cloned())
            .build()
    }

    fn text(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    #[test]
    fn path_form_takes_name_grammar_not_junk() {
        let input = text(&[
            b"\"url\": \"file:///nix/store/",
            HASH_A,
            b"-source\", \"dir_info\"",
        ]);
        let hits = scanner(&[]).scan(&input);
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].target, Target::Live(store_path(HASH_A, "source")));
        assert_eq!(hits[0].offset, 15);
        assert_eq!(hits[0].hash_offset, 26);
        assert_eq!(hits[0].len, "/nix/store/".len() + 32 + "-source".len());
    }

    #[test]
    fn path_without_name_and_longer_tokens() {
        let input = text(&[b"/nix/store/", HASH_A, b"/bin /nix/store/", HASH_A, b"x"]);
        let hits = scanner(&[]).scan(&input);
        assert_eq!(hits.len(), 1, "{hits:?}");
        assert_eq!(hits[0].target, Target::Live(store_path(HASH_A, "")));
    }

    #[test]
    fn scrubbed_paths_are_reported_as_such() {
        let input = text(&[b"/nix/store/", &SCRUBBED_HASH, b"-zlib-1.3/lib"]);
        let hits = scanner(&[]).scan(&input);
        assert_eq!(
            hits,
            vec![Hit {
                offset: 0,
                hash_offset: 11,
                len: 11 + 32 + 9,
                form: Form::Path,
                target: Target::Scrubbed {
                    name: b"zlib-1.3".to_vec()
                },
            }]
        );
    }

    #[test]
    fn bare_hashes_of_candidates_only() {
        let candidates = [store_path(HASH_A, "zlib")];
        let input = text(&[HASH_A, b" ", HASH_B, b" /nix/store/", HASH_A, b"-zlib"]);
        let hits = scanner(&candidates).scan(&input);
        let forms: Vec<_> = hits.iter().map(|hit| (hit.hash_offset, hit.form)).collect();
        assert_eq!(forms, vec![(0, Form::Bare), (77, Form::Path)]);
    }

    #[test]
    fn overlapping_candidates_are_all_found() {
        // HASH_B's tail overlaps a second candidate that starts inside it.
        let second = *b"11111111111111111111111111111z22";
        let candidates = [store_path(HASH_B, "b"), store_path(&second, "c")];
        let input = text(&[HASH_B, b"22"]);
        let hits = scanner(&candidates).scan(&input);
        assert_eq!(hits.len(), 2);
    }

    #[test]
    fn overlapping_store_dirs_are_all_seen() {
        let input = text(&[b"/nix/store/nix/store/", HASH_A, b"-a"]);
        let hits = scanner(&[]).scan(&input);
        assert_eq!(hits.len(), 1, "{hits:?}");
        assert_eq!(hits[0].offset, 10);
        let short = Scanner::builder(StoreDir::new("/s").unwrap()).build();
        let input = text(&[b"/s/s/", HASH_A]);
        assert_eq!(short.scan(&input).len(), 1);
    }

    /// Found by the `scan_rewrite` fuzz target: whole and chunked scans disagreed on a store dir
    /// that overlaps itself.
    #[test]
    fn fuzz_regression_overlapping_prefix_across_chunks() {
        let input = include_bytes!("../testdata/fuzz-overlapping-prefix.bin");
        let (chunk, haystack) = input.split_first().unwrap();
        let candidate = store_path(HASH_A, "zlib");
        let scanner = Scanner::builder(StoreDir::new("/s").unwrap())
            .candidate(candidate)
            .build();
        let whole = scanner.scan(haystack);
        let streamed = scanner
            .scan_reader(haystack, usize::from(*chunk) + 1)
            .unwrap();
        assert_eq!(streamed, whole);
    }

    #[test]
    fn custom_store_dir() {
        let scanner = Scanner::builder(StoreDir::new("/tmp/s").unwrap()).build();
        let input = text(&[b"/nix/store/", HASH_A, b"-a /tmp/s/", HASH_A, b"-b"]);
        let hits = scanner.scan(&input);
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].target, Target::Live(store_path(HASH_A, "b")));
    }

    #[test]
    fn name_is_capped() {
        let long = "n".repeat(300);
        let input = text(&[b"/nix/store/", HASH_A, b"-", long.as_bytes()]);
        let hits = scanner(&[]).scan(&input);
        assert_eq!(hits[0].live().unwrap().name().len(), MAX_NAME_LEN);
    }

    /// Every way of feeding the input gives the same hits as one whole-buffer scan.
    #[test]
    fn stream_matches_whole_scan_for_every_chunk_size() {
        let candidates = [store_path(HASH_A, "zlib"), store_path(HASH_B, "py")];
        let scanner = scanner(&candidates);
        let mut input = Vec::new();
        for round in 0..40u8 {
            input.extend(std::iter::repeat_n(b'.', usize::from(round) * 7));
            input.extend_from_slice(b"/nix/store/");
            input.extend_from_slice(if round % 2 == 0 { HASH_A } else { HASH_B });
            input.extend_from_slice(b"-name-");
            input.extend(std::iter::repeat_n(b'x', usize::from(round) * 5));
            input.extend_from_slice(if round % 3 == 0 {
                HASH_B
            } else {
                &SCRUBBED_HASH
            });
        }
        let whole = scanner.scan(&input);
        // 40 path-form references and 14 bare copies of HASH_B.
        assert_eq!(whole.len(), 54);
        for chunk_size in [1, 2, 3, 7, 31, 32, 33, 64, 255, 256, 1000, 4096] {
            let streamed = scanner.scan_reader(&input[..], chunk_size).unwrap();
            assert_eq!(streamed, whole, "chunk size {chunk_size}");
        }
    }

    /// The probing window finder agrees with checking every position.
    #[test]
    fn window_finder_matches_brute_force() {
        let alphabet = b"0123456789abcdfghijklmnpqrsvwxyz";
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for round in 0..300usize {
            let len = round * 3;
            let haystack: Vec<u8> = (0..len)
                .map(|_| {
                    xorshift(&mut state);
                    // Mostly alphabet bytes, so that long runs are common; the others are any
                    // byte at all, most often the ones next to the alphabet's edges.
                    let pick = usize::try_from(state >> 8).unwrap();
                    let edges = b"/:`{eotu\x7f\x80\xff";
                    match state % 29 {
                        0 => pick.to_le_bytes()[0],
                        1 => edges[pick % edges.len()],
                        // Long stretches of `e`, as a scrubbed hash has.
                        _ if round % 4 == 3 && !state.is_multiple_of(7) => b'e',
                        _ => alphabet[pick % 32],
                    }
                })
                .collect();
            let every = |class: &dyn Fn(u8) -> bool| -> Vec<usize> {
                (0..len.saturating_sub(31))
                    .filter(|&start| haystack[start..start + 32].iter().all(|&byte| class(byte)))
                    .collect()
            };
            for wide in [false, true] {
                if wide && !wide::available() {
                    continue;
                }
                let (found, scrubbed) = runs_found(&haystack, wide);
                let found: Vec<usize> = found
                    .iter()
                    .flat_map(|&(start, end)| start..=end - HASH_LEN)
                    .collect();
                let scrubbed: Vec<usize> = scrubbed
                    .iter()
                    .flat_map(|&(start, end)| start..=end - HASH_LEN)
                    .collect();
                assert_eq!(
                    found,
                    every(&|byte| HASH_BYTE[usize::from(byte)]),
                    "round {round}, wide {wide}"
                );
                assert_eq!(
                    scrubbed,
                    every(&|byte| byte == b'e'),
                    "round {round}, wide {wide}"
                );
            }
        }
    }

    /// The wide or the narrow window finder.
    fn finder(
        wide: bool,
        haystack: &[u8],
        work: &mut u64,
        found: impl FnMut(usize, usize),
        scrubbed: impl FnMut(usize, usize),
        passed: impl FnMut(usize),
    ) {
        if wide {
            for_each_hash_run_wide(haystack, work, found, scrubbed, passed);
        } else {
            for_each_hash_run_narrow(haystack, work, found, scrubbed, passed);
        }
    }

    /// `(start, end)` of each run a window finder reported.
    type Runs = Vec<(usize, usize)>;

    /// The runs and the scrubbed runs one of the two window finders reports.
    fn runs_found(haystack: &[u8], wide: bool) -> (Runs, Runs) {
        let mut found = Vec::new();
        let mut scrubbed = Vec::new();
        finder(
            wide,
            haystack,
            &mut 0,
            |start, end| found.push((start, end)),
            |start, end| scrubbed.push((start, end)),
            |_| {},
        );
        (found, scrubbed)
    }

    /// Both window finders report the same runs, in the same order, and the same passes, on
    /// haystacks long enough to be passed through several times, with long runs of the alphabet
    /// and of `e`s at every alignment.
    #[test]
    fn wide_and_narrow_finders_agree() {
        if !wide::available() {
            return;
        }
        let alphabet = b"0123456789abcdfghijklmnpqrsvwxyz";
        let mut state = 0x51_7cc1_b727_220a_u64;
        let mut next = move || {
            xorshift(&mut state);
            state
        };
        for round in 0..4 {
            let mut haystack = Vec::new();
            while haystack.len() < PASSED_EVERY * 3 + round * 1000 {
                let pick = usize::try_from(next() >> 8).unwrap();
                let len = 1 + pick % 80;
                match next() % 6 {
                    0 => haystack.extend((0..len).map(|at| alphabet[(pick + at * 7) % 32])),
                    1 => haystack.extend(std::iter::repeat_n(b'e', len)),
                    2 => haystack.extend((0..len).map(|at| b"the quick brown fox "[at % 20])),
                    3 => haystack.extend(b"/nix/store/"),
                    _ => haystack.extend((0..len).map(|_| next().to_le_bytes()[0])),
                }
            }
            let mut results = Vec::new();
            for wide in [false, true] {
                // Runs (`true`) and passes (`false`) in the order they are reported.
                let events = std::cell::RefCell::new(Vec::new());
                finder(
                    wide,
                    &haystack,
                    &mut 0,
                    |start, end| events.borrow_mut().push((true, start, end)),
                    |start, end| events.borrow_mut().push((true, start, end)),
                    |offset| events.borrow_mut().push((false, offset, offset)),
                );
                let events = events.into_inner();
                // What `passed` is told only grows, and no run reported after it starts before.
                let mut passed = 0;
                let mut passes = 0;
                for &(run, start, _) in &events {
                    if run {
                        assert!(
                            start >= passed,
                            "round {round}, wide {wide}: {start} < {passed}"
                        );
                    } else {
                        assert!(
                            start >= passed,
                            "round {round}, wide {wide}: passes go back"
                        );
                        passed = start;
                        passes += 1;
                    }
                }
                assert!(passes >= 2, "round {round}, wide {wide}: {passes} passes");
                let runs: Vec<(usize, usize)> = events
                    .iter()
                    .filter(|event| event.0)
                    .map(|&(_, start, end)| (start, end))
                    .collect();
                results.push(runs);
            }
            assert_eq!(results[0], results[1], "round {round}");
            assert_eq!(
                (runs_found(&haystack, false), results[0].len() > 10),
                (runs_found(&haystack, true), true),
                "round {round}"
            );
        }
    }

    /// The exact word test agrees with the byte table, for every byte in every position.
    #[test]
    fn exact_word_test_is_exact_per_byte() {
        let base = *b"a0zk9bqm";
        assert!(all_hash(u64::from_le_bytes(base)));
        for position in 0..WORD {
            for byte in 0..=u8::MAX {
                let mut word = base;
                word[position] = byte;
                assert_eq!(
                    all_hash(u64::from_le_bytes(word)),
                    HASH_BYTE[usize::from(byte)],
                    "byte {byte:#04x} at {position}"
                );
            }
        }
    }

    /// The word filter lets every all-alphabet word through, and rejects a word as soon as any one
    /// byte (in any position) is not a digit or lowercase letter.
    #[test]
    fn word_filter_is_exact_per_byte() {
        let base = *b"a0zk9bqm";
        assert!(maybe_all_hash(u64::from_le_bytes(base)));
        for position in 0..WORD {
            for byte in 0..=u8::MAX {
                let mut word = base;
                word[position] = byte;
                assert_eq!(
                    maybe_all_hash(u64::from_le_bytes(word)),
                    byte.is_ascii_digit() || byte.is_ascii_lowercase(),
                    "byte {byte:#04x} at {position}"
                );
            }
        }
    }

    #[test]
    fn windows_resolve_later_candidates() {
        let input = text(&[b"x ", HASH_A, b" /nix/store/", HASH_B, b"-b ", HASH_B]);
        let (hits, windows) = scanner(&[]).scan_keeping_windows(&input, 100);
        assert_eq!(hits.len(), 1);
        // The path hit's own hash is not kept as a window; the two bare ones are.
        assert_eq!(windows.windows.len(), 2);
        let later: HashMap<HashPart, StorePath> =
            [(HashPart::parse(HASH_B).unwrap(), store_path(HASH_B, "b"))].into();
        let bare = windows.hits_for(&later);
        assert_eq!(bare.len(), 1);
        assert_eq!(bare[0].hash_offset, input.len() as u64 - 32);
        let (_, capped) = scanner(&[]).scan_keeping_windows(&input, 1);
        assert!(capped.overflowed);
    }

    /// The issue's two cliffs, at a tenth of their size: one long run of `0`, and runs of `x` that
    /// each end at a store path. Both cost a bounded number of steps per byte.
    #[test]
    fn scan_passing_finds_the_same_and_reports_its_progress_in_order() {
        let scanner = scanner(&[store_path(HASH_B, "b")]);
        // References and windows spread over several report steps, one across a step's edge.
        let mut input = Vec::new();
        let mut filler = 0u32;
        while input.len() < 5 * PASSED_EVERY + 1000 {
            filler = filler.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            input.push(b"_-/.=\n"[(filler >> 16) as usize % 6]);
            if input.len() % 300_000 == 0 {
                input.extend_from_slice(b"/nix/store/");
                input.extend_from_slice(HASH_A);
                input.extend_from_slice(b"-dep/lib ");
                input.extend_from_slice(HASH_B);
                input.extend_from_slice(b" 01234567890abcdfghijklmnpqrsvwxyz ");
            }
        }
        let edge = 2 * PASSED_EVERY - 20;
        input.splice(edge..edge, HASH_B.iter().copied());
        let mut passed = Vec::new();
        let (hits, windows) = scanner.scan_passing(&input, Some(4096), &mut |offset| {
            passed.push(offset);
        });
        assert_eq!(
            (hits.clone(), windows),
            scanner.scan_keeping_windows(&input, 4096)
        );
        let (plain, no_windows) = scanner.scan_passing(&input, None, &mut |_| {});
        assert_eq!(plain, scanner.scan(&input));
        assert_eq!(no_windows, Windows::default());
        assert!(hits.iter().any(|hit| hit.hash_offset == edge as u64));
        // About one report per step, ascending, none past the end.
        assert!((4..=5).contains(&passed.len()), "{passed:?}");
        assert!(passed.is_sorted(), "{passed:?}");
        assert!(
            passed.iter().all(|&offset| offset <= input.len()),
            "{passed:?}"
        );
        assert!(passed[0] >= PASSED_EVERY - 64, "{passed:?}");
    }

    #[test]
    fn long_runs_cost_linear_work() {
        let scanner = scanner(&[store_path(HASH_B, "b")]);
        let count = |input: &[u8]| {
            let mut work = 0;
            let mut windows = Windows::default();
            let hits = &mut Vec::new();
            scanner.scan_into(input, 0, hits, Some((&mut windows, 4096)), &mut work);
            (work, windows, hits.len())
        };
        let zeros = vec![b'0'; 5_000_000];
        let (work, windows, hits) = count(&zeros);
        // An eighth of a step per byte to find the run, as much to see that its windows are alike.
        assert!(work * 3 < zeros.len() as u64, "{work} steps");
        assert_eq!(
            (windows.windows.len(), windows.repeated.len(), hits),
            (1, 1, 0)
        );
        let mut xs = Vec::new();
        for _ in 0..100 {
            xs.extend(std::iter::repeat_n(b'x', 20_000));
            xs.extend_from_slice(b"/nix/store/");
            xs.extend_from_slice(HASH_A);
            xs.extend_from_slice(b"-dep/lib\n");
        }
        let (work, windows, hits) = count(&xs);
        assert!(
            work * 2 < xs.len() as u64 * 3,
            "{work} steps for {} bytes",
            xs.len()
        );
        // The x window once (seen again), the path's hash never: it is a path hit.
        assert_eq!(
            (windows.windows.len(), windows.repeated.len(), hits),
            (1, 1, 100)
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Steps the scan took over `input`, keeping windows as the tree scan's first pass does.
        fn work_of(scanner: &Scanner, input: &[u8]) -> u64 {
            let mut work = 0;
            let mut windows = Windows::default();
            scanner.scan_into(
                input,
                0,
                &mut Vec::new(),
                Some((&mut windows, 4096)),
                &mut work,
            );
            work
        }

        /// Inputs that once made the bare search slow: long runs of hash-alphabet bytes (one byte
        /// repeated, a short pattern repeated, or random), next to store paths and candidates.
        fn runs() -> impl Strategy<Value = Vec<u8>> {
            let run = prop_oneof![
                (prop::sample::select(&b"0xz19a"[..]), 0usize..3000)
                    .prop_map(|(byte, len)| vec![byte; len]),
                ("[0-9a-df-np-sv-z]{1,40}", 0usize..3000).prop_map(|(pattern, len)| {
                    pattern.into_bytes().into_iter().cycle().take(len).collect()
                }),
                "[0-9a-df-np-sv-z]{0,800}".prop_map(String::into_bytes),
                Just(b"/nix/store/".to_vec()),
                Just(HASH_A.to_vec()),
                Just(HASH_B.to_vec()),
                Just(b"-dep-1.0/lib\n".to_vec()),
                proptest::collection::vec(any::<u8>(), 0..8),
            ];
            proptest::collection::vec(run, 0..12).prop_map(|pieces| pieces.concat())
        }

        /// The offsets of every 32-byte window that equals `hash` and is not the hash of a path
        /// hit: what the bare search must report, found by looking at every offset.
        fn brute_bare(input: &[u8], hash: &[u8], path_hashes: &[u64]) -> Vec<u64> {
            (0..input.len().saturating_sub(HASH_LEN - 1))
                .filter(|&at| &input[at..at + HASH_LEN] == hash)
                .map(|at| at as u64)
                .filter(|offset| !path_hashes.contains(offset))
                .collect()
        }

        /// Pieces a haystack is made of: noise, store dir prefixes, hashes, names, separators.
        fn piece() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..40),
                Just(b"/nix/store/".to_vec()),
                Just(HASH_A.to_vec()),
                Just(HASH_B.to_vec()),
                Just(SCRUBBED_HASH.to_vec()),
                Just(b"-zlib-1.3.1".to_vec()),
                Just(b"/lib\0".to_vec()),
                "[a-z0-9.+_=-]{0,30}".prop_map(String::into_bytes),
            ]
        }

        fn haystack() -> impl Strategy<Value = Vec<u8>> {
            proptest::collection::vec(piece(), 0..60).prop_map(|pieces| pieces.concat())
        }

        proptest! {
            /// Bare hits are exactly the offsets where a candidate's hash sits, on inputs full of
            /// long alphabet runs, whole and streamed.
            #[test]
            fn bare_hits_match_every_offset(input in runs(), chunk_size in 1usize..5000) {
                let period = *b"0123456789abcdfghijklmnpqrsvwxyz";
                let candidates = [
                    store_path(HASH_A, "a"),
                    store_path(&[b'x'; 32], "x"),
                    store_path(&period, "p"),
                ];
                let scanner = scanner(&candidates);
                let hits = scanner.scan(&input);
                let path_hashes: Vec<u64> = hits
                    .iter()
                    .filter(|hit| hit.form == Form::Path)
                    .map(|hit| hit.hash_offset)
                    .collect();
                for candidate in &candidates {
                    let found: Vec<u64> = hits
                        .iter()
                        .filter(|hit| hit.form == Form::Bare && hit.live() == Some(candidate))
                        .map(|hit| hit.hash_offset)
                        .collect();
                    let hash = candidate.hash().as_bytes();
                    prop_assert_eq!(found, brute_bare(&input, hash, &path_hashes));
                }
                prop_assert_eq!(scanner.scan_reader(&input[..], chunk_size).unwrap(), hits);
            }

            /// The kept windows name every distinct window once, at its first offset, and mark the
            /// ones seen again; a later candidate's hits come from them exactly unless a rescan is
            /// asked for.
            #[test]
            fn kept_windows_answer_for_later_candidates(input in runs(), limit in 1usize..64) {
                let scanner = scanner(&[store_path(HASH_A, "a")]);
                let (hits, windows) = scanner.scan_keeping_windows(&input, limit);
                let path_hashes: Vec<u64> = hits
                    .iter()
                    .filter(|hit| hit.form == Form::Path)
                    .map(|hit| hit.hash_offset)
                    .collect();
                let mut firsts: BTreeMap<&[u8], (u64, usize)> = BTreeMap::new();
                for at in 0..input.len().saturating_sub(HASH_LEN - 1) {
                    let window = &input[at..at + HASH_LEN];
                    if window == HASH_A
                        || path_hashes.contains(&(at as u64))
                        || !window.iter().all(|&byte| HASH_BYTE[usize::from(byte)])
                    {
                        continue;
                    }
                    firsts.entry(window).or_insert((at as u64, 0)).1 += 1;
                }
                let mut expected: Vec<(u64, &[u8])> =
                    firsts.iter().map(|(window, (at, _))| (*at, *window)).collect();
                expected.sort_unstable();
                if expected.len() > limit {
                    prop_assert!(windows.overflowed);
                } else {
                    prop_assert!(!windows.overflowed);
                    let kept: Vec<(u64, &[u8])> = windows
                        .windows
                        .iter()
                        .map(|(at, hash)| (*at, &hash.as_bytes()[..]))
                        .collect();
                    prop_assert_eq!(kept, expected);
                    let repeated: Vec<&[u8]> = windows
                        .repeated
                        .iter()
                        .map(|hash| &hash.as_bytes()[..])
                        .collect();
                    let expected_repeated: Vec<&[u8]> = firsts
                        .iter()
                        .filter(|(_, (_, count))| *count > 1)
                        .map(|(window, _)| *window)
                        .collect();
                    prop_assert_eq!(repeated, expected_repeated);
                }
                for (_, hash) in windows.windows.iter().take(3) {
                    let later: HashMap<HashPart, StorePath> =
                        [(*hash, StorePath::new(*hash, "later"))].into();
                    if !windows.needs_rescan(&later) {
                        let offsets: Vec<u64> =
                            windows.hits_for(&later).iter().map(|hit| hit.hash_offset).collect();
                        prop_assert_eq!(offsets, brute_bare(&input, hash.as_bytes(), &path_hashes));
                    }
                }
            }

            /// The work is linear in the input whatever its runs: a few steps per byte, counted
            /// (not timed), where looking up every window's 32 bytes took over 32.
            #[test]
            fn work_is_linear_in_the_input(input in runs()) {
                let candidates = [store_path(HASH_A, "a"), store_path(HASH_B, "b")];
                let scanner = scanner(&candidates);
                let work = work_of(&scanner, &input);
                prop_assert!(work <= 3 * input.len() as u64 + 64, "{} steps for {} bytes", work, input.len());
            }

            /// The path-form hits, found from the hash-alphabet runs, are exactly those a search
            /// for every occurrence of the store dir finds (overlapping ones included).
            #[test]
            fn path_hits_match_a_search_for_the_store_dir(input in haystack()) {
                let scanner = scanner(&[store_path(HASH_A, "zlib")]);
                let found: Vec<Hit> = scanner
                    .scan(&input)
                    .into_iter()
                    .filter(|hit| hit.form == Form::Path)
                    .collect();
                let prefix = scanner.store_dir().prefix();
                let mut expected = Vec::new();
                let mut from = 0;
                while let Some(found) = memchr::memmem::find(&input[from..], prefix) {
                    expected.extend(scanner.path_hit_at(&input, from + found, 0));
                    from += found + 1;
                }
                prop_assert_eq!(found, expected);
            }

            /// The wide window finder (AVX2) reports exactly the runs of the narrow one (the
            /// word filter), on inputs full of hash-alphabet runs, `e`s and store paths.
            #[test]
            fn wide_finder_matches_narrow(input in runs(), scrubbed in haystack(), cut in 0usize..64) {
                if wide::available() {
                    let mut input = input;
                    input.extend_from_slice(&scrubbed);
                    let input = &input[cut.min(input.len())..];
                    prop_assert_eq!(runs_found(input, true), runs_found(input, false));
                }
            }

            /// Streaming in chunks of any size finds exactly what one whole scan finds.
            #[test]
            fn chunking_never_changes_hits(input in haystack(), chunk_size in 1usize..700) {
                let scanner = scanner(&[store_path(HASH_A, "zlib")]);
                let whole = scanner.scan(&input);
                let streamed = scanner.scan_reader(&input[..], chunk_size).unwrap();
                prop_assert_eq!(streamed, whole);
            }

            /// Scanning in pieces cut after [`Scanner::is_cut`] bytes (a random choice of them, or
            /// every one) gives the hits and kept windows of one whole scan, on inputs with
            /// references next to every cut and long alphabet runs, with and without a limit.
            #[test]
            fn pieces_give_what_one_whole_scan_gives(
                parts in proptest::collection::vec(prop_oneof![haystack(), runs()], 1..4),
                mask in proptest::collection::vec(any::<bool>(), 1..9),
                limit in prop_oneof![Just(None), (1usize..64).prop_map(Some), Just(Some(4096))],
            ) {
                let input = parts.concat();
                let scanner = scanner(&[store_path(HASH_A, "zlib"), store_path(HASH_B, "b")]);
                let (whole, whole_windows) = match limit {
                    Some(limit) => scanner.scan_keeping_windows(&input, limit),
                    None => (scanner.scan(&input), Windows::default()),
                };
                let cuts: Vec<usize> = (0..input.len())
                    .filter(|&at| scanner.is_cut(input[at]))
                    .map(|at| at + 1)
                    .collect();
                let chosen: Vec<usize> = cuts
                    .iter()
                    .enumerate()
                    .filter(|(index, _)| mask[index % mask.len()])
                    .map(|(_, &cut)| cut)
                    .collect();
                for ends in [&chosen, &cuts] {
                    let mut pieces = scanner.pieces(limit);
                    let mut hits = Vec::new();
                    let mut start = 0;
                    for &end in ends.iter().chain([&input.len()]) {
                        pieces.scan(&input[start..end], &mut hits);
                        start = end;
                    }
                    prop_assert_eq!(&hits, &whole);
                    prop_assert_eq!(&pieces.finish(), &whole_windows);
                }
                // `last_cut` finds the last of them.
                prop_assert_eq!(scanner.last_cut(&input), cuts.last().copied());
            }

            /// Every hit is in bounds and its hash bytes are what it claims.
            #[test]
            fn hits_point_at_their_hash(input in haystack()) {
                let scanner = scanner(&[store_path(HASH_B, "b")]);
                for hit in scanner.scan(&input) {
                    let start = usize::try_from(hit.hash_offset).unwrap();
                    let hash = &input[start..start + HASH_LEN];
                    match &hit.target {
                        Target::Live(path) => prop_assert_eq!(hash, path.hash().as_bytes()),
                        Target::Scrubbed { .. } => prop_assert_eq!(hash, &SCRUBBED_HASH[..]),
                    }
                    prop_assert!(usize::try_from(hit.offset).unwrap() + hit.len <= input.len());
                }
            }

            /// Writing `e`s over every live hash leaves nothing live, and a second pass finds
            /// nothing more to do: scrubbing is idempotent.
            #[test]
            fn scrubbing_is_idempotent(input in haystack()) {
                let scanner = scanner(&[store_path(HASH_A, "a"), store_path(HASH_B, "b")]);
                let mut scrubbed = input.clone();
                for hit in scanner.scan(&input).iter().filter(|hit| hit.live().is_some()) {
                    let start = usize::try_from(hit.hash_offset).unwrap();
                    scrubbed[start..start + HASH_LEN].copy_from_slice(&SCRUBBED_HASH);
                }
                prop_assert_eq!(scrubbed.len(), input.len());
                prop_assert!(scanner.scan(&scrubbed).iter().all(|hit| hit.live().is_none()));
            }
        }
    }
}
