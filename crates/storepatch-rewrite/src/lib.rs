//! Same-length byte rewrites of files, symlinks and names for storepatch, written atomically with modes and hard links kept.
#![deny(missing_docs)]
