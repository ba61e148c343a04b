//! secret-mount (not yet implemented).

pub fn run() -> std::process::ExitCode {
    vault_core::report("secret-mount", "not implemented yet");
    vault_core::Exit::Failure.into()
}
