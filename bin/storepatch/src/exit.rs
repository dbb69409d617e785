//! Maps results to exit codes in one place: 0 ok, 1 findings or failed checks, 2 errors.
use std::process::ExitCode;

/// Exit status for usage and I/O errors.
pub(crate) const ERROR: u8 = 2;

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
