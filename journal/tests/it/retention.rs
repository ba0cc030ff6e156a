//! Retention: removes (or archives) only whole segment files, oldest first,
//! never the active one or a spare; a reader inside a removed file gets a
//! clear error; a start before the oldest retained bookmark is refused with
//! the oldest one named.

use std::time::Duration;

use statecast_journal::sim::SimStorage;
use statecast_journal::storage::Storage;
use statecast_journal::{NewRecord, ReadError, Retention, Start};

use crate::support::{open_sim, read_all, small_config, step_clock};

#[test]
fn byte_limit_removes_whole_oldest_files_and_readers_there_get_a_clear_error() {
    let storage = SimStorage::new();
    let mut config = small_config(8192);
    config.retention = Retention {
        max_bytes: Some(3 * 8192),
        ..Retention::default()
    };
    let mut opened = open_sim(&storage, config);
    for bookmark in 1..=40u64 {
        opened
            .appender
            .append(NewRecord::new(b"t", &[bookmark as u8; 900]))
            .expect("append");
        opened.flusher.sync_now().expect("sync");
    }
    let journal = opened.journal.clone();
    let before = journal.stats();
    assert!(
        before.segments >= 8,
        "40 × 948 bytes fill many 8 KiB segments"
    );
    let mut parked = journal
        .reader(Start::At(2))
        .expect("reader in the first segment");
    assert_eq!(
        parked.next_record().expect("read").expect("some").bookmark,
        2
    );
    let removed = journal.enforce_retention().expect("retention");
    let after = journal.stats();
    assert_eq!(after.segments, 3, "segments kept within 3 × 8 KiB");
    assert_eq!(removed.removed.len(), before.segments - 3);
    assert_eq!(
        removed.removed[0],
        statecast_journal::segment_name(1),
        "oldest first"
    );
    let files = storage.list("").expect("list");
    for name in &removed.removed {
        assert!(!files.contains(name), "{name} deleted whole");
    }
    opened.flusher.housekeeping();
    assert_eq!(
        journal.stats().spares,
        1,
        "housekeeping preallocates a spare"
    );
    assert!(
        journal
            .enforce_retention()
            .expect("retention")
            .removed
            .is_empty()
    );
    assert_eq!(journal.stats().spares, 1, "spares are never removed");
    match parked.next_record() {
        Err(ReadError::Removed {
            segment,
            bookmark,
            oldest,
        }) => {
            assert_eq!((segment, bookmark, oldest), (1, 3, removed.first_bookmark));
        }
        other => panic!("expected Removed, got {other:?}"),
    }
    match journal.reader(Start::At(1)) {
        Err(ReadError::BeforeOldest {
            bookmark: 1,
            oldest,
        }) => assert_eq!(oldest, removed.first_bookmark),
        other => panic!("expected BeforeOldest, got {other:?}"),
    }
    let records = read_all(&journal);
    assert_eq!(
        records.first().map(|r| r.bookmark),
        Some(removed.first_bookmark)
    );
    assert_eq!(records.last().map(|r| r.bookmark), Some(40));
    drop(opened);
    let reopened = open_sim(&storage.kill_image(), small_config(8192));
    assert_eq!(
        reopened.journal.first_bookmark(),
        removed.first_bookmark,
        "retention survives restart"
    );
}

#[test]
fn age_limit_removes_only_aged_files_and_archive_moves_them() {
    let storage = SimStorage::new();
    let mut config = small_config(8192);
    let (clock, now) = step_clock(1_000_000_000);
    config.clock = clock;
    config.retention = Retention {
        max_age: Some(Duration::from_secs(60)),
        archive: true,
        ..Retention::default()
    };
    let mut opened = open_sim(&storage, config);
    for bookmark in 1..=9u64 {
        opened
            .appender
            .append(NewRecord::new(b"t", &[1; 1000]))
            .expect("append");
        if bookmark == 6 {
            // Records 7.. are two minutes younger.
            now.fetch_add(120_000_000_000, std::sync::atomic::Ordering::SeqCst);
        }
    }
    opened.flusher.sync_now().expect("sync");
    // Three 1 KiB records per segment: segments 1–2 hold 1–6, 3 holds 7–9.
    let removed = opened.journal.enforce_retention().expect("retention");
    assert_eq!(
        removed.removed,
        vec![statecast_journal::segment_name(1)],
        "segment 2's newest record is 6, \
        and segment 3 starts young: only segment 1 is known aged out"
    );
    let archived = storage.list("archive").expect("list");
    assert_eq!(archived, vec![statecast_journal::segment_name(1)]);
    assert_eq!(opened.journal.first_bookmark(), 4);
}

#[test]
fn the_active_segment_is_never_removed() {
    let storage = SimStorage::new();
    let mut config = small_config(8192);
    config.retention = Retention {
        max_bytes: Some(0),
        ..Retention::default()
    };
    let mut opened = open_sim(&storage, config);
    for _ in 0..10 {
        opened
            .appender
            .append(NewRecord::new(b"t", &[1; 1000]))
            .expect("append");
    }
    opened.flusher.sync_now().expect("sync");
    opened.journal.enforce_retention().expect("retention");
    assert_eq!(opened.journal.stats().segments, 1);
    assert_eq!(
        read_all(&opened.journal).last().map(|r| r.bookmark),
        Some(10)
    );
}
