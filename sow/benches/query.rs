//! SOW store benchmarks (criterion, `harness = false`):
//!
//! - `scan_5_predicates`: a full-scan query with the filter crate's
//!   5-predicate filter over 100,000 records of 1 KiB (records scanned per
//!   second), on a transient (memory) store and on a durable store (slab
//!   files on the real disk through the journal's mmap storage);
//! - `indexed_eq`: `/symbol = 'S502'` with a hash index on `/symbol`
//!   (about 80 of the 100,000 records match);
//! - `upsert`: replacing 1 KiB records by key (key computed from `/id`),
//!   transient and durable (no sync per upsert: checkpoints are the
//!   broker's periodic business);
//! - `reopen`: opening a checkpointed durable store of 100,000 records of
//!   1 KiB (every record CRC-checked, the key index rebuilt);
//! - `range_index_first_use`: the first query after a start that wants
//!   range indexes on `/price` and `/qty` (the sow-1m query's range terms),
//!   on a fresh transient store of 100,000 records each time. Its literals
//!   are above every value, so the query itself finds no candidate and the
//!   time is the two builds.
//!
//! Run: `cargo bench -p statecast-sow --bench query`. Times are the
//! benchmark thread's CPU time, as in the filter bench (the machines are
//! shared); `STATECAST_BENCH_WALL=1` for wall-clock. `cargo test --benches`
//! runs each once with 2,000 records.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Bencher, Criterion, Throughput, criterion_group, criterion_main};
use statecast_filter::{Filter, Limits};
use statecast_journal::storage::{FsMode, FsStorage, Storage};
use statecast_sow::{Durability, Query, SowStore, SowTopicConfig};

// The filter bench's message, so the two scans measure the same bytes.
#[path = "../../filter/benches/support/messages.rs"]
#[allow(dead_code)]
mod messages;

use messages::{FILTER, message};

fn test_mode() -> bool {
    let mut args = std::env::args();
    args.any(|arg| arg == "--test") || !std::env::args().any(|arg| arg == "--bench")
}

fn records() -> usize {
    if test_mode() { 2_000 } else { 100_000 }
}

fn on_cpu_ns() -> Option<u64> {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID).ok()?;
    let secs = u64::try_from(t.tv_sec()).ok()?;
    let nanos = u64::try_from(t.tv_nsec()).ok()?;
    Some(secs * 1_000_000_000 + nanos)
}

fn timed<T>(b: &mut Bencher<'_>, mut f: impl FnMut() -> T) {
    let wall = std::env::var_os("STATECAST_BENCH_WALL").is_some() || on_cpu_ns().is_none();
    b.iter_custom(|iters| {
        let (start_cpu, start_wall) = (on_cpu_ns(), Instant::now());
        for _ in 0..iters {
            black_box(f());
        }
        match (wall, start_cpu, on_cpu_ns()) {
            (false, Some(start), Some(end)) => Duration::from_nanos(end.saturating_sub(start)),
            _ => start_wall.elapsed(),
        }
    });
}

