//! result-write (not yet implemented).

pub fn run() -> std::process::ExitCode {
    vault_core::report("result-write", "not implemented yet");
    vault_core::Exit::Failure.into()
}
