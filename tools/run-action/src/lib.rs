//! run-action (not yet implemented).

pub fn run() -> std::process::ExitCode {
    vault_core::report("run-action", "not implemented yet");
    vault_core::Exit::Failure.into()
}
