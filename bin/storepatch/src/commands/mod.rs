//! One module per subcommand; each returns the process exit code or an error.
use std::process::ExitCode;

use crate::cli::{Cli, Command};

pub(crate) mod elf;
pub(crate) mod scan;
pub(crate) mod scrub;

pub(crate) fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Scan(args) => scan::run(&cli.global, &args),
        Command::Scrub(args) => scrub::run(&cli.global, &args),
        Command::Elf { args } => elf::run(args),
    }
}
