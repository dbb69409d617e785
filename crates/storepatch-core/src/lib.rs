//! Nix store path grammar for storepatch.
//!
//! A store path is `<storedir>/<hash>-<name>`. The hash part is 32 characters of Nix's base-32
//! alphabet (`0123456789abcdfghijklmnpqrsvwxyz`, which lacks `e`, `o`, `u` and `t`); the name is
//! `[A-Za-z0-9+\-._?=]+`, at most 211 bytes, and does not start with `.`.
//!
//! Nix's own reference scanner looks for the bare 32-byte hash part of every candidate path, so the
//! hash part is what matters: scrubbing replaces it with 32 `e`s ([`SCRUBBED_HASH`]). `e` is outside
//! the alphabet, so a scrubbed path can never match again, and its length is unchanged.
//!
//! ```
//! use storepatch_core::{StoreDir, StorePath};
//!
//! let store = StoreDir::new("/nix/store")?;
//! let path = store.parse_path(b"/nix/store/0c5dq8ikmzkcjh2hh2x3a1ihcp6yq3w1-zlib-1.3.1")?;
//! assert_eq!(path.name(), b"zlib-1.3.1");
//! assert_eq!(path.hash().as_bytes(), b"0c5dq8ikmzkcjh2hh2x3a1ihcp6yq3w1");
//! assert_eq!(store.render(&path), b"/nix/store/0c5dq8ikmzkcjh2hh2x3a1ihcp6yq3w1-zlib-1.3.1");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

use std::fmt;
use std::path::Path;

mod names;

pub use names::{Resolution, SuppliedPaths};

/// Length of a store path's hash part in bytes.
pub const HASH_LEN: usize = 32;

/// Longest store path name Nix accepts.
pub const MAX_NAME_LEN: usize = 211;

/// Nix's base-32 alphabet, in digit order.
pub const NIX_BASE32_ALPHABET: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";

/// The hash part written over a scrubbed reference: 32 `e`s, which no store path can contain.
pub const SCRUBBED_HASH: [u8; HASH_LEN] = [b'e'; HASH_LEN];

/// The store directory used when neither `--store-dir` nor `$NIX_STORE` says otherwise.
pub const DEFAULT_STORE_DIR: &str = "/nix/store";

/// Errors from parsing store dirs, hash parts and store paths.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// The store directory is not an absolute path.
    #[error("store directory `{}` is not an absolute path", String::from_utf8_lossy(.path))]
    StoreDirNotAbsolute {
        /// The rejected store directory.
        path: Vec<u8>,
    },
    /// The store directory contains a byte that cannot appear in one.
    #[error("store directory `{}` contains a NUL byte or a newline", String::from_utf8_lossy(.path))]
    StoreDirInvalid {
        /// The rejected store directory.
        path: Vec<u8>,
    },
    /// A path does not start with `<storedir>/`.
    #[error("`{}` is not inside the store directory `{}`", String::from_utf8_lossy(.path), String::from_utf8_lossy(.store_dir))]
    NotInStore {
        /// The rejected path.
        path: Vec<u8>,
        /// The store directory it was checked against.
        store_dir: Vec<u8>,
    },
    /// A hash part is not 32 characters of Nix's base-32 alphabet.
    #[error("`{}` is not a store hash part (32 characters of 0-9 a-z without e, o, u, t)", String::from_utf8_lossy(.found))]
    InvalidHash {
        /// The rejected bytes.
        found: Vec<u8>,
    },
    /// A store path name breaks Nix's name grammar.
    #[error("`{}` is not a valid store path name", String::from_utf8_lossy(.found))]
    InvalidName {
        /// The rejected name.
        found: Vec<u8>,
    },
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Whether `byte` belongs to Nix's base-32 alphabet.
#[inline]
pub const fn is_hash_byte(byte: u8) -> bool {
    matches!(byte, b'0'..=b'9' | b'a'..=b'd' | b'f'..=b'n' | b'p'..=b's' | b'v'..=b'z')
}

