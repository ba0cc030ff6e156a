//! `statecast-bench durable`: W2, acknowledged keyed updates, one JSON line.
//!
//! One connection sends `--count` updates of `--size` bytes (the W2
//! document, [`KeyedBuilder`]) over `--keys` keys, update `n` for key
//! `n % keys`, keeping at most `--window` updates sent and not yet
//! acknowledged. Two tasks share the runner's single thread (a current-thread
//! tokio runtime with a `LocalSet`, like `run`): the sender takes a window
//! permit, a timestamp ([`payload::now_ns`]) and sends; the collector awaits
//! the acknowledgements in send order, timestamps each as soon as it is
//! woken — draining every ack that is already in without yielding — and
//! gives the permit back. The rate counts from the first send to the last
//! acknowledgement; the latency is send→acknowledgement (HdrHistogram).
//!
//! Every acknowledgement must be a success. Where acks carry a stamp
//! (statecast's bookmark, JetStream's stream sequence) the stamps must rise
//! in ack order and, on a server that only this run wrote to, without a gap
//! (`--gap-free`). After the last ack the target reads the state back on a
//! fresh connection and checks it ([`DurableTarget::read_back`], timed:
//! statecast's one `sow` query when `--sow`, Redis's `HGETALL`, JetStream's
//! KV watch; `--read-back count` only counts the keys). The streamed
//! answers (statecast's, JetStream's) are checked record by record as they
//! are decoded, keeping only each key's `seq`; Redis's `HGETALL` is one
//! reply, which its client holds whole before the check.
//!
//! `--doc order` sends the filter bench's 1 KiB orders ([`payload::order`])
//! instead of W2's documents — the 1M-record SOW workload, with `--keys`
//! equal to `--count` (each key written once) and `--read-back count`.
//! With `--server-pid`, the server's resident memory is read before the
//! first update and after the last ack ([`Rss`]), next to the payload bytes
//! the server should hold (the last update of every key).

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::bail;
use hdrhistogram::Histogram;
use statecast_protocol::AckType;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::LocalSet;

use crate::cpu::CpuMark;
use crate::payload::{self, KeyedBuilder};
use crate::report::{DURABLE_WORKLOAD, DurableReport, Latency, new_histogram};
use crate::rss::Rss;
use crate::target::{
    DurableKind, DurableTarget, Expected, JetStream, MemUpdates, PendingUpdate, ReadBackKind,
    Redis, StatecastUpdates, Updater,
};

/// `statecast-bench durable` options.
#[derive(Debug, Clone, clap::Args)]
pub struct DurableArgs {
    /// System under test.
    #[arg(long, value_enum)]
    target: DurableKind,
    /// The server's client address (not used by `mem`).
    #[arg(long, default_value = "127.0.0.1:9007")]
    server: String,
    /// statecast: the topic every update is published on.
    #[arg(long, default_value = "bench_state")]
    topic: String,
    /// statecast: the acknowledgement to ask for.
    #[arg(long, value_enum, default_value_t = AckKind::Persisted)]
    ack: AckKind,
    /// statecast: `--topic` is a SOW topic keyed by the document's `id`
    /// (`sow.topics`, key `["/id"]`), so the state can be read back with
    /// a `sow` query.
    #[arg(long)]
    sow: bool,
    /// How to read the state back after the last ack.
    #[arg(long, value_enum, default_value_t = ReadBackKind::Full)]
    read_back: ReadBackKind,
    /// The documents sent.
    #[arg(long, value_enum, default_value_t = DocKind::W2)]
    doc: DocKind,
    /// Updates to send.
    #[arg(long, default_value_t = 200_000)]
    count: u64,
    /// Distinct keys.
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// Most updates in flight (sent, not yet acknowledged).
    #[arg(long, default_value_t = 1_000)]
    window: usize,
    /// Update size in bytes (the W2 JSON document, padded).
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Fail an update whose acknowledgement takes longer than this.
    #[arg(long, default_value_t = 30_000)]
    ack_timeout_ms: u64,
    /// Require the acks' stamps to be consecutive (a server that only this
    /// run wrote to since it started empty).
    #[arg(long)]
    gap_free: bool,
    /// A server process whose CPU use to report.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Free text copied into the JSON line.
    #[arg(long)]
    label: Option<String>,
    /// The target's name in the JSON line, when it differs from `--target`
    /// (e.g. `redis-always`).
    #[arg(long)]
    name: Option<String>,
    /// statecast: records per frame of the read-back's answer (1: one
    /// `deliver` per record).
    #[arg(long, default_value_t = crate::target::READ_BACK_BATCH_SIZE)]
    sow_batch_size: u32,
}

