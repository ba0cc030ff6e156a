//! `statecast-bench table`: the side-by-side summary of many runs.
//!
//! Reads the JSON lines printed by `run` (files, or stdin), groups them by
//! workload (`--label`, else subscribers and rate) and target, and prints
//! Markdown tables of medians — with the min–max of the runs for the main
//! figures — followed by the ratios of statecast to the relay and to NATS.
//! W2 lines (`statecast-bench durable`) get their own table, with the ratios
//! of statecast to Redis (`appendfsync always` and `everysec`) and JetStream
//! and to issue 4's targets, and so do the `fio` lines `scripts/bench-peers`
//! records next to them (the disk's figures in the same run). Issue 5's
//! lines follow: the W2 read-back against the peers', the upsert cost (SOW
//! topic vs journal-only topic), W3 restarts (`restart` lines), the
//! server's memory per stored payload byte, and SOW query scans
//! (`sow-query` lines).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Read as _;
use std::path::PathBuf;

use anyhow::Context as _;

use crate::report::{
    DURABLE_WORKLOAD, DurableReport, RESTART_WORKLOAD, Report, RestartReport, SOW_QUERY_WORKLOAD,
    SowQueryReport,
};

/// `statecast-bench table` options.
#[derive(Debug, clap::Args)]
pub struct TableArgs {
    /// Files of JSON lines (stdin when none). Lines that are not run reports
    /// are skipped.
    files: Vec<PathBuf>,
}

/// Prints the tables.
///
/// # Errors
/// When a file cannot be read.
pub fn main(args: &TableArgs) -> anyhow::Result<()> {
    let mut text = String::new();
    if args.files.is_empty() {
        std::io::stdin().read_to_string(&mut text)?;
    } else {
        for file in &args.files {
            text.push_str(
                &std::fs::read_to_string(file)
                    .with_context(|| format!("reading {}", file.display()))?,
            );
            text.push('\n');
        }
    }
    let mut reports: Vec<Report> = Vec::new();
    let mut durable: Vec<DurableReport> = Vec::new();
    let mut fio: Vec<FioLine> = Vec::new();
    let mut restarts: Vec<RestartReport> = Vec::new();
    let mut queries: Vec<SowQueryReport> = Vec::new();
    for line in text.lines() {
        let Ok(value) = serde_json::from_str::<serde_json::Value>(line.trim()) else {
            continue;
        };
        let workload = value.get("workload").and_then(|w| w.as_str());
        if workload == Some(DURABLE_WORKLOAD) {
            durable.extend(serde_json::from_value(value).ok());
        } else if workload == Some(RESTART_WORKLOAD) {
            restarts.extend(serde_json::from_value(value).ok());
        } else if workload == Some(SOW_QUERY_WORKLOAD) {
            queries.extend(serde_json::from_value(value).ok());
        } else if value.get("fio").is_some() {
            fio.extend(serde_json::from_value(value).ok());
        } else {
            reports.extend(serde_json::from_value(value).ok());
        }
    }
    print!("{}", render(&reports));
    print!("{}", render_durable(&durable, &fio));
    print!("{}", render_sow(&durable, &restarts, &queries));
    Ok(())
}

/// One `fio` job's figures, as `scripts/bench-peers` records them.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct FioLine {
    /// The job: `seq-1m` (1 MiB writes) or `sync-4k` (4 KiB writes), each
    /// write followed by an fdatasync.
    pub fio: String,
    /// When in the run (`before`, `after` the W2 runs).
    #[serde(default)]
    pub when: String,
    /// Write bandwidth, bytes/s.
    pub bw_bytes: f64,
    /// Writes per second (each with its fdatasync).
    pub iops: f64,
    /// fdatasync latency, µs.
    pub sync_p50_us: f64,
    /// fdatasync latency, µs.
    pub sync_p99_us: f64,
}

/// The W2 issue-4 targets for statecast's `persisted` row.
const TARGET_UPDATES_RATE: f64 = 150_000.0;
const TARGET_P99_US: f64 = 3_000.0;

/// The order W2 targets are listed in.
fn durable_rank(target: &str) -> (usize, String) {
    rank_in(
        &[
            "statecast",
            "statecast-processed",
            "statecast-sow",
            "statecast-sow-1m",
            "redis-always",
            "redis-everysec",
            "jetstream",
            "mem",
        ],
        target,
    )
}

/// `target`'s place in `order` (unknown targets last, by name).
fn rank_in(order: &[&str], target: &str) -> (usize, String) {
    let rank = order
        .iter()
        .position(|t| *t == target)
        .unwrap_or(usize::MAX);
    (rank, target.to_owned())
}

