//! Test helpers for storepatch: temporary trees, gcc-built fixtures, the real Nix as a judge, and
//! snapshot filters. Used by the integration tests and benches only.
#![deny(missing_docs)]
pub mod nix;

pub mod fixture_store;
pub mod pipeline;
pub mod snapshot;
pub mod stdenv;
pub mod venv;
