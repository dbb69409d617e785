//! Walks trees for storepatch in a deterministic order without following symlinks, and maps files for reading.
#![deny(missing_docs)]
