//! `storepatch scan`.
use std::process::ExitCode;

use crate::cli::{GlobalArgs, ScanArgs};

pub(crate) fn run(_global: &GlobalArgs, _args: &ScanArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
