//! Filter evaluation speed: the 5-predicate filter against a 1 KiB
//! JSON message (fields scattered through it), compiled path versus the
//! serde_json + reference-interpreter baseline; and per-message cost of the
//! subscription index with 10,000 equality subscriptions versus 1.
//!
//! Run: `cargo bench -p statecast-filter --bench filter`.
//!
//! Times are the benchmark thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`),
//! not wall-clock time: the
//! development machines have two cores shared with other builds, and
//! wall-clock figures there mostly measure the neighbours. Set
//! `STATECAST_BENCH_WALL=1` for wall-clock time.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Bencher, Criterion, Throughput, criterion_group, criterion_main};
use statecast_filter::{
    Filter, IndexScratch, Limits, MessageContext, Scratch, SubscriptionIndex, reference,
};

#[path = "support/messages.rs"]
mod messages;

use messages::{FILTER, message, message_fields_first};

/// Nanoseconds this thread has spent on a CPU, if the kernel says.
fn on_cpu_ns() -> Option<u64> {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID).ok()?;
    let secs = u64::try_from(t.tv_sec()).ok()?;
    let nanos = u64::try_from(t.tv_nsec()).ok()?;
    Some(secs * 1_000_000_000 + nanos)
}

/// Times `f` by on-CPU time (or wall-clock when asked or unavailable).
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

/// Copies of one message at eight places in memory, its first byte at
/// each multiple of 8 from a 64-byte boundary (a cache line), evaluated in
/// turn. A message received by the broker lands wherever its frame does,
/// and how the scan's block loads fall across cache lines moves its time
/// by a few per cent (the measurements in `benches/RESULTS.md`,
/// 2026-12-05): one copy would measure one arbitrary placement, eight
/// measure their average.
struct Placements {
    buffer: Vec<u8>,
    starts: [usize; 8],
    len: usize,
}

impl Placements {
    fn of(payload: &[u8]) -> Placements {
        // Each copy in its own 2 KiB (so that none shares a line with
        // another), at the offset that puts it `8 * k` bytes past a line.
        let region = (payload.len() + 64).next_multiple_of(2048);
        let mut buffer = vec![b' '; region * 8 + 64];
        let base = buffer.as_ptr() as usize;
        let mut starts = [0; 8];
        for (k, start) in starts.iter_mut().enumerate() {
            let to_line = (64 - (base + region * k) % 64) % 64;
            *start = region * k + to_line + 8 * k;
            buffer[*start..*start + payload.len()].copy_from_slice(payload);
        }
        Placements {
            buffer,
            starts,
            len: payload.len(),
        }
    }

    fn get(&self, turn: usize) -> &[u8] {
        let start = self.starts[turn % 8];
        &self.buffer[start..start + self.len]
    }
}

fn evaluation(c: &mut Criterion) {
    let filter = Filter::parse(FILTER, &Limits::default()).expect("filter parses");
    let matching = message("IBM", 500);
    let failing_early = message("ORCL", 500);
    let failing_late = message("MSFT", 5);
    let matching_first = message_fields_first("IBM", 500);
    let mut scratch = Scratch::new();
    assert!(filter.matches_with(&MessageContext::new(&matching_first), &mut scratch));
    assert!(filter.matches_with(&MessageContext::new(&matching), &mut scratch));
    assert!(!filter.matches_with(&MessageContext::new(&failing_early), &mut scratch));
    assert!(!filter.matches_with(&MessageContext::new(&failing_late), &mut scratch));

    let mut group = c.benchmark_group("filter_1KiB_5_predicates");
    group.throughput(Throughput::Elements(1));
    for (name, payload) in [
        ("compiled/match", &matching),
        ("compiled/nomatch_first_term", &failing_early),
        ("compiled/nomatch_last_term", &failing_late),
        ("compiled/match_fields_first", &matching_first),
    ] {
        let placed = Placements::of(payload);
        let mut turn = 0_usize;
        group.bench_function(name, |b| {
            timed(b, || {
                turn = turn.wrapping_add(1);
                let payload = placed.get(turn);
                filter.matches_with(&MessageContext::new(black_box(payload)), &mut scratch)
            })
        });
    }
    for (name, payload) in [
        ("baseline_serde_reference/match", &matching),
        ("baseline_serde_reference/nomatch_last_term", &failing_late),
    ] {
        group.bench_function(name, |b| {
            timed(b, || {
                let ctx = MessageContext::new(black_box(payload));
                let doc: serde_json::Value =
                    serde_json::from_slice(ctx.payload).expect("valid JSON");
                reference::evaluate_document(filter.expr(), Some(&doc), &ctx).truth()
            })
        });
    }
    group.finish();
}

fn index(c: &mut Criterion) {
    let mut group = c.benchmark_group("index_per_message");
    group.throughput(Throughput::Elements(1));
    for subscriptions in [1_u32, 10_000] {
        let mut index = SubscriptionIndex::new();
        for i in 0..subscriptions {
            let text = format!("/symbol = 'S{i}' AND /price > 100");
            index.insert(
                i,
                Filter::parse(&text, &Limits::default()).expect("filter parses"),
            );
        }
        let payload = message("S0", 500);
        let mut scratch = IndexScratch::new();
        let mut hits = 0;
        index.for_each_match(&MessageContext::new(&payload), &mut scratch, |_| hits += 1);
        assert_eq!(hits, 1);
        group.bench_function(format!("{subscriptions}_equality_subscriptions"), |b| {
            timed(b, || {
                let mut hits = 0_u32;
                index.for_each_match(
                    &MessageContext::new(black_box(&payload)),
                    &mut scratch,
                    |_| hits += 1,
                );
                hits
            })
        });
    }
    group.finish();
}

fn parsing(c: &mut Criterion) {
    c.bench_function("parse_and_compile_5_predicates", |b| {
        timed(b, || Filter::parse(black_box(FILTER), &Limits::default()))
    });
}

criterion_group!(benches, evaluation, index, parsing);
criterion_main!(benches);
