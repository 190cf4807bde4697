fn main() -> std::process::ExitCode {
    broker::ops::cli::main()
}
