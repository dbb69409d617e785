//! Integration tests of the `storepatch` binary, one module per area.
mod nix;
