pub(crate) fn run(
    _global: &crate::cli::GlobalArgs,
    _args: &crate::cli::AuditArgs,
) -> anyhow::Result<std::process::ExitCode> {
    todo!()
}
