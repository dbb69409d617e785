//! Maps results to exit codes in one place: 0 ok, 1 findings or failed checks, 2 errors.
use std::path::Path;
use std::process::ExitCode;

/// Exit status for usage and I/O errors.
pub(crate) const ERROR: u8 = 2;

/// Makes SIGINT and SIGTERM ask the run to stop cleanly (see `storepatch_rewrite::interrupt`);
/// a second one stops the process at once. The handlers are installed even when the signals were
/// ignored on entry (as a background job of a non-interactive shell starts), so that `kill -INT`
/// always stops a run the same way.
pub(crate) fn install_signal_handlers() {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        let registered = signal_hook::flag::register_conditional_default(signal, seen.clone())
            .and_then(|_| signal_hook::flag::register(signal, seen.clone()))
            .and_then(|_| {
                signal_hook::flag::register_usize(
                    signal,
                    storepatch_rewrite::interrupt::flag(),
                    usize::try_from(signal).unwrap_or(1),
                )
            });
        if let Err(err) = registered {
            log::warn!("cannot handle signal {signal}: {err}");
        }
    }
}

/// The one form of a message about a file: ``cannot ACTION `PATH`: CAUSE``, where the cause is
/// what the system said (`fs_err`'s own wording of the operation is dropped, the path is kept).
pub(crate) fn cannot(action: &str, path: &Path, err: &std::io::Error) -> anyhow::Error {
    anyhow::anyhow!("cannot {action} `{}`: {}", path.display(), io_cause(err))
}

/// The bytes of the regular file at `path` (a symlink is followed), never more than the size
/// `stat` gives: a device such as `/dev/zero` would give bytes without end and a FIFO would block,
/// so both are refused before anything is opened. Errors are worded as [`cannot`] words them.
pub(crate) fn read_regular(path: &Path) -> anyhow::Result<Vec<u8>> {
    use std::io::Read as _;
    let metadata = fs_err::metadata(path).map_err(|err| cannot("read", path, &err))?;
    if let Some(kind) = storepatch_rewrite::special_kind(metadata.file_type()) {
        anyhow::bail!(
            "cannot read `{}`: {kind}, not a regular file",
            path.display()
        );
    }
    let file = fs_err::File::open(path).map_err(|err| cannot("read", path, &err))?;
    let mut bytes = Vec::new();
    file.take(metadata.len())
        .read_to_end(&mut bytes)
        .map_err(|err| cannot("read", path, &err))?;
    Ok(bytes)
}

/// What the system said about `err` (`No such file or directory (os error 2)`). `fs_err` words
/// its errors as ``failed to OPERATION `PATH`: CAUSE``; the path is in our message already, so
/// only the cause is kept.
pub(crate) fn io_cause(err: &std::io::Error) -> String {
    let text = err.to_string();
    match text.split_once("`: ") {
        Some((operation, cause)) if operation.starts_with("failed to ") => cause.to_owned(),
        _ => text,
    }
}

/// `err` and its causes on one line, in the one wording of messages about files
/// ([`storepatch_tree::in_one_voice`]: ``cannot ACTION `PATH`: CAUSE``).
pub(crate) fn render(err: &anyhow::Error) -> String {
    storepatch_tree::in_one_voice(&format!("{err:#}"))
}

#[expect(clippy::print_stderr, reason = "the one place errors reach the user")]
/// With `json`, an error that ends the run is also a `{"type":"error"}` line on stdout, so that a
/// reader of `--json` output sees every problem as JSON.
pub(crate) fn report(result: anyhow::Result<ExitCode>, json: bool) -> ExitCode {
    if let Some(signal) = storepatch_rewrite::interrupt::signal() {
        // Temporary files other threads still held (normally none: each removes its own).
        for path in storepatch_rewrite::remove_registered() {
            log::debug!("removed {}", path.display());
        }
        if let Err(err) = &result {
            eprintln!("error: {}", render(err));
        }
        let name = if signal == signal_hook::consts::SIGTERM {
            "SIGTERM"
        } else {
            "SIGINT"
        };
        eprintln!("storepatch: stopped by {name}");
        return ExitCode::from(128u8.saturating_add(u8::try_from(signal).unwrap_or(0)));
    }
    match result {
        Ok(code) => code,
        Err(err) => {
            // A closed pipe (`storepatch scan | head`) is not an error.
            let broken_pipe = err.chain().any(|cause| {
                cause
                    .downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            });
            if broken_pipe {
                return ExitCode::SUCCESS;
            }
            if json {
                let line = serde_json::json!({
                    "type": "error",
                    "path": null,
                    "message": render(&err),
                });
                let _ = std::io::Write::write_all(
                    &mut std::io::stdout().lock(),
                    format!("{line}\n").as_bytes(),
                );
            }
            eprintln!("error: {}", render(&err));
            ExitCode::from(ERROR)
        }
    }
}
