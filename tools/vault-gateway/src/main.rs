fn main() -> std::process::ExitCode {
    vault_gateway::run()
}
