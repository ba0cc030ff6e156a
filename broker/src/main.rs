//! The `statecast` binary: see `statecast --help`.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

fn main() -> std::process::ExitCode {
    statecast::cli::main()
}
