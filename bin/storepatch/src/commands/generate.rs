//! `storepatch generate`: the man page and shell completions, made from the clap definition so
//! they never drift from `--help`. Committed copies live in `bin/storepatch/doc/`; a test checks
//! them.
use std::io::Write as _;
use std::process::ExitCode;

use std::path::Path;

use clap::CommandFactory as _;

use crate::cli::{Cli, Generated};

pub(crate) fn run(what: Generated, out_dir: Option<&Path>) -> anyhow::Result<ExitCode> {
    let mut command = Cli::command();
    if let (Generated::Man, Some(dir)) = (what, out_dir) {
        write_man_pages(command, dir)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = Vec::new();
    match what {
        Generated::Man => clap_mangen::Man::new(command).render(&mut out)?,
        Generated::CompleteBash => {
            clap_complete::generate(
                clap_complete::Shell::Bash,
                &mut command,
                "storepatch",
                &mut out,
            );
        }
        Generated::CompleteZsh => {
            clap_complete::generate(
                clap_complete::Shell::Zsh,
                &mut command,
                "storepatch",
                &mut out,
            );
        }
        Generated::CompleteFish => {
            clap_complete::generate(
                clap_complete::Shell::Fish,
                &mut command,
                "storepatch",
                &mut out,
            );
        }
    }
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&out)?;
    stdout.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// `storepatch.1` plus `storepatch-<subcommand>.1` for every visible subcommand.
fn write_man_pages(command: clap::Command, dir: &Path) -> anyhow::Result<()> {
    fs_err::create_dir_all(dir)?;
    let mut command = command.disable_help_subcommand(true);
    command.build();
    for subcommand in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        let name = format!("storepatch-{}", subcommand.get_name());
        let page = subcommand
            .clone()
            .name(name.clone())
            .bin_name(name.replace('-', " "));
        let mut out = Vec::new();
        clap_mangen::Man::new(page).render(&mut out)?;
        fs_err::write(dir.join(format!("{name}.1")), out)?;
    }
    let mut out = Vec::new();
    clap_mangen::Man::new(command).render(&mut out)?;
    fs_err::write(dir.join("storepatch.1"), out)?;
    Ok(())
}
