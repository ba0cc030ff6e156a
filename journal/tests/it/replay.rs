//! Replay (test plan D9, in-process): readers started from a bookmark in the
//! middle of a file, at a file boundary, from a timestamp, from the oldest
//! record and from "now", while another thread keeps appending and the
//! flusher runs on its own thread; each reader must see exactly the records
//! from its start on, each once, in order, checked against the payload each
//! bookmark must carry. Readers wait for more with `wait_persisted`, never
//! with a sleep.

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use statecast_journal::sim::SimStorage;
use statecast_journal::{Journal, NewRecord, Reader, Start};

use crate::support::{open_sim, payload_for, small_config, topic_for};

const SALT: u64 = 17;
const BEFORE: u64 = 400;
const DURING: u64 = 3000;

/// Reads until `last`, waiting on the persisted watermark when caught up.
fn read_through(journal: &Journal, mut reader: Reader, first: u64, last: u64) {
    let mut expected = first;
    while expected <= last {
        match reader.next_record().expect("read") {
            Some(record) => {
                assert_eq!(record.bookmark, expected, "no gap and no duplicate");
                assert_eq!(
                    record.payload(),
                    payload_for(expected, SALT).as_slice(),
                    "payload of {expected}"
                );
                assert_eq!(record.topic(), topic_for(expected).as_slice());
                expected += 1;
            }
            None => {
                journal
                    .wait_persisted(expected, Duration::from_secs(30))
                    .expect("the appender keeps going");
            }
        }
    }
}

#[test]
fn replay_from_every_kind_of_start_while_appends_continue() {
    let storage = SimStorage::new();
    let mut config = small_config(16384);
    config.preallocate = 2;
    let (clock, _) = crate::support::step_clock(1_000_000_000);
    config.clock = clock;
    let opened = open_sim(&storage, config);
    let journal = opened.journal.clone();
    let mut appender = opened.appender;
    let flusher = opened.flusher.spawn().expect("spawn flusher");
    let mut timestamps = Vec::new();
    for bookmark in 1..=BEFORE {
        let appended = appender
            .append(NewRecord::new(
                &topic_for(bookmark),
                &payload_for(bookmark, SALT),
            ))
            .expect("append");
        timestamps.push(appended.timestamp_ns);
    }
    // A bookmark at a file boundary: the first record of the second segment.
    let boundary = crate::support::locations(&storage)
        .into_iter()
        .find(|location| location.0 == statecast_journal::segment_name(2))
        .map(|location| location.2)
        .expect("400 records span several 16 KiB segments");
    let mid_file = boundary / 2;
    let last = BEFORE + DURING;
    let starts: Vec<(Start, u64)> = vec![
        (Start::Epoch, 1),
        (Start::At(mid_file), mid_file),
        (Start::After(mid_file), mid_file + 1),
        (Start::At(boundary), boundary),
        (Start::At(boundary - 1), boundary - 1),
        (Start::Timestamp(timestamps[250]), 251),
        (Start::Timestamp(timestamps[250] - 1), 251),
        (Start::Timestamp(0), 1),
        (Start::Now, BEFORE + 1),
    ];
    let readers: Vec<_> = starts
        .into_iter()
        .map(|(start, first)| {
            let reader = journal.reader(start).expect("reader");
            assert!(reader.next_bookmark() <= first);
            let journal = journal.clone();
            thread::spawn(move || read_through(&journal, reader, first, last))
        })
        .collect();
    let writer = thread::spawn(move || {
        for bookmark in BEFORE + 1..=last {
            appender
                .append(NewRecord::new(
                    &topic_for(bookmark),
                    &payload_for(bookmark, SALT),
                ))
                .expect("append");
        }
        appender
    });
    let appender = writer.join().expect("writer");
    for reader in readers {
        reader
            .join()
            .expect("reader saw every record once, in order");
    }
    journal
        .wait_persisted(last, Duration::from_secs(30))
        .expect("all persisted");
    drop(appender);
    journal.shutdown();
    flusher.join().expect("flusher ends cleanly");
    let reopened =
        Journal::open_with_storage(Arc::new(storage), small_config(16384)).expect("reopen");
    assert!(
        reopened.report.clean_shutdown,
        "shutdown after closing the appender is clean"
    );
    read_through(
        &reopened.journal,
        reopened.journal.reader(Start::Epoch).expect("reader"),
        1,
        last,
    );
}

#[test]
fn persisted_hook_reports_a_rising_watermark_and_limited_readers_stay_below_it() {
    let storage = SimStorage::new();
    let opened = open_sim(&storage, small_config(8192));
    let journal = opened.journal.clone();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = seen.clone();
    journal.set_persisted_hook(Box::new(move |persisted| {
        sink.lock().expect("lock").push(persisted)
    }));
    let mut appender = opened.appender;
    let mut flusher = opened.flusher;
    for bookmark in 1..=5 {
        appender
            .append(NewRecord::new(b"t", &payload_for(bookmark, 0)))
            .expect("append");
    }
    let mut limited = journal
        .reader_with_limit(Start::Epoch, statecast_journal::ReadLimit::Persisted)
        .expect("reader");
    assert!(
        limited.next_record().expect("read").is_none(),
        "nothing persisted yet"
    );
    assert_eq!(flusher.sync_now().expect("sync"), 5);
    for bookmark in 6..=9 {
        appender
            .append(NewRecord::new(b"t", &payload_for(bookmark, 0)))
            .expect("append");
    }
    let mut served = 0;
    while limited.next_record().expect("read").is_some() {
        served += 1;
    }
    assert_eq!(served, 5, "a persisted-only reader stops at the watermark");
    assert_eq!(flusher.sync_now().expect("sync"), 9);
    assert_eq!(*seen.lock().expect("lock"), vec![5, 9]);
    assert!(limited.next_record().expect("read").is_some());
}

#[test]
fn unknown_and_future_bookmarks_are_clear_errors() {
    let storage = SimStorage::new();
    let mut opened = open_sim(&storage, small_config(8192));
    opened
        .appender
        .append(NewRecord::new(b"t", b"x"))
        .expect("append");
    let error = opened
        .journal
        .reader(Start::At(5))
        .expect_err("bookmark 5 does not exist");
    assert!(error.to_string().contains("not in the journal"), "{error}");
    assert!(
        opened.journal.reader(Start::At(2)).is_ok(),
        "the next bookmark is a valid start (now)"
    );
}

#[test]
fn interval_mode_persists_on_its_tick_and_never_before_the_sync() {
    let storage = SimStorage::new();
    let mut config = small_config(8192);
    config.sync = statecast_journal::SyncPolicy::Interval(Duration::from_millis(20));
    let opened = open_sim(&storage, config);
    let journal = opened.journal.clone();
    let mut appender = opened.appender;
    let syncs_before = storage.sync_count();
    let flusher = opened.flusher.spawn().expect("flusher");
    let mut last = 0;
    for bookmark in 1..=200 {
        last = appender
            .append(NewRecord::new(b"t", &payload_for(bookmark, 0)))
            .expect("append")
            .bookmark;
    }
    journal
        .wait_persisted(last, Duration::from_secs(30))
        .expect("the interval flusher persists");
    assert!(
        storage.sync_count() > syncs_before,
        "persisted only through a sync"
    );
    // Everything persisted survives a power cut.
    let image = storage.crash_image(&mut statecast_journal::sim::SimRng::new(7));
    drop(appender);
    journal.shutdown();
    flusher.join().expect("clean stop");
    let reopened = open_sim(&image, small_config(8192));
    assert!(crate::support::read_all(&reopened.journal).len() as u64 >= last);
}
