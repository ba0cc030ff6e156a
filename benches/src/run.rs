//! `statecast-bench run`: one workload against one target, one JSON line.
//!
//! Everything runs on one thread — a current-thread tokio runtime with a
//! `LocalSet` — like one pinned client process: every publisher and every
//! subscriber is a task on it, so with 4 subscribers the thread parses 4× the
//! traffic it sends. Subscribers connect (and are registered by the server)
//! before the first publish. Each publisher takes the send timestamp
//! ([`payload::now_ns`]) just before each publish and writes it into the
//! message; each subscriber reads it back at its fixed offset on receipt.
//!
//! At a fixed rate, message `n` of a publisher is due at
//! `start + phase + n × interval`; the publisher sleeps until about 2 ms
//! before it (tokio's timer has 1 ms granularity and would otherwise release
//! bursts), then spins with `yield_now`, which lets the subscriber tasks run.
//! A late message goes out at once (no catch-up burst beyond that).
//!
//! The run ends when every subscriber has received every published message,
//! or when no subscriber has received anything for `--drain-timeout-ms`
//! after the publishers finished (the rest counts as lost).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use hdrhistogram::Histogram;
use tokio::sync::Notify;
use tokio::task::{JoinHandle, LocalSet};

use crate::cpu::CpuMark;
use crate::payload::{self, MessageBuilder, SEQ_PUBLISHER_STRIDE};
use crate::report::{Latency, Report, SubscriberReport, SubscriberStats, new_histogram};
use crate::target::{
    FilteredSubscriptions, Mem, Nats, Publisher, Raw, Statecast, Subscriber, Target, TargetKind,
};

/// `statecast-bench run` options.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// System under test.
    #[arg(long, value_enum)]
    target: TargetKind,
    /// The server's client address (not used by `mem`).
    #[arg(long, default_value = "127.0.0.1:9007")]
    server: String,
    /// Topic (NATS subject) published and subscribed to.
    #[arg(long, default_value = "bench_fanout")]
    topic: String,
    /// Publisher connections.
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    /// Subscriber connections, each subscribed to the topic.
    #[arg(long, default_value_t = 1)]
    subscribers: usize,
    /// Message size in bytes (W1 JSON, padded).
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Total publish rate in msgs/s over all publishers, or `max`.
    #[arg(long, default_value = "max", value_parser = parse_rate)]
    rate: Rate,
    /// Messages to publish in total (split evenly between publishers).
    /// Default: 200,000 at max rate; rate × duration at a fixed rate.
    #[arg(long)]
    count: Option<u64>,
    /// Seconds to publish for (instead of a count).
    #[arg(long)]
    duration: Option<f64>,
    /// A server process whose CPU use to report.
    #[arg(long)]
    server_pid: Option<u32>,
    /// After the publishers finish, end the run once no message has arrived
    /// for this long.
    #[arg(long, default_value_t = 2000)]
    drain_timeout_ms: u64,
    /// Free text copied into the JSON line (`scripts/bench-peers` names the
    /// workload with it).
    #[arg(long)]
    label: Option<String>,
    /// The target's name in the JSON line, when it differs from `--target`
    /// (e.g. `statecast-journal` for the broker with its journal on).
    #[arg(long)]
    name: Option<String>,
    /// Before publishing, open this many extra subscriptions on the topic
    /// with indexed equality filters `/symbol = 'S<n>'` (`n` from 100 on)
    /// that no published message matches (W1 messages carry `S00`–`S99`),
    /// on extra connections of the bare client; the subscribers measured
    /// are the `--subscribers` as usual. `statecast` and `statecast-raw`
    /// only (issue 3: throughput with 10,000 filtered subscriptions).
    #[arg(long, default_value_t = 0)]
    filtered_subscriptions: u64,
    /// At most this many filtered subscriptions per connection: the
    /// broker's `limits.subscriptions_per_connection_max` (default 4096).
    #[arg(long, default_value_t = 4096)]
    filtered_per_connection: u64,
}

/// A publish rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    /// As fast as the client library takes messages.
    Max,
    /// Messages per second, over all publishers.
    Fixed(f64),
}

fn parse_rate(text: &str) -> Result<Rate, String> {
    if text == "max" {
        return Ok(Rate::Max);
    }
    match text.parse::<f64>() {
        Ok(rate) if rate > 0.0 && rate.is_finite() => Ok(Rate::Fixed(rate)),
        _ => Err(format!(
            "`{text}`: expected `max` or a positive number of msgs/s"
        )),
    }
}

