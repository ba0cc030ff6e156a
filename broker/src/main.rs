//! The `statecast` binary: see `statecast --help`.

fn main() -> std::process::ExitCode {
    statecast::cli::main()
}