/// Whether `byte` may appear in a store path name.
#[inline]
pub const fn is_name_byte(byte: u8) -> bool {
    matches!(byte, b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'+' | b'-' | b'.' | b'_' | b'?' | b'=')
}

/// The longest store path name at the start of `bytes` (after `<hash>-`): at most
/// [`MAX_NAME_LEN`] name bytes, and empty when they start with `.`, which Nix rejects.
pub fn name_at_start(bytes: &[u8]) -> &[u8] {
    let len = bytes
        .iter()
        .take(MAX_NAME_LEN)
        .take_while(|&&byte| is_name_byte(byte))
        .count();
    if bytes.first() == Some(&b'.') {
        &[]
    } else {
        &bytes[..len]
    }
}

/// Whether `bytes` is a complete, valid store path name.
pub fn is_valid_name(bytes: &[u8]) -> bool {
    !bytes.is_empty()
        && bytes.len() <= MAX_NAME_LEN
        && bytes[0] != b'.'
        && bytes.iter().all(|&byte| is_name_byte(byte))
}

/// The 32-byte hash part of a store path.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HashPart([u8; HASH_LEN]);

impl HashPart {
    /// Parses exactly 32 base-32 bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let array: [u8; HASH_LEN] = bytes.try_into().map_err(|_| Error::InvalidHash {
            found: bytes.to_vec(),
        })?;
        if array.iter().all(|&byte| is_hash_byte(byte)) {
            Ok(Self(array))
        } else {
            Err(Error::InvalidHash {
                found: bytes.to_vec(),
            })
        }
    }

    /// The hash as bytes.
    pub const fn as_bytes(&self) -> &[u8; HASH_LEN] {
        &self.0
    }

    /// The hash as text (always ASCII).
    pub fn as_str(&self) -> &str {
        // The alphabet is ASCII, so this never fails.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Debug for HashPart {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "HashPart({})", self.as_str())
    }
}

impl fmt::Display for HashPart {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// A store path relative to its store dir: hash part and name.
///
/// The name may be empty: references such as `<storedir>/<hash>/bin` (no name) still carry a hash
/// that Nix would see.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct StorePath {
    hash: HashPart,
    name: Vec<u8>,
}

impl StorePath {
    /// Builds a store path from a hash part and a name (not checked against the name grammar).
    pub fn new(hash: HashPart, name: impl Into<Vec<u8>>) -> Self {
        Self {
            hash,
            name: name.into(),
        }
    }

    /// The hash part.
    pub const fn hash(&self) -> &HashPart {
        &self.hash
    }

    /// The name after `<hash>-` (may be empty).
    pub fn name(&self) -> &[u8] {
        &self.name
    }

    /// `<hash>-<name>`, or `<hash>` when the name is empty: the store path's base name.
    pub fn base_name(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HASH_LEN + 1 + self.name.len());
        push_base_name(&mut out, self.hash.as_bytes(), &self.name);
        out
    }
}

/// An absolute store directory such as `/nix/store`, kept without a trailing slash.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct StoreDir {
    /// The directory followed by `/`, the prefix every store path starts with.
    prefix: Vec<u8>,
}

impl StoreDir {
    /// Validates a store directory: absolute, no NUL, no newline. Trailing slashes are dropped.
    pub fn new(dir: impl AsRef<[u8]>) -> Result<Self> {
        let dir = dir.as_ref();
        if dir.first() != Some(&b'/') {
            return Err(Error::StoreDirNotAbsolute { path: dir.to_vec() });
        }
        if dir.iter().any(|&byte| byte == 0 || byte == b'\n') {
            return Err(Error::StoreDirInvalid { path: dir.to_vec() });
        }
        let mut trimmed = dir;
        while trimmed.len() > 1 && trimmed.ends_with(b"/") {
            trimmed = &trimmed[..trimmed.len() - 1];
        }
        let mut prefix = trimmed.to_vec();
        if prefix != b"/" {
            prefix.push(b'/');
        }
        Ok(Self { prefix })
    }

