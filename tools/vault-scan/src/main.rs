fn main() -> std::process::ExitCode {
    vault_scan::run()
}
