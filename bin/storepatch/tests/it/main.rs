//! Integration tests of the `storepatch` binary, one module per area.

/// `storepatch audit`: health checks of relinked, scrubbed and broken trees.
mod audit;
/// Helpers shared by the modules below.
mod common;
mod elf;
/// Faults and hostile trees: full disks, loops, sparse files, odd names, races.
mod faults;
/// The committed man pages and completions are current.
mod generated;
mod nix;
/// Every README example, run against the bundled example and compared.
mod readme;
/// One test per fixed bug.
mod regression;
/// `storepatch relink`: relinking scrubbed trees, missing dependencies, skipped files, parity.
mod relink;
/// `storepatch scan`: discovery, output formats, exit codes, errors.
mod scan;
/// `storepatch scrub`: rewriting contents, symlinks and names safely.
mod scrub;
