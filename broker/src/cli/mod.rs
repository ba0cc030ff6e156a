//! The `statecast` command line: `serve` runs the broker; `publish`,
//! `subscribe`, `ping`, `sow`, `sow-and-subscribe` and `sow-delete` are
//! clients built on statecast-client; `journal-dump` and `sow-dump` read a
//! data directory's files (read-only, safe beside a running broker);
//! `placement` and `default-config` describe the machine and the defaults.
//!
//! Exit status: 0 on success, 1 on an error (one line on stderr), 2 on bad
//! usage (clap's own exit code for usage errors).

mod client_commands;
mod serve;
mod sow_commands;
mod sow_dump;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// statecast: a publish/subscribe message broker with a State-of-the-World cache.
#[derive(Debug, Parser)]
#[command(name = "statecast", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: CommandLine,
}

#[derive(Debug, Subcommand)]
enum CommandLine {
    /// Run the broker (on the embedded default configuration unless --config is given).
    Serve(ServeArgs),
    /// Publish one message per input line (stdin by default).
    Publish(PublishArgs),
    /// Print the messages of a topic or topic pattern as they arrive.
    Subscribe(SubscribeArgs),
    /// Print the records of a SOW topic (or pattern) that match a query.
    Sow(sow_commands::SowArgs),
    /// Print a SOW query's records, then the live messages that follow them.
    SowAndSubscribe(sow_commands::SowAndSubscribeArgs),
    /// Delete records of a SOW topic; prints `{"deleted":N}`.
    SowDelete(sow_commands::SowDeleteArgs),
    /// Check that a broker answers, and how fast.
    Ping(ServerArg),
    /// Print the embedded default configuration.
    DefaultConfig,
    /// Show the machine as hwloc sees it and where the broker's threads would run.
    Placement(PlacementArgs),
    /// Print the records of a journal (safe beside a running broker), or its summary.
    JournalDump(JournalDumpArgs),
    /// Print the records of a durable SOW topic's slab files (safe beside a
    /// running broker), or with --stats their sizes and the slab_size to set.
    SowDump(SowDumpArgs),
}

/// Arguments of `serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// A TOML configuration file laid over the embedded default.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory (overrides server.data_dir).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Client listener HOST:PORT (overrides server.listen; port 0 picks one).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Admin listener HOST:PORT (overrides server.admin_listen; port 0 picks one).
    #[arg(long, value_name = "ADDR")]
    pub admin_listen: Option<String>,
    /// Validate the configuration, print it, and exit.
    #[arg(long)]
    pub check_config: bool,
}

/// Arguments of `journal-dump`.
#[derive(Debug, clap::Args)]
pub struct JournalDumpArgs {
    /// The data directory (or its `journal/` directory).
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    /// Only records with a bookmark at or after this one.
    #[arg(long, value_name = "B")]
    from: Option<u64>,
    /// Only records on this topic.
    #[arg(long, value_name = "T")]
    topic: Option<String>,
    /// Print only the summary (files, records, bytes, overhead per record,
    /// first and last bookmark and time, damage found).
    #[arg(long)]
    stats: bool,
}

/// Arguments of `sow-dump`.
#[derive(Debug, clap::Args)]
pub struct SowDumpArgs {
    /// The data directory (or its `sow/` directory, or the topic's folder in it).
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    /// The SOW topic (a durable one: transient topics have no files).
    #[arg(long, value_name = "T")]
    topic: String,
    /// Print only the summary: records, payload bytes, slab usage, the
    /// message-size histogram and the slab_size to set.
    #[arg(long)]
    stats: bool,
}

/// Arguments of `placement`.
#[derive(Debug, clap::Args)]
pub struct PlacementArgs {
    /// I/O threads (0 = auto, as threads.io).
    #[arg(long, default_value_t = 0)]
    io: usize,
    /// Processor threads (0 = auto, as threads.processors).
    #[arg(long, default_value_t = 0)]
    processors: usize,
    /// Plan without the journal's flusher thread (journal.topics = []).
    #[arg(long)]
    no_journal: bool,
}

/// The broker to talk to.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArg {
    /// Broker address.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:9007")]
    pub server: String,
}

/// Which acks `publish` waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AckArg {
    /// Fire and forget (a flush barrier at the end confirms the broker took everything).
    None,
    /// Wait for each message's processed ack.
    Processed,
    /// Wait for each message's persisted ack (needs a journal).
    Persisted,
}

/// Arguments of `publish`.
#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    #[command(flatten)]
    server: ServerArg,
    /// Topic to publish to.
    #[arg(long)]
    topic: String,
    /// Acks to wait for.
    #[arg(long, value_enum, default_value_t = AckArg::None)]
    ack: AckArg,
    /// Read messages from this file instead of stdin (one per line).
    #[arg(long, value_name = "F")]
    file: Option<PathBuf>,
    /// Client name (default `statecast-publish-<pid>`). With `--ack
    /// persisted` publishes are numbered and resent after a reconnect, and
    /// the broker drops resends it already has for this name.
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Each message's payload on its own line.
    Data,
    /// One JSON object per message.
    Json,
}

