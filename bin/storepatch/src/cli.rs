//! Command-line definitions (clap). Help text here is the source of the man page.
use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

const EXIT_CODES_SCAN: &str = "\
Exit status (with -q the answer is the exit status alone):
  0  store references were found
  1  no store references were found
  2  an error occurred (usage, or a file that could not be read)";

const EXIT_CODES_ALL: &str = "\
Exit status:
  scan:     0 references found, 1 none found, 2 error
  scrub:    0 success, 2 error
  relink:   0 success, 1 missing dependencies, 2 error
  audit:    0 healthy, 1 problems found, 2 error
  elf:      as patchelf: 0 success, non-zero on error";

const EXIT_CODES_SCRUB: &str = "\
Exit status:
  0  success (also when there was nothing to scrub)
  2  an error occurred (usage, or an entry that could not be read or written; the others are
     still scrubbed)";

const EXIT_CODES_RELINK: &str = "\
Exit status:
  0  success
  1  missing dependencies (each is listed; see --ignore-missing)
  2  an error occurred (usage, or a file that could not be read or written)";

const EXIT_CODES_AUDIT: &str = "\
Exit status:
  0  healthy
  1  problems found (each is listed)
  2  an error occurred (usage, or a file that could not be read)";

/// Find, scrub and relink Nix store references in Python virtual environments and ELF files.
#[derive(Debug, Parser)]
#[command(name = "storepatch", version, max_term_width = 100, after_help = EXIT_CODES_ALL)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: GlobalArgs,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Options every subcommand takes.
#[derive(Debug, Args)]
pub(crate) struct GlobalArgs {
    /// Number of worker threads (default: one per core). Output is identical for any value.
    #[arg(long, global = true, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    threads: Option<u16>,
    /// Nix store directory [default: `$NIX_STORE`, else `/nix/store`].
    #[arg(long, global = true, value_name = "DIR")]
    pub(crate) store_dir: Option<PathBuf>,
    /// Emit JSON Lines on stdout instead of the human report.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// Print nothing but errors (and the `--json` output when asked for).
    #[arg(long, short, global = true)]
    pub(crate) quiet: bool,
    /// Never show a progress bar (it is only shown when stderr is a terminal).
    #[arg(long, global = true, env = "STOREPATCH_NO_PROGRESS", value_parser = clap::builder::FalseyValueParser::new())]
    pub(crate) no_progress: bool,
    /// Read every file with read(2) instead of mapping large ones into memory.
    #[arg(long, global = true)]
    pub(crate) no_mmap: bool,
    /// More log output on stderr (-v debug, -vv trace).
    #[arg(long, short, global = true, action = clap::ArgAction::Count)]
    pub(crate) verbose: u8,
}

impl GlobalArgs {
    pub(crate) fn threads(&self) -> Option<usize> {
        self.threads.map(usize::from)
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Find every store reference in a tree: paths, bare hash parts, symlink targets, names.
    #[command(after_help = EXIT_CODES_SCAN)]
    Scan(ScanArgs),
    /// Rewrite every live store reference's hash part to 32 `e`s (same length), in place.
    #[command(after_help = EXIT_CODES_SCRUB)]
    Scrub(ScrubArgs),
    /// Point the run path of every ELF file at the libraries it needs, like autoPatchelfHook.
    #[command(after_help = EXIT_CODES_RELINK)]
    Relink(RelinkArgs),
    /// Check a tree: store references, libraries the loader would not find, missing
    /// interpreters and shebangs, dangling symlinks.
    #[command(after_help = EXIT_CODES_AUDIT)]
    Audit(AuditArgs),
    /// Edit ELF files; accepts patchelf's command line (`storepatch elf --help`).
    #[command(disable_help_flag = true, disable_version_flag = true)]
    Elf {
        /// patchelf-style options and files.
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "ARGS"
        )]
        args: Vec<OsString>,
    },
    /// Print the man page or shell completions (for packagers).
    #[command(hide = true)]
    Generate {
        /// What to print.
        #[arg(value_enum)]
        what: Generated,
        /// With `man`: write `storepatch.1` and one page per subcommand into this directory.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
}

