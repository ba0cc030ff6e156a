//! Journal benchmarks (criterion, `harness = false`), on the real file
//! system under `/work/tmp-journal` (or `STATECAST_BENCH_DIR`), so compare
//! with `fio` on the same disk:
//!
//! - `append_no_sync/1KiB`: appends of 1 KiB records into mmap segments
//!   with no sync while timed (the appender's own cost; the flusher thread
//!   only prepares spare segments);
//! - `append_group_commit/1KiB`: appends of 1 KiB records with the flusher
//!   thread in batch mode; an iteration ends when every record is persisted,
//!   so the throughput is durable bytes per second. The group-commit
//!   latency distribution (one sync cycle) is printed once;
//! - `paced`: not a criterion benchmark: appends 1 KiB records at 20,000 and
//!   100,000 per second for 5 s each and prints the distribution of the
//!   append → persisted latency of every record (what a `persisted` ack
//!   waits);
//! - `recovery_scan/1KiB`: `Journal::open` with `verify_all_on_open` over a
//!   journal of 1 KiB records in the page cache (`STATECAST_BENCH_SCAN_MB`,
//!   default 512), i.e. every record read and CRC-checked. Each open after
//!   the first is an *unclean* one (the previous open was dropped without a
//!   shutdown), so it also checks the tail and the spares for stale bytes;
//!   the throughput counts record bytes only.
//!
//! It also prints the per-record overhead measured by the dump library.
//! `cargo bench -p statecast-journal -- --test` runs each once, small.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hdrhistogram::Histogram;
use statecast_journal::{Journal, JournalConfig, NewRecord, Opened, SyncPolicy};

const RECORD_PAYLOAD: usize = 1024 - 40 - 8;
const TOPIC: &[u8] = b"bench/01";

/// Criterion runs each benchmark once, untimed, unless cargo passed
/// `--bench` (`cargo bench`); `cargo test --benches` and `cargo bench --
/// --test` are test runs, which must stay small.
fn test_mode() -> bool {
    let mut args = std::env::args();
    args.any(|arg| arg == "--test") || !std::env::args().any(|arg| arg == "--bench")
}

