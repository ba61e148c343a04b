fn main() -> std::process::ExitCode {
    vault_status::run()
}
