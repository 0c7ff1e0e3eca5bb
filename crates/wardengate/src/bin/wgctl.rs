fn main() -> std::process::ExitCode {
    wg_cli::main()
}
