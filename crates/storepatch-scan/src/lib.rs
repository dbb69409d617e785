//! Finds Nix store references in byte buffers: store path patterns and bare hash parts of candidates, across chunk edges.
#![deny(missing_docs)]