/// The W2 tables: fio, then the targets, then the ratios.
fn render_durable(reports: &[DurableReport], fio: &[FioLine]) -> String {
    let mut out = String::new();
    let mut seq_bw = f64::NAN;
    if !fio.is_empty() {
        out.push_str(
            "| fio job (fdatasync after each write) | when | runs | MB/s | writes (and fdatasyncs)/s \
             | fdatasync p50 µs | fdatasync p99 µs |\n| --- | --- | --- | --- | --- | --- | --- |\n",
        );
        let mut groups: BTreeMap<(String, String), Vec<&FioLine>> = BTreeMap::new();
        for line in fio {
            groups
                .entry((line.fio.clone(), line.when.clone()))
                .or_default()
                .push(line);
        }
        let mut seq = Vec::new();
        for ((job, when), lines) in &groups {
            let figure = |get: fn(&FioLine) -> f64| {
                let values: Vec<f64> = lines.iter().map(|l| get(l)).collect();
                Figure {
                    median: median(&values),
                    min: values.iter().copied().fold(f64::INFINITY, f64::min),
                    max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                }
            };
            if job == "seq-1m" {
                seq.extend(lines.iter().map(|l| l.bw_bytes));
            }
            let _ = writeln!(
                out,
                "| {job} | {when} | {} | {} | {} | {} | {} |",
                lines.len(),
                figure(|l| l.bw_bytes / 1e6).with_range(|v| format!("{v:.0}")),
                figure(|l| l.iops).with_range(thousands),
                figure(|l| l.sync_p50_us).with_range(micros),
                figure(|l| l.sync_p99_us).with_range(micros),
            );
        }
        seq_bw = median(&seq);
        out.push('\n');
    }
    if reports.is_empty() {
        return out;
    }
    let mut groups: BTreeMap<(usize, String), Vec<&DurableReport>> = BTreeMap::new();
    for report in reports {
        groups
            .entry(durable_rank(&report.target))
            .or_default()
            .push(report);
    }
    out.push_str(
        "| W2 target | ack | runs | updates/s | payload MB/s | ack p50 µs | ack p99 µs | ack p99.9 µs \
         | ack max µs | client CPU % | server CPU % | client CPU µs per update \
         | server CPU µs per update | read-back ms | check |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    let mut figures: BTreeMap<String, (f64, f64, f64)> = BTreeMap::new();
    // statecast's window and mean ack latency (median over runs), for the
    // Little's-law bound.
    let mut statecast_window_mean = (f64::NAN, f64::NAN);
    for ((_, target), all) in &groups {
        let clean: Vec<&DurableReport> = all
            .iter()
            .copied()
            .filter(|r| r.errors.is_empty())
            .collect();
        let runs = if clean.is_empty() { all.clone() } else { clean };
        let figure = |get: &dyn Fn(&DurableReport) -> Option<f64>| {
            let values: Vec<f64> = runs.iter().filter_map(|r| get(r)).collect();
            Figure {
                median: median(&values),
                min: values.iter().copied().fold(f64::INFINITY, f64::min),
                max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            }
        };
        let per_update = |r: &DurableReport, cpu: Option<f64>| {
            let cpu = cpu?;
            (r.updates_rate > 0.0).then(|| cpu / 100.0 / r.updates_rate * 1e6)
        };
        let rate = figure(&|r| Some(r.updates_rate));
        let p99 = figure(&|r| Some(r.ack_latency_us.p99));
        let mb = figure(&|r| Some(r.payload_mb_per_sec));
        figures.insert(target.clone(), (rate.median, p99.median, mb.median));
        if target == "statecast" {
            statecast_window_mean = (
                figure(&|r| Some(r.window as f64)).median,
                figure(&|r| Some(r.ack_latency_us.mean)).median,
            );
        }
        let checks: Vec<&str> = runs.iter().filter_map(|r| r.check.as_deref()).collect();
        let check = match checks.first() {
            Some(first) if checks.iter().all(|c| c == first) => (*first).to_owned(),
            Some(_) => "varies (see the raw lines)".to_owned(),
            None => "–".to_owned(),
        };
        let count = if runs.len() == all.len() {
            all.len().to_string()
        } else {
            format!("{} of {}", runs.len(), all.len())
        };
        let _ = writeln!(
            out,
            "| {target} | {} | {count} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {check} |",
            runs.first().and_then(|r| r.ack.as_deref()).unwrap_or("–"),
            rate.with_range(thousands),
            mb.with_range(|v| format!("{v:.0}")),
            figure(&|r| Some(r.ack_latency_us.p50)).with_range(micros),
            p99.with_range(micros),
            figure(&|r| Some(r.ack_latency_us.p999)).with_range(micros),
            figure(&|r| Some(r.ack_latency_us.max)).with_range(micros),
            percent(figure(&|r| r.client_cpu_pct).median),
            percent(figure(&|r| r.server_cpu_pct).median),
            figure(&|r| per_update(r, r.client_cpu_pct)).with_range(|us| format!("{us:.2}")),
            figure(&|r| per_update(r, r.server_cpu_pct)).with_range(|us| format!("{us:.2}")),
            figure(&|r| r.readback_ms).with_range(|ms| format!("{ms:.1}")),
        );
    }
    out.push('\n');
    let mut ratios = String::new();
    for (target, (rate, p99, mb)) in &figures {
        if !["statecast", "statecast-processed", "statecast-sow"].contains(&target.as_str()) {
            continue;
        }
        let peer = |name: &str| {
            figures
                .get(name)
                .copied()
                .unwrap_or((f64::NAN, f64::NAN, f64::NAN))
        };
        let mut parts = Vec::new();
        for name in ["redis-always", "redis-everysec", "jetstream"] {
            let (peer_rate, peer_p99, _) = peer(name);
            if peer_rate.is_finite() {
                parts.push(format!(
                    "vs {name}: updates/s {}, p99 {}",
                    ratio(*rate, peer_rate),
                    ratio(*p99, peer_p99)
                ));
            }
        }
        let _ = writeln!(ratios, "- {target}: {}", parts.join("; "));
        if target == "statecast" {
            let _ = writeln!(
                ratios,
                "- statecast vs issue 4's targets: updates/s {} of 150,000 ({}), p99 {} µs vs ≤ 3,000 µs ({}){}",
                thousands(*rate),
                if *rate >= TARGET_UPDATES_RATE {
                    "met"
                } else {
                    "not met"
                },
                micros(*p99),
                if *p99 <= TARGET_P99_US {
                    "met"
                } else {
                    "not met"
                },
                if seq_bw.is_finite() {
                    format!(
                        "; payload {mb:.0} MB/s = {} of fio's sequential 1 MiB + fdatasync bandwidth",
                        ratio(*mb, seq_bw / 1e6)
                    )
                } else {
                    String::new()
                },
            );
            let (window, mean) = statecast_window_mean;
            if window.is_finite() && *rate > 0.0 {
                let _ = writeln!(
                    ratios,
                    "- Little's law, window of {} kept full: mean ack latency = window ÷ rate = {} µs \
                     at {} updates/s (measured mean {} µs); with this window a mean (hence, with \
                     latencies this even, a p99) ≤ {} µs needs ≥ {} updates/s",
                    thousands(window),
                    micros(window / rate * 1e6),
                    thousands(*rate),
                    micros(mean),
                    thousands(TARGET_P99_US),
                    thousands(window / (TARGET_P99_US / 1e6)),
                );
            }
        }
    }
    if !ratios.is_empty() {
        out.push_str(
            "W2 ratios of medians (updates/s: higher is better; p99: lower is better):\n\n",
        );
        out.push_str(&ratios);
    }
    let errors: Vec<String> = reports
        .iter()
        .flat_map(|r| {
            r.errors
                .iter()
                .map(move |e| format!("- W2 {}: {e}", r.target))
        })
        .collect();
    if !errors.is_empty() {
        out.push_str("\nW2 errors:\n\n");
        out.push_str(&errors.join("\n"));
        out.push('\n');
    }
    out
}

/// Issue 5's targets.
const TARGET_READBACK_SPEEDUP: f64 = 3.0;
const TARGET_RESTART_MS: f64 = 2_000.0;
const TARGET_MEMORY_RATIO: f64 = 1.3;
const TARGET_SCAN_PER_CORE: f64 = 3_000_000.0;

/// A figure over values.
fn figure_of(values: &[f64]) -> Figure {
    let values: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    Figure {
        median: median(&values),
        min: values.iter().copied().fold(f64::INFINITY, f64::min),
        max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    }
}

fn met(yes: bool) -> &'static str {
    if yes { "met" } else { "not met" }
}

