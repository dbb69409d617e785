//! Command-line definitions (clap). Help text here is the source of the man page.
use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, CommandFactory as _, FromArgMatches as _, Parser, Subcommand};

const EXIT_CODES_SCAN: &str = "\
Exit status (with -q the answer is the exit status alone):
  0  store references were found
  1  no store references were found
  2  an error occurred (usage, or a file that could not be read)";

const EXIT_CODES_ALL: &str = "\
Exit status:
  scan:     0 references found, 1 none found, 2 error
  scrub:    0 success, 2 error
  restore:  0 success, 1 something left unrestored, 2 error
  relink:   0 success, 1 missing dependencies, 2 error
  audit:    0 healthy, 1 problems found, 2 error
  elf:      as patchelf: 0 success, non-zero on error";

const EXIT_CODES_RESTORE: &str = "\
Exit status:
  0  every scrubbed reference was restored and every old location relocated
  1  something was left as it was: a scrubbed name that no supplied store path has, or several
     have; or an old location in a binary file whose length cannot change (ELF), or in
     Python bytecode other than as a code object's file name, or in bytecode it cannot read
  2  an error occurred (usage, or a file that could not be read or written)";

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
    /// Never show progress (a bar when stderr is a terminal; otherwise, as in a build log, a line
    /// every 5 s once a run takes that long).
    #[arg(long, global = true, env = "STOREPATCH_NO_PROGRESS", value_parser = clap::builder::FalseyValueParser::new())]
    pub(crate) no_progress: bool,
    /// Read every file with read(2) instead of mapping large ones into memory (`scan` reads large
    /// files in pieces of 256 KiB either way, and maps only one with nowhere to cut for 4 MiB).
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
    /// Undo a scrub: give scrubbed references whose name matches exactly one supplied store path
    /// their hash back (same length), and relocate the tree's old location in text files and
    /// bytecode.
    #[command(after_help = EXIT_CODES_RESTORE)]
    Restore(RestoreArgs),
    /// Point the run path of every ELF file at the libraries it needs, like autoPatchelfHook.
    #[command(after_help = EXIT_CODES_RELINK)]
    Relink(Box<RelinkArgs>),
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

