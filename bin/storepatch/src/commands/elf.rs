//! `storepatch elf`: a patchelf-compatible command line over `storepatch-elf`.
use std::ffi::OsString;
use std::process::ExitCode;

pub(crate) fn run(_args: Vec<OsString>) -> anyhow::Result<ExitCode> {
    anyhow::bail!("storepatch elf is not implemented yet")
}
