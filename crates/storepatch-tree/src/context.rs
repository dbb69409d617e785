//! The bytes around each hit of a finding (`scan --json`'s `context`), kept in one allocation.
//!
//! A large tree has thousands of hits, each with a context of a few dozen bytes. One vector per
//! context would be one allocation per hit; [`Contexts`] holds every context of a finding in a
//! single boxed buffer: a count, the end offsets, then the bytes.
use storepatch_scan::Hit;

use crate::CONTEXT_BYTES;

/// Width of the count and of each end offset at the start of [`Contexts::data`].
const WORD: usize = std::mem::size_of::<u32>();

/// The contexts of the hits of one finding, in hit order: up to [`CONTEXT_BYTES`] bytes either
/// side of each hit, and the hit itself.
///
/// Empty when no context was asked for (or the finding has no hits).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Contexts {
    /// The number of contexts `n` (a `u32`, little-endian), `n` end offsets of the contexts in
    /// the bytes that follow (`u32`s, little-endian), then the contexts one after the other.
    /// Empty (no allocation) when `n` is 0.
    data: Box<[u8]>,
}

impl Contexts {
    /// The contexts of `hits` in `bytes`, a whole place (its byte 0 is offset 0).
    #[must_use]
    pub fn capture(bytes: &[u8], hits: &[Hit]) -> Self {
        if hits.is_empty() {
            return Self::default();
        }
        // Sized exactly up front: one allocation, no copy.
        let text: usize = hits
            .iter()
            .map(|hit| range(bytes.len(), 0, hit).len())
            .sum();
        let mut data = Vec::with_capacity(WORD * (hits.len() + 1) + text);
        data.extend_from_slice(&word(hits.len()));
        let mut end = 0;
        for hit in hits {
            end += range(bytes.len(), 0, hit).len();
            data.extend_from_slice(&word(end));
        }
        for hit in hits {
            data.extend_from_slice(&bytes[range(bytes.len(), 0, hit)]);
        }
        Self {
            data: data.into_boxed_slice(),
        }
    }

    /// How many contexts there are.
    #[must_use]
    pub fn len(&self) -> usize {
        self.read_word(0)
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The context of hit `index`, if there is one.
    #[must_use]
    pub fn get(&self, index: usize) -> Option<&[u8]> {
        let count = self.len();
        if index >= count {
            return None;
        }
        let text = WORD * (count + 1);
        let start = if index == 0 { 0 } else { self.read_word(index) };
        let end = self.read_word(index + 1);
        self.data.get(text + start..text + end)
    }

    /// The contexts in hit order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        (0..self.len()).map(|index| self.get(index).unwrap_or_default())
    }

    /// The `u32` at word `index` of the data (0 when there is no data).
    fn read_word(&self, index: usize) -> usize {
        let at = index * WORD;
        self.data
            .get(at..at + WORD)
            .and_then(|word| <[u8; WORD]>::try_from(word).ok())
            .map_or(0, |word| u32::from_le_bytes(word) as usize)
    }
}

impl std::fmt::Debug for Contexts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.iter().map(|context| String::from_utf8_lossy(context)))
            .finish()
    }
}

/// Gathers [`Contexts`] a piece at a time (a file read in pieces, or contexts taken from other
/// findings), then packs them into one allocation with [`ContextsBuilder::finish`].
#[derive(Debug, Default)]
pub(crate) struct ContextsBuilder {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl ContextsBuilder {
    /// Adds the contexts of `hits`, found in `bytes`, whose first byte is at offset `base` of the
    /// place scanned. `bytes` holds the whole place, or at least [`CONTEXT_BYTES`] either side
    /// of each hit where the place has them.
    pub(crate) fn capture(&mut self, bytes: &[u8], base: u64, hits: &[Hit]) {
        for hit in hits {
            self.push(&bytes[range(bytes.len(), base, hit)]);
        }
    }

    /// Adds one context.
    pub(crate) fn push(&mut self, context: &[u8]) {
        self.bytes.extend_from_slice(context);
        self.ends.push(self.bytes.len());
    }

