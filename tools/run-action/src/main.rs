fn main() -> std::process::ExitCode {
    run_action::run()
}
