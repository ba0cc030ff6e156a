//! `statecast-bench sow-query`: the speed of one SOW query through the
//! broker, one JSON line.
//!
//! On one connection (raw frames, [`SowConnection`]): a `count_only` query
//! without a filter gives the topic's record count; then `--runs` queries
//! with `--filter` (by default the filter bench's 5-predicate filter,
//! [`payload::ORDER_FILTER`]), each timed from writing the command to
//! `group_end`, after one more untimed query (`--warmup`: the first query
//! after a restart pages the store's slab files in; its time is reported
//! apart). On a topic without a hash index on the filter's fields the
//! broker scans every record, so records scanned per second = the topic's
//! records ÷ the query time. `--count-only` keeps the matching records on
//! the broker (the scan alone); without it they are delivered too.
//! `--no-filter` asks for every record: W2's read-back, repeated (to
//! profile it); `--batch-size` asks for the answer in `sow_batch` frames.

use tokio::task::LocalSet;

use crate::cpu::cpu_time;
use crate::payload;
use crate::report::{SOW_QUERY_WORKLOAD, SowQueryReport};
use crate::target::{SowConnection, SowRequest};

/// `statecast-bench sow-query` options.
#[derive(Debug, Clone, clap::Args)]
pub struct SowQueryArgs {
    /// The broker's client address.
    #[arg(long, default_value = "127.0.0.1:9007")]
    server: String,
    /// The SOW topic.
    #[arg(long, default_value = "bench_sow")]
    topic: String,
    /// The filter (default: the filter bench's 5 predicates).
    #[arg(long, conflicts_with = "no_filter")]
    filter: Option<String>,
    /// No filter: every record (W2's read-back, repeated).
    #[arg(long)]
    no_filter: bool,
    /// Ask for the count of matching records only.
    #[arg(long)]
    count_only: bool,
    /// Records per frame of the answer (`batch_size`; default: the
    /// broker's, one `deliver` per record).
    #[arg(long)]
    batch_size: Option<u32>,
    /// Keep every record's payload until the query ends, as W2's read-back
    /// does (otherwise each is dropped as it is counted).
    #[arg(long)]
    keep: bool,
    /// Queries timed.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Queries run first and reported apart (`first_query_ms`).
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Fail unless this many records match.
    #[arg(long)]
    expect_matched: Option<u64>,
    /// A server process whose CPU use to report.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Free text copied into the JSON line.
    #[arg(long)]
    label: Option<String>,
}

/// Runs the queries and prints the JSON line.
///
/// # Errors
/// A broker that cannot be reached, or a run with errors (the JSON line is
/// printed first).
pub fn main(args: &SowQueryArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.runs > 0, "--runs must be at least 1");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = LocalSet::new().block_on(&runtime, run(args))?;
    println!("{}", serde_json::to_string(&report)?);
    if !report.errors.is_empty() {
        anyhow::bail!("the run had errors: {}", report.errors.join("; "));
    }
    Ok(())
}

async fn run(args: &SowQueryArgs) -> anyhow::Result<SowQueryReport> {
    let mut connection = SowConnection::connect(&args.server, "bench-sow-query").await?;
    let filter = (!args.no_filter).then(|| {
        args.filter
            .clone()
            .unwrap_or_else(|| payload::ORDER_FILTER.to_owned())
    });
    let mut errors = Vec::new();
    let all = connection
        .query(
            &args.topic,
            &SowRequest {
                filter: None,
                count_only: true,
                batch_size: None,
            },
            |_| {},
        )
        .await?;
    let request = SowRequest {
        filter: filter.clone(),
        count_only: args.count_only,
        batch_size: args.batch_size,
    };
    let mut first_query_ms = Vec::with_capacity(args.warmup);
    for _ in 0..args.warmup {
        let answer = connection.query(&args.topic, &request, |_| {}).await?;
        first_query_ms.push(answer.elapsed.as_secs_f64() * 1e3);
    }
    let server_cpu_before = args.server_pid.and_then(|pid| cpu_time(Some(pid)));
    let started = std::time::Instant::now();
    let mut query_ms = Vec::with_capacity(args.runs);
    let mut matched = None;
    for _ in 0..args.runs {
        let mut bytes = 0usize;
        let mut kept = Vec::new();
        let answer = connection
            .query(&args.topic, &request, |payload| {
                bytes += payload.len();
                if args.keep {
                    kept.push(payload.clone());
                }
            })
            .await?;
        drop(kept);
        query_ms.push(answer.elapsed.as_secs_f64() * 1e3);
        if matched.is_some_and(|m| m != answer.group_records) {
            errors.push(format!(
                "the queries matched {} and then {} records",
                matched.unwrap_or(0),
                answer.group_records
            ));
        }
        matched = Some(answer.group_records);
    }
    let wall = started.elapsed().as_secs_f64();
    let server_cpu_secs = server_cpu_before.and_then(|before| {
        let after = cpu_time(args.server_pid)?;
        Some(after.checked_sub(before)?.as_secs_f64())
    });
    let matched = matched.unwrap_or(0);
    if let Some(expected) = args.expect_matched
        && expected != matched
    {
        errors.push(format!("{matched} records matched, not {expected}"));
    }
    let mut sorted = query_ms.clone();
    sorted.sort_by(f64::total_cmp);
    let median_ms = sorted[sorted.len() / 2];
    let scanned = all.group_records;
    Ok(SowQueryReport {
        workload: SOW_QUERY_WORKLOAD.to_owned(),
        label: args.label.clone(),
        topic: args.topic.clone(),
        filter,
        count_only: args.count_only,
        topic_records: scanned,
        count_all_ms: all.elapsed.as_secs_f64() * 1e3,
        matched,
        first_query_ms,
        query_ms,
        scanned_per_sec: if median_ms > 0.0 {
            scanned as f64 / (median_ms / 1e3)
        } else {
            0.0
        },
        server_cpu_pct: server_cpu_secs
            .filter(|_| wall > 0.0)
            .map(|cpu| 100.0 * cpu / wall),
        server_cpu_us_per_record: server_cpu_secs
            .filter(|_| scanned > 0)
            .map(|cpu| cpu * 1e6 / (scanned as f64 * args.runs as f64)),
        errors,
    })
}