fn one_decimal(value: f64) -> String {
    if value.is_finite() {
        format!("{value:.1}")
    } else {
        "–".into()
    }
}

/// Resident memory growth over a W2 run ÷ the payload bytes the server
/// holds; the same without the journal's mappings (its segments are
/// prefaulted ahead of need, 128 MiB each by default, whatever the store
/// holds); the growth by kind of mapping, in MiB.
fn memory_growth(report: &DurableReport) -> Option<(f64, f64, BTreeMap<String, f64>)> {
    let before = report.server_rss_before.as_ref()?;
    let after = report.server_rss_after.as_ref()?;
    let stored = report.stored_payload_bytes.filter(|&b| b > 0)? as f64;
    let growth = (after.vm_rss_kib as f64 - before.vm_rss_kib as f64) * 1024.0;
    let mut parts = BTreeMap::new();
    for kind in ["anon", "sow", "journal", "other"] {
        let kib = |rss: &crate::rss::Rss| rss.by_mapping.get(kind).copied().unwrap_or(0) as f64;
        parts.insert(kind.to_owned(), (kib(after) - kib(before)) / 1024.0);
    }
    let journal = parts.get("journal").copied().unwrap_or(0.0) * 1_048_576.0;
    Some((growth / stored, (growth - journal) / stored, parts))
}