/// How references are discovered; shared by `scan` and `scrub`.
#[derive(Debug, Args)]
pub(crate) struct DiscoveryArgs {
    /// File with one store path per line whose bare hash parts are searched for, as Nix does.
    #[arg(long, value_name = "FILE")]
    pub(crate) candidates: Vec<PathBuf>,
    /// Take candidate store paths from the environment (as inside a Nix build).
    #[arg(long)]
    pub(crate) candidates_from_env: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ScanArgs {
    /// Trees or files to scan.
    #[arg(required = true, value_name = "PATH")]
    pub(crate) paths: Vec<PathBuf>,
    #[command(flatten)]
    pub(crate) discovery: DiscoveryArgs,
    /// List every file with its references instead of the per-store-path summary.
    #[arg(long)]
    pub(crate) files: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ScrubArgs {
    /// Directories to scrub in place.
    #[arg(required = true, value_name = "DIR")]
    pub(crate) paths: Vec<PathBuf>,
    #[command(flatten)]
    pub(crate) discovery: DiscoveryArgs,
    /// Leave references to this store path alone (repeatable), e.g. `$out` in a normal derivation.
    #[arg(long, value_name = "STORE_PATH")]
    pub(crate) keep: Vec<PathBuf>,
    /// Scrub only references to these store paths (repeatable), like `remove-references-to -t`.
    #[arg(long, value_name = "STORE_PATH")]
    pub(crate) only: Vec<PathBuf>,
    /// Report what would change without writing anything.
    #[arg(long)]
    pub(crate) dry_run: bool,
}

#[derive(Clone, Debug, Args)]
pub(crate) struct RelinkArgs {
    /// Trees or files to relink; their own libraries are searched first.
    #[arg(required = true, value_name = "PATH")]
    pub(crate) paths: Vec<PathBuf>,
    /// Search this directory for libraries, not recursively (repeatable, in order).
    #[arg(long, value_name = "DIR")]
    pub(crate) library_path: Vec<PathBuf>,
    /// Search this tree for libraries, recursively (repeatable; after every --library-path).
    #[arg(long, value_name = "DIR")]
    pub(crate) library_tree: Vec<PathBuf>,
    /// Dynamic linker for executables [default: `$NIX_BINTOOLS/nix-support/dynamic-linker`].
    #[arg(long, value_name = "FILE")]
    pub(crate) interpreter: Option<PathBuf>,
    /// Add DIR to the run path of every ELF file, after the directories it needs (repeatable).
    /// autoPatchelfHook's `runtimeDependencies` are `<dep>/lib` here.
    #[arg(long, value_name = "DIR")]
    pub(crate) runtime_dependency: Vec<PathBuf>,
    /// Add DIR at the end of the run path of every ELF file (repeatable), like `appendRunpaths`.
    #[arg(long, value_name = "DIR")]
    pub(crate) append_rpath: Vec<PathBuf>,
    /// Do not fail when a missing soname matches this pattern (repeatable; `*`, `?`, `[...]`).
    #[arg(long, value_name = "PATTERN")]
    pub(crate) ignore_missing: Vec<String>,
    /// Look libc's own libraries up like any other instead of leaving them to the dynamic linker.
    #[arg(long)]
    pub(crate) keep_libc: bool,
    /// Only relink files directly in the given directories.
    #[arg(long)]
    pub(crate) no_recurse: bool,
    /// Report what would change without writing anything.
    #[arg(long)]
    pub(crate) dry_run: bool,
}

#[derive(Debug, Args)]
pub(crate) struct AuditArgs {
    /// Trees or files to check.
    #[arg(required = true, value_name = "PATH")]
    pub(crate) paths: Vec<PathBuf>,
    /// Also look for libraries in this directory, before the default ones (repeatable).
    #[arg(long, value_name = "DIR")]
    pub(crate) library_path: Vec<PathBuf>,
}

/// What `storepatch generate` prints.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum Generated {
    /// The man page (roff).
    Man,
    /// Completions for bash.
    CompleteBash,
    /// Completions for zsh.
    CompleteZsh,
    /// Completions for fish.
    CompleteFish,
}

pub(crate) fn parse(args: Vec<OsString>) -> Cli {
    Cli::parse_from(args)
}
