//! The `storepatch` command line.
use std::process::ExitCode;

mod cli;
mod commands;
mod exit;
mod logger;
mod output;
mod progress;
mod tree;

fn main() -> ExitCode {
    exit::install_signal_handlers();
    // Installed under the name `patchelf`, behave exactly like `storepatch elf`.
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let invoked_as = args
        .first()
        .and_then(|arg0| std::path::Path::new(arg0).file_name())
        .map(std::ffi::OsStr::to_os_string);
    if invoked_as.as_deref() == Some(std::ffi::OsStr::new("patchelf")) {
        return exit::report(commands::elf::run(args.split_off(1)), false);
    }
    // `storepatch --set-rpath /x lib.so`: a patchelf command line, run as `storepatch elf …`.
    if args
        .get(1)
        .is_some_and(|first| commands::elf::is_patchelf_command_line(first))
    {
        return exit::report(commands::elf::run(args.split_off(1)), false);
    }
    let cli = cli::parse(args);
    logger::init(cli.global.verbose);
    if cli.command.uses_threads() {
        // One worker thread per core unless told otherwise.
        let threads = cli.global.threads().unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
        });
        // Before any thread starts: see its docs for what it saves.
        storepatch_walk::tune_malloc(threads);
        // Only fails when a pool already exists, which cannot happen this early.
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build_global();
    }
    let json = cli.global.json;
    exit::report(commands::run(cli), json)
}