/// The documents a durable run sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DocKind {
    /// W2's keyed update of `--size` bytes ([`KeyedBuilder`]).
    W2,
    /// The filter bench's order ([`payload::order`], 1,0xx bytes; `--size`
    /// is ignored), key `ord-20261123-<key>`.
    Order,
}

impl DocKind {
    fn name(self) -> &'static str {
        match self {
            Self::W2 => "w2",
            Self::Order => "order",
        }
    }
}

/// The acknowledgement a statecast update asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AckKind {
    /// After the sync (fsync/msync) that covers the update has returned.
    Persisted,
    /// Once the broker has taken the update (journaled, not yet synced).
    Processed,
}

impl AckKind {
    fn ack_type(self) -> AckType {
        match self {
            Self::Persisted => AckType::Persisted,
            Self::Processed => AckType::Processed,
        }
    }
}

/// Runs W2 and prints its JSON line.
///
/// # Errors
/// Bad options, a target that cannot be reached, or a run with errors (the
/// JSON line is printed first).
pub fn main(args: &DurableArgs) -> anyhow::Result<()> {
    if args.window == 0 || args.keys == 0 {
        bail!("--window and --keys must be at least 1");
    }
    if args.doc == DocKind::Order && args.read_back == ReadBackKind::Full {
        bail!("--doc order reads back with --read-back count (or none)");
    }
    KeyedBuilder::new(args.size)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = LocalSet::new();
    let report = local.block_on(&runtime, async {
        match args.target {
            DurableKind::Mem => run(MemUpdates::default(), args).await,
            DurableKind::Statecast => {
                let target =
                    StatecastUpdates::new(&args.server, &args.topic, args.ack.ack_type(), args.sow)
                        .with_batch_size(args.sow_batch_size);
                run(target, args).await
            }
            DurableKind::Redis => run(Redis::new(&args.server, args.window), args).await,
            DurableKind::Jetstream => run(JetStream::new(&args.server, args.window), args).await,
        }
    })?;
    println!("{}", serde_json::to_string(&report)?);
    if !report.errors.is_empty() {
        bail!("the run had errors: {}", report.errors.join("; "));
    }
    Ok(())
}

/// What the collector saw.
#[derive(Debug)]
struct Acks {
    acked: u64,
    last_ns: u64,
    latency: Histogram<u64>,
    stamps: Option<(u64, u64)>,
    /// Stamps that did not rise by exactly one (with `--gap-free`) or did not
    /// rise at all.
    stamp_errors: u64,
    first_stamp_error: Option<String>,
    error: Option<String>,
}

impl Acks {
    /// Nothing acknowledged yet.
    fn new() -> Self {
        Self {
            acked: 0,
            last_ns: 0,
            latency: new_histogram(),
            stamps: None,
            stamp_errors: 0,
            first_stamp_error: None,
            error: None,
        }
    }

    fn on_stamp(&mut self, stamp: Option<u64>, gap_free: bool) {
        let Some(stamp) = stamp else { return };
        match &mut self.stamps {
            None => self.stamps = Some((stamp, stamp)),
            Some((_, last)) => {
                let good = if gap_free {
                    stamp == *last + 1
                } else {
                    stamp > *last
                };
                if !good {
                    self.stamp_errors += 1;
                    self.first_stamp_error.get_or_insert_with(|| {
                        format!("stamp {stamp} acknowledged after stamp {last}")
                    });
                }
                *last = stamp;
            }
        }
    }
}

