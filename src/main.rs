//! The `tickflare` binary: parses the command line and maps errors to exit codes.

fn main() -> std::process::ExitCode {
    tickflare::cli::main()
}
