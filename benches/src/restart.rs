//! `statecast-bench restart`: W3, a server restarting on the state a W2 run
//! left on disk (peer-baseline.md §W3), one JSON line.
//!
//! The previous server was stopped by the caller (`--stopped-by` records
//! how: SIGTERM, its graceful shutdown, or SIGKILL). This command spawns
//! the server command given after `--` (its stdout and stderr appended to
//! `--log`), and from that instant measures:
//! - `ready_ms`: until `--ready` appears in the server's output (polled
//!   every millisecond);
//! - `connected_ms`: until a TCP connection to `--server` first opens;
//! - `state_ms`: until the whole state has been read back and checked on a
//!   fresh connection ([`DurableTarget::read_back`], `--read-back full` or
//!   `count`), retried every `--retry-ms` (5, as peer-baseline.md) while it
//!   fails — refused connections, Redis's `LOADING`, a stream not loaded
//!   yet, a state not complete yet.
//!
//! Then it reads the server's resident memory and stops it (`--stop`:
//! SIGTERM and wait, SIGKILL, or leave it running for the caller, whose
//! JSON line then carries its pid).

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::task::LocalSet;

use crate::report::{RESTART_WORKLOAD, RestartReport};
use crate::rss::Rss;
use crate::target::{
    DurableKind, DurableTarget, Expected, JetStream, ReadBackKind, Redis, StatecastUpdates,
};
use statecast_protocol::AckType;

/// `statecast-bench restart` options.
#[derive(Debug, Clone, clap::Args)]
pub struct RestartArgs {
    /// System under test (`statecast` reads its SOW topic `--topic`).
    #[arg(long, value_enum)]
    target: DurableKind,
    /// The address the restarted server listens on (fixed: the read-back
    /// starts before the server prints it).
    #[arg(long)]
    server: String,
    /// statecast: the SOW topic holding the state (keyed by `id`).
    #[arg(long, default_value = "bench_sow")]
    topic: String,
    /// Updates the W2 run sent (update `n` is for key `n % keys`).
    #[arg(long, default_value_t = 200_000)]
    count: u64,
    /// Distinct keys.
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// How to read the state back.
    #[arg(long, value_enum, default_value_t = ReadBackKind::Full)]
    read_back: ReadBackKind,
    /// Text of the server's ready line (e.g. `ready client=`, `Ready to
    /// accept connections`, `Server is ready`).
    #[arg(long)]
    ready: String,
    /// File the server's stdout and stderr are appended to.
    #[arg(long)]
    log: PathBuf,
    /// Pause between read-back attempts, ms.
    #[arg(long, default_value_t = 5)]
    retry_ms: u64,
    /// Give up after this long, ms.
    #[arg(long, default_value_t = 120_000)]
    timeout_ms: u64,
    /// How the previous server process was stopped (recorded only).
    #[arg(long, default_value = "sigterm")]
    stopped_by: String,
    /// What to do with the restarted server once measured.
    #[arg(long, value_enum, default_value_t = StopKind::Sigterm)]
    stop: StopKind,
    /// Free text copied into the JSON line.
    #[arg(long)]
    label: Option<String>,
    /// The target's name in the JSON line, when it differs from `--target`.
    #[arg(long)]
    name: Option<String>,
    /// The server command (after `--`).
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

/// What `restart` does with the server it started, once measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StopKind {
    /// SIGTERM, then wait for it to exit.
    Sigterm,
    /// SIGKILL.
    Sigkill,
    /// Leave it running (its pid is in the JSON line).
    None,
}

impl StopKind {
    fn name(self) -> &'static str {
        match self {
            Self::Sigterm => "sigterm",
            Self::Sigkill => "sigkill",
            Self::None => "none",
        }
    }
}

/// Runs W3 and prints its JSON line.
///
/// # Errors
/// Bad options, a server that cannot be spawned, or a run with errors (the
/// JSON line is printed first).
pub fn main(args: &RestartArgs) -> anyhow::Result<()> {
    if args.read_back == ReadBackKind::None {
        bail!("restart needs --read-back full or count");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = LocalSet::new();
    let report = local.block_on(&runtime, async {
        match args.target {
            DurableKind::Mem => bail!("the mem target has no server to restart"),
            DurableKind::Statecast => {
                let target =
                    StatecastUpdates::new(&args.server, &args.topic, AckType::Persisted, true);
                run(&target, args).await
            }
            DurableKind::Redis => run(&Redis::new(&args.server, 1), args).await,
            DurableKind::Jetstream => run(&JetStream::new(&args.server, 1), args).await,
        }
    })?;
    println!("{}", serde_json::to_string(&report)?);
    if !report.errors.is_empty() {
        bail!("the run had errors: {}", report.errors.join("; "));
    }
    Ok(())
}

fn spawn(args: &RestartArgs) -> anyhow::Result<(Child, usize)> {
    let log = File::options()
        .create(true)
        .append(true)
        .open(&args.log)
        .with_context(|| format!("opening {}", args.log.display()))?;
    let from = usize::try_from(log.metadata()?.len())?;
    let (program, rest) = args
        .command
        .split_first()
        .context("no server command after --")?;
    let child = Command::new(program)
        .args(rest)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("spawning {program}"))?;
    Ok((child, from))
}

