//! The rewrite floor of a scrub: for every file in a list, write a new copy of the same size to a
//! temporary file in the same directory, give it the file's mode and rename it over the file, on
//! every core. This is what a scrub must do at the least for the files it changes, without
//! reading or searching anything (that is the read floor, timed separately), so the contents
//! written are a constant byte: run it only on a throwaway copy of a tree.
//!
//! usage: rewrite-floor LIST   (LIST: file paths separated by NUL bytes, as `rg -l -0` prints)
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const CHUNK: usize = 1 << 20;

#[expect(clippy::print_stderr, reason = "the tool's only output: its errors")]
fn report(message: &str) {
    eprintln!("rewrite-floor: {message}");
}

fn rewrite(path: &Path, buffer: &[u8]) -> std::io::Result<()> {
    let metadata = fs_err::symlink_metadata(path)?;
    if !metadata.is_file() {
        return Ok(());
    }
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let temporary = path.with_file_name(format!(".{name}.rewrite-floor"));
    let mut file = fs_err::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temporary)?;
    let mut left = usize::try_from(metadata.len()).unwrap_or(usize::MAX);
    while left > 0 {
        let n = left.min(buffer.len());
        if let Err(error) = file.write_all(&buffer[..n]) {
            drop(file);
            let _ = fs_err::remove_file(&temporary);
            return Err(error);
        }
        left -= n;
    }
    drop(file);
    fs_err::set_permissions(&temporary, metadata.permissions())?;
    fs_err::rename(&temporary, path)
}

fn main() -> ExitCode {
    let Some(list) = std::env::args_os().nth(1) else {
        report("usage: rewrite-floor LIST");
        return ExitCode::from(2);
    };
    let list = match fs_err::read(&list) {
        Ok(list) => list,
        Err(error) => {
            report(&error.to_string());
            return ExitCode::from(2);
        }
    };
    let paths: Vec<PathBuf> = list
        .split(|&byte| byte == 0)
        .filter(|path| !path.is_empty())
        .map(|path| PathBuf::from(String::from_utf8_lossy(path).into_owned()))
        .collect();
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let failed = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|worker| {
                let paths = &paths;
                scope.spawn(move || {
                    let buffer = vec![b'e'; CHUNK];
                    let mut failed = 0_usize;
                    for path in paths.iter().skip(worker).step_by(threads) {
                        if let Err(error) = rewrite(path, &buffer) {
                            report(&error.to_string());
                            failed += 1;
                        }
                    }
                    failed
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|worker| worker.join().unwrap_or(1))
            .sum::<usize>()
    });
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
