//! Filter evaluation speed: the issue's 5-predicate filter against a 1 KiB
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

const FILTER: &str = "/symbol IN ('IBM','MSFT') AND /price > 100 AND /trader/desk = 'FX' AND NOT /cancelled AND /qty >= 10";

/// A 1 KiB order message with the filter's fields spread from start to end.
fn message(symbol: &str, qty: u32) -> Vec<u8> {
    let text = format!(
        r#"{{"id":"ord-20261123-000123456","type":"new_order","venue":"XNYS","symbol":"{symbol}","account":{{"id":"ACC-77812","region":"EMEA","book":"prop-rates","limits":[1000000,2500000,5000000]}},"side":"buy","tif":"day","notes":"client called at open; wants fills spread over the morning, avoid the auction","price":101.25,"currency":"USD","route":["SOR","DARK1","LIT2"],"trader":{{"name":"A. Lovelace","id":4471,"location":{{"city":"London","floor":12}},"desk":"FX","phone":"+44 20 7946 0000"}},"strategy":{{"name":"vwap","start":"09:30:00","end":"11:30:00","participation":0.15,"params":{{"aggression":2,"min_fill":100,"tags":["algo","vwap","eu"]}}}},"flags":{{"short":false,"odd_lot":false,"iso":false}},"created":"2026-11-23T09:29:58.123456Z","updated":"2026-11-23T09:30:01.654321Z","version":7,"parent":null,"children":[{{"id":"c1","qty":200}},{{"id":"c2","qty":300}}],"commission":{{"rate":0.0005,"min":1.5,"currency":"USD"}},"compliance":{{"checked":true,"rules":["R1","R7","R12"]}},"cancelled":false,"ref":"REF-2026-0000000000000","settle":"T+1","qty":{qty}}}"#
    );
    assert!(
        (1000..1100).contains(&text.len()),
        "message is {} bytes",
        text.len()
    );
    text.into_bytes()
}

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

/// The same message with the filter's fields moved to the front, where the
/// scan can stop early: what a publisher gains by putting filtered fields first.
fn message_fields_first(symbol: &str, qty: u32) -> Vec<u8> {
    let text = String::from_utf8(message(symbol, qty)).expect("UTF-8");
    let body = text.trim_start_matches('{');
    let front = format!(
        r#"{{"symbol":"{symbol}","price":101.25,"trader":{{"desk":"FX"}},"cancelled":false,"qty":{qty},"#
    );
    // Renaming the originals keeps the size and the shape; the first of
    // duplicate names would win anyway.
    let renamed = body
        .replacen(r#""symbol":"#, r#""symbo_":"#, 1)
        .replacen(r#""price":"#, r#""pric_":"#, 1)
        .replacen(r#""trader":"#, r#""trade_":"#, 1)
        .replacen(r#""cancelled":"#, r#""cancelle_":"#, 1)
        .replacen(r#""qty":"#, r#""qt_":"#, 1);
    format!("{front}{renamed}").into_bytes()
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
        group.bench_function(name, |b| {
            timed(b, || {
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