/// How much each publisher sends.
#[derive(Debug, Clone, Copy)]
enum Amount {
    Count(u64),
    Until(Instant),
}

/// State shared by the tasks of one run.
#[derive(Debug)]
struct RunState {
    /// [`payload::now_ns`] at the first publish of any publisher.
    first_publish_ns: Cell<Option<u64>>,
    /// Messages each subscriber should receive, once known.
    expected: Cell<Option<u64>>,
    /// A subscriber finished or failed.
    progress: Notify,
}

/// Runs the workload and prints its JSON line.
///
/// # Errors
/// Bad options, a target that cannot be reached, or a run with errors (the
/// JSON line is printed first).
pub fn main(args: &RunArgs) -> anyhow::Result<()> {
    if args.publishers == 0 || args.subscribers == 0 {
        bail!("--publishers and --subscribers must be at least 1");
    }
    if args.count.is_some() && args.duration.is_some() {
        bail!("give --count or --duration, not both");
    }
    if args.filtered_subscriptions > 0 {
        if !matches!(
            args.target,
            TargetKind::Statecast | TargetKind::StatecastRaw
        ) {
            bail!(
                "--filtered-subscriptions needs --target statecast or statecast-raw: {} has no \
                 content filters",
                args.target.name()
            );
        }
        if args.filtered_per_connection == 0 {
            bail!("--filtered-per-connection must be at least 1");
        }
    }
    MessageBuilder::new(args.size)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = LocalSet::new();
    let report = local.block_on(&runtime, async {
        // Opened first: registering thousands of subscriptions is not part
        // of the measured run.
        let filtered = if args.filtered_subscriptions > 0 {
            Some(
                FilteredSubscriptions::open(
                    &args.server,
                    &args.topic,
                    args.filtered_subscriptions,
                    args.filtered_per_connection,
                )
                .await
                .context("opening the filtered subscriptions")?,
            )
        } else {
            None
        };
        let report = match args.target {
            TargetKind::Mem => run(Mem::default(), args).await,
            TargetKind::Relay | TargetKind::StatecastRaw => {
                run(Raw::new(&args.server, &args.topic), args).await
            }
            TargetKind::Statecast => run(Statecast::new(&args.server, &args.topic), args).await,
            TargetKind::Nats => run(Nats::new(&args.server, &args.topic), args).await,
        };
        let mut report = report?;
        if let Some(filtered) = &filtered {
            report.filtered_subscriptions = filtered.count();
            report.filtered_deliveries = filtered.deliveries();
            if report.filtered_deliveries > 0 {
                report.errors.push(format!(
                    "{} messages were delivered to filtered subscriptions that match none",
                    report.filtered_deliveries
                ));
            }
            report.errors.extend(filtered.errors());
        }
        anyhow::Ok(report)
    })?;
    println!("{}", serde_json::to_string(&report)?);
    if !report.errors.is_empty() {
        bail!("the run had errors: {}", report.errors.join("; "));
    }
    Ok(())
}

/// Messages publisher `index` of `publishers` sends out of `total`.
fn share(total: u64, publishers: usize, index: usize) -> u64 {
    let publishers = publishers as u64;
    let index = index as u64;
    total / publishers + u64::from(index < total % publishers)
}

