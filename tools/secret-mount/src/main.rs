fn main() -> std::process::ExitCode {
    secret_mount::run()
}
