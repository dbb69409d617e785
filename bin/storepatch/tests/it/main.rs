//! Integration tests of the `storepatch` binary, one module per area.

/// `storepatch audit`: health checks of relinked, scrubbed and broken trees.
mod audit;
/// autoPatchelfHook parity of `storepatch relink`, knob by knob, on real gcc-built programs.
mod autopatchelf;
/// Helpers shared by the modules below.
mod common;
/// Foreign architectures under qemu-user: edit, relink, run.
mod cross;
mod elf;
/// `storepatch elf` on malformed files beside the real patchelf, and on every valid system file.
mod elf_invalid;
/// Every subcommand's errors about files, in one wording, provoked for real.
mod errors;
/// Faults and hostile trees: full disks, loops, sparse files, odd names, races.
mod faults;
/// The committed man pages and completions are current.
mod generated;
mod nix;
/// Progress: the bar on a terminal, lines in a build log, nothing with `--quiet`.
mod progress;
/// Every README example, run against the bundled example and compared.
mod readme;
/// One test per fixed bug.
mod regression;
/// `storepatch relink`: relinking scrubbed trees, missing dependencies, skipped files, parity.
mod relink;
/// `storepatch restore`: scrub's inverse by name, relocation, real uv venvs.
mod restore;
/// `storepatch scan`: discovery, output formats, exit codes, errors.
mod scan;
/// `storepatch scrub`: rewriting contents, symlinks and names safely.
mod scrub;