async fn run<T: DurableTarget>(target: T, args: &DurableArgs) -> anyhow::Result<DurableReport> {
    payload::now_ns();
    let mut updater = target.updater().await?;
    let mut builder = KeyedBuilder::new(args.size)?;
    let permits = Rc::new(Semaphore::new(args.window));
    let (sender, receiver) = mpsc::unbounded_channel::<(u64, PendingUpdate)>();
    let acks = Rc::new(RefCell::new(Acks::new()));
    let collector = tokio::task::spawn_local(collect(
        receiver,
        Rc::clone(&permits),
        Rc::clone(&acks),
        Duration::from_millis(args.ack_timeout_ms),
        args.gap_free,
    ));

    // The size of the last update of each key (what the server should hold).
    let mut last_size = vec![0u32; usize::try_from(args.keys.min(args.count))?];
    let server_rss_before = args.server_pid.and_then(Rss::read);
    let client_cpu = CpuMark::now(None);
    let server_cpu = args.server_pid.map(|pid| CpuMark::now(Some(pid)));
    let start = Instant::now();
    let mut errors = Vec::new();
    let mut first_ns = None;
    let mut sent = 0;
    let mut sent_bytes = 0u64;
    while sent < args.count {
        // Closed by the collector when an ack failed.
        let Ok(permit) = permits.acquire().await else {
            break;
        };
        permit.forget();
        let ts = payload::now_ns();
        first_ns.get_or_insert(ts);
        let key = sent % args.keys;
        let update = match args.doc {
            DocKind::W2 => builder.build(ts, sent, key),
            DocKind::Order => payload::order(key),
        };
        sent_bytes += update.len() as u64;
        if let Some(size) = usize::try_from(key).ok().and_then(|k| last_size.get_mut(k)) {
            *size = u32::try_from(update.len()).unwrap_or(u32::MAX);
        }
        match updater.update(key, update).await {
            Ok(pending) => {
                if sender.send((ts, pending)).is_err() {
                    break;
                }
            }
            Err(error) => {
                errors.push(format!("update {sent}: {error:#}"));
                break;
            }
        }
        sent += 1;
    }
    drop(sender);
    if let Err(error) = collector.await {
        errors.push(format!("the ack collector: {error}"));
    }
    let client_cpu_pct = client_cpu.percent_since();
    let server_cpu_pct = server_cpu.and_then(|mark| mark.percent_since());
    let server_rss_after = args.server_pid.and_then(Rss::read);
    drop(updater);

    // The collector has finished, so this is the last handle.
    let Ok(acks) = Rc::try_unwrap(acks).map(RefCell::into_inner) else {
        bail!("the ack collector still holds its state after finishing");
    };
    if let Some(error) = &acks.error {
        errors.push(error.clone());
    }
    if let Some(error) = &acks.first_stamp_error {
        errors.push(format!(
            "{} acks out of order{}: first, {error}",
            acks.stamp_errors,
            if args.gap_free { " or with a gap" } else { "" }
        ));
    }
    let mut check = None;
    let mut read_back = None;
    if errors.is_empty() {
        let expected = Expected {
            sent,
            keys: args.keys,
        };
        match target.read_back(expected, args.read_back).await {
            Ok(what) => {
                let stamps = match acks.stamps {
                    Some(_) if args.gap_free => "stamps rise by one in ack order; ",
                    Some(_) => "stamps rise in ack order; ",
                    None => "",
                };
                check = Some(format!("{stamps}{}", what.check));
                read_back = Some(what);
            }
            Err(error) => errors.push(format!("read-back: {error:#}")),
        }
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let read_back = read_back.unwrap_or_default();
    let secs = acks.last_ns.saturating_sub(first_ns.unwrap_or(0)) as f64 / 1e9;
    let updates_rate = if secs > 0.0 {
        acks.acked as f64 / secs
    } else {
        0.0
    };
    Ok(DurableReport {
        workload: DURABLE_WORKLOAD.to_owned(),
        target: args
            .name
            .clone()
            .unwrap_or_else(|| args.target.name().to_owned()),
        label: args.label.clone(),
        ack: (args.target == DurableKind::Statecast).then(|| args.ack.ack_type().name().to_owned()),
        doc: Some(args.doc.name().to_owned()),
        // The mean for orders (their size varies by a few bytes).
        size: match sent_bytes.checked_div(sent) {
            Some(mean) => usize::try_from(mean)?,
            None => args.size,
        },
        keys: args.keys,
        window: args.window,
        sent,
        acked: acks.acked,
        secs,
        updates_rate,
        payload_mb_per_sec: if sent > 0 {
            updates_rate * sent_bytes as f64 / sent as f64 / 1e6
        } else {
            0.0
        },
        ack_latency_us: Latency::from_ns(&acks.latency),
        stamps: acks.stamps,
        check,
        readback_ms: read_back.query.map(ms),
        readback_connect_ms: read_back.connect.map(ms),
        readback_records: read_back.records,
        stored_payload_bytes: Some(last_size.iter().map(|&s| u64::from(s)).sum()),
        server_rss_before,
        server_rss_after,
        client_cpu_pct,
        server_cpu_pct,
        wall_secs: start.elapsed().as_secs_f64(),
        errors,
    })
}

/// Awaits the acknowledgements in send order; on a failure, records it and
/// closes the window so that the sender stops.
async fn collect(
    mut receiver: mpsc::UnboundedReceiver<(u64, PendingUpdate)>,
    permits: Rc<Semaphore>,
    acks: Rc<RefCell<Acks>>,
    timeout: Duration,
    gap_free: bool,
) {
    let mut n: u64 = 0;
    while let Some((sent_ns, pending)) = receiver.recv().await {
        let result = match tokio::time::timeout(timeout, pending).await {
            Ok(result) => result,
            Err(_) => Err(anyhow::anyhow!("no acknowledgement within {timeout:?}")),
        };
        let now = payload::now_ns();
        let mut acks = acks.borrow_mut();
        match result {
            Ok(stamp) => {
                acks.acked += 1;
                acks.last_ns = now;
                acks.latency
                    .saturating_record(now.saturating_sub(sent_ns).max(1));
                acks.on_stamp(stamp, gap_free);
                permits.add_permits(1);
            }
            Err(error) => {
                acks.error = Some(format!("update {n}: {error:#}"));
                permits.close();
                return;
            }
        }
        n += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acks() -> Acks {
        Acks::new()
    }

    #[test]
    fn stamps_must_rise_and_with_gap_free_by_one() {
        let mut rising = acks();
        for stamp in [5, 6, 9, 12] {
            rising.on_stamp(Some(stamp), false);
        }
        assert_eq!(rising.stamps, Some((5, 12)));
        assert_eq!(rising.stamp_errors, 0);

        let mut gaps = acks();
        for stamp in [5, 6, 9, 9, 10] {
            gaps.on_stamp(Some(stamp), true);
        }
        assert_eq!(gaps.stamp_errors, 2);
        assert_eq!(
            gaps.first_stamp_error.as_deref(),
            Some("stamp 9 acknowledged after stamp 6")
        );

        let mut none = acks();
        none.on_stamp(None, true);
        assert_eq!(none.stamps, None);
    }

    #[test]
    fn the_last_update_of_each_key() {
        let expected = Expected { sent: 25, keys: 10 };
        assert_eq!(expected.keys_updated(), 10);
        assert_eq!(expected.last_seq(3), Some(23));
        assert_eq!(expected.last_seq(5), Some(15));
        assert_eq!(expected.last_seq(10), None);
        let few = Expected { sent: 3, keys: 10 };
        assert_eq!(few.keys_updated(), 3);
        assert_eq!(few.last_seq(2), Some(2));
        assert_eq!(few.last_seq(3), None);
    }
}