    /// Validates a store directory given as a filesystem path.
    pub fn from_path(path: &Path) -> Result<Self> {
        Self::new(path.as_os_str().as_encoded_bytes())
    }

    /// The store dir from `--store-dir`, else `$NIX_STORE`, else `/nix/store`.
    pub fn resolve(explicit: Option<&Path>) -> Result<Self> {
        if let Some(path) = explicit {
            return Self::from_path(path);
        }
        match std::env::var_os("NIX_STORE") {
            Some(value) if !value.is_empty() => Self::new(value.as_encoded_bytes()),
            _ => Self::new(DEFAULT_STORE_DIR),
        }
    }

    /// The directory, without a trailing slash.
    pub fn as_bytes(&self) -> &[u8] {
        if self.prefix.len() == 1 {
            &self.prefix
        } else {
            &self.prefix[..self.prefix.len() - 1]
        }
    }

    /// `<storedir>/`, the prefix every store path starts with.
    pub fn prefix(&self) -> &[u8] {
        &self.prefix
    }

    /// Parses a full store path `<storedir>/<hash>-<name>`; anything after the base name (such as
    /// `/lib`) is rejected, use [`StoreDir::parse_path_prefix`] to allow it.
    pub fn parse_path(&self, bytes: &[u8]) -> Result<StorePath> {
        let (path, rest) = self.parse_path_prefix(bytes)?;
        if rest.is_empty() {
            Ok(path)
        } else {
            Err(Error::InvalidName {
                found: bytes[self.prefix.len() + HASH_LEN..].to_vec(),
            })
        }
    }

    /// Parses the store path at the start of `bytes` and returns it with the rest (for example
    /// `/lib/libz.so`).
    pub fn parse_path_prefix<'a>(&self, bytes: &'a [u8]) -> Result<(StorePath, &'a [u8])> {
        let Some(rest) = bytes.strip_prefix(self.prefix.as_slice()) else {
            return Err(Error::NotInStore {
                path: bytes.to_vec(),
                store_dir: self.as_bytes().to_vec(),
            });
        };
        let hash = HashPart::parse(rest.get(..HASH_LEN).unwrap_or(rest))?;
        let after = &rest[HASH_LEN..];
        match after.first() {
            None | Some(b'/') => Ok((StorePath::new(hash, Vec::new()), after)),
            Some(b'-') => {
                let name_len = after[1..].iter().take_while(|&&byte| byte != b'/').count();
                let name = &after[1..=name_len];
                if is_valid_name(name) {
                    Ok((StorePath::new(hash, name), &after[1 + name_len..]))
                } else {
                    Err(Error::InvalidName {
                        found: name.to_vec(),
                    })
                }
            }
            Some(_) => Err(Error::InvalidHash {
                found: rest[..rest.len().min(HASH_LEN + 1)].to_vec(),
            }),
        }
    }

    /// `<storedir>/<hash>-<name>` as bytes.
    pub fn render(&self, path: &StorePath) -> Vec<u8> {
        let mut out = Vec::new();
        self.render_into(&mut out, path);
        out
    }

    /// Appends `<storedir>/<hash>-<name>` to `out`.
    pub fn render_into(&self, out: &mut Vec<u8>, path: &StorePath) {
        out.extend_from_slice(&self.prefix);
        push_base_name(out, path.hash.as_bytes(), &path.name);
    }

    /// Appends the scrubbed form of a store path named `name`, `<storedir>/eeee…-<name>`, to
    /// `out`.
    pub fn render_scrubbed_into(&self, out: &mut Vec<u8>, name: &[u8]) {
        out.extend_from_slice(&self.prefix);
        push_base_name(out, &SCRUBBED_HASH, name);
    }
}