impl Command {
    /// Whether the command works on the thread pool: the tree commands do; `elf` and `generate`
    /// work on one thread and start none.
    pub(crate) fn uses_threads(&self) -> bool {
        match self {
            Self::Scan(_)
            | Self::Scrub(_)
            | Self::Restore(_)
            | Self::Relink(_)
            | Self::Audit(_) => true,
            Self::Elf { .. } | Self::Generate { .. } => false,
        }
    }
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

#[derive(Debug, Args)]
pub(crate) struct RestoreArgs {
    /// Directories to restore in place.
    #[arg(required = true, value_name = "DIR")]
    pub(crate) paths: Vec<PathBuf>,
    /// File with one store path per line to restore references to (by name).
    #[arg(long, value_name = "FILE")]
    pub(crate) candidates: Vec<PathBuf>,
    /// Restore references to this store path (repeatable).
    #[arg(long, value_name = "STORE_PATH")]
    pub(crate) store_path: Vec<PathBuf>,
    /// Restore references to the store paths named in the environment (inside a Nix build: the
    /// build's inputs).
    #[arg(long)]
    pub(crate) candidates_from_env: bool,
    /// Replace OLD with NEW in text files and symlink targets (repeatable; the length may change),
    /// e.g. the directory the venv was built in with its new location, and at the start of the
    /// file names that code objects in `.pyc` files record. Scrubbed references inside OLD are
    /// relocated, not restored. `RECORD` lines of the files that change get their new hash and
    /// size. Other binary files holding OLD are reported and left alone.
    #[arg(long, value_name = "OLD=NEW")]
    pub(crate) relocate: Vec<OsString>,
    /// Report what would change without writing anything.
    #[arg(long)]
    pub(crate) dry_run: bool,
}

/// `relink --help`: the exit status (as `-h` shows it) and the auto-patchelf.py command line.
const RELINK_AUTO_PATCHELF: &str = "\
Exit status:
  0  success
  1  missing dependencies (each is listed; see --ignore-missing)
  2  an error occurred (usage, or a file that could not be read or written)

auto-patchelf.py's command line (autoPatchelfFlags) is accepted too: --paths, --libs,
--runtime-dependencies, --append-rpaths and (with --paths) --ignore-missing take every following
value up to the next option; --extra-args takes the rest of the line as patchelf flags.";

#[derive(Clone, Debug, Args)]
#[command(after_long_help = RELINK_AUTO_PATCHELF)]
pub(crate) struct RelinkArgs {
    /// Trees or files to relink; their own libraries are searched first.
    #[arg(value_name = "PATH")]
    pub(crate) paths: Vec<PathBuf>,
    /// Trees or files to relink, as auto-patchelf.py spells it (joined to PATH).
    #[arg(long = "paths", value_name = "PATH")]
    pub(crate) more_paths: Vec<PathBuf>,
    /// Search this directory (or library file) for libraries, not recursively (repeatable;
    /// library sources are searched in command-line order).
    #[arg(long, value_name = "DIR")]
    pub(crate) library_path: Vec<PathBuf>,
    /// Search this tree for libraries, recursively (repeatable; in command-line order with
    /// --library-path and --libs), as `addAutoPatchelfSearchPath` does.
    #[arg(long, value_name = "DIR")]
    pub(crate) library_tree: Vec<PathBuf>,
    /// auto-patchelf.py's `--libs`: the same as --library-path.
    #[arg(long, value_name = "DIR")]
    pub(crate) libs: Vec<PathBuf>,
    /// Also search the run paths of indexed libraries (without `$ORIGIN` entries), as
    /// autoPatchelfHook does.
    #[arg(long)]
    pub(crate) follow_run_paths: bool,
    /// Do not search the trees being relinked for libraries (auto-patchelf.py's flag).
    #[arg(long)]
    pub(crate) ignore_existing: bool,
    /// Keep `$ORIGIN` run path entries that resolve a library: always done; accepted for
    /// auto-patchelf.py's flag.
    #[arg(long)]
    pub(crate) preserve_origin: bool,
    /// Dynamic linker for executables [default: `$NIX_BINTOOLS/nix-support/dynamic-linker`].
    #[arg(long, value_name = "FILE")]
    pub(crate) interpreter: Option<PathBuf>,
    /// Put DIR first in the run path of dynamic executables (repeatable), like
    /// `runtimeDependencies` (whose entries are `<dep>/lib` here). Libraries do not get it.
    #[arg(long, value_name = "DIR")]
    pub(crate) runtime_dependency: Vec<PathBuf>,
    /// auto-patchelf.py's `--runtime-dependencies`: the same as --runtime-dependency.
    #[arg(long, value_name = "DIR")]
    pub(crate) runtime_dependencies: Vec<PathBuf>,
    /// Add DIR at the end of the run path of every ELF file (repeatable), like `appendRunpaths`.
    #[arg(long, value_name = "DIR")]
    pub(crate) append_rpath: Vec<PathBuf>,
    /// auto-patchelf.py's `--append-rpaths`: the same as --append-rpath.
    #[arg(long, value_name = "DIR")]
    pub(crate) append_rpaths: Vec<PathBuf>,
    /// Do not fail when a missing soname matches this pattern (repeatable; `*`, `?`, `[...]`).
    #[arg(long, value_name = "PATTERN")]
    pub(crate) ignore_missing: Vec<String>,
    /// patchelf flag for every file patchelf would be called on, like `patchelfFlags`
    /// (repeatable): --force-rpath, --no-default-lib, --page-size N, --debug.
    #[arg(long, value_name = "FLAG", allow_hyphen_values = true)]
    pub(crate) patchelf_flag: Vec<OsString>,
    /// Look libc's own libraries up like any other instead of leaving them to the dynamic linker.
    #[arg(long)]
    pub(crate) keep_libc: bool,
    /// Only restore scrubbed run path entries in place (same length) and change nothing else,
    /// for a pass before strip and patchELF's shrink-rpath.
    #[arg(long)]
    pub(crate) restore_only: bool,
    /// Only relink files directly in the given directories.
    #[arg(long)]
    pub(crate) no_recurse: bool,
    /// Report what would change without writing anything.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// --library-path, --libs and --library-tree in command-line order.
    #[arg(skip)]
    pub(crate) library_sources: Vec<LibrarySource>,
}

/// Where `relink` looks for libraries, besides the trees it relinks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum LibrarySource {
    /// Directly in this directory (or this one file).
    Directory(PathBuf),
    /// Anywhere below this directory.
    Tree(PathBuf),
}

impl LibrarySource {
    pub(crate) fn path(&self) -> &PathBuf {
        match self {
            Self::Directory(path) | Self::Tree(path) => path,
        }
    }

