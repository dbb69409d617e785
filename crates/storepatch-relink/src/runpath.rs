//! Run path entries: splitting, `$ORIGIN` expansion, lexical normalisation, and restoring entries
//! that `storepatch scrub` made unusable.
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use storepatch_core::{HASH_LEN, HashPart, SCRUBBED_HASH, StoreDir};

/// The non-empty entries of a colon-separated run path.
pub fn split(run_path: &[u8]) -> Vec<Vec<u8>> {
    run_path
        .split(|&byte| byte == b':')
        .filter(|entry| !entry.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

/// Joins entries with `:`.
pub fn join(entries: &[Vec<u8>]) -> Vec<u8> {
    entries.join(&b':')
}

/// Whether an entry uses `$ORIGIN` or `${ORIGIN}`.
pub fn uses_origin(entry: &[u8]) -> bool {
    contains(entry, b"$ORIGIN") || contains(entry, b"${ORIGIN}")
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// Expands `$ORIGIN` and `${ORIGIN}` to `origin` (the directory of the object). Returns `None`
/// for entries with other dynamic string tokens (`$LIB`, `$PLATFORM`), whose value depends on
/// the machine the program runs on.
pub fn expand(entry: &[u8], origin: &Path) -> Option<Vec<u8>> {
    let origin = origin.as_os_str().as_bytes();
    let mut out = Vec::with_capacity(entry.len() + origin.len());
    let mut rest = entry;
    while let Some(position) = rest.iter().position(|&byte| byte == b'$') {
        out.extend_from_slice(&rest[..position]);
        let after = &rest[position + 1..];
        if let Some(tail) = after.strip_prefix(b"{ORIGIN}") {
            out.extend_from_slice(origin);
            rest = tail;
        } else if let Some(tail) = after.strip_prefix(b"ORIGIN")
            && !tail
                .first()
                .is_some_and(|byte| byte.is_ascii_alphanumeric() || *byte == b'_')
        {
            out.extend_from_slice(origin);
            rest = tail;
        } else {
            return None;
        }
    }
    out.extend_from_slice(rest);
    Some(out)
}

/// Lexical normalisation: no empty or `.` components, `..` removes the previous component, no
/// trailing slash. Used to compare directories, never to open files.
pub fn normalize(path: &[u8]) -> Vec<u8> {
    let absolute = path.first() == Some(&b'/');
    let mut parts: Vec<&[u8]> = Vec::new();
    for part in path.split(|&byte| byte == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                if parts.last().is_some_and(|last| *last != b"..") {
                    parts.pop();
                } else if !absolute {
                    parts.push(part);
                }
            }
            other => parts.push(other),
        }
    }
    let mut out = Vec::with_capacity(path.len());
    if absolute {
        out.push(b'/');
    }
    out.extend_from_slice(&parts.join(&b'/'));
    out
}

/// Restores scrubbed run path entries to the one supplied store path with the same name.
///
/// `storepatch scrub` turns `<store>/<hash>-libxml2-2.13.8/lib` into
/// `<store>/eeee…-libxml2-2.13.8/lib`. When exactly one supplied library path is
/// `<store>/<hash>-libxml2-2.13.8[/…]`, the entry becomes that store path again: same length, so
/// the ELF engine can write it in place.
#[derive(Debug, Clone, Default)]
pub struct RestoreMap {
    store_dir: StoreDir,
    by_name: BTreeMap<Vec<u8>, BTreeSet<HashPart>>,
}

impl RestoreMap {
    /// Learns the store paths of `supplied` (directories given on the command line); paths that
    /// are not in `store_dir` are ignored.
    pub fn new<'path>(
        store_dir: StoreDir,
        supplied: impl IntoIterator<Item = &'path Path>,
    ) -> Self {
        let mut by_name: BTreeMap<Vec<u8>, BTreeSet<HashPart>> = BTreeMap::new();
        for path in supplied {
            if let Ok((store_path, _rest)) =
                store_dir.parse_path_prefix(path.as_os_str().as_bytes())
                && !store_path.name().is_empty()
            {
                by_name
                    .entry(store_path.name().to_vec())
                    .or_default()
                    .insert(*store_path.hash());
            }
        }
        Self { store_dir, by_name }
    }

    /// Whether `entry` is a scrubbed store path (`<store>/eeee…[-name][/…]`).
    pub fn is_scrubbed(&self, entry: &[u8]) -> bool {
        entry
            .strip_prefix(self.store_dir.prefix())
            .and_then(|rest| rest.get(..HASH_LEN))
            == Some(&SCRUBBED_HASH[..])
    }

    /// The restored entry, or `None` when `entry` is not scrubbed or its name matches no supplied
    /// store path or more than one.
    pub fn restore(&self, entry: &[u8]) -> Option<Vec<u8>> {
        if !self.is_scrubbed(entry) {
            return None;
        }
        let prefix = self.store_dir.prefix().len();
        let after = &entry[prefix + HASH_LEN..];
        let name = after.strip_prefix(b"-")?;
        let name = &name[..name
            .iter()
            .position(|&byte| byte == b'/')
            .unwrap_or(name.len())];
        let hashes = self.by_name.get(name)?;
        if hashes.len() != 1 {
            return None;
        }
        let hash = hashes.iter().next()?;
        let mut restored = entry.to_vec();
        restored[prefix..prefix + HASH_LEN].copy_from_slice(hash.as_bytes());
        Some(restored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_origin_forms() {
        let origin = Path::new("/venv/lib/numpy/core");
        assert_eq!(
            expand(b"$ORIGIN/../../numpy.libs", origin).unwrap(),
            b"/venv/lib/numpy/core/../../numpy.libs"
        );
        assert_eq!(
            expand(b"${ORIGIN}", origin).unwrap(),
            b"/venv/lib/numpy/core"
        );
        assert_eq!(expand(b"/usr/lib", origin).unwrap(), b"/usr/lib");
        assert_eq!(expand(b"$LIB/x", origin), None);
        assert_eq!(expand(b"$ORIGINAL", origin), None);
    }

    #[test]
    fn normalizes_lexically() {
        assert_eq!(normalize(b"/a//b/./c/../d/"), b"/a/b/d");
        assert_eq!(normalize(b"/../a"), b"/a");
        assert_eq!(normalize(b"a/../../b"), b"../b");
        assert_eq!(normalize(b"/"), b"/");
    }

    #[test]
    fn restores_only_unambiguous_names() {
        let store = StoreDir::default();
        let foo = Path::new("/nix/store/0c5dq8ikmzkcjh2hh2x3a1ihcp6yq3w1-libfoo-1.0/lib");
        let bar1 = Path::new("/nix/store/1ix8vrm5f9r5l2v7mwnlbjjzvl0ai3gz-libbar-2.3/lib");
        let bar2 = Path::new("/nix/store/9zkcv1ijs7wy2n2w9vvfhbpp5gyzrfwa-libbar-2.3");
        let map = RestoreMap::new(store, [foo, bar1, bar2, Path::new("/usr/lib")]);
        let scrubbed = |name: &str| format!("/nix/store/{}-{name}/lib", "e".repeat(32));
        assert_eq!(
            map.restore(scrubbed("libfoo-1.0").as_bytes()).unwrap(),
            foo.as_os_str().as_bytes()
        );
        assert_eq!(map.restore(scrubbed("libbar-2.3").as_bytes()), None);
        assert_eq!(map.restore(scrubbed("libbaz-0.9").as_bytes()), None);
        assert_eq!(map.restore(foo.as_os_str().as_bytes()), None);
        assert!(map.is_scrubbed(scrubbed("libbaz-0.9").as_bytes()));
    }

    #[test]
    fn splits_and_joins() {
        assert_eq!(split(b"a::b:"), vec![b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(join(&[b"a".to_vec(), b"b".to_vec()]), b"a:b");
    }
}
