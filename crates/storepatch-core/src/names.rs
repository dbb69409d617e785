//! Matching scrubbed references back to store paths by name, for `storepatch restore`.
//!
//! A scrubbed reference keeps its name (`<storedir>/eeee…-libxml2-2.13.8/lib`), and a build's
//! inputs are store paths with names. A name that belongs to exactly one supplied path gives that
//! path's hash back; a name shared by several supplied paths, or by none, is never guessed.
use std::collections::BTreeMap;

use crate::StorePath;

/// Store paths supplied for restoring, looked up by name.
///
/// ```
/// use storepatch_core::{HashPart, Resolution, StorePath, SuppliedPaths};
///
/// let zlib = StorePath::new(HashPart::parse(b"0c5dq8ikmzkcjh2hh2x3a1ihcp6yq3w1")?, "zlib-1.3.1");
/// let supplied = SuppliedPaths::new([zlib.clone()]);
/// assert_eq!(supplied.resolve(b"zlib-1.3.1"), Resolution::Unique(&zlib));
/// assert_eq!(supplied.resolve(b"zlib-1.3"), Resolution::Unknown);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct SuppliedPaths {
    /// Name -> every supplied path with that name, sorted and unique.
    by_name: BTreeMap<Vec<u8>, Vec<StorePath>>,
}

/// What a scrubbed name resolves to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolution<'paths> {
    /// Exactly one supplied path has the name.
    Unique(&'paths StorePath),
    /// Several supplied paths have the name (sorted by hash).
    Ambiguous(&'paths [StorePath]),
    /// No supplied path has the name (or the reference has no name at all).
    Unknown,
}

impl SuppliedPaths {
    /// Indexes `paths` by name; the same path given twice counts once.
    pub fn new(paths: impl IntoIterator<Item = StorePath>) -> Self {
        let mut by_name: BTreeMap<Vec<u8>, Vec<StorePath>> = BTreeMap::new();
        for path in paths {
            by_name.entry(path.name().to_vec()).or_default().push(path);
        }
        for paths in by_name.values_mut() {
            paths.sort();
            paths.dedup();
        }
        Self { by_name }
    }

    /// The supplied path(s) named `name`. An empty name is always [`Resolution::Unknown`].
    pub fn resolve(&self, name: &[u8]) -> Resolution<'_> {
        if name.is_empty() {
            return Resolution::Unknown;
        }
        match self.by_name.get(name).map(Vec::as_slice) {
            Some([path]) => Resolution::Unique(path),
            Some(paths) if !paths.is_empty() => Resolution::Ambiguous(paths),
            _ => Resolution::Unknown,
        }
    }

    /// How many distinct paths were supplied.
    pub fn len(&self) -> usize {
        self.by_name.values().map(Vec::len).sum()
    }

    /// Whether no path was supplied.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HashPart;

    fn path(hash: &[u8], name: &str) -> StorePath {
        StorePath::new(HashPart::parse(hash).unwrap(), name)
    }

    #[test]
    fn unique_ambiguous_unknown() {
        let first = path(b"0c5dq8ikmzkcjh2hh2x3a1ihcp6yq3w1", "python3-3.12.8");
        let second = path(b"1c5dq8ikmzkcjh2hh2x3a1ihcp6yq3w1", "python3-3.12.8");
        let lib = path(b"2c5dq8ikmzkcjh2hh2x3a1ihcp6yq3w1", "libxml2-2.13.8");
        let dev = path(b"3c5dq8ikmzkcjh2hh2x3a1ihcp6yq3w1", "libxml2-2.13.8-dev");
        let supplied = SuppliedPaths::new([
            second.clone(),
            first.clone(),
            lib.clone(),
            lib.clone(),
            dev.clone(),
        ]);
        assert_eq!(supplied.len(), 4);
        assert_eq!(
            supplied.resolve(b"libxml2-2.13.8"),
            Resolution::Unique(&lib)
        );
        assert_eq!(
            supplied.resolve(b"libxml2-2.13.8-dev"),
            Resolution::Unique(&dev)
        );
        assert_eq!(
            supplied.resolve(b"python3-3.12.8"),
            Resolution::Ambiguous(&[first, second])
        );
        assert_eq!(supplied.resolve(b"libxml2"), Resolution::Unknown);
        assert_eq!(supplied.resolve(b""), Resolution::Unknown);
        assert!(SuppliedPaths::default().is_empty());
    }
}