/// Arguments of `subscribe`.
#[derive(Debug, clap::Args)]
pub struct SubscribeArgs {
    #[command(flatten)]
    server: ServerArg,
    /// Topic, or a topic pattern (a regular expression).
    #[arg(long)]
    topic: String,
    /// Content filter expression.
    #[arg(long, value_name = "EXPR")]
    filter: Option<String>,
    /// Start from the journal: `epoch`, a bookmark (the messages after it),
    /// an RFC 3339 UTC time, or a range `[from:to)` (which ends the command
    /// when replayed); `now` (the default) is live messages only.
    #[arg(long, value_name = "B")]
    bookmark: Option<String>,
    /// Exit after this many messages.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Exit after this many seconds (with status 1 if --count was not reached).
    #[arg(long, value_name = "SECS")]
    timeout: Option<f64>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Data)]
    format: Format,
}

fn time_text(ns: u64) -> String {
    humantime::format_rfc3339_nanos(std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ns))
        .to_string()
}

fn journal_dump(args: &JournalDumpArgs) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::ops::ControlFlow;

    let dir = if args.dir.join("journal").is_dir() {
        args.dir.join("journal")
    } else {
        args.dir.clone()
    };
    let filter = statecast_journal::dump::DumpFilter {
        from: args.from,
        topic: args.topic.as_deref().map(str::as_bytes),
    };
    let mut stdout = std::io::stdout().lock();
    let mut write_failed = None;
    let stats = statecast_journal::dump::records(&dir, &filter, |record| {
        if args.stats {
            return ControlFlow::Continue(());
        }
        let payload =
            serde_json::from_slice::<serde_json::Value>(record.payload).unwrap_or_else(|_| {
                serde_json::Value::String(String::from_utf8_lossy(record.payload).into_owned())
            });
        let line = serde_json::json!({
            "bookmark": record.bookmark,
            "time": time_text(record.timestamp_ns),
            "topic": String::from_utf8_lossy(record.topic),
            "size": record.payload.len(),
            "payload": payload,
        });
        match writeln!(stdout, "{line}") {
            Ok(()) => ControlFlow::Continue(()),
            Err(error) => {
                write_failed = Some(error);
                ControlFlow::Break(())
            }
        }
    })
    .map_err(|e| {
        anyhow::anyhow!(
            "{e} (is {} a statecast data or journal directory?)",
            args.dir.display()
        )
    })?;
    if let Some(error) = write_failed
        && error.kind() != std::io::ErrorKind::BrokenPipe
    {
        return Err(error.into());
    }
    let summary = serde_json::json!({
        "files": stats.files,
        "spares": stats.spares,
        "records": stats.records,
        "file_bytes": stats.file_bytes,
        "record_bytes": stats.record_bytes,
        "payload_bytes": stats.payload_bytes,
        "overhead_per_record": stats.overhead_per_record(),
        "first_bookmark": stats.first_bookmark,
        "last_bookmark": stats.last_bookmark,
        "first_time": stats.first_timestamp_ns.map(time_text),
        "last_time": stats.last_timestamp_ns.map(time_text),
        "issues": stats.issues.iter().map(|i| format!("{} at offset {}: {}", i.file, i.offset, i.detail)).collect::<Vec<_>>(),
    });
    if args.stats {
        println!("{summary}");
    } else {
        eprintln!("{summary}");
    }
    Ok(())
}

fn placement(args: &PlacementArgs) -> anyhow::Result<()> {
    let machine = crate::placement::discover()?;
    let plan = crate::placement::plan(&machine, args.io, args.processors, !args.no_journal, true);
    println!(
        "{}",
        serde_json::json!({
            "numa_nodes": machine.numa_nodes,
            "node0_cores": machine.node0_cores,
            "other_pus": machine.other_pus,
            "plan": plan.to_string(),
        })
    );
    Ok(())
}

/// Parses the command line and runs the command.
#[must_use]
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        CommandLine::Serve(args) => return serve::run(&args),
        CommandLine::DefaultConfig => {
            print!("{}", crate::config::DEFAULT_TOML);
            Ok(())
        }
        CommandLine::Placement(args) => placement(&args),
        CommandLine::JournalDump(args) => journal_dump(&args),
        CommandLine::SowDump(args) => sow_dump::run(&args),
        CommandLine::Publish(args) => client_commands::run(|| client_commands::publish(args)),
        CommandLine::Subscribe(args) => client_commands::run(|| client_commands::subscribe(args)),
        CommandLine::Sow(args) => client_commands::run(|| sow_commands::sow(args)),
        CommandLine::SowAndSubscribe(args) => {
            client_commands::run(|| sow_commands::sow_and_subscribe(args))
        }
        CommandLine::SowDelete(args) => client_commands::run(|| sow_commands::sow_delete(args)),
        CommandLine::Ping(args) => client_commands::run(|| client_commands::ping(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("statecast: {error:#}");
            ExitCode::FAILURE
        }
    }
}