/// Issue 5's figures: the W2 read-back against the peers', the upsert cost,
/// the server's memory per payload byte, W3 restarts and SOW query scans.
fn render_sow(
    durable: &[DurableReport],
    restarts: &[RestartReport],
    queries: &[SowQueryReport],
) -> String {
    let mut out = String::new();
    let clean = |target: &str| -> Vec<&DurableReport> {
        durable
            .iter()
            .filter(|r| r.target == target && r.errors.is_empty())
            .collect()
    };
    // The read-back.
    let readback = |target: &str| {
        figure_of(
            &clean(target)
                .iter()
                .filter_map(|r| r.readback_ms)
                .collect::<Vec<_>>(),
        )
    };
    let ours = readback("statecast-sow");
    if ours.median.is_finite() {
        out.push_str(
            "Issue 5, W2 read-back of the whole state on a fresh connection (medians):\n\n",
        );
        let records = clean("statecast-sow")
            .iter()
            .find_map(|r| r.readback_records)
            .unwrap_or(0);
        let mut parts = Vec::new();
        for peer in ["redis-always", "redis-everysec", "jetstream"] {
            let theirs = readback(peer);
            if theirs.median.is_finite() {
                parts.push(format!(
                    "{peer} {} ms ({} faster)",
                    theirs.with_range(one_decimal),
                    ratio(theirs.median, ours.median)
                ));
            }
        }
        let _ = writeln!(
            out,
            "- statecast-sow `sow` {} ms for {} records; {}",
            ours.with_range(one_decimal),
            thousands(records as f64),
            parts.join(", ")
        );
        let redis = readback("redis-everysec").median;
        let jetstream = readback("jetstream").median;
        if redis.is_finite() && jetstream.is_finite() {
            let (a, b) = (redis / ours.median, jetstream / ours.median);
            let _ = writeln!(
                out,
                "- issue 5, ≥ 3× faster than Redis HGETALL (`everysec`) and the JetStream KV watch: {} ({a:.2}× and {b:.2}×)",
                met(a >= TARGET_READBACK_SPEEDUP && b >= TARGET_READBACK_SPEEDUP)
            );
        }
        out.push('\n');
    }
    // The upsert cost: the same workload to a SOW topic and to a journal-only
    // topic, run by run (interleaved: run i of each).
    let sow_runs = clean("statecast-sow");
    let journal_runs = clean("statecast");
    if !sow_runs.is_empty() && !journal_runs.is_empty() {
        let rates =
            |runs: &[&DurableReport]| -> Vec<f64> { runs.iter().map(|r| r.updates_rate).collect() };
        let cpu = |runs: &[&DurableReport]| -> f64 {
            median(
                &runs
                    .iter()
                    .filter_map(|r| {
                        let pct = r.server_cpu_pct?;
                        (r.updates_rate > 0.0).then(|| pct / 100.0 / r.updates_rate * 1e6)
                    })
                    .collect::<Vec<_>>(),
            )
        };
        let (sow, journal) = (
            figure_of(&rates(&sow_runs)),
            figure_of(&rates(&journal_runs)),
        );
        let per_run: Vec<String> = sow_runs
            .iter()
            .zip(&journal_runs)
            .map(|(s, j)| ratio(s.updates_rate, j.updates_rate))
            .collect();
        let _ = writeln!(
            out,
            "Issue 5, upsert cost: persisted W2 to the SOW topic {} updates/s vs {} to a journal-only topic = {} (per run: {}); server CPU {} vs {} µs per update\n",
            sow.with_range(thousands),
            journal.with_range(thousands),
            ratio(sow.median, journal.median),
            per_run.join(", "),
            format_cpu(cpu(&sow_runs)),
            format_cpu(cpu(&journal_runs)),
        );
    }
    // Memory.
    let mut memory = String::new();
    let mut targets: Vec<&str> = durable.iter().map(|r| r.target.as_str()).collect();
    targets.sort_by_key(|t| durable_rank(t));
    targets.dedup();
    for target in targets {
        let growths: Vec<(f64, f64, BTreeMap<String, f64>)> = clean(target)
            .iter()
            .filter_map(|r| memory_growth(r))
            .collect();
        if growths.is_empty() {
            continue;
        }
        let ratio_figure = figure_of(&growths.iter().map(|g| g.0).collect::<Vec<_>>());
        let stored = median(
            &clean(target)
                .iter()
                .filter_map(|r| r.stored_payload_bytes.map(|b| b as f64 / 1_048_576.0))
                .collect::<Vec<_>>(),
        );
        let parts: Vec<String> = ["anon", "sow", "journal", "other"]
            .iter()
            .map(|kind| {
                let mib = median(
                    &growths
                        .iter()
                        .filter_map(|g| g.2.get(*kind).copied())
                        .collect::<Vec<_>>(),
                );
                format!("{kind} {mib:+.0}")
            })
            .collect();
        let without_journal = figure_of(&growths.iter().map(|g| g.1).collect::<Vec<_>>());
        let _ = writeln!(
            memory,
            "- {target}: VmRSS growth ÷ stored payload = {}×, without the journal's mapped segments {}× ({stored:.0} MiB stored; growth by mapping, MiB: {}){}",
            ratio_figure.with_range(|v| format!("{v:.2}")),
            without_journal.with_range(|v| format!("{v:.2}")),
            parts.join(", "),
            if target.starts_with("statecast-sow") {
                format!(
                    "; issue 5's ≤ 1.3×: {}",
                    met(ratio_figure.median <= TARGET_MEMORY_RATIO)
                )
            } else {
                String::new()
            }
        );
    }
    if !memory.is_empty() {
        out.push_str("Server memory (medians of runs):\n\n");
        out.push_str(&memory);
        out.push('\n');
    }
    // Restarts.
    if !restarts.is_empty() {
        out.push_str(
            "| W3 target | stopped by | read-back | runs | keys | ready line ms | connected ms \
             | state read back ms | its query ms | attempts | RSS MiB | check |\n\
             | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
        );
        // (rank and target, stopped by, read-back)
        type Group = ((usize, String), String, String);
        let mut groups: BTreeMap<Group, Vec<&RestartReport>> = BTreeMap::new();
        for report in restarts {
            groups
                .entry((
                    durable_rank(&report.target),
                    report.stopped_by.clone(),
                    report.read_back.clone(),
                ))
                .or_default()
                .push(report);
        }
        let mut verdicts = Vec::new();
        for (((_, target), stopped_by, read_back), all) in &groups {
            let runs: Vec<&RestartReport> = all
                .iter()
                .copied()
                .filter(|r| r.errors.is_empty())
                .collect();
            let fig = |get: fn(&RestartReport) -> Option<f64>| {
                figure_of(&runs.iter().filter_map(|r| get(r)).collect::<Vec<_>>())
            };
            let state = fig(|r| r.state_ms);
            let checks: Vec<&str> = runs.iter().filter_map(|r| r.check.as_deref()).collect();
            let _ = writeln!(
                out,
                "| {target} | {stopped_by} | {read_back} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                if runs.len() == all.len() {
                    all.len().to_string()
                } else {
                    format!("{} of {}", runs.len(), all.len())
                },
                thousands(runs.first().map_or(f64::NAN, |r| r.keys as f64)),
                fig(|r| r.ready_ms).with_range(one_decimal),
                fig(|r| r.connected_ms).with_range(one_decimal),
                state.with_range(one_decimal),
                fig(|r| r.readback_ms).with_range(one_decimal),
                fig(|r| Some(r.attempts as f64)).with_range(thousands),
                fig(|r| r.server_rss.as_ref().map(|m| m.vm_rss_kib as f64 / 1024.0))
                    .with_range(thousands),
                checks.first().copied().unwrap_or("–"),
            );
            if target.starts_with("statecast") && runs.first().is_some_and(|r| r.keys >= 1_000_000)
            {
                verdicts.push(format!(
                    "- issue 5, restart of {} records ≤ 2 s after {stopped_by}: {} ({} ms)",
                    thousands(runs[0].keys as f64),
                    met(state.median <= TARGET_RESTART_MS),
                    one_decimal(state.median)
                ));
            }
        }
        out.push('\n');
        for verdict in verdicts {
            let _ = writeln!(out, "{verdict}");
        }
        let errors: Vec<String> = restarts
            .iter()
            .flat_map(|r| {
                r.errors
                    .iter()
                    .map(move |e| format!("- W3 {}: {e}", r.target))
            })
            .collect();
        if !errors.is_empty() {
            let _ = writeln!(out, "\nW3 errors:\n\n{}", errors.join("\n"));
        }
        out.push('\n');
    }
    // Queries.
    if !queries.is_empty() {
        out.push_str(
            "| SOW query | count only | records | matched | first query ms | queries | query ms \
             | records scanned/s | server CPU µs per record | per core (records/CPU s) |\n\
             | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
        );
        let mut groups: BTreeMap<(String, String, bool, u64), Vec<&SowQueryReport>> =
            BTreeMap::new();
        for query in queries {
            groups
                .entry((
                    query.label.clone().unwrap_or_else(|| query.topic.clone()),
                    query.filter.clone().unwrap_or_default(),
                    query.count_only,
                    query.topic_records,
                ))
                .or_default()
                .push(query);
        }
        let mut verdicts = Vec::new();
        for ((label, filter, count_only, records), all) in &groups {
            let times: Vec<f64> = all
                .iter()
                .flat_map(|q| q.query_ms.iter().copied())
                .collect();
            let time = figure_of(&times);
            let cpu = figure_of(
                &all.iter()
                    .filter_map(|q| q.server_cpu_us_per_record)
                    .collect::<Vec<_>>(),
            );
            let first = figure_of(
                &all.iter()
                    .flat_map(|q| q.first_query_ms.first().copied())
                    .collect::<Vec<_>>(),
            );
            let rate = *records as f64 / (time.median / 1e3);
            let per_core = 1e6 / cpu.median;
            let _ = writeln!(
                out,
                "| {label}: `{filter}` | {count_only} | {} | {} | {} | {} | {} | {} | {} | {} |",
                thousands(*records as f64),
                thousands(all.first().map_or(f64::NAN, |q| q.matched as f64)),
                first.with_range(one_decimal),
                times.len(),
                time.with_range(one_decimal),
                thousands(rate),
                cpu.with_range(|v| format!("{v:.3}")),
                thousands(per_core),
            );
            verdicts.push(format!(
                "- issue 5, a full scan at ≥ 3,000,000 records/s per core ({label}, count only {count_only}): {} ({} per CPU second, {} per wall second)",
                met(per_core >= TARGET_SCAN_PER_CORE),
                thousands(per_core),
                thousands(rate)
            ));
        }
        out.push('\n');
        for verdict in verdicts {
            let _ = writeln!(out, "{verdict}");
        }
        out.push('\n');
    }
    out
}

