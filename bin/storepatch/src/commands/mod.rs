//! One module per subcommand; each returns the process exit code or an error.
use std::process::ExitCode;

use storepatch_core::StoreDir;
use storepatch_walk::ReadPolicy;

use crate::cli::{Cli, Command, DiscoveryArgs, GlobalArgs};
use crate::tree::{self, TreeOptions};

pub(crate) mod audit;
pub(crate) mod elf;
pub(crate) mod generate;
pub(crate) mod relink;
pub(crate) mod restore;
pub(crate) mod scan;
pub(crate) mod scrub;

pub(crate) fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Scan(args) => scan::run(&cli.global, &args),
        Command::Scrub(args) => scrub::run(&cli.global, &args),
        Command::Restore(args) => restore::run(&cli.global, &args),
        Command::Relink(args) => relink::run(&cli.global, &args),
        Command::Audit(args) => audit::run(&cli.global, &args),
        Command::Elf { args } => elf::run(args),
        Command::Generate { what, out_dir } => generate::run(what, out_dir.as_deref()),
    }
}

/// Checks that a path given on the command line exists (without following a symlink).
/// What became of one planned change of scrub or restore.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// `--dry-run`: nothing was written.
    Planned,
    /// Written.
    Done,
    /// Writing failed (reported as an error); the entry is unchanged.
    Failed,
    /// A signal stopped the run first; the entry is unchanged.
    Interrupted,
}

impl Outcome {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Planned => "planned",
            Self::Done => "done",
            Self::Failed => "failed",
            Self::Interrupted => "interrupted",
        }
    }

    /// `Interrupted` when `err` says a signal stopped the write, else `Failed`.
    pub(crate) fn of_error(err: &anyhow::Error) -> Self {
        if stopped_by_signal(err) {
            Self::Interrupted
        } else {
            Self::Failed
        }
    }
}

/// Whether `err` says a signal stopped a write (the entry is then unchanged, not failed).
pub(crate) fn stopped_by_signal(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<storepatch_rewrite::Error>(),
            Some(storepatch_rewrite::Error::Interrupted { .. })
        )
    })
}

pub(crate) fn check_root(root: &std::path::Path) -> anyhow::Result<()> {
    fs_err::symlink_metadata(root)
        .map(drop)
        .map_err(|err| crate::exit::cannot("read", root, &err))
}

/// The store dir from `--store-dir`, `$NIX_STORE` or the default.
pub(crate) fn store_dir(global: &GlobalArgs) -> anyhow::Result<StoreDir> {
    Ok(StoreDir::resolve(global.store_dir.as_deref())?)
}

/// Scan options shared by the commands that discover references.
pub(crate) fn tree_options(
    global: &GlobalArgs,
    discovery: &DiscoveryArgs,
    with_context: bool,
    keep: storepatch_tree::Keep,
) -> anyhow::Result<TreeOptions> {
    let store_dir = store_dir(global)?;
    let candidates = tree::load_candidates(
        &store_dir,
        &discovery.candidates,
        discovery.candidates_from_env,
    )?;
    Ok(TreeOptions {
        tree: storepatch_tree::TreeOptions {
            store_dir,
            candidates,
            read_policy: if global.no_mmap {
                ReadPolicy::Read
            } else {
                ReadPolicy::default()
            },
            read_in_pieces: false,
            with_context,
            keep,
        },
        show_progress: !(global.json || global.quiet || global.no_progress),
    })
}