    pub(crate) fn path_mut(&mut self) -> &mut PathBuf {
        match self {
            Self::Directory(path) | Self::Tree(path) => path,
        }
    }
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
    let args = auto_patchelf_arguments(args);
    let matches = Cli::command().get_matches_from(args);
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|err| err.exit());
    if let Command::Relink(relink) = &mut cli.command
        && let Some(("relink", sub)) = matches.subcommand()
    {
        let mut sources: Vec<(usize, LibrarySource)> = Vec::new();
        for (id, tree) in [
            ("library_path", false),
            ("libs", false),
            ("library_tree", true),
        ] {
            let (Some(indices), Some(values)) = (sub.indices_of(id), sub.get_many::<PathBuf>(id))
            else {
                continue;
            };
            sources.extend(indices.zip(values).map(|(index, path)| {
                let path = path.clone();
                (
                    index,
                    if tree {
                        LibrarySource::Tree(path)
                    } else {
                        LibrarySource::Directory(path)
                    },
                )
            }));
        }
        sources.sort_by_key(|(index, _)| *index);
        relink.library_sources = sources.into_iter().map(|(_, source)| source).collect();
        relink.paths.append(&mut relink.more_paths);
        relink
            .runtime_dependency
            .append(&mut relink.runtime_dependencies);
        relink.append_rpath.append(&mut relink.append_rpaths);
    }
    cli
}

/// Rewrites auto-patchelf.py's argparse-style options of `relink` into repeated single-value
/// options: `--libs a b` becomes `--libs=a --libs=b` (values up to the next argument that starts
/// with `-`; none at all drops the option), and everything after `--extra-args` becomes
/// `--patchelf-flag=…` (empty strings, from an empty `patchelfFlags`, are dropped).
/// `--ignore-missing` is only read that way when `--paths` is used, since with positional paths
/// `--ignore-missing PATTERN PATH` means one pattern. Arguments after `--` stay as they are.
fn auto_patchelf_arguments(args: Vec<OsString>) -> Vec<OsString> {
    const MULTI: [&str; 4] = [
        "--paths",
        "--libs",
        "--runtime-dependencies",
        "--append-rpaths",
    ];
    let Some(start) = args
        .iter()
        .take_while(|arg| *arg != "--")
        .position(|arg| arg == "relink")
    else {
        return args;
    };
    let end = args[start..]
        .iter()
        .position(|arg| arg == "--")
        .map_or(args.len(), |offset| start + offset);
    let nixpkgs_style = args[start..end].iter().any(|arg| arg == "--paths");
    let mut out: Vec<OsString> = args[..=start].to_vec();
    let mut index = start + 1;
    while index < end {
        let arg = &args[index];
        index += 1;
        if arg == "--extra-args" {
            for flag in &args[index..] {
                if !flag.is_empty() {
                    let mut option = OsString::from("--patchelf-flag=");
                    option.push(flag);
                    out.push(option);
                }
            }
            return out;
        }
        let multi =
            MULTI.iter().any(|name| arg == *name) || (nixpkgs_style && arg == "--ignore-missing");
        if !multi {
            out.push(arg.clone());
            continue;
        }
        while index < end && !args[index].as_encoded_bytes().starts_with(b"-") {
            let mut option = arg.clone();
            option.push("=");
            option.push(&args[index]);
            out.push(option);
            index += 1;
        }
    }
    out.extend_from_slice(&args[end..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(args: &[&str]) -> Vec<String> {
        auto_patchelf_arguments(args.iter().map(OsString::from).collect())
            .into_iter()
            .map(|arg| arg.into_string().unwrap())
            .collect()
    }

    #[test]
    fn auto_patchelf_style_arguments_become_single_values() {
        assert_eq!(
            rewrite(&[
                "storepatch",
                "relink",
                "--ignore-missing",
                "--paths",
                "/out",
                "/lib",
                "--libs",
                "/a/lib",
                "/b/lib",
                "--runtime-dependencies",
                "--ignore-missing",
                "libx*",
                "liby.so",
                "--keep-libc",
                "--extra-args",
                "",
                "--force-rpath",
                "--page-size",
                "4096",
            ]),
            [
                "storepatch",
                "relink",
                "--paths=/out",
                "--paths=/lib",
                "--libs=/a/lib",
                "--libs=/b/lib",
                "--ignore-missing=libx*",
                "--ignore-missing=liby.so",
                "--keep-libc",
                "--patchelf-flag=--force-rpath",
                "--patchelf-flag=--page-size",
                "--patchelf-flag=4096",
            ]
        );
        // Positional paths: `--ignore-missing` takes one value; nothing after `--` changes.
        let plain = [
            "storepatch",
            "relink",
            "--ignore-missing",
            "libx*",
            "venv",
            "--",
            "--libs",
        ];
        assert_eq!(rewrite(&plain), plain);
        assert_eq!(
            rewrite(&["storepatch", "scan", "--libs", "a"]),
            ["storepatch", "scan", "--libs", "a"]
        );
    }
}