fn bench_dir(name: &str) -> tempfile::TempDir {
    let base = std::env::var("STATECAST_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| "/work/tmp-journal".into());
    std::fs::create_dir_all(&base).expect("bench dir");
    tempfile::Builder::new()
        .prefix(name)
        .tempdir_in(base)
        .expect("temp dir")
}

fn config() -> JournalConfig {
    JournalConfig {
        segment_bytes: 64 << 20,
        preallocate: 2,
        ..JournalConfig::default()
    }
}

fn append_no_sync(c: &mut Criterion) {
    let payload = vec![0x5a; RECORD_PAYLOAD];
    let mut group = c.benchmark_group("append_no_sync");
    group.throughput(Throughput::Bytes(1024));
    group.sample_size(10);
    group.bench_function("1KiB", |b| {
        b.iter_custom(|iters| {
            let dir = bench_dir("nosync-");
            // The flusher only prepares spares here: its interval is longer
            // than the run, so nothing is synced while the clock runs.
            let config = JournalConfig {
                sync: SyncPolicy::Interval(Duration::from_secs(3600)),
                ..config()
            };
            let Opened {
                mut appender,
                flusher,
                housekeeper,
                journal,
                ..
            } = Journal::open(dir.path(), config).expect("open");
            let flusher = flusher.spawn().expect("flusher");
            let housekeeper = housekeeper.spawn().expect("housekeeper");
            let start = Instant::now();
            for _ in 0..iters {
                appender
                    .append(NewRecord::new(TOPIC, &payload))
                    .expect("append");
            }
            let elapsed = start.elapsed();
            drop(appender);
            journal.shutdown();
            flusher.join().expect("flusher");
            housekeeper.join().expect("housekeeper");
            elapsed
        });
    });
    group.finish();
}

fn append_group_commit(c: &mut Criterion) {
    let payload = vec![0x5a; RECORD_PAYLOAD];
    let latencies = Arc::new(Mutex::new(Histogram::<u64>::new(3).expect("histogram")));
    let syncs = Arc::new(Mutex::new(0u64));
    let mut group = c.benchmark_group("append_group_commit");
    group.throughput(Throughput::Bytes(1024));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.bench_function("1KiB", |b| {
        b.iter_custom(|iters| {
            let dir = bench_dir("commit-");
            let Opened {
                mut appender,
                mut flusher,
                housekeeper,
                journal,
                ..
            } = Journal::open(dir.path(), config()).expect("open");
            let housekeeper = housekeeper.spawn().expect("housekeeper");
            let sink = latencies.clone();
            let count = syncs.clone();
            flusher.on_sync_latency(move |latency| {
                let _ = sink
                    .lock()
                    .expect("lock")
                    .record(latency.as_micros() as u64);
                *count.lock().expect("lock") += 1;
            });
            let flusher = flusher.spawn().expect("flusher");
            let start = Instant::now();
            let mut last = 0;
            for _ in 0..iters {
                last = appender
                    .append(NewRecord::new(TOPIC, &payload))
                    .expect("append")
                    .bookmark;
            }
            journal
                .wait_persisted(last, Duration::from_secs(600))
                .expect("persisted");
            let elapsed = start.elapsed();
            drop(appender);
            journal.shutdown();
            flusher.join().expect("flusher");
            housekeeper.join().expect("housekeeper");
            elapsed
        });
    });
    group.finish();
    let histogram = latencies.lock().expect("lock");
    eprintln!(
        "group commit: {} sync cycles; cycle latency µs p50 {} p90 {} p99 {} p99.9 {} max {}",
        syncs.lock().expect("lock"),
        histogram.value_at_quantile(0.5),
        histogram.value_at_quantile(0.9),
        histogram.value_at_quantile(0.99),
        histogram.value_at_quantile(0.999),
        histogram.max()
    );
}

/// Append → persisted latency of every record at a steady rate (what a
/// broker's `persisted` ack waits), measured with the persisted hook.
fn paced_latency(rate_per_second: u64, seconds: u64) {
    let payload = vec![0x5a; RECORD_PAYLOAD];
    let dir = bench_dir("paced-");
    let Opened {
        mut appender,
        flusher,
        housekeeper,
        journal,
        ..
    } = Journal::open(dir.path(), config()).expect("open");
    let records = rate_per_second * seconds;
    let appended_at: Arc<Vec<std::sync::OnceLock<Instant>>> =
        Arc::new((0..=records).map(|_| std::sync::OnceLock::new()).collect());
    let histogram = Arc::new(Mutex::new(Histogram::<u64>::new(3).expect("histogram")));
    let released = Arc::new(std::sync::atomic::AtomicU64::new(0));
    {
        let appended_at = appended_at.clone();
        let histogram = histogram.clone();
        let released = released.clone();
        journal.set_persisted_hook(Box::new(move |persisted| {
            let now = Instant::now();
            let from = released.swap(persisted, std::sync::atomic::Ordering::SeqCst) + 1;
            let mut histogram = histogram.lock().expect("lock");
            for bookmark in from..=persisted.min(records) {
                if let Some(at) = appended_at[bookmark as usize].get() {
                    let _ = histogram.record(now.duration_since(*at).as_micros() as u64);
                }
            }
        }));
    }
    let flusher = flusher.spawn().expect("flusher");
    let housekeeper = housekeeper.spawn().expect("housekeeper");
    let start = Instant::now();
    let interval = Duration::from_secs(1).as_nanos() as u64 / rate_per_second;
    for index in 1..=records {
        let due = start + Duration::from_nanos(index * interval);
        while Instant::now() < due {
            std::hint::spin_loop();
        }
        let _ = appended_at[index as usize].set(Instant::now());
        appender
            .append(NewRecord::new(TOPIC, &payload))
            .expect("append");
    }
    journal
        .wait_persisted(records, Duration::from_secs(60))
        .expect("persisted");
    drop(appender);
    journal.shutdown();
    flusher.join().expect("flusher");
    housekeeper.join().expect("housekeeper");
    let histogram = histogram.lock().expect("lock");
    eprintln!(
        "paced {rate_per_second}/s × 1 KiB for {seconds} s: append→persisted µs p50 {} p90 {} p99 {} p99.9 {} max {} ({} records)",
        histogram.value_at_quantile(0.5),
        histogram.value_at_quantile(0.9),
        histogram.value_at_quantile(0.99),
        histogram.value_at_quantile(0.999),
        histogram.max(),
        histogram.len()
    );
}

fn paced(_: &mut Criterion) {
    // Not a criterion benchmark, so honour a name filter by hand.
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with('-'))
        .collect();
    if !filters.is_empty()
        && !filters
            .iter()
            .any(|filter| "paced".contains(filter.as_str()))
    {
        return;
    }
    if test_mode() {
        paced_latency(1000, 1);
        return;
    }
    for rate in [20_000, 100_000] {
        paced_latency(rate, 5);
    }
}

fn recovery_scan(c: &mut Criterion) {
    let megabytes: u64 = if test_mode() {
        8
    } else {
        std::env::var("STATECAST_BENCH_SCAN_MB")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(512)
    };
    let records = megabytes << 10;
    let dir = bench_dir("scan-");
    {
        let Opened {
            mut appender,
            flusher,
            journal,
            ..
        } = Journal::open(dir.path(), config()).expect("open");
        let flusher = flusher.spawn().expect("flusher");
        let payload = vec![0xa5; RECORD_PAYLOAD];
        for _ in 0..records {
            appender
                .append(NewRecord::new(TOPIC, &payload))
                .expect("append");
        }
        journal
            .wait_persisted(records, Duration::from_secs(600))
            .expect("persisted");
        drop(appender);
        journal.shutdown();
        flusher.join().expect("flusher");
    }
    let stats = statecast_journal::dump::stats(dir.path()).expect("dump stats");
    eprintln!(
        "overhead: {} records, {:.2} bytes of header and padding per record (topic {} B, payload {} B)",
        stats.records,
        stats.overhead_per_record(),
        TOPIC.len(),
        RECORD_PAYLOAD
    );
    let mut group = c.benchmark_group("recovery_scan");
    group.throughput(Throughput::Bytes(stats.record_bytes));
    group.sample_size(10);
    group.bench_function("1KiB", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let config = JournalConfig {
                    verify_all_on_open: true,
                    ..config()
                };
                let start = Instant::now();
                let opened = Journal::open(dir.path(), config).expect("open");
                total += start.elapsed();
                assert_eq!(
                    opened.report.records_scanned, records,
                    "every record was read and checked"
                );
                drop(opened);
            }
            total
        });
    });
    group.finish();
}

criterion_group!(
    benches,
    append_no_sync,
    append_group_commit,
    paced,
    recovery_scan
);
criterion_main!(benches);