fn bench_dir(name: &str) -> tempfile::TempDir {
    let base = std::env::var("STATECAST_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| "/work/tmp-sow".into());
    std::fs::create_dir_all(&base).expect("bench dir");
    tempfile::Builder::new()
        .prefix(name)
        .tempdir_in(base)
        .expect("temp dir")
}

/// Record `i`: the filter bench's 1 KiB order with a unique id; one in ten
/// is IBM, one in ten MSFT, the rest spread over 1,000 symbols.
fn record(i: usize) -> Vec<u8> {
    let symbol = match i % 10 {
        0 => "IBM".to_string(),
        1 => "MSFT".to_string(),
        _ => format!("S{}", i % 1000),
    };
    let text = String::from_utf8(message(&symbol, (i % 50) as u32)).expect("utf-8");
    text.replacen("ord-20261123-000123456", &format!("ord-20261123-{i:09}"), 1)
        .into_bytes()
}

fn store(durability: Durability, indexes: &[&str], dir: Option<&std::path::Path>) -> SowStore {
    let mut config = SowTopicConfig::new("orders", &["/id"]);
    config.durability = durability;
    config.slab_size = 8 << 20;
    config.hash_indexes = indexes.iter().map(|s| (*s).to_string()).collect();
    let spec = config.validate().expect("config");
    let storage = dir.map(|d| {
        Arc::new(FsStorage::open(d, FsMode::Exclusive).expect("storage")) as Arc<dyn Storage>
    });
    let (mut store, _) = SowStore::open(&spec, "orders", storage).expect("open");
    for i in 0..records() {
        store.upsert(&record(i), i as u64 + 1, 0).expect("upsert");
    }
    store
}

fn scan(c: &mut Criterion) {
    let filter = Filter::parse(FILTER, &Limits::default()).expect("filter");
    let query = Query::filter(filter).with_batch_size(100);
    let mut group = c.benchmark_group("scan_5_predicates");
    group.throughput(Throughput::Elements(records() as u64));
    group.sample_size(10);
    {
        let transient = store(Durability::Transient, &[], None);
        let expected = transient.count(&query).expect("count");
        assert!(expected > 0);
        group.bench_function("transient", |b| {
            timed(b, || transient.count(&query).expect("count"))
        });
    }
    {
        let dir = bench_dir("scan-");
        let durable = store(Durability::Durable, &[], Some(dir.path()));
        group.bench_function("durable", |b| {
            timed(b, || durable.count(&query).expect("count"))
        });
    }
    group.finish();
}

fn indexed(c: &mut Criterion) {
    let filter = Filter::parse("/symbol = 'S502'", &Limits::default()).expect("filter");
    let query = Query::filter(filter).with_batch_size(100);
    let transient = store(Durability::Transient, &["/symbol"], None);
    let n = transient.count(&query).expect("count");
    assert!(n > 0);
    let mut group = c.benchmark_group("indexed_eq");
    group.bench_function(format!("transient_{n}_of_{}", records()), |b| {
        timed(b, || {
            // Results read out, as a query delivers them.
            transient
                .query(&query)
                .expect("query")
                .collect_all()
                .expect("records")
                .len()
        })
    });
    group.finish();
}

fn upsert(c: &mut Criterion) {
    let n = records();
    // The message arrives in a buffer that was just written (a socket
    // read): patch the id digits of one template in place, rather than
    // picking one of 100 MiB of prepared payloads, which would measure
    // cache misses on the input.
    let mut payload = record(0);
    let marker = b"ord-20261123-";
    let digits_at = payload
        .windows(marker.len())
        .position(|w| w == marker)
        .expect("id in the template")
        + marker.len();
    let mut group = c.benchmark_group("upsert");
    group.throughput(Throughput::Elements(1));
    for durability in [Durability::Transient, Durability::Durable] {
        let dir = bench_dir("upsert-");
        let path = (durability == Durability::Durable).then(|| dir.path().to_path_buf());
        let mut store = store(durability, &[], path.as_deref());
        let mut i = 0usize;
        let mut bookmark = n as u64;
        let name = match durability {
            Durability::Transient => "transient_1KiB",
            Durability::Durable => "durable_1KiB",
        };
        group.bench_function(name, |b| {
            timed(b, || {
                i = (i + 7919) % n;
                bookmark += 1;
                let mut v = i;
                for k in (0..9).rev() {
                    if let Some(d) = payload.get_mut(digits_at + k) {
                        *d = b'0' + (v % 10) as u8;
                    }
                    v /= 10;
                }
                store.upsert(&payload, bookmark, 0).expect("upsert")
            })
        });
        let stats = store.stats();
        eprintln!(
            "{name}: {} records, payload {} B, slabs {} ({} B), written {} B, live {} B, key index ~{} B",
            stats.records,
            stats.payload_bytes,
            stats.slabs,
            stats.slab_bytes,
            stats.written_bytes,
            stats.live_bytes,
            stats.key_index_bytes
        );
    }
    group.finish();
}

fn reopen(c: &mut Criterion) {
    let dir = bench_dir("reopen-");
    let store = store(Durability::Durable, &[], Some(dir.path()));
    store.close().expect("close");
    let mut config = SowTopicConfig::new("orders", &["/id"]);
    config.slab_size = 8 << 20;
    let spec = config.validate().expect("config");
    let mut group = c.benchmark_group("reopen");
    group.sample_size(10);
    group.throughput(Throughput::Elements(records() as u64));
    group.bench_function(format!("durable_{}_1KiB", records()), |b| {
        b.iter(|| {
            let storage: Arc<dyn Storage> =
                Arc::new(FsStorage::open(dir.path(), FsMode::Exclusive).expect("storage"));
            let (store, recovery) = SowStore::open(&spec, "orders", Some(storage)).expect("open");
            assert_eq!(store.len(), records(), "{recovery:?}");
            store.len()
        })
    });
    group.finish();
}

fn range_index_first_use(c: &mut Criterion) {
    let filter = Filter::parse("/price > 1e9 AND /qty > 1e9", &Limits::default()).expect("filter");
    let query = Query::filter(filter);
    let mut group = c.benchmark_group("range_index_first_use");
    group.sample_size(10);
    group.throughput(Throughput::Elements(records() as u64));
    let wall = std::env::var_os("STATECAST_BENCH_WALL").is_some() || on_cpu_ns().is_none();
    group.bench_function(format!("price_qty_{}_1KiB", records()), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                // A fresh store each time: the indexes are built once per
                // store, by its first query that wants them.
                let store = store(Durability::Transient, &[], None);
                let (start_cpu, start_wall) = (on_cpu_ns(), Instant::now());
                let n = store.count(&query).expect("count");
                total += match (wall, start_cpu, on_cpu_ns()) {
                    (false, Some(start), Some(end)) => {
                        Duration::from_nanos(end.saturating_sub(start))
                    }
                    _ => start_wall.elapsed(),
                };
                assert_eq!(n, 0);
                assert!(store.stats().range_index_bytes > 0);
            }
            total
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    scan,
    indexed,
    upsert,
    reopen,
    range_index_first_use
);
criterion_main!(benches);