    /// The contexts added, in one allocation of exactly their size.
    #[must_use]
    pub(crate) fn finish(self) -> Contexts {
        if self.ends.is_empty() {
            return Contexts::default();
        }
        let mut data = Vec::with_capacity(WORD * (self.ends.len() + 1) + self.bytes.len());
        data.extend_from_slice(&word(self.ends.len()));
        for &end in &self.ends {
            data.extend_from_slice(&word(end));
        }
        data.extend_from_slice(&self.bytes);
        Contexts {
            data: data.into_boxed_slice(),
        }
    }
}

/// Where the context of `hit` is in `bytes` (`len` bytes long), whose first byte is at offset
/// `base` of the place scanned: up to [`CONTEXT_BYTES`] either side of the hit.
fn range(len: usize, base: u64, hit: &Hit) -> std::ops::Range<usize> {
    let start = usize::try_from(hit.offset.saturating_sub(base))
        .unwrap_or(usize::MAX)
        .min(len);
    let end = start.saturating_add(hit.len).min(len);
    start.saturating_sub(CONTEXT_BYTES)..end.saturating_add(CONTEXT_BYTES).min(len)
}

/// `value` as a little-endian `u32` word. A context is at most a store path and twice
/// [`CONTEXT_BYTES`], and a finding holds far fewer than 4 GiB of them; the value saturates
/// rather than wraps all the same.
fn word(value: usize) -> [u8; WORD] {
    u32::try_from(value).unwrap_or(u32::MAX).to_le_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use storepatch_core::StoreDir;
    use storepatch_scan::Scanner;

    const HASH: &str = "0c5dq8ikmzkcjh2hh2x3a1ihcp6yq3w1";

    fn hits(bytes: &[u8]) -> Vec<Hit> {
        Scanner::builder(StoreDir::default()).build().scan(bytes)
    }

    fn all(contexts: &Contexts) -> Vec<Vec<u8>> {
        contexts.iter().map(<[u8]>::to_vec).collect()
    }

    #[test]
    fn empty() {
        let contexts = Contexts::capture(b"nothing here", &[]);
        assert!(contexts.is_empty());
        assert_eq!(contexts.len(), 0);
        assert_eq!(contexts.get(0), None);
        assert_eq!(contexts.iter().count(), 0);
        assert_eq!(contexts, Contexts::default());
        assert!(ContextsBuilder::default().finish().is_empty());
    }

    #[test]
    fn a_hit_at_the_start_and_one_at_the_end() {
        let path = format!("/nix/store/{HASH}-a");
        let bytes = format!("{path} {} {path}", "x".repeat(60)).into_bytes();
        let found = hits(&bytes);
        assert_eq!(found.len(), 2);
        let contexts = Contexts::capture(&bytes, &found);
        assert_eq!(contexts.len(), 2);
        let first = format!("{path} {}", "x".repeat(CONTEXT_BYTES - 1));
        let last = format!("{} {path}", "x".repeat(CONTEXT_BYTES - 1));
        assert_eq!(contexts.get(0), Some(first.as_bytes()));
        assert_eq!(contexts.get(1), Some(last.as_bytes()));
        assert_eq!(contexts.get(2), None);
    }

    #[test]
    fn a_place_that_is_only_the_hit() {
        let bytes = format!("/nix/store/{HASH}-a").into_bytes();
        let found = hits(&bytes);
        let contexts = Contexts::capture(&bytes, &found);
        assert_eq!(all(&contexts), vec![bytes]);
    }

    #[test]
    fn overlapping_contexts_each_hold_their_own_bytes() {
        let path = format!("/nix/store/{HASH}-a");
        let bytes = format!("ab {path} {path} cd").into_bytes();
        let found = hits(&bytes);
        assert_eq!(found.len(), 2);
        let contexts = Contexts::capture(&bytes, &found);
        // Each context runs into the other hit.
        let first = format!("ab {path} {}", &path[..CONTEXT_BYTES - 1]);
        let second = format!("{} {path} cd", &path[path.len() - (CONTEXT_BYTES - 1)..]);
        assert_eq!(
            all(&contexts),
            vec![first.into_bytes(), second.into_bytes()]
        );
    }

    #[test]
    fn pieces_give_what_the_whole_gives() {
        let path = format!("/nix/store/{HASH}-a");
        let bytes =
            format!("{} {path} {} {path} end", "y".repeat(100), "z".repeat(100)).into_bytes();
        let found = hits(&bytes);
        let whole = Contexts::capture(&bytes, &found);
        // Each hit from a piece holding it and its context but not the file's start.
        let mut builder = ContextsBuilder::default();
        for hit in &found {
            let start = usize::try_from(hit.offset).unwrap() - CONTEXT_BYTES;
            let end =
                (usize::try_from(hit.offset).unwrap() + hit.len + CONTEXT_BYTES).min(bytes.len());
            builder.capture(&bytes[start..end], start as u64, std::slice::from_ref(hit));
        }
        assert_eq!(builder.finish(), whole);
    }

    #[test]
    fn pushed_contexts_come_back_in_order() {
        let mut builder = ContextsBuilder::default();
        builder.push(b"one");
        builder.push(b"");
        builder.push(b"three");
        let contexts = builder.finish();
        assert_eq!(contexts.len(), 3);
        assert_eq!(
            all(&contexts),
            vec![b"one".to_vec(), Vec::new(), b"three".to_vec()]
        );
        assert_eq!(contexts.iter().len(), 3);
        assert_eq!(format!("{contexts:?}"), r#"["one", "", "three"]"#);
    }
}