/// Whether `text` appeared in `log` after byte `from`.
fn logged(log: &PathBuf, from: usize, text: &str) -> bool {
    std::fs::read(log).is_ok_and(|bytes| {
        bytes
            .get(from..)
            .is_some_and(|new| new.windows(text.len()).any(|w| w == text.as_bytes()))
    })
}

async fn run<T: DurableTarget>(target: &T, args: &RestartArgs) -> anyhow::Result<RestartReport> {
    let expected = Expected {
        sent: args.count,
        keys: args.keys,
    };
    let timeout = Duration::from_millis(args.timeout_ms);
    let retry = Duration::from_millis(args.retry_ms);
    let mut errors = Vec::new();
    let started = Instant::now();
    let (mut child, log_from) = spawn(args)?;
    let pid = child.id();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;

    let ready = async {
        loop {
            if logged(&args.log, log_from, &args.ready) {
                return Some(started.elapsed());
            }
            if started.elapsed() > timeout {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    let mut exited = None;
    let state = async {
        let mut attempts = 0u64;
        let mut connected = None;
        let mut last_error = None;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                exited = Some(status);
                return (None, connected, attempts, last_error);
            }
            if connected.is_none() && tokio::net::TcpStream::connect(&args.server).await.is_ok() {
                connected = Some(started.elapsed());
            }
            if connected.is_some() {
                attempts += 1;
                match target.read_back(expected, args.read_back).await {
                    Ok(read_back) => {
                        return (
                            Some((started.elapsed(), read_back)),
                            connected,
                            attempts,
                            last_error,
                        );
                    }
                    Err(error) => last_error = Some(format!("{error:#}")),
                }
            }
            if started.elapsed() > timeout {
                return (None, connected, attempts, last_error);
            }
            tokio::time::sleep(retry).await;
        }
    };
    let (ready, (state, connected, attempts, last_error)) = tokio::join!(ready, state);
    if let Some(status) = exited {
        errors.push(format!(
            "the server exited ({status}) before its state was read back"
        ));
    } else if state.is_none() {
        errors.push(format!(
            "no complete read-back within {timeout:?} ({attempts} attempts; last error: {})",
            last_error.as_deref().unwrap_or("none")
        ));
    }
    if ready.is_none() {
        errors.push(format!(
            "no line with {:?} in {}",
            args.ready,
            args.log.display()
        ));
    }
    let server_rss = Rss::read(pid);

    let stop_started = Instant::now();
    let mut stop_ms = None;
    match args.stop {
        StopKind::Sigterm => {
            let status = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()?;
            if status.success() {
                child.wait()?;
                stop_ms = Some(ms(stop_started.elapsed()));
            } else {
                errors.push(format!("kill -TERM {pid} failed"));
            }
        }
        StopKind::Sigkill => {
            child.kill()?;
            child.wait()?;
            stop_ms = Some(ms(stop_started.elapsed()));
        }
        StopKind::None => {}
    }

    let name = args
        .name
        .clone()
        .unwrap_or_else(|| args.target.name().to_owned());
    let (state_ms, readback_ms, check) = match state {
        Some((at, read_back)) => (Some(ms(at)), read_back.query.map(ms), Some(read_back.check)),
        None => (None, None, None),
    };
    Ok(RestartReport {
        workload: RESTART_WORKLOAD.to_owned(),
        target: name,
        label: args.label.clone(),
        stopped_by: args.stopped_by.clone(),
        keys: expected.keys_updated(),
        read_back: match args.read_back {
            ReadBackKind::Full => "full",
            ReadBackKind::Count => "count",
            ReadBackKind::None => "none",
        }
        .to_owned(),
        ready_ms: ready.map(ms),
        connected_ms: connected.map(ms),
        state_ms,
        readback_ms,
        attempts,
        check,
        last_retry_error: last_error,
        server_rss,
        server_pid: pid,
        stop: args.stop.name().to_owned(),
        stop_ms,
        errors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ready_line_is_looked_for_after_the_start_offset() {
        let dir =
            std::env::temp_dir().join(format!("statecast-bench-restart-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("out");
        std::fs::write(&log, "ready client=old\nmore\n").unwrap();
        assert!(logged(&log, 0, "ready client="));
        assert!(!logged(&log, 10, "ready client="));
        assert!(!logged(&log.with_extension("missing"), 0, "ready"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