fn format_cpu(us: f64) -> String {
    if us.is_finite() {
        format!("{us:.2}")
    } else {
        "–".into()
    }
}

/// The order targets are listed in.
fn target_rank(target: &str) -> (usize, String) {
    rank_in(
        &[
            "relay",
            "statecast",
            "statecast-raw",
            "statecast-journal",
            "nats",
            "mem",
        ],
        target,
    )
}

fn workload(report: &Report) -> String {
    report.label.clone().unwrap_or_else(|| {
        let rate = report
            .rate
            .map_or_else(|| "max".to_owned(), |r| format!("{r}/s"));
        format!("{}→{} {rate}", report.publishers, report.subscribers)
    })
}

/// Median (mean of the middle two for an even count).
fn median(values: &[f64]) -> f64 {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        f64::midpoint(sorted[mid - 1], sorted[mid])
    }
}

/// A figure over the runs of one group.
#[derive(Debug, Clone, Copy)]
struct Figure {
    median: f64,
    min: f64,
    max: f64,
}

impl Figure {
    fn of(runs: &[&Report], get: impl Fn(&Report) -> Option<f64>) -> Self {
        let values: Vec<f64> = runs.iter().filter_map(|r| get(r)).collect();
        Self {
            median: median(&values),
            min: values.iter().copied().fold(f64::INFINITY, f64::min),
            max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        }
    }

    /// The median with the range when the runs differ by more than 5 %.
    fn with_range(self, fmt: fn(f64) -> String) -> String {
        if self.median.is_nan() {
            return "–".into();
        }
        if self.max > self.min * 1.05 && self.min.is_finite() {
            format!("{} ({}–{})", fmt(self.median), fmt(self.min), fmt(self.max))
        } else {
            fmt(self.median)
        }
    }
}

fn thousands(value: f64) -> String {
    if !value.is_finite() {
        return "–".into();
    }
    let digits = format!("{:.0}", value.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if value < 0.0 { format!("-{out}") } else { out }
}

fn micros(value: f64) -> String {
    if !value.is_finite() {
        "–".into()
    } else if value >= 100.0 {
        thousands(value)
    } else {
        format!("{value:.1}")
    }
}

fn percent(value: f64) -> String {
    if value.is_finite() {
        format!("{value:.0}")
    } else {
        "–".into()
    }
}

fn ratio(numerator: f64, denominator: f64) -> String {
    if numerator.is_finite() && denominator.is_finite() && denominator > 0.0 {
        format!("{:.2}×", numerator / denominator)
    } else {
        "–".into()
    }
}

/// The runs figures are taken from: those without errors, unless every run
/// had errors.
fn usable<'a>(runs: &[&'a Report]) -> Vec<&'a Report> {
    let clean: Vec<&Report> = runs
        .iter()
        .copied()
        .filter(|r| r.errors.is_empty())
        .collect();
    if clean.is_empty() {
        runs.to_vec()
    } else {
        clean
    }
}

/// "3", or "2 of 3" when runs with errors were left out of the figures.
fn run_count(used: &[&Report], all: &[&Report]) -> String {
    if used.len() == all.len() {
        all.len().to_string()
    } else {
        format!("{} of {}", used.len(), all.len())
    }
}

/// CPU microseconds per delivery, from a CPU percentage over the run.
fn per_delivery_us(report: &Report, cpu_pct: Option<f64>) -> Option<f64> {
    let cpu = cpu_pct?;
    (report.deliveries_rate > 0.0).then(|| cpu / 100.0 / report.deliveries_rate * 1e6)
}

