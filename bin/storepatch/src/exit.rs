//! Maps results to exit codes in one place: 0 ok, 1 findings or failed checks, 2 errors.
use std::path::Path;
use std::process::ExitCode;

/// Exit status for usage and I/O errors.
pub(crate) const ERROR: u8 = 2;

/// The one form of a message about a file: ``cannot ACTION `PATH`: CAUSE``, where the cause is
/// what the system said (`fs_err`'s own wording of the operation is dropped, the path is kept).
pub(crate) fn cannot(action: &str, path: &Path, err: &std::io::Error) -> anyhow::Error {
    anyhow::anyhow!("cannot {action} `{}`: {}", path.display(), io_cause(err))
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

#[expect(clippy::print_stderr, reason = "the one place errors reach the user")]
pub(crate) fn report(result: anyhow::Result<ExitCode>) -> ExitCode {
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
            eprintln!("error: {err:#}");
            ExitCode::from(ERROR)
        }
    }
}
