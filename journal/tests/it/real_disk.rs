//! The production backend on a real file system (under /work/tmp-journal or
//! the system temp dir): memory-mapped, fallocated segments, the flusher on
//! its own thread, a clean shutdown that the next open recognises, a process
//! "kill" (no shutdown) that loses nothing from the page cache, the
//! directory lock, and the dump library reading a live journal read-only.

use std::ops::ControlFlow;
use std::time::Duration;

use statecast_journal::dump::{self, DumpFilter};
use statecast_journal::{Journal, JournalConfig, NewRecord, Opened};

use crate::support::{payload_for, read_all, topic_for};

fn temp_dir() -> tempfile::TempDir {
    let base = std::path::Path::new("/work/tmp-journal");
    let _ = std::fs::create_dir_all(base);
    tempfile::Builder::new()
        .prefix("real-")
        .tempdir_in(base)
        .or_else(|_| tempfile::tempdir())
        .expect("temp dir")
}

fn config() -> JournalConfig {
    JournalConfig {
        segment_bytes: 64 << 10,
        preallocate: 2,
        ..JournalConfig::default()
    }
}

#[test]
fn mmap_journal_round_trip_clean_and_killed() {
    let dir = temp_dir();
    let Opened {
        journal,
        mut appender,
        flusher,
        housekeeper,
        report,
    } = Journal::open(dir.path(), config()).expect("open");
    assert!(report.created);
    let error = Journal::open(dir.path(), config()).expect_err("the directory is locked");
    assert!(error.to_string().contains("locked"), "{error}");
    let flusher = flusher.spawn().expect("flusher");
    let housekeeper = housekeeper.spawn().expect("housekeeper");
    for bookmark in 1..=2000u64 {
        appender
            .append(NewRecord::new(
                &topic_for(bookmark),
                &payload_for(bookmark, 1),
            ))
            .expect("append");
    }
    journal
        .wait_persisted(2000, Duration::from_secs(30))
        .expect("persisted");
    // The dump reads the live journal without the lock.
    let mut shown = 0;
    let stats = dump::records(
        dir.path(),
        &DumpFilter {
            from: Some(1990),
            topic: Some(b"topic/0"),
        },
        |record| {
            assert!(record.bookmark >= 1990 && record.topic == b"topic/0");
            shown += 1;
            ControlFlow::Continue(())
        },
    )
    .expect("dump");
    assert_eq!(shown, 3, "bookmarks 1990, 1995 and 2000 are on topic/0");
    assert_eq!(stats.records, 2000);
    assert_eq!(
        (stats.first_bookmark, stats.last_bookmark),
        (Some(1), Some(2000))
    );
    assert!(
        stats.overhead_per_record() <= 48.0,
        "overhead {}",
        stats.overhead_per_record()
    );
    assert!(
        stats.files >= 10,
        "2000 records of ~400 bytes span many 64 KiB segments"
    );
    drop(appender);
    journal.shutdown();
    flusher.join().expect("clean stop");
    housekeeper.join().expect("housekeeper stops");
    assert!(
        journal.stats().spares >= 1,
        "the housekeeper kept spares ready"
    );
    drop(journal);

    let Opened {
        journal,
        mut appender,
        flusher,
        report,
        ..
    } = Journal::open(dir.path(), config()).expect("reopen");
    assert!(report.clean_shutdown);
    assert!(
        report.records_scanned < 200,
        "a clean restart reads only the last segment, not all 2000 records ({} read)",
        report.records_scanned
    );
    assert_eq!(read_all(&journal).len(), 2000);
    appender
        .append(NewRecord::new(b"t", b"after restart"))
        .expect("append");
    // No shutdown: like a SIGKILL, the page cache keeps the bytes.
    drop((appender, flusher, journal));
    let reopened = Journal::open(dir.path(), config()).expect("reopen after kill");
    assert!(!reopened.report.clean_shutdown);
    let records = read_all(&reopened.journal);
    assert_eq!(records.len(), 2001);
    assert_eq!(records[2000].payload(), b"after restart");
}
