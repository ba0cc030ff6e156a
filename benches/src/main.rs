//! statecast-bench: the load generator and benchmark harness.
//!
//! It owns the `statecast-bench` binary: the W1 fan-out workload (1 KiB JSON
//! messages, publishers and subscribers on one single-threaded tokio runtime,
//! publish→deliver latency from HdrHistogram, one JSON line per run), the
//! adapters that run that same workload against statecast (through the
//! `statecast-client` SDK and through a bare framing client), NATS core
//! (async-nats), an in-process `mem` ceiling and the `relay` null broker that
//! also lives here, and the `table` summary that `scripts/bench-peers` prints.
//! `durable` is workload W2: 1 KiB keyed updates with a window of
//! acknowledgements in flight (statecast's `persisted` acks, Redis with
//! `appendfsync always`/`everysec`, NATS JetStream with file storage), the
//! update rate and the send→acknowledgement latency, then the state read
//! back on a fresh connection (statecast: one `sow` query on a SOW topic).
//! `restart` is W3: a server restarted on W2's state, timed to its ready
//! line and to the whole state read back. `sow-query` times a SOW query
//! (a full scan with the filter bench's 5-predicate filter).
//! The criterion micro-benchmark of the frame codec is `benches/codec.rs`.
//!
//! **Invariant:** this crate depends on `statecast-protocol` and
//! `statecast-client` only among the workspace crates, never on the broker
//! crate: the broker under test is always a separate process, started by the
//! caller (usually `scripts/bench-peers`), as users run it.

mod cpu;
mod durable;
mod payload;
mod relay;
mod report;
mod restart;
mod rss;
mod run;
mod sow_query;
mod table;
mod target;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Load generator and benchmark harness for statecast and its peers.
#[derive(Debug, Parser)]
#[command(name = "statecast-bench", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs one workload against one target and prints one JSON line.
    Run(run::RunArgs),
    /// Runs W2 (acknowledged keyed updates) against one target and prints
    /// one JSON line.
    Durable(durable::DurableArgs),
    /// W3: spawns a server on the state a W2 run left, times its ready line
    /// and the whole state read back, and prints one JSON line.
    Restart(restart::RestartArgs),
    /// Times SOW queries (a filter over every record of a topic) and prints
    /// one JSON line.
    SowQuery(sow_query::SowQueryArgs),
    /// Runs the relay (null broker) until killed; prints
    /// `ready client=HOST:PORT` when it listens.
    Relay(relay::RelayArgs),
    /// Reads JSON lines from `run` and prints the side-by-side table of
    /// medians with the ratios between targets.
    Table(table::TableArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run::main(&args),
        Command::Durable(args) => durable::main(&args),
        Command::Restart(args) => restart::main(&args),
        Command::SowQuery(args) => sow_query::main(&args),
        Command::Relay(args) => relay::main(&args),
        Command::Table(args) => table::main(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("statecast-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}