/// The label suffix of a workload run with `--filtered-subscriptions`:
/// `fanout-1+filtered-10000` is compared with `fanout-1+filtered-0` (the
/// same workload without them; a label of its own, so that it is not mixed
/// with W1's `fanout-1` when both run).
const FILTERED_SUFFIX: &str = "+filtered-";

/// For a workload `<prefix>+filtered-N`, the throughput of each target
/// relative to `<prefix>+filtered-0` (issue 3: ≥ 50 % with 10,000 filtered
/// subscriptions): the ratio of the medians, and the ratio within each run
/// (run i of one against run i of the other, the same server start), which
/// the other load on a shared machine disturbs less.
fn filtered_ratios(
    ratios: &mut String,
    key: &str,
    groups: &BTreeMap<String, BTreeMap<(usize, String), Vec<&Report>>>,
) {
    let Some((prefix, count)) = key.split_once(FILTERED_SUFFIX) else {
        return;
    };
    if count == "0" {
        return;
    }
    let base = format!("{prefix}{FILTERED_SUFFIX}0");
    let Some(base_groups) = groups.get(&base) else {
        return;
    };
    for (rank, filtered_all) in &groups[key] {
        let Some(base_all) = base_groups.get(rank) else {
            continue;
        };
        let (filtered_runs, base_runs) = (usable(filtered_all), usable(base_all));
        let delivered = |runs: &[&Report]| Figure::of(runs, |r| Some(r.delivered_rate_min)).median;
        let published = |runs: &[&Report]| Figure::of(runs, |r| Some(r.publish_rate)).median;
        let server_us =
            |runs: &[&Report]| Figure::of(runs, |r| per_delivery_us(r, r.server_cpu_pct)).median;
        let per_run: Vec<String> = filtered_all
            .iter()
            .zip(base_all.iter())
            .filter(|(f, b)| f.errors.is_empty() && b.errors.is_empty())
            .map(|(f, b)| ratio(f.delivered_rate_min, b.delivered_rate_min))
            .collect();
        let _ = writeln!(
            ratios,
            "- {key} vs {base}, {}: delivered per subscriber {} vs {} = {} (per run: {}); \
             publish {} vs {} = {}; server CPU µs per delivery {} vs {}",
            rank.1,
            thousands(delivered(&filtered_runs)),
            thousands(delivered(&base_runs)),
            ratio(delivered(&filtered_runs), delivered(&base_runs)),
            if per_run.is_empty() {
                "–".to_owned()
            } else {
                per_run.join(", ")
            },
            thousands(published(&filtered_runs)),
            thousands(published(&base_runs)),
            ratio(published(&filtered_runs), published(&base_runs)),
            format_us(server_us(&filtered_runs)),
            format_us(server_us(&base_runs)),
        );
    }
}

fn format_us(value: f64) -> String {
    if value.is_finite() {
        format!("{value:.2}")
    } else {
        "–".into()
    }
}

