//! vault-scan (not yet implemented).

pub fn run() -> std::process::ExitCode {
    vault_core::report("vault-scan", "not implemented yet");
    vault_core::Exit::Failure.into()
}