async fn run<T: Target>(target: T, args: &RunArgs) -> anyhow::Result<Report> {
    payload::now_ns();
    let state = Rc::new(RunState {
        first_publish_ns: Cell::new(None),
        expected: Cell::new(None),
        progress: Notify::new(),
    });

    let mut subscribers = Vec::with_capacity(args.subscribers);
    for index in 0..args.subscribers {
        let subscriber = target
            .subscriber(index)
            .await
            .with_context(|| format!("opening subscriber {index} on {}", args.target.name()))?;
        subscribers.push(subscriber);
    }
    let mut publishers = Vec::with_capacity(args.publishers);
    for index in 0..args.publishers {
        let publisher = target
            .publisher(index)
            .await
            .with_context(|| format!("opening publisher {index} on {}", args.target.name()))?;
        publishers.push(publisher);
    }

    let total = match (args.count, args.duration, args.rate) {
        (Some(count), _, _) => Some(count),
        (None, Some(secs), Rate::Fixed(rate)) => Some((rate * secs).round() as u64),
        (None, Some(_), Rate::Max) => None,
        (None, None, _) => Some(200_000),
    };
    if let Some(total) = total {
        state.expected.set(Some(total));
    }

    let stats: Vec<Rc<RefCell<SubscriberStats>>> = (0..args.subscribers)
        .map(|_| Rc::new(RefCell::new(SubscriberStats::new(args.publishers))))
        .collect();
    let subscriber_tasks: Vec<JoinHandle<()>> = subscribers
        .into_iter()
        .zip(&stats)
        .map(|(subscriber, stats)| {
            tokio::task::spawn_local(subscribe_loop(
                subscriber,
                Rc::clone(stats),
                Rc::clone(&state),
            ))
        })
        .collect();

    let client_cpu = CpuMark::now(None);
    let server_cpu = args.server_pid.map(|pid| CpuMark::now(Some(pid)));
    let start = Instant::now();
    let publisher_tasks: Vec<JoinHandle<anyhow::Result<PublisherResult>>> = publishers
        .into_iter()
        .enumerate()
        .map(|(index, publisher)| {
            let amount = match (total, args.duration) {
                (Some(total), _) => Amount::Count(share(total, args.publishers, index)),
                (None, Some(secs)) => Amount::Until(start + Duration::from_secs_f64(secs)),
                (None, None) => Amount::Count(0),
            };
            let pacing = match args.rate {
                Rate::Max => None,
                Rate::Fixed(rate) => {
                    let interval = Duration::from_secs_f64(args.publishers as f64 / rate);
                    let phase = Duration::from_secs_f64(index as f64 / rate);
                    Some((start + phase, interval))
                }
            };
            tokio::task::spawn_local(publish_loop(
                publisher,
                index,
                args.size,
                amount,
                pacing,
                Rc::clone(&state),
            ))
        })
        .collect();

    let mut errors = Vec::new();
    let mut published = 0;
    let mut last_publish_ns = 0;
    for (index, task) in publisher_tasks.into_iter().enumerate() {
        match task.await {
            Ok(Ok(result)) => {
                published += result.published;
                last_publish_ns = last_publish_ns.max(result.last_publish_ns);
                if let Some(error) = result.error {
                    errors.push(format!("publisher {index}: {error:#}"));
                }
            }
            Ok(Err(error)) => errors.push(format!("publisher {index}: {error:#}")),
            Err(error) => errors.push(format!("publisher {index}: {error}")),
        }
    }
    state.expected.set(Some(published));
    state.progress.notify_waiters();

    // Wait for every subscriber to have everything, or for a silence.
    let drain = Duration::from_millis(args.drain_timeout_ms);
    loop {
        let finished = stats
            .iter()
            .all(|s| s.borrow().received >= published || s.borrow().error.is_some());
        if finished {
            break;
        }
        let before: u64 = stats.iter().map(|s| s.borrow().received).sum();
        let progress = state.progress.notified();
        if tokio::time::timeout(drain, progress).await.is_err() {
            let after: u64 = stats.iter().map(|s| s.borrow().received).sum();
            if after == before {
                break;
            }
        }
    }
    let client_cpu_pct = client_cpu.percent_since();
    let server_cpu_pct = server_cpu.and_then(|mark| mark.percent_since());
    for task in &subscriber_tasks {
        task.abort();
    }

    let first_ns = state.first_publish_ns.get().unwrap_or(0);
    let secs_since_first = |ns: u64| ns.saturating_sub(first_ns) as f64 / 1e9;
    let rate = |n: u64, secs: f64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
    let mut all_latency: Histogram<u64> = new_histogram();
    let mut subscriber_detail = Vec::with_capacity(stats.len());
    let mut last_any_ns = last_publish_ns;
    let mut received_total = 0;
    for (index, stats) in stats.iter().enumerate() {
        let stats = stats.borrow();
        let _ = all_latency.add(&stats.latency);
        last_any_ns = last_any_ns.max(stats.last_ns);
        received_total += stats.received;
        if stats.unparsed > 0 {
            errors.push(format!(
                "subscriber {index}: {} messages were not bench messages",
                stats.unparsed
            ));
        }
        if let Some(error) = &stats.error {
            errors.push(format!("subscriber {index}: {error}"));
        }
        let latency = Latency::from_ns(&stats.latency);
        subscriber_detail.push(SubscriberReport {
            received: stats.received,
            lost: published.saturating_sub(stats.received),
            out_of_order: stats.out_of_order,
            delivered_rate: rate(stats.received, secs_since_first(stats.last_ns)),
            p50_us: latency.p50,
            p99_us: latency.p99,
            error: stats.error.clone(),
        });
    }
    let publish_secs = secs_since_first(last_publish_ns);
    let rates: Vec<f64> = subscriber_detail.iter().map(|s| s.delivered_rate).collect();
    Ok(Report {
        target: args
            .name
            .clone()
            .unwrap_or_else(|| args.target.name().to_owned()),
        label: args.label.clone(),
        publishers: args.publishers,
        subscribers: args.subscribers,
        size: args.size,
        rate: match args.rate {
            Rate::Max => None,
            Rate::Fixed(rate) => Some(rate),
        },
        published,
        publish_secs,
        publish_rate: rate(published, publish_secs),
        delivered_rate_min: rates.iter().copied().fold(f64::INFINITY, f64::min),
        delivered_rate_mean: rates.iter().sum::<f64>() / rates.len() as f64,
        deliveries_rate: rate(received_total, secs_since_first(last_any_ns)),
        lost: subscriber_detail.iter().map(|s| s.lost).sum(),
        out_of_order: subscriber_detail.iter().map(|s| s.out_of_order).sum(),
        latency_us: Latency::from_ns(&all_latency),
        subscriber_detail,
        client_cpu_pct,
        server_cpu_pct,
        wall_secs: start.elapsed().as_secs_f64(),
        filtered_subscriptions: 0,
        filtered_deliveries: 0,
        errors,
    })
}