/// The tables for `reports`.
fn render(reports: &[Report]) -> String {
    // workload → target → runs, workloads in first-seen order.
    let mut order: Vec<String> = Vec::new();
    let mut groups: BTreeMap<String, BTreeMap<(usize, String), Vec<&Report>>> = BTreeMap::new();
    for report in reports {
        let key = workload(report);
        if !order.contains(&key) {
            order.push(key.clone());
        }
        groups
            .entry(key)
            .or_default()
            .entry(target_rank(&report.target))
            .or_default()
            .push(report);
    }
    let mut out = String::new();
    let throughput: Vec<&String> = order
        .iter()
        .filter(|w| groups[*w].values().flatten().all(|r| r.rate.is_none()))
        .collect();
    let latency: Vec<&String> = order
        .iter()
        .filter(|w| groups[*w].values().flatten().any(|r| r.rate.is_some()))
        .collect();
    let mut ratios = String::new();

    if !throughput.is_empty() {
        out.push_str(
            "| workload | target | runs | publish msgs/s | delivered msgs/s per subscriber (slowest) \
             | deliveries/s (all subscribers) | lost | client CPU % | server CPU % \
             | client CPU µs per delivery | server CPU µs per delivery |\n\
             | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
        );
        for key in &throughput {
            let mut delivered: BTreeMap<String, f64> = BTreeMap::new();
            for ((_, target), all) in &groups[*key] {
                let runs = &usable(all);
                let rate = Figure::of(runs, |r| Some(r.delivered_rate_min));
                delivered.insert(target.clone(), rate.median);
                let _ = writeln!(
                    out,
                    "| {key} | {target} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    run_count(runs, all),
                    Figure::of(runs, |r| Some(r.publish_rate)).with_range(thousands),
                    rate.with_range(thousands),
                    thousands(Figure::of(runs, |r| Some(r.deliveries_rate)).median),
                    thousands(Figure::of(all, |r| Some(r.lost as f64)).max),
                    percent(Figure::of(runs, |r| r.client_cpu_pct).median),
                    percent(Figure::of(runs, |r| r.server_cpu_pct).median),
                    Figure::of(runs, |r| per_delivery_us(r, r.client_cpu_pct))
                        .with_range(|us| format!("{us:.2}")),
                    Figure::of(runs, |r| per_delivery_us(r, r.server_cpu_pct))
                        .with_range(|us| format!("{us:.2}")),
                );
            }
            if let Some(statecast) = delivered.get("statecast")
                && (delivered.contains_key("relay") || delivered.contains_key("nats"))
            {
                let _ = writeln!(
                    ratios,
                    "- {key}: delivered per subscriber, statecast/relay {}, statecast/nats {}",
                    ratio(*statecast, *delivered.get("relay").unwrap_or(&f64::NAN)),
                    ratio(*statecast, *delivered.get("nats").unwrap_or(&f64::NAN)),
                );
            }
        }
        for key in &throughput {
            filtered_ratios(&mut ratios, key, &groups);
        }
        out.push('\n');
    }

    if !latency.is_empty() {
        out.push_str(
            "| workload | target | runs | p50 µs | p99 µs | p99.9 µs | max µs | delivered msgs/s (slowest) \
             | lost | server CPU % |\n\
             | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
        );
        for key in &latency {
            let mut figures: BTreeMap<String, (f64, f64)> = BTreeMap::new();
            for ((_, target), all) in &groups[*key] {
                let runs = &usable(all);
                let p50 = Figure::of(runs, |r| Some(r.latency_us.p50));
                let p99 = Figure::of(runs, |r| Some(r.latency_us.p99));
                figures.insert(target.clone(), (p50.median, p99.median));
                let _ = writeln!(
                    out,
                    "| {key} | {target} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    run_count(runs, all),
                    p50.with_range(micros),
                    p99.with_range(micros),
                    Figure::of(runs, |r| Some(r.latency_us.p999)).with_range(micros),
                    Figure::of(runs, |r| Some(r.latency_us.max)).with_range(micros),
                    thousands(Figure::of(runs, |r| Some(r.delivered_rate_min)).median),
                    thousands(Figure::of(all, |r| Some(r.lost as f64)).max),
                    percent(Figure::of(runs, |r| r.server_cpu_pct).median),
                );
            }
            if let Some((p50, p99)) = figures.get("statecast") {
                let other = |t: &str| figures.get(t).copied().unwrap_or((f64::NAN, f64::NAN));
                let (relay50, relay99) = other("relay");
                let (nats50, nats99) = other("nats");
                let _ = writeln!(
                    ratios,
                    "- {key}: p50 statecast/relay {}, statecast/nats {}; p99 statecast/relay {}, statecast/nats {}",
                    ratio(*p50, relay50),
                    ratio(*p50, nats50),
                    ratio(*p99, relay99),
                    ratio(*p99, nats99),
                );
            }
        }
        out.push('\n');
    }
    if !reports.is_empty() {
        out.push_str(
            "Figures are medians (min–max when the runs differ by more than 5 %) over the runs \
             without errors (\"2 of 3\": a run had errors, listed below); \"lost\" is the worst run.\n\n",
        );
    }
    if !ratios.is_empty() {
        out.push_str(
            "Ratios of medians (throughput: higher is better; latency: lower is better):\n\n",
        );
        out.push_str(&ratios);
    }
    let errors: Vec<String> = reports
        .iter()
        .flat_map(|r| {
            r.errors
                .iter()
                .map(move |e| format!("- {} {}: {e}", workload(r), r.target))
        })
        .collect();
    if !errors.is_empty() {
        out.push_str("\nErrors:\n\n");
        out.push_str(&errors.join("\n"));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Latency;

    fn report(target: &str, label: &str, rate: Option<f64>, delivered: f64, p50: f64) -> Report {
        Report {
            target: target.into(),
            label: Some(label.into()),
            publishers: 1,
            subscribers: 4,
            size: 1024,
            rate,
            published: 100,
            publish_secs: 1.0,
            publish_rate: 100.0,
            delivered_rate_min: delivered,
            delivered_rate_mean: delivered,
            deliveries_rate: delivered * 4.0,
            lost: 0,
            out_of_order: 0,
            latency_us: Latency {
                count: 100,
                p50,
                p99: p50 * 2.0,
                ..Latency::default()
            },
            subscriber_detail: Vec::new(),
            client_cpu_pct: Some(99.0),
            server_cpu_pct: None,
            wall_secs: 1.0,
            filtered_subscriptions: 0,
            filtered_deliveries: 0,
            errors: Vec::new(),
        }
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
        assert_eq!(thousands(1_234_567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
    }

    #[test]
    fn runs_with_errors_are_left_out_of_the_figures() {
        let mut failed = report("statecast", "latency-1", Some(20_000.0), 0.0, 0.0);
        failed.errors.push("subscriber 0: slow client".into());
        failed.lost = 100;
        let reports = vec![
            report("statecast", "latency-1", Some(20_000.0), 20_000.0, 60.0),
            report("statecast", "latency-1", Some(20_000.0), 20_000.0, 70.0),
            failed,
        ];
        let table = render(&reports);
        assert!(
            table.contains("| latency-1 | statecast | 2 of 3 | 65.0 (60.0–70.0) |"),
            "{table}"
        );
        assert!(table.contains("| 20,000 | 100 |"), "{table}");
        assert!(
            table.contains("- latency-1 statecast: subscriber 0: slow client"),
            "{table}"
        );
    }

    #[test]
    fn the_table_has_medians_and_ratios() {
        let reports = vec![
            report("relay", "fanout-4", None, 500_000.0, 0.0),
            report("statecast", "fanout-4", None, 300_000.0, 0.0),
            report("nats", "fanout-4", None, 200_000.0, 0.0),
            report("statecast", "fanout-4", None, 400_000.0, 0.0),
            report("statecast", "fanout-4", None, 350_000.0, 0.0),
            report("statecast", "latency-4", Some(20_000.0), 20_000.0, 60.0),
            report("nats", "latency-4", Some(20_000.0), 20_000.0, 80.0),
        ];
        let table = render(&reports);
        assert!(
            table.contains("| fanout-4 | statecast | 3 | 100 | 350,000 (300,000–400,000) |"),
            "{table}"
        );
        assert!(
            table.contains("statecast/relay 0.70×, statecast/nats 1.75×"),
            "{table}"
        );
        assert!(
            table.contains("p50 statecast/relay –, statecast/nats 0.75×"),
            "{table}"
        );
        let relay = table.find("| fanout-4 | relay").unwrap();
        let nats = table.find("| fanout-4 | nats").unwrap();
        assert!(relay < nats);
    }

    #[test]
    fn filtered_workloads_are_compared_with_their_base() {
        let reports = vec![
            report("statecast-raw", "fanout-1+filtered-0", None, 400_000.0, 0.0),
            report(
                "statecast-raw",
                "fanout-1+filtered-10000",
                None,
                300_000.0,
                0.0,
            ),
            report("statecast-raw", "fanout-1+filtered-0", None, 500_000.0, 0.0),
            report(
                "statecast-raw",
                "fanout-1+filtered-10000",
                None,
                250_000.0,
                0.0,
            ),
        ];
        let table = render(&reports);
        assert!(
            table.contains(
                "- fanout-1+filtered-10000 vs fanout-1+filtered-0, statecast-raw: delivered per subscriber \
                 275,000 vs 450,000 = 0.61× (per run: 0.75×, 0.50×)"
            ),
            "{table}"
        );
    }

    #[test]
    fn the_durable_table_states_little_s_law_bound() {
        let line = serde_json::json!({
            "workload": DURABLE_WORKLOAD, "target": "statecast", "ack": "persisted",
            "size": 1024, "keys": 10000, "window": 1000, "sent": 200000, "acked": 200000,
            "secs": 2.0, "updates_rate": 100000.0, "payload_mb_per_sec": 102.4,
            "ack_latency_us": {"count": 200000, "mean": 9950.0, "p50": 9900.0, "p90": 11000.0,
                "p99": 12000.0, "p999": 13000.0, "max": 14000.0},
            "client_cpu_pct": 20.0, "server_cpu_pct": 50.0, "wall_secs": 2.0, "errors": []
        });
        let report: DurableReport = serde_json::from_value(line).expect("a W2 line");
        let table = render_durable(&[report], &[]);
        assert!(
            table.contains(
                "Little's law, window of 1,000 kept full: mean ack latency = window ÷ rate = \
                 10,000 µs at 100,000 updates/s (measured mean 9,950 µs)"
            ),
            "{table}"
        );
        assert!(table.contains("needs ≥ 333,333 updates/s"), "{table}");
    }

    fn w2_line(target: &str, rate: f64, readback_ms: Option<f64>) -> DurableReport {
        serde_json::from_value(serde_json::json!({
            "workload": DURABLE_WORKLOAD, "target": target, "size": 1024, "keys": 10000,
            "window": 1000, "sent": 200000, "acked": 200000, "secs": 2.0,
            "updates_rate": rate, "payload_mb_per_sec": 100.0,
            "ack_latency_us": {"count": 1, "mean": 1.0, "p50": 1.0, "p90": 1.0, "p99": 1.0,
                "p999": 1.0, "max": 1.0},
            "readback_ms": readback_ms, "stored_payload_bytes": 10_240_000,
            "server_rss_before": {"vm_rss_kib": 1000, "rss_anon_kib": 0, "rss_file_kib": 0,
                "rss_shmem_kib": 0, "by_mapping": {"sow": 0}},
            "server_rss_after": {"vm_rss_kib": 13000, "rss_anon_kib": 0, "rss_file_kib": 0,
                "rss_shmem_kib": 0, "by_mapping": {"sow": 10240}},
            "client_cpu_pct": 20.0, "server_cpu_pct": 50.0, "wall_secs": 2.0, "errors": []
        }))
        .expect("a W2 line")
    }

    #[test]
    fn issue_5_figures_are_compared_with_the_peers_and_the_targets() {
        let durable = vec![
            w2_line("statecast-sow", 100_000.0, Some(10.0)),
            w2_line("statecast", 200_000.0, None),
            w2_line("redis-everysec", 90_000.0, Some(40.0)),
            w2_line("jetstream", 50_000.0, Some(60.0)),
        ];
        let restart: RestartReport = serde_json::from_value(serde_json::json!({
            "workload": RESTART_WORKLOAD, "target": "statecast-sow-1m", "stopped_by": "sigkill",
            "keys": 1_000_000, "read_back": "count", "ready_ms": 900.0, "connected_ms": 901.0,
            "state_ms": 1_500.0, "readback_ms": 5.0, "attempts": 1, "server_pid": 1,
            "stop": "none", "errors": []
        }))
        .expect("a W3 line");
        let query: SowQueryReport = serde_json::from_value(serde_json::json!({
            "workload": SOW_QUERY_WORKLOAD, "label": "sow-1m", "topic": "bench_sow",
            "filter": "/qty >= 10", "count_only": true, "topic_records": 1_000_000,
            "count_all_ms": 1.0, "matched": 160_000, "query_ms": [500.0, 400.0, 600.0],
            "scanned_per_sec": 2_000_000.0, "server_cpu_us_per_record": 0.5, "errors": []
        }))
        .expect("a sow-query line");
        let text = render_sow(&durable, &[restart], &[query]);
        assert!(
            text.contains(
                "redis-everysec 40.0 ms (4.00× faster), jetstream 60.0 ms (6.00× faster)"
            ),
            "{text}"
        );
        assert!(
            text.contains("the JetStream KV watch: met (4.00× and 6.00×)"),
            "{text}"
        );
        assert!(text.contains("= 0.50× (per run: 0.50×)"), "{text}");
        assert!(
            text.contains("- statecast-sow: VmRSS growth ÷ stored payload = 1.20×, without the journal's mapped segments 1.20× (10 MiB stored; growth by mapping, MiB: anon +0, sow +10"),
            "{text}"
        );
        assert!(text.contains("issue 5's ≤ 1.3×: met"), "{text}");
        assert!(
            text.contains("restart of 1,000,000 records ≤ 2 s after sigkill: met (1500.0 ms)"),
            "{text}"
        );
        assert!(
            text.contains("| 500.0 (400.0–600.0) | 2,000,000 | 0.500 | 2,000,000 |"),
            "{text}"
        );
        assert!(
            text.contains("per core (sow-1m, count only true): not met"),
            "{text}"
        );
    }
}