/// Appends `<hash>-<name>`, or `<hash>` when the name is empty, to `out`.
fn push_base_name(out: &mut Vec<u8>, hash: &[u8], name: &[u8]) {
    out.extend_from_slice(hash);
    if !name.is_empty() {
        out.push(b'-');
        out.extend_from_slice(name);
    }
}

impl Default for StoreDir {
    fn default() -> Self {
        Self {
            prefix: b"/nix/store/".to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &[u8] = b"0c5dq8ikmzkcjh2hh2x3a1ihcp6yq3w1";

    #[test]
    fn alphabet_matches_predicate() {
        for byte in 0..=255u8 {
            assert_eq!(
                is_hash_byte(byte),
                NIX_BASE32_ALPHABET.contains(&byte),
                "byte {byte}"
            );
        }
        for excluded in [b'e', b'o', b'u', b't'] {
            assert!(!is_hash_byte(excluded));
        }
    }

    #[test]
    fn hash_part_rejects_wrong_length_and_letters() {
        assert!(HashPart::parse(HASH).is_ok());
        assert!(HashPart::parse(&HASH[..31]).is_err());
        assert!(HashPart::parse(&SCRUBBED_HASH).is_err());
        let mut upper = HASH.to_vec();
        upper[0] = b'A';
        assert!(HashPart::parse(&upper).is_err());
    }

    #[test]
    fn names_follow_nix_grammar() {
        assert!(is_valid_name(b"python3-3.12.8"));
        assert!(is_valid_name(b"a+b-c_d?e=f"));
        assert!(!is_valid_name(b""));
        assert!(!is_valid_name(b".hidden"));
        assert!(!is_valid_name(b"has space"));
        assert!(is_valid_name(&[b'x'; MAX_NAME_LEN]));
        assert!(!is_valid_name(&[b'x'; MAX_NAME_LEN + 1]));
    }

    #[test]
    fn store_dir_normalises_and_validates() {
        assert_eq!(
            StoreDir::new("/nix/store/").unwrap().as_bytes(),
            b"/nix/store"
        );
        assert_eq!(StoreDir::new("/").unwrap().prefix(), b"/");
        assert_eq!(
            StoreDir::new("nix/store"),
            Err(Error::StoreDirNotAbsolute {
                path: b"nix/store".to_vec()
            })
        );
        assert!(StoreDir::new("/a\nb").is_err());
    }

    #[test]
    fn parse_path_prefix_splits_rest() {
        let store = StoreDir::new("/tmp/x/store").unwrap();
        let mut input = b"/tmp/x/store/".to_vec();
        input.extend_from_slice(HASH);
        input.extend_from_slice(b"-libxml2-2.13.8/lib/libxml2.so");
        let (path, rest) = store.parse_path_prefix(&input).unwrap();
        assert_eq!(path.name(), b"libxml2-2.13.8");
        assert_eq!(rest, b"/lib/libxml2.so");
        assert!(store.parse_path(&input).is_err());
        assert_eq!(store.render(&path), input[..input.len() - rest.len()]);
    }

    #[test]
    fn names_starting_with_a_dot_are_not_names() {
        assert_eq!(name_at_start(b".hidden/x"), b"");
        assert_eq!(name_at_start(b"zlib-1.3.1/lib"), b"zlib-1.3.1");
        assert!(!is_valid_name(b".hidden"));
        let store = StoreDir::default();
        assert!(
            store
                .parse_path(b"/nix/store/1ix8vrm5f9r5l2v7mwnlbjjzvl0ai3gz-.hidden")
                .is_err()
        );
    }

    #[test]
    fn parse_path_without_name() {
        let store = StoreDir::default();
        let mut input = b"/nix/store/".to_vec();
        input.extend_from_slice(HASH);
        let path = store.parse_path(&input).unwrap();
        assert!(path.name().is_empty());
        assert_eq!(path.base_name(), HASH);
    }
}