/// Receives until the subscriber has every message, or its stream ends.
async fn subscribe_loop<S: Subscriber>(
    mut subscriber: S,
    stats: Rc<RefCell<SubscriberStats>>,
    state: Rc<RunState>,
) {
    loop {
        let result = subscriber
            .recv(&mut |message| stats.borrow_mut().on_message(message))
            .await;
        match result {
            Ok(true) => {
                if state
                    .expected
                    .get()
                    .is_some_and(|expected| stats.borrow().received >= expected)
                {
                    state.progress.notify_waiters();
                    return;
                }
            }
            Ok(false) => {
                stats.borrow_mut().error = Some("the subscription stream ended".into());
                break;
            }
            Err(error) => {
                stats.borrow_mut().error = Some(format!("{error:#}"));
                break;
            }
        }
    }
    state.progress.notify_waiters();
}

#[derive(Debug)]
struct PublisherResult {
    published: u64,
    last_publish_ns: u64,
    /// An error after some messages were published.
    error: Option<anyhow::Error>,
}

/// Publishes this publisher's share of the run, then waits for the server
/// to have it all.
async fn publish_loop<P: Publisher>(
    mut publisher: P,
    index: usize,
    size: usize,
    amount: Amount,
    pacing: Option<(Instant, Duration)>,
    state: Rc<RunState>,
) -> anyhow::Result<PublisherResult> {
    let mut builder = MessageBuilder::new(size)?;
    let seq_base = index as u64 * SEQ_PUBLISHER_STRIDE;
    let mut n: u64 = 0;
    let mut error = None;
    loop {
        match amount {
            Amount::Count(count) if n >= count => break,
            Amount::Until(deadline) if Instant::now() >= deadline => break,
            _ => {}
        }
        if let Some((start, interval)) = pacing {
            pace(start + interval.mul_f64(n as f64)).await;
        }
        let ts = payload::now_ns();
        if state.first_publish_ns.get().is_none_or(|first| ts < first) {
            state.first_publish_ns.set(Some(ts));
        }
        let message = builder.build(ts, seq_base + n);
        if let Err(e) = publisher.publish(message).await {
            error = Some(e);
            break;
        }
        n += 1;
    }
    let last_publish_ns = payload::now_ns();
    if error.is_none()
        && let Err(e) = publisher.finish().await
    {
        error = Some(e.context("finishing"));
    }
    Ok(PublisherResult {
        published: n,
        last_publish_ns,
        error,
    })
}

/// Waits until `due`: a timer sleep to about 2 ms before it, then
/// `yield_now` (other tasks run) until it has come.
async fn pace(due: Instant) {
    const SPIN: Duration = Duration::from_millis(2);
    loop {
        let now = Instant::now();
        if now >= due {
            return;
        }
        if due - now > SPIN {
            tokio::time::sleep_until((due - SPIN).into()).await;
        } else {
            tokio::task::yield_now().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up() {
        for total in [0, 1, 7, 200_000] {
            for publishers in 1..5 {
                let sum: u64 = (0..publishers).map(|i| share(total, publishers, i)).sum();
                assert_eq!(sum, total);
            }
        }
    }

    #[test]
    fn rates_parse() {
        assert_eq!(parse_rate("max"), Ok(Rate::Max));
        assert_eq!(parse_rate("20000"), Ok(Rate::Fixed(20_000.0)));
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("fast").is_err());
    }
}
