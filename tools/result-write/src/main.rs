fn main() -> std::process::ExitCode {
    result_write::run()
}
