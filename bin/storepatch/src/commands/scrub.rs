//! `storepatch scrub`.
use std::process::ExitCode;

use crate::cli::{GlobalArgs, ScrubArgs};

pub(crate) fn run(_global: &GlobalArgs, _args: &ScrubArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
